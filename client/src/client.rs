//! The cluster as one thing: bootstrap, metadata, a connection per broker, partition leaders.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::{Request, StrBytes};

use crate::connection::{Connection, ConnectionConfig};
use crate::error::{
    Error, Result, LEADER_NOT_AVAILABLE, NONE, NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION,
};

/// The bootstrap list used when none is given.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// How to reach the cluster and how hard to try.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` addresses tried in order until one answers.
    pub bootstrap: Vec<String>,
    pub connection: ConnectionConfig,
    /// Metadata refreshes (and retries) after a leader moved or a topic is not there yet.
    pub retries_max: usize,
    /// Wait between those retries.
    pub retry_backoff: Duration,
}

impl ClientConfig {
    /// Parses a `host:port,host:port` bootstrap list.
    pub fn new(brokers: &str) -> Result<Self> {
        let bootstrap: Vec<String> = brokers
            .split(',')
            .map(str::trim)
            .filter(|addr| !addr.is_empty())
            .map(str::to_owned)
            .collect();
        if bootstrap.is_empty() {
            return Err(Error::InvalidArgument(
                "the broker list is empty".to_owned(),
            ));
        }
        if let Some(bad) = bootstrap.iter().find(|addr| !is_host_port(addr)) {
            return Err(Error::InvalidArgument(format!(
                "broker address {bad:?} is not host:port"
            )));
        }
        Ok(ClientConfig {
            bootstrap,
            connection: ConnectionConfig::default(),
            retries_max: 10,
            retry_backoff: Duration::from_millis(100),
        })
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bootstrap: vec![DEFAULT_BROKERS.to_owned()],
            connection: ConnectionConfig::default(),
            retries_max: 10,
            retry_backoff: Duration::from_millis(100),
        }
    }
}

fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// A broker as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerInfo {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One topic as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    /// The topic id as text (empty for brokers too old to have ids).
    pub topic_id: String,
    pub internal: bool,
    /// Sorted by partition index.
    pub partitions: Vec<PartitionMetadata>,
}

/// One partition's replicas as the metadata describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: i32,
    /// `-1` while there is no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    /// The partition's own error code (`LEADER_NOT_AVAILABLE` while electing).
    pub error_code: i16,
}

/// A client for a whole cluster: knows the brokers and topics, and keeps one connection per broker.
pub struct Client {
    config: ClientConfig,
    /// A connection to whichever bootstrap address answered; its node id is not known.
    bootstrap: Option<Connection>,
    connections: HashMap<i32, Connection>,
    brokers: BTreeMap<i32, BrokerInfo>,
    controller_id: i32,
    cluster_id: Option<String>,
    topics: HashMap<String, TopicMetadata>,
}

impl Client {
    /// Connects to the first bootstrap address that answers and learns the brokers.
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        let mut client = Client {
            config,
            bootstrap: None,
            connections: HashMap::new(),
            brokers: BTreeMap::new(),
            controller_id: -1,
            cluster_id: None,
            topics: HashMap::new(),
        };
        client.bootstrap = Some(client.connect_bootstrap().await?);
        client.metadata(Some(&[])).await?;
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The brokers from the latest metadata, by node id.
    pub fn brokers(&self) -> &BTreeMap<i32, BrokerInfo> {
        &self.brokers
    }

    /// The controller id from the latest metadata (`-1` if unknown).
    pub fn controller_id(&self) -> i32 {
        self.controller_id
    }

    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// Sends a request that any broker can answer, reconnecting once if the connection failed.
    pub async fn send_any<R: Request + Clone>(&mut self, request: R) -> Result<R::Response> {
        let first = self.any_connection().await?.send(request.clone()).await;
        match first {
            Err(err) if is_connection_error(&err) => {
                tracing::debug!("retrying on another connection after: {err}");
                self.bootstrap = None;
                self.any_connection().await?.send(request).await
            }
            other => other,
        }
    }

    /// Sends a request to the controller (falling back to any broker; KRaft brokers forward).
    pub async fn send_controller<R: Request + Clone>(&mut self, request: R) -> Result<R::Response> {
        let controller = self.controller_id;
        if self.brokers.contains_key(&controller) {
            match self.broker_connection(controller).await {
                Ok(connection) => match connection.send(request.clone()).await {
                    Err(err) if is_connection_error(&err) => self.disconnect(controller),
                    other => return other,
                },
                Err(err) => tracing::debug!("controller {controller} unreachable: {err}"),
            }
        }
        self.send_any(request).await
    }

    /// Fetches metadata for `topics` (`None`: all topics) and updates the cache.
    pub async fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|name| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let response = self.send_any(request).await?;
        self.update_metadata(&response);
        Ok(response)
    }

    fn update_metadata(&mut self, response: &MetadataResponse) {
        self.brokers = response
            .brokers
            .iter()
            .map(|b| {
                let info = BrokerInfo {
                    node_id: b.node_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                };
                (b.node_id.0, info)
            })
            .collect();
        // A broker whose address changed or that left gets a fresh connection when next needed.
        let brokers = &self.brokers;
        self.connections.retain(|id, conn| {
            brokers.get(id).is_some_and(|b| b.addr() == conn.addr()) && !conn.is_broken()
        });
        self.controller_id = response.controller_id.0;
        self.cluster_id = response.cluster_id.as_ref().map(|c| c.to_string());
        for topic in &response.topics {
            let Some(name) = topic.name.as_ref().map(|n| n.0.to_string()) else {
                continue;
            };
            if topic.error_code != NONE {
                self.topics.remove(&name);
                continue;
            }
            let mut partitions: Vec<PartitionMetadata> = topic
                .partitions
                .iter()
                .map(|p| PartitionMetadata {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
                    error_code: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            let topic_id = if topic.topic_id.is_nil() {
                String::new()
            } else {
                topic.topic_id.to_string()
            };
            let metadata = TopicMetadata {
                name: name.clone(),
                topic_id,
                internal: topic.is_internal,
                partitions,
            };
            self.topics.insert(name, metadata);
        }
    }

    /// A topic's metadata, from the cache or the cluster.
    pub async fn topic(&mut self, name: &str) -> Result<&TopicMetadata> {
        if !self.topics.contains_key(name) {
            self.refresh_topic(name).await?;
        }
        self.topics.get(name).ok_or_else(|| Error::UnknownTopic {
            topic: name.to_owned(),
        })
    }

    /// Fetches a topic's metadata again, waiting (bounded) while it has no leaders yet.
    pub async fn refresh_topic(&mut self, name: &str) -> Result<&TopicMetadata> {
        let names = [name.to_owned()];
        let mut attempt = 0;
        loop {
            let response = self.metadata(Some(&names)).await?;
            let topic = response
                .topics
                .iter()
                .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name));
            let (code, message) = match topic {
                Some(t) => (t.error_code, None),
                None => (UNKNOWN_TOPIC_OR_PARTITION, None),
            };
            let leaderless = topic.is_some_and(|t| {
                t.partitions
                    .iter()
                    .any(|p| p.leader_id.0 < 0 || p.error_code == LEADER_NOT_AVAILABLE)
            });
            let settled = match code {
                NONE => !leaderless,
                UNKNOWN_TOPIC_OR_PARTITION => {
                    return Err(Error::UnknownTopic {
                        topic: name.to_owned(),
                    })
                }
                LEADER_NOT_AVAILABLE => false,
                code => {
                    return Err(Error::kafka(
                        code,
                        format!("metadata for topic {name}"),
                        message,
                    ))
                }
            };
            if settled || attempt >= self.config.retries_max {
                break;
            }
            attempt += 1;
            tokio::time::sleep(self.config.retry_backoff).await;
        }
        self.topics.get(name).ok_or_else(|| Error::UnknownTopic {
            topic: name.to_owned(),
        })
    }

    /// Forgets a topic's cached metadata (after NOT_LEADER_OR_FOLLOWER and the like).
    pub fn invalidate_topic(&mut self, name: &str) {
        self.topics.remove(name);
    }

    /// The leader of a partition, refreshing metadata (bounded) while there is none.
    pub async fn leader(&mut self, topic: &str, partition: i32) -> Result<i32> {
        let mut attempt = 0;
        loop {
            let metadata = self.topic(topic).await?;
            let count = metadata.partitions.len();
            let Some(p) = metadata
                .partitions
                .iter()
                .find(|p| p.partition == partition)
            else {
                return Err(Error::UnknownPartition {
                    topic: topic.to_owned(),
                    partition,
                    partitions: count,
                });
            };
            let leader = p.leader;
            if leader >= 0 && self.brokers.contains_key(&leader) {
                return Ok(leader);
            }
            if attempt >= self.config.retries_max {
                return Err(Error::kafka(
                    LEADER_NOT_AVAILABLE,
                    format!("leader of {topic}-{partition}"),
                    None,
                ));
            }
            attempt += 1;
            tokio::time::sleep(self.config.retry_backoff).await;
            self.refresh_topic(topic).await?;
        }
    }

    /// The connection to a broker by node id, opened on first use.
    pub async fn broker_connection(&mut self, node_id: i32) -> Result<&mut Connection> {
        if self
            .connections
            .get(&node_id)
            .is_some_and(Connection::is_broken)
        {
            self.connections.remove(&node_id);
        }
        if !self.connections.contains_key(&node_id) {
            let Some(broker) = self.brokers.get(&node_id) else {
                return Err(Error::kafka(
                    crate::error::BROKER_NOT_AVAILABLE,
                    format!("broker {node_id} is not in the metadata"),
                    None,
                ));
            };
            let connection =
                Connection::connect_with(&broker.addr(), &self.config.connection).await?;
            self.connections.insert(node_id, connection);
        }
        self.connections
            .get_mut(&node_id)
            .ok_or_else(|| Error::Disconnected {
                addr: format!("broker {node_id}"),
            })
    }

    /// The connection to the leader of a partition.
    pub async fn leader_connection(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<(i32, &mut Connection)> {
        let leader = self.leader(topic, partition).await?;
        Ok((leader, self.broker_connection(leader).await?))
    }

    /// Closes the connection to a broker (after it failed).
    pub fn disconnect(&mut self, node_id: i32) {
        self.connections.remove(&node_id);
    }

    /// Any live connection: the bootstrap one, a broker's, or a new one to a bootstrap address.
    pub async fn any_connection(&mut self) -> Result<&mut Connection> {
        if self.bootstrap.as_ref().is_some_and(Connection::is_broken) {
            self.bootstrap = None;
        }
        if self.bootstrap.is_none() {
            let live = self
                .connections
                .iter()
                .find(|(_, c)| !c.is_broken())
                .map(|(id, _)| *id);
            if let Some(id) = live {
                return self.broker_connection(id).await;
            }
            self.bootstrap = Some(self.connect_bootstrap().await?);
        }
        self.bootstrap.as_mut().ok_or_else(|| Error::Disconnected {
            addr: "bootstrap".to_owned(),
        })
    }

    async fn connect_bootstrap(&self) -> Result<Connection> {
        let known = self.brokers.values().map(BrokerInfo::addr);
        let candidates: Vec<String> = self.config.bootstrap.iter().cloned().chain(known).collect();
        let mut last_error = None;
        for addr in &candidates {
            match Connection::connect_with(addr, &self.config.connection).await {
                Ok(connection) => return Ok(connection),
                Err(err) => {
                    tracing::debug!("bootstrap {addr}: {err}");
                    last_error = Some(err);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::InvalidArgument("the broker list is empty".into())))
    }
}

/// Errors after which the connection should be dropped and the request tried elsewhere.
pub fn is_connection_error(err: &Error) -> bool {
    matches!(
        err,
        Error::Io { .. } | Error::Disconnected { .. } | Error::Timeout { .. }
    )
}

/// Partition errors that mean "your metadata is stale": refresh and retry.
pub fn is_stale_metadata(code: i16) -> bool {
    matches!(
        code,
        NOT_LEADER_OR_FOLLOWER | UNKNOWN_TOPIC_OR_PARTITION | LEADER_NOT_AVAILABLE | 74 | 75
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_lists_parse_and_bad_ones_are_refused() {
        let config = ClientConfig::new(" a:1, b:9092 ,").unwrap();
        assert_eq!(
            config.bootstrap,
            vec!["a:1".to_owned(), "b:9092".to_owned()]
        );
        assert_eq!(
            ClientConfig::new(",").unwrap_err().to_string(),
            "the broker list is empty"
        );
        assert_eq!(
            ClientConfig::new("localhost").unwrap_err().to_string(),
            "broker address \"localhost\" is not host:port"
        );
        assert_eq!(
            ClientConfig::new("[::1]:9092").unwrap().bootstrap,
            vec!["[::1]:9092"]
        );
    }
}
