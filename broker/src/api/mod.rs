//! One module per Kafka API, and the dispatch from a decoded request to its handler. Handlers turn
//! every problem with a request into Kafka error codes in the response.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use skald_controller::{ControllerOp, ControllerReply, TopicError, TopicId};

use crate::metadata::ControlError;
use skald_protocol::codec::Request;

use crate::broker::Broker;
use crate::group::{GroupCoordinator, GroupsHandle};
use cluster_view::ClusterView;

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_configs;
pub mod alter_partition_reassignments;
pub mod alter_replica_log_dirs;
pub mod api_versions;
pub mod cluster_view;
pub mod config_changes;
pub mod controller_handle;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_topic_partitions;
pub mod describe_transactions;
pub mod elect_leaders;
pub mod end_txn;
pub mod error_codes;
pub mod fetch;
pub mod find_coordinator;
pub mod get_telemetry_subscriptions;
#[cfg(test)]
mod group_testing;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod list_transactions;
pub mod metadata;
pub mod new_leaders;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod push_telemetry;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod unregister_broker;
pub mod write_txn_markers;

/// Who sent a request: group members are described by client id and host.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub client_id: String,
    /// Kafka's form: `/` then the peer's IP address.
    pub host: String,
}

/// What the connection does after a request.
pub enum Reply {
    /// Boxed: responses are large and most replies pass through several hands. A Fetch
    /// response's records are written from the segment maps, not copied into the frame.
    Send(Box<ResponseKind>),
    /// As `Send`, with everything (records too) encoded into one buffer.
    SendCopied(Box<ResponseKind>),
    /// The request has done its part (acks=all batches appended); its response is ready when
    /// this resolves. The connection goes on reading the next requests meanwhile and writes the
    /// responses in request order.
    Later(Pin<Box<dyn Future<Output = Reply> + Send + 'static>>),
    /// Nothing is sent (a successful Produce with acks=0).
    Nothing,
    /// The connection is closed, with the reason logged (a failed Produce with acks=0).
    Close(String),
}

/// Handles one request.
pub async fn handle(broker: &Arc<Broker>, request: Request) -> Reply {
    handle_from(broker, request, None).await
}

/// Handles one request from `peer` (named in group membership).
pub async fn handle_from(
    broker: &Arc<Broker>,
    request: Request,
    peer: Option<std::net::SocketAddr>,
) -> Reply {
    let version = request.api_version;
    let client = ClientInfo {
        client_id: request
            .header
            .client_id
            .as_deref()
            .unwrap_or_default()
            .to_string(),
        host: peer.map_or_else(String::new, |peer| format!("/{}", peer.ip())),
    };
    let response = match request.body {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions::handle(
            broker.txns.config.transaction_version,
            version,
        )),
        RequestKind::Metadata(body) => ResponseKind::Metadata(
            metadata::handle(metadata::MetadataView::of(broker), body, version).await,
        ),
        RequestKind::CreateTopics(body) => {
            let controller: &Broker = broker;
            ResponseKind::CreateTopics(
                create_topics::handle(controller, &broker.config, body, version).await,
            )
        }
        RequestKind::DeleteTopics(body) => {
            ResponseKind::DeleteTopics(delete_topics::handle(&**broker, body, version).await)
        }
        RequestKind::AlterReplicaLogDirs(body) => {
            ResponseKind::AlterReplicaLogDirs(alter_replica_log_dirs::handle(broker, body))
        }
        RequestKind::DescribeLogDirs(body) => {
            ResponseKind::DescribeLogDirs(describe_log_dirs::handle(broker, body))
        }
        RequestKind::DeleteRecords(body) => {
            ResponseKind::DeleteRecords(delete_records::handle(broker, body))
        }
        RequestKind::CreatePartitions(body) => {
            ResponseKind::CreatePartitions(create_partitions::handle(&**broker, body).await)
        }
        RequestKind::Produce(body) => {
            return match produce::handle(broker, body, version).await {
                produce::Outcome::Respond(response) => {
                    Reply::Send(Box::new(ResponseKind::Produce(response)))
                }
                produce::Outcome::Replicating(awaiting) => Reply::Later(Box::pin(async move {
                    Reply::Send(Box::new(ResponseKind::Produce(awaiting.response().await)))
                })),
                produce::Outcome::Silent => Reply::Nothing,
                produce::Outcome::Close(reason) => Reply::Close(reason),
            }
        }
        RequestKind::Fetch(body) => {
            let from_follower = fetch::replica_id(&body, version) >= 0;
            let response = Box::new(ResponseKind::Fetch(
                fetch::handle(broker, body, version).await,
            ));
            // Measured (docs/PERFORMANCE.md, "Replication"): writing a follower's records from
            // the segment maps made replication slower than copying them into the frame, while
            // consumers' reads gain from it.
            return if from_follower {
                Reply::SendCopied(response)
            } else {
                Reply::Send(response)
            };
        }
        RequestKind::ListOffsets(body) => {
            ResponseKind::ListOffsets(list_offsets::handle(broker, body, version))
        }
        RequestKind::DescribeConfigs(body) => {
            let image = broker.image();
            let cluster = ClusterView::of(broker, &image);
            ResponseKind::DescribeConfigs(describe_configs::handle(cluster, body, version))
        }
        RequestKind::AlterConfigs(body) => ResponseKind::AlterConfigs(
            alter_configs::handle(&**broker, broker.config.node_id, body).await,
        ),
        RequestKind::IncrementalAlterConfigs(body) => ResponseKind::IncrementalAlterConfigs(
            incremental_alter_configs::handle(&**broker, broker.config.node_id, body).await,
        ),
        RequestKind::FindCoordinator(body) => ResponseKind::FindCoordinator(
            find_coordinator::handle(find_coordinator::Coordinators::of(broker), body, version)
                .await,
        ),
        RequestKind::JoinGroup(body) => {
            GroupCoordinator::ensure_ticker(broker);
            let image = broker.image();
            let groups = GroupsHandle::of(broker, &image);
            ResponseKind::JoinGroup(join_group::handle(groups, body, version, &client).await)
        }
        RequestKind::SyncGroup(body) => {
            let image = broker.image();
            ResponseKind::SyncGroup(
                sync_group::handle(GroupsHandle::of(broker, &image), body).await,
            )
        }
        RequestKind::Heartbeat(body) => {
            let image = broker.image();
            ResponseKind::Heartbeat(heartbeat::handle(GroupsHandle::of(broker, &image), body))
        }
        RequestKind::LeaveGroup(body) => {
            let image = broker.image();
            let groups = GroupsHandle::of(broker, &image);
            ResponseKind::LeaveGroup(leave_group::handle(groups, body, version))
        }
        RequestKind::OffsetCommit(body) => {
            let image = broker.image();
            let groups = GroupsHandle::of(broker, &image);
            ResponseKind::OffsetCommit(offset_commit::handle(groups, body).await)
        }
        RequestKind::OffsetFetch(body) => {
            let image = broker.image();
            let groups = GroupsHandle::of(broker, &image);
            ResponseKind::OffsetFetch(offset_fetch::handle(groups, body, version))
        }
        RequestKind::OffsetDelete(body) => {
            let image = broker.image();
            let groups = GroupsHandle::of(broker, &image);
            ResponseKind::OffsetDelete(offset_delete::handle(groups, body))
        }
        RequestKind::DescribeGroups(body) => {
            let image = broker.image();
            let groups = GroupsHandle::of(broker, &image);
            ResponseKind::DescribeGroups(describe_groups::handle(groups, body, version))
        }
        RequestKind::ListGroups(body) => {
            let image = broker.image();
            let groups = GroupsHandle::of(broker, &image);
            ResponseKind::ListGroups(list_groups::handle(groups, body))
        }
        RequestKind::DeleteGroups(body) => {
            let image = broker.image();
            let groups = GroupsHandle::of(broker, &image);
            ResponseKind::DeleteGroups(delete_groups::handle(groups, body))
        }
        RequestKind::OffsetForLeaderEpoch(body) => {
            ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(broker, body))
        }
        RequestKind::DescribeQuorum(body) => {
            ResponseKind::DescribeQuorum(describe_quorum::handle(broker, body, version).await)
        }
        RequestKind::ElectLeaders(body) => {
            ResponseKind::ElectLeaders(elect_leaders::handle(&**broker, body, version).await)
        }
        RequestKind::AlterPartitionReassignments(body) => {
            ResponseKind::AlterPartitionReassignments(
                alter_partition_reassignments::handle(&**broker, body, version).await,
            )
        }
        RequestKind::ListPartitionReassignments(body) => ResponseKind::ListPartitionReassignments(
            list_partition_reassignments::handle(&**broker, body).await,
        ),
        RequestKind::DescribeCluster(body) => {
            let image = broker.image();
            let cluster = ClusterView::of(broker, &image);
            ResponseKind::DescribeCluster(describe_cluster::handle(cluster, body, version))
        }
        RequestKind::UnregisterBroker(body) => {
            ResponseKind::UnregisterBroker(unregister_broker::handle(&**broker, body).await)
        }
        RequestKind::InitProducerId(body) => {
            ResponseKind::InitProducerId(init_producer_id::handle(broker, body).await)
        }
        RequestKind::AddPartitionsToTxn(body) => ResponseKind::AddPartitionsToTxn(
            add_partitions_to_txn::handle(broker, body, version).await,
        ),
        RequestKind::AddOffsetsToTxn(body) => {
            ResponseKind::AddOffsetsToTxn(add_offsets_to_txn::handle(broker, body).await)
        }
        RequestKind::EndTxn(body) => {
            ResponseKind::EndTxn(end_txn::handle(broker, body, version).await)
        }
        RequestKind::TxnOffsetCommit(body) => {
            ResponseKind::TxnOffsetCommit(txn_offset_commit::handle(broker, body, version).await)
        }
        RequestKind::WriteTxnMarkers(body) => {
            ResponseKind::WriteTxnMarkers(write_txn_markers::handle(broker, body).await)
        }
        RequestKind::DescribeTransactions(body) => ResponseKind::DescribeTransactions(
            describe_transactions::handle(&broker.txns, body).await,
        ),
        RequestKind::ListTransactions(body) => {
            ResponseKind::ListTransactions(list_transactions::handle(&broker.txns, body).await)
        }
        RequestKind::DescribeProducers(body) => {
            ResponseKind::DescribeProducers(describe_producers::handle(broker, body))
        }
        RequestKind::GetTelemetrySubscriptions(body) => {
            ResponseKind::GetTelemetrySubscriptions(get_telemetry_subscriptions::handle(body))
        }
        RequestKind::PushTelemetry(body) => {
            ResponseKind::PushTelemetry(push_telemetry::handle(body))
        }
        RequestKind::DescribeTopicPartitions(body) => ResponseKind::DescribeTopicPartitions(
            describe_topic_partitions::handle(&broker.image(), &body),
        ),
        other => {
            // Unreachable in practice: decode_request refuses APIs missing from the table.
            let reason = format!(
                "no handler for request {:?}",
                std::mem::discriminant(&other)
            );
            return Reply::Close(reason);
        }
    };
    Reply::Send(Box::new(response))
}

/// The Kafka error code and message for a refused topic operation.
pub fn topic_error(error: &TopicError) -> (i16, Option<StrBytes>) {
    let code = match error {
        TopicError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
        TopicError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        TopicError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        TopicError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        TopicError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        TopicError::UnknownTopicId => ResponseError::UnknownTopicId,
        TopicError::InvalidRequest(_) => ResponseError::InvalidRequest,
        TopicError::NoReassignmentInProgress => ResponseError::NoReassignmentInProgress,
    };
    (code.code(), Some(StrBytes::from_string(error.to_string())))
}

/// A Kafka error code with its message, as responses carry them.
pub type ErrorAnswer = (i16, Option<StrBytes>);

/// One outcome per topic of a metadata operation, in request order.
pub type TopicResults<T> = Vec<Result<T, TopicError>>;

/// Runs a controller operation that answers each of its topics on its own, mapping refusals to
/// Kafka error codes; when the controller cannot answer (NOT_CONTROLLER after every retry, a
/// timeout, a failed quorum) every topic gets that failure.
pub async fn topic_operation<T>(
    controller: &dyn controller_handle::ControllerHandle,
    op: ControllerOp,
    results_of: fn(ControllerReply) -> Option<TopicResults<T>>,
) -> Vec<Result<T, ErrorAnswer>> {
    let count = op.topic_count();
    let failure = match controller.control(op).await.map(results_of) {
        Ok(Some(results)) if results.len() == count => {
            return results
                .into_iter()
                .map(|result| result.map_err(|err| topic_error(&err)))
                .collect()
        }
        Ok(_) => ControlError::Unavailable("the controller answered another operation".into()),
        Err(err) => err,
    };
    tracing::warn!("metadata operation failed: {failure}");
    let answer = (
        failure.code(),
        Some(StrBytes::from_string(failure.to_string())),
    );
    (0..count).map(|_| Err(answer.clone())).collect()
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub fn uuid(topic_id: TopicId) -> uuid::Uuid {
    uuid::Uuid::from_u128(topic_id.0)
}

pub fn topic_id(uuid: &uuid::Uuid) -> TopicId {
    TopicId(uuid.as_u128())
}
