//! The raft log as raft-rs reads it ([`raft::Storage`]), kept in memory over a [`RaftDisk`].
//!
//! Two things here are not what raft-rs's own `MemStorage` does, and both matter:
//! - A snapshot is built on demand from the *applied* image, with the ConfState as of the applied
//!   index, instead of handing out the last one saved. A follower only accepts a snapshot that is
//!   newer than its commit index and that lists it in the ConfState (raft-plan pitfall 4), and a
//!   snapshot made at the applied index is the newest one that exists.
//! - Compaction keeps the term of the last dropped entry, so `term(first_index - 1)` still
//!   answers after the log moved past the saved snapshot (raft needs it to match appends).
//!
//! Entry and snapshot data are JSON arrays of [`VersionedRecord`]: a snapshot is the records that
//! replay into the image, so the versioned envelope covers both.

use std::cell::RefCell;
use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::error::{Error, Result};
use crate::image::MetadataImage;
use crate::raft_disk::RaftDisk;
use crate::record::{MetadataRecord, VersionedRecord, RECORD_VERSION};

/// Encodes a committed batch (or a snapshot's records) as entry data.
pub(crate) fn encode_records(records: &[MetadataRecord]) -> Result<Vec<u8>> {
    let versioned: Vec<VersionedRecord> =
        records.iter().cloned().map(VersionedRecord::from).collect();
    Ok(serde_json::to_vec(&versioned)?)
}

/// Decodes entry or snapshot data; records newer than this Skald understands are refused.
pub(crate) fn decode_records(data: &[u8]) -> Result<Vec<MetadataRecord>, String> {
    let versioned: Vec<VersionedRecord> =
        serde_json::from_slice(data).map_err(|err| err.to_string())?;
    if let Some(newer) = versioned
        .iter()
        .find(|record| record.version > RECORD_VERSION)
    {
        return Err(format!(
            "record version {} is newer than this Skald's {RECORD_VERSION}",
            newer.version
        ));
    }
    Ok(versioned.into_iter().map(|record| record.record).collect())
}

/// Replays snapshot data into a fresh image.
pub(crate) fn image_from_snapshot(snapshot: &Snapshot) -> Result<MetadataImage> {
    let records = decode_records(&snapshot.data).map_err(|reason| Error::Unreadable {
        index: snapshot.get_metadata().index,
        reason: format!("snapshot: {reason}"),
    })?;
    let mut image = MetadataImage::default();
    image.replay_batch(&records);
    Ok(image)
}

/// The state machine as of the last applied entry.
#[derive(Debug, Clone)]
struct Applied {
    index: u64,
    term: u64,
    conf_state: ConfState,
    image: Arc<MetadataImage>,
}

/// [`raft::Storage`] over a [`RaftDisk`]: every entry since the last compaction in memory, writes
/// passed through to the disk.
#[derive(Debug)]
pub struct RaftStore<D> {
    disk: D,
    hard_state: HardState,
    /// The snapshot saved on disk (its data stays there).
    snapshot_metadata: SnapshotMetadata,
    /// Index and term of the entry just before `entries[0]`.
    log_start: (u64, u64),
    entries: Vec<Entry>,
    applied: Applied,
    /// The last snapshot built for a peer, reused while nothing new was applied.
    built: RefCell<Option<Snapshot>>,
    /// Written since the last sync.
    dirty: bool,
}

impl<D: RaftDisk> RaftStore<D> {
    /// Loads the disk; a disk never written gets `bootstrap` (snapshot, and a HardState that
    /// commits it) first. The applied state is the snapshot's: the committed entries after it are
    /// applied again through the normal path, with raft's `Config::applied` set to its index.
    pub fn open(mut disk: D, bootstrap: Snapshot) -> Result<RaftStore<D>> {
        let mut state = disk.load()?;
        if state.snapshot.get_metadata().index == 0 {
            let metadata = bootstrap.get_metadata();
            tracing::info!(
                index = metadata.index,
                term = metadata.term,
                voters = ?metadata.get_conf_state().voters,
                "bootstrapping the metadata quorum"
            );
            let hard_state = HardState {
                term: metadata.term,
                commit: metadata.index,
                ..HardState::default()
            };
            disk.compact_through(u64::MAX)?;
            disk.save_snapshot(&bootstrap)?;
            disk.set_hard_state(&hard_state)?;
            disk.sync()?;
            state.snapshot = bootstrap;
            state.hard_state = hard_state;
            state.entries.clear();
        }
        let metadata = state.snapshot.get_metadata().clone();
        let (index, term) = (metadata.index, metadata.term);

        // Entries at or below the snapshot are covered by it. If the log disagrees with the
        // snapshot at its index (a crash while a leader's snapshot was being installed), the
        // entries after it belong to another history and must go.
        let entries = std::mem::take(&mut state.entries);
        if let Some(first) = entries.first() {
            if first.index > index + 1 {
                return Err(Error::Unreadable {
                    index: first.index,
                    reason: format!("the raft log starts after a gap from snapshot {index}"),
                });
            }
        }
        let agrees = entries
            .iter()
            .find(|entry| entry.index == index)
            .is_none_or(|entry| entry.term == term);
        let entries: Vec<Entry> = if agrees {
            entries.into_iter().filter(|e| e.index > index).collect()
        } else {
            tracing::warn!(
                snapshot_index = index,
                "dropping raft log entries that disagree with the snapshot"
            );
            Vec::new()
        };

        let mut hard_state = state.hard_state;
        hard_state.term = hard_state.term.max(term);
        let last_index = index + entries.len() as u64;
        hard_state.commit = hard_state.commit.clamp(index, last_index);

        let image = image_from_snapshot(&state.snapshot)?;
        Ok(RaftStore {
            disk,
            hard_state,
            applied: Applied {
                index,
                term,
                conf_state: metadata.get_conf_state().clone(),
                image: Arc::new(image),
            },
            snapshot_metadata: metadata,
            log_start: (index, term),
            entries,
            built: RefCell::new(None),
            dirty: false,
        })
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn first_index(&self) -> u64 {
        self.log_start.0 + 1
    }

    pub fn last_index(&self) -> u64 {
        self.log_start.0 + self.entries.len() as u64
    }

    /// The index of the snapshot saved on disk.
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_metadata.index
    }

    pub fn applied_index(&self) -> u64 {
        self.applied.index
    }

    /// At most `max_bytes` of the saved snapshot's file form from `position`, and its length.
    pub(crate) fn read_snapshot(&self, position: u64, max_bytes: usize) -> Result<(u64, Vec<u8>)> {
        self.disk.read_snapshot(position, max_bytes)
    }

    pub fn image(&self) -> &Arc<MetadataImage> {
        &self.applied.image
    }

    /// The image to apply the next entry to (cloned first if someone else holds it).
    pub(crate) fn image_mut(&mut self) -> &mut MetadataImage {
        Arc::make_mut(&mut self.applied.image)
    }

    pub(crate) fn set_applied(&mut self, index: u64, term: u64) {
        self.applied.index = index;
        self.applied.term = term;
    }

    pub(crate) fn set_conf_state(&mut self, conf_state: ConfState) {
        self.applied.conf_state = conf_state;
    }

    /// The entries in `[low, high)` that are still in memory, at most `max_bytes` of them (but
    /// at least one).
    pub(crate) fn entries_between(&self, low: u64, high: u64, max_bytes: u64) -> &[Entry] {
        let first = self.first_index();
        if low < first || high <= low || high > self.last_index() + 1 {
            return &[];
        }
        let slice = &self.entries[(low - first) as usize..(high - first) as usize];
        let mut bytes = 0u64;
        let mut take = 0;
        for entry in slice {
            bytes += entry.data.len() as u64 + 16;
            if take > 0 && bytes > max_bytes {
                break;
            }
            take += 1;
        }
        &slice[..take]
    }

    /// Stores entries from raft's Ready, replacing any stored suffix they conflict with.
    pub(crate) fn append(&mut self, entries: &[Entry]) -> Result<()> {
        let entries: Vec<Entry> = entries
            .iter()
            .filter(|entry| entry.index > self.log_start.0)
            .cloned()
            .collect();
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index > self.last_index() + 1 {
            return Err(Error::Unreadable {
                index: first.index,
                reason: format!("an append would leave a gap after {}", self.last_index()),
            });
        }
        self.disk.append(&entries)?;
        self.entries
            .truncate((first.index - self.first_index()) as usize);
        self.entries.extend(entries);
        self.dirty = true;
        Ok(())
    }

    pub(crate) fn set_hard_state(&mut self, hard_state: &HardState) -> Result<()> {
        self.disk.set_hard_state(hard_state)?;
        self.hard_state = hard_state.clone();
        self.dirty = true;
        Ok(())
    }

    pub(crate) fn set_commit(&mut self, commit: u64) -> Result<()> {
        let mut hard_state = self.hard_state.clone();
        hard_state.commit = commit;
        self.set_hard_state(&hard_state)
    }

    /// Installs a leader's snapshot (already replayed into `image`): it replaces the whole log.
    pub(crate) fn install_snapshot(
        &mut self,
        snapshot: &Snapshot,
        image: MetadataImage,
    ) -> Result<()> {
        let metadata = snapshot.get_metadata();
        self.disk.save_snapshot(snapshot)?;
        self.disk.compact_through(u64::MAX)?;
        self.hard_state.term = self.hard_state.term.max(metadata.term);
        self.hard_state.commit = self.hard_state.commit.max(metadata.index);
        self.disk.set_hard_state(&self.hard_state)?;
        self.disk.sync()?;
        self.snapshot_metadata = metadata.clone();
        self.log_start = (metadata.index, metadata.term);
        self.entries.clear();
        self.applied = Applied {
            index: metadata.index,
            term: metadata.term,
            conf_state: metadata.get_conf_state().clone(),
            image: Arc::new(image),
        };
        Ok(())
    }

    /// Saves a snapshot of the applied image. The log is compacted separately.
    pub(crate) fn save_snapshot(&mut self) -> Result<()> {
        let snapshot = self.build_snapshot()?;
        self.disk.save_snapshot(&snapshot)?;
        self.disk.sync()?;
        self.dirty = false;
        self.snapshot_metadata = snapshot.get_metadata().clone();
        Ok(())
    }

    /// Drops the entries through `index` (at most the saved snapshot's index).
    pub(crate) fn compact_through(&mut self, index: u64) -> Result<()> {
        let index = index.min(self.snapshot_metadata.index);
        if index <= self.log_start.0 {
            return Ok(());
        }
        let term = self.term(index).map_err(|err| Error::Unreadable {
            index,
            reason: format!("cannot compact: {err}"),
        })?;
        self.disk.compact_through(index)?;
        self.disk.sync()?;
        self.dirty = false;
        self.entries.drain(..(index - self.log_start.0) as usize);
        self.log_start = (index, term);
        Ok(())
    }

    pub(crate) fn sync(&mut self) -> Result<()> {
        if self.dirty {
            self.disk.sync()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// A snapshot of the applied image, reusing the last one built if nothing was applied since.
    fn build_snapshot(&self) -> Result<Snapshot> {
        if let Some(snapshot) = &*self.built.borrow() {
            if snapshot.get_metadata().index == self.applied.index {
                return Ok(snapshot.clone());
            }
        }
        let mut snapshot = Snapshot {
            data: encode_records(&self.applied.image.to_records())?.into(),
            ..Snapshot::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = self.applied.index;
        metadata.term = self.applied.term;
        metadata.set_conf_state(self.applied.conf_state.clone());
        *self.built.borrow_mut() = Some(snapshot.clone());
        Ok(snapshot)
    }
}

impl<D: RaftDisk> Storage for RaftStore<D> {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.applied.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let first = self.first_index();
        let mut entries = self.entries[(low - first) as usize..(high - first) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.log_start.0 {
            return Ok(self.log_start.1);
        }
        if index < self.log_start.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > self.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(index - self.first_index()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(RaftStore::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(RaftStore::last_index(self))
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.applied.index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        self.build_snapshot().map_err(|err| {
            tracing::error!(%err, "cannot build a metadata snapshot for a peer");
            raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft_disk::MemDisk;
    use crate::record::TopicId;

    fn topic(name: &str) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.into(),
            topic_id: TopicId(name.len() as u128),
        }
    }

    fn bootstrap() -> Snapshot {
        let mut snapshot = Snapshot {
            data: encode_records(&[topic("boot")]).unwrap().into(),
            ..Snapshot::default()
        };
        snapshot.mut_metadata().index = 1;
        snapshot.mut_metadata().term = 1;
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        snapshot
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Entry::default()
        }
    }

    #[test]
    fn a_fresh_store_is_its_bootstrap_snapshot() {
        let disk = MemDisk::new();
        let store = RaftStore::open(disk.clone(), bootstrap()).unwrap();
        assert_eq!((store.first_index(), store.last_index()), (2, 1));
        assert_eq!(store.term(1).unwrap(), 1);
        let state = store.initial_state().unwrap();
        assert_eq!((state.hard_state.term, state.hard_state.commit), (1, 1));
        assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
        assert!(store.image().topic("boot").is_some());
        assert_eq!(disk.durable().snapshot, bootstrap());
    }

    #[test]
    fn terms_entries_and_compaction_answer_as_raft_expects() {
        let mut store = RaftStore::open(MemDisk::new(), bootstrap()).unwrap();
        store
            .append(&[entry(2, 1), entry(3, 2), entry(4, 2)])
            .unwrap();
        store.append(&[entry(4, 3), entry(5, 3)]).unwrap();
        assert_eq!(store.term(4).unwrap(), 3);
        assert_eq!(
            store.term(6),
            Err(raft::Error::Store(StorageError::Unavailable))
        );
        let all = store
            .entries(2, 6, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(all.len(), 4);
        let one = store
            .entries(2, 6, 0, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(one.len(), 1, "limit_size keeps at least one entry");

        store.set_applied(4, 3);
        store.save_snapshot().unwrap();
        store.compact_through(3).unwrap();
        assert_eq!(store.first_index(), 4);
        assert_eq!(
            store.term(3).unwrap(),
            2,
            "the term before first_index survives"
        );
        assert_eq!(
            store.entries(3, 5, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        );
        // A snapshot is built at the applied index, never below what is asked.
        assert_eq!(store.snapshot(4, 2).unwrap().get_metadata().index, 4);
        assert_eq!(
            store.snapshot(5, 2),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        );
    }

    #[test]
    fn reopening_drops_entries_the_snapshot_covers_or_contradicts() {
        let mut disk = MemDisk::new();
        let mut store = RaftStore::open(disk.clone(), bootstrap()).unwrap();
        store
            .append(&[entry(2, 1), entry(3, 1), entry(4, 1)])
            .unwrap();
        store.set_applied(3, 1);
        store.save_snapshot().unwrap();
        drop(store);
        disk.crash();
        let store = RaftStore::open(disk.clone(), bootstrap()).unwrap();
        assert_eq!((store.first_index(), store.last_index()), (4, 4));
        assert_eq!(store.term(3).unwrap(), 1);

        // A snapshot at 3 of term 2 contradicts the log's entry 3 of term 1.
        drop(store);
        let mut snapshot = bootstrap();
        snapshot.mut_metadata().index = 3;
        snapshot.mut_metadata().term = 2;
        disk.save_snapshot(&snapshot).unwrap();
        disk.sync().unwrap();
        let store = RaftStore::open(disk, bootstrap()).unwrap();
        assert_eq!((store.first_index(), store.last_index()), (4, 3));
        assert_eq!(store.hard_state().commit, 3);
    }
}
