//! librdkafka (through the `rdkafka` crate) helpers: a real client nobody here wrote.
//!
//! Consumers use manual assignment with explicit offsets (no consumer groups, no commits):
//! `group.id` is set only because librdkafka requires one for a consumer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};

/// Upper bound for one metadata / admin / watermark round trip.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(15);

/// One consumed (or acknowledged) record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
}

/// What every client here shares: the bootstrap, IPv4, bounded socket timeouts, a client id.
pub fn base_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", "15000")
        .set("client.id", "skald-tests");
    if let Ok(debug) = std::env::var("SKALD_TEST_RDKAFKA_DEBUG") {
        config.set("debug", &debug);
    }
    config
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    base_config(bootstrap).create().expect("create AdminClient")
}

pub fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(RPC_TIMEOUT))
        .operation_timeout(Some(RPC_TIMEOUT))
}

/// acks=all, no idempotence (no InitProducerId needed), bounded delivery timeout.
pub fn producer(bootstrap: &str) -> FutureProducer {
    base_config(bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("create FutureProducer")
}

/// As [`producer`], with `settings` set on top (in-flight limits, retries, timeouts).
pub fn producer_with(bootstrap: &str, settings: &[(&str, &str)]) -> FutureProducer {
    let mut config = base_config(bootstrap);
    config
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    for (key, value) in settings {
        config.set(*key, *value);
    }
    config.create().expect("create FutureProducer")
}

pub fn consumer(bootstrap: &str) -> BaseConsumer {
    base_config(bootstrap)
        .set("group.id", "skald-tests-unused")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("create BaseConsumer")
}

/// Creates `topic` with `partitions` partitions and asserts the per-topic result is success.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let results = admin(bootstrap)
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &admin_options(),
        )
        .await
        .expect("CreateTopics request");
    assert_eq!(results, vec![Ok(topic.to_string())], "create topic {topic}");
}

/// Result of creating one topic: Ok(name) or Err((name, code)).
pub async fn try_create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> Result<String, (String, RDKafkaErrorCode)> {
    let mut results = admin(bootstrap)
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &admin_options(),
        )
        .await
        .expect("CreateTopics request");
    assert_eq!(results.len(), 1, "one result per topic: {results:?}");
    results.remove(0)
}

/// Partition ids of `topic` from a metadata request (None if the topic is absent or errored).
pub fn topic_partitions(consumer: &BaseConsumer, topic: &str) -> Option<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), RPC_TIMEOUT)
        .expect("metadata request");
    let t = metadata.topics().iter().find(|t| t.name() == topic)?;
    if t.error().is_some() {
        return None;
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Some(ids)
}

/// Names of all topics in the cluster metadata, but `__consumer_offsets`: a consumer's group.id
/// makes librdkafka look up its group coordinator, which creates that internal topic.
pub fn all_topics(consumer: &BaseConsumer) -> Vec<String> {
    let metadata = consumer
        .fetch_metadata(None, RPC_TIMEOUT)
        .expect("metadata request");
    let mut names: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|name| name != "__consumer_offsets")
        .collect();
    names.sort();
    names
}

/// Assigns `partitions` of `topic` from the beginning and reads exactly `expected` records
/// (panicking on a consume error or at the deadline), then checks nothing further arrives
/// within a short grace poll. Returned in (partition, offset) order.
pub fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: &[i32],
    expected: usize,
    timeout: Duration,
) -> Vec<Rec> {
    let consumer = consumer(bootstrap);
    let mut assignment = TopicPartitionList::new();
    for &p in partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("add partition");
    }
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut records = Vec::with_capacity(expected);
    while records.len() < expected {
        assert!(
            Instant::now() < deadline,
            "consumed only {} of {expected} records from {topic} within {timeout:?}",
            records.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(e)) => panic!("consume error on {topic}: {e}"),
            Some(Ok(m)) => records.push(Rec {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                timestamp: m.timestamp().to_millis(),
            }),
        }
    }
    // Nothing beyond what was expected (a polling window, not synchronisation).
    if let Some(extra) = consumer.poll(Duration::from_millis(300)) {
        panic!("more records than the {expected} expected in {topic}: {extra:?}");
    }
    records.sort();
    records
}

/// Asserts that, per partition, offsets run 0, 1, 2, ... without gaps or duplicates.
/// Returns partition → record count.
pub fn assert_contiguous(records: &[Rec]) -> BTreeMap<i32, i64> {
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for r in records {
        let expected = next.entry(r.partition).or_insert(0);
        assert_eq!(
            r.offset, *expected,
            "partition {} offsets not contiguous from 0: got {} expected {}",
            r.partition, r.offset, expected
        );
        *expected += 1;
    }
    next
}

/// Committed offset per partition `0..partitions` of `topic` for the consumer's group (-1 = none),
/// as the group coordinator returns it (OffsetFetch needs no group membership).
pub fn committed_offsets(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, i64> {
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    consumer
        .committed_offsets(list, Duration::from_secs(15))
        .expect("committed offsets")
        .elements()
        .iter()
        .map(|element| {
            let offset = match element.offset() {
                Offset::Offset(offset) => offset,
                Offset::Invalid => -1,
                other => panic!("unexpected committed offset {other:?}"),
            };
            (element.partition(), offset)
        })
        .collect()
}
