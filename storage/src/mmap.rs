//! Every memory map in the crate, and all of its `unsafe`.
//!
//! Two kinds of file are mapped:
//!
//! - A segment's `.log`, through [`LogFile`]: appended with positioned writes, read through a
//!   read-only map. The map is created with a *reserved* length (the segment size limit, page
//!   rounded) which may exceed the file, so the active segment never needs remapping as it grows;
//!   Linux allows mapping past EOF as long as pages wholly past EOF are never touched. Remapping on
//!   demand would also work but would make every append that crosses a page pay for an `mmap` call
//!   and leave many small maps alive behind outstanding reads; one reservation per active segment is
//!   cheaper. Sealed (rolled) segments are remapped to their exact size to give the address space
//!   back.
//! - Index files, through [`IndexFile`]: read-write maps, preallocated, trimmed on roll and close.
//!
//! File descriptors are bounded (Kafka's model): a map stays valid after its descriptor is closed,
//! so only the active segment's `.log` keeps one, for its appends. Index files are closed as soon
//! as they are mapped and reopened by path for the moments that need a descriptor (resizing, the
//! `pwrite` reservation, making a new length durable); a sealed `.log` is read through its map
//! only. A partition with one segment therefore holds one descriptor however many it has mapped.
//!
//! Soundness rests on invariants this module enforces itself rather than trusting callers:
//! - [`LogFile`] is the only writer of its file, and it only writes at or past `size`. Bytes below
//!   `size` therefore never change while any map of them exists, so a `&[u8]` over them (or a
//!   [`Bytes`] handed to a fetch) stays valid; slices are only ever made below `size`.
//! - [`LogFile::truncate`] shrinks the file only when no [`Bytes`] from it is alive (checked through
//!   the `Arc` count under `&mut self`), otherwise it refuses.
//! - The partition directory belongs to this process. Another process writing these files while
//!   they are mapped would break the above; Kafka's deployment model (one broker per log dir) is
//!   assumed here too.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{Advice, MmapMut, MmapOptions, MmapRaw};

use crate::fault::DiskFaults;

const PAGE_BYTES: u64 = 4096;

fn round_up_to_page(n: u64) -> u64 {
    n.div_ceil(PAGE_BYTES).saturating_mul(PAGE_BYTES)
}

/// Why [`LogFile::append`] failed.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// Nothing of the append is left in the file.
    Clean(io::Error),
    /// The write failed and cutting its prefix off failed too: the file holds bytes past `size`.
    Torn { write: io::Error, cut: io::Error },
}

/// A read-only map of a `.log` file, shared with every [`Bytes`] handed out from it.
#[derive(Debug)]
struct LogMap {
    raw: MmapRaw,
}

/// Owner of one read's bytes: keeps the map alive for as long as the [`Bytes`] lives.
struct LogSlice {
    map: Arc<LogMap>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for LogSlice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `LogFile::bytes` only creates a `LogSlice` for a range below the file's written
        // size and within the map's length. Those bytes are backed by the file (never past EOF,
        // so no SIGBUS), are never written again while mapped (`LogFile` only appends past `size`
        // and only truncates when no `LogSlice` exists), and the `Arc` keeps the map alive.
        unsafe { std::slice::from_raw_parts(self.map.raw.as_ptr().add(self.start), self.len) }
    }
}

/// A segment's `.log` file: the single appender, and the source of zero-copy reads.
#[derive(Debug)]
pub(crate) struct LogFile {
    /// The appender's descriptor; `None` once sealed (everything is then read through the map,
    /// and was fsynced when sealed).
    file: Option<File>,
    path: PathBuf,
    /// Bytes written; everything below is immutable while mapped.
    size: u64,
    /// Map length to reserve for growth (0 for sealed segments: exact size).
    reserve_bytes: u64,
    /// `None` while the file is empty and nothing is reserved.
    map: Option<Arc<LogMap>>,
}

impl LogFile {
    /// Opens (creating if missing) `path` to be appended to; its current length is taken as
    /// written. Keeps the descriptor until [`LogFile::seal`].
    pub(crate) fn open(path: &Path, reserve_bytes: u64) -> io::Result<Self> {
        let file = open_read_write(path, true)?;
        let size = file.metadata()?.len();
        let map = map_log(&file, size, reserve_bytes)?;
        Ok(Self {
            file: Some(file),
            path: path.to_path_buf(),
            size,
            reserve_bytes,
            map,
        })
    }

    /// Opens a sealed segment's `.log` for reading: mapped exactly, its descriptor closed at once.
    /// A recovery that must cut it reopens it ([`LogFile::truncate`]).
    pub(crate) fn open_sealed(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).open(path)?;
        let size = file.metadata()?.len();
        let map = map_log(&file, size, 0)?;
        Ok(Self {
            file: None,
            path: path.to_path_buf(),
            size,
            reserve_bytes: 0,
            map,
        })
    }

    /// The descriptor to write with, reopening a sealed file (only a recovery cutting a sealed
    /// segment's tail gets here; sealing closes it again).
    fn writable(&mut self) -> io::Result<&File> {
        match &mut self.file {
            Some(file) => Ok(file),
            empty => Ok(empty.insert(open_read_write(&self.path, false)?)),
        }
    }

    /// Whether this file holds a descriptor (tests count them).
    #[cfg(test)]
    pub(crate) fn has_descriptor(&self) -> bool {
        self.file.is_some()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Maps at least `needed` bytes (and the reservation), dropping our handle on the old map;
    /// outstanding reads keep theirs.
    fn remap(&mut self, needed: u64) -> io::Result<()> {
        let reserve_bytes = self.reserve_bytes;
        let file = self.writable()?;
        let map = map_log(file, needed, reserve_bytes)?;
        self.map = map;
        Ok(())
    }

    fn mapped_len(&self) -> u64 {
        self.map.as_ref().map_or(0, |m| m.raw.len() as u64)
    }

    /// Appends the concatenation of `pieces` at the end of the file (one vectored write: a
    /// leader's batch goes out as its patched header and the received records, neither copied),
    /// all of it or nothing: a failed write may have written a prefix (ENOSPC midway, an I/O
    /// error), so the file is cut back to `size` before the error is returned; otherwise a
    /// restart's recovery could find whole batches in that prefix that were never acknowledged.
    /// `size` only moves once the whole write succeeded.
    pub(crate) fn append(
        &mut self,
        pieces: &[&[u8]],
        faults: Option<&DiskFaults>,
    ) -> Result<(), AppendError> {
        let len: usize = pieces.iter().map(|piece| piece.len()).sum();
        let end = self.size + len as u64;
        if end > self.mapped_len() {
            // Only a batch larger than the reservation gets here; double to amortise.
            self.remap(end.saturating_mul(2))
                .map_err(AppendError::Clean)?;
        }
        let size = self.size;
        let file = self.writable().map_err(AppendError::Clean)?;
        let written = match faults.and_then(DiskFaults::before_write) {
            Some(prefix) => write_pieces_at(file, &first_bytes(pieces, prefix), size)
                .and_then(|()| Err(crate::fault::no_space())),
            None => write_pieces_at(file, pieces, size),
        };
        if let Err(write) = written {
            // The bytes past `size` are in no slice (slices stay below `size`), so cutting them
            // off cannot pull a page from under a reader.
            let cut = match faults.and_then(DiskFaults::before_truncate) {
                Some(injected) => Err(injected),
                None => file.set_len(size),
            };
            return Err(match cut {
                Ok(()) => AppendError::Clean(write),
                Err(cut) => AppendError::Torn { write, cut },
            });
        }
        self.size = end;
        Ok(())
    }

    /// Bytes on disk (the file's length), which differs from [`LogFile::size`] only after a
    /// failed append could not be cut back.
    #[cfg(test)]
    pub(crate) fn len_on_disk(&self) -> io::Result<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }

    /// The written bytes `start..start + len`, borrowed for as long as no append can happen.
    pub(crate) fn slice(&self, start: u64, len: u64) -> Option<&[u8]> {
        let (start, len) = self.checked_range(start, len)?;
        if len == 0 {
            return Some(&[]);
        }
        let map = self.map.as_ref()?;
        // SAFETY: `checked_range` keeps the range below `size` and within the map; those bytes are
        // file-backed and immutable while mapped (see the module doc), and the borrow of `self`
        // both keeps the map alive and excludes `append`/`truncate` (which need `&mut self`).
        Some(unsafe { std::slice::from_raw_parts(map.raw.as_ptr().add(start), len) })
    }

    /// The written bytes `start..start + len` as a zero-copy [`Bytes`] that keeps the map alive.
    pub(crate) fn bytes(&self, start: u64, len: u64) -> Option<Bytes> {
        let (start, len) = self.checked_range(start, len)?;
        if len == 0 {
            return Some(Bytes::new());
        }
        let map = Arc::clone(self.map.as_ref()?);
        Some(Bytes::from_owner(LogSlice { map, start, len }))
    }

    fn checked_range(&self, start: u64, len: u64) -> Option<(usize, usize)> {
        let end = start.checked_add(len)?;
        if end > self.size || end > self.mapped_len() {
            return None;
        }
        Some((usize::try_from(start).ok()?, usize::try_from(len).ok()?))
    }

    /// Cuts the file to `new_size` bytes. Refused while a read of this file is still alive.
    pub(crate) fn truncate(&mut self, new_size: u64) -> io::Result<()> {
        if new_size >= self.size {
            return Ok(());
        }
        if let Some(map) = self.map.as_mut() {
            if Arc::get_mut(map).is_none() {
                return Err(io::Error::other(
                    "cannot truncate a segment while fetched bytes from it are alive",
                ));
            }
        }
        self.map = None;
        self.writable()?.set_len(new_size)?;
        self.size = new_size;
        self.remap(new_size)
    }

    /// The segment will not grow again: map exactly its size and close the descriptor (reads
    /// need only the map). Made durable first when `sync`; a roll leaves that to a background
    /// flush ([`LogFile::sync`] then reopens the file by path).
    pub(crate) fn seal(&mut self, sync: bool) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if sync {
            file.sync_data()?;
        }
        self.map = map_log(file, self.size, 0)?;
        self.reserve_bytes = 0;
        self.file = None;
        Ok(())
    }

    /// Fsyncs the appended bytes. A sealed file, whose descriptor is closed, is reopened by path
    /// for it: a roll seals without fsyncing, so its bytes may not be on disk yet.
    pub(crate) fn sync(&self) -> io::Result<()> {
        match &self.file {
            Some(file) => file.sync_data(),
            None => File::open(&self.path)?.sync_data(),
        }
    }
}

/// Linux's `IOV_MAX`: the most slices one `pwritev` takes.
const IOV_MAX: usize = 1024;

/// Writes the concatenation of `pieces` at `offset` with as few `pwritev` calls as it takes
/// (a short write continues where it stopped, as `write_all_at` does).
fn write_pieces_at(file: &File, pieces: &[&[u8]], mut offset: u64) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = pieces
        .iter()
        .filter(|piece| !piece.is_empty())
        .map(|piece| io::IoSlice::new(piece))
        .collect();
    let mut left = &mut slices[..];
    while !left.is_empty() {
        let batch = &left[..left.len().min(IOV_MAX)];
        match rustix::io::pwritev(file, batch, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                offset += written as u64;
                io::IoSlice::advance_slices(&mut left, written);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

/// The first `len` bytes of the concatenation of `pieces` (a fault test's partial write).
fn first_bytes<'a>(pieces: &[&'a [u8]], mut len: usize) -> Vec<&'a [u8]> {
    let mut first = Vec::new();
    for piece in pieces {
        if len == 0 {
            break;
        }
        let take = len.min(piece.len());
        first.push(&piece[..take]);
        len -= take;
    }
    first
}

fn open_read_write(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
}

/// A read-only map of at least `needed` bytes of a `.log` and of `reserve_bytes`, page rounded;
/// `None` when both are 0.
fn map_log(file: &File, needed: u64, reserve_bytes: u64) -> io::Result<Option<Arc<LogMap>>> {
    let len = round_up_to_page(needed.max(reserve_bytes));
    if len == 0 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| io::Error::other("segment too large to map"))?;
    // Safe function: memmap2 only hands out raw pointers for an `MmapRaw`.
    let raw = MmapOptions::new().len(len).map_raw_read_only(file)?;
    Ok(Some(Arc::new(LogMap { raw })))
}

/// A read-write mapped index file (`.index` or `.timeindex`). Nothing outside this crate ever sees
/// its bytes, so remapping is always safe. Holds no descriptor: see the module doc.
#[derive(Debug)]
pub(crate) struct IndexFile {
    path: PathBuf,
    map: Option<MmapMut>,
    /// Bytes from 0 up to here are known to have disk blocks behind them (see
    /// [`IndexFile::reserve`]); reset whenever the length changes.
    reserved_bytes: u64,
    /// The length changed since the last [`IndexFile::sync`]: `msync` writes the mapped pages but
    /// not the file's length, so the next sync also fsyncs the file.
    length_unsynced: AtomicBool,
}

impl IndexFile {
    /// Opens (creating if missing) `path`. Returns the file and its length before any resize.
    pub(crate) fn open(path: &Path) -> io::Result<(Self, u64)> {
        let file = open_read_write(path, true)?;
        let len = file.metadata()?.len();
        let index = Self {
            path: path.to_path_buf(),
            map: map_index(&file, len)?,
            reserved_bytes: 0,
            length_unsynced: AtomicBool::new(false),
        };
        Ok((index, len))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the file length (preallocating or trimming) and maps all of it. On error the old map
    /// may be gone: [`IndexFile::bytes`] is then shorter than the entries its owner counted.
    pub(crate) fn resize(&mut self, len: u64) -> io::Result<()> {
        let file = open_read_write(&self.path, false)?;
        if let Some(map) = self.map.take() {
            map.flush()?;
        }
        file.set_len(len)?;
        self.reserved_bytes = 0;
        self.length_unsynced.store(true, Ordering::Relaxed);
        self.map = map_index(&file, len)?;
        Ok(())
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }

    /// Gives the pages holding `start..start + len` disk blocks before they are written through
    /// the map. The file is preallocated with `set_len`, which leaves holes: storing into a hole
    /// through a map on a full file system raises SIGBUS and kills the process, whereas writing
    /// the page's unused bytes with `pwrite` first gets an ordinary ENOSPC, which the caller
    /// answers by skipping the index entry (indexes are sparse and derived). Only bytes at or past
    /// `start` are written (zeros over the unused zeros past the last entry), once per page, through
    /// a descriptor opened for the moment.
    pub(crate) fn reserve(&mut self, start: usize, len: usize) -> io::Result<()> {
        let end = (start + len) as u64;
        if end <= self.reserved_bytes {
            return Ok(());
        }
        let file_len = self.map.as_ref().map_or(0, |m| m.len() as u64);
        let from = (start as u64).max(self.reserved_bytes);
        let to = round_up_to_page(end).min(file_len);
        if to > from {
            let zeros = vec![0u8; (to - from) as usize];
            open_read_write(&self.path, false)?.write_all_at(&zeros, from)?;
        }
        self.reserved_bytes = to;
        Ok(())
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        self.map.as_deref_mut().unwrap_or_default()
    }

    /// `msync`s the map, and fsyncs the file (reopened) if its length changed since last time.
    pub(crate) fn sync(&self) -> io::Result<()> {
        if let Some(map) = &self.map {
            map.flush()?;
        }
        if self.length_unsynced.swap(false, Ordering::Relaxed) {
            let synced = open_read_write(&self.path, false).and_then(|file| file.sync_data());
            if synced.is_err() {
                self.length_unsynced.store(true, Ordering::Relaxed);
            }
            synced?;
        }
        Ok(())
    }
}

/// A read-write map of all `len` bytes of an index file; `None` when empty.
fn map_index(file: &File, len: u64) -> io::Result<Option<MmapMut>> {
    if len == 0 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| io::Error::other("index too large to map"))?;
    // SAFETY: the index file belongs to this process and is only accessed through this map
    // (its length changes only in `IndexFile::resize`, after the old map is dropped), so the
    // mapped bytes are file-backed and no one else aliases them.
    let map = unsafe { MmapOptions::new().len(len).map_mut(file)? };
    // Index lookups are bisections, and an index left preallocated by a crash is mostly a hole:
    // read-ahead would zero-fill megabytes per fault and make opening 200 logs take seconds.
    map.advise(Advice::Random)?;
    Ok(Some(map))
}
