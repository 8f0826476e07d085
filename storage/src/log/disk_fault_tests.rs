//! Disk faults on append: a failed write leaves exactly the acknowledged bytes, or fails the log.

use std::fs;

use skald_protocol::batch::testing::simple_batch;
use tempfile::TempDir;

use super::*;
use crate::segment::segment_file_name;

const ENOSPC: i32 = 28;

fn open(dir: &Path, faults: &Arc<DiskFaults>, segment_bytes: u64) -> Log {
    let config = LogConfig {
        segment_bytes,
        index_interval_bytes: 100,
        segment_index_bytes: 4096,
        ..LogConfig::default()
    };
    Log::open_with_options(
        dir,
        config,
        LogOpenOptions {
            faults: Some(Arc::clone(faults)),
            ..LogOpenOptions::default()
        },
    )
    .unwrap()
}

/// Appends one 3-record batch; returns the bytes as stored.
fn append_ok(log: &mut Log, i: i64) -> Vec<u8> {
    let mut batch = simple_batch(0, 3, 1_000 + i, 40);
    log.append(&mut batch, None, 0).unwrap();
    batch
}

fn append_err(log: &mut Log, i: i64) -> Error {
    let mut batch = simple_batch(0, 3, 1_000 + i, 40);
    log.append(&mut batch, None, 0).unwrap_err()
}

fn read_all(log: &Log) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, usize::MAX).unwrap();
        out.extend_from_slice(&read.records);
        offset = read.next_offset;
    }
    out
}

fn segment_file(dir: &Path, base_offset: i64) -> Vec<u8> {
    fs::read(dir.join(segment_file_name(base_offset, "log"))).unwrap()
}

fn os_error(err: &Error) -> Option<i32> {
    match err {
        Error::Io { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

#[test]
fn enospc_midway_cuts_the_partial_write_and_moves_nothing() {
    let temp = TempDir::new().unwrap();
    let faults = Arc::new(DiskFaults::new());
    let mut log = open(temp.path(), &faults, 1 << 20);
    let acked: Vec<u8> = (0..3).flat_map(|i| append_ok(&mut log, i)).collect();
    let entries_before = log.active().index_entries();
    assert!(entries_before.0 > 0, "the index has entries to compare");

    faults.fail_write(1, 37);
    let err = append_err(&mut log, 3);
    assert_eq!(os_error(&err), Some(ENOSPC), "{err}");
    assert!(err.is_disk_failure());

    assert!(!log.is_failed());
    assert_eq!(log.log_end_offset(), 9);
    assert_eq!(log.size_bytes(), acked.len() as u64);
    let active = log.active();
    assert_eq!(active.len_on_disk().unwrap(), acked.len() as u64);
    assert_eq!(active.index_entries(), entries_before);
    assert_eq!(segment_file(temp.path(), 0), acked, "bytes on disk");
    assert_eq!(read_all(&log), acked);

    // The fault was one-shot: the next append lands right after the acknowledged bytes.
    let next = append_ok(&mut log, 4);
    assert_eq!(log.log_end_offset(), 12);
    let expected: Vec<u8> = acked.iter().chain(&next).copied().collect();
    assert_eq!(segment_file(temp.path(), 0), expected);
    drop(log);

    let reopened = Log::open_with_recovery_point(temp.path(), LogConfig::default(), 0).unwrap();
    assert_eq!(reopened.log_end_offset(), 12);
    assert_eq!(read_all(&reopened), expected);
}

#[test]
fn the_nth_write_fails_and_the_earlier_ones_are_kept() {
    let temp = TempDir::new().unwrap();
    let faults = Arc::new(DiskFaults::new());
    let mut log = open(temp.path(), &faults, 1 << 20);
    faults.fail_write(3, 0);
    let acked: Vec<u8> = (0..2).flat_map(|i| append_ok(&mut log, i)).collect();
    let err = append_err(&mut log, 2);
    assert_eq!(os_error(&err), Some(ENOSPC), "{err}");
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(segment_file(temp.path(), 0), acked);
}

#[test]
fn enospc_in_a_freshly_rolled_segment_leaves_it_empty() {
    let temp = TempDir::new().unwrap();
    let faults = Arc::new(DiskFaults::new());
    let one = simple_batch(0, 3, 1_000, 40).len() as u64;
    // Two batches fill a segment: the third append rolls, then its write fails.
    let mut log = open(temp.path(), &faults, 2 * one);
    let acked: Vec<u8> = (0..2).flat_map(|i| append_ok(&mut log, i)).collect();
    faults.fail_write(1, 10);
    let err = append_err(&mut log, 2);
    assert_eq!(os_error(&err), Some(ENOSPC), "{err}");
    assert_eq!(log.segment_base_offsets(), vec![0, 6]);
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(segment_file(temp.path(), 0), acked);
    assert_eq!(segment_file(temp.path(), 6), Vec::<u8>::new());
    assert_eq!(read_all(&log), acked);
    let next = append_ok(&mut log, 3);
    assert_eq!(segment_file(temp.path(), 6), next);
}

#[test]
fn a_failed_cut_fails_the_log_until_it_is_reopened() {
    let temp = TempDir::new().unwrap();
    let faults = Arc::new(DiskFaults::new());
    let mut log = open(temp.path(), &faults, 1 << 20);
    let acked: Vec<u8> = (0..2).flat_map(|i| append_ok(&mut log, i)).collect();
    faults.fail_truncates(true);
    faults.fail_write(1, 50);
    let err = append_err(&mut log, 2);
    assert!(matches!(err, Error::TornAppend { .. }), "{err}");
    assert!(log.is_failed());
    // The 50 bytes are on disk past what the log accounts for...
    assert_eq!(segment_file(temp.path(), 0).len(), acked.len() + 50);
    // ...so the log refuses every append and read.
    faults.fail_truncates(false);
    assert!(matches!(append_err(&mut log, 3), Error::LogFailed { .. }));
    assert!(matches!(log.read(0, 1 << 20), Err(Error::LogFailed { .. })));
    assert!(matches!(
        log.offset_for_timestamp(0),
        Err(Error::LogFailed { .. })
    ));
    assert!(matches!(log.flush(), Err(Error::LogFailed { .. })));
    assert!(matches!(
        log.delete_records_before(1),
        Err(Error::LogFailed { .. })
    ));
    assert!(matches!(log.close(), Err(Error::LogFailed { .. })));

    // Reopening validates the tail: the torn prefix is not a whole batch and is cut off.
    let reopened = Log::open_with_recovery_point(temp.path(), LogConfig::default(), 0).unwrap();
    assert_eq!(reopened.log_end_offset(), 6);
    assert_eq!(read_all(&reopened), acked);
    assert_eq!(segment_file(temp.path(), 0), acked);
}
