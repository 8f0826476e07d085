//! OffsetCommit: checked against the group's membership (generation, member id, static instance),
//! then appended to the group's `__consumer_offsets` partition, and acknowledged and made visible
//! only once that partition's ISR has it (Kafka's `offsets.commit.required.acks=-1`), so a
//! coordinator failover keeps every acknowledged commit.
//! Generation -1 with no member id is a "simple" commit (a consumer using assign()), accepted while
//! the group has no members. Partitions of unknown topics get UNKNOWN_TOPIC_OR_PARTITION.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use tokio::time::Instant;

use crate::group::{lock, CommittedOffset, GroupsHandle, OFFSET_METADATA_MAX_BYTES};

pub async fn handle(groups: GroupsHandle<'_>, body: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = body.group_id.0.to_string();
    let coordinator = groups.coordinator;
    // (topic index, partition index) → error, filled as decided.
    let mut errors: Vec<Vec<Option<ResponseError>>> = body
        .topics
        .iter()
        .map(|topic| vec![None; topic.partitions.len()])
        .collect();
    let group_error = if group_id.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        groups.check_coordinator(&group_id)
    };
    let now_ms = coordinator.now_ms();
    let outcome = group_error.and_then(|()| {
        let group = match coordinator.group(&group_id) {
            Some(group) => group,
            None if body.generation_id_or_member_epoch < 0 => {
                coordinator.group_or_create(&group_id)
            }
            None => return Err(ResponseError::IllegalGeneration),
        };
        // The append happens under the group's lock, so the log holds one group's commits in
        // the order they were checked.
        let appended = tokio::task::block_in_place(|| {
            let mut group = lock(&group);
            group.validate_commit(
                &body.member_id,
                body.group_instance_id.as_deref(),
                body.generation_id_or_member_epoch,
                now_ms,
            )?;
            let mut changes = Vec::new();
            for (t, topic) in body.topics.iter().enumerate() {
                for (p, partition) in topic.partitions.iter().enumerate() {
                    let metadata = partition
                        .committed_metadata
                        .as_deref()
                        .unwrap_or_default()
                        .to_string();
                    if !groups.partition_exists(&topic.name, partition.partition_index) {
                        errors[t][p] = Some(ResponseError::UnknownTopicOrPartition);
                    } else if metadata.len() > OFFSET_METADATA_MAX_BYTES {
                        errors[t][p] = Some(ResponseError::OffsetMetadataTooLarge);
                    } else {
                        changes.push((
                            topic.name.to_string(),
                            partition.partition_index,
                            Some(CommittedOffset {
                                offset: partition.committed_offset,
                                leader_epoch: partition.committed_leader_epoch,
                                metadata,
                                commit_timestamp_ms: now_ms,
                            }),
                        ));
                    }
                }
            }
            let wait = groups.append_offsets(&group_id, &changes)?;
            Ok((changes, wait))
        })?;
        Ok((group, appended))
    });
    let outcome = match outcome {
        Ok((group, (changes, wait))) => {
            let timeout = Duration::from_millis(coordinator.config.offsets_commit_timeout_ms);
            let replicated = match wait {
                Some(wait) => wait
                    .until_replicated(Instant::now() + timeout)
                    .await
                    .map_err(commit_error),
                None => Ok(()),
            };
            replicated.map(|()| {
                let mut group = lock(&group);
                for (topic, index, offset) in changes {
                    if let Some(offset) = offset {
                        group.offsets.insert((topic, index), offset);
                    }
                }
            })
        }
        Err(error) => Err(error),
    };
    let topics = body
        .topics
        .into_iter()
        .zip(errors)
        .map(|(topic, errors)| {
            let partitions = topic
                .partitions
                .iter()
                .zip(errors)
                .map(|(partition, error)| {
                    let error = outcome.err().or(error);
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(error.map_or(0, |error| error.code()))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// Kafka's mapping of a failed offsets append (`GroupMetadataManager.storeOffsets`): the client
/// retries a coordinator that is not available, and looks the coordinator up again after
/// NOT_COORDINATOR.
fn commit_error(error: ResponseError) -> ResponseError {
    match error {
        ResponseError::NotEnoughReplicas
        | ResponseError::NotEnoughReplicasAfterAppend
        | ResponseError::RequestTimedOut => ResponseError::CoordinatorNotAvailable,
        ResponseError::NotLeaderOrFollower | ResponseError::KafkaStorageError => {
            ResponseError::NotCoordinator
        }
        other => other,
    }
}
