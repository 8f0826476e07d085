//! The aborted transaction index of a partition (Kafka's `TransactionIndex`): one entry per
//! aborted transaction — producer id, first offset, the offset of its ABORT marker, and the last
//! stable offset once it ended — which is what a `read_committed` fetch returns so the consumer
//! can drop the aborted records it is given.
//!
//! Kafka keeps one `.txnindex` per segment; Skald keeps one file per partition,
//! [`TXN_INDEX_FILE`], of entries in Kafka's 34-byte format, appended as ABORT markers are
//! appended. Like the offset indexes it is derived data: a log rebuilds the entries of every
//! marker it replays into its producer state on open (those from the replay's start on are
//! dropped first), so a crash that lost entries or kept entries of lost markers costs nothing.
//! The file is fsynced whenever a producer state snapshot is written, so the entries below the
//! newest snapshot — the ones no replay recreates — are always durable.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// The partition's aborted transaction index file.
pub const TXN_INDEX_FILE: &str = "aborted-transactions.txnindex";
/// Kafka's `AbortedTxn` entry version.
const ENTRY_VERSION: i16 = 0;
/// version 2, producer id 8, first offset 8, last offset 8, last stable offset 8.
const ENTRY_BYTES: usize = 34;

/// One aborted transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    /// The offset of the transaction's first batch in this partition.
    pub first_offset: i64,
    /// The offset of its ABORT marker.
    pub last_offset: i64,
    /// The partition's last stable offset once the marker was written.
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&ENTRY_VERSION.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.first_offset.to_be_bytes());
        out.extend_from_slice(&self.last_offset.to_be_bytes());
        out.extend_from_slice(&self.last_stable_offset.to_be_bytes());
    }

    fn decode(raw: &[u8]) -> Option<AbortedTxn> {
        let field = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&raw[at..at + 8]);
            i64::from_be_bytes(bytes)
        };
        (i16::from_be_bytes([raw[0], raw[1]]) == ENTRY_VERSION).then(|| AbortedTxn {
            producer_id: field(2),
            first_offset: field(10),
            last_offset: field(18),
            last_stable_offset: field(26),
        })
    }
}

/// The entries of one partition, ascending by marker offset, and their file.
#[derive(Debug)]
pub struct TxnIndex {
    path: PathBuf,
    entries: Vec<AbortedTxn>,
    /// Entries appended since the file was last fsynced.
    dirty: bool,
}

impl TxnIndex {
    /// Reads `<dir>/`[`TXN_INDEX_FILE`] (none yet: empty). A torn last entry (a crash mid-write)
    /// or an entry of an unknown version ends what is read; the caller fits the rest to its log.
    pub fn open(dir: &Path) -> Result<TxnIndex> {
        let path = dir.join(TXN_INDEX_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(err).at(&path),
        };
        let entries: Vec<AbortedTxn> = bytes
            .chunks_exact(ENTRY_BYTES)
            .map_while(AbortedTxn::decode)
            .collect();
        let mut index = TxnIndex {
            path,
            entries,
            dirty: false,
        };
        // A torn or unreadable tail is cut off before anything is appended after it: appends
        // would otherwise land out of step with the 34-byte entries and read back as garbage.
        if bytes.len() != index.entries.len() * ENTRY_BYTES {
            tracing::warn!(file = %index.path.display(), "cutting a torn aborted transaction index tail");
            index.rewrite()?;
        }
        Ok(index)
    }

    pub fn entries(&self) -> &[AbortedTxn] {
        &self.entries
    }

    /// Appends an entry (its marker is newer than every entry's), to memory and the file.
    pub fn append(&mut self, entry: AbortedTxn) -> Result<()> {
        let mut bytes = Vec::with_capacity(ENTRY_BYTES);
        entry.encode(&mut bytes);
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .at(&self.path)?;
        file.write_all(&bytes).at(&self.path)?;
        self.entries.push(entry);
        self.dirty = true;
        Ok(())
    }

    /// Keeps only the entries `keep` accepts; rewrites the file (atomically) if any went.
    pub fn retain(&mut self, keep: impl Fn(&AbortedTxn) -> bool) -> Result<()> {
        let before = self.entries.len();
        self.entries.retain(keep);
        if self.entries.len() == before {
            return Ok(());
        }
        self.rewrite()
    }

    /// Makes the appended entries durable.
    pub fn flush(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Ok(file) = fs::File::open(&self.path) {
            file.sync_all().at(&self.path)?;
        }
        self.dirty = false;
        Ok(())
    }

    /// Kafka's `collectAbortedTxns`: the transactions a fetch reading `[from, upper)` must be told
    /// of — those whose marker is at or after `from` and which began before `upper`.
    pub fn collect(&self, from: i64, upper: i64) -> Vec<AbortedTxn> {
        let start = self.entries.partition_point(|e| e.last_offset < from);
        self.entries[start..]
            .iter()
            .filter(|e| e.first_offset < upper)
            .copied()
            .collect()
    }

    fn rewrite(&mut self) -> Result<()> {
        let mut bytes = Vec::with_capacity(self.entries.len() * ENTRY_BYTES);
        for entry in &self.entries {
            entry.encode(&mut bytes);
        }
        let tmp = self.path.with_extension("txnindex.tmp");
        {
            let mut file = fs::File::create(&tmp).at(&tmp)?;
            file.write_all(&bytes).at(&tmp)?;
            file.sync_all().at(&tmp)?;
        }
        fs::rename(&tmp, &self.path).at(&self.path)?;
        sync_parent(&self.path)?;
        self.dirty = false;
        Ok(())
    }
}

/// Fsyncs the directory holding `path`, so a rename into it is durable.
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(producer_id: i64, first_offset: i64, last_offset: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id,
            first_offset,
            last_offset,
            last_stable_offset: last_offset + 1,
        }
    }

    #[test]
    fn entries_round_trip_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = TxnIndex::open(dir.path()).unwrap();
        index.append(entry(1, 0, 5)).unwrap();
        index.append(entry(2, 3, 9)).unwrap();
        index.flush().unwrap();
        let path = dir.path().join(TXN_INDEX_FILE);
        assert_eq!(fs::metadata(&path).unwrap().len(), 68);
        let mut torn = fs::read(&path).unwrap();
        torn.extend_from_slice(&[0, 0, 7]);
        fs::write(&path, &torn).unwrap();
        let mut read = TxnIndex::open(dir.path()).unwrap();
        assert_eq!(read.entries(), &[entry(1, 0, 5), entry(2, 3, 9)]);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            68,
            "the torn tail is cut"
        );
        // An append after the cut reads back in step.
        read.append(entry(3, 10, 12)).unwrap();
        let again = TxnIndex::open(dir.path()).unwrap();
        assert_eq!(
            again.entries(),
            &[entry(1, 0, 5), entry(2, 3, 9), entry(3, 10, 12)]
        );
    }

    #[test]
    fn collect_returns_what_overlaps_the_fetched_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = TxnIndex::open(dir.path()).unwrap();
        for e in [entry(1, 0, 5), entry(2, 3, 9), entry(3, 12, 20)] {
            index.append(e).unwrap();
        }
        assert_eq!(index.collect(6, 12), vec![entry(2, 3, 9)]);
        assert_eq!(index.collect(0, 4), vec![entry(1, 0, 5), entry(2, 3, 9)]);
        assert_eq!(index.collect(10, 13), vec![entry(3, 12, 20)]);
        assert_eq!(index.collect(21, 30), vec![]);
        index.retain(|e| e.last_offset >= 9).unwrap();
        let read = TxnIndex::open(dir.path()).unwrap();
        assert_eq!(read.entries(), &[entry(2, 3, 9), entry(3, 12, 20)]);
    }
}
