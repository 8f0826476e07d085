//! Where a controller's raft state survives restarts: the log entries, the HardState (term, vote,
//! commit) and the latest snapshot.
//!
//! Raft is only safe if what it was told is durable really is: an acknowledged vote or append that
//! a crash forgets can elect two leaders or lose a committed batch. So the contract is narrow:
//! writes take effect in the order they were made, and nothing counts as durable until
//! [`RaftDisk::sync`] returns `Ok`. After any failed write or sync the disk refuses every later
//! write until the process restarts and reloads it (the same policy as [`crate::MetadataLog`]:
//! after a failed fsync the page cache can no longer be trusted).
//!
//! [`FileDisk`] keeps three files under `<metadata.log.dir>/__cluster_metadata-0/`:
//! - `raft.log`: one frame per entry (`u32 len | u32 crc32c | protobuf Entry`, see
//!   [`crate::raft_wire`]). A torn or corrupt last frame (a crash mid-write) is cut off on load;
//!   an invalid frame with valid data after it is corruption, and loading refuses rather than lose
//!   committed entries.
//! - `hardstate`: one frame, and `snapshot`: a header frame and bounded chunk frames
//!   ([`crate::snapshot_chunks`]), each replaced atomically (tmp file, fsync, rename, fsync of
//!   the directory), so they are either the old or the new version, never torn. The snapshot is
//!   read back a piece at a time, and served by position to brokers that fetch it
//!   ([`RaftDisk::read_snapshot`]).
//!
//! [`MemDisk`] is the same contract in memory for the cluster simulation: unsynced writes vanish on
//! [`MemDisk::crash`], and failures can be injected.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState, Snapshot};

use crate::error::{Error, Result};
use crate::log::METADATA_DIR_NAME;
use crate::protobuf_guard::{self, Schema};
use crate::raft_wire::{frame, unframe, Unframed, FRAME_HEADER_BYTES};
use crate::snapshot_chunks::{ChunkedFrames, ReadError, SnapshotReader};

/// Everything a disk holds, as loaded at startup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiskState {
    pub hard_state: HardState,
    /// The latest snapshot (empty, index 0, on a disk that was never bootstrapped). Its metadata
    /// carries the ConfState as of its index.
    pub snapshot: Snapshot,
    /// Consecutive entries in index order. They may start at or below the snapshot's index (the
    /// log is compacted lazily) or, after a crash while a snapshot was installed, belong to an
    /// older history: the store sorts that out.
    pub entries: Vec<Entry>,
}

/// Durable raft state. Writes apply in order; none is durable until `sync` returns `Ok`.
pub trait RaftDisk {
    /// Reads everything back (at startup; once).
    fn load(&mut self) -> Result<DiskState>;
    /// Appends entries, first discarding every stored entry whose index is ≥ the first new one.
    fn append(&mut self, entries: &[Entry]) -> Result<()>;
    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<()>;
    /// Replaces the stored snapshot. Entries are left alone: see `compact_through`.
    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<()>;
    /// Drops every entry with index ≤ `index` (`u64::MAX`: all of them).
    fn compact_through(&mut self, index: u64) -> Result<()>;
    /// Makes every earlier write durable.
    fn sync(&mut self) -> Result<()>;
    /// At most `max_bytes` of the durable snapshot in its file form, from `position`, and the
    /// form's total length (what a broker fetches by position).
    fn read_snapshot(&self, position: u64, max_bytes: usize) -> Result<(u64, Vec<u8>)>;
}

const LOG_FILE_NAME: &str = "raft.log";
const HARD_STATE_FILE_NAME: &str = "hardstate";
const SNAPSHOT_FILE_NAME: &str = "snapshot";

/// Raft state in files under `<metadata.log.dir>/__cluster_metadata-0/`.
#[derive(Debug)]
pub struct FileDisk {
    dir: PathBuf,
    log: File,
    /// Index and byte position of every entry frame in `raft.log`.
    positions: VecDeque<(u64, u64)>,
    /// Bytes of whole frames in `raft.log`.
    log_bytes: u64,
    /// A HardState written by the next sync, after the log's fsync (entries before votes).
    hard_state: Option<HardState>,
    log_dirty: bool,
    /// Why the disk stopped accepting writes, once it has.
    failed: Option<String>,
    /// The `snapshot` file as last written or loaded, open to serve reads by position, and its
    /// length.
    snapshot_file: Option<(File, u64)>,
}

impl FileDisk {
    /// Opens (creating if needed) the raft files under `metadata_dir`. Nothing is read until
    /// [`RaftDisk::load`].
    pub fn open(metadata_dir: &Path) -> Result<FileDisk> {
        let dir = metadata_dir.join(METADATA_DIR_NAME);
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let path = dir.join(LOG_FILE_NAME);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error(&path))?;
        Ok(FileDisk {
            dir,
            log,
            positions: VecDeque::new(),
            log_bytes: 0,
            hard_state: None,
            log_dirty: false,
            failed: None,
            snapshot_file: None,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE_NAME)
    }

    fn check_usable(&self) -> Result<()> {
        match &self.failed {
            Some(reason) => Err(Error::Failed {
                path: self.dir.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Runs a write; a failure fails the disk for good (until restart).
    fn write<T>(&mut self, what: &str, op: impl FnOnce(&mut Self) -> io::Result<T>) -> Result<T> {
        self.check_usable()?;
        op(self).map_err(|source| {
            let reason = format!("{what} failed ({source}), so raft state on disk is uncertain");
            tracing::error!(dir = %self.dir.display(), %reason, "the raft disk refuses further writes until the server restarts");
            self.failed = Some(reason.clone());
            Error::Failed {
                path: self.dir.clone(),
                reason,
            }
        })
    }

    /// Replaces `name` atomically with one frame of `payload`.
    fn replace_file(&self, name: &str, payload: &[u8]) -> io::Result<()> {
        let framed = frame(payload).map_err(io::Error::other)?;
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut file = File::create(&tmp)?;
        file.write_all(&framed)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, self.dir.join(name))?;
        File::open(&self.dir)?.sync_all()
    }

    /// Replaces the `snapshot` file atomically with `frames`, written one at a time.
    fn replace_snapshot(&mut self, frames: ChunkedFrames) -> io::Result<()> {
        let tmp = self.dir.join(format!("{SNAPSHOT_FILE_NAME}.tmp"));
        let mut file = File::create(&tmp)?;
        for frame in frames {
            file.write_all(&frame)?;
        }
        file.sync_all()?;
        drop(file);
        let path = self.dir.join(SNAPSHOT_FILE_NAME);
        fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        self.snapshot_file = None;
        let file = File::open(&path)?;
        let len = file.metadata()?.len();
        self.snapshot_file = Some((file, len));
        Ok(())
    }

    /// Reads the `snapshot` file a piece at a time; `None` if it does not exist.
    fn read_snapshot_file(&mut self) -> Result<Option<Snapshot>> {
        let path = self.dir.join(SNAPSHOT_FILE_NAME);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { path, source }),
        };
        let snapshot = match SnapshotReader::read_from(&file) {
            Ok(snapshot) => snapshot,
            Err(ReadError::Io(source)) => return Err(Error::Io { path, source }),
            Err(ReadError::Invalid(position, reason)) => {
                return Err(corrupt(&path, position, &reason))
            }
        };
        let len = file.metadata().map_err(io_error(&path))?.len();
        self.snapshot_file = Some((file, len));
        Ok(Some(snapshot))
    }

    /// Reads a file written by `replace_file`; `None` if it does not exist.
    fn read_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(name);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { path, source }),
        };
        match unframe(&bytes) {
            Unframed::Frame(payload, used) if used == bytes.len() => Ok(Some(payload.to_vec())),
            Unframed::Frame(..) => Err(corrupt(&path, 0, "trailing bytes after the frame")),
            Unframed::Incomplete => Err(corrupt(&path, 0, "the file is shorter than its frame")),
            Unframed::Invalid(reason) => Err(corrupt(&path, 0, &reason)),
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { path, source }
}

fn corrupt(path: &Path, position: u64, reason: &str) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        position,
        reason: reason.to_string(),
    }
}

impl RaftDisk for FileDisk {
    fn load(&mut self) -> Result<DiskState> {
        let mut state = DiskState::default();
        if let Some(payload) = self.read_file(HARD_STATE_FILE_NAME)? {
            state.hard_state = protobuf_guard::parse::<HardState>(&payload, Schema::HardState)
                .map_err(|err| corrupt(&self.dir.join(HARD_STATE_FILE_NAME), 0, &err))?;
        }
        if let Some(snapshot) = self.read_snapshot_file()? {
            state.snapshot = snapshot;
        }

        let path = self.log_path();
        let mut bytes = Vec::new();
        self.log.seek(SeekFrom::Start(0)).map_err(io_error(&path))?;
        self.log.read_to_end(&mut bytes).map_err(io_error(&path))?;
        self.positions.clear();
        let mut position = 0usize;
        while position < bytes.len() {
            let rest = &bytes[position..];
            let invalid = match unframe(rest) {
                Unframed::Frame(payload, used) if !payload.is_empty() => Ok((payload, used)),
                Unframed::Frame(..) => Err("an empty frame".to_string()),
                Unframed::Incomplete => break,
                Unframed::Invalid(reason) => Err(reason),
            };
            let (payload, used) = match invalid {
                Ok(frame) => frame,
                // Torn: the frame runs to the end of the file, or only zeroes follow (a
                // filesystem may extend a file with zeroes in a crash).
                Err(_) if is_last_frame(rest) || rest.iter().all(|byte| *byte == 0) => break,
                Err(reason) => {
                    return Err(corrupt(
                        &path,
                        position as u64,
                        &format!("{reason}, and it is not the last frame"),
                    ))
                }
            };
            let entry: Entry = protobuf_guard::parse(payload, Schema::Entry).map_err(|err| {
                corrupt(&path, position as u64, &format!("unreadable entry: {err}"))
            })?;
            if let Some(last) = state.entries.last() {
                if entry.index != last.index + 1 {
                    return Err(corrupt(
                        &path,
                        position as u64,
                        &format!("entry {} follows entry {}", entry.index, last.index),
                    ));
                }
            }
            self.positions.push_back((entry.index, position as u64));
            state.entries.push(entry);
            position += used;
        }
        if position < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                valid_bytes = position,
                file_bytes = bytes.len(),
                "truncating an invalid tail of the raft log (a write torn by a crash)"
            );
            self.log.set_len(position as u64).map_err(io_error(&path))?;
            self.log.sync_all().map_err(io_error(&path))?;
        }
        self.log_bytes = position as u64;
        Ok(state)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut buf = Vec::new();
        for entry in entries {
            let payload = entry
                .write_to_bytes()
                .map_err(|err| Error::Frame(format!("cannot encode raft entry: {err}")))?;
            buf.extend(frame(&payload)?);
        }
        let first_index = first.index;
        self.write("appending to raft.log", |disk| {
            let cut = disk
                .positions
                .iter()
                .position(|(index, _)| *index >= first_index);
            if let Some(cut) = cut {
                disk.log_bytes = disk.positions[cut].1;
                disk.positions.truncate(cut);
                disk.log.set_len(disk.log_bytes)?;
            }
            disk.log.seek(SeekFrom::Start(disk.log_bytes))?;
            disk.log.write_all(&buf)?;
            let mut position = disk.log_bytes;
            for entry in entries {
                disk.positions.push_back((entry.index, position));
                position += (FRAME_HEADER_BYTES + entry.compute_size() as usize) as u64;
            }
            disk.log_bytes = position;
            disk.log_dirty = true;
            Ok(())
        })
    }

    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<()> {
        self.check_usable()?;
        self.hard_state = Some(hard_state.clone());
        Ok(())
    }

    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<()> {
        let frames = ChunkedFrames::of_snapshot(snapshot)?;
        // Earlier writes first, so what is durable stays a prefix of what was written.
        self.sync()?;
        self.write("writing the snapshot", |disk| disk.replace_snapshot(frames))
    }

    fn compact_through(&mut self, index: u64) -> Result<()> {
        let keep_from = self
            .positions
            .iter()
            .position(|(entry_index, _)| *entry_index > index)
            .unwrap_or(self.positions.len());
        if keep_from == 0 {
            return Ok(());
        }
        self.sync()?;
        self.write("compacting raft.log", |disk| {
            let start = disk
                .positions
                .get(keep_from)
                .map_or(disk.log_bytes, |(_, position)| *position);
            let mut kept = Vec::new();
            disk.log.seek(SeekFrom::Start(start))?;
            (&mut disk.log)
                .take(disk.log_bytes - start)
                .read_to_end(&mut kept)?;
            let tmp = disk.dir.join(format!("{LOG_FILE_NAME}.tmp"));
            let mut file = File::create(&tmp)?;
            file.write_all(&kept)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, disk.log_path())?;
            File::open(&disk.dir)?.sync_all()?;
            disk.log = OpenOptions::new()
                .read(true)
                .write(true)
                .open(disk.log_path())?;
            disk.positions.drain(..keep_from);
            for (_, position) in disk.positions.iter_mut() {
                *position -= start;
            }
            disk.log_bytes -= start;
            Ok(())
        })
    }

    fn sync(&mut self) -> Result<()> {
        if self.log_dirty {
            self.write("fsync of raft.log", |disk| disk.log.sync_data())?;
            self.log_dirty = false;
        }
        if let Some(hard_state) = self.hard_state.take() {
            let payload = hard_state
                .write_to_bytes()
                .map_err(|err| Error::Frame(format!("cannot encode hard state: {err}")))?;
            self.write("writing the hard state", |disk| {
                disk.replace_file(HARD_STATE_FILE_NAME, &payload)
            })?;
        }
        self.check_usable()
    }

    fn read_snapshot(&self, position: u64, max_bytes: usize) -> Result<(u64, Vec<u8>)> {
        let path = self.dir.join(SNAPSHOT_FILE_NAME);
        let Some((file, len)) = &self.snapshot_file else {
            return Ok((0, Vec::new()));
        };
        let end = position.saturating_add(max_bytes as u64).min(*len);
        let mut bytes = vec![0u8; end.saturating_sub(position) as usize];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut bytes, position)
            .map_err(io_error(&path))?;
        Ok((*len, bytes))
    }
}

/// Whether `rest` (starting at an invalid frame) is nothing but that frame as its header
/// announces it: a torn last write rather than corruption with data after it.
fn is_last_frame(rest: &[u8]) -> bool {
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    FRAME_HEADER_BYTES.saturating_add(len) >= rest.len()
}

/// One write to a [`MemDisk`], durable once synced.
#[derive(Debug, Clone)]
enum MemWrite {
    Append(Vec<Entry>),
    HardState(HardState),
    Snapshot(Snapshot),
    Compact(u64),
}

/// Raft state in memory, for tests: [`MemDisk::crash`] forgets every unsynced write, and
/// failures can be injected. Clones are handles on the same disk, so a test keeps one to crash
/// and reload the disk after the node that used it is gone.
#[derive(Debug, Clone, Default)]
pub struct MemDisk {
    inner: Arc<Mutex<MemDiskState>>,
}

#[derive(Debug, Default)]
struct MemDiskState {
    durable: DiskState,
    unsynced: Vec<MemWrite>,
    /// Fail the next sync (and so every write after it, until a crash).
    fail_next_sync: bool,
    failed: bool,
    syncs: u64,
}

impl MemDiskState {
    fn check_usable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::Failed {
                path: PathBuf::from("<memory>"),
                reason: "an injected sync failure".into(),
            });
        }
        Ok(())
    }
}

impl MemDisk {
    pub fn new() -> MemDisk {
        MemDisk::default()
    }

    fn state(&self) -> MutexGuard<'_, MemDiskState> {
        // A test that panicked while holding the lock has failed already.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What a restart finds: unsynced writes are lost, and the disk works again.
    pub fn crash(&self) {
        let mut state = self.state();
        state.unsynced.clear();
        state.failed = false;
        state.fail_next_sync = false;
    }

    /// Makes the next sync fail, as a dying disk does.
    pub fn fail_next_sync(&self) {
        self.state().fail_next_sync = true;
    }

    /// How many syncs succeeded.
    pub fn syncs(&self) -> u64 {
        self.state().syncs
    }

    /// What survives a crash now.
    pub fn durable(&self) -> DiskState {
        self.state().durable.clone()
    }

    fn push(&mut self, write: MemWrite) -> Result<()> {
        let mut state = self.state();
        state.check_usable()?;
        state.unsynced.push(write);
        Ok(())
    }
}

impl RaftDisk for MemDisk {
    fn load(&mut self) -> Result<DiskState> {
        let mut state = self.state();
        state.unsynced.clear();
        Ok(state.durable.clone())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.push(MemWrite::Append(entries.to_vec()))
    }

    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<()> {
        self.push(MemWrite::HardState(hard_state.clone()))
    }

    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<()> {
        self.push(MemWrite::Snapshot(snapshot.clone()))
    }

    fn compact_through(&mut self, index: u64) -> Result<()> {
        self.push(MemWrite::Compact(index))
    }

    fn sync(&mut self) -> Result<()> {
        let mut guard = self.state();
        let state = &mut *guard;
        state.check_usable()?;
        if state.fail_next_sync {
            state.fail_next_sync = false;
            state.failed = true;
            return state.check_usable();
        }
        let durable = &mut state.durable;
        for write in state.unsynced.drain(..) {
            match write {
                MemWrite::Append(entries) => {
                    if let Some(first) = entries.first() {
                        durable.entries.retain(|entry| entry.index < first.index);
                        durable.entries.extend(entries);
                    }
                }
                MemWrite::HardState(hard_state) => durable.hard_state = hard_state,
                MemWrite::Snapshot(snapshot) => durable.snapshot = snapshot,
                MemWrite::Compact(index) => durable.entries.retain(|entry| entry.index > index),
            }
        }
        state.syncs += 1;
        Ok(())
    }

    fn read_snapshot(&self, position: u64, max_bytes: usize) -> Result<(u64, Vec<u8>)> {
        let snapshot = self.state().durable.snapshot.clone();
        let bytes = ChunkedFrames::of_snapshot(&snapshot)?.concat();
        let start = (position.min(bytes.len() as u64)) as usize;
        let end = start.saturating_add(max_bytes).min(bytes.len());
        Ok((bytes.len() as u64, bytes[start..end].to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: format!("batch {index}").into_bytes().into(),
            ..Entry::default()
        }
    }

    fn indexes(state: &DiskState) -> Vec<(u64, u64)> {
        state
            .entries
            .iter()
            .map(|entry| (entry.index, entry.term))
            .collect()
    }

    fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..HardState::default()
        }
    }

    fn snapshot(index: u64, term: u64) -> Snapshot {
        let mut snapshot = Snapshot {
            data: b"image".to_vec().into(),
            ..Snapshot::default()
        };
        snapshot.mut_metadata().index = index;
        snapshot.mut_metadata().term = term;
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        snapshot
    }

    /// Writes the same sequence to a disk; `check_reloaded` then checks what a reload finds.
    fn exercise(disk: &mut dyn RaftDisk) {
        assert_eq!(disk.load().unwrap(), DiskState::default());
        disk.append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
            .unwrap();
        disk.set_hard_state(&hard_state(1, 1, 2)).unwrap();
        disk.sync().unwrap();
        // A new leader overwrites the uncommitted suffix from index 3.
        disk.append(&[entry(3, 2), entry(4, 2)]).unwrap();
        disk.set_hard_state(&hard_state(2, 2, 4)).unwrap();
        disk.save_snapshot(&snapshot(3, 2)).unwrap();
        disk.compact_through(2).unwrap();
        disk.append(&[entry(5, 2)]).unwrap();
        disk.sync().unwrap();
    }

    fn check_reloaded(state: DiskState) {
        assert_eq!(indexes(&state), vec![(3, 2), (4, 2), (5, 2)]);
        assert_eq!(state.hard_state, hard_state(2, 2, 4));
        assert_eq!(state.snapshot, snapshot(3, 2));
        assert_eq!(state.entries[2], entry(5, 2));
    }

    #[test]
    fn file_and_memory_disks_store_the_same_things() {
        let mut mem = MemDisk::new();
        exercise(&mut mem);
        mem.crash();
        check_reloaded(mem.load().unwrap());

        let dir = tempfile::tempdir().unwrap();
        let mut disk = FileDisk::open(dir.path()).unwrap();
        exercise(&mut disk);
        drop(disk);
        check_reloaded(FileDisk::open(dir.path()).unwrap().load().unwrap());
    }

    #[test]
    fn mem_disk_forgets_unsynced_writes_on_crash() {
        let mut disk = MemDisk::new();
        let handle = disk.clone();
        disk.append(&[entry(1, 1), entry(2, 1)]).unwrap();
        disk.sync().unwrap();
        disk.append(&[entry(3, 1)]).unwrap();
        disk.set_hard_state(&hard_state(1, 1, 3)).unwrap();
        drop(disk);
        handle.crash();
        let state = handle.clone().load().unwrap();
        assert_eq!(indexes(&state), vec![(1, 1), (2, 1)]);
        assert_eq!(state.hard_state, HardState::default());
    }

    #[test]
    fn a_failed_sync_fails_every_later_write_until_a_restart() {
        let mut disk = MemDisk::new();
        disk.append(&[entry(1, 1)]).unwrap();
        disk.fail_next_sync();
        assert!(matches!(disk.sync(), Err(Error::Failed { .. })));
        assert!(matches!(
            disk.append(&[entry(2, 1)]),
            Err(Error::Failed { .. })
        ));
        assert!(matches!(disk.sync(), Err(Error::Failed { .. })));
        disk.crash();
        assert_eq!(disk.load().unwrap(), DiskState::default());
        disk.append(&[entry(1, 1)]).unwrap();
        disk.sync().unwrap();
        assert_eq!(indexes(&disk.durable()), vec![(1, 1)]);
    }

    fn write_two_entries(path: &Path) -> (PathBuf, u64) {
        let mut disk = FileDisk::open(path).unwrap();
        disk.load().unwrap();
        disk.append(&[entry(1, 1)]).unwrap();
        disk.sync().unwrap();
        let first_len = disk.log_bytes;
        disk.append(&[entry(2, 1)]).unwrap();
        disk.sync().unwrap();
        (disk.log_path(), first_len)
    }

    #[test]
    fn a_torn_raft_log_tail_is_truncated_at_every_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (log_path, first_len) = write_two_entries(dir.path());
        let full = fs::read(&log_path).unwrap();
        for cut in first_len as usize..full.len() {
            fs::write(&log_path, &full[..cut]).unwrap();
            let mut disk = FileDisk::open(dir.path()).unwrap();
            let state = disk.load().unwrap();
            assert_eq!(indexes(&state), vec![(1, 1)], "cut at {cut}");
            assert_eq!(fs::metadata(&log_path).unwrap().len(), first_len);
            // Appending after recovery continues from the valid prefix.
            disk.append(&[entry(2, 3)]).unwrap();
            disk.sync().unwrap();
            let state = FileDisk::open(dir.path()).unwrap().load().unwrap();
            assert_eq!(indexes(&state), vec![(1, 1), (2, 3)], "cut at {cut}");
        }
        // A corrupt last frame and a zero-filled tail are torn writes too.
        let mut corrupt_tail = full.clone();
        corrupt_tail[first_len as usize + 10] ^= 0x01;
        fs::write(&log_path, &corrupt_tail).unwrap();
        assert_eq!(
            indexes(&FileDisk::open(dir.path()).unwrap().load().unwrap()),
            vec![(1, 1)]
        );
        let mut zeroes = full[..first_len as usize].to_vec();
        zeroes.extend([0u8; 4096]);
        fs::write(&log_path, &zeroes).unwrap();
        assert_eq!(
            indexes(&FileDisk::open(dir.path()).unwrap().load().unwrap()),
            vec![(1, 1)]
        );
        assert_eq!(fs::metadata(&log_path).unwrap().len(), first_len);
    }

    #[test]
    fn corruption_before_the_tail_refuses_to_load_and_truncates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (log_path, _) = write_two_entries(dir.path());
        let mut corrupt = fs::read(&log_path).unwrap();
        corrupt[10] ^= 0x01;
        fs::write(&log_path, &corrupt).unwrap();
        let err = FileDisk::open(dir.path()).unwrap().load().unwrap_err();
        assert!(matches!(err, Error::Corrupt { position: 0, .. }), "{err}");
        assert_eq!(fs::read(&log_path).unwrap(), corrupt);

        // A torn hard state cannot happen (it is renamed into place), so it is corruption.
        let mut disk = FileDisk::open(dir.path()).unwrap();
        fs::write(&log_path, b"").unwrap();
        disk.load().unwrap();
        disk.set_hard_state(&hard_state(1, 1, 1)).unwrap();
        disk.sync().unwrap();
        let hard_state_path = dir
            .path()
            .join(METADATA_DIR_NAME)
            .join(HARD_STATE_FILE_NAME);
        let mut bytes = fs::read(&hard_state_path).unwrap();
        bytes.pop();
        fs::write(&hard_state_path, &bytes).unwrap();
        let err = FileDisk::open(dir.path()).unwrap().load().unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }

    #[test]
    fn compacting_everything_leaves_an_empty_log_that_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = FileDisk::open(dir.path()).unwrap();
        disk.load().unwrap();
        disk.append(&[entry(1, 1), entry(2, 1)]).unwrap();
        disk.save_snapshot(&snapshot(9, 3)).unwrap();
        disk.compact_through(u64::MAX).unwrap();
        disk.append(&[entry(10, 3)]).unwrap();
        disk.sync().unwrap();
        let state = FileDisk::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(indexes(&state), vec![(10, 3)]);
        assert_eq!(state.snapshot, snapshot(9, 3));
    }

    #[test]
    fn a_snapshot_larger_than_a_frame_is_saved_in_chunks_and_served_by_position() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = FileDisk::open(dir.path()).unwrap();
        disk.load().unwrap();
        let mut big = snapshot(12, 4);
        big.data = (0..crate::log::BATCH_BYTES_MAX + 3 * 1024 * 1024)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        disk.save_snapshot(&big).unwrap();
        disk.sync().unwrap();
        let path = dir.path().join(METADATA_DIR_NAME).join(SNAPSHOT_FILE_NAME);
        let file = fs::read(&path).unwrap();
        let (total, first) = disk.read_snapshot(0, 1000).unwrap();
        assert_eq!((total, &first[..]), (file.len() as u64, &file[..1000]));
        let (_, tail) = disk.read_snapshot(total - 10, 1000).unwrap();
        assert_eq!(tail, &file[file.len() - 10..]);
        drop(disk);
        let mut reopened = FileDisk::open(dir.path()).unwrap();
        assert_eq!(reopened.load().unwrap().snapshot, big);
        assert_eq!(reopened.read_snapshot(0, usize::MAX).unwrap().1, file);

        // A flipped byte inside a chunk, or a file cut at a frame boundary or inside a frame,
        // refuses to load rather than start from a wrong image.
        let mut flipped = file.clone();
        flipped[file.len() / 2] ^= 0x40;
        let chunk_frame = crate::snapshot_chunks::SNAPSHOT_CHUNK_BYTES_MAX + FRAME_HEADER_BYTES + 1;
        let header_frame = file.len() - (big.data.len() + 17 * (FRAME_HEADER_BYTES + 1));
        for (what, bytes) in [
            ("flipped", flipped),
            ("cut inside a frame", file[..file.len() - 1].to_vec()),
            (
                "cut at a frame boundary",
                file[..header_frame + chunk_frame].to_vec(),
            ),
        ] {
            fs::write(&path, &bytes).unwrap();
            let err = FileDisk::open(dir.path()).unwrap().load().unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{what}: {err}");
        }
    }
}
