//! OffsetForLeaderEpoch: where a leader epoch ends in the leader's log (Kafka's
//! `lastOffsetForLeaderEpoch`). Consumers ask it after a leader change to find out whether the
//! records they read were truncated since (KIP-320); followers could ask it too, though Skald's
//! use the Fetch `diverging_epoch` answer instead.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::broker::Broker;

/// Kafka's UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET: the epoch is unknown here.
const UNDEFINED: (i32, i64) = (-1, -1);

pub fn handle(
    broker: &Arc<Broker>,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let image = broker.image();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.topic.as_str();
            let partitions = topic
                .partitions
                .iter()
                .map(|asked| {
                    let response = EpochEndOffset::default()
                        .with_partition(asked.partition)
                        .with_leader_epoch(UNDEFINED.0)
                        .with_end_offset(UNDEFINED.1);
                    let serving = broker.replicas.serving(
                        &image,
                        name,
                        asked.partition,
                        asked.current_leader_epoch,
                    );
                    let (partition, _) = match serving {
                        Ok(serving) => serving,
                        Err(error) => return response.with_error_code(error.code()),
                    };
                    match partition.with_log(|log| log.end_offset_for_epoch(asked.leader_epoch)) {
                        None => {
                            response.with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        }
                        Some(found) => {
                            let (epoch, end_offset) = found.unwrap_or(UNDEFINED);
                            response
                                .with_leader_epoch(epoch)
                                .with_end_offset(end_offset)
                        }
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
