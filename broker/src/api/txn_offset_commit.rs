//! TxnOffsetCommit: a group's offsets committed inside a producer's transaction, sent to the
//! group's coordinator after AddOffsetsToTxn (v5, transactions version 2: without it, the
//! coordinator adding the offsets partition itself). They are appended as the producer's transactional
//! batch and stay invisible until its COMMIT marker (see `group::txn_offsets`).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use tokio::time::Instant;

use skald_controller::names::CONSUMER_OFFSETS_TOPIC;

use crate::broker::Broker;
use crate::group::CommittedOffset;
use skald_storage::TxnVerification;

/// First version of transactions version 2 (KIP-890).
const TRANSACTIONS_V2_SINCE: i16 = 5;

pub async fn handle(
    broker: &Arc<Broker>,
    body: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
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
    let outcome = commit(broker, &group_id, &body, version, offsets).await;
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
    group_id: &str,
    body: &TxnOffsetCommitRequest,
    version: i16,
    offsets: Vec<(String, i32, CommittedOffset)>,
) -> Result<(), ResponseError> {
    if group_id.is_empty() {
        return Err(ResponseError::InvalidGroupId);
    }
    broker.groups.check_coordinator(&**broker, group_id)?;
    // Kafka's `validateOffsetCommit` for transactional commits (KIP-447): a producer that names
    // its consumer's generation, member or instance (v3+) must be a current member — how a
    // zombie whose partitions moved on is fenced. Without them (v0–2, or a producer that only
    // stores offsets) the commit is accepted whatever the group's state.
    let identified =
        body.generation_id >= 0 || !body.member_id.is_empty() || body.group_instance_id.is_some();
    if identified {
        let group = broker
            .groups
            .group(group_id)
            .ok_or(ResponseError::IllegalGeneration)?;
        let now_ms = broker.groups.now_ms();
        crate::group::lock(&group).validate_commit(
            &body.member_id,
            body.group_instance_id.as_deref(),
            body.generation_id,
            now_ms,
        )?;
    }
    if offsets.is_empty() {
        return Ok(());
    }
    // KIP-890: the group's offsets partition must be in the transaction — added here for a v5+
    // commit (transactions version 2: the producer sends no AddOffsetsToTxn), verified before.
    let add = version >= TRANSACTIONS_V2_SINCE && broker.txns.config.transaction_version >= 2;
    let mut verification = TxnVerification::Off;
    if add || broker.txns.config.partition_verification {
        // The guard comes before the question, so a marker that ends the transaction between
        // the coordinator's answer and the append voids it and the append is refused.
        let guard = tokio::task::block_in_place(|| {
            broker.groups.start_offsets_verification(
                &broker.replicas,
                group_id,
                body.producer_id.0,
                body.producer_epoch,
            )
        });
        verification = TxnVerification::Guard(guard);
        let offsets_partition = (
            CONSUMER_OFFSETS_TOPIC.to_owned(),
            broker.groups.partition_for(group_id),
        );
        let answer = broker
            .txn_verifier
            .verify(
                broker,
                &body.transactional_id,
                body.producer_id.0,
                body.producer_epoch,
                &[offsets_partition],
                add,
            )
            .await;
        if let Some(error) = answer.into_iter().flatten().next() {
            // Produce's retriable stand-in is not a TxnOffsetCommit error; this one is.
            return Err(match error {
                ResponseError::NotEnoughReplicas => ResponseError::CoordinatorLoadInProgress,
                other => other,
            });
        }
    }
    let wait = tokio::task::block_in_place(|| {
        broker.groups.append_txn_offsets(
            &broker.replicas,
            group_id,
            body.producer_id.0,
            body.producer_epoch,
            &offsets,
            verification,
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
    Ok(())
}
