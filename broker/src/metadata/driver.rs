//! The quorum driver: one OS thread owns this node's raft [`Quorum`] and is the only code that
//! touches it (raft-rs is single-threaded by design). Everything else talks to it through a bounded
//! queue of [`Event`]s: raft messages from peers, metadata operations, broker registrations and
//! heartbeats, partition leaders' ISR changes (AlterPartition), metadata fetches from brokers, and
//! status queries.
//!
//! A thread rather than a task because the raft log is fsynced inside the Ready loop; a blocked
//! tokio worker would stall connections. The driver is the I/O shell only: what the active
//! controller decides — which operation runs next (one in flight at a time, so each is validated
//! against an image that already holds the previous one's records), when a proposal times out,
//! broker liveness and fencing, probes of silent brokers, preferred leader elections every
//! `leader.imbalance.check.interval` and automatic balancing — is
//! [`skald_controller::policy::ControllerLoop`]'s, driven here with real time and run by the
//! controller crate's seeded simulation with a fake one.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::Message;
use skald_controller::follower::{MetadataFetch, MetadataUpdate};
use skald_controller::policy::{
    Action, ControllerLoop, FenceReason, LoopConfig, LoopError, Request, Ticket, Tickets, Waiter,
};
use skald_controller::quorum::{Quorum, QuorumStatus};
use skald_controller::raft_disk::FileDisk;
use skald_controller::{
    AlterPartitionRequest, BrokerRegistration, Controller, ControllerOp, ControllerReply,
    MetadataImage, PartitionOutcome,
};
use tokio::sync::oneshot;

use super::publisher::{Completion, Publisher};
use super::ControlError;

/// How many events may wait for the driver before senders are refused (bounded, like everything).
const EVENT_QUEUE_MAX: usize = 4096;
/// How many metadata fetches may wait for news (one per broker-only node, normally).
const PARKED_FETCHES_MAX: usize = 1024;
/// How long a metadata fetch with nothing new waits for the next commit (a long poll, so brokers
/// learn of changes at once rather than at their next poll).
const FETCH_WAIT_MAX: Duration = Duration::from_millis(500);

pub use skald_controller::policy::{Heartbeat, HeartbeatReply};

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
    /// Committed batches after an index, or a chunk of the saved snapshot.
    FetchMetadata {
        fetch: MetadataFetch,
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
    /// `ControllerLoop::unresponsive_verdict` hold.
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
        fetch: MetadataFetch,
        max_bytes: usize,
    ) -> Option<(MetadataUpdate, Option<i32>)> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Event::FetchMetadata {
            fetch,
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

/// The reply channels the policy's waiters carry.
struct Replies;

impl Tickets for Replies {
    type Operation = Reply<ControllerReply>;
    type Register = Reply<i64>;
    type AlterPartition = Reply<Vec<PartitionOutcome>>;
}

impl From<LoopError> for ControlError {
    fn from(error: LoopError) -> ControlError {
        match error {
            LoopError::NotController(leader) => ControlError::NotController(leader),
            LoopError::Timeout => ControlError::Timeout,
            LoopError::StaleBrokerEpoch => ControlError::StaleBrokerEpoch,
            LoopError::Unavailable(why) => ControlError::Unavailable(why),
        }
    }
}

type FetchReply = oneshot::Sender<(MetadataUpdate, Option<i32>)>;

/// A metadata fetch that found nothing new, waiting for the next commit or its deadline.
struct ParkedFetch {
    after_index: u64,
    max_bytes: usize,
    reply: FetchReply,
    deadline: Instant,
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
    let policy = ControllerLoop::new(
        LoopConfig {
            session_timeout_ms: config.session_timeout_ms,
            tick_ms: u64::try_from(config.tick.as_millis()).unwrap_or(u64::MAX),
            fast_fencing: config.fast_fencing,
            unresponsive_fencing: config.unresponsive_fencing,
            probe_silence_ms: config.probe_silence_ms,
            probes: config.silent_brokers.is_some(),
            request_timeout_ms: u64::try_from(config.request_timeout.as_millis())
                .unwrap_or(u64::MAX),
            auto_balance: config.auto_balance,
        },
        controller,
    );
    let mut driver = Driver {
        config,
        quorum,
        policy,
        publisher,
        transport,
        handle: handle.clone(),
        started: Instant::now(),
        stop_now: false,
        parked: Vec::new(),
    };
    std::thread::Builder::new()
        .name("skald-quorum".into())
        .spawn(move || driver.run(inbox))?;
    Ok(handle)
}

/// The I/O shell around [`ControllerLoop`]: the event queue, the raft Ready loop with its
/// fsyncs and sends, the publisher, parked metadata fetches and real time.
struct Driver {
    config: DriverConfig,
    quorum: Quorum<FileDisk>,
    policy: ControllerLoop<Replies>,
    publisher: Publisher,
    transport: Box<dyn RaftSender>,
    handle: DriverHandle,
    /// The origin of the policy's millisecond clock.
    started: Instant,
    /// Asked to stop with no live voter to hand leadership to.
    stop_now: bool,
    parked: Vec<ParkedFetch>,
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
                self.answer_parked();
                let now_ms = self.now_ms();
                self.policy.tick(&self.quorum, now_ms);
            }
            let now_ms = self.now_ms();
            self.policy.start_next(&mut self.quorum, now_ms);
            self.take_actions(None);
            if let Err(err) = self.ready() {
                tracing::error!("controller quorum failed, stopping it: {err}");
                self.policy
                    .fail_all(LoopError::Unavailable(format!("controller failed: {err}")));
                self.take_actions(None);
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
                    self.policy
                        .fail_all(LoopError::Unavailable("the controller is stopping".into()));
                    self.take_actions(None);
                    return;
                }
            }
        }
    }

    /// Handles one event; returns the shutdown reply when asked to stop.
    fn handle_event(&mut self, event: Event) -> Option<oneshot::Sender<()>> {
        let now_ms = self.now_ms();
        match event {
            Event::Raft(message) => self.quorum.step(*message),
            Event::Unreachable(node_id) => self.quorum.report_unreachable(node_id),
            Event::SnapshotFailed(node_id) => self.quorum.report_snapshot(node_id, false),
            Event::Operation(op, reply) => {
                self.policy
                    .submit(&self.quorum, Request::Operation(op, reply), now_ms)
            }
            Event::Register(registration, reply) => {
                self.policy
                    .submit(&self.quorum, Request::Register(registration, reply), now_ms)
            }
            Event::Heartbeat(heartbeat, reply) => {
                let answer = self.policy.heartbeat(&self.quorum, &heartbeat, now_ms);
                let _ = reply.send(answer.map_err(ControlError::from));
            }
            Event::AlterPartition(request, reply) => self.policy.submit(
                &self.quorum,
                Request::AlterPartition(request, reply),
                now_ms,
            ),
            Event::FetchMetadata {
                fetch,
                max_bytes,
                reply,
            } => {
                let update = self.quorum.serve_fetch(fetch, max_bytes);
                let parkable = match fetch {
                    MetadataFetch::After(after_index) => Some(after_index),
                    MetadataFetch::Snapshot { .. } => None,
                };
                if let (MetadataUpdate::UpToDate, Some(after_index), true) =
                    (&update, parkable, self.parked.len() < PARKED_FETCHES_MAX)
                {
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
                let closed_at_ms = self.ms_since_start(closed_at);
                let _ = reply.send(self.policy.departure_candidate(
                    &self.quorum,
                    broker_id,
                    broker_epoch,
                    closed_at_ms,
                ));
            }
            Event::Departed {
                broker_id,
                broker_epoch,
                closed_at,
            } => {
                let closed_at_ms = self.ms_since_start(closed_at);
                self.policy
                    .departed(&self.quorum, broker_id, broker_epoch, closed_at_ms);
            }
            Event::Unresponsive {
                broker_id,
                broker_epoch,
                since,
            } => {
                let since_ms = self.ms_since_start(since);
                self.policy
                    .unresponsive(&self.quorum, broker_id, broker_epoch, since_ms, now_ms);
            }
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

    /// The policy's clock: milliseconds since this driver started.
    fn now_ms(&self) -> u64 {
        self.ms_since_start(Instant::now())
    }

    /// `at` in this driver's milliseconds (those of [`Driver::now_ms`]).
    fn ms_since_start(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64
    }

    /// Carries out what the policy decided. Answers to committed operations go out once `image`
    /// (the current one when `None`) is published on this node, after anything before them.
    fn take_actions(&mut self, image: Option<Arc<MetadataImage>>) {
        let mut completions: Vec<Completion> = Vec::new();
        for action in self.policy.take_actions() {
            match action {
                Action::Complete(waiter) => completions.push(Box::new(move || match waiter {
                    Waiter::Operation(reply, tx) => drop(tx.send(Ok(reply))),
                    Waiter::Register(epoch, tx) => drop(tx.send(Ok(epoch))),
                    Waiter::AlterPartition(outcomes, tx) => drop(tx.send(Ok(outcomes))),
                })),
                Action::Fail(ticket, error) => {
                    let error = ControlError::from(error);
                    match ticket {
                        Ticket::Operation(tx) => drop(tx.send(Err(error))),
                        Ticket::Register(tx) => drop(tx.send(Err(error))),
                        Ticket::AlterPartition(tx) => drop(tx.send(Err(error))),
                    }
                }
                Action::Probe(probe) => {
                    if let Some(probes) = &self.config.silent_brokers {
                        // A full queue drops the probe; the next comes a silence bound later.
                        let _ = probes.try_send(SilentBroker {
                            broker_id: probe.broker_id,
                            broker_epoch: probe.broker_epoch,
                            address: probe.address,
                            since: self.started + Duration::from_millis(probe.since_ms),
                        });
                    }
                }
                Action::Fencing { broker_id, reason } => {
                    let metrics = &self.config.metrics;
                    let broker = broker_id.to_string();
                    match reason {
                        FenceReason::SessionExpired => metrics
                            .timed_out_broker_heartbeats_total
                            .with_label_values(&[&broker])
                            .inc(),
                        reason => metrics
                            .early_fenced_brokers_total
                            .with_label_values(&[&broker, reason.label()])
                            .inc(),
                    }
                }
            }
        }
        if image.is_some() || !completions.is_empty() {
            let image = image.unwrap_or_else(|| self.quorum.image());
            self.publisher
                .publish(image, self.quorum.applied_index(), completions);
        }
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
        let now_ms = self.now_ms();
        self.policy.observe_role(&self.quorum, now_ms);
        // Failures from a lost leadership go out before anything committed in this round.
        self.take_actions(None);
        let applied_index = self.quorum.applied_index();
        for (token, result) in output.completed {
            self.policy.completed(token, result, applied_index);
        }
        if output.image.is_some() {
            self.answer_parked();
            self.handle
                .applied_index
                .store(applied_index, Ordering::Release);
        }
        self.take_actions(output.image);
        Ok(())
    }
}
