//! The server: opens the broker, binds the listeners and the metrics endpoint, accepts connections
//! (at most `max.connections`) and shuts everything down in order when asked.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, Semaphore};
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::config::ServerConfig;
use crate::connection;
use crate::error::{Error, Result};
use crate::metrics::{GroupCollector, Metrics, MetricsServer};
use crate::replica_manager::ReplicaManager;

/// How long shutdown waits for open connections to finish their current request.
const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(5);

/// Builds a runtime and runs the server until SIGTERM or Ctrl-C.
pub fn run_until_signal(config: ServerConfig) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("skald-worker")
        .build()
        .map_err(|source| Error::Io {
            path: "tokio runtime".into(),
            source,
        })?;
    runtime.block_on(run(config, shutdown_signal()))
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {err}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Runs the server until `shutdown` resolves.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let metrics = Metrics::new()?;
    let opening = {
        let (config, metrics) = (config.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || Broker::open(config, metrics))
    };
    let broker = Arc::new(
        opening
            .await
            .map_err(|err| Error::Internal(format!("start-up task failed: {err}")))??,
    );
    broker
        .metrics
        .register(Box::new(GroupCollector::new(Arc::downgrade(&broker))?))?;
    // Group timers and offset expiry run from start-up, not only once a member joins.
    crate::group::GroupCoordinator::ensure_ticker(&broker);
    let metrics_server =
        MetricsServer::start(config.metrics_listener, metrics).map_err(|source| Error::Bind {
            address: config.metrics_listener.to_string(),
            source,
        })?;

    let (shutdown_tx, _) = broadcast::channel::<()>(1);
    let connection_slots = Arc::new(Semaphore::new(config.max_connections));
    let mut acceptors = JoinSet::new();
    for listener in &config.listeners {
        let address = listener.bind_address();
        let socket = TcpListener::bind(&address)
            .await
            .map_err(|source| Error::Bind {
                address: address.clone(),
                source,
            })?;
        let local = socket.local_addr().map_err(|source| Error::Bind {
            address: address.clone(),
            source,
        })?;
        tracing::info!(listener = listener.name, %local, cluster_id = broker.cluster_id, node_id = config.node_id, "Kafka listener ready");
        // Subscribed here, not in the task: a signal arriving before the task first runs is not missed.
        let stop = shutdown_tx.subscribe();
        acceptors.spawn(accept_loop(
            socket,
            listener.name.clone(),
            Arc::clone(&broker),
            Arc::clone(&connection_slots),
            shutdown_tx.clone(),
            stop,
        ));
    }

    let retention = tokio::spawn(periodic_log_task(
        Arc::clone(&broker),
        config.log_retention_check_interval_ms,
        |replicas| {
            replicas.delete_old_segments();
        },
        shutdown_tx.subscribe(),
    ));
    let cleaner = tokio::spawn(periodic_log_task(
        Arc::clone(&broker),
        if config.log_cleaner_enable {
            config.log_cleaner_backoff_ms
        } else {
            u64::MAX
        },
        ReplicaManager::clean_compacted_logs,
        shutdown_tx.subscribe(),
    ));

    let flusher = tokio::spawn(periodic_log_task(
        Arc::clone(&broker),
        config.log_flush_scheduler_interval_ms,
        ReplicaManager::flush_dirty_logs,
        shutdown_tx.subscribe(),
    ));
    let checkpointer = tokio::spawn(periodic_log_task(
        Arc::clone(&broker),
        config.log_flush_offset_checkpoint_interval_ms,
        ReplicaManager::checkpoint_recovery_points,
        shutdown_tx.subscribe(),
    ));

    shutdown.await;
    drop(shutdown_tx.send(()));
    // Both end before `close_all` writes the final checkpoints.
    for task in [flusher, checkpointer] {
        if let Err(err) = task.await {
            tracing::error!("log flush task failed: {err}");
        }
    }
    // A pass under way finishes (its files are renamed then removed, never left half done).
    for task in [retention, cleaner] {
        if let Err(err) = task.await {
            tracing::error!("retention or cleaner task failed: {err}");
        }
    }
    let drained = tokio::time::timeout(SHUTDOWN_DRAIN_MAX, async {
        while acceptors.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open after {SHUTDOWN_DRAIN_MAX:?}; closing them");
        acceptors.abort_all();
    }
    drop(metrics_server);
    let flushing = Arc::clone(&broker);
    tokio::task::spawn_blocking(move || flushing.replicas.close_all())
        .await
        .map_err(|err| Error::Internal(format!("flush task failed: {err}")))?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Longest period a periodic task is scheduled with; longer ones (Kafka's Long.MAX "never") never run.
const PERIOD_MAX: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// Runs `pass` on the blocking pool every `every_ms` until shutdown, one pass at a time (Kafka's
/// `kafka-log-retention`, `kafka-log-flusher`, `kafka-recovery-point-checkpoint` scheduled tasks
/// and the log cleaner's backoff; the first run waits one interval).
async fn periodic_log_task(
    broker: Arc<Broker>,
    every_ms: u64,
    pass: fn(&ReplicaManager),
    mut stop: broadcast::Receiver<()>,
) {
    let every = Duration::from_millis(every_ms);
    let first = tokio::time::Instant::now().checked_add(every);
    let (Some(first), true) = (first, every <= PERIOD_MAX) else {
        let _ = stop.recv().await;
        return;
    };
    let mut ticks = tokio::time::interval_at(first, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.recv() => return,
        }
        let broker = Arc::clone(&broker);
        if let Err(err) = tokio::task::spawn_blocking(move || pass(&broker.replicas)).await {
            tracing::error!("periodic log task failed: {err}");
        }
    }
}

/// Accepts connections on one listener until shutdown; waits for its connections to finish.
async fn accept_loop(
    socket: TcpListener,
    listener_name: String,
    broker: Arc<Broker>,
    slots: Arc<Semaphore>,
    shutdown: broadcast::Sender<()>,
    mut stop: broadcast::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    let gauge = broker
        .metrics
        .connections
        .with_label_values(&[&listener_name]);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stop.recv() => break,
        };
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            _ = stop.recv() => break,
        };
        let (stream, peer): (_, SocketAddr) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Usually EMFILE: back off briefly rather than spin.
                tracing::warn!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (broker, stop, gauge) = (Arc::clone(&broker), shutdown.subscribe(), gauge.clone());
        connections.spawn(async move {
            gauge.inc();
            connection::serve(broker, stream, peer, stop).await;
            gauge.dec();
            drop(permit);
        });
        // Reap finished connections so the set stays bounded by the live ones.
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}
