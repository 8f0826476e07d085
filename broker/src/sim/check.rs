//! The invariants, checked against the real logs and replica states after every tick.
//!
//! The committed history of each partition is built as replicas' high watermarks pass batches:
//! the first replica to have a batch below its high watermark fixes what is committed at those
//! offsets, and every other replica, at any later time, must have the same batch there (batches
//! are known by their first timestamp, unique per produce). Each log is read only above what was
//! compared already, from wherever it was last cut.
//!
//! Exposures: a power-off that cuts records from a replica leaves it without records it may
//! have reported having (the leader counts them for the high watermark and for joining the ISR,
//! from fetches sent before, even after the power-off), which Kafka's replication takes for
//! granted. A later disagreement at those offsets is such a loss coming to light: its committed
//! batches are counted (acknowledged ones apart) and the history goes on from the new leader's.
//! A disagreement anywhere else fails the run.

use std::collections::BTreeMap;

use skald_protocol::batch::RecordBatches;

use super::broker::SimBroker;
use super::trace;

/// A batch in the committed history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Batch {
    base_offset: i64,
    last_offset: i64,
    /// Its first timestamp.
    id: i64,
    leader_epoch: i32,
}

/// What the checker saw, for the statistics line.
#[derive(Debug, Default, Clone)]
pub(crate) struct Seen {
    pub(crate) committed_batches: u64,
    pub(crate) acknowledged: u64,
    pub(crate) leader_epochs: u64,
    /// Power-offs that cut committed offsets from an ISR member.
    pub(crate) exposures: u64,
    /// Committed batches lost through an exposure, and of those the acknowledged ones.
    pub(crate) committed_lost_to_exposure: u64,
    pub(crate) acknowledged_lost_to_exposure: u64,
}

#[derive(Default)]
pub(super) struct Checker {
    seed: u64,
    /// By (partition, base offset).
    committed: BTreeMap<(i32, i64), Batch>,
    /// Acknowledged batches, by (partition, base offset): their id.
    acknowledged: BTreeMap<(i32, i64), i64>,
    /// How far each (broker, partition)'s log was compared.
    verified: BTreeMap<(i32, i32), i64>,
    /// The leader of each (partition, leader epoch).
    leaders: BTreeMap<(i32, i32), i32>,
    /// Each (broker, partition)'s current leadership, as (incarnation, leader epoch, HW).
    leaderships: BTreeMap<(i32, i32), (u64, i32, i64)>,
    /// Offsets `[from, to)` of a partition cut from an ISR member by a power-off.
    exposures: Vec<(i32, i64, i64)>,
    pub(super) seen: Seen,
}

impl Checker {
    pub(super) fn new(seed: u64) -> Checker {
        Checker {
            seed,
            ..Checker::default()
        }
    }

    /// Every invariant, over every running broker (a paused one too: its state is as it left it).
    pub(super) fn check(&mut self, brokers: &mut BTreeMap<i32, SimBroker>) {
        for broker in brokers.values_mut().filter(|b| b.up) {
            let (id, incarnation) = (broker.id, broker.incarnation);
            for (partition, replica) in &mut broker.replicas {
                let high_watermark = replica.state.high_watermark;
                let log_end_offset = replica.log.log_end_offset();
                assert!(
                    high_watermark <= log_end_offset,
                    "seed {}: broker {id}'s high watermark {high_watermark} of partition \
                     {partition} is past its log end {log_end_offset}",
                    self.seed
                );
                if let Some(leader) = replica.state.leader() {
                    self.check_leader(
                        id,
                        incarnation,
                        *partition,
                        leader.leader_epoch,
                        high_watermark,
                    );
                } else {
                    self.leaderships.remove(&(id, *partition));
                }
                let key = (id, *partition);
                let verified = self
                    .verified
                    .get(&key)
                    .copied()
                    .unwrap_or(0)
                    .min(replica.lowest_end_since_check);
                replica.lowest_end_since_check = log_end_offset;
                let verified = self.compare(id, *partition, &replica.log, verified, high_watermark);
                self.verified.insert(key, verified);
            }
        }
    }

    /// At most one leader per leader epoch; a leader's high watermark only grows.
    fn check_leader(
        &mut self,
        id: i32,
        incarnation: u64,
        partition: i32,
        leader_epoch: i32,
        high_watermark: i64,
    ) {
        let seed = self.seed;
        let leader = *self
            .leaders
            .entry((partition, leader_epoch))
            .or_insert_with(|| {
                self.seen.leader_epochs += 1;
                id
            });
        assert_eq!(
            leader, id,
            "seed {seed}: two leaders of partition {partition} in leader epoch {leader_epoch}: \
             brokers {leader} and {id}"
        );
        let now = (incarnation, leader_epoch, high_watermark);
        if let Some(before) = self.leaderships.insert((id, partition), now) {
            if before.0 == incarnation && before.1 == leader_epoch {
                assert!(
                    high_watermark >= before.2,
                    "seed {seed}: the high watermark of partition {partition} went backwards on \
                     its leader {id} in leader epoch {leader_epoch}: {} -> {high_watermark}",
                    before.2
                );
            }
        }
    }

    /// Compares `log` from `from` up to its high watermark with the committed history; returns
    /// how far it got (a batch boundary).
    fn compare(
        &mut self,
        id: i32,
        partition: i32,
        log: &skald_storage::Log,
        mut from: i64,
        high_watermark: i64,
    ) -> i64 {
        while from < high_watermark {
            let read = log
                .read(from, 1 << 16)
                .expect("the simulation's disk never fails");
            let mut progressed = false;
            for batch in RecordBatches::headers_only(&read.records) {
                let (_, header) = batch.expect("a log holds whole batches");
                if header.last_offset() >= high_watermark {
                    return from;
                }
                if header.base_offset >= from {
                    self.agree(
                        id,
                        partition,
                        Batch {
                            base_offset: header.base_offset,
                            last_offset: header.last_offset(),
                            id: header.base_timestamp,
                            leader_epoch: header.partition_leader_epoch,
                        },
                    );
                }
                from = header.next_offset();
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        from
    }

    /// Broker `id` has `batch` below its high watermark: it must be what is committed there.
    fn agree(&mut self, id: i32, partition: i32, batch: Batch) {
        let overlapping = self
            .committed
            .range((partition, i64::MIN)..=(partition, batch.last_offset))
            .next_back()
            .filter(|((p, _), committed)| {
                *p == partition && committed.last_offset >= batch.base_offset
            })
            .map(|(_, committed)| *committed);
        let Some(committed) = overlapping else {
            self.committed.insert((partition, batch.base_offset), batch);
            self.seen.committed_batches += 1;
            return;
        };
        if committed == batch {
            return;
        }
        let from = committed.base_offset.min(batch.base_offset);
        if self.exposed(partition, from) {
            trace!(
                "exposure: broker {id} has batch {batch:?} of partition {partition} below its \
                 high watermark where {committed:?} was committed"
            );
            self.forget_from(partition, from);
            self.committed.insert((partition, batch.base_offset), batch);
            self.seen.committed_batches += 1;
            return;
        }
        let acknowledged = self
            .acknowledged
            .get(&(partition, committed.base_offset))
            .is_some_and(|id| *id == committed.id);
        panic!(
            "seed {}: replicas disagree below the high watermark: broker {id} has batch {} at \
             offsets {}..={} (leader epoch {}) of partition {partition}, where batch {} at \
             {}..={} (leader epoch {}) was committed{}",
            self.seed,
            batch.id,
            batch.base_offset,
            batch.last_offset,
            batch.leader_epoch,
            committed.id,
            committed.base_offset,
            committed.last_offset,
            committed.leader_epoch,
            if acknowledged {
                " and acknowledged: an acknowledged acks=all record was lost"
            } else {
                ""
            }
        );
    }

    fn exposed(&self, partition: i32, offset: i64) -> bool {
        self.exposures
            .iter()
            .any(|(p, from, to)| *p == partition && *from <= offset && offset < *to)
    }

    /// The history of `partition` from `offset` on was lost through an exposure.
    fn forget_from(&mut self, partition: i32, offset: i64) {
        let lost: Vec<(i32, i64)> = self
            .committed
            .range((partition, offset)..(partition + 1, i64::MIN))
            .map(|(key, _)| *key)
            .collect();
        for key in lost {
            self.committed.remove(&key);
            self.seen.committed_lost_to_exposure += 1;
            if self.acknowledged.remove(&key).is_some() {
                self.seen.acknowledged_lost_to_exposure += 1;
            }
        }
    }

    /// A power-off cut `partition` on a broker from `before` to `after`. Every offset cut is
    /// exposed, whether the broker is in the ISR or not: fetches it sent before, from the
    /// records it has just lost, may still reach its leader, which counts them for the high
    /// watermark and may take it into the ISR on them.
    pub(super) fn powered_off(&mut self, partition: i32, before: i64, after: i64) {
        if after < before {
            self.exposures.push((partition, after, before));
            self.seen.exposures += 1;
        }
    }

    /// The client was told `batch_id` is at `base_offset`: it must be committed there.
    pub(super) fn acknowledged(&mut self, partition: i32, base_offset: i64, batch_id: i64) {
        self.seen.acknowledged += 1;
        let committed = self.committed.get(&(partition, base_offset));
        if committed.is_some_and(|batch| batch.id == batch_id) {
            self.acknowledged.insert((partition, base_offset), batch_id);
        } else if self.exposed(partition, base_offset) {
            self.seen.acknowledged_lost_to_exposure += 1;
        } else {
            panic!(
                "seed {}: batch {batch_id} was acknowledged at offset {base_offset} of \
                 partition {partition}, where the committed batch is {committed:?}",
                self.seed
            );
        }
    }

    /// After healing, with every replica caught up: each acknowledged batch is below every
    /// replica's high watermark, so `check` has compared it everywhere — unless an exposure cut
    /// it (then it is counted).
    pub(super) fn all_acknowledged_kept(&mut self, brokers: &BTreeMap<i32, SimBroker>) {
        let high_watermarks: BTreeMap<i32, i64> = (0..super::PARTITIONS)
            .map(|partition| {
                let lowest = brokers
                    .values()
                    .map(|b| b.replicas[&partition].state.high_watermark)
                    .min()
                    .unwrap_or(0);
                (partition, lowest)
            })
            .collect();
        for partition in 0..super::PARTITIONS {
            let end = high_watermarks[&partition];
            let lost_from = self
                .committed
                .range((partition, i64::MIN)..(partition + 1, i64::MIN))
                .map(|(_, batch)| batch)
                .find(|batch| batch.last_offset >= end)
                .map(|batch| batch.base_offset);
            let Some(from) = lost_from else {
                continue;
            };
            let acknowledged = self
                .acknowledged
                .range((partition, from)..(partition + 1, i64::MIN))
                .next()
                .is_some();
            assert!(
                self.exposed(partition, from),
                "seed {}: committed records were lost: partition {partition} ends at {end} \
                 after healing, where committed batches reached past {from}{}",
                self.seed,
                if acknowledged {
                    ", acknowledged ones too: an acknowledged acks=all record was lost"
                } else {
                    ""
                }
            );
            trace!("exposure: partition {partition} ends at {end} after healing");
            self.forget_from(partition, from);
        }
        for ((partition, base_offset), batch_id) in &self.acknowledged {
            for broker in brokers.values() {
                let high_watermark = broker.replicas[partition].state.high_watermark;
                assert!(
                    *base_offset < high_watermark,
                    "seed {}: an acknowledged acks=all record was lost: batch {batch_id} at \
                     offset {base_offset} of partition {partition} is past broker {}'s high \
                     watermark {high_watermark} after healing",
                    self.seed,
                    broker.id
                );
            }
        }
    }
}
