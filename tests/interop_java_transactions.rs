//! Transactions with Apache Kafka's Java client (kafka-clients 4.x, pinned in
//! tests/clients/java/pom.xml), under transactions version 2 (KIP-890, the client's choice when
//! the broker advertises it) and version 1: tests/clients/java/src/JavaTxnCheck.java runs a
//! consume-transform-produce loop with a transactional producer left at its defaults
//! (`sendOffsetsToTransaction`, one transaction aborted and redone), fences it with a second
//! producer of the same transactional.id, reads the output read_committed and read_uncommitted,
//! and asks Admin for the group's offset and the transaction; the JSON summary it prints is
//! compared here exactly.

mod common;

use std::time::Duration;

use common::clients::{assert_summary, java, java_classpath, run_json};
use common::TestServer;
use serde_json::json;

/// Runs JavaTxnCheck against a server with `transaction.version` at `level`; the summary.
fn java_txn_check(level: &str) -> serde_json::Value {
    let server = TestServer::start_with(&[("transaction.version", level)]);
    let mut command = java();
    command
        .arg("-cp")
        .arg(java_classpath("client"))
        .arg("JavaTxnCheck")
        .arg(server.bootstrap());
    run_json("JavaTxnCheck", command, Duration::from_secs(180))
}

fn expected(zombie: &str, described_epoch: i16) -> serde_json::Value {
    let upper =
        |range: std::ops::Range<usize>| range.map(|i| format!("IN-{i}")).collect::<Vec<_>>();
    // Inputs 50..75 were transformed once in the aborted transaction, then again.
    let uncommitted: Vec<String> = [upper(0..75), upper(50..100)].concat();
    json!({
        "transactions": ["commit@0", "commit@25", "abort@50", "commit@50", "commit@75"],
        "zombie": zombie,
        "read_committed": upper(0..100),
        "read_uncommitted": uncommitted,
        "group_offset": 100,
        // The successor's initTransactions left it Empty at the bumped epoch.
        "listed": ["java-etl-1:Empty"],
        "described": ["Empty", described_epoch, 0],
    })
}

/// Transactions version 2 (the default): the client adds no partitions itself (its leaders
/// do), sends no AddOffsetsToTxn, and every EndTxn bumps the epoch — five transactions, then the
/// successor's InitProducerId: epoch 6. The fenced zombie's first send reaches the partition
/// leader, whose add is refused PRODUCER_FENCED by the coordinator and passed on as
/// INVALID_PRODUCER_EPOCH, as Kafka's leaders do.
#[test]
fn java_transactions_version_2() {
    let expected = expected("InvalidProducerEpochException", 6);
    assert_summary("JavaTxnCheck (TV2)", &java_txn_check("2"), &expected);
}

/// Transactions version 1: AddPartitionsToTxn, AddOffsetsToTxn, one epoch per producer — the
/// successor's InitProducerId makes it 1.
#[test]
fn java_transactions_version_1() {
    let expected = expected("ProducerFencedException", 1);
    assert_summary("JavaTxnCheck (TV1)", &java_txn_check("1"), &expected);
}
