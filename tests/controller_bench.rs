//! Measurements of the controller quorum for docs/PERFORMANCE.md ("Controller quorum"), against
//! the real `skald` binary. Every test here is `#[ignore]`d: they measure, they assert only that
//! what they drive succeeded. The binary is the one Cargo builds for the test profile
//! (`CARGO_BIN_EXE_skald`), so `--release` is what makes it a release build:
//!
//! ```text
//! cargo test --release --test controller_bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! - `bench_controller_failover`: 3 controllers + 3 brokers; kill -9 the active controller, time
//!   until another reports itself active and until a CreateTopics sent to a broker succeeds.
//! - `bench_create_topics_*`: CreateTopics throughput in partitions per second, one node and
//!   3 + 3 nodes.
//! - `bench_restart_with_many_partitions`: one node holding 18,000 partitions, restart time.
//!
//! The in-memory snapshot of 100,000 partitions is measured by `controller/benches/snapshot.rs`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::wire::RawConn;
use common::{poll_until, TestServer};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::CreateTopicsRequest;

/// How long one CreateTopics may take before the harness calls it a hang (10,000 partitions in
/// one request included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a failover round may take before the harness gives up.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a restarted controller may take to rejoin and catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
const FAILOVER_ROUNDS: usize = 20;

fn connect(addr: SocketAddr) -> RawConn {
    let conn = RawConn::connect(addr);
    conn.stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .expect("set_read_timeout");
    conn
}

/// CreateTopics v7; `replication_factor` -1 is the broker's default. Returns each topic's error
/// code in request order.
fn create_topics(
    conn: &mut RawConn,
    topics: &[(String, i32)],
    replication_factor: i16,
) -> Vec<i16> {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(REQUEST_TIMEOUT.as_millis() as i32)
        .with_topics(
            topics
                .iter()
                .map(|(name, partitions)| {
                    CreatableTopic::default()
                        .with_name(common::wire::topic_name(name))
                        .with_num_partitions(*partitions)
                        .with_replication_factor(replication_factor)
                })
                .collect(),
        );
    conn.request(&request, 7)
        .topics
        .iter()
        .map(|topic| topic.error_code)
        .collect()
}

/// The value of an unlabelled metric on a node's /metrics, if it answers.
fn metric(addr: SocketAddr, name: &str) -> Option<i64> {
    common::metric_sample(addr, name).map(|value| value as i64)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// "min …, median …, max …" of samples in milliseconds.
fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!(
        "min {:.0} ms, median {:.0} ms, max {:.0} ms ({} samples)",
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
        samples.len()
    )
}

/// Waits until every controller follows `leader` and has applied what the leader had.
fn wait_controllers_caught_up(cluster: &TestCluster, leader: i32) {
    let leader_addr = cluster.node(leader).metrics_addr();
    let target = poll_until("the leader's applied index", CATCH_UP_TIMEOUT, || {
        metric(leader_addr, "skald_metadata_applied_index")
    });
    poll_until("every controller caught up", CATCH_UP_TIMEOUT, || {
        cluster
            .controllers()
            .all(|node| {
                metric(node.metrics_addr(), "skald_raft_leader_id") == Some(i64::from(leader))
                    && metric(node.metrics_addr(), "skald_metadata_applied_index")
                        .is_some_and(|index| index >= target)
            })
            .then_some(())
    });
}

/// Log lines about raft (the raft library logs with target `raft`) written to `path` after byte `from`.
fn raft_lines_since(path: &Path, from: u64) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = (from as usize).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..])
        .lines()
        .filter(|line| line.contains("raft"))
        .map(str::to_string)
        .collect()
}

/// Kill -9 the active controller, `FAILOVER_ROUNDS` times (it is restarted and caught up between
/// rounds). Two times per round, from the kill: until another controller's metrics say
/// `skald_controller_active 1`, and until a CreateTopics sent to a broker (rotating over the
/// three) answers error code 0 — the new leader accepting writes, end to end.
#[test]
#[ignore = "benchmark: cargo test --release --test controller_bench -- --ignored --nocapture"]
fn bench_controller_failover() {
    failover_rounds("default election timeout (500 ms)", &[]);
}

/// The same with `controller.quorum.election.timeout.ms=300` (ticks of 30 ms: elections after
/// 300–570 ms without a leader, heartbeats every 60 ms).
#[test]
#[ignore = "benchmark: cargo test --release --test controller_bench -- --ignored --nocapture"]
fn bench_controller_failover_election_timeout_300ms() {
    failover_rounds(
        "election timeout 300 ms",
        &[("controller.quorum.election.timeout.ms", "300")],
    );
}

fn failover_rounds(label: &str, overrides: &[(&str, &str)]) {
    let mut cluster = start_settled_cluster(overrides);
    let brokers: Vec<SocketAddr> = cluster.brokers().map(|node| node.kafka_addr()).collect();
    let mut to_active = Vec::new();
    let mut to_write = Vec::new();
    for round in 0..FAILOVER_ROUNDS {
        let leader = cluster.active_controller(FAILOVER_TIMEOUT);
        wait_controllers_caught_up(&cluster, leader);
        let broker = brokers[round % brokers.len()];
        let mut conn = connect(broker);
        // The broker has reached this leader before: the kill is what the round measures.
        let mut attempt = 0;
        poll_until("a CreateTopics before the kill", FAILOVER_TIMEOUT, || {
            attempt += 1;
            let name = format!("warm-{round}-{attempt}");
            (create_topics(&mut conn, &[(name, 1)], -1) == [0]).then_some(())
        });

        let survivors: Vec<(i32, SocketAddr)> = cluster
            .controllers()
            .filter(|node| node.node_id != leader)
            .map(|node| (node.node_id, node.metrics_addr()))
            .collect();
        let watcher = thread::spawn(move || {
            let deadline = Instant::now() + FAILOVER_TIMEOUT;
            while Instant::now() < deadline {
                for (node_id, addr) in &survivors {
                    if metric(*addr, "skald_controller_active") == Some(1) {
                        return Some((*node_id, Instant::now()));
                    }
                }
                thread::sleep(Duration::from_millis(2));
            }
            None
        });

        // Where the survivors' logs stand, to show a slow round's election afterwards.
        let log_marks: Vec<(i32, std::path::PathBuf, u64)> = cluster
            .controllers()
            .filter(|node| node.node_id != leader)
            .map(|node| {
                let path = node.stderr_path();
                let len = std::fs::metadata(&path).map_or(0, |m| m.len());
                (node.node_id, path, len)
            })
            .collect();
        let killed_at = Instant::now();
        cluster.kill9(leader);
        let mut codes = Vec::new();
        let written_at = loop {
            let name = format!("failover-{round}-{}", codes.len());
            let code = create_topics(&mut conn, &[(name, 1)], -1)[0];
            codes.push(code);
            if code == 0 {
                break Instant::now();
            }
            assert!(
                killed_at.elapsed() < FAILOVER_TIMEOUT,
                "round {round}: no CreateTopics succeeded within {FAILOVER_TIMEOUT:?}: {codes:?}"
            );
            thread::sleep(Duration::from_millis(5));
        };
        let (new_leader, active_at) = watcher
            .join()
            .expect("watcher thread")
            .unwrap_or_else(|| panic!("round {round}: no controller became active"));
        let active = active_at.duration_since(killed_at);
        let write = written_at.duration_since(killed_at);
        println!(
            "failover round {round:>2}: killed controller {leader}, controller {new_leader} active \
             after {:.0} ms, CreateTopics via {broker} ok after {:.0} ms (codes {codes:?})",
            ms(active),
            ms(write)
        );
        if write > Duration::from_secs(1) {
            for (node_id, path, from) in &log_marks {
                for line in raft_lines_since(path, *from) {
                    println!("    controller {node_id}: {line}");
                }
            }
        }
        to_active.push(active);
        to_write.push(write);

        cluster.restart(leader);
        wait_controllers_caught_up(&cluster, new_leader);
    }
    println!(
        "failover, {label}, kill -9 -> another controller active: {}",
        summary(to_active)
    );
    println!(
        "failover, {label}, kill -9 -> CreateTopics succeeds:      {}",
        summary(to_write)
    );
}

/// Creates `topics` one-partition topics, one per request, from `connections` connections
/// spread over `addrs`. Returns the wall time and every request's latency.
fn create_one_per_request(
    addrs: &[SocketAddr],
    prefix: &str,
    topics: usize,
    connections: usize,
    replication_factor: i16,
) -> (Duration, Vec<Duration>) {
    let start = Arc::new(Barrier::new(connections + 1));
    let workers: Vec<_> = (0..connections)
        .map(|worker| {
            let addr = addrs[worker % addrs.len()];
            let prefix = prefix.to_string();
            let start = Arc::clone(&start);
            thread::spawn(move || {
                let mut conn = connect(addr);
                start.wait();
                let mut latencies = Vec::new();
                for index in (worker..topics).step_by(connections) {
                    let name = format!("{prefix}-{index:05}");
                    let sent = Instant::now();
                    let codes = create_topics(&mut conn, &[(name.clone(), 1)], replication_factor);
                    latencies.push(sent.elapsed());
                    assert_eq!(codes, [0], "CreateTopics {name} via {addr}");
                }
                latencies
            })
        })
        .collect();
    start.wait();
    let started = Instant::now();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.join().expect("creator thread"));
    }
    (started.elapsed(), latencies)
}

fn report_one_per_request(
    label: &str,
    topics: usize,
    elapsed: Duration,
    mut latencies: Vec<Duration>,
) {
    latencies.sort();
    let at = |q: f64| ms(latencies[((latencies.len() - 1) as f64 * q) as usize]);
    println!(
        "{label}: {topics} partitions in {:.2} s = {:.0} partitions/s; request p50 {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms",
        elapsed.as_secs_f64(),
        topics as f64 / elapsed.as_secs_f64(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

/// One topic of `partitions` partitions in one request; returns its time.
fn create_one_big_topic(
    addr: SocketAddr,
    name: &str,
    partitions: i32,
    replication_factor: i16,
) -> Duration {
    let mut conn = connect(addr);
    let sent = Instant::now();
    let codes = create_topics(
        &mut conn,
        &[(name.to_string(), partitions)],
        replication_factor,
    );
    let elapsed = sent.elapsed();
    assert_eq!(
        codes,
        [0],
        "CreateTopics {name} with {partitions} partitions"
    );
    elapsed
}

const TOPICS_ONE_PER_REQUEST: usize = 2_000;
const BIG_TOPIC_PARTITIONS: i32 = 10_000;
/// Steps of the growth run: how a one-partition CreateTopics slows as the metadata grows.
const GROWTH_STEPS: usize = 4;
const GROWTH_STEP_TOPICS: usize = 1_500;

/// A fresh node or cluster, kept alive by the box; and the brokers' Kafka addresses.
type Target = (Box<dyn std::any::Any>, Vec<SocketAddr>);

/// The CreateTopics runs against fresh targets: one-partition topics one per request from 1, 8
/// and 32 connections (each on a fresh target, so each starts from empty metadata); the same
/// from one connection in steps while the metadata grows; one topic of 10,000 partitions in one
/// request.
///
/// Every target's files live until the end (`park` kills its processes once measured): this
/// machine's ext4 has no journal, and there a file created within a minute or more of many
/// deletions pays for skipping the recently deleted inodes (`recently_deleted` in
/// `find_inode_bit`), which made a later run up to 4× slower.
fn create_topics_suite(
    label: &str,
    runs: &[(usize, i16)],
    start: impl Fn() -> Target,
    park: impl Fn(&mut dyn std::any::Any),
) {
    let mut targets = Vec::new();
    let (mut target, brokers) = start();
    let elapsed = create_one_big_topic(brokers[0], "big", BIG_TOPIC_PARTITIONS, -1);
    park(target.as_mut());
    targets.push(target);
    println!(
        "{label}, RF 1, 1 topic x {BIG_TOPIC_PARTITIONS} partitions in one request: {:.2} s = {:.0} partitions/s",
        elapsed.as_secs_f64(),
        f64::from(BIG_TOPIC_PARTITIONS) / elapsed.as_secs_f64()
    );
    for &(connections, replication_factor) in runs {
        let (mut target, brokers) = start();
        let (elapsed, latencies) = create_one_per_request(
            &brokers,
            &format!("c{connections}"),
            TOPICS_ONE_PER_REQUEST,
            connections,
            replication_factor,
        );
        park(target.as_mut());
        targets.push(target);
        report_one_per_request(
            &format!(
                "{label}, RF {}, 1 partition per request, {connections:>2} connections",
                replication_factor.max(1)
            ),
            TOPICS_ONE_PER_REQUEST,
            elapsed,
            latencies,
        );
    }
    let (target, brokers) = start();
    targets.push(target);
    for step in 0..GROWTH_STEPS {
        let (elapsed, latencies) = create_one_per_request(
            &brokers,
            &format!("growth{step}"),
            GROWTH_STEP_TOPICS,
            1,
            -1,
        );
        report_one_per_request(
            &format!(
                "{label}, RF 1, 1 partition per request, 1 connection, {} topics existing",
                step * GROWTH_STEP_TOPICS
            ),
            GROWTH_STEP_TOPICS,
            elapsed,
            latencies,
        );
    }
}

/// One node with the defaults (`controller.quorum.voters` unset: a single-voter quorum in the
/// same process).
#[test]
#[ignore = "benchmark: cargo test --release --test controller_bench -- --ignored --nocapture"]
fn bench_create_topics_single_node() {
    create_topics_suite(
        "single node",
        &[(1, -1), (8, -1), (32, -1)],
        || {
            let server = TestServer::start();
            let addrs = vec![server.kafka_addr()];
            (Box::new(server), addrs)
        },
        |target| {
            if let Some(server) = target.downcast_mut::<TestServer>() {
                server.kill9();
            }
        },
    );
}

/// A 3 + 3 cluster whose three brokers are all unfenced (partitions are placed on unfenced
/// brokers only) and still running. The harness picks ports that were free a moment ago; with
/// many processes and connections about, one is sometimes taken before a broker binds it (the
/// broker exits, and the port's new owner looks like it): then start afresh, at most 3 times.
fn start_settled_cluster(overrides: &[(&str, &str)]) -> TestCluster {
    for attempt in 1..=3 {
        let mut cluster = TestCluster::start(3, 3, overrides);
        let deadline = Instant::now() + FAILOVER_TIMEOUT;
        loop {
            if !cluster.nodes.iter_mut().all(|node| node.is_running()) {
                println!(
                    "cluster attempt {attempt}: a node exited while starting; starting afresh"
                );
                break;
            }
            let unfenced = cluster.brokers().all(|node| {
                metric_line(node.metrics_addr(), "skald_brokers{state=\"unfenced\"} 3")
            });
            if unfenced {
                return cluster;
            }
            assert!(
                Instant::now() < deadline,
                "three brokers not unfenced within {FAILOVER_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("no cluster started in 3 attempts");
}

/// Whether a node's /metrics has exactly this line.
fn metric_line(addr: SocketAddr, expected: &str) -> bool {
    common::http_get(addr, "/metrics").is_ok_and(|(_, body)| body.lines().any(|l| l == expected))
}

/// 3 controllers + 3 brokers; requests spread over the brokers, each forwards to the active
/// controller and answers once its own metadata has the new topic.
#[test]
#[ignore = "benchmark: cargo test --release --test controller_bench -- --ignored --nocapture"]
fn bench_create_topics_cluster() {
    create_topics_suite(
        "3+3 cluster",
        &[(1, -1), (8, -1), (32, -1), (1, 3), (8, 3)],
        || {
            let cluster = start_settled_cluster(&[]);
            let brokers: Vec<SocketAddr> =
                cluster.brokers().map(|node| node.kafka_addr()).collect();
            (Box::new(cluster), brokers)
        },
        |target| {
            if let Some(cluster) = target.downcast_mut::<TestCluster>() {
                let ids: Vec<i32> = cluster.nodes.iter().map(|node| node.node_id).collect();
                for node_id in ids {
                    cluster.kill9(node_id);
                }
            }
        },
    );
}

/// Bytes of the files under the first directory named `name` below `root`.
fn dir_bytes_named(root: &Path, name: &str) -> Option<(std::path::PathBuf, u64)> {
    for entry in std::fs::read_dir(root).ok()? {
        let path = entry.ok()?.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|file| file == name) {
            let bytes = std::fs::read_dir(&path)
                .ok()?
                .filter_map(|entry| entry.ok()?.metadata().ok())
                .map(|metadata| metadata.len())
                .sum();
            return Some((path, bytes));
        }
        if let Some(found) = dir_bytes_named(&path, name) {
            return Some(found);
        }
    }
    None
}

/// 18,000 partitions on one node (two topics of 9,000): as many as one broker here can hold with
/// a descriptor per partition under the 20,000-descriptor limit. Time to create them, and from
/// spawning the server until its Kafka port accepts, after a clean shutdown and after kill -9.
#[test]
#[ignore = "benchmark: cargo test --release --test controller_bench -- --ignored --nocapture"]
fn bench_restart_with_many_partitions() {
    const TOPICS: usize = 2;
    const PARTITIONS: i32 = 9_000;
    let mut server = TestServer::start();
    for topic in 0..TOPICS {
        let elapsed = create_one_big_topic(
            server.kafka_addr(),
            &format!("many-{topic}"),
            PARTITIONS,
            -1,
        );
        println!(
            "one node: topic {topic} x {PARTITIONS} partitions created in {:.2} s",
            elapsed.as_secs_f64()
        );
    }
    let total = TOPICS * PARTITIONS as usize;
    let (dir, bytes) = dir_bytes_named(&server.data_dir(), "__cluster_metadata-0")
        .expect("a __cluster_metadata-0 directory");
    println!(
        "one node, {total} partitions: {} holds {bytes} bytes",
        dir.display()
    );
    let mut clean = Vec::new();
    for _ in 0..3 {
        server.stop_clean();
        let spawned = Instant::now();
        server.restart();
        clean.push(spawned.elapsed());
    }
    println!("one node, {total} partitions: restart after a clean shutdown until the Kafka port accepts: {}", summary(clean));
    let mut killed = Vec::new();
    for _ in 0..3 {
        server.kill9();
        let spawned = Instant::now();
        server.restart();
        killed.push(spawned.elapsed());
    }
    println!(
        "one node, {total} partitions: restart after kill -9 until the Kafka port accepts: {}",
        summary(killed)
    );
    // It still serves every partition.
    let metadata = connect(server.kafka_addr()).metadata(None, false);
    let served: usize = metadata
        .topics
        .iter()
        .filter(|topic| topic.error_code == 0)
        .map(|topic| topic.partitions.len())
        .sum();
    assert_eq!(served, total);
}
