//! The active controller's event-loop policy, sans-io: which operation runs next, when a proposal
//! has timed out, which brokers are fenced (session expiry, evident death, unresponsiveness), which
//! silent brokers are probed, and when preferred leader elections and automatic balancing run
//! (KRaft's QuorumController event loop and its ClusterControlManager's heartbeat policy).
//!
//! [`ControllerLoop`] decides; the caller does the I/O. Every input comes in as a call with the
//! node's [`Quorum`] and the time as `now_ms` (any monotonic millisecond clock), and every effect
//! goes out as an [`Action`] the caller takes with [`ControllerLoop::take_actions`]: answer a
//! waiter, probe a broker's listener, count a fencing. Proposals go to the quorum directly (it is
//! sans-io too). So the broker's quorum driver is a thin shell of threads, channels, fsyncs and
//! real time, and the seeded simulation (`sim::cluster`) runs this very policy on a fake clock.
//!
//! One operation is in flight at a time, so each is planned against an image that already holds
//! the previous one's records. A proposal past its deadline gets its caller a timeout but stays in
//! flight: it may still commit, and the next operation must see it (two creates of one topic would
//! otherwise both commit, the second redefining the topic). It leaves when it commits or fails, or
//! when this node stops leading.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::alter_partition::{AlterPartitionRequest, PartitionOutcome};
use crate::auto_balance::{self, Balance};
use crate::controller::{BrokerRegistration, Controller, Planned};
use crate::election::{preferred_leader_elections, PREFERRED_ELECTIONS_PER_PASS_MAX};
use crate::image::MetadataImage;
use crate::liveness::{BrokerLiveness, Expired};
use crate::ops::{ControllerOp, ControllerReply};
use crate::quorum::{ProposalError, ProposeError, Quorum};
use crate::raft_disk::RaftDisk;
use crate::record::MetadataRecord;

/// How many operations may wait behind the one in flight.
pub const OPERATION_QUEUE_MAX: usize = 1024;

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

/// Why a request did not get its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoopError {
    /// This node is not the active controller; the leader it knows of, if any.
    NotController(Option<i32>),
    /// The proposal did not commit in time (it stays in flight).
    Timeout,
    /// The requester is not registered with the epoch it gave.
    StaleBrokerEpoch,
    Unavailable(String),
}

/// The caller's handles for answering each kind of request (reply channels in the broker, plain
/// ids in the simulation).
pub trait Tickets {
    type Operation;
    type Register;
    type AlterPartition;
}

/// A request that becomes an operation in the queue, with the handle to answer it on.
pub enum Request<T: Tickets> {
    Operation(ControllerOp, T::Operation),
    Register(BrokerRegistration, T::Register),
    AlterPartition(AlterPartitionRequest, T::AlterPartition),
}

/// Who waits for a request, before it is planned.
pub enum Ticket<T: Tickets> {
    Operation(T::Operation),
    Register(T::Register),
    AlterPartition(T::AlterPartition),
}

/// Who waits for a planned operation, and what they get once its records commit.
pub enum Waiter<T: Tickets> {
    Operation(ControllerReply, T::Operation),
    /// The broker epoch the registration carries.
    Register(i64, T::Register),
    AlterPartition(Vec<PartitionOutcome>, T::AlterPartition),
}

impl<T: Tickets> Waiter<T> {
    fn ticket(self) -> Ticket<T> {
        match self {
            Waiter::Operation(_, t) => Ticket::Operation(t),
            Waiter::Register(_, t) => Ticket::Register(t),
            Waiter::AlterPartition(_, t) => Ticket::AlterPartition(t),
        }
    }
}

/// Why a broker is fenced before (or at) the end of its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceReason {
    /// Silent for longer than `broker.session.timeout.ms`.
    SessionExpired,
    /// Its controller connection closed and its listener refuses connections.
    ProcessGone,
    /// Silent, and its listener does not answer ApiVersions.
    Unresponsive,
}

impl FenceReason {
    /// The `reason` label of `skald_controller_early_fenced_brokers_total` (a session expiry is
    /// counted by `skald_controller_timed_out_broker_heartbeats_total` instead).
    pub fn label(self) -> &'static str {
        match self {
            FenceReason::SessionExpired => "session_expired",
            FenceReason::ProcessGone => "process_gone",
            FenceReason::Unresponsive => "unresponsive",
        }
    }
}

/// A silent broker whose listener is worth probing: fenced at once if its process turns out to be
/// gone or unresponsive, unless it is heard from after `since_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRequest {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub address: String,
    pub since_ms: u64,
}

/// What the caller does for the policy.
pub enum Action<T: Tickets> {
    /// The operation's records committed (or it needed none): answer once this node has published
    /// the image that holds them.
    Complete(Waiter<T>),
    /// Answer with an error now.
    Fail(Ticket<T>, LoopError),
    /// Probe a silent broker's listener.
    Probe(ProbeRequest),
    /// A fencing was queued (for the metrics; the records follow as an operation).
    Fencing { broker_id: i32, reason: FenceReason },
}

/// Settings of the policy.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// `broker.session.timeout.ms`.
    pub session_timeout_ms: u64,
    /// How often [`ControllerLoop::tick`] is called.
    pub tick_ms: u64,
    /// `broker.fast.fencing.enable`: fence brokers whose process is evidently gone at once.
    pub fast_fencing: bool,
    /// `broker.unresponsive.fencing.enable`: fence a silent broker that does not answer a probe.
    pub unresponsive_fencing: bool,
    /// With either, a broker silent this long (two `broker.heartbeat.interval.ms`) has its
    /// listener probed ([`Action::Probe`]).
    pub probe_silence_ms: u64,
    /// Whether anyone carries out probes (no probe is asked for otherwise).
    pub probes: bool,
    /// How long a proposal may take before its caller gets [`LoopError::Timeout`].
    pub request_timeout_ms: u64,
    /// `auto.partition.rebalance.enable` (Skald's): balance replicas when brokers join or leave.
    pub auto_balance: bool,
}

enum Queued<T: Tickets> {
    Request(Request<T>),
    Fence(i32, i64),
    Unfence(i32, i64),
    PreferredElections,
    /// Balancing after the registered brokers changed.
    AutoBalance,
}

impl<T: Tickets> Queued<T> {
    fn ticket(self) -> Option<Ticket<T>> {
        match self {
            Queued::Request(Request::Operation(_, t)) => Some(Ticket::Operation(t)),
            Queued::Request(Request::Register(_, t)) => Some(Ticket::Register(t)),
            Queued::Request(Request::AlterPartition(_, t)) => Some(Ticket::AlterPartition(t)),
            Queued::Fence(..) | Queued::Unfence(..) | Queued::PreferredElections => None,
            Queued::AutoBalance => None,
        }
    }
}

struct InFlight<T: Tickets> {
    token: u64,
    /// `None` for what the controller started itself, and once the caller got its timeout.
    waiter: Option<Waiter<T>>,
    deadline_ms: u64,
    /// The broker this operation fences, if it is a fencing: not to be fenced (or counted) twice.
    fencing: Option<i32>,
    /// The broker this operation registers, if it is a registration.
    registers: Option<i32>,
}

/// The controller's event-loop policy (see the module doc).
pub struct ControllerLoop<T: Tickets> {
    config: LoopConfig,
    controller: Controller,
    liveness: BrokerLiveness,
    queue: VecDeque<Queued<T>>,
    in_flight: Option<InFlight<T>>,
    next_token: u64,
    /// The applied index at which each broker's current registration committed: a broker is
    /// caught up once its heartbeat reports at least this offset (KRaft's rule). Soft state.
    registration_index: HashMap<i32, u64>,
    was_leader: bool,
    /// When the next preferred-election pass is due (on the leader, when they are enabled).
    next_preferred_elections_ms: Option<u64>,
    /// When each silent broker's listener was last probed (at most once per silence bound).
    probed_at_ms: HashMap<i32, u64>,
    /// The registered brokers automatic balancing last balanced (or found balanced); `None`
    /// until this node first leads with it on.
    balanced_members: Option<BTreeSet<i32>>,
    actions: Vec<Action<T>>,
}

/// A broker's first advertised listener, as `host:port`: where clients and replicas reach it.
fn listener_address(image: &MetadataImage, broker_id: i32) -> Option<String> {
    let endpoint = image.brokers.get(&broker_id)?.endpoints.first()?;
    Some(format!("{}:{}", endpoint.host, endpoint.port))
}

impl<T: Tickets> ControllerLoop<T> {
    pub fn new(config: LoopConfig, controller: Controller) -> Self {
        ControllerLoop {
            liveness: BrokerLiveness::new(config.session_timeout_ms, config.tick_ms),
            config,
            controller,
            queue: VecDeque::new(),
            in_flight: None,
            next_token: 1,
            registration_index: HashMap::new(),
            was_leader: false,
            next_preferred_elections_ms: None,
            probed_at_ms: HashMap::new(),
            balanced_members: None,
            actions: Vec::new(),
        }
    }

    /// What the caller is to do, in the order decided.
    pub fn take_actions(&mut self) -> Vec<Action<T>> {
        std::mem::take(&mut self.actions)
    }

    /// Whether an operation is in flight (its outcome not yet known).
    pub fn has_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// How many operations wait behind the one in flight.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// A request for an operation; a registration also counts as contact from its broker.
    pub fn submit<D: RaftDisk>(&mut self, quorum: &Quorum<D>, request: Request<T>, now_ms: u64) {
        if let Request::Register(registration, _) = &request {
            if quorum.is_leader() {
                self.liveness
                    .touch(registration.broker_id, quorum.term(), now_ms);
            }
        }
        self.enqueue(quorum, Queued::Request(request));
    }

    fn enqueue<D: RaftDisk>(&mut self, quorum: &Quorum<D>, queued: Queued<T>) {
        let error = if !quorum.is_leader() {
            LoopError::NotController(quorum.leader())
        } else if self.queue.len() >= OPERATION_QUEUE_MAX {
            LoopError::Unavailable("the controller is busy".into())
        } else {
            self.queue.push_back(queued);
            return;
        };
        if let Some(ticket) = queued.ticket() {
            self.actions.push(Action::Fail(ticket, error));
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

    /// Queues the fencing of `broker_id` unless it is queued or in flight already, and counts it
    /// by `reason` when it queued it.
    fn fence_once<D: RaftDisk>(
        &mut self,
        quorum: &Quorum<D>,
        broker_id: i32,
        broker_epoch: i64,
        reason: FenceReason,
    ) {
        if !self.fencing(broker_id) {
            self.enqueue(quorum, Queued::Fence(broker_id, broker_epoch));
            self.actions.push(Action::Fencing { broker_id, reason });
        }
    }

    /// A broker's heartbeat: the answer, and a fencing or unfencing queued when it asks for one
    /// or has caught up.
    pub fn heartbeat<D: RaftDisk>(
        &mut self,
        quorum: &Quorum<D>,
        heartbeat: &Heartbeat,
        now_ms: u64,
    ) -> Result<HeartbeatReply, LoopError> {
        if !quorum.is_leader() {
            return Err(LoopError::NotController(quorum.leader()));
        }
        let image = quorum.image();
        let Some(broker) = image.brokers.get(&heartbeat.broker_id) else {
            return Err(LoopError::StaleBrokerEpoch);
        };
        if broker.broker_epoch != heartbeat.broker_epoch {
            return Err(LoopError::StaleBrokerEpoch);
        }
        self.liveness
            .touch(heartbeat.broker_id, quorum.term(), now_ms);
        // A new leader does not know where registrations committed: its own applied index is a
        // safe (later) bar.
        let bar = *self
            .registration_index
            .entry(heartbeat.broker_id)
            .or_insert_with(|| quorum.applied_index());
        let is_caught_up = heartbeat.current_metadata_offset >= 0
            && heartbeat.current_metadata_offset as u64 >= bar;
        let (id, epoch) = (broker.broker_id, broker.broker_epoch);
        if heartbeat.want_shut_down || heartbeat.want_fence {
            if !broker.fenced {
                self.enqueue(quorum, Queued::Fence(id, epoch));
            }
        } else if broker.fenced && is_caught_up {
            self.enqueue(quorum, Queued::Unfence(id, epoch));
        }
        Ok(HeartbeatReply {
            is_caught_up,
            is_fenced: broker.fenced,
            should_shut_down: heartbeat.want_shut_down && broker.fenced,
        })
    }

    /// The listener address of `broker_id` when this node leads with fast fencing on, the broker
    /// is unfenced at `broker_epoch` and it has not been heard from since `closed_at_ms` (when a
    /// connection it heartbeated on closed): what makes it worth probing, and fencing if the probe
    /// finds its process gone.
    pub fn departure_candidate<D: RaftDisk>(
        &self,
        quorum: &Quorum<D>,
        broker_id: i32,
        broker_epoch: i64,
        closed_at_ms: u64,
    ) -> Option<String> {
        if !self.config.fast_fencing || !quorum.is_leader() {
            return None;
        }
        let image = quorum.image();
        image
            .brokers
            .get(&broker_id)
            .filter(|b| b.broker_epoch == broker_epoch && !b.fenced)?;
        if !self.liveness.silent_since(broker_id, closed_at_ms) {
            return None;
        }
        listener_address(&image, broker_id)
    }

    /// The probe found the listener of a broker whose connection closed at `closed_at_ms`
    /// refusing connections: fenced at once if it is still a departure candidate.
    pub fn departed<D: RaftDisk>(
        &mut self,
        quorum: &Quorum<D>,
        broker_id: i32,
        broker_epoch: i64,
        closed_at_ms: u64,
    ) {
        if self
            .departure_candidate(quorum, broker_id, broker_epoch, closed_at_ms)
            .is_some()
        {
            tracing::warn!(
                broker_id,
                "broker's controller connection closed and its listener refuses connections: its \
                 process is gone; fencing it without waiting out its session"
            );
            self.fence_once(quorum, broker_id, broker_epoch, FenceReason::ProcessGone);
        }
    }

    /// The probe asked for at `since_ms` found the broker's listener accepting but not answering:
    /// fenced at once if [`ControllerLoop::unresponsive_verdict`] says so.
    pub fn unresponsive<D: RaftDisk>(
        &mut self,
        quorum: &Quorum<D>,
        broker_id: i32,
        broker_epoch: i64,
        since_ms: u64,
        now_ms: u64,
    ) {
        match self.unresponsive_verdict(quorum, broker_id, broker_epoch, since_ms, now_ms) {
            Ok(silent_ms) => {
                tracing::warn!(
                    broker_id,
                    silent_ms,
                    "broker is silent and does not answer ApiVersions on its listener: fencing \
                     it as unresponsive without waiting out its session"
                );
                self.fence_once(quorum, broker_id, broker_epoch, FenceReason::Unresponsive);
            }
            Err(why) => tracing::info!(
                broker_id,
                "a silent broker did not answer ApiVersions, but is not fenced: {why}"
            ),
        }
    }

    /// Whether a broker whose probe went unanswered is fenced: `Ok` with how long it has been
    /// silent, or why not. This node must lead with unresponsive fencing on, the broker must be
    /// unfenced at `broker_epoch` and unheard of since `since_ms` (when the probe was asked for,
    /// two heartbeat intervals into its silence), this node must have run throughout its
    /// silence (a controller that stalled could not hear it), and it must be the odd one out:
    /// another unfenced broker to take over, none of them silent too.
    pub fn unresponsive_verdict<D: RaftDisk>(
        &self,
        quorum: &Quorum<D>,
        broker_id: i32,
        broker_epoch: i64,
        since_ms: u64,
        now_ms: u64,
    ) -> Result<u64, &'static str> {
        if !self.config.unresponsive_fencing || !quorum.is_leader() {
            return Err("this node does not fence unresponsive brokers (now)");
        }
        let image = quorum.image();
        image
            .brokers
            .get(&broker_id)
            .filter(|b| b.broker_epoch == broker_epoch && !b.fenced)
            .ok_or("fenced or registered again already")?;
        if !self.liveness.silent_since(broker_id, since_ms) {
            return Err("heard from since the probe was asked for");
        }
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

    /// Called every `tick_ms` (after the quorum's own tick): times out the proposal in flight,
    /// schedules preferred elections and balancing, fences brokers whose session expired and asks
    /// for probes of silent ones.
    pub fn tick<D: RaftDisk>(&mut self, quorum: &Quorum<D>, now_ms: u64) {
        if let Some(in_flight) = &mut self.in_flight {
            if now_ms >= in_flight.deadline_ms {
                if let Some(waiter) = in_flight.waiter.take() {
                    tracing::warn!(
                        token = in_flight.token,
                        "a metadata change is not committed in time; later changes wait for it"
                    );
                    self.actions
                        .push(Action::Fail(waiter.ticket(), LoopError::Timeout));
                }
            }
        }
        if !quorum.is_leader() {
            return;
        }
        if self
            .next_preferred_elections_ms
            .is_some_and(|due| now_ms >= due)
        {
            let already = self
                .queue
                .iter()
                .any(|q| matches!(q, Queued::PreferredElections));
            if !already {
                self.enqueue(quorum, Queued::PreferredElections);
            }
            self.next_preferred_elections_ms =
                self.preferred_elections_interval_ms().map(|i| now_ms + i);
        }
        let image = quorum.image();
        if self.config.auto_balance
            && self.balanced_members.as_ref() != Some(&auto_balance::members(&image))
            && !self.queue.iter().any(|q| matches!(q, Queued::AutoBalance))
        {
            self.enqueue(quorum, Queued::AutoBalance);
        }
        let expired = match self.liveness.expired(&image, quorum.term(), now_ms) {
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
                self.fence_once(quorum, broker_id, epoch, FenceReason::SessionExpired);
            }
        }
        self.probe_silent_brokers(&image, now_ms);
    }

    /// How often preferred leader elections run, if they do (`auto.leader.rebalance.enable`).
    fn preferred_elections_interval_ms(&self) -> Option<u64> {
        let elections = self.controller.election_config();
        elections
            .auto_leader_rebalance_enable
            .then(|| elections.leader_imbalance_check_interval_ms.max(1))
    }

    /// Asks for a probe of every broker silent for `probe_silence_ms` (once per that long each).
    fn probe_silent_brokers(&mut self, image: &MetadataImage, now_ms: u64) {
        if !self.config.probes || !(self.config.fast_fencing || self.config.unresponsive_fencing) {
            return;
        }
        let silence_ms = self.config.probe_silence_ms;
        self.probed_at_ms
            .retain(|_, at| now_ms.saturating_sub(*at) < silence_ms);
        let silent = self.liveness.silent_longer_than(image, now_ms, silence_ms);
        for (broker_id, broker_epoch) in silent {
            if self.probed_at_ms.contains_key(&broker_id) {
                continue;
            }
            let Some(address) = listener_address(image, broker_id) else {
                continue;
            };
            self.probed_at_ms.insert(broker_id, now_ms);
            self.actions.push(Action::Probe(ProbeRequest {
                broker_id,
                broker_epoch,
                address,
                since_ms: now_ms,
            }));
        }
    }

    /// Plans and proposes queued operations until one is in flight (or the queue is empty).
    /// A new leader plans nothing until it has applied what earlier leaders committed: an
    /// answer planned from an older image (an AlterPartition refused as INELIGIBLE_REPLICA
    /// when a lost-answer expansion had committed) would tell a broker something false. The
    /// queue waits meanwhile (it is bounded, and failed if leadership is lost).
    pub fn start_next<D: RaftDisk>(&mut self, quorum: &mut Quorum<D>, now_ms: u64) {
        while self.in_flight.is_none() && quorum.is_leader() && quorum.applied_to_current_term() {
            let Some(queued) = self.queue.pop_front() else {
                return;
            };
            let image = quorum.image();
            let fencing = match &queued {
                Queued::Fence(id, _) => Some(*id),
                _ => None,
            };
            let registers = match &queued {
                Queued::Request(Request::Register(registration, _)) => Some(registration.broker_id),
                _ => None,
            };
            let Some((records, waiter)) = self.plan(&image, queued, now_ms) else {
                continue;
            };
            if records.is_empty() {
                if let Some(broker_id) = registers {
                    self.registration_index
                        .insert(broker_id, quorum.applied_index());
                }
                if let Some(waiter) = waiter {
                    self.actions.push(Action::Complete(waiter));
                }
                continue;
            }
            let token = self.next_token;
            self.next_token += 1;
            match quorum.propose(records, token) {
                Ok(()) => {
                    self.in_flight = Some(InFlight {
                        token,
                        waiter,
                        deadline_ms: now_ms + self.config.request_timeout_ms,
                        fencing,
                        registers,
                    })
                }
                Err(err) => {
                    let error = match err {
                        ProposeError::NotLeader { leader } => LoopError::NotController(leader),
                        err => LoopError::Unavailable(err.to_string()),
                    };
                    if let Some(waiter) = waiter {
                        self.actions.push(Action::Fail(waiter.ticket(), error));
                    }
                }
            }
        }
    }

    /// The records that carry out `queued` and who waits for them; `None` when there is nothing
    /// to propose nor anyone to answer.
    #[allow(clippy::type_complexity)]
    fn plan(
        &mut self,
        image: &MetadataImage,
        queued: Queued<T>,
        now_ms: u64,
    ) -> Option<(Vec<MetadataRecord>, Option<Waiter<T>>)> {
        Some(match queued {
            Queued::Request(Request::Operation(op, ticket)) => {
                let planned = self.controller.plan(image, &op);
                (
                    planned.records,
                    Some(Waiter::Operation(planned.reply, ticket)),
                )
            }
            Queued::Request(Request::Register(registration, ticket)) => {
                let planned = self.controller.register_broker(image, registration);
                (
                    planned.records,
                    Some(Waiter::Register(planned.reply, ticket)),
                )
            }
            Queued::Request(Request::AlterPartition(request, ticket)) => {
                match self.controller.alter_partition(image, &request) {
                    Planned {
                        records,
                        reply: Ok(outcomes),
                    } => (records, Some(Waiter::AlterPartition(outcomes, ticket))),
                    Planned { reply: Err(_), .. } => {
                        self.actions.push(Action::Fail(
                            Ticket::AlterPartition(ticket),
                            LoopError::StaleBrokerEpoch,
                        ));
                        return None;
                    }
                }
            }
            Queued::Fence(id, epoch) => {
                (self.controller.fence_broker(image, id, epoch).records, None)
            }
            Queued::Unfence(id, epoch) => (
                self.controller.unfence_broker(image, id, epoch).records,
                None,
            ),
            Queued::AutoBalance => match auto_balance::plan(image) {
                // Asked again at the next tick (cheap: the first fenced broker or moving
                // partition ends the check).
                Balance::NotSettled => return None,
                Balance::Balanced => {
                    self.balanced_members = Some(auto_balance::members(image));
                    return None;
                }
                Balance::Moves(op) => {
                    self.balanced_members = Some(auto_balance::members(image));
                    let planned = self.controller.plan(image, &op);
                    tracing::info!(
                        partitions = op.topic_count(),
                        "balancing replicas after brokers joined or left"
                    );
                    (planned.records, None)
                }
            },
            Queued::PreferredElections => {
                let records = preferred_leader_elections(image);
                if records.len() >= PREFERRED_ELECTIONS_PER_PASS_MAX {
                    // More may be waiting: the next pass runs at the next tick.
                    self.next_preferred_elections_ms = Some(now_ms);
                }
                if !records.is_empty() {
                    tracing::info!(
                        partitions = records.len(),
                        "moving leaderships back to preferred replicas"
                    );
                }
                (records, None)
            }
        })
    }

    /// Called after every Ready round: notices this node gaining or losing leadership. Losing it
    /// fails the operation in flight and everything queued with NOT_CONTROLLER.
    pub fn observe_role<D: RaftDisk>(&mut self, quorum: &Quorum<D>, now_ms: u64) {
        let is_leader = quorum.is_leader();
        if is_leader == self.was_leader {
            return;
        }
        self.was_leader = is_leader;
        if is_leader {
            tracing::info!(
                term = quorum.term(),
                "this node is now the active controller"
            );
            self.liveness.lead(quorum.term(), now_ms);
            self.registration_index.clear();
            self.next_preferred_elections_ms =
                self.preferred_elections_interval_ms().map(|i| now_ms + i);
        } else {
            self.liveness.resign();
            self.next_preferred_elections_ms = None;
            self.fail_all(LoopError::NotController(quorum.leader()));
        }
    }

    /// A proposal's outcome, from the quorum's Ready round; `applied_index` is the node's applied
    /// index after that round (where a registration committed).
    pub fn completed(&mut self, token: u64, result: Result<(), ProposalError>, applied_index: u64) {
        let Some(in_flight) = self.in_flight.take_if(|f| f.token == token) else {
            return;
        };
        match result {
            Ok(()) => {
                if let Some(broker_id) = in_flight.registers {
                    self.registration_index.insert(broker_id, applied_index);
                }
                if let Some(waiter) = in_flight.waiter {
                    self.actions.push(Action::Complete(waiter));
                }
            }
            Err(err) => {
                if let Some(waiter) = in_flight.waiter {
                    self.actions.push(Action::Fail(
                        waiter.ticket(),
                        LoopError::Unavailable(err.to_string()),
                    ));
                }
            }
        }
    }

    /// Fails the operation in flight and everything queued (leadership lost, stopping).
    pub fn fail_all(&mut self, error: LoopError) {
        if let Some(waiter) = self.in_flight.take().and_then(|f| f.waiter) {
            self.actions
                .push(Action::Fail(waiter.ticket(), error.clone()));
        }
        for queued in std::mem::take(&mut self.queue) {
            if let Some(ticket) = queued.ticket() {
                self.actions.push(Action::Fail(ticket, error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests;
