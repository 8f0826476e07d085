//! Topic administration: create, delete, list, describe (partitions and configs).

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::{Client, PartitionMetadata};
use crate::error::{check, Error, Result, NOT_CONTROLLER};

/// How long the broker may take to create or delete topics before answering REQUEST_TIMED_OUT.
pub const ADMIN_TIMEOUT_MS: i32 = 30_000;
/// DescribeConfigs' resource type for topics.
const RESOURCE_TYPE_TOPIC: i8 = 2;
/// DescribeConfigs' config source for values nobody set.
const CONFIG_SOURCE_DEFAULT: i8 = 5;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// `-1`: the broker's `num.partitions`.
    pub partitions: i32,
    /// `-1`: the broker's `default.replication.factor`.
    pub replication_factor: i16,
    /// Topic configs such as `retention.ms`, `cleanup.policy`.
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic with the broker's default partitions and replication factor.
    pub fn new(name: impl Into<String>) -> Self {
        NewTopic {
            name: name.into(),
            partitions: -1,
            replication_factor: -1,
            configs: Vec::new(),
        }
    }
}

/// A line of `list_topics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicListing {
    pub name: String,
    pub partitions: usize,
    /// Replicas of partition 0 (`0` for a topic without partitions).
    pub replication_factor: usize,
    pub internal: bool,
}

/// A topic's partitions and configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub topic_id: String,
    pub internal: bool,
    pub partitions: Vec<PartitionDescription>,
    /// Empty when the broker does not support DescribeConfigs.
    pub configs: Vec<ConfigEntry>,
}

/// A partition's replicas.
pub type PartitionDescription = PartitionMetadata;

/// One topic config as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    /// `None` for sensitive values.
    pub value: Option<String>,
    pub is_default: bool,
    pub read_only: bool,
    pub sensitive: bool,
}

impl Client {
    /// Creates topics; one result per topic, in request order.
    pub async fn create_topics(
        &mut self,
        topics: &[NewTopic],
    ) -> Result<Vec<(String, Result<()>)>> {
        let request = CreateTopicsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|topic| {
                        CreatableTopic::default()
                            .with_name(topic_name(&topic.name))
                            .with_num_partitions(topic.partitions)
                            .with_replication_factor(topic.replication_factor)
                            .with_configs(
                                topic
                                    .configs
                                    .iter()
                                    .map(|(k, v)| {
                                        CreatableTopicConfig::default()
                                            .with_name(StrBytes::from_string(k.clone()))
                                            .with_value(Some(StrBytes::from_string(v.clone())))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
            .with_timeout_ms(ADMIN_TIMEOUT_MS)
            .with_validate_only(false);
        let mut attempt = 0;
        let response = loop {
            let response = self.send_controller(request.clone()).await?;
            let moved = response
                .topics
                .iter()
                .any(|t| t.error_code == NOT_CONTROLLER);
            if !moved || attempt >= self.config().retries_max {
                break response;
            }
            attempt += 1;
            tokio::time::sleep(self.config().retry_backoff).await;
            self.metadata(Some(&[])).await?;
        };
        let results = topics
            .iter()
            .map(|topic| {
                let result = match response
                    .topics
                    .iter()
                    .find(|t| t.name.0.as_str() == topic.name)
                {
                    Some(t) => check(
                        t.error_code,
                        || format!("create topic {}", topic.name),
                        t.error_message.as_deref(),
                    ),
                    None => Err(Error::Protocol {
                        addr: "controller".to_owned(),
                        detail: format!("CreateTopics response has no result for {}", topic.name),
                    }),
                };
                (topic.name.clone(), result)
            })
            .collect();
        for topic in topics {
            self.invalidate_topic(&topic.name);
        }
        Ok(results)
    }

    /// Creates one topic.
    pub async fn create_topic(&mut self, topic: NewTopic) -> Result<()> {
        let mut results = self.create_topics(std::slice::from_ref(&topic)).await?;
        results.pop().map_or(Ok(()), |(_, result)| result)
    }

    /// Deletes one topic.
    pub async fn delete_topic(&mut self, name: &str) -> Result<()> {
        let request = DeleteTopicsRequest::default()
            .with_topic_names(vec![topic_name(name)])
            .with_timeout_ms(ADMIN_TIMEOUT_MS);
        let response = self.send_controller(request).await?;
        self.invalidate_topic(name);
        let result = response
            .responses
            .iter()
            .find(|r| r.name.as_ref().is_some_and(|n| n.0.as_str() == name));
        match result {
            Some(r) => check(
                r.error_code,
                || format!("delete topic {name}"),
                r.error_message.as_deref(),
            )
            .map_err(|err| match err.kafka_code() {
                Some(crate::error::UNKNOWN_TOPIC_OR_PARTITION) => Error::UnknownTopic {
                    topic: name.to_owned(),
                },
                _ => err,
            }),
            None => Err(Error::Protocol {
                addr: "controller".to_owned(),
                detail: format!("DeleteTopics response has no result for {name}"),
            }),
        }
    }

    /// All topics, sorted by name.
    pub async fn list_topics(&mut self) -> Result<Vec<TopicListing>> {
        let response = self.metadata(None).await?;
        let mut topics: Vec<TopicListing> = response
            .topics
            .iter()
            .filter(|t| t.error_code == 0)
            .filter_map(|t| {
                Some(TopicListing {
                    name: t.name.as_ref()?.0.to_string(),
                    partitions: t.partitions.len(),
                    replication_factor: t.partitions.first().map_or(0, |p| p.replica_nodes.len()),
                    internal: t.is_internal,
                })
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// A topic's partitions (leader, replicas, ISR) and its configs.
    pub async fn describe_topic(&mut self, name: &str) -> Result<TopicDescription> {
        let metadata = self.refresh_topic(name).await?.clone();
        let configs = self.describe_topic_configs(name).await?;
        Ok(TopicDescription {
            name: metadata.name,
            topic_id: metadata.topic_id,
            internal: metadata.internal,
            partitions: metadata.partitions,
            configs,
        })
    }

    /// A topic's configs, sorted by name (empty if the broker has no DescribeConfigs).
    pub async fn describe_topic_configs(&mut self, name: &str) -> Result<Vec<ConfigEntry>> {
        let supported = self
            .any_connection()
            .await?
            .broker_versions(ApiKey::DescribeConfigs)
            .is_some();
        if !supported {
            tracing::warn!("the broker does not support DescribeConfigs; no configs shown");
            return Ok(Vec::new());
        }
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TYPE_TOPIC)
                .with_resource_name(StrBytes::from_string(name.to_owned()))
                .with_configuration_keys(None),
        ]);
        let response = self.send_any(request).await?;
        let Some(result) = response.results.into_iter().next() else {
            return Ok(Vec::new());
        };
        check(
            result.error_code,
            || format!("describe configs of topic {name}"),
            result.error_message.as_deref(),
        )?;
        let mut configs: Vec<ConfigEntry> = result
            .configs
            .into_iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.map(|v| v.to_string()),
                is_default: c.config_source == CONFIG_SOURCE_DEFAULT,
                read_only: c.read_only,
                sensitive: c.is_sensitive,
            })
            .collect();
        configs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(configs)
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}
