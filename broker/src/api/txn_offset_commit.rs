//! TxnOffsetCommit: a group's offsets committed inside a producer's transaction, sent to the
//! group's coordinator after AddOffsetsToTxn. They are appended as the producer's transactional
//! batch and stay invisible until its COMMIT marker (see `group::txn_offsets`).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use tokio::time::Instant;

use crate::broker::Broker;
use crate::group::CommittedOffset;

pub async fn handle(broker: &Arc<Broker>, body: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let image = broker.image();
    let group_id = body.group_id.0.to_string();
    let now_ms = broker.groups.now_ms();
    let mut offsets = Vec::new();
    let mut unknown = Vec::new();
    for topic in &body.topics {
        let known = image.topic(&topic.name);
        for partition in &topic.partitions {
            if known.is_some_and(|t| t.partitions.contains_key(&partition.partition_index)) {
                offsets.push((
                    topic.name.to_string(),
                    partition.partition_index,
                    CommittedOffset {
                        offset: partition.committed_offset,
                        leader_epoch: partition.committed_leader_epoch,
                        metadata: partition
                            .committed_metadata
                            .as_deref()
                            .unwrap_or_default()
                            .to_string(),
                        commit_timestamp_ms: now_ms,
                    },
                ));
            } else {
                unknown.push((topic.name.to_string(), partition.partition_index));
            }
        }
    }
    let outcome = commit(broker, &image, &group_id, &body, offsets).await;
    let topics = body
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let error =
                        if unknown.contains(&(topic.name.to_string(), partition.partition_index)) {
                            Some(ResponseError::UnknownTopicOrPartition)
                        } else {
                            outcome.err()
                        };
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(error.map_or(0, |e| e.code()))
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

async fn commit(
    broker: &Arc<Broker>,
    image: &skald_controller::MetadataImage,
    group_id: &str,
    body: &TxnOffsetCommitRequest,
    offsets: Vec<(String, i32, CommittedOffset)>,
) -> Result<(), ResponseError> {
    if group_id.is_empty() {
        return Err(ResponseError::InvalidGroupId);
    }
    broker
        .groups
        .check_coordinator(image, &broker.replicas, group_id)?;
    if offsets.is_empty() {
        return Ok(());
    }
    let wait = tokio::task::block_in_place(|| {
        broker.groups.append_txn_offsets(
            &broker.replicas,
            group_id,
            body.producer_id.0,
            body.producer_epoch,
            &offsets,
        )
    })?;
    let timeout = Duration::from_millis(broker.groups.config.offsets_commit_timeout_ms);
    wait.until_replicated(Instant::now() + timeout)
        .await
        .map_err(|error| match error {
            ResponseError::NotLeaderOrFollower => ResponseError::NotCoordinator,
            ResponseError::NotEnoughReplicas | ResponseError::NotEnoughReplicasAfterAppend => {
                ResponseError::CoordinatorNotAvailable
            }
            other => other,
        })?;
    broker
        .groups
        .add_pending_txn_offsets(group_id, body.producer_id.0, offsets);
    Ok(())
}
