//! AlterPartition: a partition leader asks the controller to change its ISR (KRaft's
//! `ReplicationControlManager.alterPartition`). The controller owns the ISR, so a leader's shrink
//! or expansion counts only once the `PartitionChange` it plans here has committed.
//!
//! The checks run in Kafka's order, each with Kafka's error: the requester's broker epoch for the
//! whole request (STALE_BROKER_EPOCH), then per partition the topic id (UNKNOWN_TOPIC_ID), the
//! partition (UNKNOWN_TOPIC_OR_PARTITION), epochs newer than the controller's own
//! (NOT_CONTROLLER: it is behind, and the leader should find the current controller), an older
//! leader epoch (FENCED_LEADER_EPOCH), a requester that is not the leader (INVALID_REQUEST), an
//! older partition epoch (INVALID_UPDATE_VERSION), an ISR that is not a set of replicas or lacks
//! the leader (INVALID_REQUEST), the leader recovery state (INVALID_REQUEST), and members that are
//! unregistered, fenced or of another broker epoch (INELIGIBLE_REPLICA).

use std::collections::HashMap;

use crate::controller::{Controller, Planned};
use crate::election::is_live;
use crate::image::{MetadataImage, PartitionImage};
use crate::reassignment::{change_record, complete_if_ready};
use crate::record::TopicId;

/// An ISR member's broker epoch when the request does not say (AlterPartition v2): not checked.
pub const UNKNOWN_BROKER_EPOCH: i64 = -1;

/// Kafka's LeaderRecoveryState RECOVERED. Skald's elections never leave a partition RECOVERING
/// (it does not track recovery), so every partition is RECOVERED.
pub const LEADER_RECOVERED: i8 = 0;
/// Kafka's LeaderRecoveryState RECOVERING.
pub const LEADER_RECOVERING: i8 = 1;

/// A broker in a proposed ISR, with the epoch the leader knows it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsrMember {
    pub broker_id: i32,
    /// [`UNKNOWN_BROKER_EPOCH`] skips the check.
    pub broker_epoch: i64,
}

/// One partition's ISR change, as its leader asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub topic_id: TopicId,
    pub partition: i32,
    /// The leader epoch the leader leads with.
    pub leader_epoch: i32,
    /// The partition epoch of the state the change was computed from.
    pub partition_epoch: i32,
    pub new_isr: Vec<IsrMember>,
    /// [`LEADER_RECOVERED`] or [`LEADER_RECOVERING`].
    pub leader_recovery_state: i8,
}

/// An AlterPartition request: the requesting broker, and its changes in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionRequest {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub partitions: Vec<IsrChange>,
}

/// A partition's state after an accepted change (or unchanged), as the reply reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
}

impl From<&PartitionImage> for PartitionState {
    fn from(partition: &PartitionImage) -> Self {
        PartitionState {
            leader: partition.leader,
            leader_epoch: partition.leader_epoch,
            isr: partition.isr.clone(),
            partition_epoch: partition.partition_epoch,
        }
    }
}

/// Why one partition's change was refused. The broker maps each to the Kafka error of the same
/// name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AlterPartitionError {
    #[error("This server does not host this topic ID.")]
    UnknownTopicId,
    #[error("This server does not host this topic-partition.")]
    UnknownTopicOrPartition,
    #[error("This is not the correct controller for this cluster.")]
    NotController,
    #[error("The leader epoch in the request is older than the epoch on the broker.")]
    FencedLeaderEpoch,
    #[error("This most likely occurs because of a request being malformed by the client library or the message was sent to an incompatible broker. See the broker logs for more details.")]
    InvalidRequest,
    #[error("The given update version was invalid.")]
    InvalidUpdateVersion,
    #[error("The new ISR contains at least one ineligible replica.")]
    IneligibleReplica,
}

/// The whole request was refused: the requester is not registered with that broker epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("The broker epoch is stale: the broker must register again.")]
pub struct StaleBrokerEpoch;

/// One partition's outcome: its state after the change, or why the change was refused.
pub type PartitionOutcome = Result<PartitionState, AlterPartitionError>;

/// Each partition's outcome, in request order.
pub type AlterPartitionReply = Result<Vec<PartitionOutcome>, StaleBrokerEpoch>;

impl Controller {
    /// Plans an AlterPartition request: a `PartitionChange { isr }` for every accepted change that
    /// changes the ISR, and each partition's outcome. A partition named twice is checked the
    /// second time against the state the first change leaves it in.
    pub fn alter_partition(
        &self,
        image: &MetadataImage,
        request: &AlterPartitionRequest,
    ) -> Planned<AlterPartitionReply> {
        let registered = image
            .brokers
            .get(&request.broker_id)
            .is_some_and(|broker| broker.broker_epoch == request.broker_epoch);
        if !registered {
            tracing::info!(
                broker_id = request.broker_id,
                broker_epoch = request.broker_epoch,
                "refusing AlterPartition from a stale broker epoch"
            );
            return Planned {
                records: Vec::new(),
                reply: Err(StaleBrokerEpoch),
            };
        }
        let mut records = Vec::new();
        let mut changed: HashMap<(TopicId, i32), PartitionImage> = HashMap::new();
        let mut results = Vec::with_capacity(request.partitions.len());
        for change in &request.partitions {
            let key = (change.topic_id, change.partition);
            let Some(topic) = image.topic_by_id(change.topic_id) else {
                results.push(Err(AlterPartitionError::UnknownTopicId));
                continue;
            };
            let Some(current) = changed
                .get(&key)
                .or_else(|| topic.partitions.get(&change.partition))
            else {
                results.push(Err(AlterPartitionError::UnknownTopicOrPartition));
                continue;
            };
            if let Err((error, reason)) = check(image, request.broker_id, current, change) {
                tracing::info!(
                    broker_id = request.broker_id,
                    topic = topic.name,
                    partition = change.partition,
                    "refusing AlterPartition ({error:?}): {reason}"
                );
                results.push(Err(error));
                continue;
            }
            let new_isr: Vec<i32> = change.new_isr.iter().map(|m| m.broker_id).collect();
            if new_isr == current.isr {
                results.push(Ok(PartitionState::from(current)));
                continue;
            }
            // The expansion that brings the last target replica into the ISR also completes
            // a reassignment in progress (Kafka's PartitionChangeBuilder does both at once).
            let mut planned = current.clone();
            planned.isr = new_isr.clone();
            complete_if_ready(image, &mut planned);
            tracing::debug!(
                broker_id = request.broker_id,
                topic = topic.name,
                partition = change.partition,
                "ISR {:?} -> {:?}",
                current.isr,
                planned.isr
            );
            let mut next = current.clone();
            if let Some(record) =
                change_record(change.topic_id, change.partition, current, &planned)
            {
                next.apply_record(&record);
                records.push(record);
            }
            results.push(Ok(PartitionState::from(&next)));
            changed.insert(key, next);
        }
        Planned {
            records,
            reply: Ok(results),
        }
    }
}

/// Kafka's `validateAlterPartitionData`, in its order: the error and why.
fn check(
    image: &MetadataImage,
    broker_id: i32,
    current: &PartitionImage,
    change: &IsrChange,
) -> Result<(), (AlterPartitionError, String)> {
    use AlterPartitionError::*;
    if change.leader_epoch > current.leader_epoch {
        return Err((
            NotController,
            format!(
                "leader epoch {} is newer than this controller's {}",
                change.leader_epoch, current.leader_epoch
            ),
        ));
    }
    if change.partition_epoch > current.partition_epoch {
        return Err((
            NotController,
            format!(
                "partition epoch {} is newer than this controller's {}",
                change.partition_epoch, current.partition_epoch
            ),
        ));
    }
    if change.leader_epoch < current.leader_epoch {
        return Err((
            FencedLeaderEpoch,
            format!(
                "the leader epoch is {}, not {}",
                current.leader_epoch, change.leader_epoch
            ),
        ));
    }
    if broker_id != current.leader {
        return Err((
            InvalidRequest,
            format!("the leader is {}, not {broker_id}", current.leader),
        ));
    }
    if change.partition_epoch < current.partition_epoch {
        return Err((
            InvalidUpdateVersion,
            format!(
                "the partition epoch is {}, not {}",
                current.partition_epoch, change.partition_epoch
            ),
        ));
    }
    let new_isr: Vec<i32> = change.new_isr.iter().map(|m| m.broker_id).collect();
    let mut distinct = new_isr.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != new_isr.len() || !new_isr.iter().all(|id| current.replicas.contains(id)) {
        return Err((
            InvalidRequest,
            format!(
                "ISR {new_isr:?} is not a set of the replicas {:?}",
                current.replicas
            ),
        ));
    }
    if !new_isr.contains(&current.leader) {
        return Err((
            InvalidRequest,
            format!("ISR {new_isr:?} does not include the leader"),
        ));
    }
    match change.leader_recovery_state {
        LEADER_RECOVERED => {}
        LEADER_RECOVERING if new_isr.len() > 1 => {
            return Err((
                InvalidRequest,
                format!("ISR {new_isr:?} has more than the leader while it recovers"),
            ))
        }
        LEADER_RECOVERING => {
            return Err((
                InvalidRequest,
                "the leader recovery state cannot change from RECOVERED to RECOVERING".into(),
            ))
        }
        other => {
            return Err((
                InvalidRequest,
                format!("unknown leader recovery state {other}"),
            ))
        }
    }
    let ineligible: Vec<String> = change
        .new_isr
        .iter()
        .filter_map(|member| match image.brokers.get(&member.broker_id) {
            None => Some(format!("{} is not registered", member.broker_id)),
            Some(_) if !is_live(image, member.broker_id) => {
                Some(format!("{} is fenced", member.broker_id))
            }
            Some(broker)
                if member.broker_epoch != UNKNOWN_BROKER_EPOCH
                    && member.broker_epoch != broker.broker_epoch =>
            {
                Some(format!(
                    "{} has broker epoch {}, not {}",
                    member.broker_id, broker.broker_epoch, member.broker_epoch
                ))
            }
            Some(_) => None,
        })
        .collect();
    if !ineligible.is_empty() {
        return Err((IneligibleReplica, ineligible.join(", ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::AlterPartitionError::*;
    use super::*;
    use crate::controller::testing::{manual, Harness};
    use crate::controller::NO_LEADER;
    use crate::record::MetadataRecord;

    /// Brokers 1-3 live; "orders" partition 0 on [1, 2, 3] led by 1, partition 1 on [2, 3, 1]
    /// led by 2; then partition 0's ISR shrunk to [1, 2] (leader epoch 0, partition epoch 1).
    fn cluster() -> (Harness, TopicId) {
        let mut h = Harness::new();
        h.register(2);
        h.register(3);
        h.run(|c, i| {
            c.create_topics(
                i,
                &[manual(
                    "orders",
                    vec![(0, vec![1, 2, 3]), (1, vec![2, 3, 1])],
                )],
                false,
            )
        });
        let orders = h.image().topic("orders").unwrap().topic_id;
        h.change(orders, 0, None, Some(vec![1, 2]));
        (h, orders)
    }

    fn epoch(h: &Harness, broker_id: i32) -> i64 {
        h.image().brokers[&broker_id].broker_epoch
    }

    fn members(h: &Harness, ids: &[i32]) -> Vec<IsrMember> {
        ids.iter()
            .map(|&broker_id| IsrMember {
                broker_id,
                broker_epoch: epoch(h, broker_id),
            })
            .collect()
    }

    /// Partition 0 of `topic_id` at leader epoch 0, partition epoch 1, going to `isr`.
    fn change(topic_id: TopicId, isr: Vec<IsrMember>) -> IsrChange {
        IsrChange {
            topic_id,
            partition: 0,
            leader_epoch: 0,
            partition_epoch: 1,
            new_isr: isr,
            leader_recovery_state: LEADER_RECOVERED,
        }
    }

    fn request(h: &Harness, broker_id: i32, partitions: Vec<IsrChange>) -> AlterPartitionRequest {
        AlterPartitionRequest {
            broker_id,
            broker_epoch: epoch(h, broker_id),
            partitions,
        }
    }

    fn state(
        leader: i32,
        leader_epoch: i32,
        isr: Vec<i32>,
        partition_epoch: i32,
    ) -> PartitionState {
        PartitionState {
            leader,
            leader_epoch,
            isr,
            partition_epoch,
        }
    }

    #[test]
    fn an_accepted_expansion_commits_the_new_isr_and_bumps_the_partition_epoch() {
        let (mut h, orders) = cluster();
        let req = request(&h, 1, vec![change(orders, members(&h, &[1, 2, 3]))]);
        let planned = h.controller.alter_partition(&h.image, &req);
        assert_eq!(
            planned.records,
            vec![MetadataRecord::PartitionChange {
                topic_id: orders,
                partition: 0,
                leader: None,
                isr: Some(vec![1, 2, 3]),
                replicas: None,
                removing_replicas: None,
                adding_replicas: None,
            }]
        );
        assert_eq!(planned.reply, Ok(vec![Ok(state(1, 0, vec![1, 2, 3], 2))]));
        h.replay(&planned.records);
        // The reply is exactly what the committed records replay into.
        let p = &h.image().topic("orders").unwrap().partitions[&0];
        assert_eq!(PartitionState::from(p), state(1, 0, vec![1, 2, 3], 2));

        // A shrink from the new state.
        let mut shrink = change(orders, members(&h, &[1]));
        shrink.partition_epoch = 2;
        let req = request(&h, 1, vec![shrink]);
        let reply = h.run(|c, i| c.alter_partition(i, &req));
        assert_eq!(reply, Ok(vec![Ok(state(1, 0, vec![1], 3))]));
    }

    #[test]
    fn an_unchanged_isr_plans_nothing_and_reports_the_current_state() {
        let (h, orders) = cluster();
        let req = request(&h, 1, vec![change(orders, members(&h, &[1, 2]))]);
        let planned = h.controller.alter_partition(&h.image, &req);
        assert_eq!(planned.records, vec![]);
        assert_eq!(planned.reply, Ok(vec![Ok(state(1, 0, vec![1, 2], 1))]));
    }

    #[test]
    fn a_stale_or_unknown_requester_epoch_refuses_the_whole_request() {
        let (h, orders) = cluster();
        let mut req = request(&h, 1, vec![change(orders, members(&h, &[1, 2, 3]))]);
        req.broker_epoch -= 1;
        let planned = h.controller.alter_partition(&h.image, &req);
        assert_eq!(
            (planned.records, planned.reply),
            (vec![], Err(StaleBrokerEpoch))
        );
        req.broker_id = 9;
        let planned = h.controller.alter_partition(&h.image, &req);
        assert_eq!(planned.reply, Err(StaleBrokerEpoch));
    }

    #[test]
    fn each_partition_gets_kafkas_error_in_kafkas_order() {
        let (mut h, orders) = cluster();
        let epoch_3 = epoch(&h, 3);
        let all = members(&h, &[1, 2, 3]);
        let (repeated, without_leader, leader_only) = (
            members(&h, &[1, 2, 2]),
            members(&h, &[2, 3]),
            members(&h, &[1]),
        );
        let good = || change(orders, all.clone());
        let with = |edit: &dyn Fn(&mut IsrChange)| {
            let mut c = good();
            edit(&mut c);
            c
        };
        let cases: Vec<(IsrChange, AlterPartitionError)> = vec![
            (with(&|c| c.topic_id = TopicId(999)), UnknownTopicId),
            (with(&|c| c.partition = 7), UnknownTopicOrPartition),
            (with(&|c| c.leader_epoch = 1), NotController),
            (with(&|c| c.partition_epoch = 2), NotController),
            (with(&|c| c.leader_epoch = -1), FencedLeaderEpoch),
            // Older leader epoch wins over an older partition epoch.
            (
                with(&|c| {
                    c.leader_epoch = -1;
                    c.partition_epoch = 0
                }),
                FencedLeaderEpoch,
            ),
            (with(&|c| c.partition_epoch = 0), InvalidUpdateVersion),
            // 4 is no replica (and not even registered): not a subset, INVALID_REQUEST.
            (
                with(&|c| {
                    c.new_isr.push(IsrMember {
                        broker_id: 4,
                        broker_epoch: -1,
                    })
                }),
                InvalidRequest,
            ),
            (with(&|c| c.new_isr = repeated.clone()), InvalidRequest),
            (
                with(&|c| c.new_isr = without_leader.clone()),
                InvalidRequest,
            ),
            (with(&|c| c.new_isr = Vec::new()), InvalidRequest),
            (
                with(&|c| c.leader_recovery_state = LEADER_RECOVERING),
                InvalidRequest,
            ),
            (
                with(&|c| {
                    c.new_isr = leader_only.clone();
                    c.leader_recovery_state = LEADER_RECOVERING
                }),
                InvalidRequest,
            ),
            (with(&|c| c.leader_recovery_state = 2), InvalidRequest),
            (
                with(&|c| c.new_isr[2].broker_epoch = epoch_3 + 1),
                IneligibleReplica,
            ),
        ];
        let (changes, expected): (Vec<IsrChange>, Vec<AlterPartitionError>) =
            cases.into_iter().unzip();
        let planned = h
            .controller
            .alter_partition(&h.image, &request(&h, 1, changes));
        assert_eq!(planned.records, vec![]);
        assert_eq!(
            planned.reply,
            Ok(expected.into_iter().map(Err).collect::<Vec<_>>())
        );

        // Not the leader: broker 2 asks for partition 0 (led by 1).
        let planned = h
            .controller
            .alter_partition(&h.image, &request(&h, 2, vec![good()]));
        assert_eq!(planned.reply, Ok(vec![Err(InvalidRequest)]));

        // A fenced member is ineligible, even with the right epoch or none.
        h.run(|c, i| c.fence_broker(i, 3, epoch_3));
        let mut unchecked = good();
        unchecked.new_isr[2].broker_epoch = UNKNOWN_BROKER_EPOCH;
        let planned = h
            .controller
            .alter_partition(&h.image, &request(&h, 1, vec![good(), unchecked]));
        assert_eq!(
            planned.reply,
            Ok(vec![Err(IneligibleReplica), Err(IneligibleReplica)])
        );
    }

    #[test]
    fn an_unregistered_member_is_ineligible() {
        let (mut h, orders) = cluster();
        let epoch_3 = epoch(&h, 3);
        let good = change(orders, members(&h, &[1, 2, 3]));
        h.run(|c, i| c.fence_broker(i, 3, epoch_3));
        h.replay(&[MetadataRecord::UnregisterBroker {
            broker_id: 3,
            broker_epoch: epoch_3,
        }]);
        let planned = h
            .controller
            .alter_partition(&h.image, &request(&h, 1, vec![good]));
        assert_eq!(planned.reply, Ok(vec![Err(IneligibleReplica)]));
    }

    #[test]
    fn v2_requests_without_member_epochs_skip_the_epoch_check() {
        let (h, orders) = cluster();
        let mut unchecked = change(orders, members(&h, &[1, 2, 3]));
        for member in &mut unchecked.new_isr {
            member.broker_epoch = UNKNOWN_BROKER_EPOCH;
        }
        let planned = h
            .controller
            .alter_partition(&h.image, &request(&h, 1, vec![unchecked]));
        assert_eq!(planned.reply, Ok(vec![Ok(state(1, 0, vec![1, 2, 3], 2))]));
        assert_eq!(planned.records.len(), 1);
    }

    #[test]
    fn several_partitions_each_get_their_own_outcome_and_a_repeat_sees_the_first_change() {
        let (mut h, orders) = cluster();
        let expand = change(orders, members(&h, &[1, 2, 3]));
        // The same expansion again, computed from the old state: its partition epoch is stale.
        let repeat = expand.clone();
        let mut next = change(orders, members(&h, &[1]));
        next.partition_epoch = 2;
        // Partition 1 is led by broker 2, not the requester.
        let mut other = change(orders, members(&h, &[2, 3]));
        other.partition = 1;
        other.partition_epoch = 0;
        let req = request(&h, 1, vec![expand, repeat, other, next]);
        let planned = h.controller.alter_partition(&h.image, &req);
        assert_eq!(
            planned.reply,
            Ok(vec![
                Ok(state(1, 0, vec![1, 2, 3], 2)),
                Err(InvalidUpdateVersion),
                Err(InvalidRequest),
                Ok(state(1, 0, vec![1], 3)),
            ])
        );
        assert_eq!(planned.records.len(), 2);
        h.replay(&planned.records);
        let p = &h.image().topic("orders").unwrap().partitions[&0];
        assert_eq!(PartitionState::from(p), state(1, 0, vec![1], 3));
    }

    #[test]
    fn a_leaderless_partition_refuses_every_requester() {
        let (mut h, _) = cluster();
        h.run(|c, i| c.create_topics(i, &[manual("single", vec![(0, vec![1])])], false));
        let single = h.image().topic("single").unwrap().topic_id;
        let epoch_1 = epoch(&h, 1);
        h.run(|c, i| c.fence_broker(i, 1, epoch_1));
        let p = &h.image().topic("single").unwrap().partitions[&0];
        assert_eq!((p.leader, p.leader_epoch), (NO_LEADER, 1));
        let mut ask = change(
            single,
            vec![IsrMember {
                broker_id: 1,
                broker_epoch: epoch_1,
            }],
        );
        ask.leader_epoch = 1;
        let planned = h
            .controller
            .alter_partition(&h.image, &request(&h, 1, vec![ask]));
        assert_eq!(planned.reply, Ok(vec![Err(InvalidRequest)]));
    }
}
