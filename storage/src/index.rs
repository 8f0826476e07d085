//! The sparse offset index (`.index`) and time index (`.timeindex`) of one segment.
//!
//! Both are derived data, exactly as in Kafka: not checksummed, sanity-checked on load, rebuilt from
//! the `.log` when missing or wrong. Offsets are stored relative to the segment's base offset.
//!
//! - `.index` entry: relative offset (u32) + position (u32) = 8 bytes. An entry `(o, p)` means the
//!   batch at `p` has last offset `o` (Kafka's choice); a lookup for `t` takes the last entry with
//!   `o <= t` and scans batch headers forward from `p`.
//! - `.timeindex` entry: timestamp (i64) + relative offset (u32) = 12 bytes. An entry `(ts, o)` means
//!   the largest timestamp in the segment up to and including the batch ending at `o` is `ts`, first
//!   reached by that batch; every batch before it has a smaller max timestamp.

use std::io;
use std::path::Path;

use crate::mmap::IndexFile;

pub(crate) const OFFSET_ENTRY_BYTES: usize = 8;
pub(crate) const TIME_ENTRY_BYTES: usize = 12;

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(b)
}

fn be_i64(bytes: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(b)
}

/// `offset - base_offset` if it fits the 4-byte field (Kafka limits it to `i32::MAX`).
pub(crate) fn relative_offset(base_offset: i64, offset: i64) -> Option<u32> {
    let relative = offset.checked_sub(base_offset)?;
    if (0..=i64::from(i32::MAX)).contains(&relative) {
        Some(relative as u32)
    } else {
        None
    }
}

/// Largest `i` in `0..entries` with `key(i) <= target`, for keys sorted ascending.
fn floor_slot(entries: usize, target: i64, key: impl Fn(usize) -> i64) -> Option<usize> {
    let (mut lo, mut hi) = (0usize, entries);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if key(mid) <= target {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo.checked_sub(1)
}

/// The first of the all-zero slots that end an index file (`entries` if none), for a file that is
/// entries followed by preallocated zeros. If zeros appear elsewhere (damage), some slot is picked;
/// the sanity checks and the header walk after the last kept entry then decide whether to rebuild.
fn first_unused_slot(entries: usize, unused: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0usize, entries);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if unused(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

#[derive(Debug)]
pub(crate) struct OffsetIndex {
    file: IndexFile,
    base_offset: i64,
    entries: usize,
    max_entries: usize,
    /// The file existed and held a whole number of entries when loaded.
    loaded_whole: bool,
}

impl OffsetIndex {
    /// Opens the index as found on disk (a sealed segment's index is trimmed to its entries).
    pub(crate) fn open(path: &Path, base_offset: i64) -> io::Result<Self> {
        let existed = path.exists();
        let (file, len) = IndexFile::open(path)?;
        let mut index = Self {
            file,
            base_offset,
            entries: (len / OFFSET_ENTRY_BYTES as u64) as usize,
            max_entries: 0,
            loaded_whole: existed && len % OFFSET_ENTRY_BYTES as u64 == 0,
        };
        // An active segment's index left untrimmed by a crash ends in preallocated zeros; no real
        // entry has position 0 (the first batch never gets one), so they are not entries. Found by
        // bisection: touching every preallocated page would make start-up slow.
        index.entries = first_unused_slot(index.entries, |i| index.entry(i).1 == 0);
        index.max_entries = index.entries;
        Ok(index)
    }

    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }

    /// Whether the loaded entries can be trusted for a log of `log_size` bytes: whole entries,
    /// offsets and positions strictly increasing, positions inside the log.
    pub(crate) fn is_sane(&self, log_size: u64) -> bool {
        if !self.loaded_whole {
            return false;
        }
        let mut previous: Option<(u32, u32)> = None;
        for i in 0..self.entries {
            let (relative, position) = self.entry(i);
            if relative > i32::MAX as u32 || u64::from(position) >= log_size {
                return false;
            }
            if let Some((prev_relative, prev_position)) = previous {
                if relative <= prev_relative || position <= prev_position {
                    return false;
                }
            }
            previous = Some((relative, position));
        }
        true
    }

    fn entry(&self, i: usize) -> (u32, u32) {
        let bytes = self.file.bytes();
        let at = i * OFFSET_ENTRY_BYTES;
        (be_u32(bytes, at), be_u32(bytes, at + 4))
    }

    /// Drops every entry and preallocates room for `max_index_bytes` of them.
    pub(crate) fn reset(&mut self, max_index_bytes: u32) -> io::Result<()> {
        self.max_entries = max_index_bytes as usize / OFFSET_ENTRY_BYTES;
        self.entries = 0;
        self.loaded_whole = true;
        self.resize_file((self.max_entries * OFFSET_ENTRY_BYTES) as u64)
    }

    pub(crate) fn is_full(&self) -> bool {
        self.entries >= self.max_entries
    }

    /// Resizes the file; a failure may leave a shorter map (or none), so the counts are cut to
    /// what is mapped and no lookup or append ever reaches past it.
    fn resize_file(&mut self, len: u64) -> io::Result<()> {
        let resized = self.file.resize(len);
        let mapped = self.file.bytes().len() / OFFSET_ENTRY_BYTES;
        self.entries = self.entries.min(mapped);
        self.max_entries = self.max_entries.min(mapped);
        resized
    }

    /// Makes room for `max_index_bytes` of entries again, keeping the loaded ones: the active
    /// segment reopened without recovery after a clean shutdown (its index was trimmed on close).
    pub(crate) fn resize(&mut self, max_index_bytes: u32) -> io::Result<()> {
        self.max_entries = (max_index_bytes as usize / OFFSET_ENTRY_BYTES).max(self.entries);
        self.resize_file((self.max_entries * OFFSET_ENTRY_BYTES) as u64)
    }

    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.entries
    }

    /// Adds `(last_offset, position)` if it is past the last entry and there is room.
    pub(crate) fn append(&mut self, last_offset: i64, position: u64) {
        let (Some(relative), Ok(position)) = (
            relative_offset(self.base_offset, last_offset),
            u32::try_from(position),
        ) else {
            return;
        };
        if self.is_full() {
            return;
        }
        if let Some(last) = self.entries.checked_sub(1).map(|i| self.entry(i)) {
            if relative <= last.0 || position <= last.1 {
                return;
            }
        }
        let at = self.entries * OFFSET_ENTRY_BYTES;
        if let Err(err) = self.file.reserve(at, OFFSET_ENTRY_BYTES) {
            tracing::warn!(index = %self.file.path().display(), "offset index entry skipped: {err}");
            return;
        }
        let bytes = self.file.bytes_mut();
        bytes[at..at + 4].copy_from_slice(&relative.to_be_bytes());
        bytes[at + 4..at + 8].copy_from_slice(&position.to_be_bytes());
        self.entries += 1;
    }

    /// `(absolute offset, position)` of the last entry at or below `offset`: the batch at that
    /// position ends at that offset. `None` when no entry is (scan from the segment's start).
    pub(crate) fn lookup(&self, offset: i64) -> Option<(i64, u64)> {
        let target = offset.saturating_sub(self.base_offset);
        floor_slot(self.entries, target, |i| i64::from(self.entry(i).0)).map(|i| {
            let (relative, position) = self.entry(i);
            (self.base_offset + i64::from(relative), u64::from(position))
        })
    }

    /// `(absolute last offset, position)` of the last entry.
    pub(crate) fn last_entry(&self) -> Option<(i64, u64)> {
        let (relative, position) = self.entry(self.entries.checked_sub(1)?);
        Some((self.base_offset + i64::from(relative), u64::from(position)))
    }

    /// Shrinks the file to its entries (on roll and close, as Kafka does).
    pub(crate) fn trim(&mut self) -> io::Result<()> {
        self.max_entries = self.entries;
        self.resize_file((self.entries * OFFSET_ENTRY_BYTES) as u64)
    }

    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync()
    }
}

#[derive(Debug)]
pub(crate) struct TimeIndex {
    file: IndexFile,
    base_offset: i64,
    entries: usize,
    max_entries: usize,
    loaded_whole: bool,
}

impl TimeIndex {
    pub(crate) fn open(path: &Path, base_offset: i64) -> io::Result<Self> {
        let existed = path.exists();
        let (file, len) = IndexFile::open(path)?;
        let mut index = Self {
            file,
            base_offset,
            entries: (len / TIME_ENTRY_BYTES as u64) as usize,
            max_entries: 0,
            loaded_whole: existed && len % TIME_ENTRY_BYTES as u64 == 0,
        };
        // Preallocated slots a crash left untrimmed are all zeros; dropping a real (0, base) entry
        // too only makes lookups start at the segment's beginning, which is still correct.
        index.entries = first_unused_slot(index.entries, |i| index.entry(i) == (0, 0));
        index.max_entries = index.entries;
        Ok(index)
    }

    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }

    /// Whole entries, timestamps strictly increasing, offsets non-decreasing and below `next_offset`.
    pub(crate) fn is_sane(&self, next_offset: i64) -> bool {
        if !self.loaded_whole {
            return false;
        }
        let mut previous: Option<(i64, u32)> = None;
        for i in 0..self.entries {
            let (timestamp, relative) = self.entry(i);
            if relative > i32::MAX as u32 || self.base_offset + i64::from(relative) >= next_offset {
                return false;
            }
            if let Some((prev_timestamp, prev_relative)) = previous {
                if timestamp <= prev_timestamp || relative < prev_relative {
                    return false;
                }
            }
            previous = Some((timestamp, relative));
        }
        true
    }

    fn entry(&self, i: usize) -> (i64, u32) {
        let bytes = self.file.bytes();
        let at = i * TIME_ENTRY_BYTES;
        (be_i64(bytes, at), be_u32(bytes, at + 8))
    }

    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.entries
    }

    pub(crate) fn reset(&mut self, max_index_bytes: u32) -> io::Result<()> {
        self.max_entries = max_index_bytes as usize / TIME_ENTRY_BYTES;
        self.entries = 0;
        self.loaded_whole = true;
        self.resize_file((self.max_entries * TIME_ENTRY_BYTES) as u64)
    }

    /// Resizes the file; a failure may leave a shorter map (or none), so the counts are cut to
    /// what is mapped and no lookup or append ever reaches past it.
    fn resize_file(&mut self, len: u64) -> io::Result<()> {
        let resized = self.file.resize(len);
        let mapped = self.file.bytes().len() / TIME_ENTRY_BYTES;
        self.entries = self.entries.min(mapped);
        self.max_entries = self.max_entries.min(mapped);
        resized
    }

    /// As [`OffsetIndex::resize`].
    pub(crate) fn resize(&mut self, max_index_bytes: u32) -> io::Result<()> {
        self.max_entries = (max_index_bytes as usize / TIME_ENTRY_BYTES).max(self.entries);
        self.resize_file((self.max_entries * TIME_ENTRY_BYTES) as u64)
    }

    /// Full for regular appends: the last slot is kept for the final entry written on roll.
    pub(crate) fn is_full(&self) -> bool {
        self.entries + 1 >= self.max_entries
    }

    /// Adds `(timestamp, offset)` if the timestamp is larger than the last entry's and there is
    /// room (`final_entry` may use the reserved last slot).
    pub(crate) fn maybe_append(&mut self, timestamp: i64, offset: i64, final_entry: bool) {
        let Some(relative) = relative_offset(self.base_offset, offset) else {
            return;
        };
        let room = if final_entry {
            self.entries < self.max_entries
        } else {
            !self.is_full()
        };
        if !room {
            return;
        }
        if let Some((last_timestamp, last_relative)) =
            self.entries.checked_sub(1).map(|i| self.entry(i))
        {
            if timestamp <= last_timestamp || relative < last_relative {
                return;
            }
        }
        let at = self.entries * TIME_ENTRY_BYTES;
        if let Err(err) = self.file.reserve(at, TIME_ENTRY_BYTES) {
            tracing::warn!(index = %self.file.path().display(), "time index entry skipped: {err}");
            return;
        }
        let bytes = self.file.bytes_mut();
        bytes[at..at + 8].copy_from_slice(&timestamp.to_be_bytes());
        bytes[at + 8..at + 12].copy_from_slice(&relative.to_be_bytes());
        self.entries += 1;
    }

    /// Offset of the last entry whose timestamp is `<= timestamp`: no batch before the batch ending
    /// there holds a record at or after `timestamp`. `None`: start at the segment's beginning.
    pub(crate) fn lookup(&self, timestamp: i64) -> Option<i64> {
        floor_slot(self.entries, timestamp, |i| self.entry(i).0)
            .map(|i| self.base_offset + i64::from(self.entry(i).1))
    }

    /// `(timestamp, absolute offset)` of the last entry.
    pub(crate) fn last_entry(&self) -> Option<(i64, i64)> {
        let (timestamp, relative) = self.entry(self.entries.checked_sub(1)?);
        Some((timestamp, self.base_offset + i64::from(relative)))
    }

    pub(crate) fn trim(&mut self) -> io::Result<()> {
        self.max_entries = self.entries;
        self.resize_file((self.entries * TIME_ENTRY_BYTES) as u64)
    }

    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync()
    }
}
