//! The fault suite's workload, recording everything its clients see into one
//! [`History`](super::checker::History) for the checker: an idempotent acks=all producer, a
//! transactional producer (each transaction writes to two partitions, then commits or aborts at
//! random), and a consumer group of `read_committed` consumers that commit the offsets they
//! have processed. All librdkafka (the `rdkafka` crate). Each client runs on a thread of its own
//! until `stop` is set, and keeps going through errors: faults make them expected, and judging
//! them is the checker's job.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use super::checker::{History, OffsetCommit, Read, RecordId, Txn, TxnOutcome, Write};
use super::rdk;

/// How long one transactional call may take before its outcome is taken as unknown.
const TXN_TIMEOUT: Duration = Duration::from_secs(10);
/// How many records the idempotent producer may have awaiting acknowledgement.
const IN_FLIGHT: usize = 200;
/// How often a consumer commits what it has processed.
const COMMIT_EVERY: Duration = Duration::from_millis(500);

/// Wall-clock seconds (one clock for every client of the run, and the nodes' logs).
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The shared history the clients append to.
pub type Recorder = Arc<Mutex<History>>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Streams records `p<producer>-0, 1, …` alternately to `partitions` with an idempotent acks=all
/// producer (`extra` settings on top), a couple of milliseconds apart, until `stop`; every
/// outcome recorded.
pub fn idempotent_producer(
    bootstrap: &str,
    producer_id: u32,
    topic: &str,
    partitions: i32,
    extra: &[(&str, &str)],
    stop: &AtomicBool,
    history: &Recorder,
) {
    let mut settings: Vec<(&str, &str)> = vec![
        ("enable.idempotence", "true"),
        ("linger.ms", "1"),
        ("message.timeout.ms", "300000"),
        ("request.timeout.ms", "10000"),
    ];
    settings.extend_from_slice(extra);
    let mut producer = rdk::producer_with(bootstrap, &settings);
    runtime().block_on(async {
        let mut pending = std::collections::VecDeque::new();
        let mut seq = 0u64;
        while !stop.load(Ordering::Acquire) || !pending.is_empty() {
            if !stop.load(Ordering::Acquire) && pending.len() < IN_FLIGHT {
                let id = RecordId::new(producer_id, seq);
                let partition = (seq % partitions as u64) as i32;
                let value = id.encode();
                seq += 1;
                let sent = producer.send_result(
                    FutureRecord::<(), str>::to(topic)
                        .partition(partition)
                        .payload(&value),
                );
                match sent {
                    Ok(report) => pending.push_back((id, partition, Some(report))),
                    Err((error, _)) => {
                        // A fatal error (librdkafka's idempotence saw a sequence it cannot
                        // explain): the instance is done. What it had in flight fails; a new
                        // instance carries on with the same record ids.
                        pending.push_back((id, partition, None));
                        let fatal = producer.client().fatal_error();
                        history
                            .lock()
                            .unwrap()
                            .client_errors
                            .push(format!("{id}: {error}; fatal: {fatal:?}"));
                        // Failed at once (rather than at their message timeout).
                        producer.purge(PurgeConfig::default().queue().inflight());
                        while let Some((id, partition, report)) = pending.pop_front() {
                            record(history, id, partition, report).await;
                        }
                        producer = rdk::producer_with(bootstrap, &settings);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            let Some((id, partition, report)) = pending.pop_front() else {
                break;
            };
            record(history, id, partition, report).await;
        }
        let _ = producer.flush(Duration::from_secs(60));
    });
}

/// Records a write outside a transaction with its delivery report's outcome.
async fn record(history: &Recorder, id: RecordId, partition: i32, report: Option<DeliveryFuture>) {
    let ack = match report {
        Some(report) => match report.await {
            Ok(Ok(delivery)) => Some((delivery.offset, now())),
            _ => None,
        },
        None => None,
    };
    history.lock().unwrap().writes.push(Write {
        id,
        partition,
        txn: None,
        ack,
    });
}

fn transactional(bootstrap: &str, transactional_id: &str) -> FutureProducer {
    rdk::producer_with(
        bootstrap,
        &[
            ("transactional.id", transactional_id),
            ("enable.idempotence", "true"),
            ("transaction.timeout.ms", "30000"),
            ("message.timeout.ms", "25000"),
            ("linger.ms", "1"),
            // See tests/transactions_failover.rs: idle connections closing make librdkafka look
            // a dead coordinator up again (confluentinc/librdkafka#5511).
            ("connections.max.idle.ms", "3000"),
        ],
    )
}

/// `init_transactions` until it works or `stop`; None if stopped first.
fn init(bootstrap: &str, transactional_id: &str, stop: &AtomicBool) -> Option<FutureProducer> {
    loop {
        let producer = transactional(bootstrap, transactional_id);
        loop {
            if stop.load(Ordering::Acquire) {
                return None;
            }
            match producer.init_transactions(TXN_TIMEOUT) {
                Ok(()) => return Some(producer),
                Err(KafkaError::Transaction(e)) if e.is_retriable() => continue,
                Err(_) => break, // fatal: a new producer instance
            }
        }
    }
}

/// Transactions until `stop`: each writes 1–3 records to each of partitions 0 and 1, waits for
/// their delivery, then commits (3 in 4) or aborts. A commit or abort that fails is resolved the
/// way librdkafka asks (abort when it says so, retry when retriable); when the outcome stays
/// unknown the producer is replaced (`init_transactions` fences the old one). Transaction ids
/// are `producer_id * 1_000_000 + n`.
pub fn transactional_producer(
    bootstrap: &str,
    producer_id: u32,
    topic: &str,
    seed: u64,
    stop: &AtomicBool,
    history: &Recorder,
) {
    let transactional_id = format!("fault-txn-{producer_id}");
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut seq = 0u64;
    let mut number = 0u64;
    let Some(mut producer) = init(bootstrap, &transactional_id, stop) else {
        return;
    };
    let runtime = runtime();
    while !stop.load(Ordering::Acquire) {
        let txn = u64::from(producer_id) * 1_000_000 + number;
        number += 1;
        if producer.begin_transaction().is_err() {
            match init(bootstrap, &transactional_id, stop) {
                Some(fresh) => producer = fresh,
                None => return,
            }
            continue;
        }
        let mut reports = Vec::new();
        for partition in [0, 1] {
            for _ in 0..1 + next() % 3 {
                let id = RecordId::new(producer_id, seq);
                seq += 1;
                let value = id.encode();
                match producer.send_result(
                    FutureRecord::<(), str>::to(topic)
                        .partition(partition)
                        .payload(&value),
                ) {
                    Ok(report) => reports.push((id, partition, Some(report))),
                    Err(_) => reports.push((id, partition, None)),
                }
            }
        }
        let writes: Vec<Write> = runtime.block_on(async {
            let mut writes = Vec::new();
            for (id, partition, report) in reports {
                let ack = match report {
                    Some(report) => match report.await {
                        Ok(Ok(delivery)) => Some((delivery.offset, now())),
                        _ => None,
                    },
                    None => None,
                };
                writes.push(Write {
                    id,
                    partition,
                    txn: Some(txn),
                    ack,
                });
            }
            writes
        });
        let commit = next() % 4 != 0;
        let (commit_requested, outcome) = if commit {
            let requested = now();
            (Some(requested), finish(&producer, true))
        } else {
            (None, finish(&producer, false))
        };
        {
            let mut history = history.lock().unwrap();
            history.writes.extend(writes);
            history.txns.insert(
                txn,
                Txn {
                    commit_requested,
                    outcome,
                },
            );
        }
        if outcome == TxnOutcome::Unknown {
            drop(producer);
            match init(bootstrap, &transactional_id, stop) {
                Some(fresh) => producer = fresh,
                None => return,
            }
        }
    }
}

/// Commits (or aborts) the open transaction; the outcome as far as the producer can tell.
fn finish(producer: &FutureProducer, commit: bool) -> TxnOutcome {
    for _ in 0..3 {
        let result = if commit {
            producer.commit_transaction(TXN_TIMEOUT)
        } else {
            producer.abort_transaction(TXN_TIMEOUT)
        };
        match result {
            Ok(()) if commit => return TxnOutcome::Committed { done: now() },
            Ok(()) => return TxnOutcome::Aborted,
            Err(KafkaError::Transaction(e)) if e.txn_requires_abort() => {
                return match producer.abort_transaction(TXN_TIMEOUT) {
                    Ok(()) => TxnOutcome::Aborted,
                    Err(_) => TxnOutcome::Unknown,
                };
            }
            Err(KafkaError::Transaction(e)) if e.is_retriable() => continue,
            Err(_) => return TxnOutcome::Unknown,
        }
    }
    TxnOutcome::Unknown
}

/// Counts the consumer's rebalances: a new generation may start again from committed offsets.
struct Generations(Arc<AtomicU64>);

impl ClientContext for Generations {}

impl ConsumerContext for Generations {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// A `read_committed` member of `group` subscribed to `topic`: records every record it polls
/// and, every half second, commits its position (the next offset after what it has polled),
/// recording the commit before asking for it. Until `stop`.
pub fn consumer(
    bootstrap: &str,
    consumer_id: u32,
    group: &str,
    topic: &str,
    stop: &AtomicBool,
    history: &Recorder,
) {
    let generation = Arc::new(AtomicU64::new(0));
    let consumer: BaseConsumer<Generations> = rdk::base_config(bootstrap)
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .create_with_context(Generations(generation.clone()))
        .expect("create consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::Acquire) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let at = now();
            if let Some(id) = message.payload().and_then(RecordId::decode) {
                history.lock().unwrap().reads.push(Read {
                    consumer: consumer_id,
                    generation: generation.load(Ordering::Acquire),
                    partition: message.partition(),
                    offset: message.offset(),
                    id,
                    at,
                });
            }
        }
        if last_commit.elapsed() >= COMMIT_EVERY {
            last_commit = Instant::now();
            commit_position(&consumer, consumer_id, history);
        }
    }
}

fn commit_position(consumer: &BaseConsumer<Generations>, consumer_id: u32, history: &Recorder) {
    let Ok(position) = consumer.position() else {
        return;
    };
    let mut offsets = TopicPartitionList::new();
    let at = now();
    let mut commits = Vec::new();
    for element in position.elements() {
        if let Offset::Offset(offset) = element.offset() {
            let _ = offsets.add_partition_offset(
                element.topic(),
                element.partition(),
                Offset::Offset(offset),
            );
            commits.push(OffsetCommit {
                consumer: consumer_id,
                partition: element.partition(),
                offset,
                at,
            });
        }
    }
    if commits.is_empty() {
        return;
    }
    history.lock().unwrap().commits.extend(commits);
    let _ = consumer.commit(&offsets, CommitMode::Sync);
}

/// Every partition `0..partitions` of `topic` read from the beginning with `read_committed`
/// up to its end as it is now, into the history's final log. Polls until each partition's
/// position reaches its high watermark, within `timeout`.
pub fn read_final(bootstrap: &str, topic: &str, partitions: i32, timeout: Duration) -> History {
    let consumer: BaseConsumer = rdk::base_config(bootstrap)
        .set("group.id", "fault-final-read")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("create final reader");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("add partition");
    }
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut ends = std::collections::BTreeMap::new();
    for partition in 0..partitions {
        let (_, high) = super::poll_until("a high watermark", timeout, || {
            consumer
                .fetch_watermarks(topic, partition, rdk::RPC_TIMEOUT)
                .ok()
        });
        ends.insert(partition, high);
    }
    let mut history = History::default();
    let mut at_end = std::collections::BTreeSet::new();
    while at_end.len() < partitions as usize {
        assert!(
            Instant::now() < deadline,
            "the final read reached the end of only {at_end:?} within {timeout:?}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                if let Some(id) = message.payload().and_then(RecordId::decode) {
                    history
                        .final_log
                        .entry(message.partition())
                        .or_default()
                        .push((message.offset(), id));
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                let position = consumer.position().ok().and_then(|p| {
                    match p.find_partition(topic, partition)?.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    }
                });
                if position.is_some_and(|p| p >= ends[&partition]) {
                    at_end.insert(partition);
                }
            }
            _ => {}
        }
    }
    history
}
