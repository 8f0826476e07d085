//! The broker's life as the controller sees it (KRaft's BrokerLifecycleManager): register (a new
//! incarnation each start), heartbeat every `broker.heartbeat.interval.ms`, be unfenced once
//! caught up with the metadata, and on shutdown ask to be fenced first so leaderships move while
//! this broker still answers (controlled shutdown).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use skald_controller::{BrokerRegistration, Endpoint};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::driver::Heartbeat;
use super::ControlError;
use crate::broker::Broker;

/// Heartbeat period while fenced: catching up should not wait a full interval.
const FENCED_HEARTBEAT_MAX: Duration = Duration::from_millis(100);
/// Pause between registrations at start-up while no controller takes them (each attempt itself
/// keeps trying for `controller.quorum.request.timeout.ms`).
const REGISTRATION_BACKOFF: Duration = Duration::from_secs(1);

fn registration(broker: &Broker, incarnation_id: u64) -> BrokerRegistration {
    BrokerRegistration {
        broker_id: broker.config.node_id,
        incarnation_id,
        endpoints: broker
            .config
            .advertised_listeners
            .iter()
            .map(|listener| Endpoint {
                name: listener.name.clone(),
                host: listener.host.clone(),
                port: listener.port,
            })
            .collect(),
        rack: broker.config.rack.clone(),
    }
}

/// Registers this broker (retrying while no controller answers) and returns its epoch.
async fn register(broker: &Broker, incarnation_id: u64) -> Result<i64, ControlError> {
    let channel = broker
        .controller()
        .ok_or(ControlError::NotController(None))?;
    let epoch = channel
        .register(registration(broker, incarnation_id))
        .await?;
    broker.broker_epoch.store(epoch, Ordering::Release);
    broker.fenced.store(true, Ordering::Release);
    tracing::info!(broker_epoch = epoch, "registered with the controller");
    Ok(epoch)
}

async fn heartbeat_once(broker: &Broker, want_shut_down: bool) -> Result<bool, ControlError> {
    let channel = broker
        .controller()
        .ok_or(ControlError::NotController(None))?;
    let reply = channel
        .heartbeat(Heartbeat {
            broker_id: broker.config.node_id,
            broker_epoch: broker.broker_epoch.load(Ordering::Acquire),
            current_metadata_offset: i64::try_from(broker.metadata_offset()).unwrap_or(i64::MAX),
            want_fence: false,
            want_shut_down,
        })
        .await?;
    let was_fenced = broker.fenced.swap(reply.is_fenced, Ordering::AcqRel);
    if was_fenced && !reply.is_fenced {
        tracing::info!("the controller unfenced this broker");
    } else if !was_fenced && reply.is_fenced && !want_shut_down {
        tracing::warn!("the controller fenced this broker");
    }
    Ok(if want_shut_down {
        reply.should_shut_down
    } else {
        reply.is_fenced
    })
}

/// Registers until the controller takes the registration or `deadline` passes, as Kafka's
/// BrokerLifecycleManager retries: a combined node started before the rest of its quorum has no
/// active controller to register with until enough voters are up, however long that takes.
async fn register_until(
    broker: &Broker,
    incarnation_id: u64,
    deadline: Instant,
) -> Result<i64, ControlError> {
    loop {
        match register(broker, incarnation_id).await {
            Ok(epoch) => return Ok(epoch),
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(err) => tracing::info!("waiting for an active controller to register with: {err}"),
        }
        tokio::time::sleep(REGISTRATION_BACKOFF).await;
    }
}

/// Registers and heartbeats until the controller unfences this broker, or `wait` passes.
/// Returns the incarnation id to keep heartbeating with.
pub async fn start(broker: &Arc<Broker>, wait: Duration) -> Result<u64, ControlError> {
    let incarnation_id = skald_controller::controller::random_topic_id() as u64;
    let deadline = Instant::now() + wait;
    register_until(broker, incarnation_id, deadline).await?;
    loop {
        match heartbeat_once(broker, false).await {
            Ok(false) => {
                // Serve clients only once this node's own metadata shows it unfenced: the
                // records that unfence it also hand back its leaderships, and until they are
                // applied here clients would find its partitions leaderless.
                let (me, epoch) = (
                    broker.config.node_id,
                    broker.broker_epoch.load(Ordering::Acquire),
                );
                let applied = broker
                    .wait_for_image(
                        |image| {
                            image
                                .brokers
                                .get(&me)
                                .is_some_and(|b| b.broker_epoch == epoch && !b.fenced)
                        },
                        deadline.saturating_duration_since(Instant::now()),
                    )
                    .await;
                if !applied {
                    tracing::warn!(
                        "unfenced, but this node's metadata has yet to show it; serving anyway"
                    );
                }
                return Ok(incarnation_id);
            }
            Ok(true) => {}
            Err(ControlError::StaleBrokerEpoch) => {
                register_until(broker, incarnation_id, deadline).await?;
            }
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(err) => tracing::debug!("heartbeat failed: {err}"),
        }
        if Instant::now() >= deadline {
            return Err(ControlError::Timeout);
        }
        tokio::time::sleep(FENCED_HEARTBEAT_MAX).await;
    }
}

/// Heartbeats until shutdown; re-registers if the controller forgot this incarnation.
pub async fn heartbeat_loop(
    broker: Arc<Broker>,
    incarnation_id: u64,
    mut stop: broadcast::Receiver<()>,
) {
    let interval = Duration::from_millis(broker.config.broker_heartbeat_interval_ms);
    loop {
        let period = if broker.fenced.load(Ordering::Acquire) {
            interval.min(FENCED_HEARTBEAT_MAX)
        } else {
            interval
        };
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.recv() => return,
        }
        if broker.shutting_down.load(Ordering::Acquire) {
            return;
        }
        match heartbeat_once(&broker, false).await {
            Ok(_) => {}
            Err(ControlError::StaleBrokerEpoch) => {
                if let Err(err) = register(&broker, incarnation_id).await {
                    tracing::warn!("re-registration failed: {err}");
                }
            }
            Err(err) => tracing::warn!("broker heartbeat failed: {err}"),
        }
    }
}

/// Controlled shutdown: asks to be fenced (so the controller moves this broker's leaderships to
/// other ISR members) and waits for the controller's go-ahead, at most `wait`.
pub async fn controlled_shutdown(broker: &Broker, wait: Duration) {
    broker.shutting_down.store(true, Ordering::Release);
    if broker.broker_epoch.load(Ordering::Acquire) < 0 {
        return;
    }
    let deadline = Instant::now() + wait;
    loop {
        // Each heartbeat within what is left of `wait`: with no controller answering, a
        // heartbeat's own retries would outlast it.
        let heartbeat = tokio::time::timeout_at(deadline, heartbeat_once(broker, true)).await;
        match heartbeat.unwrap_or(Err(ControlError::Timeout)) {
            Ok(true) => {
                tracing::info!("controlled shutdown: leaderships moved");
                return;
            }
            Ok(false) => {}
            Err(err) => tracing::warn!("controlled shutdown heartbeat failed: {err}"),
        }
        if Instant::now() >= deadline {
            tracing::warn!("controlled shutdown did not complete in {wait:?}; stopping anyway");
            return;
        }
        tokio::time::sleep(FENCED_HEARTBEAT_MAX).await;
    }
}
