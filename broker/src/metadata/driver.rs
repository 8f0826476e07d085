//! The quorum driver: one OS thread owns this node's raft [`Quorum`] and is the only code that
//! touches it (raft-rs is single-threaded by design). Everything else talks to it through a bounded
//! queue of [`Event`]s: raft messages from peers, metadata operations, broker registrations and
//! heartbeats, partition leaders' ISR changes (AlterPartition), metadata fetches from brokers, and
//! status queries.
//!
//! A thread rather than a task because the raft log is fsynced inside the Ready loop; a blocked
//! tokio worker would stall connections. On the active controller the driver also plans
//! operations (one in flight at a time, so each is validated against an image that already holds
//! the previous one's records), tracks broker liveness and fences brokers whose session expired,
//! and every `leader.imbalance.check.interval` moves leaderships back to preferred replicas
//! (`auto.leader.rebalance.enable`), as one more operation in the same queue.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::Message;
use skald_controller::auto_balance::{self, Balance};
use skald_controller::election::PREFERRED_ELECTIONS_PER_PASS_MAX;
use skald_controller::follower::MetadataUpdate;
use skald_controller::liveness::{BrokerLiveness, Expired};
use skald_controller::quorum::{ProposeError, Quorum, QuorumStatus};
use skald_controller::raft_disk::FileDisk;
use skald_controller::{
    preferred_leader_elections, AlterPartitionRequest, BrokerRegistration, Controller,
    ControllerOp, ControllerReply, MetadataImage, MetadataRecord, PartitionOutcome, Planned,
};
use tokio::sync::oneshot;

use super::publisher::{Completion, Publisher};
use super::ControlError;

/// How many events may wait for the driver before senders are refused (bounded, like everything).
const EVENT_QUEUE_MAX: usize = 4096;
/// How many operations may wait behind the one in flight.
const OPERATION_QUEUE_MAX: usize = 1024;
/// How many metadata fetches may wait for news (one per broker-only node, normally).
const PARKED_FETCHES_MAX: usize = 1024;
/// How long a metadata fetch with nothing new waits for the next commit (a long poll, so brokers
/// learn of changes at once rather than at their next poll).
const FETCH_WAIT_MAX: Duration = Duration::from_millis(500);

/// A broker's heartbeat, as the controller needs it (Kafka's BrokerHeartbeatRequest).
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub current_metadata_offset: i64,
    pub want_fence: bool,
    pub want_shut_down: bool,
}

/// The controller's answer (Kafka's BrokerHeartbeatResponse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub is_caught_up: bool,
    pub is_fenced: bool,
    pub should_shut_down: bool,
}

type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

pub enum Event {
    Raft(Box<Message>),
    /// A peer could not be reached: raft should probe it rather than stream to it.
    Unreachable(i32),
    /// A snapshot for this peer was lost: raft must try again rather than wait for it.
    SnapshotFailed(i32),
    Operation(ControllerOp, Reply<ControllerReply>),
    Register(BrokerRegistration, Reply<i64>),
    Heartbeat(Heartbeat, Reply<HeartbeatReply>),
    AlterPartition(AlterPartitionRequest, Reply<Vec<PartitionOutcome>>),
    FetchMetadata {
        after_index: u64,
        max_bytes: usize,
        reply: FetchReply,
    },
    Status(oneshot::Sender<QuorumStatus>),
    /// A connection on which a broker heartbeated to this controller closed at `closed_at`. The
    /// reply is the address of the broker's listener to probe (`controller_plane::departure`),
    /// when this node leads, the broker is unfenced at that epoch and has not been heard from
    /// since; `None` otherwise.
    DepartureProbe {
        broker_id: i32,
        broker_epoch: i64,
        closed_at: Instant,
        reply: oneshot::Sender<Option<String>>,
    },
    /// The probe found the broker's listener refusing connections: its process is gone. Fenced
    /// at once if the conditions of [`Event::DepartureProbe`] still hold.
    Departed {
        broker_id: i32,
        broker_epoch: i64,
        closed_at: Instant,
    },
    /// The probe of a broker silent since `since` found its listener accepting but no answer to
    /// ApiVersions (`controller_plane::unresponsive`). Fenced at once if the rules of
    /// `Driver::unresponsive_verdict` hold.
    Unresponsive {
        broker_id: i32,
        broker_epoch: i64,
        since: Instant,
    },
    /// Hand leadership to another voter (graceful shutdown), then stop.
    Shutdown(oneshot::Sender<()>),
}

/// Where raft messages for other voters go (the TCP transport; a channel in tests).
pub trait RaftSender: Send + 'static {
    fn send(&self, to: i32, message: Message);
}

/// A cheap handle to the driver thread.
#[derive(Clone)]
pub struct DriverHandle {
    events: SyncSender<Event>,
    leader: Arc<AtomicI32>,
    applied_index: Arc<AtomicU64>,
    node_id: i32,
}

impl std::fmt::Debug for DriverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverHandle")
            .field("node_id", &self.node_id)
            .field("leader", &self.leader())
            .finish()
    }
}

impl DriverHandle {
    /// Queues an event; `false` when the queue is full or the driver has stopped.
    pub fn send(&self, event: Event) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!("controller event queue full; dropping an event");
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// The quorum leader as this node last saw it.
    pub fn leader(&self) -> Option<i32> {
        let leader = self.leader.load(Ordering::Acquire);
        (leader >= 0).then_some(leader)
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id)
    }

    /// The raft index of the last entry applied to this node's image.
    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Event) -> Result<T, ControlError> {
        let (tx, rx) = oneshot::channel();
        if !self.send(make(tx)) {
            return Err(ControlError::Unavailable(
                "the controller is not running".into(),
            ));
        }
        rx.await
            .unwrap_or_else(|_| Err(ControlError::Unavailable("the controller stopped".into())))
    }

    pub async fn operation(&self, op: ControllerOp) -> Result<ControllerReply, ControlError> {
        self.ask(|reply| Event::Operation(op, reply)).await
    }

    pub async fn register(&self, registration: BrokerRegistration) -> Result<i64, ControlError> {
        self.ask(|reply| Event::Register(registration, reply)).await
    }

    pub async fn heartbeat(&self, heartbeat: Heartbeat) -> Result<HeartbeatReply, ControlError> {
        self.ask(|reply| Event::Heartbeat(heartbeat, reply)).await
    }

    /// A partition leader's ISR changes: each partition's outcome, in request order, once the
    /// accepted ones have committed and this node serves them. STALE_BROKER_EPOCH when the
    /// requester is not registered with that epoch; NOT_CONTROLLER when this node does not lead.
    pub async fn alter_partition(
        &self,
        request: AlterPartitionRequest,
    ) -> Result<Vec<PartitionOutcome>, ControlError> {
        self.ask(|reply| Event::AlterPartition(request, reply))
            .await
    }

    pub async fn fetch_metadata(
        &self,
        after_index: u64,
        max_bytes: usize,
    ) -> Option<(MetadataUpdate, Option<i32>)> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Event::FetchMetadata {
            after_index,
            max_bytes,
            reply: tx,
        }) {
            return None;
        }
        rx.await.ok()
    }

    /// Where to probe a broker whose heartbeat connection closed at `closed_at`, if it is still
    /// a candidate for fencing (see [`Event::DepartureProbe`]).
    pub async fn departure_probe(
        &self,
        broker_id: i32,
        broker_epoch: i64,
        closed_at: Instant,
    ) -> Option<String> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Event::DepartureProbe {
            broker_id,
            broker_epoch,
            closed_at,
            reply: tx,
        }) {
            return None;
        }
        rx.await.ok().flatten()
    }

    pub async fn status(&self) -> Option<QuorumStatus> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Event::Status(tx)) {
            return None;
        }
        rx.await.ok()
    }

    /// Moves leadership away if this node has it and waits (bounded) for the driver to stop.
    pub async fn shutdown(&self, wait: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.send(Event::Shutdown(tx)) {
            let _ = tokio::time::timeout(wait, rx).await;
        }
    }
}

/// A broker the active controller has not heard from for a while: its listener is probed
/// (`controller_plane::departure::serve_probes`), and it is fenced at once if its process is
/// evidently gone — unless it is heard from after `since`.
#[derive(Debug)]
pub struct SilentBroker {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub address: String,
    pub since: Instant,
}

/// Settings the driver needs beyond the quorum's own.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub node_id: i32,
    pub metrics: crate::metrics::Metrics,
    pub tick: Duration,
    pub session_timeout_ms: u64,
    /// `broker.fast.fencing.enable`: fence brokers whose process is evidently gone at once.
    pub fast_fencing: bool,
    /// `broker.unresponsive.fencing.enable`: fence a silent broker that does not answer the
    /// probe's ApiVersions either (`controller_plane::unresponsive`).
    pub unresponsive_fencing: bool,
    /// With either, a broker silent this long (two `broker.heartbeat.interval.ms`) has its
    /// listener probed through `silent_brokers`: a broker whose heartbeat connection went to a
    /// controller that has since lost leadership leaves no closed connection here.
    pub probe_silence_ms: u64,
    pub silent_brokers: Option<tokio::sync::mpsc::Sender<SilentBroker>>,
    pub request_timeout: Duration,
    /// `auto.partition.rebalance.enable` (Skald's): balance replicas when brokers join or leave
    /// ([`skald_controller::auto_balance`]).
    pub auto_balance: bool,
}

/// What is waiting for an operation's records to commit.
enum Waiter {
    Operation(ControllerReply, Reply<ControllerReply>),
    Register(i32, i64, Reply<i64>),
    AlterPartition(Vec<PartitionOutcome>, Reply<Vec<PartitionOutcome>>),
    /// Fencing, unfencing and elections the controller started itself: nobody waits.
    Internal,
}

type FetchReply = oneshot::Sender<(MetadataUpdate, Option<i32>)>;

/// A metadata fetch that found nothing new, waiting for the next commit or its deadline.
struct ParkedFetch {
    after_index: u64,
    max_bytes: usize,
    reply: FetchReply,
    deadline: Instant,
}

struct InFlight {
    token: u64,
    waiter: Waiter,
    deadline: Instant,
    /// The broker this operation fences, if it is a fencing: not to be fenced (or counted) twice.
    fencing: Option<i32>,
}

enum Queued {
    Operation(ControllerOp, Reply<ControllerReply>),
    Register(BrokerRegistration, Reply<i64>),
    AlterPartition(AlterPartitionRequest, Reply<Vec<PartitionOutcome>>),
    Fence(i32, i64),
    Unfence(i32, i64),
    PreferredElections,
    /// Balancing after the registered brokers changed.
    AutoBalance,
}

impl Queued {
    /// Answers whoever waits for this operation with `error` (fencing, unfencing and elections
    /// the controller started itself have nobody waiting).
    fn fail(self, error: ControlError) {
        match self {
            Queued::Operation(_, reply) => drop(reply.send(Err(error))),
            Queued::Register(_, reply) => drop(reply.send(Err(error))),
            Queued::AlterPartition(_, reply) => drop(reply.send(Err(error))),
            Queued::Fence(..)
            | Queued::Unfence(..)
            | Queued::PreferredElections
            | Queued::AutoBalance => {}
        }
    }
}

/// Starts the driver thread. `quorum` has been opened (its image is what the caller published
/// first); `publisher` receives every later image.
pub fn start(
    config: DriverConfig,
    quorum: Quorum<FileDisk>,
    controller: Controller,
    publisher: Publisher,
    transport: Box<dyn RaftSender>,
) -> std::io::Result<DriverHandle> {
    let (events, inbox) = mpsc::sync_channel(EVENT_QUEUE_MAX);
    let handle = DriverHandle {
        events,
        leader: Arc::new(AtomicI32::new(-1)),
        applied_index: Arc::new(AtomicU64::new(quorum.applied_index())),
        node_id: config.node_id,
    };
    let mut driver = Driver {
        liveness: BrokerLiveness::new(
            config.session_timeout_ms,
            u64::try_from(config.tick.as_millis()).unwrap_or(u64::MAX),
        ),
        config,
        quorum,
        controller,
        publisher,
        transport,
        handle: handle.clone(),
        queue: VecDeque::new(),
        in_flight: None,
        next_token: 1,
        registration_index: HashMap::new(),
        was_leader: false,
        next_preferred_elections: None,
        started: Instant::now(),
        stop_now: false,
        parked: Vec::new(),
        probed_at: HashMap::new(),
        balanced_members: None,
    };
    std::thread::Builder::new()
        .name("skald-quorum".into())
        .spawn(move || driver.run(inbox))?;
    Ok(handle)
}

struct Driver {
    config: DriverConfig,
    quorum: Quorum<FileDisk>,
    controller: Controller,
    publisher: Publisher,
    transport: Box<dyn RaftSender>,
    handle: DriverHandle,
    liveness: BrokerLiveness,
    queue: VecDeque<Queued>,
    in_flight: Option<InFlight>,
    next_token: u64,
    /// The applied index at which each broker's current registration committed: a broker is
    /// caught up once its heartbeat reports at least this offset (KRaft's rule). Soft state.
    registration_index: HashMap<i32, u64>,
    was_leader: bool,
    /// When the next preferred-election pass is due (on the leader, when they are enabled).
    next_preferred_elections: Option<Instant>,
    started: Instant,
    /// Asked to stop with no live voter to hand leadership to.
    stop_now: bool,
    parked: Vec<ParkedFetch>,
    /// When each silent broker's listener was last probed (at most once per silence bound).
    probed_at: HashMap<i32, Instant>,
    /// The registered brokers automatic balancing last balanced (or found balanced); `None`
    /// until this node first leads with it on.
    balanced_members: Option<std::collections::BTreeSet<i32>>,
}

/// A broker's first advertised listener, as `host:port`: where clients and replicas reach it.
fn listener_address(image: &MetadataImage, broker_id: i32) -> Option<String> {
    let endpoint = image.brokers.get(&broker_id)?.endpoints.first()?;
    Some(format!("{}:{}", endpoint.host, endpoint.port))
}

impl Driver {
    fn run(&mut self, inbox: mpsc::Receiver<Event>) {
        let mut next_tick = Instant::now() + self.config.tick;
        let mut shutdown: Option<oneshot::Sender<()>> = None;
        let mut shutdown_deadline = None;
        loop {
            let now = Instant::now();
            match inbox.recv_timeout(next_tick.saturating_duration_since(now)) {
                Ok(event) => {
                    if let Some(reply) = self.handle_event(event) {
                        shutdown = Some(reply);
                        shutdown_deadline = Some(Instant::now() + Duration::from_secs(3));
                    }
                    while let Ok(event) = inbox.try_recv() {
                        if let Some(reply) = self.handle_event(event) {
                            shutdown = Some(reply);
                            shutdown_deadline = Some(Instant::now() + Duration::from_secs(3));
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_tick {
                next_tick += self.config.tick;
                self.quorum.tick();
                self.on_tick();
            }
            self.start_next_operation();
            if let Err(err) = self.ready() {
                tracing::error!("controller quorum failed, stopping it: {err}");
                self.fail_all(ControlError::Unavailable(format!(
                    "controller failed: {err}"
                )));
                self.handle.leader.store(-1, Ordering::Release);
                return;
            }
            if let Some(deadline) = shutdown_deadline {
                // Done once someone else leads, or alone, or out of time.
                if self.stop_now
                    || !self.quorum.is_leader()
                    || self.quorum.status().voters.len() <= 1
                    || Instant::now() >= deadline
                {
                    if let Some(reply) = shutdown.take() {
                        let _ = reply.send(());
                    }
                    self.fail_all(ControlError::Unavailable(
                        "the controller is stopping".into(),
                    ));
                    return;
                }
            }
        }
    }

    /// Handles one event; returns the shutdown reply when asked to stop.
    fn handle_event(&mut self, event: Event) -> Option<oneshot::Sender<()>> {
        match event {
            Event::Raft(message) => self.quorum.step(*message),
            Event::Unreachable(node_id) => self.quorum.report_unreachable(node_id),
            Event::SnapshotFailed(node_id) => self.quorum.report_snapshot(node_id, false),
            Event::Operation(op, reply) => self.enqueue(Queued::Operation(op, reply)),
            Event::Register(registration, reply) => {
                if self.quorum.is_leader() {
                    let (term, now_ms) = (self.quorum.term(), self.now_ms());
                    self.liveness.touch(registration.broker_id, term, now_ms);
                }
                self.enqueue(Queued::Register(registration, reply))
            }
            Event::Heartbeat(heartbeat, reply) => {
                let _ = reply.send(self.heartbeat(heartbeat));
            }
            Event::AlterPartition(request, reply) => {
                self.enqueue(Queued::AlterPartition(request, reply))
            }
            Event::FetchMetadata {
                after_index,
                max_bytes,
                reply,
            } => {
                let update = self.quorum.committed_since(after_index, max_bytes);
                if update == MetadataUpdate::UpToDate && self.parked.len() < PARKED_FETCHES_MAX {
                    self.parked.push(ParkedFetch {
                        after_index,
                        max_bytes,
                        reply,
                        deadline: Instant::now() + FETCH_WAIT_MAX,
                    });
                } else {
                    let _ = reply.send((update, self.quorum.leader()));
                }
            }
            Event::Status(reply) => {
                let _ = reply.send(self.quorum.status());
            }
            Event::DepartureProbe {
                broker_id,
                broker_epoch,
                closed_at,
                reply,
            } => {
                let _ = reply.send(self.departure_candidate(broker_id, broker_epoch, closed_at));
            }
            Event::Departed {
                broker_id,
                broker_epoch,
                closed_at,
            } => {
                if self
                    .departure_candidate(broker_id, broker_epoch, closed_at)
                    .is_some()
                {
                    tracing::warn!(
                        broker_id,
                        "broker's controller connection closed and its listener refuses \
                         connections: its process is gone; fencing it without waiting out its \
                         session"
                    );
                    self.fence_early(broker_id, broker_epoch, "process_gone");
                }
            }
            Event::Unresponsive {
                broker_id,
                broker_epoch,
                since,
            } => match self.unresponsive_verdict(broker_id, broker_epoch, since) {
                Ok(silent_ms) => {
                    tracing::warn!(
                        broker_id,
                        silent_ms,
                        "broker is silent and does not answer ApiVersions on its listener: \
                         fencing it as unresponsive without waiting out its session"
                    );
                    self.fence_early(broker_id, broker_epoch, "unresponsive");
                }
                Err(why) => tracing::info!(
                    broker_id,
                    "a silent broker did not answer ApiVersions, but is not fenced: {why}"
                ),
            },
            Event::Shutdown(reply) => {
                if self.quorum.is_leader() {
                    // The most caught-up live voter takes over; with none alive there is no one
                    // to hand over to, and stopping at once is all that is left.
                    let status = self.quorum.status();
                    let successor = status
                        .voters
                        .iter()
                        .filter(|voter| voter.node_id != self.config.node_id)
                        .filter(|voter| voter.recently_active == Some(true))
                        .max_by_key(|voter| voter.matched_index);
                    match successor {
                        Some(voter) => {
                            tracing::info!(
                                to = voter.node_id,
                                "moving controller leadership before shutting down"
                            );
                            self.quorum.transfer_leadership(voter.node_id);
                        }
                        None => self.stop_now = true,
                    }
                }
                return Some(reply);
            }
        }
        None
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn enqueue(&mut self, queued: Queued) {
        if !self.quorum.is_leader() {
            queued.fail(ControlError::NotController(self.quorum.leader()));
            return;
        }
        if self.queue.len() >= OPERATION_QUEUE_MAX {
            queued.fail(ControlError::Unavailable("the controller is busy".into()));
            return;
        }
        self.queue.push_back(queued);
    }

    /// The listener address of `broker_id` when this node leads, the broker is unfenced at
    /// `broker_epoch` and it has not been heard from since `closed_at` (when a connection it
    /// heartbeated on closed): what makes it worth probing, and fencing if the probe finds its
    /// process gone.
    fn departure_candidate(
        &self,
        broker_id: i32,
        broker_epoch: i64,
        closed_at: Instant,
    ) -> Option<String> {
        if !self.config.fast_fencing || !self.quorum.is_leader() {
            return None;
        }
        let image = self.quorum.image();
        image
            .brokers
            .get(&broker_id)
            .filter(|b| b.broker_epoch == broker_epoch && !b.fenced)?;
        if !self
            .liveness
            .silent_since(broker_id, self.ms_since_start(closed_at))
        {
            return None;
        }
        listener_address(&image, broker_id)
    }

    /// Whether a broker whose probe went unanswered is fenced: `Ok` with how long it has been
    /// silent, or why not. This node must lead with unresponsive fencing on, the broker must be
    /// unfenced at `broker_epoch` and unheard of since `since` (when the probe was asked for,
    /// two heartbeat intervals into its silence), this node must have run throughout its
    /// silence (a controller that stalled could not hear it), and it must be the odd one out:
    /// another unfenced broker to take over, none of them silent too.
    fn unresponsive_verdict(
        &self,
        broker_id: i32,
        broker_epoch: i64,
        since: Instant,
    ) -> Result<u64, &'static str> {
        if !self.config.unresponsive_fencing || !self.quorum.is_leader() {
            return Err("this node does not fence unresponsive brokers (now)");
        }
        let image = self.quorum.image();
        image
            .brokers
            .get(&broker_id)
            .filter(|b| b.broker_epoch == broker_epoch && !b.fenced)
            .ok_or("fenced or registered again already")?;
        let since_ms = self.ms_since_start(since);
        if !self.liveness.silent_since(broker_id, since_ms) {
            return Err("heard from since the probe was asked for");
        }
        let now_ms = self.now_ms();
        let last_ms = self
            .liveness
            .last_contact_ms(broker_id)
            .ok_or("never heard from in this term")?;
        if !self.liveness.ran_throughout(last_ms, now_ms) {
            return Err("this controller stalled during the broker's silence");
        }
        let others = image
            .brokers
            .values()
            .filter(|b| b.broker_id != broker_id && !b.fenced)
            .count();
        if others == 0 {
            return Err("no other unfenced broker to take over");
        }
        let silent = self
            .liveness
            .silent_longer_than(&image, now_ms, self.config.probe_silence_ms);
        if silent.iter().any(|(id, _)| *id != broker_id) {
            return Err("other brokers are silent too");
        }
        Ok(now_ms.saturating_sub(last_ms))
    }

    /// Queues the fencing of `broker_id` before its session ended, counted by `reason`.
    fn fence_early(&mut self, broker_id: i32, broker_epoch: i64, reason: &str) {
        if self.fence_once(broker_id, broker_epoch) {
            self.config
                .metrics
                .early_fenced_brokers_total
                .with_label_values(&[&broker_id.to_string(), reason])
                .inc();
        }
    }

    /// `at` in this driver's milliseconds (those of [`Driver::now_ms`]).
    fn ms_since_start(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64
    }

    /// Asks for a probe of every broker silent for `probe_silence_ms` (once per that long each).
    fn probe_silent_brokers(&mut self, image: &MetadataImage, now_ms: u64) {
        let Some(probes) = self
            .config
            .silent_brokers
            .as_ref()
            .filter(|_| self.config.fast_fencing || self.config.unresponsive_fencing)
        else {
            return;
        };
        let silence_ms = self.config.probe_silence_ms;
        let now = Instant::now();
        let every = Duration::from_millis(silence_ms);
        self.probed_at
            .retain(|_, at| now.saturating_duration_since(*at) < every);
        let silent = self.liveness.silent_longer_than(image, now_ms, silence_ms);
        for (broker_id, broker_epoch) in silent {
            if self.probed_at.contains_key(&broker_id) {
                continue;
            }
            let Some(address) = listener_address(image, broker_id) else {
                continue;
            };
            self.probed_at.insert(broker_id, now);
            // A full queue drops the probe; the next comes a silence bound later.
            let _ = probes.try_send(SilentBroker {
                broker_id,
                broker_epoch,
                address,
                since: now,
            });
        }
    }

    /// Whether the fencing of `broker_id` is queued or in flight.
    fn fencing(&self, broker_id: i32) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|f| f.fencing == Some(broker_id))
            || self
                .queue
                .iter()
                .any(|q| matches!(q, Queued::Fence(id, _) if *id == broker_id))
    }

    /// Queues the fencing of `broker_id` unless it is queued or in flight already; whether it
    /// queued it.
    fn fence_once(&mut self, broker_id: i32, broker_epoch: i64) -> bool {
        let already = self.fencing(broker_id);
        if !already {
            self.enqueue(Queued::Fence(broker_id, broker_epoch));
        }
        !already
    }

    fn heartbeat(&mut self, heartbeat: Heartbeat) -> Result<HeartbeatReply, ControlError> {
        if !self.quorum.is_leader() {
            return Err(ControlError::NotController(self.quorum.leader()));
        }
        let image = self.quorum.image();
        let Some(broker) = image.brokers.get(&heartbeat.broker_id) else {
            return Err(ControlError::StaleBrokerEpoch);
        };
        if broker.broker_epoch != heartbeat.broker_epoch {
            return Err(ControlError::StaleBrokerEpoch);
        }
        let (term, now_ms) = (self.quorum.term(), self.now_ms());
        self.liveness.touch(heartbeat.broker_id, term, now_ms);
        // A new leader does not know where registrations committed: its own applied index is a
        // safe (later) bar.
        let bar = *self
            .registration_index
            .entry(heartbeat.broker_id)
            .or_insert_with(|| self.quorum.applied_index());
        let is_caught_up = heartbeat.current_metadata_offset >= 0
            && heartbeat.current_metadata_offset as u64 >= bar;
        let (id, epoch) = (broker.broker_id, broker.broker_epoch);
        if heartbeat.want_shut_down || heartbeat.want_fence {
            if !broker.fenced {
                self.enqueue(Queued::Fence(id, epoch));
            }
        } else if broker.fenced && is_caught_up {
            self.enqueue(Queued::Unfence(id, epoch));
        }
        Ok(HeartbeatReply {
            is_caught_up,
            is_fenced: broker.fenced,
            should_shut_down: heartbeat.want_shut_down && broker.fenced,
        })
    }

    /// Answers parked fetches that now have news, or whose wait is over.
    fn answer_parked(&mut self) {
        let now = Instant::now();
        let leader = self.quorum.leader();
        let mut waiting = Vec::with_capacity(self.parked.len());
        for fetch in self.parked.drain(..) {
            let update = self
                .quorum
                .committed_since(fetch.after_index, fetch.max_bytes);
            if update != MetadataUpdate::UpToDate || now >= fetch.deadline {
                let _ = fetch.reply.send((update, leader));
            } else {
                waiting.push(fetch);
            }
        }
        self.parked = waiting;
    }

    fn on_tick(&mut self) {
        self.answer_parked();
        let now = Instant::now();
        // A proposal past its deadline gets its caller a timeout, but stays in flight: it may
        // still commit, and the next operation must be planned against an image that has it
        // (two creates of one topic would otherwise both commit, the second redefining the
        // topic). It leaves when it commits, or when this node stops leading.
        if let Some(in_flight) = &mut self.in_flight {
            if now >= in_flight.deadline && !matches!(in_flight.waiter, Waiter::Internal) {
                let waiter = std::mem::replace(&mut in_flight.waiter, Waiter::Internal);
                fail(waiter, ControlError::Timeout);
                tracing::warn!(
                    token = in_flight.token,
                    "a metadata change is not committed in time; later changes wait for it"
                );
            }
        }
        if !self.quorum.is_leader() {
            return;
        }
        if self.next_preferred_elections.is_some_and(|due| now >= due) {
            let already = self
                .queue
                .iter()
                .any(|q| matches!(q, Queued::PreferredElections));
            if !already {
                self.enqueue(Queued::PreferredElections);
            }
            self.next_preferred_elections = self.preferred_elections_interval().map(|i| now + i);
        }
        let image = self.quorum.image();
        if self.config.auto_balance
            && self.balanced_members.as_ref() != Some(&auto_balance::members(&image))
            && !self.queue.iter().any(|q| matches!(q, Queued::AutoBalance))
        {
            self.enqueue(Queued::AutoBalance);
        }
        let (term, now_ms) = (self.quorum.term(), self.now_ms());
        let expired = match self.liveness.expired(&image, term, now_ms) {
            Expired::Brokers(expired) => expired,
            Expired::Stalled { stalled_ms } => {
                tracing::warn!(
                    stalled_ms,
                    "the controller stalled; every broker's session starts again rather than \
                     fencing brokers whose heartbeats it could not receive"
                );
                Vec::new()
            }
        };
        for (broker_id, epoch) in expired {
            if !self.fencing(broker_id) {
                tracing::warn!(broker_id, "broker session expired; fencing it");
                self.config
                    .metrics
                    .timed_out_broker_heartbeats_total
                    .with_label_values(&[&broker_id.to_string()])
                    .inc();
                let _ = self.fence_once(broker_id, epoch);
            }
        }
        self.probe_silent_brokers(&image, now_ms);
    }

    /// How often preferred leader elections run, if they do (`auto.leader.rebalance.enable`).
    fn preferred_elections_interval(&self) -> Option<Duration> {
        let elections = self.controller.election_config();
        elections
            .auto_leader_rebalance_enable
            .then(|| Duration::from_millis(elections.leader_imbalance_check_interval_ms.max(1)))
    }

    /// Plans and proposes the next queued operation when none is in flight.
    fn start_next_operation(&mut self) {
        while self.in_flight.is_none() && self.quorum.is_leader() {
            let Some(queued) = self.queue.pop_front() else {
                return;
            };
            let image = self.quorum.image();
            let fencing = match &queued {
                Queued::Fence(id, _) => Some(*id),
                _ => None,
            };
            let (records, waiter): (Vec<MetadataRecord>, Waiter) = match queued {
                Queued::Operation(op, reply) => {
                    let planned = self.controller.plan(&image, &op);
                    (planned.records, Waiter::Operation(planned.reply, reply))
                }
                Queued::Register(registration, reply) => {
                    let broker_id = registration.broker_id;
                    let planned = self.controller.register_broker(&image, registration);
                    (
                        planned.records,
                        Waiter::Register(broker_id, planned.reply, reply),
                    )
                }
                Queued::Fence(id, epoch) => (
                    self.controller.fence_broker(&image, id, epoch).records,
                    Waiter::Internal,
                ),
                Queued::Unfence(id, epoch) => (
                    self.controller.unfence_broker(&image, id, epoch).records,
                    Waiter::Internal,
                ),
                Queued::AlterPartition(request, reply) => {
                    match self.controller.alter_partition(&image, &request) {
                        Planned {
                            records,
                            reply: Ok(outcomes),
                        } => (records, Waiter::AlterPartition(outcomes, reply)),
                        Planned { reply: Err(_), .. } => {
                            drop(reply.send(Err(ControlError::StaleBrokerEpoch)));
                            continue;
                        }
                    }
                }
                Queued::AutoBalance => match auto_balance::plan(&image) {
                    // Asked again at the next tick (cheap: the first fenced broker or moving
                    // partition ends the check).
                    Balance::NotSettled => continue,
                    Balance::Balanced => {
                        self.balanced_members = Some(auto_balance::members(&image));
                        continue;
                    }
                    Balance::Moves(op) => {
                        self.balanced_members = Some(auto_balance::members(&image));
                        let planned = self.controller.plan(&image, &op);
                        tracing::info!(
                            partitions = op.topic_count(),
                            "balancing replicas after brokers joined or left"
                        );
                        (planned.records, Waiter::Internal)
                    }
                },
                Queued::PreferredElections => {
                    let records = preferred_leader_elections(&image);
                    if records.len() >= PREFERRED_ELECTIONS_PER_PASS_MAX {
                        // More may be waiting: the next pass runs at the next tick.
                        self.next_preferred_elections = Some(Instant::now());
                    }
                    if !records.is_empty() {
                        tracing::info!(
                            partitions = records.len(),
                            "moving leaderships back to preferred replicas"
                        );
                    }
                    (records, Waiter::Internal)
                }
            };
            if records.is_empty() {
                self.complete(waiter, image);
                continue;
            }
            let token = self.next_token;
            self.next_token += 1;
            match self.quorum.propose(records, token) {
                Ok(()) => {
                    self.in_flight = Some(InFlight {
                        token,
                        waiter,
                        deadline: Instant::now() + self.config.request_timeout,
                        fencing,
                    })
                }
                Err(ProposeError::NotLeader { leader }) => {
                    fail(waiter, ControlError::NotController(leader))
                }
                Err(err) => fail(waiter, ControlError::Unavailable(err.to_string())),
            }
        }
    }

    /// Runs one Ready round and routes what it produced.
    fn ready(&mut self) -> skald_controller::Result<()> {
        let output = self.quorum.handle_ready()?;
        for (to, message) in output.messages {
            self.transport.send(to, message);
        }
        let is_leader = self.quorum.is_leader();
        let leader = self.quorum.leader().unwrap_or(-1);
        self.handle.leader.store(leader, Ordering::Release);
        let metrics = &self.config.metrics;
        metrics.raft_leader_id.set(i64::from(leader));
        metrics
            .raft_term
            .set(i64::try_from(self.quorum.term()).unwrap_or(i64::MAX));
        metrics.controller_active.set(i64::from(is_leader));
        if is_leader != self.was_leader {
            self.was_leader = is_leader;
            if is_leader {
                tracing::info!(
                    term = self.quorum.term(),
                    "this node is now the active controller"
                );
                let (term, now_ms) = (self.quorum.term(), self.now_ms());
                self.liveness.lead(term, now_ms);
                self.registration_index.clear();
                self.next_preferred_elections = self
                    .preferred_elections_interval()
                    .map(|interval| Instant::now() + interval);
            } else {
                let leader = self.quorum.leader();
                self.liveness.resign();
                self.next_preferred_elections = None;
                self.fail_all(ControlError::NotController(leader));
            }
        }
        let mut completions: Vec<Completion> = Vec::new();
        for (token, result) in output.completed {
            let Some(in_flight) = self.in_flight.take_if(|f| f.token == token) else {
                continue;
            };
            match result {
                Ok(()) => completions.push(self.completion(in_flight.waiter)),
                Err(err) => fail(in_flight.waiter, ControlError::Unavailable(err.to_string())),
            }
        }
        if output.image.is_some() {
            self.answer_parked();
        }
        if let Some(image) = output.image {
            self.handle
                .applied_index
                .store(self.quorum.applied_index(), Ordering::Release);
            self.publisher
                .publish(image, self.quorum.applied_index(), completions);
        } else if !completions.is_empty() {
            self.publisher.publish(
                self.quorum.image(),
                self.quorum.applied_index(),
                completions,
            );
        }
        Ok(())
    }

    /// The reply to send once the committed image has been published on this node.
    fn completion(&mut self, waiter: Waiter) -> Completion {
        if let Waiter::Register(broker_id, _, _) = &waiter {
            self.registration_index
                .insert(*broker_id, self.quorum.applied_index());
        }
        Box::new(move || match waiter {
            Waiter::Operation(reply, tx) => drop(tx.send(Ok(reply))),
            Waiter::Register(_, epoch, tx) => drop(tx.send(Ok(epoch))),
            Waiter::AlterPartition(outcomes, tx) => drop(tx.send(Ok(outcomes))),
            Waiter::Internal => {}
        })
    }

    /// An operation that needed no records: answer at once (after anything before it published).
    fn complete(&mut self, waiter: Waiter, image: Arc<MetadataImage>) {
        let completion = self.completion(waiter);
        self.publisher
            .publish(image, self.quorum.applied_index(), vec![completion]);
    }

    fn fail_all(&mut self, error: ControlError) {
        if let Some(in_flight) = self.in_flight.take() {
            fail(in_flight.waiter, error.clone());
        }
        for queued in self.queue.drain(..) {
            queued.fail(error.clone());
        }
    }
}

fn fail(waiter: Waiter, error: ControlError) {
    match waiter {
        Waiter::Operation(_, tx) => drop(tx.send(Err(error))),
        Waiter::Register(_, _, tx) => drop(tx.send(Err(error))),
        Waiter::AlterPartition(_, tx) => drop(tx.send(Err(error))),
        Waiter::Internal => {}
    }
}
