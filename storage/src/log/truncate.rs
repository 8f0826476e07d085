//! Truncation, Kafka's `truncateTo` and `truncateFullyAndStartAt`: a follower drops what diverged
//! from its leader's log, or starts over at the leader's log start.
//!
//! Why a module of its own: it is the one operation that removes the newest records, under two
//! constraints appends never meet.
//! - Readers may hold mapped bytes of the very files it cuts: a [`crate::ReadResult`] keeps its
//!   segment's map alive after the log's lock is released, to be written to a socket. Shrinking a
//!   mapped file in place would make every access to the pages past the new end raise SIGBUS, so
//!   a file that may be mapped is never shrunk (sealed and active segments are both read through
//!   maps). The kept prefix is copied to a new file that replaces the old one by rename; the old
//!   inode, unlinked, lives on unchanged for as long as any map of it does.
//! - A crash midway must leave the old log or the truncated one. The new segment is committed
//!   with the log cleaner's swap ([`crate::cleaner::commit_swap`]): the `.log.swap` rename is the
//!   commit point, and `Log::open` rolls back or finishes what a crash interrupted. The
//!   checkpoints updated afterwards (log start offset, leader epochs, cleaner offset) are fitted
//!   to the log by `Log::open` if a crash comes first.
//!
//! The copy costs up to one segment's bytes, which is why it is only made of the one segment that
//! is cut; segments wholly past the cut are replaced without being read.

use std::fs;

use skald_protocol::batch::{RecordBatchHeader, RecordBatches};

use super::{write_log_start_offset, Log};
use crate::cleaner::{self, CrashPoint, CLEANED_SUFFIX};
use crate::error::{Error, IoContext, Result};
use crate::producer_state;
use crate::segment::Segment;

/// The prefix is copied in appends of about this many bytes, so the headers of a large segment
/// are never all held at once.
const COPY_CHUNK_BYTES: usize = 8 << 20;

impl Log {
    /// Kafka's `truncateTo`: removes every record at or after `offset`, so the log end offset
    /// becomes `offset` (a follower truncates where its log diverged from the leader's, always at
    /// a batch boundary). A batch containing `offset` goes whole: the log then ends at its base
    /// offset. Segments starting at or past `offset` are deleted; the segment holding it is cut
    /// and becomes the active one; when `offset` falls in a gap after the last kept batch, an
    /// empty active segment starts at `offset`. The recovery point and, if the cut batch held
    /// it, the log start offset come down to the new log end offset; leader epochs starting at or
    /// past it are forgotten. If `offset >= log_end_offset` no record goes, but the leader epochs
    /// starting at or past the log end still do (an epoch recorded by a leader that appended
    /// nothing in it); an `offset` below the
    /// log start offset (or at the first segment's base) is [`Log::truncate_fully_and_start_at`].
    ///
    /// Fetched bytes stay valid and unchanged (see the module doc), and a crash leaves the log as
    /// it was or truncated. An error after the commit point fails the log ([`Error::LogFailed`])
    /// until it is reopened, which completes the truncation.
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        self.truncate_to_with(offset, &mut CrashPoint::never())
    }

    /// Kafka's `truncateFullyAndStartAt`: deletes every segment and starts again with one empty
    /// segment at `offset` (a follower whose log ends below the leader's log start). The log start
    /// offset, log end offset and recovery point all become `offset`; the leader epoch cache is
    /// cleared. Safe for fetched bytes and crashes as [`Log::truncate_to`] is.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<()> {
        self.truncate_fully_with(offset, &mut CrashPoint::never())
    }

    pub(crate) fn truncate_to_with(&mut self, offset: i64, crash: &mut CrashPoint) -> Result<()> {
        self.check_not_failed()?;
        let log_end_offset = self.log_end_offset();
        if offset < 0 {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset,
            });
        }
        if offset >= log_end_offset {
            // No record goes, but an epoch may still start at the log end: a broker that was
            // elected leader (which records its epoch there) and lost the leadership before
            // appending. The follower's last fetched epoch must come down to one that has
            // records here, or it would keep asking its leader the question that led here
            // (Kafka's `truncateTo` runs `truncateFromEnd` in this case too).
            return self
                .update_leader_epochs(|cache| cache.truncate_from_end(log_end_offset))
                .map(drop);
        }
        let first_base = self.segments.keys().next().copied().unwrap_or(offset);
        if offset < self.log_start_offset || offset <= first_base {
            return self.truncate_fully_with(offset, crash);
        }
        let Some((&base, segment)) = self.segments.range(..offset).next_back() else {
            unreachable!("a segment starts below an offset past the first segment's base")
        };
        // The segment holding `offset` keeps the batches before the one reaching it. If it has
        // none reaching it, `offset` is in a gap (or at the end of this segment): it stays whole
        // and only the later segments are replaced, by an empty one at `offset`.
        let (base, kept_bytes) = match segment.find_batch(offset)? {
            Some((position, _)) => (base, position),
            None => (offset, 0),
        };
        self.replace_tail(base, base, kept_bytes, crash)?;
        let fitted = self.fit_to_truncation(false, crash);
        if fitted.is_err() {
            self.failed = true;
        }
        fitted?;
        tracing::info!(dir = %self.dir.display(), offset, log_end_offset = self.log_end_offset(), "truncated log");
        Ok(())
    }

    pub(crate) fn truncate_fully_with(
        &mut self,
        offset: i64,
        crash: &mut CrashPoint,
    ) -> Result<()> {
        self.check_not_failed()?;
        if offset < 0 {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset(),
            });
        }
        self.replace_tail(offset, i64::MIN, 0, crash)?;
        self.log_start_offset = offset;
        self.recovery_point = offset;
        let fitted = self.fit_to_truncation(true, crash);
        if fitted.is_err() {
            self.failed = true;
        }
        fitted?;
        tracing::info!(dir = %self.dir.display(), offset, "truncated log fully");
        Ok(())
    }

    /// After the segments changed (`fully`: all of them): the recovery point and the log start
    /// offset may not stay past the new log end, and the leader epochs starting at or past it go
    /// (all of them after a full truncation). Each file is written only if its value changes. A
    /// crash before this is made up for by `Log::open`, which caps a log start offset past the
    /// log end (and records it) and drops the epochs starting at or past it.
    fn fit_to_truncation(&mut self, fully: bool, crash: &mut CrashPoint) -> Result<()> {
        let log_end_offset = self.log_end_offset();
        self.recovery_point = self.recovery_point.min(log_end_offset);
        if fully || self.log_start_offset > log_end_offset {
            // The whole log was replaced, or the cut batch held the log start offset: a
            // checkpoint above the new start would hide the records appended next.
            self.log_start_offset = self.log_start_offset.min(log_end_offset);
            write_log_start_offset(&self.dir, self.log_start_offset)?;
            crash.step(&self.dir)?;
        }
        if fully {
            self.update_leader_epochs(|cache| cache.clear())?;
        } else {
            self.update_leader_epochs(|cache| cache.truncate_from_end(log_end_offset))?;
        }
        crash.step(&self.dir)?;
        // Producer state follows the log (Kafka's `loadProducerState` after a truncation): after
        // a full truncation no snapshot describes the new log; otherwise those past the new end
        // go and the state is rebuilt from the newest left.
        if fully {
            for offset in producer_state::list_snapshots(&self.dir)? {
                producer_state::delete_snapshot(&self.dir, offset)?;
            }
        }
        self.load_producer_state()
    }

    /// Replaces every segment whose base offset is at or past `replaced_from` with one new, active
    /// segment at `base`, holding the first `kept_bytes` of the segment at `base` (which is then
    /// among the replaced ones) or nothing. The new segment is written and made durable under
    /// temporary names first; an error up to there changes nothing, one after the commit point
    /// fails the log.
    fn replace_tail(
        &mut self,
        base: i64,
        replaced_from: i64,
        kept_bytes: u64,
        crash: &mut CrashPoint,
    ) -> Result<()> {
        // A background flush taken before this syncs files that are being replaced: it must not
        // move the recovery point (which comes down to the cut) once it completes.
        self.generation = super::flush::next_generation();
        let now_ms = self.clock.now_ms();
        // The cleaner checkpoint comes down to the new active segment's base before the commit:
        // a lower one is always safe (more is taken as dirty), so a crash may leave it early.
        let prepared = self
            .write_replacement(base, kept_bytes, now_ms)
            .and_then(|()| cleaner::truncate_cleaner_checkpoint(&self.dir, base));
        if let Err(err) = prepared {
            cleaner::discard_cleaned(&self.dir, base);
            return Err(err);
        }
        let swapped = self.swap_in_replacement(base, replaced_from, now_ms, crash);
        if swapped.is_err() {
            self.failed = true;
        }
        swapped
    }

    /// Writes the replacement segment as `<base>.*.cleaned`, sealed (fsynced): the kept prefix is
    /// copied from the old segment's map and its indexes are built as appends build them.
    fn write_replacement(&self, base: i64, kept_bytes: u64, now_ms: i64) -> Result<()> {
        let mut replacement = Segment::create_temp(
            &self.dir,
            base,
            CLEANED_SUFFIX,
            kept_bytes,
            &self.config,
            now_ms,
        )?;
        if kept_bytes > 0 {
            let kept = self
                .segments
                .get(&base)
                .map(Segment::log_bytes)
                .transpose()?
                .and_then(|all| all.get(..usize::try_from(kept_bytes).ok()?))
                .ok_or_else(|| Error::Io {
                    path: self.dir.clone(),
                    source: std::io::Error::other(format!(
                        "segment {base} holds fewer than the {kept_bytes} bytes to keep"
                    )),
                })?;
            let mut chunk_start = 0;
            let mut headers: Vec<(usize, RecordBatchHeader)> = Vec::new();
            for item in RecordBatches::headers_only(kept) {
                let (position, header) = item?;
                let end = position + header.total_size();
                headers.push((position - chunk_start, header));
                if end - chunk_start >= COPY_CHUNK_BYTES {
                    replacement.append(&[&kept[chunk_start..end]], &headers, None)?;
                    headers.clear();
                    chunk_start = end;
                }
            }
            if !headers.is_empty() {
                replacement.append(&[&kept[chunk_start..]], &headers, None)?;
            }
        }
        replacement.seal()
    }

    /// Commits the replacement (the swap's commit point), renames the replaced segments'
    /// files to `.deleted`, opens the replacement as the active segment and removes the old
    /// files. Fetched bytes of the old segments keep their maps: the files are unlinked, never
    /// shrunk.
    fn swap_in_replacement(
        &mut self,
        base: i64,
        replaced_from: i64,
        now_ms: i64,
        crash: &mut CrashPoint,
    ) -> Result<()> {
        let replaced = replaced_from..i64::MAX;
        cleaner::commit_swap(&self.dir, base, replaced.clone(), crash)?;
        let doomed = cleaner::complete_swap(self, base, replaced, crash)?;
        // Just written, sealed and fsynced: trusted (its indexes are checked, not rebuilt).
        let (active, _) =
            Segment::open_active_trusted(&self.dir, base, i64::MAX, &self.config, now_ms)?;
        let old = self.segments.split_off(&replaced_from);
        self.segments.insert(base, active);
        drop(old);
        for path in doomed {
            fs::remove_file(&path).at(&path)?;
        }
        crash.step(&self.dir)
    }
}
