//! DescribeCluster and DescribeQuorum over the raw protocol against one combined node (node 1, a
//! one-voter quorum of itself): exact fields at every advertised version, and Kafka's refusals;
//! then a broker whose only controller is gone.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::cluster::TestCluster;
use common::wire::{topic_name, RawConn};
use common::{poll_until, TestServer};
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{
    DescribeClusterRequest, DescribeClusterResponse, DescribeQuorumRequest, DescribeQuorumResponse,
};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MISMATCHED_ENDPOINT_TYPE: i16 = 114;
const UNSUPPORTED_ENDPOINT_TYPE: i16 = 115;

/// What Kafka answers with no authorizer: every operation that applies to the cluster
/// (ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, CREATE_TOKENS).
const CLUSTER_AUTHORIZED_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);
/// The schema's default: not asked for.
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// A broker as DescribeCluster lists it: (id, host, port, rack, fenced).
type Listed = (i32, String, i32, Option<String>, bool);

fn listed(response: &DescribeClusterResponse) -> Vec<Listed> {
    response
        .brokers
        .iter()
        .map(|b| {
            (
                b.broker_id.0,
                b.host.to_string(),
                b.port,
                b.rack.as_ref().map(|r| r.to_string()),
                b.is_fenced,
            )
        })
        .collect()
}

#[test]
fn describe_cluster_lists_this_broker_and_refuses_other_endpoint_types() {
    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    assert_eq!(conn.api_versions().get(&60), Some(&(0, 2)));
    let cluster_id = conn
        .metadata(Some(&[]), false)
        .cluster_id
        .expect("Metadata names the cluster")
        .to_string();
    let port = i32::from(server.kafka_addr().port());
    let me: Listed = (1, "127.0.0.1".to_string(), port, None, false);

    for version in 0..=2 {
        let what = format!("DescribeCluster v{version}");
        let request = DescribeClusterRequest::default().with_include_fenced_brokers(version >= 2);
        let response: DescribeClusterResponse = conn.request(&request, version);
        assert_eq!(response.error_code, 0, "{what}");
        assert_eq!(response.error_message, None, "{what}");
        assert_eq!(response.cluster_id.as_str(), cluster_id, "{what}");
        assert_eq!(response.controller_id.0, 1, "{what}");
        assert_eq!(response.endpoint_type, 1, "{what}");
        assert_eq!(listed(&response), vec![me.clone()], "{what}");
        assert_eq!(
            response.cluster_authorized_operations, OPERATIONS_NOT_REQUESTED,
            "{what}"
        );

        let request =
            DescribeClusterRequest::default().with_include_cluster_authorized_operations(true);
        let response: DescribeClusterResponse = conn.request(&request, version);
        assert_eq!(
            response.cluster_authorized_operations, CLUSTER_AUTHORIZED_OPERATIONS,
            "{what}"
        );
    }

    // A broker is not a controller endpoint (KIP-919); an unknown type is unsupported.
    for version in 1..=2 {
        for (endpoint_type, code, message) in [
            (
                2,
                MISMATCHED_ENDPOINT_TYPE,
                "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER",
            ),
            (
                7,
                UNSUPPORTED_ENDPOINT_TYPE,
                "Unsupported endpoint type 7",
            ),
        ] {
            let request = DescribeClusterRequest::default().with_endpoint_type(endpoint_type);
            let response: DescribeClusterResponse = conn.request(&request, version);
            let what = format!("DescribeCluster v{version} endpoint type {endpoint_type}");
            assert_eq!(response.error_code, code, "{what}");
            assert_eq!(response.error_message.as_deref(), Some(message), "{what}");
            assert!(response.brokers.is_empty(), "{what}");
            assert_eq!(response.cluster_id.as_str(), "", "{what}");
        }
    }
}

fn quorum_request(topics: &[(&str, &[i32])]) -> DescribeQuorumRequest {
    DescribeQuorumRequest::default().with_topics(
        topics
            .iter()
            .map(|(name, partitions)| {
                TopicData::default()
                    .with_topic_name(topic_name(name))
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|p| PartitionData::default().with_partition_index(*p))
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// Every partition of a response: (topic, partition, error code).
fn partition_errors(response: &DescribeQuorumResponse) -> Vec<(String, i32, i16)> {
    response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.topic_name.to_string(), p.partition_index, p.error_code))
        })
        .collect()
}

#[test]
fn describe_quorum_of_a_single_node_is_one_voter_leading_itself() {
    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    assert_eq!(conn.api_versions().get(&55), Some(&(0, 2)));
    let metadata = quorum_request(&[("__cluster_metadata", &[0])]);

    // Start-up may still be committing its last records: wait until the leader's log is all
    // committed, then the idle quorum stays put.
    let (epoch, high_watermark) = poll_until("the metadata log committed", SETTLE_TIMEOUT, || {
        let response: DescribeQuorumResponse = conn.request(&metadata, 0);
        let partition = &response.topics.first()?.partitions.first()?;
        let voter = partition.current_voters.first()?;
        (voter.log_end_offset == partition.high_watermark)
            .then_some((partition.leader_epoch, partition.high_watermark))
    });
    assert!(epoch >= 1, "leader epoch {epoch}");
    assert!(high_watermark >= 1, "high watermark {high_watermark}");

    for version in 0..=2 {
        let what = format!("DescribeQuorum v{version}");
        let before = now_ms();
        let response: DescribeQuorumResponse = conn.request(&metadata, version);
        let after = now_ms();
        assert_eq!(response.error_code, 0, "{what}");
        if version >= 2 {
            // The schema's default, which Kafka sends on success too.
            assert_eq!(response.error_message.as_deref(), Some(""), "{what}");
        }
        assert_eq!(
            partition_errors(&response),
            vec![("__cluster_metadata".to_string(), 0, 0)],
            "{what}"
        );
        let partition = &response.topics[0].partitions[0];
        assert_eq!(partition.leader_id.0, 1, "{what}");
        assert_eq!(partition.leader_epoch, epoch, "{what}");
        assert_eq!(partition.high_watermark, high_watermark, "{what}");
        assert!(partition.observers.is_empty(), "{what}");
        let [voter] = partition.current_voters.as_slice() else {
            panic!("{what}: {:?}", partition.current_voters)
        };
        assert_eq!(
            (voter.replica_id.0, voter.log_end_offset),
            (1, high_watermark),
            "{what}"
        );
        if version >= 1 {
            // The leader is current by definition, as Kafka reports it.
            assert!(
                (before..=after).contains(&voter.last_fetch_timestamp),
                "{what}: {voter:?}"
            );
            assert_eq!(
                voter.last_caught_up_timestamp, voter.last_fetch_timestamp,
                "{what}"
            );
        } else {
            assert_eq!(
                (voter.last_fetch_timestamp, voter.last_caught_up_timestamp),
                (-1, -1),
                "{what}"
            );
        }
        if version >= 2 {
            // One node, no CONTROLLER listener configured: the voter has no endpoint to list.
            let nodes: Vec<(i32, usize)> = response
                .nodes
                .iter()
                .map(|node| (node.node_id.0, node.listeners.len()))
                .collect();
            assert_eq!(nodes, vec![(1, 0)], "{what}");
            assert!(voter.replica_directory_id.is_nil(), "{what}");
        } else {
            assert!(response.nodes.is_empty(), "{what}");
        }
    }

    // Anything but exactly __cluster_metadata-0: every partition asked about is unknown.
    let unknown = UNKNOWN_TOPIC_OR_PARTITION;
    for (topics, expected) in [
        (
            &[("__cluster_metadata", &[1][..])][..],
            vec![("__cluster_metadata", 1, unknown)],
        ),
        (&[("orders", &[0][..])][..], vec![("orders", 0, unknown)]),
        (
            &[("__cluster_metadata", &[0, 1][..])][..],
            vec![
                ("__cluster_metadata", 0, unknown),
                ("__cluster_metadata", 1, unknown),
            ],
        ),
        (
            &[("__cluster_metadata", &[0][..]), ("orders", &[][..])][..],
            vec![("__cluster_metadata", 0, unknown)],
        ),
        (&[][..], vec![]),
    ] {
        let response: DescribeQuorumResponse = conn.request(&quorum_request(topics), 2);
        let expected: Vec<(String, i32, i16)> = expected
            .into_iter()
            .map(|(t, p, e)| (t.to_string(), p, e))
            .collect();
        assert_eq!(partition_errors(&response), expected, "{topics:?}");
        assert_eq!(response.error_code, 0, "{topics:?}");
        assert!(response.nodes.is_empty(), "{topics:?}");
    }
}

#[test]
fn without_a_reachable_controller_describe_quorum_fails_and_describe_cluster_still_answers() {
    let mut cluster = TestCluster::start(1, 1, &[]);
    let controller = cluster.node(1).controller_addr();
    let broker_port = i32::from(cluster.node(2).kafka_port);
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    let metadata = quorum_request(&[("__cluster_metadata", &[0])]);
    let response: DescribeQuorumResponse = conn.request(&metadata, 2);
    assert_eq!(response.error_code, 0);
    assert_eq!(response.topics[0].partitions[0].leader_id.0, 1);
    // v2 lists the voter's CONTROLLER endpoint from controller.quorum.voters.
    let nodes: Vec<(i32, Vec<String>)> = response
        .nodes
        .iter()
        .map(|node| {
            let listeners = node
                .listeners
                .iter()
                .map(|l| format!("{}://{}:{}", l.name, l.host, l.port))
                .collect();
            (node.node_id.0, listeners)
        })
        .collect();
    assert_eq!(nodes, vec![(1, vec![format!("CONTROLLER://{controller}")])]);

    cluster.kill9(1);
    // The broker's own answer from its image needs no controller.
    let response: DescribeClusterResponse = conn.request(&DescribeClusterRequest::default(), 2);
    assert_eq!(response.error_code, 0);
    assert_eq!(
        listed(&response),
        vec![(2, "127.0.0.1".to_string(), broker_port, None, false)]
    );
    // The quorum's is forwarded, and fails as the controller channel reports it: a top-level
    // UNKNOWN_SERVER_ERROR naming the unreachable controller.
    let response: DescribeQuorumResponse = conn.request(&metadata, 2);
    assert_eq!(response.error_code, -1, "{response:?}");
    let message = response.error_message.clone().unwrap_or_default();
    assert!(
        message.starts_with(&format!("controller 1 at {controller}: ")),
        "{message}"
    );
    assert!(response.topics.is_empty(), "{response:?}");
}
