//! The server: opens the broker, binds the listeners and the metrics endpoint, accepts connections
//! (at most `max.connections`) and shuts everything down in order when asked.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use std::sync::OnceLock;

use skald_controller::follower::MetadataFollower;
use skald_controller::log::{MetadataLog, LEGACY_METADATA_LOG, METADATA_DIR_NAME};
use skald_controller::quorum::{Quorum, QuorumConfig};
use skald_controller::raft_disk::FileDisk;
use skald_controller::{Controller, ControllerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::broker::{ensure_meta_properties, Broker};
use crate::config::{Listener, ServerConfig};
use crate::connection;
use crate::controller_plane;
use crate::controller_plane::client::RemoteControllers;
use crate::controller_plane::server::ControllerListenerContext;
use crate::controller_plane::transport::RaftTransport;
use crate::error::{Error, Result};
use crate::metadata::driver::{self, DriverConfig};
use crate::metadata::publisher::Publisher;
use crate::metadata::{follower, lifecycle, ControllerChannel};
use crate::metrics::{
    ClusterCollector, GroupCollector, LeaderLogEnds, LogDirCollector, Metrics, MetricsServer,
    ProducerCollector, Readiness,
};
use crate::replica_manager::ReplicaManager;
use crate::replication;
use crate::replication::quota::QuotaCollector;

/// How long a node may take from SIGTERM until only the final flush of its logs is left,
/// whatever its peers are doing (down, paused, partitioned): the controlled shutdown, the end of
/// the background tasks, the drain of open connections and the hand-off of controller leadership
/// all come out of it. A node that hangs on shutdown gets killed by whoever stops it, which costs
/// a log recovery on the next start — worse than any of these steps left unfinished.
const SHUTDOWN_MAX: Duration = Duration::from_millis(1_500);
/// The part of [`SHUTDOWN_MAX`] the controlled shutdown may take: a live controller moves this
/// broker's leaderships in a few hundred milliseconds; without one, waiting longer would not help.
const CONTROLLED_SHUTDOWN_MAX: Duration = Duration::from_millis(800);
/// How long the runtime waits for blocking work (a retention or cleaner pass) still running when
/// the server returns; both are crash-safe, so the process need not wait for them.
const RUNTIME_SHUTDOWN_MAX: Duration = Duration::from_millis(200);

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
    let outcome = runtime.block_on(run(config, shutdown_signal()));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_MAX);
    outcome
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

/// How many probes of silent brokers may wait (one per broker per silence bound normally).
const SILENT_BROKER_PROBES_MAX: usize = 64;

/// How long one heartbeat attempt waits for the controller: a quarter of the session, so that a
/// broker whose controller went silent has tried the others, and found the new one, well before
/// the session the new controller gave it at its election runs out.
fn heartbeat_timeout(session_timeout_ms: u64) -> Duration {
    Duration::from_millis((session_timeout_ms / 4).max(50))
}

/// How long a broker-only node's metadata fetch waits for its answer: the controller's long poll
/// (500 ms) and the transfer of a batch, with room to spare. A voter that stopped answering is left
/// for another within this.
const METADATA_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a starting broker waits to be registered and unfenced before giving up.
const STARTUP_WAIT_MAX: Duration = Duration::from_secs(3600);

/// Runs the server until `shutdown` resolves.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    tokio::pin!(shutdown);
    // Before anything reads or writes a log dir; held until this function returns.
    let _log_dir_locks = {
        let config = config.clone();
        blocking(move || lock_log_dirs(&config)).await??
    };
    let metrics = Metrics::new()?;
    // From the start, so `/health` answers (and `/ready` says "starting") during log recovery
    // and while a broker waits for the controllers; metrics registered later still show.
    let readiness = Arc::new(Readiness::default());
    let metrics_server = MetricsServer::start(
        config.metrics_listener,
        metrics.clone(),
        Arc::clone(&readiness),
    )
    .map_err(|source| Error::Bind {
        address: config.metrics_listener.to_string(),
        source,
    })?;
    let cluster_id = {
        let config = config.clone();
        blocking(move || ensure_meta_properties(&config)).await??
    };
    let request_timeout = Duration::from_millis(config.controller_request_timeout_ms);
    let remote = (!config.voters.is_empty()).then(|| {
        RemoteControllers::new(
            cluster_id.clone(),
            config.voters.clone(),
            request_timeout,
            config.socket_request_max_bytes,
        )
    });

    // The metadata this node starts from: its own quorum's, or fetched from the controllers.
    let quorum = if config.is_voter() {
        let config = config.clone();
        Some(blocking(move || open_quorum(&config)).await??)
    } else {
        None
    };
    let mut follower = None;
    let (image, metadata_offset) = match (&quorum, &remote) {
        (Some(quorum), _) => (quorum.image(), quorum.applied_index()),
        (None, Some(remote)) => {
            let mut following = MetadataFollower::default();
            tracing::info!("fetching the cluster metadata from the controllers");
            tokio::select! {
                caught_up = follower::catch_up(remote, &mut following, STARTUP_WAIT_MAX) => {
                    caught_up.map_err(|err| Error::Internal(format!("cannot fetch the cluster metadata: {err}")))?
                }
                () = &mut shutdown => return Ok(()),
            }
            let start = (following.image(), following.applied_index());
            follower = Some(following);
            start
        }
        (None, None) => unreachable!("config validation requires voters for a broker-only node"),
    };

    let opening = {
        let (config, metrics, cluster_id) = (config.clone(), metrics.clone(), cluster_id.clone());
        blocking(move || Broker::open(config, metrics, cluster_id, image, metadata_offset))
    };
    let broker = Arc::new(opening.await??);
    let publisher = {
        let broker = Arc::downgrade(&broker);
        Publisher::start(Box::new(move |image, offset| {
            if let Some(broker) = broker.upgrade() {
                broker.publish_image(image, offset);
            }
        }))
        .map_err(|source| Error::Io {
            path: "metadata publisher thread".into(),
            source,
        })?
    };

    let (shutdown_tx, _) = broadcast::channel::<()>(1);
    // `max.connections` bounds the client listeners together; the controller listener has a
    // budget of its own, as a KRaft controller's socket server has its own connection quota, so
    // a flood of client connections can never keep brokers and voters from their controller.
    let connection_slots = Arc::new(Semaphore::new(config.max_connections));
    let controller_slots = Arc::new(Semaphore::new(config.max_connections));
    let mut acceptors = JoinSet::new();

    let driver = match quorum {
        Some(quorum) => {
            let cell = Arc::new(OnceLock::new());
            let (silent_brokers, silent) = tokio::sync::mpsc::channel(SILENT_BROKER_PROBES_MAX);
            let transport = RaftTransport::start(config.node_id, &config.voters, Arc::clone(&cell));
            let controller = Controller::new(ControllerConfig {
                node_id: config.node_id,
                num_partitions: config.num_partitions,
                default_replication_factor: config.default_replication_factor,
            })
            .with_election_config(config.elections);
            let driver = driver::start(
                DriverConfig {
                    node_id: config.node_id,
                    metrics: broker.metrics.clone(),
                    tick: Duration::from_millis((config.election_timeout_ms / 10).max(5)),
                    session_timeout_ms: config.broker_session_timeout_ms,
                    fast_fencing: config.broker_fast_fencing_enable,
                    unresponsive_fencing: config.broker_unresponsive_fencing_enable,
                    probe_silence_ms: 2 * config.broker_heartbeat_interval_ms,
                    silent_brokers: Some(silent_brokers),
                    request_timeout,
                    auto_balance: config.auto_partition_rebalance_enable,
                },
                quorum,
                controller,
                publisher.clone(),
                Box::new(transport),
            )
            .map_err(|source| Error::Io {
                path: "controller quorum thread".into(),
                source,
            })?;
            let _ = cell.set(driver.clone());
            let answer_timeout = config
                .broker_unresponsive_fencing_enable
                .then(|| Duration::from_millis(config.broker_unresponsive_probe_timeout_ms));
            tokio::spawn(controller_plane::unresponsive::serve_probes(
                driver.clone(),
                broker.metrics.clone(),
                answer_timeout,
                silent,
            ));
            if let Some(listener) = config.controller_listener() {
                let context = Arc::new(ControllerListenerContext {
                    driver: driver.clone(),
                    cluster_id: cluster_id.clone(),
                    frame_bytes_max: config.socket_request_max_bytes,
                });
                let socket = bind(listener).await?;
                tracing::info!(listener = listener.name, local = %socket.local_addr().map_err(|source| Error::Bind { address: listener.bind_address(), source })?, "controller listener ready");
                acceptors.spawn(accept_loop(
                    socket,
                    listener.name.clone(),
                    Arc::clone(&broker),
                    Arc::clone(&controller_slots),
                    shutdown_tx.clone(),
                    shutdown_tx.subscribe(),
                    move |stream, peer, stop| {
                        controller_plane::server::serve(Arc::clone(&context), stream, peer, stop)
                    },
                ));
            }
            Some(driver)
        }
        None => None,
    };
    broker.set_controller(
        ControllerChannel::new(driver.clone(), remote.clone(), request_timeout)
            .with_heartbeat_timeout(heartbeat_timeout(config.broker_session_timeout_ms)),
    );
    if let (Some(following), Some(remote)) = (follower, &remote) {
        // Connections of their own: a metadata long poll must not hold up the forwarded
        // operations queued behind it on a shared connection. What it learns of the leader the
        // others use.
        let fetching = remote.with_own_connections(METADATA_FETCH_TIMEOUT);
        tokio::spawn(follower::follow(
            fetching,
            following,
            publisher.clone(),
            shutdown_tx.subscribe(),
        ));
    }

    let log_ends = Arc::new(LeaderLogEnds::default());
    broker.metrics.register(Box::new(GroupCollector::new(
        Arc::downgrade(&broker),
        Arc::clone(&log_ends),
    )?))?;
    broker
        .metrics
        .register(Box::new(ClusterCollector::new(Arc::downgrade(&broker))?))?;
    broker
        .metrics
        .register(Box::new(ProducerCollector::new(Arc::downgrade(&broker))?))?;
    broker
        .metrics
        .register(Box::new(LogDirCollector::new(config.log_dirs.clone())?))?;
    broker
        .metrics
        .register(Box::new(QuotaCollector::new(Arc::clone(
            &broker.replicas.quotas,
        ))?))?;
    // Group timers and offset expiry run from start-up, not only once a member joins.
    crate::group::GroupCoordinator::ensure_ticker(&broker);

    if !config.roles.broker {
        tracing::info!(node_id = config.node_id, "controller running");
        // A controller serves once it knows a quorum leader: before that no broker can
        // register or change metadata through it.
        let quorum = driver.clone();
        readiness.serving(move || match quorum.as_ref().and_then(|d| d.leader()) {
            Some(_) => Ok(()),
            None => Err("no controller quorum leader known".into()),
        });
        shutdown.await;
        readiness.stopping();
        let deadline = Instant::now() + SHUTDOWN_MAX;
        // Before the listener closes: see the broker's shutdown below.
        if let Some(driver) = &driver {
            driver.shutdown(remaining(deadline)).await;
        }
        drop(shutdown_tx.send(()));
        drain(&mut acceptors, deadline).await;
        drop(metrics_server);
        tracing::info!("shut down cleanly");
        return Ok(());
    }

    // Clients are served once the controller has registered and unfenced this broker.
    let incarnation_id = tokio::select! {
        started = lifecycle::start(&broker, STARTUP_WAIT_MAX) => started.map_err(|err| {
            Error::Internal(format!("the broker could not join the cluster: {err}"))
        })?,
        () = &mut shutdown => {
            if let Some(driver) = &driver {
                driver.shutdown(SHUTDOWN_MAX).await;
            }
            return Ok(());
        }
    };
    let heartbeats = tokio::spawn(lifecycle::heartbeat_loop(
        Arc::clone(&broker),
        incarnation_id,
        shutdown_tx.subscribe(),
    ));

    for listener in config.client_listeners() {
        let socket = bind(listener).await?;
        let local = socket.local_addr().map_err(|source| Error::Bind {
            address: listener.bind_address(),
            source,
        })?;
        tracing::info!(listener = listener.name, %local, cluster_id = broker.cluster_id, node_id = config.node_id, "Kafka listener ready");
        let serving = Arc::clone(&broker);
        acceptors.spawn(accept_loop(
            socket,
            listener.name.clone(),
            Arc::clone(&broker),
            Arc::clone(&connection_slots),
            shutdown_tx.clone(),
            // Subscribed here, not in the task: a signal arriving before the task first runs is
            // not missed.
            shutdown_tx.subscribe(),
            move |stream, peer, stop| connection::serve(Arc::clone(&serving), stream, peer, stop),
        ));
    }

    // Registered, unfenced once caught up with the metadata, listeners open: ready while the
    // controller keeps this broker unfenced (a broker that stops heartbeating is fenced).
    let serving = Arc::downgrade(&broker);
    readiness.serving(move || match serving.upgrade() {
        Some(broker) if broker.fenced.load(Ordering::Acquire) => {
            Err("fenced by the controller".into())
        }
        Some(_) => Ok(()),
        None => Err("shutting down".into()),
    });

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

    let idle = Duration::from_millis(config.log_segment_unload_idle_ms);
    let unloader = tokio::spawn(periodic_log_task(
        Arc::clone(&broker),
        if idle.is_zero() {
            u64::MAX
        } else {
            (config.log_segment_unload_idle_ms / 10).clamp(1_000, 60_000)
        },
        move |replicas| {
            replicas.unload_idle_segments(idle);
        },
        shutdown_tx.subscribe(),
    ));
    let flusher = tokio::spawn(periodic_log_task(
        Arc::clone(&broker),
        config.log_flush_scheduler_interval_ms,
        ReplicaManager::flush_dirty_logs,
        shutdown_tx.subscribe(),
    ));
    let producer_expiration_ms = config.producer_id_expiration_ms;
    let producer_expiration = tokio::spawn(periodic_log_task(
        Arc::clone(&broker),
        config.producer_id_expiration_check_interval_ms,
        move |replicas| {
            let expired = replicas.remove_expired_producers(producer_expiration_ms);
            if expired > 0 {
                tracing::info!(expired, "expired idempotent producers");
            }
        },
        shutdown_tx.subscribe(),
    ));
    let txn_ticker = tokio::spawn(transaction_ticks(
        Arc::clone(&broker),
        shutdown_tx.subscribe(),
    ));
    let checkpointer = tokio::spawn(periodic_log_task(
        Arc::clone(&broker),
        config.log_flush_offset_checkpoint_interval_ms,
        |replicas| {
            crate::log_flusher::flush_pending_rolls(replicas);
            replicas.checkpoint_recovery_points();
        },
        shutdown_tx.subscribe(),
    ));
    let high_watermarks = tokio::spawn(periodic_log_task(
        Arc::clone(&broker),
        config.replication.high_watermark_checkpoint_interval_ms,
        ReplicaManager::checkpoint_high_watermarks,
        shutdown_tx.subscribe(),
    ));
    let fetchers = tokio::spawn(replication::fetcher::run(
        Arc::clone(&broker),
        shutdown_tx.subscribe(),
    ));
    let isr_expiration = tokio::spawn(replication::isr::run(
        Arc::clone(&broker),
        shutdown_tx.subscribe(),
    ));
    let lag_log_ends = tokio::spawn(crate::metrics::log_ends::run(
        Arc::clone(&broker),
        log_ends,
        shutdown_tx.subscribe(),
    ));

    let mut failure = None;
    tokio::select! {
        () = &mut shutdown => {}
        () = decommissioned(&broker) => tracing::warn!(
            "this broker is decommissioned (broker.decommissioned=true): shutting down for good"
        ),
        () = broker.replicas.every_log_dir_failed() => {
            // Kafka halts a broker whose every log dir failed; leaving it up would keep its
            // leaderships refusing every write. A controlled shutdown moves them first.
            let dirs: Vec<String> = broker
                .replicas
                .configured_log_dirs()
                .iter()
                .map(|dir| dir.display().to_string())
                .collect();
            tracing::error!(
                log_dirs = dirs.join(", "),
                "every log dir has failed: shutting down (restart once the disks are back)"
            );
            failure = Some(Error::EveryLogDirFailed { dirs });
        }
    }
    readiness.stopping();
    let signalled = Instant::now();
    let deadline = signalled + SHUTDOWN_MAX;
    // A pass writing markers may wait for other brokers: it is not waited for.
    txn_ticker.abort();
    // Leaderships move while this broker still answers, so clients switch without errors.
    lifecycle::controlled_shutdown(&broker, CONTROLLED_SHUTDOWN_MAX).await;
    // Controller leadership moves while the controller listener is still open: the successor's
    // raft messages, which tell this node it no longer leads, arrive on it, and brokers'
    // heartbeats still reach this node while it leads and counts their sessions.
    if let Some(driver) = &driver {
        driver.shutdown(remaining(deadline)).await;
    }
    drop(shutdown_tx.send(()));
    // A heartbeat in flight has nothing left to say.
    heartbeats.abort();
    // Nor does a lag refresh waiting on another broker.
    lag_log_ends.abort();
    // These end before `close_all` writes the final checkpoints (no follower appends after); a
    // fetch or an AlterPartition still waiting for a silent peer is abandoned at the deadline.
    for task in [
        flusher,
        unloader,
        producer_expiration,
        checkpointer,
        high_watermarks,
        fetchers,
        isr_expiration,
    ] {
        finish(task, deadline, "log flush or replication").await;
    }
    // A retention or cleaner pass is crash-safe (its files are renamed then removed, a cleaned
    // segment swapped in through `.swap` files), so one still running at the deadline is left.
    for task in [retention, cleaner] {
        finish(task, deadline, "retention or cleaner").await;
    }
    drain(&mut acceptors, deadline).await;
    drop(metrics_server);
    let flushing = Arc::clone(&broker);
    let closing = Instant::now();
    blocking(move || flushing.replicas.close_all()).await?;
    tracing::debug!(took_ms = closing.elapsed().as_millis(), "logs closed");
    if let Some(failure) = failure {
        return Err(failure);
    }
    tracing::info!(
        took_ms = signalled.elapsed().as_millis(),
        "shut down cleanly"
    );
    Ok(())
}

/// Resolves once this broker's dynamic configs say it is decommissioned (`skald cluster
/// decommission`): it then stops as on a signal, and the process exits.
async fn decommissioned(broker: &Broker) {
    let me = broker.config.node_id;
    while !broker
        .wait_for_image(
            |image| skald_controller::topic_config::is_decommissioned(image, me),
            Duration::from_secs(3600),
        )
        .await
    {}
}

/// What is left of the shutdown budget.
fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Waits for a background task to end, until `deadline`; then aborts it (at its next await).
async fn finish(mut task: tokio::task::JoinHandle<()>, deadline: Instant, what: &str) {
    match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::error!("{what} task failed: {err}"),
        Err(_) => {
            tracing::warn!("{what} task still running at the shutdown deadline; abandoning it");
            task.abort();
        }
    }
}

/// Waits for the listeners' connections to finish their current request, until `deadline`;
/// then closes whatever is still open.
async fn drain(acceptors: &mut JoinSet<()>, deadline: Instant) {
    let drained = tokio::time::timeout_at(deadline, async {
        while acceptors.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open at the shutdown deadline; closing them");
        acceptors.abort_all();
    }
}

/// Runs blocking start-up or shutdown work off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Error::Internal(format!("blocking task failed: {err}")))
}

async fn bind(listener: &Listener) -> Result<TcpListener> {
    let address = listener.bind_address();
    TcpListener::bind(&address)
        .await
        .map_err(|source| Error::Bind { address, source })
}

/// Kafka's per-log-dir lock file.
const LOCK_FILE: &str = ".lock";

/// Takes the `.lock` of every log dir and of the metadata log dir (creating missing dirs), as
/// Kafka does: a second server on the same dirs would otherwise append to the first one's
/// segments and rewrite its checkpoints while it serves. The locks (`flock(2)`, exclusive, never
/// waited for) last as long as the returned files are open, and the kernel drops them when the
/// process dies, so a crash leaves no stale lock behind. A dir named twice (the metadata log dir
/// defaults to the first log dir) is locked once: a second lock on it from this process would
/// conflict with the first.
fn lock_log_dirs(config: &ServerConfig) -> Result<Vec<std::fs::File>> {
    let mut dirs: Vec<&PathBuf> = config.log_dirs.iter().collect();
    dirs.push(&config.metadata_log_dir);
    let mut locked: Vec<PathBuf> = Vec::new();
    let mut files = Vec::new();
    for dir in dirs {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let canonical = dir.canonicalize().map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        if locked.contains(&canonical) {
            continue;
        }
        let path = canonical.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(Error::LogDirLocked { dir: canonical })
            }
            Err(errno) => {
                return Err(Error::Io {
                    path,
                    source: errno.into(),
                })
            }
        }
        locked.push(canonical);
        files.push(file);
    }
    Ok(files)
}

/// Opens this voter's raft log under the metadata log dir (seeding a new one from the legacy
/// single-node metadata log, if there is one).
fn open_quorum(config: &ServerConfig) -> Result<Quorum<FileDisk>> {
    let legacy_path = config
        .metadata_log_dir
        .join(METADATA_DIR_NAME)
        .join(LEGACY_METADATA_LOG);
    let legacy = if config.voter_ids() == [config.node_id] && legacy_path.exists() {
        tracing::info!(path = %legacy_path.display(), "seeding the metadata quorum from the single-node metadata log");
        MetadataLog::open(&config.metadata_log_dir)?.1
    } else {
        Vec::new()
    };
    let disk = FileDisk::open(&config.metadata_log_dir)?;
    let quorum = Quorum::open(
        QuorumConfig {
            snapshot_after_entries: config.snapshot_interval_entries,
            ..QuorumConfig::new(config.node_id, config.voter_ids())
        },
        disk,
        legacy,
    )?;
    if legacy_path.exists() {
        // Its records now live in the quorum's snapshot; keep the file, but never read it again.
        let retired = legacy_path.with_extension("log.migrated");
        std::fs::rename(&legacy_path, &retired).map_err(|source| Error::Io {
            path: legacy_path,
            source,
        })?;
    }
    Ok(quorum)
}

/// Longest period a periodic task is scheduled with; longer ones (Kafka's Long.MAX "never") never run.
const PERIOD_MAX: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// Runs `pass` on the blocking pool every `every_ms` until shutdown, one pass at a time (Kafka's
/// `kafka-log-retention`, `kafka-log-flusher`, `kafka-recovery-point-checkpoint` scheduled tasks
/// and the log cleaner's backoff; the first run waits one interval).
async fn periodic_log_task(
    broker: Arc<Broker>,
    every_ms: u64,
    pass: impl Fn(&ReplicaManager) + Send + Sync + 'static,
    mut stop: broadcast::Receiver<()>,
) {
    let pass = Arc::new(pass);
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
        let pass = Arc::clone(&pass);
        if let Err(err) = tokio::task::spawn_blocking(move || pass(&broker.replicas)).await {
            tracing::error!("periodic log task failed: {err}");
        }
    }
}

/// The transaction coordinator's periodic passes until shutdown: timed-out transactions
/// aborted and transactions a failover caught preparing finished, every
/// `transaction.abort.timed.out.transaction.cleanup.interval.ms`; idle transactional ids
/// expired every `transaction.remove.expired.transaction.cleanup.interval.ms`.
async fn transaction_ticks(broker: Arc<Broker>, mut stop: broadcast::Receiver<()>) {
    let interval = |ms: u64| {
        let mut ticks = tokio::time::interval(Duration::from_millis(ms));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    };
    let mut aborts = interval(broker.txns.config.abort_check_interval_ms);
    let mut expiry = interval(broker.txns.config.id_expiration_check_interval_ms);
    loop {
        tokio::select! {
            _ = aborts.tick() => broker.txns.tick(&broker).await,
            _ = expiry.tick() => {
                broker.txns.expire_transactional_ids(&broker).await;
            }
            _ = stop.recv() => return,
        }
    }
}

/// Accepts connections on one listener until shutdown; waits for its connections to finish.
async fn accept_loop<F, Fut>(
    socket: TcpListener,
    listener_name: String,
    broker: Arc<Broker>,
    slots: Arc<Semaphore>,
    shutdown: broadcast::Sender<()>,
    mut stop: broadcast::Receiver<()>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, broadcast::Receiver<()>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
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
        // A connection accepted just as shutdown was signalled would subscribe too late to hear
        // it, and hold the drain up: refuse it instead.
        if !matches!(stop.try_recv(), Err(broadcast::error::TryRecvError::Empty)) {
            break;
        }
        let _ = stream.set_nodelay(true);
        let (stop, gauge) = (shutdown.subscribe(), gauge.clone());
        let serving = serve(stream, peer, stop);
        connections.spawn(async move {
            gauge.inc();
            serving.await;
            gauge.dec();
            drop(permit);
        });
        // Reap finished connections so the set stays bounded by the live ones.
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_dirs_are_locked_once_each_and_refused_while_held() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        let config =
            |log_dirs: String| ServerConfig::load(None, &[format!("log.dirs={log_dirs}")]).unwrap();
        // The metadata log dir defaults to the first log dir: the same dir, one lock.
        let both = config(format!("{},{}", a.display(), b.display()));
        let held = lock_log_dirs(&both).unwrap();
        assert_eq!(held.len(), 2);
        assert!(a.join(LOCK_FILE).is_file() && b.join(LOCK_FILE).is_file());

        let second = lock_log_dirs(&config(b.display().to_string())).unwrap_err();
        assert!(
            matches!(&second, Error::LogDirLocked { dir } if *dir == b.canonicalize().unwrap()),
            "{second:?}"
        );
        assert_eq!(
            second.to_string(),
            format!(
                "log dir {} is in use by another process (its .lock is held): is another skald server running on it?",
                b.canonicalize().unwrap().display()
            )
        );
        drop(held);
        assert_eq!(
            lock_log_dirs(&config(b.display().to_string()))
                .unwrap()
                .len(),
            1
        );
    }
}
