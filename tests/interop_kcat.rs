//! Interop with kcat (Debian's build, its own librdkafka): metadata listing, produce, consume.
//! kcat must be installed (scripts/test installs it); a missing kcat fails the test.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{run_with_timeout, TestServer};

const KCAT_TIMEOUT: Duration = Duration::from_secs(60);

fn kcat() -> Command {
    let found = Command::new("kcat").arg("-V").output();
    match found {
        Ok(output) if output.status.success() => Command::new("kcat"),
        Ok(output) => panic!(
            "`kcat -V` failed ({}): {}; run scripts/test, which installs kcat",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(e) => panic!("kcat is not installed ({e}); run scripts/test, which installs it"),
    }
}

fn run_kcat(args: &[&str], stdin: &str) -> String {
    let mut command = kcat();
    command.args(args);
    let (status, stdout, stderr) = run_with_timeout(command, stdin.as_bytes(), KCAT_TIMEOUT);
    assert!(
        status.success(),
        "kcat {args:?} exited with {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

#[test]
fn kcat_lists_produces_and_consumes() {
    let server = TestServer::start();
    let boot = server.bootstrap();
    let topic = "kcat-topic";

    let lines: Vec<String> = (0..50).map(|i| format!("k{i}:value {i}")).collect();
    let mut input = lines.join("\n");
    input.push('\n');
    run_kcat(&["-P", "-b", &boot, "-t", topic, "-K:", "-p", "0"], &input);

    // Metadata as JSON: our one broker and the topic kcat's producer auto-created.
    let listing = run_kcat(&["-L", "-J", "-b", &boot], "");
    let json: serde_json::Value = serde_json::from_str(listing.trim())
        .unwrap_or_else(|e| panic!("kcat -L -J output is not JSON ({e}): {listing}"));
    let brokers = json["brokers"].as_array().expect("brokers array");
    assert_eq!(brokers.len(), 1, "{json}");
    assert_eq!(brokers[0]["id"], 1, "{json}");
    assert_eq!(brokers[0]["name"], boot.as_str(), "{json}");
    assert_eq!(json["controllerid"], 1, "{json}");
    let topics = json["topics"].as_array().expect("topics array");
    let names: Vec<&str> = topics.iter().filter_map(|t| t["topic"].as_str()).collect();
    assert_eq!(names, vec![topic], "{json}");
    let partitions = topics[0]["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 1, "num.partitions defaults to 1: {json}");
    assert_eq!(partitions[0]["partition"], 0);
    assert_eq!(partitions[0]["leader"], 1);

    let consumed = run_kcat(
        &[
            "-C",
            "-b",
            &boot,
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-f",
            "%k=%s@%o\n",
        ],
        "",
    );
    let expected: Vec<String> = (0..50).map(|i| format!("k{i}=value {i}@{i}")).collect();
    assert_eq!(consumed.lines().collect::<Vec<_>>(), expected);

    // A second round appends after the first.
    run_kcat(
        &["-P", "-b", &boot, "-t", topic, "-K:", "-p", "0"],
        "late:one more\n",
    );
    let consumed = run_kcat(
        &[
            "-C",
            "-b",
            &boot,
            "-t",
            topic,
            "-o",
            "50",
            "-e",
            "-f",
            "%k=%s@%o|%p\n",
        ],
        "",
    );
    assert_eq!(consumed, "late=one more@50|0\n");
}
