//! The controllers' policy under the seeded simulation: every simulated controller runs
//! [`ControllerLoop`] over its raft quorum (on the simulation's clock), and simulated brokers
//! register and heartbeat, and a client creates topics, through the same faulty network. The
//! network drops, delays and reorders; links between controllers and between a broker and a
//! controller are cut and healed; controllers crash (losing unsynced writes) and restart with a
//! fresh policy; brokers restart as a new incarnation (registering afresh); controllers and
//! brokers are paused (a paused process neither runs nor reads its messages, which wait for it)
//! and resumed, the clock running on meanwhile.
//!
//! Checked continuously, failing the run on the spot:
//! - **no healthy broker fenced**: when a leader decides to fence a broker for its session, the
//!   broker must not be healthy, where healthy means not paused during the last session, and,
//!   in every stretch of that session during which the deciding controller led and was not
//!   paused, no gap longer than a third of the session between two contacts the controller
//!   accepted from it (heartbeats answered without error, registrations). A broker that kept
//!   heartbeating to a reachable leader is healthy; one cut off or silent is not; one whose
//!   leader was paused does not lose its health by the pause.
//! - **at most one leader per partition epoch**, across every replica's applied image, all run;
//! - **leader and partition epochs never go backwards** in any replica's applied image (within
//!   one incarnation: a restarted replica replays from its snapshot);
//! - **every replica applies the same batch at each index** (`Sim::check_trace`);
//! - **no topic created twice**: the agreed log never holds two creations of one name (the
//!   client retries a create that timed out, racing its own first attempt).
//!
//! After the faults, everything heals and resumes; every broker must end up registered and
//! unfenced, and every replica's image equal.

use std::collections::{BTreeMap, BTreeSet};

use super::{Rng, Sim, TICK_MS};
use crate::controller::{BrokerRegistration, Controller, ControllerConfig, CreateTopicSpec};
use crate::election::ElectionConfig;
use crate::ops::{ControllerOp, ControllerReply};
use crate::policy::{
    Action, ControllerLoop, FenceReason, Heartbeat, HeartbeatReply, LoopConfig, LoopError, Request,
    Ticket, Tickets, Waiter,
};
use crate::record::{Endpoint, MetadataRecord, TopicId};

/// The simulation's handles for answering requests.
pub(crate) struct SimTickets;

impl Tickets for SimTickets {
    /// The client's request id.
    type Operation = u64;
    /// The registering broker.
    type Register = i32;
    type AlterPartition = ();
}

const CONTROLLERS: i32 = 3;
const BROKERS: i32 = 3;
/// Brokers' node ids start here (controllers are 0..CONTROLLERS).
const BROKER_BASE: i32 = 100;
const CLIENT: i32 = 1000;
pub(crate) const SESSION_MS: u64 = 3_000;
const HEARTBEAT_MS: u64 = 500;
/// How long a broker or the client waits for an answer before trying another controller.
const ANSWER_WAIT_MS: u64 = 1_000;
/// The policy's proposal timeout: short, so proposals do time out under faults and the client's
/// retry races its first attempt.
const REQUEST_TIMEOUT_MS: u64 = 200;
/// How many topic names the client picks from (few, so creates collide).
const TOPIC_NAMES: u64 = 50;
/// The longest gap between accepted contacts a healthy broker has (see the module doc).
const HEALTHY_GAP_MS: u64 = SESSION_MS / 3;

/// What brokers, the client and controllers tell each other.
#[derive(Debug)]
enum Wire {
    Register {
        incarnation: u64,
    },
    Heartbeat(Heartbeat),
    Create {
        request: u64,
        name: String,
    },
    Registered(Result<i64, LoopError>),
    HeartbeatAnswer {
        answer: Result<HeartbeatReply, LoopError>,
        applied_index: u64,
    },
    Created {
        request: u64,
        answer: Result<ControllerReply, LoopError>,
    },
}

/// Each partition's (leader epoch, partition epoch).
type PartitionEpochs = BTreeMap<(TopicId, i32), (i32, i32)>;

struct Packet {
    deliver_at: u64,
    seq: u64,
    from: i32,
    to: i32,
    wire: Wire,
}

struct SimBroker {
    incarnation: u64,
    epoch: Option<i64>,
    paused: bool,
    /// The controller it talks to.
    target: i32,
    /// When it sent the request it waits for, if it waits.
    awaiting_since_ms: Option<u64>,
    next_heartbeat_ms: u64,
    metadata_offset: u64,
}

struct PendingCreate {
    name: String,
    target: i32,
    /// When the last attempt went out; `None` when the next is due.
    sent_ms: Option<u64>,
}

/// What a run saw, for the statistics line.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) fencings: u64,
    pub(crate) timeouts: u64,
    pub(crate) creates_committed: u64,
    pub(crate) creates_refused_as_existing: u64,
    pub(crate) controller_pauses: u64,
    pub(crate) broker_pauses: u64,
    pub(crate) broker_restarts: u64,
    pub(crate) crashes: u64,
}

pub(crate) struct Cluster {
    pub(crate) sim: Sim,
    brokers: BTreeMap<i32, SimBroker>,
    packets: Vec<Packet>,
    seq: u64,
    /// Cut broker–controller links, as (controller, broker).
    broker_cuts: BTreeSet<(i32, i32)>,
    creates: BTreeMap<u64, PendingCreate>,
    next_request: u64,
    /// How many times each controller was started (for distinct topic ids).
    starts: BTreeMap<i32, u64>,
    /// When each leading controller accepted contact from each broker: (controller, broker).
    contacts: BTreeMap<(i32, i32), Vec<u64>>,
    /// Each process's pauses, as (from_ms, until_ms), `None` while it lasts.
    pauses: BTreeMap<i32, Vec<(u64, Option<u64>)>>,
    /// Since when each controller leads, with its term.
    leading: BTreeMap<i32, (u64, u64)>,
    /// The leader of each partition at each leader epoch, over every replica's image.
    leaders: BTreeMap<(TopicId, i32, i32), i32>,
    /// Per replica incarnation: the applied index last checked, and each partition's epochs.
    epochs: BTreeMap<i32, (u64, PartitionEpochs)>,
    /// Where each topic name was created in the agreed history, as of `history_checked` entries.
    created: BTreeMap<String, u64>,
    history_checked: usize,
    pub(crate) stats: Stats,
}

fn registration(broker_id: i32, incarnation: u64) -> BrokerRegistration {
    BrokerRegistration {
        broker_id,
        incarnation_id: incarnation,
        endpoints: vec![Endpoint {
            name: "PLAINTEXT".into(),
            host: format!("b{broker_id}"),
            port: 9092,
        }],
        rack: None,
    }
}

fn create(name: &str) -> ControllerOp {
    ControllerOp::CreateTopics {
        topics: vec![CreateTopicSpec {
            name: name.into(),
            num_partitions: 2,
            replication_factor: 2,
            ..CreateTopicSpec::default()
        }],
        validate_only: false,
        allow_internal: false,
    }
}

impl Cluster {
    pub(crate) fn new(seed: u64) -> Cluster {
        let snapshot_after_entries = 20 + seed % 40;
        let sim = Sim::new(seed, CONTROLLERS, |config| {
            config.snapshot_after_entries = snapshot_after_entries;
        });
        let mut cluster = Cluster {
            sim,
            brokers: BTreeMap::new(),
            packets: Vec::new(),
            seq: 0,
            broker_cuts: BTreeSet::new(),
            creates: BTreeMap::new(),
            next_request: 1,
            starts: BTreeMap::new(),
            contacts: BTreeMap::new(),
            pauses: BTreeMap::new(),
            leading: BTreeMap::new(),
            leaders: BTreeMap::new(),
            epochs: BTreeMap::new(),
            created: BTreeMap::new(),
            history_checked: 0,
            stats: Stats::default(),
        };
        for id in 0..CONTROLLERS {
            cluster.attach_policy(id);
        }
        for b in 0..BROKERS {
            let id = BROKER_BASE + b;
            cluster.brokers.insert(
                id,
                SimBroker {
                    incarnation: 1,
                    epoch: None,
                    paused: false,
                    target: b % CONTROLLERS,
                    awaiting_since_ms: None,
                    next_heartbeat_ms: 0,
                    metadata_offset: 0,
                },
            );
        }
        cluster
    }

    /// A fresh policy for a (re)started controller: its soft state is gone with its process.
    fn attach_policy(&mut self, id: i32) {
        let starts = self.starts.entry(id).or_insert(0);
        *starts += 1;
        let mut next_topic_id = (u128::from(id as u32) << 96) | (u128::from(*starts) << 64);
        let controller = Controller::new(ControllerConfig {
            node_id: id,
            num_partitions: 2,
            default_replication_factor: 2,
        })
        .with_election_config(ElectionConfig {
            unclean_leader_election_enable: false,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_ms: 5_000,
        })
        .with_topic_id_source(move || {
            next_topic_id += 1;
            next_topic_id
        });
        let config = LoopConfig {
            session_timeout_ms: SESSION_MS,
            tick_ms: TICK_MS,
            fast_fencing: false,
            unresponsive_fencing: false,
            probe_silence_ms: 2 * HEARTBEAT_MS,
            probes: false,
            request_timeout_ms: REQUEST_TIMEOUT_MS,
            auto_balance: false,
        };
        let node = self.sim.nodes.get_mut(&id).expect("known controller");
        node.policy = Some(ControllerLoop::new(config, controller));
        self.epochs.remove(&id);
    }

    fn now_ms(&self) -> u64 {
        self.sim.now_ms()
    }

    fn paused(&self, id: i32) -> bool {
        match self.brokers.get(&id) {
            Some(broker) => broker.paused,
            None => self.sim.paused(id),
        }
    }

    fn is_cut(&self, a: i32, b: i32) -> bool {
        let (controller, other) = if a < CONTROLLERS { (a, b) } else { (b, a) };
        self.broker_cuts.contains(&(controller, other))
    }

    fn send(&mut self, from: i32, to: i32, wire: Wire) {
        self.seq += 1;
        if self.sim.rng.chance_per_mille(self.sim.drop_per_mille) {
            return;
        }
        let deliver_at = self.sim.now + self.sim.rng.below(self.sim.delay_ticks_max + 1);
        self.packets.push(Packet {
            deliver_at,
            seq: self.seq,
            from,
            to,
            wire,
        });
    }

    /// One tick of the whole cluster, then the checks.
    pub(crate) fn step(&mut self) {
        self.sim.tick();
        self.carry_out_actions();
        self.deliver_packets();
        self.brokers_act();
        self.client_acts();
        self.carry_out_actions();
        self.check();
    }

    fn deliver_packets(&mut self) {
        let now = self.sim.now;
        let mut due: Vec<Packet> = Vec::new();
        let mut waiting = Vec::with_capacity(self.packets.len());
        for packet in std::mem::take(&mut self.packets) {
            if packet.deliver_at <= now && !self.paused(packet.to) {
                due.push(packet);
            } else {
                waiting.push(packet);
            }
        }
        self.packets = waiting;
        due.sort_by_key(|p| (p.deliver_at, p.seq));
        for packet in due {
            if self.is_cut(packet.from, packet.to) {
                continue;
            }
            if packet.to < CONTROLLERS {
                self.controller_receives(packet.to, packet.from, packet.wire);
            } else if packet.to == CLIENT {
                self.client_receives(packet.from, packet.wire);
            } else {
                self.broker_receives(packet.to, packet.from, packet.wire);
            }
        }
    }

    fn controller_receives(&mut self, id: i32, from: i32, wire: Wire) {
        let now_ms = self.now_ms();
        let Some(node) = self.sim.nodes.get_mut(&id) else {
            return;
        };
        let (Some(quorum), Some(policy)) = (node.quorum.as_ref(), node.policy.as_mut()) else {
            return; // Down: the packet is lost.
        };
        let leads = quorum.is_leader();
        let reply = match wire {
            Wire::Register { incarnation } => {
                if leads {
                    self.contacts.entry((id, from)).or_default().push(now_ms);
                }
                policy.submit(
                    quorum,
                    Request::Register(registration(from, incarnation), from),
                    now_ms,
                );
                None
            }
            Wire::Heartbeat(heartbeat) => {
                let answer = policy.heartbeat(quorum, &heartbeat, now_ms);
                if answer.is_ok() {
                    self.contacts.entry((id, from)).or_default().push(now_ms);
                }
                Some(Wire::HeartbeatAnswer {
                    answer,
                    applied_index: quorum.applied_index(),
                })
            }
            Wire::Create { request, name } => {
                policy.submit(quorum, Request::Operation(create(&name), request), now_ms);
                None
            }
            other => panic!("controller {id} got {other:?}"),
        };
        let actions = policy.take_actions();
        self.sim
            .policy_actions
            .extend(actions.into_iter().map(|a| (id, a)));
        if let Some(reply) = reply {
            self.send(id, from, reply);
        }
        self.sim.process(id);
        self.carry_out_actions();
    }

    fn broker_receives(&mut self, id: i32, from: i32, wire: Wire) {
        let broker = self.brokers.get_mut(&id).expect("known broker");
        broker.awaiting_since_ms = None;
        let next_controller = (from + 1) % CONTROLLERS;
        match wire {
            Wire::Registered(Ok(epoch)) => broker.epoch = Some(epoch),
            Wire::Registered(Err(LoopError::NotController(leader)))
            | Wire::HeartbeatAnswer {
                answer: Err(LoopError::NotController(leader)),
                ..
            } => {
                broker.target = leader.unwrap_or(next_controller);
                broker.next_heartbeat_ms = self.sim.now_ms();
            }
            Wire::Registered(Err(_)) => {}
            Wire::HeartbeatAnswer {
                answer: Err(LoopError::StaleBrokerEpoch),
                ..
            } => broker.epoch = None,
            Wire::HeartbeatAnswer {
                answer,
                applied_index,
            } => {
                if answer.is_ok() {
                    broker.metadata_offset = broker.metadata_offset.max(applied_index);
                }
            }
            other => panic!("broker {id} got {other:?}"),
        }
    }

    /// Brokers register, heartbeat every interval, and give up on an answer after a while.
    fn brokers_act(&mut self) {
        let now_ms = self.now_ms();
        let ids: Vec<i32> = self.brokers.keys().copied().collect();
        for id in ids {
            let broker = self.brokers.get_mut(&id).expect("known broker");
            if broker.paused {
                continue;
            }
            if let Some(since) = broker.awaiting_since_ms {
                if now_ms.saturating_sub(since) < ANSWER_WAIT_MS {
                    continue;
                }
                broker.awaiting_since_ms = None;
                broker.target = (broker.target + 1) % CONTROLLERS;
                broker.next_heartbeat_ms = now_ms;
            }
            if now_ms < broker.next_heartbeat_ms {
                continue;
            }
            broker.next_heartbeat_ms = now_ms + HEARTBEAT_MS;
            broker.awaiting_since_ms = Some(now_ms);
            let wire = match broker.epoch {
                None => Wire::Register {
                    incarnation: broker.incarnation,
                },
                Some(epoch) => Wire::Heartbeat(Heartbeat {
                    broker_id: id,
                    broker_epoch: epoch,
                    current_metadata_offset: broker.metadata_offset as i64,
                    want_fence: false,
                    want_shut_down: false,
                }),
            };
            let target = broker.target;
            self.send(id, target, wire);
        }
    }

    fn client_receives(&mut self, from: i32, wire: Wire) {
        let Wire::Created { request, answer } = wire else {
            panic!("the client got {wire:?}");
        };
        let Some(pending) = self.creates.get_mut(&request) else {
            return; // An answer to an attempt already answered.
        };
        pending.sent_ms = None;
        match answer {
            Ok(ControllerReply::CreateTopics(results)) => {
                match results.as_slice() {
                    [Ok(_)] => self.stats.creates_committed += 1,
                    [Err(crate::error::TopicError::TopicAlreadyExists(_))] => {
                        self.stats.creates_refused_as_existing += 1
                    }
                    _ => {}
                }
                self.creates.remove(&request);
            }
            Ok(other) => panic!("a create answered with {other:?}"),
            Err(LoopError::NotController(leader)) => {
                pending.target = leader.unwrap_or((from + 1) % CONTROLLERS);
            }
            // A timeout: the outcome is unknown, and the client asks again (where a conflicting
            // second creation would commit, were it planned without the first).
            Err(LoopError::Timeout) => self.stats.timeouts += 1,
            Err(_) => {}
        }
    }

    /// The client creates a topic now and then, and retries what is not answered.
    fn client_acts(&mut self) {
        let now_ms = self.now_ms();
        if self.sim.rng.chance_per_mille(40) {
            let name = format!("topic-{}", self.sim.rng.below(TOPIC_NAMES));
            // Often two applications race to create one topic.
            let copies = if self.sim.rng.chance_per_mille(500) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let target = self.sim.rng.below(CONTROLLERS as u64) as i32;
                self.creates.insert(
                    self.next_request,
                    PendingCreate {
                        name: name.clone(),
                        target,
                        sent_ms: None,
                    },
                );
                self.next_request += 1;
            }
        }
        let mut sends = Vec::new();
        for (request, pending) in &mut self.creates {
            if let Some(sent) = pending.sent_ms {
                if now_ms.saturating_sub(sent) < ANSWER_WAIT_MS {
                    continue;
                }
                pending.target = (pending.target + 1) % CONTROLLERS;
            }
            pending.sent_ms = Some(now_ms);
            sends.push((pending.target, *request, pending.name.clone()));
        }
        for (target, request, name) in sends {
            self.send(CLIENT, target, Wire::Create { request, name });
        }
    }

    /// Carries out what the controllers' policies decided.
    fn carry_out_actions(&mut self) {
        while !self.sim.policy_actions.is_empty() {
            for (id, action) in std::mem::take(&mut self.sim.policy_actions) {
                match action {
                    Action::Complete(Waiter::Register(epoch, broker)) => {
                        self.send(id, broker, Wire::Registered(Ok(epoch)))
                    }
                    Action::Complete(Waiter::Operation(reply, request)) => self.send(
                        id,
                        CLIENT,
                        Wire::Created {
                            request,
                            answer: Ok(reply),
                        },
                    ),
                    Action::Complete(Waiter::AlterPartition(..)) => {}
                    Action::Fail(Ticket::Register(broker), error) => {
                        self.send(id, broker, Wire::Registered(Err(error)))
                    }
                    Action::Fail(Ticket::Operation(request), error) => self.send(
                        id,
                        CLIENT,
                        Wire::Created {
                            request,
                            answer: Err(error),
                        },
                    ),
                    Action::Fail(Ticket::AlterPartition(()), _) => {}
                    Action::Probe(_) => {}
                    Action::Fencing { broker_id, reason } => {
                        self.stats.fencings += 1;
                        assert_eq!(reason, FenceReason::SessionExpired);
                        self.check_fencing(id, broker_id);
                    }
                }
            }
        }
    }

    /// Fails the run if `broker` is healthy (see the module doc) as `controller` fences it.
    fn check_fencing(&self, controller: i32, broker: i32) {
        let now_ms = self.now_ms();
        let session_start = now_ms.saturating_sub(SESSION_MS);
        if self.paused_within(broker, session_start, now_ms) {
            return;
        }
        let Some(&(_, leading_since)) = self.leading.get(&controller) else {
            return;
        };
        let start = session_start.max(leading_since);
        let contacts = self
            .contacts
            .get(&(controller, broker))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (from, until) in self.running_stretches(controller, start, now_ms) {
            let mut last = from;
            for at in contacts.iter().filter(|at| (from..=until).contains(*at)) {
                if at - last > HEALTHY_GAP_MS {
                    return;
                }
                last = *at;
            }
            if until - last > HEALTHY_GAP_MS {
                return;
            }
        }
        panic!(
            "controller {controller} fenced healthy broker {broker} at {now_ms} ms \
             (leading since {leading_since} ms; contacts {contacts:?}; controller pauses {:?})",
            self.pauses.get(&controller)
        );
    }

    fn paused_within(&self, id: i32, from: u64, until: u64) -> bool {
        self.pauses.get(&id).is_some_and(|pauses| {
            pauses
                .iter()
                .any(|(start, end)| *start <= until && end.is_none_or(|end| end >= from))
        })
    }

    /// The stretches of `from..=until` during which `id` was not paused.
    fn running_stretches(&self, id: i32, from: u64, until: u64) -> Vec<(u64, u64)> {
        let mut stretches = Vec::new();
        let mut start = from;
        for (pause_start, pause_end) in self.pauses.get(&id).into_iter().flatten() {
            let pause_end = pause_end.unwrap_or(u64::MAX);
            if pause_end < from || *pause_start > until {
                continue;
            }
            if *pause_start > start {
                stretches.push((start, *pause_start));
            }
            start = start.max(pause_end);
        }
        if start <= until {
            stretches.push((start, until));
        }
        stretches
    }

    /// The invariants over what the replicas applied.
    fn check(&mut self) {
        let now_ms = self.now_ms();
        for id in self.sim.live() {
            let quorum = self.sim.quorum(id).expect("live");
            if quorum.is_leader() {
                let term = quorum.term();
                if self.leading.get(&id).is_none_or(|(t, _)| *t != term) {
                    self.leading.insert(id, (term, now_ms));
                }
            } else {
                self.leading.remove(&id);
            }
            let applied = quorum.applied_index();
            let image = quorum.image();
            let (checked, epochs) = self.epochs.entry(id).or_default();
            if *checked == applied {
                continue;
            }
            *checked = applied;
            for topic in image.topics.values() {
                for (partition, state) in &topic.partitions {
                    let key = (topic.topic_id, *partition);
                    let now = (state.leader_epoch, state.partition_epoch);
                    if let Some(before) = epochs.insert(key, now) {
                        assert!(
                            now.0 >= before.0 && now.1 >= before.1,
                            "replica {id}: {}-{partition} went from (leader epoch, partition \
                             epoch) {before:?} back to {now:?} at index {applied}",
                            topic.name
                        );
                    }
                    if state.leader >= 0 {
                        let leader = *self
                            .leaders
                            .entry((topic.topic_id, *partition, state.leader_epoch))
                            .or_insert(state.leader);
                        assert_eq!(
                            leader, state.leader,
                            "replica {id}: {}-{partition} has two leaders in leader epoch {}",
                            topic.name, state.leader_epoch
                        );
                    }
                }
            }
        }
        // The history has gaps (empty entries, conf changes) and can fill in below its end (a
        // replica that skipped entries by snapshot is not the only one to apply them): all of it,
        // whenever it grew.
        if self.sim.history.len() != self.history_checked {
            self.history_checked = self.sim.history.len();
            for (index, (_, records)) in &self.sim.history {
                for record in records {
                    if let MetadataRecord::Topic { name, .. } = record {
                        let first = *self.created.entry(name.clone()).or_insert(*index);
                        assert_eq!(
                            first, *index,
                            "topic {name} created twice: at index {first} and at {index}"
                        );
                    }
                }
            }
        }
    }

    fn pause(&mut self, id: i32) {
        if self.paused(id) {
            return;
        }
        match self.brokers.get_mut(&id) {
            Some(broker) => {
                broker.paused = true;
                self.stats.broker_pauses += 1;
            }
            None => {
                let Some(node) = self.sim.nodes.get_mut(&id).filter(|n| n.quorum.is_some()) else {
                    return;
                };
                node.paused = true;
                self.stats.controller_pauses += 1;
            }
        }
        let now_ms = self.now_ms();
        self.pauses.entry(id).or_default().push((now_ms, None));
    }

    fn resume(&mut self, id: i32) {
        if !self.paused(id) {
            return;
        }
        match self.brokers.get_mut(&id) {
            Some(broker) => broker.paused = false,
            None => self.sim.nodes.get_mut(&id).expect("known").paused = false,
        }
        let now_ms = self.now_ms();
        if let Some((_, end)) = self.pauses.get_mut(&id).and_then(|p| p.last_mut()) {
            *end = Some(now_ms);
        }
    }

    /// A broker's process restarts: a new incarnation, registering afresh (which fences the old
    /// one's epoch), its requests in flight forgotten.
    fn restart_broker(&mut self, id: i32) {
        self.resume(id);
        let broker = self.brokers.get_mut(&id).expect("known broker");
        broker.incarnation += 1;
        broker.epoch = None;
        broker.awaiting_since_ms = None;
        broker.metadata_offset = 0;
        self.stats.broker_restarts += 1;
    }

    fn crash(&mut self, id: i32) {
        self.resume(id);
        self.sim.crash(id);
        self.leading.remove(&id);
        self.stats.crashes += 1;
    }

    fn restart(&mut self, id: i32) {
        self.sim.restart(id);
        self.attach_policy(id);
    }

    /// Heals the network, resumes everyone, restarts what is down.
    fn heal(&mut self) {
        self.sim.heal();
        self.broker_cuts.clear();
        let ids: Vec<i32> = (0..CONTROLLERS)
            .chain(self.brokers.keys().copied())
            .collect();
        for id in ids {
            self.resume(id);
        }
        for id in self.sim.down() {
            self.restart(id);
        }
        // A controller whose disk failed stops again at once; restart it with a disk that works.
    }
}

/// One seeded run: faults for a minute of simulated time, then healing; every check on the way
/// and at the end.
pub(crate) fn run(seed: u64) -> Stats {
    simulate(seed).stats
}

/// [`run`], returning the whole cluster as it ended.
fn simulate(seed: u64) -> Cluster {
    let mut cluster = Cluster::new(seed);
    let rng_pick = |rng: &mut Rng, n: u64| rng.below(n);
    cluster.sim.drop_per_mille = cluster.sim.rng.below(100);
    cluster.sim.delay_ticks_max = cluster.sim.rng.below(8);
    let fault_ticks = 600;
    for _ in 0..fault_ticks {
        cluster.step();
        let roll = rng_pick(&mut cluster.sim.rng, 1000);
        let controller = rng_pick(&mut cluster.sim.rng, CONTROLLERS as u64) as i32;
        let broker = BROKER_BASE + rng_pick(&mut cluster.sim.rng, BROKERS as u64) as i32;
        match roll {
            0..=4 => cluster.pause(controller),
            5..=29 => cluster.resume(controller),
            30..=34 => cluster.pause(broker),
            35..=59 => cluster.resume(broker),
            60..=62 if cluster.sim.down().is_empty() => cluster.crash(controller),
            63..=79 => {
                for id in cluster.sim.down() {
                    cluster.restart(id);
                }
            }
            80..=84 => {
                let other = (controller + 1) % CONTROLLERS;
                cluster.sim.cut(controller, other);
            }
            85..=86 => cluster.sim.isolate(controller),
            87..=91 => {
                cluster.broker_cuts.insert((controller, broker));
            }
            92..=111 => {
                cluster.sim.heal();
                cluster.broker_cuts.clear();
            }
            112..=113 => cluster.restart_broker(broker),
            _ => {}
        }
    }
    cluster.sim.drop_per_mille = 0;
    cluster.heal();
    // Long enough for an election, every broker to find the leader, register and be unfenced,
    // and every replica to catch up.
    let mut settled = false;
    for _ in 0..600 {
        cluster.step();
        for id in cluster.sim.down() {
            cluster.restart(id);
        }
        if cluster.settled() {
            settled = true;
            break;
        }
    }
    assert!(
        settled,
        "seed {seed}: the cluster did not settle after healing: leader {:?}, brokers {:?}",
        cluster.sim.leader(),
        cluster
            .sim
            .leader()
            .and_then(|l| cluster.sim.quorum(l))
            .map(|q| q.image().brokers.clone())
    );
    cluster
}

impl Cluster {
    /// A leader whose image has every broker registered and unfenced and every topic asked for,
    /// every replica applied up to it, and nothing left to answer.
    fn settled(&self) -> bool {
        let Some(leader) = self.sim.leader() else {
            return false;
        };
        let quorum = self.sim.quorum(leader).expect("live leader");
        let image = quorum.image();
        let brokers_ok = self.brokers.keys().all(|id| {
            image
                .brokers
                .get(id)
                .is_some_and(|b| !b.fenced && Some(b.broker_epoch) == self.brokers[id].epoch)
        });
        let status = quorum.status();
        brokers_ok
            && self.creates.is_empty()
            && status.commit_index == status.last_index
            && self.sim.live().len() == CONTROLLERS as usize
            && self.sim.live().iter().all(|id| {
                let q = self.sim.quorum(*id).expect("live");
                q.applied_index() == status.last_index && *q.image() == *image
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_replays_the_same_run() {
        let (a, b) = (simulate(7), simulate(7));
        assert_eq!(a.sim.history, b.sim.history);
        assert_eq!(format!("{:?}", a.stats), format!("{:?}", b.stats));
        assert!(!a.created.is_empty(), "{:?}", a.stats);
    }

    fn env(name: &str) -> Option<u64> {
        std::env::var(name).ok().and_then(|v| v.parse().ok())
    }

    /// `SIM_CLUSTER_SEED=s` runs seed s alone; `SIM_CLUSTER_SEEDS=n SIM_CLUSTER_START=s` runs n
    /// seeds from s (scripts/sim); 200 seeds from 0 otherwise. A failing seed prints the command
    /// that replays it.
    #[test]
    fn the_controller_policy_keeps_its_invariants_under_faults() {
        let seeds = match env("SIM_CLUSTER_SEED") {
            Some(seed) => seed..seed + 1,
            None => {
                let start = env("SIM_CLUSTER_START").unwrap_or(0);
                start..start + env("SIM_CLUSTER_SEEDS").unwrap_or(200)
            }
        };
        let mut total = Stats::default();
        let count = seeds.end - seeds.start;
        for seed in seeds {
            let outcome = std::panic::catch_unwind(|| run(seed));
            let stats = outcome.unwrap_or_else(|panic| {
                eprintln!(
                    "seed {seed} failed; replay it with: SIM_CLUSTER_SEED={seed} cargo test -p \
                     skald-controller --lib sim::cluster"
                );
                std::panic::resume_unwind(panic)
            });
            total.fencings += stats.fencings;
            total.timeouts += stats.timeouts;
            total.creates_committed += stats.creates_committed;
            total.creates_refused_as_existing += stats.creates_refused_as_existing;
            total.controller_pauses += stats.controller_pauses;
            total.broker_pauses += stats.broker_pauses;
            total.crashes += stats.crashes;
            total.broker_restarts += stats.broker_restarts;
        }
        eprintln!("{count} seeds: {total:?}");
    }
}
