//! Measurements of replication for docs/PERFORMANCE.md (issue 5: "on one machine, three broker
//! processes, 1 KiB records: throughput for acks=all RF=3 as a ratio of acks=1 RF=1 measured in
//! the same run, and produce→ack latency p50/p99 at a fixed rate well below saturation"), against
//! the real `skald` binary: 1 controller (node 1) + 3 brokers (nodes 2–4), default settings but
//! the harness's heartbeats. Every test here is `#[ignore]`d: they measure, and assert only that
//! what they drive succeeded. The binary is the one Cargo builds for the test profile, so
//! `--release` is what makes it a release build:
//!
//! ```text
//! cargo test --release --test replication_bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! `SKALD_BENCH_SCALE` (default 1) multiplies record counts and durations, e.g. 0.01 for a quick
//! check that the tests still run; numbers from a scaled-down run mean nothing.
//!
//! - `bench_replicated_produce_throughput`: `skald bench produce` of 200,000 × 1 KiB records into
//!   a 1-partition RF 1 topic with acks=1 and into a 1-partition RF 3 (min.insync.replicas 2)
//!   topic with acks=all, alternating, 3 rounds, each against the partition leader; records/s,
//!   MB/s (as the CLI prints them: 2^20 bytes), the per-round ratio and the median ratio.
//! - `bench_replicated_produce_latency`: librdkafka producing 1 KiB records at a fixed offered rate
//!   (1,000, 10,000 and 20,000 records/s into the RF 3 topic with acks=all; 10,000 records/s into
//!   the RF 1 topic with acks=1 for comparison), 10 s each after a 1 s warm-up, with linger.ms 0
//!   and 1; each record's latency from just before `send()` to its delivery report.

mod common;

use std::ops::Range;
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::wire::RawConn;
use common::{poll_until, rdk, run_with_timeout, skald_bin};
use kafka_protocol::messages::MetadataResponse;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, FutureProducer, FutureRecord, ProducerContext, ThreadedProducer,
};

const RECORD_BYTES: usize = 1024;
/// Records per `skald bench produce` run at scale 1.
const THROUGHPUT_RECORDS: f64 = 200_000.0;
const THROUGHPUT_ROUNDS: usize = 3;
/// Offered rates of the RF 3 latency runs, records per second.
const OFFERED_RATES: [u64; 3] = [1_000, 10_000, 20_000];
/// The rate of the RF 1 comparison and of the delivery-future cross-check.
const COMPARISON_RATE: u64 = 10_000;
const LINGER_MS: [u32; 2] = [0, 1];
/// Length of one latency run at scale 1; the warm-up before it is discarded.
const LATENCY_RUN: Duration = Duration::from_secs(10);
const LATENCY_WARM_UP: Duration = Duration::from_secs(1);

/// Bound on one `skald topic create` or `skald bench produce` (a debug build included).
const CLI_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on a new topic getting a leader, a full ISR and its replicas.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the last delivery report after the last send (librdkafka's message.timeout.ms is 30 s).
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

const RF1_TOPIC: &str = "rf1";
const RF3_TOPIC: &str = "rf3";

/// `SKALD_BENCH_SCALE`, default 1.
fn scale() -> f64 {
    let scale = std::env::var("SKALD_BENCH_SCALE").map_or(1.0, |value| {
        value
            .parse::<f64>()
            .unwrap_or_else(|e| panic!("SKALD_BENCH_SCALE={value:?}: {e}"))
    });
    assert!(scale > 0.0, "SKALD_BENCH_SCALE must be positive");
    scale
}

fn print_setup(scale: f64) {
    let profile = if cfg!(debug_assertions) {
        "DEBUG build: numbers are not comparable"
    } else {
        "release build"
    };
    println!(
        "skald = {} ({profile}), SKALD_BENCH_SCALE {scale}",
        skald_bin()
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The `p`th percentile (nearest rank) of sorted values, as `skald bench` computes it.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Runs `skald ARGS`, which must succeed; returns its stdout.
fn skald(args: &[String]) -> String {
    let mut command = Command::new(skald_bin());
    command
        .args(args)
        .env_remove("SKALD_BROKERS")
        .env("RUST_LOG", "warn");
    let (status, stdout, stderr) = run_with_timeout(command, b"", CLI_TIMEOUT);
    assert!(
        status.success(),
        "skald {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|part| part.to_string()).collect()
}

fn start_cluster() -> TestCluster {
    TestCluster::start(1, 3, &[])
}

/// Partition 0 of a topic as one broker's Metadata shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionView {
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
}

fn partition_view(metadata: &MetadataResponse, topic: &str) -> Option<PartitionView> {
    let topic = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|name| name.as_str() == topic))?;
    let p = topic.partitions.iter().find(|p| p.partition_index == 0)?;
    let mut isr: Vec<i32> = p.isr_nodes.iter().map(|id| id.0).collect();
    isr.sort_unstable();
    let mut replicas: Vec<i32> = p.replica_nodes.iter().map(|id| id.0).collect();
    replicas.sort_unstable();
    Some(PartitionView {
        leader: p.leader_id.0,
        replicas,
        isr,
    })
}

/// Partition 0 of `topic` as broker `via` sees it now.
fn view_via(cluster: &TestCluster, via: i32, topic: &str) -> Option<PartitionView> {
    let mut conn = RawConn::try_connect(cluster.node(via).kafka_addr())?;
    partition_view(&conn.metadata(Some(&[topic]), false), topic)
}

/// Whether `skald_log_end_offset` of partition 0 of `topic` is on a node's /metrics: the node
/// holds a replica of it.
fn has_replica(cluster: &TestCluster, node: i32, topic: &str) -> bool {
    let prefix = format!(r#"skald_log_end_offset{{partition="0",topic="{topic}"}} "#);
    common::http_get(cluster.node(node).metrics_addr(), "/metrics")
        .is_ok_and(|(_, body)| body.lines().any(|line| line.starts_with(&prefix)))
}

/// Creates a one-partition topic with `skald topic create` and waits until its leader names
/// itself leader with every replica in the ISR, and every replica exists. Returns that view.
fn create_topic(
    cluster: &TestCluster,
    topic: &str,
    replication_factor: usize,
    configs: &[&str],
) -> PartitionView {
    let any_broker = cluster.brokers().next().expect("a broker").bootstrap();
    let mut create = args(&[
        "topic",
        "create",
        topic,
        "--partitions",
        "1",
        "--replication-factor",
        &replication_factor.to_string(),
    ]);
    for config in configs {
        create.extend(args(&["--config", config]));
    }
    create.extend(args(&["--brokers", &any_broker]));
    println!("$ skald {}", create.join(" "));
    assert_eq!(skald(&create), format!("created topic {topic}\n"));
    let via = cluster.brokers().next().expect("a broker").node_id;
    poll_until(
        &format!("{topic}: a leader, a full ISR and every replica"),
        SETTLE_TIMEOUT,
        || {
            let view = view_via(cluster, via, topic)?;
            if view.leader < 0 || view.replicas.len() != replication_factor {
                return None;
            }
            let from_leader = view_via(cluster, view.leader, topic)?;
            let settled = from_leader.leader == view.leader
                && from_leader.isr == from_leader.replicas
                && from_leader
                    .replicas
                    .iter()
                    .all(|node| has_replica(cluster, *node, topic));
            settled.then_some(from_leader)
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Throughput: `skald bench produce`, RF 1 acks=1 against RF 3 acks=all.

/// What one `skald bench produce` line says.
#[derive(Debug, Clone, PartialEq)]
struct ProduceLine {
    records: u64,
    records_per_s: f64,
    mb_per_s: f64,
    batches: u64,
    batch_p50_ms: f64,
    batch_p99_ms: f64,
}

/// Parses "produced N records (B bytes) in T s: R records/s, M MB/s; K batches, latency p50 Xms
/// p99 Yms".
fn parse_produce_line(line: &str) -> ProduceLine {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let number_before = |unit: &str| -> f64 {
        let at = tokens
            .iter()
            .position(|token| token.starts_with(unit))
            .unwrap_or_else(|| panic!("no {unit:?} in {line:?}"));
        tokens[at.checked_sub(1).expect("a number first")]
            .parse()
            .unwrap_or_else(|e| panic!("the number before {unit:?} in {line:?}: {e}"))
    };
    let ms_after = |label: &str| -> f64 {
        let at = tokens
            .iter()
            .position(|token| *token == label)
            .unwrap_or_else(|| panic!("no {label:?} in {line:?}"));
        tokens
            .get(at + 1)
            .and_then(|token| token.strip_suffix("ms"))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no milliseconds after {label:?} in {line:?}"))
    };
    assert_eq!(tokens.first(), Some(&"produced"), "{line:?}");
    ProduceLine {
        records: tokens[1]
            .parse()
            .unwrap_or_else(|e| panic!("record count in {line:?}: {e}")),
        records_per_s: number_before("records/s"),
        mb_per_s: number_before("MB/s"),
        batches: number_before("batches") as u64,
        batch_p50_ms: ms_after("p50"),
        batch_p99_ms: ms_after("p99"),
    }
}

/// Writes dirty pages back so that each run starts from the same writeback state rather than
/// inheriting the previous run's.
fn sync() {
    let status = Command::new("sync").status().expect("run sync");
    assert!(status.success(), "sync failed: {status}");
}

/// One `skald bench produce` run against the partition leader; returns what it printed, parsed.
fn bench_produce(topic: &str, leader_bootstrap: &str, records: u64, acks: &str) -> ProduceLine {
    let bench = args(&[
        "bench",
        "produce",
        topic,
        "-n",
        &records.to_string(),
        "-s",
        &RECORD_BYTES.to_string(),
        "--acks",
        acks,
        "-b",
        leader_bootstrap,
    ]);
    println!("$ skald {}", bench.join(" "));
    let stdout = skald(&bench);
    let line = stdout
        .lines()
        .find(|line| line.starts_with("produced "))
        .unwrap_or_else(|| panic!("no result line in {stdout:?}"));
    println!("  {line}");
    let parsed = parse_produce_line(line);
    assert_eq!(parsed.records, records, "every record acknowledged");
    parsed
}

/// Alternates `skald bench produce` runs of RF 1 acks=1 and RF 3 acks=all (after a discarded
/// warm-up of each), `sync` before each; prints every run, the ISR of the RF 3 topic after each
/// of its runs, and the throughput ratio per round and its median.
#[test]
#[ignore = "benchmark: cargo test --release --test replication_bench -- --ignored --nocapture --test-threads=1"]
fn bench_replicated_produce_throughput() {
    let scale = scale();
    print_setup(scale);
    let records = ((THROUGHPUT_RECORDS * scale) as u64).max(1);
    let cluster = start_cluster();
    let rf1 = create_topic(&cluster, RF1_TOPIC, 1, &[]);
    let rf3 = create_topic(&cluster, RF3_TOPIC, 3, &["min.insync.replicas=2"]);
    println!("{RF1_TOPIC}: {rf1:?}\n{RF3_TOPIC}: {rf3:?}");
    let configs = [
        (
            "RF 1, acks=1",
            RF1_TOPIC,
            "1",
            cluster.node(rf1.leader).bootstrap(),
        ),
        (
            "RF 3, acks=all",
            RF3_TOPIC,
            "all",
            cluster.node(rf3.leader).bootstrap(),
        ),
    ];

    println!(
        "warm-up ({} records each, discarded):",
        (records / 10).max(1)
    );
    for (_, topic, acks, bootstrap) in &configs {
        bench_produce(topic, bootstrap, (records / 10).max(1), acks);
    }

    // rows[round][config]
    let mut rows: Vec<Vec<(ProduceLine, Option<Vec<i32>>)>> = Vec::new();
    for round in 0..THROUGHPUT_ROUNDS {
        println!("round {round}:");
        let mut row = Vec::new();
        for (_, topic, acks, bootstrap) in &configs {
            sync();
            let line = bench_produce(topic, bootstrap, records, acks);
            let isr = (*topic == RF3_TOPIC).then(|| {
                let view = view_via(&cluster, rf3.leader, RF3_TOPIC).expect("the leader answers");
                println!("  {RF3_TOPIC} after the run: {view:?}");
                view.isr
            });
            row.push((line, isr));
        }
        rows.push(row);
    }

    println!();
    println!(
        "{records} records of {RECORD_BYTES} bytes per run, one partition, `skald bench produce` \
         defaults (batch 256 KiB, linger 5 ms, 5 requests in flight), bootstrap = the leader; \
         MB/s as the CLI prints it (2^20 bytes); `sync` before each run"
    );
    println!(
        "{:<6} {:<16} {:>11} {:>9} {:>8} {:>10} {:>10} {:>10}",
        "round", "run", "records/s", "MB/s", "batches", "batch p50", "batch p99", "ISR after"
    );
    let mut ratios = Vec::new();
    for (round, row) in rows.iter().enumerate() {
        for ((label, ..), (line, isr)) in configs.iter().zip(row) {
            println!(
                "{:<6} {:<16} {:>11.0} {:>9.2} {:>8} {:>7.2} ms {:>7.2} ms {:>10}",
                round,
                label,
                line.records_per_s,
                line.mb_per_s,
                line.batches,
                line.batch_p50_ms,
                line.batch_p99_ms,
                isr.as_ref()
                    .map_or("-".to_string(), |isr| format!("{isr:?}"))
            );
        }
        ratios.push(row[1].0.records_per_s / row[0].0.records_per_s);
    }
    for (round, ratio) in ratios.iter().enumerate() {
        println!("round {round}: RF 3 acks=all / RF 1 acks=1 = {ratio:.3}");
    }
    println!(
        "median ratio RF 3 acks=all / RF 1 acks=1 over {THROUGHPUT_ROUNDS} rounds: {:.3} (target >= 0.5)",
        median(&ratios)
    );
}

// ---------------------------------------------------------------------------------------------
// Latency: librdkafka at a fixed offered rate.

/// Where a record's acknowledgement is observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Completion {
    /// In the delivery report callback, on the `ThreadedProducer`'s polling thread: the first
    /// moment the application can know (librdkafka hands over a produce response's reports as
    /// one event as soon as it arrives).
    Callback,
    /// When the `FutureProducer`'s delivery future resolves in a tokio task spawned per record:
    /// the callback above, then a oneshot channel and a task wake-up.
    Future,
}

/// Completion times of every record of one run, written from whichever thread observes them.
struct Acks {
    base: Instant,
    /// Nanoseconds since `base` per record; `u64::MAX` until it completes.
    completed_ns: Vec<AtomicU64>,
    completed: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl Acks {
    fn new(records: usize) -> Arc<Acks> {
        Arc::new(Acks {
            base: Instant::now(),
            completed_ns: (0..records).map(|_| AtomicU64::new(u64::MAX)).collect(),
            completed: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            first_error: Mutex::new(None),
        })
    }

    fn nanos(&self, at: Instant) -> u64 {
        at.duration_since(self.base).as_nanos() as u64
    }

    /// Records that `index` completed now (the clock is read first).
    fn complete(&self, index: usize, outcome: Result<(), String>) {
        let now = self.nanos(Instant::now());
        self.completed_ns[index].store(now, Ordering::Release);
        if let Err(error) = outcome {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().expect("first_error lock");
            first.get_or_insert(format!("record {index}: {error}"));
        }
        self.completed.fetch_add(1, Ordering::AcqRel);
    }

    /// Waits until `records` records completed, and asserts none failed.
    fn wait_for(&self, records: usize, what: &str) {
        poll_until(what, ACK_TIMEOUT, || {
            (self.completed.load(Ordering::Acquire) >= records).then_some(())
        });
        assert_eq!(
            self.failed.load(Ordering::Relaxed),
            0,
            "{what}: failed deliveries, first {:?}",
            self.first_error.lock().expect("first_error lock")
        );
    }
}

/// A producer context that timestamps delivery reports; the opaque is the record's index.
struct TimingContext {
    acks: Arc<Acks>,
}

impl ClientContext for TimingContext {}

impl ProducerContext for TimingContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(error.to_string()),
        };
        self.acks.complete(index, outcome);
    }
}

/// Sends records `indexes` at `rate` per second on a schedule that starts now: everything due is
/// sent at once, then the sender sleeps until the next millisecond (or until the next record is
/// due, if later), so a slow wake-up delays records without lowering the rate. `sent_ns[i]` is
/// read just before record `i`'s `send`. Returns how late each send was against its schedule.
fn paced(
    rate: u64,
    indexes: Range<usize>,
    acks: &Acks,
    sent_ns: &mut [u64],
    send: &mut impl FnMut(usize),
) -> Vec<Duration> {
    let start = Instant::now();
    let due_at = |n: usize| start + Duration::from_secs_f64(n as f64 / rate as f64);
    let count = indexes.len();
    let mut lags = Vec::with_capacity(count);
    let mut next = 0;
    while next < count {
        let elapsed = start.elapsed();
        let due = ((elapsed.as_secs_f64() * rate as f64) as usize + 1).min(count);
        while next < due {
            let now = Instant::now();
            lags.push(now.saturating_duration_since(due_at(next)));
            let index = indexes.start + next;
            sent_ns[index] = acks.nanos(now);
            send(index);
            next += 1;
        }
        if next < count {
            let next_ms = start + Duration::from_millis(elapsed.as_millis() as u64 + 1);
            let wake = next_ms.max(due_at(next));
            thread::sleep(wake.saturating_duration_since(Instant::now()));
        }
    }
    lags
}

/// What one latency run measured.
struct LatencyReport {
    records: usize,
    /// Records sent per second between the first and the last send.
    achieved_rate: f64,
    /// Produce→ack latency per record, sorted.
    latencies: Vec<Duration>,
    /// How late sends were against the schedule, sorted.
    lags: Vec<Duration>,
}

/// A discarded warm-up of `warm_up` records, then `records` records, both at `rate`; waits for
/// every acknowledgement after each.
fn measure(
    rate: u64,
    warm_up: usize,
    records: usize,
    acks: &Acks,
    mut send: impl FnMut(usize),
) -> LatencyReport {
    let mut sent_ns = vec![0u64; warm_up + records];
    paced(rate, 0..warm_up, acks, &mut sent_ns, &mut send);
    acks.wait_for(warm_up, "every warm-up record acknowledged");
    let mut lags = paced(
        rate,
        warm_up..warm_up + records,
        acks,
        &mut sent_ns,
        &mut send,
    );
    acks.wait_for(warm_up + records, "every record acknowledged");

    let measured = warm_up..warm_up + records;
    let mut latencies: Vec<Duration> = measured
        .clone()
        .map(|index| {
            let completed = acks.completed_ns[index].load(Ordering::Acquire);
            Duration::from_nanos(completed.saturating_sub(sent_ns[index]))
        })
        .collect();
    latencies.sort();
    lags.sort();
    let window = Duration::from_nanos(sent_ns[measured.end - 1] - sent_ns[measured.start]);
    LatencyReport {
        records,
        achieved_rate: if records > 1 {
            (records - 1) as f64 / window.as_secs_f64().max(1e-9)
        } else {
            0.0
        },
        latencies,
        lags,
    }
}

struct LatencyRun<'a> {
    label: &'static str,
    topic: &'static str,
    bootstrap: &'a str,
    acks: &'static str,
    linger_ms: u32,
    rate: u64,
    completion: Completion,
}

fn producer_config(run: &LatencyRun<'_>) -> ClientConfig {
    let mut config = rdk::base_config(run.bootstrap);
    config
        .set("acks", run.acks)
        .set("enable.idempotence", "false")
        .set("linger.ms", run.linger_ms.to_string())
        // Kafka's Java client sets TCP_NODELAY, and so does the broker; librdkafka does not by
        // default, and Nagle would hold back small requests behind unacknowledged ones.
        .set("socket.nagle.disable", "true")
        .set("message.timeout.ms", "30000");
    config
}

fn records_for(rate: u64, duration: Duration, scale: f64) -> usize {
    ((rate as f64 * duration.as_secs_f64() * scale) as usize).max(1)
}

fn run_latency(run: &LatencyRun<'_>, scale: f64) -> LatencyReport {
    let warm_up = records_for(run.rate, LATENCY_WARM_UP, scale);
    let records = records_for(run.rate, LATENCY_RUN, scale);
    let acks = Acks::new(warm_up + records);
    let value: Vec<u8> = (0..RECORD_BYTES).map(|i| b'a' + (i % 26) as u8).collect();
    let config = producer_config(run);
    match run.completion {
        Completion::Callback => {
            let producer: ThreadedProducer<TimingContext> = config
                .create_with_context(TimingContext {
                    acks: Arc::clone(&acks),
                })
                .expect("create ThreadedProducer");
            measure(run.rate, warm_up, records, &acks, |index| {
                let record = BaseRecord::<(), [u8], usize>::with_opaque_to(run.topic, index)
                    .payload(&value[..])
                    .partition(0);
                if let Err((error, _)) = producer.send(record) {
                    panic!("send record {index}: {error}");
                }
            })
        }
        Completion::Future => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .build()
                .expect("tokio runtime");
            let producer: FutureProducer = config.create().expect("create FutureProducer");
            measure(run.rate, warm_up, records, &acks, |index| {
                let record = FutureRecord::<(), [u8]>::to(run.topic)
                    .payload(&value[..])
                    .partition(0);
                let delivery = match producer.send_result(record) {
                    Ok(delivery) => delivery,
                    Err((error, _)) => panic!("send record {index}: {error}"),
                };
                let acks = Arc::clone(&acks);
                runtime.spawn(async move {
                    let outcome = match delivery.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((error, _))) => Err(error.to_string()),
                        Err(_) => Err("delivery future cancelled".to_string()),
                    };
                    acks.complete(index, outcome);
                });
            })
        }
    }
}

fn latency_summary(report: &LatencyReport) -> String {
    let at = |p: f64| ms(percentile(&report.latencies, p));
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        at(50.0),
        at(90.0),
        at(99.0),
        at(99.9),
        at(100.0)
    )
}

/// Offered rates into the RF 3 topic with acks=all, and RF 1 acks=1 at 10,000 records/s, each
/// with linger.ms 0 and 1, latency observed in the delivery callback; then RF 3 acks=all at
/// 10,000 records/s, linger.ms 0, observed through delivery futures, as a cross-check. Prints
/// one line per run as it ends, and a table.
#[test]
#[ignore = "benchmark: cargo test --release --test replication_bench -- --ignored --nocapture --test-threads=1"]
fn bench_replicated_produce_latency() {
    let scale = scale();
    print_setup(scale);
    let cluster = start_cluster();
    let rf1 = create_topic(&cluster, RF1_TOPIC, 1, &[]);
    let rf3 = create_topic(&cluster, RF3_TOPIC, 3, &["min.insync.replicas=2"]);
    println!("{RF1_TOPIC}: {rf1:?}\n{RF3_TOPIC}: {rf3:?}");
    let rf1_bootstrap = cluster.node(rf1.leader).bootstrap();
    let rf3_bootstrap = cluster.node(rf3.leader).bootstrap();

    let rf3_run = |linger_ms, rate, completion| LatencyRun {
        label: "RF 3, acks=all",
        topic: RF3_TOPIC,
        bootstrap: &rf3_bootstrap,
        acks: "all",
        linger_ms,
        rate,
        completion,
    };
    let mut runs = Vec::new();
    for linger_ms in LINGER_MS {
        for rate in OFFERED_RATES {
            runs.push(rf3_run(linger_ms, rate, Completion::Callback));
        }
        runs.push(LatencyRun {
            label: "RF 1, acks=1",
            topic: RF1_TOPIC,
            bootstrap: &rf1_bootstrap,
            acks: "1",
            linger_ms,
            rate: COMPARISON_RATE,
            completion: Completion::Callback,
        });
    }
    runs.push(rf3_run(0, COMPARISON_RATE, Completion::Future));

    println!(
        "{RECORD_BYTES}-byte records, one partition, librdkafka {}, bootstrap = the leader, \
         enable.idempotence=false, socket.nagle.disable=true; {} s runs after a discarded {} s \
         warm-up; latency from just before send() to the delivery report",
        rdkafka::util::get_rdkafka_version().1,
        LATENCY_RUN.as_secs_f64() * scale,
        LATENCY_WARM_UP.as_secs_f64() * scale,
    );
    let mut rows = Vec::new();
    for run in &runs {
        let report = run_latency(run, scale);
        let isr = view_via(&cluster, rf3.leader, RF3_TOPIC)
            .expect("the leader answers")
            .isr;
        println!(
            "{}, linger.ms={}, {:?}: offered {} records/s, achieved {:.0} records/s, {} records; \
             {}; sends behind schedule p99 {:.2} ms, max {:.2} ms; {RF3_TOPIC} ISR after {isr:?}",
            run.label,
            run.linger_ms,
            run.completion,
            run.rate,
            report.achieved_rate,
            report.records,
            latency_summary(&report),
            ms(percentile(&report.lags, 99.0)),
            ms(percentile(&report.lags, 100.0)),
        );
        rows.push((run, report, isr));
    }

    println!();
    println!(
        "{:<15} {:>6} {:<9} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10}",
        "run",
        "linger",
        "observed",
        "offered",
        "achieved",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "lag max",
        "RF 3 ISR"
    );
    for (run, report, isr) in &rows {
        let at = |p: f64| ms(percentile(&report.latencies, p));
        println!(
            "{:<15} {:>6} {:<9} {:>8} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6.2} ms {:>10}",
            run.label,
            run.linger_ms,
            format!("{:?}", run.completion),
            run.rate,
            report.achieved_rate,
            at(50.0),
            at(90.0),
            at(99.0),
            at(99.9),
            at(100.0),
            ms(percentile(&report.lags, 100.0)),
            format!("{isr:?}"),
        );
    }
    println!(
        "observed: Callback = in the delivery report callback (rdkafka's polling thread), \
         Future = when the FutureProducer's delivery future resolves in a tokio task; \
         lag max = the latest a send left against its schedule"
    );
    println!("target: RF 3 acks=all at 10,000 records/s, p99 < 10 ms");
}

// ---------------------------------------------------------------------------------------------
// Reassignment (issue 15): moving a large partition, and produce latency while one moves.

/// The partition the reassignment benchmarks move: one replica, filled with 1 KiB records to
/// [`MOVED_BYTES`] at scale 1 (issue 15 asks for a 5 GiB partition).
const MOVED_TOPIC: &str = "moved";
const MOVED_BYTES: f64 = 5.0 * (1u64 << 30) as f64;
/// The throttled moves' rate, leader and follower side, bytes per second.
const MOVE_THROTTLE: u64 = 100 << 20;
/// Bound on one move (a throttled one at scale 1 takes under a minute).
const MOVE_TIMEOUT: Duration = Duration::from_secs(1800);

/// Creates [`MOVED_TOPIC`] with its one replica on `broker` and fills it with `skald bench
/// produce` (acks=1); returns its size on disk.
fn fill_moved_partition(cluster: &TestCluster, broker: i32, scale: f64) -> u64 {
    let mut conn = RawConn::connect(cluster.node(broker).kafka_addr());
    common::wire::create_assigned_topic(&mut conn, MOVED_TOPIC, &[&[broker]]);
    common::wire::ensure_topic(cluster.node(broker).kafka_addr(), MOVED_TOPIC);
    let records = (MOVED_BYTES * scale / RECORD_BYTES as f64) as u64;
    bench_produce(MOVED_TOPIC, &cluster.node(broker).bootstrap(), records, "1");
    moved_log_bytes(cluster, broker)
}

/// The bytes of [`MOVED_TOPIC`]'s segment files on `broker`.
fn moved_log_bytes(cluster: &TestCluster, broker: i32) -> u64 {
    let dir = cluster
        .node(broker)
        .data_dir()
        .join(format!("{MOVED_TOPIC}-0"));
    common::segment_files(&dir)
        .iter()
        .map(|path| std::fs::metadata(path).expect("segment metadata").len())
        .sum()
}

/// Sets (`Some`) or removes Kafka's replication throttles for [`MOVED_TOPIC`], as
/// `kafka-reassign-partitions --throttle` would: the rates cluster-wide, every replica listed.
fn set_move_throttle(conn: &mut RawConn, rate: Option<u64>) {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    use kafka_protocol::protocol::StrBytes;
    let configs = |names: &[&'static str], value: Option<String>| {
        names
            .iter()
            .map(|name| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_static_str(name))
                    // SET, or DELETE back to the default.
                    .with_config_operation(if value.is_some() { 0 } else { 1 })
                    .with_value(value.clone().map(StrBytes::from_string))
            })
            .collect::<Vec<_>>()
    };
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_static_str(""))
            .with_configs(configs(
                &[
                    "leader.replication.throttled.rate",
                    "follower.replication.throttled.rate",
                ],
                rate.map(|rate| rate.to_string()),
            )),
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str(MOVED_TOPIC))
            .with_configs(configs(
                &[
                    "leader.replication.throttled.replicas",
                    "follower.replication.throttled.replicas",
                ],
                rate.map(|_| "*".to_string()),
            )),
    ]);
    let response = conn.request(&request, 1);
    for resource in &response.responses {
        assert_eq!(resource.error_code, 0, "{response:?}");
    }
}

/// Whether any reassignment is in progress.
fn reassigning(conn: &mut RawConn) -> bool {
    use kafka_protocol::messages::ListPartitionReassignmentsRequest;
    let response = conn.request(
        &ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000),
        0,
    );
    assert_eq!(response.error_code, 0, "{response:?}");
    !response.topics.is_empty()
}

/// Starts moving [`MOVED_TOPIC`]'s replica to `target`.
fn start_move(conn: &mut RawConn, target: i32) {
    assert_eq!(
        common::wire::alter_partition_reassignments(conn, MOVED_TOPIC, &[(0, Some(vec![target]))]),
        vec![0]
    );
}

fn wait_for_move(conn: &mut RawConn) {
    poll_until("the move done", MOVE_TIMEOUT, || {
        (!reassigning(conn)).then_some(())
    });
}

/// Moves a one-replica partition of [`MOVED_BYTES`] from broker 2 to broker 3 by partition
/// reassignment, unthrottled and then throttled at [`MOVE_THROTTLE`], each on a fresh cluster
/// (1 controller + 2 brokers): the time from the request to the reassignment's end (the new
/// replica caught up and in the ISR, the old one removed), and the rate.
#[test]
#[ignore = "benchmark: cargo test --release --test replication_bench -- --ignored --nocapture --test-threads=1"]
fn bench_partition_move_with_and_without_a_throttle() {
    let scale = scale();
    print_setup(scale);
    let mut rows = Vec::new();
    for throttle in [None, Some(MOVE_THROTTLE)] {
        let cluster = TestCluster::start(1, 2, &[]);
        let bytes = fill_moved_partition(&cluster, 2, scale);
        sync();
        let mut conn = RawConn::connect(cluster.node(3).kafka_addr());
        set_move_throttle(&mut conn, throttle);
        let started = Instant::now();
        start_move(&mut conn, 3);
        wait_for_move(&mut conn);
        let took = started.elapsed();
        assert_eq!(
            moved_log_bytes(&cluster, 3),
            bytes,
            "the new replica holds the whole log"
        );
        let rate = bytes as f64 / (1u64 << 20) as f64 / took.as_secs_f64();
        let label = throttle.map_or("none".to_string(), |rate| format!("{} MiB/s", rate >> 20));
        println!(
            "move, throttle {label}: {bytes} bytes in {:.2} s = {rate:.1} MiB/s",
            took.as_secs_f64()
        );
        rows.push(format!(
            "| {label} | {bytes} | {:.2} s | {rate:.1} MiB/s |",
            took.as_secs_f64()
        ));
    }
    println!("| throttle | bytes | move | rate |\n|---|---|---|---|");
    println!("{}", rows.join("\n"));
}

/// librdkafka producing 1 KiB records at 10,000 records/s (acks=all, linger.ms 0) into the RF 3
/// topic of 1 controller + 3 brokers: at rest, then while a one-replica partition of
/// [`MOVED_BYTES`] moves from broker 2 to broker 3 unthrottled, then back throttled at
/// [`MOVE_THROTTLE`]; each run says whether the move outlasted it.
#[test]
#[ignore = "benchmark: cargo test --release --test replication_bench -- --ignored --nocapture --test-threads=1"]
fn bench_produce_latency_during_a_partition_move() {
    let scale = scale();
    print_setup(scale);
    let cluster = start_cluster();
    let rf3 = create_topic(&cluster, RF3_TOPIC, 3, &["min.insync.replicas=2"]);
    let bytes = fill_moved_partition(&cluster, 2, scale);
    println!("{RF3_TOPIC}: {rf3:?}; {MOVED_TOPIC}: {bytes} bytes on broker 2");
    sync();
    let bootstrap = cluster.node(rf3.leader).bootstrap();
    let run = LatencyRun {
        label: "RF 3, acks=all",
        topic: RF3_TOPIC,
        bootstrap: &bootstrap,
        acks: "all",
        linger_ms: 0,
        rate: COMPARISON_RATE,
        completion: Completion::Callback,
    };
    let mut conn = RawConn::connect(cluster.node(4).kafka_addr());
    let mut rows = Vec::new();
    for (label, moving) in [
        ("at rest", None),
        ("moving 2 → 3, unthrottled", Some((3, None))),
        ("moving 3 → 2, throttled", Some((2, Some(MOVE_THROTTLE)))),
    ] {
        if let Some((target, throttle)) = moving {
            set_move_throttle(&mut conn, throttle);
            start_move(&mut conn, target);
        }
        let report = run_latency(&run, scale);
        let outlasted = moving.is_some() && reassigning(&mut conn);
        let summary = latency_summary(&report);
        println!("{label}: {summary}; the move outlasted the run: {outlasted}");
        rows.push(format!(
            "| {label} | {:.0} | {summary} | {} |",
            report.achieved_rate,
            if moving.is_none() {
                "-"
            } else if outlasted {
                "yes"
            } else {
                "no"
            }
        ));
        wait_for_move(&mut conn);
    }
    set_move_throttle(&mut conn, None);
    println!("| run | records/s | latency | move outlasted the run |\n|---|---|---|---|");
    println!("{}", rows.join("\n"));
}

/// The parser reads what the CLI's own report prints (not ignored: it runs with the suite).
#[test]
fn the_bench_produce_line_parses() {
    let report = skald_client::bench::ProduceReport {
        records: 200_000,
        bytes: 200_000 * RECORD_BYTES as u64,
        elapsed: Duration::from_millis(800),
        batches: 123,
        batch_latency_p50: Duration::from_micros(4_600),
        batch_latency_p99: Duration::from_micros(7_100),
    };
    assert_eq!(
        parse_produce_line(&report.to_string()),
        ProduceLine {
            records: 200_000,
            records_per_s: 250_000.0,
            mb_per_s: 244.14,
            batches: 123,
            batch_p50_ms: 4.6,
            batch_p99_ms: 7.1,
        }
    );
}
