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
