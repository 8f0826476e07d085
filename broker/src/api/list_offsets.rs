//! ListOffsets: earliest (-2), latest (-1), or the first offset at or after a timestamp; from
//! v7 the record with the largest timestamp (-3, KIP-734); from v8 and v9 the tiered-storage
//! lookups, answered as Kafka answers them for a topic without remote storage: EARLIEST_LOCAL
//! (-4, KIP-405) is the log start offset, LATEST_TIERED (-5, KIP-1005) is offset -1 (nothing is
//! tiered). v10's `timeout_ms` bounds remote lookups (KIP-1075); every lookup here is local and
//! answered at once.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::api::fetch;
use crate::broker::Broker;

const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;
const LATEST_TIERED_TIMESTAMP: i64 = -5;

pub fn handle(
    broker: &Arc<Broker>,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let image = broker.image();
    let read_committed = request.isolation_level == fetch::READ_COMMITTED;
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.as_str();
            let partitions = topic
                .partitions
                .iter()
                .map(|asked| {
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(asked.partition_index);
                    let serving = broker.replicas.serving(
                        &image,
                        name,
                        asked.partition_index,
                        asked.current_leader_epoch,
                    );
                    let (partition, placement) = match serving {
                        Ok(serving) => serving,
                        Err(error) => return response.with_error_code(error.code()),
                    };
                    // Clients see the log up to Kafka's `lastFetchableOffset`: the high
                    // watermark for read_uncommitted, the last stable offset for read_committed.
                    let high_watermark = partition.high_watermark();
                    let found = partition.with_log(|log| {
                        let fetchable = if read_committed {
                            fetch::last_stable(log, high_watermark)
                        } else {
                            high_watermark
                        };
                        // Kafka's `Partition.fetchOffsetForTimestamp`: the latest and earliest
                        // offsets as they are; any record found must be fetchable.
                        match asked.timestamp {
                            LATEST_TIMESTAMP => Ok(Some((fetchable, -1))),
                            EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => {
                                Ok(Some((log.log_start_offset(), -1)))
                            }
                            LATEST_TIERED_TIMESTAMP => Ok(Some((-1, -1))),
                            MAX_TIMESTAMP => log
                                .offset_of_max_timestamp()
                                .map(|found| found.filter(|(offset, _)| *offset < fetchable)),
                            timestamp if timestamp >= 0 => log
                                .offset_for_timestamp(timestamp)
                                .map(|found| found.filter(|(offset, _)| *offset < fetchable)),
                            _ => Ok(None),
                        }
                    });
                    // Nothing is tiered, so no leader epoch either (Kafka answers -1).
                    let response = if version >= 4 && asked.timestamp != LATEST_TIERED_TIMESTAMP {
                        response.with_leader_epoch(placement.leader_epoch)
                    } else {
                        response
                    };
                    match found {
                        None => {
                            response.with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        }
                        Some(Ok(Some((offset, timestamp)))) => {
                            response.with_offset(offset).with_timestamp(timestamp)
                        }
                        // No record at or after the timestamp (or none with a timestamp at
                        // all): Kafka answers offset -1, timestamp -1.
                        Some(Ok(None))
                            if asked.timestamp >= 0 || asked.timestamp == MAX_TIMESTAMP =>
                        {
                            response.with_offset(-1).with_timestamp(-1)
                        }
                        Some(Ok(None)) => {
                            response.with_error_code(ResponseError::InvalidRequest.code())
                        }
                        Some(Err(err)) => {
                            tracing::error!(
                                topic = name,
                                partition = asked.partition_index,
                                "offset lookup failed: {err}"
                            );
                            broker.replicas.on_storage_error(&partition, &err);
                            response.with_error_code(ResponseError::KafkaStorageError.code())
                        }
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
