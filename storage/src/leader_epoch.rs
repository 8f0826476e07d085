//! The leader epoch cache (Kafka's `LeaderEpochFileCache`) and its `leader-epoch-checkpoint` file.
//!
//! Why: replicas find where their logs diverge by epoch (KIP-101, KIP-595). A follower asks the
//! leader where the follower's last epoch ends in the leader's log and truncates there, so each
//! log must know at which offset every leader epoch started. The [`Log`](crate::Log) keeps that
//! map and persists it in the partition directory, in Kafka's format:
//!
//! ```text
//! 0                  version
//! 2                  number of entries
//! 3 0                <epoch> <start offset>, epochs and start offsets strictly increasing
//! 5 120
//! ```
//!
//! `LeaderEpochCache` is pure (no I/O) so its rules are tested on their own; the log writes the
//! file, atomically, only when an operation changes the cache (a new epoch, a truncation, a new log
//! start offset): a few times per leader election, never per append.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use crate::error::Result;

/// Kafka's per-partition leader epoch checkpoint file.
pub const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
/// The only version of the format.
const VERSION: &str = "0";

/// One epoch and the first offset written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// Epochs in increasing order, start offsets strictly increasing with them (Kafka keeps the same
/// invariant: a newer epoch starting at or below an older one's start replaces it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub(crate) fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset` if it is newer than the latest epoch
    /// (negative epochs, which old clients' batches carry, are ignored). Entries starting at or
    /// after `start_offset` go first (Kafka's `maybeTruncateNonMonotonicEntries`): a leader
    /// elected twice without writing keeps only its newest epoch. Returns whether it changed.
    pub(crate) fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return false;
        }
        while self
            .entries
            .last()
            .is_some_and(|e| e.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Kafka's `endOffsetFor`: for the latest epoch, `(epoch, log_end_offset)`; otherwise the
    /// largest epoch at or below `epoch` and the start offset of the first epoch above it — or,
    /// for an epoch below every known one, `(epoch, start of the earliest)`: nothing of it is
    /// here. `None` (UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET on the wire) when `epoch` is
    /// negative, above every known epoch (only the latest can be asked for), or nothing is known.
    pub(crate) fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        let latest = self.entries.last()?;
        if epoch < 0 {
            return None;
        }
        if epoch == latest.epoch {
            return Some((epoch, log_end_offset));
        }
        let above = self.entries.partition_point(|e| e.epoch <= epoch);
        let next = self.entries.get(above)?;
        match above.checked_sub(1) {
            Some(floor) => Some((self.entries[floor].epoch, next.start_offset)),
            None => Some((epoch, next.start_offset)),
        }
    }

    /// Kafka's `truncateFromEnd`: drops the entries starting at or after `end_offset` (the log was
    /// cut there). Returns whether it changed.
    pub(crate) fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// Kafka's `truncateFromStart`: the log now starts at `start_offset`, so the entries before
    /// it go, except that the epoch in force there keeps its entry, starting at `start_offset`.
    /// Returns whether it changed.
    pub(crate) fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let covering = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        let Some(last_below) = covering.checked_sub(1) else {
            return false;
        };
        let changed = last_below > 0 || self.entries[last_below].start_offset != start_offset;
        self.entries.drain(..last_below);
        self.entries[0].start_offset = start_offset;
        changed
    }

    /// Forgets everything. Returns whether it changed.
    pub(crate) fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }

    /// The file's text.
    pub(crate) fn to_checkpoint(&self) -> String {
        let mut text = format!("{VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        text
    }

    /// Parses the file's text; `Err` says why it is not a valid checkpoint. Entries must be
    /// non-negative and strictly increasing in both fields, or the cache's answers would be wrong.
    pub(crate) fn parse_checkpoint(text: &str) -> Result<Self, String> {
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(VERSION) {
            return Err("unknown version".into());
        }
        let count: usize = lines
            .next()
            .and_then(|line| line.trim().parse().ok())
            .ok_or("no entry count")?;
        let mut entries: Vec<EpochEntry> = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let line = lines.next().ok_or("fewer entries than counted")?;
            let mut fields = line.split_whitespace();
            let (Some(epoch), Some(start_offset), None) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!("malformed entry {line:?}"));
            };
            let (Ok(epoch), Ok(start_offset)) = (epoch.parse::<i32>(), start_offset.parse::<i64>())
            else {
                return Err(format!("malformed entry {line:?}"));
            };
            let increasing = entries
                .last()
                .is_none_or(|last| epoch > last.epoch && start_offset > last.start_offset);
            if epoch < 0 || start_offset < 0 || !increasing {
                return Err(format!("entry {line:?} out of order or negative"));
            }
            entries.push(EpochEntry {
                epoch,
                start_offset,
            });
        }
        if lines.any(|line| !line.trim().is_empty()) {
            return Err("more entries than counted".into());
        }
        Ok(LeaderEpochCache { entries })
    }
}

/// Why the checkpoint in a directory could not be used.
#[derive(Debug)]
pub(crate) enum ReadError {
    Missing,
    Unusable(String),
}

/// Reads the checkpoint in the partition directory `dir`. Any failure but a missing file is
/// [`ReadError::Unusable`]: the caller rebuilds the cache rather than failing the log's open.
pub(crate) fn read_checkpoint(dir: &Path) -> Result<LeaderEpochCache, ReadError> {
    let path = dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => LeaderEpochCache::parse_checkpoint(&text)
            .map_err(|why| ReadError::Unusable(format!("{why}: {text:?}"))),
        Err(err) if err.kind() == ErrorKind::NotFound => Err(ReadError::Missing),
        Err(err) => Err(ReadError::Unusable(err.to_string())),
    }
}

/// Replaces the checkpoint in `dir` atomically (temp file, fsync, rename, fsync the directory).
pub(crate) fn write_checkpoint(dir: &Path, cache: &LeaderEpochCache) -> Result<()> {
    crate::checkpoint::write_atomically(
        &dir.join(LEADER_EPOCH_CHECKPOINT_FILE),
        cache.to_checkpoint().as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        LeaderEpochCache {
            entries: entries
                .iter()
                .map(|&(epoch, start_offset)| EpochEntry {
                    epoch,
                    start_offset,
                })
                .collect(),
        }
    }

    fn pairs(cache: &LeaderEpochCache) -> Vec<(i32, i64)> {
        cache
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    #[test]
    fn assign_keeps_only_newer_epochs() {
        let mut c = LeaderEpochCache::default();
        assert!(!c.assign(-1, 0));
        assert!(c.assign(2, 0));
        assert!(!c.assign(2, 5), "same epoch");
        assert!(!c.assign(1, 7), "older epoch");
        assert!(c.assign(4, 10));
        assert_eq!(pairs(&c), vec![(2, 0), (4, 10)]);
        assert_eq!(c.latest_epoch(), Some(4));
        // Re-elected without writing: the newer epoch replaces the entry at the same offset.
        assert!(c.assign(5, 10));
        assert_eq!(pairs(&c), vec![(2, 0), (5, 10)]);
        // A newer epoch starting below existing entries replaces them (Kafka's rule).
        assert!(c.assign(6, 3));
        assert_eq!(pairs(&c), vec![(2, 0), (6, 3)]);
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        let c = cache(&[(1, 0), (3, 100), (6, 250)]);
        let leo = 300;
        assert_eq!(c.end_offset_for(6, leo), Some((6, 300)), "latest: the LEO");
        assert_eq!(c.end_offset_for(1, leo), Some((1, 100)));
        assert_eq!(
            c.end_offset_for(2, leo),
            Some((1, 100)),
            "unknown: the floor"
        );
        assert_eq!(c.end_offset_for(3, leo), Some((3, 250)));
        assert_eq!(c.end_offset_for(5, leo), Some((3, 250)));
        assert_eq!(
            c.end_offset_for(0, leo),
            Some((0, 0)),
            "below the earliest: nothing of it here"
        );
        assert_eq!(c.end_offset_for(-1, leo), None, "undefined");
        assert_eq!(c.end_offset_for(7, leo), None, "above the latest");
        assert_eq!(LeaderEpochCache::default().end_offset_for(0, leo), None);
    }

    #[test]
    fn truncate_from_end_drops_entries_at_or_after_the_cut() {
        let mut c = cache(&[(1, 0), (3, 100), (6, 250)]);
        assert!(!c.truncate_from_end(251));
        assert!(c.truncate_from_end(250));
        assert_eq!(pairs(&c), vec![(1, 0), (3, 100)]);
        assert!(c.truncate_from_end(50));
        assert_eq!(pairs(&c), vec![(1, 0)]);
        assert!(c.truncate_from_end(0));
        assert_eq!(pairs(&c), vec![]);
    }

    #[test]
    fn truncate_from_start_keeps_the_epoch_in_force_at_the_new_start() {
        let mut c = cache(&[(1, 0), (3, 100), (6, 250)]);
        assert!(!c.truncate_from_start(0));
        assert!(c.truncate_from_start(120));
        assert_eq!(pairs(&c), vec![(3, 120), (6, 250)]);
        assert!(c.truncate_from_start(250));
        assert_eq!(pairs(&c), vec![(6, 250)]);
        assert!(!c.truncate_from_start(250));
        assert!(c.truncate_from_start(400));
        assert_eq!(pairs(&c), vec![(6, 400)]);

        let mut c = cache(&[(3, 100)]);
        assert!(!c.truncate_from_start(50), "below the first entry");
        assert_eq!(pairs(&c), vec![(3, 100)]);
    }

    #[test]
    fn checkpoint_text_round_trips_in_kafkas_format() {
        let c = cache(&[(0, 0), (3, 120), (12, 9_000_000_000)]);
        let text = c.to_checkpoint();
        assert_eq!(text, "0\n3\n0 0\n3 120\n12 9000000000\n");
        assert_eq!(LeaderEpochCache::parse_checkpoint(&text), Ok(c));
        assert_eq!(LeaderEpochCache::default().to_checkpoint(), "0\n0\n");
        assert_eq!(
            LeaderEpochCache::parse_checkpoint("0\n0\n"),
            Ok(LeaderEpochCache::default())
        );
        // Kafka separates the fields by any whitespace.
        assert_eq!(
            LeaderEpochCache::parse_checkpoint("0\n1\n4  17\n"),
            Ok(cache(&[(4, 17)]))
        );
    }

    #[test]
    fn malformed_checkpoints_are_refused() {
        for text in [
            "",
            "1\n0\n",
            "0\n",
            "0\nx\n",
            "0\n2\n1 0\n",
            "0\n1\n1\n",
            "0\n1\n1 0 3\n",
            "0\n1\na 0\n",
            "0\n1\n-1 0\n",
            "0\n1\n1 -5\n",
            "0\n2\n3 10\n2 20\n",
            "0\n2\n3 10\n4 10\n",
            "0\n1\n3 10\n4 20\n",
        ] {
            assert!(
                LeaderEpochCache::parse_checkpoint(text).is_err(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn the_file_is_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_checkpoint(dir.path()),
            Err(ReadError::Missing)
        ));
        let c = cache(&[(2, 0), (5, 40)]);
        write_checkpoint(dir.path(), &c).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE)).unwrap(),
            "0\n2\n2 0\n5 40\n"
        );
        assert_eq!(read_checkpoint(dir.path()).unwrap(), c);
        assert!(!dir.path().join("leader-epoch-checkpoint.tmp").exists());
        fs::write(dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE), "0\n9\n").unwrap();
        assert!(matches!(
            read_checkpoint(dir.path()),
            Err(ReadError::Unusable(_))
        ));
    }
}
