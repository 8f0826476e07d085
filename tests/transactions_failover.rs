//! Exactly once under faults: a librdkafka consume-transform-produce loop (read a batch of
//! inputs, write their transforms and the input position in one transaction, commit) runs on a
//! cluster of 1 controller and 3 brokers — every topic, internal ones included, with
//! replication factor 3 and `min.insync.replicas=2` — while the test kill -9's the transaction
//! coordinator's broker, then the output partition's leader, restarting each. In the end the
//! output, as a read_committed consumer reads it, holds every input's transform exactly once and
//! in input order, and the committed input offset is the input's end: nothing lost, nothing
//! doubled, nothing aborted visible.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::replica::view_on;
use common::{poll_until, rdk};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

const INPUTS: usize = 3_000;
const BATCH: usize = 50;
const TIMEOUT: Duration = Duration::from_secs(60);
const BROKERS: [i32; 3] = [2, 3, 4];

fn producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    let producer: ThreadedProducer<DefaultProducerContext> = rdk::base_config(bootstrap)
        .set("transactional.id", "etl-1")
        .set("transaction.timeout.ms", "60000")
        .set("linger.ms", "1")
        // librdkafka 2.12 (confluentinc/librdkafka#5511, open): once a dead group coordinator's
        // broker leaves the metadata, the client decommissions its handle but keeps it cached
        // as the coordinator, and `send_offsets_to_transaction` waits for a state change of
        // some broker to look again — which may never come, its timeout unchecked (#5456).
        // Closing idle connections makes such state changes happen; Apache Kafka also drops
        // fenced brokers from Metadata, so the stall is the same against it.
        .set("connections.max.idle.ms", "3000")
        .create()
        .expect("create transactional producer");
    // A retriable failure (the coordinator moved or died mid-call) is retried, as librdkafka
    // asks of applications; anything else fails the test.
    let deadline = Instant::now() + 2 * TIMEOUT;
    loop {
        match producer.init_transactions(TIMEOUT) {
            Ok(()) => return producer,
            Err(KafkaError::Transaction(e)) if e.is_retriable() && Instant::now() < deadline => {}
            Err(e) => panic!("init_transactions: {e}"),
        }
    }
}

/// The loop: from the committed position, batches of inputs transformed into `output` in one
/// transaction with the next position; an abortable failure aborts and rereads, a fatal one
/// (fenced, or the producer gave up) starts a new producer. Returns the transactions committed
/// and the failures it recovered from.
fn transform(
    bootstrap: String,
    committed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> (usize, Vec<String>) {
    let reader: BaseConsumer = rdk::base_config(&bootstrap)
        .set("group.id", "etl")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .create()
        .expect("create reader");
    let mut producer = producer(&bootstrap);
    let mut position = 0usize;
    let mut transactions = 0;
    let mut failures = Vec::new();
    while position < INPUTS && !stop.load(Ordering::Acquire) {
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset("input", 0, Offset::Offset(position as i64))
            .unwrap();
        reader.assign(&assignment).unwrap();
        let want = BATCH.min(INPUTS - position);
        let mut batch = Vec::with_capacity(want);
        let deadline = Instant::now() + TIMEOUT;
        while batch.len() < want && Instant::now() < deadline {
            if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
                batch.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
            }
        }
        let outcome = (|| -> Result<(), KafkaError> {
            producer.begin_transaction()?;
            for input in &batch {
                producer
                    .send(
                        BaseRecord::<(), str>::to("output")
                            .partition(0)
                            .payload(&input.to_uppercase()),
                    )
                    .map_err(|(e, _)| e)?;
            }
            let mut next = TopicPartitionList::new();
            next.add_partition_offset("input", 0, Offset::Offset((position + batch.len()) as i64))?;
            producer.send_offsets_to_transaction(
                &next,
                &reader.group_metadata().unwrap(),
                TIMEOUT,
            )?;
            producer.commit_transaction(TIMEOUT)
        })();
        match outcome {
            Ok(()) => {
                position += batch.len();
                transactions += 1;
                committed.store(position, Ordering::Release);
            }
            Err(KafkaError::Transaction(error)) if error.txn_requires_abort() => {
                failures.push(format!("abortable: {error}"));
                if let Err(abort) = producer.abort_transaction(TIMEOUT) {
                    failures.push(format!("abort failed: {abort}"));
                    producer = self::producer(&bootstrap);
                }
            }
            Err(error) => {
                // Fatal or retriable-but-given-up: a new producer fences the old one and
                // aborts whatever it left open.
                failures.push(format!("fatal or gave up: {error}"));
                producer = self::producer(&bootstrap);
            }
        }
    }
    (transactions, failures)
}

/// The broker leading partition 0 of `topic`, as the live brokers see it.
fn leader(cluster: &TestCluster, live: &[i32], topic: &str) -> i32 {
    poll_until(&format!("a leader of {topic}"), TIMEOUT, || {
        live.iter()
            .filter_map(|node| view_on(cluster, *node, topic))
            .map(|view| view.leader)
            .find(|leader| live.contains(leader))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_transform_produce_is_exactly_once_through_broker_kills() {
    let mut cluster = TestCluster::start(
        1,
        3,
        &[
            ("default.replication.factor", "3"),
            ("min.insync.replicas", "2"),
            ("offsets.topic.replication.factor", "3"),
            ("offsets.topic.num.partitions", "1"),
            ("transaction.state.log.replication.factor", "3"),
            ("transaction.state.log.num.partitions", "1"),
            ("replica.lag.time.max.ms", "3000"),
            ("auto.leader.rebalance.enable", "false"),
            // Sessions long enough that a starved test machine fences no healthy broker: this
            // test is about the brokers it kills.
            ("broker.heartbeat.interval.ms", "500"),
            ("broker.session.timeout.ms", "6000"),
        ],
    );
    let boot = cluster.bootstrap();
    // Replication factor from `default.replication.factor` (3).
    let mut conn = common::wire::RawConn::connect(cluster.node(2).kafka_addr());
    common::wire::create_topics(&mut conn, &[("input", 1), ("output", 1)]);
    let plain = rdk::producer(&boot);
    for i in 0..INPUTS {
        plain
            .send(
                rdkafka::producer::FutureRecord::<(), str>::to("input")
                    .partition(0)
                    .payload(&format!("in-{i}")),
                TIMEOUT,
            )
            .await
            .expect("produce input");
    }

    let committed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let worker = std::thread::spawn({
        let (boot, committed, stop) = (boot.clone(), committed.clone(), stop.clone());
        move || transform(boot, committed, stop)
    });
    let progress = |what: &str, beyond: usize| {
        poll_until(what, Duration::from_secs(120), || {
            assert!(!worker.is_finished() || committed.load(Ordering::Acquire) >= INPUTS);
            (committed.load(Ordering::Acquire) >= beyond).then_some(())
        })
    };
    progress("a first transactions", 300);
    // The transaction coordinator's broker (the leader of __transaction_state-0, whose topic the
    // producer's FindCoordinator created).
    let coordinator = leader(&cluster, &BROKERS, "__transaction_state");
    cluster.kill9(coordinator);
    let live: Vec<i32> = BROKERS.into_iter().filter(|b| *b != coordinator).collect();
    let at_kill = committed.load(Ordering::Acquire);
    progress("transactions through a new coordinator", at_kill + 300);
    cluster.restart(coordinator);
    let output_leader = leader(&cluster, &BROKERS, "output");
    cluster.kill9(output_leader);
    let at_kill = committed.load(Ordering::Acquire);
    progress("transactions through a new output leader", at_kill + 300);
    cluster.restart(output_leader);
    progress("every input", INPUTS);
    let (transactions, failures) = worker.join().expect("transform thread");
    stop.store(true, Ordering::Release);
    drop(live);

    // Exactly once, in order, nothing aborted visible.
    let read: BaseConsumer = rdk::base_config(&boot)
        .set("group.id", "checker")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("output", 0, Offset::Beginning)
        .unwrap();
    read.assign(&assignment).unwrap();
    let mut output = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while output.len() < INPUTS && Instant::now() < deadline {
        if let Some(Ok(m)) = read.poll(Duration::from_millis(100)) {
            output.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    let quiet = Instant::now() + Duration::from_secs(1);
    while Instant::now() < quiet {
        if let Some(Ok(m)) = read.poll(Duration::from_millis(100)) {
            output.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    let expected: Vec<String> = (0..INPUTS).map(|i| format!("IN-{i}")).collect();
    assert!(
        output == expected,
        "the output is not every input once, in order: {} records; first difference at {:?}; \
         {transactions} transactions, failures recovered: {failures:?}",
        output.len(),
        output.iter().zip(&expected).position(|(a, b)| a != b),
    );
    let mut asked = TopicPartitionList::new();
    asked.add_partition("input", 0);
    let checker: BaseConsumer = rdk::base_config(&boot)
        .set("group.id", "etl")
        .create()
        .unwrap();
    let offsets = checker.committed_offsets(asked, TIMEOUT).unwrap();
    assert_eq!(
        offsets.elements()[0].offset(),
        Offset::Offset(INPUTS as i64),
        "the committed input position"
    );
    eprintln!("{transactions} transactions; failures recovered from: {failures:?}");
}
