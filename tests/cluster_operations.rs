//! A cluster as operators run it: nodes started one at a time, in any order and far apart, all
//! end up serving; with default settings, losing any one node of three leaves every consumer
//! group a coordinator holding its committed offsets.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{Role, TestCluster};
use common::{http_get, poll_until, run_with_timeout, skald_bin};
use skald_client::{Client, ClientConfig};

const CLI_TIMEOUT: Duration = Duration::from_secs(60);

fn skald(bootstrap: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut command = Command::new(skald_bin());
    command
        .args(args)
        .args(["--brokers", bootstrap])
        .env_remove("SKALD_BROKERS")
        .env("RUST_LOG", "warn");
    let (status, stdout, stderr) = run_with_timeout(command, stdin.as_bytes(), CLI_TIMEOUT);
    (status.success(), stdout, stderr)
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

#[test]
fn voters_started_one_at_a_time_twenty_seconds_apart_all_serve() {
    const GAP: Duration = Duration::from_secs(20);
    let mut cluster = TestCluster::unstarted(&[Role::Combined; 3], &[]);
    for node in 1..=3 {
        cluster.start_node(node);
        // The gap is the scenario, not a wait for anything: meanwhile every node started so
        // far stays up and alive, waiting for its quorum instead of giving up.
        let gap_ends = Instant::now() + GAP;
        while Instant::now() < gap_ends {
            for started in 1..=node {
                let metrics = cluster.node(started).metrics_addr();
                assert!(
                    cluster.nodes[started as usize - 1].is_running(),
                    "node {started} exited while node {node} was the last started:\n{}",
                    cluster.node(started).stderr_tail()
                );
                if let Ok(answer) = http_get(metrics, "/health") {
                    assert_eq!(answer, (200, "ok\n".to_string()), "node {started}");
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        if node == 1 {
            // One voter of three is no quorum: alive, not serving.
            assert_eq!(
                http_get(cluster.node(1).metrics_addr(), "/ready")
                    .expect("GET /ready")
                    .0,
                503
            );
        }
    }
    for node in 1..=3 {
        cluster.wait_node_ready(node);
        let metrics = cluster.node(node).metrics_addr();
        poll_until(
            &format!("node {node} ready"),
            Duration::from_secs(60),
            || (http_get(metrics, "/ready").ok()? == (200, "ready\n".to_string())).then_some(()),
        );
    }

    // Each node takes writes and every node reads back all of them, in order.
    let (ok, _, stderr) = skald(
        &cluster.node(1).bootstrap(),
        &[
            "topic",
            "create",
            "staggered",
            "--partitions",
            "1",
            "--replication-factor",
            "3",
            "--config",
            "min.insync.replicas=2",
        ],
        "",
    );
    assert!(ok, "topic create: {stderr}");
    let mut expected = Vec::new();
    for node in 1..=3 {
        let lines: Vec<String> = (0..10).map(|i| format!("via-{node}-{i}")).collect();
        let (ok, _, stderr) = skald(
            &cluster.node(node).bootstrap(),
            &["produce", "staggered", "--acks", "all", "-p", "0"],
            &(lines.join("\n") + "\n"),
        );
        assert!(ok, "produce via node {node}: {stderr}");
        expected.extend(lines);
    }
    for node in 1..=3 {
        let (ok, stdout, stderr) = skald(
            &cluster.node(node).bootstrap(),
            &[
                "consume",
                "staggered",
                "-p",
                "0",
                "--from-beginning",
                "--count",
                "30",
            ],
            "",
        );
        assert!(ok, "consume via node {node}: {stderr}");
        assert_eq!(
            stdout.lines().collect::<Vec<_>>(),
            expected,
            "via node {node}"
        );
    }
}

/// The committed offsets of `group`, asked through `bootstrap`; None while it has no coordinator.
fn committed(bootstrap: &str, group: &str) -> Option<BTreeMap<(String, i32), i64>> {
    block_on(async {
        let mut client = Client::connect(ClientConfig::new(bootstrap).ok()?)
            .await
            .ok()?;
        client.committed_offsets(group).await.ok()
    })
}

#[test]
fn with_defaults_every_group_keeps_a_coordinator_when_any_one_of_three_nodes_dies() {
    // No internal-topic overrides: __consumer_offsets gets Kafka's 50 partitions and 3 replicas.
    let mut cluster = TestCluster::start_roles(&[Role::Combined; 3], &[]);
    let (ok, _, stderr) = skald(
        &cluster.bootstrap(),
        &["topic", "create", "orders", "--partitions", "3"],
        "",
    );
    assert!(ok, "topic create: {stderr}");
    let groups: Vec<String> = (0..20).map(|i| format!("group-{i}")).collect();
    let expected = |index: usize| -> BTreeMap<(String, i32), i64> {
        (0..3)
            .map(|p| {
                (
                    ("orders".to_string(), p),
                    (index as i64) * 10 + i64::from(p),
                )
            })
            .collect()
    };
    block_on(async {
        let mut client = Client::connect(ClientConfig::new(&cluster.bootstrap()).expect("config"))
            .await
            .expect("connect");
        for (index, group) in groups.iter().enumerate() {
            let offsets: BTreeMap<i32, i64> = expected(index)
                .into_iter()
                .map(|((_, p), offset)| (p, offset))
                .collect();
            client
                .commit_offsets(group, "orders", &offsets)
                .await
                .expect("commit");
        }
    });

    for victim in 1..=3 {
        cluster.kill9(victim);
        let survivors: String = cluster
            .brokers()
            .filter(|node| node.node_id != victim)
            .map(|node| node.bootstrap())
            .collect::<Vec<_>>()
            .join(",");
        for (index, group) in groups.iter().enumerate() {
            let offsets = poll_until(
                &format!("{group}'s coordinator without node {victim}"),
                Duration::from_secs(30),
                || committed(&survivors, group),
            );
            assert_eq!(offsets, expected(index), "{group} without node {victim}");
        }
        cluster.restart(victim);
    }
}

/// `max.connections` bounds the client listeners; the controller listener keeps a budget of its
/// own. With every client slot of the only controller held by idle clients, a broker that
/// restarts still registers through the controller listener and serves again.
#[test]
fn clients_holding_every_connection_slot_do_not_lock_brokers_out_of_their_controller() {
    use common::wire::RawConn;
    use kafka_protocol::messages::ApiVersionsRequest;

    // Enough for one broker's connections to its controller (heartbeats, metadata, operations).
    const SLOTS: usize = 4;
    let slots = SLOTS.to_string();
    let mut cluster = TestCluster::start_roles(
        &[Role::Combined, Role::Broker],
        &[("max.connections", slots.as_str())],
    );
    cluster.stop(2);

    // Fill node 1's client slots: a connection holds one once it is served. Connections past
    // the limit wait in the listen backlog, unanswered.
    let client_listener = cluster.node(1).kafka_addr();
    let answered = |conn: &mut RawConn| {
        conn.try_request(&ApiVersionsRequest::default(), 0, Duration::from_secs(2))
            .is_some_and(|response| response.error_code == 0)
    };
    let mut held = Vec::new();
    while held.len() < SLOTS {
        let mut conn = RawConn::connect(client_listener);
        // A slot may still be held by a connection that is closing (the harness's readiness
        // probes): poll until this one is served.
        poll_until(
            "a client connection served",
            Duration::from_secs(30),
            || answered(&mut conn).then_some(()),
        );
        held.push(conn);
    }
    let mut waiting = RawConn::connect(client_listener);
    assert!(
        !answered(&mut waiting),
        "a client connection past max.connections={SLOTS} was served"
    );

    cluster.restart(2);
    let metrics = cluster.node(2).metrics_addr();
    poll_until("node 2 ready again", Duration::from_secs(60), || {
        (http_get(metrics, "/ready").ok()? == (200, "ready\n".to_string())).then_some(())
    });
    drop(held);
}
