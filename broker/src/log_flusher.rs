//! Kafka's "flush-log" task: the fsync a segment roll leaves pending runs on the blocking pool,
//! off the append that rolled and off the partition's lock (see [`skald_storage::PendingFlush`]).
//! The append path takes the flush under the lock (a few `open` calls) and hands it here; the
//! recovery point moves when it completes, and a failed fsync takes the log dir offline as any
//! other disk failure does ([`crate::replica_manager::ReplicaManager::on_storage_error`]).

use std::sync::Arc;

use skald_storage::PendingFlush;
use tokio::sync::Semaphore;

use crate::broker::Broker;
use crate::replica_manager::{Partition, ReplicaManager};

/// Fewest flushes that may run at once: a roll of one partition does not wait for another's.
const FLUSHES_MIN: usize = 2;

/// Bounds the flushes running at once (one per roll; a partition rolls once per segment).
#[derive(Debug)]
pub struct LogFlusher {
    permits: Arc<Semaphore>,
}

impl LogFlusher {
    /// At most `max(log_dirs, 2)` fsyncs at once: one stream per disk keeps a slow disk from
    /// holding every blocking thread, and more would only queue in the kernel.
    pub fn new(log_dirs: usize) -> LogFlusher {
        LogFlusher {
            permits: Arc::new(Semaphore::new(log_dirs.max(FLUSHES_MIN))),
        }
    }

    /// Runs `flush`, taken from `partition`'s log under its lock, in the background. Without a
    /// tokio runtime (unit tests of the storage-facing code) it runs at once, in the caller.
    pub fn schedule(&self, broker: &Arc<Broker>, partition: &Arc<Partition>, flush: PendingFlush) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            complete(&broker.replicas, partition, flush);
            return;
        };
        let permits = Arc::clone(&self.permits);
        let broker = Arc::clone(broker);
        let partition = Arc::clone(partition);
        runtime.spawn(async move {
            // The semaphore is never closed.
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let ran = tokio::task::spawn_blocking(move || {
                complete(&broker.replicas, &partition, flush);
            })
            .await;
            if let Err(err) = ran {
                tracing::error!("segment flush task failed: {err}");
            }
        });
    }
}

/// Runs the flush every hosted partition's rolls left pending and nobody took: those of the
/// appends that do not hand theirs to [`LogFlusher::schedule`] (the group and transaction
/// coordinators' records, transaction markers). Blocking. Run before each recovery-point
/// checkpoint, so the checkpoint lags a roll by one checkpoint interval at most.
pub fn flush_pending_rolls(replicas: &ReplicaManager) {
    for partition in replicas.all() {
        if replicas.is_offline(&partition) {
            continue;
        }
        if let Some(Some(flush)) = partition.with_log(|log| log.take_pending_flush()) {
            complete(replicas, &partition, flush);
        }
    }
}

/// Fsyncs without the log's lock, then hands the outcome back under it. A partition removed (or
/// closed by a shutdown, which flushes everything itself) meanwhile needs nothing more.
fn complete(replicas: &ReplicaManager, partition: &Partition, mut flush: PendingFlush) {
    let synced = flush.sync();
    let failure = synced.as_ref().err().map(ToString::to_string);
    match partition.with_log(|log| log.complete_flush(flush, synced)) {
        Some(Err(err)) => replicas.on_storage_error(partition, &err),
        // The log was closed or removed meanwhile: a failed fsync must still take its dir
        // offline (a later sync through another descriptor would not report it).
        None if failure.is_some() => {
            let err = skald_storage::Error::Io {
                path: partition.dir(),
                source: std::io::Error::other(failure.unwrap_or_default()),
            };
            replicas.on_storage_error(partition, &err);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use skald_controller::{ImageDelta, MetadataImage, MetadataRecord, TopicId};
    use skald_protocol::batch::testing::simple_batch;
    use skald_storage::{DiskFaults, Log, LogConfig, LogOpenOptions};

    use super::*;
    use crate::config::ServerConfig;
    use crate::metrics::Metrics;

    const ME: i32 = 1;

    /// A broker hosting `orders-0` and `orders-1`, both led here, in `log_dir`.
    fn hosting_two(log_dir: &Path) -> ReplicaManager {
        let config = ServerConfig::from_properties(BTreeMap::from([
            ("node.id".to_string(), ME.to_string()),
            ("log.dirs".to_string(), log_dir.display().to_string()),
        ]))
        .unwrap();
        let replicas = ReplicaManager::open(&config, Metrics::new().unwrap()).unwrap();
        let empty = MetadataImage::default();
        let mut image = MetadataImage::default();
        let led_here = |partition| MetadataRecord::Partition {
            topic_id: TopicId(7),
            partition,
            replicas: vec![ME],
            isr: vec![ME],
            leader: ME,
            leader_epoch: 0,
            partition_epoch: 0,
            removing_replicas: Vec::new(),
            adding_replicas: Vec::new(),
        };
        image.replay_batch(&[
            MetadataRecord::Topic {
                name: "orders".into(),
                topic_id: TopicId(7),
            },
            led_here(0),
            led_here(1),
        ]);
        replicas.apply_metadata(
            &empty,
            &image,
            &ImageDelta::between(&empty, &image),
            &config,
        );
        replicas
    }

    /// Reopens `partition`'s log with segments of two 1-record batches and `faults`.
    fn reopen_small(partition: &Partition, faults: &Arc<DiskFaults>) {
        let mut log = partition.lock();
        let old = log.take().unwrap();
        let dir = old.dir().to_path_buf();
        old.close().unwrap();
        let config = LogConfig {
            segment_bytes: 2 * simple_batch(0, 1, 0, 10).len() as u64,
            ..LogConfig::default()
        };
        let options = LogOpenOptions {
            faults: Some(Arc::clone(faults)),
            ..LogOpenOptions::default()
        };
        *log = Some(Log::open_with_options(&dir, config, options).unwrap());
    }

    /// Appends three batches (a roll at 2); returns the flush the roll left, as an append path
    /// takes it.
    fn append_three(partition: &Partition) -> Option<PendingFlush> {
        partition
            .with_log(|log| {
                for i in 0..3 {
                    log.append(&mut simple_batch(0, 1, i, 10), None, 0).unwrap();
                }
                log.take_pending_flush()
            })
            .unwrap()
    }

    fn by_index(replicas: &ReplicaManager, index: i32) -> Arc<Partition> {
        replicas
            .all()
            .into_iter()
            .find(|p| p.partition == index)
            .unwrap()
    }

    #[test]
    fn a_completed_flush_moves_the_recovery_point_and_a_failed_one_takes_the_dir_offline() {
        let dir = tempfile::tempdir().unwrap();
        let replicas = hosting_two(dir.path());
        let faults = Arc::new(DiskFaults::new());
        let (good, bad) = (by_index(&replicas, 0), by_index(&replicas, 1));
        reopen_small(&good, &faults);
        reopen_small(&bad, &faults);

        let flush = append_three(&good).unwrap();
        assert_eq!(flush.up_to(), 2);
        assert_eq!(good.with_log(|log| log.recovery_point()), Some(0));
        complete(&replicas, &good, flush);
        assert_eq!(good.with_log(|log| log.recovery_point()), Some(2));
        assert!(!replicas.is_offline(&good));

        let flush = append_three(&bad).unwrap();
        faults.fail_sync();
        complete(&replicas, &bad, flush);
        assert_eq!(bad.with_log(|log| log.is_failed()), Some(true));
        assert_eq!(bad.with_log(|log| log.recovery_point()), Some(0));
        // The whole log dir goes, as for any disk failure.
        assert!(replicas.is_offline(&bad));
        assert!(replicas.is_offline(&good));
    }

    #[test]
    fn rolls_nobody_took_are_flushed_before_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let replicas = hosting_two(dir.path());
        let faults = Arc::new(DiskFaults::new());
        let partition = by_index(&replicas, 0);
        reopen_small(&partition, &faults);
        partition.with_log(|log| {
            for i in 0..3 {
                log.append(&mut simple_batch(0, 1, i, 10), None, 0).unwrap();
            }
        });
        assert_eq!(partition.with_log(|log| log.recovery_point()), Some(0));
        flush_pending_rolls(&replicas);
        assert_eq!(partition.with_log(|log| log.recovery_point()), Some(2));
        assert_eq!(
            partition.with_log(|log| log.has_pending_flush()),
            Some(false)
        );
    }
}
