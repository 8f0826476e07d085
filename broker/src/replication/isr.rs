//! ISR maintenance on the leader (Kafka's `maybeShrinkIsr` / `maybeExpandIsr`): the leader
//! proposes, the controller decides. A follower that has not caught up for
//! `replica.lag.time.max.ms` is dropped; one that has reached the high watermark is added back.
//! Either change goes to the controller as an AlterPartition at the partition epoch the leader
//! knows (so a stale leader's request is refused), one in flight per partition; the new ISR is
//! acted on once it arrives as metadata.
//!
//! The changes of all partitions led here travel together (Kafka's `AlterPartitionManager`): one
//! AlterPartition at a time per broker carries every change queued while the previous one was
//! out, so a follower lost by hundreds of partitions costs one controller round trip and one
//! metadata commit, not hundreds queued one behind the other.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, oneshot};

use skald_controller::alter_partition::UNKNOWN_BROKER_EPOCH;
use skald_controller::{
    AlterPartitionError, AlterPartitionRequest, IsrChange, IsrMember, PartitionOutcome,
};

use super::now_ms;
use super::state::IsrRules;
use crate::broker::Broker;
use crate::metadata::ControlError;
use crate::replica_manager::Partition;

/// Checks every led partition for followers to drop, every half `replica.lag.time.max.ms`
/// (Kafka's `isr-expiration` task) or half `replica.unresponsive.time.max.ms` when shorter,
/// until shutdown.
pub async fn run(broker: Arc<Broker>, mut stop: broadcast::Receiver<()>) {
    let replication = &broker.config.replication;
    let shortest = match replication.unresponsive_time_max_ms {
        0 => replication.lag_time_max_ms,
        unresponsive => unresponsive.min(replication.lag_time_max_ms),
    };
    let every = Duration::from_millis((shortest / 2).max(10));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.recv() => return,
        }
        for partition in broker.replicas.all() {
            maybe_alter_isr(&broker, &partition);
        }
        broker.replicas.update_replication_gauges();
    }
}

/// Sends the ISR change the partition's leader state calls for, if any and none is in flight.
pub fn maybe_alter_isr(broker: &Arc<Broker>, partition: &Arc<Partition>) {
    let me = broker.config.node_id;
    let replication = &broker.config.replication;
    let rules = IsrRules {
        lag_time_max_ms: i64::try_from(replication.lag_time_max_ms).unwrap_or(i64::MAX),
        unresponsive_time_max_ms: i64::try_from(replication.unresponsive_time_max_ms)
            .unwrap_or(i64::MAX),
        min_insync_replicas: partition.settings().min_insync_replicas,
    };
    let leader_end_offset = partition.log_end_offset();
    let image = broker.image();
    let live = |id: i32| image.brokers.get(&id).is_some_and(|b| !b.fenced);
    let wanted = partition.with_replica(|state| {
        let isr = state.wanted_isr(me, leader_end_offset, now_ms(), &rules, live)?;
        let leader = state.leader()?;
        let request = (
            isr.clone(),
            leader.leader_epoch,
            leader.partition_epoch,
            leader.isr.clone(),
        );
        state.set_pending(isr);
        Some(request)
    });
    let Some((new_isr, leader_epoch, partition_epoch, old_isr)) = wanted else {
        return;
    };
    let broker = Arc::clone(broker);
    let partition = Arc::clone(partition);
    tokio::spawn(async move {
        // Kafka's `handleAlterPartitionError`: a request the controller refused is dropped (the
        // metadata is the truth again); one that got no answer is sent again, since it may have
        // committed — and until the metadata says otherwise an expansion in flight keeps
        // counting for the high watermark, so nothing is acknowledged past the new member.
        loop {
            let outcome =
                alter_partition(&broker, &partition, leader_epoch, partition_epoch, &new_isr).await;
            match outcome {
                Ok(()) => {
                    let expanded = new_isr.iter().any(|id| !old_isr.contains(id));
                    let shrunk = old_isr.iter().any(|id| !new_isr.contains(id));
                    tracing::info!(
                        topic = partition.topic,
                        partition = partition.partition,
                        ?old_isr,
                        ?new_isr,
                        "ISR changed"
                    );
                    if expanded {
                        broker.metrics.isr_expands_total.inc();
                    }
                    if shrunk {
                        broker.metrics.isr_shrinks_total.inc();
                    }
                    // The new partition epoch clears it when this broker's metadata shows the
                    // change; an unchanged ISR (already what was asked) clears it here.
                    partition.with_replica(|state| {
                        if state.leader().is_some_and(|leader| leader.isr == new_isr) {
                            state.clear_pending(leader_epoch, partition_epoch, &new_isr);
                        }
                    });
                    break;
                }
                Err(AlterFailure::Refused(err)) => {
                    tracing::warn!(
                        topic = partition.topic,
                        partition = partition.partition,
                        ?new_isr,
                        "AlterPartition refused: {err:?}"
                    );
                    // Pending until the metadata settles it, unless it cannot have applied.
                    if let Some(err) = err {
                        partition.with_replica(|state| {
                            state.alter_partition_refused(
                                leader_epoch,
                                partition_epoch,
                                &new_isr,
                                err,
                            )
                        });
                    }
                    break;
                }
                Err(AlterFailure::Unanswered(err)) => {
                    tracing::warn!(
                        topic = partition.topic,
                        partition = partition.partition,
                        ?new_isr,
                        "AlterPartition got no answer, sending it again: {err}"
                    );
                    tokio::time::sleep(ALTER_RETRY_BACKOFF).await;
                    let still_pending = partition.with_replica(|state| {
                        state.is_pending(leader_epoch, partition_epoch, &new_isr)
                    });
                    if !still_pending {
                        break;
                    }
                }
            }
        }
        let leader_end_offset = partition.log_end_offset();
        let me = broker.config.node_id;
        partition.with_replica(|state| state.maybe_advance_high_watermark(me, leader_end_offset));
    });
}

/// The pause before an AlterPartition that got no answer is sent again.
const ALTER_RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// Why an AlterPartition did not change the ISR.
enum AlterFailure {
    /// The controller answered no for this partition (`Some`), or for the whole request (a
    /// stale broker epoch: `None`; the re-registration it calls for settles the ISR).
    Refused(Option<AlterPartitionError>),
    /// No answer (no controller, a timeout, a lost connection): it may or may not have committed.
    Unanswered(String),
}

/// One partition's ISR change, sent with whatever other changes are queued; Ok once the new ISR
/// is committed and in this broker's metadata.
async fn alter_partition(
    broker: &Arc<Broker>,
    partition: &Partition,
    leader_epoch: i32,
    partition_epoch: i32,
    new_isr: &[i32],
) -> Result<(), AlterFailure> {
    let image = broker.image();
    // KIP-903: each member named with the epoch the leader knows, so a broker that restarted
    // since (and may have lost what it fetched) is not taken back in on the old one's progress.
    let members = new_isr
        .iter()
        .map(|id| IsrMember {
            broker_id: *id,
            broker_epoch: image
                .brokers
                .get(id)
                .map_or(UNKNOWN_BROKER_EPOCH, |b| b.broker_epoch),
        })
        .collect();
    let change = IsrChange {
        topic_id: partition.topic_id,
        partition: partition.partition,
        leader_epoch,
        partition_epoch,
        new_isr: members,
        leader_recovery_state: 0,
    };
    let outcome = broker
        .isr_changes
        .submit(broker, change)
        .await
        .map_err(|err| match err {
            ControlError::StaleBrokerEpoch => AlterFailure::Refused(None),
            other => AlterFailure::Unanswered(other.to_string()),
        })?;
    match outcome {
        Ok(_) => Ok(()),
        // A controller behind the leader's epochs (NOT_CONTROLLER here) has yet to catch up:
        // ask again rather than give up.
        Err(AlterPartitionError::NotController) => Err(AlterFailure::Unanswered(
            "the controller is behind this leader's epochs".into(),
        )),
        Err(err) => Err(AlterFailure::Refused(Some(err))),
    }
}

/// The most partitions one AlterPartition carries; more wait for the next.
const ISR_CHANGES_PER_REQUEST_MAX: usize = 10_000;

type ChangeReply = oneshot::Sender<Result<PartitionOutcome, ControlError>>;

/// This broker's ISR changes waiting for the AlterPartition that will carry them (Kafka's
/// `AlterPartitionManager`): at most one request is out at a time; whatever is submitted
/// meanwhile goes in the next one, together.
#[derive(Default)]
pub struct IsrChangeQueue {
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    waiting: Vec<(IsrChange, ChangeReply)>,
    /// A sender task is running: it takes what is waiting when its request is answered.
    sending: bool,
}

impl std::fmt::Debug for IsrChangeQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("IsrChangeQueue")
            .field("waiting", &state.waiting.len())
            .field("sending", &state.sending)
            .finish()
    }
}

impl IsrChangeQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues one partition's change and waits for its outcome, once committed and in this
    /// broker's metadata. A failure of the whole request (no controller, a stale broker epoch)
    /// is the error. `sender` carries the requests (the broker, or a test's fake).
    pub async fn submit<S: AlterPartitionSender>(
        self: &Arc<Self>,
        sender: &Arc<S>,
        change: IsrChange,
    ) -> Result<PartitionOutcome, ControlError> {
        let (tx, rx) = oneshot::channel();
        let start_sender = {
            let mut state = self.lock();
            state.waiting.push((change, tx));
            !std::mem::replace(&mut state.sending, true)
        };
        if start_sender {
            let (queue, sender) = (Arc::clone(self), Arc::clone(sender));
            tokio::spawn(async move { queue.send_queued(sender.as_ref()).await });
        }
        rx.await
            .unwrap_or_else(|_| Err(ControlError::Unavailable("the ISR sender stopped".into())))
    }

    /// The next batch, or `None` (and the sender stops) when nothing waits.
    fn next_batch(&self) -> Option<Vec<(IsrChange, ChangeReply)>> {
        let mut state = self.lock();
        if state.waiting.is_empty() {
            state.sending = false;
            return None;
        }
        let take = state.waiting.len().min(ISR_CHANGES_PER_REQUEST_MAX);
        Some(state.waiting.drain(..take).collect())
    }

    /// Sends what the queue holds, one AlterPartition at a time, until it is empty.
    async fn send_queued(&self, sender: &impl AlterPartitionSender) {
        while let Some(batch) = self.next_batch() {
            let (changes, replies): (Vec<IsrChange>, Vec<ChangeReply>) = batch.into_iter().unzip();
            let asked = changes.len();
            match sender.send(changes).await {
                Ok(outcomes) if outcomes.len() == asked => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Ok(outcomes) => {
                    let err = ControlError::Unavailable(format!(
                        "the controller answered {} of {asked} partitions",
                        outcomes.len()
                    ));
                    for reply in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
                Err(err) => {
                    for reply in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            }
        }
    }
}

/// Where [`IsrChangeQueue`] sends its AlterPartition requests: each partition's outcome in the
/// order asked, once the accepted changes are in this broker's metadata.
pub trait AlterPartitionSender: Send + Sync + 'static {
    fn send(
        &self,
        changes: Vec<IsrChange>,
    ) -> impl std::future::Future<Output = Result<Vec<PartitionOutcome>, ControlError>> + Send;
}

impl AlterPartitionSender for Broker {
    async fn send(&self, changes: Vec<IsrChange>) -> Result<Vec<PartitionOutcome>, ControlError> {
        let request = AlterPartitionRequest {
            broker_id: self.config.node_id,
            broker_epoch: self.broker_epoch.load(std::sync::atomic::Ordering::Acquire),
            partitions: changes,
        };
        let outcome = self.alter_partition(request).await?;
        Ok(outcome
            .partitions
            .into_iter()
            .map(|altered| altered.result)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skald_controller::PartitionState;
    use tokio::sync::Semaphore;

    /// Records every request and answers each change as accepted at partition epoch + 1, once a
    /// permit lets it.
    struct FakeController {
        requests: Mutex<Vec<Vec<i32>>>,
        answer: Semaphore,
    }

    impl Default for FakeController {
        fn default() -> Self {
            FakeController {
                requests: Mutex::new(Vec::new()),
                answer: Semaphore::new(0),
            }
        }
    }

    impl AlterPartitionSender for FakeController {
        async fn send(
            &self,
            changes: Vec<IsrChange>,
        ) -> Result<Vec<PartitionOutcome>, ControlError> {
            self.requests
                .lock()
                .expect("requests")
                .push(changes.iter().map(|c| c.partition).collect());
            self.answer
                .acquire()
                .await
                .expect("semaphore open")
                .forget();
            Ok(changes
                .iter()
                .map(|change| {
                    Ok(PartitionState {
                        leader: 1,
                        leader_epoch: change.leader_epoch,
                        partition_epoch: change.partition_epoch + 1,
                        isr: change.new_isr.iter().map(|m| m.broker_id).collect(),
                    })
                })
                .collect())
        }
    }

    fn change(partition: i32) -> IsrChange {
        IsrChange {
            topic_id: skald_controller::TopicId(7),
            partition,
            leader_epoch: 3,
            partition_epoch: 10 + partition,
            new_isr: vec![IsrMember {
                broker_id: 1,
                broker_epoch: 5,
            }],
            leader_recovery_state: 0,
        }
    }

    #[tokio::test]
    async fn changes_submitted_while_a_request_is_out_go_together_in_the_next() {
        let queue = Arc::new(IsrChangeQueue::default());
        let controller = Arc::new(FakeController::default());
        let first = tokio::spawn({
            let (queue, controller) = (Arc::clone(&queue), Arc::clone(&controller));
            async move { queue.submit(&controller, change(0)).await }
        });
        // The first request is out (and unanswered) before the others are submitted.
        while controller.requests.lock().expect("requests").is_empty() {
            tokio::task::yield_now().await;
        }
        let rest: Vec<_> = (1..=3)
            .map(|partition| {
                let (queue, controller) = (Arc::clone(&queue), Arc::clone(&controller));
                tokio::spawn(async move { queue.submit(&controller, change(partition)).await })
            })
            .collect();
        while queue.lock().waiting.len() < 3 {
            tokio::task::yield_now().await;
        }
        controller.answer.add_permits(2);
        let first = first.await.expect("task");
        assert_eq!(first.map(|o| o.map(|s| s.partition_epoch)), Ok(Ok(11)));
        for (partition, task) in (1..=3).zip(rest) {
            let outcome = task.await.expect("task");
            assert_eq!(
                outcome.map(|o| o.map(|s| s.partition_epoch)),
                Ok(Ok(11 + partition))
            );
        }
        assert_eq!(
            *controller.requests.lock().expect("requests"),
            vec![vec![0], vec![1, 2, 3]]
        );
        assert!(!queue.lock().sending, "the sender stops once nothing waits");
    }

    /// Fails every request as the channel would with no controller reachable.
    struct NoController;

    impl AlterPartitionSender for NoController {
        async fn send(&self, _: Vec<IsrChange>) -> Result<Vec<PartitionOutcome>, ControlError> {
            Err(ControlError::NotController(None))
        }
    }

    #[tokio::test]
    async fn a_failed_request_fails_every_change_it_carried() {
        let queue = Arc::new(IsrChangeQueue::default());
        let sender = Arc::new(NoController);
        let outcome = queue.submit(&sender, change(4)).await;
        assert_eq!(outcome, Err(ControlError::NotController(None)));
    }
}
