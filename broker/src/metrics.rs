//! Prometheus metrics and the HTTP endpoint on `metrics.listener`: `GET /metrics`, and the
//! probes orchestrators ask, `GET /health` (the process is alive) and `GET /ready` (it serves
//! clients).

mod cluster;
pub mod log_ends;

pub use cluster::ClusterCollector;
pub use log_ends::LeaderLogEnds;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the broker exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_latency_seconds: HistogramVec,
    /// Every error code in every response, by API and Kafka's error name, NONE included
    /// (Kafka's `ErrorsPerSec{request, error}`).
    pub request_errors_total: IntCounterVec,
    /// A request's wait behind the ones before it on its connection, and the broker's own work
    /// on it (Kafka's `RequestQueueTimeMs` and `LocalTimeMs`).
    pub request_queue_time_seconds: HistogramVec,
    pub request_processing_time_seconds: HistogramVec,
    pub bytes_in_total: IntCounterVec,
    pub bytes_out_total: IntCounterVec,
    /// Record bytes copied for replicas a reassignment is adding: fetched as their follower,
    /// sent as their leader (Kafka's `ReassignmentBytesInPerSec` / `ReassignmentBytesOutPerSec`).
    pub reassignment_bytes_in_total: IntCounter,
    pub reassignment_bytes_out_total: IntCounter,
    pub records_in_total: IntCounterVec,
    pub log_end_offset: IntGaugeVec,
    pub log_size_bytes: IntGaugeVec,
    pub connections: IntGaugeVec,
    /// 1 for a log dir taken offline by a disk failure (until restart), 0 for one serving.
    pub log_dir_offline: IntGaugeVec,
    /// Hosted partitions whose log dir is offline (Kafka's `OfflinePartitionsCount`, locally).
    pub offline_partitions: IntGauge,
    /// 1 on the active controller, 0 on other voters (Kafka's `ActiveControllerCount`).
    pub controller_active: IntGauge,
    /// The raft term and the commit/applied indexes of this node's metadata quorum member.
    pub raft_term: IntGauge,
    pub raft_leader_id: IntGauge,
    pub metadata_applied_index: IntGauge,
    /// Brokers this node, as the active controller, fenced because their session expired, by
    /// broker (Kafka's `TimedOutBrokerHeartbeatCount`, per broker).
    pub timed_out_broker_heartbeats_total: IntCounterVec,
    /// Brokers this node, as the active controller, fenced before their session ended, by broker
    /// and `reason`: `process_gone` (evident death) or `unresponsive` (silent and no answer).
    pub early_fenced_brokers_total: IntCounterVec,
    /// Probes of silent brokers' listeners this node made as the active controller, by broker and
    /// `outcome` (`controller_plane::unresponsive::Probe`).
    pub silent_broker_probes_total: IntCounterVec,
    /// Led partitions whose ISR is smaller than their replica set (Kafka's
    /// `UnderReplicatedPartitions`), and smaller than `min.insync.replicas` (`UnderMinIsrPartitionCount`).
    pub under_replicated_partitions: IntGauge,
    pub under_min_isr_partitions: IntGauge,
    /// Partitions hosted here and those led here (Kafka's `PartitionCount` and `LeaderCount`).
    pub partitions: IntGauge,
    pub leader_partitions: IntGauge,
    /// ISR changes this broker's AlterPartitions made (Kafka's `IsrShrinksPerSec` / `IsrExpandsPerSec`).
    pub isr_shrinks_total: IntCounter,
    pub isr_expands_total: IntCounter,
    /// Fetch sessions (KIP-227) cached here, their partitions, and sessions evicted to make room
    /// (Kafka's `NumIncrementalFetchSessions`, `NumIncrementalFetchPartitionsCached`,
    /// `IncrementalFetchSessionEvictionsPerSec`).
    pub fetch_sessions: crate::fetch_session::SessionMetrics,
    /// On a leader: how many offsets each follower is behind its log end.
    pub replica_lag_offsets: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests_total = IntCounterVec::new(
            Opts::new("skald_requests_total", "Requests handled, by Kafka API"),
            &["api"],
        )?;
        let latency_buckets = vec![
            0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            10.0,
        ];
        let request_latency_seconds = HistogramVec::new(
            HistogramOpts::new(
                "skald_request_latency_seconds",
                "Time from a request's arrival to its response, by Kafka API",
            )
            .buckets(latency_buckets.clone()),
            &["api"],
        )?;
        let request_queue_time_seconds = HistogramVec::new(
            HistogramOpts::new(
                "skald_request_queue_time_seconds",
                "Time a request waited behind the earlier requests of its connection, by Kafka API",
            )
            .buckets(latency_buckets.clone()),
            &["api"],
        )?;
        let request_processing_time_seconds = HistogramVec::new(
            HistogramOpts::new(
                "skald_request_processing_time_seconds",
                "Time the broker worked on a request, without waiting for replicas, by Kafka API",
            )
            .buckets(latency_buckets),
            &["api"],
        )?;
        let request_errors_total = IntCounterVec::new(
            Opts::new(
                "skald_request_errors_total",
                "Error codes in responses, by Kafka API and error name (NONE included)",
            ),
            &["api", "error"],
        )?;
        let bytes_in_total = IntCounterVec::new(
            Opts::new(
                "skald_bytes_in_total",
                "Record batch bytes appended, by topic",
            ),
            &["topic"],
        )?;
        let bytes_out_total = IntCounterVec::new(
            Opts::new(
                "skald_bytes_out_total",
                "Record batch bytes fetched, by topic",
            ),
            &["topic"],
        )?;
        let reassignment_bytes_in_total = IntCounter::with_opts(Opts::new(
            "skald_reassignment_bytes_in_total",
            "Record bytes fetched into replicas a partition reassignment is adding to this broker",
        ))?;
        let reassignment_bytes_out_total = IntCounter::with_opts(Opts::new(
            "skald_reassignment_bytes_out_total",
            "Record bytes this broker sent, as leader, to replicas a partition reassignment is adding",
        ))?;
        let records_in_total = IntCounterVec::new(
            Opts::new("skald_records_in_total", "Records appended, by topic"),
            &["topic"],
        )?;
        let log_end_offset = IntGaugeVec::new(
            Opts::new(
                "skald_log_end_offset",
                "The offset the next appended record will get, by partition",
            ),
            &["topic", "partition"],
        )?;
        let log_size_bytes = IntGaugeVec::new(
            Opts::new(
                "skald_log_size_bytes",
                "Bytes of all segments of a partition's log",
            ),
            &["topic", "partition"],
        )?;
        let connections = IntGaugeVec::new(
            Opts::new("skald_connections", "Open client connections, by listener"),
            &["listener"],
        )?;
        let log_dir_offline = IntGaugeVec::new(
            Opts::new(
                "skald_log_dir_offline",
                "1 if a log dir was taken offline by a disk failure, else 0",
            ),
            &["dir"],
        )?;
        let offline_partitions = IntGauge::new(
            "skald_offline_partitions",
            "Hosted partitions whose log dir is offline",
        )?;
        let controller_active = IntGauge::new(
            "skald_controller_active",
            "1 if this node is the active controller, else 0",
        )?;
        let raft_term = IntGauge::new("skald_raft_term", "The metadata quorum's current term")?;
        let raft_leader_id = IntGauge::new(
            "skald_raft_leader_id",
            "Node id of the metadata quorum leader as this node knows it, -1 if none",
        )?;
        // Served from start-up on, before the quorum's first round: none known yet, not node 0.
        raft_leader_id.set(-1);
        let metadata_applied_index = IntGauge::new(
            "skald_metadata_applied_index",
            "Raft index of the metadata this node serves",
        )?;
        let timed_out_broker_heartbeats_total = IntCounterVec::new(
            Opts::new(
                "skald_controller_timed_out_broker_heartbeats_total",
                "Brokers fenced by this node as the active controller for a missed session, by broker",
            ),
            &["broker_id"],
        )?;
        let early_fenced_brokers_total = IntCounterVec::new(
            Opts::new(
                "skald_controller_early_fenced_brokers_total",
                "Brokers fenced by this node as the active controller before their session ended, by broker and reason (process_gone, unresponsive)",
            ),
            &["broker_id", "reason"],
        )?;
        let silent_broker_probes_total = IntCounterVec::new(
            Opts::new(
                "skald_controller_silent_broker_probes_total",
                "Probes of silent brokers' listeners by this node as the active controller, by broker and outcome",
            ),
            &["broker_id", "outcome"],
        )?;
        let under_replicated_partitions = IntGauge::new(
            "skald_under_replicated_partitions",
            "Partitions led here whose ISR is smaller than their replica set",
        )?;
        let under_min_isr_partitions = IntGauge::new(
            "skald_under_min_isr_partitions",
            "Partitions led here whose ISR is smaller than min.insync.replicas",
        )?;
        let partitions = IntGauge::new("skald_partitions", "Partitions hosted by this broker")?;
        let leader_partitions =
            IntGauge::new("skald_leader_partitions", "Partitions this broker leads")?;
        let isr_shrinks_total = IntCounter::new(
            "skald_isr_shrinks_total",
            "ISR shrinks committed for partitions led here",
        )?;
        let isr_expands_total = IntCounter::new(
            "skald_isr_expands_total",
            "ISR expansions committed for partitions led here",
        )?;
        let fetch_sessions = crate::fetch_session::SessionMetrics {
            sessions: IntGauge::new("skald_fetch_sessions", "Fetch sessions (KIP-227) cached")?,
            partitions: IntGauge::new(
                "skald_fetch_session_partitions",
                "Partitions cached across all fetch sessions",
            )?,
            evictions: IntCounter::new(
                "skald_fetch_session_evictions_total",
                "Fetch sessions evicted to make room for new ones",
            )?,
        };
        let replica_lag_offsets = IntGaugeVec::new(
            Opts::new(
                "skald_replica_lag_offsets",
                "On the leader: offsets a follower is behind the leader's log end",
            ),
            &["topic", "partition", "replica"],
        )?;
        for metric in [
            &under_replicated_partitions,
            &under_min_isr_partitions,
            &partitions,
            &leader_partitions,
        ] {
            registry.register(Box::new(metric.clone()))?;
        }
        registry.register(Box::new(isr_shrinks_total.clone()))?;
        registry.register(Box::new(isr_expands_total.clone()))?;
        registry.register(Box::new(fetch_sessions.sessions.clone()))?;
        registry.register(Box::new(fetch_sessions.partitions.clone()))?;
        registry.register(Box::new(fetch_sessions.evictions.clone()))?;
        registry.register(Box::new(replica_lag_offsets.clone()))?;
        for metric in [
            &controller_active,
            &raft_term,
            &raft_leader_id,
            &metadata_applied_index,
        ] {
            registry.register(Box::new(metric.clone()))?;
        }
        registry.register(Box::new(timed_out_broker_heartbeats_total.clone()))?;
        registry.register(Box::new(early_fenced_brokers_total.clone()))?;
        registry.register(Box::new(silent_broker_probes_total.clone()))?;
        registry.register(Box::new(log_dir_offline.clone()))?;
        registry.register(Box::new(offline_partitions.clone()))?;
        registry.register(Box::new(requests_total.clone()))?;
        registry.register(Box::new(request_latency_seconds.clone()))?;
        registry.register(Box::new(request_queue_time_seconds.clone()))?;
        registry.register(Box::new(request_processing_time_seconds.clone()))?;
        registry.register(Box::new(request_errors_total.clone()))?;
        // CPU seconds, resident and virtual memory, open and maximum file descriptors, threads
        // and start time, read from /proc/self at scrape time (the standard `process_*` names).
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        registry.register(Box::new(bytes_in_total.clone()))?;
        registry.register(Box::new(bytes_out_total.clone()))?;
        registry.register(Box::new(reassignment_bytes_in_total.clone()))?;
        registry.register(Box::new(reassignment_bytes_out_total.clone()))?;
        registry.register(Box::new(records_in_total.clone()))?;
        registry.register(Box::new(log_end_offset.clone()))?;
        registry.register(Box::new(log_size_bytes.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        Ok(Metrics {
            registry,
            requests_total,
            request_latency_seconds,
            request_errors_total,
            request_queue_time_seconds,
            request_processing_time_seconds,
            bytes_in_total,
            bytes_out_total,
            reassignment_bytes_in_total,
            reassignment_bytes_out_total,
            records_in_total,
            log_end_offset,
            log_size_bytes,
            connections,
            log_dir_offline,
            offline_partitions,
            controller_active,
            raft_term,
            raft_leader_id,
            metadata_applied_index,
            timed_out_broker_heartbeats_total,
            early_fenced_brokers_total,
            silent_broker_probes_total,
            under_replicated_partitions,
            under_min_isr_partitions,
            partitions,
            leader_partitions,
            isr_shrinks_total,
            isr_expands_total,
            fetch_sessions,
            replica_lag_offsets,
        })
    }

    /// Records the log end offset and size of one partition.
    pub fn set_partition_log(
        &self,
        topic: &str,
        partition: i32,
        log_end_offset: i64,
        size_bytes: u64,
    ) {
        let partition = partition.to_string();
        self.log_end_offset
            .with_label_values(&[topic, &partition])
            .set(log_end_offset);
        self.log_size_bytes
            .with_label_values(&[topic, &partition])
            .set(i64::try_from(size_bytes).unwrap_or(i64::MAX));
    }

    /// Drops the per-partition series of a deleted partition.
    pub fn remove_partition(&self, topic: &str, partition: i32) {
        let partition = partition.to_string();
        let _ = self
            .log_end_offset
            .remove_label_values(&[topic, &partition]);
        let _ = self
            .log_size_bytes
            .remove_label_values(&[topic, &partition]);
    }

    /// Adds a collector whose values are computed at scrape time.
    pub fn register(
        &self,
        collector: Box<dyn prometheus::core::Collector>,
    ) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    /// The registry rendered in Prometheus' text format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!("cannot encode metrics: {err}");
        }
        out
    }
}

/// Why a node does not serve clients right now (the body of a 503 from `/ready`).
pub type NotReady = String;

/// What `GET /ready` answers: not ready while the node starts; once it serves, whatever the
/// probe the server installs says (a broker: not fenced); not ready again once shutdown begins,
/// so a load balancer stops sending clients before the listeners close.
#[derive(Default)]
pub struct Readiness {
    probe: OnceLock<Box<dyn Fn() -> Result<(), NotReady> + Send + Sync>>,
    stopping: AtomicBool,
}

impl Readiness {
    /// The node serves from now on, as long as `probe` says so (installed once).
    pub fn serving(&self, probe: impl Fn() -> Result<(), NotReady> + Send + Sync + 'static) {
        if self.probe.set(Box::new(probe)).is_err() {
            tracing::error!("readiness probe installed twice; keeping the first");
        }
    }

    /// Shutdown has begun: never ready again.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub fn check(&self) -> Result<(), NotReady> {
        if self.stopping.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        match self.probe.get() {
            Some(probe) => probe(),
            None => Err("starting".into()),
        }
    }
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("ready", &self.check())
            .finish()
    }
}

/// One answer of the HTTP endpoint.
#[derive(Debug, PartialEq, Eq)]
struct HttpAnswer {
    status: u16,
    /// Prometheus' exposition format rather than plain text.
    exposition: bool,
    body: Vec<u8>,
}

/// Routes one request by its path (a query string is ignored).
fn answer(url: &str, metrics: &Metrics, readiness: &Readiness) -> HttpAnswer {
    let path = url.split_once('?').map_or(url, |(path, _)| path);
    let text = |status, body: String| HttpAnswer {
        status,
        exposition: false,
        body: body.into_bytes(),
    };
    match path {
        "/metrics" => HttpAnswer {
            status: 200,
            exposition: true,
            body: metrics.render(),
        },
        // Alive: this thread answers. A node with an offline log dir or no quorum is still
        // alive (restarting it would not help); readiness says whether it serves.
        "/health" => text(200, "ok\n".into()),
        "/ready" => match readiness.check() {
            Ok(()) => text(200, "ready\n".into()),
            Err(reason) => text(503, format!("not ready: {reason}\n")),
        },
        _ => text(404, "not found: try /metrics, /health or /ready\n".into()),
    }
}

/// The HTTP endpoint serving `/metrics`, `/health` and `/ready` on its own thread (scrapes and
/// probes are rare and cheap).
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    pub local_addr: SocketAddr,
}

impl MetricsServer {
    pub fn start(
        address: SocketAddr,
        metrics: Metrics,
        readiness: Arc<Readiness>,
    ) -> std::io::Result<MetricsServer> {
        let server = tiny_http::Server::http(address).map_err(std::io::Error::other)?;
        let local_addr = server.server_addr().to_ip().unwrap_or(address);
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let header = |value: &[u8]| {
            tiny_http::Header::from_bytes(&b"Content-Type"[..], value)
                .map_err(|()| std::io::Error::other("invalid Content-Type header"))
        };
        let exposition = header(b"text/plain; version=0.0.4")?;
        let plain = header(b"text/plain; charset=utf-8")?;
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let answer = answer(request.url(), &metrics, &readiness);
                    let content_type = if answer.exposition {
                        exposition.clone()
                    } else {
                        plain.clone()
                    };
                    let response = tiny_http::Response::from_data(answer.body)
                        .with_status_code(answer.status)
                        .with_header(content_type);
                    if let Err(err) = request.respond(response) {
                        tracing::debug!("metrics response not sent: {err}");
                    }
                }
            })?;
        tracing::info!(%local_addr, "metrics endpoint listening on http://{local_addr}/metrics");
        Ok(MetricsServer {
            server,
            thread: Some(thread),
            local_addr,
        })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            // incoming_requests() ends once the server is unblocked.
            let _ = thread.join();
        }
    }
}

/// Each log dir's file system, read at scrape time (`statvfs`): the bytes an unprivileged
/// writer can still use and the file system's size, so an alert can see a disk filling before
/// appends fail and the dir goes offline.
pub struct LogDirCollector {
    dirs: Vec<std::path::PathBuf>,
    available: IntGaugeVec,
    capacity: IntGaugeVec,
}

impl LogDirCollector {
    pub fn new(dirs: Vec<std::path::PathBuf>) -> Result<LogDirCollector, prometheus::Error> {
        Ok(LogDirCollector {
            dirs,
            available: IntGaugeVec::new(
                Opts::new(
                    "skald_log_dir_available_bytes",
                    "Bytes still available to Skald on a log dir's file system",
                ),
                &["dir"],
            )?,
            capacity: IntGaugeVec::new(
                Opts::new(
                    "skald_log_dir_capacity_bytes",
                    "Size of a log dir's file system",
                ),
                &["dir"],
            )?,
        })
    }
}

impl prometheus::core::Collector for LogDirCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        [self.available.desc(), self.capacity.desc()].concat()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.available.reset();
        self.capacity.reset();
        for dir in &self.dirs {
            let label = dir.display().to_string();
            match rustix::fs::statvfs(dir) {
                Ok(stats) => {
                    let bytes = |blocks: u64| {
                        i64::try_from(blocks.saturating_mul(stats.f_frsize)).unwrap_or(i64::MAX)
                    };
                    self.available
                        .with_label_values(&[&label])
                        .set(bytes(stats.f_bavail));
                    self.capacity
                        .with_label_values(&[&label])
                        .set(bytes(stats.f_blocks));
                }
                // No sample rather than a made-up one; the offline-dir gauge tells the rest.
                Err(err) => tracing::debug!(dir = %label, "cannot statvfs a log dir: {err}"),
            }
        }
        [self.available.collect(), self.capacity.collect()].concat()
    }
}

/// Consumer-group metrics computed at scrape time from the coordinator's state: lag per committed
/// partition (high watermark − committed offset), members per group and rebalances per group.
/// Computing lag on scrape costs one pass over committed offsets instead of work on every append.
/// Each group is reported by its coordinator only, for every partition it has an offset for:
/// the high watermark of a partition led here is read directly, the others' come from their
/// leaders through [`LeaderLogEnds`].
pub struct GroupCollector {
    broker: std::sync::Weak<crate::broker::Broker>,
    log_ends: Arc<LeaderLogEnds>,
    lag: IntGaugeVec,
    members: IntGaugeVec,
    rebalances: IntCounterVec,
}

impl GroupCollector {
    pub fn new(
        broker: std::sync::Weak<crate::broker::Broker>,
        log_ends: Arc<LeaderLogEnds>,
    ) -> Result<GroupCollector, prometheus::Error> {
        Ok(GroupCollector {
            broker,
            log_ends,
            lag: IntGaugeVec::new(
                Opts::new(
                    "skald_consumer_group_lag",
                    "High watermark minus the group's committed offset, by partition \
                     (reported by the group's coordinator)",
                ),
                &["group", "topic", "partition"],
            )?,
            members: IntGaugeVec::new(
                Opts::new(
                    "skald_consumer_group_members",
                    "Members of a consumer group",
                ),
                &["group"],
            )?,
            rebalances: IntCounterVec::new(
                Opts::new(
                    "skald_consumer_group_rebalances_total",
                    "Rebalances started, by group",
                ),
                &["group"],
            )?,
        })
    }
}

impl prometheus::core::Collector for GroupCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        [self.lag.desc(), self.members.desc(), self.rebalances.desc()].concat()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.lag.reset();
        self.members.reset();
        self.rebalances.reset();
        if let Some(broker) = self.broker.upgrade() {
            for shared in broker.groups.all_groups() {
                let (id, members, rebalances, offsets) = {
                    let group = crate::group::lock(&shared);
                    let offsets: Vec<((String, i32), i64)> = group
                        .offsets
                        .iter()
                        .map(|(key, committed)| (key.clone(), committed.offset))
                        .collect();
                    (
                        group.id.clone(),
                        group.member_count(),
                        group.rebalances(),
                        offsets,
                    )
                };
                self.members
                    .with_label_values(&[&id])
                    .set(i64::try_from(members).unwrap_or(i64::MAX));
                self.rebalances.with_label_values(&[&id]).inc_by(rebalances);
                for ((topic, partition), committed) in offsets {
                    // What consumers can read (Kafka's lag is against the high watermark), as
                    // its leader knows it.
                    let led_here = broker
                        .replicas
                        .get(&topic, partition)
                        .filter(|p| p.replica_state().leader().is_some())
                        .map(|p| p.high_watermark());
                    let end = led_here.or_else(|| self.log_ends.get(&topic, partition));
                    if let Some(end) = end {
                        let label = partition.to_string();
                        self.lag
                            .with_label_values(&[&id, &topic, &label])
                            .set((end - committed).max(0));
                    }
                }
            }
        }
        [
            self.lag.collect(),
            self.members.collect(),
            self.rebalances.collect(),
        ]
        .concat()
    }
}

/// Producer metrics computed at scrape time from the hosted partitions' producer state (Kafka's
/// `ProducerIdCount`, and the open transactions holding back read_committed readers).
pub struct ProducerCollector {
    broker: std::sync::Weak<crate::broker::Broker>,
    producer_ids: IntGauge,
    open_transactions: IntGauge,
}

impl ProducerCollector {
    pub fn new(
        broker: std::sync::Weak<crate::broker::Broker>,
    ) -> Result<ProducerCollector, prometheus::Error> {
        Ok(ProducerCollector {
            broker,
            producer_ids: IntGauge::new(
                "skald_producer_ids",
                "Idempotent and transactional producers remembered by the partitions hosted here",
            )?,
            open_transactions: IntGauge::new(
                "skald_open_transactions",
                "Transactions open in the partitions hosted here (a read_committed reader \
                 stops at the oldest)",
            )?,
        })
    }
}

impl prometheus::core::Collector for ProducerCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        [self.producer_ids.desc(), self.open_transactions.desc()].concat()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let (mut producers, mut open) = (0usize, 0usize);
        if let Some(broker) = self.broker.upgrade() {
            for partition in broker.replicas.all() {
                if let Some((p, o)) = partition.with_log(|log| {
                    let state = log.producer_state();
                    (state.len(), state.open_transactions())
                }) {
                    producers += p;
                    open += o;
                }
            }
        }
        self.producer_ids
            .set(i64::try_from(producers).unwrap_or(i64::MAX));
        self.open_transactions
            .set(i64::try_from(open).unwrap_or(i64::MAX));
        [
            self.producer_ids.collect(),
            self.open_transactions.collect(),
        ]
        .concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(url: &str, readiness: &Readiness) -> (u16, String) {
        let metrics = Metrics::new().unwrap();
        let answer = answer(url, &metrics, readiness);
        (answer.status, String::from_utf8(answer.body).unwrap())
    }

    #[test]
    fn ready_only_between_serving_and_stopping_and_while_the_probe_agrees() {
        let readiness = Readiness::default();
        assert_eq!(ask("/health", &readiness), (200, "ok\n".into()));
        assert_eq!(
            ask("/ready", &readiness),
            (503, "not ready: starting\n".into())
        );
        let fenced = Arc::new(AtomicBool::new(false));
        let probe = Arc::clone(&fenced);
        readiness.serving(move || {
            if probe.load(Ordering::Acquire) {
                Err("fenced by the controller".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(ask("/ready", &readiness), (200, "ready\n".into()));
        assert_eq!(ask("/ready?verbose=1", &readiness), (200, "ready\n".into()));
        fenced.store(true, Ordering::Release);
        assert_eq!(
            ask("/ready", &readiness),
            (503, "not ready: fenced by the controller\n".into())
        );
        fenced.store(false, Ordering::Release);
        readiness.stopping();
        assert_eq!(
            ask("/ready", &readiness),
            (503, "not ready: shutting down\n".into())
        );
        assert_eq!(ask("/health", &readiness), (200, "ok\n".into()));
    }

    #[test]
    fn log_dir_space_is_read_at_scrape_time() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let metrics = Metrics::new().unwrap();
        metrics
            .register(Box::new(
                LogDirCollector::new(vec![dir.path().to_path_buf(), missing]).unwrap(),
            ))
            .unwrap();
        let body = String::from_utf8(metrics.render()).unwrap();
        let value = |name: &str| -> Vec<i64> {
            body.lines()
                .filter(|line| line.starts_with(name))
                .map(|line| {
                    let (series, value) = line.rsplit_once(' ').unwrap();
                    assert_eq!(
                        series,
                        format!("{name}{{dir=\"{}\"}}", dir.path().display())
                    );
                    value.parse().unwrap()
                })
                .collect()
        };
        let (available, capacity) = (
            value("skald_log_dir_available_bytes"),
            value("skald_log_dir_capacity_bytes"),
        );
        // One sample each (the missing dir has none), within the file system's size.
        assert_eq!((available.len(), capacity.len()), (1, 1), "{body}");
        assert!(0 <= available[0] && available[0] <= capacity[0] && capacity[0] > 0);
    }

    #[test]
    fn metrics_are_exposition_and_other_paths_are_not_found() {
        let readiness = Readiness::default();
        let metrics = Metrics::new().unwrap();
        metrics.raft_term.set(4);
        let scraped = answer("/metrics", &metrics, &readiness);
        assert_eq!((scraped.status, scraped.exposition), (200, true));
        let body = String::from_utf8(scraped.body).unwrap();
        assert!(
            body.lines().any(|line| line == "skald_raft_term 4"),
            "{body}"
        );
        assert_eq!(
            ask("/healthz", &readiness),
            (404, "not found: try /metrics, /health or /ready\n".into())
        );
    }
}
