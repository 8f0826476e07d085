//! AlterPartition (API key 56) as it crosses the controller listener: Kafka's request and response
//! to and from the controller's own types, and its errors to and from Kafka's codes. Pure
//! conversions; the server's handler and the brokers' client both use them.
//!
//! Requests are grouped by topic on the wire and flat in the controller (one [`IsrChange`] per
//! partition, in request order); responses follow the request's order exactly, so a reply is
//! matched to its request by position.

use kafka_protocol::messages::alter_partition_request::{BrokerState, PartitionData, TopicData};
use kafka_protocol::messages::alter_partition_response::{
    PartitionData as PartitionResult, TopicData as TopicResult,
};
use kafka_protocol::messages::{AlterPartitionRequest, AlterPartitionResponse, BrokerId};
use kafka_protocol::ResponseError;
use skald_controller::alter_partition::UNKNOWN_BROKER_EPOCH;
use skald_controller::{
    AlterPartitionError, AlterPartitionRequest as Request, IsrChange, IsrMember, PartitionOutcome,
    PartitionState, TopicId,
};

use crate::metadata::ControlError;

/// The version brokers send: the newest, whose ISR members carry their broker epochs.
pub const VERSION: i16 = 3;

/// The Kafka error code of a refused change.
pub fn error_code(error: AlterPartitionError) -> i16 {
    use AlterPartitionError::*;
    match error {
        UnknownTopicId => ResponseError::UnknownTopicId,
        UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        NotController => ResponseError::NotController,
        FencedLeaderEpoch => ResponseError::FencedLeaderEpoch,
        InvalidRequest => ResponseError::InvalidRequest,
        InvalidUpdateVersion => ResponseError::InvalidUpdateVersion,
        IneligibleReplica => ResponseError::IneligibleReplica,
    }
    .code()
}

/// The refusal a Kafka error code stands for, if it is one a controller sends per partition.
pub fn error_from_code(code: i16) -> Option<AlterPartitionError> {
    use AlterPartitionError::*;
    [
        UnknownTopicId,
        UnknownTopicOrPartition,
        NotController,
        FencedLeaderEpoch,
        InvalidRequest,
        InvalidUpdateVersion,
        IneligibleReplica,
    ]
    .into_iter()
    .find(|error| error_code(*error) == code)
}

/// The controller's view of a request received at `version` (2: ISR ids only, whose epochs are
/// then not checked; 3: ids with broker epochs).
pub fn request_from_wire(request: &AlterPartitionRequest, version: i16) -> Request {
    let partitions = request
        .topics
        .iter()
        .flat_map(|topic| {
            let topic_id = TopicId(topic.topic_id.as_u128());
            topic.partitions.iter().map(move |partition| IsrChange {
                topic_id,
                partition: partition.partition_index,
                leader_epoch: partition.leader_epoch,
                partition_epoch: partition.partition_epoch,
                new_isr: if version >= 3 {
                    partition
                        .new_isr_with_epochs
                        .iter()
                        .map(|member| IsrMember {
                            broker_id: member.broker_id.0,
                            broker_epoch: member.broker_epoch,
                        })
                        .collect()
                } else {
                    partition
                        .new_isr
                        .iter()
                        .map(|id| IsrMember {
                            broker_id: id.0,
                            broker_epoch: UNKNOWN_BROKER_EPOCH,
                        })
                        .collect()
                },
                leader_recovery_state: partition.leader_recovery_state,
            })
        })
        .collect();
    Request {
        broker_id: request.broker_id.0,
        broker_epoch: request.broker_epoch,
        partitions,
    }
}

/// The request a broker sends at [`VERSION`]: consecutive changes of one topic share its entry.
pub fn request_to_wire(request: &Request) -> AlterPartitionRequest {
    let mut topics: Vec<TopicData> = Vec::new();
    for change in &request.partitions {
        let partition = PartitionData::default()
            .with_partition_index(change.partition)
            .with_leader_epoch(change.leader_epoch)
            .with_partition_epoch(change.partition_epoch)
            .with_leader_recovery_state(change.leader_recovery_state)
            .with_new_isr_with_epochs(
                change
                    .new_isr
                    .iter()
                    .map(|member| {
                        BrokerState::default()
                            .with_broker_id(BrokerId(member.broker_id))
                            .with_broker_epoch(member.broker_epoch)
                    })
                    .collect(),
            );
        let topic_id = uuid::Uuid::from_u128(change.topic_id.0);
        match topics.last_mut() {
            Some(topic) if topic.topic_id == topic_id => topic.partitions.push(partition),
            _ => topics.push(
                TopicData::default()
                    .with_topic_id(topic_id)
                    .with_partitions(vec![partition]),
            ),
        }
    }
    AlterPartitionRequest::default()
        .with_broker_id(BrokerId(request.broker_id))
        .with_broker_epoch(request.broker_epoch)
        .with_topics(topics)
}

/// The response to `request`: each partition's outcome in its place, or only the top-level error
/// when the whole request failed (Kafka's error response).
pub fn response_to_wire(
    request: &AlterPartitionRequest,
    outcome: Result<Vec<PartitionOutcome>, ControlError>,
) -> AlterPartitionResponse {
    let outcomes = match outcome {
        Ok(outcomes) => outcomes,
        Err(err) => return AlterPartitionResponse::default().with_error_code(err.code()),
    };
    let mut outcomes = outcomes.into_iter();
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let result =
                        PartitionResult::default().with_partition_index(partition.partition_index);
                    match outcomes.next() {
                        Some(Ok(state)) => result
                            .with_leader_id(BrokerId(state.leader))
                            .with_leader_epoch(state.leader_epoch)
                            .with_isr(state.isr.into_iter().map(BrokerId).collect())
                            .with_partition_epoch(state.partition_epoch),
                        Some(Err(error)) => result.with_error_code(error_code(error)),
                        None => result.with_error_code(ResponseError::UnknownServerError.code()),
                    }
                })
                .collect();
            TopicResult::default()
                .with_topic_id(topic.topic_id)
                .with_partitions(partitions)
        })
        .collect();
    AlterPartitionResponse::default().with_topics(topics)
}

/// Each partition's outcome from a controller's response to `request`, in request order. A
/// response that does not answer exactly the partitions asked about, or answers with an error
/// code no controller sends per partition, is an error.
pub fn response_from_wire(
    request: &Request,
    response: &AlterPartitionResponse,
) -> Result<Vec<PartitionOutcome>, String> {
    let answered: Vec<(TopicId, &PartitionResult)> = response
        .topics
        .iter()
        .flat_map(|topic| {
            let topic_id = TopicId(topic.topic_id.as_u128());
            topic.partitions.iter().map(move |p| (topic_id, p))
        })
        .collect();
    if answered.len() != request.partitions.len() {
        return Err(format!(
            "AlterPartition response answers {} partitions, not {}",
            answered.len(),
            request.partitions.len()
        ));
    }
    request
        .partitions
        .iter()
        .zip(answered)
        .map(|(asked, (topic_id, result))| {
            if (topic_id, result.partition_index) != (asked.topic_id, asked.partition) {
                return Err(format!(
                    "AlterPartition response answers {topic_id}-{} in place of {}-{}",
                    result.partition_index, asked.topic_id, asked.partition
                ));
            }
            match result.error_code {
                0 => Ok(Ok(PartitionState {
                    leader: result.leader_id.0,
                    leader_epoch: result.leader_epoch,
                    isr: result.isr.iter().map(|id| id.0).collect(),
                    partition_epoch: result.partition_epoch,
                })),
                code => error_from_code(code).map(Err).ok_or_else(|| {
                    format!(
                        "AlterPartition error code {code} for {}-{}",
                        asked.topic_id, asked.partition
                    )
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(broker_id: i32, broker_epoch: i64) -> IsrMember {
        IsrMember {
            broker_id,
            broker_epoch,
        }
    }

    fn change(topic: u128, partition: i32, isr: Vec<IsrMember>) -> IsrChange {
        IsrChange {
            topic_id: TopicId(topic),
            partition,
            leader_epoch: 3,
            partition_epoch: 8 + partition,
            new_isr: isr,
            leader_recovery_state: 0,
        }
    }

    #[test]
    fn every_refusal_has_its_kafka_code_and_back() {
        use AlterPartitionError::*;
        let codes: Vec<(AlterPartitionError, i16)> = [
            UnknownTopicId,
            UnknownTopicOrPartition,
            NotController,
            FencedLeaderEpoch,
            InvalidRequest,
            InvalidUpdateVersion,
            IneligibleReplica,
        ]
        .into_iter()
        .map(|error| (error, error_code(error)))
        .collect();
        assert_eq!(
            codes,
            vec![
                (UnknownTopicId, 100),
                (UnknownTopicOrPartition, 3),
                (NotController, 41),
                (FencedLeaderEpoch, 74),
                (InvalidRequest, 42),
                (InvalidUpdateVersion, 95),
                (IneligibleReplica, 107),
            ]
        );
        for (error, code) in codes {
            assert_eq!(error_from_code(code), Some(error));
        }
        assert_eq!(error_from_code(0), None);
        assert_eq!(error_from_code(-1), None);
    }

    #[test]
    fn a_request_groups_consecutive_partitions_by_topic_and_reads_back_unchanged() {
        let request = Request {
            broker_id: 1,
            broker_epoch: 40,
            partitions: vec![
                change(7, 0, vec![member(1, 40), member(2, 41)]),
                change(7, 1, vec![member(1, 40)]),
                change(9, 0, vec![member(1, 40), member(3, -1)]),
                change(7, 2, vec![member(1, 40)]),
            ],
        };
        let wire = request_to_wire(&request);
        let layout: Vec<(u128, Vec<i32>)> = wire
            .topics
            .iter()
            .map(|t| {
                (
                    t.topic_id.as_u128(),
                    t.partitions.iter().map(|p| p.partition_index).collect(),
                )
            })
            .collect();
        assert_eq!(layout, vec![(7, vec![0, 1]), (9, vec![0]), (7, vec![2])]);
        assert_eq!(request_from_wire(&wire, 3), request);

        // v2 carries ids only: their epochs are unknown.
        let mut v2 = wire.clone();
        for partition in v2.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
            partition.new_isr = partition
                .new_isr_with_epochs
                .drain(..)
                .map(|m| m.broker_id)
                .collect();
        }
        let read = request_from_wire(&v2, 2);
        assert_eq!(
            read.partitions[0].new_isr,
            vec![member(1, -1), member(2, -1)]
        );
        assert_eq!(read.partitions[3].new_isr, vec![member(1, -1)]);
    }

    #[test]
    fn a_response_answers_each_partition_in_place_and_reads_back() {
        let request = Request {
            broker_id: 1,
            broker_epoch: 40,
            partitions: vec![
                change(7, 0, vec![member(1, 40)]),
                change(7, 1, vec![member(1, 40)]),
                change(9, 0, vec![member(1, 40)]),
            ],
        };
        let outcomes = vec![
            Ok(PartitionState {
                leader: 1,
                leader_epoch: 3,
                isr: vec![1],
                partition_epoch: 9,
            }),
            Err(AlterPartitionError::InvalidUpdateVersion),
            Err(AlterPartitionError::UnknownTopicId),
        ];
        let wire_request = request_to_wire(&request);
        let response = response_to_wire(&wire_request, Ok(outcomes.clone()));
        assert_eq!(response.error_code, 0);
        let second = &response.topics[0].partitions[1];
        assert_eq!((second.partition_index, second.error_code), (1, 95));
        assert_eq!(response_from_wire(&request, &response), Ok(outcomes));

        // The whole request refused: only the top-level code.
        let refused = response_to_wire(&wire_request, Err(ControlError::StaleBrokerEpoch));
        assert_eq!((refused.error_code, refused.topics.len()), (77, 0));
        assert_eq!(
            response_from_wire(&request, &refused),
            Err("AlterPartition response answers 0 partitions, not 3".into())
        );

        // Answers out of place or with codes no controller sends are refused.
        let mut swapped = response.clone();
        swapped.topics.swap(0, 1);
        assert!(response_from_wire(&request, &swapped).is_err());
        let mut odd = response;
        odd.topics[1].partitions[0].error_code = 1;
        assert_eq!(
            response_from_wire(&request, &odd),
            Err(format!("AlterPartition error code 1 for {}-0", TopicId(9)))
        );
    }
}
