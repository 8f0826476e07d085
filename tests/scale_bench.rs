//! Issue 16's cluster-size benchmark, for docs/PERFORMANCE.md: 1 controller and 3 brokers on
//! this machine, one topic of 10,000 partitions with three replicas each (times
//! `SKALD_BENCH_SCALE`): how long creating it takes until every partition has its full ISR, what
//! 10,000 followed partitions cost each broker at rest (CPU share of a core over
//! [`IDLE_WINDOW`], resident memory), and how long a broker's restart takes until it serves and
//! until it is back in every ISR. `#[ignore]`d: it measures, and asserts only that what it drives
//! succeeds.
//!
//! ```text
//! cargo test --release --test scale_bench -- --ignored --nocapture
//! ```

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::wire::RawConn;
use common::{poll_until, skald_ok};

const TOPIC: &str = "wide";
const PARTITIONS: f64 = 10_000.0;
/// How long the brokers are watched at rest.
const IDLE_WINDOW: Duration = Duration::from_secs(30);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(900);
const BROKERS: [i32; 3] = [2, 3, 4];

fn scale() -> f64 {
    std::env::var("SKALD_BENCH_SCALE")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1.0)
}

/// How many of the topic's partitions have a leader and all three brokers in sync, as `via`
/// says.
fn in_sync(cluster: &TestCluster, via: i32) -> Option<usize> {
    let mut conn = RawConn::try_connect(cluster.node(via).kafka_addr())?;
    let metadata = conn.metadata(Some(&[TOPIC]), false);
    let topic = metadata.topics.first()?;
    Some(
        topic
            .partitions
            .iter()
            .filter(|p| p.leader_id.0 >= 0 && p.isr_nodes.len() == 3)
            .count(),
    )
}

fn wait_all_in_sync(cluster: &TestCluster, via: i32, partitions: usize, what: &str) -> Duration {
    let started = Instant::now();
    poll_until(what, SETTLE_TIMEOUT, || {
        (in_sync(cluster, via)? == partitions).then_some(())
    });
    started.elapsed()
}

/// A process's user and system CPU seconds (`/proc/PID/stat` fields 14 and 15, in clock ticks
/// of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a command name")
        .1
        .split_whitespace()
        .collect();
    let ticks = |field: usize| -> f64 { fields[field - 3].parse().expect("a tick count") };
    (ticks(14) + ticks(15)) / 100.0
}

/// Each broker's CPU seconds over `window` as a share of one core, and its resident memory.
fn at_rest(cluster: &TestCluster, window: Duration) -> BTreeMap<i32, (f64, f64)> {
    let cpu = |node| cpu_seconds(cluster.pid(node));
    let before: Vec<f64> = BROKERS.iter().map(|&node| cpu(node)).collect();
    let started = Instant::now();
    // A measurement window, not a wait for anything.
    std::thread::sleep(window);
    let elapsed = started.elapsed().as_secs_f64();
    BROKERS
        .iter()
        .zip(before)
        .map(|(&node, before)| {
            let share = (cpu(node) - before) / elapsed;
            let rss = cluster.metric(node, "process_resident_memory_bytes") / (1 << 20) as f64;
            (node, (share, rss))
        })
        .collect()
}

#[test]
#[ignore = "benchmark: cargo test --release --test scale_bench -- --ignored --nocapture"]
fn bench_ten_thousand_partitions_of_three_replicas_on_three_brokers() {
    let partitions = (PARTITIONS * scale()).max(1.0) as usize;
    println!(
        "skald = {} ({}), {partitions} partitions × 3 replicas",
        common::skald_bin(),
        if cfg!(debug_assertions) {
            "DEBUG build: numbers are not comparable"
        } else {
            "release build"
        }
    );
    let mut cluster = TestCluster::start(1, 3, &[("min.insync.replicas", "2")]);
    let bootstrap = cluster.node(2).bootstrap();

    let started = Instant::now();
    skald_ok(
        &bootstrap,
        &[
            "topic",
            "create",
            TOPIC,
            "--partitions",
            &partitions.to_string(),
            "--replication-factor",
            "3",
        ],
        SETTLE_TIMEOUT,
    );
    let created = started.elapsed();
    wait_all_in_sync(&cluster, 2, partitions, "every partition in sync");
    let settled = started.elapsed();
    println!(
        "create: answered after {:.2} s, every ISR full after {:.2} s",
        created.as_secs_f64(),
        settled.as_secs_f64()
    );

    let rest = at_rest(&cluster, IDLE_WINDOW);
    for (node, (share, rss)) in &rest {
        println!(
            "broker {node} at rest: {:.2} % of a core, RSS {rss:.0} MiB",
            share * 100.0
        );
    }

    let restarted = 4;
    let took = cluster.stop_timed(restarted);
    println!(
        "broker {restarted} exited {:.2} s after SIGTERM",
        took.as_secs_f64()
    );
    wait_all_in_sync(&cluster, 2, 0, "every ISR without the stopped broker");
    let started = Instant::now();
    cluster.start_node(restarted);
    let address = cluster.node(restarted).kafka_addr();
    poll_until("the restarted broker serving", SETTLE_TIMEOUT, || {
        std::net::TcpStream::connect(address).ok()
    });
    let serving = started.elapsed();
    wait_all_in_sync(
        &cluster,
        2,
        partitions,
        "the restarted broker back in every ISR",
    );
    let back = started.elapsed();
    println!(
        "restart of broker {restarted}: serving after {:.2} s, in every ISR after {:.2} s",
        serving.as_secs_f64(),
        back.as_secs_f64()
    );

    println!("\n| measure | value |\n|---|---|");
    println!(
        "| CreateTopics, {partitions} partitions × 3 replicas: answered / every ISR full | {:.2} s / {:.2} s |",
        created.as_secs_f64(),
        settled.as_secs_f64()
    );
    for (node, (share, rss)) in &rest {
        println!(
            "| broker {node} at rest over {} s: CPU, RSS | {:.2} % of a core, {rss:.0} MiB |",
            IDLE_WINDOW.as_secs(),
            share * 100.0
        );
    }
    println!(
        "| broker {restarted}: exit after SIGTERM; restarted, serving / back in every ISR | {:.2} s; {:.2} s / {:.2} s |",
        took.as_secs_f64(),
        serving.as_secs_f64(),
        back.as_secs_f64()
    );
}
