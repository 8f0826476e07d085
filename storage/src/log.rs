//! One partition's log: an ordered set of segments, the last of which is appended to.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use skald_protocol::batch::{self, RecordBatchHeader, RecordBatches};

use crate::config::LogConfig;
use crate::error::{Error, IoContext, Result};
use crate::segment::{parse_segment_stem, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};

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
}

impl Log {
    /// Opens the partition log in `dir`, creating the directory and a first segment if missing.
    ///
    /// Recovery: the last segment is validated batch by batch (length, magic, CRC32C, offsets
    /// increasing) and cut after the last valid batch; its indexes are rebuilt. Sealed segments are
    /// trusted (they were made durable when rolled) unless their indexes fail the sanity checks,
    /// in which case they are recovered the same way. Stray index files and Kafka's `.deleted`,
    /// `.cleaned` and `.swap` leftovers are removed.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log> {
        config.validate()?;
        fs::create_dir_all(dir).at(dir)?;
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
                "deleted" | "cleaned" | "swap" => {
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

        let mut segments = BTreeMap::new();
        let Some((&active_base, sealed_bases)) = log_bases.split_last() else {
            segments.insert(0, Segment::create(dir, 0, &config)?);
            return Ok(Log {
                dir: dir.to_path_buf(),
                config,
                segments,
            });
        };
        for &base_offset in sealed_bases {
            let (segment, truncated) = Segment::open_sealed(dir, base_offset, &config)?;
            if truncated > 0 {
                tracing::warn!(dir = %dir.display(), base_offset, truncated, "sealed segment had an invalid tail");
            }
            segments.insert(base_offset, segment);
        }
        let (active, truncated) = Segment::open_active(dir, active_base, &config)?;
        if truncated > 0 {
            tracing::warn!(dir = %dir.display(), truncated, log_end_offset = active.next_offset(), "recovered log");
        }
        segments.insert(active_base, active);
        Ok(Log {
            dir: dir.to_path_buf(),
            config,
            segments,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    #[cfg(test)]
    pub(crate) fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.values()
    }

    fn active(&self) -> &Segment {
        // `segments` is never empty: `open` creates one and nothing removes the last.
        self.segments
            .values()
            .next_back()
            .unwrap_or_else(|| unreachable!("a log always has a segment"))
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.segments.keys().next().copied().unwrap_or(0)
    }

    /// The offset the next appended record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    /// Bytes of all segments' `.log` files.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.keys().copied().collect()
    }

    /// Appends whole v2 batches, assigning offsets from the log end offset by patching each batch's
    /// base offset and partition leader epoch in place (plus LogAppendTime and the CRC when
    /// `log_append_time_ms` is given). Records are never decoded or re-encoded.
    ///
    /// The batches are re-validated (lengths, magic, CRC32C) first: nothing is written unless all
    /// of them are valid. All batches of one call go to the same segment; the log rolls first if
    /// they would not fit in the active one.
    pub fn append(
        &mut self,
        batches: &mut [u8],
        log_append_time_ms: Option<i64>,
        leader_epoch: i32,
    ) -> Result<AppendInfo> {
        if batches.is_empty() {
            return Err(Error::EmptyAppend);
        }
        if batches.len() > i32::MAX as usize {
            return Err(Error::AppendTooLarge {
                size: batches.len(),
            });
        }
        let mut extents = Vec::new();
        for item in RecordBatches::new(batches) {
            let (position, header) = item?;
            extents.push((position, header.total_size(), header.last_offset_delta));
        }
        let first_offset = self.log_end_offset();
        let mut next_offset = first_offset;
        let mut headers: Vec<(usize, RecordBatchHeader)> = Vec::with_capacity(extents.len());
        let mut records_count = 0i64;
        let mut max_timestamp = batch::NO_TIMESTAMP;
        for &(position, size, last_offset_delta) in &extents {
            let one = &mut batches[position..position + size];
            batch::set_base_offset(one, next_offset)?;
            batch::set_partition_leader_epoch(one, leader_epoch)?;
            if let Some(timestamp) = log_append_time_ms {
                batch::set_log_append_time(one, timestamp)?;
            }
            let header = RecordBatchHeader::parse(one)?;
            records_count += i64::from(header.records_count);
            max_timestamp = max_timestamp.max(header.max_timestamp);
            next_offset = next_offset.saturating_add(i64::from(last_offset_delta) + 1);
            headers.push((position, header));
        }
        let last_offset = next_offset - 1;
        if self
            .active()
            .should_roll(batches.len(), last_offset, &self.config)
        {
            self.roll(first_offset)?;
        }
        let active = self
            .segments
            .values_mut()
            .next_back()
            .unwrap_or_else(|| unreachable!("a log always has a segment"));
        active.append(batches, &headers)?;
        Ok(AppendInfo {
            first_offset,
            last_offset,
            max_timestamp,
            log_append_time_ms: log_append_time_ms.unwrap_or(-1),
            bytes: batches.len(),
            records_count,
        })
    }

    /// Seals the active segment and starts a new one at `base_offset` (the log end offset).
    fn roll(&mut self, base_offset: i64) -> Result<()> {
        if let Some(active) = self.segments.values_mut().next_back() {
            active.seal()?;
        }
        let segment = Segment::create(&self.dir, base_offset, &self.config)?;
        tracing::debug!(dir = %self.dir.display(), base_offset, "rolled segment");
        self.segments.insert(base_offset, segment);
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
            let Some((position, first)) = segment.find_batch(offset) else {
                continue;
            };
            if first.last_offset() >= max_offset {
                return Ok(empty);
            }
            let Some(read) = segment.read_at(position, &first, max_bytes, max_offset) else {
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
        for segment in self.segments.values() {
            if segment.max_timestamp() < timestamp {
                continue;
            }
            if let Some(found) = segment.find_offset_by_timestamp(timestamp)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Makes everything appended so far durable (sealed segments were synced when rolled).
    pub fn flush(&self) -> Result<()> {
        self.active().flush()
    }

    /// Flushes and closes the log, trimming the active segment's indexes as Kafka does.
    pub fn close(mut self) -> Result<()> {
        if let Some(active) = self.segments.values_mut().next_back() {
            active.seal()?;
        }
        Ok(())
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

#[cfg(test)]
mod tests;
