//! The producer state partition leaders keep for idempotent and transactional producers
//! (DescribeProducers, KIP-664), as `skald producers describe` prints it.

use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{DescribeProducersRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::client::Client;
use crate::error::{check, Result};

/// One producer a partition leader remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveProducer {
    pub partition: i32,
    pub producer_id: i64,
    pub producer_epoch: i32,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    /// The first offset of its open transaction in this partition, if it has one.
    pub current_txn_start_offset: Option<i64>,
}

impl Client {
    /// Every producer the leaders of `topic`'s partitions remember, by partition then producer
    /// id. Each partition is asked of its own leader.
    pub async fn describe_producers(&mut self, topic: &str) -> Result<Vec<ActiveProducer>> {
        let partitions: Vec<i32> = self
            .topic(topic)
            .await?
            .partitions
            .iter()
            .map(|p| p.partition)
            .collect();
        let mut producers = Vec::new();
        for partition in partitions {
            let (_, connection) = self.leader_connection(topic, partition).await?;
            let request =
                DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partition_indexes(vec![partition])]);
            let response = connection.send(request).await?;
            for answered in response.topics.iter().flat_map(|t| &t.partitions) {
                check(
                    answered.error_code,
                    || format!("describe producers of {topic}-{partition}"),
                    answered.error_message.as_deref(),
                )?;
                producers.extend(answered.active_producers.iter().map(|p| ActiveProducer {
                    partition: answered.partition_index,
                    producer_id: p.producer_id.0,
                    producer_epoch: p.producer_epoch,
                    last_sequence: p.last_sequence,
                    last_timestamp: p.last_timestamp,
                    coordinator_epoch: p.coordinator_epoch,
                    current_txn_start_offset:
                        (p.current_txn_start_offset >= 0).then_some(p.current_txn_start_offset),
                }));
            }
        }
        producers.sort_by_key(|p| (p.partition, p.producer_id));
        Ok(producers)
    }
}
