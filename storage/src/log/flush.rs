//! The fsync a segment roll leaves pending (Kafka's "flush-log" task, which `UnifiedLog.roll`
//! schedules instead of flushing under the log's lock).
//!
//! Why not in the roll: a roll happens inside the append that fills the active segment, under
//! the partition's lock, and fsyncing a 1 GiB sealed segment there makes that producer, and
//! every reader and writer of the partition, wait for the disk. So the roll seals the segment
//! (indexes trimmed, final time index entry, exact map) without fsyncing it and records that the
//! log is durable only up to the old recovery point. The owner of the log then:
//! 1. takes a [`PendingFlush`] under the lock ([`Log::take_pending_flush`]): descriptors of the
//!    sealed segments' files and of the directory, opened there so they name the files the
//!    segments had then;
//! 2. releases the lock and fsyncs them ([`PendingFlush::sync`]), however long the disk takes;
//! 3. takes the lock again and hands back the outcome ([`Log::complete_flush`]).
//!
//! The recovery point, and so the recovery-point checkpoint and what `Log::open` trusts, moves
//! only in step 3, only up (Kafka's `markFlushed`), and only if no truncation or segment swap
//! happened in between (a generation number tells): a truncation brings the recovery point down
//! to the cut, and bytes appended after it are in no descriptor of step 1. A crash before
//! step 3 leaves the old recovery point, so a restart validates the sealed segments batch by
//! batch, as it would the active one. A failed fsync fails the log: the kernel may have dropped
//! the pages it could not write, so a later fsync succeeding proves nothing.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Log;
use crate::error::{Error, IoContext, Result};
use crate::fault::DiskFaults;
use crate::segment::LOG_SUFFIX;

/// Generations are unique across every log of the process, so a flush taken from one `Log` is
/// never mistaken for one of another opened on the same directory later (a replica moved back).
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

pub(super) fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// Sealed segments to fsync off the log's lock (see the module doc). Dropping one unsynced
/// changes nothing: the log stays durable up to its old recovery point, and its next flush
/// (a roll's, `flush.ms`, `flush.messages`, close) covers these segments again.
#[derive(Debug)]
pub struct PendingFlush {
    /// The recovery point once synced: the base offset of the segment the roll created.
    up_to: i64,
    /// Each file with the descriptor opened for it (or why it could not be).
    files: Vec<(PathBuf, io::Result<File>)>,
    /// The partition directory, when a segment file was created since it was last synced.
    dir: Option<(PathBuf, io::Result<File>)>,
    /// Whether `dir` was taken (it is gone once synced).
    syncs_dir: bool,
    /// The log's generation when taken: a truncation or swap since voids the recovery point.
    generation: u64,
    /// Which `Log` it was taken from: handed to another (the partition's log replaced, as a
    /// replica moved between log dirs is), it changes nothing there.
    log_instance: u64,
    /// The log's count of created segment files when taken, for the directory's sync.
    dir_changes: u64,
    faults: Option<Arc<DiskFaults>>,
}

impl PendingFlush {
    /// The recovery point this flush makes true.
    pub fn up_to(&self) -> i64 {
        self.up_to
    }

    /// Fsyncs the files, then the directory. Blocking, and as long as the disk takes: call it
    /// without the log's lock. Stops at the first error.
    pub fn sync(&mut self) -> Result<()> {
        if let Some(err) = self.faults.as_deref().and_then(DiskFaults::before_sync) {
            let path = self.files.first().map(|(path, _)| path.clone());
            return Err(Error::Io {
                path: path.unwrap_or_default(),
                source: err,
            });
        }
        for (path, file) in std::mem::take(&mut self.files) {
            file.and_then(|file| file.sync_data()).at(&path)?;
        }
        if let Some((path, dir)) = self.dir.take() {
            dir.and_then(|dir| dir.sync_all()).at(&path)?;
        }
        Ok(())
    }
}

impl Log {
    /// Whether a roll left sealed segments that are not yet on disk (see [`PendingFlush`]).
    pub fn has_pending_flush(&self) -> bool {
        self.pending_flush_up_to.is_some()
    }

    /// Takes the flush a roll left pending, with descriptors of the files it must sync, opened
    /// now (so later swaps or deletions of these files cannot redirect it); `None` when there is
    /// none, it was made moot by a flush since, or the log failed. Cheap: a few `open` calls.
    pub fn take_pending_flush(&mut self) -> Option<PendingFlush> {
        let up_to = self.pending_flush_up_to.take()?.min(self.log_end_offset());
        if self.failed || (up_to <= self.recovery_point && !self.dir_needs_sync()) {
            return None;
        }
        let floor = self
            .segments
            .range(..=self.recovery_point)
            .next_back()
            .map_or(i64::MIN, |(&base, _)| base);
        let mut files = Vec::new();
        for segment in self.segments.range(floor..up_to.max(floor)).map(|(_, s)| s) {
            for path in segment.file_paths() {
                let opened = File::open(&path);
                let is_index = path.extension().is_some_and(|e| e != LOG_SUFFIX);
                // Indexes are derived data, rebuilt when missing; only the `.log` must exist.
                if is_index && matches!(&opened, Err(err) if err.kind() == io::ErrorKind::NotFound)
                {
                    continue;
                }
                files.push((path, opened));
            }
        }
        let dir = self
            .dir_needs_sync()
            .then(|| (self.dir.clone(), File::open(&self.dir)));
        Some(PendingFlush {
            up_to,
            files,
            syncs_dir: dir.is_some(),
            dir,
            generation: self.generation,
            log_instance: self.instance,
            dir_changes: self.dir_changes,
            faults: self.faults.clone(),
        })
    }

    /// Hands back a [`PendingFlush`] after [`PendingFlush::sync`] returned `synced`. On success
    /// the recovery point moves up to the flush's, unless it is already there or the log was
    /// truncated (or had segments swapped) since the flush was taken; the directory counts as
    /// synced for the segment files created before it was taken. A failed sync fails the log
    /// ([`Error::LogFailed`] from then on) and is returned, for the caller to take the log dir
    /// offline as any other disk failure.
    pub fn complete_flush(&mut self, flush: PendingFlush, synced: Result<()>) -> Result<()> {
        if flush.log_instance != self.instance {
            return Ok(());
        }
        if let Err(err) = synced {
            self.failed = true;
            return Err(err);
        }
        if flush.syncs_dir {
            self.dir_synced = self.dir_synced.max(flush.dir_changes);
        }
        if flush.generation != self.generation {
            return Ok(());
        }
        let up_to = flush.up_to.min(self.log_end_offset());
        if up_to > self.recovery_point {
            self.recovery_point = up_to;
            self.last_flush_ms = self.clock.now_ms();
        }
        Ok(())
    }

    /// [`Log::take_pending_flush`], [`PendingFlush::sync`] and [`Log::complete_flush`] in one
    /// go, lock held throughout: for callers with nobody else to let in (tests, tools).
    pub fn flush_pending(&mut self) -> Result<()> {
        let Some(mut flush) = self.take_pending_flush() else {
            return Ok(());
        };
        let synced = flush.sync();
        self.complete_flush(flush, synced)
    }

    pub(super) fn dir_needs_sync(&self) -> bool {
        self.dir_changes > self.dir_synced
    }
}
