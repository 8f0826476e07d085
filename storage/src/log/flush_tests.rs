//! A roll's fsync runs off the lock: the recovery point waits for it, truncations void it, a
//! crash before it is recovered by validation, and a failed one fails the log.

use std::fs;

use skald_protocol::batch::testing::simple_batch;
use tempfile::TempDir;

use super::*;
use crate::segment::segment_file_name;

const EIO: i32 = 5;

/// Segments of two one-record batches each.
fn config() -> LogConfig {
    let batch_bytes = simple_batch(0, 1, 0, 50).len() as u64;
    LogConfig {
        segment_bytes: 2 * batch_bytes,
        index_interval_bytes: 1,
        segment_index_bytes: 4096,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, faults: Option<Arc<DiskFaults>>) -> Log {
    Log::open_with_options(
        dir,
        config(),
        LogOpenOptions {
            faults,
            ..LogOpenOptions::default()
        },
    )
    .unwrap()
}

/// Appends `count` one-record batches; returns them as stored.
fn append(log: &mut Log, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let mut batch = simple_batch(0, 1, 1_000 * i as i64, 50);
            log.append(&mut batch, None, 0).unwrap();
            batch
        })
        .collect()
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

#[test]
fn a_roll_leaves_the_recovery_point_until_its_flush_completes() {
    let temp = TempDir::new().unwrap();
    let mut log = open(temp.path(), None);
    append(&mut log, 5);
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4]);
    assert_eq!(log.recovery_point(), 0);
    assert_eq!(log.unflushed_messages(), 5);
    assert!(log.has_pending_flush());

    let mut flush = log.take_pending_flush().unwrap();
    assert_eq!(flush.up_to(), 4);
    assert!(!log.has_pending_flush());
    assert!(log.take_pending_flush().is_none(), "taken once");
    flush.sync().unwrap();
    // Synced but not handed back: nothing moved, and appends go on meanwhile.
    append(&mut log, 1);
    assert_eq!(log.recovery_point(), 0);
    log.complete_flush(flush, Ok(())).unwrap();
    assert_eq!(log.recovery_point(), 4);
    assert_eq!(log.unflushed_messages(), 2);
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4]);
}

#[test]
fn two_rolls_before_a_flush_are_covered_by_one() {
    let temp = TempDir::new().unwrap();
    let mut log = open(temp.path(), None);
    append(&mut log, 3);
    let first = log.take_pending_flush().unwrap();
    assert_eq!(first.up_to(), 2);
    append(&mut log, 4);
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4, 6]);
    let mut second = log.take_pending_flush().unwrap();
    assert_eq!(second.up_to(), 6);
    let synced = second.sync();
    log.complete_flush(second, synced).unwrap();
    assert_eq!(log.recovery_point(), 6);
    // The older flush, completed last, never moves the recovery point back.
    log.complete_flush(first, Ok(())).unwrap();
    assert_eq!(log.recovery_point(), 6);
}

#[test]
fn a_foreground_flush_covers_the_sealed_segments_and_voids_the_pending_one() {
    let temp = TempDir::new().unwrap();
    let mut log = open(temp.path(), None);
    append(&mut log, 5);
    // Sealed segments may be unloaded before their flush: they are synced through their paths.
    assert_eq!(log.unload_sealed_segments(), 2);
    log.flush().unwrap();
    assert_eq!(log.recovery_point(), 5);
    assert!(log.take_pending_flush().is_none());
    assert_eq!(log.recovery_point(), 5);
}

#[test]
fn a_flush_of_unloaded_sealed_segments_completes() {
    let temp = TempDir::new().unwrap();
    let mut log = open(temp.path(), None);
    append(&mut log, 5);
    assert_eq!(log.unload_sealed_segments(), 2);
    log.flush_pending().unwrap();
    assert_eq!(log.recovery_point(), 4);
}

#[test]
fn a_truncation_during_a_pending_flush_keeps_the_recovery_point_at_or_below_the_cut() {
    let temp = TempDir::new().unwrap();
    let mut log = open(temp.path(), None);
    let written = append(&mut log, 5);
    let mut flush = log.take_pending_flush().unwrap();
    assert_eq!(flush.up_to(), 4);
    // The follower's log diverged: cut at 3, then its leader's records up to 8 arrive.
    log.truncate_to(3).unwrap();
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(log.recovery_point(), 0);
    assert_eq!(read_all(&log), written[..3].concat());
    flush.sync().unwrap();
    append(&mut log, 5);
    assert_eq!(log.log_end_offset(), 8);
    log.complete_flush(flush, Ok(())).unwrap();
    // Offset 3 on is in files the flush never had: the recovery point stays below the cut.
    assert_eq!(log.recovery_point(), 0);

    // The next roll's flush starts from the recovery point and covers it all.
    log.flush_pending().unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4, 6]);
    assert_eq!(log.recovery_point(), 6);
}

#[test]
fn a_truncation_below_the_recovery_point_is_not_undone_by_an_older_flush() {
    let temp = TempDir::new().unwrap();
    let mut log = open(temp.path(), None);
    append(&mut log, 5);
    let flush = log.take_pending_flush().unwrap();
    log.flush().unwrap();
    assert_eq!(log.recovery_point(), 5);
    log.truncate_to(3).unwrap();
    assert_eq!(log.recovery_point(), 3);
    log.complete_flush(flush, Ok(())).unwrap();
    assert_eq!(log.recovery_point(), 3);
}

#[test]
fn a_crash_before_the_flush_loses_nothing_flushed_and_validates_the_sealed_segments() {
    let temp = TempDir::new().unwrap();
    let mut log = open(temp.path(), None);
    let mut written = append(&mut log, 3);
    log.flush_pending().unwrap();
    assert_eq!(log.recovery_point(), 2);
    // Acknowledged and flushed: offsets 0 and 1. Then a roll at 4 whose flush never runs.
    written.extend(append(&mut log, 2));
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4]);
    let checkpointed = log.recovery_point();
    assert_eq!(checkpointed, 2);
    drop(log); // a crash
               // The sealed segment's last bytes never reached the disk.
    let sealed = temp.path().join(segment_file_name(2, "log"));
    let len = fs::metadata(&sealed).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&sealed)
        .unwrap()
        .set_len(len - 1)
        .unwrap();

    let log = Log::open_with_recovery_point(temp.path(), config(), checkpointed).unwrap();
    // Segment 0 lies below the recovery point (trusted); segment 2 is validated and cut at its
    // torn batch, and segment 4, no longer contiguous with it, goes.
    assert_eq!(log.recovered_segments(), 1);
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(read_all(&log), written[..3].concat());
}

#[test]
fn a_failed_background_fsync_fails_the_log() {
    let temp = TempDir::new().unwrap();
    let faults = Arc::new(DiskFaults::new());
    let mut log = open(temp.path(), Some(Arc::clone(&faults)));
    append(&mut log, 5);
    faults.fail_sync();
    let mut flush = log.take_pending_flush().unwrap();
    let synced = flush.sync();
    let err = log.complete_flush(flush, synced).unwrap_err();
    assert!(
        matches!(&err, Error::Io { source, .. } if source.raw_os_error() == Some(EIO)),
        "{err}"
    );
    assert!(err.is_disk_failure());
    assert!(log.is_failed());
    assert_eq!(log.recovery_point(), 0);
    let mut batch = simple_batch(0, 1, 0, 50);
    assert!(matches!(
        log.append(&mut batch, None, 0),
        Err(Error::LogFailed { .. })
    ));
    assert!(log.take_pending_flush().is_none());
}

#[test]
fn close_makes_the_pending_rolls_durable() {
    let temp = TempDir::new().unwrap();
    let mut log = open(temp.path(), None);
    let written = append(&mut log, 5);
    assert_eq!(log.recovery_point(), 0);
    log.close().unwrap();
    // A clean shutdown checkpoints the log end: nothing is validated on open.
    let log = Log::open_with_recovery_point(temp.path(), config(), 5).unwrap();
    assert_eq!(log.recovered_segments(), 0);
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4]);
    assert_eq!(read_all(&log), written.concat());
}

#[test]
fn flush_messages_counts_the_sealed_segments_until_their_flush() {
    let temp = TempDir::new().unwrap();
    let mut log = Log::open(
        temp.path(),
        LogConfig {
            flush_messages: 4,
            ..config()
        },
    )
    .unwrap();
    append(&mut log, 3);
    // Kafka's `unflushedMessages`: the log end minus the recovery point, which the roll at 2
    // did not move.
    assert_eq!(log.recovery_point(), 0);
    append(&mut log, 1);
    assert_eq!(
        log.recovery_point(),
        4,
        "the fourth unflushed message flushed"
    );
    assert!(
        log.take_pending_flush().is_none(),
        "made moot by that flush"
    );
}

#[test]
fn a_flush_handed_to_another_log_changes_nothing_there() {
    let (one, other) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let mut log = open(one.path(), None);
    append(&mut log, 5);
    let flush = log.take_pending_flush().unwrap();
    // The partition's log was replaced meanwhile (a replica moved to another log dir).
    let mut replaced = open(other.path(), None);
    append(&mut replaced, 5);
    let failed = Err(Error::Io {
        path: one.path().to_path_buf(),
        source: std::io::Error::from_raw_os_error(EIO),
    });
    replaced.complete_flush(flush, failed).unwrap();
    assert!(!replaced.is_failed());
    assert_eq!(replaced.recovery_point(), 0);
    assert!(!log.is_failed());
}
