//! One segment: a `.log` of whole batches plus its `.index` and `.timeindex`, named by base offset.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use skald_protocol::batch::{self, BatchError, RecordBatchHeader, RecordBatches, NO_TIMESTAMP};

use crate::cleaner::codec::Codec;
use crate::config::LogConfig;
use crate::error::{Error, IoContext, Result};
use crate::fault::DiskFaults;
use crate::index::{relative_offset, OffsetIndex, TimeIndex};
use crate::log_validator::walk_compressed;
use crate::mmap::{AppendError, LogFile};

pub(crate) const LOG_SUFFIX: &str = "log";
pub(crate) const INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";
/// Appended to a segment's file names before they are removed (Kafka's `.deleted`), so a crash
/// midway leaves files that `Log::open` recognises and finishes removing.
pub(crate) const DELETED_SUFFIX: &str = "deleted";

/// `00000000000000000042.log` for base offset 42 and suffix `log`.
pub fn segment_file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}.{suffix}")
}

/// The base offset in a segment file name's stem: exactly 20 digits.
pub(crate) fn parse_segment_stem(stem: &str) -> Option<i64> {
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// What a header walk from the last offset index entry found (`Loaded::scan_tail`).
struct TailScan {
    next_offset: i64,
    /// Largest batch max timestamp in the tail, and the last offset of the batch first reaching it.
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    bytes_since_last_index_entry: u64,
}

/// Batches found at one read position.
pub(crate) struct SegmentRead {
    pub(crate) records: Bytes,
    pub(crate) first_batch_offset: i64,
    pub(crate) next_offset: i64,
}

/// A segment's open files and what was learned from them: always there for the active segment,
/// made on first use for a sealed one (see [`Segment`]).
#[derive(Debug)]
struct Loaded {
    base_offset: i64,
    log: LogFile,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    /// Offset after the last batch (the base offset while empty).
    next_offset: i64,
    /// Largest batch max timestamp so far, and the last offset of the batch that first reached it.
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    bytes_since_last_index_entry: u64,
    index_interval_bytes: u32,
    /// Max timestamp of the first batch (Kafka's `rollingBasedTimestamp`); `None` while empty.
    first_batch_max_timestamp: Option<i64>,
    /// When this process created or opened the segment (Kafka's `LogSegment.created`).
    created_ms: i64,
}

impl Loaded {
    fn paths(dir: &Path, base_offset: i64) -> [PathBuf; 3] {
        [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX]
            .map(|s| dir.join(segment_file_name(base_offset, s)))
    }

    /// `reserve_bytes`: the `.log` map's reservation for appends; `None` for a sealed segment,
    /// read through an exact map without keeping its descriptor.
    fn open_files(
        dir: &Path,
        base_offset: i64,
        reserve_bytes: Option<u64>,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<Self> {
        Self::open_files_at(
            Self::paths(dir, base_offset),
            base_offset,
            reserve_bytes,
            config,
            now_ms,
        )
    }

    fn open_files_at(
        [log_path, index_path, time_index_path]: [PathBuf; 3],
        base_offset: i64,
        reserve_bytes: Option<u64>,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<Self> {
        Ok(Self {
            base_offset,
            log: match reserve_bytes {
                Some(reserve_bytes) => LogFile::open(&log_path, reserve_bytes),
                None => LogFile::open_sealed(&log_path),
            }
            .at(&log_path)?,
            offset_index: OffsetIndex::open(&index_path, base_offset).at(&index_path)?,
            time_index: TimeIndex::open(&time_index_path, base_offset).at(&time_index_path)?,
            next_offset: base_offset,
            max_timestamp: NO_TIMESTAMP,
            offset_of_max_timestamp: base_offset,
            bytes_since_last_index_entry: 0,
            index_interval_bytes: config.index_interval_bytes,
            first_batch_max_timestamp: None,
            created_ms: now_ms,
        })
    }

    /// A new, empty active segment.
    pub(crate) fn create(
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<Self> {
        let mut segment =
            Self::open_files(dir, base_offset, Some(config.segment_bytes), config, now_ms)?;
        // Leftovers of a crash between creating these files and writing to them hold nothing.
        segment.log.truncate(0).at(segment.log.path())?;
        segment.reset_indexes(config)?;
        Ok(segment)
    }

    /// A new, empty segment whose files are named `<name>.<temp_suffix>` (the log cleaner's
    /// `.cleaned` output), with `reserve_bytes` of the log mapped up front. It is written with
    /// [`Segment::append`], then [`Segment::seal`]ed and dropped before its files are renamed.
    pub(crate) fn create_temp(
        dir: &Path,
        base_offset: i64,
        temp_suffix: &str,
        reserve_bytes: u64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<Self> {
        let paths = Self::paths(dir, base_offset).map(|path| {
            let mut name = path.into_os_string();
            name.push(".");
            name.push(temp_suffix);
            PathBuf::from(name)
        });
        let mut segment =
            Self::open_files_at(paths, base_offset, Some(reserve_bytes), config, now_ms)?;
        segment.log.truncate(0).at(segment.log.path())?;
        segment.reset_indexes(config)?;
        Ok(segment)
    }

    /// Opens the last segment: validates every batch (length, magic, CRC32C, offsets increasing),
    /// truncates whatever follows the last valid one, and rebuilds both indexes.
    /// Returns the segment and the number of bytes truncated.
    pub(crate) fn open_active(
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<(Self, u64)> {
        let mut segment =
            Self::open_files(dir, base_offset, Some(config.segment_bytes), config, now_ms)?;
        let truncated = segment.recover(config, None)?;
        Ok((segment, truncated))
    }

    /// Opens a sealed segment, trusting its indexes if they pass the sanity checks and otherwise
    /// recovering it like an active one. Returns the segment and, if it had to be recovered, the
    /// number of bytes truncated (`None`: trusted, nothing scanned beyond the index's tail).
    pub(crate) fn open_sealed(
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<(Self, Option<u64>)> {
        let mut segment = Self::open_files(dir, base_offset, None, config, now_ms)?;
        if segment.load_trusted(true) {
            return Ok((segment, None));
        }
        tracing::warn!(segment = %segment.log.path().display(), "rebuilding indexes of a sealed segment");
        let truncated = segment.recover(config, None)?;
        segment.seal()?;
        Ok((segment, Some(truncated)))
    }

    /// Opens a sealed segment that holds offsets at or past the recovery point: validated batch by
    /// batch like an active one (Kafka's `recoverLog`), its indexes rebuilt, then sealed again.
    /// Returns the segment and the number of bytes truncated.
    pub(crate) fn recover_sealed(
        dir: &Path,
        base_offset: i64,
        next_base: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<(Self, u64)> {
        let mut segment = Self::open_files(dir, base_offset, None, config, now_ms)?;
        let truncated = segment.recover(config, Some(next_base))?;
        segment.seal()?;
        Ok((segment, truncated))
    }

    /// Opens the last segment without validating its batches when everything in it lies below
    /// `recovery_point` (it was flushed; after a clean shutdown the recovery point is the log
    /// end) and its indexes pass the sanity checks; the indexes trimmed on close are extended
    /// again for appends. Otherwise recovers it as [`Loaded::open_active`] does. Returns the
    /// segment and, if it was recovered, the number of bytes truncated.
    pub(crate) fn open_active_trusted(
        dir: &Path,
        base_offset: i64,
        recovery_point: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<(Self, Option<u64>)> {
        let mut segment =
            Self::open_files(dir, base_offset, Some(config.segment_bytes), config, now_ms)?;
        if segment.load_trusted(false) && segment.next_offset <= recovery_point {
            segment
                .offset_index
                .resize(config.segment_index_bytes)
                .at(segment.offset_index.path())?;
            segment
                .time_index
                .resize(config.segment_index_bytes)
                .at(segment.time_index.path())?;
            return Ok((segment, None));
        }
        let truncated = segment.recover(config, None)?;
        Ok((segment, Some(truncated)))
    }

    /// Takes the segment's state from its indexes and a header walk of the bytes after the last
    /// offset index entry, if the indexes pass the sanity checks (as Kafka trusts the segments of
    /// a cleanly shut down or flushed log). `false`: they do not; the segment must be recovered.
    ///
    /// A `sealed` segment's time index must end with the entry written on roll (its max
    /// timestamp); an active segment's, left untrimmed by a crash, may lag behind its batches,
    /// whose headers then give the max timestamp.
    fn load_trusted(&mut self, sealed: bool) -> bool {
        let size = self.log.size();
        if !self.offset_index.is_sane(size) {
            return false;
        }
        let Some(tail) = self.scan_tail() else {
            return false;
        };
        let last = self.time_index.last_entry();
        let max_timestamp = last.map_or(NO_TIMESTAMP, |(timestamp, _)| timestamp);
        if !self.time_index.is_sane(tail.next_offset)
            || (sealed && tail.max_timestamp > max_timestamp)
        {
            return false;
        }
        self.next_offset = tail.next_offset;
        self.bytes_since_last_index_entry = tail.bytes_since_last_index_entry;
        if let Some((timestamp, offset)) = last {
            self.max_timestamp = timestamp;
            self.offset_of_max_timestamp = offset;
        }
        if tail.max_timestamp > self.max_timestamp {
            self.max_timestamp = tail.max_timestamp;
            self.offset_of_max_timestamp = tail.offset_of_max_timestamp;
        }
        self.first_batch_max_timestamp = self
            .log
            .slice(0, size)
            .and_then(|all| RecordBatches::headers_only(all).next())
            .and_then(|first| first.ok())
            .map(|(_, header)| header.max_timestamp);
        true
    }

    /// Walks the headers from the last offset index entry to the end of the log. Returns what it
    /// found if the entry matches the batch it points at, the batches after it are whole and in
    /// offset order up to the end of the file, and none of them should have had an index entry
    /// (which would mean the index lost its tail).
    fn scan_tail(&self) -> Option<TailScan> {
        let (start, indexed_last_offset) = match self.offset_index.last_entry() {
            Some((last_offset, position)) => (position, Some(last_offset)),
            None => (0, None),
        };
        let tail = self.log.slice(start, self.log.size() - start)?;
        let mut next_offset = self.base_offset;
        let mut max_timestamp = NO_TIMESTAMP;
        let mut offset_of_max_timestamp = self.base_offset;
        let mut bytes_since_last_index_entry = 0u64;
        for (i, item) in RecordBatches::headers_only(tail).enumerate() {
            let (_, header) = item.ok()?;
            let consistent = match (i, indexed_last_offset) {
                (0, Some(last_offset)) => header.last_offset() == last_offset,
                _ => header.base_offset >= next_offset,
            };
            if !consistent || bytes_since_last_index_entry > u64::from(self.index_interval_bytes) {
                return None;
            }
            bytes_since_last_index_entry += header.total_size() as u64;
            next_offset = header.next_offset();
            if header.max_timestamp > max_timestamp {
                max_timestamp = header.max_timestamp;
                offset_of_max_timestamp = header.last_offset();
            }
        }
        Some(TailScan {
            next_offset,
            max_timestamp,
            offset_of_max_timestamp,
            bytes_since_last_index_entry,
        })
    }

    /// Rebuilds the indexes from a CRC-checked scan and truncates any invalid tail. A sealed
    /// segment's batches must also end below `next_base`, the next segment's base offset: a
    /// base offset lies outside the CRC, and one damaged upwards would otherwise overlap the
    /// next segment (offsets going back where they are read).
    fn recover(&mut self, config: &LogConfig, next_base: Option<i64>) -> Result<u64> {
        self.reset_indexes(config)?;
        self.next_offset = self.base_offset;
        self.max_timestamp = NO_TIMESTAMP;
        self.offset_of_max_timestamp = self.base_offset;
        self.bytes_since_last_index_entry = 0;
        self.first_batch_max_timestamp = None;
        let size = self.log.size();
        let mut valid_bytes = 0u64;
        let mut stop: Option<BatchError> = None;
        if let Some(all) = self.log.slice(0, size) {
            let mut batches = Vec::new();
            for item in RecordBatches::new(all) {
                match item {
                    Ok((position, header)) => {
                        let in_order = header.base_offset >= self.next_offset
                            && relative_offset(self.base_offset, header.last_offset()).is_some()
                            && next_base.is_none_or(|next| header.last_offset() < next);
                        if !in_order {
                            break;
                        }
                        self.next_offset = header.next_offset();
                        batches.push((position as u64, header));
                    }
                    Err(error) => {
                        stop = Some(error);
                        break;
                    }
                }
            }
            for (position, header) in batches {
                self.index_batch(position, &header);
                valid_bytes = position + header.total_size() as u64;
            }
        }
        let truncated = size - valid_bytes;
        if truncated > 0 {
            tracing::warn!(
                segment = %self.log.path().display(),
                valid_bytes,
                truncated,
                reason = ?stop,
                "truncating invalid tail of segment"
            );
            self.log.truncate(valid_bytes).at(self.log.path())?;
        }
        Ok(truncated)
    }

    fn reset_indexes(&mut self, config: &LogConfig) -> Result<()> {
        self.offset_index
            .reset(config.segment_index_bytes)
            .at(self.offset_index.path())?;
        self.time_index
            .reset(config.segment_index_bytes)
            .at(self.time_index.path())
    }

    /// Index bookkeeping for a batch written at `position` (Kafka's `LogSegment.append`).
    fn index_batch(&mut self, position: u64, header: &RecordBatchHeader) {
        self.first_batch_max_timestamp
            .get_or_insert(header.max_timestamp);
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.last_offset();
        }
        if self.bytes_since_last_index_entry > u64::from(self.index_interval_bytes) {
            self.offset_index.append(header.last_offset(), position);
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp, false);
            self.bytes_since_last_index_entry = 0;
        }
        self.bytes_since_last_index_entry += header.total_size() as u64;
        self.next_offset = header.next_offset();
    }

    #[cfg(test)]
    pub(crate) fn index_entries(&self) -> (usize, usize) {
        (self.offset_index.entries(), self.time_index.entries())
    }

    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub(crate) fn size(&self) -> u64 {
        self.log.size()
    }

    #[cfg(test)]
    pub(crate) fn len_on_disk(&self) -> std::io::Result<u64> {
        self.log.len_on_disk()
    }

    /// The whole `.log` as written (the log cleaner reads it batch by batch).
    pub(crate) fn log_bytes(&self) -> Option<&[u8]> {
        self.log.slice(0, self.log.size())
    }

    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Kafka's `LogSegment.largestTimestamp`, what time retention judges a segment by: the largest
    /// batch max timestamp, or, if no batch carries a timestamp, the `.log` file's modification time.
    pub(crate) fn largest_timestamp(&self) -> i64 {
        if self.max_timestamp >= 0 {
            return self.max_timestamp;
        }
        fs::metadata(self.log.path())
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(self.created_ms, |d| {
                i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
            })
    }

    /// Kafka's `LogSegment.timeWaitedForRoll`: how long this segment has been filling, judged by
    /// record timestamps when its first batch has one, else by the clock since it was created.
    fn time_waited_for_roll(&self, now_ms: i64, max_timestamp_in_batches: i64) -> i64 {
        match self.first_batch_max_timestamp {
            Some(first) if first >= 0 => max_timestamp_in_batches.saturating_sub(first),
            _ => now_ms.saturating_sub(self.created_ms),
        }
    }

    /// Whether `bytes` ending at `last_offset`, with max timestamp `max_timestamp_in_batches`, must
    /// go to a new segment: it would not fit, an index is full, an offset would not fit the index,
    /// or the segment has been filling for more than `segment.ms`. An empty segment rolls only
    /// when it cannot address `last_offset` (a follower's batches far past its base, after a
    /// compacted leader's gap): a batch larger than `segment_bytes` gets a segment of its own.
    pub(crate) fn should_roll(
        &self,
        bytes: usize,
        last_offset: i64,
        max_timestamp_in_batches: i64,
        now_ms: i64,
        config: &LogConfig,
    ) -> bool {
        if self.log.size() == 0 {
            return relative_offset(self.base_offset, last_offset).is_none();
        }
        self.log.size() + bytes as u64 > config.segment_bytes
            || self.time_waited_for_roll(now_ms, max_timestamp_in_batches) > config.segment_ms
            || self.offset_index.is_full()
            || self.time_index.is_full()
            || relative_offset(self.base_offset, last_offset).is_none()
    }

    /// Appends already offset-assigned batches, the concatenation of `pieces`; `headers` are
    /// their `(position in that concatenation, header)`.
    pub(crate) fn append(
        &mut self,
        pieces: &[&[u8]],
        headers: &[(usize, RecordBatchHeader)],
        faults: Option<&DiskFaults>,
    ) -> Result<()> {
        let start = self.log.size();
        // On error neither the size nor the indexes move: the batches were never written.
        self.log.append(pieces, faults).map_err(|err| match err {
            AppendError::Clean(source) => Error::Io {
                path: self.log.path().to_path_buf(),
                source,
            },
            AppendError::Torn { write, cut } => Error::TornAppend {
                path: self.log.path().to_path_buf(),
                write,
                cut,
            },
        })?;
        for (position, header) in headers {
            self.index_batch(start + *position as u64, header);
        }
        Ok(())
    }

    /// Position and header of the first batch whose last offset is `>= offset`.
    pub(crate) fn find_batch(&self, offset: i64) -> Option<(u64, RecordBatchHeader)> {
        let start = self.scan_start(offset);
        let tail = self.log.slice(start, self.log.size() - start)?;
        RecordBatches::headers_only(tail)
            .map_while(Result::ok)
            .find(|(_, header)| header.last_offset() >= offset)
            .map(|(position, header)| (start + position as u64, header))
    }

    /// Where to start walking batch headers to find `offset`: the offset index's entry at or
    /// below it, if the batch at its position does end at its offset; else the segment's start.
    /// The index carries no checksum (Kafka's format) and a sealed segment's is trusted when
    /// its sanity checks pass, so an entry that damage left plausible must cost a longer walk,
    /// never a read of the wrong batch (or of bytes that are not a batch's start).
    fn scan_start(&self, offset: i64) -> u64 {
        let Some((entry_offset, position)) = self.offset_index.lookup(offset) else {
            return 0;
        };
        let holds = self
            .log
            .slice(position, self.log.size().saturating_sub(position))
            .and_then(|tail| RecordBatchHeader::parse(tail).ok())
            .is_some_and(|header| header.last_offset() == entry_offset);
        if holds {
            position
        } else {
            tracing::warn!(
                segment = self.base_offset,
                entry_offset,
                position,
                "offset index entry does not match the log; walking the segment from its start"
            );
            0
        }
    }

    /// Whole batches from `position` (where `first` starts): as many as fit in `max_bytes`, but at
    /// least `first`; only batches ending below `max_offset`.
    pub(crate) fn read_at(
        &self,
        position: u64,
        first: &RecordBatchHeader,
        max_bytes: usize,
        max_offset: i64,
    ) -> Option<SegmentRead> {
        let tail = self.log.slice(position, self.log.size() - position)?;
        let mut len = 0usize;
        let mut next_offset = first.base_offset;
        for item in RecordBatches::headers_only(tail) {
            let Ok((_, header)) = item else { break };
            let fits = len == 0 || len + header.total_size() <= max_bytes;
            if !fits || header.last_offset() >= max_offset {
                break;
            }
            len += header.total_size();
            next_offset = header.next_offset();
        }
        Some(SegmentRead {
            records: self.log.bytes(position, len as u64)?,
            first_batch_offset: first.base_offset,
            next_offset,
        })
    }

    /// Kafka's `LogSegment.findOffsetByTimestamp`: `(offset, timestamp)` of the first record at or
    /// after `timestamp` whose offset is at least `starting_offset` (the log start offset), starting
    /// no earlier than the time index allows.
    pub(crate) fn find_offset_by_timestamp(
        &self,
        timestamp: i64,
        starting_offset: i64,
    ) -> Result<Option<(i64, i64)>> {
        let start_offset = self
            .time_index
            .lookup(timestamp)
            .unwrap_or(self.base_offset)
            .max(starting_offset);
        let start = self.scan_start(start_offset);
        let Some(tail) = self.log.slice(start, self.log.size() - start) else {
            return Ok(None);
        };
        for item in RecordBatches::headers_only(tail) {
            let Ok((position, header)) = item else { break };
            if header.max_timestamp < timestamp || header.last_offset() < starting_offset {
                continue;
            }
            let batch = &tail[position..position + header.total_size()];
            if let Some(found) =
                first_record_at_or_after(batch, &header, timestamp, starting_offset)?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The segment will not be appended to again: final time index entry, trim the indexes, map
    /// the log exactly, and make it all durable.
    pub(crate) fn seal(&mut self) -> Result<()> {
        self.seal_files(true)?;
        self.sync_indexes()
    }

    /// [`Loaded::seal`] without the fsyncs: a roll's, whose sealed segment is made durable by a
    /// flush off the append path (see `Log::take_pending_flush`).
    pub(crate) fn seal_unsynced(&mut self) -> Result<()> {
        self.seal_files(false)
    }

    fn seal_files(&mut self, sync: bool) -> Result<()> {
        self.time_index
            .maybe_append(self.max_timestamp, self.offset_of_max_timestamp, true);
        self.offset_index.trim().at(self.offset_index.path())?;
        self.time_index.trim().at(self.time_index.path())?;
        self.log.seal(sync).at(self.log.path())
    }

    pub(crate) fn flush(&self) -> Result<()> {
        self.log.sync().at(self.log.path())?;
        self.sync_indexes()
    }

    fn sync_indexes(&self) -> Result<()> {
        self.offset_index.sync().at(self.offset_index.path())?;
        self.time_index.sync().at(self.time_index.path())
    }
}

/// One segment (Kafka's `LogSegment`). The active segment is loaded from creation to close; a
/// sealed one found on open is only named and sized, and its files are opened and mapped the
/// first time something reads it, so a partition with many old segments costs no descriptors and
/// no maps until they are read (and, once loaded, maps only: see [`crate::mmap`]).
///
/// Thread safety: `&self` methods may run concurrently (the log's readers); the first of them to
/// need a sealed segment's files loads them under `loading`, the others wait for it.
#[derive(Debug)]
pub(crate) struct Segment {
    dir: PathBuf,
    base_offset: i64,
    /// What a lazy load needs: the index sizes and interval, should its indexes be rebuilt.
    config: LogConfig,
    /// When this process opened the segment (its `created_ms` once loaded).
    opened_ms: i64,
    /// The `.log` size found on open, answered until loaded (retention by size and the cleaner's
    /// dirty ratio must not load every segment).
    size_on_open: u64,
    loaded: OnceLock<Loaded>,
    loading: Mutex<()>,
    /// When the segment was last read ([`monotonic_ms`]), so idle sealed segments can give
    /// their maps back ([`Segment::unload_if_idle`]).
    last_read_ms: AtomicU64,
}

/// Milliseconds since this process first asked: a monotonic clock for idleness.
fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Segment {
    fn from_loaded(dir: &Path, loaded: Loaded, config: &LogConfig) -> Self {
        Segment {
            dir: dir.to_path_buf(),
            base_offset: loaded.base_offset,
            config: config.clone(),
            opened_ms: loaded.created_ms,
            size_on_open: loaded.size(),
            loaded: OnceLock::from(loaded),
            loading: Mutex::new(()),
            last_read_ms: AtomicU64::new(monotonic_ms()),
        }
    }

    /// A new, empty active segment.
    pub(crate) fn create(
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<Self> {
        let loaded = Loaded::create(dir, base_offset, config, now_ms)?;
        Ok(Self::from_loaded(dir, loaded, config))
    }

    /// A new, empty segment whose files are named `<name>.<temp_suffix>` (the log cleaner's
    /// `.cleaned` output), with `reserve_bytes` of the log mapped up front. It is written with
    /// [`Segment::append`], then [`Segment::seal`]ed and dropped before its files are renamed.
    pub(crate) fn create_temp(
        dir: &Path,
        base_offset: i64,
        temp_suffix: &str,
        reserve_bytes: u64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<Self> {
        let loaded =
            Loaded::create_temp(dir, base_offset, temp_suffix, reserve_bytes, config, now_ms)?;
        Ok(Self::from_loaded(dir, loaded, config))
    }

    /// Opens the last segment: validates every batch (length, magic, CRC32C, offsets increasing),
    /// truncates whatever follows the last valid one, and rebuilds both indexes.
    /// Returns the segment and the number of bytes truncated.
    pub(crate) fn open_active(
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<(Self, u64)> {
        let (loaded, truncated) = Loaded::open_active(dir, base_offset, config, now_ms)?;
        Ok((Self::from_loaded(dir, loaded, config), truncated))
    }

    /// The last segment, trusted up to `recovery_point` (see [`Loaded::open_active_trusted`]).
    pub(crate) fn open_active_trusted(
        dir: &Path,
        base_offset: i64,
        recovery_point: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<(Self, Option<u64>)> {
        let (loaded, truncated) =
            Loaded::open_active_trusted(dir, base_offset, recovery_point, config, now_ms)?;
        Ok((Self::from_loaded(dir, loaded, config), truncated))
    }

    /// A sealed segment holding offsets at or past the recovery point, validated now (see
    /// [`Loaded::recover_sealed`]). Returns it loaded and the number of bytes truncated.
    pub(crate) fn recover_sealed(
        dir: &Path,
        base_offset: i64,
        next_base: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<(Self, u64)> {
        let (loaded, truncated) =
            Loaded::recover_sealed(dir, base_offset, next_base, config, now_ms)?;
        Ok((Self::from_loaded(dir, loaded, config), truncated))
    }

    /// A sealed segment below the recovery point, not loaded: only its `.log`'s size is read.
    /// Like Kafka, which skips the index sanity checks of these segments on open, the checks (and
    /// a rebuild of indexes that fail them) happen when the segment is first loaded.
    pub(crate) fn open_sealed(
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<Self> {
        let log_path = dir.join(segment_file_name(base_offset, LOG_SUFFIX));
        let size_on_open = fs::metadata(&log_path).at(&log_path)?.len();
        Ok(Segment {
            dir: dir.to_path_buf(),
            base_offset,
            config: config.clone(),
            opened_ms: now_ms,
            size_on_open,
            loaded: OnceLock::new(),
            loading: Mutex::new(()),
            last_read_ms: AtomicU64::new(monotonic_ms()),
        })
    }

    /// The segment's files, opened and mapped on first use (see [`Loaded::open_sealed`]).
    fn loaded(&self) -> Result<&Loaded> {
        self.last_read_ms.store(monotonic_ms(), Ordering::Relaxed);
        if let Some(loaded) = self.loaded.get() {
            return Ok(loaded);
        }
        let _loading = self.loading.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(loaded) = self.loaded.get() {
            return Ok(loaded);
        }
        let loaded = self.load()?;
        Ok(self.loaded.get_or_init(|| loaded))
    }

    fn loaded_mut(&mut self) -> Result<&mut Loaded> {
        if self.loaded.get().is_none() {
            let loaded = self.load()?;
            // Cannot fail: `&mut self` excludes every other initialiser.
            let _ = self.loaded.set(loaded);
        }
        self.loaded
            .get_mut()
            .ok_or_else(|| unreachable!("the segment was just loaded"))
    }

    fn load(&self) -> Result<Loaded> {
        let (loaded, truncated) =
            Loaded::open_sealed(&self.dir, self.base_offset, &self.config, self.opened_ms)?;
        if let Some(truncated) = truncated {
            tracing::warn!(dir = %self.dir.display(), base_offset = self.base_offset, truncated, "loading a sealed segment rebuilt its indexes");
        }
        Ok(loaded)
    }

    /// Whether the segment's files are open (mapped).
    pub(crate) fn is_loaded(&self) -> bool {
        self.loaded.get().is_some()
    }

    /// Unmaps a sealed segment's files until it is read again; fetched [`Bytes`] keep their own
    /// map. Returns whether it was loaded.
    pub(crate) fn unload(&mut self) -> bool {
        let size = self.size();
        let unloaded = self.loaded.take().is_some();
        self.size_on_open = size;
        unloaded
    }

    /// Unloads the segment (see [`Segment::unload`]) if nothing has read it for `idle`.
    /// Returns whether it was loaded and now is not.
    pub(crate) fn unload_if_idle(&mut self, idle: Duration) -> bool {
        let last_read = self.last_read_ms.load(Ordering::Relaxed);
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        monotonic_ms().saturating_sub(last_read) >= idle_ms && self.unload()
    }

    /// Whether the `.log` holds a descriptor (tests count them).
    #[cfg(test)]
    pub(crate) fn has_descriptor(&self) -> bool {
        self.loaded.get().is_some_and(|l| l.log.has_descriptor())
    }

    #[cfg(test)]
    pub(crate) fn index_entries(&self) -> (usize, usize) {
        self.loaded().map_or((0, 0), Loaded::index_entries)
    }

    /// The offset after the last batch (loads the segment).
    pub(crate) fn next_offset(&self) -> Result<i64> {
        Ok(self.loaded()?.next_offset())
    }

    /// [`Segment::next_offset`] of the active segment, which is loaded from creation to close
    /// (an unloaded one would answer its base offset).
    pub(crate) fn active_next_offset(&self) -> i64 {
        debug_assert!(self.is_loaded(), "the active segment is always loaded");
        self.loaded
            .get()
            .map_or(self.base_offset, Loaded::next_offset)
    }

    /// Bytes in the `.log` (as found on open while not loaded).
    pub(crate) fn size(&self) -> u64 {
        self.loaded.get().map_or(self.size_on_open, Loaded::size)
    }

    #[cfg(test)]
    pub(crate) fn len_on_disk(&self) -> std::io::Result<u64> {
        match self.loaded.get() {
            Some(loaded) => loaded.len_on_disk(),
            None => Ok(self.size_on_open),
        }
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// The whole `.log` as written (the log cleaner reads it batch by batch).
    pub(crate) fn log_bytes(&self) -> Result<&[u8]> {
        Ok(self.loaded()?.log_bytes().unwrap_or_default())
    }

    pub(crate) fn max_timestamp(&self) -> Result<i64> {
        Ok(self.loaded()?.max_timestamp())
    }

    /// See [`Loaded::largest_timestamp`].
    pub(crate) fn largest_timestamp(&self) -> Result<i64> {
        Ok(self.loaded()?.largest_timestamp())
    }

    /// See [`Loaded::should_roll`].
    pub(crate) fn should_roll(
        &self,
        bytes: usize,
        last_offset: i64,
        max_timestamp_in_batches: i64,
        now_ms: i64,
        config: &LogConfig,
    ) -> Result<bool> {
        Ok(self
            .loaded()?
            .should_roll(bytes, last_offset, max_timestamp_in_batches, now_ms, config))
    }

    /// Appends already offset-assigned batches, the concatenation of `pieces`; `headers` are
    /// their `(position in that concatenation, header)`.
    pub(crate) fn append(
        &mut self,
        pieces: &[&[u8]],
        headers: &[(usize, RecordBatchHeader)],
        faults: Option<&DiskFaults>,
    ) -> Result<()> {
        self.loaded_mut()?.append(pieces, headers, faults)
    }

    /// Position and header of the first batch whose last offset is `>= offset`.
    pub(crate) fn find_batch(&self, offset: i64) -> Result<Option<(u64, RecordBatchHeader)>> {
        Ok(self.loaded()?.find_batch(offset))
    }

    /// See [`Loaded::read_at`].
    pub(crate) fn read_at(
        &self,
        position: u64,
        first: &RecordBatchHeader,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<Option<SegmentRead>> {
        Ok(self
            .loaded()?
            .read_at(position, first, max_bytes, max_offset))
    }

    /// See [`Loaded::find_offset_by_timestamp`].
    pub(crate) fn find_offset_by_timestamp(
        &self,
        timestamp: i64,
        starting_offset: i64,
    ) -> Result<Option<(i64, i64)>> {
        self.loaded()?
            .find_offset_by_timestamp(timestamp, starting_offset)
    }

    /// See [`Loaded::seal`].
    pub(crate) fn seal(&mut self) -> Result<()> {
        self.loaded_mut()?.seal()
    }

    /// See [`Loaded::seal_unsynced`].
    pub(crate) fn seal_unsynced(&mut self) -> Result<()> {
        self.loaded_mut()?.seal_unsynced()
    }

    /// Makes the segment durable. One not loaded is fsynced through its paths: it may have been
    /// unloaded after a roll sealed it and before the roll's flush ran.
    pub(crate) fn flush(&self) -> Result<()> {
        match self.loaded.get() {
            Some(loaded) => loaded.flush(),
            None => {
                let [log, offset_index, time_index] = self.file_paths();
                sync_file(&log, true)?;
                sync_file(&offset_index, false)?;
                sync_file(&time_index, false)
            }
        }
    }

    /// The `.log`, `.index` and `.timeindex` paths, in that order.
    pub(crate) fn file_paths(&self) -> [PathBuf; 3] {
        Loaded::paths(&self.dir, self.base_offset)
    }

    /// First step of deleting the segment: renames its files to `<name>.<deleted>` (the `.log`
    /// first) and returns the new paths, to be removed once the segment is dropped. A loaded
    /// segment's maps keep working; a failure partway renames back what it renamed, so the
    /// segment still reads correctly (loaded or not), and a crash partway leaves leftovers
    /// `Log::open` removes.
    pub(crate) fn rename_to_deleted(&self) -> Result<Vec<PathBuf>> {
        let mut renamed: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(3);
        for path in Loaded::paths(&self.dir, self.base_offset) {
            let mut name = path.as_os_str().to_os_string();
            name.push(".");
            name.push(DELETED_SUFFIX);
            let doomed = PathBuf::from(name);
            match fs::rename(&path, &doomed) {
                Ok(()) => renamed.push((path, doomed)),
                // A lost index is rebuilt on open; only the `.log` must exist.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound && !renamed.is_empty() => {}
                Err(err) => {
                    for (original, doomed) in renamed.iter().rev() {
                        if let Err(back) = fs::rename(doomed, original) {
                            tracing::error!(file = %doomed.display(), "could not rename back a segment file: {back}");
                        }
                    }
                    return Err(err).at(&path);
                }
            }
        }
        Ok(renamed.into_iter().map(|(_, doomed)| doomed).collect())
    }
}

/// Fsyncs the file at `path` through a read-only descriptor opened for the moment (Linux writes
/// back every dirty page of the file, those dirtied through a map included). A file that is not
/// `required` (an index: derived data, rebuilt when missing) may be missing.
pub(crate) fn sync_file(path: &Path, required: bool) -> Result<()> {
    match fs::File::open(path) {
        Ok(file) => file.sync_data().at(path),
        // Indexes are derived data, rebuilt when missing; only the `.log` must be there.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => Ok(()),
        Err(err) => Err(err).at(path),
    }
}

/// `(offset, timestamp)` of the first record of `batch` at or after both `offset` and `timestamp`
/// (Kafka's `LogSegment.findOffsetByTimestamp` reads every record, decompressing if it must).
/// A compressed batch is decompressed as a stream; if that fails (a follower stores what its
/// leader checked, so only a damaged disk gets here) the answer is `(offset, max timestamp)`, and
/// the consumer skips what it must.
fn first_record_at_or_after(
    batch: &[u8],
    header: &RecordBatchHeader,
    timestamp: i64,
    offset: i64,
) -> Result<Option<(i64, i64)>> {
    if header.max_timestamp < timestamp || header.records_count == 0 {
        return Ok(None);
    }
    let record_timestamp = |timestamp_delta: i64| {
        if header.timestamp_type_is_log_append_time() {
            header.max_timestamp
        } else {
            header.base_timestamp.saturating_add(timestamp_delta)
        }
    };
    if header.compression() != 0 {
        let fallback = (offset.max(header.base_offset), header.max_timestamp);
        if header.timestamp_type_is_log_append_time() {
            return Ok(Some(fallback));
        }
        let (Some(codec), Some(section)) = (
            Codec::from_id(header.compression()),
            batch.get(batch::RECORD_BATCH_HEADER_BYTES..),
        ) else {
            return Ok(Some(fallback));
        };
        let mut found = None;
        let walked = walk_compressed(codec, section, header.records_count, |ts_delta, delta| {
            let record_offset = header.base_offset.saturating_add(i64::from(delta));
            let record_timestamp = record_timestamp(ts_delta);
            if record_offset >= offset && record_timestamp >= timestamp {
                found = Some((record_offset, record_timestamp));
                return Ok(false);
            }
            Ok(true)
        });
        return Ok(match walked {
            Ok(_) => found,
            Err(err) => {
                tracing::warn!(
                    base_offset = header.base_offset,
                    "timestamp lookup could not read a compressed batch: {err}"
                );
                Some(fallback)
            }
        });
    }
    for record in batch::records(batch)? {
        let record = record?;
        let record_offset = header
            .base_offset
            .saturating_add(i64::from(record.offset_delta));
        let record_timestamp = record_timestamp(record.timestamp_delta);
        if record_offset >= offset && record_timestamp >= timestamp {
            return Ok(Some((record_offset, record_timestamp)));
        }
    }
    Ok(None)
}
