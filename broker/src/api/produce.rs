//! Produce: each partition's records are one v2 batch, appended as sent. The broker checks the
//! headers and that they agree with the records (walked, or streamed through decompression, never
//! re-encoded), the log checks the CRC while it patches offsets in place. An idempotent batch is
//! checked against its producer's state under the partition's lock: a retry is answered with the
//! offsets it got the first time, a sequence gap or fenced epoch refused.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use skald_protocol::batch::{BatchError, RecordBatches};
use skald_storage::{log_validator, ProducerError};
use tokio::time::Instant;

use crate::broker::Broker;
use crate::replica_manager::{LeaderAppend, LeaderAppendRefused};
use crate::replication::ReplicationWait;

/// What a Produce request gets back.
pub enum Outcome {
    Respond(ProduceResponse),
    /// acks=all: every batch is appended; the response is ready once the ISR has them. The
    /// connection may read (and append) its next requests meanwhile: only the wait overlaps,
    /// responses still go out in order.
    Replicating(AwaitingReplication),
    /// acks=0 and every partition succeeded: Kafka sends nothing.
    Silent,
    /// acks=0 and a partition failed: Kafka closes the connection so the producer notices and
    /// refreshes its metadata.
    Close(String),
}

/// An acks=all response whose batches are appended and wait for the ISR.
pub struct AwaitingReplication {
    responses: Vec<TopicProduceResponse>,
    /// Each appended batch's place in `responses` and its wait.
    waits: Vec<((usize, usize), ReplicationWait)>,
    /// The request's timeout, from when the appends were done.
    deadline: Instant,
}

impl AwaitingReplication {
    /// Waits for every batch (each by the same deadline, so in turn is as fast as together) and
    /// returns the response, with the partitions that failed to replicate marked.
    pub async fn response(mut self) -> ProduceResponse {
        for ((topic_index, partition_index), wait) in self.waits {
            if let Err(error) = wait.until_replicated(self.deadline).await {
                let response =
                    &mut self.responses[topic_index].partition_responses[partition_index];
                response.error_code = error.code();
                response.base_offset = -1;
                response.log_append_time_ms = -1;
            }
        }
        ProduceResponse::default().with_responses(self.responses)
    }
}

/// Appends every partition's batch; acks=all responses come back still waiting for the ISR.
pub fn handle(broker: &Arc<Broker>, request: ProduceRequest, version: i16) -> Outcome {
    let acks = request.acks;
    let valid_acks = matches!(acks, -1..=1);
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let mut waits = Vec::new();
    // Appends write to the page cache and a roll fsyncs the sealed segment: keep that off the
    // async workers' backs so other connections carry on meanwhile.
    let responses: Vec<TopicProduceResponse> = tokio::task::block_in_place(|| {
        request
            .topic_data
            .into_iter()
            .enumerate()
            .map(|(topic_index, topic)| {
                let name = topic.name.0.to_string();
                let partition_responses = topic
                    .partition_data
                    .into_iter()
                    .enumerate()
                    .map(|(partition_index, data)| {
                        // Kafka's values for "no offset": kept on errors, replaced on success.
                        let response = PartitionProduceResponse::default()
                            .with_index(data.index)
                            .with_base_offset(-1)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(-1);
                        if !valid_acks {
                            return response
                                .with_error_code(ResponseError::InvalidRequiredAcks.code());
                        }
                        let (response, wait) = produce_partition(
                            broker,
                            &name,
                            data.index,
                            data.records,
                            version,
                            acks,
                            response,
                        );
                        if let Some(wait) = wait {
                            waits.push(((topic_index, partition_index), wait));
                        }
                        response
                    })
                    .collect();
                TopicProduceResponse::default()
                    .with_name(topic.name)
                    .with_partition_responses(partition_responses)
            })
            .collect()
    });
    if !waits.is_empty() {
        return Outcome::Replicating(AwaitingReplication {
            responses,
            waits,
            deadline: Instant::now() + timeout,
        });
    }
    if acks != 0 {
        return Outcome::Respond(ProduceResponse::default().with_responses(responses));
    }
    let failed = responses.iter().flat_map(|topic| {
        topic
            .partition_responses
            .iter()
            .filter(|p| p.error_code != 0)
            .map(move |p| (topic.name.as_str(), p))
    });
    match failed
        .map(|(topic, p)| format!("{topic}-{}: error {}", p.index, p.error_code))
        .next()
    {
        Some(failure) => Outcome::Close(format!("acks=0 produce failed ({failure})")),
        None => Outcome::Silent,
    }
}

fn produce_partition(
    broker: &Broker,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
    version: i16,
    acks: i16,
    response: PartitionProduceResponse,
) -> (PartitionProduceResponse, Option<ReplicationWait>) {
    let fail = |error: ResponseError, message: String| {
        tracing::debug!(topic, partition = index, "produce refused: {message}");
        let response = response
            .clone()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message)));
        (response, None)
    };
    // Produce names no leader epoch.
    let partition = match broker.replicas.serving(&broker.image(), topic, index, -1) {
        Ok((partition, _)) => partition,
        Err(error) => {
            return fail(
                error,
                format!("{topic}-{index} is not served here: {error:?}"),
            );
        }
    };
    let Some(records) = records.filter(|records| !records.is_empty()) else {
        return fail(
            ResponseError::InvalidRecord,
            "produce request without records".into(),
        );
    };
    let max_message_bytes = partition.settings.max_message_bytes;
    if records.len() > max_message_bytes {
        return fail(
            ResponseError::MessageTooLarge,
            format!(
                "batch of {} bytes exceeds max.message.bytes {max_message_bytes}",
                records.len()
            ),
        );
    }
    // Cheap header walk (no CRC): Kafka requires exactly one v2 batch per partition, and no
    // control batch from a client.
    let mut batches = 0;
    let mut first_header = None;
    for batch in RecordBatches::headers_only(&records) {
        match batch {
            Ok((_, header)) if header.is_control() => {
                return fail(
                    ResponseError::InvalidRecord,
                    "Clients are not allowed to write control records".into(),
                )
            }
            Ok((_, header)) => {
                batches += 1;
                first_header.get_or_insert(header);
            }
            Err(err) => return fail(batch_error_code(&err), err.to_string()),
        }
    }
    let (1, Some(header)) = (batches, first_header) else {
        return fail(
            ResponseError::InvalidRecord,
            format!("expected exactly one record batch, found {batches}"),
        );
    };
    // Kafka's LogValidator, before the partition's lock is taken: the header must agree with
    // the records, since offsets and sequences are assigned from what it claims.
    if let Err(invalid) = log_validator::validate_client_batch(&records, &header) {
        // Kafka checks the CRC first: damaged bytes are CORRUPT_MESSAGE, not a lie. Checked
        // only here, on the way out, since the log checks every CRC it appends anyway.
        if let Err(corrupt) = skald_protocol::batch::validate_batch(&records) {
            return fail(batch_error_code(&corrupt), corrupt.to_string());
        }
        return fail(ResponseError::InvalidRecord, invalid.0);
    }
    if partition.settings.compacted {
        if let Some(message) = keyless_record(&records) {
            return fail(
                ResponseError::InvalidRecord,
                format!("{message} in topic partition {topic}-{index}"),
            );
        }
    }
    let log_append_time = partition.settings.log_append_time.then(now_ms);
    let min_insync_replicas = partition.settings.min_insync_replicas;
    // The request buffer is shared by every partition of the request, so patching needs a copy.
    let mut batch = records.to_vec();
    let min_isr = (acks == -1).then_some(min_insync_replicas);
    let appended = broker
        .replicas
        .append_to_leader(&partition, min_isr, |log, leader_epoch| {
            log.append(&mut batch, log_append_time, leader_epoch)
        });
    let LeaderAppend {
        appended,
        log_start_offset,
        leader_epoch,
    } = match appended {
        Ok(appended) => appended,
        Err(LeaderAppendRefused::Deleted) => {
            return fail(
                ResponseError::UnknownTopicOrPartition,
                format!("partition {topic}-{index} was deleted"),
            )
        }
        Err(LeaderAppendRefused::NotEnoughReplicas { isr }) => {
            return fail(
                ResponseError::NotEnoughReplicas,
                format!(
                    "The size of the current ISR {isr} is insufficient to satisfy the min.isr \
                     requirement of {min_insync_replicas} for partition {topic}-{index}"
                ),
            );
        }
        Err(LeaderAppendRefused::NotLeader) => {
            return fail(
                ResponseError::NotLeaderOrFollower,
                format!("this broker does not lead {topic}-{index}"),
            );
        }
    };
    match appended {
        Ok(info) if info.duplicate => {
            tracing::debug!(
                topic,
                partition = index,
                first_offset = info.first_offset,
                "a producer retried a batch already in the log; answered with its offsets"
            );
            let mut response = response.with_base_offset(info.first_offset);
            if version >= 5 {
                response = response.with_log_start_offset(log_start_offset);
            }
            // The original may still be waiting for the ISR: acks=all waits for it too.
            let wait = (acks == -1).then(|| ReplicationWait {
                partition: Arc::clone(&partition),
                leader_epoch,
                required_offset: info.last_offset + 1,
                min_insync_replicas,
            });
            (response, wait)
        }
        Ok(info) => {
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
            let wait = (acks == -1).then(|| ReplicationWait {
                partition: Arc::clone(&partition),
                leader_epoch,
                required_offset: info.last_offset + 1,
                min_insync_replicas,
            });
            (response, wait)
        }
        Err(skald_storage::Error::CorruptBatch(err)) => {
            fail(batch_error_code(&err), err.to_string())
        }
        Err(skald_storage::Error::InvalidRecord(reason)) => {
            fail(ResponseError::InvalidRecord, reason)
        }
        Err(skald_storage::Error::Producer(refused)) => {
            let error = match refused {
                ProducerError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
                ProducerError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
                ProducerError::InvalidTxnState { .. } => ResponseError::InvalidTxnState,
                ProducerError::CoordinatorFenced { .. } => {
                    ResponseError::TransactionCoordinatorFenced
                }
            };
            fail(error, refused.to_string())
        }
        Err(err) => {
            tracing::error!(topic, partition = index, "append failed: {err}");
            broker.replicas.on_storage_error(&partition, &err);
            fail(ResponseError::KafkaStorageError, err.to_string())
        }
    }
}

/// Kafka refuses records without a key on compacted topics (they could never be cleaned). Only an
/// uncompressed batch's records can be read without decompressing; compressed ones pass unchecked.
fn keyless_record(batch: &[u8]) -> Option<&'static str> {
    let mut views = skald_protocol::batch::record_views(batch).ok()?;
    views
        .any(|record| record.is_ok_and(|record| record.key.is_none()))
        .then_some("Compacted topic cannot accept message without key")
}

/// The Kafka error code for a batch that failed validation.
fn batch_error_code(error: &BatchError) -> ResponseError {
    match error {
        BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
        BatchError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        _ => ResponseError::CorruptMessage,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
