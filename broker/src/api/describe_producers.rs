//! DescribeProducers (KIP-664): the idempotent and transactional producers a partition leader
//! remembers — id, epoch, last sequence and timestamp, coordinator epoch and open transaction —
//! what `kafka-transactions.sh describe-producers` and `skald producers describe` print.
//! Only the leader answers (NOT_LEADER_OR_FOLLOWER elsewhere), as in Kafka.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, body: DescribeProducersRequest) -> DescribeProducersResponse {
    let image = broker.image();
    let topics = body
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partition_indexes
                .iter()
                .map(|&index| {
                    let response = PartitionResponse::default().with_partition_index(index);
                    let partition = match broker.replicas.serving(&image, &topic.name, index, -1) {
                        Ok((partition, _)) => partition,
                        Err(error) => return response.with_error_code(error.code()),
                    };
                    let Some(mut producers) = partition.with_log(|log| {
                        log.producer_state()
                            .entries()
                            .map(|entry| {
                                ProducerState::default()
                                    .with_producer_id(ProducerId(entry.producer_id))
                                    .with_producer_epoch(i32::from(entry.producer_epoch))
                                    .with_last_sequence(entry.last_seq())
                                    .with_last_timestamp(entry.last_timestamp)
                                    .with_coordinator_epoch(entry.coordinator_epoch)
                                    .with_current_txn_start_offset(
                                        entry.current_txn_first_offset.unwrap_or(-1),
                                    )
                            })
                            .collect::<Vec<_>>()
                    }) else {
                        return response
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    producers.sort_unstable_by_key(|producer| producer.producer_id.0);
                    response.with_active_producers(producers)
                })
                .collect();
            TopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
