//! Transactions with Apache Kafka's Java client (kafka-clients 4.x, pinned in
//! tests/clients/java/pom.xml): tests/clients/java/src/JavaTxnCheck.java runs a
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

#[test]
fn java_transactional_consume_transform_produce() {
    let server = TestServer::start();
    let mut command = java();
    command
        .arg("-cp")
        .arg(java_classpath("client"))
        .arg("JavaTxnCheck")
        .arg(server.bootstrap());
    let summary = run_json("JavaTxnCheck", command, Duration::from_secs(180));

    let upper =
        |range: std::ops::Range<usize>| range.map(|i| format!("IN-{i}")).collect::<Vec<_>>();
    // Inputs 50..75 were transformed once in the aborted transaction, then again.
    let uncommitted: Vec<String> = [upper(0..75), upper(50..100)].concat();
    let expected = json!({
        "transactions": ["commit@0", "commit@25", "abort@50", "commit@50", "commit@75"],
        "zombie": "ProducerFencedException",
        "read_committed": upper(0..100),
        "read_uncommitted": uncommitted,
        "group_offset": 100,
        // The successor's initTransactions left it Empty at the bumped epoch.
        "listed": ["java-etl-1:Empty"],
        "described": ["Empty", 1, 0],
    });
    assert_summary("JavaTxnCheck", &summary, &expected);
}
