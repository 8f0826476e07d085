//! The group coordinator (Kafka's classic consumer-group protocol).
//!
//! - [`state`]: one group's membership state machine (pure: no clock, no I/O), unit-tested alone.
//! - [`records`]: committed offsets as `__consumer_offsets` records, in Kafka's binary format.
//! - [`GroupCoordinator`]: the groups this broker coordinates, the clock, the periodic tick that
//!   expires sessions and completes rebalances, and the offsets' persistence.
//!
//! A group's coordinator partition is `abs(hash(group id)) % offsets.topic.num.partitions` of
//! `__consumer_offsets` (Kafka's rule, with Java's `String.hashCode`). Committed offsets are
//! appended to that partition before they are visible, and replayed from it at start-up, so they
//! survive restarts. Membership is kept only in memory: after a restart members get
//! UNKNOWN_MEMBER_ID and rejoin, as they do when a group's coordinator moves.

pub mod records;
pub mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use skald_controller::names::CONSUMER_OFFSETS_TOPIC;
use skald_controller::MetadataImage;
use skald_storage::clock::{Clock, SystemClock};

use crate::config::ServerConfig;
use crate::replica_manager::ReplicaManager;
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
    /// hosted here. COORDINATOR_NOT_AVAILABLE before the topic exists (FindCoordinator creates it),
    /// NOT_COORDINATOR if another broker hosts the partition.
    pub fn check_coordinator(
        &self,
        image: &MetadataImage,
        replicas: &ReplicaManager,
        group_id: &str,
    ) -> Result<(), ResponseError> {
        if image.topic(CONSUMER_OFFSETS_TOPIC).is_none() {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        match replicas.get(CONSUMER_OFFSETS_TOPIC, self.partition_for(group_id)) {
            Some(_) => Ok(()),
            None => Err(ResponseError::NotCoordinator),
        }
    }

    /// Starts the periodic tick on the current runtime, once.
    pub fn ensure_ticker(self: &Arc<Self>) {
        self.ticker.call_once(|| {
            let coordinator = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(TICK_INTERVAL);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let Some(coordinator) = coordinator.upgrade() else {
                        return;
                    };
                    coordinator.tick();
                }
            });
        });
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
    ) -> Result<(), ResponseError> {
        if changes.is_empty() {
            return Ok(());
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
        let appended = partition.with_log(|log| {
            let appended = log.append(&mut batch, None, 0);
            if appended.is_ok() {
                replicas.on_append(&partition, log);
            }
            appended
        });
        match appended {
            Some(Ok(_)) => Ok(()),
            Some(Err(err)) => {
                tracing::error!(group = group_id, "cannot append committed offsets: {err}");
                Err(ResponseError::NotCoordinator)
            }
            None => Err(ResponseError::NotCoordinator),
        }
    }

    /// Rebuilds committed offsets from every hosted `__consumer_offsets` partition (last value per
    /// key wins; a tombstone deletes). Run once at start-up, after the logs are open.
    pub fn load(&self, replicas: &ReplicaManager) -> Result<usize, String> {
        let mut loaded = 0;
        for partition in replicas.all() {
            if partition.topic != CONSUMER_OFFSETS_TOPIC {
                continue;
            }
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
                .map_err(|err| format!("__consumer_offsets-{}: {err}", partition.partition))?;
            for (group_id, topic, index, offset) in changes {
                let group = self.group_or_create(&group_id);
                let mut group = lock(&group);
                match offset {
                    Some(offset) => {
                        group.offsets.insert((topic, index), offset);
                    }
                    None => {
                        group.offsets.remove(&(topic, index));
                    }
                }
                loaded += 1;
            }
        }
        // Groups whose offsets were all deleted are gone.
        self.map()
            .retain(|_, group| !lock(group).offsets.is_empty());
        Ok(loaded)
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
