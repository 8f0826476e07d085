//! The group coordinator (Kafka's classic consumer-group protocol).
//!
//! - [`state`]: one group's membership state machine (pure: no clock, no I/O), unit-tested alone.
//! - [`records`]: committed offsets as `__consumer_offsets` records, in Kafka's binary format.
//! - [`GroupCoordinator`]: the groups this broker coordinates, the clock, the periodic tick that
//!   expires sessions and completes rebalances, and the offsets' persistence.
//!
//! A group's coordinator partition is `abs(hash(group id)) % offsets.topic.num.partitions` of
//! `__consumer_offsets` (Kafka's rule, with Java's `String.hashCode`), and its coordinator is that
//! partition's leader. Committed offsets are appended to that partition and acknowledged (and made
//! visible) once its ISR has them (`offsets.commit.timeout.ms`); a broker that becomes the
//! partition's leader replays it, one that stops being leader drops its groups, so offsets
//! survive restarts and coordinator failover. Offsets of groups that stay Empty expire after `offsets.retention.minutes`
//! (checked every `offsets.retention.check.interval.ms` from the tick): they are tombstoned in
//! the log, so they stay gone after a restart, and a group left Empty with no offsets is removed.
//! Membership is kept only in memory: after a restart members get
//! UNKNOWN_MEMBER_ID and rejoin, as they do when a group's coordinator moves.

pub mod records;
pub mod state;

use std::collections::HashMap;
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
pub use state::{CommittedOffset, Group, GroupConfig, GroupState};

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
                    strong.groups.tick();
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
        // Tombstones are not waited for: one lost in a failover only brings back an offset the
        // next pass expires again.
        self.expire_offsets_with(|group_id, tombstones| {
            self.append_offsets(replicas, group_id, tombstones)
                .map(|_| ())
        })
    }

    /// [`GroupCoordinator::expire_offsets`] with the tombstones' persistence given: `persist` is
    /// called under the group's lock, and only if it succeeds are the offsets removed from memory.
    /// Then every Empty group with no offsets left becomes Dead and is removed.
    pub fn expire_offsets_with(
        &self,
        mut persist: impl FnMut(
            &str,
            &[(String, i32, Option<CommittedOffset>)],
        ) -> Result<(), ResponseError>,
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
            if !expired.is_empty() {
                let tombstones: Vec<_> = expired
                    .iter()
                    .map(|(topic, index)| (topic.clone(), *index, None))
                    .collect();
                if let Err(err) = persist(&group_id, &tombstones) {
                    tracing::warn!(
                        group = group_id,
                        "cannot tombstone expired offsets: {err:?}; keeping them"
                    );
                    continue;
                }
                for key in expired {
                    group.offsets.remove(&key);
                    outcome.expired.push((group_id.clone(), key.0, key.1));
                }
            }
            if group.state() == GroupState::Empty && group.offsets.is_empty() {
                group.mark_dead();
                drop(group);
                self.remove_group(&group_id, &shared);
                outcome.removed_groups.push(group_id);
            }
        }
        outcome
    }

    /// One pass of every group's timers.
    pub fn tick(&self) {
        let now_ms = self.now_ms();
        for group in self.all_groups() {
            lock(&group).tick(now_ms);
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
        if changes.is_empty() {
            return Ok(None);
        }
        let partition = replicas
            .get(CONSUMER_OFFSETS_TOPIC, self.partition_for(group_id))
            .ok_or(ResponseError::NotCoordinator)?;
        let now_ms = self.now_ms();
        let records: Vec<(Bytes, Option<Bytes>)> = changes
            .iter()
            .map(|(topic, index, offset)| {
                (
                    records::offset_key(group_id, topic, *index),
                    offset.as_ref().map(records::offset_value),
                )
            })
            .collect();
        let mut batch = records::build_batch(&records, now_ms).map_err(|err| {
            tracing::error!(group = group_id, "cannot encode offset records: {err}");
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
                tracing::error!(group = group_id, "cannot append committed offsets: {err}");
                Err(ResponseError::NotCoordinator)
            }
            None => Err(ResponseError::NotCoordinator),
        }
    }

    /// Kafka's `onElection`: this broker now leads `__consumer_offsets-<partition>`, so it
    /// coordinates that partition's groups: their committed offsets are rebuilt from its log
    /// (last value per key wins; a tombstone deletes), replacing whatever was held for them.
    /// Returns the records replayed.
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
                    changes.extend(records::decode_batches(read.records)?);
                    offset = read.next_offset;
                }
                Ok::<_, String>(changes)
            })
            .unwrap_or_else(|| Ok(Vec::new()))
            .map_err(|err| format!("__consumer_offsets-{index}: {err}"))?;
        let loaded = changes.len();
        for (group_id, topic, partition, offset) in changes {
            let group = self.group_or_create(&group_id);
            let mut group = lock(&group);
            match offset {
                Some(offset) => {
                    group.offsets.insert((topic, partition), offset);
                }
                None => {
                    group.offsets.remove(&(topic, partition));
                }
            }
        }
        // Groups whose offsets were all deleted are gone.
        self.map().retain(|group_id, group| {
            self.partition_for(group_id) != index || !lock(group).offsets.is_empty()
        });
        Ok(loaded)
    }

    /// Kafka's `onResignation`: another broker coordinates this partition's groups now; their
    /// state here is dropped (members find the new coordinator through NOT_COORDINATOR).
    pub fn unload_partition(&self, index: i32) {
        self.map()
            .retain(|group_id, _| self.partition_for(group_id) != index);
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
        assert_eq!(synced.try_recv().expect("synced").error, None);
        assert_eq!(group.state(), GroupState::Stable);
        "m1".into()
    }

    type Persisted = Vec<(String, Vec<(String, i32)>)>;

    fn pass(coordinator: &GroupCoordinator, persisted: &mut Persisted) -> ExpiryOutcome {
        coordinator.expire_offsets_with(|group, tombstones| {
            assert!(tombstones.iter().all(|(_, _, value)| value.is_none()));
            persisted.push((
                group.to_string(),
                tombstones.iter().map(|(t, p, _)| (t.clone(), *p)).collect(),
            ));
            Ok(())
        })
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
        assert_eq!(persisted, vec![("simple".into(), vec![("t".into(), 0)])]);
        assert_eq!(offsets_of(&coordinator, "simple"), vec![("t".into(), 1)]);

        clock.set(30_000 + MINUTE);
        let outcome = pass(&coordinator, &mut persisted);
        assert_eq!(outcome.expired, vec![("simple".into(), "t".into(), 1)]);
        assert_eq!(outcome.removed_groups, vec!["simple".to_string()]);
        assert!(
            coordinator.group("simple").is_none(),
            "Empty without offsets: removed"
        );
        assert_eq!(persisted.len(), 2);
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
        assert_eq!(
            persisted,
            vec![("g".into(), vec![("sub".into(), 0), ("sub".into(), 1)])]
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
        assert!(persisted.is_empty(), "nothing to tombstone");
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
