//! ISR maintenance on the leader (Kafka's `maybeShrinkIsr` / `maybeExpandIsr`): the leader
//! proposes, the controller decides. A follower that has not caught up for
//! `replica.lag.time.max.ms` is dropped; one that has reached the high watermark is added back.
//! Either change goes to the controller as an AlterPartition at the partition epoch the leader
//! knows (so a stale leader's request is refused), one in flight per partition; the new ISR is
//! acted on once it arrives as metadata.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use skald_controller::alter_partition::UNKNOWN_BROKER_EPOCH;
use skald_controller::{AlterPartitionError, AlterPartitionRequest, IsrChange, IsrMember};

use super::now_ms;
use crate::broker::Broker;
use crate::metadata::ControlError;
use crate::replica_manager::Partition;

/// Checks every led partition for followers to drop, every half `replica.lag.time.max.ms`
/// (Kafka's `isr-expiration` task), until shutdown.
pub async fn run(broker: Arc<Broker>, mut stop: broadcast::Receiver<()>) {
    let every = Duration::from_millis((broker.config.replication.lag_time_max_ms / 2).max(10));
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
        broker.replicas.update_replication_gauges(&broker.image());
    }
}

/// Sends the ISR change the partition's leader state calls for, if any and none is in flight.
pub fn maybe_alter_isr(broker: &Arc<Broker>, partition: &Arc<Partition>) {
    let me = broker.config.node_id;
    let lag_time_max_ms =
        i64::try_from(broker.config.replication.lag_time_max_ms).unwrap_or(i64::MAX);
    let leader_end_offset = partition.log_end_offset();
    let image = broker.image();
    let live = |id: i32| image.brokers.get(&id).is_some_and(|b| !b.fenced);
    let wanted = partition.with_replica(|state| {
        let isr = state.wanted_isr(me, leader_end_offset, now_ms(), lag_time_max_ms, live)?;
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
                        "AlterPartition refused: {err}"
                    );
                    partition.with_replica(|state| {
                        state.clear_pending(leader_epoch, partition_epoch, &new_isr)
                    });
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
    /// The controller answered no (a stale epoch, an ineligible replica, ...).
    Refused(String),
    /// No answer (no controller, a timeout, a lost connection): it may or may not have committed.
    Unanswered(String),
}

/// One AlterPartition for one partition; Ok once the new ISR is committed and in this broker's
/// metadata.
async fn alter_partition(
    broker: &Broker,
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
    let request = AlterPartitionRequest {
        broker_id: broker.config.node_id,
        broker_epoch: broker
            .broker_epoch
            .load(std::sync::atomic::Ordering::Acquire),
        partitions: vec![IsrChange {
            topic_id: partition.topic_id,
            partition: partition.partition,
            leader_epoch,
            partition_epoch,
            new_isr: members,
            leader_recovery_state: 0,
        }],
    };
    let outcome = broker
        .alter_partition(request)
        .await
        .map_err(|err| match err {
            ControlError::StaleBrokerEpoch => AlterFailure::Refused(err.to_string()),
            other => AlterFailure::Unanswered(other.to_string()),
        })?;
    match outcome.partitions.first().map(|altered| &altered.result) {
        Some(Ok(_)) => Ok(()),
        // A controller behind the leader's epochs (NOT_CONTROLLER here) has yet to catch up:
        // ask again rather than give up.
        Some(Err(AlterPartitionError::NotController)) => Err(AlterFailure::Unanswered(
            "the controller is behind this leader's epochs".into(),
        )),
        Some(Err(err)) => Err(AlterFailure::Refused(format!("{err:?}"))),
        None => Err(AlterFailure::Refused(
            "the controller answered no partition".into(),
        )),
    }
}
