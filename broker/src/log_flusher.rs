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
    if let Some(Err(err)) = partition.with_log(|log| log.complete_flush(flush, synced)) {
        replicas.on_storage_error(partition, &err);
    }
}
