//! A whole metadata quorum in one process, with a network that drops, delays, reorders and
//! partitions messages and disks that crash and fail: the place where raft's guarantees are
//! checked rather than assumed (modelled on raft-rs's `harness/src/network.rs`, and on
//! TigerBeetle's VOPR in that one seed replays one run exactly).
//!
//! Every batch any replica applies is checked against one global history on the spot: two
//! replicas that apply different batches at the same index fail the run at that moment.

use std::collections::{BTreeMap, BTreeSet};

use raft::eraftpb::{Message, MessageType};

use crate::policy::{Action, ControllerLoop};
use crate::quorum::{Applied, ProposeError, Quorum, QuorumConfig};
use crate::raft_disk::MemDisk;
use crate::record::{MetadataRecord, TopicId};

/// xorshift64*: tiny, seedable, good enough to pick faults.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        // Never zero, and nearby seeds start far apart.
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub(crate) fn chance_per_mille(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

struct InFlight {
    deliver_at: u64,
    seq: u64,
    from: i32,
    to: i32,
    message: Message,
}

pub(crate) struct SimNode {
    pub(crate) quorum: Option<Quorum<MemDisk>>,
    pub(crate) disk: MemDisk,
    config: QuorumConfig,
    /// The last index this incarnation applied (batches and snapshots): must only grow.
    last_applied: u64,
    pub(crate) snapshots_installed: u64,
    /// The controller's event-loop policy over this quorum (`cluster` runs); soft state, lost
    /// with the process.
    pub(crate) policy: Option<ControllerLoop<cluster::SimTickets>>,
    /// A paused process neither ticks nor handles messages; messages to it wait in the network.
    pub(crate) paused: bool,
}

/// A proposal the simulation made, and what became of it.
#[derive(Debug, Clone)]
pub(crate) struct Proposal {
    pub(crate) name: String,
    /// Simulation step when it was proposed and (if Ok) acknowledged.
    pub(crate) proposed_at: u64,
    pub(crate) acked_at: Option<u64>,
    pub(crate) failed: bool,
}

pub(crate) struct Sim {
    pub(crate) rng: Rng,
    pub(crate) nodes: BTreeMap<i32, SimNode>,
    in_flight: Vec<InFlight>,
    now: u64,
    /// Orders events (sends, proposals, acks) within a tick.
    seq: u64,
    pub(crate) drop_per_mille: u64,
    pub(crate) delay_ticks_max: u64,
    cuts: BTreeSet<(i32, i32)>,
    /// Every batch any replica applied, by index, with its term.
    pub(crate) history: BTreeMap<u64, (u64, Vec<MetadataRecord>)>,
    /// By token.
    pub(crate) proposals: BTreeMap<u64, Proposal>,
    next_token: u64,
    /// What the nodes' policies decided, with who decided it, for `cluster` to carry out.
    pub(crate) policy_actions: Vec<(i32, Action<cluster::SimTickets>)>,
}

/// How much time one simulation tick stands for.
pub(crate) const TICK_MS: u64 = 100;

pub(crate) fn topic(name: &str) -> MetadataRecord {
    MetadataRecord::Topic {
        name: name.to_string(),
        topic_id: TopicId(u128::from(crc32c::crc32c(name.as_bytes())) << 64 | name.len() as u128),
    }
}

impl Sim {
    /// `voters` nodes (ids 0..voters), each with a different pinned election timeout drawn from
    /// the seed; `configure` adjusts every node's config.
    pub(crate) fn new(seed: u64, voters: i32, configure: impl Fn(&mut QuorumConfig)) -> Sim {
        let mut rng = Rng::new(seed);
        let ids: Vec<i32> = (0..voters).collect();
        let mut nodes = BTreeMap::new();
        // Distinct timeouts: equal ones in a lockstep simulation split every vote forever.
        let mut offsets: Vec<usize> = (0..voters.max(10) as usize).collect();
        for i in (1..offsets.len()).rev() {
            offsets.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for id in &ids {
            let mut config = QuorumConfig::new(*id, ids.clone());
            configure(&mut config);
            config.election_ticks_pinned = Some(config.election_tick + offsets[*id as usize]);
            nodes.insert(
                *id,
                SimNode {
                    quorum: None,
                    disk: MemDisk::new(),
                    config,
                    last_applied: 0,
                    snapshots_installed: 0,
                    policy: None,
                    paused: false,
                },
            );
        }
        let mut sim = Sim {
            rng,
            nodes,
            in_flight: Vec::new(),
            now: 0,
            seq: 0,
            drop_per_mille: 0,
            delay_ticks_max: 0,
            cuts: BTreeSet::new(),
            history: BTreeMap::new(),
            proposals: BTreeMap::new(),
            next_token: 1,
            policy_actions: Vec::new(),
        };
        for id in ids {
            sim.restart(id);
        }
        sim
    }

    pub(crate) fn quorum(&self, id: i32) -> Option<&Quorum<MemDisk>> {
        self.nodes.get(&id).and_then(|node| node.quorum.as_ref())
    }

    pub(crate) fn live(&self) -> Vec<i32> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.quorum.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    pub(crate) fn down(&self) -> Vec<i32> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.quorum.is_none())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The live leader with the highest term, if any.
    pub(crate) fn leader(&self) -> Option<i32> {
        self.live()
            .into_iter()
            .filter_map(|id| {
                self.quorum(id)
                    .filter(|q| q.is_leader())
                    .map(|q| (q.term(), id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// Stops a node: its unsynced writes are lost; messages to it are dropped.
    pub(crate) fn crash(&mut self, id: i32) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.quorum = None;
        node.policy = None;
        node.paused = false;
        node.disk.crash();
    }

    /// The simulated clock, in milliseconds.
    pub(crate) fn now_ms(&self) -> u64 {
        self.now * TICK_MS
    }

    pub(crate) fn paused(&self, id: i32) -> bool {
        self.nodes.get(&id).is_some_and(|node| node.paused)
    }

    /// Starts a stopped node from its disk.
    pub(crate) fn restart(&mut self, id: i32) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.disk.crash();
        let quorum = Quorum::open(node.config.clone(), node.disk.clone(), Vec::new())
            .unwrap_or_else(|err| panic!("node {id} cannot restart: {err}"));
        node.quorum = Some(quorum);
        node.last_applied = 0;
        self.check_trace(id);
    }

    pub(crate) fn cut(&mut self, a: i32, b: i32) {
        self.cuts.insert((a.min(b), a.max(b)));
    }

    /// Cuts `id` off from every other node.
    pub(crate) fn isolate(&mut self, id: i32) {
        let others: Vec<i32> = self.nodes.keys().copied().filter(|o| *o != id).collect();
        for other in others {
            self.cut(id, other);
        }
    }

    pub(crate) fn heal(&mut self) {
        self.cuts.clear();
    }

    fn is_cut(&self, a: i32, b: i32) -> bool {
        self.cuts.contains(&(a.min(b), a.max(b)))
    }

    /// Proposes a CreateTopic-like batch with a unique name on `id`; returns its token if the
    /// node accepted it.
    pub(crate) fn propose_on(&mut self, id: i32) -> Option<u64> {
        let name = format!("t{}", self.next_token);
        self.propose_batch_on(id, name.clone(), vec![topic(&name)])
    }

    /// Proposes `records` on `id` as the batch that creates topic `name` (unique); returns its
    /// token if the node accepted it.
    pub(crate) fn propose_batch_on(
        &mut self,
        id: i32,
        name: String,
        records: Vec<MetadataRecord>,
    ) -> Option<u64> {
        let token = self.next_token;
        let quorum = self.nodes.get_mut(&id)?.quorum.as_mut()?;
        match quorum.propose(records, token) {
            Ok(()) => {}
            Err(ProposeError::NotLeader { .. } | ProposeError::Dropped) => return None,
            Err(err) => panic!("node {id}: unexpected propose error {err}"),
        }
        self.next_token += 1;
        self.seq += 1;
        self.proposals.insert(
            token,
            Proposal {
                name,
                proposed_at: self.seq,
                acked_at: None,
                failed: false,
            },
        );
        self.process(id);
        Some(token)
    }

    /// Proposes on the current leader, if there is one that accepts.
    pub(crate) fn propose(&mut self) -> Option<u64> {
        let leader = self.leader()?;
        self.propose_on(leader)
    }

    /// One tick: every live node ticks, then every message due is delivered.
    pub(crate) fn tick(&mut self) {
        self.now += 1;
        let now_ms = self.now_ms();
        for id in self.live() {
            let node = self.nodes.get_mut(&id).expect("live node");
            if node.paused {
                continue;
            }
            if let Some(quorum) = node.quorum.as_mut() {
                quorum.tick();
                if let Some(policy) = node.policy.as_mut() {
                    policy.tick(quorum, now_ms);
                }
            }
            self.process(id);
        }
        self.deliver_due();
    }

    pub(crate) fn ticks(&mut self, n: u64) {
        for _ in 0..n {
            self.tick();
        }
    }

    fn deliver_due(&mut self) {
        // Messages sent with no delay arrive within the same tick; the bound only stops a bug
        // from spinning forever.
        for _ in 0..100_000 {
            let Some(next) = self
                .in_flight
                .iter()
                .enumerate()
                .filter(|(_, m)| m.deliver_at <= self.now && !self.paused(m.to))
                .min_by_key(|(_, m)| (m.deliver_at, m.seq))
                .map(|(i, _)| i)
            else {
                return;
            };
            let InFlight {
                from, to, message, ..
            } = self.in_flight.swap_remove(next);
            let is_snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
            let reachable = !self.is_cut(from, to) && self.quorum(to).is_some();
            // A snapshot goes through the frames a real transport sends, chunks and all.
            let message = if is_snapshot {
                crate::raft_wire::through_frames(&message).expect("a snapshot survives its frames")
            } else {
                message
            };
            if reachable {
                if let Some(quorum) = self.nodes.get_mut(&to).and_then(|n| n.quorum.as_mut()) {
                    quorum.step(message);
                }
                self.process(to);
            }
            if is_snapshot {
                // A real transport knows whether its send went through.
                if let Some(quorum) = self.nodes.get_mut(&from).and_then(|n| n.quorum.as_mut()) {
                    quorum.report_snapshot(to, reachable);
                    self.process(from);
                }
            }
        }
        panic!("messages kept arriving within one tick");
    }

    /// Runs `handle_ready` on a node (after its policy, if it runs one, started what it queued)
    /// and routes what it produced.
    pub(crate) fn process(&mut self, id: i32) {
        let now_ms = self.now_ms();
        let Some(node) = self.nodes.get_mut(&id).filter(|n| !n.paused) else {
            return;
        };
        let Some(quorum) = node.quorum.as_mut() else {
            return;
        };
        if let Some(policy) = node.policy.as_mut() {
            policy.start_next(quorum, now_ms);
        }
        let output = match quorum.handle_ready() {
            Ok(output) => output,
            Err(err) => {
                // A stopped quorum stops its process.
                tracing::debug!(id, %err, "node stops");
                self.check_trace(id);
                self.crash(id);
                return;
            }
        };
        self.check_trace(id);
        let node = self.nodes.get_mut(&id).expect("known node");
        let mut completed = output.completed;
        if let (Some(policy), Some(quorum)) = (node.policy.as_mut(), node.quorum.as_ref()) {
            // The policy's proposals are its own; the scenario's come from `propose_on`.
            policy.observe_role(quorum, now_ms);
            for (token, result) in std::mem::take(&mut completed) {
                policy.completed(token, result, quorum.applied_index());
            }
            self.policy_actions
                .extend(policy.take_actions().into_iter().map(|a| (id, a)));
        }
        for (token, result) in completed {
            self.seq += 1;
            let proposal = self.proposals.get_mut(&token).expect("known token");
            assert!(
                proposal.acked_at.is_none() && !proposal.failed,
                "token {token} completed twice"
            );
            match result {
                Ok(()) => proposal.acked_at = Some(self.seq),
                Err(_) => proposal.failed = true,
            }
        }
        for (to, message) in output.messages {
            self.seq += 1;
            if self.rng.chance_per_mille(self.drop_per_mille) {
                if message.get_msg_type() == MessageType::MsgSnapshot {
                    if let Some(quorum) = self.nodes.get_mut(&id).and_then(|n| n.quorum.as_mut()) {
                        quorum.report_snapshot(to, false);
                    }
                }
                continue;
            }
            let deliver_at = self.now + self.rng.below(self.delay_ticks_max + 1);
            self.in_flight.push(InFlight {
                deliver_at,
                seq: self.seq,
                from: id,
                to,
                message,
            });
        }
    }

    /// Checks what a node applied since the last look against the global history.
    fn check_trace(&mut self, id: i32) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let Some(quorum) = node.quorum.as_mut() else {
            return;
        };
        for applied in std::mem::take(&mut quorum.trace) {
            match applied {
                Applied::Batch {
                    index,
                    term,
                    records,
                } => {
                    assert!(
                        index > node.last_applied,
                        "node {id} applied {index} after {}",
                        node.last_applied
                    );
                    node.last_applied = index;
                    match self.history.get(&index) {
                        Some(agreed) => assert_eq!(
                            agreed,
                            &(term, records),
                            "node {id} applied a different batch at index {index}"
                        ),
                        None => {
                            self.history.insert(index, (term, records));
                        }
                    }
                }
                Applied::Snapshot { index } => {
                    assert!(
                        index > node.last_applied,
                        "node {id}: snapshot {index} goes back"
                    );
                    node.last_applied = index;
                    node.snapshots_installed += 1;
                }
            }
        }
    }

    /// Ticks until some leader has committed and every live node applied everything it has.
    /// Returns false if that did not happen within `ticks_max`.
    pub(crate) fn settle(&mut self, ticks_max: u64) -> bool {
        for _ in 0..ticks_max {
            self.tick();
            let Some(leader) = self.leader() else {
                continue;
            };
            let status = self.quorum(leader).expect("live leader").status();
            if status.commit_index != status.last_index || status.applied_index != status.last_index
            {
                continue;
            }
            if self.live().iter().all(|id| {
                let s = self.quorum(*id).expect("live").status();
                s.applied_index == status.last_index && s.leader == Some(leader)
            }) {
                return true;
            }
        }
        false
    }

    /// Tokens acknowledged Ok, with the index their batch has in the history.
    pub(crate) fn acked_indexes(&self) -> Vec<(u64, u64)> {
        let mut index_of_name = BTreeMap::new();
        for (index, (_, records)) in &self.history {
            for record in records {
                if let MetadataRecord::Topic { name, .. } = record {
                    let previous = index_of_name.insert(name.clone(), *index);
                    assert_eq!(previous, None, "{name} committed twice");
                }
            }
        }
        self.proposals
            .iter()
            .filter(|(_, p)| p.acked_at.is_some())
            .map(|(token, p)| {
                let index = index_of_name
                    .get(&p.name)
                    .unwrap_or_else(|| panic!("acked {} is in no replica's history", p.name));
                (*token, *index)
            })
            .collect()
    }

    /// The checks every scenario ends with, after healing and settling: every acknowledged batch
    /// committed exactly once, in an order consistent with when it was acknowledged, and every
    /// replica holds the same image.
    pub(crate) fn check_converged(&self) {
        let acked = self.acked_indexes();
        // An ack that happened before another proposal was even made precedes it in the log.
        for (a, a_index) in &acked {
            for (b, b_index) in &acked {
                let (pa, pb) = (&self.proposals[a], &self.proposals[b]);
                if pa.acked_at.expect("acked") < pb.proposed_at {
                    assert!(
                        a_index < b_index,
                        "{} acked before {} was proposed, yet follows it",
                        pa.name,
                        pb.name
                    );
                }
            }
        }
        let leader = self.leader().expect("a leader after settling");
        let image = self.quorum(leader).expect("live").image();
        for (token, _) in &acked {
            let name = &self.proposals[token].name;
            assert!(
                image.topics.contains_key(name),
                "acked {name} missing from the image"
            );
        }
        for id in self.live() {
            assert_eq!(
                *self.quorum(id).expect("live").image(),
                *image,
                "node {id}'s image differs from leader {leader}'s"
            );
        }
    }
}

pub(crate) mod cluster;
#[cfg(test)]
mod tests;
