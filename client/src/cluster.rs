//! The cluster itself: the controller quorum (DescribeQuorum) and the registered brokers
//! (DescribeCluster), as any broker answers them.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeLogDirsRequest, DescribeQuorumRequest,
    DescribeQuorumResponse, TopicName, UnregisterBrokerRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::{Client, TopicMetadata};
use crate::error::{check, Error, Result};

/// The metadata log: the one partition the controller quorum replicates.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// The controller quorum as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumDescription {
    /// `-1` while there is none.
    pub leader_id: i32,
    /// The leader's epoch (raft term).
    pub leader_epoch: i32,
    /// The offset below which the metadata log is committed.
    pub high_watermark: i64,
    pub voters: Vec<QuorumReplica>,
    pub observers: Vec<QuorumReplica>,
}

/// One replica of the metadata log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumReplica {
    pub replica_id: i32,
    /// `None` when the leader does not know it.
    pub log_end_offset: Option<i64>,
}

impl QuorumReplica {
    /// How far behind the high watermark this replica is (`None` when its offset is unknown).
    pub fn lag(&self, high_watermark: i64) -> Option<i64> {
        self.log_end_offset
            .map(|offset| (high_watermark - offset).max(0))
    }
}

/// The cluster as DescribeCluster describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: String,
    /// The broker clients are told to treat as the controller (`-1` if none).
    pub controller_id: i32,
    /// Sorted by broker id.
    pub brokers: Vec<ClusterBroker>,
}

/// One registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterBroker {
    pub broker_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Fenced brokers are listed only when asked for and the broker speaks DescribeCluster v2.
    pub fenced: bool,
}

impl Client {
    /// The controller quorum: leader, epoch, high watermark and each voter's log end offset.
    /// Retries while the quorum elects a leader (NOT_CONTROLLER and other retriable errors).
    pub async fn describe_quorum(&mut self) -> Result<QuorumDescription> {
        let request = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
        let mut attempt = 0;
        loop {
            let outcome = self
                .send_any(request.clone())
                .await
                .and_then(quorum_description);
            match outcome {
                Err(err) if err.is_retriable() && attempt < self.config().retries_max => {
                    tracing::debug!("describe quorum, retrying after: {err}");
                    attempt += 1;
                    tokio::time::sleep(self.config().retry_backoff).await;
                }
                other => return other,
            }
        }
    }

    /// Every topic's partitions (internal topics included) from one Metadata request, by name.
    pub async fn list_topic_metadata(&mut self) -> Result<Vec<TopicMetadata>> {
        let response = self.metadata(None).await?;
        let mut names: Vec<String> = response
            .topics
            .iter()
            .filter(|t| t.error_code == 0)
            .filter_map(|t| Some(t.name.as_ref()?.0.to_string()))
            .collect();
        names.sort();
        let mut topics = Vec::with_capacity(names.len());
        for name in &names {
            // Cached by the request above: no further round trip.
            topics.push(self.topic(name).await?.clone());
        }
        Ok(topics)
    }

    /// Unregisters a broker that left the cluster for good (UnregisterBroker, decided by the
    /// active controller). BROKER_ID_NOT_REGISTERED when it is not registered.
    pub async fn unregister_broker(&mut self, broker: i32) -> Result<()> {
        let request = UnregisterBrokerRequest::default().with_broker_id(BrokerId(broker));
        let response = self.send_controller(request).await?;
        check(
            response.error_code,
            || format!("unregister broker {broker}"),
            response.error_message.as_deref(),
        )
    }

    /// Tells `broker` to shut down for good (the dynamic config `broker.decommissioned=true`,
    /// sent to that broker as Kafka's admin client sends a broker's own configs). The controller
    /// refuses it while the broker hosts any replica.
    pub async fn decommission_broker(&mut self, broker: i32) -> Result<()> {
        use kafka_protocol::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        use kafka_protocol::messages::IncrementalAlterConfigsRequest;
        const BROKER_RESOURCE: i8 = 4;
        const SET: i8 = 0;
        let resource = AlterConfigsResource::default()
            .with_resource_type(BROKER_RESOURCE)
            .with_resource_name(StrBytes::from_string(broker.to_string()))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_static_str("broker.decommissioned"))
                .with_config_operation(SET)
                .with_value(Some(StrBytes::from_static_str("true")))]);
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![resource]);
        let response = self.broker_connection(broker).await?.send(request).await?;
        response.responses.iter().try_for_each(|resource| {
            check(
                resource.error_code,
                || format!("decommission broker {broker}"),
                resource.error_message.as_deref(),
            )
        })
    }

    /// The size on disk of every partition replica `broker` holds, over its log dirs
    /// (DescribeLogDirs for all topics): (topic, partition) → bytes.
    pub async fn replica_sizes(&mut self, broker: i32) -> Result<BTreeMap<(String, i32), u64>> {
        let connection = self.broker_connection(broker).await?;
        let response = connection
            .send(DescribeLogDirsRequest::default().with_topics(None))
            .await?;
        check(
            response.error_code,
            || format!("describe log dirs of broker {broker}"),
            None,
        )?;
        let mut sizes = BTreeMap::new();
        for dir in &response.results {
            check(
                dir.error_code,
                || format!("log dir {} of broker {broker}", dir.log_dir.as_str()),
                None,
            )?;
            for topic in &dir.topics {
                for partition in &topic.partitions {
                    // A future replica (a move between dirs) is a copy: count the current one.
                    if partition.is_future_key {
                        continue;
                    }
                    *sizes
                        .entry((topic.name.to_string(), partition.partition_index))
                        .or_default() += partition.partition_size.max(0) as u64;
                }
            }
        }
        Ok(sizes)
    }

    /// The registered brokers; fenced ones too when `include_fenced` and the broker can say so
    /// (DescribeCluster v2).
    pub async fn describe_cluster(&mut self, include_fenced: bool) -> Result<ClusterDescription> {
        let version = self
            .any_connection()
            .await?
            .version_for::<DescribeClusterRequest>()?;
        let request = DescribeClusterRequest::default()
            .with_include_fenced_brokers(include_fenced && version >= 2);
        let response = self.send_any(request).await?;
        check(
            response.error_code,
            || "describe cluster".to_owned(),
            response.error_message.as_deref(),
        )?;
        let mut brokers: Vec<ClusterBroker> = response
            .brokers
            .iter()
            .map(|b| ClusterBroker {
                broker_id: b.broker_id.0,
                host: b.host.to_string(),
                port: b.port,
                rack: b.rack.as_ref().map(|r| r.to_string()),
                fenced: b.is_fenced,
            })
            .collect();
        brokers.sort_by_key(|b| b.broker_id);
        Ok(ClusterDescription {
            cluster_id: response.cluster_id.to_string(),
            controller_id: response.controller_id.0,
            brokers,
        })
    }
}

fn quorum_description(response: DescribeQuorumResponse) -> Result<QuorumDescription> {
    check(
        response.error_code,
        || "describe quorum".to_owned(),
        response.error_message.as_deref(),
    )?;
    let partition = response
        .topics
        .iter()
        .filter(|t| t.topic_name.0.as_str() == METADATA_TOPIC)
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == 0)
        .ok_or_else(|| Error::Protocol {
            addr: "broker".to_owned(),
            detail: format!("DescribeQuorum response has no {METADATA_TOPIC}-0"),
        })?;
    check(
        partition.error_code,
        || format!("describe quorum {METADATA_TOPIC}-0"),
        partition.error_message.as_deref(),
    )?;
    let replicas =
        |states: &[kafka_protocol::messages::describe_quorum_response::ReplicaState]| {
            states
                .iter()
                .map(|state| QuorumReplica {
                    replica_id: state.replica_id.0,
                    log_end_offset: (state.log_end_offset >= 0).then_some(state.log_end_offset),
                })
                .collect()
        };
    Ok(QuorumDescription {
        leader_id: partition.leader_id.0,
        leader_epoch: partition.leader_epoch,
        high_watermark: partition.high_watermark,
        voters: replicas(&partition.current_voters),
        observers: replicas(&partition.observers),
    })
}
