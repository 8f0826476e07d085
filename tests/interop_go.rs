//! Interop with the two mainstream Go clients, franz-go (kgo + kadm) and IBM/sarama, at the
//! versions pinned in tests/clients/go/go.mod. Each check program (tests/clients/go/franz,
//! tests/clients/go/sarama) runs twice around a server restart and prints a JSON summary that is
//! compared here exactly: the admin creates a topic (and again, which must fail), one producer
//! per compression codec sends keyed records with headers and timestamps, a group member reads
//! them all, commits explicit offsets and is described while it is in the group; after the
//! restart a new member resumes exactly at the commit and commits the rest; the admin reads the
//! group's offsets, describes and lists groups, deletes records, lists offsets and brokers.
//!
//! franz-go produces with kgo's defaults (idempotent, acks=all) and consumes with its default
//! cooperative-sticky balancer. sarama produces with its defaults (not idempotent, acks=1:
//! WaitForLocal) and its default protocol version (2.8); its consumer group uses the range
//! balancer. Sarama 1.22 (tests/clients/go/sarama122), the old-client case, produces, consumes
//! in a group, commits and resumes after a restart. Left out: transactions, which Skald does
//! not serve yet.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::clients::{assert_summary, base_timestamp_ms, installed, run_json, ALL_CODECS, COMMIT};
use common::TestServer;
use serde_json::{json, Value};

fn go_check(program: &Path, server: &TestServer, topic: &str, base: i64, phase: &str) -> Value {
    let mut command = Command::new(program);
    command
        .arg(server.bootstrap())
        .arg(topic)
        .arg(format!("{topic}-group"))
        .arg(base.to_string())
        .arg(phase);
    run_json(
        &format!("{} {phase}", program.display()),
        command,
        Duration::from_secs(120),
    )
}

/// A partition's name as the programs print it in maps.
fn tp(topic: &str, partition: u32) -> String {
    format!("{topic}-{partition}")
}

#[test]
fn franz_go_admin_produce_consume_group() {
    let program = installed("go/bin/franz");
    let topic = "franz-orders";
    let group = format!("{topic}-group");
    let mut server = TestServer::start();
    let base = base_timestamp_ms();

    let first = go_check(&program, &server, topic, base, "first");
    let expected = json!({
        "create": "ok",
        "create_again": "TOPIC_ALREADY_EXISTS: Topic with this name already exists.",
        "produced": ALL_CODECS.produced(),
        "consumed_a": ALL_CODECS.records_from([0, 0]),
        "committed_a": {tp(topic, 0): COMMIT[0], tp(topic, 1): COMMIT[1]},
        "group_with_a": {
            "state": "Stable", "protocol_type": "consumer", "protocol": "cooperative-sticky",
            "members": [["franz-a", [tp(topic, 0), tp(topic, 1)]]], "coordinator": 1,
        },
    });
    assert_summary("franz first", &first, &expected);

    server.restart();

    let second = go_check(&program, &server, topic, base, "second");
    let end = ALL_CODECS.end_offset();
    let empty = json!({
        "state": "Empty", "protocol_type": "consumer", "protocol": "", "members": [],
        "coordinator": 1,
    });
    let expected = json!({
        "group_after_restart": empty,
        "consumed_b": ALL_CODECS.records_from(COMMIT),
        "group_offsets": {tp(topic, 0): end, tp(topic, 1): end},
        "group_after_b": empty,
        "groups": [[group, "consumer", "Empty"]],
        "list_offsets": {"earliest": [0, 0], "latest": [end, end], "at_5000": [3, 2]},
        "delete_records": [5, "ok"],
        "list_offsets_after_delete": {
            "earliest": [5, 0], "latest": [end, end], "at_5000": [5, 2],
        },
        "brokers": [1],
    });
    assert_summary("franz second", &second, &expected);
}

#[test]
fn sarama_admin_produce_consume_group() {
    let program = installed("go/bin/sarama");
    let topic = "sarama-orders";
    let group = format!("{topic}-group");
    let mut server = TestServer::start();
    let base = base_timestamp_ms();

    let first = go_check(&program, &server, topic, base, "first");
    let expected = json!({
        "create": "ok",
        "create_again": format!(
            "kafka server: Topic with this name already exists - Topic '{topic}' already exists."
        ),
        "produced": ALL_CODECS.produced(),
        "consumed_a": ALL_CODECS.records_from([0, 0]),
        "committed_a": {tp(topic, 0): COMMIT[0], tp(topic, 1): COMMIT[1]},
        "group_with_a": {
            "state": "Stable", "protocol_type": "consumer", "protocol": "range",
            "members": [["sarama-a", [tp(topic, 0), tp(topic, 1)]]],
        },
    });
    assert_summary("sarama first", &first, &expected);

    server.restart();

    let second = go_check(&program, &server, topic, base, "second");
    let end = ALL_CODECS.end_offset();
    let empty =
        json!({"state": "Empty", "protocol_type": "consumer", "protocol": "", "members": []});
    let expected = json!({
        "group_after_restart": empty,
        "consumed_b": ALL_CODECS.records_from(COMMIT),
        "group_offsets": {tp(topic, 0): end, tp(topic, 1): end},
        "group_after_b": empty,
        "groups": {group: "consumer"},
        "delete_records": "ok",
        "list_offsets_after_delete": {
            "earliest": [5, 0], "latest": [end, end], "at_5000": [5, 2],
        },
        "cluster": {"brokers": [1], "controller": 1},
    });
    assert_summary("sarama second", &second, &expected);
}

/// Sarama 1.22 (github.com/Shopify/sarama v1.22.1: Debian's, and what Burrow 1.2 is built on)
/// set to Kafka 1.0's protocol (its default, 0.8.2, predates record batches v2). Whatever the
/// protocol, it commits with OffsetCommit v1, which kafka-protocol no longer decodes
/// (protocol/src/legacy.rs rewrites it). Its group member commits on leaving, and after a
/// restart a new member resumes exactly at the commit.
#[test]
fn sarama_1_22_group_commits_and_resumes() {
    let program = installed("go/bin/sarama122");
    let topic = "sarama122-orders";
    let group = format!("{topic}-group");
    let mut server = TestServer::start();
    let mut conn = common::wire::RawConn::connect(server.kafka_addr());
    common::wire::create_topics(&mut conn, &[(topic, 2)]);
    let run = |server: &TestServer, phase: &str| {
        let mut command = Command::new(&program);
        command
            .arg(server.bootstrap())
            .arg(topic)
            .arg(&group)
            .arg(phase);
        run_json(
            &format!("sarama122 {phase}"),
            command,
            Duration::from_secs(120),
        )
    };
    let record = |i: usize| json!([i % 2, i / 2, format!("key-{i}"), format!("value-{i}")]);
    // Partition 0 holds records 0, 2, 4, ...; partition 1 records 1, 3, 5, ...
    let by_partition = |indexes: &[usize]| -> Vec<Value> {
        let mut sorted = indexes.to_vec();
        sorted.sort_by_key(|&i| (i % 2, i / 2));
        sorted.into_iter().map(record).collect()
    };

    let first = run(&server, "first");
    let expected = json!({
        "produced": (0..10).map(|i| json!([i % 2, i / 2])).collect::<Vec<_>>(),
        "consumed": by_partition(&(0..10).collect::<Vec<_>>()),
    });
    assert_summary("sarama122 first", &first, &expected);

    server.restart();

    // Committed: partition 0 from offset 3 (record 6), partition 1 from offset 2 (record 5).
    let second = run(&server, "second");
    let expected = json!({"consumed": by_partition(&[6, 8, 5, 7, 9])});
    assert_summary("sarama122 second", &second, &expected);
}
