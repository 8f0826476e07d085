//! Produce: each partition's records are one v2 batch, appended as sent. The broker checks the
//! headers, the log checks the CRC while it patches offsets in place; records are never decoded.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use skald_protocol::batch::{BatchError, RecordBatches};

use crate::broker::Broker;

/// Kafka's default for `max.message.bytes` when the topic has no override.
const MAX_MESSAGE_BYTES_DEFAULT: usize = 1_048_588;

pub fn handle(
    broker: &Arc<Broker>,
    request: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    let valid_acks = matches!(acks, -1..=1);
    let responses = request
        .topic_data
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let partition_responses = topic
                .partition_data
                .into_iter()
                .map(|data| {
                    // Kafka's values for "no offset": kept on errors, replaced on success.
                    let response = PartitionProduceResponse::default()
                        .with_index(data.index)
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1);
                    if !valid_acks {
                        return response.with_error_code(ResponseError::InvalidRequiredAcks.code());
                    }
                    produce_partition(broker, &name, data.index, data.records, version, response)
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partition_responses)
        })
        .collect();
    // acks=0: the client expects no response at all.
    (acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

fn produce_partition(
    broker: &Broker,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
    version: i16,
    response: PartitionProduceResponse,
) -> PartitionProduceResponse {
    let fail = |error: ResponseError, message: String| {
        tracing::debug!(topic, partition = index, "produce refused: {message}");
        response
            .clone()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    let image = broker.image();
    let (Some(partition), Some(topic_image)) =
        (broker.replicas.get(topic, index), image.topic(topic))
    else {
        return fail(
            ResponseError::UnknownTopicOrPartition,
            format!("unknown partition {topic}-{index}"),
        );
    };
    let leader_epoch = topic_image
        .partitions
        .get(&index)
        .map_or(0, |p| p.leader_epoch);
    let Some(records) = records.filter(|records| !records.is_empty()) else {
        return fail(
            ResponseError::InvalidRecord,
            "produce request without records".into(),
        );
    };
    let max_message_bytes = topic_config(
        broker,
        topic_image,
        "max.message.bytes",
        "message.max.bytes",
    )
    .and_then(|value| value.parse().ok())
    .unwrap_or(MAX_MESSAGE_BYTES_DEFAULT);
    if records.len() > max_message_bytes {
        return fail(
            ResponseError::MessageTooLarge,
            format!(
                "batch of {} bytes exceeds max.message.bytes {max_message_bytes}",
                records.len()
            ),
        );
    }
    // Cheap header walk (no CRC): Kafka requires exactly one v2 batch per partition.
    let mut batches = 0;
    for batch in RecordBatches::headers_only(&records) {
        match batch {
            Ok(_) => batches += 1,
            Err(err) => return fail(batch_error_code(&err), err.to_string()),
        }
    }
    if batches != 1 {
        return fail(
            ResponseError::InvalidRecord,
            format!("expected exactly one record batch, found {batches}"),
        );
    }
    let log_append_time = topic_config(
        broker,
        topic_image,
        "message.timestamp.type",
        "log.message.timestamp.type",
    )
    .is_some_and(|value| value == "LogAppendTime")
    .then(now_ms);

    // The request buffer is shared by every partition of the request, so patching needs a copy.
    let mut batch = records.to_vec();
    let appended = partition.with_log(|log| {
        let appended = log.append(&mut batch, log_append_time, leader_epoch);
        (
            appended,
            log.log_start_offset(),
            log.log_end_offset(),
            log.size_bytes(),
        )
    });
    let Some((appended, log_start_offset, log_end_offset, size_bytes)) = appended else {
        return fail(
            ResponseError::UnknownTopicOrPartition,
            format!("partition {topic}-{index} was deleted"),
        );
    };
    match appended {
        Ok(info) => {
            broker
                .replicas
                .on_append(&partition, log_end_offset, size_bytes);
            broker
                .metrics
                .bytes_in_total
                .with_label_values(&[topic])
                .inc_by(info.bytes as u64);
            broker
                .metrics
                .records_in_total
                .with_label_values(&[topic])
                .inc_by(info.records_count.max(0) as u64);
            let mut response = response
                .with_base_offset(info.first_offset)
                .with_log_append_time_ms(info.log_append_time_ms);
            if version >= 5 {
                response = response.with_log_start_offset(log_start_offset);
            }
            response
        }
        Err(skald_storage::Error::CorruptBatch(err)) => {
            fail(batch_error_code(&err), err.to_string())
        }
        Err(err) => {
            tracing::error!(topic, partition = index, "append failed: {err}");
            fail(ResponseError::KafkaStorageError, err.to_string())
        }
    }
}

/// The Kafka error code for a batch that failed validation.
fn batch_error_code(error: &BatchError) -> ResponseError {
    match error {
        BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
        BatchError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        _ => ResponseError::CorruptMessage,
    }
}

/// A topic config's override, else the broker property that supplies its default.
fn topic_config(
    broker: &Broker,
    topic: &skald_controller::TopicImage,
    name: &str,
    broker_property: &str,
) -> Option<String> {
    topic
        .configs
        .get(name)
        .cloned()
        .or_else(|| Some(broker.config.get(broker_property)))
        .filter(|v| !v.is_empty())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
