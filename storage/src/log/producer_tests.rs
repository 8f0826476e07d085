//! Producer state kept by a log: duplicates answered with their original offsets, refused
//! batches leaving the log unchanged, and the state surviving close, crash and truncation.

use skald_protocol::batch::testing::{build_batch_with, BatchOptions, TestRecord};
use tempfile::TempDir;

use super::*;
use crate::producer_state::{snapshot_path, ProducerError};

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        ..LogConfig::default()
    }
}

/// A client's batch of `count` records from `producer_id` at `epoch`, sequences from `first_seq`.
fn idempotent(producer_id: i64, epoch: i16, first_seq: i32, count: usize) -> Vec<u8> {
    let records: Vec<TestRecord> = (0..count)
        .map(|i| TestRecord::new(Some(b"k"), Some(&[7u8; 100]), 1_000 + i as i64))
        .collect();
    build_batch_with(
        &BatchOptions {
            producer_id,
            producer_epoch: epoch,
            base_sequence: first_seq,
            ..BatchOptions::default()
        },
        &records,
    )
}

fn append(log: &mut Log, mut batch: Vec<u8>) -> Result<AppendInfo> {
    log.append(&mut batch, None, 0)
}

fn last_seq(log: &Log, producer_id: i64) -> Option<(i16, i32, i64)> {
    log.producer_state()
        .entry(producer_id)
        .map(|e| (e.producer_epoch, e.last_seq(), e.last_data_offset()))
}

#[test]
fn a_retry_gets_the_original_offsets_and_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), config(1 << 20)).unwrap();
    append(&mut log, idempotent(-1, -1, -1, 2)).unwrap();
    let first = append(&mut log, idempotent(5, 0, 0, 3)).unwrap();
    assert_eq!(
        (first.first_offset, first.last_offset, first.duplicate),
        (2, 4, false)
    );
    append(&mut log, idempotent(5, 0, 3, 1)).unwrap();
    let size = log.size_bytes();
    let retry = append(&mut log, idempotent(5, 0, 0, 3)).unwrap();
    assert_eq!(
        (
            retry.first_offset,
            retry.last_offset,
            retry.duplicate,
            retry.bytes
        ),
        (2, 4, true, 0)
    );
    assert_eq!((log.log_end_offset(), log.size_bytes()), (6, size));
}

#[test]
fn refused_batches_leave_the_log_unchanged() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), config(1 << 20)).unwrap();
    append(&mut log, idempotent(5, 2, 0, 3)).unwrap();
    let gap = append(&mut log, idempotent(5, 2, 4, 1)).unwrap_err();
    assert!(matches!(
        gap,
        Error::Producer(ProducerError::OutOfOrderSequence {
            producer_id: 5,
            epoch: 2,
            first_seq: 4,
            last_seq: 2
        })
    ));
    let fenced = append(&mut log, idempotent(5, 1, 3, 1)).unwrap_err();
    assert!(matches!(
        fenced,
        Error::Producer(ProducerError::InvalidProducerEpoch {
            epoch: 1,
            current: 2,
            ..
        })
    ));
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(last_seq(&log, 5), Some((2, 2, 2)));
}

#[test]
fn followers_learn_producers_from_the_batches_they_copy() {
    let leader_dir = TempDir::new().unwrap();
    let follower_dir = TempDir::new().unwrap();
    let mut leader = Log::open(leader_dir.path(), config(1 << 20)).unwrap();
    let mut follower = Log::open(follower_dir.path(), config(1 << 20)).unwrap();
    append(&mut leader, idempotent(5, 0, 0, 3)).unwrap();
    append(&mut leader, idempotent(6, 1, 10, 2)).unwrap();
    let read = leader.read(0, usize::MAX).unwrap();
    follower.append_as_follower(&read.records).unwrap();
    assert_eq!(follower.producer_state(), leader.producer_state());
    // Now leading, the follower answers the old leader's retry as a duplicate.
    let retry = append(&mut follower, idempotent(6, 1, 10, 2)).unwrap();
    assert_eq!((retry.first_offset, retry.duplicate), (3, true));
}

#[test]
fn the_state_survives_a_clean_restart_through_its_snapshot() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), config(1 << 20)).unwrap();
    append(&mut log, idempotent(5, 0, 0, 3)).unwrap();
    log.close().unwrap();
    assert!(snapshot_path(dir.path(), 3).exists());
    let mut log = Log::open_with_options(
        dir.path(),
        config(1 << 20),
        LogOpenOptions {
            recovery_point: Some(i64::MAX),
            ..LogOpenOptions::default()
        },
    )
    .unwrap();
    assert_eq!(last_seq(&log, 5), Some((0, 2, 2)));
    assert!(append(&mut log, idempotent(5, 0, 0, 3)).unwrap().duplicate);
    assert_eq!(
        append(&mut log, idempotent(5, 0, 3, 1))
            .unwrap()
            .first_offset,
        3
    );
}

#[test]
fn after_a_crash_the_state_is_rebuilt_from_the_last_roll_snapshot_and_the_log() {
    let dir = TempDir::new().unwrap();
    // Each 3-record batch is about 400 bytes: a segment holds two.
    let mut log = Log::open(dir.path(), config(900)).unwrap();
    for i in 0..5 {
        append(&mut log, idempotent(5, 0, i * 3, 3)).unwrap();
    }
    append(&mut log, idempotent(6, 0, 0, 1)).unwrap();
    assert!(log.segment_count() >= 3);
    let expected = (last_seq(&log, 5), last_seq(&log, 6));
    drop(log); // no close: no snapshot at the log end
    assert!(!snapshot_path(dir.path(), 16).exists());
    let mut log = Log::open(dir.path(), config(900)).unwrap();
    assert_eq!((last_seq(&log, 5), last_seq(&log, 6)), expected);
    // A snapshot keeps each producer's last batch (Kafka's format); the batches replayed after
    // it are all remembered, so the newest ones are still recognised as retries.
    for (first_seq, first_offset) in [(9, 9), (12, 12)] {
        let retry = append(&mut log, idempotent(5, 0, first_seq, 3)).unwrap();
        assert_eq!((retry.duplicate, retry.first_offset), (true, first_offset));
    }
    // A damaged newest snapshot is skipped: the one before it and more of the log serve.
    let newest = *crate::producer_state::list_snapshots(dir.path())
        .unwrap()
        .last()
        .unwrap();
    std::fs::write(snapshot_path(dir.path(), newest), b"garbage").unwrap();
    drop(log);
    let log = Log::open(dir.path(), config(900)).unwrap();
    assert_eq!((last_seq(&log, 5), last_seq(&log, 6)), expected);
    assert!(!snapshot_path(dir.path(), newest).exists());
}

#[test]
fn truncation_forgets_what_it_cut() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), config(900)).unwrap();
    for i in 0..4 {
        append(&mut log, idempotent(5, 0, i * 3, 3)).unwrap();
    }
    append(&mut log, idempotent(6, 0, 0, 1)).unwrap();
    log.truncate_to(6).unwrap();
    assert_eq!(last_seq(&log, 5), Some((0, 5, 5)));
    assert_eq!(last_seq(&log, 6), None);
    // The producer continues from what the log now holds.
    assert_eq!(
        append(&mut log, idempotent(5, 0, 6, 3))
            .unwrap()
            .first_offset,
        6
    );
    log.truncate_fully_and_start_at(100).unwrap();
    assert!(log.producer_state().is_empty());
    assert!(crate::producer_state::list_snapshots(dir.path())
        .unwrap()
        .is_empty());
}

/// A transactional batch of `count` records.
fn transactional(producer_id: i64, epoch: i16, first_seq: i32, count: usize) -> Vec<u8> {
    let records: Vec<TestRecord> = (0..count)
        .map(|i| TestRecord::new(Some(b"k"), Some(&[9u8; 50]), 2_000 + i as i64))
        .collect();
    build_batch_with(
        &BatchOptions {
            producer_id,
            producer_epoch: epoch,
            base_sequence: first_seq,
            attributes: skald_protocol::batch::TRANSACTIONAL_FLAG_MASK,
            ..BatchOptions::default()
        },
        &records,
    )
}

fn aborted(log: &Log) -> Vec<(i64, i64, i64)> {
    log.collect_aborted_txns(0, i64::MAX)
        .iter()
        .map(|t| (t.producer_id, t.first_offset, t.last_offset))
        .collect()
}

/// Producer 1 aborts [0, 3), producer 2 commits [2, 4) with its marker at 5; producer 3's
/// transaction from 6 stays open. Offsets: 0-1 p1, 2 p2, 3 p1, 4 p1 ABORT, 5 p2 COMMIT, 6 p3.
fn three_transactions(log: &mut Log) {
    append(log, transactional(1, 0, 0, 2)).unwrap();
    append(log, transactional(2, 0, 0, 1)).unwrap();
    append(log, transactional(1, 0, 2, 1)).unwrap();
    assert_eq!(log.first_unstable_offset(), Some(0));
    let abort = log.append_txn_marker(1, 0, false, 5, 0).unwrap();
    assert_eq!(abort.first_offset, 4);
    assert_eq!(log.first_unstable_offset(), Some(2));
    log.append_txn_marker(2, 0, true, 5, 0).unwrap();
    append(log, transactional(3, 0, 0, 1)).unwrap();
    assert_eq!(log.first_unstable_offset(), Some(6));
}

#[test]
fn markers_end_transactions_and_aborts_are_indexed() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), config(1 << 20)).unwrap();
    three_transactions(&mut log);
    assert_eq!(aborted(&log), vec![(1, 0, 4)]);
    assert_eq!(log.collect_aborted_txns(5, 10), vec![]);
    assert_eq!(log.collect_aborted_txns(4, 5).len(), 1);
    // A fenced coordinator or producer epoch writes nothing.
    assert_eq!(
        log.append_txn_marker(3, 0, true, 4, 0)
            .unwrap()
            .first_offset,
        7
    );
    assert!(matches!(
        log.append_txn_marker(3, 0, true, 2, 0),
        Err(Error::Producer(ProducerError::CoordinatorFenced { .. }))
    ));
    assert_eq!(log.log_end_offset(), 8);
    // A non-transactional write from a producer inside a transaction is refused.
    append(&mut log, transactional(4, 0, 0, 1)).unwrap();
    assert!(matches!(
        append(&mut log, idempotent(4, 0, 1, 1)),
        Err(Error::Producer(ProducerError::InvalidTxnState {
            producer_id: 4
        }))
    ));
}

#[test]
fn transactions_survive_restarts_and_followers_learn_them() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), config(1 << 20)).unwrap();
    three_transactions(&mut log);
    // A follower copying the log builds the same state and index.
    let follower_dir = TempDir::new().unwrap();
    let mut follower = Log::open(follower_dir.path(), config(1 << 20)).unwrap();
    // (The markers carry the clock's time, the test batches 1970's: segment.ms rolls before
    // the first marker, so the log is read a segment at a time.)
    while follower.log_end_offset() < log.log_end_offset() {
        let read = log.read(follower.log_end_offset(), usize::MAX).unwrap();
        follower.append_as_follower(&read.records).unwrap();
    }
    assert_eq!(
        (aborted(&follower), follower.first_unstable_offset()),
        (vec![(1, 0, 4)], Some(6))
    );
    // Clean close, then a crash: the same either way.
    log.close().unwrap();
    let log = Log::open(dir.path(), config(1 << 20)).unwrap();
    assert_eq!(
        (aborted(&log), log.first_unstable_offset()),
        (vec![(1, 0, 4)], Some(6))
    );
    drop(log);
    std::fs::remove_file(dir.path().join(crate::TXN_INDEX_FILE)).unwrap();
    for offset in crate::producer_state::list_snapshots(dir.path()).unwrap() {
        crate::producer_state::delete_snapshot(dir.path(), offset).unwrap();
    }
    let log = Log::open(dir.path(), config(1 << 20)).unwrap();
    assert_eq!(
        (aborted(&log), log.first_unstable_offset()),
        (vec![(1, 0, 4)], Some(6))
    );
}

#[test]
fn truncation_and_delete_records_drop_the_index_entries_they_cut() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), config(1 << 20)).unwrap();
    three_transactions(&mut log);
    log.truncate_to(4).unwrap();
    assert_eq!(aborted(&log), vec![]);
    assert_eq!(
        log.first_unstable_offset(),
        Some(0),
        "the abort marker was cut"
    );
    log.append_txn_marker(1, 0, false, 5, 0).unwrap();
    assert_eq!(aborted(&log), vec![(1, 0, 4)]);
    log.append_txn_marker(2, 0, false, 5, 0).unwrap();
    assert_eq!(aborted(&log), vec![(1, 0, 4), (2, 2, 5)]);
    log.delete_records_before(5).unwrap();
    assert_eq!(aborted(&log), vec![(2, 2, 5)]);
    let log = {
        drop(log);
        Log::open(dir.path(), config(1 << 20)).unwrap()
    };
    assert_eq!(aborted(&log), vec![(2, 2, 5)]);
}
