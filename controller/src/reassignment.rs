//! Partition reassignment, Kafka's way (KIP-455 as KRaft's `ReplicationControlManager` runs it).
//!
//! A reassignment lives only in the partition's replicated metadata, so it survives a controller
//! failover: `replicas` becomes the target followed by the replicas being removed, and
//! `adding_replicas` / `removing_replicas` say which is which. The added replicas are ordinary
//! followers meanwhile: they catch up through the normal follower fetch path and the leader adds
//! them to the ISR by its normal ISR expansion (AlterPartition). When every target replica is in
//! the ISR, the change that put the last one there also completes the reassignment
//! ([`complete_if_ready`]): `replicas` becomes the target, the ISR loses the removed replicas, and
//! a removed leader hands leadership to the first live target replica in the ISR. Brokers drop
//! (and delete) their copy once the metadata no longer lists them. A cancel (a null target)
//! reverts to the original replicas.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::controller::{Controller, Planned, NO_LEADER};
use crate::election::is_live;
use crate::error::TopicError;
use crate::image::{MetadataImage, PartitionImage};
use crate::record::{MetadataRecord, TopicId};

/// The most partitions one AlterPartitionReassignments may name (Kafka's
/// `MAX_RECORDS_PER_USER_OP`); the rest are refused with INVALID_REQUEST.
pub const REASSIGNMENTS_PER_REQUEST_MAX: usize = 10_000;

/// One partition of an AlterPartitionReassignments request: its target replicas, or `None` to
/// cancel the reassignment in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReassignmentSpec {
    pub topic: String,
    pub partition: i32,
    pub target: Option<Vec<i32>>,
}

/// A reassignment in progress, as ListPartitionReassignments reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding_replicas: Vec<i32>,
    pub removing_replicas: Vec<i32>,
}

impl Controller {
    /// Plans an AlterPartitionReassignments request: each partition succeeds or fails on its own
    /// (nothing changes for a refused one), and the accepted changes commit together. A partition
    /// named twice is planned the second time against what the first left.
    pub fn alter_partition_reassignments(
        &self,
        image: &MetadataImage,
        specs: &[ReassignmentSpec],
        allow_replication_factor_change: bool,
    ) -> Planned<Vec<Result<(), TopicError>>> {
        let mut records = Vec::new();
        let mut changed: HashMap<(TopicId, i32), PartitionImage> = HashMap::new();
        let mut results = Vec::with_capacity(specs.len());
        for (index, spec) in specs.iter().enumerate() {
            if index >= REASSIGNMENTS_PER_REQUEST_MAX {
                results.push(Err(TopicError::InvalidRequest(format!(
                    "A single request may reassign at most {REASSIGNMENTS_PER_REQUEST_MAX} partitions."
                ))));
                continue;
            }
            let result = self
                .plan_reassignment(image, &changed, spec, allow_replication_factor_change)
                .map(|(topic_id, current, next)| {
                    records.extend(change_record(topic_id, spec.partition, &current, &next));
                    changed.insert((topic_id, spec.partition), next);
                });
            if let Err(err) = &result {
                tracing::info!(
                    topic = spec.topic,
                    partition = spec.partition,
                    "refusing partition reassignment: {err}"
                );
            }
            results.push(result);
        }
        Planned {
            records,
            reply: results,
        }
    }

    /// The partition's topic id and its state before and after the request (Kafka's
    /// `alterPartitionReassignment`).
    fn plan_reassignment(
        &self,
        image: &MetadataImage,
        changed: &HashMap<(TopicId, i32), PartitionImage>,
        spec: &ReassignmentSpec,
        allow_replication_factor_change: bool,
    ) -> Result<(TopicId, PartitionImage, PartitionImage), TopicError> {
        let topic = image
            .topic(&spec.topic)
            .ok_or(TopicError::UnknownTopicOrPartition)?;
        let current = changed
            .get(&(topic.topic_id, spec.partition))
            .or_else(|| topic.partitions.get(&spec.partition))
            .ok_or(TopicError::UnknownTopicOrPartition)?;
        let next = match &spec.target {
            None => {
                if !current.is_reassigning() {
                    return Err(TopicError::NoReassignmentInProgress);
                }
                revert(image, current).ok_or_else(|| {
                    TopicError::InvalidReplicaAssignment(format!(
                        "Unable to revert partition assignment for {}:{} because it would require an unclean leader election.",
                        spec.topic, spec.partition
                    ))
                })?
            }
            Some(target) => {
                validate_target(image, target)?;
                let current_factor = current.target_replicas().len();
                if !allow_replication_factor_change && target.len() != current_factor {
                    return Err(TopicError::InvalidReplicationFactor(format!(
                        "The replication factor is changed from {current_factor} to {} but allowReplicationFactorChange is false",
                        target.len()
                    )));
                }
                start(image, current, target)
            }
        };
        Ok((topic.topic_id, current.clone(), next))
    }

    /// Every reassignment in progress (Kafka's `listPartitionReassignments`): of the named
    /// partitions, or of every topic when `topics` is `None`. Unknown topics and partitions
    /// are left out, as Kafka does.
    pub fn list_partition_reassignments(
        image: &MetadataImage,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<OngoingReassignment> {
        let ongoing = |name: &str, partition: i32, state: &PartitionImage| {
            state.is_reassigning().then(|| OngoingReassignment {
                topic: name.to_string(),
                partition,
                replicas: state.replicas.clone(),
                adding_replicas: state.adding_replicas.clone(),
                removing_replicas: state.removing_replicas.clone(),
            })
        };
        match topics {
            None => image
                .topics
                .values()
                .flat_map(|topic| {
                    topic
                        .partitions
                        .iter()
                        .filter_map(|(partition, state)| ongoing(&topic.name, *partition, state))
                })
                .collect(),
            Some(topics) => topics
                .iter()
                .filter_map(|(name, partitions)| Some((image.topic(name)?, partitions)))
                .flat_map(|(topic, partitions)| {
                    partitions.iter().filter_map(|partition| {
                        ongoing(&topic.name, *partition, topic.partitions.get(partition)?)
                    })
                })
                .collect(),
        }
    }
}

/// Kafka's `validateManualPartitionAssignment`, with its messages.
fn validate_target(image: &MetadataImage, target: &[i32]) -> Result<(), TopicError> {
    if target.is_empty() {
        return Err(TopicError::InvalidReplicaAssignment(
            "The manual partition assignment includes an empty replica list.".into(),
        ));
    }
    let mut sorted = target.to_vec();
    sorted.sort_unstable();
    for (index, broker_id) in sorted.iter().enumerate() {
        if !image.brokers.contains_key(broker_id) {
            return Err(TopicError::InvalidReplicaAssignment(format!(
                "The manual partition assignment includes broker {broker_id}, but no such broker is registered."
            )));
        }
        if index > 0 && sorted[index - 1] == *broker_id {
            return Err(TopicError::InvalidReplicaAssignment(format!(
                "The manual partition assignment includes the broker {broker_id} more than once."
            )));
        }
    }
    Ok(())
}

/// Kafka's `PartitionReassignmentReplicas`: replicas = target followed by those removed; then
/// the reassignment completes at once if the ISR already allows (a reordering, a removal).
fn start(image: &MetadataImage, current: &PartitionImage, target: &[i32]) -> PartitionImage {
    let mut removing: Vec<i32> = current
        .replicas
        .iter()
        .copied()
        .filter(|id| !target.contains(id))
        .collect();
    removing.sort_unstable();
    let mut adding: Vec<i32> = target
        .iter()
        .copied()
        .filter(|id| !current.replicas.contains(id))
        .collect();
    adding.sort_unstable();
    let mut next = current.clone();
    next.replicas = target.iter().chain(&removing).copied().collect();
    next.removing_replicas = removing;
    next.adding_replicas = adding;
    complete_if_ready(image, &mut next);
    next
}

/// Kafka's `PartitionReassignmentRevert`: back to the original replicas, the ISR without the
/// added ones, and a new leader if an added replica led. `None` when no original replica is in
/// the ISR (reverting would need an unclean election, which Skald refuses).
fn revert(image: &MetadataImage, current: &PartitionImage) -> Option<PartitionImage> {
    let mut next = current.clone();
    next.replicas = current.original_replicas();
    next.isr = current
        .isr
        .iter()
        .copied()
        .filter(|id| !current.adding_replicas.contains(id))
        .collect();
    if next.isr.is_empty() {
        return None;
    }
    next.removing_replicas.clear();
    next.adding_replicas.clear();
    elect_if_needed(image, &mut next);
    Some(next)
}

/// Kafka's `maybeCompleteReassignment`, applied to a partition's next state (its ISR as a
/// change leaves it): once every target replica is in the ISR, replicas become the target, the
/// ISR loses the removed replicas and the reassignment fields clear; a leader no longer among
/// the replicas gives way to the first live target replica in the ISR.
pub(crate) fn complete_if_ready(image: &MetadataImage, next: &mut PartitionImage) {
    if !next.is_reassigning() {
        return;
    }
    let isr: Vec<i32> = next
        .isr
        .iter()
        .copied()
        .filter(|id| !next.removing_replicas.contains(id))
        .collect();
    let replicas = next.target_replicas();
    if isr.is_empty() || replicas.is_empty() || !replicas.iter().all(|id| isr.contains(id)) {
        return;
    }
    next.replicas = replicas;
    next.isr = isr;
    next.removing_replicas.clear();
    next.adding_replicas.clear();
    elect_if_needed(image, next);
}

/// A leader that is no longer a replica in the ISR gives way to the first live replica that is
/// (Kafka's default election); with none, the partition is offline.
fn elect_if_needed(image: &MetadataImage, next: &mut PartitionImage) {
    if next.replicas.contains(&next.leader) && next.isr.contains(&next.leader) {
        return;
    }
    next.leader = next
        .replicas
        .iter()
        .copied()
        .find(|id| next.isr.contains(id) && is_live(image, *id))
        .unwrap_or(NO_LEADER);
}

/// The `PartitionChange` that takes a partition from `current` to `next` (only the fields that
/// differ), or `None` when nothing does.
pub(crate) fn change_record(
    topic_id: TopicId,
    partition: i32,
    current: &PartitionImage,
    next: &PartitionImage,
) -> Option<MetadataRecord> {
    let differs = |a: &Vec<i32>, b: &Vec<i32>| (a != b).then(|| b.clone());
    let record = MetadataRecord::PartitionChange {
        topic_id,
        partition,
        leader: (current.leader != next.leader).then_some(next.leader),
        isr: differs(&current.isr, &next.isr),
        replicas: differs(&current.replicas, &next.replicas),
        removing_replicas: differs(&current.removing_replicas, &next.removing_replicas),
        adding_replicas: differs(&current.adding_replicas, &next.adding_replicas),
    };
    let unchanged = current.leader == next.leader
        && current.isr == next.isr
        && current.replicas == next.replicas
        && current.removing_replicas == next.removing_replicas
        && current.adding_replicas == next.adding_replicas;
    (!unchanged).then_some(record)
}

#[cfg(test)]
mod tests;
