//! Replication's headline test: what acks=all acknowledged survives the partition leader being
//! kill -9'ed, again and again, while a producer streams and a consumer reads.
//!
//! A cluster of real processes — one controller (node 1) and brokers 2, 3 and 4 — hosts one
//! partition with replication factor 3 and `min.insync.replicas=2`. A librdkafka producer
//! (acks=all, no idempotence, one request in flight, unbounded retries) streams numbered records
//! while the test, round after round, kill -9's the partition's current leader, waits for an
//! in-sync replica to take over at a higher leader epoch and for the producer to be acknowledged
//! through it, restarts the killed broker and waits until it is back in the ISR. A librdkafka
//! consumer reads the partition all along. Once the producer has stopped and every replica has
//! caught up, the log is read from offset 0 to the high watermark and checked.
//!
//! # What is checked
//!
//! Record `n` carries the payload `failover-n`. Without idempotence a producer retrying after a
//! failover may write a record twice: an attempt was appended (and even replicated) but its
//! answer died with the leader, and the retry is appended again. Kafka allows that, so "exactly
//! once" is judged for what was acknowledged, at the offset it was acknowledged with. With
//! `ack(n)` the offset record `n`'s delivery report gave, `log[o]` the record at offset `o` of
//! the final log and `HW` the final high watermark:
//!
//! 1. *Acknowledged is durable, where acknowledged*: for every acknowledged `n`, `ack(n) < HW`
//!    and `log[ack(n)]` is `failover-n`. Payloads being distinct, no two acknowledged records
//!    share an offset: none was lost, moved or overwritten.
//! 2. *In order*: `ack(n)` increases with `n`. With one request in flight librdkafka retries a
//!    batch before sending anything after it, so records are acknowledged in production order.
//! 3. *Nothing invented*: every record in the log is `failover-n` for an `n` the producer sent.
//!    Further copies of a record (beside the one at its acknowledged offset, or of a record never
//!    acknowledged) are appended retries: allowed, and listed in the report a failure prints.
//! 4. *No holes below the high watermark*: the batches read from offset 0 follow on from each
//!    other without gap or overlap, one record per offset, up to exactly `HW`; their leader epochs
//!    never go down; `HW` is the leader's log end offset and every replica's.
//! 5. *No consumer saw a record that later vanished*: every (offset, payload) the concurrent
//!    consumer received is in the final log, at that offset, with that payload.
//! 6. *Replicas agree*: every replica's segment files hold the leader's batches — the same base
//!    offsets, record counts, leader epochs and CRCs.
//! 7. *Progress*: each round elects a new leader from the ISR at a higher epoch and the producer
//!    is acknowledged through it; every record sent is acknowledged in the end (a failover takes
//!    far less than `message.timeout.ms`); the concurrent consumer received every offset below
//!    `HW`; a fresh consumer reads exactly the final log.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::TestCluster;
use common::replica::{log_end_offset, view_on, PartitionView};
use common::wire::RawConn;
use common::{poll_until, rdk};
use kafka_protocol::records::RecordBatchDecoder;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer as _};
use rdkafka::{Message, Offset, TopicPartitionList};

const TOPIC: &str = "failover";
const BROKERS: [i32; 3] = [2, 3, 4];
/// Leader kills.
const ROUNDS: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(30);
/// Acknowledgements that show the producer gets through (before a kill, after a failover).
const PROGRESS: usize = 200;
/// Records sent but not yet reported on, at most: the producer never runs far ahead.
const WINDOW: usize = 256;
/// The producer's pace, at most.
const RECORDS_PER_MS: u64 = 10;
/// Consumer errors kept for the report (the rest are only counted).
const ERRORS_KEPT: usize = 20;
/// Violations, unacknowledged records, duplicated runs listed in a report, at most.
const SHOWN: usize = 50;

#[test]
fn acknowledged_records_survive_repeated_leader_kills() {
    leader_kills(Producing::AtLeastOnce);
}

/// The same kills under librdkafka's idempotent producer with five requests in flight: beyond
/// invariants 1–7, every record in the log appears exactly once, in the order it was sent — a
/// retry that reached the killed leader is recognised by the new one (which rebuilt the
/// producer's state from the batches it copied) and answered with the original offset.
#[test]
fn an_idempotent_producer_writes_each_record_once_in_order_through_leader_kills() {
    leader_kills(Producing::Idempotent);
}

/// How the test's producer is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Producing {
    /// No idempotence, one request in flight: retries may duplicate, never reorder.
    AtLeastOnce,
    /// `enable.idempotence=true` with librdkafka's default of five requests in flight.
    Idempotent,
}

fn leader_kills(producing: Producing) {
    let started = Instant::now();
    let mut cluster = TestCluster::start(
        1,
        3,
        &[
            ("default.replication.factor", "3"),
            ("min.insync.replicas", "2"),
            // A follower that stops fetching leaves the ISR in seconds, not 30.
            ("replica.lag.time.max.ms", "3000"),
            // Leadership moves only because the test kills leaders: each round kills the broker
            // that leads at that moment, whichever it is.
            ("auto.leader.rebalance.enable", "false"),
            // The consumers' group.id makes librdkafka look for a coordinator; keep that small.
            ("offsets.topic.num.partitions", "1"),
        ],
    );
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    common::wire::create_topics(&mut conn, &[(TOPIC, 1)]);
    let mut live: BTreeSet<i32> = BROKERS.into();
    let mut view = wait_for_leader(&cluster, &live, "a leader and a full ISR", |v| {
        v.isr == BROKERS
    });

    let producer = Producer::start(cluster.bootstrap(), producing);
    let watcher = Watcher::start(cluster.bootstrap());
    let mut rounds = Vec::new();
    for round in 1..=ROUNDS {
        producer.wait_for_progress(&format!("round {round}: acknowledgements from {view:?}"));
        let (killed, killed_epoch) = (view.leader, view.leader_epoch);
        let acked_at_kill = producer.acked();
        let killed_at = Instant::now();
        cluster.kill9(killed);
        live.remove(&killed);
        let failed_over = wait_for_leader(
            &cluster,
            &live,
            &format!("round {round}: a new leader after killing broker {killed}"),
            |v| v.leader != killed,
        );
        assert!(
            failed_over.leader_epoch > view.leader_epoch && view.isr.contains(&failed_over.leader),
            "round {round}: an in-sync replica leads at a higher epoch: before {view:?}, after \
             {failed_over:?}"
        );
        producer.wait_for_progress(&format!(
            "round {round}: acknowledgements through the new leader {failed_over:?}"
        ));
        let failover = killed_at.elapsed();
        cluster.restart(killed);
        live.insert(killed);
        view = wait_for_leader(
            &cluster,
            &live,
            &format!("round {round}: broker {killed} back in the ISR"),
            |v| v.isr == BROKERS,
        );
        rounds.push(format!(
            "round {round}: killed leader {killed} (epoch {killed_epoch}) after {acked_at_kill} \
             acks; broker {} leads at epoch {}; acks flowing again {failover:?} after the kill; \
             ISR full again {:?} after it",
            failed_over.leader,
            failed_over.leader_epoch,
            killed_at.elapsed(),
        ));
    }
    producer.wait_for_progress("acknowledgements after the last round");
    let deliveries = producer.finish();

    // Quiet now: the leader's high watermark reaches its log end, and every replica's.
    let view = wait_for_leader(&cluster, &live, "a full ISR at the end", |v| {
        v.isr == BROKERS
    });
    let leader_addr = cluster.node(view.leader).kafka_addr();
    let high_watermark = poll_until(
        "every replica's log end offset to be the leader's high watermark",
        TIMEOUT,
        || {
            let (error, high_watermark, _) =
                RawConn::try_connect(leader_addr)?.fetch_raw(TOPIC, 0, 0);
            let ends: Vec<Option<i64>> = BROKERS
                .iter()
                .map(|node| log_end_offset(&cluster, *node, TOPIC))
                .collect();
            (error == 0 && ends.iter().all(|end| *end == Some(high_watermark)))
                .then_some(high_watermark)
        },
    );
    let batches = read_log(&mut RawConn::connect(leader_addr), high_watermark);

    poll_until(
        "the concurrent consumer to reach the high watermark",
        TIMEOUT,
        || (watcher.next_offset() >= high_watermark).then_some(()),
    );
    let watched = watcher.finish();

    let checked = check(&deliveries, &batches, high_watermark, &watched.seen);
    let mut report = String::new();
    for round in &rounds {
        let _ = writeln!(report, "{round}");
    }
    let _ = writeln!(
        report,
        "sent {}, acknowledged {}, high watermark {high_watermark}, {} batches, leader epochs \
         {:?}; consumer saw {} records ({} errors: {:?}); took {:?}",
        deliveries.len(),
        deliveries
            .values()
            .filter(|outcome| outcome.is_ok())
            .count(),
        batches.len(),
        batches
            .iter()
            .map(|b| b.header.leader_epoch)
            .collect::<BTreeSet<_>>(),
        watched.seen.len(),
        watched.error_count,
        watched.errors,
        started.elapsed(),
    );
    let _ = writeln!(
        report,
        "log truncations (diverged, cut back after OFFSET_OUT_OF_RANGE, all), by broker: {:?}",
        BROKERS
            .iter()
            .map(|node| {
                let count = |needle| log_lines(&cluster, *node, needle);
                let truncations = (
                    count("follower log diverged"),
                    count("follower log cut back"),
                    count("truncated log"),
                );
                (*node, truncations)
            })
            .collect::<BTreeMap<_, _>>()
    );
    let _ = writeln!(
        report,
        "records appended more than once: {}",
        describe_duplicates(&checked.duplicates)
    );
    let _ = writeln!(
        report,
        "unacknowledged records ({}, number → error): {:?}",
        checked.unacknowledged.len(),
        checked
            .unacknowledged
            .iter()
            .take(SHOWN)
            .collect::<Vec<_>>()
    );
    eprintln!("{report}");
    assert!(
        checked.violations.is_empty(),
        "{} violations, the first {SHOWN}:\n{}\n{report}",
        checked.violations.len(),
        checked.violations[..checked.violations.len().min(SHOWN)].join("\n")
    );
    assert!(
        checked.unacknowledged.is_empty(),
        "records were never acknowledged\n{report}"
    );
    if producing == Producing::Idempotent {
        // Exactly once, in send order: the log holds records 0, 1, 2, … with none repeated.
        let numbers: Vec<Option<u64>> = batches
            .iter()
            .flat_map(|batch| batch.records.iter())
            .map(|(_, payload)| record_number(payload))
            .collect();
        let expected: Vec<Option<u64>> = (0..deliveries.len() as u64).map(Some).collect();
        assert!(
            checked.duplicates.is_empty() && numbers == expected,
            "an idempotent producer's records are not each in the log once, in order: {} \
             records for {} sent\n{report}",
            numbers.len(),
            deliveries.len()
        );
    }

    // A fresh consumer reads exactly that log.
    let read = rdk::read_all(
        &cluster.bootstrap(),
        TOPIC,
        &[0],
        usize::try_from(high_watermark).expect("a high watermark is not negative"),
        TIMEOUT,
    );
    let read: Vec<(i64, Vec<u8>)> = read
        .into_iter()
        .map(|rec| (rec.offset, rec.value.unwrap_or_default()))
        .collect();
    let logged: Vec<(i64, Vec<u8>)> = batches
        .iter()
        .flat_map(|batch| batch.records.iter().cloned())
        .collect();
    assert!(
        read == logged,
        "a fresh consumer read another log\n{report}"
    );

    // Every replica stores the leader's batches (nothing is appended any more: read the files).
    let leader_batches: Vec<BatchHeader> = batches.iter().map(|batch| batch.header).collect();
    for node in BROKERS {
        let dir = cluster.node(node).data_dir().join(format!("{TOPIC}-0"));
        let stored = stored_batches(&dir);
        assert!(
            stored == leader_batches,
            "broker {node} stores other batches than the leader serves: {}\n{report}",
            first_difference(&stored, &leader_batches)
        );
    }
}

/// Issue 12: a kill -9, a pause (SIGSTOP) and a network cut, each of the broker leading at that
/// moment, one after the other, under the acks=all producer. Within 10 s of the last heal every
/// replica is back in the ISR (no follower stuck truncating to where it already is, none waiting
/// out a 30 s socket timeout), what was acknowledged is in the log where it was acknowledged, and
/// every replica stores the leader's batches.
#[test]
fn every_follower_is_back_in_the_isr_soon_after_a_kill_a_pause_and_a_cut() {
    const REJOIN_MAX: Duration = Duration::from_secs(10);
    let mut cluster = TestCluster::start_with_links(
        1,
        3,
        &[
            ("default.replication.factor", "3"),
            ("min.insync.replicas", "2"),
            ("replica.lag.time.max.ms", "3000"),
            ("auto.leader.rebalance.enable", "false"),
            ("offsets.topic.num.partitions", "1"),
        ],
    );
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    common::wire::create_topics(&mut conn, &[(TOPIC, 1)]);
    let mut live: BTreeSet<i32> = BROKERS.into();
    let full = |v: &PartitionView| v.isr == BROKERS;
    let view = wait_for_leader(&cluster, &live, "a leader and a full ISR", full);
    let producer = Producer::start(cluster.bootstrap(), Producing::AtLeastOnce);
    producer.wait_for_progress(&format!("acknowledgements from {view:?}"));

    // The faults, each to the leader of the moment. The broker elected after the kill is paused
    // at once, before anything is written in its epoch: that leaves it an epoch of its own that
    // no other log has (the tracker's loop: its new leader's diverging epoch pointed at its own
    // log end, and it truncated there forever).
    let killed = view.leader;
    cluster.kill9(killed);
    live.remove(&killed);
    let elected = wait_for_leader(&cluster, &live, "a leader after the kill", |v| {
        v.leader != killed
    });
    let paused = elected.leader;
    cluster.pause(paused);
    live.remove(&paused);
    cluster.restart(killed);
    live.insert(killed);
    let after = wait_for_leader(&cluster, &live, "a leader after the pause", |v| {
        v.leader != paused && v.leader_epoch > elected.leader_epoch
    });
    producer.wait_for_progress(&format!("acknowledgements through {after:?}"));
    cluster.resume(paused);
    live.insert(paused);
    let view = wait_for_leader(
        &cluster,
        &live,
        "the killed and the paused broker back in the ISR",
        full,
    );

    let cut = view.leader;
    cluster.isolate(cut);
    live.remove(&cut);
    let after = wait_for_leader(&cluster, &live, "a leader after the cut", |v| {
        v.leader != cut
    });
    producer.wait_for_progress(&format!("acknowledgements through {after:?}"));
    let before_heal = leader_view(&cluster, &live);
    cluster.heal(cut);
    let healed = Instant::now();
    live.insert(cut);
    let rejoined = poll_until(
        "every replica in the ISR after the heal",
        REJOIN_MAX,
        || leader_view(&cluster, &live).filter(full),
    );
    eprintln!(
        "killed {killed}, paused {paused}, cut {cut} (before the heal: {before_heal:?}); every \
         replica in the ISR {:?} after the heal: {rejoined:?}",
        healed.elapsed()
    );
    producer.wait_for_progress("acknowledgements after the heal");
    let deliveries = producer.finish();

    let view = wait_for_leader(&cluster, &live, "a full ISR at the end", full);
    let leader_addr = cluster.node(view.leader).kafka_addr();
    let high_watermark = poll_until(
        "every replica's log end offset to be the leader's high watermark",
        TIMEOUT,
        || {
            let (error, high_watermark, _) =
                RawConn::try_connect(leader_addr)?.fetch_raw(TOPIC, 0, 0);
            let ends: Vec<Option<i64>> = BROKERS
                .iter()
                .map(|node| log_end_offset(&cluster, *node, TOPIC))
                .collect();
            (error == 0 && ends.iter().all(|end| *end == Some(high_watermark)))
                .then_some(high_watermark)
        },
    );
    let batches = read_log(&mut RawConn::connect(leader_addr), high_watermark);
    let logged: Vec<(i64, Vec<u8>)> = batches
        .iter()
        .flat_map(|batch| batch.records.iter().cloned())
        .collect();
    let checked = check(&deliveries, &batches, high_watermark, &logged);
    assert!(
        checked.violations.is_empty(),
        "{} violations, the first {SHOWN}:\n{}",
        checked.violations.len(),
        checked.violations[..checked.violations.len().min(SHOWN)].join("\n")
    );
    let leader_batches: Vec<BatchHeader> = batches.iter().map(|batch| batch.header).collect();
    for node in BROKERS {
        let stored = stored_batches(&cluster.node(node).data_dir().join(format!("{TOPIC}-0")));
        assert!(
            stored == leader_batches,
            "broker {node} stores other batches than the leader serves: {}",
            first_difference(&stored, &leader_batches)
        );
    }
    for node in BROKERS {
        assert_eq!(
            log_lines(&cluster, node, "changes nothing in this follower's log"),
            0,
            "broker {node} met a diverging epoch that made no progress"
        );
    }
}

/// The checker flags each kind of violation, and allows what non-idempotent retries do.
#[test]
fn the_checker_flags_lost_moved_invented_reordered_and_vanished_records() {
    let batch = |base: i64, epoch: i32, numbers: &[u64]| Batch {
        header: BatchHeader {
            base_offset: base,
            last_offset: base + numbers.len() as i64 - 1,
            leader_epoch: epoch,
            crc: 0,
        },
        records: numbers
            .iter()
            .zip(base..)
            .map(|(n, offset)| (offset, payload(*n).into_bytes()))
            .collect(),
    };
    let everything = |batches: &[Batch]| -> Vec<(i64, Vec<u8>)> {
        batches.iter().flat_map(|b| b.records.clone()).collect()
    };
    // Records 0 to 3 acknowledged at offsets 0 to 3, record 4 never; record 1 appended again
    // by a retry (offset 4).
    let deliveries: Deliveries = BTreeMap::from([
        (0, Ok(0)),
        (1, Ok(1)),
        (2, Ok(2)),
        (3, Ok(3)),
        (4, Err("timed out".into())),
    ]);
    let good = [batch(0, 0, &[0, 1]), batch(2, 1, &[2, 3, 1])];
    let checked = check(&deliveries, &good, 5, &everything(&good));
    assert_eq!(checked.violations, Vec::<String>::new());
    assert_eq!(
        checked.duplicates,
        BTreeMap::from([(1, (vec![1, 4], Some(1)))])
    );
    assert_eq!(
        checked.unacknowledged,
        BTreeMap::from([(4, "timed out".to_string())])
    );

    // A hole at 2 with record 2 moved past it, an epoch going down, record 3 overwritten, a
    // record nobody sent, a consumer that saw what is gone and missed the rest.
    let bad = [batch(0, 1, &[0, 1]), batch(3, 0, &[2, 99])];
    let checked = check(&deliveries, &bad, 6, &[(2, payload(2).into_bytes())]);
    assert_eq!(
        checked.violations,
        [
            "batch at offset 3 after the log reached 2: a hole or an overlap",
            "batch at offset 3 has leader epoch 0 after epoch 1",
            "the log ends at 5 but the high watermark is 6",
            "offset 4 holds a record the producer never sent: \"failover-99\"",
            "record 2 acknowledged at offset 2, where the log has nothing; it is at [3]",
            "record 3 acknowledged at offset 3, where the log has \"failover-2\"; it is at []",
            "the consumer saw offset 2 = \"failover-2\", the log has nothing there",
            "the concurrent consumer never received 5 of the offsets below 6",
        ]
    );

    // Acknowledgements out of production order.
    let swapped: Deliveries = BTreeMap::from([(0, Ok(1)), (1, Ok(0))]);
    let log = [batch(0, 0, &[1, 0])];
    let checked = check(&swapped, &log, 2, &everything(&log));
    assert_eq!(
        checked.violations,
        ["record 1 acknowledged at offset 0, after record 0 at offset 1"]
    );
}

/// Polls until a live broker leads the partition — the live brokers name it, at their highest
/// leader epoch, and it names itself, which makes its own view (ISR included) the one to trust —
/// and that view satisfies `accept`.
fn wait_for_leader(
    cluster: &TestCluster,
    live: &BTreeSet<i32>,
    what: &str,
    accept: impl Fn(&PartitionView) -> bool,
) -> PartitionView {
    poll_until(what, TIMEOUT, || {
        leader_view(cluster, live).filter(|view| accept(view))
    })
}

/// The partition as its leader sees it, if a live broker leads it now (see [`wait_for_leader`]).
fn leader_view(cluster: &TestCluster, live: &BTreeSet<i32>) -> Option<PartitionView> {
    let named = live
        .iter()
        .filter_map(|node| view_on(cluster, *node, TOPIC))
        .filter(|view| live.contains(&view.leader))
        .max_by_key(|view| view.leader_epoch)?;
    let own = view_on(cluster, named.leader, TOPIC)?;
    (own.leader == named.leader && own.leader_epoch >= named.leader_epoch).then_some(own)
}

/// How many lines of a broker's log (all its runs) contain `needle`.
fn log_lines(cluster: &TestCluster, node: i32, needle: &str) -> usize {
    std::fs::read_to_string(cluster.node(node).stderr_path()).map_or(0, |text| {
        text.lines().filter(|line| line.contains(needle)).count()
    })
}

fn payload(number: u64) -> String {
    format!("failover-{number}")
}

fn record_number(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload)
        .ok()?
        .strip_prefix("failover-")?
        .parse()
        .ok()
}

/// Each record's delivery report, by record number: the acknowledged offset, or the error.
type Deliveries = BTreeMap<u64, Result<i64, String>>;

/// The producer, on a thread of its own: sends record after record until stopped, keeping at most
/// [`WINDOW`] unreported; a second thread collects the reports in order.
struct Producer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    thread: JoinHandle<Deliveries>,
}

impl Producer {
    fn start(bootstrap: String, producing: Producing) -> Producer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::spawn({
            let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
            move || produce(&bootstrap, &stop, acked, producing)
        });
        Producer {
            stop,
            acked,
            thread,
        }
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::Acquire)
    }

    /// Waits for [`PROGRESS`] more acknowledgements.
    fn wait_for_progress(&self, what: &str) {
        let target = self.acked() + PROGRESS;
        poll_until(what, TIMEOUT, || {
            assert!(
                !self.thread.is_finished(),
                "the producer thread ended early"
            );
            (self.acked() >= target).then_some(())
        });
    }

    /// Stops sending and returns every record's delivery report, once all have come.
    fn finish(self) -> Deliveries {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("producer thread")
    }
}

fn produce(
    bootstrap: &str,
    stop: &AtomicBool,
    acked: Arc<AtomicUsize>,
    producing: Producing,
) -> Deliveries {
    let ordering: &[(&str, &str)] = match producing {
        // One request at a time: retries cannot reorder records.
        Producing::AtLeastOnce => &[("max.in.flight.requests.per.connection", "1")],
        // librdkafka's defaults otherwise (five in flight): the broker keeps them in order.
        Producing::Idempotent => &[("enable.idempotence", "true")],
    };
    let settings = [
        ordering,
        &[
            // Each request goes as soon as the one before is answered: a request is nearly always
            // in flight when a leader is killed.
            ("linger.ms", "0"),
            ("retries", "2147483647"),
            ("retry.backoff.ms", "50"),
            ("retry.backoff.max.ms", "500"),
            // An acks=all wait the broker cannot finish (a dead follower still in the ISR) ends
            // in a retry well within a round.
            ("request.timeout.ms", "10000"),
            ("message.timeout.ms", "60000"),
        ],
    ]
    .concat();
    let producer = rdk::producer_with(bootstrap, &settings);
    let (sender, mut reports) = tokio::sync::mpsc::channel::<(u64, DeliveryFuture)>(WINDOW);
    let collector = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("build a runtime");
        runtime.block_on(async move {
            let mut deliveries = Deliveries::new();
            while let Some((number, report)) = reports.recv().await {
                let outcome = match report.await {
                    Ok(Ok(delivery)) => {
                        assert_eq!(delivery.partition, 0, "record {number}");
                        acked.fetch_add(1, Ordering::AcqRel);
                        Ok(delivery.offset)
                    }
                    Ok(Err((error, _))) => Err(error.to_string()),
                    Err(_) => Err("the delivery report was dropped".into()),
                };
                deliveries.insert(number, outcome);
            }
            deliveries
        })
    });
    let mut number = 0u64;
    while !stop.load(Ordering::Acquire) {
        let value = payload(number);
        let report = producer
            .send_result(
                FutureRecord::<(), str>::to(TOPIC)
                    .partition(0)
                    .payload(&value),
            )
            .unwrap_or_else(|(error, _)| panic!("enqueue record {number}: {error}"));
        sender
            .blocking_send((number, report))
            .expect("the report collector is gone");
        number += 1;
        if number.is_multiple_of(RECORDS_PER_MS) {
            // Pacing only: a steady stream, rather than as fast as the window allows.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    drop(sender);
    producer
        .flush(Duration::from_secs(90))
        .expect("every record reported on");
    collector.join().expect("report collector thread")
}

/// What the concurrent consumer received.
struct Watched {
    seen: Vec<(i64, Vec<u8>)>,
    errors: Vec<String>,
    error_count: usize,
}

/// A librdkafka consumer reading the partition from offset 0 throughout the failovers, on a
/// thread of its own, recording every record it is given (offset → payload).
struct Watcher {
    stop: Arc<AtomicBool>,
    next_offset: Arc<AtomicI64>,
    thread: JoinHandle<Watched>,
}

impl Watcher {
    fn start(bootstrap: String) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let next_offset = Arc::new(AtomicI64::new(0));
        let thread = std::thread::spawn({
            let (stop, next_offset) = (Arc::clone(&stop), Arc::clone(&next_offset));
            move || watch(&bootstrap, &stop, &next_offset)
        });
        Watcher {
            stop,
            next_offset,
            thread,
        }
    }

    /// One past the highest offset received.
    fn next_offset(&self) -> i64 {
        assert!(
            !self.thread.is_finished(),
            "the consumer thread ended early"
        );
        self.next_offset.load(Ordering::Acquire)
    }

    fn finish(self) -> Watched {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("consumer thread")
    }
}

fn watch(bootstrap: &str, stop: &AtomicBool, next_offset: &AtomicI64) -> Watched {
    // auto.offset.reset=error: a position the brokers call out of range, or truncation detected
    // by librdkafka's leader epoch validation, is reported rather than skipped over.
    let consumer = rdk::consumer(bootstrap);
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(TOPIC, 0, Offset::Beginning)
        .expect("add partition");
    consumer.assign(&assignment).expect("assign");
    let mut watched = Watched {
        seen: Vec::new(),
        errors: Vec::new(),
        error_count: 0,
    };
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => {
                watched
                    .seen
                    .push((message.offset(), message.payload().unwrap_or(&[]).to_vec()));
                next_offset.fetch_max(message.offset() + 1, Ordering::AcqRel);
            }
            // Connections to killed brokers fail; librdkafka says so and carries on.
            Some(Err(error)) => {
                watched.error_count += 1;
                if watched.errors.len() < ERRORS_KEPT {
                    watched.errors.push(error.to_string());
                }
            }
        }
    }
    watched
}

/// A record batch's header fields that identify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchHeader {
    base_offset: i64,
    last_offset: i64,
    leader_epoch: i32,
    crc: u32,
}

/// One batch of the final log and its records (offset, payload).
#[derive(Debug)]
struct Batch {
    header: BatchHeader,
    records: Vec<(i64, Vec<u8>)>,
}

/// RecordBatch v2 header: base offset (8), length (4), leader epoch (4), magic (1), CRC (4),
/// attributes (2), last offset delta (4), ...; 61 bytes in all.
const BATCH_HEADER_BYTES: usize = 61;

/// The complete batches at the front of `bytes`, with their sizes; a batch cut short by a fetch
/// limit ends the list.
fn batch_headers(bytes: &[u8]) -> Vec<(BatchHeader, usize)> {
    let int = |at: usize, len: usize| -> i64 {
        bytes[at..at + len]
            .iter()
            .fold(0i64, |acc, byte| (acc << 8) | i64::from(*byte))
    };
    let mut batches = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= BATCH_HEADER_BYTES {
        let length = usize::try_from(int(at + 8, 4)).expect("batch length") + 12;
        if bytes.len() - at < length {
            break;
        }
        assert_eq!(bytes[at + 16], 2, "magic of the batch at byte {at}");
        let base_offset = int(at, 8);
        batches.push((
            BatchHeader {
                base_offset,
                last_offset: base_offset + int(at + 23, 4),
                leader_epoch: int(at + 12, 4) as i32,
                crc: int(at + 17, 4) as u32,
            },
            length,
        ));
        at += length;
    }
    batches
}

/// Reads the partition from offset 0 up to `high_watermark` through its leader, batch by batch.
fn read_log(leader: &mut RawConn, high_watermark: i64) -> Vec<Batch> {
    let mut batches = Vec::new();
    let mut offset = 0;
    while offset < high_watermark {
        let (error, _, bytes) = leader.fetch_raw(TOPIC, 0, offset);
        assert_eq!(error, 0, "fetch at offset {offset}");
        let headers = batch_headers(&bytes);
        assert!(!headers.is_empty(), "no whole batch at offset {offset}");
        let mut at = 0;
        for (header, length) in headers {
            let mut batch = Bytes::copy_from_slice(&bytes[at..at + length]);
            at += length;
            let decoded = RecordBatchDecoder::decode(&mut batch).unwrap_or_else(|e| {
                panic!("decode the batch at offset {}: {e}", header.base_offset)
            });
            batches.push(Batch {
                header,
                records: decoded
                    .records
                    .iter()
                    .map(|record| {
                        let value = record.value.as_ref().map_or(Vec::new(), |v| v.to_vec());
                        (record.offset, value)
                    })
                    .collect(),
            });
            offset = header.last_offset + 1;
        }
    }
    batches
}

/// The batches in a partition directory's segment files, in offset order.
fn stored_batches(dir: &Path) -> Vec<BatchHeader> {
    let mut batches = Vec::new();
    for segment in common::segment_files(dir) {
        let bytes =
            std::fs::read(&segment).unwrap_or_else(|e| panic!("read {}: {e}", segment.display()));
        let headers = batch_headers(&bytes);
        let whole: usize = headers.iter().map(|(_, length)| length).sum();
        assert_eq!(
            whole,
            bytes.len(),
            "{} ends in a partial batch",
            segment.display()
        );
        batches.extend(headers.into_iter().map(|(header, _)| header));
    }
    batches
}

fn first_difference(stored: &[BatchHeader], served: &[BatchHeader]) -> String {
    match stored.iter().zip(served).position(|(a, b)| a != b) {
        Some(i) => format!("batch {i}: stored {:?}, served {:?}", stored[i], served[i]),
        None => format!("{} batches stored, {} served", stored.len(), served.len()),
    }
}

/// Duplicated records, a run of consecutive record numbers (a retried batch) per line: where
/// the run's first record is, and where it was acknowledged.
fn describe_duplicates(duplicates: &BTreeMap<u64, (Vec<i64>, Option<i64>)>) -> String {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for number in duplicates.keys() {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == *number => *last = *number,
            _ => runs.push((*number, *number)),
        }
    }
    let mut text = format!("{} records in {} runs", duplicates.len(), runs.len());
    for (first, last) in runs.iter().take(SHOWN) {
        let (offsets, acked) = &duplicates[first];
        let _ = write!(
            text,
            "\n  records {first}..={last}: the first at offsets {offsets:?}, acknowledged at \
             {acked:?}"
        );
    }
    text
}

/// What the checker found.
#[derive(Debug, Default)]
struct Checked {
    /// Broken invariants, each a sentence.
    violations: Vec<String>,
    /// Records in the log more than once: number → every offset holding it, and the offset it
    /// was acknowledged with.
    duplicates: BTreeMap<u64, (Vec<i64>, Option<i64>)>,
    /// Records never acknowledged: number → the delivery error.
    unacknowledged: BTreeMap<u64, String>,
}

/// Checks invariants 1–5 of the module doc: the delivery reports and what the concurrent consumer
/// saw against the final log (`batches`, read from offset 0 to `high_watermark`).
fn check(
    deliveries: &Deliveries,
    batches: &[Batch],
    high_watermark: i64,
    seen: &[(i64, Vec<u8>)],
) -> Checked {
    let mut checked = Checked::default();
    let violations = &mut checked.violations;
    let show = |payload: &[u8]| format!("{:?}", String::from_utf8_lossy(payload));

    // 4. No holes: batches follow on from 0, one record per offset, epochs never go down.
    let mut log: BTreeMap<i64, &[u8]> = BTreeMap::new();
    let mut next = 0;
    let mut epoch = i32::MIN;
    for batch in batches {
        let header = &batch.header;
        if header.base_offset != next {
            violations.push(format!(
                "batch at offset {} after the log reached {next}: a hole or an overlap",
                header.base_offset
            ));
        }
        if header.leader_epoch < epoch {
            violations.push(format!(
                "batch at offset {} has leader epoch {} after epoch {epoch}",
                header.base_offset, header.leader_epoch
            ));
        }
        epoch = epoch.max(header.leader_epoch);
        let offsets: Vec<i64> = batch.records.iter().map(|(offset, _)| *offset).collect();
        if offsets != (header.base_offset..=header.last_offset).collect::<Vec<_>>() {
            violations.push(format!(
                "batch {}..={} holds records at offsets {offsets:?}",
                header.base_offset, header.last_offset
            ));
        }
        for (offset, payload) in &batch.records {
            log.insert(*offset, payload);
        }
        next = header.last_offset + 1;
    }
    if next != high_watermark {
        violations.push(format!(
            "the log ends at {next} but the high watermark is {high_watermark}"
        ));
    }

    // 3. Nothing invented; copies counted.
    let mut copies: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for (offset, payload) in &log {
        match record_number(payload).filter(|number| deliveries.contains_key(number)) {
            Some(number) => copies.entry(number).or_default().push(*offset),
            None => violations.push(format!(
                "offset {offset} holds a record the producer never sent: {}",
                show(payload)
            )),
        }
    }

    // 1. Acknowledged records at their offsets; 2. in production order.
    let mut previous: Option<(u64, i64)> = None;
    for (number, outcome) in deliveries {
        let acked = match outcome {
            Ok(offset) => *offset,
            Err(error) => {
                checked.unacknowledged.insert(*number, error.clone());
                continue;
            }
        };
        let expected = payload(*number);
        match log.get(&acked) {
            Some(found) if *found == expected.as_bytes() => {}
            found => violations.push(format!(
                "record {number} acknowledged at offset {acked}, where the log has {}; it is at \
                 {:?}",
                found.map_or("nothing".to_string(), |p| show(p)),
                copies.get(number).cloned().unwrap_or_default()
            )),
        }
        if let Some((before, before_offset)) = previous {
            if before_offset >= acked {
                violations.push(format!(
                    "record {number} acknowledged at offset {acked}, after record {before} at \
                     offset {before_offset}"
                ));
            }
        }
        previous = Some((*number, acked));
    }

    // 5. What the consumer saw is still there.
    for (offset, payload) in seen {
        match log.get(offset) {
            Some(found) if *found == payload.as_slice() => {}
            found => violations.push(format!(
                "the consumer saw offset {offset} = {}, the log has {} there",
                show(payload),
                found.map_or("nothing".to_string(), |p| show(p))
            )),
        }
    }
    let seen_offsets: BTreeSet<i64> = seen.iter().map(|(offset, _)| *offset).collect();
    let missed = (0..high_watermark)
        .filter(|offset| !seen_offsets.contains(offset))
        .count();
    if missed > 0 {
        violations.push(format!(
            "the concurrent consumer never received {missed} of the offsets below {high_watermark}"
        ));
    }

    checked.duplicates = copies
        .into_iter()
        .filter(|(_, offsets)| offsets.len() > 1)
        .map(|(number, offsets)| {
            let acked = deliveries
                .get(&number)
                .and_then(|o| o.as_ref().ok())
                .copied();
            (number, (offsets, acked))
        })
        .collect();
    checked
}
