//! DeleteRecords (v0–v2): moves each partition's log start offset forward, deleting whole segments
//! below it (`Log::delete_records_before`). Offset -1 means "up to the high watermark".

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::broker::Broker;

/// Kafka's `DeleteRecordsRequest.HIGH_WATERMARK`: delete everything below the high watermark.
const HIGH_WATERMARK: i64 = -1;
/// Kafka's `DeleteRecordsResponse.INVALID_LOW_WATERMARK`, sent with an error.
const INVALID_LOW_WATERMARK: i64 = -1;

/// The request's `timeout_ms` is for waiting on followers; a single replica has none to wait for.
pub fn handle(broker: &Arc<Broker>, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    // Moving the start fsyncs the log and a checkpoint file, and may unlink segments.
    let topics = tokio::task::block_in_place(|| {
        request
            .topics
            .into_iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|asked| {
                        let (low_watermark, error) = delete(
                            broker,
                            topic.name.as_str(),
                            asked.partition_index,
                            asked.offset,
                        );
                        DeleteRecordsPartitionResult::default()
                            .with_partition_index(asked.partition_index)
                            .with_low_watermark(low_watermark)
                            .with_error_code(error.map_or(0, |e| e.code()))
                    })
                    .collect();
                DeleteRecordsTopicResult::default()
                    .with_name(topic.name)
                    .with_partitions(partitions)
            })
            .collect()
    });
    DeleteRecordsResponse::default().with_topics(topics)
}

/// `(low watermark, error)` for one partition.
fn delete(broker: &Broker, topic: &str, index: i32, offset: i64) -> (i64, Option<ResponseError>) {
    // DeleteRecords names no leader epoch.
    let partition = match broker.replicas.serving(&broker.image(), topic, index, -1) {
        Ok((partition, _)) => partition,
        Err(error) => return (INVALID_LOW_WATERMARK, Some(error)),
    };
    // Kafka's rule: records of a topic compacted without `delete` in its policy stay.
    if !partition.settings().deletable {
        return (INVALID_LOW_WATERMARK, Some(ResponseError::PolicyViolation));
    }
    // Kafka deletes only below the high watermark: records the ISR may not all have yet stay.
    let high_watermark = partition.high_watermark();
    let target = if offset == HIGH_WATERMARK {
        high_watermark
    } else {
        offset
    };
    if target > high_watermark {
        return (INVALID_LOW_WATERMARK, Some(ResponseError::OffsetOutOfRange));
    }
    let outcome = partition.with_log(|log| log.delete_records_before(target));
    match outcome {
        None => (
            INVALID_LOW_WATERMARK,
            Some(ResponseError::UnknownTopicOrPartition),
        ),
        Some(Ok(low_watermark)) => (low_watermark, None),
        Some(Err(skald_storage::Error::OffsetOutOfRange { .. })) => {
            (INVALID_LOW_WATERMARK, Some(ResponseError::OffsetOutOfRange))
        }
        Some(Err(err)) => {
            tracing::error!(topic, partition = index, "delete records failed: {err}");
            broker.replicas.on_storage_error(&partition, &err);
            (
                INVALID_LOW_WATERMARK,
                Some(ResponseError::KafkaStorageError),
            )
        }
    }
}
