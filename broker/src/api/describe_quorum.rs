//! DescribeQuorum (KIP-595, KIP-836): the controller quorum as its leader sees it. Kafka's brokers
//! forward this request to the active controller; here the broker asks the quorum leader for its
//! status over the controller channel and answers in Kafka's terms.
//!
//! Raft indexes map onto Kafka's offsets exactly: entry `i` (raft counts from 1) sits at offset
//! `i - 1`, so a voter whose last entry is `i` has log end offset `i`, and a commit index `c`
//! is a high watermark of `c`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};
use kafka_protocol::protocol::StrBytes;

use super::topic_name;
use crate::broker::Broker;
use crate::config::ServerConfig;
use crate::controller_plane::rpc::StatusReply;
use crate::metadata::ControlError;

/// The metadata log's topic partition, the only one a DescribeQuorum may name.
pub const METADATA_TOPIC: &str = "__cluster_metadata";
const METADATA_PARTITION: i32 = 0;

pub async fn handle(
    broker: &Arc<Broker>,
    request: DescribeQuorumRequest,
    version: i16,
) -> DescribeQuorumResponse {
    // Kafka's RaftUtil.hasValidTopicPartition: exactly one topic with exactly one partition.
    let valid = matches!(
        request.topics.as_slice(),
        [topic] if topic.topic_name.as_str() == METADATA_TOPIC
            && matches!(topic.partitions.as_slice(), [p] if p.partition_index == METADATA_PARTITION)
    );
    if !valid {
        return unknown_partitions(&request);
    }
    let status = match broker.controller() {
        Some(channel) => channel.quorum_status().await,
        None => Err(ControlError::NotController(None)),
    };
    match status {
        Ok(status) => describe(&broker.config, &status, version, now_ms()),
        Err(err) => {
            tracing::warn!("DescribeQuorum: the quorum leader did not answer: {err}");
            // What Kafka's forwarding broker answers when the controller cannot be reached: a
            // top-level error (the message travels from v2 on).
            DescribeQuorumResponse::default()
                .with_error_code(err.code())
                .with_error_message(Some(StrBytes::from_string(err.to_string())))
        }
    }
}

/// Every requested partition refused with UNKNOWN_TOPIC_OR_PARTITION, as Kafka answers.
fn unknown_partitions(request: &DescribeQuorumRequest) -> DescribeQuorumResponse {
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            TopicData::default()
                .with_topic_name(topic.topic_name.clone())
                .with_partitions(
                    topic
                        .partitions
                        .iter()
                        .map(|partition| {
                            PartitionData::default()
                                .with_partition_index(partition.partition_index)
                                .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeQuorumResponse::default().with_topics(topics)
}

/// The leader's view of the quorum as Kafka's `singletonDescribeQuorumResponse` lays it out.
fn describe(
    config: &ServerConfig,
    status: &StatusReply,
    version: i16,
    now_ms: i64,
) -> DescribeQuorumResponse {
    let leader = status.leader.unwrap_or(-1);
    let voters = status
        .voters
        .iter()
        .map(|voter| {
            // Only the leader tracks fetch times in Kafka; raft-rs keeps none, so a follower's
            // are unknown (-1). The leader is always current, as Kafka reports it.
            let timestamp = if voter.node_id == leader { now_ms } else { -1 };
            ReplicaState::default()
                .with_replica_id(BrokerId(voter.node_id))
                .with_log_end_offset(voter.matched_index.map_or(-1, offset))
                .with_last_fetch_timestamp(timestamp)
                .with_last_caught_up_timestamp(timestamp)
        })
        .collect();
    let partition = PartitionData::default()
        .with_partition_index(METADATA_PARTITION)
        .with_leader_id(BrokerId(leader))
        .with_leader_epoch(i32::try_from(status.term).unwrap_or(i32::MAX))
        .with_high_watermark(offset(status.commit_index))
        .with_current_voters(voters)
        // Brokers are not raft observers: they follow the metadata by fetching committed
        // batches from a voter (`committed_since`), so the quorum has none to report.
        .with_observers(Vec::new());
    let mut response = DescribeQuorumResponse::default().with_topics(vec![TopicData::default()
        .with_topic_name(topic_name(METADATA_TOPIC))
        .with_partitions(vec![partition])]);
    if version >= 2 {
        response = response.with_nodes(
            status
                .voters
                .iter()
                .map(|voter| {
                    Node::default()
                        .with_node_id(BrokerId(voter.node_id))
                        .with_listeners(controller_listeners(config, voter.node_id))
                })
                .collect(),
        );
    }
    response
}

/// A voter's CONTROLLER endpoint: from `controller.quorum.voters`, or this node's own controller
/// listener on a one-node quorum without voters configured (none by default: no listener then).
fn controller_listeners(config: &ServerConfig, node_id: i32) -> Vec<Listener> {
    let listener = |name: &str, host: &str, port: u16| {
        Listener::default()
            .with_name(StrBytes::from_string(name.to_string()))
            .with_host(StrBytes::from_string(host.to_string()))
            .with_port(port)
    };
    if config.voters.is_empty() {
        return config
            .controller_listener()
            .filter(|_| node_id == config.node_id)
            .map(|own| vec![listener(&own.name, &own.host, own.port)])
            .unwrap_or_default();
    }
    let Some(name) = config.controller_listener_names.first() else {
        return Vec::new();
    };
    config
        .voters
        .iter()
        .filter(|voter| voter.node_id == node_id)
        .map(|voter| listener(name, &voter.host, voter.port))
        .collect()
}

fn offset(raft_index: u64) -> i64 {
    i64::try_from(raft_index).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller_plane::rpc::VoterStatus;

    fn status() -> StatusReply {
        StatusReply {
            node_id: 2,
            leader: Some(2),
            term: 7,
            commit_index: 40,
            applied_index: 40,
            voters: vec![
                VoterStatus {
                    node_id: 1,
                    matched_index: Some(38),
                },
                VoterStatus {
                    node_id: 2,
                    matched_index: Some(41),
                },
                VoterStatus {
                    node_id: 3,
                    matched_index: None,
                },
            ],
        }
    }

    fn config(properties: &[(&str, &str)]) -> ServerConfig {
        ServerConfig::from_properties(
            properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .expect("valid config")
    }

    #[test]
    fn the_leaders_view_in_kafkas_terms() {
        let config = config(&[
            ("node.id", "5"),
            ("process.roles", "broker"),
            (
                "controller.quorum.voters",
                "1@c1:9093,2@c2:9093,3@[::1]:9094",
            ),
        ]);
        let response = describe(&config, &status(), 2, 1_700_000_000_000);
        assert_eq!(response.error_code, 0);
        let [topic] = response.topics.as_slice() else {
            panic!("{response:?}")
        };
        assert_eq!(topic.topic_name.as_str(), "__cluster_metadata");
        let [partition] = topic.partitions.as_slice() else {
            panic!("{topic:?}")
        };
        assert_eq!(
            (
                partition.partition_index,
                partition.error_code,
                partition.leader_id.0,
                partition.leader_epoch,
                partition.high_watermark
            ),
            (0, 0, 2, 7, 40)
        );
        let voters: Vec<(i32, i64, i64, i64)> = partition
            .current_voters
            .iter()
            .map(|v| {
                (
                    v.replica_id.0,
                    v.log_end_offset,
                    v.last_fetch_timestamp,
                    v.last_caught_up_timestamp,
                )
            })
            .collect();
        assert_eq!(
            voters,
            vec![
                (1, 38, -1, -1),
                (2, 41, 1_700_000_000_000, 1_700_000_000_000),
                (3, -1, -1, -1)
            ]
        );
        assert!(partition.observers.is_empty());
        // Each node with its listeners as `name://host:port`.
        let nodes: Vec<(i32, Vec<String>)> = response
            .nodes
            .iter()
            .map(|node| {
                (
                    node.node_id.0,
                    node.listeners
                        .iter()
                        .map(|l| format!("{}://{}:{}", l.name, l.host, l.port))
                        .collect(),
                )
            })
            .collect();
        let controller = |address: &str| vec![format!("CONTROLLER://{address}")];
        assert_eq!(
            nodes,
            vec![
                (1, controller("c1:9093")),
                (2, controller("c2:9093")),
                (3, controller("::1:9094"))
            ]
        );
        // Before v2 there are no nodes to list.
        assert!(describe(&config, &status(), 1, 0).nodes.is_empty());
    }

    #[test]
    fn anything_but_the_metadata_partition_is_unknown() {
        use kafka_protocol::messages::describe_quorum_request as req;
        let partition = |index| req::PartitionData::default().with_partition_index(index);
        let topic = |name, partitions| {
            req::TopicData::default()
                .with_topic_name(topic_name(name))
                .with_partitions(partitions)
        };
        let request = DescribeQuorumRequest::default().with_topics(vec![
            topic("__cluster_metadata", vec![partition(1)]),
            topic("orders", vec![partition(0), partition(2)]),
        ]);
        let response = unknown_partitions(&request);
        let answered: Vec<(String, i32, i16)> = response
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.topic_name.to_string(), p.partition_index, p.error_code))
            })
            .collect();
        assert_eq!(
            answered,
            vec![
                ("__cluster_metadata".to_string(), 1, 3),
                ("orders".to_string(), 0, 3),
                ("orders".to_string(), 2, 3)
            ]
        );
        assert_eq!(response.error_code, 0);
    }
}
