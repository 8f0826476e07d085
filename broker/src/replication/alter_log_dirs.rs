//! Moving a replica between this broker's log dirs (Kafka's AlterReplicaLogDirs and its
//! `ReplicaAlterLogDirsThread`): a *future* log is made in the destination dir
//! (`<topic>-<partition>.<unique>-future`), a copier fetches the current log into it batch by
//! batch — stored exactly as they are, as a follower stores its leader's — while the partition
//! keeps serving from the current log, and once the copy has the current log's end, under the
//! log's lock, the future log takes its place and the old one is deleted.
//!
//! The copy follows the current log as a follower follows its leader: its log start, and its
//! truncations (a copy whose end or last epoch the current log no longer has starts over). It is
//! bounded by `replica.alter.log.dirs.io.max.bytes.per.second`.
//!
//! The swap renames the copy into place first and the old directory to `…-delete` second, as
//! Kafka does: a crash between the two leaves two identical copies, of which start-up keeps one
//! and sets the other aside. A move a restart interrupts is abandoned (start-up removes
//! `…-future` directories); it must be asked for again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafka_protocol::messages::fetch_request::FetchPartition;
use skald_storage::{Log, LogOpenOptions};

use crate::broker::Broker;
use crate::replica_manager::Partition;

use super::fetcher::FetchPosition;

/// How much one copy step reads from the current log.
const COPY_BYTES_MAX: usize = 1 << 20;
/// The copier's pause while its quota is exceeded.
const THROTTLED_PAUSE: Duration = Duration::from_millis(100);

/// The copy of a replica being made in another log dir.
#[derive(Debug)]
pub struct FutureReplica {
    /// Which copy this is: a copier that finds another one in the partition stops.
    id: u128,
    /// The log dir the replica moves to.
    pub log_dir: PathBuf,
    /// The copy's directory, `<log_dir>/<topic>-<partition>.<unique>-future`.
    dir: PathBuf,
    /// `None` only during the swap.
    log: Option<Log>,
}

impl FutureReplica {
    /// The copy's log end offset and size on disk.
    pub fn progress(&self) -> Option<(i64, u64)> {
        self.log
            .as_ref()
            .map(|log| (log.log_end_offset(), log.size_bytes()))
    }

    /// Abandons the copy: its directory is deleted.
    pub fn discard(mut self) {
        let dir = self.dir.clone();
        let deleted = match self.log.take() {
            Some(log) => log.delete(),
            None => std::fs::remove_dir_all(&dir).map_err(|source| skald_storage::Error::Io {
                path: dir.clone(),
                source,
            }),
        };
        if let Err(err) = deleted {
            tracing::error!(path = %dir.display(), "cannot delete an abandoned replica copy: {err}");
        }
    }
}

/// The longest name a copy's directory can get for a partition directory named `name` (Kafka
/// refuses to move a partition whose future directory name would pass 255 bytes).
pub fn future_dir_name_len(name: &str) -> usize {
    name.len() + 1 + format!("{:x}", u128::MAX).len() + skald_storage::FUTURE_DIR_SUFFIX.len()
}

fn unique() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos())
}

/// Starts a copy of `partition` in `log_dir` (with the current log's settings, from its log
/// start); the caller has checked that no copy is under way and that `log_dir` is another dir.
pub fn start(
    broker: &Arc<Broker>,
    partition: &Arc<Partition>,
    log_dir: &Path,
) -> Result<(), skald_storage::Error> {
    let name = skald_storage::partition_dir_name(&partition.topic, partition.partition);
    let id = unique();
    let dir = log_dir.join(format!("{name}.{id:x}{}", skald_storage::FUTURE_DIR_SUFFIX));
    let Some((config, log_start_offset)) =
        partition.with_log(|log| (log.config().clone(), log.log_start_offset()))
    else {
        return Err(skald_storage::Error::InvalidConfig(
            "the partition was removed".into(),
        ));
    };
    let mut log = Log::open(&dir, config)?;
    let prepared = log
        .truncate_fully_and_start_at(log_start_offset)
        .and_then(|()| crate::replica_manager::write_topic_id(&dir, partition.topic_id));
    if let Err(err) = prepared {
        let _ = log.delete();
        return Err(err);
    }
    *partition
        .future
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(FutureReplica {
        id,
        log_dir: log_dir.to_path_buf(),
        dir,
        log: Some(log),
    });
    tracing::info!(
        topic = partition.topic,
        partition = partition.partition,
        to = %log_dir.display(),
        "moving the replica to another log dir"
    );
    let broker = Arc::clone(broker);
    let partition = Arc::clone(partition);
    tokio::task::spawn_blocking(move || copy_until_swapped(&broker, &partition, id));
    Ok(())
}

/// One step of the copy, decided under the current log's lock.
enum Step {
    /// Append these batches to the copy.
    Copy(bytes::Bytes),
    /// The copy started over (the current log was truncated or its start moved past it).
    Restarted,
    /// The copy replaced the current log; the old one is to be dropped and its renamed
    /// directory deleted.
    Swapped(Box<Log>, PathBuf),
    /// No copy any more (cancelled, or the partition removed).
    Gone,
}

/// The copier (Kafka's `ReplicaAlterLogDirsThread` for one partition), on the blocking pool.
fn copy_until_swapped(broker: &Arc<Broker>, partition: &Arc<Partition>, id: u128) {
    let quota = &broker.replicas.quotas.alter_log_dirs;
    loop {
        if broker
            .shutting_down
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        if quota.is_exceeded(super::now_ms()) {
            std::thread::sleep(THROTTLED_PAUSE);
            continue;
        }
        let step = partition
            .with_log(|current| step(partition, current, id))
            .unwrap_or(Ok(Step::Gone));
        match step {
            Ok(Step::Copy(records)) => {
                let mut future = partition
                    .future
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let Some(log) = future
                    .as_mut()
                    .filter(|future| future.id == id)
                    .and_then(|future| future.log.as_mut())
                else {
                    return;
                };
                if let Err(err) = log.append_as_follower(&records) {
                    tracing::error!(
                        topic = partition.topic,
                        partition = partition.partition,
                        "cannot write the replica's copy; the move is abandoned: {err}"
                    );
                    if let Some(future) = future.take() {
                        future.discard();
                    }
                    return;
                }
                quota.record(records.len() as u64, super::now_ms());
            }
            Ok(Step::Restarted) => {}
            Ok(Step::Swapped(old, doomed)) => {
                drop(old);
                if let Err(err) = std::fs::remove_dir_all(&doomed) {
                    tracing::error!(path = %doomed.display(), "cannot delete the moved replica's old directory: {err}");
                }
                // The checkpoints of both dirs now say where the partition is.
                broker.replicas.checkpoint_recovery_points();
                broker.replicas.checkpoint_high_watermarks();
                tracing::info!(
                    topic = partition.topic,
                    partition = partition.partition,
                    path = %partition.dir().display(),
                    "the replica moved to another log dir"
                );
                return;
            }
            Ok(Step::Gone) => return,
            Err(err) => {
                tracing::error!(
                    topic = partition.topic,
                    partition = partition.partition,
                    "the replica's move to another log dir is abandoned: {err}"
                );
                let mut slot = partition
                    .future
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let future = slot.take_if(|future| future.id == id);
                drop(slot);
                if let Some(future) = future {
                    future.discard();
                }
                return;
            }
        }
    }
}

/// Decides the next step under the current log's lock (and then the copy's).
fn step(partition: &Partition, current: &mut Log, id: u128) -> Result<Step, skald_storage::Error> {
    let mut slot = partition
        .future
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(future) = slot.as_mut().filter(|future| future.id == id) else {
        return Ok(Step::Gone);
    };
    let Some(copy) = future.log.as_mut() else {
        return Ok(Step::Gone);
    };
    if let Some(step) = follow(current, copy)? {
        return Ok(step);
    }
    // The copy has everything: it takes the current log's place.
    let Some(mut future) = slot.take() else {
        return Ok(Step::Gone);
    };
    drop(slot);
    swap(partition, current, &mut future).inspect_err(|_| {
        // Nothing changed: the copy is abandoned (the caller finds no future and stops).
        future.discard();
    })
}

/// What the copy needs next to follow the current log: batches to append, a restart, or nothing
/// (`None`: it has the current log's end and may take its place).
fn follow(current: &Log, copy: &mut Log) -> Result<Option<Step>, skald_storage::Error> {
    let position = FetchPosition::of(copy);
    // Kafka's truncation check, against the current log as a follower's against its leader.
    let diverged = position.log_end_offset > current.log_end_offset()
        || super::diverging_epoch(
            current,
            &FetchPartition::default()
                .with_fetch_offset(position.log_end_offset)
                .with_last_fetched_epoch(position.last_fetched_epoch),
        )
        .is_some();
    if diverged || position.log_end_offset < current.log_start_offset() {
        copy.truncate_fully_and_start_at(current.log_start_offset())?;
        return Ok(Some(Step::Restarted));
    }
    if current.log_start_offset() > copy.log_start_offset() {
        copy.delete_records_before(current.log_start_offset())?;
    }
    if position.log_end_offset < current.log_end_offset() {
        let read = current.read(position.log_end_offset, COPY_BYTES_MAX)?;
        return Ok(Some(Step::Copy(read.records)));
    }
    Ok(None)
}

/// Renames the copy into place and the current directory to `…-delete`, opens the copy there and
/// puts it in the current log's place. On failure every rename is undone.
fn swap(
    partition: &Partition,
    current: &mut Log,
    future: &mut FutureReplica,
) -> Result<Step, skald_storage::Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| skald_storage::Error::Io { path, source }
    };
    let Some(copy) = future.log.take() else {
        return Ok(Step::Gone);
    };
    let end = copy.log_end_offset();
    copy.close()?;
    let old_dir = partition.dir();
    let name = skald_storage::partition_dir_name(&partition.topic, partition.partition);
    let new_dir = future.log_dir.join(&name);
    let doomed = old_dir.with_file_name(format!(
        "{name}.{:x}{}",
        unique(),
        skald_storage::DELETE_DIR_SUFFIX
    ));
    std::fs::rename(&future.dir, &new_dir).map_err(io(&future.dir))?;
    if let Err(err) = std::fs::rename(&old_dir, &doomed) {
        let _ = std::fs::rename(&new_dir, &future.dir);
        return Err(io(&old_dir)(err));
    }
    let opened = Log::open_with_options(
        &new_dir,
        current.config().clone(),
        LogOpenOptions {
            // Closed cleanly a moment ago: nothing to validate.
            recovery_point: Some(end),
            ..LogOpenOptions::default()
        },
    )
    .and_then(|mut log| {
        // An epoch the current log started without writing in it yet (a new leader's) has no
        // batch the copy could have learnt it from.
        if let Some(last) = current.leader_epoch_entries().last().copied() {
            if log.latest_leader_epoch() != Some(last.epoch) {
                log.assign_leader_epoch(last.epoch, last.start_offset)?;
            }
        }
        Ok(log)
    });
    let log = match opened {
        Ok(log) => log,
        Err(err) => {
            let _ = std::fs::rename(&doomed, &old_dir);
            let _ = std::fs::rename(&new_dir, &future.dir);
            return Err(err);
        }
    };
    future.dir = new_dir.clone();
    let old = std::mem::replace(current, log);
    partition.set_dir(new_dir);
    Ok(Step::Swapped(Box::new(old), doomed))
}

#[cfg(test)]
mod tests {
    use skald_protocol::batch::testing::simple_batch;
    use skald_storage::LogConfig;

    use super::*;

    /// Copies `current` into `copy` with [`follow`] until it asks for nothing more; the steps.
    fn copy_all(current: &Log, copy: &mut Log) -> Vec<&'static str> {
        let mut steps = Vec::new();
        while let Some(step) = follow(current, copy).unwrap() {
            match step {
                Step::Copy(records) => {
                    copy.append_as_follower(&records).unwrap();
                    steps.push("copy");
                }
                Step::Restarted => steps.push("restart"),
                _ => unreachable!("follow only copies or restarts"),
            }
            assert!(steps.len() < 100, "{steps:?}");
        }
        steps
    }

    fn batches(log: &Log) -> bytes::Bytes {
        log.read(log.log_start_offset(), usize::MAX >> 1)
            .unwrap()
            .records
    }

    #[test]
    fn the_copy_follows_appends_truncations_and_the_log_start() {
        let dirs = tempfile::tempdir().unwrap();
        let mut current = Log::open(&dirs.path().join("current"), LogConfig::default()).unwrap();
        let mut copy = Log::open(&dirs.path().join("copy"), LogConfig::default()).unwrap();
        for i in 0..3 {
            current
                .append(&mut simple_batch(0, 2, i, 10), None, 1)
                .unwrap();
        }
        assert_eq!(copy_all(&current, &mut copy), vec!["copy"]);
        assert_eq!(batches(&copy), batches(&current));

        // Appends in a new epoch are copied on.
        current.assign_leader_epoch(2, 6).unwrap();
        current
            .append(&mut simple_batch(0, 2, 3, 10), None, 2)
            .unwrap();
        assert_eq!(copy_all(&current, &mut copy), vec!["copy"]);
        assert_eq!(copy.log_end_offset(), 8);

        // The current log is cut back and takes another path: the copy starts over.
        current.truncate_to(4).unwrap();
        current.assign_leader_epoch(3, 4).unwrap();
        current
            .append(&mut simple_batch(0, 2, 4, 10), None, 3)
            .unwrap();
        assert_eq!(copy_all(&current, &mut copy), vec!["restart", "copy"]);
        assert_eq!(batches(&copy), batches(&current));

        // A moved log start reaches the copy.
        current.delete_records_before(2).unwrap();
        assert_eq!(copy_all(&current, &mut copy), Vec::<&str>::new());
        assert_eq!(copy.log_start_offset(), 2);
    }
}
