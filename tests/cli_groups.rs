//! `skald group list|describe|delete|reset-offsets` against a real server, with offsets committed
//! through the client library (simple, memberless commits) and a librdkafka group member.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{cells, row, run_with_timeout, skald_bin, TestServer};
use rdkafka::consumer::{BaseConsumer, Consumer};
use skald_client::{Client, ClientConfig, Producer, ProducerConfig, ProducerRecord};

const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// 2026-11-21T10:00:00Z: record `i` of every partition is stamped `i` minutes later.
const BASE_TIMESTAMP_MS: i64 = 1_795_255_200_000;

fn start_server() -> TestServer {
    TestServer::start_with(&[
        ("group.initial.rebalance.delay.ms", "300"),
        ("offsets.topic.num.partitions", "4"),
    ])
}

struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

fn skald(server: &TestServer, args: &[&str]) -> Output {
    let mut command = Command::new(skald_bin());
    command
        .args(args)
        .arg("--brokers")
        .arg(server.bootstrap())
        .env_remove("SKALD_BROKERS")
        .env("RUST_LOG", "warn");
    let (status, stdout, stderr) = run_with_timeout(command, b"", CLI_TIMEOUT);
    Output {
        success: status.success(),
        stdout,
        stderr,
    }
}

/// Runs a command that must succeed; returns stdout and stderr.
fn ok(server: &TestServer, args: &[&str]) -> (String, String) {
    let out = skald(server, args);
    assert!(
        out.success,
        "skald {args:?} failed\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    (out.stdout, out.stderr)
}

/// Runs a command that must fail; returns stderr.
fn fails(server: &TestServer, args: &[&str]) -> String {
    let out = skald(server, args);
    assert!(
        !out.success,
        "skald {args:?} succeeded but should fail\nstdout:\n{}",
        out.stdout
    );
    out.stderr
}

fn rows(table: &[&[&str]]) -> Vec<Vec<String>> {
    table.iter().map(|r| row(r)).collect()
}

/// The offsets table of `group describe`: its header and the rows after it.
fn offsets_table(server: &TestServer, group: &str) -> Vec<Vec<String>> {
    let described = cells(&ok(server, &["group", "describe", group]).0);
    let header = described
        .iter()
        .position(|r| r.first().map(String::as_str) == Some("TOPIC"))
        .unwrap_or_else(|| panic!("no offsets table: {described:?}"));
    described[header..].to_vec()
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

async fn client(server: &TestServer) -> Client {
    Client::connect(ClientConfig::new(&server.bootstrap()).expect("config"))
        .await
        .expect("connect")
}

/// Creates `orders` with 3 partitions holding 10, 5 and 0 records; record `i` of a partition is
/// stamped `BASE_TIMESTAMP_MS + i` minutes.
fn create_orders(server: &TestServer) {
    ok(server, &["topic", "create", "orders", "--partitions", "3"]);
    block_on(async {
        let mut producer = Producer::new(client(server).await, ProducerConfig::default());
        for (partition, count) in [(0, 10), (1, 5)] {
            for i in 0..count {
                let record = ProducerRecord {
                    timestamp_ms: Some(BASE_TIMESTAMP_MS + i * 60_000),
                    ..ProducerRecord::value(format!("order {i}"))
                };
                producer
                    .send("orders", Some(partition), record)
                    .await
                    .expect("send");
            }
        }
        for delivery in producer.flush().await.expect("flush") {
            delivery.result.expect("delivered");
        }
    });
}

fn commit(server: &TestServer, group: &str, offsets: &[(i32, i64)]) {
    block_on(async {
        client(server)
            .await
            .commit_offsets(group, "orders", &offsets.iter().copied().collect())
            .await
            .expect("commit");
    });
}

#[test]
fn list_describe_reset_and_delete_a_simple_group() {
    let server = start_server();
    create_orders(&server);
    commit(&server, "billing", &[(0, 4), (1, 5)]);

    assert_eq!(
        cells(&ok(&server, &["group", "list"]).0),
        rows(&[
            &["GROUP", "STATE", "PROTOCOL-TYPE"],
            &["billing", "Empty", "-"]
        ])
    );
    assert_eq!(
        cells(&ok(&server, &["group", "describe", "billing"]).0),
        rows(&[
            &["GROUP", "billing"],
            &["STATE", "Empty"],
            &["PROTOCOL-TYPE", "-"],
            &["PROTOCOL", "-"],
            &["MEMBERS", "0"],
            &[
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "LOG-END-OFFSET",
                "LAG",
                "MEMBER-ID"
            ],
            &["orders", "0", "4", "10", "6", "-"],
            &["orders", "1", "5", "5", "0", "-"],
        ])
    );
    let before = offsets_table(&server, "billing");

    // A dry run (the default, or said explicitly) plans and commits nothing.
    let plan = rows(&[
        &["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"],
        &["orders", "0", "4", "0"],
        &["orders", "1", "5", "0"],
        &["orders", "2", "-", "0"],
    ]);
    for dry_run in [&["--dry-run"][..], &[][..]] {
        let mut args = vec![
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "orders",
            "--to-earliest",
        ];
        args.extend_from_slice(dry_run);
        let (stdout, stderr) = ok(&server, &args);
        assert_eq!(cells(&stdout), plan);
        assert!(stderr.contains("dry run: nothing committed"), "{stderr}");
        assert_eq!(offsets_table(&server, "billing"), before);
    }

    let reset = |target: &[&str], topic: &str| {
        let mut args = vec!["group", "reset-offsets", "billing", "--topic", topic];
        args.extend_from_slice(target);
        args.push("--execute");
        let (stdout, stderr) = ok(&server, &args);
        assert!(stderr.contains("for group billing"), "{stderr}");
        cells(&stdout)
    };
    let header = ["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"];
    let offsets_header = [
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "MEMBER-ID",
    ];

    assert_eq!(reset(&["--to-earliest"], "orders"), plan);
    assert_eq!(
        offsets_table(&server, "billing"),
        rows(&[
            &offsets_header,
            &["orders", "0", "0", "10", "10", "-"],
            &["orders", "1", "0", "5", "5", "-"],
            &["orders", "2", "0", "0", "0", "-"],
        ])
    );

    // Offsets past the log end are moved to it, as Kafka does.
    assert_eq!(
        reset(&["--to-offset", "7"], "orders:0,1"),
        rows(&[
            &header,
            &["orders", "0", "0", "7"],
            &["orders", "1", "0", "5"]
        ])
    );
    assert_eq!(
        offsets_table(&server, "billing"),
        rows(&[
            &offsets_header,
            &["orders", "0", "7", "10", "3", "-"],
            &["orders", "1", "5", "5", "0", "-"],
            &["orders", "2", "0", "0", "0", "-"],
        ])
    );

    // Shifts stay within [log start, log end].
    assert_eq!(
        reset(&["--shift-by", "-2"], "orders"),
        rows(&[
            &header,
            &["orders", "0", "7", "5"],
            &["orders", "1", "5", "3"],
            &["orders", "2", "0", "0"],
        ])
    );
    assert_eq!(
        reset(&["--shift-by", "4"], "orders:0"),
        rows(&[&header, &["orders", "0", "5", "9"]])
    );

    // The first record at or after 10:03:30 is record 4; an empty partition goes to its end.
    assert_eq!(
        reset(&["--to-datetime", "2026-11-21T10:03:30Z"], "orders"),
        rows(&[
            &header,
            &["orders", "0", "9", "4"],
            &["orders", "1", "3", "4"],
            &["orders", "2", "0", "0"],
        ])
    );
    assert_eq!(
        offsets_table(&server, "billing"),
        rows(&[
            &offsets_header,
            &["orders", "0", "4", "10", "6", "-"],
            &["orders", "1", "4", "5", "1", "-"],
            &["orders", "2", "0", "0", "0", "-"],
        ])
    );
    // No record is that recent: the log end. Same instant written in another zone.
    assert_eq!(
        reset(
            &["--to-datetime", "2026-11-21T12:00:00+01:00"],
            "orders:0,1"
        ),
        rows(&[
            &header,
            &["orders", "0", "4", "10"],
            &["orders", "1", "4", "5"]
        ])
    );
    assert_eq!(
        reset(&["--to-latest"], "orders:2"),
        rows(&[&header, &["orders", "2", "0", "0"]])
    );

    let stderr = fails(
        &server,
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "nope",
            "--to-earliest",
        ],
    );
    assert!(stderr.contains("topic nope does not exist"), "{stderr}");

    assert_eq!(
        ok(&server, &["group", "delete", "billing"]).0,
        "deleted group billing\n"
    );
    assert_eq!(
        cells(&ok(&server, &["group", "list"]).0),
        rows(&[&["GROUP", "STATE", "PROTOCOL-TYPE"]])
    );
    let stderr = fails(&server, &["group", "describe", "billing"]);
    assert_eq!(stderr, "skald: group billing does not exist\n");
    let stderr = fails(&server, &["group", "delete", "billing"]);
    assert_eq!(stderr, "skald: group billing does not exist\n");
    let stderr = fails(&server, &["group", "describe", "nobody"]);
    assert_eq!(stderr, "skald: group nobody does not exist\n");
}

fn group_member(server: &TestServer, group: &str) -> BaseConsumer {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .set("broker.address.family", "v4")
        .set("client.id", "cli-groups-test")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("create group consumer");
    consumer.subscribe(&["orders"]).expect("subscribe");
    consumer
}

#[test]
fn a_stable_group_shows_its_members_and_refuses_reset_and_delete() {
    let server = start_server();
    create_orders(&server);
    let member = group_member(&server, "live");

    // Poll until librdkafka has joined and the group is Stable with the whole topic assigned.
    let deadline = Instant::now() + Duration::from_secs(60);
    let described = loop {
        let _ = member.poll(Duration::from_millis(100));
        let out = skald(&server, &["group", "describe", "live"]);
        if out.success && out.stdout.contains("orders:0,1,2") {
            break cells(&out.stdout);
        }
        assert!(
            Instant::now() < deadline,
            "the group never became Stable: {}{}",
            out.stdout,
            out.stderr
        );
    };
    let value = |key: &str| {
        described
            .iter()
            .find(|r| r.first().map(String::as_str) == Some(key))
            .map(|r| r[1..].to_vec())
            .unwrap_or_else(|| panic!("no {key}: {described:?}"))
    };
    assert_eq!(value("STATE"), row(&["Stable"]));
    assert_eq!(value("PROTOCOL-TYPE"), row(&["consumer"]));
    assert_eq!(value("MEMBERS"), row(&["1"]));
    let members = described
        .iter()
        .position(|r| r.first().map(String::as_str) == Some("MEMBER-ID"))
        .unwrap_or_else(|| panic!("no members table: {described:?}"));
    assert_eq!(
        described[members],
        row(&["MEMBER-ID", "CLIENT-ID", "HOST", "ASSIGNMENT"])
    );
    let m = &described[members + 1];
    let member_id = m[0].clone();
    assert!(member_id.starts_with("cli-groups-test-"), "{m:?}");
    assert_eq!(
        m[1..],
        row(&["cli-groups-test", m[2].as_str(), "orders:0,1,2"])[..]
    );
    assert!(m[2].contains("127.0.0.1"), "{m:?}");
    // Nothing committed yet: every assigned partition, owned by the member, without a lag.
    let offsets = offsets_table(&server, "live");
    assert_eq!(
        offsets,
        ["0", "1", "2"].iter().zip(["10", "5", "0"]).fold(
            vec![row(&[
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "LOG-END-OFFSET",
                "LAG",
                "MEMBER-ID"
            ])],
            |mut table, (p, end)| {
                table.push(row(&["orders", p, "-", end, "-", member_id.as_str()]));
                table
            }
        )
    );
    assert_eq!(
        cells(&ok(&server, &["group", "list"]).0),
        rows(&[
            &["GROUP", "STATE", "PROTOCOL-TYPE"],
            &["live", "Stable", "consumer"]
        ])
    );

    let stderr = fails(
        &server,
        &[
            "group",
            "reset-offsets",
            "live",
            "--topic",
            "orders",
            "--to-earliest",
            "--execute",
        ],
    );
    assert_eq!(
        stderr,
        "skald: cannot reset the offsets of group live: it is Stable with 1 member(s); \
         offsets can be reset only while the group is Empty or Dead\n"
    );
    let stderr = fails(&server, &["group", "delete", "live"]);
    assert_eq!(
        stderr,
        "skald: group live is not empty: it has active members; stop them before deleting it \
         (NON_EMPTY_GROUP)\n"
    );
    let committed: BTreeMap<(String, i32), i64> =
        block_on(async { client(&server).await.committed_offsets("live").await })
            .expect("committed offsets");
    assert!(committed.is_empty(), "{committed:?}");
    member.unsubscribe();
    drop(member);
}
