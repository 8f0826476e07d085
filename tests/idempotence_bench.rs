//! Measurements of the idempotent producer for docs/PERFORMANCE.md (issue 11: "idempotent
//! produce ≥ 0.95× plain acks=all on the same topic; time to rebuild producer state of a 1 GiB
//! partition after kill -9"), against the real `skald` binary on one node. Every test here is
//! `#[ignore]`d: they measure, and assert only that what they drive succeeded. `--release` makes
//! the binary a release build:
//!
//! ```text
//! cargo test --release --test idempotence_bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! `SKALD_BENCH_SCALE` (default 1) multiplies record counts; numbers from a scaled-down run mean
//! nothing.
//!
//! - `bench_idempotent_produce_throughput`: librdkafka sends 300,000 × 1 KiB records to one
//!   partition with acks=all, `enable.idempotence` false then true (each into a topic of its
//!   own, so neither appends to a larger log), 3 alternating rounds after a warm-up; records/s
//!   and the per-round ratio.
//! - `bench_transactional_produce_throughput`: the same records through a transactional producer
//!   committing every 100 ms, against plain acks=all, alternating, 3 rounds after a warm-up.
//! - `bench_producer_state_rebuild`: 1 GiB of 1 KiB records in one segment (no roll, so no
//!   producer snapshot but the empty one), written by an idempotent producer and by a plain one
//!   into two topics; kill -9; the time the restart takes until the listener serves, and how
//!   many producers the idempotent partition remembers after it.

mod common;

use std::time::{Duration, Instant};

use common::wire::{self, RawConn};
use common::{rdk, TestServer};
use rdkafka::producer::{FutureRecord, Producer as _};

const RECORD_BYTES: usize = 1024;
const THROUGHPUT_RECORDS: f64 = 300_000.0;
const ROUNDS: usize = 3;
const REBUILD_BYTES: f64 = 1024.0 * 1024.0 * 1024.0;

fn scale() -> f64 {
    std::env::var("SKALD_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// Sends `records` 1 KiB records to partition 0 of `topic` and waits for every delivery report;
/// records per second.
fn produce(bootstrap: &str, topic: &str, records: usize, idempotent: bool) -> f64 {
    // `SKALD_BENCH_PLAIN_IN_FLIGHT=5` gives the plain producer the idempotent one's cap on
    // requests in flight (librdkafka's limit with idempotence), to tell the client's pipelining
    // from the broker's per-batch work.
    let in_flight = std::env::var("SKALD_BENCH_PLAIN_IN_FLIGHT")
        .ok()
        .filter(|_| !idempotent)
        .unwrap_or_else(|| if idempotent { "5" } else { "1000000" }.to_string());
    let producer = rdk::producer_with(
        bootstrap,
        &[
            ("max.in.flight.requests.per.connection", in_flight.as_str()),
            (
                "enable.idempotence",
                if idempotent { "true" } else { "false" },
            ),
            ("linger.ms", "5"),
            ("batch.size", "262144"),
            ("queue.buffering.max.messages", "1000000"),
            ("queue.buffering.max.kbytes", "2097151"),
            ("message.timeout.ms", "120000"),
        ],
    );
    let value = vec![b'x'; RECORD_BYTES];
    // The clock starts once the producer is connected (and, idempotent, has its producer id):
    // the steady state is what is compared, not the client's start-up.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime
        .block_on(
            producer.send(
                FutureRecord::<(), [u8]>::to(topic)
                    .partition(0)
                    .payload(&value),
                Duration::from_secs(60),
            ),
        )
        .unwrap_or_else(|(error, _)| panic!("warm-up record: {error}"));
    let started = Instant::now();
    let mut pending = Vec::with_capacity(records);
    for i in 0..records {
        let report = producer
            .send_result(
                FutureRecord::<(), [u8]>::to(topic)
                    .partition(0)
                    .payload(&value),
            )
            .unwrap_or_else(|(error, _)| panic!("enqueue record {i}: {error}"));
        pending.push(report);
    }
    producer
        .flush(Duration::from_secs(300))
        .expect("every record reported on");
    let elapsed = started.elapsed();
    runtime.block_on(async {
        for (i, report) in pending.into_iter().enumerate() {
            report
                .await
                .expect("report")
                .unwrap_or_else(|(error, _)| panic!("record {i} failed: {error}"));
        }
    });
    records as f64 / elapsed.as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn bench_idempotent_produce_throughput() {
    let records = (THROUGHPUT_RECORDS * scale()).max(1.0) as usize;
    let server = TestServer::start();
    let boot = server.bootstrap();
    let mut conn = RawConn::connect(server.kafka_addr());
    let mut ratios = Vec::new();
    // A discarded warm-up, then the rounds; a topic per run keeps every log the same size.
    for round in 0..=ROUNDS {
        let mut rates = [0.0; 2];
        for (index, idempotent) in [false, true].into_iter().enumerate() {
            let topic = format!("bench-{round}-{idempotent}");
            wire::create_topics(&mut conn, &[(&topic, 1)]);
            let _ = std::process::Command::new("sync").status();
            rates[index] = produce(&boot, &topic, records, idempotent);
        }
        if round == 0 {
            continue;
        }
        let ratio = rates[1] / rates[0];
        println!(
            "round {round}: plain {:.0} records/s, idempotent {:.0} records/s, ratio {ratio:.3}",
            rates[0], rates[1]
        );
        ratios.push(ratio);
    }
    println!(
        "median ratio idempotent / plain (acks=all, {records} x {RECORD_BYTES} B): {:.3}",
        median(&mut ratios)
    );
}

/// Sends `records` 1 KiB records through a transactional producer, committing every 100 ms;
/// records per second (until the last commit).
fn produce_transactionally(bootstrap: &str, topic: &str, records: usize, id: &str) -> f64 {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> = rdk::base_config(bootstrap)
        .set("transactional.id", id)
        .set("linger.ms", "5")
        .set("batch.size", "262144")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .create()
        .expect("create transactional producer");
    let timeout = Duration::from_secs(120);
    producer.init_transactions(timeout).expect("init");
    let value = vec![b'x'; RECORD_BYTES];
    let started = Instant::now();
    let mut last_commit = Instant::now();
    producer.begin_transaction().expect("begin");
    for i in 0..records {
        loop {
            match producer.send(
                BaseRecord::<(), [u8]>::to(topic)
                    .partition(0)
                    .payload(&value),
            ) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => producer.poll(Duration::from_millis(1)),
                Err((error, _)) => panic!("enqueue record {i}: {error}"),
            }
        }
        if last_commit.elapsed() >= Duration::from_millis(100) {
            producer.commit_transaction(timeout).expect("commit");
            producer.begin_transaction().expect("begin");
            last_commit = Instant::now();
        }
    }
    producer.commit_transaction(timeout).expect("commit");
    records as f64 / started.elapsed().as_secs_f64()
}

#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn bench_transactional_produce_throughput() {
    let records = (THROUGHPUT_RECORDS * scale()).max(1.0) as usize;
    let server = TestServer::start();
    let boot = server.bootstrap();
    let mut conn = RawConn::connect(server.kafka_addr());
    let mut ratios = Vec::new();
    for round in 0..=ROUNDS {
        let plain_topic = format!("plain-{round}");
        let txn_topic = format!("txn-{round}");
        wire::create_topics(&mut conn, &[(&plain_topic, 1), (&txn_topic, 1)]);
        let _ = std::process::Command::new("sync").status();
        let plain = produce(&boot, &plain_topic, records, false);
        let _ = std::process::Command::new("sync").status();
        let transactional = produce_transactionally(&boot, &txn_topic, records, "bench");
        if round == 0 {
            continue;
        }
        let ratio = transactional / plain;
        println!(
            "round {round}: plain {plain:.0} records/s, transactional (commit every 100 ms) \
             {transactional:.0} records/s, ratio {ratio:.3}"
        );
        ratios.push(ratio);
    }
    println!(
        "median ratio transactional / plain (acks=all, {records} x {RECORD_BYTES} B): {:.3}",
        median(&mut ratios)
    );
}

#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn bench_producer_state_rebuild() {
    let records = (REBUILD_BYTES * scale() / RECORD_BYTES as f64).max(1.0) as usize;
    // One server per kind of log, so each restart recovers one 1 GiB segment: the difference
    // between the two is the producer state's rebuild.
    for idempotent in [false, true] {
        let mut server = TestServer::start_with(&[("log.segment.bytes", "2000000000")]);
        let mut conn = RawConn::connect(server.kafka_addr());
        wire::create_topics(&mut conn, &[("rebuild", 1)]);
        produce(&server.bootstrap(), "rebuild", records, idempotent);
        drop(conn);
        let _ = std::process::Command::new("sync").status();
        let mut times = Vec::new();
        for _ in 0..3 {
            server.kill9();
            let started = Instant::now();
            server.restart();
            times.push(started.elapsed());
        }
        println!(
            "{} log of {records} x {RECORD_BYTES} B in one segment: restart after kill -9 until \
             the listener served: {times:?}",
            if idempotent { "idempotent" } else { "plain" },
        );
    }
}
