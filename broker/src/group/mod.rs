//! The group coordinator (Kafka's classic consumer-group protocol).
//!
//! - [`state`]: one group's membership state machine (pure: no clock, no I/O), unit-tested alone.
//! - [`records`]: committed offsets and group metadata as `__consumer_offsets` records, in
//!   Kafka's binary format.
//! - [`persistence`]: the coordinator's side of `__consumer_offsets`: appending those records and
//!   waiting for their replication, and loading or dropping a partition's groups as this broker
//!   gains or loses its leadership.
//! - [`offsets_log`]: [`OffsetsLog`], the coordinator's narrow handle on `__consumer_offsets`
//!   (leadership check and append), which the broker implements and tests fake.
//! - [`handle`]: [`GroupsHandle`], what the group API handlers take instead of the broker.
//! - this module: [`GroupCoordinator`]'s settings, the registry of the groups this broker
//!   coordinates, the clock, and the periodic tick that expires sessions, completes rebalances
//!   and decides which committed offsets have expired.
//!
//! Nothing in this file reads or appends the log: where the tick or the expiry pass needs records
//! written, it calls into [`persistence`], which holds every read and append of
//! `__consumer_offsets` (they block, under the group's lock), so the order a group's records reach
//! the log in can be checked in one file.
//!
//! A group's coordinator partition is `abs(hash(group id)) % offsets.topic.num.partitions` of
//! `__consumer_offsets` (Kafka's rule, with Java's `String.hashCode`), and its coordinator is that
//! partition's leader. Offsets of groups that stay Empty expire after `offsets.retention.minutes`
//! (checked every `offsets.retention.check.interval.ms` from the tick): they are tombstoned in the
//! log before they leave memory, so they stay gone after a restart, and a group left Empty with
//! no offsets is removed.

pub mod handle;
pub mod offsets_log;
pub mod persistence;
pub mod records;
pub mod state;
#[cfg(test)]
pub(crate) mod testing;
pub mod txn_offsets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use skald_storage::clock::{Clock, SystemClock};

use crate::broker::Broker;
use crate::config::ServerConfig;
pub use handle::GroupsHandle;
pub use offsets_log::{AppendWait, OffsetsLog};
pub use persistence::{store_error, StoreWait, Tombstones};
pub use state::{CommittedOffset, Group, GroupConfig, GroupState, GroupStore};

/// How often sessions, pending member ids and rebalance deadlines are checked.
const TICK_INTERVAL: Duration = Duration::from_millis(50);
/// Kafka's `offset.metadata.max.bytes` default.
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;

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
    /// Offsets committed in transactions whose markers have yet to come (see [`txn_offsets`]).
    pending_txn_offsets: Mutex<txn_offsets::PendingTxnOffsets>,
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
            pending_txn_offsets: Mutex::new(Default::default()),
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
    /// led and hosted here ([`OffsetsLog::check_leader`]). COORDINATOR_NOT_AVAILABLE before the
    /// topic exists (FindCoordinator creates it), NOT_COORDINATOR if another broker leads the
    /// partition.
    pub fn check_coordinator(
        &self,
        log: &dyn OffsetsLog,
        group_id: &str,
    ) -> Result<(), ResponseError> {
        log.check_leader(self.partition_for(group_id))
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
                    for (group, waits) in strong.groups.tick(&*strong) {
                        let coordinator = Arc::clone(&strong.groups);
                        tokio::spawn(async move { coordinator.await_stores(&group, waits).await });
                    }
                    if strong.groups.expiry_due() {
                        let pass = tokio::task::spawn_blocking(move || {
                            strong.groups.expire_offsets(&*strong)
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
    pub fn tick(&self, log: &dyn OffsetsLog) -> Vec<(SharedGroup, Vec<StoreWait>)> {
        let now_ms = self.now_ms();
        let mut waiting = Vec::new();
        for group in self.all_groups() {
            let mut locked = lock(&group);
            locked.tick(now_ms);
            let waits = self.persist_due(log, &mut locked);
            drop(locked);
            if !waits.is_empty() {
                waiting.push((group, waits));
            }
        }
        waiting
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
mod tests;
