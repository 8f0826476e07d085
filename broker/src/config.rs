//! The server configuration: Kafka's property names, from the embedded defaults, then a
//! server.properties file, then `SKALD_<KEY>` environment variables (for containers), then
//! `--override key=value` arguments.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use skald_controller::topic_config::{broker_property_def, broker_property_defs};
use skald_controller::ElectionConfig;

/// Server properties Skald reads, with their defaults. Topic-default properties (`log.retention.ms`,
/// ...) come from the topic config table, so both stay in step.
const SERVER_PROPERTIES: &[(&str, &str)] = &[
    ("node.id", "1"),
    ("process.roles", "broker,controller"),
    // KRaft's names. Empty voters on a combined node means a one-voter quorum of this node.
    ("controller.quorum.voters", ""),
    // Used only when a node's log dirs are new. Empty: derived from controller.quorum.voters
    // (so every node of a cluster agrees), or random for a single node.
    ("cluster.id", ""),
    ("controller.listener.names", "CONTROLLER"),
    // Raft timing: a tick is a tenth of the election timeout; heartbeats every second tick.
    // Kafka's default is 1000 ms; 500 keeps controller failover under a second on a LAN.
    ("controller.quorum.election.timeout.ms", "500"),
    ("broker.heartbeat.interval.ms", "2000"),
    ("broker.session.timeout.ms", "9000"),
    // Skald's: the active controller fences a broker at once, without waiting out its session,
    // when the broker's process is evidently gone (its heartbeat connection closed and its
    // listener refuses connections); see broker/src/controller_plane/departure.rs.
    ("broker.fast.fencing.enable", "true"),
    // Skald's: the probe of a broker silent for two heartbeat intervals also sends ApiVersions,
    // and a broker that does not answer within the timeout is fenced as unresponsive (unless the
    // controller itself stalled); see broker/src/controller_plane/unresponsive.rs.
    ("broker.unresponsive.fencing.enable", "true"),
    ("broker.unresponsive.probe.timeout.ms", "2000"),
    // Skald's entry-count analogue of Kafka's metadata.log.max.record.bytes.between.snapshots:
    // the quorum snapshots its image and drops the log before it every this many entries.
    ("metadata.log.max.entries.between.snapshots", "10000"),
    // How long a metadata operation waits for its records to commit before REQUEST_TIMED_OUT.
    ("controller.quorum.request.timeout.ms", "10000"),
    // Leader elections, Kafka's names and defaults (`unclean.leader.election.enable`, a topic
    // default, is in the topic config table). `leader.imbalance.check.interval.ms` is Skald's:
    // when set it wins over the seconds, so tests can run passes often.
    ("auto.leader.rebalance.enable", "true"),
    // Skald's: the active controller moves replicas when brokers join or leave (registered or
    // unregistered), as `skald cluster rebalance` would, once every broker is unfenced.
    ("auto.partition.rebalance.enable", "false"),
    ("leader.imbalance.check.interval.seconds", "300"),
    ("leader.imbalance.check.interval.ms", ""),
    ("listeners", "PLAINTEXT://127.0.0.1:9092"),
    ("advertised.listeners", ""),
    ("log.dirs", "./skald-data"),
    ("log.dir", ""),
    ("metadata.log.dir", ""),
    ("metrics.listener", "127.0.0.1:9644"),
    ("num.partitions", "1"),
    ("default.replication.factor", "1"),
    ("auto.create.topics.enable", "true"),
    ("socket.request.max.bytes", "104857600"),
    ("max.connections", "10000"),
    ("log.cleaner.enable", "true"),
    ("log.cleaner.backoff.ms", "15000"),
    ("fetch.max.bytes", "57671680"),
    ("max.incremental.fetch.session.cache.slots", "1000"),
    ("broker.rack", ""),
    ("log.retention.check.interval.ms", "300000"),
    // Skald's: sealed segments nothing read for this long give their maps back (checked every
    // tenth of it, at least every second and at most every minute). 0 = never.
    ("log.segment.unload.idle.ms", "300000"),
    // `log.retention.ms` (topic table) wins over `.minutes`, which wins over `.hours` (Kafka's rule);
    // see `ServerConfig::get`.
    ("log.retention.minutes", ""),
    ("log.retention.hours", "168"),
    // Group coordinator (read by `group::CoordinatorConfig`). Kafka's default replication factor
    // for `__consumer_offsets`; a lone node left at the default creates it with what it has (see
    // `api::find_coordinator::offsets_topic_replication_factor`).
    ("offsets.topic.num.partitions", "50"),
    ("offsets.topic.replication.factor", "3"),
    ("group.initial.rebalance.delay.ms", "3000"),
    ("group.min.session.timeout.ms", "6000"),
    ("group.max.session.timeout.ms", "1800000"),
    ("group.max.size", "2147483647"),
    // Kafka's defaults: offsets of a group Empty for 7 days expire, checked every 10 minutes.
    ("offsets.retention.minutes", "10080"),
    ("offsets.retention.check.interval.ms", "600000"),
    // Kafka's default: an offset commit waits this long for the offsets partition's ISR.
    ("offsets.commit.timeout.ms", "5000"),
    // Kafka's defaults: the flush.ms check never runs unless set; recovery points every minute.
    ("log.flush.scheduler.interval.ms", "9223372036854775807"),
    ("log.flush.offset.checkpoint.interval.ms", "60000"),
    // Replication (Kafka's names and defaults, except the fetch backoff: Kafka's 1000 ms would
    // stall a follower that long after every leader change, 200 keeps failover quick).
    ("replica.lag.time.max.ms", "30000"),
    // Skald's: a follower behind its leader that has sent no fetch for this long leaves the ISR
    // without waiting out replica.lag.time.max.ms, while the ISR keeps min.insync.replicas
    // (0 = off). A healthy follower fetches at least every replica.fetch.wait.max.ms.
    ("replica.unresponsive.time.max.ms", "3000"),
    ("replica.fetch.wait.max.ms", "500"),
    ("replica.fetch.min.bytes", "1"),
    ("replica.fetch.max.bytes", "1048576"),
    ("replica.fetch.response.max.bytes", "10485760"),
    ("replica.fetch.backoff.ms", "200"),
    ("replica.socket.timeout.ms", "30000"),
    ("replica.high.watermark.checkpoint.interval.ms", "5000"),
    // The replication throttles' rate measurement (Kafka's names and defaults): 11 samples of
    // 1 s, the rate being their total over the time they span.
    ("replication.quota.window.num", "11"),
    ("replication.quota.window.size.seconds", "1"),
    // Idempotent producers (Kafka's names and defaults): a producer silent this long is
    // forgotten by every partition, checked this often.
    ("producer.id.expiration.ms", "86400000"),
    ("producer.id.expiration.check.interval.ms", "600000"),
    // The transaction coordinator (Kafka's names and defaults). A lone node left at the default
    // creates `__transaction_state` with what it has, as `__consumer_offsets` (see
    // `api::find_coordinator::internal_topic_replication_factor`); the min ISR is capped at the
    // replication factor.
    ("transaction.state.log.num.partitions", "50"),
    ("transaction.state.log.replication.factor", "3"),
    ("transaction.state.log.min.isr", "2"),
    ("transaction.max.timeout.ms", "900000"),
    (
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "10000",
    ),
    ("transaction.partition.verification.enable", "true"),
    ("transaction.version", "2"),
    ("transactional.id.expiration.ms", "604800000"),
    (
        "transaction.remove.expired.transaction.cleanup.interval.ms",
        "3600000",
    ),
];

fn parse_roles(spec: &str) -> Result<Roles, String> {
    let mut roles = Roles {
        broker: false,
        controller: false,
    };
    for role in spec.split(',').map(str::trim) {
        match role {
            "broker" => roles.broker = true,
            "controller" => roles.controller = true,
            other => return Err(format!("process.roles: unknown role '{other}'")),
        }
    }
    if !roles.broker && !roles.controller {
        return Err("process.roles must name broker, controller or both".into());
    }
    Ok(roles)
}

/// A listener: `NAME://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Listener {
    fn parse(spec: &str) -> Result<Listener, String> {
        let (name, address) = spec
            .split_once("://")
            .ok_or_else(|| format!("listener '{spec}' is not of the form NAME://host:port"))?;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("listener '{spec}' has no port"))?;
        let port = port
            .parse()
            .map_err(|_| format!("listener '{spec}' has an invalid port"))?;
        Ok(Listener {
            name: name.to_string(),
            host: host.trim_matches(['[', ']']).to_string(),
            port,
        })
    }

    /// The address to bind: an empty host means every interface, as in Kafka.
    pub fn bind_address(&self) -> String {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            &self.host
        };
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Which parts of Skald a node runs (`process.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

/// A voter of the controller quorum: `id@host:port` in `controller.quorum.voters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub node_id: i32,
    pub host: String,
    pub port: u16,
}

impl Voter {
    fn parse(spec: &str) -> Result<Voter, String> {
        let bad =
            || format!("controller.quorum.voters entry '{spec}' is not of the form id@host:port");
        let (id, address) = spec.split_once('@').ok_or_else(bad)?;
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        Ok(Voter {
            node_id: id.trim().parse().map_err(|_| bad())?,
            host: host.trim_matches(['[', ']']).to_string(),
            port: port.parse().map_err(|_| bad())?,
        })
    }

    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A validated server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Every property that was set explicitly (file or override).
    explicit: BTreeMap<String, String>,
    pub node_id: i32,
    pub roles: Roles,
    /// The controller quorum; a single combined node with none configured is a quorum of itself.
    pub voters: Vec<Voter>,
    /// `controller.listener.names`: listeners that carry controller traffic, never clients'.
    pub controller_listener_names: Vec<String>,
    pub election_timeout_ms: u64,
    pub broker_heartbeat_interval_ms: u64,
    pub broker_session_timeout_ms: u64,
    /// `broker.fast.fencing.enable` (Skald's): fence a broker whose process is evidently gone
    /// without waiting out its session.
    pub broker_fast_fencing_enable: bool,
    /// `broker.unresponsive.fencing.enable` (Skald's): fence a broker silent for two heartbeat
    /// intervals that does not answer ApiVersions within `broker.unresponsive.probe.timeout.ms`.
    pub broker_unresponsive_fencing_enable: bool,
    pub broker_unresponsive_probe_timeout_ms: u64,
    pub controller_request_timeout_ms: u64,
    /// `metadata.log.max.entries.between.snapshots`.
    pub snapshot_interval_entries: u64,
    /// `unclean.leader.election.enable` (the default of topics that do not set it),
    /// `auto.leader.rebalance.enable` and `leader.imbalance.check.interval.seconds` / `.ms`.
    pub elections: ElectionConfig,
    pub listeners: Vec<Listener>,
    pub advertised_listeners: Vec<Listener>,
    pub log_dirs: Vec<PathBuf>,
    pub metadata_log_dir: PathBuf,
    pub metrics_listener: SocketAddr,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics_enable: bool,
    pub socket_request_max_bytes: usize,
    pub max_connections: usize,
    /// `fetch.max.bytes`: the most record bytes one Fetch response carries, whatever it asks.
    pub fetch_max_bytes: usize,
    /// `max.incremental.fetch.session.cache.slots`: the most fetch sessions (KIP-227) cached.
    pub fetch_session_cache_slots: usize,
    pub rack: Option<String>,
    /// `log.retention.check.interval.ms`: how often retention runs over every partition.
    pub log_retention_check_interval_ms: u64,
    /// `log.segment.unload.idle.ms` (Skald's): 0 = never unload idle sealed segments.
    pub log_segment_unload_idle_ms: u64,
    /// `auto.partition.rebalance.enable` (Skald's).
    pub auto_partition_rebalance_enable: bool,
    /// `log.cleaner.enable`: whether compacted topics are cleaned.
    pub log_cleaner_enable: bool,
    /// `log.cleaner.backoff.ms`: the pause between cleaner passes.
    pub log_cleaner_backoff_ms: u64,
    /// `log.flush.scheduler.interval.ms`: how often every partition's `flush.ms` is checked
    /// (Kafka's default, Long.MAX, means never).
    pub log_flush_scheduler_interval_ms: u64,
    /// `log.flush.offset.checkpoint.interval.ms`: how often each log dir's
    /// `recovery-point-offset-checkpoint` is written.
    pub log_flush_offset_checkpoint_interval_ms: u64,
    /// The `replica.*` settings of followers and leaders.
    pub replication: ReplicationConfig,
    /// `producer.id.expiration.ms`: how long a partition remembers a silent idempotent producer.
    pub producer_id_expiration_ms: i64,
    /// `producer.id.expiration.check.interval.ms`.
    pub producer_id_expiration_check_interval_ms: u64,
}

/// How partitions are replicated (Kafka's `replica.*` properties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub lag_time_max_ms: u64,
    /// `replica.unresponsive.time.max.ms` (Skald's; 0 = off): a follower behind its leader and
    /// silent this long leaves the ISR early, while the ISR keeps `min.insync.replicas`.
    pub unresponsive_time_max_ms: u64,
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch may wait at the leader.
    pub fetch_wait_max_ms: i32,
    /// `replica.fetch.min.bytes`.
    pub fetch_min_bytes: i32,
    /// `replica.fetch.max.bytes`: per partition.
    pub fetch_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`: per fetch.
    pub fetch_response_max_bytes: i32,
    /// `replica.fetch.backoff.ms`: the pause after a failed fetch.
    pub fetch_backoff_ms: u64,
    /// `replica.socket.timeout.ms`: how long a follower waits for a fetch response.
    pub socket_timeout_ms: u64,
    /// `replica.high.watermark.checkpoint.interval.ms`.
    pub high_watermark_checkpoint_interval_ms: u64,
    /// `replication.quota.window.num`: samples the throttles' rate is measured over.
    pub quota_window_num: usize,
    /// `replication.quota.window.size.seconds`: the time each sample spans.
    pub quota_window_size_seconds: u64,
}

impl ServerConfig {
    /// Loads the embedded defaults, then `file`, then `overrides` (`key=value` each); the
    /// environment is not read (see [`ServerConfig::load_with_env`]).
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<ServerConfig, String> {
        Self::load_with_env(file, std::iter::empty(), overrides)
    }

    /// Loads the embedded defaults, then `file`, then the `SKALD_<KEY>` variables of `env`
    /// (see [`env_var_name`]), then `overrides`. Only variables naming a known property are
    /// read, so the tool's `SKALD_BROKERS` and anything else in the environment is left alone.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (OsString, OsString)>,
        overrides: &[String],
    ) -> Result<ServerConfig, String> {
        let mut explicit = BTreeMap::new();
        if let Some(path) = file {
            let reader = std::fs::File::open(path)
                .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
            let properties = java_properties::read(std::io::BufReader::new(reader))
                .map_err(|err| format!("cannot parse {}: {err}", path.display()))?;
            explicit.extend(properties);
        }
        explicit.extend(properties_from_env(env)?);
        for entry in overrides {
            let (key, value) = entry
                .split_once('=')
                .ok_or_else(|| format!("override '{entry}' is not of the form key=value"))?;
            explicit.insert(key.trim().to_string(), value.trim().to_string());
        }
        Self::from_properties(explicit)
    }

    /// Builds a configuration from explicitly set properties (defaults fill the rest).
    pub fn from_properties(explicit: BTreeMap<String, String>) -> Result<ServerConfig, String> {
        for key in explicit.keys() {
            if !is_known(key) {
                tracing::warn!("The configuration '{key}' was supplied but isn't a known config.");
            }
        }
        for (property, def) in broker_property_defs() {
            if let Some(value) = explicit.get(property) {
                skald_controller::topic_config::validate_value(def, value)
                    .map_err(|reason| format!("invalid value {value} for {property}: {reason}"))?;
            }
        }
        let mut config = ServerConfig {
            explicit,
            node_id: 0,
            roles: Roles {
                broker: true,
                controller: true,
            },
            voters: Vec::new(),
            controller_listener_names: Vec::new(),
            election_timeout_ms: 0,
            broker_heartbeat_interval_ms: 0,
            broker_session_timeout_ms: 0,
            broker_fast_fencing_enable: true,
            broker_unresponsive_fencing_enable: true,
            broker_unresponsive_probe_timeout_ms: 0,
            controller_request_timeout_ms: 0,
            snapshot_interval_entries: 0,
            elections: ElectionConfig::default(),
            listeners: Vec::new(),
            advertised_listeners: Vec::new(),
            log_dirs: Vec::new(),
            metadata_log_dir: PathBuf::new(),
            metrics_listener: "127.0.0.1:9644"
                .parse()
                .map_err(|_| "bad default".to_string())?,
            num_partitions: 1,
            default_replication_factor: 1,
            auto_create_topics_enable: true,
            socket_request_max_bytes: 0,
            max_connections: 0,
            fetch_max_bytes: 0,
            fetch_session_cache_slots: 0,
            rack: None,
            log_retention_check_interval_ms: 0,
            log_segment_unload_idle_ms: 0,
            auto_partition_rebalance_enable: false,
            log_cleaner_enable: true,
            log_cleaner_backoff_ms: 0,
            log_flush_scheduler_interval_ms: 0,
            log_flush_offset_checkpoint_interval_ms: 0,
            replication: ReplicationConfig {
                lag_time_max_ms: 0,
                unresponsive_time_max_ms: 0,
                fetch_wait_max_ms: 0,
                fetch_min_bytes: 0,
                fetch_max_bytes: 0,
                fetch_response_max_bytes: 0,
                fetch_backoff_ms: 0,
                socket_timeout_ms: 0,
                high_watermark_checkpoint_interval_ms: 0,
                quota_window_num: 0,
                quota_window_size_seconds: 0,
            },
            producer_id_expiration_ms: 0,
            producer_id_expiration_check_interval_ms: 0,
        };
        config.node_id = config.parse("node.id")?;
        config.roles = parse_roles(&config.get("process.roles"))?;
        config.controller_listener_names = config
            .get("controller.listener.names")
            .split(',')
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .collect();
        config.listeners = parse_listeners(&config.get("listeners"))?;
        config.voters = config
            .get("controller.quorum.voters")
            .split(',')
            .map(str::trim)
            .filter(|spec| !spec.is_empty())
            .map(Voter::parse)
            .collect::<Result<_, _>>()?;
        config.validate_quorum()?;
        let advertised = config.get("advertised.listeners");
        config.advertised_listeners = if advertised.is_empty() {
            config.listeners.clone()
        } else {
            parse_listeners(&advertised)?
        };
        // Clients are never told about controller listeners (KRaft).
        let names = config.controller_listener_names.clone();
        config
            .advertised_listeners
            .retain(|listener| !names.contains(&listener.name));
        if config.roles.broker && config.client_listeners().next().is_none() {
            return Err("listeners must name at least one listener for clients".into());
        }
        config.election_timeout_ms = config
            .parse::<u64>("controller.quorum.election.timeout.ms")?
            .max(50);
        config.broker_heartbeat_interval_ms =
            config.parse::<u64>("broker.heartbeat.interval.ms")?.max(10);
        config.broker_session_timeout_ms =
            config.parse::<u64>("broker.session.timeout.ms")?.max(100);
        config.broker_fast_fencing_enable = config.parse("broker.fast.fencing.enable")?;
        config.broker_unresponsive_fencing_enable =
            config.parse("broker.unresponsive.fencing.enable")?;
        // Under 100 ms an answer delayed by an ordinary scheduling hiccup would count as none.
        config.broker_unresponsive_probe_timeout_ms = config
            .parse::<u64>("broker.unresponsive.probe.timeout.ms")?
            .max(100);
        config.snapshot_interval_entries = config
            .parse::<u64>("metadata.log.max.entries.between.snapshots")?
            .max(1);
        config.controller_request_timeout_ms = config
            .parse::<u64>("controller.quorum.request.timeout.ms")?
            .max(100);
        config.elections = config.parse_elections()?;
        let log_dir = config.get("log.dir");
        let log_dirs = match config.explicit.get("log.dirs") {
            None if !log_dir.is_empty() => log_dir,
            _ => config.get("log.dirs"),
        };
        config.log_dirs = log_dirs
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .collect();
        let first_dir = config
            .log_dirs
            .first()
            .cloned()
            .ok_or("log.dirs must name at least one directory")?;
        let metadata_dir = config.get("metadata.log.dir");
        config.metadata_log_dir = if metadata_dir.is_empty() {
            first_dir
        } else {
            PathBuf::from(metadata_dir)
        };
        config.metrics_listener = config.parse("metrics.listener")?;
        config.num_partitions = config.parse("num.partitions")?;
        if config.num_partitions < 1 {
            return Err("num.partitions must be at least 1".into());
        }
        config.default_replication_factor = config.parse("default.replication.factor")?;
        config.auto_create_topics_enable = config.parse("auto.create.topics.enable")?;
        config.socket_request_max_bytes = config.parse("socket.request.max.bytes")?;
        config.max_connections = config.parse("max.connections")?;
        config.fetch_max_bytes = config.parse("fetch.max.bytes")?;
        config.fetch_session_cache_slots =
            config.parse("max.incremental.fetch.session.cache.slots")?;
        if let Some(wildcard) = config
            .advertised_listeners
            .iter()
            .find(|l| l.host == "0.0.0.0" || l.host == "::")
        {
            return Err(format!(
                "advertised.listeners cannot use the meta-address {}: clients could not connect to it",
                wildcard.host
            ));
        }
        config.log_retention_check_interval_ms = config.parse("log.retention.check.interval.ms")?;
        config.log_segment_unload_idle_ms = config.parse("log.segment.unload.idle.ms")?;
        config.auto_partition_rebalance_enable = config.parse("auto.partition.rebalance.enable")?;
        config.producer_id_expiration_ms = config.parse("producer.id.expiration.ms")?;
        config.producer_id_expiration_check_interval_ms =
            config.parse("producer.id.expiration.check.interval.ms")?;
        if config.producer_id_expiration_ms < 1
            || config.producer_id_expiration_check_interval_ms < 1
        {
            return Err(
                "producer.id.expiration.ms and producer.id.expiration.check.interval.ms \
                        must be at least 1"
                    .into(),
            );
        }
        config.log_cleaner_enable = config.parse("log.cleaner.enable")?;
        config.log_cleaner_backoff_ms = config.parse::<u64>("log.cleaner.backoff.ms")?.max(1);
        if config.log_retention_check_interval_ms < 1 {
            return Err("log.retention.check.interval.ms must be at least 1".into());
        }
        for key in [
            "log.flush.scheduler.interval.ms",
            "log.flush.offset.checkpoint.interval.ms",
        ] {
            let ms: u64 = config.parse(key)?;
            if ms < 1 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        config.log_flush_scheduler_interval_ms = config.parse("log.flush.scheduler.interval.ms")?;
        config.log_flush_offset_checkpoint_interval_ms =
            config.parse("log.flush.offset.checkpoint.interval.ms")?;
        for key in ["log.retention.minutes", "log.retention.hours"] {
            if config.is_explicit(key) {
                let _: i32 = config.parse(key)?;
            }
        }
        let rack = config.get("broker.rack");
        config.rack = (!rack.is_empty()).then_some(rack);
        config.replication = ReplicationConfig {
            lag_time_max_ms: config.parse::<u64>("replica.lag.time.max.ms")?.max(1),
            unresponsive_time_max_ms: config.parse::<u64>("replica.unresponsive.time.max.ms")?,
            fetch_wait_max_ms: config.parse::<i32>("replica.fetch.wait.max.ms")?.max(0),
            fetch_min_bytes: config.parse::<i32>("replica.fetch.min.bytes")?.max(1),
            fetch_max_bytes: config.parse::<i32>("replica.fetch.max.bytes")?.max(1),
            fetch_response_max_bytes: config
                .parse::<i32>("replica.fetch.response.max.bytes")?
                .max(1),
            fetch_backoff_ms: config.parse::<u64>("replica.fetch.backoff.ms")?,
            socket_timeout_ms: config.parse::<u64>("replica.socket.timeout.ms")?.max(1),
            high_watermark_checkpoint_interval_ms: config
                .parse::<u64>("replica.high.watermark.checkpoint.interval.ms")?
                .max(1),
            // Kafka's lower bounds; the upper ones only keep the sample list small.
            quota_window_num: config
                .parse::<usize>("replication.quota.window.num")?
                .clamp(1, 1_000),
            quota_window_size_seconds: config
                .parse::<u64>("replication.quota.window.size.seconds")?
                .clamp(1, 3_600),
        };
        Ok(config)
    }

    /// Listeners that serve clients (every listener that is not a controller listener).
    pub fn client_listeners(&self) -> impl Iterator<Item = &Listener> {
        self.listeners
            .iter()
            .filter(|listener| !self.controller_listener_names.contains(&listener.name))
    }

    /// The listener controller traffic arrives on, if this node has one.
    pub fn controller_listener(&self) -> Option<&Listener> {
        self.listeners
            .iter()
            .find(|listener| self.controller_listener_names.contains(&listener.name))
    }

    /// The node ids of the quorum's voters: this node alone when none are configured.
    pub fn voter_ids(&self) -> Vec<i32> {
        if self.voters.is_empty() {
            vec![self.node_id]
        } else {
            self.voters.iter().map(|voter| voter.node_id).collect()
        }
    }

    /// Whether this node votes in the controller quorum.
    pub fn is_voter(&self) -> bool {
        self.roles.controller && self.voter_ids().contains(&self.node_id)
    }

    fn validate_quorum(&self) -> Result<(), String> {
        let mut ids: Vec<i32> = self.voters.iter().map(|voter| voter.node_id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err("controller.quorum.voters names a node id twice".into());
        }
        if self.voters.is_empty() {
            if !(self.roles.broker && self.roles.controller) {
                return Err(
                    "controller.quorum.voters must be set unless process.roles=broker,controller runs a single-node quorum"
                        .into(),
                );
            }
            return Ok(());
        }
        if self.roles.controller {
            if !ids.contains(&self.node_id) {
                return Err(format!(
                    "node.id {} runs a controller but is not in controller.quorum.voters",
                    self.node_id
                ));
            }
            if self.controller_listener().is_none() {
                return Err(format!(
                    "a controller needs a listener named in controller.listener.names ({}) in listeners",
                    self.controller_listener_names.join(",")
                ));
            }
        }
        Ok(())
    }

    /// The election settings: Kafka's booleans (true or false in any case) and the rebalance
    /// interval, in ms when `leader.imbalance.check.interval.ms` is set, else in seconds.
    fn parse_elections(&self) -> Result<ElectionConfig, String> {
        let boolean = |key: &str| {
            let value = self.get(key);
            match value.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(format!("invalid value '{value}' for {key}")),
            }
        };
        let key = if self.get("leader.imbalance.check.interval.ms").is_empty() {
            "leader.imbalance.check.interval.seconds"
        } else {
            "leader.imbalance.check.interval.ms"
        };
        let interval: u64 = self.parse(key)?;
        if interval < 1 {
            return Err(format!("{key} must be at least 1"));
        }
        let interval_ms = if key.ends_with(".seconds") {
            interval.saturating_mul(1000)
        } else {
            interval
        };
        Ok(ElectionConfig {
            unclean_leader_election_enable: boolean("unclean.leader.election.enable")?,
            auto_leader_rebalance_enable: boolean("auto.leader.rebalance.enable")?,
            leader_imbalance_check_interval_ms: interval_ms,
        })
    }

    /// A property's value: explicit, else its default ("" for an unknown property).
    ///
    /// `log.retention.ms` left unset is derived as Kafka does: from `log.retention.minutes` if set,
    /// else from `log.retention.hours` (168 by default); a negative value means unlimited (-1).
    pub fn get(&self, key: &str) -> String {
        if key == "log.retention.ms" && !self.is_explicit(key) {
            let scaled = |key: &str, unit_ms: i64| {
                let value: i64 = self.explicit.get(key)?.trim().parse().ok()?;
                Some(if value < 0 {
                    -1
                } else {
                    value.saturating_mul(unit_ms)
                })
            };
            if let Some(ms) = scaled("log.retention.minutes", 60_000)
                .or_else(|| scaled("log.retention.hours", 3_600_000))
            {
                return ms.to_string();
            }
        }
        self.explicit
            .get(key)
            .cloned()
            .or_else(|| default_of(key).map(str::to_string))
            .unwrap_or_default()
    }

    /// Whether the property was set explicitly rather than left at its default.
    pub fn is_explicit(&self, key: &str) -> bool {
        self.explicit.contains_key(key)
    }

    /// Every property Skald knows (server and topic defaults) with its effective value.
    pub fn known_properties(&self) -> Vec<(&'static str, String)> {
        known_keys()
            .into_iter()
            .map(|key| (key, self.get(key)))
            .collect()
    }

    fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<T, String> {
        let value = self.get(key);
        value
            .trim()
            .parse()
            .map_err(|_| format!("invalid value '{value}' for {key}"))
    }
}

fn default_of(key: &str) -> Option<&'static str> {
    SERVER_PROPERTIES
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, default)| *default)
        .or_else(|| broker_property_def(key).map(|def| def.default))
}

fn is_known(key: &str) -> bool {
    default_of(key).is_some()
}

/// Every property Skald knows, server and topic defaults, sorted and without repeats.
fn known_keys() -> Vec<&'static str> {
    let server = SERVER_PROPERTIES.iter().map(|(key, _)| *key);
    let topic_defaults = broker_property_defs().map(|(property, _)| property);
    let mut keys: Vec<&'static str> = server.chain(topic_defaults).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The environment variable that sets `key`: `SKALD_` and the key uppercased with dots as
/// underscores (`node.id` → `SKALD_NODE_ID`), the convention of Kafka's container images with
/// Skald's prefix. No property name contains an underscore, so the mapping is one to one.
pub fn env_var_name(key: &str) -> String {
    format!("SKALD_{}", key.to_ascii_uppercase().replace('.', "_"))
}

/// The known properties `env` sets. A variable naming no property is not Skald's server
/// configuration (the tool reads `SKALD_BROKERS`, tests `SKALD_TEST_LOG`) and is ignored.
fn properties_from_env(
    env: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<BTreeMap<String, String>, String> {
    let by_name: BTreeMap<String, &'static str> = known_keys()
        .into_iter()
        .map(|key| (env_var_name(key), key))
        .collect();
    let mut properties = BTreeMap::new();
    for (name, value) in env {
        let Some(key) = name.to_str().and_then(|name| by_name.get(name)) else {
            continue;
        };
        let value = value.into_string().map_err(|_| {
            format!(
                "the environment variable {} is not valid UTF-8",
                env_var_name(key)
            )
        })?;
        properties.insert(key.to_string(), value.trim().to_string());
    }
    if !properties.is_empty() {
        // Names only: which settings a container's environment supplied, for whoever wonders
        // where a value came from.
        let keys: Vec<&str> = properties.keys().map(String::as_str).collect();
        tracing::info!(
            "properties from SKALD_* environment variables: {}",
            keys.join(", ")
        );
    }
    Ok(properties)
}

fn parse_listeners(spec: &str) -> Result<Vec<Listener>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Listener::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A topic config's value with no dynamic broker configs: the static properties alone.
    fn static_topic_config(
        config: &ServerConfig,
        overrides: &BTreeMap<String, String>,
        name: &str,
    ) -> Option<String> {
        let image = skald_controller::MetadataImage::default();
        crate::dynamic_config::BrokerDefaults::new(config, &image).topic_config(overrides, name)
    }

    #[test]
    fn embedded_defaults() {
        let config = ServerConfig::load(None, &[]).unwrap();
        assert_eq!(config.node_id, 1);
        assert_eq!(
            config.listeners,
            vec![Listener {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9092
            }]
        );
        assert_eq!(config.advertised_listeners, config.listeners);
        assert_eq!(config.log_dirs, vec![PathBuf::from("./skald-data")]);
        assert_eq!(config.metadata_log_dir, PathBuf::from("./skald-data"));
        assert_eq!(config.metrics_listener, "127.0.0.1:9644".parse().unwrap());
        assert_eq!(config.socket_request_max_bytes, 104_857_600);
        assert_eq!(config.get("log.segment.bytes"), "1073741824");
        assert!(config.auto_create_topics_enable);
        assert_eq!(config.log_retention_check_interval_ms, 300_000);
        assert_eq!(config.get("log.retention.ms"), "604800000");
        assert_eq!(config.log_flush_scheduler_interval_ms, i64::MAX as u64);
        assert_eq!(config.log_flush_offset_checkpoint_interval_ms, 60_000);
        assert_eq!(
            static_topic_config(&config, &BTreeMap::new(), "flush.messages"),
            Some(i64::MAX.to_string())
        );
        assert!(
            ServerConfig::load(None, &["log.flush.scheduler.interval.ms=0".to_string()]).is_err()
        );
    }

    #[test]
    fn retention_ms_wins_over_minutes_over_hours() {
        let load = |overrides: &[&str]| {
            let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
            ServerConfig::load(None, &overrides).unwrap()
        };
        let retention = |config: &ServerConfig| {
            static_topic_config(config, &BTreeMap::new(), "retention.ms").unwrap()
        };
        assert_eq!(retention(&load(&["log.retention.hours=2"])), "7200000");
        assert_eq!(
            retention(&load(&["log.retention.hours=2", "log.retention.minutes=3"])),
            "180000"
        );
        assert_eq!(
            retention(&load(&[
                "log.retention.hours=2",
                "log.retention.minutes=3",
                "log.retention.ms=5000"
            ])),
            "5000"
        );
        assert_eq!(retention(&load(&["log.retention.hours=-1"])), "-1");
        let topic = BTreeMap::from([("retention.ms".to_string(), "42".to_string())]);
        assert_eq!(
            static_topic_config(&load(&["log.retention.minutes=3"]), &topic, "retention.ms"),
            Some("42".to_string())
        );
        assert!(ServerConfig::load(None, &["log.retention.hours=ever".to_string()]).is_err());
        assert!(
            ServerConfig::load(None, &["log.retention.check.interval.ms=0".to_string()]).is_err()
        );
    }

    #[test]
    fn file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.properties");
        std::fs::write(
            &path,
            "# comment\nnode.id=3\nlog.dirs=/a,/b\nnum.partitions=6\nlog.segment.bytes=1048576\n",
        )
        .unwrap();
        let overrides = vec![
            "listeners=PLAINTEXT://127.0.0.1:19092".to_string(),
            "num.partitions=2".to_string(),
        ];
        let config = ServerConfig::load(Some(&path), &overrides).unwrap();
        assert_eq!(config.node_id, 3);
        assert_eq!(
            config.log_dirs,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(config.num_partitions, 2);
        assert_eq!(config.listeners[0].port, 19092);
        assert_eq!(config.get("log.segment.bytes"), "1048576");
        assert!(config.is_explicit("log.segment.bytes"));
        assert!(!config.is_explicit("log.retention.ms"));
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        vars.iter()
            .map(|(name, value)| (OsString::from(name), OsString::from(value)))
            .collect()
    }

    #[test]
    fn environment_variable_names_map_dots_to_underscores_uppercased() {
        assert_eq!(env_var_name("node.id"), "SKALD_NODE_ID");
        assert_eq!(env_var_name("process.roles"), "SKALD_PROCESS_ROLES");
        assert_eq!(
            env_var_name("controller.quorum.voters"),
            "SKALD_CONTROLLER_QUORUM_VOTERS"
        );
        assert_eq!(env_var_name("log.dirs"), "SKALD_LOG_DIRS");
        assert_eq!(env_var_name("metrics.listener"), "SKALD_METRICS_LISTENER");
        // One to one: no two known properties share a variable, and none is the tool's.
        let names: std::collections::BTreeSet<String> =
            known_keys().into_iter().map(env_var_name).collect();
        assert_eq!(names.len(), known_keys().len());
        assert!(!names.contains("SKALD_BROKERS"));
    }

    #[test]
    fn environment_sets_known_properties_between_file_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.properties");
        std::fs::write(
            &path,
            "node.id=3\nnum.partitions=6\nlog.segment.bytes=1048576\n",
        )
        .unwrap();
        let config = ServerConfig::load_with_env(
            Some(&path),
            env(&[
                ("SKALD_NODE_ID", "7"),
                ("SKALD_PROCESS_ROLES", "broker,controller"),
                ("SKALD_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093"),
                (
                    "SKALD_ADVERTISED_LISTENERS",
                    "PLAINTEXT://skald-0.skald:9092",
                ),
                ("SKALD_CONTROLLER_QUORUM_VOTERS", "7@skald-0.skald:9093"),
                ("SKALD_LOG_DIRS", " /var/lib/skald/data "),
                ("SKALD_METRICS_LISTENER", "0.0.0.0:9644"),
                ("SKALD_NUM_PARTITIONS", "4"),
                ("SKALD_LOG_RETENTION_MS", "5000"),
                // Not properties: the tool's bootstrap list, a log filter, a typo.
                ("SKALD_BROKERS", "10.0.0.1:9092"),
                ("RUST_LOG", "debug"),
                ("SKALD_NODEID", "9"),
            ]),
            &["num.partitions=2".to_string()],
        )
        .unwrap();
        assert_eq!(config.node_id, 7, "the environment wins over the file");
        assert_eq!(
            config.num_partitions, 2,
            "an override wins over the environment"
        );
        assert_eq!(
            config.get("log.segment.bytes"),
            "1048576",
            "the file, untouched"
        );
        assert_eq!(config.get("log.retention.ms"), "5000", "a topic default");
        assert_eq!(
            config
                .listeners
                .iter()
                .map(|l| (l.name.as_str(), l.bind_address()))
                .collect::<Vec<_>>(),
            vec![
                ("PLAINTEXT", "0.0.0.0:9092".to_string()),
                ("CONTROLLER", "0.0.0.0:9093".to_string())
            ]
        );
        assert_eq!(
            config.advertised_listeners,
            vec![Listener {
                name: "PLAINTEXT".into(),
                host: "skald-0.skald".into(),
                port: 9092
            }]
        );
        assert_eq!(config.voter_ids(), vec![7]);
        assert_eq!(config.log_dirs, vec![PathBuf::from("/var/lib/skald/data")]);
        assert_eq!(config.metrics_listener, "0.0.0.0:9644".parse().unwrap());
        assert!(!config.is_explicit("brokers"));
        let explicit: Vec<&str> = config.explicit.keys().map(String::as_str).collect();
        assert_eq!(
            explicit,
            vec![
                "advertised.listeners",
                "controller.quorum.voters",
                "listeners",
                "log.dirs",
                "log.retention.ms",
                "log.segment.bytes",
                "metrics.listener",
                "node.id",
                "num.partitions",
                "process.roles",
            ]
        );
    }

    #[test]
    fn environment_values_are_validated_like_any_other() {
        let load = |vars: &[(&str, &str)]| ServerConfig::load_with_env(None, env(vars), &[]);
        assert_eq!(
            load(&[("SKALD_NODE_ID", "one")]).unwrap_err(),
            "invalid value 'one' for node.id"
        );
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let not_utf8 = vec![(
                OsString::from("SKALD_LOG_DIRS"),
                OsString::from_vec(vec![0x2f, 0xff]),
            )];
            assert_eq!(
                ServerConfig::load_with_env(None, not_utf8, &[]).unwrap_err(),
                "the environment variable SKALD_LOG_DIRS is not valid UTF-8"
            );
        }
        // A non-UTF-8 variable that is not a property is none of the server's business.
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let foreign = vec![(
                OsString::from_vec(vec![0x53, 0xff]),
                OsString::from_vec(vec![0xff]),
            )];
            assert_eq!(
                ServerConfig::load_with_env(None, foreign, &[]).map(|c| c.node_id),
                Ok(1)
            );
        }
    }

    #[test]
    fn election_settings_default_to_kafkas_and_the_ms_interval_wins() {
        let load = |overrides: &[&str]| {
            let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
            ServerConfig::load(None, &overrides).map(|config| config.elections)
        };
        assert_eq!(
            load(&[]),
            Ok(ElectionConfig {
                unclean_leader_election_enable: false,
                auto_leader_rebalance_enable: true,
                leader_imbalance_check_interval_ms: 300_000,
            })
        );
        assert_eq!(
            load(&[
                "unclean.leader.election.enable=TRUE",
                "auto.leader.rebalance.enable=false",
                "leader.imbalance.check.interval.seconds=5",
            ]),
            Ok(ElectionConfig {
                unclean_leader_election_enable: true,
                auto_leader_rebalance_enable: false,
                leader_imbalance_check_interval_ms: 5_000,
            })
        );
        assert_eq!(
            load(&[
                "leader.imbalance.check.interval.seconds=5",
                "leader.imbalance.check.interval.ms=250",
            ])
            .map(|elections| elections.leader_imbalance_check_interval_ms),
            Ok(250)
        );
        assert_eq!(
            load(&["auto.leader.rebalance.enable=yes"]),
            Err("invalid value 'yes' for auto.leader.rebalance.enable".into())
        );
        assert!(load(&["unclean.leader.election.enable=1"]).is_err());
        assert_eq!(
            load(&["leader.imbalance.check.interval.ms=0"]),
            Err("leader.imbalance.check.interval.ms must be at least 1".into())
        );
        assert_eq!(
            load(&["leader.imbalance.check.interval.seconds=0"]),
            Err("leader.imbalance.check.interval.seconds must be at least 1".into())
        );
        assert!(load(&["leader.imbalance.check.interval.seconds=soon"]).is_err());
    }

    #[test]
    fn invalid_values_are_refused_with_the_key_named() {
        let err = ServerConfig::load(None, &["num.partitions=many".to_string()]).unwrap_err();
        assert_eq!(err, "invalid value 'many' for num.partitions");
        let err = ServerConfig::load(None, &["log.retention.ms=soon".to_string()]).unwrap_err();
        assert!(
            err.starts_with("invalid value soon for log.retention.ms"),
            "{err}"
        );
        assert!(ServerConfig::load(None, &["listeners=nonsense".to_string()]).is_err());
        assert!(ServerConfig::load(None, &["novalue".to_string()]).is_err());
    }
}
