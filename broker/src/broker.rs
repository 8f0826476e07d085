//! The broker's shared state: configuration, the metadata image it serves from, the controller that
//! changes it, the hosted partitions and the metrics. One `Arc<Broker>` is shared by every connection.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use skald_controller::{Controller, ControllerConfig, Endpoint, MetadataImage};

use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::group::{CoordinatorConfig, GroupCoordinator};
use crate::metrics::Metrics;
use crate::replica_manager::ReplicaManager;

/// Kafka's per-log-dir identity file.
const META_PROPERTIES: &str = "meta.properties";

#[derive(Debug)]
pub struct Broker {
    pub config: ServerConfig,
    pub cluster_id: String,
    controller: Mutex<Controller>,
    image: RwLock<Arc<MetadataImage>>,
    pub replicas: ReplicaManager,
    pub metrics: Metrics,
    /// The consumer groups this broker coordinates.
    pub groups: Arc<GroupCoordinator>,
}

impl Broker {
    /// Opens the metadata and the logs: after this returns, the broker can serve.
    pub fn open(config: ServerConfig, metrics: Metrics) -> Result<Broker> {
        let cluster_id = ensure_meta_properties(&config)?;
        let mut controller = Controller::open(
            &config.metadata_log_dir,
            ControllerConfig {
                node_id: config.node_id,
                num_partitions: config.num_partitions,
                default_replication_factor: config.default_replication_factor,
            },
        )?;
        let endpoints = config
            .advertised_listeners
            .iter()
            .map(|listener| Endpoint {
                name: listener.name.clone(),
                host: listener.host.clone(),
                port: listener.port,
            })
            .collect();
        controller.register_broker(config.node_id, endpoints, config.rack.clone())?;
        let image = controller.image();
        let replicas = ReplicaManager::open(&config, metrics.clone())?;
        replicas.apply_metadata(&image, &config);
        let groups =
            GroupCoordinator::new(CoordinatorConfig::from_server(&config).map_err(Error::Config)?);
        let loaded = groups
            .load(&replicas)
            .map_err(|err| Error::Internal(format!("cannot load committed offsets: {err}")))?;
        if loaded > 0 {
            tracing::info!(
                records = loaded,
                "committed offsets loaded from __consumer_offsets"
            );
        }
        Ok(Broker {
            config,
            cluster_id,
            controller: Mutex::new(controller),
            image: RwLock::new(image),
            replicas,
            metrics,
            groups: Arc::new(groups),
        })
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

    /// Runs a controller operation off the async workers (it fsyncs), then publishes the new image and
    /// brings the hosted partitions in line with it, all before replying, so a client that sees the
    /// reply can use what it created.
    pub async fn control<T: Send + 'static>(
        self: &Arc<Self>,
        operation: impl FnOnce(&mut Controller) -> T + Send + 'static,
    ) -> Result<T> {
        let broker = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut controller = broker
                .controller
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let before = controller.image();
            let outcome = operation(&mut controller);
            let after = controller.image();
            if !Arc::ptr_eq(&before, &after) {
                // Logs first, then the image: whoever sees the new metadata finds its partitions.
                broker.replicas.apply_metadata(&after, &broker.config);
                *broker
                    .image
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = after;
            }
            Ok(outcome)
        })
        .await
        .map_err(|err| Error::Internal(format!("controller task failed: {err}")))?
    }
}

/// Reads or writes `meta.properties` in every log dir; returns the cluster id. A log dir that belongs
/// to another node or cluster is refused, as Kafka does.
fn ensure_meta_properties(config: &ServerConfig) -> Result<String> {
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
    let cluster_id = cluster_id.unwrap_or_else(new_cluster_id);
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

/// A cluster id in Kafka's form: 16 random bytes, URL-safe base64 without padding (22 characters).
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = skald_controller::controller::random_topic_id();
    (0..22)
        .map(|i| ALPHABET[((bits >> (i * 6)) & 63) as usize] as char)
        .collect()
}
