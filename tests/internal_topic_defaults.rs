//! `__consumer_offsets` and `__transaction_state` get Kafka's default replication factor of 3: a
//! cluster creates each only once three brokers are up (COORDINATOR_NOT_AVAILABLE before, as
//! Kafka answers), so one dead broker cannot take coordinators offline; a lone node left at the
//! default creates them with the one replica it has.

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
const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";
const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

/// FindCoordinator (v3: one key of `key_type`) → (error code, coordinator node id).
fn find_coordinator(addr: SocketAddr, key_type: i8, key: &str) -> (i16, i32) {
    let mut conn = RawConn::connect(addr);
    let version = conn.negotiate(ApiKey::FindCoordinator, 3);
    assert_eq!(version, 3);
    let request = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(key.to_string()))
        .with_key_type(key_type);
    let response: FindCoordinatorResponse = conn.request(&request, version);
    (response.error_code, response.node_id.0)
}

/// An internal topic as Metadata shows it: (error code, the replica set of each partition).
fn internal_topic(addr: SocketAddr, name: &str) -> (i16, Vec<BTreeSet<i32>>) {
    let metadata = RawConn::connect(addr).metadata(Some(&[name]), false);
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
fn a_lone_node_at_the_default_creates_the_internal_topics_with_its_one_replica() {
    let server = TestServer::start_with(&[("transaction.state.log.num.partitions", "4")]);
    let addr = server.kafka_addr();
    assert_eq!(find_coordinator(addr, GROUP, "lone"), (0, 1));
    assert_eq!(
        internal_topic(addr, OFFSETS_TOPIC),
        (0, vec![BTreeSet::from([1]); 50])
    );
    assert_eq!(find_coordinator(addr, TRANSACTION, "lone-txn"), (0, 1));
    assert_eq!(
        internal_topic(addr, TRANSACTION_STATE_TOPIC),
        (0, vec![BTreeSet::from([1]); 4])
    );
}

#[test]
fn a_cluster_creates_the_internal_topics_only_once_three_brokers_are_up() {
    // Node 1 is the controller, 2 and 3 brokers.
    let mut cluster = TestCluster::start(
        1,
        2,
        &[
            ("offsets.topic.num.partitions", "6"),
            ("transaction.state.log.num.partitions", "4"),
        ],
    );
    let broker = cluster.node(2).kafka_addr();
    for (key_type, key, topic) in [
        (GROUP, "billing", OFFSETS_TOPIC),
        (TRANSACTION, "billing-txn", TRANSACTION_STATE_TOPIC),
    ] {
        assert_eq!(
            find_coordinator(broker, key_type, key),
            (COORDINATOR_NOT_AVAILABLE, -1)
        );
        assert_eq!(
            internal_topic(broker, topic),
            (UNKNOWN_TOPIC_OR_PARTITION, Vec::new()),
            "{topic} refused, not created with fewer replicas"
        );
    }

    assert_eq!(cluster.add_broker(), 4);
    for (key_type, key, topic, partitions) in [
        (GROUP, "billing", OFFSETS_TOPIC, 6),
        (TRANSACTION, "billing-txn", TRANSACTION_STATE_TOPIC, 4),
    ] {
        let (_, coordinator) = poll_until(
            &format!("FindCoordinator for {key} to succeed with three brokers up"),
            Duration::from_secs(30),
            || Some(find_coordinator(broker, key_type, key)).filter(|(code, _)| *code == 0),
        );
        assert!(
            [2, 3, 4].contains(&coordinator),
            "coordinator {coordinator}"
        );
        assert_eq!(
            internal_topic(broker, topic),
            (0, vec![BTreeSet::from([2, 3, 4]); partitions])
        );
    }
}
