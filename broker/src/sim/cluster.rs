//! The cluster under faults: the controller, the brokers, the client, the network, and the run.

use std::collections::BTreeMap;

use skald_controller::{
    BrokerRegistration, Controller, ControllerConfig, CreateTopicSpec, ElectionConfig, Endpoint,
    MetadataImage, MetadataRecord,
};

use super::broker::{Outbox, SimBroker};
use super::check::{Checker, Seen};
use super::net::{Network, Wire};
use super::trace;
use super::{
    Rng, ANSWER_WAIT_MS, BROKERS, CLIENT, CONTROLLER, LAG_TIME_MAX_MS, MIN_INSYNC_REPLICAS,
    PARTITIONS, PRODUCE_TIMEOUT_MS, SESSION_MS, TICK_MS, TOPIC,
};
use crate::replication::state::IsrRules;

/// Bugs to inject, to show that each invariant catches one (all off in a real run).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Bugs {
    /// The leader moves its high watermark to its own log end at each append.
    pub(crate) ack_before_replicated: bool,
    /// The leader never answers a diverging epoch: followers keep divergent tails.
    pub(crate) no_divergence_check: bool,
    /// The leader counts an ISR shrink before the controller commits it.
    pub(crate) shrink_before_commit: bool,
    /// The leader sets its high watermark to the ISR's smallest log end, even when lower.
    pub(crate) high_watermark_recomputed: bool,
    /// The controller moves leaderships without bumping the leader epoch.
    pub(crate) election_keeps_leader_epoch: bool,
}

/// What a run did, for the statistics line.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    pub(crate) seen: Seen,
    pub(crate) produce_errors: u64,
    pub(crate) pauses: u64,
    pub(crate) kills: u64,
    pub(crate) power_offs: u64,
    pub(crate) fencings: u64,
    pub(crate) sync_every_append: bool,
    pub(crate) settle_ticks: u64,
}

/// The controller: the real `Controller`'s plans, replayed into one image (each commit one
/// metadata version).
struct SimController {
    controller: Controller,
    image: MetadataImage,
    version: u64,
    /// When each broker was last heard from (heartbeat or registration).
    contact_ms: BTreeMap<i32, i64>,
    /// The version holding each broker's current registration.
    registered_version: BTreeMap<i32, u64>,
    election_keeps_leader_epoch: bool,
    now_ms: i64,
}

fn registration(broker_id: i32, incarnation_id: u64) -> BrokerRegistration {
    BrokerRegistration {
        broker_id,
        incarnation_id,
        endpoints: vec![Endpoint {
            name: "PLAINTEXT".into(),
            host: format!("b{broker_id}"),
            port: 9092,
        }],
        rack: None,
    }
}

impl SimController {
    /// Brokers registered and unfenced, and the topic created with every broker a replica.
    fn bootstrap(bugs: &Bugs) -> SimController {
        let controller = Controller::new(ControllerConfig {
            node_id: CONTROLLER,
            num_partitions: PARTITIONS,
            default_replication_factor: BROKERS as i16,
        })
        .with_election_config(ElectionConfig {
            unclean_leader_election_enable: false,
            auto_leader_rebalance_enable: false,
            leader_imbalance_check_interval_ms: 300_000,
        })
        .with_topic_id_source(|| 7 << 64);
        let mut sim = SimController {
            controller,
            image: MetadataImage::default(),
            version: 0,
            contact_ms: BTreeMap::new(),
            registered_version: BTreeMap::new(),
            election_keeps_leader_epoch: false,
            now_ms: 0,
        };
        for id in 1..=BROKERS {
            let planned = sim
                .controller
                .register_broker(&sim.image, registration(id, 1));
            sim.commit(planned.records);
            sim.registered_version.insert(id, sim.version);
            let planned = sim.controller.unfence_broker(&sim.image, id, planned.reply);
            sim.commit(planned.records);
            sim.contact_ms.insert(id, 0);
        }
        let planned = sim.controller.create_topics(
            &sim.image,
            &[CreateTopicSpec {
                name: TOPIC.into(),
                num_partitions: PARTITIONS,
                replication_factor: BROKERS as i16,
                ..CreateTopicSpec::default()
            }],
            false,
        );
        assert!(
            planned.reply.iter().all(Result::is_ok),
            "{:?}",
            planned.reply
        );
        sim.commit(planned.records);
        sim.election_keeps_leader_epoch = bugs.election_keeps_leader_epoch;
        sim
    }

    fn commit(&mut self, records: Vec<MetadataRecord>) {
        if records.is_empty() {
            return;
        }
        let before = self.image.topic(TOPIC).map(|t| t.partitions.clone());
        self.image.replay_batch(&records);
        self.version += 1;
        trace!(
            "{} ms: metadata v{}: {records:?}",
            self.now_ms,
            self.version
        );
        if let (true, Some(before)) = (self.election_keeps_leader_epoch, before) {
            // Injected: a new leader inherits its predecessor's leader epoch.
            let topic = self.image.topics.get_mut(TOPIC).expect("the topic exists");
            for (partition, old) in &before {
                if let Some(state) = topic.partitions.get_mut(partition) {
                    if old.leader >= 0 && state.leader >= 0 && state.leader != old.leader {
                        state.leader_epoch = old.leader_epoch;
                    }
                }
            }
        }
    }

    fn metadata(&self) -> Wire {
        Wire::Metadata {
            version: self.version,
            image: self.image.clone(),
        }
    }

    /// Fences the brokers whose session expired.
    fn tick(&mut self, now_ms: i64) {
        self.now_ms = now_ms;
        let expired: Vec<(i32, i64)> = self
            .image
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .filter(|b| {
                now_ms - self.contact_ms.get(&b.broker_id).copied().unwrap_or(0) > SESSION_MS
            })
            .map(|b| (b.broker_id, b.broker_epoch))
            .collect();
        for (id, broker_epoch) in expired {
            self.fence(id, broker_epoch);
        }
    }

    fn fence(&mut self, id: i32, broker_epoch: i64) {
        let planned = self.controller.fence_broker(&self.image, id, broker_epoch);
        self.commit(planned.records);
    }

    fn receive(&mut self, from: i32, wire: Wire, now_ms: i64) -> Wire {
        match wire {
            Wire::Register { incarnation } => {
                let planned = self
                    .controller
                    .register_broker(&self.image, registration(from, incarnation));
                if !planned.records.is_empty() {
                    self.commit(planned.records);
                    self.registered_version.insert(from, self.version);
                }
                self.contact_ms.insert(from, now_ms);
                Wire::Registered {
                    incarnation,
                    broker_epoch: planned.reply,
                    version: self.registered_version[&from],
                }
            }
            Wire::Heartbeat {
                broker_epoch,
                metadata_version,
            } => {
                let Some(broker) = self.image.brokers.get(&from) else {
                    return Wire::StaleBrokerEpoch;
                };
                if broker.broker_epoch != broker_epoch {
                    return Wire::StaleBrokerEpoch;
                }
                self.contact_ms.insert(from, now_ms);
                // KRaft unfences a broker once it has caught up with its own registration.
                if broker.fenced && metadata_version >= self.registered_version[&from] {
                    let planned = self
                        .controller
                        .unfence_broker(&self.image, from, broker_epoch);
                    self.commit(planned.records);
                }
                self.metadata()
            }
            Wire::MetadataRequest => self.metadata(),
            Wire::AlterPartition(request) => {
                let planned = self.controller.alter_partition(&self.image, &request);
                self.commit(planned.records);
                Wire::AlterPartitionAnswer {
                    request,
                    reply: planned.reply,
                }
            }
            other => panic!("the controller got {other:?}"),
        }
    }
}

/// The producer: acks=all batches to the leader its metadata names, a few in flight.
#[derive(Default)]
struct SimClient {
    image: Option<(u64, MetadataImage)>,
    metadata_due_ms: i64,
    next_request: u64,
    next_batch_id: i64,
    /// By request: (partition, batch id, sent at).
    in_flight: BTreeMap<u64, (i32, i64, i64)>,
    producing: bool,
}

const IN_FLIGHT_MAX: usize = 4;

pub(super) struct Cluster {
    seed: u64,
    rng: Rng,
    tick: u64,
    net: Network,
    controller: SimController,
    brokers: BTreeMap<i32, SimBroker>,
    client: SimClient,
    checker: Checker,
    rules: IsrRules,
    bugs: Bugs,
    stats: Stats,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn new(seed: u64, bugs: Bugs) -> Cluster {
        let mut rng = Rng::new(seed);
        // In memory where there is a tmpfs: the logs' fsyncs (epoch checkpoints, truncations)
        // would otherwise be most of a run's time.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("a temporary directory");
        let sync_every_append = rng.below(2) == 0;
        let controller = SimController::bootstrap(&bugs);
        let brokers = (1..=BROKERS)
            .map(|id| {
                let broker_epoch = controller.image.brokers[&id].broker_epoch;
                let broker = SimBroker::new(
                    id,
                    dir.path().join(format!("broker-{id}")),
                    sync_every_append,
                    broker_epoch,
                    controller.registered_version[&id],
                );
                (id, broker)
            })
            .collect();
        let mut net = Network::default();
        net.drop_per_mille = rng.below(60);
        net.delay_ticks_max = rng.below(4);
        let rules = IsrRules {
            lag_time_max_ms: LAG_TIME_MAX_MS,
            unresponsive_time_max_ms: if rng.below(2) == 0 { 0 } else { 600 },
            min_insync_replicas: MIN_INSYNC_REPLICAS,
        };
        Cluster {
            seed,
            rng,
            tick: 0,
            net,
            controller,
            brokers,
            client: SimClient {
                next_batch_id: 1_000,
                producing: true,
                ..SimClient::default()
            },
            checker: Checker::new(seed),
            rules,
            bugs,
            stats: Stats {
                sync_every_append,
                ..Stats::default()
            },
            _dir: dir,
        }
    }

    fn now_ms(&self) -> i64 {
        self.tick as i64 * TICK_MS
    }

    fn send_all(&mut self, from: i32, out: Outbox) {
        for (to, wire) in out {
            self.net.send(&mut self.rng, self.tick, from, to, wire);
        }
    }

    /// One tick: the controller's timers, the network, every process, then every check.
    fn step(&mut self) {
        self.tick += 1;
        let now_ms = self.now_ms();
        self.controller.tick(now_ms);
        let brokers = &self.brokers;
        let due = self
            .net
            .due(self.tick, |to| brokers.get(&to).is_none_or(|b| !b.paused));
        for packet in due {
            if self.net.is_cut(packet.from, packet.to) {
                continue;
            }
            match packet.to {
                CONTROLLER => {
                    let reply = self.controller.receive(packet.from, packet.wire, now_ms);
                    self.send_all(CONTROLLER, vec![(packet.from, reply)]);
                }
                CLIENT => self.client_receives(packet.wire),
                id => {
                    let broker = self.brokers.get_mut(&id).expect("known broker");
                    if !broker.up {
                        continue; // Nobody listens: lost.
                    }
                    let mut out = Outbox::new();
                    broker.receive(
                        packet.from,
                        packet.wire,
                        now_ms,
                        &self.rules,
                        &self.bugs,
                        &mut out,
                    );
                    self.send_all(id, out);
                }
            }
        }
        for id in 1..=BROKERS {
            let broker = self.brokers.get_mut(&id).expect("known broker");
            if !broker.up || broker.paused {
                continue;
            }
            let mut out = Outbox::new();
            broker.act(now_ms, &self.rules, &self.bugs, &mut out);
            self.send_all(id, out);
        }
        self.client_acts();
        self.checker.check(&mut self.brokers);
    }

    fn client_receives(&mut self, wire: Wire) {
        let now_ms = self.now_ms();
        match wire {
            Wire::Metadata { version, image } => {
                if self.client.image.as_ref().is_none_or(|(v, _)| *v < version) {
                    self.client.image = Some((version, image));
                }
            }
            Wire::ProduceAnswer {
                request,
                partition,
                result,
            } => {
                let Some((asked, batch_id, _)) = self.client.in_flight.remove(&request) else {
                    return;
                };
                assert_eq!(
                    asked, partition,
                    "seed {}: answer for another partition",
                    self.seed
                );
                match result {
                    Ok(base_offset) => self.checker.acknowledged(partition, base_offset, batch_id),
                    Err(_) => {
                        self.stats.produce_errors += 1;
                        self.client.metadata_due_ms = now_ms;
                    }
                }
            }
            other => panic!("the client got {other:?}"),
        }
    }

    fn client_acts(&mut self) {
        let now_ms = self.now_ms();
        self.client
            .in_flight
            .retain(|_, (_, _, sent)| now_ms - *sent < PRODUCE_TIMEOUT_MS + ANSWER_WAIT_MS);
        if now_ms >= self.client.metadata_due_ms {
            self.client.metadata_due_ms = now_ms + 500;
            self.net.send(
                &mut self.rng,
                self.tick,
                CLIENT,
                CONTROLLER,
                Wire::MetadataRequest,
            );
        }
        if !self.client.producing || self.client.in_flight.len() >= IN_FLIGHT_MAX {
            return;
        }
        let partition = self.rng.below(PARTITIONS as u64) as i32;
        let Some(leader) = self.client.image.as_ref().and_then(|(_, image)| {
            let leader = image.topic(TOPIC)?.partitions.get(&partition)?.leader;
            (leader > 0).then_some(leader)
        }) else {
            return;
        };
        let records = 1 + self.rng.below(3) as usize;
        let (request, batch_id) = (self.client.next_request, self.client.next_batch_id);
        self.client.next_request += 1;
        // Record timestamps are the id and the next ones: ids step past them.
        self.client.next_batch_id += 8;
        self.client
            .in_flight
            .insert(request, (partition, batch_id, now_ms));
        self.net.send(
            &mut self.rng,
            self.tick,
            CLIENT,
            leader,
            Wire::Produce {
                request,
                partition,
                batch_id,
                records,
            },
        );
    }

    fn pause(&mut self, id: i32) {
        let broker = self.brokers.get_mut(&id).expect("known broker");
        if broker.up && !broker.paused {
            broker.paused = true;
            self.stats.pauses += 1;
        }
    }

    fn kill(&mut self, id: i32) {
        let broker = self.brokers.get_mut(&id).expect("known broker");
        if broker.up {
            trace!("{} ms: broker {id} killed", self.tick as i64 * TICK_MS);
            broker.kill();
            self.stats.kills += 1;
        }
    }

    /// Power off: whatever each log lost is an exposure.
    fn power_off(&mut self, id: i32) {
        if !self.brokers[&id].up {
            return;
        }
        self.stats.power_offs += 1;
        let cut = self.brokers.get_mut(&id).expect("known broker").power_off();
        for (partition, before, after) in cut {
            trace!(
                "{} ms: broker {id} powered off: partition {partition} cut {before} -> {after}",
                self.now_ms()
            );
            self.checker.powered_off(partition, before, after);
        }
    }

    /// Heals the network, resumes and restarts everyone, and stops producing.
    fn heal(&mut self) {
        self.net.heal();
        self.net.drop_per_mille = 0;
        for broker in self.brokers.values_mut() {
            broker.paused = false;
            if !broker.up {
                broker.restart();
            }
        }
        self.client.producing = false;
    }

    /// Every broker registered, unfenced and up to date; every partition led, its ISR whole,
    /// every replica's log end and high watermark equal; nothing in flight.
    fn settled(&self) -> bool {
        let image = &self.controller.image;
        let brokers_ok = self.brokers.values().all(|b| {
            b.up && image.brokers.get(&b.id).is_some_and(|registered| {
                !registered.fenced && Some(registered.broker_epoch) == b.broker_epoch
            }) && b
                .image
                .as_ref()
                .is_some_and(|(v, _)| *v == self.controller.version)
        });
        let partitions_ok = (0..PARTITIONS).all(|partition| {
            let placement = &image.topic(TOPIC).expect("the topic exists").partitions[&partition];
            let ends: Vec<(i64, i64)> = self
                .brokers
                .values()
                .map(|b| {
                    let replica = &b.replicas[&partition];
                    (replica.log.log_end_offset(), replica.state.high_watermark)
                })
                .collect();
            placement.leader > 0
                && placement.isr.len() == BROKERS as usize
                && ends
                    .iter()
                    .all(|(end, hw)| end == hw && (*end, *hw) == ends[0])
        });
        brokers_ok && partitions_ok && self.client.in_flight.is_empty()
    }
}

/// One seeded run: faults for 40 s of simulated time, then healing until settled; every check
/// after every tick and at the end.
pub(crate) fn run(seed: u64, bugs: Bugs) -> Stats {
    let mut cluster = Cluster::new(seed, bugs);
    let fault_ticks = 800;
    for _ in 0..fault_ticks {
        cluster.step();
        let roll = cluster.rng.below(1000);
        let broker = 1 + cluster.rng.below(BROKERS as u64) as i32;
        let other = 1 + (broker + cluster.rng.below(BROKERS as u64 - 1) as i32) % BROKERS;
        match roll {
            0..=4 => cluster.pause(broker),
            5..=29 => cluster.brokers.get_mut(&broker).expect("known").paused = false,
            30..=31 => cluster.kill(broker),
            32..=33 => cluster.power_off(broker),
            34..=53 => {
                for broker in cluster.brokers.values_mut().filter(|b| !b.up) {
                    broker.restart();
                }
            }
            54..=58 => {
                cluster.net.cut(broker, other);
                cluster.net.cut(other, broker);
            }
            59..=61 => cluster.net.cut(broker, other),
            62..=64 => {
                cluster.net.cut(broker, CONTROLLER);
                cluster.net.cut(CONTROLLER, broker);
            }
            65..=84 => cluster.net.heal(),
            85..=86 => {
                // The controller fences a live broker (a session it thinks expired): its
                // leaderships move while it still runs.
                if let Some(registered) = cluster.controller.image.brokers.get(&broker) {
                    let broker_epoch = registered.broker_epoch;
                    trace!(
                        "{} ms: the controller fences broker {broker}",
                        cluster.now_ms()
                    );
                    cluster.controller.fence(broker, broker_epoch);
                    cluster.stats.fencings += 1;
                }
            }
            _ => {}
        }
    }
    cluster.heal();
    let mut settled = false;
    for tick in 0..2_000 {
        cluster.step();
        if cluster.settled() {
            cluster.stats.settle_ticks = tick;
            settled = true;
            break;
        }
    }
    assert!(
        settled,
        "seed {seed}: the cluster did not settle after healing: controller image {:?}, \
         brokers (id, log end, high watermark, role): {:?}",
        cluster
            .controller
            .image
            .topic(TOPIC)
            .map(|t| t.partitions.clone()),
        cluster
            .brokers
            .values()
            .map(|b| (
                b.id,
                b.replicas
                    .values()
                    .map(|r| (
                        r.log.log_end_offset(),
                        r.state.high_watermark,
                        r.state.role.clone()
                    ))
                    .collect::<Vec<_>>()
            ))
            .collect::<Vec<_>>()
    );
    cluster.checker.all_acknowledged_kept(&cluster.brokers);
    cluster.stats.seen = cluster.checker.seen.clone();
    cluster.stats
}
