//! The `skald` command-line tool against a real server: topics, produce, consume.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{cells, row, run_with_timeout, skald_bin, TestServer};

const CLI_TIMEOUT: Duration = Duration::from_secs(60);

struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

fn skald(server: &TestServer, args: &[&str], stdin: &str) -> Output {
    let mut command = Command::new(skald_bin());
    command
        .args(args)
        .arg("--brokers")
        .arg(server.bootstrap())
        .env_remove("SKALD_BROKERS")
        .env("RUST_LOG", "warn");
    let (status, stdout, stderr) = run_with_timeout(command, stdin.as_bytes(), CLI_TIMEOUT);
    Output {
        success: status.success(),
        stdout,
        stderr,
    }
}

/// Runs a command that must succeed; returns stdout.
fn ok(server: &TestServer, args: &[&str], stdin: &str) -> String {
    let out = skald(server, args, stdin);
    assert!(
        out.success,
        "skald {args:?} failed\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    out.stdout
}

/// Runs a command that must fail; returns stderr.
fn fails(server: &TestServer, args: &[&str], stdin: &str) -> String {
    let out = skald(server, args, stdin);
    assert!(
        !out.success,
        "skald {args:?} succeeded but should fail\nstdout:\n{}",
        out.stdout
    );
    out.stderr
}

#[test]
fn topic_create_list_describe_delete() {
    let server = TestServer::start();

    assert_eq!(
        ok(
            &server,
            &["topic", "create", "orders", "--partitions", "3"],
            ""
        ),
        "created topic orders\n"
    );
    assert_eq!(
        ok(
            &server,
            &["topic", "create", "audit", "--partitions", "1"],
            ""
        ),
        "created topic audit\n"
    );
    let stderr = fails(
        &server,
        &["topic", "create", "orders", "--partitions", "3"],
        "",
    );
    assert!(
        stderr.contains("topic orders already exists"),
        "stderr: {stderr}"
    );

    assert_eq!(
        cells(&ok(&server, &["topic", "list"], "")),
        vec![
            row(&["NAME", "PARTITIONS", "REPLICAS"]),
            row(&["audit", "1", "1"]),
            row(&["orders", "3", "1"]),
        ]
    );

    let described = cells(&ok(&server, &["topic", "describe", "orders"], ""));
    assert!(
        described.contains(&row(&["NAME", "orders"])),
        "{described:?}"
    );
    assert!(
        described.contains(&row(&["PARTITIONS", "3"])),
        "{described:?}"
    );
    assert!(
        described.contains(&row(&["REPLICAS", "1"])),
        "{described:?}"
    );
    let header = described
        .iter()
        .position(|r| r.first().map(String::as_str) == Some("PARTITION"))
        .unwrap_or_else(|| panic!("no partition table: {described:?}"));
    assert_eq!(
        described[header],
        row(&["PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "OFFLINE"])
    );
    let partitions: Vec<Vec<String>> = described[header + 1..header + 4]
        .iter()
        .map(|r| {
            // Everything but the leader epoch, whose value is the server's business.
            let mut r = r.clone();
            r.remove(2);
            r
        })
        .collect();
    assert_eq!(
        partitions,
        vec![
            row(&["0", "1", "[1]", "[1]", "[]"]),
            row(&["1", "1", "[1]", "[1]", "[]"]),
            row(&["2", "1", "[1]", "[1]", "[]"]),
        ]
    );

    assert_eq!(
        ok(&server, &["topic", "delete", "orders"], ""),
        "deleted topic orders\n"
    );
    common::poll_until(
        "orders to leave the topic list",
        Duration::from_secs(15),
        || {
            let listed = cells(&ok(&server, &["topic", "list"], ""));
            (listed
                == vec![
                    row(&["NAME", "PARTITIONS", "REPLICAS"]),
                    row(&["audit", "1", "1"]),
                ])
            .then_some(())
        },
    );
    let stderr = fails(&server, &["topic", "describe", "orders"], "");
    assert!(
        stderr.contains("topic orders does not exist"),
        "stderr: {stderr}"
    );
}

#[test]
fn produce_then_consume_from_beginning() {
    let server = TestServer::start();
    ok(
        &server,
        &["topic", "create", "lines", "--partitions", "1"],
        "",
    );

    let mut input: String = (0..20).map(|i| format!("k{i}:value {i}\n")).collect();
    input.push_str("no separator here\n");
    input.push_str("x:y:z\n");
    let produced = skald(
        &server,
        &["produce", "lines", "--key-separator", ":"],
        &input,
    );
    assert!(produced.success, "produce failed: {}", produced.stderr);
    assert!(
        produced
            .stderr
            .contains("produced 22 records to lines (last offsets, partition@offset: 0@21)"),
        "produce summary on stderr: {}",
        produced.stderr
    );

    let mut expected: String = (0..20).map(|i| format!("k{i}=value {i}\n")).collect();
    expected.push_str("null=no separator here\n");
    expected.push_str("x=y:z\n");
    let consumed = skald(
        &server,
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--count",
            "22",
            "--print-key",
            "--key-separator",
            "=",
        ],
        "",
    );
    assert!(consumed.success, "consume failed: {}", consumed.stderr);
    assert_eq!(consumed.stdout, expected);

    // Values only, from an offset, bounded by --count.
    let consumed = ok(
        &server,
        &["consume", "lines", "--offset", "19", "--count", "2"],
        "",
    );
    assert_eq!(consumed, "value 19\nno separator here\n");
}

#[test]
fn consume_missing_topic_fails_with_message() {
    let server = TestServer::start();
    let out = skald(
        &server,
        &["consume", "missing", "--from-beginning", "--count", "1"],
        "",
    );
    assert!(
        !out.success,
        "consume of a missing topic succeeded: {}",
        out.stdout
    );
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.contains("topic missing does not exist"),
        "stderr: {}",
        out.stderr
    );
}

/// `skald topic describe t | head -0`: stdout is closed before the tool prints (the reader is gone
/// right after the start; the tool first asks the server); it ends quietly with success instead of
/// panicking on the broken pipe. `consume` as well.
#[test]
fn a_closed_stdout_ends_the_tool_quietly() {
    use std::process::Stdio;
    let server = TestServer::start();
    ok(
        &server,
        &["topic", "create", "many", "--partitions", "3"],
        "",
    );
    ok(&server, &["produce", "many"], "a\nb\nc\n");
    for args in [
        &["topic", "describe", "many"][..],
        &["topic", "list"][..],
        &["consume", "many", "--from-beginning", "--count", "3"][..],
    ] {
        let mut child = Command::new(skald_bin())
            .args(args)
            .arg("--brokers")
            .arg(server.bootstrap())
            .env_remove("SKALD_BROKERS")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn skald");
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("wait for skald");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && !stderr.contains("panicked"),
            "skald {args:?}: status {}, stderr:\n{stderr}",
            output.status
        );
    }
}
