//! One partition's replication state, as Kafka's `Partition` keeps it: whether this broker leads
//! or follows it, the high watermark, and — on the leader — how far each follower has fetched.
//!
//! Pure bookkeeping (times are passed in), so the rules are unit-tested without a cluster:
//! - the high watermark (HW) is the smallest log end offset (LEO) of the *maximal* ISR — the
//!   committed ISR plus a member an AlterPartition in flight adds (Kafka counts an expansion at
//!   once, a shrink only once committed), and it never goes down on a leader;
//! - a follower is caught up when it has fetched to the leader's LEO, or to what the leader's LEO
//!   was at its previous fetch (Kafka's `lastCaughtUpTimeMs` rule), and leaves the ISR once it has
//!   not been for `replica.lag.time.max.ms`;
//! - a follower joins the ISR again once its LEO reaches the HW and the start of the leader's
//!   epoch.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use skald_controller::{AlterPartitionError, PartitionImage};

/// Kafka's "not known yet" for a follower's log end offset.
pub const UNKNOWN_OFFSET: i64 = -1;

/// What this broker is for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The partition has no leader (offline), or this broker has not been told its part yet.
    Offline,
    Leader(LeaderState),
    Follower {
        leader: i32,
        leader_epoch: i32,
    },
}

/// The leader's view of its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderState {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    /// The replicas less those a reassignment in progress adds (Kafka's `replicationFactor`
    /// of an ongoing reassignment): the partition is under-replicated when its ISR is smaller.
    pub replication_factor: usize,
    /// The ISR as committed in the metadata.
    pub isr: Vec<i32>,
    /// An AlterPartition in flight: the ISR it asks for, sent at the partition epoch given.
    pub pending: Option<PendingIsr>,
    /// The LEO when this leadership began (Kafka's `leaderEpochStartOffset`): a follower rejoins
    /// the ISR only once it has everything before it.
    pub epoch_start_offset: i64,
    pub followers: BTreeMap<i32, FollowerProgress>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingIsr {
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
}

/// When a leader drops a follower from the ISR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsrRules {
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves (Kafka's rule).
    pub lag_time_max_ms: i64,
    /// `replica.unresponsive.time.max.ms` (Skald's; 0 = off): a follower behind the leader that
    /// has sent no fetch for this long leaves sooner, but only while the ISR keeps
    /// `min_insync_replicas` members — so acks=all writes stop waiting for a paused or cut-off
    /// follower without ever being refused for it. Safe for acknowledged data: the HW counts
    /// only the ISR, and the change goes through the controller like any shrink.
    pub unresponsive_time_max_ms: i64,
    /// The partition's `min.insync.replicas`.
    pub min_insync_replicas: usize,
}

/// How far one follower has fetched, as its leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    pub log_end_offset: i64,
    pub last_caught_up_ms: i64,
    last_fetch_leader_end_offset: i64,
    last_fetch_ms: i64,
}

impl FollowerProgress {
    fn new(in_sync: bool, now_ms: i64) -> FollowerProgress {
        FollowerProgress {
            log_end_offset: UNKNOWN_OFFSET,
            // Kafka's `resetReplicaState`: ISR members get a full lag window to show up.
            last_caught_up_ms: if in_sync { now_ms } else { 0 },
            last_fetch_leader_end_offset: UNKNOWN_OFFSET,
            last_fetch_ms: 0,
        }
    }
}

/// A partition's role and high watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    pub role: Role,
    pub high_watermark: i64,
}

/// What a metadata change did to this broker's part in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Same role, same leader epoch (maybe a new ISR or partition epoch).
    Unchanged,
    BecameLeader {
        leader_epoch: i32,
    },
    BecameFollower {
        leader: i32,
        leader_epoch: i32,
    },
    WentOffline,
}

impl ReplicaState {
    pub fn new(high_watermark: i64) -> ReplicaState {
        ReplicaState {
            role: Role::Offline,
            high_watermark,
        }
    }

    pub fn leader(&self) -> Option<&LeaderState> {
        match &self.role {
            Role::Leader(leader) => Some(leader),
            _ => None,
        }
    }

    fn leader_mut(&mut self) -> Option<&mut LeaderState> {
        match &mut self.role {
            Role::Leader(leader) => Some(leader),
            _ => None,
        }
    }

    /// The leader epoch this broker acts in, as leader or follower.
    pub fn leader_epoch(&self) -> Option<i32> {
        match &self.role {
            Role::Leader(leader) => Some(leader.leader_epoch),
            Role::Follower { leader_epoch, .. } => Some(*leader_epoch),
            Role::Offline => None,
        }
    }

    /// Brings the role in line with the partition's metadata. `log_end_offset` is this broker's
    /// LEO (a new leader's epoch starts there; a follower's HW is capped by it).
    pub fn apply(
        &mut self,
        me: i32,
        placement: &PartitionImage,
        log_end_offset: i64,
        now_ms: i64,
    ) -> Transition {
        if placement.leader == me {
            if let Role::Leader(leader) = &mut self.role {
                if leader.leader_epoch == placement.leader_epoch {
                    leader.update(placement, now_ms);
                    return Transition::Unchanged;
                }
            }
            let followers = placement
                .replicas
                .iter()
                .filter(|id| **id != me)
                .map(|id| {
                    let in_sync = placement.isr.contains(id);
                    (*id, FollowerProgress::new(in_sync, now_ms))
                })
                .collect();
            self.role = Role::Leader(LeaderState {
                leader_epoch: placement.leader_epoch,
                partition_epoch: placement.partition_epoch,
                replicas: placement.replicas.clone(),
                replication_factor: replication_factor(placement),
                isr: placement.isr.clone(),
                pending: None,
                epoch_start_offset: log_end_offset,
                followers,
            });
            return Transition::BecameLeader {
                leader_epoch: placement.leader_epoch,
            };
        }
        if placement.leader < 0 || !placement.replicas.contains(&me) {
            let changed = self.role != Role::Offline;
            self.role = Role::Offline;
            self.high_watermark = self.high_watermark.min(log_end_offset);
            return if changed {
                Transition::WentOffline
            } else {
                Transition::Unchanged
            };
        }
        let follower = Role::Follower {
            leader: placement.leader,
            leader_epoch: placement.leader_epoch,
        };
        if self.role == follower {
            return Transition::Unchanged;
        }
        self.role = follower;
        self.high_watermark = self.high_watermark.min(log_end_offset);
        Transition::BecameFollower {
            leader: placement.leader,
            leader_epoch: placement.leader_epoch,
        }
    }

    /// Records a follower's fetch at `fetch_offset` (its LEO) while the leader's LEO is
    /// `leader_end_offset`. Returns whether the HW moved.
    pub fn record_follower_fetch(
        &mut self,
        me: i32,
        follower: i32,
        fetch_offset: i64,
        leader_end_offset: i64,
        now_ms: i64,
    ) -> bool {
        let Some(leader) = self.leader_mut() else {
            return false;
        };
        let Some(progress) = leader.followers.get_mut(&follower) else {
            return false;
        };
        if fetch_offset >= leader_end_offset {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= progress.last_fetch_leader_end_offset {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.log_end_offset = fetch_offset;
        progress.last_fetch_leader_end_offset = leader_end_offset;
        progress.last_fetch_ms = now_ms;
        self.maybe_advance_high_watermark(me, leader_end_offset)
    }

    /// Kafka's `maybeIncrementLeaderHW`: the HW becomes the smallest LEO of the maximal ISR, if
    /// that is higher. Returns whether it moved.
    pub fn maybe_advance_high_watermark(&mut self, me: i32, leader_end_offset: i64) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        let mut candidate = leader_end_offset;
        for id in leader.maximal_isr() {
            if id == me {
                continue;
            }
            let follower_end = leader
                .followers
                .get(&id)
                .map_or(UNKNOWN_OFFSET, |p| p.log_end_offset);
            candidate = candidate.min(follower_end);
        }
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            true
        } else {
            false
        }
    }

    /// A follower's HW: the leader's, as far as this log reaches.
    pub fn follower_high_watermark(&mut self, leader_high_watermark: i64, log_end_offset: i64) {
        if matches!(self.role, Role::Follower { .. }) {
            self.high_watermark = leader_high_watermark.min(log_end_offset).max(0);
        }
    }

    /// After a truncation: the HW cannot be past the log's end.
    pub fn truncated(&mut self, log_end_offset: i64) {
        self.high_watermark = self.high_watermark.min(log_end_offset);
    }

    /// Where an acks=all produce of records up to `required_offset - 1` stands: `None` while
    /// the HW has not reached it; then whether enough replicas have it (Kafka's
    /// `checkEnoughReplicasReachOffset`).
    pub fn ack_status(
        &self,
        leader_epoch: i32,
        required_offset: i64,
        min_insync_replicas: usize,
    ) -> Option<Result<(), ResponseError>> {
        let Some(leader) = self.leader().filter(|l| l.leader_epoch == leader_epoch) else {
            return Some(Err(ResponseError::NotLeaderOrFollower));
        };
        if self.high_watermark < required_offset {
            return None;
        }
        Some(if leader.maximal_isr().len() >= min_insync_replicas {
            Ok(())
        } else {
            Err(ResponseError::NotEnoughReplicasAfterAppend)
        })
    }

    /// The ISR change this leader should ask for now, if any and none is in flight: followers
    /// that have not caught up for `lag_time_max_ms` leave, and so do unresponsive ones (see
    /// [`IsrRules`]) while the ISR stays at `min_insync_replicas`; caught-up ones (`eligible`:
    /// live brokers) join. Both at once if need be, as one new ISR.
    pub fn wanted_isr(
        &self,
        me: i32,
        leader_end_offset: i64,
        now_ms: i64,
        rules: &IsrRules,
        eligible: impl Fn(i32) -> bool,
    ) -> Option<Vec<i32>> {
        let leader = self.leader()?;
        if leader.pending.is_some() {
            return None;
        }
        // Kafka's `isCaughtUp`.
        let caught_up = |progress: &FollowerProgress| {
            progress.log_end_offset == leader_end_offset
                || now_ms - progress.last_caught_up_ms <= rules.lag_time_max_ms
        };
        let mut isr: Vec<i32> = leader
            .isr
            .iter()
            .copied()
            .filter(|id| *id == me || leader.followers.get(id).is_some_and(caught_up))
            .collect();
        if !isr.contains(&me) {
            isr.insert(0, me);
        }
        // Unresponsive followers: behind (so holding back the HW, and any acks=all produce
        // with it) and silent for `unresponsive_time_max_ms`, the longest silent first, while
        // the ISR keeps `min_insync_replicas`.
        if rules.unresponsive_time_max_ms > 0 {
            let mut silent: Vec<(i64, i32)> = isr
                .iter()
                .filter(|id| **id != me)
                .filter_map(|id| Some((*id, leader.followers.get(id)?)))
                .filter(|(_, progress)| progress.log_end_offset < leader_end_offset)
                .map(|(id, progress)| (progress.last_fetch_ms.max(progress.last_caught_up_ms), id))
                .filter(|(heard_ms, _)| now_ms - heard_ms > rules.unresponsive_time_max_ms)
                .collect();
            silent.sort_unstable();
            for (_, id) in silent {
                if isr.len() <= rules.min_insync_replicas.max(1) {
                    break;
                }
                isr.retain(|member| *member != id);
            }
        }
        for (id, progress) in &leader.followers {
            // Only followers outside the committed ISR join: one dropped just now may still
            // sit at the HW it holds back.
            let joins = !leader.isr.contains(id)
                && progress.log_end_offset >= self.high_watermark
                && progress.log_end_offset >= leader.epoch_start_offset
                && eligible(*id);
            if joins {
                isr.push(*id);
            }
        }
        let unchanged =
            isr.len() == leader.isr.len() && isr.iter().all(|id| leader.isr.contains(id));
        (!unchanged).then_some(isr)
    }

    /// Marks an AlterPartition as sent for `isr`.
    pub fn set_pending(&mut self, isr: Vec<i32>) {
        if let Some(leader) = self.leader_mut() {
            leader.pending = Some(PendingIsr {
                isr,
                partition_epoch: leader.partition_epoch,
            });
        }
    }

    /// The AlterPartition for `isr` sent at (`leader_epoch`, `partition_epoch`) is settled: the
    /// controller refused it, or this broker's metadata shows its outcome. Only that request's
    /// pending state goes (a newer one, of a later leadership or partition epoch, stays).
    pub fn clear_pending(&mut self, leader_epoch: i32, partition_epoch: i32, isr: &[i32]) {
        if let Some(leader) = self.leader_mut() {
            let this_request = leader.leader_epoch == leader_epoch
                && leader.pending.as_ref().is_some_and(|pending| {
                    pending.partition_epoch == partition_epoch && pending.isr == isr
                });
            if this_request {
                leader.pending = None;
            }
        }
    }

    /// The controller refused the AlterPartition for `isr` sent at (`leader_epoch`,
    /// `partition_epoch`) with `error` (Kafka's `handleAlterPartitionError`). Only a refusal that
    /// proves the request never applied (INELIGIBLE_REPLICA: checked after the epochs, so the
    /// partition was still at the request's epoch) drops the pending ISR now. Any other may be
    /// the answer to a copy sent again after an unanswered first one that did commit — a stale
    /// partition epoch (INVALID_UPDATE_VERSION) is then the request's own doing — so the pending
    /// ISR stays, and an expansion keeps counting for the high watermark, until this broker's
    /// metadata shows a newer partition epoch or leadership. Dropping it at once let the leader
    /// commit records without a member the controller had already added to the ISR, which the
    /// controller could then elect (found by `sim`, seeds 1170 and 10121).
    pub fn alter_partition_refused(
        &mut self,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: &[i32],
        error: AlterPartitionError,
    ) {
        if error == AlterPartitionError::IneligibleReplica {
            self.clear_pending(leader_epoch, partition_epoch, isr);
        }
    }

    /// Whether the AlterPartition for `isr` sent at (`leader_epoch`, `partition_epoch`) is still
    /// the one in flight.
    pub fn is_pending(&self, leader_epoch: i32, partition_epoch: i32, isr: &[i32]) -> bool {
        self.leader().is_some_and(|leader| {
            leader.leader_epoch == leader_epoch
                && leader.pending.as_ref().is_some_and(|pending| {
                    pending.partition_epoch == partition_epoch && pending.isr == isr
                })
        })
    }
}

impl LeaderState {
    /// The committed ISR plus whoever an expansion in flight adds.
    pub fn maximal_isr(&self) -> Vec<i32> {
        let mut isr = self.isr.clone();
        if let Some(pending) = &self.pending {
            isr.extend(pending.isr.iter().filter(|id| !self.isr.contains(id)));
        }
        isr
    }

    /// Same leader epoch, new partition state: a committed ISR change (ours or the controller's,
    /// e.g. a fenced follower removed) or a reassignment.
    fn update(&mut self, placement: &PartitionImage, now_ms: i64) {
        if placement.partition_epoch
            > self
                .pending
                .as_ref()
                .map_or(i32::MAX, |p| p.partition_epoch)
        {
            self.pending = None;
        }
        self.partition_epoch = placement.partition_epoch;
        self.isr = placement.isr.clone();
        self.followers
            .retain(|id, _| placement.replicas.contains(id));
        for id in &placement.replicas {
            if !self.followers.contains_key(id) && !self.replicas.contains(id) {
                self.followers
                    .insert(*id, FollowerProgress::new(false, now_ms));
            }
        }
        self.replicas = placement.replicas.clone();
        self.replication_factor = replication_factor(placement);
    }
}

fn replication_factor(placement: &PartitionImage) -> usize {
    placement.replicas.len()
        - placement
            .adding_replicas
            .len()
            .min(placement.replicas.len())
}

#[cfg(test)]
mod tests;
