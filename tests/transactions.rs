//! Transactions end to end with librdkafka against the real binary: a transactional producer
//! commits and aborts, a read_committed consumer (librdkafka's default) sees exactly the
//! committed records, a consume-transform-produce loop commits its input offsets with
//! `send_offsets_to_transaction` (visible only once the transaction commits, untouched by an
//! abort), a second producer with the same transactional id fences the first, and the
//! coordinator's state survives a kill -9.

mod common;

use std::time::{Duration, Instant};

use common::{rdk, TestServer};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

fn transactional_producer(bootstrap: &str, id: &str) -> ThreadedProducer<DefaultProducerContext> {
    rdk::base_config(bootstrap)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", "60000")
        .set("linger.ms", "1")
        .create()
        .expect("create transactional producer")
}

fn send(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, value: &str) {
    producer
        .send(BaseRecord::<(), str>::to(topic).partition(0).payload(value))
        .unwrap_or_else(|(e, _)| panic!("enqueue {value}: {e}"));
}

/// Every data record of partition 0 of `topic` at the consumer's isolation level, as (offset,
/// value), reading until `expected` came (then a short quiet poll for extras).
fn read(bootstrap: &str, topic: &str, isolation: &str, expected: usize) -> Vec<(i64, String)> {
    let consumer: BaseConsumer = rdk::base_config(bootstrap)
        .set("group.id", "transactions-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation)
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("create consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while seen.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            seen.push((
                m.offset(),
                String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap(),
            ));
        }
    }
    let quiet = Instant::now() + Duration::from_millis(500);
    while Instant::now() < quiet {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            seen.push((m.offset(), format!("unexpected at {}", m.offset())));
        }
    }
    seen
}

fn committed(bootstrap: &str, group: &str, topic: &str) -> Option<i64> {
    let consumer: BaseConsumer = rdk::base_config(bootstrap)
        .set("group.id", group)
        .create()
        .expect("create consumer");
    let mut asked = TopicPartitionList::new();
    asked.add_partition(topic, 0);
    let offsets = consumer
        .committed_offsets(asked, TIMEOUT)
        .expect("committed offsets");
    match offsets.elements()[0].offset() {
        Offset::Offset(offset) => Some(offset),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_aborts_offsets_and_fencing() {
    let mut server = TestServer::start();
    let boot = server.bootstrap();
    rdk::create_topic(&boot, "input", 1).await;
    rdk::create_topic(&boot, "output", 1).await;

    // Commit three, abort two.
    let producer = transactional_producer(&boot, "txn-a");
    producer
        .init_transactions(TIMEOUT)
        .expect("init_transactions");
    producer.begin_transaction().unwrap();
    for value in ["c0", "c1", "c2"] {
        send(&producer, "output", value);
    }
    producer.commit_transaction(TIMEOUT).expect("commit");
    producer.begin_transaction().unwrap();
    for value in ["a0", "a1"] {
        send(&producer, "output", value);
    }
    producer.flush(TIMEOUT).unwrap();
    producer.abort_transaction(TIMEOUT).expect("abort");
    // Offsets: 0-2 committed, 3 COMMIT marker, 4-5 aborted, 6 ABORT marker.
    assert_eq!(
        read(&boot, "output", "read_committed", 3),
        vec![(0, "c0".into()), (1, "c1".into()), (2, "c2".into())]
    );
    assert_eq!(
        read(&boot, "output", "read_uncommitted", 5)
            .into_iter()
            .map(|(o, _)| o)
            .collect::<Vec<_>>(),
        vec![0, 1, 2, 4, 5]
    );

    // Consume-transform-produce: ten inputs, their offsets committed in the transaction.
    let plain = rdk::producer(&boot);
    for i in 0..10 {
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
    let consumer: BaseConsumer = rdk::base_config(&boot)
        .set("group.id", "etl")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("create consumer");
    consumer.subscribe(&["input"]).unwrap();
    let mut inputs = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while inputs.len() < 10 && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            inputs.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    assert_eq!(inputs.len(), 10, "{inputs:?}");
    let mut positions = TopicPartitionList::new();
    positions
        .add_partition_offset("input", 0, Offset::Offset(10))
        .unwrap();
    // First an aborted attempt: the offsets must not move.
    producer.begin_transaction().unwrap();
    send(&producer, "output", "lost");
    producer
        .send_offsets_to_transaction(&positions, &consumer.group_metadata().unwrap(), TIMEOUT)
        .expect("send offsets");
    producer.abort_transaction(TIMEOUT).expect("abort");
    assert_eq!(committed(&boot, "etl", "input"), None);
    producer.begin_transaction().unwrap();
    for input in &inputs {
        send(&producer, "output", &input.to_uppercase());
    }
    producer
        .send_offsets_to_transaction(&positions, &consumer.group_metadata().unwrap(), TIMEOUT)
        .expect("send offsets");
    producer.commit_transaction(TIMEOUT).expect("commit");
    assert_eq!(committed(&boot, "etl", "input"), Some(10));
    let output = read(&boot, "output", "read_committed", 13);
    let values: Vec<&str> = output.iter().map(|(_, v)| v.as_str()).collect();
    let mut expected = vec!["c0", "c1", "c2"];
    let upper: Vec<String> = (0..10).map(|i| format!("IN-{i}")).collect();
    expected.extend(upper.iter().map(String::as_str));
    assert_eq!(values, expected);

    // A new producer with the same transactional id fences the old one.
    let successor = transactional_producer(&boot, "txn-a");
    successor
        .init_transactions(TIMEOUT)
        .expect("successor init");
    producer.begin_transaction().unwrap();
    send(&producer, "output", "zombie");
    let fenced = producer.commit_transaction(TIMEOUT);
    assert!(
        matches!(&fenced, Err(KafkaError::Transaction(e)) if e.is_fatal()),
        "the fenced producer's commit fails fatally: {fenced:?}"
    );
    drop(producer);

    // The coordinator's state survives a crash: the successor goes on.
    server.kill9();
    server.restart();
    let boot = server.bootstrap();
    successor.begin_transaction().unwrap();
    send(&successor, "output", "after-crash");
    successor
        .commit_transaction(TIMEOUT)
        .expect("commit after crash");
    let output = read(&boot, "output", "read_committed", 14);
    assert_eq!(
        output.last().map(|(_, v)| v.as_str()),
        Some("after-crash"),
        "{output:?}"
    );
    assert!(!output
        .iter()
        .any(|(_, v)| ["zombie", "lost", "a0", "a1"].contains(&v.as_str())));
}
