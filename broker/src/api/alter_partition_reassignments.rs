//! AlterPartitionReassignments (KIP-455): start or cancel moves of partitions' replicas
//! (`kafka-reassign-partitions.sh --execute` / `--cancel`), decided by the active controller.

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
};
use skald_controller::{ControllerOp, ControllerReply, ReassignmentSpec};

use super::controller_handle::ControllerHandle;
use super::{topic_name, topic_operation, ErrorAnswer};

pub async fn handle(
    controller: &dyn ControllerHandle,
    request: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    let specs = specs(&request);
    // v0 carries no flag: it decodes as true, any change of replication factor allowed.
    let allow_replication_factor_change = request.allow_replication_factor_change;
    let op = ControllerOp::AlterPartitionReassignments {
        partitions: specs.clone(),
        allow_replication_factor_change,
    };
    let results = topic_operation(controller, op, |reply| match reply {
        ControllerReply::AlterPartitionReassignments(results) => Some(results),
        _ => None,
    })
    .await;
    let response = answered(&specs, results);
    if version >= 1 {
        response.with_allow_replication_factor_change(allow_replication_factor_change)
    } else {
        response
    }
}

/// Every partition of the request, in request order; a null replica list cancels.
fn specs(request: &AlterPartitionReassignmentsRequest) -> Vec<ReassignmentSpec> {
    request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|partition| ReassignmentSpec {
                topic: topic.name.0.to_string(),
                partition: partition.partition_index,
                target: partition
                    .replicas
                    .as_ref()
                    .map(|replicas| replicas.iter().map(|id| id.0).collect()),
            })
        })
        .collect()
}

/// The per-partition outcomes grouped by topic, in the order topics first appear.
fn answered(
    specs: &[ReassignmentSpec],
    results: Vec<Result<(), ErrorAnswer>>,
) -> AlterPartitionReassignmentsResponse {
    let mut topics: Vec<ReassignableTopicResponse> = Vec::new();
    for (spec, result) in specs.iter().zip(results) {
        let (code, message) = result.err().unwrap_or((0, None));
        let partition = ReassignablePartitionResponse::default()
            .with_partition_index(spec.partition)
            .with_error_code(code)
            .with_error_message(message);
        match topics.iter_mut().find(|t| t.name.0.as_str() == spec.topic) {
            Some(topic) => topic.partitions.push(partition),
            None => topics.push(
                ReassignableTopicResponse::default()
                    .with_name(topic_name(&spec.topic))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    AlterPartitionReassignmentsResponse::default()
        .with_error_message(None)
        .with_responses(topics)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::BrokerId;
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    #[test]
    fn partitions_are_answered_per_topic_in_request_order() {
        let request = AlterPartitionReassignmentsRequest::default().with_topics(vec![
            ReassignableTopic::default()
                .with_name(topic_name("a"))
                .with_partitions(vec![
                    ReassignablePartition::default()
                        .with_partition_index(1)
                        .with_replicas(Some(vec![BrokerId(2), BrokerId(3)])),
                    ReassignablePartition::default().with_partition_index(0),
                ]),
            ReassignableTopic::default()
                .with_name(topic_name("b"))
                .with_partitions(vec![ReassignablePartition::default()
                    .with_partition_index(4)
                    .with_replicas(Some(vec![BrokerId(9)]))]),
        ]);
        let specs = specs(&request);
        assert_eq!(
            specs,
            vec![
                ReassignmentSpec {
                    topic: "a".into(),
                    partition: 1,
                    target: Some(vec![2, 3])
                },
                ReassignmentSpec {
                    topic: "a".into(),
                    partition: 0,
                    target: None
                },
                ReassignmentSpec {
                    topic: "b".into(),
                    partition: 4,
                    target: Some(vec![9])
                },
            ]
        );
        let refused = |code: ResponseError, message: &str| {
            Err((code.code(), Some(StrBytes::from_string(message.into()))))
        };
        let response = answered(
            &specs,
            vec![
                Ok(()),
                refused(ResponseError::NoReassignmentInProgress, "none"),
                refused(ResponseError::InvalidReplicaAssignment, "broker 9"),
            ],
        );
        let outcomes: Vec<(String, i32, i16)> = response
            .responses
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.0.to_string(), p.partition_index, p.error_code))
            })
            .collect();
        assert_eq!(
            outcomes,
            vec![
                ("a".into(), 1, 0),
                (
                    "a".into(),
                    0,
                    ResponseError::NoReassignmentInProgress.code()
                ),
                (
                    "b".into(),
                    4,
                    ResponseError::InvalidReplicaAssignment.code()
                ),
            ]
        );
        assert_eq!(response.error_code, 0);
    }

    #[tokio::test]
    async fn the_moves_are_forwarded_and_each_partition_answered_with_the_flag_from_v1() {
        use kafka_protocol::messages::alter_partition_reassignments_response::{
            ReassignablePartitionResponse, ReassignableTopicResponse,
        };
        use skald_controller::TopicError;

        use crate::api::controller_handle::CannedController;

        let request = AlterPartitionReassignmentsRequest::default()
            .with_allow_replication_factor_change(false)
            .with_topics(vec![ReassignableTopic::default()
                .with_name(topic_name("orders"))
                .with_partitions(vec![
                    ReassignablePartition::default()
                        .with_partition_index(0)
                        .with_replicas(Some(vec![BrokerId(2), BrokerId(3)])),
                    ReassignablePartition::default()
                        .with_partition_index(1)
                        .with_replicas(None),
                ])]);
        let reply = || {
            Ok(ControllerReply::AlterPartitionReassignments(vec![
                Ok(()),
                Err(TopicError::NoReassignmentInProgress),
            ]))
        };
        let controller = CannedController::new(vec![reply(), reply()]);
        let answer = AlterPartitionReassignmentsResponse::default()
            .with_error_message(None)
            .with_responses(vec![ReassignableTopicResponse::default()
                .with_name(topic_name("orders"))
                .with_partitions(vec![
                    ReassignablePartitionResponse::default()
                        .with_partition_index(0)
                        .with_error_message(None),
                    ReassignablePartitionResponse::default()
                        .with_partition_index(1)
                        .with_error_code(ResponseError::NoReassignmentInProgress.code())
                        .with_error_message(Some(StrBytes::from_string(
                            TopicError::NoReassignmentInProgress.to_string(),
                        ))),
                ])]);
        assert_eq!(
            handle(&controller, request.clone(), 1).await,
            answer.clone().with_allow_replication_factor_change(false)
        );
        // v0 has no flag in its response: the default stays.
        assert_eq!(handle(&controller, request, 0).await, answer);
        let forwarded = ControllerOp::AlterPartitionReassignments {
            partitions: vec![
                ReassignmentSpec {
                    topic: "orders".into(),
                    partition: 0,
                    target: Some(vec![2, 3]),
                },
                ReassignmentSpec {
                    topic: "orders".into(),
                    partition: 1,
                    target: None,
                },
            ],
            allow_replication_factor_change: false,
        };
        assert_eq!(controller.take_ops(), vec![forwarded.clone(), forwarded]);
    }
}
