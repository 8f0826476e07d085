//! The partitions this broker hosts: their logs, created, opened and removed as the metadata image
//! says, and the wake-up that long-polling fetches wait on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use kafka_protocol::ResponseError;
use skald_controller::topic_config::ThrottledReplicas;
use skald_controller::{ImageDelta, MetadataImage, PartitionImage, TopicId, TopicImage};
use skald_storage::{Clock, CompactionOptions, Log, LogConfig, SystemClock};
use tokio::sync::Notify;

use crate::config::ServerConfig;
use crate::dynamic_config::BrokerDefaults;
use crate::fetch_waiters::FetchWaiters;
use crate::metrics::Metrics;
use crate::replication::fetcher::FetchAssignments;
use crate::replication::quota::{
    ReplicationQuotas, FOLLOWER_REPLICAS_CONFIG, LEADER_REPLICAS_CONFIG,
};
use crate::replication::state::{ReplicaState, Role, Transition};

/// Kafka's file in each partition directory naming the topic id the data belongs to.
const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// Kafka's default `max.message.bytes`, used only if the configured value cannot be read.
const MAX_MESSAGE_BYTES_FALLBACK: usize = 1_048_588;

/// Topic settings the produce path needs, parsed when the partition is opened and again whenever
/// the topic's configs change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceSettings {
    /// `max.message.bytes`: the largest record batch accepted.
    pub max_message_bytes: usize,
    /// `message.timestamp.type=LogAppendTime`: the broker stamps batches with its clock.
    pub log_append_time: bool,
    /// `cleanup.policy` includes `compact`: records must have keys.
    pub compacted: bool,
    /// `min.insync.replicas`: the ISR an acks=all produce needs.
    pub min_insync_replicas: usize,
    /// `cleanup.policy` includes `delete`: DeleteRecords may move the log start.
    pub deletable: bool,
}

/// One hosted partition and its log.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub partition: i32,
    pub topic_id: TopicId,
    /// The partition's directory; it changes only when AlterReplicaLogDirs moves the replica
    /// to another log dir (see `replication::alter_log_dirs`), under the log's lock.
    dir: RwLock<PathBuf>,
    /// The copy of the log being made in another log dir, while a move is under way.
    pub(crate) future: Mutex<Option<crate::replication::alter_log_dirs::FutureReplica>>,
    /// Read through [`Partition::settings`]; replaced when the topic's configs change.
    settings: RwLock<ProduceSettings>,
    /// The cleaner's settings when `cleanup.policy` includes `compact`.
    compaction: Mutex<Option<CompactionOptions>>,
    /// The topic's config overrides these settings were derived from: a metadata change that
    /// leaves them alone costs one comparison.
    applied_configs: Mutex<BTreeMap<String, String>>,
    /// Whether this broker's replica is throttled, as the leader's answers to followers
    /// (`leader.replication.throttled.replicas`) and as a follower's fetches
    /// (`follower.replication.throttled.replicas`); see `replication::quota`.
    leader_throttled: AtomicBool,
    follower_throttled: AtomicBool,
    /// The replicas a reassignment in progress is adding (empty otherwise): what they copy is
    /// reassignment traffic (`skald_reassignment_bytes_*_total`).
    adding_replicas: RwLock<Vec<i32>>,
    /// `None` once the partition has been removed; holders of an old `Arc` then see it as gone.
    log: Mutex<Option<Log>>,
    /// Leader or follower, the high watermark, the followers' progress (see `replication`).
    /// Lock order: the log's lock first, then this one.
    pub(crate) replica: Mutex<ReplicaState>,
    /// Copies of the high watermark and the log end offset, readable without either lock.
    pub(crate) high_watermark: AtomicI64,
    pub(crate) log_end_offset: AtomicI64,
    /// Woken when the high watermark moves or the role changes (acks=all produces wait on it).
    pub(crate) replica_changed: Notify,
    /// Fetches parked on this partition: woken by an append and by a moved high watermark (new
    /// data for consumers).
    pub(crate) fetch_waiters: FetchWaiters,
}

impl Partition {
    /// Runs `f` on the log under its lock, or returns `None` if the partition was removed.
    /// Appends and reads are short (no waiting inside), so a plain mutex serves.
    pub fn with_log<T>(&self, f: impl FnOnce(&mut Log) -> T) -> Option<T> {
        let mut log = self.lock();
        log.as_mut().map(f)
    }

    /// The partition's directory now.
    pub fn dir(&self) -> PathBuf {
        self.dir
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(crate) fn set_dir(&self, dir: PathBuf) {
        *self
            .dir
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = dir;
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Option<Log>> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The topic settings in force now (a copy: a concurrent config change applies to the next
    /// request).
    pub fn settings(&self) -> ProduceSettings {
        *self
            .settings
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the leader's answers to followers outside the ISR are throttled for this partition.
    pub fn leader_throttled(&self) -> bool {
        self.leader_throttled.load(Ordering::Relaxed)
    }

    /// Whether this follower's catch-up fetches of the partition are throttled.
    pub fn follower_throttled(&self) -> bool {
        self.follower_throttled.load(Ordering::Relaxed)
    }

    /// Whether a reassignment in progress is adding `replica_id` to this partition.
    pub fn is_adding_replica(&self, replica_id: i32) -> bool {
        self.adding_replicas
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(&replica_id)
    }

    fn set_adding_replicas(&self, adding: &[i32]) {
        if self
            .adding_replicas
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_slice()
            != adding
        {
            *self
                .adding_replicas
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = adding.to_vec();
        }
    }

    /// Takes the topic's throttled replica lists (Kafka's `parseThrottledPartitions`: the
    /// partitions listed with this broker, or all for `*`).
    fn apply_throttled_replicas(&self, topic: &TopicImage, node_id: i32) {
        let throttled = |config: &str| {
            topic.configs.get(config).is_some_and(|value| {
                ThrottledReplicas::parse(value, node_id).contains(self.partition)
            })
        };
        self.leader_throttled
            .store(throttled(LEADER_REPLICAS_CONFIG), Ordering::Relaxed);
        self.follower_throttled
            .store(throttled(FOLLOWER_REPLICAS_CONFIG), Ordering::Relaxed);
    }

    /// The cleaner's settings, when `cleanup.policy` includes `compact`.
    pub fn compaction(&self) -> Option<CompactionOptions> {
        self.compaction
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Brings the partition's settings and its log's in line with the topic's configs (Kafka's
    /// `LogManager.updateTopicConfig`): changes take effect without a restart. Settings the log
    /// cannot take (the controller validated them, so only a broker default could be off) are
    /// logged and the log keeps its old ones.
    ///
    /// `defaults_changed`: a dynamic broker config changed, which may change any topic's settings.
    fn apply_topic_configs(
        &self,
        topic: &TopicImage,
        defaults: &BrokerDefaults<'_>,
        defaults_changed: bool,
    ) {
        let mut applied = self
            .applied_configs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *applied == topic.configs && !defaults_changed {
            return;
        }
        *applied = topic.configs.clone();
        self.apply_throttled_replicas(topic, defaults.config.node_id);
        *self
            .settings
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = produce_settings(topic, defaults);
        *self
            .compaction
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = compaction_options(topic, defaults);
        let log_config = log_config(topic, defaults);
        if let Some(Err(err)) = self.with_log(|log| log.update_config(log_config)) {
            tracing::error!(
                topic = self.topic,
                partition = self.partition,
                "changed topic configs cannot be applied to the log: {err}"
            );
        }
        tracing::debug!(
            topic = self.topic,
            partition = self.partition,
            "topic configs applied"
        );
        // acks=all produces waiting on the ISR re-check against a changed min.insync.replicas.
        self.replica_changed.notify_waiters();
    }
}

type PartitionKey = (String, i32);

/// A hosted partition whose role changed with a metadata image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleChange {
    pub topic: String,
    pub partition: i32,
    pub transition: Transition,
}

/// All partitions hosted by this broker.
#[derive(Debug)]
pub struct ReplicaManager {
    node_id: i32,
    log_dirs: Vec<PathBuf>,
    partitions: RwLock<HashMap<PartitionKey, Arc<Partition>>>,
    /// Partition directories found on disk at start-up and not yet claimed by the metadata image.
    unclaimed_dirs: Mutex<HashMap<PartitionKey, PathBuf>>,
    /// Partitions placed here whose logs could not be opened: tried again with each image.
    unopened: Mutex<BTreeSet<PartitionKey>>,
    /// This broker's and the cluster-wide dynamic broker configs the partitions' settings were
    /// last derived from.
    applied_broker_configs: Mutex<(BTreeMap<String, String>, BTreeMap<String, String>)>,
    /// Woken when a metadata image changed the hosted partitions or their roles, so every parked
    /// fetch re-checks (appends and high watermarks wake only their partition's fetches).
    placement_changed: Notify,
    /// Which partitions this broker follows, by leader: what the replica fetchers fetch.
    pub fetch_assignments: FetchAssignments,
    /// The replication throttles' rates, taken from the dynamic broker configs of each image.
    pub quotas: Arc<ReplicationQuotas>,
    /// The `replication-offset-checkpoint` of each log dir as read at start-up (high watermarks).
    startup_high_watermarks: Mutex<BTreeMap<PathBuf, skald_storage::OffsetCheckpoint>>,
    metrics: Metrics,
    /// How each log dir's partitions are to be recovered at start-up (clean shutdown or recovery
    /// points), per log dir; taken (`None`) once the start-up `apply_metadata` has opened them.
    startup_recovery: Mutex<Option<BTreeMap<PathBuf, LogDirRecovery>>>,
    /// Log dirs taken offline by a disk failure (Kafka's `LogDirFailureChannel`). A dir stays
    /// offline until restart: its partitions answer KAFKA_STORAGE_ERROR and no new partition is
    /// placed in it, while the other dirs keep serving.
    offline_dirs: Mutex<BTreeSet<PathBuf>>,
    /// Set once every configured log dir is offline: the broker then stops (Kafka halts it,
    /// "all log dirs have failed"), so its leaderships move instead of refusing every write.
    every_dir_failed: tokio::sync::watch::Sender<bool>,
}

/// What start-up found in one log dir, and what opening its partitions cost.
#[derive(Debug, Default)]
struct LogDirRecovery {
    /// `.kafka_cleanshutdown` was there: every log is trusted up to its end.
    clean_shutdown: bool,
    /// The dir's `recovery-point-offset-checkpoint` (empty if missing or unreadable).
    recovery_points: skald_storage::OffsetCheckpoint,
    partitions: usize,
    segments_scanned: usize,
}

impl ReplicaManager {
    /// Scans the log dirs for existing partition directories; they are opened by `apply_metadata`.
    pub fn open(
        config: &ServerConfig,
        metrics: Metrics,
    ) -> Result<ReplicaManager, skald_storage::Error> {
        let mut unclaimed: HashMap<PartitionKey, PathBuf> = HashMap::new();
        let mut startup_recovery = BTreeMap::new();
        let mut startup_high_watermarks = BTreeMap::new();
        for dir in &config.log_dirs {
            std::fs::create_dir_all(dir).map_err(|source| skald_storage::Error::Io {
                path: dir.clone(),
                source,
            })?;
            startup_recovery.insert(dir.clone(), LogDirRecovery::load(dir)?);
            startup_high_watermarks.insert(dir.clone(), read_high_watermarks(dir));
            for (topic, partition, path) in skald_storage::scan_log_dir(dir)? {
                // The metadata log lives beside the partitions but is not one of them.
                if path
                    .file_name()
                    .is_some_and(|name| name == skald_controller::log::METADATA_DIR_NAME)
                {
                    continue;
                }
                // Two log dirs holding the same partition: a crash between the two renames
                // of a replica move (the copy renamed into place, the original not yet renamed
                // away). Both held the same records then; the first found is kept, the other
                // set aside, never deleted.
                if let Some(kept) = unclaimed.get(&(topic.clone(), partition)) {
                    tracing::error!(
                        kept = %kept.display(),
                        set_aside = %path.display(),
                        "a partition is in two log dirs; keeping the first"
                    );
                    set_aside_as_stray(&path);
                    continue;
                }
                unclaimed.insert((topic, partition), path);
            }
        }
        for dir in &config.log_dirs {
            metrics
                .log_dir_offline
                .with_label_values(&[&dir.display().to_string()])
                .set(0);
        }
        metrics.offline_partitions.set(0);
        Ok(ReplicaManager {
            node_id: config.node_id,
            log_dirs: config.log_dirs.clone(),
            partitions: RwLock::new(HashMap::new()),
            unclaimed_dirs: Mutex::new(unclaimed),
            unopened: Mutex::default(),
            applied_broker_configs: Mutex::default(),
            placement_changed: Notify::new(),
            fetch_assignments: FetchAssignments::default(),
            quotas: Arc::new(ReplicationQuotas::new(&config.replication)),
            startup_high_watermarks: Mutex::new(startup_high_watermarks),
            metrics,
            startup_recovery: Mutex::new(Some(startup_recovery)),
            offline_dirs: Mutex::new(BTreeSet::new()),
            every_dir_failed: tokio::sync::watch::Sender::new(false),
        })
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.read().get(&(topic.to_string(), partition)).cloned()
    }

    /// A partition this broker leads, for requests only a leader serves (Produce, Fetch from
    /// consumers, ListOffsets, DeleteRecords). The error is what Kafka answers otherwise:
    /// UNKNOWN_TOPIC_OR_PARTITION when the metadata has no such partition, and
    /// NOT_LEADER_OR_FOLLOWER when another broker leads it or none does (the client refreshes
    /// its metadata and goes to the new leader).
    pub fn led<'a>(
        &self,
        image: &'a MetadataImage,
        topic: &str,
        partition: i32,
    ) -> Result<(Arc<Partition>, &'a PartitionImage), ResponseError> {
        let placement = image
            .topic(topic)
            .and_then(|t| t.partitions.get(&partition))
            .ok_or(ResponseError::UnknownTopicOrPartition)?;
        if placement.leader != self.node_id {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        // Led here but not (yet) open: the log could not be opened, or the image that placed it
        // here is still being applied.
        let hosted = self
            .get(topic, partition)
            .ok_or(ResponseError::NotLeaderOrFollower)?;
        Ok((hosted, placement))
    }

    /// [`ReplicaManager::led`] for a request that names the leader epoch it knows
    /// (`current_leader_epoch`, -1 for none; Kafka's `checkCurrentLeaderEpoch`): an older one
    /// gets FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH (this broker has yet to hear of
    /// it); a partition whose log dir is offline gets KAFKA_STORAGE_ERROR.
    pub fn serving<'a>(
        &self,
        image: &'a MetadataImage,
        topic: &str,
        partition: i32,
        current_leader_epoch: i32,
    ) -> Result<(Arc<Partition>, &'a PartitionImage), ResponseError> {
        let (hosted, placement) = self.led(image, topic, partition)?;
        if current_leader_epoch >= 0 && current_leader_epoch != placement.leader_epoch {
            return Err(if current_leader_epoch < placement.leader_epoch {
                ResponseError::FencedLeaderEpoch
            } else {
                ResponseError::UnknownLeaderEpoch
            });
        }
        if self.is_offline(&hosted) {
            return Err(ResponseError::KafkaStorageError);
        }
        Ok((hosted, placement))
    }

    /// Every hosted partition.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.read().values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<PartitionKey, Arc<Partition>>> {
        self.partitions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<PartitionKey, Arc<Partition>>> {
        self.partitions
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Woken when a metadata image changed what this broker hosts or leads.
    pub fn placement_changed(&self) -> &Notify {
        &self.placement_changed
    }

    /// Called by the produce path under the partition's log lock after an append: updates the
    /// partition's gauges (never for a removed partition, whose log is gone) and wakes fetches.
    pub fn on_append(&self, partition: &Partition, log: &Log) {
        self.metrics.set_partition_log(
            &partition.topic,
            partition.partition,
            log.log_end_offset(),
            log.size_bytes(),
        );
        partition.leader_appended(self.node_id, log.log_end_offset());
        partition.fetch_waiters.wake();
    }

    /// Kafka's `appendRecordsToLeader`: runs `append` (given the log and the leader epoch) under
    /// the partition's log lock, after checking against the replication state — not the served
    /// image, which may be out of date — that this broker leads the partition and, when
    /// `min_insync_replicas` is given (acks=all), that the committed ISR is that large. A broker
    /// that has just become a follower never appends to what is now its leader's copy. A write
    /// that stored something (not a recognised retry) updates gauges and wakes fetches.
    pub fn append_to_leader(
        &self,
        partition: &Partition,
        min_insync_replicas: Option<usize>,
        append: impl FnOnce(&mut Log, i32) -> skald_storage::Result<skald_storage::AppendInfo>,
    ) -> Result<LeaderAppend, LeaderAppendRefused> {
        let appended = partition.with_log(|log| {
            let isr = {
                let state = partition.replica_state();
                state
                    .leader()
                    .map(|leader| (leader.leader_epoch, leader.isr.len()))
            };
            let Some((leader_epoch, isr)) = isr else {
                return Err(LeaderAppendRefused::NotLeader);
            };
            if min_insync_replicas.is_some_and(|min| isr < min) {
                return Err(LeaderAppendRefused::NotEnoughReplicas { isr });
            }
            let appended = append(log, leader_epoch);
            if appended.as_ref().is_ok_and(|info| !info.duplicate) {
                self.on_append(partition, log);
            }
            Ok(LeaderAppend {
                appended,
                log_start_offset: log.log_start_offset(),
                leader_epoch,
            })
        });
        appended.unwrap_or(Err(LeaderAppendRefused::Deleted))
    }

    /// Whether the partition's log dir is offline: Produce, Fetch, ListOffsets and DeleteRecords
    /// then answer KAFKA_STORAGE_ERROR without touching the log. (Kafka answers some paths with
    /// NOT_LEADER_OR_FOLLOWER in KRaft once the controller has moved leadership; with a single
    /// replica there is nowhere to move it, so the storage error is the answer everywhere.)
    pub fn is_offline(&self, partition: &Partition) -> bool {
        let offline = self.offline();
        !offline.is_empty()
            && self
                .log_dir_of(&partition.dir())
                .is_some_and(|dir| offline.contains(&dir))
    }

    fn offline(&self) -> MutexGuard<'_, BTreeSet<PathBuf>> {
        self.offline_dirs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Called with every error a partition's log returned: a disk failure (an I/O error, ENOSPC,
    /// a torn write) takes the partition's whole log dir offline, as Kafka does; other errors
    /// (bad input, offsets out of range) are the request's problem and change nothing.
    pub fn on_storage_error(&self, partition: &Partition, err: &skald_storage::Error) {
        if !err.is_disk_failure() {
            return;
        }
        let Some(log_dir) = self.log_dir_of(&partition.dir()) else {
            return;
        };
        if !self.offline().insert(log_dir.clone()) {
            return;
        }
        tracing::error!(
            log_dir = %log_dir.display(),
            topic = partition.topic,
            partition = partition.partition,
            "log dir taken offline after a disk failure: {err}; its partitions answer \
             KAFKA_STORAGE_ERROR until the broker restarts, other log dirs keep serving"
        );
        self.metrics
            .log_dir_offline
            .with_label_values(&[&log_dir.display().to_string()])
            .set(1);
        self.update_offline_partitions();
        if self.offline().len() >= self.log_dirs.len() {
            self.every_dir_failed.send_replace(true);
        }
    }

    /// Resolves once every configured log dir is offline (see [`ReplicaManager::on_storage_error`]).
    pub async fn every_log_dir_failed(&self) {
        let mut failed = self.every_dir_failed.subscribe();
        // The sender lives as long as `self`, so waiting ends only when it is set.
        let _ = failed.wait_for(|failed| *failed).await;
    }

    /// The configured log dirs.
    pub fn configured_log_dirs(&self) -> &[PathBuf] {
        &self.log_dirs
    }

    fn update_offline_partitions(&self) {
        let offline = self.all().iter().filter(|p| self.is_offline(p)).count();
        self.metrics
            .offline_partitions
            .set(i64::try_from(offline).unwrap_or(i64::MAX));
    }

    /// Makes the hosted partitions match the image: opens or creates the logs of partitions placed on
    /// this broker and removes those that no longer exist (or belong to an older topic of the same
    /// name) or no longer list this broker as a replica (a completed or cancelled reassignment
    /// moved it away: Kafka's StopReplica with delete). Run after every metadata change
    /// (serialised by the metadata publisher) and at start-up.
    ///
    /// `before` is the image applied last (the empty image at start-up) and `delta` what changed
    /// from it to `image`: only the partitions the delta names are looked at (plus any whose log
    /// could not be opened yet), so a commit costs what it changed, not the cluster's size.
    /// A change to the dynamic broker configs re-derives every hosted partition's settings.
    ///
    /// Logs are opened and removed outside the map's lock, so requests to other partitions carry on.
    /// A partition whose log cannot be opened is logged and left offline (requests for it get
    /// UNKNOWN_TOPIC_OR_PARTITION) and tried again with the next image; the metadata stays
    /// committed and the rest of the broker serves.
    pub fn apply_metadata(
        &self,
        before: &MetadataImage,
        image: &MetadataImage,
        delta: &ImageDelta,
        config: &ServerConfig,
    ) -> Vec<RoleChange> {
        // Every partition the change touched: those of removed (or replaced) topics as they
        // were, then the new and changed ones, then those whose logs could not be opened yet.
        let mut touched: Vec<PartitionKey> = Vec::new();
        for (name, _) in &delta.removed_topics {
            if let Some(old) = before.topic(name) {
                touched.extend(old.partitions.keys().map(|index| (name.clone(), *index)));
            }
        }
        for topic in &delta.changed_topics {
            touched.extend(
                topic
                    .removed_partitions
                    .iter()
                    .chain(&topic.partitions)
                    .map(|index| (topic.name.clone(), *index)),
            );
        }
        touched.extend(std::mem::take(&mut *self.unopened()));
        touched.sort_unstable();
        touched.dedup();

        // The topic of a partition the image places on this broker.
        let placed_here = |key: &PartitionKey| {
            image.topic(&key.0).filter(|topic| {
                topic
                    .partitions
                    .get(&key.1)
                    .is_some_and(|p| p.replicas.contains(&self.node_id))
            })
        };
        let stale: Vec<Arc<Partition>> = {
            let mut partitions = self.write();
            let keys: Vec<&PartitionKey> = touched
                .iter()
                .filter(|key| {
                    partitions.get(*key).is_some_and(|partition| {
                        placed_here(key).is_none_or(|t| t.topic_id != partition.topic_id)
                    })
                })
                .collect();
            keys.into_iter()
                .filter_map(|key| partitions.remove(key))
                .collect()
        };
        let removed_any = !stale.is_empty();
        for partition in stale {
            self.remove_partition(&partition);
        }

        let defaults = BrokerDefaults::new(config, image);
        let defaults_changed = {
            let mut applied = self
                .applied_broker_configs
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = (defaults.own.clone(), defaults.cluster.clone());
            let changed = *applied != now;
            if changed {
                tracing::info!(
                    own = ?now.0,
                    cluster = ?now.1,
                    "dynamic broker configs changed; applying them to every hosted partition"
                );
            }
            *applied = now;
            changed
        };
        // Every time, not only when the dynamic maps changed: the first image brings the static
        // values too. Two lookups; a change is logged.
        self.quotas.apply(&defaults);
        if defaults_changed {
            for partition in self.all() {
                if let Some(topic) = image.topic(&partition.topic) {
                    partition.apply_topic_configs(topic, &defaults, true);
                }
            }
        }
        let configs_changed = delta
            .changed_topics
            .iter()
            .filter(|t| t.configs_changed && !defaults_changed);
        for topic in configs_changed {
            let Some(topic) = image.topic(&topic.name) else {
                continue;
            };
            for index in topic.partitions.keys() {
                if let Some(partition) = self.get(&topic.name, *index) {
                    partition.apply_topic_configs(topic, &defaults, false);
                }
            }
        }

        // Counted over every hosted partition, so only when a partition is to be opened.
        let mut dir_counts: Option<BTreeMap<PathBuf, usize>> = None;
        let mut unclaimed = self
            .unclaimed_dirs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut opened_any = false;
        for key in &touched {
            let Some(topic) = placed_here(key) else {
                continue;
            };
            if self.read().contains_key(key) {
                continue;
            }
            let index = key.1;
            let existing = unclaimed.remove(key);
            let dir_counts = dir_counts.get_or_insert_with(|| self.partitions_per_dir());
            match self.open_partition(topic, index, existing, &defaults, dir_counts) {
                Ok(partition) => {
                    partition.with_log(|log| {
                        self.metrics.set_partition_log(
                            &topic.name,
                            index,
                            log.log_end_offset(),
                            log.size_bytes(),
                        )
                    });
                    self.write().insert(key.clone(), Arc::new(partition));
                    opened_any = true;
                }
                Err(err) => {
                    tracing::error!(
                        topic = topic.name,
                        partition = index,
                        "partition log cannot be opened; it stays offline: {err}"
                    );
                    self.unopened().insert(key.clone());
                }
            }
        }

        // Directories of partitions that no longer exist (deleted while this broker was down, or a
        // crash between the deletion's commit and the removal). Kept aside, never deleted blindly.
        for (_, path) in unclaimed.drain() {
            set_aside_as_stray(&path);
        }
        self.report_startup_recovery();
        drop(unclaimed);
        let hosted: Vec<Arc<Partition>> = {
            let partitions = self.read();
            touched
                .iter()
                .filter_map(|key| partitions.get(key).cloned())
                .collect()
        };
        let changes = self.apply_roles(image, &hosted);
        if removed_any || opened_any || !changes.is_empty() {
            self.assign_fetches();
        }
        if removed_any || !hosted.is_empty() {
            // Waiting fetches re-check: a leader's high watermark may have moved (ISR shrink).
            self.placement_changed.notify_waiters();
            self.update_replication_gauges();
        }
        if removed_any || opened_any {
            self.update_offline_partitions();
        }
        changes
    }

    /// Brings the role (leader, follower, offline) of each of `partitions` in line with the
    /// image: a new leader starts its epoch at its log end; a follower is handed to the replica
    /// fetcher of its leader by [`Self::assign_fetches`].
    fn apply_roles(&self, image: &MetadataImage, partitions: &[Arc<Partition>]) -> Vec<RoleChange> {
        let now_ms = crate::replication::now_ms();
        let mut changes = Vec::new();
        for partition in partitions {
            let Some(placement) = image
                .topic(&partition.topic)
                .and_then(|t| t.partitions.get(&partition.partition))
            else {
                continue;
            };
            partition.set_adding_replicas(&placement.adding_replicas);
            let transition = partition.with_log(|log| {
                let transition = partition.apply_placement(self.node_id, placement, log, now_ms);
                if let Transition::BecameLeader { leader_epoch } = transition {
                    // Kafka's makeLeader: the new epoch starts at this log's end, so followers
                    // of the old leader find where their logs diverge.
                    if let Err(err) = log.assign_leader_epoch(leader_epoch, log.log_end_offset()) {
                        tracing::error!(
                            topic = partition.topic,
                            partition = partition.partition,
                            "cannot record leader epoch {leader_epoch}: {err}"
                        );
                    }
                }
                transition
            });
            match transition {
                Some(Transition::Unchanged) | None => {}
                Some(transition) => {
                    tracing::info!(
                        topic = partition.topic,
                        partition = partition.partition,
                        ?transition,
                        "replica role changed"
                    );
                    changes.push(RoleChange {
                        topic: partition.topic.clone(),
                        partition: partition.partition,
                        transition,
                    });
                }
            }
        }
        changes
    }

    /// Hands every followed partition to the replica fetcher of its leader. Run when a commit
    /// changed some partition's role or the hosted set, not on every commit.
    fn assign_fetches(&self) {
        let mut follows: BTreeMap<i32, Vec<Arc<Partition>>> = BTreeMap::new();
        for partition in self.all() {
            if let Role::Follower { leader, .. } = partition.role() {
                follows.entry(leader).or_default().push(partition);
            }
        }
        self.fetch_assignments.set(follows);
    }

    /// Partitions placed here whose logs could not be opened, tried again with the next image.
    fn unopened(&self) -> MutexGuard<'_, BTreeSet<PartitionKey>> {
        self.unopened
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn partitions_per_dir(&self) -> BTreeMap<PathBuf, usize> {
        // An offline dir gets no new partitions; with every dir offline, new ones stay offline.
        let offline = self.offline().clone();
        let mut counts: BTreeMap<PathBuf, usize> = self
            .log_dirs
            .iter()
            .filter(|dir| !offline.contains(*dir))
            .map(|dir| (dir.clone(), 0))
            .collect();
        for partition in self.read().values() {
            if let Some(count) = counts
                .iter_mut()
                .find(|(dir, _)| partition.dir().starts_with(dir))
                .map(|(_, c)| c)
            {
                *count += 1;
            }
        }
        counts
    }

    fn open_partition(
        &self,
        topic: &TopicImage,
        index: i32,
        existing: Option<PathBuf>,
        defaults: &BrokerDefaults<'_>,
        dir_counts: &mut BTreeMap<PathBuf, usize>,
    ) -> Result<Partition, skald_storage::Error> {
        let existing = existing.filter(|dir| match read_topic_id(dir) {
            // A missing or unreadable file (e.g. lost in a crash) is claimed and rewritten, as Kafka does.
            None => true,
            Some(id) if id == topic.topic_id => true,
            Some(_) => {
                set_aside_as_stray(dir);
                false
            }
        });
        let dir = match existing {
            Some(dir) => dir,
            None => {
                // Kafka places a new partition in the log dir holding the fewest partitions.
                let (log_dir, count) = dir_counts
                    .iter_mut()
                    .min_by_key(|(_, count)| **count)
                    .ok_or_else(|| skald_storage::Error::InvalidConfig("no log dirs".into()))?;
                *count += 1;
                log_dir.join(skald_storage::partition_dir_name(&topic.name, index))
            }
        };
        let log = Log::open_with_options(
            &dir,
            log_config(topic, defaults),
            skald_storage::LogOpenOptions {
                recovery_point: self.startup_recovery_point(&dir, &topic.name, index),
                ..skald_storage::LogOpenOptions::default()
            },
        )?;
        self.count_startup_recovery(&dir, &log);
        write_topic_id(&dir, topic.topic_id)?;
        let log_end_offset = log.log_end_offset();
        let high_watermark = self
            .startup_high_watermark(&dir, &topic.name, index)
            .unwrap_or(0)
            .clamp(log.log_start_offset(), log_end_offset);
        tracing::debug!(topic = topic.name, partition = index, path = %dir.display(), "partition log opened");
        let partition = Partition {
            topic: topic.name.clone(),
            partition: index,
            topic_id: topic.topic_id,
            dir: RwLock::new(dir),
            future: Mutex::new(None),
            settings: RwLock::new(produce_settings(topic, defaults)),
            compaction: Mutex::new(compaction_options(topic, defaults)),
            applied_configs: Mutex::new(topic.configs.clone()),
            leader_throttled: AtomicBool::new(false),
            follower_throttled: AtomicBool::new(false),
            adding_replicas: RwLock::new(Vec::new()),
            log: Mutex::new(Some(log)),
            replica: Mutex::new(ReplicaState::new(high_watermark)),
            high_watermark: AtomicI64::new(high_watermark),
            log_end_offset: AtomicI64::new(log_end_offset),
            replica_changed: Notify::new(),
            fetch_waiters: FetchWaiters::default(),
        };
        partition.apply_throttled_replicas(topic, self.node_id);
        Ok(partition)
    }

    fn remove_partition(&self, partition: &Partition) {
        let Some(log) = partition.lock().take() else {
            return;
        };
        // A move to another log dir under way goes with it (its copier finds no log and stops).
        let future = partition
            .future
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(future) = future {
            future.discard();
        }
        partition.go_offline();
        self.metrics
            .remove_partition(&partition.topic, partition.partition);
        if let Err(err) = log.delete() {
            tracing::error!(path = %partition.dir().display(), "cannot delete partition log: {err}");
        } else {
            tracing::info!(
                topic = partition.topic,
                partition = partition.partition,
                "partition log deleted"
            );
        }
    }

    /// One retention pass (Kafka's `LogManager.cleanupLogs`): applies each hosted partition's
    /// retention.ms / retention.bytes and deletes segments below its log start offset. Blocking
    /// (it renames and unlinks files): run it off the async workers. Each partition's lock is held
    /// only for its own pass. Returns the segments deleted in all.
    pub fn delete_old_segments(&self) -> usize {
        let mut total = 0;
        for partition in self.all() {
            if self.is_offline(&partition) {
                continue;
            }
            let outcome = partition.with_log(|log| {
                let deleted = log.delete_old_segments();
                if matches!(&deleted, Ok(d) if d.segments > 0) {
                    self.metrics.set_partition_log(
                        &partition.topic,
                        partition.partition,
                        log.log_end_offset(),
                        log.size_bytes(),
                    );
                }
                deleted
            });
            match outcome {
                None => {}
                Some(Ok(deleted)) => {
                    if deleted.segments > 0 {
                        tracing::info!(
                            topic = partition.topic,
                            partition = partition.partition,
                            segments = deleted.segments,
                            bytes = deleted.bytes,
                            "retention deleted segments"
                        );
                    }
                    total += deleted.segments;
                }
                Some(Err(err)) => {
                    tracing::error!(
                        topic = partition.topic,
                        partition = partition.partition,
                        "retention failed: {err}"
                    );
                    self.on_storage_error(&partition, &err);
                }
            }
        }
        total
    }

    /// One cleaner pass (Kafka's log cleaner): compacts every hosted partition of a topic whose
    /// cleanup.policy includes `compact`, when its dirty ratio allows. Blocking: run it off the async
    /// workers; each partition's lock is held for its own pass only.
    pub fn clean_compacted_logs(&self) {
        for partition in self.all() {
            let Some(options) = partition.compaction() else {
                continue;
            };
            if self.is_offline(&partition) {
                continue;
            }
            let now_ms = SystemClock.now_ms();
            let outcome = partition.with_log(|log| {
                let compacted = log.compact(now_ms, &options);
                if matches!(&compacted, Ok(stats) if stats.cleaned) {
                    self.metrics.set_partition_log(
                        &partition.topic,
                        partition.partition,
                        log.log_end_offset(),
                        log.size_bytes(),
                    );
                }
                compacted
            });
            match outcome {
                Some(Ok(stats)) if stats.cleaned => tracing::info!(
                    topic = partition.topic,
                    partition = partition.partition,
                    records_removed = stats.records_removed,
                    tombstones_removed = stats.tombstones_removed,
                    bytes_read = stats.bytes_read,
                    bytes_written = stats.bytes_written,
                    "log compacted"
                ),
                Some(Err(err)) => {
                    tracing::error!(
                        topic = partition.topic,
                        partition = partition.partition,
                        "compaction failed: {err}"
                    );
                    self.on_storage_error(&partition, &err);
                }
                _ => {}
            }
        }
    }

    /// Closes every log (flushing it and trimming its indexes); called once on shutdown. Then, per
    /// log dir, writes the recovery point checkpoint (each closed log's end offset) and, if every
    /// log of the dir closed and the checkpoint was written, the clean shutdown marker, so the next
    /// start skips recovery (Kafka's `LogManager.shutdown`).
    pub fn close_all(&self) {
        self.checkpoint_high_watermarks();
        let mut checkpoints: BTreeMap<PathBuf, skald_storage::OffsetCheckpoint> = self
            .log_dirs
            .iter()
            .map(|dir| (dir.clone(), skald_storage::OffsetCheckpoint::new()))
            .collect();
        // An offline dir never gets the clean shutdown marker: its logs are recovered on restart.
        let mut failed_dirs = self.offline().clone();
        let taken = self
            .all()
            .into_iter()
            .filter_map(|partition| {
                let log = partition.lock().take()?;
                Some((partition, log))
            })
            .collect();
        let (closed_logs, every_close_returned) = close_logs(taken);
        if !every_close_returned {
            // Which logs a panicked close left unsealed is unknown: every dir is recovered.
            failed_dirs.extend(self.log_dirs.iter().cloned());
        }
        for (partition, log_end_offset, recovery_point, closed) in closed_logs {
            let log_dir = self.log_dir_of(&partition.dir());
            if let Err(err) = &closed {
                tracing::error!(
                    topic = partition.topic,
                    partition = partition.partition,
                    "close failed: {err}"
                );
                failed_dirs.extend(log_dir.clone());
            }
            if let Some(entries) = log_dir.and_then(|dir| checkpoints.get_mut(&dir)) {
                // A closed log is flushed to its end.
                let offset = if closed.is_ok() {
                    log_end_offset
                } else {
                    recovery_point
                };
                entries.insert((partition.topic.clone(), partition.partition), offset);
            }
        }
        for (dir, entries) in checkpoints {
            let path = dir.join(skald_storage::RECOVERY_POINT_CHECKPOINT_FILE);
            if let Err(err) = skald_storage::write_offset_checkpoint(&path, &entries) {
                tracing::error!(path = %path.display(), "cannot write recovery points: {err}");
                continue;
            }
            if failed_dirs.contains(&dir) {
                continue;
            }
            if let Err(err) = skald_storage::write_clean_shutdown_marker(&dir) {
                tracing::error!(log_dir = %dir.display(), "cannot write the clean shutdown marker: {err}");
            }
        }
    }

    /// Kafka's `flush.ms` task (`LogManager.flushDirtyLogs`): flushes every log whose `flush.ms`
    /// has passed since its last flush. Blocking (fsync): run it off the async workers.
    /// Kafka's `removeExpiredProducers` pass: every hosted partition forgets the idempotent
    /// producers silent for `producer.id.expiration.ms`. Returns how many went in all.
    pub fn remove_expired_producers(&self, expiration_ms: i64) -> usize {
        self.all()
            .iter()
            .filter(|partition| !self.is_offline(partition))
            .filter_map(|partition| {
                partition.with_log(|log| log.remove_expired_producers(expiration_ms))
            })
            .sum()
    }

    pub fn flush_dirty_logs(&self) {
        for partition in self.all() {
            if self.is_offline(&partition) {
                continue;
            }
            if let Some(Err(err)) = partition.with_log(|log| log.flush_if_due()) {
                tracing::error!(
                    topic = partition.topic,
                    partition = partition.partition,
                    "flush failed: {err}"
                );
                self.on_storage_error(&partition, &err);
            }
        }
    }

    /// Unmaps the sealed segments nothing has read for `idle` (`log.segment.unload.idle.ms`), so
    /// maps of old data a consumer read once do not pile up to `vm.max_map_count` and fail
    /// later maps (which would take a log dir offline). Blocking. Returns how many.
    pub fn unload_idle_segments(&self, idle: std::time::Duration) -> usize {
        let unloaded = self
            .all()
            .iter()
            .filter(|partition| !self.is_offline(partition))
            .filter_map(|partition| partition.with_log(|log| log.unload_idle_segments(idle)))
            .sum();
        if unloaded > 0 {
            tracing::debug!(unloaded, "unloaded idle sealed segments");
        }
        unloaded
    }

    /// Kafka's `checkpointLogRecoveryOffsets`: writes each log dir's
    /// `recovery-point-offset-checkpoint` with the recovery point of every log in it. Blocking.
    pub fn checkpoint_recovery_points(&self) {
        self.write_checkpoints(
            skald_storage::RECOVERY_POINT_CHECKPOINT_FILE,
            "recovery points",
            |partition| partition.with_log(|log| log.recovery_point()),
        );
    }

    /// Writes one offset checkpoint file per online log dir, with `offset_of` each of its
    /// partitions (those it gives `None` are left out).
    fn write_checkpoints(
        &self,
        file_name: &str,
        what: &str,
        offset_of: impl Fn(&Partition) -> Option<i64>,
    ) {
        let mut checkpoints: BTreeMap<PathBuf, skald_storage::OffsetCheckpoint> = self
            .log_dirs
            .iter()
            .map(|dir| (dir.clone(), skald_storage::OffsetCheckpoint::new()))
            .collect();
        for partition in self.all() {
            let Some(offset) = offset_of(&partition) else {
                continue;
            };
            if let Some(entries) = self
                .log_dir_of(&partition.dir())
                .and_then(|dir| checkpoints.get_mut(&dir))
            {
                entries.insert((partition.topic.clone(), partition.partition), offset);
            }
        }
        let offline = self.offline().clone();
        for (dir, entries) in checkpoints {
            if offline.contains(&dir) {
                continue;
            }
            let path = dir.join(file_name);
            if let Err(err) = skald_storage::write_offset_checkpoint(&path, &entries) {
                tracing::error!(path = %path.display(), "cannot write {what}: {err}");
            }
        }
    }

    /// Recomputes the replication gauges: partitions hosted and led here, under-replicated and
    /// under-min-ISR partitions led here, each follower's lag behind its leader. (What the
    /// whole cluster's metadata says is the active controller's to export: `ClusterCollector`.)
    pub fn update_replication_gauges(&self) {
        let (mut under_replicated, mut under_min_isr) = (0, 0);
        let (mut hosted, mut led) = (0i64, 0i64);
        self.metrics.replica_lag_offsets.reset();
        for partition in self.all() {
            hosted += 1;
            let state = partition.replica_state();
            let Some(leader) = state.leader() else {
                continue;
            };
            led += 1;
            if leader.isr.len() < leader.replication_factor {
                under_replicated += 1;
            }
            if leader.isr.len() < partition.settings().min_insync_replicas {
                under_min_isr += 1;
            }
            let log_end_offset = partition.log_end_offset();
            let index = partition.partition.to_string();
            for (id, progress) in &leader.followers {
                let behind = log_end_offset - progress.log_end_offset.max(0);
                self.metrics
                    .replica_lag_offsets
                    .with_label_values(&[&partition.topic, &index, &id.to_string()])
                    .set(behind.max(0));
            }
        }
        self.metrics
            .under_replicated_partitions
            .set(under_replicated);
        self.metrics.under_min_isr_partitions.set(under_min_isr);
        self.metrics.partitions.set(hosted);
        self.metrics.leader_partitions.set(led);
    }

    /// Kafka's `checkpointHighWatermarks`: writes each log dir's `replication-offset-checkpoint`
    /// with the high watermark of every partition in it. Blocking.
    pub fn checkpoint_high_watermarks(&self) {
        self.write_checkpoints(
            HIGH_WATERMARK_CHECKPOINT_FILE,
            "high watermarks",
            |partition| Some(partition.high_watermark()),
        );
    }

    /// The high watermark checkpointed for a partition found at start-up.
    fn startup_high_watermark(&self, dir: &Path, topic: &str, partition: i32) -> Option<i64> {
        let log_dir = self.log_dir_of(dir)?;
        self.startup_high_watermarks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&log_dir)?
            .get(&(topic.to_string(), partition))
            .copied()
    }

    /// The configured log dir holding a partition directory.
    /// Every configured log dir and whether it is online.
    pub fn log_dirs(&self) -> Vec<(PathBuf, bool)> {
        let offline = self.offline();
        self.log_dirs
            .iter()
            .map(|dir| (dir.clone(), !offline.contains(dir)))
            .collect()
    }

    /// The log dir holding the partition directory `partition_dir`.
    pub fn log_dir_of(&self, partition_dir: &Path) -> Option<PathBuf> {
        self.log_dirs
            .iter()
            .find(|dir| partition_dir.starts_with(dir))
            .cloned()
    }

    /// The recovery point to open a partition found at start-up with: everything after a clean
    /// shutdown, else its checkpointed recovery point (0, all of it, if it has none). `None` after
    /// start-up (a new partition's log has nothing to recover).
    fn startup_recovery_point(&self, dir: &Path, topic: &str, partition: i32) -> Option<i64> {
        let startup = self
            .startup_recovery
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let log_dir = self.log_dir_of(dir)?;
        let recovery = startup.as_ref()?.get(&log_dir)?;
        Some(if recovery.clean_shutdown {
            i64::MAX
        } else {
            recovery
                .recovery_points
                .get(&(topic.to_string(), partition))
                .copied()
                .unwrap_or(0)
        })
    }

    fn count_startup_recovery(&self, dir: &Path, log: &Log) {
        let mut startup = self
            .startup_recovery
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(log_dir) = self.log_dir_of(dir) else {
            return;
        };
        if let Some(recovery) = startup.as_mut().and_then(|s| s.get_mut(&log_dir)) {
            recovery.partitions += 1;
            recovery.segments_scanned += log.recovered_segments();
        }
    }

    /// Logs, once, how each log dir's partitions were opened at start-up.
    fn report_startup_recovery(&self) {
        let Some(startup) = self
            .startup_recovery
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        else {
            return;
        };
        for (dir, recovery) in startup {
            if recovery.partitions == 0 {
                continue;
            }
            let log_dir = dir.display().to_string();
            if recovery.clean_shutdown {
                tracing::info!(
                    log_dir,
                    partitions = recovery.partitions,
                    segments_scanned = recovery.segments_scanned,
                    "clean shutdown marker found: log recovery skipped"
                );
            } else {
                tracing::info!(
                    log_dir,
                    partitions = recovery.partitions,
                    checkpointed = recovery.recovery_points.len(),
                    segments_scanned = recovery.segments_scanned,
                    "no clean shutdown marker: logs recovered from their recovery points"
                );
            }
        }
    }
}

impl LogDirRecovery {
    /// Takes the dir's clean shutdown marker (removing it, so a later crash is not mistaken for a
    /// clean shutdown) and reads its recovery points. An unreadable checkpoint means recovering
    /// everything, as Kafka does.
    fn load(dir: &Path) -> Result<LogDirRecovery, skald_storage::Error> {
        let clean_shutdown = skald_storage::take_clean_shutdown_marker(dir)?;
        let path = dir.join(skald_storage::RECOVERY_POINT_CHECKPOINT_FILE);
        let recovery_points = match skald_storage::read_offset_checkpoint(&path) {
            Ok(points) => points.unwrap_or_default(),
            Err(err) => {
                tracing::warn!(
                    "{err}; recovering every log of {} from offset 0",
                    dir.display()
                );
                skald_storage::OffsetCheckpoint::new()
            }
        };
        Ok(LogDirRecovery {
            clean_shutdown,
            recovery_points,
            ..LogDirRecovery::default()
        })
    }
}

/// Kafka's high watermark checkpoint file, one per log dir.
pub const HIGH_WATERMARK_CHECKPOINT_FILE: &str = "replication-offset-checkpoint";

/// A log dir's checkpointed high watermarks; none if missing or unreadable (a partition then
/// starts at 0 and learns its high watermark from its leader or its ISR).
fn read_high_watermarks(dir: &Path) -> skald_storage::OffsetCheckpoint {
    let path = dir.join(HIGH_WATERMARK_CHECKPOINT_FILE);
    match skald_storage::read_offset_checkpoint(&path) {
        Ok(entries) => entries.unwrap_or_default(),
        Err(err) => {
            tracing::warn!("{err}; high watermarks of {} start at 0", dir.display());
            skald_storage::OffsetCheckpoint::new()
        }
    }
}

/// The log settings of one topic: its overrides, else the broker's defaults (dynamic, then static).
pub fn log_config(topic: &TopicImage, defaults: &BrokerDefaults<'_>) -> LogConfig {
    let value = |name: &str| {
        defaults
            .topic_config(&topic.configs, name)
            .and_then(|value| value.trim().parse::<u64>().ok())
    };
    let signed = |name: &str| {
        defaults
            .topic_config(&topic.configs, name)
            .and_then(|value| value.trim().parse::<i64>().ok())
    };
    let fallback = LogConfig::default();
    // Time and size retention apply only to topics whose cleanup.policy includes `delete`, as in
    // Kafka (a compacted-only topic keeps everything but what DeleteRecords removes).
    let delete_policy = has_cleanup_policy(topic, defaults, "delete");
    let retention = |name: &str, default: i64| {
        if delete_policy {
            signed(name).unwrap_or(default)
        } else {
            -1
        }
    };
    LogConfig {
        segment_bytes: value("segment.bytes").unwrap_or(fallback.segment_bytes),
        index_interval_bytes: value("index.interval.bytes")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(fallback.index_interval_bytes),
        segment_index_bytes: value("segment.index.bytes")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(fallback.segment_index_bytes),
        segment_ms: signed("segment.ms")
            .filter(|ms| *ms >= 1)
            .unwrap_or(fallback.segment_ms),
        retention_ms: retention("retention.ms", fallback.retention_ms),
        retention_bytes: retention("retention.bytes", fallback.retention_bytes),
        flush_messages: signed("flush.messages")
            .filter(|n| *n >= 1)
            .unwrap_or(fallback.flush_messages),
        flush_ms: signed("flush.ms")
            .filter(|ms| *ms >= 0)
            .unwrap_or(fallback.flush_ms),
    }
}

/// The topic's cleanup policy includes `policy` (`delete` or `compact`).
fn has_cleanup_policy(topic: &TopicImage, defaults: &BrokerDefaults<'_>, policy: &str) -> bool {
    defaults
        .topic_config(&topic.configs, "cleanup.policy")
        .is_some_and(|policies| policies.split(',').any(|p| p.trim() == policy))
}

/// The cleaner's settings for a compacted topic (its overrides, else the broker's defaults).
fn compaction_options(
    topic: &TopicImage,
    defaults: &BrokerDefaults<'_>,
) -> Option<CompactionOptions> {
    if !has_cleanup_policy(topic, defaults, "compact") {
        return None;
    }
    let value = |name: &str| defaults.topic_config(&topic.configs, name);
    let fallback = CompactionOptions::default();
    Some(CompactionOptions {
        delete_retention_ms: value("delete.retention.ms")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(fallback.delete_retention_ms),
        min_compaction_lag_ms: value("min.compaction.lag.ms")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(fallback.min_compaction_lag_ms),
        min_cleanable_dirty_ratio: value("min.cleanable.dirty.ratio")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(fallback.min_cleanable_dirty_ratio),
        ..fallback
    })
}

fn produce_settings(topic: &TopicImage, defaults: &BrokerDefaults<'_>) -> ProduceSettings {
    ProduceSettings {
        max_message_bytes: defaults
            .topic_config(&topic.configs, "max.message.bytes")
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(MAX_MESSAGE_BYTES_FALLBACK),
        log_append_time: defaults
            .topic_config(&topic.configs, "message.timestamp.type")
            .as_deref()
            == Some("LogAppendTime"),
        compacted: has_cleanup_policy(topic, defaults, "compact"),
        min_insync_replicas: defaults
            .topic_config(&topic.configs, "min.insync.replicas")
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(1),
        deletable: has_cleanup_policy(topic, defaults, "delete"),
    }
}

/// Renames a partition directory that no metadata claims to `<dir>.<nanos>-stray`, as Kafka does
/// with stray logs: out of the way of a new partition of the same name, but never silently deleted.
fn set_aside_as_stray(dir: &Path) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut name = dir
        .file_name()
        .map(|name| name.to_os_string())
        .unwrap_or_default();
    name.push(format!(".{nanos:x}-stray"));
    let stray = dir.with_file_name(name);
    match std::fs::rename(dir, &stray) {
        Ok(()) => tracing::warn!(
            from = %dir.display(),
            to = %stray.display(),
            "partition directory belongs to no current topic; set aside as stray"
        ),
        Err(err) => {
            tracing::error!(path = %dir.display(), "cannot set aside stray partition directory: {err}")
        }
    }
}

fn read_topic_id(dir: &Path) -> Option<TopicId> {
    let text = std::fs::read_to_string(dir.join(PARTITION_METADATA_FILE)).ok()?;
    let id = text
        .lines()
        .find_map(|line| line.strip_prefix("topic_id: "))?;
    TopicId::try_from(id.trim().to_string()).ok()
}

/// Writes `partition.metadata` atomically (temp file, fsync, rename, fsync the directory) so a
/// crash never leaves a torn file behind.
pub(crate) fn write_topic_id(dir: &Path, topic_id: TopicId) -> Result<(), skald_storage::Error> {
    if read_topic_id(dir) == Some(topic_id) {
        return Ok(());
    }
    let path = dir.join(PARTITION_METADATA_FILE);
    let temp = dir.join(format!("{PARTITION_METADATA_FILE}.tmp"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| skald_storage::Error::Io { path, source }
    };
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&temp).map_err(io(&temp))?;
        file.write_all(format!("version: 0\ntopic_id: {topic_id}\n").as_bytes())
            .map_err(io(&temp))?;
        file.sync_all().map_err(io(&temp))?;
    }
    std::fs::rename(&temp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io(dir))
}

/// How many threads close logs at shutdown. Each close is a few fsyncs; one after the other,
/// hundreds of partitions took seconds, and a stopping node has 2 s in all (Kafka closes logs on
/// `num.recovery.threads.per.data.dir` threads for the same reason). Concurrent fsyncs share the
/// file system's journal commits: 880 partitions closed in about 0.7 s on 32 threads against
/// 1.1 s on 8, on a loaded test machine.
const CLOSE_THREADS_MAX: usize = 32;

/// What [`close_logs`] reports of one log: its partition, log end offset and recovery point as
/// they were before the close, and how the close went.
type ClosedLog = (Arc<Partition>, i64, i64, skald_storage::Result<()>);

/// Closes `logs` on up to [`CLOSE_THREADS_MAX`] threads; false when a close panicked (its
/// thread's logs are then missing from the report).
fn close_logs(logs: Vec<(Arc<Partition>, Log)>) -> (Vec<ClosedLog>, bool) {
    let per_thread = logs.len().div_ceil(CLOSE_THREADS_MAX).max(1);
    let mut logs = logs.into_iter();
    let chunks: Vec<Vec<(Arc<Partition>, Log)>> = std::iter::from_fn(|| {
        let chunk: Vec<_> = logs.by_ref().take(per_thread).collect();
        (!chunk.is_empty()).then_some(chunk)
    })
    .collect();
    std::thread::scope(|scope| {
        let closing: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .into_iter()
                        .map(|(partition, log)| {
                            let ends = (log.log_end_offset(), log.recovery_point());
                            (partition, ends.0, ends.1, log.close())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut every_close_returned = true;
        let mut closed = Vec::new();
        for thread in closing {
            match thread.join() {
                Ok(logs) => closed.extend(logs),
                Err(_) => every_close_returned = false,
            }
        }
        (closed, every_close_returned)
    })
}

/// What [`ReplicaManager::append_to_leader`] did: the append's own outcome, with the log start
/// offset after it and the leader epoch it was made in.
pub struct LeaderAppend {
    pub appended: skald_storage::Result<skald_storage::AppendInfo>,
    pub log_start_offset: i64,
    pub leader_epoch: i32,
}

/// Why a leader append was refused before anything was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderAppendRefused {
    /// This broker does not lead the partition (NOT_LEADER_OR_FOLLOWER).
    NotLeader,
    /// acks=all with a committed ISR smaller than `min.insync.replicas` (NOT_ENOUGH_REPLICAS).
    NotEnoughReplicas { isr: usize },
    /// The partition was removed meanwhile (UNKNOWN_TOPIC_OR_PARTITION).
    Deleted,
}

#[cfg(test)]
mod tests;
