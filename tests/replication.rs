//! Replication across real broker processes: followers copy the leader's log byte for byte, the
//! high watermark bounds what consumers see, acks=all waits for the ISR, min.insync.replicas
//! refuses acks=all when the ISR is too small, and a failed-over partition serves the same log.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::cluster::TestCluster;
use common::poll_until;
use common::wire::{batch_v2, topic_name, RawConn};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, MetadataResponse, ProduceRequest, ProduceResponse};

const TIMEOUT: Duration = Duration::from_secs(30);
/// Kafka's error codes.
const NOT_ENOUGH_REPLICAS: i16 = 19;

/// One partition as a broker's Metadata lists it: (leader, leader epoch, replicas, ISR).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionView {
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
}

fn partition_view(metadata: &MetadataResponse, topic: &str, index: i32) -> Option<PartitionView> {
    let topic = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|name| name.as_str() == topic))?;
    let p = topic
        .partitions
        .iter()
        .find(|p| p.partition_index == index)?;
    let mut isr: Vec<i32> = p.isr_nodes.iter().map(|id| id.0).collect();
    isr.sort_unstable();
    Some(PartitionView {
        leader: p.leader_id.0,
        leader_epoch: p.leader_epoch,
        replicas: p.replica_nodes.iter().map(|id| id.0).collect(),
        isr,
    })
}

/// Polls broker `via` until partition 0 of `topic` satisfies `accept`.
fn wait_for_partition(
    cluster: &TestCluster,
    via: i32,
    topic: &str,
    what: &str,
    accept: impl Fn(&PartitionView) -> bool,
) -> PartitionView {
    poll_until(what, TIMEOUT, || {
        let mut conn = RawConn::try_connect(cluster.node(via).kafka_addr())?;
        let view = partition_view(&conn.metadata(Some(&[topic]), false), topic, 0)?;
        accept(&view).then_some(view)
    })
}

/// A produce of one batch with the given acks; the partition's (error code, base offset).
fn produce_with_acks(conn: &mut RawConn, topic: &str, acks: i16, records: Bytes) -> (i16, i64) {
    let version = conn.negotiate(ApiKey::Produce, 9);
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let response: ProduceResponse = conn.request(&request, version);
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// As [`produce_with_acks`], retrying while the leader has yet to apply the metadata that made
/// it leader (UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER), as clients do.
fn produce_once_served(conn: &mut RawConn, topic: &str, acks: i16, records: Bytes) -> (i16, i64) {
    poll_until("the leader to serve the partition", TIMEOUT, || {
        let produced = produce_with_acks(conn, topic, acks, records.clone());
        (!matches!(produced.0, 3 | 6)).then_some(produced)
    })
}

/// `skald_log_end_offset` of partition 0 of `topic` on one node.
fn log_end_offset(cluster: &TestCluster, node: i32, topic: &str) -> Option<i64> {
    let (_, body) = common::http_get(cluster.node(node).metrics_addr(), "/metrics").ok()?;
    let prefix = format!(r#"skald_log_end_offset{{partition="0",topic="{topic}"}} "#);
    body.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
}

fn start_cluster() -> TestCluster {
    TestCluster::start(
        1,
        3,
        &[
            ("default.replication.factor", "3"),
            ("min.insync.replicas", "2"),
            // Followers that stop fetching leave the ISR quickly (the brokers' sessions are 1.5 s).
            ("replica.lag.time.max.ms", "3000"),
            ("auto.leader.rebalance.enable", "false"),
        ],
    )
}

#[test]
fn followers_copy_the_leader_and_a_failed_over_partition_serves_the_same_records() {
    let mut cluster = start_cluster();
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    common::wire::create_topics(&mut conn, &[("replicated", 1)]);
    let first = wait_for_partition(
        &cluster,
        2,
        "replicated",
        "a leader and a full ISR",
        |v: &PartitionView| v.leader > 0 && v.isr == vec![2, 3, 4],
    );
    assert_eq!(first.replicas.len(), 3);

    let mut leader = RawConn::connect(cluster.node(first.leader).kafka_addr());
    let mut offsets = Vec::new();
    for i in 0..5 {
        let value = format!("value-{i}");
        let batch = batch_v2(&[
            ("k", &value, 1_700_000_000_000 + i),
            ("k2", &value, 1_700_000_000_000 + i),
        ]);
        offsets.push(produce_once_served(&mut leader, "replicated", -1, batch));
    }
    assert_eq!(offsets, vec![(0, 0), (0, 2), (0, 4), (0, 6), (0, 8)]);

    // acks=all returned: every ISR member has everything, and consumers may read all of it.
    let (error, high_watermark, records) = leader.fetch_raw("replicated", 0, 0);
    assert_eq!((error, high_watermark), (0, 10));
    for node in [2, 3, 4] {
        let end = poll_until("every replica at the log end", TIMEOUT, || {
            log_end_offset(&cluster, node, "replicated").filter(|end| *end == 10)
        });
        assert_eq!(end, 10, "node {node}");
    }

    // The leader dies: another ISR member leads at a higher epoch and serves the same bytes.
    cluster.kill9(first.leader);
    let survivor = [2, 3, 4]
        .into_iter()
        .find(|id| *id != first.leader)
        .unwrap();
    let second = wait_for_partition(
        &cluster,
        survivor,
        "replicated",
        "a new leader",
        |v: &PartitionView| v.leader > 0 && v.leader != first.leader,
    );
    assert!(second.leader_epoch > first.leader_epoch);
    let mut new_leader = RawConn::connect(cluster.node(second.leader).kafka_addr());
    let (error, high_watermark, failed_over) = poll_until(
        "the new leader's high watermark covers what was acknowledged",
        TIMEOUT,
        || {
            let fetched = new_leader.fetch_raw("replicated", 0, 0);
            (fetched.1 == 10).then_some(fetched)
        },
    );
    assert_eq!((error, high_watermark), (0, 10));
    assert_eq!(failed_over, records, "the same batches, byte for byte");

    // It keeps the log going: the next acknowledged offset follows on.
    let batch = batch_v2(&[("k", "after", 1_700_000_000_100)]);
    assert_eq!(
        produce_once_served(&mut new_leader, "replicated", -1, batch),
        (0, 10)
    );
}

#[test]
fn with_one_in_sync_replica_acks_all_is_refused_and_acks_one_still_works() {
    let mut cluster = start_cluster();
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    common::wire::create_topics(&mut conn, &[("guarded", 1)]);
    let view = wait_for_partition(&cluster, 2, "guarded", "a full ISR", |v: &PartitionView| {
        v.leader > 0 && v.isr == vec![2, 3, 4]
    });
    let followers: Vec<i32> = view
        .replicas
        .iter()
        .copied()
        .filter(|id| *id != view.leader)
        .collect();
    let mut leader = RawConn::connect(cluster.node(view.leader).kafka_addr());
    assert_eq!(
        produce_once_served(&mut leader, "guarded", -1, batch_v2(&[("k", "a", 1)])),
        (0, 0)
    );

    for follower in &followers {
        cluster.kill9(*follower);
    }
    wait_for_partition(
        &cluster,
        view.leader,
        "guarded",
        "the ISR down to the leader",
        |v: &PartitionView| v.isr == vec![view.leader],
    );
    assert_eq!(
        produce_with_acks(&mut leader, "guarded", -1, batch_v2(&[("k", "b", 2)])),
        (NOT_ENOUGH_REPLICAS, -1)
    );
    assert_eq!(
        produce_with_acks(&mut leader, "guarded", 1, batch_v2(&[("k", "c", 3)])),
        (0, 1)
    );

    // The followers return, catch up and rejoin the ISR: acks=all works again.
    for follower in &followers {
        cluster.restart(*follower);
    }
    wait_for_partition(
        &cluster,
        view.leader,
        "guarded",
        "the followers back in the ISR",
        |v: &PartitionView| v.isr == vec![2, 3, 4],
    );
    assert_eq!(
        produce_with_acks(&mut leader, "guarded", -1, batch_v2(&[("k", "d", 4)])),
        (0, 2)
    );
    let ends: BTreeMap<i32, i64> = [2, 3, 4]
        .into_iter()
        .map(|node| {
            let end = poll_until("every replica at the log end", TIMEOUT, || {
                log_end_offset(&cluster, node, "guarded").filter(|end| *end == 3)
            });
            (node, end)
        })
        .collect();
    assert_eq!(ends, BTreeMap::from([(2, 3), (3, 3), (4, 3)]));
}
