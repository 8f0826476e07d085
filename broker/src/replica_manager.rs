//! The partitions this broker hosts: their logs, created, opened and deleted as the metadata image
//! says, and the wake-up that long-polling fetches wait on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use skald_controller::{MetadataImage, TopicId, TopicImage};
use skald_storage::{Log, LogConfig};
use tokio::sync::Notify;

use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// Kafka's file in each partition directory naming the topic id the data belongs to.
const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// One hosted partition and its log.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub partition: i32,
    pub topic_id: TopicId,
    /// The partition's directory, fixed for its lifetime.
    pub dir: PathBuf,
    /// `None` once the partition has been deleted; holders of an old `Arc` then see it as gone.
    log: Mutex<Option<Log>>,
}

impl Partition {
    /// Runs `f` on the log under its lock, or returns `None` if the partition was deleted.
    /// Appends and reads are short (no waiting inside), so a plain mutex serves.
    pub fn with_log<T>(&self, f: impl FnOnce(&mut Log) -> T) -> Option<T> {
        let mut log = self.lock();
        log.as_mut().map(f)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Log>> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

type PartitionKey = (String, i32);

/// All partitions hosted by this broker.
#[derive(Debug)]
pub struct ReplicaManager {
    node_id: i32,
    log_dirs: Vec<PathBuf>,
    partitions: RwLock<HashMap<PartitionKey, Arc<Partition>>>,
    /// Partition directories found on disk at start-up and not yet claimed by the metadata image.
    unclaimed_dirs: Mutex<HashMap<PartitionKey, PathBuf>>,
    /// Woken after every append, so fetches waiting for data re-check.
    appended: Notify,
    metrics: Metrics,
}

impl ReplicaManager {
    /// Scans the log dirs for existing partition directories; they are opened by `apply_metadata`.
    pub fn open(
        config: &ServerConfig,
        metrics: Metrics,
    ) -> Result<ReplicaManager, skald_storage::Error> {
        let mut unclaimed = HashMap::new();
        for dir in &config.log_dirs {
            std::fs::create_dir_all(dir).map_err(|source| skald_storage::Error::Io {
                path: dir.clone(),
                source,
            })?;
            for (topic, partition, path) in skald_storage::scan_log_dir(dir)? {
                // The metadata log lives beside the partitions but is not one of them.
                if path
                    .file_name()
                    .is_some_and(|name| name == skald_controller::log::METADATA_DIR_NAME)
                {
                    continue;
                }
                unclaimed.insert((topic, partition), path);
            }
        }
        Ok(ReplicaManager {
            node_id: config.node_id,
            log_dirs: config.log_dirs.clone(),
            partitions: RwLock::new(HashMap::new()),
            unclaimed_dirs: Mutex::new(unclaimed),
            appended: Notify::new(),
            metrics,
        })
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let partitions = self
            .partitions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        partitions.get(&(topic.to_string(), partition)).cloned()
    }

    /// Every hosted partition.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        let partitions = self
            .partitions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        partitions.values().cloned().collect()
    }

    pub fn appended(&self) -> &Notify {
        &self.appended
    }

    /// Called after an append: updates the partition's gauges and wakes waiting fetches.
    pub fn on_append(&self, partition: &Partition, log_end_offset: i64, size_bytes: u64) {
        self.metrics.set_partition_log(
            &partition.topic,
            partition.partition,
            log_end_offset,
            size_bytes,
        );
        self.appended.notify_waiters();
    }

    /// Makes the hosted partitions match the image: opens or creates the logs of partitions placed on
    /// this broker, deletes the logs of partitions that no longer exist (or belong to an older topic of
    /// the same name). Run after every metadata change, and at start-up.
    pub fn apply_metadata(
        &self,
        image: &MetadataImage,
        config: &ServerConfig,
    ) -> Result<(), skald_storage::Error> {
        let mut partitions = self
            .partitions
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut unclaimed = self
            .unclaimed_dirs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());

        let stale: Vec<PartitionKey> = partitions
            .iter()
            .filter(|((topic, index), partition)| {
                !image.topic(topic).is_some_and(|t| {
                    t.topic_id == partition.topic_id && t.partitions.contains_key(index)
                })
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(partition) = partitions.remove(&key) {
                self.delete_partition(&partition);
            }
        }

        for topic in image.topics.values() {
            for (index, placement) in &topic.partitions {
                if !placement.replicas.contains(&self.node_id) {
                    continue;
                }
                let key = (topic.name.clone(), *index);
                if partitions.contains_key(&key) {
                    continue;
                }
                let existing = unclaimed.remove(&key);
                let partition =
                    self.open_partition(topic, *index, existing, config, &partitions)?;
                partition.with_log(|log| {
                    self.metrics.set_partition_log(
                        &topic.name,
                        *index,
                        log.log_end_offset(),
                        log.size_bytes(),
                    )
                });
                partitions.insert(key, Arc::new(partition));
            }
        }

        // Directories of topics deleted while this broker was down.
        for ((topic, index), path) in unclaimed.drain() {
            tracing::info!(topic, partition = index, path = %path.display(), "deleting the log of a partition that no longer exists");
            if let Err(err) = std::fs::remove_dir_all(&path) {
                tracing::error!(path = %path.display(), "cannot delete stale partition directory: {err}");
            }
        }
        Ok(())
    }

    fn open_partition(
        &self,
        topic: &TopicImage,
        index: i32,
        existing: Option<PathBuf>,
        config: &ServerConfig,
        hosted: &HashMap<PartitionKey, Arc<Partition>>,
    ) -> Result<Partition, skald_storage::Error> {
        let dir = match existing {
            Some(dir) if read_topic_id(&dir) == Some(topic.topic_id) => dir,
            Some(dir) => {
                tracing::info!(path = %dir.display(), "deleting a partition directory left by an older topic of the same name");
                std::fs::remove_dir_all(&dir).map_err(|source| skald_storage::Error::Io {
                    path: dir.clone(),
                    source,
                })?;
                self.choose_log_dir(hosted)
                    .join(skald_storage::partition_dir_name(&topic.name, index))
            }
            None => self
                .choose_log_dir(hosted)
                .join(skald_storage::partition_dir_name(&topic.name, index)),
        };
        let log = Log::open(&dir, log_config(topic, config))?;
        write_topic_id(&dir, topic.topic_id)?;
        tracing::debug!(topic = topic.name, partition = index, path = %dir.display(), "partition log opened");
        Ok(Partition {
            topic: topic.name.clone(),
            partition: index,
            topic_id: topic.topic_id,
            dir,
            log: Mutex::new(Some(log)),
        })
    }

    /// Kafka places a new partition in the log dir holding the fewest partitions.
    fn choose_log_dir(&self, hosted: &HashMap<PartitionKey, Arc<Partition>>) -> &Path {
        let count_in = |dir: &Path| hosted.values().filter(|p| p.dir.starts_with(dir)).count();
        self.log_dirs
            .iter()
            .min_by_key(|dir| count_in(dir))
            .map(PathBuf::as_path)
            .unwrap_or_else(|| Path::new("."))
    }

    fn delete_partition(&self, partition: &Partition) {
        self.metrics
            .remove_partition(&partition.topic, partition.partition);
        let Some(log) = partition.lock().take() else {
            return;
        };
        if let Err(err) = log.delete() {
            tracing::error!(path = %partition.dir.display(), "cannot delete partition log: {err}");
        } else {
            tracing::info!(
                topic = partition.topic,
                partition = partition.partition,
                "partition log deleted"
            );
        }
    }

    /// Flushes every log; called on shutdown.
    pub fn flush_all(&self) {
        for partition in self.all() {
            if let Some(Err(err)) = partition.with_log(|log| log.flush()) {
                tracing::error!(
                    topic = partition.topic,
                    partition = partition.partition,
                    "flush failed: {err}"
                );
            }
        }
    }
}

/// The log settings of one topic: its overrides, else the broker's defaults.
pub fn log_config(topic: &TopicImage, config: &ServerConfig) -> LogConfig {
    let value = |topic_key: &str, broker_key: &str| -> Option<u64> {
        topic
            .configs
            .get(topic_key)
            .cloned()
            .unwrap_or_else(|| config.get(broker_key))
            .trim()
            .parse()
            .ok()
    };
    let defaults = LogConfig::default();
    LogConfig {
        segment_bytes: value("segment.bytes", "log.segment.bytes")
            .unwrap_or(defaults.segment_bytes),
        index_interval_bytes: value("index.interval.bytes", "log.index.interval.bytes")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(defaults.index_interval_bytes),
        segment_index_bytes: value("segment.index.bytes", "log.index.size.max.bytes")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(defaults.segment_index_bytes),
    }
}

fn read_topic_id(dir: &Path) -> Option<TopicId> {
    let text = std::fs::read_to_string(dir.join(PARTITION_METADATA_FILE)).ok()?;
    let id = text
        .lines()
        .find_map(|line| line.strip_prefix("topic_id: "))?;
    TopicId::try_from(id.trim().to_string()).ok()
}

fn write_topic_id(dir: &Path, topic_id: TopicId) -> Result<(), skald_storage::Error> {
    let path = dir.join(PARTITION_METADATA_FILE);
    if read_topic_id(dir) == Some(topic_id) {
        return Ok(());
    }
    std::fs::write(&path, format!("version: 0\ntopic_id: {topic_id}\n"))
        .map_err(|source| skald_storage::Error::Io { path, source })
}
