//! One partition's log: an ordered set of segments, the last of which is appended to.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use skald_protocol::batch::{self, RecordBatchHeader, RecordBatches};

use crate::clock::{Clock, SystemClock};
use crate::config::LogConfig;
use crate::error::{Error, IoContext, Result};
use crate::fault::DiskFaults;
use crate::index::relative_offset;
use crate::leader_epoch::{self, EpochEntry, LeaderEpochCache};
use crate::producer_state::{ProducerCheck, ProducerStateManager, TxnVerification};
use crate::segment::{
    parse_segment_stem, Segment, DELETED_SUFFIX, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
};
use crate::txn_index::TxnIndex;

/// The partition's durable log start offset, for when it lies inside a segment (DeleteRecords).
/// Kafka keeps one `log-start-offset-checkpoint` per log dir; one small file per partition
/// directory is simpler and written just as atomically (temp file, fsync, rename, fsync the dir).
pub const LOG_START_OFFSET_FILE: &str = "log-start-offset.checkpoint";
/// Version line of [`LOG_START_OFFSET_FILE`] (Kafka's checkpoint files start with one too).
const LOG_START_OFFSET_VERSION: &str = "0";
/// A log opened without its [`leader_epoch::LEADER_EPOCH_CHECKPOINT_FILE`] (written before Skald
/// kept one, or damaged) rebuilds it from the batch headers of its newest segments, as many as
/// fit in this many bytes; epochs that started only in older segments stay unknown, which is what
/// a log starting at the first walked segment would know (see [`Log::end_offset_for_epoch`]).
/// Opening many partitions must stay cheap, so a log whose active segment alone is larger starts
/// with an empty cache: its epochs are learned from appends and leader elections from then on.
pub const LEADER_EPOCH_REBUILD_BYTES_MAX: u64 = 32 << 20;

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeletedSegments {
    pub segments: usize,
    pub bytes: u64,
}

impl DeletedSegments {
    fn add(&mut self, other: DeletedSegments) {
        self.segments += other.segments;
        self.bytes += other.bytes;
    }
}

/// What an append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset assigned to the first batch's base offset.
    pub first_offset: i64,
    /// Last offset of the last batch.
    pub last_offset: i64,
    /// Largest max timestamp of the appended batches (after LogAppendTime patching).
    pub max_timestamp: i64,
    /// The LogAppendTime stamped on the batches, or -1 for CreateTime (Kafka's produce response).
    pub log_append_time_ms: i64,
    /// Bytes written.
    pub bytes: usize,
    /// Sum of the batches' records counts.
    pub records_count: i64,
    /// The append was a producer's retry of a batch already in the log: nothing was written, and
    /// the offsets and timestamp are the original batch's (Kafka answers a retry so).
    pub duplicate: bool,
}

/// A leader's append and the headers it stored, each with its batch's position in the bytes
/// appended (none for a duplicate, which writes nothing).
pub(crate) struct LeaderAppended {
    pub(crate) info: AppendInfo,
    stored_headers: Vec<(usize, [u8; batch::RECORD_BATCH_HEADER_BYTES])>,
}

impl LeaderAppended {
    /// Patches `batches` (the bytes appended) into what was stored: for the callers that keep
    /// them. Only the headers differ.
    pub(crate) fn patch(self, batches: &mut [u8]) -> AppendInfo {
        for (position, header) in &self.stored_headers {
            batches[*position..*position + header.len()].copy_from_slice(header);
        }
        self.info
    }
}

/// What a read found: whole batches, zero-copy from the segment's map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole batches, as stored. Empty when reading at the log end (or at the `max_offset` bound).
    pub records: Bytes,
    /// Base offset of the first batch returned; it may be below the requested offset, because the
    /// batch containing that offset is returned whole (the consumer skips the earlier records).
    pub first_batch_offset: Option<i64>,
    /// The offset after the last batch returned (the requested offset if nothing was returned).
    pub next_offset: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// One partition's log on disk (`<log.dir>/<topic>-<partition>/`).
///
/// Thread safety: `Log` is `Send + Sync` but all mutation takes `&mut self`; the broker keeps each
/// log behind a `Mutex` (or `RwLock`, since reads take `&self`). [`ReadResult::records`] does not
/// borrow the log: it keeps the mapped segment alive on its own, so it can be sent to a socket after
/// the lock is released, and later appends or rolls never change the bytes it holds.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    /// Keyed by base offset; never empty; the last one is the active segment.
    segments: BTreeMap<i64, Segment>,
    /// The first offset a consumer may read: at least the first segment's base offset, and inside
    /// it after DeleteRecords (then persisted in [`LOG_START_OFFSET_FILE`]).
    log_start_offset: i64,
    /// What segment.ms and retention.ms are judged against.
    clock: Arc<dyn Clock>,
    /// Kafka's recovery point: every offset below it is known to be on disk (fsynced). Advanced by
    /// every flush, and after a roll by the completion of its flush ([`flush`]); a restart
    /// after a crash validates only the segments holding offsets at or past the value
    /// checkpointed in the log dir.
    recovery_point: i64,
    /// When the log was last flushed (or opened), for `flush.ms`.
    last_flush_ms: i64,
    /// Segment files created, and how many of those the directory was fsynced after: while
    /// behind, the next flush syncs the directory, so a new file's entry is as durable as its
    /// bytes. Counts rather than a flag, so a background flush only vouches for the files
    /// created before it was taken.
    dir_changes: u64,
    dir_synced: u64,
    /// A roll sealed segments without fsyncing them: they are durable once a flush up to this
    /// offset completes (see [`flush`]).
    pending_flush_up_to: Option<i64>,
    /// Changes whenever segments are replaced (truncation, the cleaner's swap), so a background
    /// flush taken before does not move the recovery point over files it never synced.
    generation: u64,
    /// Tells this `Log` from any other opened in the process (see [`PendingFlush`]).
    instance: u64,
    /// How many segments `open` validated batch by batch (the cost of recovery).
    recovered_segments: usize,
    /// Write faults to inject (tests only).
    faults: Option<Arc<DiskFaults>>,
    /// A write failed and its partial bytes could not be cut off ([`Error::TornAppend`]), or a
    /// truncation failed after its commit point: the files hold what the log does not account
    /// for, so nothing is served any more.
    failed: bool,
    /// Where each leader epoch starts (Kafka's `LeaderEpochFileCache`), persisted in
    /// [`leader_epoch::LEADER_EPOCH_CHECKPOINT_FILE`] whenever it changes.
    leader_epochs: LeaderEpochCache,
    /// Every idempotent producer's epoch and last batches, as of the log end offset; snapshotted
    /// at rolls and on close (see [`producer_state`]).
    producer_state: ProducerStateManager,
    /// The aborted transactions a `read_committed` fetch is told of (see [`crate::txn_index`]).
    txn_index: TxnIndex,
}

/// How [`Log::open_with_options`] opens a log.
#[derive(Debug, Clone)]
pub struct LogOpenOptions {
    /// What segment.ms, retention.ms and flush.ms are judged against.
    pub clock: Arc<dyn Clock>,
    /// The recovery point checkpointed for this log (Kafka's `recovery-point-offset-checkpoint`):
    /// every segment holding offsets at or past it is validated batch by batch (Kafka's
    /// `recoverLog`), those wholly below it are trusted. `i64::MAX` trusts everything (a clean
    /// shutdown), 0 validates everything (no checkpoint). `None`: only the active segment is
    /// validated, sealed segments are trusted: right after a clean close, or for a log never
    /// written; after a crash the checkpointed recovery point must be given, since a roll's
    /// sealed segment is fsynced in the background (see [`Log::take_pending_flush`]).
    pub recovery_point: Option<i64>,
    /// Write faults injected into the segments' `.log` writes (tests only; `None` in production).
    pub faults: Option<Arc<DiskFaults>>,
}

impl Default for LogOpenOptions {
    fn default() -> Self {
        LogOpenOptions {
            clock: Arc::new(SystemClock),
            recovery_point: None,
            faults: None,
        }
    }
}

impl Log {
    /// Opens the partition log in `dir`, creating the directory and a first segment if missing.
    ///
    /// Recovery: the last segment is validated batch by batch (length, magic, CRC32C, offsets
    /// increasing) and cut after the last valid batch; its indexes are rebuilt. Sealed segments are
    /// trusted (as after a clean close: see [`LogOpenOptions::recovery_point`] for a crash) unless
    /// their indexes fail the sanity checks, in which case they are recovered the same way. An interrupted compaction is finished or
    /// rolled back first (see [`crate::cleaner`]); stray index files and Kafka's `.deleted`,
    /// `.cleaned` and `.swap` leftovers are removed.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log> {
        Self::open_with_clock(dir, config, Arc::new(SystemClock))
    }

    /// [`Log::open`] with the clock that segment.ms rolls and retention.ms are judged by.
    ///
    /// The log start offset is the larger of the first segment's base offset and the one recorded
    /// in [`LOG_START_OFFSET_FILE`] (capped at the log end offset).
    pub fn open_with_clock(dir: &Path, config: LogConfig, clock: Arc<dyn Clock>) -> Result<Log> {
        Self::open_with_options(
            dir,
            config,
            LogOpenOptions {
                clock,
                ..LogOpenOptions::default()
            },
        )
    }

    /// [`Log::open`] trusting what lies below `recovery_point` (see [`LogOpenOptions`]).
    pub fn open_with_recovery_point(
        dir: &Path,
        config: LogConfig,
        recovery_point: i64,
    ) -> Result<Log> {
        Self::open_with_options(
            dir,
            config,
            LogOpenOptions {
                recovery_point: Some(recovery_point),
                ..LogOpenOptions::default()
            },
        )
    }

    /// [`Log::open`] with a clock and a recovery point. A sealed segment is validated when the next
    /// segment starts past the recovery point; the active one when its base offset is past it or
    /// its batches (found from the index's tail) reach past it. If a sealed segment had to be cut,
    /// the segments after it are deleted, as Kafka does: the log must stay contiguous. The log's
    /// recovery point is then the smaller of the one given and the log end offset (recovery
    /// validates but does not fsync; the next flush advances it).
    pub fn open_with_options(
        dir: &Path,
        config: LogConfig,
        options: LogOpenOptions,
    ) -> Result<Log> {
        let LogOpenOptions {
            clock,
            recovery_point,
            faults,
        } = options;
        config.validate()?;
        let now_ms = clock.now_ms();
        fs::create_dir_all(dir).at(dir)?;
        // A compaction interrupted after its commit point is finished, one before it rolled back.
        crate::cleaner::recover_interrupted_swaps(dir)?;
        let mut log_bases = Vec::new();
        let mut index_files = Vec::new();
        for entry in fs::read_dir(dir).at(dir)? {
            let path = entry.at(dir)?.path();
            let (Some(stem), Some(extension)) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            match extension {
                DELETED_SUFFIX | "cleaned" | "swap" => {
                    tracing::info!(file = %path.display(), "removing leftover file");
                    fs::remove_file(&path).at(&path)?;
                }
                LOG_SUFFIX => match parse_segment_stem(stem) {
                    Some(base_offset) => log_bases.push(base_offset),
                    None => {
                        tracing::warn!(file = %path.display(), "ignoring unrecognised .log file")
                    }
                },
                INDEX_SUFFIX | TIME_INDEX_SUFFIX => {
                    if let Some(base_offset) = parse_segment_stem(stem) {
                        index_files.push((base_offset, path));
                    }
                }
                _ => {}
            }
        }
        log_bases.sort_unstable();
        for (base_offset, path) in index_files {
            if log_bases.binary_search(&base_offset).is_err() {
                tracing::info!(file = %path.display(), "removing index without a segment");
                fs::remove_file(&path).at(&path)?;
            }
        }

        let checkpointed_start = read_log_start_offset(dir)?;
        let mut segments = BTreeMap::new();
        let Some(&active_base) = log_bases.last() else {
            // A log is never left without a segment; without one it starts where it was cut.
            let base_offset = checkpointed_start.unwrap_or(0).max(0);
            segments.insert(
                base_offset,
                Segment::create(dir, base_offset, &config, now_ms)?,
            );
            let mut log = Log {
                dir: dir.to_path_buf(),
                config,
                segments,
                log_start_offset: base_offset,
                clock,
                recovery_point: base_offset,
                last_flush_ms: now_ms,
                dir_changes: 1,
                dir_synced: 0,
                pending_flush_up_to: None,
                generation: flush::next_generation(),
                instance: flush::next_generation(),
                recovered_segments: 0,
                faults,
                failed: false,
                leader_epochs: LeaderEpochCache::default(),
                producer_state: ProducerStateManager::default(),
                txn_index: TxnIndex::open(dir)?,
            };
            log.load_leader_epochs()?;
            log.load_producer_state()?;
            return Ok(log);
        };
        let recovery_point_given = recovery_point.unwrap_or(active_base);
        let mut recovered_segments = 0;
        let mut bases = log_bases.iter().copied().peekable();
        while let Some(base_offset) = bases.next() {
            let Some(&next_base) = bases.peek() else {
                let (active, truncated) = if base_offset > recovery_point_given {
                    let (segment, truncated) =
                        Segment::open_active(dir, base_offset, &config, now_ms)?;
                    (segment, Some(truncated))
                } else {
                    Segment::open_active_trusted(
                        dir,
                        base_offset,
                        recovery_point_given,
                        &config,
                        now_ms,
                    )?
                };
                if let Some(truncated) = truncated {
                    recovered_segments += 1;
                    if truncated > 0 {
                        tracing::warn!(dir = %dir.display(), truncated, log_end_offset = active.active_next_offset(), "recovered log");
                    }
                }
                segments.insert(base_offset, active);
                break;
            };
            if next_base <= recovery_point_given {
                // Loaded (and its indexes checked) when first read.
                let segment = Segment::open_sealed(dir, base_offset, &config, now_ms)?;
                segments.insert(base_offset, segment);
                continue;
            }
            let (segment, truncated) =
                Segment::recover_sealed(dir, base_offset, next_base, &config, now_ms)?;
            recovered_segments += 1;
            if truncated == 0 {
                segments.insert(base_offset, segment);
                continue;
            }
            // Kafka's `recoverLog`: what followed a cut is no longer contiguous with it, so the
            // later segments go, newest first, and the cut segment becomes the active one.
            drop(segment);
            let later: Vec<i64> = bases.collect();
            tracing::warn!(dir = %dir.display(), base_offset, truncated, deleted_segments = later.len(), "sealed segment had an invalid tail; deleting the segments after it");
            for &doomed in later.iter().rev() {
                delete_segment_files(dir, doomed)?;
            }
            let (active, _) = Segment::open_active(dir, base_offset, &config, now_ms)?;
            segments.insert(base_offset, active);
            break;
        }
        let active_base = segments
            .keys()
            .next_back()
            .copied()
            .unwrap_or_else(|| unreachable!("at least one segment was opened"));
        let log_end_offset = segments
            .values()
            .next_back()
            .map_or(active_base, Segment::active_next_offset);
        let first_base = log_bases.first().copied().unwrap_or(active_base);
        let mut log_start_offset = first_base.max(checkpointed_start.unwrap_or(first_base));
        if log_start_offset > log_end_offset {
            // A lost tail gets here (DeleteRecords flushes the log before moving the start), and a
            // truncation that a crash interrupted after its commit point but before it recorded
            // the start it lowered. The capped start is recorded: appends continue from it, and a
            // later open must not hide them behind the old one.
            tracing::warn!(dir = %dir.display(), log_start_offset, log_end_offset, "log start offset past the log end; capped");
            log_start_offset = log_end_offset;
            write_log_start_offset(dir, log_start_offset)?;
        }
        let mut log = Log {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            clock,
            recovery_point: recovery_point_given.min(log_end_offset),
            last_flush_ms: now_ms,
            dir_changes: 0,
            dir_synced: 0,
            pending_flush_up_to: None,
            generation: flush::next_generation(),
            instance: flush::next_generation(),
            recovered_segments,
            faults,
            failed: false,
            leader_epochs: LeaderEpochCache::default(),
            producer_state: ProducerStateManager::default(),
            txn_index: TxnIndex::open(dir)?,
        };
        log.load_leader_epochs()?;
        log.load_producer_state()?;
        Ok(log)
    }

    /// Loads the leader epoch cache, rebuilding it from batch headers if its checkpoint is missing
    /// or unusable (never failing the open for it; see [`LEADER_EPOCH_REBUILD_BYTES_MAX`]), then
    /// fits it to the log as opened, as Kafka's `LogLoader` does: entries below the log start
    /// offset merge into one starting there, entries at or past the log end offset (lost with a
    /// torn tail, or recorded before a crash cut a truncation short) go.
    fn load_leader_epochs(&mut self) -> Result<()> {
        let (mut cache, mut changed) = match leader_epoch::read_checkpoint(&self.dir) {
            Ok(cache) => (cache, false),
            Err(leader_epoch::ReadError::Missing) if self.size_bytes() == 0 => {
                (LeaderEpochCache::default(), false)
            }
            Err(leader_epoch::ReadError::Missing) => (self.rebuild_leader_epochs()?, true),
            Err(leader_epoch::ReadError::Unusable(why)) => {
                tracing::warn!(dir = %self.dir.display(), "unusable leader epoch checkpoint, rebuilding it: {why}");
                (self.rebuild_leader_epochs()?, true)
            }
        };
        changed |= cache.truncate_from_start(self.log_start_offset);
        changed |= cache.truncate_from_end(self.log_end_offset());
        if changed {
            leader_epoch::write_checkpoint(&self.dir, &cache)?;
        }
        self.leader_epochs = cache;
        Ok(())
    }

    /// The leader epoch cache as appends would have built it, from the batch headers of the newest
    /// segments that fit in [`LEADER_EPOCH_REBUILD_BYTES_MAX`] (a headers-only walk; the batches
    /// were validated when written or recovered). Sealed segments loaded for the walk are unloaded
    /// again.
    fn rebuild_leader_epochs(&mut self) -> Result<LeaderEpochCache> {
        let mut budget = LEADER_EPOCH_REBUILD_BYTES_MAX;
        let mut walked = Vec::new();
        for (&base, segment) in self.segments.iter().rev() {
            let Some(left) = budget.checked_sub(segment.size()) else {
                break;
            };
            budget = left;
            walked.push(base);
        }
        let mut cache = LeaderEpochCache::default();
        for &base in walked.iter().rev() {
            let Some(segment) = self.segments.get_mut(&base) else {
                continue;
            };
            let was_loaded = segment.is_loaded();
            for item in RecordBatches::headers_only(segment.log_bytes()?) {
                let Ok((_, header)) = item else { break };
                cache.assign(header.partition_leader_epoch, header.base_offset);
            }
            if !was_loaded {
                segment.unload();
            }
        }
        let first_walked = walked.last().copied();
        if walked.len() < self.segments.len() {
            tracing::warn!(dir = %self.dir.display(), walked_segments = walked.len(), ?first_walked, "leader epoch checkpoint rebuilt from the newest segments only; earlier epochs are unknown");
        } else {
            tracing::info!(dir = %self.dir.display(), entries = cache.entries().len(), "leader epoch checkpoint rebuilt from the batch headers");
        }
        Ok(cache)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Takes new settings while open (a topic config altered online, Kafka's
    /// `UnifiedLog.updateConfig`): the next append, retention pass and flush check use them. The
    /// active segment's indexes keep the size they were created with until it rolls, as in Kafka.
    pub fn update_config(&mut self, config: LogConfig) -> Result<()> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.values()
    }

    /// The segments by base offset, for the log cleaner (`crate::cleaner`).
    pub(crate) fn segment_map(&self) -> &BTreeMap<i64, Segment> {
        &self.segments
    }

    /// The log cleaner swaps cleaned segments in; it never touches the active (last) one.
    pub(crate) fn segment_map_mut(&mut self) -> &mut BTreeMap<i64, Segment> {
        self.generation = flush::next_generation();
        &mut self.segments
    }

    fn active(&self) -> &Segment {
        // `segments` is never empty: `open` creates one and nothing removes the last.
        self.segments
            .values()
            .next_back()
            .unwrap_or_else(|| unreachable!("a log always has a segment"))
    }

    /// The first offset a consumer may read (Kafka's log start offset, the low watermark).
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The offset the next appended record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.active().active_next_offset()
    }

    /// Bytes of all segments' `.log` files.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }

    /// Kafka's recovery point: every offset below it is on disk (see [`LogOpenOptions`]).
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    /// Messages (offsets) appended since the last flush: the log end offset minus the recovery
    /// point (Kafka's `unflushedMessages`).
    pub fn unflushed_messages(&self) -> i64 {
        self.log_end_offset().saturating_sub(self.recovery_point)
    }

    /// How many segments opening this log validated batch by batch.
    pub fn recovered_segments(&self) -> usize {
        self.recovered_segments
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Unmaps every sealed segment's files (Kafka closes idle segments' handles the same way); each
    /// is loaded again when next read. Fetched bytes keep their own maps. The active segment stays.
    /// Returns how many were unloaded. Sealed segments never hold descriptors; this gives back
    /// their maps (`vm.max_map_count`) and address space, e.g. after a consumer read old data.
    pub fn unload_sealed_segments(&mut self) -> usize {
        let sealed = self.segments.len().saturating_sub(1);
        self.segments
            .values_mut()
            .take(sealed)
            .filter_map(|segment| segment.unload().then_some(()))
            .count()
    }

    /// Unmaps the sealed segments nothing has read for `idle` (see
    /// [`Log::unload_sealed_segments`]): old data a consumer read once stops holding maps.
    /// Returns how many were unloaded.
    pub fn unload_idle_segments(&mut self, idle: std::time::Duration) -> usize {
        let sealed = self.segments.len().saturating_sub(1);
        self.segments
            .values_mut()
            .take(sealed)
            .filter_map(|segment| segment.unload_if_idle(idle).then_some(()))
            .count()
    }

    /// Whether reading at `offset` would first open and map a sealed segment (and check, maybe
    /// rebuild, its indexes): slow enough that an async caller should move off its worker.
    pub fn reads_cold_segment(&self, offset: i64) -> bool {
        self.segments
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, segment)| !segment.is_loaded())
    }

    /// How many segments have their files open (mapped); the active one always does.
    pub fn loaded_segment_count(&self) -> usize {
        self.segments.values().filter(|s| s.is_loaded()).count()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.keys().copied().collect()
    }

    /// Appends whole v2 batches, assigning offsets from the log end offset: each batch is stored
    /// with its base offset and partition leader epoch set (plus LogAppendTime and the CRC when
    /// `log_append_time_ms` is given), and `batches` is patched the same way, so the caller holds
    /// the bytes as stored. Records are never decoded or re-encoded. (The produce path uses
    /// [`Log::append_client`], which leaves the request's bytes untouched.)
    ///
    /// The batches are re-validated (lengths, magic, CRC32C) first: nothing is written unless all
    /// of them are valid. All batches of one call go to the same segment; the log rolls first if
    /// they would not fit in the active one. A `leader_epoch` newer than the leader epoch cache's
    /// latest is recorded as starting at the first offset (see [`Log::end_offset_for_epoch`]).
    pub fn append(
        &mut self,
        batches: &mut [u8],
        log_append_time_ms: Option<i64>,
        leader_epoch: i32,
    ) -> Result<AppendInfo> {
        let appended = self.append_checked(
            batches,
            log_append_time_ms,
            leader_epoch,
            TxnVerification::Off,
        )?;
        Ok(appended.patch(batches))
    }

    /// [`Log::append`] of a producer's batches with KIP-890's check: a transactional batch
    /// that would begin its producer's transaction here needs the guard of a verification
    /// ([`Log::start_txn_verification`]) the coordinator confirmed, still current.
    ///
    /// `batches` are not changed: each stored header is built beside its batch and written
    /// ahead of the records in one vectored write, so a produce request's bytes go from the
    /// buffer they were received in to the file, uncopied.
    pub fn append_client(
        &mut self,
        batches: &[u8],
        log_append_time_ms: Option<i64>,
        leader_epoch: i32,
        verification: TxnVerification,
    ) -> Result<AppendInfo> {
        let appended =
            self.append_checked(batches, log_append_time_ms, leader_epoch, verification)?;
        Ok(appended.info)
    }

    /// The producer state's checks, then the leader's append; a duplicate is answered with
    /// the original's offsets and writes nothing.
    fn append_checked(
        &mut self,
        batches: &[u8],
        log_append_time_ms: Option<i64>,
        leader_epoch: i32,
        verification: TxnVerification,
    ) -> Result<LeaderAppended> {
        let headers = self.validate_append(batches)?;
        if let ProducerCheck::Duplicate(original) = self
            .producer_state
            .check_client_batches(headers.iter().map(|(_, header)| header), verification)?
        {
            return Ok(LeaderAppended {
                info: AppendInfo {
                    first_offset: original.first_offset(),
                    last_offset: original.last_offset,
                    max_timestamp: original.timestamp,
                    log_append_time_ms: -1,
                    bytes: 0,
                    records_count: 0,
                    duplicate: true,
                },
                stored_headers: Vec::new(),
            });
        }
        self.append_as_leader(batches, headers, log_append_time_ms, leader_epoch)
    }

    /// The leader's append once the batches are accepted: assigns offsets from the log end,
    /// stamps the leader epoch (and LogAppendTime), writes. Each batch's stored header is built
    /// beside it ([`batch::leader_header`]) and written ahead of its records, which go to the
    /// file straight from `batches`.
    pub(crate) fn append_as_leader(
        &mut self,
        batches: &[u8],
        mut headers: Vec<(usize, RecordBatchHeader)>,
        log_append_time_ms: Option<i64>,
        leader_epoch: i32,
    ) -> Result<LeaderAppended> {
        let mut next_offset = self.log_end_offset();
        let mut stored_headers = Vec::with_capacity(headers.len());
        for (position, header) in &mut headers {
            let one = &batches[*position..*position + header.total_size()];
            let stored = batch::leader_header(one, next_offset, leader_epoch, log_append_time_ms)?;
            *header = RecordBatchHeader::parse(&stored)?;
            next_offset = header.next_offset();
            stored_headers.push((*position, stored));
        }
        let pieces: Vec<&[u8]> = headers
            .iter()
            .zip(&stored_headers)
            .flat_map(|((position, header), (_, stored))| {
                let records = position + batch::RECORD_BATCH_HEADER_BYTES;
                [
                    &stored[..],
                    &batches[records..position + header.total_size()],
                ]
            })
            .collect();
        let info =
            self.append_batches(batches, &pieces, &headers, log_append_time_ms.unwrap_or(-1))?;
        Ok(LeaderAppended {
            info,
            stored_headers,
        })
    }

    /// A follower's append (Kafka's `appendAsFollower`): stores batches exactly as the leader
    /// stored them. Base offsets, partition leader epochs and timestamps are kept, never
    /// rewritten; each batch's CRC32C is checked and nothing is written unless all are valid.
    ///
    /// The first batch may start past the log end offset (a compacted leader has gaps), never
    /// below it, and each batch must start past the previous one's last offset; otherwise
    /// [`Error::UnexpectedAppendOffset`] and nothing is written. Rolls as [`Log::append`] does
    /// (the new segment is named by the first batch's base offset), and each batch carrying a
    /// leader epoch newer than the cache's latest starts that epoch at its base offset.
    /// `log_append_time_ms` in the result is -1: the leader already stamped what it stamped.
    pub fn append_as_follower(&mut self, batches: &[u8]) -> Result<AppendInfo> {
        let headers = self.validate_append(batches)?;
        let mut expected_at_least = self.log_end_offset();
        for (_, header) in &headers {
            if header.base_offset < expected_at_least {
                return Err(Error::UnexpectedAppendOffset {
                    base_offset: header.base_offset,
                    expected_at_least,
                });
            }
            expected_at_least = header.next_offset();
        }
        self.append_batches(batches, &[batches], &headers, -1)
    }

    /// The checks every append starts with: the log is not failed, and `batches` is a non-empty
    /// sequence of whole v2 batches with valid CRC32Cs, small enough for one segment. Returns each
    /// batch's position and header.
    fn validate_append(&self, batches: &[u8]) -> Result<Vec<(usize, RecordBatchHeader)>> {
        self.check_not_failed()?;
        if batches.is_empty() {
            return Err(Error::EmptyAppend);
        }
        if batches.len() > i32::MAX as usize {
            return Err(Error::AppendTooLarge {
                size: batches.len(),
            });
        }
        RecordBatches::new(batches)
            .map(|item| item.map_err(Error::from))
            .collect()
    }

    /// The tail shared by [`Log::append`] and [`Log::append_as_follower`]: `batches` are valid,
    /// and `pieces` are the bytes to store, the same length with each batch carrying its final
    /// offsets (`headers` are their `(position, header)` as stored, in offset order). Rolls if
    /// needed, records new leader epochs, writes, and applies `flush.messages`.
    fn append_batches(
        &mut self,
        batches: &[u8],
        pieces: &[&[u8]],
        headers: &[(usize, RecordBatchHeader)],
        log_append_time_ms: i64,
    ) -> Result<AppendInfo> {
        let (Some((_, first)), Some((_, last))) = (headers.first(), headers.last()) else {
            return Err(Error::EmptyAppend);
        };
        let (first_offset, last_offset) = (first.base_offset, last.last_offset());
        // One segment must be able to address every offset of the call (index offsets are
        // relative, 32-bit); recovery would otherwise cut the batches that do not fit.
        if relative_offset(first_offset, last_offset).is_none() {
            return Err(Error::AppendOffsetSpanTooLarge {
                first_offset,
                last_offset,
            });
        }
        let max_timestamp = headers
            .iter()
            .map(|(_, h)| h.max_timestamp)
            .fold(batch::NO_TIMESTAMP, i64::max);
        let records_count = headers
            .iter()
            .map(|(_, h)| i64::from(h.records_count))
            .sum();
        if self.active().should_roll(
            batches.len(),
            last_offset,
            max_timestamp,
            self.clock.now_ms(),
            &self.config,
        )? {
            self.roll(first_offset)?;
        }
        // Kafka's order: the epoch is recorded before the batches are written, so the cache on
        // disk never lacks an epoch the log holds; an entry for batches a crash lost is dropped on
        // open (it starts at or past the log end offset).
        let epochs_before = self.assign_batch_epochs(headers)?;
        let active = self
            .segments
            .values_mut()
            .next_back()
            .unwrap_or_else(|| unreachable!("a log always has a segment"));
        if let Err(err) = active.append(pieces, headers, self.faults.as_deref()) {
            if matches!(err, Error::TornAppend { .. }) {
                self.failed = true;
                tracing::error!(dir = %self.dir.display(), "log failed: {err}");
            }
            if let Some(before) = epochs_before {
                self.restore_leader_epochs(before);
            }
            return Err(err);
        }
        for (position, header) in headers {
            let bytes = &batches[*position..*position + header.total_size()];
            self.apply_to_producer_state(header, bytes)?;
        }
        // Kafka's `flush.messages`: fsync once that many messages are not yet on disk.
        if self.unflushed_messages() >= self.config.flush_messages {
            self.flush()?;
        }
        Ok(AppendInfo {
            first_offset,
            last_offset,
            max_timestamp,
            log_append_time_ms,
            bytes: batches.len(),
            records_count,
            duplicate: false,
        })
    }

    /// Records that this broker leads the partition from `epoch` on, starting at `start_offset`
    /// (Kafka's `makeLeader` assigns `(epoch, log end offset)` before any append, so followers of
    /// the previous leader find where their logs diverge). Ignored if `epoch` is not newer than the
    /// latest known one. `start_offset` must lie in `[log start offset, log end offset]`.
    pub fn assign_leader_epoch(&mut self, epoch: i32, start_offset: i64) -> Result<()> {
        self.check_not_failed()?;
        let log_end_offset = self.log_end_offset();
        if start_offset < self.log_start_offset || start_offset > log_end_offset {
            return Err(Error::OffsetOutOfRange {
                offset: start_offset,
                log_start_offset: self.log_start_offset,
                log_end_offset,
            });
        }
        self.update_leader_epochs(|cache| cache.assign(epoch, start_offset))?;
        Ok(())
    }

    /// The newest leader epoch this log knows of (the partition leader epoch of its last batches,
    /// or one assigned since).
    pub fn latest_leader_epoch(&self) -> Option<i32> {
        self.leader_epochs.latest_epoch()
    }

    /// Kafka's `endOffsetFor` (OffsetForLeaderEpoch, and a fetch's diverging epoch): for the
    /// latest epoch, `(epoch, log end offset)`; otherwise the largest known epoch `<= epoch` and
    /// the start offset of the first known epoch above it (for an epoch below every known one,
    /// `(epoch, start of the earliest)`). `None` when `epoch` is negative or above the latest, or
    /// none is known: callers answer UNDEFINED_EPOCH (-1) / UNDEFINED_EPOCH_OFFSET (-1).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.leader_epochs
            .end_offset_for(epoch, self.log_end_offset())
    }

    /// The leader epoch cache's entries, oldest first: as stored in the partition's
    /// [`leader_epoch::LEADER_EPOCH_CHECKPOINT_FILE`].
    pub fn leader_epoch_entries(&self) -> &[EpochEntry] {
        self.leader_epochs.entries()
    }

    /// Records the epochs of batches about to be written (each newer one starts at its batch's
    /// base offset). Returns the cache as it was if it changed, for [`Log::restore_leader_epochs`]
    /// should the write fail. Free when nothing is new: no clone, no file.
    fn assign_batch_epochs(
        &mut self,
        headers: &[(usize, RecordBatchHeader)],
    ) -> Result<Option<LeaderEpochCache>> {
        let latest = self.leader_epochs.latest_epoch();
        let any_new = headers
            .iter()
            .any(|(_, h)| h.partition_leader_epoch >= 0 && Some(h.partition_leader_epoch) > latest);
        if !any_new {
            return Ok(None);
        }
        self.update_leader_epochs(|cache| {
            headers.iter().fold(false, |changed, (_, h)| {
                cache.assign(h.partition_leader_epoch, h.base_offset) || changed
            })
        })
    }

    /// Puts back the cache an append changed before its write failed, on disk too; if that fails,
    /// the next open drops the extra entries anyway (they start at or past the log end offset).
    fn restore_leader_epochs(&mut self, before: LeaderEpochCache) {
        if let Err(err) = leader_epoch::write_checkpoint(&self.dir, &before) {
            tracing::warn!(dir = %self.dir.display(), "could not restore the leader epoch checkpoint: {err}");
        }
        self.leader_epochs = before;
    }

    /// Applies `change` to a copy of the leader epoch cache and, if it changed anything, persists
    /// the copy (atomically) before it takes effect. Returns the cache as it was, if it changed.
    fn update_leader_epochs(
        &mut self,
        change: impl FnOnce(&mut LeaderEpochCache) -> bool,
    ) -> Result<Option<LeaderEpochCache>> {
        let mut updated = self.leader_epochs.clone();
        if !change(&mut updated) {
            return Ok(None);
        }
        leader_epoch::write_checkpoint(&self.dir, &updated)?;
        Ok(Some(std::mem::replace(&mut self.leader_epochs, updated)))
    }

    /// Kafka's `truncateFromStart` after the log start offset moved (DeleteRecords, retention).
    fn truncate_leader_epochs_from_start(&mut self) -> Result<()> {
        let log_start_offset = self.log_start_offset;
        self.update_leader_epochs(|cache| cache.truncate_from_start(log_start_offset))?;
        Ok(())
    }

    /// Seals the active segment and starts a new one at `base_offset` (the log end offset). The
    /// sealed segment is not fsynced here, under the lock and inside an append: as Kafka does, the
    /// roll leaves a flush up to the new base offset pending, which the log's owner runs off the
    /// lock ([`Log::take_pending_flush`]); the recovery point moves when it completes.
    fn roll(&mut self, base_offset: i64) -> Result<()> {
        if let Some(active) = self.segments.values_mut().next_back() {
            active.seal_unsynced()?;
        }
        // Kafka snapshots producer state at every roll, so a restart replays at most the active
        // segment to rebuild it.
        self.snapshot_producer_state(base_offset)?;
        let segment = Segment::create(&self.dir, base_offset, &self.config, self.clock.now_ms())?;
        tracing::debug!(dir = %self.dir.display(), base_offset, "rolled segment");
        self.segments.insert(base_offset, segment);
        self.dir_changes += 1;
        self.pending_flush_up_to = Some(
            self.pending_flush_up_to
                .map_or(base_offset, |pending| pending.max(base_offset)),
        );
        Ok(())
    }

    /// Reads whole batches starting with the one containing `offset`: as many as fit in
    /// `max_bytes`, but always at least one. Reads come from one segment per call.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult> {
        self.read_up_to(offset, max_bytes, self.log_end_offset())
    }

    /// Like [`Log::read`], returning only batches that end below `max_offset` (the high watermark
    /// for consumers), so a batch straddling it is left out.
    pub fn read_up_to(&self, offset: i64, max_bytes: usize, max_offset: i64) -> Result<ReadResult> {
        self.check_not_failed()?;
        let log_start_offset = self.log_start_offset();
        let log_end_offset = self.log_end_offset();
        if offset < log_start_offset || offset > log_end_offset {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
            });
        }
        let empty = ReadResult {
            records: Bytes::new(),
            first_batch_offset: None,
            next_offset: offset,
            log_start_offset,
            log_end_offset,
        };
        if offset >= log_end_offset.min(max_offset) {
            return Ok(empty);
        }
        // The segment holding `offset` is the last one starting at or below it; if it has no batch
        // there (a gap), the next batch is in a later segment.
        let floor = self
            .segments
            .range(..=offset)
            .next_back()
            .map_or(log_start_offset, |(&base, _)| base);
        for segment in self.segments.range(floor..).map(|(_, s)| s) {
            let Some((position, first)) = segment.find_batch(offset)? else {
                continue;
            };
            if first.last_offset() >= max_offset {
                return Ok(empty);
            }
            let Some(read) = segment.read_at(position, &first, max_bytes, max_offset)? else {
                return Ok(empty);
            };
            return Ok(ReadResult {
                records: read.records,
                first_batch_offset: Some(read.first_batch_offset),
                next_offset: read.next_offset,
                log_start_offset,
                log_end_offset,
            });
        }
        Ok(empty)
    }

    /// Kafka's ListOffsets by timestamp: `(offset, timestamp)` of the earliest record whose timestamp
    /// is `>= timestamp`, or `None` if there is none. In a compressed batch the answer is the batch's
    /// `(base offset, max timestamp)`.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>> {
        self.check_not_failed()?;
        for segment in self.segments.values() {
            if segment.max_timestamp()? < timestamp
                || segment.next_offset()? <= self.log_start_offset
            {
                continue;
            }
            if let Some(found) =
                segment.find_offset_by_timestamp(timestamp, self.log_start_offset)?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Kafka's MAX_TIMESTAMP lookup (ListOffsets v7, KIP-734): `(offset, timestamp)` of the first
    /// record carrying the largest timestamp in the log, or `None` when no record at or past the
    /// log start offset carries one. Like Kafka, the earliest segment with that largest timestamp
    /// is searched, for its first record at it.
    pub fn offset_of_max_timestamp(&self) -> Result<Option<(i64, i64)>> {
        self.check_not_failed()?;
        let mut max_timestamp = -1;
        for segment in self.segments.values() {
            if segment.next_offset()? > self.log_start_offset {
                max_timestamp = max_timestamp.max(segment.max_timestamp()?);
            }
        }
        if max_timestamp < 0 {
            return Ok(None);
        }
        self.offset_for_timestamp(max_timestamp)
    }

    /// Kafka's `UnifiedLog.deleteOldSegments`: deletes the oldest whole segments that are past
    /// `retention.ms` (judged by each segment's largest timestamp against the clock), then those
    /// beyond `retention.bytes`, then those wholly below the log start offset. Returns what went.
    ///
    /// The active segment is never deleted as such: when every segment, the non-empty active one
    /// included, is to go, the log rolls first and the new empty segment stays. Each segment's files
    /// are renamed to `.deleted` before they are removed (see [`Segment::rename_to_deleted`]); reads
    /// handed out earlier keep their bytes (unlinking a mapped file is fine on Linux).
    pub fn delete_old_segments(&mut self) -> Result<DeletedSegments> {
        self.check_not_failed()?;
        let mut deleted = DeletedSegments::default();
        let retention_ms = self.config.retention_ms;
        if retention_ms >= 0 {
            let now_ms = self.clock.now_ms();
            deleted.add(
                self.delete_oldest_segments_while("retention.ms", |segment, _| {
                    Ok(now_ms.saturating_sub(segment.largest_timestamp()?) > retention_ms)
                })?,
            );
        }
        let retention_bytes = self.config.retention_bytes;
        if retention_bytes >= 0 {
            let mut excess = i64::try_from(self.size_bytes())
                .unwrap_or(i64::MAX)
                .saturating_sub(retention_bytes);
            deleted.add(
                self.delete_oldest_segments_while("retention.bytes", |segment, _| {
                    let size = i64::try_from(segment.size()).unwrap_or(i64::MAX);
                    if excess - size >= 0 {
                        excess -= size;
                        Ok(true)
                    } else {
                        Ok(false)
                    }
                })?,
            );
        }
        let log_start_offset = self.log_start_offset;
        deleted.add(
            self.delete_oldest_segments_while("log start offset", |_, next| {
                Ok(next.is_some_and(|next| next.base_offset() <= log_start_offset))
            })?,
        );
        Ok(deleted)
    }

    /// Kafka's DeleteRecords: moves the log start offset up to `offset` and deletes the segments
    /// wholly below it. Returns the new log start offset (the low watermark); an `offset` at or
    /// below the current one changes nothing. `offset` may be inside a segment: reads below it then
    /// fail with `OffsetOutOfRange`, and a read at it returns the batch containing it.
    ///
    /// The new start is durable before this returns (flushed log, then [`LOG_START_OFFSET_FILE`]
    /// written atomically), so it survives a crash and a restart.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64> {
        self.check_not_failed()?;
        let log_end_offset = self.log_end_offset();
        if offset < 0 || offset > log_end_offset {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        // The records up to `offset` must be on disk before a start offset past them is.
        self.flush()?;
        write_log_start_offset(&self.dir, offset)?;
        self.log_start_offset = offset;
        tracing::info!(dir = %self.dir.display(), log_start_offset = offset, "log start offset moved");
        self.delete_oldest_segments_while("log start offset", |_, next| {
            Ok(next.is_some_and(|next| next.base_offset() <= offset))
        })?;
        self.truncate_leader_epochs_from_start()?;
        self.prune_txn_index()?;
        Ok(self.log_start_offset)
    }

    /// Deletes segments from the oldest while `deletable(segment, next segment)` holds (Kafka's
    /// `deletableSegments` + `deleteSegments`). An empty active segment always stays; if all the
    /// others and a non-empty active one are to go, the log rolls first so one remains.
    fn delete_oldest_segments_while(
        &mut self,
        reason: &'static str,
        mut deletable: impl FnMut(&Segment, Option<&Segment>) -> Result<bool>,
    ) -> Result<DeletedSegments> {
        let mut count = 0;
        {
            let mut iter = self.segments.values().peekable();
            while let Some(segment) = iter.next() {
                let next = iter.peek().copied();
                if next.is_none() && segment.size() == 0 {
                    break;
                }
                if !deletable(segment, next)? {
                    break;
                }
                count += 1;
            }
        }
        if count == 0 {
            return Ok(DeletedSegments::default());
        }
        if count == self.segments.len() {
            self.roll(self.log_end_offset())?;
        }
        let mut deleted = DeletedSegments::default();
        for _ in 0..count {
            let Some(segment) = self.segments.first_key_value().map(|(_, s)| s) else {
                break;
            };
            let renamed = segment.rename_to_deleted()?;
            let Some((base_offset, segment)) = self.segments.pop_first() else {
                break;
            };
            let size = segment.size();
            let next_base = self
                .segments
                .keys()
                .next()
                .copied()
                .unwrap_or_else(|| segment.active_next_offset());
            drop(segment);
            self.log_start_offset = self.log_start_offset.max(next_base);
            for path in renamed {
                fs::remove_file(&path).at(&path)?;
            }
            tracing::info!(dir = %self.dir.display(), base_offset, size, reason, log_start_offset = self.log_start_offset, "deleted segment");
            deleted.segments += 1;
            deleted.bytes += size;
        }
        self.truncate_leader_epochs_from_start()?;
        self.delete_producer_snapshots_before_segments()?;
        self.prune_txn_index()?;
        Ok(deleted)
    }

    /// Makes everything appended so far durable and moves the recovery point to the log end
    /// offset (Kafka's `flush`: every segment from the recovery point on, log and indexes).
    pub fn flush(&mut self) -> Result<()> {
        self.check_not_failed()?;
        self.flush_up_to(self.log_end_offset())
    }

    /// Whether a torn write failed the log (see [`Error::LogFailed`]).
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    pub(crate) fn check_not_failed(&self) -> Result<()> {
        if self.failed {
            return Err(Error::LogFailed {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Kafka's `flush.ms` check (`LogManager.flushDirtyLogs`): flushes if at least `flush.ms` has
    /// passed on the log's clock since the last flush and something is unflushed. Returns whether
    /// it flushed.
    pub fn flush_if_due(&mut self) -> Result<bool> {
        let since_last_flush_ms = self.clock.now_ms().saturating_sub(self.last_flush_ms);
        if since_last_flush_ms < self.config.flush_ms || self.unflushed_messages() <= 0 {
            return Ok(false);
        }
        self.flush()?;
        Ok(true)
    }

    /// Fsyncs the segments holding offsets in `[recovery point, offset)` (and the directory if a
    /// segment was created since it was last synced), then moves the recovery point to `offset`.
    fn flush_up_to(&mut self, offset: i64) -> Result<()> {
        if offset <= self.recovery_point && !self.dir_needs_sync() {
            return Ok(());
        }
        let floor = self
            .segments
            .range(..=self.recovery_point)
            .next_back()
            .map_or(i64::MIN, |(&base, _)| base);
        for (_, segment) in self.segments.range(floor..offset.max(floor)) {
            segment.flush()?;
        }
        if self.dir_needs_sync() {
            fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .at(&self.dir)?;
            self.dir_synced = self.dir_changes;
        }
        self.recovery_point = self.recovery_point.max(offset);
        self.last_flush_ms = self.clock.now_ms();
        Ok(())
    }

    /// Flushes and closes the log, trimming the active segment's indexes as Kafka does. Sealed
    /// segments whose roll's flush has not completed are fsynced here too: a closed log is
    /// durable to its end.
    pub fn close(mut self) -> Result<()> {
        // A failed log's tail is left for the next open's recovery to validate, never sealed.
        self.check_not_failed()?;
        if let Some(active) = self.segments.values_mut().next_back() {
            active.seal()?;
        }
        self.flush_up_to(self.log_end_offset())?;
        self.snapshot_producer_state(self.log_end_offset())
    }

    /// Deletes the partition: renames the directory to `<dir>.<unique>-delete` (so a crash midway
    /// leaves something [`crate::scan_log_dir`] finishes removing), then removes it.
    pub fn delete(self) -> Result<()> {
        let dir = self.dir.clone();
        drop(self);
        let unique = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut name = dir.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{unique:x}-delete"));
        let doomed = dir.with_file_name(name);
        fs::rename(&dir, &doomed).at(&dir)?;
        fs::remove_dir_all(&doomed).at(&doomed)
    }
}

/// Removes one segment's files (the `.log` last renamed, so a crash midway leaves either the whole
/// segment or `.deleted` leftovers that `open` removes).
fn delete_segment_files(dir: &Path, base_offset: i64) -> Result<()> {
    let mut renamed = Vec::with_capacity(3);
    for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX] {
        let path = dir.join(crate::segment::segment_file_name(base_offset, suffix));
        let mut doomed = path.as_os_str().to_os_string();
        doomed.push(".");
        doomed.push(DELETED_SUFFIX);
        let doomed = PathBuf::from(doomed);
        match fs::rename(&path, &doomed) {
            Ok(()) => renamed.push(doomed),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).at(&path),
        }
    }
    for path in renamed {
        fs::remove_file(&path).at(&path)?;
    }
    Ok(())
}

/// The log start offset recorded in `dir`, if any. A torn or unreadable record is an error rather
/// than a silent reset (it is replaced atomically, so only outside damage makes one).
fn read_log_start_offset(dir: &Path) -> Result<Option<i64>> {
    let path = dir.join(LOG_START_OFFSET_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).at(&path),
    };
    let mut lines = text.lines().map(str::trim);
    match (lines.next(), lines.next().map(str::parse::<i64>)) {
        (Some(LOG_START_OFFSET_VERSION), Some(Ok(offset))) if offset >= 0 => Ok(Some(offset)),
        _ => Err(Error::Io {
            path,
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a log start offset checkpoint: {text:?}"),
            ),
        }),
    }
}

/// Records `offset` as the log start offset: temp file, fsync, rename over the old one, fsync the
/// directory, so a crash leaves either the old value or the new one.
fn write_log_start_offset(dir: &Path, offset: i64) -> Result<()> {
    crate::checkpoint::write_atomically(
        &dir.join(LOG_START_OFFSET_FILE),
        format!("{LOG_START_OFFSET_VERSION}\n{offset}\n").as_bytes(),
    )
}

mod flush;
mod producers;
mod truncate;

pub use flush::PendingFlush;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod replication_tests;

#[cfg(test)]
mod producer_tests;

#[cfg(test)]
mod disk_fault_tests;

#[cfg(test)]
mod flush_tests;
