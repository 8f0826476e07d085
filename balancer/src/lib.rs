//! The balancer's planner: given the brokers and where every partition's replicas are, the
//! replica moves that
//!
//! 1. take every replica off the brokers being drained (decommissioned),
//! 2. even out replica counts across the other brokers, choosing which partitions move so that
//!    bytes even out too, never reducing the number of racks a partition spans, and
//! 3. even out preferred leaders (the first replica of each list, where a preferred leader
//!    election puts leadership) by reordering replica lists, which moves no data.
//!
//! Each step moves one replica from the most loaded broker to the least loaded one while they
//! differ by two or more, so no replica moves that the balance does not need: adding a broker
//! to a balanced cluster moves exactly the replicas the new broker ends up with.
//!
//! The planner is pure (no I/O, the same plan for the same input), so the command-line tool and
//! the controller plan alike and tests check plans exactly. A plan is carried out as partition
//! reassignments (KIP-455): new replicas join as followers and catch up before old ones leave,
//! so a partition never has fewer in-sync replicas than it had. Partitions with a replica out
//! of sync are left where they are, unless that replica is on a broker being drained or gone
//! (it is the one that moves; the new replica catches up from the in-sync ones).

use std::collections::{BTreeMap, BTreeSet};

/// How many partitions a replica move chooses among (the first that qualify, in partition
/// order).
const CANDIDATES_PER_MOVE: usize = 256;

/// A broker that may hold replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub id: i32,
    pub rack: Option<String>,
}

/// A partition as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub topic: String,
    pub partition: i32,
    /// In preference order: the first is the preferred leader.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// What a new replica has to copy (the largest replica's size on disk).
    pub size_bytes: u64,
}

/// What to plan for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Brokers every replica must leave.
    pub drain: BTreeSet<i32>,
}

/// One partition's new replica list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub target: Vec<i32>,
    /// Bytes the new replicas copy: the size once per broker added (0 for a reordering).
    pub bytes: u64,
}

/// What one broker holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub replicas: usize,
    /// Partitions it is the preferred leader of.
    pub leaders: usize,
    pub bytes: u64,
}

/// The moves, and each broker's load before and after them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub moves: Vec<Move>,
    pub before: BTreeMap<i32, Load>,
    pub after: BTreeMap<i32, Load>,
    /// Partitions left alone because a replica on a broker they keep is out of sync:
    /// (topic, partition).
    pub under_replicated: Vec<(String, i32)>,
    /// Replicas that cannot leave a drained broker: no other broker lacks the partition
    /// (fewer brokers than replicas), or the partition is under-replicated. (topic, partition,
    /// broker)
    pub stuck: Vec<(String, i32, i32)>,
}

impl Plan {
    /// Bytes all the moves copy.
    pub fn bytes(&self) -> u64 {
        self.moves.iter().map(|m| m.bytes).sum()
    }

    /// Replicas added over all moves (reorderings add none).
    pub fn replicas_added(&self) -> usize {
        self.moves
            .iter()
            .map(|m| m.target.iter().filter(|b| !m.replicas.contains(b)).count())
            .sum()
    }
}

/// Plans the moves (see the crate's documentation).
pub fn plan(brokers: &[Broker], partitions: &[Partition], options: &Options) -> Plan {
    let mut state = State::new(brokers, partitions, options);
    let before = state.loads();
    let mut stuck = state.drain();
    state.even_replicas();
    state.even_leaders();
    let moves = partitions
        .iter()
        .zip(&state.assignment)
        .filter(|(partition, target)| partition.replicas != **target)
        .map(|(partition, target)| Move {
            topic: partition.topic.clone(),
            partition: partition.partition,
            replicas: partition.replicas.clone(),
            target: target.clone(),
            bytes: partition.size_bytes
                * target
                    .iter()
                    .filter(|b| !partition.replicas.contains(b))
                    .count() as u64,
        })
        .collect();
    let under_replicated = partitions
        .iter()
        .zip(&state.movable)
        .filter(|(_, movable)| !**movable)
        .map(|(p, _)| (p.topic.clone(), p.partition))
        .collect();
    stuck.sort();
    Plan {
        moves,
        before,
        after: state.loads(),
        under_replicated,
        stuck,
    }
}

/// The assignment being planned and what the planner needs to know about it.
struct State<'a> {
    partitions: &'a [Partition],
    racks: BTreeMap<i32, Option<&'a str>>,
    /// Brokers that may receive replicas, in id order.
    eligible: Vec<i32>,
    drain: &'a BTreeSet<i32>,
    assignment: Vec<Vec<i32>>,
    /// In sync wherever it stays: the partition may move.
    movable: Vec<bool>,
    /// Every broker's load under `assignment`, kept up to date by each change.
    load: BTreeMap<i32, Load>,
    /// The partitions each broker holds a replica of, kept up to date by each change.
    hosted: BTreeMap<i32, BTreeSet<usize>>,
    /// Whether any broker has a rack (if none does, racks constrain nothing).
    racked: bool,
}

impl<'a> State<'a> {
    fn new(brokers: &'a [Broker], partitions: &'a [Partition], options: &'a Options) -> Self {
        let racks: BTreeMap<i32, Option<&str>> =
            brokers.iter().map(|b| (b.id, b.rack.as_deref())).collect();
        let mut eligible: Vec<i32> = brokers
            .iter()
            .map(|b| b.id)
            .filter(|id| !options.drain.contains(id))
            .collect();
        eligible.sort_unstable();
        eligible.dedup();
        let mut state = State {
            partitions,
            racks: racks.clone(),
            eligible: eligible.clone(),
            drain: &options.drain,
            assignment: partitions.iter().map(|p| p.replicas.clone()).collect(),
            // In sync on every broker it stays on (a replica on a broker being drained or gone
            // may be out of sync: it is the one that moves), and in sync on some broker still
            // here, for new replicas to copy from.
            movable: partitions
                .iter()
                .map(|p| {
                    let in_sync = |r: &&i32| p.isr.contains(r);
                    p.replicas
                        .iter()
                        .filter(|r| eligible.contains(r))
                        .all(|r| in_sync(&r))
                        && p.replicas
                            .iter()
                            .filter(|r| racks.contains_key(r))
                            .any(|r| in_sync(&r))
                })
                .collect(),
            load: BTreeMap::new(),
            hosted: BTreeMap::new(),
            racked: brokers.iter().any(|b| b.rack.is_some()),
        };
        state.load = state
            .racks
            .keys()
            .map(|id| (*id, Load::default()))
            .collect();
        for (p, partition) in partitions.iter().enumerate() {
            for (position, broker) in partition.replicas.iter().enumerate() {
                state.count(p, *broker, position == 0, true);
            }
        }
        state
    }

    /// Adds (or takes away) partition `p`'s replica on `broker` to its load.
    fn count(&mut self, p: usize, broker: i32, leader: bool, add: bool) {
        let hosted = self.hosted.entry(broker).or_default();
        if add {
            hosted.insert(p);
        } else {
            hosted.remove(&p);
        }
        let size = self.partitions[p].size_bytes;
        let load = self.load.entry(broker).or_default();
        if add {
            load.replicas += 1;
            load.bytes += size;
            load.leaders += usize::from(leader);
        } else {
            load.replicas -= 1;
            load.bytes -= size;
            load.leaders -= usize::from(leader);
        }
    }

    /// Partition `p`'s replica at `position` moves to broker `to`.
    fn replace(&mut self, p: usize, position: usize, to: i32) {
        let from = self.assignment[p][position];
        self.count(p, from, position == 0, false);
        self.count(p, to, position == 0, true);
        self.assignment[p][position] = to;
    }

    /// Partition `p`'s replica at `position` becomes its preferred leader.
    fn prefer(&mut self, p: usize, position: usize) {
        let (leader, other) = (self.assignment[p][0], self.assignment[p][position]);
        self.load.entry(leader).or_default().leaders -= 1;
        self.load.entry(other).or_default().leaders += 1;
        self.assignment[p].swap(0, position);
    }

    /// Every broker's load: the known brokers, and any other broker a replica list names.
    fn loads(&self) -> BTreeMap<i32, Load> {
        self.load.clone()
    }

    fn rack(&self, broker: i32) -> Option<&'a str> {
        self.racks.get(&broker).copied().flatten()
    }

    /// How many racks partition `p`'s replicas span with `from` replaced by `to`.
    fn racks_spanned(&self, p: usize, from: i32, to: i32) -> usize {
        if !self.racked {
            return 1;
        }
        self.assignment[p]
            .iter()
            .map(|b| if *b == from { to } else { *b })
            .map(|b| self.rack(b))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Moves every replica off drained brokers (and off brokers nobody knows): to the broker
    /// that keeps the partition's racks apart best, then the least loaded. Returns the
    /// replicas that cannot move.
    fn drain(&mut self) -> Vec<(String, i32, i32)> {
        let mut stuck = Vec::new();
        for p in 0..self.assignment.len() {
            for position in 0..self.assignment[p].len() {
                let from = self.assignment[p][position];
                if !self.drain.contains(&from) && self.racks.contains_key(&from) {
                    continue;
                }
                let best = self
                    .eligible
                    .iter()
                    .filter(|b| self.movable[p] && !self.assignment[p].contains(b))
                    .min_by_key(|b| {
                        let load = self.load.get(b).copied().unwrap_or_default();
                        let spanned = self.racks_spanned(p, from, **b);
                        (usize::MAX - spanned, load.replicas, load.bytes, **b)
                    })
                    .copied();
                match best {
                    Some(to) => self.replace(p, position, to),
                    None => {
                        let partition = &self.partitions[p];
                        stuck.push((partition.topic.clone(), partition.partition, from));
                    }
                }
            }
        }
        stuck
    }

    /// Eligible brokers with their loads, most loaded first (more replicas, more bytes, lower
    /// id), so pairs are tried from the largest imbalance.
    fn eligible_loads(&self) -> Vec<(i32, Load)> {
        let mut eligible: Vec<(i32, Load)> = self
            .eligible
            .iter()
            .map(|b| (*b, self.load.get(b).copied().unwrap_or_default()))
            .collect();
        eligible.sort_by(|(a, la), (b, lb)| {
            (lb.replicas, lb.bytes, a).cmp(&(la.replicas, la.bytes, b))
        });
        eligible
    }

    /// Moves one replica at a time from a broker with at least two more replicas than another
    /// to that one, until no such pair has a partition that can move.
    fn even_replicas(&mut self) {
        // Each move lowers the sum of squared counts, so this ends; the bound is a backstop.
        let bound = self.assignment.iter().map(Vec::len).sum::<usize>() + 1;
        for _ in 0..bound {
            let loads = self.eligible_loads();
            let next = pairs(&loads, |l| l.replicas)
                .find_map(|(from, to)| self.best_replica_move(from, to));
            let Some((p, position, to)) = next else {
                return;
            };
            self.replace(p, position, to);
        }
    }

    /// The partition to move from `from` to `to`: one `to` lacks, whose racks stay spanned,
    /// preferring a follower (leadership stays put) and then the size that brings the two
    /// brokers' bytes closest.
    fn best_replica_move(&self, from: (i32, Load), to: (i32, Load)) -> Option<(usize, usize, i32)> {
        let ((from, from_load), (to, to_load)) = (from, to);
        let half_gap = from_load.bytes.abs_diff(to_load.bytes) / 2;
        self.hosted
            .get(&from)?
            .iter()
            .copied()
            .filter(|p| self.movable[*p] && !self.assignment[*p].contains(&to))
            .filter_map(|p| {
                let position = self.assignment[p].iter().position(|b| *b == from)?;
                let now = self.racks_spanned(p, from, from);
                (self.racks_spanned(p, from, to) >= now).then_some((p, position))
            })
            // Enough choice for a good fit, and a bound on the work per move in large clusters.
            .take(CANDIDATES_PER_MOVE)
            .min_by_key(|(p, position)| {
                let size = self.partitions[*p].size_bytes;
                (*position == 0, size.abs_diff(half_gap), *p)
            })
            .map(|(p, position)| (p, position, to))
    }

    /// Swaps a partition's preferred leader with another of its replicas, one at a time, from a
    /// broker that is the preferred leader of at least two more partitions than another.
    fn even_leaders(&mut self) {
        let bound = self.assignment.len() + 1;
        for _ in 0..bound {
            let loads = self.eligible_loads();
            let mut by_leaders = loads.clone();
            by_leaders.sort_by_key(|(b, l)| (std::cmp::Reverse(l.leaders), *b));
            let next = pairs(&by_leaders, |l| l.leaders).find_map(|((from, _), (to, _))| {
                self.hosted
                    .get(&from)?
                    .iter()
                    .copied()
                    .filter(|p| self.movable[*p] && self.assignment[*p].first() == Some(&from))
                    .find_map(|p| {
                        let position = self.assignment[p].iter().position(|b| *b == to)?;
                        Some((p, position))
                    })
            });
            let Some((p, position)) = next else {
                return;
            };
            self.prefer(p, position);
        }
    }
}

/// Ordered pairs (more loaded, less loaded) whose `measure` differs by two or more, from the
/// largest difference. `loads` is sorted by `measure`, largest first.
fn pairs<'l>(
    loads: &'l [(i32, Load)],
    measure: impl Fn(&Load) -> usize + Copy + 'l,
) -> impl Iterator<Item = ((i32, Load), (i32, Load))> + 'l {
    loads.iter().flat_map(move |from| {
        loads
            .iter()
            .rev()
            .filter(move |to| measure(&from.1) >= measure(&to.1) + 2)
            .map(move |to| (*from, *to))
    })
}

#[cfg(test)]
mod tests;
