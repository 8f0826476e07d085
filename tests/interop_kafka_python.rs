//! Interop with kafka-python (a pure-Python client): admin, produce with the default (idempotent)
//! producer, assign + seek, read back.
//! The client lives in tests/python/kafka_python_check.py, which prints a JSON summary that this
//! test compares exactly. kafka-python must be installed (scripts/test installs it).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{run_with_timeout, TestServer};
use serde_json::{json, Value};

const RECORDS: usize = 200;

fn require_kafka_python() {
    let (status, _, stderr) = run_with_timeout(
        {
            let mut c = Command::new("python3");
            c.args(["-c", "import kafka"]);
            c
        },
        b"",
        Duration::from_secs(30),
    );
    assert!(
        status.success(),
        "kafka-python is not importable by python3 ({status}): {stderr}\nrun scripts/test, which installs it"
    );
}

#[test]
fn kafka_python_admin_produce_consume() {
    require_kafka_python();
    let server = TestServer::start();
    let topic = "kafka-python";
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/kafka_python_check.py");
    let mut command = Command::new("python3");
    command
        .arg(&script)
        .arg(server.bootstrap())
        .arg(topic)
        .arg(RECORDS.to_string());
    let (status, stdout, stderr) = run_with_timeout(command, b"", Duration::from_secs(120));
    assert!(
        status.success(),
        "{} failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        script.display()
    );
    let mut summary: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}): {stdout}\nstderr:\n{stderr}"));
    // Which kafka-python ran (scripts/test pins one) goes into failure messages only.
    let version = summary
        .as_object_mut()
        .and_then(|o| o.remove("kafka_python"))
        .expect("kafka_python version in summary");

    let records: Vec<Value> = (0..RECORDS)
        .map(|i| json!([i % 2, i / 2, format!("key-{i}"), format!("value-{i}")]))
        .collect();
    let mut consumed = records.clone();
    consumed.sort_by_key(|r| (r[0].as_u64(), r[1].as_u64()));
    let half = RECORDS / 2;
    let expected = json!({
        "create": [[topic, 0]],
        "create_again": [[topic, 36]], // TOPIC_ALREADY_EXISTS
        "topics": [topic],
        "describe": [{"topic": topic, "error_code": 0, "partitions": [0, 1]}],
        "producer_idempotent": true,
        "produced": records,
        "consumed": consumed,
        "end_offsets": {"0": half, "1": half},
        "beginning_offsets": {"0": 0, "1": 0},
    });
    if summary != expected {
        for key in expected.as_object().expect("object").keys() {
            assert_eq!(
                summary[key], expected[key],
                "summary field {key:?} (kafka-python {version})"
            );
        }
        assert_eq!(summary, expected, "kafka-python {version}");
    }
}
