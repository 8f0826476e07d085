//! Group coordinator failover: with `__consumer_offsets` replicated (RF=3), killing the broker that
//! coordinates a group (the leader of its offsets partition) loses none of the group's
//! acknowledged commits: the new leader of that partition loads them, and the group resumes
//! exactly where it committed.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::rdk::{self, Rec};
use common::wire::RawConn;
use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

const TOPIC: &str = "orders";
const GROUP: &str = "billing";
const PARTITIONS: i32 = 2;
const RECORDS: usize = 100;
/// Records per partition the first consumer processes and commits.
const FIRST_READ: i64 = 30;
const TIMEOUT: Duration = Duration::from_secs(60);

fn group_consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("create group consumer")
}

/// The node coordinating `GROUP` as broker `via` answers FindCoordinator, once it is not
/// `not` (a broker known dead).
fn coordinator(cluster: &TestCluster, via: i32, not: Option<i32>) -> i32 {
    common::poll_until("a coordinator for the group", TIMEOUT, || {
        let mut conn = RawConn::try_connect(cluster.node(via).kafka_addr())?;
        let found = conn.request(
            &FindCoordinatorRequest::default()
                .with_key_type(0)
                .with_key(StrBytes::from_static_str(GROUP)),
            3,
        );
        (found.error_code == 0 && Some(found.node_id.0) != not).then_some(found.node_id.0)
    })
}

/// Reads records in the group until `wanted(partition, offset)` has been true for `count` of
/// them; returns them sorted (partition, offset, value).
fn read_in_group(consumer: &BaseConsumer, count: usize) -> Vec<(i32, i64, Vec<u8>)> {
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    while seen.len() < count {
        assert!(
            Instant::now() < deadline,
            "the group read {} of {count} records",
            seen.len()
        );
        // None also means the poll served an event other than a message: keep polling.
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("consume in the group");
            seen.push((
                message.partition(),
                message.offset(),
                message.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    seen.sort();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_coordinator_keeps_every_acknowledged_commit() {
    let mut cluster = TestCluster::start(
        1,
        3,
        &[
            ("default.replication.factor", "3"),
            ("min.insync.replicas", "2"),
            ("offsets.topic.replication.factor", "3"),
            ("offsets.topic.num.partitions", "3"),
            ("group.initial.rebalance.delay.ms", "200"),
            ("auto.leader.rebalance.enable", "false"),
        ],
    );
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    common::wire::create_topics(&mut conn, &[(TOPIC, PARTITIONS)]);

    let producer = rdk::producer(&cluster.bootstrap());
    let mut acked = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let value = format!("order-{i}");
        let delivery = producer
            .send(
                FutureRecord::<(), _>::to(TOPIC)
                    .payload(&value)
                    .partition((i % PARTITIONS as usize) as i32),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("record {i} not acknowledged: {e}"));
        acked.push(Rec {
            partition: delivery.partition,
            offset: delivery.offset,
            key: None,
            value: Some(value.into_bytes()),
            timestamp: None,
        });
    }
    acked.sort();
    let per_partition = rdk::assert_contiguous(&acked);
    assert_eq!(
        per_partition,
        BTreeMap::from([(0, RECORDS as i64 / 2), (1, RECORDS as i64 / 2)])
    );

    // The first consumer processes the first FIRST_READ records of each partition and commits
    // exactly after them.
    let first = group_consumer(&cluster.bootstrap());
    first.subscribe(&[TOPIC]).expect("subscribe");
    let read = read_in_group(&first, PARTITIONS as usize * FIRST_READ as usize);
    let mut commit = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        commit
            .add_partition_offset(TOPIC, partition, Offset::Offset(FIRST_READ))
            .expect("offset to commit");
    }
    first
        .commit(&commit, CommitMode::Sync)
        .expect("commit the processed offsets");
    assert!(read.len() >= PARTITIONS as usize * FIRST_READ as usize);
    let committed = BTreeMap::from([(0, FIRST_READ), (1, FIRST_READ)]);
    assert_eq!(rdk::committed_offsets(&first, TOPIC, PARTITIONS), committed);
    drop(first);

    // Kill the coordinator without warning.
    let old_coordinator = coordinator(&cluster, 2, None);
    cluster.kill9(old_coordinator);
    let survivor = [2, 3, 4]
        .into_iter()
        .find(|id| *id != old_coordinator)
        .expect("a surviving broker");
    let new_coordinator = coordinator(&cluster, survivor, Some(old_coordinator));
    assert_ne!(new_coordinator, old_coordinator);

    // The group's commits are intact on the new coordinator, and a new member resumes there.
    let bootstrap = cluster.node(survivor).bootstrap();
    let second = group_consumer(&bootstrap);
    let offsets = common::poll_until(
        "the committed offsets from the new coordinator",
        TIMEOUT,
        || {
            let mut list = TopicPartitionList::new();
            for partition in 0..PARTITIONS {
                list.add_partition(TOPIC, partition);
            }
            let found = second
                .committed_offsets(list, Duration::from_secs(5))
                .ok()?;
            let offsets: BTreeMap<i32, i64> = found
                .elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(offset) => (e.partition(), offset),
                    _ => (e.partition(), -1),
                })
                .collect();
            Some(offsets)
        },
    );
    assert_eq!(offsets, committed);
    second.subscribe(&[TOPIC]).expect("subscribe");
    let rest = read_in_group(&second, RECORDS - PARTITIONS as usize * FIRST_READ as usize);
    let expected: Vec<(i32, i64, Vec<u8>)> = acked
        .iter()
        .filter(|r| r.offset >= FIRST_READ)
        .map(|r| (r.partition, r.offset, r.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(rest, expected, "resumed exactly at the committed offsets");
}
