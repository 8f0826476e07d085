//! Disk faults injected into a log's segment writes, for tests (TigerBeetle's "inject the disk").
//!
//! A [`DiskFaults`] is handed to [`crate::Log`] through [`crate::LogOpenOptions::faults`]; the
//! segment writer consults it before every `.log` write, a background flush before its fsyncs. Production code never creates one.

use std::io;
use std::sync::Mutex;

/// Linux's `ENOSPC`: what a full file system answers a write with.
const ENOSPC: i32 = 28;
/// Linux's `EIO`: what an fsync on a failing disk answers.
const EIO: i32 = 5;

/// Armed write faults, shared by every segment of the logs opened with it.
#[derive(Debug, Default)]
pub struct DiskFaults {
    state: Mutex<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    /// `.log` writes seen since the fault was armed.
    writes_seen: u64,
    /// `(nth write, bytes of it written before the error)`.
    fail_write: Option<(u64, usize)>,
    /// Cutting a failed write back off fails too (the log is then left torn).
    fail_truncate: bool,
    /// The next background flush's fsync fails (one-shot).
    fail_sync: bool,
}

impl DiskFaults {
    pub fn new() -> DiskFaults {
        DiskFaults::default()
    }

    /// The `nth` `.log` write from now (1 = the next one) writes its first `bytes_written` bytes
    /// and then fails with `ENOSPC`, as a write running into a full file system does. One-shot.
    pub fn fail_write(&self, nth: u64, bytes_written: usize) {
        let mut state = self.lock();
        state.writes_seen = 0;
        state.fail_write = Some((nth.max(1), bytes_written));
    }

    /// Whether cutting a failed write's partial bytes back off fails as well.
    pub fn fail_truncates(&self, fail: bool) {
        self.lock().fail_truncate = fail;
    }

    /// Called before each `.log` write: `Some(k)` when this write must fail after `k` bytes.
    pub(crate) fn before_write(&self) -> Option<usize> {
        let mut state = self.lock();
        let (nth, bytes_written) = state.fail_write?;
        state.writes_seen += 1;
        if state.writes_seen < nth {
            return None;
        }
        state.fail_write = None;
        Some(bytes_written)
    }

    /// The next [`crate::PendingFlush::sync`] fails with `EIO`, as an fsync on a failing disk
    /// does. One-shot.
    pub fn fail_sync(&self) {
        self.lock().fail_sync = true;
    }

    /// Called before a background flush's fsyncs: the injected error, if they must fail.
    pub(crate) fn before_sync(&self) -> Option<io::Error> {
        std::mem::take(&mut self.lock().fail_sync).then(|| io::Error::from_raw_os_error(EIO))
    }

    /// Called before cutting a failed write off: the injected error, if the cut must fail.
    pub(crate) fn before_truncate(&self) -> Option<io::Error> {
        self.lock()
            .fail_truncate
            .then(|| io::Error::other("injected truncate failure"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The error a write into a full file system gets.
pub(crate) fn no_space() -> io::Error {
    io::Error::from_raw_os_error(ENOSPC)
}
