//! Interop with kafkajs (pure JavaScript), the version pinned in
//! tests/clients/js/package-lock.json. tests/clients/js/kafkajs_check.js runs twice around a
//! server restart and prints a JSON summary compared here exactly: the admin creates a topic
//! (again: reported as existing), reads its metadata; one producer per codec (kafkajs' defaults:
//! not idempotent, acks=all) sends keyed records with headers and timestamps; a group member
//! reads them all, commits explicit offsets and is described while it is in the group; after
//! the restart a new member resumes exactly at the commit, seeks back and reads again, commits;
//! the admin fetches the group's offsets, lists groups, fetches offsets (low/high, by timestamp),
//! deletes records and describes the cluster.
//!
//! Codecs: none, gzip and snappy (through kafkajs-snappy, pure JavaScript). lz4 and zstd need
//! native codec packages for kafkajs and are left out, as are transactions.
//! @confluentinc/kafka-javascript is not in the matrix yet: npm offers no prebuilt binary from
//! the registry (its install downloads one from GitHub or builds librdkafka from source, which
//! in turn downloads zlib and others), so it needs a source build with Debian's -dev packages.

mod common;

use std::process::Command;
use std::time::Duration;

use common::clients::{
    assert_summary, base_timestamp_ms, installed, run_json, Workload, COMMIT, PER_CODEC,
};
use common::TestServer;
use serde_json::{json, Value};

const KAFKAJS: Workload = Workload {
    codecs: &["none", "gzip", "snappy"],
};

fn kafkajs_check(server: &TestServer, topic: &str, base: i64, phase: &str) -> Value {
    let mut command = Command::new("node");
    command
        .arg(installed("js/kafkajs_check.js"))
        .arg(server.bootstrap())
        .arg(topic)
        .arg(format!("{topic}-group"))
        .arg(base.to_string())
        .arg(phase);
    run_json(
        &format!("kafkajs_check.js {phase}"),
        command,
        Duration::from_secs(120),
    )
}

#[test]
fn kafkajs_admin_produce_consume_group() {
    let topic = "kafkajs-orders";
    let group = format!("{topic}-group");
    let partitions = [format!("{topic}-0"), format!("{topic}-1")];
    let mut server = TestServer::start();
    let base = base_timestamp_ms();

    let first = kafkajs_check(&server, topic, base, "first");
    // One send per codec: its records' base offset in each partition.
    let produced: Vec<Value> = KAFKAJS
        .codecs
        .iter()
        .enumerate()
        .map(|(c, codec)| {
            let base_offset = c * PER_CODEC / 2;
            json!([[codec, 0, 0, base_offset], [codec, 1, 0, base_offset]])
        })
        .collect();
    let expected = json!({
        "create": true,
        "create_again": false,
        "metadata": [[topic, [[0, 1, [1], [1]], [1, 1, [1], [1]]]]],
        "produced": produced,
        "consumed_a": KAFKAJS.records_from([0, 0]),
        "committed_a": COMMIT,
        "group_with_a": {
            "state": "Stable", "protocol_type": "consumer", "protocol": "RoundRobinAssigner",
            "error_code": 0, "members": [["kafkajs-check", partitions]],
        },
    });
    assert_summary("kafkajs first", &first, &expected);

    server.restart();

    let second = kafkajs_check(&server, topic, base, "second");
    let end = KAFKAJS.end_offset();
    let empty = json!({
        "state": "Empty", "protocol_type": "consumer", "protocol": "", "error_code": 0,
        "members": [],
    });
    let last_three: Vec<Value> = (end - 3..end)
        .map(|offset| KAFKAJS.record(offset as usize * 2))
        .collect();
    let expected = json!({
        "group_after_restart": empty,
        "consumed_b": KAFKAJS.records_from(COMMIT),
        "after_seek": last_three,
        "group_offsets": [end, end],
        "group_after_b": empty,
        "groups": [[group, "consumer"]],
        "offsets": {"low_high": [[0, end], [0, end]], "at_5000": [3, 2]},
        "offsets_after_delete": {"low_high": [[5, end], [0, end]], "at_5000": [5, 2]},
        "cluster": {"brokers": [1], "controller": 1, "has_cluster_id": true},
    });
    assert_summary("kafkajs second", &second, &expected);
}
