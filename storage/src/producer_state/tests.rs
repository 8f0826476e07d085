use skald_protocol::batch::testing::{build_batch_with, BatchOptions, TestRecord};
use skald_protocol::batch::{
    EndTxnMarker, RecordBatchHeader, CONTROL_FLAG_MASK, CONTROL_TYPE_ABORT, CONTROL_TYPE_COMMIT,
    TRANSACTIONAL_FLAG_MASK,
};

use super::*;

/// The header of a batch of `count` records from `producer_id` at `epoch`, sequences from
/// `first_seq`, stored at `base_offset`.
fn header(
    producer_id: i64,
    epoch: i16,
    first_seq: i32,
    count: usize,
    base_offset: i64,
) -> RecordBatchHeader {
    header_with(producer_id, epoch, first_seq, count, base_offset, 0)
}

fn header_with(
    producer_id: i64,
    epoch: i16,
    first_seq: i32,
    count: usize,
    base_offset: i64,
    attributes: i16,
) -> RecordBatchHeader {
    let records: Vec<TestRecord> = (0..count)
        .map(|i| TestRecord::new(None, Some(b"v"), 1_000 + i as i64))
        .collect();
    let options = BatchOptions {
        base_offset,
        producer_id,
        producer_epoch: epoch,
        base_sequence: first_seq,
        attributes,
        ..BatchOptions::default()
    };
    RecordBatchHeader::parse(&build_batch_with(&options, &records)).unwrap()
}

fn check(
    state: &ProducerStateManager,
    header: &RecordBatchHeader,
) -> Result<ProducerCheck, ProducerError> {
    state.check_client_batches([header], TxnVerification::Off)
}

#[test]
fn a_retried_batch_is_a_duplicate_of_the_original() {
    let mut state = ProducerStateManager::default();
    let first = header(7, 0, 0, 3, 100);
    assert_eq!(check(&state, &first), Ok(ProducerCheck::Append));
    state.update(&first, None);
    let second = header(7, 0, 3, 2, 103);
    assert_eq!(check(&state, &second), Ok(ProducerCheck::Append));
    state.update(&second, None);
    // Both are remembered with the offsets they got.
    let retry = header(7, 0, 0, 3, 0);
    let Ok(ProducerCheck::Duplicate(original)) = check(&state, &retry) else {
        panic!("expected a duplicate");
    };
    assert_eq!(
        (
            original.first_offset(),
            original.last_offset,
            original.first_seq,
            original.last_seq
        ),
        (100, 102, 0, 2)
    );
    let Ok(ProducerCheck::Duplicate(original)) = check(&state, &header(7, 0, 3, 2, 0)) else {
        panic!("expected a duplicate");
    };
    assert_eq!((original.first_offset(), original.last_offset), (103, 104));
}

#[test]
fn only_the_last_five_batches_are_remembered() {
    let mut state = ProducerStateManager::default();
    for i in 0..6 {
        state.update(&header(7, 0, i, 1, i64::from(i)), None);
    }
    let entry = state.entry(7).unwrap();
    assert_eq!(
        entry.batches().map(|b| b.first_seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    // The oldest is no longer a duplicate: it is out of order.
    assert_eq!(
        check(&state, &header(7, 0, 0, 1, 0)),
        Err(ProducerError::OutOfOrderSequence {
            producer_id: 7,
            epoch: 0,
            first_seq: 0,
            last_seq: 5
        })
    );
}

#[test]
fn a_sequence_gap_is_out_of_order() {
    let mut state = ProducerStateManager::default();
    state.update(&header(7, 0, 0, 3, 0), None);
    assert_eq!(
        check(&state, &header(7, 0, 4, 1, 0)),
        Err(ProducerError::OutOfOrderSequence {
            producer_id: 7,
            epoch: 0,
            first_seq: 4,
            last_seq: 2
        })
    );
    assert_eq!(
        check(&state, &header(7, 0, 3, 1, 0)),
        Ok(ProducerCheck::Append)
    );
}

#[test]
fn an_older_epoch_is_refused_and_a_new_one_starts_at_zero() {
    let mut state = ProducerStateManager::default();
    state.update(&header(7, 3, 0, 3, 0), None);
    assert_eq!(
        check(&state, &header(7, 2, 3, 1, 0)),
        Err(ProducerError::InvalidProducerEpoch {
            producer_id: 7,
            epoch: 2,
            current: 3
        })
    );
    assert_eq!(
        check(&state, &header(7, 4, 5, 1, 0)),
        Err(ProducerError::OutOfOrderSequence {
            producer_id: 7,
            epoch: 4,
            first_seq: 5,
            last_seq: NO_SEQUENCE
        })
    );
    assert_eq!(
        check(&state, &header(7, 4, 0, 1, 0)),
        Ok(ProducerCheck::Append)
    );
    // A new epoch forgets the old one's batches.
    state.update(&header(7, 4, 0, 1, 3), None);
    let entry = state.entry(7).unwrap();
    assert_eq!((entry.producer_epoch, entry.batches().count()), (4, 1));
}

#[test]
fn an_unknown_producer_may_start_at_any_sequence() {
    let state = ProducerStateManager::default();
    assert_eq!(
        check(&state, &header(9, 2, 1234, 1, 0)),
        Ok(ProducerCheck::Append)
    );
}

#[test]
fn batches_of_one_append_are_checked_in_order() {
    let state = ProducerStateManager::default();
    let a = header(7, 0, 0, 2, 0);
    let b = header(7, 0, 2, 2, 2);
    let gap = header(7, 0, 5, 1, 4);
    assert_eq!(
        state.check_client_batches([&a, &b], TxnVerification::Off),
        Ok(ProducerCheck::Append)
    );
    assert!(matches!(
        state.check_client_batches([&a, &gap], TxnVerification::Off),
        Err(ProducerError::OutOfOrderSequence {
            first_seq: 5,
            last_seq: 1,
            ..
        })
    ));
}

#[test]
fn sequences_wrap_at_i32_max() {
    assert_eq!(increment_sequence(i32::MAX, 1), 0);
    assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
    assert_eq!(decrement_sequence(1, 3), i32::MAX - 1);
    let mut state = ProducerStateManager::default();
    let wrapping = header(7, 0, i32::MAX - 1, 3, 0);
    // Sequences i32::MAX - 1, i32::MAX, 0.
    assert_eq!(last_sequence(&wrapping), 0);
    state.update(&wrapping, None);
    assert_eq!(
        check(&state, &header(7, 0, 1, 1, 3)),
        Ok(ProducerCheck::Append)
    );
}

#[test]
fn producers_expire_after_the_expiration_unless_in_a_transaction() {
    let mut state = ProducerStateManager::default();
    state.update(&header(1, 0, 0, 1, 0), None); // last timestamp 1_000
    state.update(&header_with(2, 0, 0, 1, 1, TRANSACTIONAL_FLAG_MASK), None);
    assert_eq!(state.remove_expired(1_000 + 499, 500), 0);
    assert_eq!(state.remove_expired(1_000 + 500, 500), 1);
    assert!(state.entry(1).is_none());
    assert_eq!(state.entry(2).unwrap().current_txn_first_offset, Some(1));
    // A marker ends the transaction; then it can expire.
    let completed = state.update(
        &header_with(2, 0, -1, 1, 2, TRANSACTIONAL_FLAG_MASK | CONTROL_FLAG_MASK),
        Some(commit(5)),
    );
    assert_eq!(
        completed,
        Some(CompletedTxn {
            producer_id: 2,
            first_offset: 1,
            last_offset: 2,
            aborted: false
        })
    );
    assert_eq!(state.entry(2).unwrap().current_txn_first_offset, None);
    assert_eq!(state.remove_expired(1_000 + 500, 500), 1);
    assert!(state.is_empty());
}

#[test]
fn snapshots_round_trip_the_last_batch_of_each_producer() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = ProducerStateManager::default();
    state.update(&header(7, 1, 0, 3, 10), None);
    state.update(&header(7, 1, 3, 2, 13), None);
    state.update(&header_with(8, 0, 0, 1, 15, TRANSACTIONAL_FLAG_MASK), None);
    state.write_snapshot(dir.path(), 16).unwrap();
    assert_eq!(list_snapshots(dir.path()).unwrap(), vec![16]);
    let read = ProducerStateManager::read_snapshot(&snapshot_path(dir.path(), 16))
        .unwrap()
        .unwrap();
    let seven = read.entry(7).unwrap();
    assert_eq!(seven.producer_epoch, 1);
    assert_eq!(
        seven.batches().copied().collect::<Vec<_>>(),
        vec![BatchMetadata {
            first_seq: 3,
            last_seq: 4,
            last_offset: 14,
            offset_delta: 1,
            timestamp: 1_001
        }]
    );
    assert_eq!(read.entry(8).unwrap().current_txn_first_offset, Some(15));
    // The last batch is still recognised as a duplicate after the round trip.
    assert!(matches!(
        check(&read, &header(7, 1, 3, 2, 0)),
        Ok(ProducerCheck::Duplicate(BatchMetadata {
            last_offset: 14,
            ..
        }))
    ));
}

#[test]
fn a_corrupt_snapshot_reads_as_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = ProducerStateManager::default();
    state.update(&header(7, 1, 0, 3, 10), None);
    state.write_snapshot(dir.path(), 13).unwrap();
    let path = snapshot_path(dir.path(), 13);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    assert_eq!(ProducerStateManager::read_snapshot(&path).unwrap(), None);
    fs::write(&path, &bytes[..7]).unwrap();
    assert_eq!(ProducerStateManager::read_snapshot(&path).unwrap(), None);
}

#[test]
fn the_number_of_producers_is_bounded() {
    let mut state = ProducerStateManager::default();
    for id in 0..PRODUCERS_MAX as i64 + 1 {
        state.update(&header(id, 0, 0, 1, id), None);
    }
    assert!(state.len() <= PRODUCERS_MAX);
    // The newest producer is remembered; the oldest were forgotten first.
    assert!(state.entry(PRODUCERS_MAX as i64).is_some());
    assert!(state.entry(0).is_none());
}

fn commit(coordinator_epoch: i32) -> EndTxnMarker {
    EndTxnMarker {
        control_type: CONTROL_TYPE_COMMIT,
        coordinator_epoch,
    }
}

fn abort(coordinator_epoch: i32) -> EndTxnMarker {
    EndTxnMarker {
        control_type: CONTROL_TYPE_ABORT,
        coordinator_epoch,
    }
}

const MARKER: i16 = TRANSACTIONAL_FLAG_MASK | CONTROL_FLAG_MASK;

#[test]
fn open_transactions_hold_back_the_first_unstable_offset_until_their_marker() {
    let mut state = ProducerStateManager::default();
    assert_eq!(state.first_unstable_offset(), None);
    state.update(&header_with(1, 0, 0, 2, 10, TRANSACTIONAL_FLAG_MASK), None);
    state.update(&header_with(2, 0, 0, 1, 12, TRANSACTIONAL_FLAG_MASK), None);
    state.update(&header_with(1, 0, 2, 1, 13, TRANSACTIONAL_FLAG_MASK), None);
    assert_eq!(state.first_unstable_offset(), Some(10));
    let aborted = state.update(&header_with(1, 0, -1, 1, 14, MARKER), Some(abort(3)));
    assert_eq!(
        aborted,
        Some(CompletedTxn {
            producer_id: 1,
            first_offset: 10,
            last_offset: 14,
            aborted: true
        })
    );
    assert_eq!(state.first_unstable_offset(), Some(12));
    assert_eq!(state.entry(1).unwrap().coordinator_epoch, 3);
    state.update(&header_with(2, 0, -1, 1, 15, MARKER), Some(commit(3)));
    assert_eq!(state.first_unstable_offset(), None);
    // A marker for a producer with no open transaction ends nothing.
    assert_eq!(
        state.update(&header_with(2, 0, -1, 1, 16, MARKER), Some(commit(3))),
        None
    );
}

#[test]
fn a_producer_in_a_transaction_may_not_write_outside_it() {
    let mut state = ProducerStateManager::default();
    state.update(&header_with(1, 0, 0, 2, 0, TRANSACTIONAL_FLAG_MASK), None);
    assert_eq!(
        check(&state, &header(1, 0, 2, 1, 0)),
        Err(ProducerError::InvalidTxnState { producer_id: 1 })
    );
    assert_eq!(
        check(&state, &header_with(1, 0, 2, 1, 0, TRANSACTIONAL_FLAG_MASK)),
        Ok(ProducerCheck::Append)
    );
}

#[test]
fn markers_from_an_older_producer_or_coordinator_epoch_are_fenced() {
    let mut state = ProducerStateManager::default();
    state.update(&header_with(1, 4, 0, 1, 0, TRANSACTIONAL_FLAG_MASK), None);
    state.update(&header_with(1, 4, -1, 1, 1, MARKER), Some(commit(6)));
    assert_eq!(state.check_marker(1, 4, 6), Ok(()));
    assert_eq!(state.check_marker(1, 5, 7), Ok(()));
    assert_eq!(
        state.check_marker(9, 0, 0),
        Ok(()),
        "unknown producers pass"
    );
    assert_eq!(
        state.check_marker(1, 3, 6),
        Err(ProducerError::InvalidProducerEpoch {
            producer_id: 1,
            epoch: 3,
            current: 4
        })
    );
    assert_eq!(
        state.check_marker(1, 4, 5),
        Err(ProducerError::CoordinatorFenced {
            producer_id: 1,
            coordinator_epoch: 5,
            current: 6
        })
    );
}

#[test]
fn a_snapshot_keeps_open_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = ProducerStateManager::default();
    state.update(&header_with(1, 0, 0, 2, 10, TRANSACTIONAL_FLAG_MASK), None);
    state.write_snapshot(dir.path(), 12).unwrap();
    let read = ProducerStateManager::read_snapshot(&snapshot_path(dir.path(), 12))
        .unwrap()
        .unwrap();
    assert_eq!(read.first_unstable_offset(), Some(10));
}

/// KIP-890: with verification on, a transactional batch that would begin its producer's
/// transaction here needs the guard of a verification still current; a marker between the
/// verification and the append voids it, so a late batch cannot open a transaction the
/// coordinator already ended.
#[test]
fn a_transaction_begins_here_only_with_a_current_verification_guard() {
    let mut state = ProducerStateManager::default();
    let first = header_with(1, 0, 0, 2, 10, TRANSACTIONAL_FLAG_MASK);
    let unverified = ProducerError::UnverifiedTxn { producer_id: 1 };
    assert_eq!(
        state.check_client_batches([&first], TxnVerification::Guard(None)),
        Err(unverified.clone())
    );
    let guard = state
        .start_verification(1, 0, 0)
        .expect("a guard: no transaction open");
    // A retry's verification keeps the guard.
    assert_eq!(state.start_verification(1, 0, 0), Some(guard));
    assert_eq!(
        state.check_client_batches([&first], TxnVerification::Guard(Some(guard + 1))),
        Err(unverified.clone())
    );
    assert_eq!(
        state.check_client_batches([&first], TxnVerification::Guard(Some(guard))),
        Ok(ProducerCheck::Append)
    );
    state.update(&first, None);
    // Open: later batches need no guard, and no verification starts.
    assert_eq!(state.start_verification(1, 0, 0), None);
    let second = header_with(1, 0, 2, 1, 12, TRANSACTIONAL_FLAG_MASK);
    assert_eq!(
        state.check_client_batches([&second], TxnVerification::Guard(None)),
        Ok(ProducerCheck::Append)
    );
    state.update(&second, None);
    state.update(&header_with(1, 0, -1, 1, 13, MARKER), Some(commit(0)));

    // Verified, then the transaction ended (a marker) before the batch arrived: refused.
    let late_guard = state.start_verification(1, 0, 0).unwrap();
    assert_ne!(late_guard, guard);
    state.update(&header_with(1, 0, -1, 1, 14, MARKER), Some(abort(0)));
    let late = header_with(1, 0, 3, 1, 15, TRANSACTIONAL_FLAG_MASK);
    assert_eq!(
        state.check_client_batches([&late], TxnVerification::Guard(Some(late_guard))),
        Err(unverified)
    );
    // Verification off (or a follower's, a replay's append): nothing asked.
    assert_eq!(check(&state, &late), Ok(ProducerCheck::Append));
    // A newer epoch's verification replaces an older one's guard.
    let old = state.start_verification(1, 0, 0).unwrap();
    let new = state.start_verification(1, 1, 0).unwrap();
    assert_ne!(old, new);
    assert_eq!(state.start_verification(1, 0, 0), Some(new));
}

/// KIP-890 for a coordinator's append on a producer's behalf (TxnOffsetCommit's offsets): the
/// same guard rule as a client's batch, without sequence checks.
#[test]
fn coordinator_batches_begin_a_transaction_only_with_a_current_guard() {
    let mut state = ProducerStateManager::default();
    // Coordinator batches carry no sequence.
    let offsets = header_with(1, 0, -1, 1, 10, TRANSACTIONAL_FLAG_MASK);
    assert!(state.admits_coordinator_batch(&offsets, TxnVerification::Off));
    assert!(!state.admits_coordinator_batch(&offsets, TxnVerification::Guard(None)));
    let guard = state.start_verification(1, 0, 0).unwrap();
    assert!(!state.admits_coordinator_batch(&offsets, TxnVerification::Guard(Some(guard + 1))));
    assert!(state.admits_coordinator_batch(&offsets, TxnVerification::Guard(Some(guard))));
    state.update(&offsets, None);
    // Open at this epoch: more offsets need no guard.
    let more = header_with(1, 0, -1, 1, 11, TRANSACTIONAL_FLAG_MASK);
    assert!(state.admits_coordinator_batch(&more, TxnVerification::Guard(None)));
    // Verified, then a marker ended the transaction before the append: refused.
    let late_guard = state.start_verification(1, 0, 0);
    assert_eq!(
        late_guard, None,
        "the transaction is open: nothing to verify"
    );
    state.update(&header_with(1, 0, -1, 1, 12, MARKER), Some(abort(0)));
    let late = header_with(1, 0, -1, 1, 13, TRANSACTIONAL_FLAG_MASK);
    assert!(!state.admits_coordinator_batch(&late, TxnVerification::Guard(late_guard)));
    // A plain (non-transactional) batch is never asked.
    let plain = header_with(2, 0, -1, 1, 14, 0);
    assert!(state.admits_coordinator_batch(&plain, TxnVerification::Guard(None)));
}
