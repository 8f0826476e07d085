//! Log compaction for `cleanup.policy=compact` (Kafka's `LogCleaner`), run by [`Log::compact`].
//!
//! # What a pass does
//! The log is clean below the cleaner checkpoint ([`CLEANER_OFFSET_FILE`]) and dirty from there
//! to the first uncleanable offset: the active segment's base, or the base of the first segment
//! holding a record newer than `min.compaction.lag.ms` (judged, as Kafka does, by the segment's
//! largest timestamp). A pass runs only when dirty bytes / (clean + dirty bytes) reaches
//! `min.cleanable.dirty.ratio`. It maps each key of the dirty section to its latest offset (at
//! most `offset_map_keys_max` keys, stopping at a segment boundary), then rewrites every segment
//! below the end of that map, oldest first, in groups no larger than `segment.bytes`:
//! - a record is dropped when the map holds a later offset for its key;
//! - a tombstone (null value) that is the latest for its key is dropped once its segment's largest
//!   timestamp is more than `delete.retention.ms` old, unless a batch the cleaner cannot read
//!   (see below) precedes it: that batch may hold an older value of the key, which would then
//!   reappear;
//! - batches keep their base offset and last offset delta, so offsets never change and every
//!   segment still ends where it did (gaps are allowed); a batch losing some records is rebuilt
//!   with its header fields ([`skald_protocol::batch::rebuild_batch`]), one losing all goes;
//! - compressed batches (gzip, snappy, lz4, zstd) are decompressed, filtered the same way and,
//!   when they lost records, recompressed with the same codec in the form Kafka's clients read
//!   ([`codec`]); one that fails to decompress, would decompress past
//!   [`codec::DECOMPRESSED_BYTES_MAX`] or holds records that do not parse is copied untouched and
//!   counted, its records neither read nor mapped; control batches are copied untouched;
//! - records without a key are kept. Kafka refuses them on compacted topics at produce time, which
//!   is the broker's job.
//!
//! # The swap (crash safety)
//! Each group is written to `<base>.log.cleaned` (+ `.index.cleaned`, `.timeindex.cleaned`) and
//! fsynced, with `<base>.log.swap-end` naming the offset the group ends at (the base of the next
//! segment: the cleaned segment's last batch may have gone, so its own end cannot tell which old
//! segments it replaces). Then, as in Kafka: `.cleaned` → `.swap` (the indexes first; the `.log`
//! rename is the commit point), the old segments → `.deleted`, `.swap` → final names, the
//! `.deleted` files removed. [`recover_interrupted_swaps`], run by `Log::open`, rolls back a
//! group without a `.log.swap` (its `.cleaned` files go) and finishes one with it (old segment
//! files in its range go, the `.swap` files take their names; lost indexes are rebuilt on open).
//! A crash therefore leaves each group either wholly old or wholly cleaned, with every offset
//! readable as before. Groups are swapped oldest first and each is consistent on its own: a record
//! is dropped only when a later record of its key stays in the log. Truncation
//! (`Log::truncate_to`) commits its cut through the same swap (`commit_swap`).
//!
//! Transactions (Kafka's `CleanedTransactionMetadata`): nothing at or past the first unstable
//! offset is cleaned (an open transaction is undecided), and records of aborted transactions
//! never count as a key's latest, so the committed value they would shadow stays for
//! read_committed readers. The aborted transactions' batches themselves go. A marker (COMMIT or
//! ABORT) stays while a batch of its transaction was still in the log when the pass began —
//! without it a producer state rebuilt from the log would see that transaction open forever and
//! hold the last stable offset back — and goes once none was and its segment's largest timestamp
//! is more than `delete.retention.ms` old, as tombstones do. So an aborted transaction's records
//! leave in one pass and its marker in a later one.
//!
//! Producers: the last data batch of each producer the log's producer state remembers stays,
//! emptied of records if they all go (its header keeps offsets, producer id, epoch and
//! sequences), as Kafka keeps such empty batches: a producer state rebuilt from the log (no
//! snapshot, or a follower copying it) still knows the producer's last sequence and recognises a
//! retry of it.
//!
//! Not done: Kafka's KIP-534 delete horizon in the batch header and its "clean section only" rule
//! for tombstones and markers (here the segment's largest timestamp decides), and
//! `max.compaction.lag.ms`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{ErrorKind, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use skald_protocol::batch::{self, RecordBatchHeader, RecordBatches};

use crate::error::{Error, IoContext, Result};
use crate::index::relative_offset;
use crate::log::Log;
use crate::segment::{
    parse_segment_stem, segment_file_name, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
};
use codec::Codec;

/// The partition's cleaner checkpoint: the offset below which the log is clean (Kafka keeps one
/// `cleaner-offset-checkpoint` per log dir; one file per partition directory is written as
/// atomically, like `log-start-offset.checkpoint`).
pub const CLEANER_OFFSET_FILE: &str = "cleaner-offset.checkpoint";
const CLEANER_OFFSET_VERSION: &str = "0";
pub(crate) const CLEANED_SUFFIX: &str = "cleaned";
const SWAP_SUFFIX: &str = "swap";
/// `<base>.log.swap-end`: the end offset of the group a `.swap` replaces (and its start, when it
/// starts below `<base>`).
const SWAP_END_SUFFIX: &str = "log.swap-end";

/// A compacted topic's cleaner settings, named after Kafka's topic configs.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionOptions {
    /// `delete.retention.ms`: how long a tombstone stays readable (1 day).
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: segments holding records newer than this are not cleaned (0).
    pub min_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`: clean only when dirty bytes / total bytes reaches this (0.5).
    pub min_cleanable_dirty_ratio: f64,
    /// Most distinct keys mapped in one pass (Kafka bounds its map by
    /// `log.cleaner.dedupe.buffer.size`); the map may exceed it by one segment's keys, so that
    /// every pass cleans at least one dirty segment.
    pub offset_map_keys_max: usize,
}

impl Default for CompactionOptions {
    fn default() -> Self {
        CompactionOptions {
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_compaction_lag_ms: 0,
            min_cleanable_dirty_ratio: 0.5,
            offset_map_keys_max: 1 << 20,
        }
    }
}

impl CompactionOptions {
    /// Kafka's bounds: the ratio in [0, 1], the times at least 0.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.min_cleanable_dirty_ratio) {
            return Err(Error::InvalidConfig(format!(
                "min.cleanable.dirty.ratio {} is outside [0, 1]",
                self.min_cleanable_dirty_ratio
            )));
        }
        if self.delete_retention_ms < 0 || self.min_compaction_lag_ms < 0 {
            return Err(Error::InvalidConfig(format!(
                "delete.retention.ms {} and min.compaction.lag.ms {} must be at least 0",
                self.delete_retention_ms, self.min_compaction_lag_ms
            )));
        }
        if self.offset_map_keys_max == 0 {
            return Err(Error::InvalidConfig("offset map of 0 keys".into()));
        }
        Ok(())
    }
}

/// What one [`Log::compact`] pass found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompactionStats {
    /// Whether segments were rewritten (false: nothing dirty, or the dirty ratio was too low).
    pub cleaned: bool,
    /// Dirty bytes / (clean + dirty bytes) of the non-active segments, before the pass.
    pub dirty_ratio: f64,
    pub first_dirty_offset: i64,
    /// The new cleaner checkpoint (the end of the offset map); `first_dirty_offset` if not cleaned.
    pub clean_end_offset: i64,
    pub segments_read: usize,
    pub segments_written: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Records dropped, tombstones included.
    pub records_removed: u64,
    pub tombstones_removed: u64,
    /// Compressed batches copied untouched: an unknown codec, or records that would not
    /// decompress (corrupt, or past the size cap) or parse.
    pub compressed_batches_skipped: u64,
    /// Compressed batches that lost records and were recompressed with their codec.
    pub compressed_batches_rewritten: u64,
    /// Records without a key seen (kept).
    pub keyless_records: u64,
    /// Records of aborted transactions dropped (counted in `records_removed` too).
    pub aborted_records_removed: u64,
    /// Transaction markers dropped (see the module doc).
    pub markers_removed: u64,
}

impl Log {
    /// One log cleaner pass (see [the module doc](crate::cleaner)), judging time by `now_ms`. The
    /// active segment is never touched, so the log end offset never changes, and every kept
    /// record keeps its offset. Not thread-safe beyond `&mut self`; fetched [`bytes::Bytes`] of
    /// replaced segments stay valid.
    ///
    /// An error after a group's commit point leaves this `Log` serving the old segments (their
    /// files are open) until it is reopened, which finishes the swap.
    pub fn compact(&mut self, now_ms: i64, options: &CompactionOptions) -> Result<CompactionStats> {
        self.check_not_failed()?;
        compact(self, now_ms, options, &mut CrashPoint::never())
    }
}

/// Stops a compaction or a truncation after a given number of swap steps (tests simulate crashes
/// with it).
#[derive(Debug, Default)]
pub(crate) struct CrashPoint {
    after_steps: Option<usize>,
    steps: usize,
}

impl CrashPoint {
    pub(crate) fn never() -> Self {
        CrashPoint::default()
    }

    #[cfg(test)]
    pub(crate) fn after(steps: usize) -> Self {
        CrashPoint {
            after_steps: Some(steps),
            steps: 0,
        }
    }

    pub(crate) fn step(&mut self, dir: &Path) -> Result<()> {
        self.steps += 1;
        if self.after_steps == Some(self.steps) {
            return Err(Error::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::other("injected crash"),
            });
        }
        Ok(())
    }
}

pub(crate) fn compact(
    log: &mut Log,
    now_ms: i64,
    options: &CompactionOptions,
    crash: &mut CrashPoint,
) -> Result<CompactionStats> {
    options.validate()?;
    let dir = log.dir().to_path_buf();
    let log_start_offset = log.log_start_offset();
    let segments = log.segment_map();
    let bases: Vec<i64> = segments.keys().copied().collect();
    let active_base = bases.last().copied().unwrap_or(log_start_offset);
    // Each non-active segment's range: up to the next segment's base.
    let ranges: Vec<(i64, i64)> = bases.windows(2).map(|w| (w[0], w[1])).collect();
    let first_dirty = match read_cleaner_checkpoint(&dir)? {
        Some(offset) if (log_start_offset..=active_base).contains(&offset) => offset,
        _ => log_start_offset,
    };
    let mut stats = CompactionStats {
        first_dirty_offset: first_dirty,
        clean_end_offset: first_dirty,
        ..CompactionStats::default()
    };
    let size_of = |base: &i64| segments.get(base).map_or(0, Segment::size);
    let lag_horizon_ms = now_ms.saturating_sub(options.min_compaction_lag_ms);
    let mut first_uncleanable = active_base;
    if options.min_compaction_lag_ms > 0 {
        for (base, _) in ranges.iter().filter(|(_, end)| *end > first_dirty) {
            let too_new = match segments.get(base) {
                Some(segment) => segment.largest_timestamp()? > lag_horizon_ms,
                None => false,
            };
            if too_new {
                first_uncleanable = *base;
                break;
            }
        }
    }
    // Kafka's `firstUncleanableDirtyOffset` also stops at the first unstable offset: an open
    // transaction may still abort, so neither its records nor anything after them is decided.
    if let Some(first_unstable) = log.first_unstable_offset() {
        if let Some((base, _)) = ranges.iter().find(|(_, end)| *end > first_unstable) {
            first_uncleanable = first_uncleanable.min(*base);
        }
    }
    let first_uncleanable = first_uncleanable.max(first_dirty);
    let (mut clean_bytes, mut dirty_bytes) = (0u64, 0u64);
    for (base, end) in &ranges {
        if *end <= first_dirty {
            clean_bytes += size_of(base);
        } else if *base < first_uncleanable {
            dirty_bytes += size_of(base);
        }
    }
    if clean_bytes + dirty_bytes > 0 {
        stats.dirty_ratio = dirty_bytes as f64 / (clean_bytes + dirty_bytes) as f64;
    }
    if dirty_bytes == 0 || stats.dirty_ratio < options.min_cleanable_dirty_ratio {
        return Ok(stats);
    }

    // Kafka's `buildOffsetMap`: the latest offset of each key in the dirty section. Records of
    // aborted transactions are never a key's latest: a read_committed reader does not see them,
    // so the value they would shadow must stay.
    let aborted = AbortedRanges::new(log);
    let mut offset_map: HashMap<Vec<u8>, i64> = HashMap::new();
    let mut map_end = first_dirty;
    for (base, end) in ranges
        .iter()
        .filter(|(base, end)| *end > first_dirty && *base < first_uncleanable)
    {
        if offset_map.len() >= options.offset_map_keys_max && map_end > first_dirty {
            break;
        }
        let Some(segment) = segments.get(base) else {
            continue;
        };
        for_each_batch(segment, |bytes, header| {
            if header.is_control() || aborted.holds(header) {
                return Ok(());
            }
            let Some(plain) = readable_batch(bytes, header) else {
                return Ok(());
            };
            for view in batch::record_views(&plain)? {
                let view = view?;
                let offset = header.base_offset + i64::from(view.offset_delta);
                if let (Some(key), true) = (view.key, offset >= first_dirty) {
                    offset_map.insert(key.to_vec(), offset);
                }
            }
            Ok(())
        })?;
        map_end = *end;
    }

    // Kafka's `groupSegmentsBySize`: each group becomes one segment named by its first base.
    let mut groups: Vec<Vec<(i64, i64)>> = Vec::new();
    let mut group_bytes = 0u64;
    let segment_bytes = log.config().segment_bytes;
    for &(base, end) in ranges.iter().filter(|(_, end)| *end <= map_end) {
        let size = size_of(&base);
        let fits = groups
            .last()
            .and_then(|g| g.first())
            .is_some_and(|&(first, _)| {
                group_bytes + size <= segment_bytes && relative_offset(first, end - 1).is_some()
            });
        match groups.last_mut() {
            Some(group) if fits => {
                group.push((base, end));
                group_bytes += size;
            }
            _ => {
                groups.push(vec![(base, end)]);
                group_bytes = size;
            }
        }
    }
    let mut seen_compressed = false;
    let mut txns = TxnCleaning::new(log, aborted);
    for group in &groups {
        clean_group(
            log,
            &dir,
            group,
            &offset_map,
            now_ms,
            options,
            &mut seen_compressed,
            &mut txns,
            &mut stats,
            crash,
        )?;
    }
    if !txns.aborts_removed.is_empty() {
        log.forget_aborted_txns(&txns.aborts_removed)?;
    }
    write_cleaner_checkpoint(&dir, map_end)?;
    stats.cleaned = true;
    stats.clean_end_offset = map_end;
    tracing::info!(dir = %dir.display(), ?stats, "compacted log");
    Ok(stats)
}

/// What a pass knows of producers and transactions as it walks the log in offset order.
struct TxnCleaning {
    aborted: AbortedRanges,
    /// Producers with a transactional batch read since their last marker: that marker stays.
    with_batches: HashSet<i64>,
    /// ABORT markers removed: (producer id, marker offset), their index entries to drop.
    aborts_removed: HashSet<(i64, i64)>,
    /// Each remembered producer's last data batch (its last offset): kept, emptied if need be,
    /// so a producer state rebuilt from the log still knows the producer's last sequence and
    /// a retry of that batch is still recognised (Kafka keeps these "empty batches" too).
    last_batch_of: HashMap<i64, i64>,
}

impl TxnCleaning {
    fn new(log: &Log, aborted: AbortedRanges) -> TxnCleaning {
        let last_batch_of = log
            .producer_state()
            .entries()
            .filter(|entry| entry.last_data_offset() >= 0)
            .map(|entry| (entry.producer_id, entry.last_data_offset()))
            .collect();
        TxnCleaning {
            aborted,
            with_batches: HashSet::new(),
            aborts_removed: HashSet::new(),
            last_batch_of,
        }
    }

    /// Whether `header` is its producer's last data batch, which must stay (empty if need be).
    fn is_producers_last(&self, header: &RecordBatchHeader) -> bool {
        header.producer_id >= 0
            && self.last_batch_of.get(&header.producer_id) == Some(&header.last_offset())
    }
}

/// `bytes` (a batch, headed by `header`) without its records: its header fields kept (offsets,
/// producer, sequence), compressed with its codec again if it was; `None` if its records cannot
/// be read, in which case it is kept whole.
fn emptied_batch(dir: &Path, bytes: &[u8], header: &RecordBatchHeader) -> Result<Option<Vec<u8>>> {
    let Some(plain) = readable_batch(bytes, header) else {
        return Ok(None);
    };
    let mut empty = batch::rebuild_batch(&plain, &[])?;
    // The producer's last write time stays (its expiry is judged by it), as Kafka's empty
    // batches keep it.
    batch::set_max_timestamp(&mut empty, header.max_timestamp)?;
    if let Some(codec) = Codec::from_id(header.compression()) {
        empty = codec::compressed_batch(&empty, codec).at(dir)?;
    }
    Ok(Some(empty))
}

impl TxnCleaning {
    /// A control batch was read: whether it may go (none of its transaction's batches was read,
    /// and it is past `delete.retention.ms`).
    fn marker_removable(&mut self, header: &RecordBatchHeader, expired: bool) -> bool {
        let had_batches = self.with_batches.remove(&header.producer_id);
        !had_batches && expired
    }

    /// A data batch was read: whether it belongs to an aborted transaction (and goes).
    fn aborted_batch(&mut self, header: &RecordBatchHeader) -> bool {
        if header.is_transactional() {
            self.with_batches.insert(header.producer_id);
        }
        self.aborted.holds(header)
    }
}

/// The aborted transactions of a log, by producer: which transactional batches never committed.
struct AbortedRanges(HashMap<i64, Vec<(i64, i64)>>);

impl AbortedRanges {
    fn new(log: &Log) -> AbortedRanges {
        let mut by_producer: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for txn in log.collect_aborted_txns(i64::MIN, i64::MAX) {
            by_producer
                .entry(txn.producer_id)
                .or_default()
                .push((txn.first_offset, txn.last_offset));
        }
        AbortedRanges(by_producer)
    }

    /// Whether `header` is a transactional data batch of a transaction that aborted.
    fn holds(&self, header: &RecordBatchHeader) -> bool {
        header.is_transactional()
            && !header.is_control()
            && self.0.get(&header.producer_id).is_some_and(|ranges| {
                ranges
                    .iter()
                    .any(|&(first, last)| (first..last).contains(&header.base_offset))
            })
    }
}

/// The batch as the cleaner reads its records: itself if uncompressed, else decompressed; `None`
/// if its records cannot be read (an unknown codec, corrupt or oversized compressed data, or
/// decompressed records that do not parse: then it is copied untouched, the safe choice). The
/// batch CRC covers only the compressed bytes, and snappy and Kafka's lz4 carry no checksum of
/// their own, so a client's bad data can decompress "successfully": it must not stop the cleaner.
fn readable_batch<'a>(bytes: &'a [u8], header: &RecordBatchHeader) -> Option<Cow<'a, [u8]>> {
    if header.compression() == 0 {
        return Some(Cow::Borrowed(bytes));
    }
    let codec = Codec::from_id(header.compression())?;
    let plain = codec::decompressed_batch(bytes, codec).and_then(|plain| {
        batch::record_views(&plain)
            .and_then(|views| views.collect::<Result<Vec<_>, _>>())
            .map_err(std::io::Error::other)?;
        Ok(plain)
    });
    match plain {
        Ok(plain) => Some(Cow::Owned(plain)),
        Err(err) => {
            tracing::warn!(
                base_offset = header.base_offset,
                ?codec,
                "compressed batch copied untouched: {err}"
            );
            None
        }
    }
}

/// Calls `f(batch bytes, header)` for every batch of `segment`, CRC-checked: the cleaner never
/// copies a byte it has not validated.
fn for_each_batch(
    segment: &Segment,
    mut f: impl FnMut(&[u8], &RecordBatchHeader) -> Result<()>,
) -> Result<()> {
    let all = segment.log_bytes()?;
    for item in RecordBatches::new(all) {
        let (position, header) = item?;
        f(&all[position..position + header.total_size()], &header)?;
    }
    Ok(())
}

/// Writes one group's cleaned segment and swaps it in (see the module doc for the steps).
#[allow(clippy::too_many_arguments)]
fn clean_group(
    log: &mut Log,
    dir: &Path,
    group: &[(i64, i64)],
    offset_map: &HashMap<Vec<u8>, i64>,
    now_ms: i64,
    options: &CompactionOptions,
    seen_compressed: &mut bool,
    txns: &mut TxnCleaning,
    stats: &mut CompactionStats,
    crash: &mut CrashPoint,
) -> Result<()> {
    let (Some(&(base, _)), Some(&(_, end))) = (group.first(), group.last()) else {
        return Ok(());
    };
    let config = log.config().clone();
    let segments = log.segment_map();
    let reserve_bytes: u64 = group
        .iter()
        .filter_map(|(b, _)| segments.get(b))
        .map(Segment::size)
        .sum();
    let mut cleaned =
        Segment::create_temp(dir, base, CLEANED_SUFFIX, reserve_bytes, &config, now_ms)?;
    for (segment_base, _) in group {
        let Some(segment) = segments.get(segment_base) else {
            continue;
        };
        let tombstones_expired =
            now_ms.saturating_sub(segment.largest_timestamp()?) > options.delete_retention_ms;
        let mut out = Vec::new();
        let mut headers = Vec::new();
        for_each_batch(segment, |bytes, header| {
            stats.bytes_read += bytes.len() as u64;
            if header.is_control() {
                if txns.marker_removable(header, tombstones_expired) {
                    stats.markers_removed += 1;
                    // An ABORT marker gone takes its aborted-transaction index entry with it:
                    // a reader told of the transaction would wait for the marker to end it
                    // and skip the producer's later committed batches meanwhile.
                    if batch::end_txn_marker(bytes)
                        .is_some_and(|m| m.control_type == batch::CONTROL_TYPE_ABORT)
                    {
                        txns.aborts_removed
                            .insert((header.producer_id, header.base_offset));
                    }
                } else {
                    headers.push((out.len(), *header));
                    out.extend_from_slice(bytes);
                }
                return Ok(());
            }
            if txns.aborted_batch(header) {
                let records = u64::try_from(header.records_count).unwrap_or(0);
                stats.records_removed += records;
                stats.aborted_records_removed += records;
                if txns.is_producers_last(header) {
                    let empty = emptied_batch(dir, bytes, header)?;
                    let kept = empty.as_deref().unwrap_or(bytes);
                    headers.push((out.len(), RecordBatchHeader::parse(kept)?));
                    out.extend_from_slice(kept);
                }
                return Ok(());
            }
            let plain = readable_batch(bytes, header);
            let Some(plain) = plain else {
                if header.compression() != 0 {
                    stats.compressed_batches_skipped += 1;
                    *seen_compressed = true;
                }
                headers.push((out.len(), *header));
                out.extend_from_slice(bytes);
                return Ok(());
            };
            let views = batch::record_views(&plain)?.collect::<Result<Vec<_>, _>>()?;
            let mut kept = Vec::with_capacity(views.len());
            for view in &views {
                let offset = header.base_offset + i64::from(view.offset_delta);
                let Some(key) = view.key else {
                    stats.keyless_records += 1;
                    kept.push(*view);
                    continue;
                };
                if offset_map.get(key).is_some_and(|&latest| latest > offset) {
                    stats.records_removed += 1;
                    continue;
                }
                if view.value.is_none() && tombstones_expired && !*seen_compressed {
                    stats.records_removed += 1;
                    stats.tombstones_removed += 1;
                    continue;
                }
                kept.push(*view);
            }
            if kept.len() == views.len() {
                headers.push((out.len(), *header));
                out.extend_from_slice(bytes);
            } else if kept.is_empty() && txns.is_producers_last(header) {
                let empty = emptied_batch(dir, bytes, header)?;
                let kept = empty.as_deref().unwrap_or(bytes);
                headers.push((out.len(), RecordBatchHeader::parse(kept)?));
                out.extend_from_slice(kept);
            } else if !kept.is_empty() {
                let mut rebuilt = batch::rebuild_batch(&plain, &kept)?;
                if let Some(codec) = Codec::from_id(header.compression()) {
                    rebuilt = codec::compressed_batch(&rebuilt, codec).at(dir)?;
                    stats.compressed_batches_rewritten += 1;
                }
                headers.push((out.len(), RecordBatchHeader::parse(&rebuilt)?));
                out.extend_from_slice(&rebuilt);
            }
            Ok(())
        })?;
        if !out.is_empty() {
            cleaned.append(&[&out], &headers, None)?;
        }
        stats.segments_read += 1;
    }
    cleaned.seal()?;
    stats.bytes_written += cleaned.size();
    stats.segments_written += 1;
    drop(cleaned);

    commit_swap(dir, base, base..end, crash)?;
    let doomed = complete_swap(log, base, base..end, crash)?;
    for (segment_base, _) in group {
        log.segment_map_mut().remove(segment_base);
    }
    for path in doomed {
        fs::remove_file(&path).at(&path)?;
    }
    crash.step(dir)?;
    let segment = Segment::open_sealed(dir, base, &config, now_ms)?;
    log.segment_map_mut().insert(base, segment);
    Ok(())
}

/// Commits the sealed segment written as `<base>.*.cleaned` as the replacement of every segment
/// whose base offset is in `replaced` (which holds `base`): the end marker, then `.cleaned` →
/// `.swap` (indexes first; the `.log` rename is the commit point, from which a restart finishes
/// the swap). An error may come before or after the commit point. Shared by the cleaner (a group
/// of segments) and truncation (every segment from the cut on, see `crate::log::truncate`).
pub(crate) fn commit_swap(
    dir: &Path,
    base: i64,
    replaced: Range<i64>,
    crash: &mut CrashPoint,
) -> Result<()> {
    write_swap_end(dir, base, &replaced)?;
    sync_dir(dir)?;
    crash.step(dir)?;
    for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX] {
        rename(
            &temp_path(dir, base, suffix, CLEANED_SUFFIX),
            &temp_path(dir, base, suffix, SWAP_SUFFIX),
        )?;
        if suffix == LOG_SUFFIX {
            // The commit point: from here on, a restart finishes this swap.
            sync_dir(dir)?;
        }
        crash.step(dir)?;
    }
    Ok(())
}

/// After [`commit_swap`]: renames the files of the log's segments in `replaced` to `.deleted`
/// and gives the `.swap` files their final names. Returns the `.deleted` paths, to be removed
/// once the old segments are dropped (their maps, and fetched bytes, stay valid until then and
/// after).
pub(crate) fn complete_swap(
    log: &Log,
    base: i64,
    replaced: Range<i64>,
    crash: &mut CrashPoint,
) -> Result<Vec<PathBuf>> {
    let dir = log.dir();
    let mut doomed = Vec::new();
    for segment in log.segment_map().range(replaced).map(|(_, s)| s) {
        doomed.extend(segment.rename_to_deleted()?);
        crash.step(dir)?;
    }
    finish_swap(dir, base, crash)?;
    Ok(doomed)
}

/// Removes the `<base>.*.cleaned` files of a swap abandoned before [`commit_swap`] (best effort:
/// `Log::open` removes whatever is left).
pub(crate) fn discard_cleaned(dir: &Path, base: i64) {
    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        let path = temp_path(dir, base, suffix, CLEANED_SUFFIX);
        if let Err(err) = remove_if_present(&path) {
            tracing::warn!(file = %path.display(), "could not remove an abandoned segment: {err}");
        }
    }
}

/// The last steps of a swap, shared by the cleaner and recovery: the `.swap` files take their
/// final names (indexes first, then the `.log`), then the end marker goes.
fn finish_swap(dir: &Path, base: i64, crash: &mut CrashPoint) -> Result<()> {
    for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX] {
        let from = temp_path(dir, base, suffix, SWAP_SUFFIX);
        match fs::rename(&from, dir.join(segment_file_name(base, suffix))) {
            Ok(()) => {}
            // A missing index is rebuilt when the segment is opened.
            Err(err) if err.kind() == ErrorKind::NotFound && suffix != LOG_SUFFIX => {}
            Err(err) => return Err(err).at(&from),
        }
        crash.step(dir)?;
    }
    remove_if_present(&dir.join(segment_file_name(base, SWAP_END_SUFFIX)))?;
    sync_dir(dir)?;
    crash.step(dir)
}

/// Finishes or rolls back compactions a crash interrupted (run by `Log::open` before it lists the
/// segments). A `<base>.log.swap` is committed: the segment files in `[base, end)` go and the swap
/// takes their place. Every other `.cleaned`, `.swap` and end marker is an uncommitted group and
/// is removed.
pub(crate) fn recover_interrupted_swaps(dir: &Path) -> Result<()> {
    let mut swaps = Vec::new();
    let mut segment_files = Vec::new();
    let mut leftovers = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((Some(base), rest)) = name
            .split_once('.')
            .map(|(stem, rest)| (parse_segment_stem(stem), rest))
        else {
            continue;
        };
        match rest {
            LOG_SUFFIX | INDEX_SUFFIX | TIME_INDEX_SUFFIX => segment_files.push((base, path)),
            "log.swap" => swaps.push(base),
            _ if rest.ends_with(".cleaned")
                || rest.ends_with(".swap")
                || rest == SWAP_END_SUFFIX =>
            {
                leftovers.push(path)
            }
            _ => {}
        }
    }
    if swaps.is_empty() && leftovers.is_empty() {
        return Ok(());
    }
    swaps.sort_unstable();
    for base in swaps {
        let replaced = read_swap_end(dir, base)?;
        tracing::warn!(dir = %dir.display(), base, ?replaced, "finishing an interrupted segment swap");
        for (_, path) in segment_files.iter().filter(|(b, _)| replaced.contains(b)) {
            remove_if_present(path)?;
        }
        finish_swap(dir, base, &mut CrashPoint::never())?;
    }
    for path in leftovers {
        tracing::info!(file = %path.display(), "removing an uncommitted compaction file");
        remove_if_present(&path)?;
    }
    sync_dir(dir)
}

/// `<base>.<suffix>.<temp>`, e.g. `00000000000000000042.log.cleaned`.
fn temp_path(dir: &Path, base: i64, suffix: &str, temp: &str) -> PathBuf {
    dir.join(format!("{}.{temp}", segment_file_name(base, suffix)))
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).at(from)
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != ErrorKind::NotFound => Err(err).at(path),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Writes `text` to `path` durably (fsynced; the caller syncs the directory or renames over).
fn write_synced(path: &Path, text: &str) -> Result<()> {
    let mut file = fs::File::create(path).at(path)?;
    file.write_all(text.as_bytes()).at(path)?;
    file.sync_all().at(path)
}

fn invalid(path: PathBuf, text: &str) -> Error {
    Error::Io {
        path,
        source: std::io::Error::new(ErrorKind::InvalidData, format!("unreadable: {text:?}")),
    }
}

/// `<end>` when the replaced range starts at the swap's base (the cleaner), `<end> <start>` when it
/// starts below (truncating the whole log replaces the segments below the new one's base too).
fn write_swap_end(dir: &Path, base: i64, replaced: &Range<i64>) -> Result<()> {
    let text = if replaced.start == base {
        format!("{}\n", replaced.end)
    } else {
        format!("{} {}\n", replaced.end, replaced.start)
    };
    write_synced(&dir.join(segment_file_name(base, SWAP_END_SUFFIX)), &text)
}

/// The range of base offsets a committed swap replaces. The marker was fsynced before the commit,
/// so only outside damage makes it missing or unreadable, and then guessing which segments to drop
/// could lose data: an error.
fn read_swap_end(dir: &Path, base: i64) -> Result<Range<i64>> {
    let path = dir.join(segment_file_name(base, SWAP_END_SUFFIX));
    let text = fs::read_to_string(&path).at(&path)?;
    let mut fields = text.split_whitespace().map(str::parse::<i64>);
    match (fields.next(), fields.next(), fields.next()) {
        (Some(Ok(end)), None, None) if end > base => Ok(base..end),
        (Some(Ok(end)), Some(Ok(start)), None) if end > base && start <= base => Ok(start..end),
        _ => Err(invalid(path, &text)),
    }
}

/// The cleaner checkpoint of the partition in `dir`, if one was written.
pub fn read_cleaner_checkpoint(dir: &Path) -> Result<Option<i64>> {
    let path = dir.join(CLEANER_OFFSET_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).at(&path),
    };
    let mut lines = text.lines().map(str::trim);
    match (lines.next(), lines.next().map(str::parse::<i64>)) {
        (Some(CLEANER_OFFSET_VERSION), Some(Ok(offset))) if offset >= 0 => Ok(Some(offset)),
        _ => Err(invalid(path, &text)),
    }
}

/// Replaces the cleaner checkpoint atomically (temp file, fsync, rename, fsync the directory).
fn write_cleaner_checkpoint(dir: &Path, offset: i64) -> Result<()> {
    crate::checkpoint::write_atomically(
        &dir.join(CLEANER_OFFSET_FILE),
        format!("{CLEANER_OFFSET_VERSION}\n{offset}\n").as_bytes(),
    )
}

/// Kafka's `maybeTruncateCheckpoint` after a log truncation: the cleaner checkpoint may not stay
/// above `offset` (the new active segment's base), or records appended again below it would be
/// taken as already clean.
pub(crate) fn truncate_cleaner_checkpoint(dir: &Path, offset: i64) -> Result<()> {
    match read_cleaner_checkpoint(dir)? {
        Some(checkpoint) if checkpoint > offset => write_cleaner_checkpoint(dir, offset),
        _ => Ok(()),
    }
}

pub(crate) mod codec;

#[cfg(test)]
mod tests;
