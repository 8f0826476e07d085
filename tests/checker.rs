//! The fault suite's history checker (tests/common/checker.rs) on hand-made histories: a clean
//! one passes, and each anomaly it exists for is found, exactly, in a history made to have it.

mod common;

use common::checker::{
    check, Anomaly, History, OffsetCommit, Read, Reader, RecordId, Txn, TxnOutcome, Write,
};

fn id(producer: u32, seq: u64) -> RecordId {
    RecordId::new(producer, seq)
}

/// A clean history: producer 1 (idempotent) wrote p1-0 and p1-1 to partition 0 (offsets 0, 1);
/// producer 2 committed transaction 7 (p2-0 to partition 0 at offset 2, p2-1 to partition 1 at
/// offset 0; commit asked at 10.0, done at 10.5) and aborted transaction 8 (p2-2 to partition 1,
/// offset 1; its abort marker at 2). Consumer 1 polled everything committed, in order, after
/// the commit, and committed offsets 3 and 3 (past partition 1's abort marker).
fn clean() -> History {
    let write = |id, partition, txn, ack: Option<(i64, f64)>| Write {
        id,
        partition,
        txn,
        ack,
    };
    let read = |partition, offset, id, at| Read {
        consumer: 1,
        generation: 1,
        partition,
        offset,
        id,
        at,
    };
    History {
        writes: vec![
            write(id(1, 0), 0, None, Some((0, 9.0))),
            write(id(1, 1), 0, None, Some((1, 9.2))),
            write(id(2, 0), 0, Some(7), Some((2, 9.8))),
            write(id(2, 1), 1, Some(7), Some((0, 9.9))),
            write(id(2, 2), 1, Some(8), Some((1, 11.0))),
        ],
        txns: [
            (
                7,
                Txn {
                    commit_requested: Some(10.0),
                    outcome: TxnOutcome::Committed { done: 10.5 },
                },
            ),
            (
                8,
                Txn {
                    commit_requested: None,
                    outcome: TxnOutcome::Aborted,
                },
            ),
        ]
        .into(),
        reads: vec![
            read(0, 0, id(1, 0), 9.5),
            read(0, 1, id(1, 1), 9.6),
            read(0, 2, id(2, 0), 10.6),
            read(1, 0, id(2, 1), 10.6),
        ],
        commits: vec![
            OffsetCommit {
                consumer: 1,
                partition: 0,
                offset: 3,
                at: 12.0,
            },
            OffsetCommit {
                consumer: 1,
                partition: 1,
                offset: 3,
                at: 12.0,
            },
        ],
        final_log: [
            (0, vec![(0, id(1, 0)), (1, id(1, 1)), (2, id(2, 0))]),
            (1, vec![(0, id(2, 1))]),
        ]
        .into(),
        client_errors: Vec::new(),
        start: 8.5,
        end: 12.5,
    }
}

#[test]
fn a_clean_history_has_no_anomaly_and_its_availability() {
    let report = check(&clean());
    assert_eq!(report.anomalies, vec![]);
    assert_eq!(report.summary(), "none");
    // Second [8.5, 9.5) had the two acknowledgements, [10.5, 11.5) the commit's return (a
    // transaction's records count when it commits, not when delivered); the others none.
    assert_eq!(report.availability.seconds, 4);
    assert_eq!(report.availability.share, 0.5);
    assert_eq!(report.availability.longest_gap, 2.0); // 10.5 to the end at 12.5
}

#[test]
fn record_ids_round_trip_through_record_values() {
    assert_eq!(RecordId::decode(b"p3-42"), Some(id(3, 42)));
    assert_eq!(
        RecordId::decode(id(3, 42).encode().as_bytes()),
        Some(id(3, 42))
    );
    assert_eq!(RecordId::decode(b"chaos-1"), None);
    assert_eq!(RecordId::decode(b"p3-"), None);
}

#[test]
fn an_acknowledged_write_missing_from_the_log_is_lost() {
    let mut history = clean();
    history.final_log.get_mut(&0).unwrap().remove(1); // p1-1 at offset 1 gone
    history.reads.remove(1); // (nobody read it either)
    let report = check(&history);
    assert_eq!(
        report.anomalies,
        vec![Anomaly::Lost {
            id: id(1, 1),
            partition: 0,
            acked_offset: Some(1),
            found: None
        }]
    );
}

#[test]
fn an_acknowledged_write_at_another_offset_is_lost_from_its_place() {
    let mut history = clean();
    // Offsets 1 and 2 swapped: p1-1 (acknowledged at 1) is at 2, p2-0 (acknowledged at 2) at
    // 1; both are lost from their places.
    history
        .final_log
        .insert(0, vec![(0, id(1, 0)), (1, id(2, 0)), (2, id(1, 1))]);
    history.reads = vec![];
    history.commits = vec![];
    assert_eq!(
        check(&history).anomalies,
        vec![
            Anomaly::Lost {
                id: id(1, 1),
                partition: 0,
                acked_offset: Some(1),
                found: Some((0, 2))
            },
            Anomaly::Lost {
                id: id(2, 0),
                partition: 0,
                acked_offset: Some(2),
                found: Some((0, 1))
            }
        ]
    );
}

/// librdkafka acknowledges some writes without their offset (-1001): present anywhere in their
/// partition is enough, missing is still lost.
#[test]
fn a_write_acknowledged_without_its_offset_must_be_in_its_partition() {
    let mut history = clean();
    history.writes[1].ack = Some((-1001, 9.2));
    assert_eq!(check(&history).anomalies, vec![]);
    history.final_log.get_mut(&0).unwrap().remove(1);
    history.reads.remove(1);
    assert_eq!(
        check(&history).anomalies,
        vec![Anomaly::Lost {
            id: id(1, 1),
            partition: 0,
            acked_offset: Some(-1001),
            found: None
        }]
    );
}

#[test]
fn a_committed_transactions_record_missing_is_lost_and_partial() {
    let mut history = clean();
    history.final_log.insert(1, vec![]); // p2-1 of committed txn 7 gone
    history.reads.retain(|r| r.partition != 1);
    history.commits.retain(|c| c.partition != 1);
    let report = check(&history);
    assert_eq!(
        report.anomalies,
        vec![
            Anomaly::Lost {
                id: id(2, 1),
                partition: 1,
                acked_offset: Some(0),
                found: None
            },
            Anomaly::PartialTxn {
                txn: 7,
                present: 1,
                sent: 2
            }
        ]
    );
    assert_eq!(report.summary(), "lost: 1, partial transaction: 1");
}

#[test]
fn an_unacknowledged_write_may_be_missing_or_present() {
    let mut history = clean();
    history.writes.push(Write {
        id: id(1, 2),
        partition: 0,
        txn: None,
        ack: None,
    });
    assert_eq!(check(&history).anomalies, vec![]);
    history.final_log.get_mut(&0).unwrap().push((3, id(1, 2)));
    history.commits.clear();
    assert_eq!(check(&history).anomalies, vec![]);
}

#[test]
fn a_record_twice_in_the_log_is_a_duplicate() {
    let mut history = clean();
    history.final_log.get_mut(&0).unwrap().push((3, id(1, 1)));
    history.commits.clear();
    assert_eq!(
        check(&history).anomalies,
        vec![Anomaly::Duplicate {
            id: id(1, 1),
            at: vec![(0, 1), (0, 3)]
        }]
    );
}

#[test]
fn a_producers_records_out_of_send_order_are_reordered() {
    let mut history = clean();
    history.writes[0].ack = None; // not acknowledged, so only the order is wrong
    history.writes[1].ack = None;
    history
        .final_log
        .insert(0, vec![(0, id(1, 1)), (1, id(1, 0)), (2, id(2, 0))]);
    history.reads.clear();
    history.commits.clear();
    assert_eq!(
        check(&history).anomalies,
        vec![Anomaly::Reordered {
            partition: 0,
            earlier: (0, id(1, 1)),
            later: (1, id(1, 0))
        }]
    );
}

#[test]
fn an_aborted_record_read_or_in_the_log_is_an_aborted_read() {
    let mut history = clean();
    history.reads.push(Read {
        consumer: 1,
        generation: 1,
        partition: 1,
        offset: 1,
        id: id(2, 2),
        at: 11.5,
    });
    history.final_log.get_mut(&1).unwrap().push((1, id(2, 2)));
    assert_eq!(
        check(&history).anomalies,
        vec![
            Anomaly::AbortedRead {
                reader: Reader::Final,
                txn: 8,
                id: id(2, 2)
            },
            Anomaly::AbortedRead {
                reader: Reader::Consumer(1),
                txn: 8,
                id: id(2, 2)
            },
        ]
    );
}

#[test]
fn a_transactional_record_read_before_its_commit_is_an_uncommitted_read() {
    let mut history = clean();
    history.reads[2].at = 9.9; // p2-0 polled before the commit was asked for at 10.0
    assert_eq!(
        check(&history).anomalies,
        vec![Anomaly::UncommittedRead {
            consumer: 1,
            txn: 7,
            id: id(2, 0),
            at: 9.9,
            commit_requested: Some(10.0)
        }]
    );
}

#[test]
fn a_read_of_a_record_the_log_does_not_hold_is_lost_after_read() {
    let mut history = clean();
    history.writes[1].ack = None; // not acknowledged: only the read makes it count
    history.final_log.get_mut(&0).unwrap().remove(1);
    history.commits.clear();
    assert_eq!(
        check(&history).anomalies,
        vec![Anomaly::LostAfterRead {
            consumer: 1,
            id: id(1, 1),
            partition: 0,
            offset: 1
        }]
    );
}

#[test]
fn a_consumer_going_back_within_a_generation_is_non_monotonic_but_not_after_a_rebalance() {
    let mut history = clean();
    let mut again = history.reads[0];
    again.at = 11.0;
    history.reads.push(again); // offset 0 again, same generation
    assert_eq!(
        check(&history).anomalies,
        vec![Anomaly::NonMonotonic {
            consumer: 1,
            partition: 0,
            previous: 2,
            next: 0
        }]
    );
    history.reads.last_mut().unwrap().generation = 2; // after a rebalance: allowed
    assert_eq!(check(&history).anomalies, vec![]);
}

#[test]
fn a_consumer_jumping_over_a_record_is_a_poll_skip() {
    let mut history = clean();
    history.reads.remove(1); // polled 0 then 2: offset 1 skipped
    history.commits.clear();
    assert_eq!(
        check(&history).anomalies,
        vec![Anomaly::PollSkip {
            consumer: 1,
            partition: 0,
            previous: 0,
            next: 2,
            skipped: 1
        }]
    );
}

#[test]
fn an_offset_committed_past_an_undelivered_record_is_a_commit_skip() {
    let mut history = clean();
    history.commits[0].at = 9.55; // offset 3 committed when only offset 0 had been delivered
    assert_eq!(
        check(&history).anomalies,
        vec![Anomaly::CommitSkip {
            consumer: 1,
            partition: 0,
            committed: 3,
            undelivered: 1
        }]
    );
}
