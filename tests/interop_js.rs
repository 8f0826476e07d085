//! Interop with the two JavaScript clients, kafkajs (pure JavaScript) and
//! @confluentinc/kafka-javascript (librdkafka under a KafkaJS-shaped API), at the versions pinned
//! in tests/clients/js/package-lock.json. Each check program (tests/clients/js/*_check.js) runs
//! twice around a server restart and prints a JSON summary compared here exactly: the admin
//! creates a topic (again: reported as existing); one producer per codec (each client's
//! defaults: not idempotent, acks=all) sends keyed records with headers and timestamps; a group
//! member reads them all, commits explicit offsets and is described while it is in the group;
//! after the restart a new member resumes exactly at the commit, seeks back and reads again,
//! commits; the admin fetches the group's offsets, lists groups, fetches offsets (low/high, by
//! timestamp) and deletes records. kafkajs also reads topic metadata and describes the cluster.
//!
//! kafkajs writes none, gzip and snappy (through kafkajs-snappy, pure JavaScript); lz4 and zstd
//! need native codec packages for kafkajs and are left out. @confluentinc/kafka-javascript writes
//! all five. Transactions are left out: Skald does not serve them yet.

mod common;

use std::process::Command;
use std::time::Duration;

use common::clients::{
    assert_summary, base_timestamp_ms, installed, run_json, Workload, ALL_CODECS, COMMIT, PER_CODEC,
};
use common::TestServer;
use serde_json::{json, Value};

const KAFKAJS: Workload = Workload {
    codecs: &["none", "gzip", "snappy"],
};

fn js_check(script: &str, server: &TestServer, topic: &str, base: i64, phase: &str) -> Value {
    let mut command = Command::new("node");
    command
        .arg(installed(&format!("js/{script}")))
        .arg(server.bootstrap())
        .arg(topic)
        .arg(format!("{topic}-group"))
        .arg(base.to_string())
        .arg(phase);
    run_json(
        &format!("{script} {phase}"),
        command,
        Duration::from_secs(120),
    )
}

/// One send per codec: [codec, partition, error code, base offset] for both partitions.
fn produced_by_send(workload: &Workload) -> Vec<Value> {
    let per_partition = PER_CODEC / 2;
    let sends = workload.codecs.iter().enumerate();
    sends
        .map(|(c, codec)| {
            json!([
                [codec, 0, 0, c * per_partition],
                [codec, 1, 0, c * per_partition]
            ])
        })
        .collect()
}

/// Partition 0's last three records, which both programs read again after a seek.
fn last_three_of_partition_0(workload: &Workload) -> Vec<Value> {
    let end = workload.end_offset() as usize;
    (end - 3..end)
        .map(|offset| workload.record(offset * 2))
        .collect()
}

#[test]
fn kafkajs_admin_produce_consume_group() {
    let topic = "kafkajs-orders";
    let group = format!("{topic}-group");
    let partitions = [format!("{topic}-0"), format!("{topic}-1")];
    let mut server = TestServer::start();
    let base = base_timestamp_ms();

    let first = js_check("kafkajs_check.js", &server, topic, base, "first");
    let expected = json!({
        "create": true,
        "create_again": false,
        "metadata": [[topic, [[0, 1, [1], [1]], [1, 1, [1], [1]]]]],
        "produced": produced_by_send(&KAFKAJS),
        "consumed_a": KAFKAJS.records_from([0, 0]),
        "committed_a": COMMIT,
        "group_with_a": {
            "state": "Stable", "protocol_type": "consumer", "protocol": "RoundRobinAssigner",
            "error_code": 0, "members": [["kafkajs-check", partitions]],
        },
    });
    assert_summary("kafkajs first", &first, &expected);

    server.restart();

    let second = js_check("kafkajs_check.js", &server, topic, base, "second");
    let end = KAFKAJS.end_offset();
    let empty = json!({
        "state": "Empty", "protocol_type": "consumer", "protocol": "", "error_code": 0,
        "members": [],
    });
    let expected = json!({
        "group_after_restart": empty,
        "consumed_b": KAFKAJS.records_from(COMMIT),
        "after_seek": last_three_of_partition_0(&KAFKAJS),
        "group_offsets": [end, end],
        "group_after_b": empty,
        "groups": [[group, "consumer"]],
        "offsets": {"low_high": [[0, end], [0, end]], "at_5000": [3, 2]},
        "offsets_after_delete": {"low_high": [[5, end], [0, end]], "at_5000": [5, 2]},
        "cluster": {"brokers": [1], "controller": 1, "has_cluster_id": true},
    });
    assert_summary("kafkajs second", &second, &expected);
}

#[test]
fn confluent_kafka_javascript_admin_produce_consume_group() {
    let script = "confluent_kafka_javascript_check.js";
    let topic = "confluent-js-orders";
    let group = format!("{topic}-group");
    let partitions = [format!("{topic}-0"), format!("{topic}-1")];
    let mut server = TestServer::start();
    let base = base_timestamp_ms();

    let first = js_check(script, &server, topic, base, "first");
    let expected = json!({
        "create": true,
        "create_again": false,
        "produced": produced_by_send(&ALL_CODECS),
        "consumed_a": ALL_CODECS.records_from([0, 0]),
        "committed_a": COMMIT,
        "group_with_a": {
            "state": "STABLE", "protocol_type": "consumer", "protocol": "roundrobin",
            "members": [["confluent-js-a", partitions]],
        },
    });
    assert_summary("confluent-kafka-javascript first", &first, &expected);

    server.restart();

    let second = js_check(script, &server, topic, base, "second");
    let end = ALL_CODECS.end_offset();
    let empty =
        json!({"state": "EMPTY", "protocol_type": "consumer", "protocol": "", "members": []});
    let expected = json!({
        "group_after_restart": empty,
        "consumed_b": ALL_CODECS.records_from(COMMIT),
        "after_seek": last_three_of_partition_0(&ALL_CODECS),
        "group_offsets": [end, end],
        "group_after_b": empty,
        "groups": [[group, "consumer", "EMPTY"]],
        "offsets": {"low_high": [[0, end], [0, end]], "at_5000": [3, 2]},
        "delete_records": [[0, 5]],
        "offsets_after_delete": {"low_high": [[5, end], [0, end]], "at_5000": [5, 2]},
    });
    assert_summary("confluent-kafka-javascript second", &second, &expected);
}
