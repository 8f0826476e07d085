//! Replication: how a partition's followers copy its leader's log, and when a record counts as
//! committed. Kafka's protocol, as KRaft-era Kafka runs it:
//! - followers pull with Fetch (`replica_id` set), one [`fetcher`] task per leader broker;
//! - the leader tracks each follower's log end offset from its fetch offsets and moves the high
//!   watermark — what consumers may read and what acks=all waits for — to the smallest log end
//!   offset of the ISR ([`state`]);
//! - the ISR itself belongs to the controller: the leader asks for changes with AlterPartition
//!   ([`isr`]); leadership changes arrive as metadata;
//! - leader epochs (stamped in every batch, kept per partition in `leader-epoch-checkpoint`) let
//!   a follower or a returning leader find where its log diverged and truncate it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::ResponseError;
use skald_controller::PartitionImage;
use skald_storage::Log;

use crate::broker::Broker;
use crate::replica_manager::Partition;
use state::{ReplicaState, Role, Transition};

pub mod alter_log_dirs;
pub mod fetcher;
pub mod isr;
pub mod quota;
pub mod session_handler;
pub mod state;

/// Wall-clock milliseconds, for follower catch-up times.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

impl Partition {
    /// The high watermark: consumers read below it.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// The log end offset as of the last append or truncation.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset.load(Ordering::Acquire)
    }

    /// This broker's part in the partition now.
    pub fn role(&self) -> Role {
        self.replica_state().role.clone()
    }

    pub(crate) fn replica_state(&self) -> MutexGuard<'_, ReplicaState> {
        self.replica
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the replication state, then publishes a moved high watermark: to the lock-free
    /// copy, to acks=all produces and to waiting fetches.
    pub fn with_replica<T>(&self, f: impl FnOnce(&mut ReplicaState) -> T) -> T {
        let mut state = self.replica_state();
        let before = (state.high_watermark, state.leader_epoch());
        let result = f(&mut state);
        let after = (state.high_watermark, state.leader_epoch());
        drop(state);
        if after != before {
            self.high_watermark.store(after.0, Ordering::Release);
            self.replica_changed.notify_waiters();
            self.fetch_waiters.wake();
        }
        result
    }

    /// Applies the partition's metadata under the log's lock (the caller holds it).
    pub(crate) fn apply_placement(
        &self,
        me: i32,
        placement: &PartitionImage,
        log: &Log,
        now_ms: i64,
    ) -> Transition {
        let log_end_offset = log.log_end_offset();
        self.log_end_offset.store(log_end_offset, Ordering::Release);
        let transition = self.with_replica(|state| {
            let transition = state.apply(me, placement, log_end_offset, now_ms);
            // A leader alone in its ISR commits everything it has.
            state.maybe_advance_high_watermark(me, log_end_offset);
            transition
        });
        if transition != Transition::Unchanged {
            // Waiters check the role, which changed even where the HW did not.
            self.replica_changed.notify_waiters();
        }
        transition
    }

    /// After a leader appended (under the log's lock): a leader alone in its ISR moves its high
    /// watermark at once.
    pub(crate) fn leader_appended(&self, me: i32, log_end_offset: i64) {
        self.log_end_offset.store(log_end_offset, Ordering::Release);
        self.with_replica(|state| state.maybe_advance_high_watermark(me, log_end_offset));
    }

    /// After a follower appended or truncated (under the log's lock).
    pub(crate) fn follower_log_changed(&self, log_end_offset: i64, leader_high_watermark: i64) {
        self.log_end_offset.store(log_end_offset, Ordering::Release);
        self.with_replica(|state| {
            state.truncated(log_end_offset);
            if leader_high_watermark >= 0 {
                state.follower_high_watermark(leader_high_watermark, log_end_offset);
            }
        });
    }

    /// The partition was removed: whoever waits on it gives up.
    pub(crate) fn go_offline(&self) {
        self.with_replica(|state| state.role = Role::Offline);
        self.replica_changed.notify_waiters();
    }

    /// Whether this broker leads the partition at `leader_epoch`.
    pub fn leads_at(&self, leader_epoch: i32) -> bool {
        self.replica_state()
            .leader()
            .is_some_and(|leader| leader.leader_epoch == leader_epoch)
    }
}

/// An append that must be replicated before it counts: the ISR must have everything up to
/// `required_offset` (exclusive). acks=all produces and offset commits wait on it.
#[derive(Debug, Clone)]
pub struct ReplicationWait {
    pub partition: Arc<Partition>,
    /// The leadership the append was made in.
    pub leader_epoch: i32,
    /// The high watermark that covers the append: its last offset + 1.
    pub required_offset: i64,
    pub min_insync_replicas: usize,
}

impl ReplicationWait {
    /// Kafka's `DelayedProduce`: done once the high watermark passes the append (then
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below `min.insync.replicas` meanwhile),
    /// NOT_LEADER_OR_FOLLOWER once leadership moved, REQUEST_TIMED_OUT at the deadline.
    pub async fn until_replicated(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(), ResponseError> {
        loop {
            let changed = self.partition.replica_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let status = self.partition.replica_state().ack_status(
                self.leader_epoch,
                self.required_offset,
                self.min_insync_replicas,
            );
            if let Some(status) = status {
                return status;
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(deadline) => return Err(ResponseError::RequestTimedOut),
            }
        }
    }
}

/// Kafka's leader-side check of a follower's `last_fetched_epoch` (KIP-595): where the
/// follower's log left this one's, if it did — the largest epoch this log has at or below the
/// follower's and where that epoch ends here. Undefined epochs (the follower's is newer than any
/// here, or this log has none) are not a divergence on the wire (Kafka sends -1/-1, which
/// followers ignore); the fetch offset's range check decides then.
pub fn diverging_epoch(log: &Log, fetch: &FetchPartition) -> Option<(i32, i64)> {
    if fetch.last_fetched_epoch < 0 {
        return None;
    }
    let (epoch, end_offset) = log.end_offset_for_epoch(fetch.last_fetched_epoch)?;
    (epoch < fetch.last_fetched_epoch || end_offset < fetch.fetch_offset)
        .then_some((epoch, end_offset))
}

/// A follower fetched at `fetch_offset` (its log end offset): update its progress, maybe the
/// high watermark, and ask for the ISR change that makes (called under the log's lock).
pub fn record_follower_fetch(
    broker: &Arc<Broker>,
    partition: &Arc<Partition>,
    follower: i32,
    fetch_offset: i64,
) {
    let me = broker.config.node_id;
    let leader_end_offset = partition.log_end_offset();
    partition.with_replica(|state| {
        state.record_follower_fetch(me, follower, fetch_offset, leader_end_offset, now_ms())
    });
    isr::maybe_alter_isr(broker, partition);
}
