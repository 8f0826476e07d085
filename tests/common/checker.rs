//! A checker over the whole recorded history of a Kafka workload under faults, for the anomalies
//! Jepsen's Kafka workload looks for (issue 17): lost acknowledged writes, duplicates, reordering
//! within a partition, aborted and uncommitted reads, transactions seen in part, offsets going
//! backwards for a consumer, consumers skipping records (in what they poll, and in the offsets
//! their group commits) — plus availability: the share of seconds with acknowledged writes and the
//! longest gap between them.
//!
//! The history is what the clients saw ([`Write`]s with their acknowledgements, transactions with
//! their outcomes, [`Read`]s in each consumer's delivery order, the group's [`OffsetCommit`]s),
//! plus the final state: every partition read from the beginning with `read_committed` once the
//! faults are over ([`History::final_log`]). Every record carries its own identity in its value
//! ([`RecordId`]: producer and that producer's sequence number), so the checker needs no other
//! bookkeeping. Times are the test process's wall clock in seconds; one clock, so "before" is
//! exact.
//!
//! What counts as an anomaly, and why it is one:
//! - **lost**: an acknowledged acks=all write (or one of a transaction whose commit returned
//!   success) missing from the final log, or found at another offset than it was acknowledged at;
//!   a `read_committed` consumer read a record that the final log does not hold (**lost after
//!   read**).
//! - **duplicate**: a record id twice in the final log (the producers are idempotent).
//! - **reordered**: within a partition, a producer's records out of its send order.
//! - **aborted read**: a record of a transaction whose abort returned success, seen by a
//!   `read_committed` consumer or in the final log.
//! - **uncommitted read**: a record of a transaction read before its producer asked to commit it
//!   (or of one never asked to commit).
//! - **partial transaction**: some but not all records of a transaction not known to be aborted
//!   in the final log.
//! - **non-monotonic**: a consumer, within one assignment generation, polled an offset not above
//!   the one before it in that partition.
//! - **skip**: a consumer, within one generation, polled offsets `a` then `b` while the final log
//!   holds a record between them; or the group committed offset `o` for a partition while a
//!   record below `o` had not been delivered to any of its consumers yet.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Wall-clock seconds of the test process.
pub type Time = f64;

/// A record's identity, written as its value: `p<producer>-<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    pub producer: u32,
    /// The producer's own count, in send order.
    pub seq: u64,
}

impl RecordId {
    pub fn new(producer: u32, seq: u64) -> RecordId {
        RecordId { producer, seq }
    }

    pub fn encode(self) -> String {
        format!("p{}-{}", self.producer, self.seq)
    }

    pub fn decode(value: &[u8]) -> Option<RecordId> {
        let text = std::str::from_utf8(value).ok()?;
        let (producer, seq) = text.strip_prefix('p')?.split_once('-')?;
        Some(RecordId::new(producer.parse().ok()?, seq.parse().ok()?))
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}-{}", self.producer, self.seq)
    }
}

/// One record a producer sent.
#[derive(Debug, Clone)]
pub struct Write {
    pub id: RecordId,
    pub partition: i32,
    /// The transaction it was sent in, if any.
    pub txn: Option<u64>,
    /// The delivery report's offset and when it came. For a record outside a transaction that
    /// is the acks=all acknowledgement; inside one, the commit is what makes it count. A
    /// negative offset is a success whose offset the client does not know (librdkafka reports
    /// -1001 for a batch it learnt was written from a later one's answer): the record must be
    /// in its partition, at any offset.
    pub ack: Option<(i64, Time)>,
}

/// How a transaction ended, as its producer saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TxnOutcome {
    /// `commit_transaction` returned success at `done`.
    Committed { done: Time },
    /// `abort_transaction` returned success.
    Aborted,
    /// Neither is known (a commit or abort that failed or timed out, a producer that died).
    Unknown,
}

#[derive(Debug, Clone, Copy)]
pub struct Txn {
    /// When its producer called `commit_transaction`, if it did.
    pub commit_requested: Option<Time>,
    pub outcome: TxnOutcome,
}

/// One record a consumer polled, in that consumer's delivery order.
#[derive(Debug, Clone, Copy)]
pub struct Read {
    pub consumer: u32,
    /// The consumer's assignment generation: bumped at every rebalance, after which starting
    /// again from the committed offset is allowed.
    pub generation: u64,
    pub partition: i32,
    pub offset: i64,
    pub id: RecordId,
    pub at: Time,
}

/// An offset the consumer group committed (the next offset to read), and when it asked to.
#[derive(Debug, Clone, Copy)]
pub struct OffsetCommit {
    pub consumer: u32,
    pub partition: i32,
    pub offset: i64,
    pub at: Time,
}

#[derive(Debug, Clone, Default)]
pub struct History {
    pub writes: Vec<Write>,
    pub txns: BTreeMap<u64, Txn>,
    pub reads: Vec<Read>,
    pub commits: Vec<OffsetCommit>,
    /// Every partition read from the beginning with `read_committed` at the end: (offset, id),
    /// in offset order.
    pub final_log: BTreeMap<i32, Vec<(i64, RecordId)>>,
    /// Errors the clients reported that ended a client instance (not judged: reported).
    pub client_errors: Vec<String>,
    /// The workload's span, for availability.
    pub start: Time,
    pub end: Time,
}

/// Where a read was made: by a consumer of the group, or the final read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    Consumer(u32),
    Final,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Anomaly {
    Lost {
        id: RecordId,
        partition: i32,
        acked_offset: Option<i64>,
        found: Option<(i32, i64)>,
    },
    LostAfterRead {
        consumer: u32,
        id: RecordId,
        partition: i32,
        offset: i64,
    },
    Duplicate {
        id: RecordId,
        at: Vec<(i32, i64)>,
    },
    Reordered {
        partition: i32,
        earlier: (i64, RecordId),
        later: (i64, RecordId),
    },
    AbortedRead {
        reader: Reader,
        txn: u64,
        id: RecordId,
    },
    UncommittedRead {
        consumer: u32,
        txn: u64,
        id: RecordId,
        at: Time,
        commit_requested: Option<Time>,
    },
    PartialTxn {
        txn: u64,
        present: usize,
        sent: usize,
    },
    NonMonotonic {
        consumer: u32,
        partition: i32,
        previous: i64,
        next: i64,
    },
    PollSkip {
        consumer: u32,
        partition: i32,
        previous: i64,
        next: i64,
        skipped: i64,
    },
    CommitSkip {
        consumer: u32,
        partition: i32,
        committed: i64,
        undelivered: i64,
    },
}

impl Anomaly {
    /// The anomaly's kind, for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            Anomaly::Lost { .. } => "lost",
            Anomaly::LostAfterRead { .. } => "lost after read",
            Anomaly::Duplicate { .. } => "duplicate",
            Anomaly::Reordered { .. } => "reordered",
            Anomaly::AbortedRead { .. } => "aborted read",
            Anomaly::UncommittedRead { .. } => "uncommitted read",
            Anomaly::PartialTxn { .. } => "partial transaction",
            Anomaly::NonMonotonic { .. } => "non-monotonic poll",
            Anomaly::PollSkip { .. } => "poll skip",
            Anomaly::CommitSkip { .. } => "commit skip",
        }
    }
}

/// Availability of writes over the history's span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Availability {
    /// Whole seconds of the span.
    pub seconds: usize,
    /// Share of those seconds in which at least one write was acknowledged (a record outside a
    /// transaction acknowledged, or a transaction's commit returned).
    pub share: f64,
    /// The longest time without an acknowledgement, the span's ends included.
    pub longest_gap: f64,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub anomalies: Vec<Anomaly>,
    pub availability: Availability,
}

impl Report {
    /// `kind: count` for every kind found, e.g. `lost: 2, duplicate: 1`; `none` when clean.
    pub fn summary(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for anomaly in &self.anomalies {
            *counts.entry(anomaly.kind()).or_default() += 1;
        }
        if counts.is_empty() {
            return "none".into();
        }
        counts
            .iter()
            .map(|(kind, n)| format!("{kind}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Checks a whole history.
pub fn check(history: &History) -> Report {
    let mut anomalies = Vec::new();
    let located = locate(history);
    lost_writes(history, &located, &mut anomalies);
    duplicates(&located, &mut anomalies);
    reordering(history, &mut anomalies);
    transactions(history, &located, &mut anomalies);
    consumer_reads(history, &located, &mut anomalies);
    commit_skips(history, &mut anomalies);
    Report {
        anomalies,
        availability: availability(history),
    }
}

/// Where each id is in the final log.
fn locate(history: &History) -> HashMap<RecordId, Vec<(i32, i64)>> {
    let mut located: HashMap<RecordId, Vec<(i32, i64)>> = HashMap::new();
    for (&partition, records) in &history.final_log {
        for &(offset, id) in records {
            located.entry(id).or_default().push((partition, offset));
        }
    }
    located
}

/// A write counts once acknowledged outside a transaction, or once its transaction's commit
/// returned success.
fn must_be_present(history: &History, write: &Write) -> bool {
    match write.txn {
        None => write.ack.is_some(),
        Some(txn) => history
            .txns
            .get(&txn)
            .is_some_and(|t| matches!(t.outcome, TxnOutcome::Committed { .. })),
    }
}

fn lost_writes(
    history: &History,
    located: &HashMap<RecordId, Vec<(i32, i64)>>,
    anomalies: &mut Vec<Anomaly>,
) {
    for write in history
        .writes
        .iter()
        .filter(|w| must_be_present(history, w))
    {
        let places = located.get(&write.id).map(Vec::as_slice).unwrap_or(&[]);
        let acked_offset = write.ack.map(|(offset, _)| offset);
        let in_place = places.iter().any(|&(partition, offset)| {
            partition == write.partition
                && acked_offset.is_none_or(|acked| acked < 0 || acked == offset)
        });
        if !in_place {
            anomalies.push(Anomaly::Lost {
                id: write.id,
                partition: write.partition,
                acked_offset,
                found: places.first().copied(),
            });
        }
    }
}

fn duplicates(located: &HashMap<RecordId, Vec<(i32, i64)>>, anomalies: &mut Vec<Anomaly>) {
    let mut found: Vec<Anomaly> = located
        .iter()
        .filter(|(_, places)| places.len() > 1)
        .map(|(id, places)| Anomaly::Duplicate {
            id: *id,
            at: places.clone(),
        })
        .collect();
    found.sort_by_key(|a| match a {
        Anomaly::Duplicate { id, .. } => *id,
        _ => unreachable!(),
    });
    anomalies.extend(found);
}

/// Within a partition, each producer's records in its send order.
fn reordering(history: &History, anomalies: &mut Vec<Anomaly>) {
    for (&partition, records) in &history.final_log {
        let mut last: HashMap<u32, (i64, RecordId)> = HashMap::new();
        for &(offset, id) in records {
            if let Some(&(earlier_offset, earlier)) = last.get(&id.producer) {
                if earlier.seq > id.seq {
                    anomalies.push(Anomaly::Reordered {
                        partition,
                        earlier: (earlier_offset, earlier),
                        later: (offset, id),
                    });
                    continue;
                }
            }
            last.insert(id.producer, (offset, id));
        }
    }
}

/// Aborted transactions invisible, the others all or nothing.
fn transactions(
    history: &History,
    located: &HashMap<RecordId, Vec<(i32, i64)>>,
    anomalies: &mut Vec<Anomaly>,
) {
    let mut sent: BTreeMap<u64, Vec<RecordId>> = BTreeMap::new();
    for write in &history.writes {
        if let Some(txn) = write.txn {
            sent.entry(txn).or_default().push(write.id);
        }
    }
    for (txn, ids) in sent {
        let present: Vec<RecordId> = ids
            .iter()
            .copied()
            .filter(|id| located.contains_key(id))
            .collect();
        let aborted = history
            .txns
            .get(&txn)
            .is_some_and(|t| t.outcome == TxnOutcome::Aborted);
        if aborted {
            anomalies.extend(present.into_iter().map(|id| Anomaly::AbortedRead {
                reader: Reader::Final,
                txn,
                id,
            }));
        } else if !present.is_empty() && present.len() < ids.len() {
            anomalies.push(Anomaly::PartialTxn {
                txn,
                present: present.len(),
                sent: ids.len(),
            });
        }
    }
}

/// What consumers polled: committed data only, each generation moving forward without gaps.
fn consumer_reads(
    history: &History,
    located: &HashMap<RecordId, Vec<(i32, i64)>>,
    anomalies: &mut Vec<Anomaly>,
) {
    let txn_of: HashMap<RecordId, u64> = history
        .writes
        .iter()
        .filter_map(|w| w.txn.map(|txn| (w.id, txn)))
        .collect();
    let final_offsets: BTreeMap<i32, Vec<i64>> = history
        .final_log
        .iter()
        .map(|(&p, records)| (p, records.iter().map(|(offset, _)| *offset).collect()))
        .collect();
    let mut previous: HashMap<(u32, u64, i32), i64> = HashMap::new();
    for read in &history.reads {
        if let Some(&txn) = txn_of.get(&read.id) {
            let t = history.txns.get(&txn);
            if t.is_some_and(|t| t.outcome == TxnOutcome::Aborted) {
                anomalies.push(Anomaly::AbortedRead {
                    reader: Reader::Consumer(read.consumer),
                    txn,
                    id: read.id,
                });
            } else {
                let requested = t.and_then(|t| t.commit_requested);
                if requested.is_none_or(|requested| read.at < requested) {
                    anomalies.push(Anomaly::UncommittedRead {
                        consumer: read.consumer,
                        txn,
                        id: read.id,
                        at: read.at,
                        commit_requested: requested,
                    });
                }
            }
        }
        if !located
            .get(&read.id)
            .is_some_and(|places| places.contains(&(read.partition, read.offset)))
        {
            anomalies.push(Anomaly::LostAfterRead {
                consumer: read.consumer,
                id: read.id,
                partition: read.partition,
                offset: read.offset,
            });
        }
        let key = (read.consumer, read.generation, read.partition);
        if let Some(&before) = previous.get(&key) {
            if read.offset <= before {
                anomalies.push(Anomaly::NonMonotonic {
                    consumer: read.consumer,
                    partition: read.partition,
                    previous: before,
                    next: read.offset,
                });
            } else if let Some(skipped) =
                first_between(&final_offsets, read.partition, before, read.offset)
            {
                anomalies.push(Anomaly::PollSkip {
                    consumer: read.consumer,
                    partition: read.partition,
                    previous: before,
                    next: read.offset,
                    skipped,
                });
            }
        }
        previous.insert(key, read.offset);
    }
}

/// The first offset of the final log of `partition` strictly between `low` and `high`.
fn first_between(
    final_offsets: &BTreeMap<i32, Vec<i64>>,
    partition: i32,
    low: i64,
    high: i64,
) -> Option<i64> {
    let offsets = final_offsets.get(&partition)?;
    let index = offsets.partition_point(|&o| o <= low);
    offsets.get(index).copied().filter(|&o| o < high)
}

/// A committed offset `o` says every record below `o` was processed: each must have been
/// delivered to some consumer of the group before the commit was asked for.
fn commit_skips(history: &History, anomalies: &mut Vec<Anomaly>) {
    let mut first_delivery: HashMap<(i32, i64), Time> = HashMap::new();
    for read in &history.reads {
        let at = first_delivery
            .entry((read.partition, read.offset))
            .or_insert(read.at);
        *at = at.min(read.at);
    }
    for (&partition, records) in &history.final_log {
        // The latest first delivery among the records up to each index.
        let mut latest = Vec::with_capacity(records.len());
        let mut so_far = f64::NEG_INFINITY;
        for (offset, _) in records {
            let delivered = first_delivery
                .get(&(partition, *offset))
                .copied()
                .unwrap_or(f64::INFINITY);
            so_far = so_far.max(delivered);
            latest.push(so_far);
        }
        for commit in history.commits.iter().filter(|c| c.partition == partition) {
            let below = records.partition_point(|(offset, _)| *offset < commit.offset);
            if below == 0 || latest[below - 1] <= commit.at {
                continue;
            }
            let undelivered = records[..below]
                .iter()
                .find(|(offset, _)| {
                    first_delivery
                        .get(&(partition, *offset))
                        .is_none_or(|&at| at > commit.at)
                })
                .map_or(-1, |(offset, _)| *offset);
            anomalies.push(Anomaly::CommitSkip {
                consumer: commit.consumer,
                partition,
                committed: commit.offset,
                undelivered,
            });
        }
    }
}

fn availability(history: &History) -> Availability {
    let mut times: Vec<Time> = history
        .writes
        .iter()
        .filter(|w| w.txn.is_none())
        .filter_map(|w| w.ack.map(|(_, at)| at))
        .chain(history.txns.values().filter_map(|t| match t.outcome {
            TxnOutcome::Committed { done } => Some(done),
            _ => None,
        }))
        .filter(|&at| at >= history.start && at <= history.end)
        .collect();
    times.sort_by(f64::total_cmp);
    let span = (history.end - history.start).max(0.0);
    let seconds = span.ceil().max(1.0) as usize;
    let mut with_acks = vec![false; seconds];
    for at in &times {
        let slot = ((at - history.start) as usize).min(seconds - 1);
        with_acks[slot] = true;
    }
    let share = with_acks.iter().filter(|s| **s).count() as f64 / seconds as f64;
    let mut bounds = vec![history.start];
    bounds.extend(&times);
    bounds.push(history.end);
    let longest_gap = bounds.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    Availability {
        seconds,
        share,
        longest_gap,
    }
}
