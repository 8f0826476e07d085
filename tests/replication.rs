//! Replication across real broker processes: followers copy the leader's log byte for byte, the
//! high watermark bounds what consumers see, acks=all waits for the ISR, min.insync.replicas
//! refuses acks=all when the ISR is too small, and a failed-over partition serves the same log.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::TestCluster;
use common::poll_until;
use common::replica::{
    log_end_offset, produce_once_served, produce_with_acks, wait_for_partition, PartitionView,
};
use common::wire::{batch_v2, RawConn};

const TIMEOUT: Duration = Duration::from_secs(30);
/// Kafka's error codes.
const NOT_ENOUGH_REPLICAS: i16 = 19;

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
