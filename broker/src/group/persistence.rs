//! The coordinator's side of `__consumer_offsets` (Kafka's `GroupMetadataManager`): every read
//! and append of the log the group coordinator makes. Kept apart from the registry, the tick and
//! the expiry decisions (`group/mod.rs`, which only change memory) because this is the part that
//! blocks, must run under the group's lock, and decides what a restarted or new coordinator sees.
//! Appends go through an [`OffsetsLog`] — the broker's is [`append_to_partition`], over its
//! replica manager — so the group handlers also run over an in-memory log in their tests.
//!
//! Two kinds of record go to a group's partition, in [`records`]' formats, appended under the
//! group's lock (so the log holds a group's changes in the order they happened):
//!
//! - committed offsets ([`GroupCoordinator::append_offsets`]), acknowledged (and made visible)
//!   once the partition's ISR has them (`offsets.commit.timeout.ms`);
//! - group metadata (Kafka's `storeGroup`; [`GroupCoordinator::persist_due`] appends what the
//!   group's state machine asked for): generation, protocol type and name, leader, and every
//!   member with its session and rebalance timeouts, subscription and assignment. Written when
//!   the leader's SyncGroup completes a generation (the group becomes Stable, and the SyncGroups
//!   are answered, only once the ISR has the record; a failure answers them with
//!   [`store_error`]'s mapping and rebalances), when a static member takes over its instance in a
//!   Stable group (its JoinGroup waits likewise; a failure undoes the takeover), and when the
//!   group becomes Empty (not waited for).
//!
//! DeleteGroups and the offset-expiry pass append [`Tombstones`]: the offsets deleted and, for a
//! group deleted after it had a generation, its metadata.
//!
//! A broker that becomes the partition's leader replays it (Kafka's `loadGroupsAndOffsets`: the
//! last record per key wins, a tombstone deletes): a group whose last record has members is
//! Stable with them, their generation and assignments, each member's session starting at load
//! time, so members keep heartbeating across a coordinator restart or failover; one without
//! members is Empty with its generation. A broker that stops being leader drops its groups
//! (waiting JoinGroups and SyncGroups get NOT_COORDINATOR).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use skald_controller::names::CONSUMER_OFFSETS_TOPIC;

use super::offsets_log::{AppendWait, OffsetsLog, OffsetsRecord};
use super::records::{self, Change};
use super::{lock, CommittedOffset, ExpiryOutcome, Group, GroupCoordinator, SharedGroup};
use crate::replica_manager::{LeaderAppend, ReplicaManager, RoleChange};
use crate::replication::state::Transition;
use crate::replication::ReplicationWait;

/// How much of a `__consumer_offsets` partition one replay read takes.
const REPLAY_READ_BYTES: usize = 1 << 20;

/// What an expiry pass, or DeleteGroups, appends for one group before forgetting it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tombstones {
    /// (topic, partition) of every offset deleted.
    pub offsets: Vec<(String, i32)>,
    /// Whether the group's metadata is tombstoned: the group is deleted and has had a
    /// generation, so it may have a metadata record (Kafka's `cleanupGroupMetadata`).
    pub group: bool,
}

impl Tombstones {
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty() && !self.group
    }
}

/// An awaited group metadata store, appended: its replication still to be waited for.
#[derive(Debug)]
pub struct StoreWait {
    pub seq: u64,
    pub wait: AppendWait,
}

impl GroupCoordinator {
    /// Appends the group metadata records `group` has due (Kafka's `storeGroup`), in order, to
    /// `log`. Call it holding the group's lock, right after the operation that made them due; it
    /// blocks (under `block_in_place`) only if there are any. A store that cannot be appended is
    /// completed with its error at once; the awaited ones appended are returned, to be passed to
    /// [`GroupCoordinator::await_stores`] after the lock is released.
    pub fn persist_due(&self, log: &dyn OffsetsLog, group: &mut Group) -> Vec<StoreWait> {
        if !group.has_due_stores() {
            return Vec::new();
        }
        tokio::task::block_in_place(|| {
            let mut waits = Vec::new();
            for store in group.take_due_stores() {
                let appended = records::group_metadata_key(&group.id)
                    .and_then(|key| Ok((key, records::group_metadata_value(&store.value)?)))
                    .map_err(|err| {
                        tracing::error!(group = group.id, "cannot encode group metadata: {err}");
                        ResponseError::UnknownServerError
                    })
                    .and_then(|(key, value)| {
                        self.append_records(log, &group.id, &[(key, Some(value))])
                    });
                match appended {
                    Ok(Some(wait)) if store.awaited => waits.push(StoreWait {
                        seq: store.seq,
                        wait,
                    }),
                    Ok(_) => {}
                    Err(error) => {
                        if !store.awaited {
                            // Kafka only warns: the previous record stays the last one, which
                            // a restarted coordinator loads and then expires.
                            tracing::warn!(
                                group = group.id,
                                generation = store.value.generation,
                                "cannot write empty group metadata: {error:?}"
                            );
                        }
                        group.store_completed(store.seq, Err(store_error(error)), self.now_ms());
                    }
                }
            }
            waits
        })
    }

    /// Waits until each store's record is replicated (or fails, or `offsets.commit.timeout.ms`
    /// passes) and reports the outcome to the group. Call it without holding the group's lock.
    pub async fn await_stores(&self, group: &SharedGroup, waits: Vec<StoreWait>) {
        let timeout = Duration::from_millis(self.config.offsets_commit_timeout_ms);
        for StoreWait { seq, wait } in waits {
            let result = wait
                .until_replicated(tokio::time::Instant::now() + timeout)
                .await
                .map_err(store_error);
            lock(group).store_completed(seq, result, self.now_ms());
        }
    }

    /// Appends offset records (tombstones for `None`) for `group_id` to its partition. Blocking:
    /// call it under `block_in_place`, holding the group's lock, so the log's order is the order
    /// the in-memory offsets change in.
    pub fn append_offsets(
        &self,
        log: &dyn OffsetsLog,
        group_id: &str,
        changes: &[(String, i32, Option<CommittedOffset>)],
    ) -> Result<Option<AppendWait>, ResponseError> {
        let records: Vec<OffsetsRecord> = changes
            .iter()
            .map(|(topic, index, offset)| {
                (
                    records::offset_key(group_id, topic, *index),
                    offset.as_ref().map(records::offset_value),
                )
            })
            .collect();
        self.append_records(log, group_id, &records)
    }

    /// Appends the tombstones of a group's offsets and, if it is deleted and has had a
    /// generation, of its metadata, in one batch. Blocking, under the group's lock.
    pub fn append_tombstones(
        &self,
        log: &dyn OffsetsLog,
        group_id: &str,
        tombstones: &Tombstones,
    ) -> Result<Option<AppendWait>, ResponseError> {
        let mut records: Vec<OffsetsRecord> = tombstones
            .offsets
            .iter()
            .map(|(topic, index)| (records::offset_key(group_id, topic, *index), None))
            .collect();
        if tombstones.group {
            let key = records::group_metadata_key(group_id).map_err(|err| {
                tracing::error!(group = group_id, "cannot encode group metadata key: {err}");
                ResponseError::UnknownServerError
            })?;
            records.push((key, None));
        }
        self.append_records(log, group_id, &records)
    }

    /// One offset-expiry pass over `__consumer_offsets` in `log` (Kafka's
    /// `cleanupGroupMetadata`): expired offsets are tombstoned, then forgotten. Blocking.
    pub fn expire_offsets(&self, log: &dyn OffsetsLog) -> ExpiryOutcome {
        // Tombstones are not waited for: one lost in a failover only brings back an offset (or
        // an Empty group) the next pass expires again.
        self.expire_offsets_with(|group_id, tombstones| {
            self.append_tombstones(log, group_id, tombstones)
                .map(|_| ())
        })
    }

    /// Appends `records` for `group_id` to its partition of `log` as one batch. Blocking; call
    /// it holding the group's lock.
    fn append_records(
        &self,
        log: &dyn OffsetsLog,
        group_id: &str,
        records: &[OffsetsRecord],
    ) -> Result<Option<AppendWait>, ResponseError> {
        if records.is_empty() {
            return Ok(None);
        }
        log.append(self.partition_for(group_id), records, self.now_ms())
            .map(Some)
    }

    /// Kafka's `onElection`: this broker now leads `__consumer_offsets-<partition>`, so it
    /// coordinates that partition's groups: their offsets and metadata are rebuilt from its log
    /// ([`GroupCoordinator::replay`]), replacing whatever was held for them. Returns the records
    /// replayed.
    pub fn load_partition(&self, replicas: &ReplicaManager, index: i32) -> Result<usize, String> {
        self.unload_partition(index);
        let Some(partition) = replicas.get(CONSUMER_OFFSETS_TOPIC, index) else {
            return Ok(0);
        };
        let decoded = partition
            .with_log(|log| {
                let mut decoded = records::Decoded::default();
                let mut offset = log.log_start_offset();
                loop {
                    let read = log
                        .read(offset, REPLAY_READ_BYTES)
                        .map_err(|err| err.to_string())?;
                    if read.records.is_empty() {
                        break;
                    }
                    records::decode_batches_into(read.records, &mut decoded)
                        .map_err(|err| err.to_string())?;
                    offset = read.next_offset;
                }
                Ok::<_, String>(decoded)
            })
            .unwrap_or_else(|| Ok(records::Decoded::default()))
            .map_err(|err| format!("__consumer_offsets-{index}: {err}"))?;
        let loaded = decoded.changes.len();
        self.replay(index, decoded.changes);
        self.set_pending_txn_offsets(index, decoded.pending_txn);
        Ok(loaded)
    }

    /// Rebuilds the groups of offsets partition `index` from its records, in log order (Kafka's
    /// `loadGroupsAndOffsets`): the last value per key wins, a tombstone deletes. A group whose
    /// last metadata record has members is loaded Stable with them ([`Group::load`]; sessions
    /// start now), one without members Empty with its generation; a group with offsets and no
    /// metadata (deleted, or never had members) is Empty without a generation. Groups held for
    /// the partition are replaced.
    pub fn replay(&self, index: i32, changes: Vec<Change>) {
        let mut offsets: HashMap<String, BTreeMap<(String, i32), CommittedOffset>> = HashMap::new();
        let mut metadata: HashMap<String, records::GroupMetadataValue> = HashMap::new();
        for change in changes {
            match change {
                Change::Offset {
                    group,
                    topic,
                    partition,
                    value: Some(value),
                } => {
                    offsets
                        .entry(group)
                        .or_default()
                        .insert((topic, partition), value);
                }
                Change::Offset {
                    group,
                    topic,
                    partition,
                    value: None,
                } => {
                    if let Some(group_offsets) = offsets.get_mut(&group) {
                        group_offsets.remove(&(topic, partition));
                    }
                }
                Change::Group {
                    group,
                    value: Some(value),
                } => {
                    metadata.insert(group, value);
                }
                Change::Group { group, value: None } => {
                    metadata.remove(&group);
                }
            }
        }
        offsets.retain(|_, group_offsets| !group_offsets.is_empty());
        let now_ms = self.now_ms();
        let mut loaded: HashMap<String, Group> = metadata
            .into_iter()
            .map(|(id, value)| {
                let group = Group::load(&id, self.config.group, value, now_ms);
                (id, group)
            })
            .collect();
        for (id, group_offsets) in offsets {
            loaded
                .entry(id.clone())
                .or_insert_with(|| Group::new(&id, self.config.group))
                .offsets = group_offsets;
        }
        self.unload_partition(index);
        let mut map = self.map();
        for (id, group) in loaded {
            if self.partition_for(&id) != index {
                tracing::warn!(
                    group = id,
                    partition = index,
                    "group record in the wrong offsets partition; ignored"
                );
                continue;
            }
            tracing::info!(
                group = id,
                generation = group.generation_id(),
                state = group.state().name(),
                members = group.member_count(),
                "loaded group"
            );
            map.insert(id, Arc::new(Mutex::new(group)));
        }
    }

    /// Kafka's `onResignation`: another broker coordinates this partition's groups now; their
    /// state here is dropped, and whoever waits on them is told NOT_COORDINATOR (members then
    /// find the new coordinator).
    pub fn unload_partition(&self, index: i32) {
        self.drop_pending_txn_offsets(index);
        let mut unloaded = Vec::new();
        self.map().retain(|group_id, group| {
            let keep = self.partition_for(group_id) != index;
            if !keep {
                unloaded.push(Arc::clone(group));
            }
            keep
        });
        for group in unloaded {
            lock(&group).unload();
        }
    }

    /// Loads or unloads groups as this broker gains or loses leadership of `__consumer_offsets`
    /// partitions.
    pub fn on_role_changes(&self, replicas: &ReplicaManager, changes: &[RoleChange]) {
        for change in changes {
            if change.topic != CONSUMER_OFFSETS_TOPIC {
                continue;
            }
            match change.transition {
                Transition::BecameLeader { leader_epoch } => {
                    match self.load_partition(replicas, change.partition) {
                        Ok(records) => tracing::info!(
                            partition = change.partition,
                            leader_epoch,
                            records,
                            "coordinating the groups of __consumer_offsets partition"
                        ),
                        Err(err) => tracing::error!(
                            partition = change.partition,
                            "cannot load committed offsets: {err}"
                        ),
                    }
                }
                Transition::BecameFollower { .. } | Transition::WentOffline => {
                    self.unload_partition(change.partition)
                }
                Transition::Unchanged => {}
            }
        }
    }
}

/// Appends `records` to `__consumer_offsets-<index>` in `replicas` as one batch stamped with the
/// current leader epoch: the broker's [`OffsetsLog::append`]. Blocking; callers hold the group's
/// lock.
pub(crate) fn append_to_partition(
    replicas: &ReplicaManager,
    index: i32,
    records: &[OffsetsRecord],
    now_ms: i64,
) -> Result<ReplicationWait, ResponseError> {
    let partition = replicas
        .get(CONSUMER_OFFSETS_TOPIC, index)
        .ok_or(ResponseError::NotCoordinator)?;
    let mut batch = records::build_batch(records, now_ms).map_err(|err| {
        tracing::error!(partition = index, "cannot encode group records: {err}");
        ResponseError::UnknownServerError
    })?;
    // Leadership is checked under the log's lock (a broker that just became a follower must
    // not append), and the batch stamped with that leadership's epoch, like a produced one,
    // so a follower of the offsets partition can tell where its log diverged.
    let Ok(LeaderAppend {
        appended,
        leader_epoch,
        ..
    }) = replicas.append_to_leader(&partition, None, |log, leader_epoch| {
        log.append(&mut batch, None, leader_epoch)
    })
    else {
        return Err(ResponseError::NotCoordinator);
    };
    match appended {
        Ok(info) => Ok(ReplicationWait {
            min_insync_replicas: partition.settings().min_insync_replicas,
            partition,
            leader_epoch,
            required_offset: info.last_offset + 1,
        }),
        Err(err) => {
            tracing::error!(partition = index, "cannot append group records: {err}");
            Err(ResponseError::NotCoordinator)
        }
    }
}

/// Kafka's mapping of a failed group metadata append (`GroupMetadataManager.storeGroup`): the
/// error the SyncGroup (or static member's JoinGroup) waiting for it is answered with.
pub fn store_error(error: ResponseError) -> ResponseError {
    match error {
        ResponseError::UnknownTopicOrPartition
        | ResponseError::NotEnoughReplicas
        | ResponseError::NotEnoughReplicasAfterAppend => ResponseError::CoordinatorNotAvailable,
        ResponseError::NotLeaderOrFollower | ResponseError::KafkaStorageError => {
            ResponseError::NotCoordinator
        }
        ResponseError::RequestTimedOut => ResponseError::RebalanceInProgress,
        ResponseError::MessageTooLarge
        | ResponseError::RecordListTooLarge
        | ResponseError::InvalidFetchSize => ResponseError::UnknownServerError,
        other => other,
    }
}

#[cfg(test)]
mod tests;
