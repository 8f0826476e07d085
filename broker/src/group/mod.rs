//! The group coordinator (Kafka's classic consumer-group protocol).
//!
//! - [`state`]: one group's membership state machine (pure: no clock, no I/O), unit-tested alone.
//! - [`records`]: committed offsets and group metadata as `__consumer_offsets` records, in
//!   Kafka's binary format.
//! - [`GroupCoordinator`]: the groups this broker coordinates, the clock, the periodic tick that
//!   expires sessions and completes rebalances, and the persistence of offsets and groups.
//!
//! A group's coordinator partition is `abs(hash(group id)) % offsets.topic.num.partitions` of
//! `__consumer_offsets` (Kafka's rule, with Java's `String.hashCode`), and its coordinator is that
//! partition's leader. Two kinds of record go there, appended under the group's lock (so the log
//! holds a group's changes in the order they happened):
//!
//! - committed offsets, acknowledged (and made visible) once the partition's ISR has them
//!   (`offsets.commit.timeout.ms`);
//! - group metadata (Kafka's `storeGroup`): generation, protocol type and name, leader, and every
//!   member with its session and rebalance timeouts, subscription and assignment. Written when
//!   the leader's SyncGroup completes a generation (the group becomes Stable, and the SyncGroups
//!   are answered, only once the ISR has the record; a failure answers them with the error and
//!   rebalances), when a static member takes over its instance in a Stable group (its JoinGroup
//!   waits likewise; a failure undoes the takeover), and when the group becomes Empty (not
//!   waited for). DeleteGroups and the removal of an expired group append a tombstone.
//!
//! A broker that becomes the partition's leader replays it (Kafka's `loadGroupsAndOffsets`: the
//! last record per key wins, a tombstone deletes): a group whose last record has members is
//! Stable with them, their generation and assignments, each member's session starting at load
//! time, so members keep heartbeating across a coordinator restart or failover; one without
//! members is Empty with its generation. A broker that stops being leader drops its groups
//! (waiting JoinGroups and SyncGroups get NOT_COORDINATOR). Offsets of groups that stay Empty
//! expire after `offsets.retention.minutes` (checked every `offsets.retention.check.interval.ms`
//! from the tick): they are tombstoned in the log, so they stay gone after a restart, and a group
//! left Empty with no offsets is removed.

pub mod records;
pub mod state;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use skald_controller::names::CONSUMER_OFFSETS_TOPIC;
use skald_controller::MetadataImage;
use skald_storage::clock::{Clock, SystemClock};

use crate::broker::Broker;
use crate::config::ServerConfig;
use crate::replica_manager::{ReplicaManager, RoleChange};
use crate::replication::state::Transition;
use crate::replication::ReplicationWait;
use records::Change;
pub use state::{CommittedOffset, Group, GroupConfig, GroupState, GroupStore};

/// How often sessions, pending member ids and rebalance deadlines are checked.
const TICK_INTERVAL: Duration = Duration::from_millis(50);
/// Kafka's `offset.metadata.max.bytes` default.
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;
/// How much of a `__consumer_offsets` partition one replay read takes.
const REPLAY_READ_BYTES: usize = 1 << 20;

/// Coordinator settings from the server properties (Kafka's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// `offsets.topic.num.partitions`
    pub offsets_topic_partitions: i32,
    /// `offsets.topic.replication.factor`
    pub offsets_topic_replication_factor: i16,
    /// `offsets.retention.minutes`, in milliseconds.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`
    pub offsets_retention_check_interval_ms: i64,
    /// `offsets.commit.timeout.ms`: how long a commit waits for the offsets partition's ISR.
    pub offsets_commit_timeout_ms: u64,
    pub group: GroupConfig,
}

impl CoordinatorConfig {
    pub fn from_server(config: &ServerConfig) -> Result<CoordinatorConfig, String> {
        fn parse<T: std::str::FromStr>(config: &ServerConfig, key: &str) -> Result<T, String> {
            let value = config.get(key);
            value
                .trim()
                .parse()
                .map_err(|_| format!("invalid value '{value}' for {key}"))
        }
        let parsed = CoordinatorConfig {
            offsets_topic_partitions: parse(config, "offsets.topic.num.partitions")?,
            offsets_topic_replication_factor: parse(config, "offsets.topic.replication.factor")?,
            offsets_retention_ms: parse::<i64>(config, "offsets.retention.minutes")?
                .saturating_mul(60_000),
            offsets_retention_check_interval_ms: parse(
                config,
                "offsets.retention.check.interval.ms",
            )?,
            offsets_commit_timeout_ms: parse::<u64>(config, "offsets.commit.timeout.ms")?.max(1),
            group: GroupConfig {
                min_session_timeout_ms: parse(config, "group.min.session.timeout.ms")?,
                max_session_timeout_ms: parse(config, "group.max.session.timeout.ms")?,
                initial_rebalance_delay_ms: parse(config, "group.initial.rebalance.delay.ms")?,
                max_size: parse::<u32>(config, "group.max.size")? as usize,
            },
        };
        if parsed.offsets_topic_partitions < 1 {
            return Err("offsets.topic.num.partitions must be at least 1".into());
        }
        if parsed.offsets_topic_replication_factor < 1 {
            return Err("offsets.topic.replication.factor must be at least 1".into());
        }
        // Kafka: both at least 1.
        if parsed.offsets_retention_ms < 60_000 {
            return Err("offsets.retention.minutes must be at least 1".into());
        }
        if parsed.offsets_retention_check_interval_ms < 1 {
            return Err("offsets.retention.check.interval.ms must be at least 1".into());
        }
        if parsed.group.initial_rebalance_delay_ms < 0 || parsed.group.max_size < 1 {
            return Err(
                "group.initial.rebalance.delay.ms must be >= 0 and group.max.size >= 1".into(),
            );
        }
        Ok(parsed)
    }
}

/// Java's `String.hashCode` (over UTF-16 code units), as Kafka hashes group ids.
pub fn java_string_hash(value: &str) -> i32 {
    value.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// Kafka's `Utils.abs(groupId.hashCode) % groupMetadataTopicPartitionCount`.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let hash = java_string_hash(group_id);
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions.max(1)
}

pub type SharedGroup = Arc<Mutex<Group>>;

/// The groups this broker coordinates.
#[derive(Debug)]
pub struct GroupCoordinator {
    pub config: CoordinatorConfig,
    clock: Arc<dyn Clock>,
    groups: Mutex<HashMap<String, SharedGroup>>,
    ticker: Once,
    /// When the next offset-expiry pass is due (`None`: at the first tick).
    next_expiry_ms: Mutex<Option<i64>>,
}

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

/// What one offset-expiry pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiryOutcome {
    /// (group, topic, partition) of every offset expired (and tombstoned).
    pub expired: Vec<(String, String, i32)>,
    /// Groups removed: Empty with no offsets left.
    pub removed_groups: Vec<String>,
}

impl GroupCoordinator {
    pub fn new(config: CoordinatorConfig) -> GroupCoordinator {
        GroupCoordinator::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: CoordinatorConfig, clock: Arc<dyn Clock>) -> GroupCoordinator {
        GroupCoordinator {
            config,
            clock,
            groups: Mutex::new(HashMap::new()),
            ticker: Once::new(),
            next_expiry_ms: Mutex::new(None),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn partition_for(&self, group_id: &str) -> i32 {
        partition_for(group_id, self.config.offsets_topic_partitions)
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, SharedGroup>> {
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn group(&self, group_id: &str) -> Option<SharedGroup> {
        self.map().get(group_id).cloned()
    }

    pub fn group_or_create(&self, group_id: &str) -> SharedGroup {
        Arc::clone(
            self.map()
                .entry(group_id.to_string())
                .or_insert_with(|| Arc::new(Mutex::new(Group::new(group_id, self.config.group)))),
        )
    }

    /// Every group, for ListGroups.
    pub fn all_groups(&self) -> Vec<SharedGroup> {
        self.map().values().cloned().collect()
    }

    /// Forgets a group deleted by DeleteGroups (only if it is still the same, dead, group).
    pub fn remove_group(&self, group_id: &str, group: &SharedGroup) {
        let mut map = self.map();
        if map.get(group_id).is_some_and(|g| Arc::ptr_eq(g, group)) {
            map.remove(group_id);
        }
    }

    /// Whether this broker coordinates `group_id`: its `__consumer_offsets` partition exists and is
    /// led and hosted here. COORDINATOR_NOT_AVAILABLE before the topic exists (FindCoordinator
    /// creates it), NOT_COORDINATOR if another broker leads the partition.
    pub fn check_coordinator(
        &self,
        image: &MetadataImage,
        replicas: &ReplicaManager,
        group_id: &str,
    ) -> Result<(), ResponseError> {
        if image.topic(CONSUMER_OFFSETS_TOPIC).is_none() {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        match replicas.led(image, CONSUMER_OFFSETS_TOPIC, self.partition_for(group_id)) {
            Ok(_) => Ok(()),
            Err(_) => Err(ResponseError::NotCoordinator),
        }
    }

    /// Starts the periodic tick of `broker`'s coordinator on the current runtime, once: group
    /// timers every [`TICK_INTERVAL`], and an offset-expiry pass (on the blocking pool) whenever
    /// one is due. It holds the broker weakly and stops when the broker is gone.
    pub fn ensure_ticker(broker: &Arc<Broker>) {
        broker.groups.ticker.call_once(|| {
            let broker: Weak<Broker> = Arc::downgrade(broker);
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(TICK_INTERVAL);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let Some(strong) = broker.upgrade() else {
                        return;
                    };
                    for (group, waits) in strong.groups.tick(&strong.replicas) {
                        let coordinator = Arc::clone(&strong.groups);
                        tokio::spawn(async move { coordinator.await_stores(&group, waits).await });
                    }
                    if strong.groups.expiry_due() {
                        let pass = tokio::task::spawn_blocking(move || {
                            strong.groups.expire_offsets(&strong.replicas)
                        });
                        match pass.await {
                            Ok(outcome) if outcome.expired.is_empty() => {}
                            Ok(outcome) => tracing::info!(
                                offsets = outcome.expired.len(),
                                groups_removed = outcome.removed_groups.len(),
                                "expired committed offsets"
                            ),
                            Err(err) => tracing::error!("offset expiry pass failed: {err}"),
                        }
                    }
                }
            });
        });
    }

    /// Whether an offset-expiry pass is due now (the first tick, then every
    /// `offsets.retention.check.interval.ms`); if so, schedules the next one.
    pub fn expiry_due(&self) -> bool {
        let now_ms = self.now_ms();
        let mut next = self
            .next_expiry_ms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if next.is_some_and(|due| now_ms < due) {
            return false;
        }
        *next = Some(now_ms.saturating_add(self.config.offsets_retention_check_interval_ms));
        true
    }

    /// One offset-expiry pass over `__consumer_offsets` in `replicas` (Kafka's
    /// `cleanupGroupMetadata`): expired offsets are tombstoned, then forgotten. Blocking.
    pub fn expire_offsets(&self, replicas: &ReplicaManager) -> ExpiryOutcome {
        // Tombstones are not waited for: one lost in a failover only brings back an offset (or
        // an Empty group) the next pass expires again.
        self.expire_offsets_with(|group_id, tombstones| {
            self.append_tombstones(replicas, group_id, tombstones)
                .map(|_| ())
        })
    }

    /// [`GroupCoordinator::expire_offsets`] with the tombstones' persistence given: `persist` is
    /// called under the group's lock, and only if it succeeds are the offsets removed from memory
    /// and, if the group is left Empty with no offsets, the group marked Dead and removed.
    pub fn expire_offsets_with(
        &self,
        mut persist: impl FnMut(&str, &Tombstones) -> Result<(), ResponseError>,
    ) -> ExpiryOutcome {
        let now_ms = self.now_ms();
        let retention_ms = self.config.offsets_retention_ms;
        let mut outcome = ExpiryOutcome::default();
        let mut groups: Vec<(String, SharedGroup)> = self
            .map()
            .iter()
            .map(|(id, group)| (id.clone(), Arc::clone(group)))
            .collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        for (group_id, shared) in groups {
            let mut group = lock(&shared);
            if group.state() == GroupState::Dead {
                continue;
            }
            let expired = group.expired_offsets(now_ms, retention_ms);
            // Empty with no offsets left: the group goes too (Kafka's cleanupGroupMetadata).
            let dead = group.state() == GroupState::Empty && group.offsets.len() == expired.len();
            let tombstones = Tombstones {
                group: dead && group.generation_id() > 0,
                offsets: expired,
            };
            if !tombstones.is_empty() {
                if let Err(err) = persist(&group_id, &tombstones) {
                    tracing::warn!(
                        group = group_id,
                        "cannot tombstone expired offsets: {err:?}; keeping them"
                    );
                    continue;
                }
            }
            for key in tombstones.offsets {
                group.offsets.remove(&key);
                outcome.expired.push((group_id.clone(), key.0, key.1));
            }
            if dead {
                group.mark_dead();
                drop(group);
                self.remove_group(&group_id, &shared);
                outcome.removed_groups.push(group_id);
            }
        }
        outcome
    }

    /// One pass of every group's timers; the records that makes due (groups that became Empty)
    /// are appended. Blocking when there are any (`block_in_place`). Returns the waits of awaited
    /// stores, which only a request's own call normally finds.
    pub fn tick(&self, replicas: &ReplicaManager) -> Vec<(SharedGroup, Vec<StoreWait>)> {
        let now_ms = self.now_ms();
        let mut waiting = Vec::new();
        for group in self.all_groups() {
            let mut locked = lock(&group);
            locked.tick(now_ms);
            let waits = self.persist_due(replicas, &mut locked);
            drop(locked);
            if !waits.is_empty() {
                waiting.push((group, waits));
            }
        }
        waiting
    }

    /// Appends the group metadata records `group` has due (Kafka's `storeGroup`), in order. Call
    /// it holding the group's lock, right after the operation that made them due; it blocks
    /// (under `block_in_place`) only if there are any. A store that cannot be appended is
    /// completed with its error at once; the awaited ones appended are returned, to be passed to
    /// [`GroupCoordinator::await_stores`] after the lock is released.
    pub fn persist_due(&self, replicas: &ReplicaManager, group: &mut Group) -> Vec<StoreWait> {
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
                        self.append_records(replicas, &group.id, &[(key, Some(value))])
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
        replicas: &ReplicaManager,
        group_id: &str,
        changes: &[(String, i32, Option<CommittedOffset>)],
    ) -> Result<Option<ReplicationWait>, ResponseError> {
        let records: Vec<(Bytes, Option<Bytes>)> = changes
            .iter()
            .map(|(topic, index, offset)| {
                (
                    records::offset_key(group_id, topic, *index),
                    offset.as_ref().map(records::offset_value),
                )
            })
            .collect();
        self.append_records(replicas, group_id, &records)
    }

    /// Appends the tombstones of a group's offsets and, if it is deleted and has had a
    /// generation, of its metadata, in one batch. Blocking, under the group's lock.
    pub fn append_tombstones(
        &self,
        replicas: &ReplicaManager,
        group_id: &str,
        tombstones: &Tombstones,
    ) -> Result<Option<ReplicationWait>, ResponseError> {
        let mut records: Vec<(Bytes, Option<Bytes>)> = tombstones
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
        self.append_records(replicas, group_id, &records)
    }

    /// Appends `records` for `group_id` to its partition as one batch stamped with the current
    /// leader epoch. Blocking; call it holding the group's lock.
    fn append_records(
        &self,
        replicas: &ReplicaManager,
        group_id: &str,
        records: &[(Bytes, Option<Bytes>)],
    ) -> Result<Option<ReplicationWait>, ResponseError> {
        if records.is_empty() {
            return Ok(None);
        }
        let partition = replicas
            .get(CONSUMER_OFFSETS_TOPIC, self.partition_for(group_id))
            .ok_or(ResponseError::NotCoordinator)?;
        let now_ms = self.now_ms();
        let mut batch = records::build_batch(records, now_ms).map_err(|err| {
            tracing::error!(group = group_id, "cannot encode group records: {err}");
            ResponseError::UnknownServerError
        })?;
        // Stamped with the leadership it was written in, like a produced batch, so a follower
        // of the offsets partition can tell where its log diverged.
        let leader_epoch = partition
            .replica_state()
            .leader()
            .map(|leader| leader.leader_epoch)
            .ok_or(ResponseError::NotCoordinator)?;
        let appended = partition.with_log(|log| {
            let appended = log.append(&mut batch, None, leader_epoch);
            if appended.is_ok() {
                replicas.on_append(&partition, log);
            }
            appended
        });
        match appended {
            Some(Ok(info)) => Ok(Some(ReplicationWait {
                min_insync_replicas: partition.settings.min_insync_replicas,
                partition,
                leader_epoch,
                required_offset: info.last_offset + 1,
            })),
            Some(Err(err)) => {
                tracing::error!(group = group_id, "cannot append group records: {err}");
                Err(ResponseError::NotCoordinator)
            }
            None => Err(ResponseError::NotCoordinator),
        }
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
        let changes = partition
            .with_log(|log| {
                let mut changes = Vec::new();
                let mut offset = log.log_start_offset();
                loop {
                    let read = log
                        .read(offset, REPLAY_READ_BYTES)
                        .map_err(|err| err.to_string())?;
                    if read.records.is_empty() {
                        break;
                    }
                    let decoded =
                        records::decode_batches(read.records).map_err(|err| err.to_string())?;
                    changes.extend(decoded);
                    offset = read.next_offset;
                }
                Ok::<_, String>(changes)
            })
            .unwrap_or_else(|| Ok(Vec::new()))
            .map_err(|err| format!("__consumer_offsets-{index}: {err}"))?;
        let loaded = changes.len();
        self.replay(index, changes);
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

/// An awaited group metadata store, appended: its replication still to be waited for.
#[derive(Debug)]
pub struct StoreWait {
    pub seq: u64,
    pub wait: ReplicationWait,
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

/// Locks a group; a poisoned lock still holds a consistent group (no method panics midway on input).
pub fn lock(group: &SharedGroup) -> MutexGuard<'_, Group> {
    group
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh member id: `<client id>-<uuid>`, as Kafka makes them.
pub fn new_member_id(client_id: &str) -> String {
    let uuid = uuid::Uuid::from_u128(skald_controller::controller::random_topic_id());
    format!("{client_id}-{uuid}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use skald_storage::clock::ManualClock;
    use state::{JoinRequest, Reply};

    const MINUTE: i64 = 60_000;

    fn coordinator(clock: &Arc<ManualClock>) -> GroupCoordinator {
        let config = CoordinatorConfig {
            offsets_topic_partitions: 1,
            offsets_topic_replication_factor: 1,
            offsets_retention_ms: MINUTE,
            offsets_retention_check_interval_ms: 10_000,
            offsets_commit_timeout_ms: 5_000,
            group: GroupConfig {
                initial_rebalance_delay_ms: 0,
                ..GroupConfig::default()
            },
        };
        GroupCoordinator::with_clock(config, Arc::clone(clock) as Arc<dyn Clock>)
    }

    fn committed(offset: i64, at_ms: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: at_ms,
        }
    }

    /// A `ConsumerProtocolSubscription` v0 for `topics`.
    fn subscription(topics: &[&str]) -> Bytes {
        let mut out = vec![0u8, 0];
        out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
        for topic in topics {
            out.extend_from_slice(&(topic.len() as i16).to_be_bytes());
            out.extend_from_slice(topic.as_bytes());
        }
        out.extend_from_slice(&(-1i32).to_be_bytes()); // user data: null
        Bytes::from(out)
    }

    /// One consumer member subscribed to `topics`, joined and synced: Stable generation 1.
    fn stable_member(group: &mut Group, topics: &[&str], now_ms: i64) -> String {
        let request = JoinRequest {
            client_id: "c".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), subscription(topics))],
            fresh_member_id: "m1".into(),
            ..JoinRequest::default()
        };
        let Reply::Later(mut joined) = group.join(request, now_ms) else {
            panic!("join should wait for the rebalance");
        };
        group.tick(now_ms);
        let joined = joined.try_recv().expect("rebalance completed");
        assert_eq!(joined.error, None);
        let Reply::Later(mut synced) = group.sync("m1", None, 1, None, None, Vec::new(), now_ms)
        else {
            panic!("the leader's sync completes through the waiter");
        };
        assert!(
            synced.try_recv().is_err(),
            "answered once the record is stored"
        );
        for store in group.take_due_stores() {
            group.store_completed(store.seq, Ok(()), now_ms);
        }
        assert_eq!(synced.try_recv().expect("synced").error, None);
        assert_eq!(group.state(), GroupState::Stable);
        "m1".into()
    }

    type Persisted = Vec<(String, Tombstones)>;

    fn pass(coordinator: &GroupCoordinator, persisted: &mut Persisted) -> ExpiryOutcome {
        coordinator.expire_offsets_with(|group, tombstones| {
            persisted.push((group.to_string(), tombstones.clone()));
            Ok(())
        })
    }

    fn tombstones(offsets: &[(&str, i32)], group: bool) -> Tombstones {
        Tombstones {
            offsets: offsets.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
            group,
        }
    }

    fn offsets_of(coordinator: &GroupCoordinator, group: &str) -> Vec<(String, i32)> {
        coordinator
            .group(group)
            .map(|g| lock(&g).offsets.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn standalone_offsets_expire_one_by_one_after_their_commit() {
        let clock = Arc::new(ManualClock::new(0));
        let coordinator = coordinator(&clock);
        {
            let group = coordinator.group_or_create("simple");
            let mut group = lock(&group);
            group.offsets.insert(("t".into(), 0), committed(5, 0));
            group.offsets.insert(("t".into(), 1), committed(7, 30_000));
        }
        let mut persisted = Persisted::new();
        clock.set(MINUTE - 1);
        assert_eq!(pass(&coordinator, &mut persisted), ExpiryOutcome::default());
        assert!(persisted.is_empty());

        clock.set(MINUTE);
        let outcome = pass(&coordinator, &mut persisted);
        assert_eq!(outcome.expired, vec![("simple".into(), "t".into(), 0)]);
        assert!(outcome.removed_groups.is_empty());
        assert_eq!(
            persisted,
            vec![("simple".into(), tombstones(&[("t", 0)], false))]
        );
        assert_eq!(offsets_of(&coordinator, "simple"), vec![("t".into(), 1)]);

        clock.set(30_000 + MINUTE);
        let outcome = pass(&coordinator, &mut persisted);
        assert_eq!(outcome.expired, vec![("simple".into(), "t".into(), 1)]);
        assert_eq!(outcome.removed_groups, vec!["simple".to_string()]);
        assert!(
            coordinator.group("simple").is_none(),
            "Empty without offsets: removed"
        );
        // Never had a generation, so no metadata record to tombstone.
        assert_eq!(
            persisted[1],
            ("simple".into(), tombstones(&[("t", 1)], false))
        );
    }

    #[test]
    fn an_emptied_groups_offsets_expire_retention_after_it_emptied() {
        let clock = Arc::new(ManualClock::new(0));
        let coordinator = coordinator(&clock);
        let shared = coordinator.group_or_create("g");
        {
            let mut group = lock(&shared);
            let member = stable_member(&mut group, &["sub"], 0);
            group.offsets.insert(("sub".into(), 0), committed(10, 0));
            group.offsets.insert(("sub".into(), 1), committed(11, 0));
            group.offsets.insert(("gone".into(), 0), committed(12, 0));
            group
                .offsets
                .insert(("gone".into(), 1), committed(13, 50_000));
            // Stable, far past retention: subscribed topics' offsets stay, unsubscribed ones
            // expire after their commit (KIP-496).
            drop(group);
            clock.set(5 * MINUTE);
            let mut persisted = Persisted::new();
            let outcome = pass(&coordinator, &mut persisted);
            assert_eq!(
                outcome.expired,
                vec![
                    ("g".into(), "gone".into(), 0),
                    ("g".into(), "gone".into(), 1)
                ]
            );
            assert_eq!(
                offsets_of(&coordinator, "g"),
                vec![("sub".into(), 0), ("sub".into(), 1)]
            );
            let mut group = lock(&shared);
            assert_eq!(group.leave(&member, None, 5 * MINUTE), None);
            assert_eq!(group.state(), GroupState::Empty);
            assert_eq!(group.empty_since_ms(), Some(5 * MINUTE));
        }
        // The old commits do not count: the clock starts when the group became Empty.
        let mut persisted = Persisted::new();
        clock.set(6 * MINUTE - 1);
        assert_eq!(pass(&coordinator, &mut persisted), ExpiryOutcome::default());
        assert_eq!(offsets_of(&coordinator, "g").len(), 2);

        clock.set(6 * MINUTE);
        let outcome = pass(&coordinator, &mut persisted);
        assert_eq!(
            outcome.expired,
            vec![("g".into(), "sub".into(), 0), ("g".into(), "sub".into(), 1)]
        );
        assert_eq!(outcome.removed_groups, vec!["g".to_string()]);
        // The group goes with its last offsets: its metadata is tombstoned with them.
        assert_eq!(
            persisted,
            vec![("g".into(), tombstones(&[("sub", 0), ("sub", 1)], true))]
        );
        assert!(coordinator.group("g").is_none());
        assert_eq!(lock(&shared).state(), GroupState::Dead);
    }

    #[test]
    fn groups_with_members_keep_their_offsets() {
        let clock = Arc::new(ManualClock::new(0));
        let coordinator = coordinator(&clock);
        {
            let shared = coordinator.group_or_create("busy");
            let mut group = lock(&shared);
            stable_member(&mut group, &["sub"], 0);
            group.offsets.insert(("sub".into(), 0), committed(1, 0));
        }
        clock.set(10 * MINUTE);
        // Heartbeats would keep the member; here its session is simply still long enough.
        lock(&coordinator.group("busy").unwrap()).heartbeat("m1", None, 1, 10 * MINUTE - 1);
        let mut persisted = Persisted::new();
        assert_eq!(pass(&coordinator, &mut persisted), ExpiryOutcome::default());
        assert_eq!(offsets_of(&coordinator, "busy"), vec![("sub".into(), 0)]);
    }

    #[test]
    fn offsets_stay_if_their_tombstones_cannot_be_written() {
        let clock = Arc::new(ManualClock::new(0));
        let coordinator = coordinator(&clock);
        lock(&coordinator.group_or_create("s"))
            .offsets
            .insert(("t".into(), 0), committed(5, 0));
        clock.set(2 * MINUTE);
        let outcome = coordinator.expire_offsets_with(|_, _| Err(ResponseError::NotCoordinator));
        assert_eq!(outcome, ExpiryOutcome::default());
        assert_eq!(offsets_of(&coordinator, "s"), vec![("t".into(), 0)]);
        // Next pass succeeds.
        let mut persisted = Persisted::new();
        assert_eq!(
            pass(&coordinator, &mut persisted).removed_groups,
            vec!["s".to_string()]
        );
    }

    #[test]
    fn empty_groups_without_offsets_are_removed() {
        let clock = Arc::new(ManualClock::new(0));
        let coordinator = coordinator(&clock);
        let shared = coordinator.group_or_create("left");
        {
            let mut group = lock(&shared);
            stable_member(&mut group, &["sub"], 0);
            assert_eq!(group.leave("m1", None, 1), None);
        }
        let mut persisted = Persisted::new();
        let outcome = pass(&coordinator, &mut persisted);
        assert_eq!(outcome.removed_groups, vec!["left".to_string()]);
        assert_eq!(
            persisted,
            vec![("left".into(), tombstones(&[], true))],
            "no offsets, but the group's metadata record"
        );
        assert!(coordinator.group("left").is_none());
    }

    #[test]
    fn expiry_runs_at_the_first_tick_then_every_check_interval() {
        let clock = Arc::new(ManualClock::new(1_000));
        let coordinator = coordinator(&clock);
        assert!(coordinator.expiry_due());
        assert!(!coordinator.expiry_due());
        clock.set(10_999);
        assert!(!coordinator.expiry_due());
        clock.set(11_000);
        assert!(coordinator.expiry_due());
        assert!(!coordinator.expiry_due());
    }

    #[test]
    fn retention_settings_follow_kafkas_names_and_limits() {
        let config = |overrides: &[(&str, &str)]| {
            let explicit = overrides
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect();
            CoordinatorConfig::from_server(&ServerConfig::from_properties(explicit)?)
        };
        let defaults = config(&[]).unwrap();
        assert_eq!(defaults.offsets_retention_ms, 10_080 * MINUTE);
        assert_eq!(defaults.offsets_retention_check_interval_ms, 600_000);
        let set = config(&[
            ("offsets.retention.minutes", "1"),
            ("offsets.retention.check.interval.ms", "250"),
        ])
        .unwrap();
        assert_eq!(set.offsets_retention_ms, MINUTE);
        assert_eq!(set.offsets_retention_check_interval_ms, 250);
        assert!(config(&[("offsets.retention.minutes", "0")]).is_err());
        assert!(config(&[("offsets.retention.check.interval.ms", "0")]).is_err());
    }

    fn member(
        id: &str,
        instance: Option<&str>,
        assignment: &'static [u8],
    ) -> records::MemberMetadata {
        records::MemberMetadata {
            member_id: id.into(),
            group_instance_id: instance.map(str::to_string),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: 30_000,
            session_timeout_ms: 10_000,
            subscription: subscription(&["t"]),
            assignment: Bytes::from_static(assignment),
        }
    }

    fn metadata(
        generation: i32,
        members: Vec<records::MemberMetadata>,
    ) -> records::GroupMetadataValue {
        let stable = !members.is_empty();
        records::GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation,
            protocol: stable.then(|| "range".to_string()),
            leader: members.first().map(|m| m.member_id.clone()),
            current_state_timestamp_ms: 300,
            members,
        }
    }

    /// `records` as the log would return them: encoded in one batch, decoded back.
    fn logged(records: Vec<(Bytes, Option<Bytes>)>) -> Vec<Change> {
        let batch = records::build_batch(&records, 0).unwrap();
        records::decode_batches(batch.freeze()).unwrap()
    }

    fn group_record(
        group: &str,
        value: Option<records::GroupMetadataValue>,
    ) -> (Bytes, Option<Bytes>) {
        (
            records::group_metadata_key(group).unwrap(),
            value.map(|value| records::group_metadata_value(&value).unwrap()),
        )
    }

    fn offset_record(group: &str, offset: Option<i64>) -> (Bytes, Option<Bytes>) {
        (
            records::offset_key(group, "t", 0),
            offset.map(|offset| records::offset_value(&committed(offset, 0))),
        )
    }

    #[test]
    fn replay_loads_the_last_record_of_each_group() {
        let clock = Arc::new(ManualClock::new(10_000));
        let coordinator = coordinator(&clock);
        let changes = logged(vec![
            group_record("stable", Some(metadata(1, vec![member("a", None, b"A")]))),
            group_record(
                "stable",
                Some(metadata(
                    2,
                    vec![member("a", None, b"A2"), member("b", Some("inst-b"), b"B2")],
                )),
            ),
            offset_record("stable", Some(5)),
            group_record("emptied", Some(metadata(1, vec![member("a", None, b"A")]))),
            offset_record("emptied", Some(6)),
            group_record("emptied", Some(metadata(2, Vec::new()))),
            group_record("deleted", Some(metadata(3, Vec::new()))),
            offset_record("deleted", Some(7)),
            offset_record("deleted", None),
            group_record("deleted", None),
            group_record("reborn", Some(metadata(4, Vec::new()))),
            group_record("reborn", None),
            offset_record("reborn", Some(8)),
            offset_record("plain", Some(9)),
        ]);
        coordinator.replay(0, changes);

        let mut ids: Vec<String> = coordinator
            .all_groups()
            .iter()
            .map(|g| lock(g).id.clone())
            .collect();
        ids.sort();
        assert_eq!(ids, ["emptied", "plain", "reborn", "stable"]);

        let stable = coordinator.group("stable").unwrap();
        let mut stable = lock(&stable);
        assert_eq!(
            (stable.state(), stable.generation_id(), stable.leader_id()),
            (GroupState::Stable, 2, Some("a"))
        );
        let assignments: Vec<_> = stable
            .describe_members()
            .into_iter()
            .map(|m| (m.member_id, m.group_instance_id, m.assignment))
            .collect();
        assert_eq!(
            assignments,
            vec![
                ("a".into(), None, Bytes::from_static(b"A2")),
                ("b".into(), Some("inst-b".into()), Bytes::from_static(b"B2")),
            ]
        );
        assert_eq!(stable.heartbeat("a", None, 2, 10_100), None);
        assert_eq!(stable.heartbeat("b", Some("inst-b"), 2, 10_100), None);
        assert_eq!(offsets_of_locked(&stable), vec![(("t".into(), 0), 5)]);
        drop(stable);

        let emptied = coordinator.group("emptied").unwrap();
        let emptied = lock(&emptied);
        assert_eq!(
            (
                emptied.state(),
                emptied.generation_id(),
                emptied.member_count()
            ),
            (GroupState::Empty, 2, 0)
        );
        assert_eq!(emptied.empty_since_ms(), Some(300));
        assert_eq!(offsets_of_locked(&emptied), vec![(("t".into(), 0), 6)]);
        drop(emptied);

        // Deleted, then used for offsets only: Empty, no generation, like "plain".
        for id in ["reborn", "plain"] {
            let group = coordinator.group(id).unwrap();
            let group = lock(&group);
            assert_eq!(
                (group.state(), group.generation_id()),
                (GroupState::Empty, 0)
            );
            assert_eq!(group.protocol_type(), None);
        }
    }

    fn offsets_of_locked(group: &Group) -> Vec<((String, i32), i64)> {
        group
            .offsets
            .iter()
            .map(|(key, offset)| (key.clone(), offset.offset))
            .collect()
    }

    #[test]
    fn replay_replaces_the_groups_held_and_answers_their_waiters() {
        let clock = Arc::new(ManualClock::new(0));
        let coordinator = coordinator(&clock);
        let held = coordinator.group_or_create("g");
        let request = JoinRequest {
            client_id: "c".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), subscription(&["t"]))],
            fresh_member_id: "m1".into(),
            ..JoinRequest::default()
        };
        let Reply::Later(mut joined) = lock(&held).join(request, 0) else {
            panic!("the first join waits");
        };
        assert_eq!(joined.try_recv().unwrap().error, None);
        let Reply::Later(mut waiting) = lock(&held).sync("m1", None, 1, None, None, Vec::new(), 0)
        else {
            panic!("the leader's sync waits for its record");
        };
        coordinator.replay(
            0,
            logged(vec![group_record(
                "g",
                Some(metadata(5, vec![member("x", None, b"X")])),
            )]),
        );
        assert_eq!(
            waiting.try_recv().unwrap().error,
            Some(ResponseError::NotCoordinator)
        );
        assert_eq!(lock(&held).state(), GroupState::Dead);
        let loaded = coordinator.group("g").unwrap();
        assert!(!Arc::ptr_eq(&loaded, &held));
        assert_eq!(lock(&loaded).generation_id(), 5);
    }

    #[test]
    fn a_loaded_empty_group_without_offsets_is_removed_with_a_tombstone() {
        let clock = Arc::new(ManualClock::new(0));
        let coordinator = coordinator(&clock);
        coordinator.replay(
            0,
            logged(vec![
                group_record("gone", Some(metadata(3, Vec::new()))),
                group_record("kept", Some(metadata(3, Vec::new()))),
                offset_record("kept", Some(1)),
            ]),
        );
        let mut persisted = Persisted::new();
        let outcome = pass(&coordinator, &mut persisted);
        assert_eq!(outcome.removed_groups, vec!["gone".to_string()]);
        assert_eq!(persisted, vec![("gone".into(), tombstones(&[], true))]);
        assert!(coordinator.group("kept").is_some());
    }

    #[test]
    fn store_errors_follow_kafkas_mapping() {
        for (append, answered) in [
            (
                ResponseError::NotEnoughReplicas,
                ResponseError::CoordinatorNotAvailable,
            ),
            (
                ResponseError::NotEnoughReplicasAfterAppend,
                ResponseError::CoordinatorNotAvailable,
            ),
            (
                ResponseError::NotLeaderOrFollower,
                ResponseError::NotCoordinator,
            ),
            (
                ResponseError::KafkaStorageError,
                ResponseError::NotCoordinator,
            ),
            (
                ResponseError::RequestTimedOut,
                ResponseError::RebalanceInProgress,
            ),
            (
                ResponseError::MessageTooLarge,
                ResponseError::UnknownServerError,
            ),
            (ResponseError::NotCoordinator, ResponseError::NotCoordinator),
        ] {
            assert_eq!(store_error(append), answered, "{append:?}");
        }
    }

    #[test]
    fn group_partitions_follow_kafkas_hash() {
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("ab"), 97 * 31 + 98);
        assert_eq!(partition_for("", 50), 0);
        // A negative hash takes its absolute value before the modulo.
        let negative = "polygenelubricants";
        assert_eq!(java_string_hash(negative), i32::MIN);
        assert_eq!(partition_for(negative, 50), 0);
        let hash = java_string_hash("console-consumer-1");
        assert_eq!(partition_for("console-consumer-1", 50), hash.abs() % 50);
    }
}
