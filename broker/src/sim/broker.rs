//! A simulated broker: its replicas (a real `Log` and the real `ReplicaState` each), and what it
//! does with them, as the broker's own code does it — serving follower fetches
//! (`api::fetch`'s replica path), applying the answers (`replication::fetcher`), keeping the
//! ISR (`replication::isr`), applying metadata (`replica_manager`'s role changes), answering
//! acks=all produces (`ReplicationWait`). The decisions are the real functions'; only the
//! plumbing around them is the simulation's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::ResponseError;
use skald_controller::alter_partition::{LEADER_RECOVERED, UNKNOWN_BROKER_EPOCH};
use skald_controller::{AlterPartitionRequest, IsrChange, IsrMember, MetadataImage};
use skald_protocol::batch::testing::simple_batch;
use skald_storage::{Log, LogConfig};

use super::cluster::Bugs;
use super::net::{FetchAnswer, FetchAsk, Wire};
use super::trace;
use super::{
    ANSWER_WAIT_MS, CLIENT, CONTROLLER, FETCH_BACKOFF_MS, FETCH_MAX_BYTES, FLUSH_MS, HEARTBEAT_MS,
    MIN_INSYNC_REPLICAS, PARTITIONS, PRODUCE_TIMEOUT_MS, TOPIC,
};
use crate::replication::fetcher::truncate_diverged;
use crate::replication::state::{IsrRules, ReplicaState, Role, Transition};

/// Messages to send: (to, what).
pub(super) type Outbox = Vec<(i32, Wire)>;

/// What survives a process: how far each log was synced, and the high watermark checkpoint.
#[derive(Debug, Clone, Copy, Default)]
struct Stored {
    durable_offset: i64,
    high_watermark_checkpoint: i64,
}

/// An acks=all produce waiting for its high watermark.
struct ProduceWait {
    request: u64,
    leader_epoch: i32,
    required_offset: i64,
    base_offset: i64,
    deadline_ms: i64,
}

pub(super) struct Replica {
    pub(super) log: Log,
    pub(super) state: ReplicaState,
    /// The smallest log end offset since the checker last looked: what it verified above this
    /// may have been cut and written again.
    pub(super) lowest_end_since_check: i64,
    fetch_sent_ms: Option<i64>,
    fetch_due_ms: i64,
    waits: Vec<ProduceWait>,
    /// The AlterPartition in flight, and when it went.
    alter: Option<(i64, AlterPartitionRequest)>,
}

impl Replica {
    /// Cuts the log back to `offset` (the real truncation).
    fn truncate_to(&mut self, offset: i64) {
        trace!("  truncate {} -> {offset}", self.log.log_end_offset());
        self.log
            .truncate_to(offset)
            .expect("the simulation's disk never fails");
        self.cut_at(self.log.log_end_offset());
    }

    fn cut_at(&mut self, log_end_offset: i64) {
        self.lowest_end_since_check = self.lowest_end_since_check.min(log_end_offset);
        self.state.truncated(log_end_offset);
    }
}

pub(super) struct SimBroker {
    pub(super) id: i32,
    pub(super) incarnation: u64,
    pub(super) broker_epoch: Option<i64>,
    /// The metadata version holding this incarnation's registration: older images are not its.
    registered_version: u64,
    pub(super) up: bool,
    pub(super) paused: bool,
    /// The latest metadata applied, with its version.
    pub(super) image: Option<(u64, MetadataImage)>,
    awaiting_since_ms: Option<i64>,
    next_heartbeat_ms: i64,
    pub(super) replicas: BTreeMap<i32, Replica>,
    stored: BTreeMap<i32, Stored>,
    dir: PathBuf,
    next_flush_ms: i64,
    /// Each append is synced (`flush.messages=1`): a power-off loses nothing.
    sync_every_append: bool,
}

impl SimBroker {
    /// A broker registered (by the bootstrap) at `broker_epoch` in metadata `version`.
    pub(super) fn new(
        id: i32,
        dir: PathBuf,
        sync_every_append: bool,
        broker_epoch: i64,
        version: u64,
    ) -> SimBroker {
        let mut broker = SimBroker {
            id,
            incarnation: 1,
            broker_epoch: Some(broker_epoch),
            registered_version: version,
            up: true,
            paused: false,
            image: None,
            awaiting_since_ms: None,
            next_heartbeat_ms: 0,
            replicas: BTreeMap::new(),
            stored: (0..PARTITIONS).map(|p| (p, Stored::default())).collect(),
            dir,
            next_flush_ms: FLUSH_MS,
            sync_every_append,
        };
        broker.open_logs();
        broker
    }

    fn log_dir(&self, partition: i32) -> PathBuf {
        self.dir.join(format!("{TOPIC}-{partition}"))
    }

    /// Opens (recovers) every log, as a starting process does.
    fn open_logs(&mut self) {
        for partition in 0..PARTITIONS {
            let log = Log::open(&self.log_dir(partition), LogConfig::default())
                .expect("the simulation's disk never fails");
            let log_end_offset = log.log_end_offset();
            let checkpoint = self.stored[&partition].high_watermark_checkpoint;
            self.replicas.insert(
                partition,
                Replica {
                    log,
                    state: ReplicaState::new(checkpoint.min(log_end_offset)),
                    lowest_end_since_check: log_end_offset,
                    fetch_sent_ms: None,
                    fetch_due_ms: 0,
                    waits: Vec::new(),
                    alter: None,
                },
            );
        }
    }

    /// kill -9: the process and its soft state go; what it wrote stays in the page cache.
    pub(super) fn kill(&mut self) {
        self.replicas.clear();
        self.up = false;
        self.paused = false;
    }

    /// Power off: as `kill`, and each log loses what was written since its last sync. Returns
    /// each partition's log end offset before and after.
    pub(super) fn power_off(&mut self) -> Vec<(i32, i64, i64)> {
        let mut lost = Vec::new();
        for (partition, replica) in &mut self.replicas {
            let before = replica.log.log_end_offset();
            let durable = self.stored[partition].durable_offset.min(before);
            replica.truncate_to(durable);
            lost.push((*partition, before, replica.log.log_end_offset()));
        }
        self.kill();
        lost
    }

    /// A new incarnation: logs recovered, soft state fresh, registering again.
    pub(super) fn restart(&mut self) {
        self.incarnation += 1;
        trace!(
            "broker {} restarts as incarnation {}",
            self.id,
            self.incarnation
        );
        self.broker_epoch = None;
        self.image = None;
        self.awaiting_since_ms = None;
        self.up = true;
        self.open_logs();
    }

    fn waiting_too_long(&self, now_ms: i64) -> bool {
        self.awaiting_since_ms
            .is_some_and(|since| now_ms - since >= ANSWER_WAIT_MS)
    }

    /// One tick of the broker's own work.
    pub(super) fn act(&mut self, now_ms: i64, rules: &IsrRules, bugs: &Bugs, out: &mut Outbox) {
        if self.awaiting_since_ms.is_none() || self.waiting_too_long(now_ms) {
            match self.broker_epoch {
                None => {
                    out.push((
                        CONTROLLER,
                        Wire::Register {
                            incarnation: self.incarnation,
                        },
                    ));
                    self.awaiting_since_ms = Some(now_ms);
                }
                Some(broker_epoch) if now_ms >= self.next_heartbeat_ms => {
                    out.push((
                        CONTROLLER,
                        Wire::Heartbeat {
                            broker_epoch,
                            metadata_version: self.image.as_ref().map_or(0, |(v, _)| *v),
                        },
                    ));
                    self.awaiting_since_ms = Some(now_ms);
                    self.next_heartbeat_ms = now_ms + HEARTBEAT_MS;
                }
                Some(_) => {}
            }
        }
        let flush = now_ms >= self.next_flush_ms;
        if flush {
            self.next_flush_ms = now_ms + FLUSH_MS;
        }
        let partitions: Vec<i32> = self.replicas.keys().copied().collect();
        for partition in partitions {
            if flush {
                let replica = &self.replicas[&partition];
                let stored = self.stored.entry(partition).or_default();
                stored.durable_offset = replica.log.log_end_offset();
                stored.high_watermark_checkpoint = replica.state.high_watermark;
            }
            self.answer_produces(partition, now_ms, out);
            self.maybe_alter_isr(partition, now_ms, rules, bugs, out);
            self.maybe_fetch(partition, now_ms, out);
        }
    }

    /// `ReplicationWait::until_replicated`, polled.
    fn answer_produces(&mut self, partition: i32, now_ms: i64, out: &mut Outbox) {
        let replica = self.replicas.get_mut(&partition).expect("hosted");
        let state = &replica.state;
        replica.waits.retain(|wait| {
            let status = state
                .ack_status(wait.leader_epoch, wait.required_offset, MIN_INSYNC_REPLICAS)
                .or_else(|| {
                    (now_ms >= wait.deadline_ms).then_some(Err(ResponseError::RequestTimedOut))
                });
            let Some(status) = status else {
                return true;
            };
            out.push((
                CLIENT,
                Wire::ProduceAnswer {
                    request: wait.request,
                    partition,
                    result: status.map(|()| wait.base_offset),
                },
            ));
            false
        });
    }

    /// `replication::isr::maybe_alter_isr`: one AlterPartition in flight per partition, sent
    /// again while unanswered and still pending.
    fn maybe_alter_isr(
        &mut self,
        partition: i32,
        now_ms: i64,
        rules: &IsrRules,
        bugs: &Bugs,
        out: &mut Outbox,
    ) {
        let me = self.id;
        let (Some(broker_epoch), Some((_, image))) = (self.broker_epoch, self.image.as_ref())
        else {
            return;
        };
        let replica = self.replicas.get_mut(&partition).expect("hosted");
        if let Some((sent_ms, request)) = &mut replica.alter {
            let change = &request.partitions[0];
            let isr: Vec<i32> = change.new_isr.iter().map(|m| m.broker_id).collect();
            if !replica
                .state
                .is_pending(change.leader_epoch, change.partition_epoch, &isr)
            {
                replica.alter = None;
            } else if now_ms - *sent_ms >= ANSWER_WAIT_MS {
                *sent_ms = now_ms;
                out.push((CONTROLLER, Wire::AlterPartition(request.clone())));
                return;
            } else {
                return;
            }
        }
        let live = |id: i32| image.brokers.get(&id).is_some_and(|b| !b.fenced);
        let leader_end_offset = replica.log.log_end_offset();
        let Some(isr) = replica
            .state
            .wanted_isr(me, leader_end_offset, now_ms, rules, live)
        else {
            return;
        };
        let Some(leader) = replica.state.leader() else {
            return;
        };
        let (leader_epoch, partition_epoch) = (leader.leader_epoch, leader.partition_epoch);
        let shrinks = leader.isr.iter().any(|id| !isr.contains(id));
        trace!(
            "{now_ms} ms: broker {me} partition {partition}: asks ISR {isr:?} at log end \
             {leader_end_offset}, HW {}, followers {:?}",
            replica.state.high_watermark,
            replica.state.leader().map(|l| l.followers.clone())
        );
        replica.state.set_pending(isr.clone());
        if bugs.shrink_before_commit && shrinks {
            // Injected: the leader acts on its shrink before the controller has committed it.
            if let Role::Leader(leader) = &mut replica.state.role {
                leader.isr = isr.clone();
            }
            replica
                .state
                .maybe_advance_high_watermark(me, leader_end_offset);
        }
        let topic_id = image.topic(TOPIC).expect("the topic exists").topic_id;
        let request = AlterPartitionRequest {
            broker_id: me,
            broker_epoch,
            partitions: vec![IsrChange {
                topic_id,
                partition,
                leader_epoch,
                partition_epoch,
                new_isr: isr
                    .iter()
                    .map(|id| IsrMember {
                        broker_id: *id,
                        broker_epoch: image
                            .brokers
                            .get(id)
                            .map_or(UNKNOWN_BROKER_EPOCH, |b| b.broker_epoch),
                    })
                    .collect(),
                leader_recovery_state: LEADER_RECOVERED,
            }],
        };
        replica.alter = Some((now_ms, request.clone()));
        out.push((CONTROLLER, Wire::AlterPartition(request)));
    }

    /// The fetcher: one fetch in flight per followed partition.
    fn maybe_fetch(&mut self, partition: i32, now_ms: i64, out: &mut Outbox) {
        let replica = self.replicas.get_mut(&partition).expect("hosted");
        let Role::Follower {
            leader,
            leader_epoch,
        } = replica.state.role
        else {
            return;
        };
        let in_flight = replica
            .fetch_sent_ms
            .is_some_and(|sent| now_ms - sent < ANSWER_WAIT_MS);
        if in_flight || now_ms < replica.fetch_due_ms {
            return;
        }
        replica.fetch_sent_ms = Some(now_ms);
        out.push((
            leader,
            Wire::Fetch(FetchAsk {
                partition,
                current_leader_epoch: leader_epoch,
                fetch_offset: replica.log.log_end_offset(),
                last_fetched_epoch: replica.log.latest_leader_epoch().unwrap_or(-1),
            }),
        ));
    }

    pub(super) fn receive(
        &mut self,
        from: i32,
        wire: Wire,
        now_ms: i64,
        rules: &IsrRules,
        bugs: &Bugs,
        out: &mut Outbox,
    ) {
        match wire {
            Wire::Registered {
                incarnation,
                broker_epoch,
                version,
            } => {
                if incarnation == self.incarnation && self.broker_epoch.is_none() {
                    self.broker_epoch = Some(broker_epoch);
                    self.registered_version = version;
                    self.awaiting_since_ms = None;
                    self.next_heartbeat_ms = now_ms;
                }
            }
            Wire::Metadata { version, image } => {
                self.awaiting_since_ms = None;
                self.apply_image(version, image, now_ms);
            }
            Wire::StaleBrokerEpoch => {
                self.awaiting_since_ms = None;
                self.broker_epoch = None;
                self.image = None;
            }
            Wire::AlterPartitionAnswer { request, reply } => {
                self.alter_answered(&request, reply.ok());
            }
            Wire::Fetch(ask) => {
                let answer = self.serve_fetch(from, ask, now_ms, rules, bugs, out);
                out.push((from, Wire::FetchAnswer { ask, answer }));
            }
            Wire::FetchAnswer { ask, answer } => self.apply_fetch(from, ask, answer, now_ms),
            Wire::Produce {
                request,
                partition,
                batch_id,
                records,
            } => {
                if let Err(error) =
                    self.produce(request, partition, batch_id, records, now_ms, bugs)
                {
                    out.push((
                        CLIENT,
                        Wire::ProduceAnswer {
                            request,
                            partition,
                            result: Err(error),
                        },
                    ));
                }
            }
            other => panic!("broker {} got {other:?}", self.id),
        }
    }

    /// `replica_manager`'s `apply_roles`: each partition's role from the image; a new leader
    /// records its epoch at its log end (Kafka's `makeLeader`).
    fn apply_image(&mut self, version: u64, image: MetadataImage, now_ms: i64) {
        if self.broker_epoch.is_none()
            || version < self.registered_version
            || self.image.as_ref().is_some_and(|(v, _)| *v >= version)
        {
            return;
        }
        let topic = image.topic(TOPIC).expect("the topic exists");
        for (partition, replica) in &mut self.replicas {
            let Some(placement) = topic.partitions.get(partition) else {
                continue;
            };
            let log_end_offset = replica.log.log_end_offset();
            let transition = replica
                .state
                .apply(self.id, placement, log_end_offset, now_ms);
            if transition != Transition::Unchanged {
                trace!(
                    "{now_ms} ms: broker {} partition {partition}: {transition:?} at log end \
                     {log_end_offset}, HW {}, epochs {:?}",
                    self.id,
                    replica.state.high_watermark,
                    replica.log.leader_epoch_entries()
                );
            }
            if let Transition::BecameLeader { leader_epoch } = transition {
                replica
                    .log
                    .assign_leader_epoch(leader_epoch, log_end_offset)
                    .expect("the simulation's disk never fails");
            }
            replica
                .state
                .maybe_advance_high_watermark(self.id, log_end_offset);
            if transition != Transition::Unchanged {
                replica.fetch_sent_ms = None;
                replica.fetch_due_ms = now_ms;
            }
        }
        self.image = Some((version, image));
    }

    /// `replication::isr`'s handling of the controller's answer: an accepted change is
    /// settled once the metadata shows it; a refused one as `ReplicaState` rules; a refused
    /// request (stale broker epoch) waits for the re-registration's metadata.
    fn alter_answered(
        &mut self,
        request: &AlterPartitionRequest,
        outcomes: Option<Vec<skald_controller::PartitionOutcome>>,
    ) {
        for (index, change) in request.partitions.iter().enumerate() {
            let Some(replica) = self.replicas.get_mut(&change.partition) else {
                continue;
            };
            let isr: Vec<i32> = change.new_isr.iter().map(|m| m.broker_id).collect();
            let (epoch, partition_epoch) = (change.leader_epoch, change.partition_epoch);
            match outcomes.as_ref().and_then(|o| o.get(index)) {
                Some(Ok(_)) if replica.state.leader().is_some_and(|l| l.isr == isr) => {
                    replica.state.clear_pending(epoch, partition_epoch, &isr);
                }
                Some(Err(error)) => {
                    replica
                        .state
                        .alter_partition_refused(epoch, partition_epoch, &isr, *error)
                }
                Some(Ok(_)) | None => {}
            }
            if replica
                .alter
                .as_ref()
                .is_some_and(|(_, sent)| sent == request)
            {
                replica.alter = None;
            }
        }
    }

    /// `api::fetch`'s replica path: the epoch check, the divergence check, the read, and the
    /// follower's progress.
    fn serve_fetch(
        &mut self,
        follower: i32,
        ask: FetchAsk,
        now_ms: i64,
        rules: &IsrRules,
        bugs: &Bugs,
        out: &mut Outbox,
    ) -> FetchAnswer {
        let me = self.id;
        let refused = |error: ResponseError| FetchAnswer {
            error: Some(error),
            diverging: None,
            high_watermark: -1,
            log_start_offset: -1,
            records: Bytes::new(),
        };
        let Some(replica) = self.replicas.get_mut(&ask.partition) else {
            return refused(ResponseError::NotLeaderOrFollower);
        };
        let Some(leader) = replica.state.leader() else {
            return refused(ResponseError::NotLeaderOrFollower);
        };
        if ask.current_leader_epoch != leader.leader_epoch {
            return refused(if ask.current_leader_epoch < leader.leader_epoch {
                ResponseError::FencedLeaderEpoch
            } else {
                ResponseError::UnknownLeaderEpoch
            });
        }
        if !leader.followers.contains_key(&follower) {
            return refused(ResponseError::NotLeaderOrFollower);
        }
        let log = &replica.log;
        let fetch = FetchPartition::default()
            .with_partition(ask.partition)
            .with_current_leader_epoch(ask.current_leader_epoch)
            .with_fetch_offset(ask.fetch_offset)
            .with_last_fetched_epoch(ask.last_fetched_epoch);
        if !bugs.no_divergence_check {
            if let Some(diverging) = crate::replication::diverging_epoch(log, &fetch) {
                return FetchAnswer {
                    error: None,
                    diverging: Some(diverging),
                    high_watermark: replica.state.high_watermark,
                    log_start_offset: log.log_start_offset(),
                    records: Bytes::new(),
                };
            }
        }
        let read = match log.read(ask.fetch_offset, FETCH_MAX_BYTES) {
            Ok(read) => read,
            Err(skald_storage::Error::OffsetOutOfRange {
                log_start_offset, ..
            }) => {
                return FetchAnswer {
                    error: Some(ResponseError::OffsetOutOfRange),
                    diverging: None,
                    high_watermark: replica.state.high_watermark,
                    log_start_offset,
                    records: Bytes::new(),
                }
            }
            Err(err) => panic!("broker {me}: read failed: {err}"),
        };
        let leader_end_offset = log.log_end_offset();
        trace!(
            "{now_ms} ms: broker {me} partition {}: fetch from {follower} at {} (epoch {}), \
             log end {leader_end_offset}, HW {}",
            ask.partition,
            ask.fetch_offset,
            ask.last_fetched_epoch,
            replica.state.high_watermark
        );
        replica.state.record_follower_fetch(
            me,
            follower,
            ask.fetch_offset,
            leader_end_offset,
            now_ms,
        );
        if bugs.high_watermark_recomputed {
            // Injected: the HW is the ISR's smallest log end offset, even when lower.
            if let Some(leader) = replica.state.leader() {
                let lowest = leader
                    .maximal_isr()
                    .iter()
                    .filter(|id| **id != me)
                    .map(|id| leader.followers.get(id).map_or(-1, |f| f.log_end_offset))
                    .fold(leader_end_offset, i64::min);
                replica.state.high_watermark = lowest.max(0);
            }
        }
        let answer = FetchAnswer {
            error: None,
            diverging: None,
            high_watermark: replica.state.high_watermark,
            log_start_offset: read.log_start_offset,
            records: read.records,
        };
        self.maybe_alter_isr(ask.partition, now_ms, rules, bugs, out);
        answer
    }

    /// `replication::fetcher::apply_partition`.
    fn apply_fetch(&mut self, leader: i32, ask: FetchAsk, answer: FetchAnswer, now_ms: i64) {
        let me = self.id;
        let Some(replica) = self.replicas.get_mut(&ask.partition) else {
            return;
        };
        replica.fetch_sent_ms = None;
        replica.fetch_due_ms = now_ms;
        let still_following = replica.state.role
            == Role::Follower {
                leader,
                leader_epoch: ask.current_leader_epoch,
            };
        if !still_following || replica.log.log_end_offset() != ask.fetch_offset {
            return;
        }
        match answer.error {
            None => {}
            Some(ResponseError::OffsetOutOfRange) => {
                trace!(
                    "{now_ms} ms: broker {me} partition {}: out of range at {} from {leader} \
                     (its HW {})",
                    ask.partition,
                    ask.fetch_offset,
                    answer.high_watermark
                );
                if ask.fetch_offset < answer.log_start_offset {
                    replica
                        .log
                        .truncate_fully_and_start_at(answer.log_start_offset)
                        .expect("the simulation's disk never fails");
                    replica.cut_at(replica.log.log_end_offset());
                } else {
                    let keep = answer
                        .high_watermark
                        .max(replica.state.high_watermark)
                        .max(0);
                    if keep >= replica.log.log_end_offset() {
                        replica.fetch_due_ms = now_ms + FETCH_BACKOFF_MS;
                    } else {
                        replica.truncate_to(keep);
                    }
                }
                return;
            }
            Some(_) => {
                replica.fetch_due_ms = now_ms + FETCH_BACKOFF_MS;
                return;
            }
        }
        if let Some(diverging) = answer.diverging {
            trace!(
                "{now_ms} ms: broker {me} partition {}: diverging {diverging:?} from {leader} at \
                 log end {}, epochs {:?}",
                ask.partition,
                ask.fetch_offset,
                replica.log.leader_epoch_entries()
            );
            let truncated =
                truncate_diverged(&mut replica.log, diverging, replica.state.high_watermark)
                    .expect("the simulation's disk never fails");
            replica.cut_at(replica.log.log_end_offset());
            if !truncated.progressed() {
                replica.fetch_due_ms = now_ms + FETCH_BACKOFF_MS;
            }
            return;
        }
        if !answer.records.is_empty() {
            if let Err(err) = replica.log.append_as_follower(&answer.records) {
                panic!(
                    "replicas disagree: follower {me} of partition {} cannot append its \
                     leader {leader}'s records at its log end {}: {err}",
                    ask.partition, ask.fetch_offset
                );
            }
            if self.sync_every_append {
                self.stored.entry(ask.partition).or_default().durable_offset =
                    replica.log.log_end_offset();
            }
        }
        let log_end_offset = replica.log.log_end_offset();
        replica.state.truncated(log_end_offset);
        replica
            .state
            .follower_high_watermark(answer.high_watermark, log_end_offset);
    }

    /// The leader's acks=all append: `NOT_ENOUGH_REPLICAS` below `min.insync.replicas`, else
    /// appended and waiting for the high watermark.
    fn produce(
        &mut self,
        request: u64,
        partition: i32,
        batch_id: i64,
        records: usize,
        now_ms: i64,
        bugs: &Bugs,
    ) -> Result<(), ResponseError> {
        let me = self.id;
        let replica = self
            .replicas
            .get_mut(&partition)
            .ok_or(ResponseError::NotLeaderOrFollower)?;
        let leader = replica
            .state
            .leader()
            .ok_or(ResponseError::NotLeaderOrFollower)?;
        if leader.isr.len() < MIN_INSYNC_REPLICAS {
            return Err(ResponseError::NotEnoughReplicas);
        }
        let leader_epoch = leader.leader_epoch;
        // The batch's id is its first timestamp: the checker knows it again in any replica.
        let mut batch = simple_batch(0, records, batch_id, 1);
        let appended = replica
            .log
            .append(&mut batch, None, leader_epoch)
            .expect("the simulation's disk never fails");
        let log_end_offset = replica.log.log_end_offset();
        if self.sync_every_append {
            self.stored.entry(partition).or_default().durable_offset = log_end_offset;
        }
        replica
            .state
            .maybe_advance_high_watermark(me, log_end_offset);
        if bugs.ack_before_replicated {
            // Injected: the leader commits what it alone has.
            replica.state.high_watermark = log_end_offset;
        }
        replica.waits.push(ProduceWait {
            request,
            leader_epoch,
            required_offset: appended.last_offset + 1,
            base_offset: appended.first_offset,
            deadline_ms: now_ms + PRODUCE_TIMEOUT_MS,
        });
        Ok(())
    }
}
