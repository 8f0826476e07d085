//! librdkafka against a cluster of 3 controllers and 3 brokers: a client given one broker finds
//! the others through Metadata and produces to and consumes from every partition leader.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cluster::TestCluster;
use common::rdk::{self, Rec};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::Message;

const RECORDS: usize = 600;
const PARTITIONS: i32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_bootstrapped_from_one_broker_produce_and_consume_across_the_cluster() {
    let cluster = TestCluster::start(
        3,
        3,
        &[
            ("group.initial.rebalance.delay.ms", "300"),
            ("offsets.topic.num.partitions", "6"),
        ],
    );
    let topic = "across";
    // Admin through broker 5 only: the broker forwards CreateTopics to the active controller.
    rdk::create_topic(&cluster.node(5).bootstrap(), topic, PARTITIONS).await;

    // The metadata a client bootstrapped from broker 6 gets names every broker and spreads the
    // leaders over all three.
    let consumer = rdk::consumer(&cluster.node(6).bootstrap());
    let (brokers, leaders) =
        common::poll_until("leaders on all brokers", Duration::from_secs(20), || {
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .ok()?;
            let brokers: BTreeSet<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
            let topic = metadata.topics().iter().find(|t| t.name() == topic)?;
            let leaders: BTreeSet<i32> = topic.partitions().iter().map(|p| p.leader()).collect();
            (topic.partitions().len() == PARTITIONS as usize && leaders == brokers)
                .then_some((brokers, leaders))
        });
    assert_eq!(brokers, BTreeSet::from([4, 5, 6]));
    assert_eq!(leaders, brokers);

    // Produce through a client that only knows broker 4.
    let producer = rdk::producer(&cluster.node(4).bootstrap());
    let mut acked = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let (key, value) = (format!("key-{i}"), format!("value-{i}"));
        let delivery = producer
            .send(
                FutureRecord::to(topic)
                    .key(&key)
                    .payload(&value)
                    .partition((i % PARTITIONS as usize) as i32)
                    .timestamp(1_700_000_000_000 + i as i64),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("record {i} not acknowledged: {e}"));
        acked.push(Rec {
            partition: delivery.partition,
            offset: delivery.offset,
            key: Some(key.into_bytes()),
            value: Some(value.into_bytes()),
            timestamp: Some(1_700_000_000_000 + i as i64),
        });
    }
    acked.sort();
    let counts = rdk::assert_contiguous(&acked);
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        (0..PARTITIONS)
            .map(|p| (p, (RECORDS / PARTITIONS as usize) as i64))
            .collect::<Vec<_>>()
    );

    // Consume everything through a client that only knows broker 6.
    let partitions: Vec<i32> = (0..PARTITIONS).collect();
    let read = rdk::read_all(
        &cluster.node(6).bootstrap(),
        topic,
        &partitions,
        RECORDS,
        Duration::from_secs(30),
    );
    assert_eq!(read, acked);

    // A consumer group: its coordinator is the leader of the group's `__consumer_offsets`
    // partition (spread over the three brokers), found through broker 5 alone.
    let group = group_consumer(&cluster.node(5).bootstrap(), "across-group");
    group.subscribe(&[topic]).expect("subscribe");
    let mut seen = Vec::with_capacity(RECORDS);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < RECORDS {
        assert!(
            std::time::Instant::now() < deadline,
            "the group read {} of {RECORDS} records",
            seen.len()
        );
        // None also means the poll served an event other than a message: keep polling.
        if let Some(message) = group.poll(Duration::from_millis(100)) {
            let message = message.expect("consume in the group");
            seen.push((message.partition(), message.offset()));
        }
    }
    seen.sort();
    let expected: Vec<(i32, i64)> = acked.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(seen, expected);
    group
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit the group's offsets");
    let per_partition = (RECORDS / PARTITIONS as usize) as i64;
    assert_eq!(
        rdk::committed_offsets(&group, topic, PARTITIONS),
        (0..PARTITIONS).map(|p| (p, per_partition)).collect()
    );
}

fn group_consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("create group consumer")
}
