//! Interop with two Python clients beyond kafka-python: aiokafka (asyncio, its own protocol
//! code) and confluent-kafka (Confluent's client over librdkafka), at the versions pinned in
//! tests/clients/python/requirements.txt. Each check program (tests/clients/python/*_check.py)
//! runs twice around a server restart and prints a JSON summary compared here exactly: the admin
//! creates a topic (and again, which must fail); one producer per compression codec sends keyed
//! records with headers and timestamps; a group member reads them all, commits explicit offsets
//! and is described while it is in the group; after the restart a new member resumes exactly at
//! the commit and commits the rest; the admin reads the group's offsets, describes and lists
//! groups; a group-less consumer checks offsets by time, seek and pause/resume; the admin deletes
//! records and describes the cluster (confluent-kafka also lists offsets).
//!
//! Both produce with their defaults (neither is idempotent by default; aiokafka acks=1,
//! librdkafka acks=all). Left out: transactions, which Skald does not serve yet.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::clients::{assert_summary, base_timestamp_ms, installed, run_json, ALL_CODECS, COMMIT};
use common::TestServer;
use serde_json::{json, Value};

fn python_check(script: &str, server: &TestServer, topic: &str, base: i64, phase: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients/python")
        .join(script);
    let mut command = Command::new("python3");
    command
        .env("PYTHONPATH", installed("python"))
        .arg(path)
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

fn tp(topic: &str, partition: u32) -> String {
    format!("{topic}-{partition}")
}

/// What both programs report of the group-less consumer: offsets by time aside.
fn assigned_consumer_checks() -> Value {
    json!({
        "after_seek_p0": (20..25).map(|offset| ALL_CODECS.record(offset * 2)).collect::<Vec<_>>(),
        "while_paused_partitions": [1],
        "after_resume_partitions": [0],
    })
}

fn merge(mut into: Value, from: Value) -> Value {
    let target = into.as_object_mut().expect("object");
    for (key, value) in from.as_object().expect("object") {
        target.insert(key.clone(), value.clone());
    }
    into
}

#[test]
fn aiokafka_admin_produce_consume_group() {
    let script = "aiokafka_check.py";
    let topic = "aiokafka-orders";
    let group = format!("{topic}-group");
    let mut server = TestServer::start();
    let base = base_timestamp_ms();

    let first = python_check(script, &server, topic, base, "first");
    let expected = json!({
        "create": [[topic, 0]],
        "create_again": [[topic, 36]], // TOPIC_ALREADY_EXISTS
        "produced": ALL_CODECS.produced(),
        "consumed_a": ALL_CODECS.records_from([0, 0]),
        "committed_a": {tp(topic, 0): COMMIT[0], tp(topic, 1): COMMIT[1]},
        "group_with_a": {
            "error_code": 0, "state": "Stable", "protocol_type": "consumer",
            "protocol": "roundrobin", "members": [["aiokafka-a", [tp(topic, 0), tp(topic, 1)]]],
        },
    });
    assert_summary("aiokafka first", &first, &expected);

    server.restart();

    let second = python_check(script, &server, topic, base, "second");
    let end = ALL_CODECS.end_offset();
    let empty = json!({
        "error_code": 0, "state": "Empty", "protocol_type": "consumer", "protocol": "",
        "members": [],
    });
    let expected = merge(
        json!({
            "group_after_restart": empty,
            "consumed_b": ALL_CODECS.records_from(COMMIT),
            "group_offsets": {tp(topic, 0): end, tp(topic, 1): end},
            "group_after_b": empty,
            "groups": [[group, "consumer"]],
            "offsets_for_times_p0": {"4000": [2, 4000], "4500": [3, 6000], "1000000": null},
            "beginning_offsets": [0, 0],
            "end_offsets": [end, end],
            "paused": [0],
            "delete_records": {tp(topic, 0): 5},
            "cluster": {"brokers": [1], "controller": 1, "has_cluster_id": true},
        }),
        assigned_consumer_checks(),
    );
    assert_summary("aiokafka second", &second, &expected);
}

#[test]
fn confluent_kafka_admin_produce_consume_group() {
    let script = "confluent_kafka_check.py";
    let topic = "confluent-orders";
    let group = format!("{topic}-group");
    let mut server = TestServer::start();
    let base = base_timestamp_ms();

    let first = python_check(script, &server, topic, base, "first");
    let expected = json!({
        "create": "ok",
        "create_again": "TOPIC_ALREADY_EXISTS",
        "produced": ALL_CODECS.produced(),
        "consumed_a": ALL_CODECS.records_from([0, 0]),
        "committed_a": {tp(topic, 0): COMMIT[0], tp(topic, 1): COMMIT[1]},
        "group_with_a": {
            "state": "STABLE", "assignor": "range", "coordinator": 1, "simple": false,
            "members": [["confluent-a", [tp(topic, 0), tp(topic, 1)]]],
        },
    });
    assert_summary("confluent-kafka first", &first, &expected);

    server.restart();

    let second = python_check(script, &server, topic, base, "second");
    let end = ALL_CODECS.end_offset();
    let empty = json!({
        "state": "EMPTY", "assignor": "", "coordinator": 1, "simple": false, "members": [],
    });
    let expected = merge(
        json!({
            "group_after_restart": empty,
            "consumed_b": ALL_CODECS.records_from(COMMIT),
            "group_offsets": {tp(topic, 0): end, tp(topic, 1): end},
            "group_after_b": empty,
            "groups": [[group, "EMPTY"]],
            // Past the last record: -1 (OFFSET_END).
            "offsets_for_times_p0": {"4000": 2, "4500": 3, "1000000": -1},
            "list_offsets": {"earliest": [0, 0], "latest": [end, end], "at_5000": [3, 2]},
            "delete_records_low_watermark": [5],
            "list_offsets_after_delete": {"earliest": [5, 0], "latest": [end, end], "at_5000": [5, 2]},
            "cluster": {"nodes": [1], "controller": 1, "has_cluster_id": true},
        }),
        assigned_consumer_checks(),
    );
    assert_summary("confluent-kafka second", &second, &expected);
}
