//! The broker's shared state: configuration, the metadata image it serves from, the channel to the
//! controller that changes it, the hosted partitions and the metrics. One `Arc<Broker>` is shared
//! by every connection.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use skald_controller::{
    AlterPartitionRequest, ControllerOp, ControllerReply, ImageDelta, MetadataImage,
};

use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::group::{CoordinatorConfig, GroupCoordinator};
use crate::metadata::{AlterPartitionOutcome, ControlError, ControllerChannel};
use crate::metrics::Metrics;
use crate::producer_ids::ProducerIdManager;
use crate::replica_manager::ReplicaManager;
use crate::txn::{TransactionCoordinator, TxnConfig};

/// How long a forwarded metadata operation's reply waits for this broker to see its result.
const METADATA_CATCH_UP_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Kafka's per-log-dir identity file.
const META_PROPERTIES: &str = "meta.properties";

#[derive(Debug)]
pub struct Broker {
    pub config: ServerConfig,
    pub cluster_id: String,
    /// How to reach the active controller; set once at start-up, before any request is served.
    controller: OnceLock<ControllerChannel>,
    image: RwLock<Arc<MetadataImage>>,
    /// The raft index of the metadata `image` reflects (reported in broker heartbeats).
    metadata_offset: AtomicU64,
    /// Woken whenever a new image or index is published.
    metadata_published: tokio::sync::Notify,
    pub replicas: ReplicaManager,
    pub metrics: Metrics,
    /// The consumer groups this broker coordinates.
    pub groups: Arc<GroupCoordinator>,
    /// Hands out idempotent producers' ids from blocks the controller records.
    pub producer_ids: ProducerIdManager,
    /// The transactions this broker coordinates.
    pub txns: Arc<TransactionCoordinator>,
    /// Asks coordinators whether a transaction's first batch here belongs to it (KIP-890).
    pub txn_verifier: crate::txn::verifier::TxnVerifier,
    /// Connections to other brokers for the requests brokers send each other.
    pub peers: crate::peers::PeerConnections,
    /// This broker's registration: its epoch (-1 before the first) and whether it is fenced.
    pub broker_epoch: AtomicI64,
    pub fenced: AtomicBool,
    /// Set when controlled shutdown begins: regular heartbeats stop, so they cannot ask to be
    /// unfenced while the shutdown heartbeats ask to be fenced.
    pub shutting_down: AtomicBool,
    /// ISR changes of the partitions led here, batched into AlterPartition requests.
    pub isr_changes: Arc<crate::replication::isr::IsrChangeQueue>,
    /// Topics deleted lately, which Metadata requests do not auto-create for a while.
    pub recently_deleted_topics: crate::api::metadata::RecentlyDeletedTopics,
    /// Fetch sessions (KIP-227) of followers and consumers fetching from this broker.
    pub fetch_sessions: crate::fetch_session::FetchSessionCache,
    /// Runs the fsyncs segment rolls leave pending, off the partitions' locks.
    pub log_flusher: crate::log_flusher::LogFlusher,
}

impl Broker {
    /// Opens the logs and serves `image` (the metadata as committed when the node started): after
    /// this returns, the broker can serve once it has a controller channel.
    pub fn open(
        config: ServerConfig,
        metrics: Metrics,
        cluster_id: String,
        image: Arc<MetadataImage>,
        metadata_offset: u64,
    ) -> Result<Broker> {
        let replicas = ReplicaManager::open(&config, metrics.clone())?;
        let groups =
            GroupCoordinator::new(CoordinatorConfig::from_server(&config).map_err(Error::Config)?);
        let txns =
            TransactionCoordinator::new(TxnConfig::from_server(&config).map_err(Error::Config)?);
        // The offsets partitions led here from the start are loaded like any later leadership.
        // Everything in the image is a change from the empty one this broker starts with.
        let nothing = MetadataImage::default();
        let delta = ImageDelta::between(&nothing, &image);
        let changes = replicas.apply_metadata(&nothing, &image, &delta, &config);
        groups.on_role_changes(&replicas, &changes);
        txns.on_role_changes(&replicas, &changes);
        let fetch_sessions = crate::fetch_session::FetchSessionCache::new(
            config.fetch_session_cache_slots,
            metrics.fetch_sessions.clone(),
        );
        let log_flusher = crate::log_flusher::LogFlusher::new(config.log_dirs.len());
        Ok(Broker {
            config,
            cluster_id,
            controller: OnceLock::new(),
            image: RwLock::new(image),
            metadata_offset: AtomicU64::new(metadata_offset),
            metadata_published: tokio::sync::Notify::new(),
            replicas,
            metrics,
            groups: Arc::new(groups),
            producer_ids: ProducerIdManager::new(),
            txns: Arc::new(txns),
            txn_verifier: Default::default(),
            peers: Default::default(),
            broker_epoch: AtomicI64::new(-1),
            fenced: AtomicBool::new(true),
            shutting_down: AtomicBool::new(false),
            isr_changes: Default::default(),
            recently_deleted_topics: Default::default(),
            fetch_sessions,
            log_flusher,
        })
    }

    /// Connects the broker to the controller quorum (once, at start-up).
    pub fn set_controller(&self, channel: ControllerChannel) {
        if self.controller.set(channel).is_err() {
            tracing::error!("controller channel set twice; keeping the first");
        }
    }

    pub fn controller(&self) -> Option<&ControllerChannel> {
        self.controller.get()
    }

    /// The current metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(
            &self
                .image
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// The raft index the served image reflects.
    pub fn metadata_offset(&self) -> u64 {
        self.metadata_offset.load(Ordering::Acquire)
    }

    /// Serves a newly committed image: logs first, then the image, so whoever sees the new
    /// metadata finds its partitions. Called only by the metadata publisher thread.
    ///
    /// The work is proportional to what changed since the served image ([`ImageDelta`]), not
    /// to the cluster: the new image was replayed from the served one, so they share every
    /// part that did not change.
    pub fn publish_image(&self, image: Arc<MetadataImage>, metadata_offset: u64) {
        let before = self.image();
        if !Arc::ptr_eq(&before, &image) {
            let delta = ImageDelta::between(&before, &image);
            self.recently_deleted_topics
                .note_deletions(&delta, std::time::Instant::now());
            let changes = self
                .replicas
                .apply_metadata(&before, &image, &delta, &self.config);
            self.groups.on_role_changes(&self.replicas, &changes);
            self.txns.on_role_changes(&self.replicas, &changes);
            *self
                .image
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = image;
        }
        self.metadata_offset
            .fetch_max(metadata_offset, Ordering::AcqRel);
        self.metadata_published.notify_waiters();
        self.metrics
            .metadata_applied_index
            .set(i64::try_from(self.metadata_offset()).unwrap_or(i64::MAX));
    }

    /// Asks the active controller to carry out a metadata operation and waits until it has
    /// committed — and, when this node is the controller, until this node serves the result.
    pub async fn control(
        &self,
        op: ControllerOp,
    ) -> std::result::Result<ControllerReply, ControlError> {
        let channel = self
            .controller
            .get()
            .ok_or(ControlError::NotController(None))?;
        let (reply, committed_at) = channel.operation(op).await?;
        if let Some(index) = committed_at {
            // Another node ran it: reply once this node serves it too, as a combined node would,
            // so a client can use at once what it created here. Bounded: the metadata arrives by
            // long poll, normally within milliseconds.
            let caught_up = async {
                loop {
                    let published = self.metadata_published.notified();
                    if self.metadata_offset() >= index {
                        return;
                    }
                    published.await;
                }
            };
            if tokio::time::timeout(METADATA_CATCH_UP_MAX, caught_up)
                .await
                .is_err()
            {
                tracing::warn!(
                    index,
                    "replying before this broker's metadata reached the change"
                );
            }
        }
        Ok(reply)
    }

    /// Asks the active controller for an ISR change (AlterPartition) and waits until this
    /// broker's metadata shows the accepted ones, so the leader acts on the ISR it asked for.
    pub async fn alter_partition(
        &self,
        request: AlterPartitionRequest,
    ) -> std::result::Result<AlterPartitionOutcome, ControlError> {
        let channel = self
            .controller
            .get()
            .ok_or(ControlError::NotController(None))?;
        let outcome = channel.alter_partition(request).await?;
        let caught_up = async {
            loop {
                let published = self.metadata_published.notified();
                if outcome.is_applied_in(&self.image()) {
                    return;
                }
                published.await;
            }
        };
        if tokio::time::timeout(METADATA_CATCH_UP_MAX, caught_up)
            .await
            .is_err()
        {
            tracing::warn!("an ISR change committed but this broker's metadata has yet to show it");
        }
        Ok(outcome)
    }

    /// Waits (at most `max`) until this node serves an image for which `ready` holds; whether it
    /// does.
    pub async fn wait_for_image(
        &self,
        ready: impl Fn(&MetadataImage) -> bool,
        max: std::time::Duration,
    ) -> bool {
        let caught_up = async {
            loop {
                let published = self.metadata_published.notified();
                if ready(&self.image()) {
                    return;
                }
                published.await;
            }
        };
        tokio::time::timeout(max, caught_up).await.is_ok()
    }

    /// The node id clients should send controller requests to (Metadata's `controller_id`).
    pub fn controller_id_for_clients(&self) -> i32 {
        controller_id_for_clients(&self.config)
    }
}

/// The node id clients should send controller requests to (Metadata's `controller_id`): with
/// forwarding any broker will do, so this broker itself when it serves clients (KRaft).
pub fn controller_id_for_clients(config: &ServerConfig) -> i32 {
    config.node_id
}

/// Reads or writes `meta.properties` in every log dir; returns the cluster id. A log dir that belongs
/// to another node or cluster is refused, as Kafka does.
pub fn ensure_meta_properties(config: &ServerConfig) -> Result<String> {
    let mut cluster_id = None;
    let mut dirs: Vec<&Path> = config.log_dirs.iter().map(|dir| dir.as_path()).collect();
    dirs.push(&config.metadata_log_dir);
    for dir in &dirs {
        let path = dir.join(META_PROPERTIES);
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        let properties = java_properties::read(std::io::BufReader::new(file))
            .map_err(|err| Error::Config(format!("cannot parse {}: {err}", path.display())))?;
        if let Some(node_id) = properties.get("node.id") {
            if node_id.trim() != config.node_id.to_string() {
                return Err(Error::Config(format!(
                    "{} belongs to node.id {node_id}, but this server is node.id {}",
                    path.display(),
                    config.node_id
                )));
            }
        }
        match (properties.get("cluster.id"), &cluster_id) {
            (Some(found), Some(known)) if found != known => {
                return Err(Error::Config(format!(
                    "{} belongs to cluster {found}, but other log dirs belong to {known}",
                    path.display()
                )))
            }
            (Some(found), _) => cluster_id = Some(found.clone()),
            (None, _) => {}
        }
    }
    let cluster_id = cluster_id.unwrap_or_else(|| {
        let configured = config.get("cluster.id");
        if !configured.is_empty() {
            configured
        } else if !config.voters.is_empty() {
            cluster_id_of_quorum(&config.get("controller.quorum.voters"))
        } else {
            new_cluster_id()
        }
    });
    for dir in dirs {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(META_PROPERTIES);
        if !path.exists() {
            let text = format!(
                "version=1\ncluster.id={cluster_id}\nnode.id={}\n",
                config.node_id
            );
            std::fs::write(&path, text).map_err(|source| Error::Io { path, source })?;
        }
    }
    Ok(cluster_id)
}

/// Every node of a new cluster must agree on its id without a formatting step, so one configured
/// with the same `controller.quorum.voters` derives the same id from it (FNV-1a, 128 bits).
fn cluster_id_of_quorum(voters: &str) -> String {
    let mut hash: u128 = 0x6c62272e07bb014262b821756295c58d;
    for byte in voters.bytes() {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(0x0000000001000000000000000000013B);
    }
    encode_cluster_id(hash)
}

/// A cluster id in Kafka's form: 16 random bytes, URL-safe base64 without padding (22 characters).
fn new_cluster_id() -> String {
    encode_cluster_id(skald_controller::controller::random_topic_id())
}

fn encode_cluster_id(bits: u128) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..22)
        .map(|i| ALPHABET[((bits >> (i * 6)) & 63) as usize] as char)
        .collect()
}
