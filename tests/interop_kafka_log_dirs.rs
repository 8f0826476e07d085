//! Kafka's own `kafka-log-dirs.sh --describe` (`org.apache.kafka.tools.LogDirsCommand`, from the
//! tools release pinned in tests/clients/java/tools/pom.xml) against the real binary: it reads
//! DescribeLogDirs and prints each broker's log dirs with every partition's size and lag as JSON.

mod common;

use std::time::Duration;

use common::clients::{java, java_classpath};
use common::wire::{self, RawConn};
use common::{run_with_timeout, TestServer};

#[test]
fn kafka_log_dirs_describes_partition_sizes() {
    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    wire::create_topics(&mut conn, &[("sized", 2)]);
    let batch = wire::batch_v2(&[("k", "v", 1_000)]);
    assert_eq!(conn.produce_raw("sized", 0, batch.clone()).0, 0);
    let mut command = java();
    command
        .arg("-cp")
        .arg(java_classpath("tools"))
        .arg("org.apache.kafka.tools.LogDirsCommand")
        .arg("--bootstrap-server")
        .arg(server.bootstrap())
        .args(["--describe", "--topic-list", "sized"]);
    let (status, stdout, stderr) = run_with_timeout(command, b"", Duration::from_secs(90));
    assert!(
        status.success(),
        "kafka-log-dirs failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let json = stdout
        .lines()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in:\n{stdout}"));
    let described: serde_json::Value = serde_json::from_str(json).expect("kafka-log-dirs JSON");
    let dir = std::path::absolute(server.data_dir()).unwrap();
    let mut partitions = described["brokers"][0]["logDirs"][0]["partitions"]
        .as_array()
        .expect("partitions")
        .clone();
    partitions.sort_by_key(|p| p["partition"].as_str().unwrap_or_default().to_string());
    assert_eq!(
        described,
        serde_json::json!({
            "version": 1,
            "brokers": [{
                "broker": 1,
                "logDirs": [{
                    "error": null,
                    "logDir": dir.to_str().unwrap(),
                    "partitions": described["brokers"][0]["logDirs"][0]["partitions"],
                }],
            }],
        })
    );
    assert_eq!(
        serde_json::Value::Array(partitions),
        serde_json::json!([
            {"partition": "sized-0", "size": batch.len(), "offsetLag": 0, "isFuture": false},
            {"partition": "sized-1", "size": 0, "offsetLag": 0, "isFuture": false},
        ])
    );
}
