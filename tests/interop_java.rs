//! Interop with Apache Kafka's Java client (kafka-clients 4.x, the version pinned in
//! tests/clients/java/pom.xml), the client most Kafka applications run.
//!
//! tests/clients/java/src/JavaClientCheck.java does the work in two runs around a server restart
//! and prints a JSON summary of each, compared here exactly: Admin createTopics (and again:
//! TopicExistsException), describeTopics (also of an unknown topic), one producer per
//! compression codec with every other setting at its default (idempotent, acks=all) sending keyed
//! records with headers and timestamps; a consumer in a group (subscribe) reads them all, commits
//! explicit offsets and is described by Admin while it is the member; after the restart a second
//! member resumes exactly at the commit; a group-less consumer checks offsetsForTimes, seek and
//! pause/resume; Admin listGroups, describeConsumerGroups, listConsumerGroupOffsets, listOffsets
//! (earliest, latest, by timestamp, and maxTimestamp: ListOffsets v7+), deleteRecords and
//! describeCluster. The client speaks the newest versions Skald advertises: Produce v13 and
//! Fetch v13+ name topics by id.
//!
//! Left out: transactions (tested with librdkafka in tests/transactions.rs).

mod common;

use std::time::Duration;

use common::clients::{
    assert_summary, base_timestamp_ms, java, java_classpath, run_json, ALL_CODECS, COMMIT,
};
use common::TestServer;
use serde_json::{json, Value};

const TOPIC: &str = "java-orders";
const GROUP: &str = "java-billing";

fn java_check(server: &TestServer, base_timestamp: i64, phase: &str) -> Value {
    let mut command = java();
    command
        .arg("-cp")
        .arg(java_classpath("client"))
        .arg("JavaClientCheck")
        .arg(server.bootstrap())
        .arg(TOPIC)
        .arg(GROUP)
        .arg(base_timestamp.to_string())
        .arg(phase);
    run_json(
        &format!("JavaClientCheck {phase}"),
        command,
        Duration::from_secs(120),
    )
}

fn group(state: &str, assignor: &str, members: Value) -> Value {
    json!({"state": state, "type": "Classic", "assignor": assignor, "members": members, "coordinator": 1})
}

#[test]
fn java_client_admin_produce_consume_group() {
    let mut server = TestServer::start();
    let base = base_timestamp_ms();

    let first = java_check(&server, base, "first");
    let expected_first = json!({
        "create": "ok",
        "create_again": "TopicExistsException",
        "describe_unknown": "UnknownTopicOrPartitionException",
        "describe": {
            "name": TOPIC, "internal": false, "has_topic_id": true,
            "partitions": [[0, 1, [1], [1]], [1, 1, [1], [1]]],
        },
        "producer_idempotent": true,
        "produced": ALL_CODECS.produced(),
        "consumed_a": ALL_CODECS.records_from([0, 0]),
        "committed_a": {"0": [COMMIT[0], "java"], "1": [COMMIT[1], "java"]},
        "group_with_a": group("Stable", "range",
            json!([["consumer-a", [format!("{TOPIC}-0"), format!("{TOPIC}-1")]]])),
    });
    assert_summary("JavaClientCheck first", &first, &expected_first);

    // The committed offsets and the group must survive the restart.
    server.restart();

    let second = java_check(&server, base, "second");
    let end = ALL_CODECS.end_offset();
    let empty_group = group("Empty", "", json!([]));
    let expected_second = json!({
        "group_after_restart": empty_group,
        "consumed_b": ALL_CODECS.records_from(COMMIT),
        "group_offsets": {format!("{TOPIC}-0"): end, format!("{TOPIC}-1"): end},
        "group_after_b": empty_group,
        "groups": [[GROUP, "consumer", "Empty"]],
        // Partition 0 holds records 0, 2, 4, ... at 0 s, 2 s, 4 s, ...
        "offsets_for_times_p0": {"4000": [2, 4000], "4500": [3, 6000], "1000000": null},
        "after_seek_p0": (20..25).map(|offset| ALL_CODECS.record(offset * 2)).collect::<Vec<_>>(),
        "paused": [0],
        "while_paused_partitions": [1],
        "after_resume_partitions": [0],
        // Timestamps grow with offsets, so the largest is each partition's last record.
        "list_offsets": {
            "earliest": [0, 0], "latest": [end, end], "at_5000": [3, 2],
            "max_timestamp": [end - 1, end - 1],
        },
        "delete_records_low_watermark": 5,
        "list_offsets_after_delete": {
            "earliest": [5, 0], "latest": [end, end], "at_5000": [5, 2],
            "max_timestamp": [end - 1, end - 1],
        },
        "cluster": {"nodes": [1], "controller": 1, "has_cluster_id": true},
    });
    assert_summary("JavaClientCheck second", &second, &expected_second);
}
