//! `__consumer_offsets` gets Kafka's default replication factor of 3: a cluster creates it only
//! once three brokers are up (COORDINATOR_NOT_AVAILABLE before, as Kafka answers), so one dead
//! broker cannot take group coordinators offline; a lone node left at the default creates it
//! with the one replica it has.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::cluster::TestCluster;
use common::wire::RawConn;
use common::{poll_until, TestServer};
use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

const OFFSETS_TOPIC: &str = "__consumer_offsets";
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

/// FindCoordinator (v3: one group key) → (error code, coordinator node id).
fn find_coordinator(addr: SocketAddr, group: &str) -> (i16, i32) {
    let mut conn = RawConn::connect(addr);
    let version = conn.negotiate(ApiKey::FindCoordinator, 3);
    assert_eq!(version, 3);
    let request = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(group.to_string()))
        .with_key_type(0);
    let response: FindCoordinatorResponse = conn.request(&request, version);
    (response.error_code, response.node_id.0)
}

/// `__consumer_offsets` as Metadata shows it: (error code, the replica set of each partition).
fn offsets_topic(addr: SocketAddr) -> (i16, Vec<BTreeSet<i32>>) {
    let metadata = RawConn::connect(addr).metadata(Some(&[OFFSETS_TOPIC]), false);
    let topic = &metadata.topics[0];
    let mut partitions: Vec<(i32, BTreeSet<i32>)> = topic
        .partitions
        .iter()
        .map(|p| {
            (
                p.partition_index,
                p.replica_nodes.iter().map(|id| id.0).collect(),
            )
        })
        .collect();
    partitions.sort();
    (
        topic.error_code,
        partitions
            .into_iter()
            .map(|(_, replicas)| replicas)
            .collect(),
    )
}

#[test]
fn a_lone_node_at_the_default_creates_the_offsets_topic_with_its_one_replica() {
    let server = TestServer::start();
    assert_eq!(find_coordinator(server.kafka_addr(), "lone"), (0, 1));
    let (error_code, partitions) = offsets_topic(server.kafka_addr());
    assert_eq!(error_code, 0);
    assert_eq!(partitions, vec![BTreeSet::from([1]); 50]);
}

#[test]
fn a_cluster_creates_the_offsets_topic_only_once_three_brokers_are_up() {
    // Node 1 is the controller, 2 and 3 brokers.
    let mut cluster = TestCluster::start(1, 2, &[("offsets.topic.num.partitions", "6")]);
    let broker = cluster.node(2).kafka_addr();
    assert_eq!(
        find_coordinator(broker, "billing"),
        (COORDINATOR_NOT_AVAILABLE, -1)
    );
    assert_eq!(
        offsets_topic(broker),
        (UNKNOWN_TOPIC_OR_PARTITION, Vec::new()),
        "refused, not created with fewer replicas"
    );

    assert_eq!(cluster.add_broker(), 4);
    let (error_code, coordinator) = poll_until(
        "FindCoordinator to succeed with three brokers up",
        Duration::from_secs(30),
        || Some(find_coordinator(broker, "billing")).filter(|(code, _)| *code == 0),
    );
    assert_eq!(error_code, 0);
    assert!(
        [2, 3, 4].contains(&coordinator),
        "coordinator {coordinator}"
    );
    let (error_code, partitions) = offsets_topic(broker);
    assert_eq!(error_code, 0);
    assert_eq!(partitions, vec![BTreeSet::from([2, 3, 4]); 6]);
}
