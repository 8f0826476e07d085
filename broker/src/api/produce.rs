//! Produce: each partition's records are one v2 batch, appended as sent. The broker checks the
//! headers and that they agree with the records (walked, or streamed through decompression, never
//! re-encoded), the log checks the CRC while it patches offsets in place. An idempotent batch is
//! checked against its producer's state under the partition's lock: a retry is answered with the
//! offsets it got the first time, a sequence gap or fenced epoch refused.
//!
//! From v13 topics come by id (KIP-516): each resolves through the served metadata image, and
//! the partitions of an id it does not know are answered UNKNOWN_TOPIC_ID, as Kafka does.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::TopicProduceData;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use skald_protocol::batch::{BatchError, RecordBatchHeader, RecordBatches};
use skald_storage::{log_validator, ProducerError, TxnVerification};
use tokio::time::Instant;

use super::new_leaders;
use crate::broker::Broker;
use crate::replica_manager::{LeaderAppend, LeaderAppendRefused, Partition};
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
    broker: Arc<Broker>,
    version: i16,
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
        let mut response = ProduceResponse::default().with_responses(self.responses);
        name_new_leaders(&self.broker, self.version, &mut response);
        response
    }
}

/// First version that tells a producer sent to the wrong broker where the leader is (KIP-951).
const NEW_LEADERS_SINCE: i16 = 10;
/// First version of transactions version 2 (KIP-890): the leader adds a transaction's
/// partitions to it.
const TRANSACTIONS_V2_SINCE: i16 = 12;
/// Kafka's `add.partitions.to.txn.retry.backoff.ms` (20) and `…max.ms` (100).
const ADD_RETRY_BACKOFF: Duration = Duration::from_millis(20);
const ADD_RETRIES: usize = 5;

/// Kafka's KIP-951 answer (`KafkaApis.handleProduceRequest`, v10+): each partition refused with
/// NOT_LEADER_OR_FOLLOWER names its current leader and epoch, and the response carries those
/// leaders' endpoints, so the producer moves without a metadata refresh first.
fn name_new_leaders(broker: &Broker, version: i16, response: &mut ProduceResponse) {
    if version < NEW_LEADERS_SINCE {
        return;
    }
    let image = broker.image();
    let mut leaders = std::collections::BTreeSet::new();
    for topic in &mut response.responses {
        for partition in &mut topic.partition_responses {
            if partition.error_code != ResponseError::NotLeaderOrFollower.code() {
                continue;
            }
            if let Some((leader, leader_epoch)) =
                new_leaders::current_leader(&image, topic.name.as_str(), partition.index)
            {
                partition.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(leader_epoch);
                leaders.insert(leader);
            }
        }
    }
    response.node_endpoints = new_leaders::endpoints(&image, &leaders)
        .into_iter()
        .map(|endpoint| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(endpoint.node_id))
                .with_host(StrBytes::from_string(endpoint.host))
                .with_port(endpoint.port)
                .with_rack(endpoint.rack.map(StrBytes::from_string))
        })
        .collect();
}

/// One partition's batch, checked and ready to append.
struct Prepared {
    partition: Arc<Partition>,
    topic: String,
    index: i32,
    /// The request's bytes for this partition: exactly one v2 batch, headed by `header`.
    records: Bytes,
    header: RecordBatchHeader,
    /// The response to fill in (Kafka's "no offset" values until appended).
    response: PartitionProduceResponse,
    /// KIP-890's check for its append.
    verification: TxnVerification,
}

/// A partition of the request: answered already (refused), or ready to append.
enum Slot {
    Refused(PartitionProduceResponse),
    Ready(Prepared),
}

/// First version that names topics by id (KIP-516).
const TOPIC_IDS_SINCE: i16 = 13;

/// Appends every partition's batch; acks=all responses come back still waiting for the ISR. A
/// transactional producer's first batch in a partition waits for its coordinator to confirm the
/// partition is in the transaction first (KIP-890); the connection reads no further request
/// meanwhile, so its batches still append in the order they were sent.
pub async fn handle(broker: &Arc<Broker>, request: ProduceRequest, version: i16) -> Outcome {
    let image = (version >= TOPIC_IDS_SINCE).then(|| broker.image());
    // Each version encodes one of name and id in its response: the name before v13, the id from.
    let topic_ids: Vec<uuid::Uuid> = request.topic_data.iter().map(|t| t.topic_id).collect();
    let acks = request.acks;
    let valid_acks = matches!(acks, -1..=1);
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    // Transactions version 2 (Produce v12+): the leader adds the partition to the transaction,
    // whatever `transaction.partition.verification.enable` says; before it, the leader verifies.
    let add = version >= TRANSACTIONS_V2_SINCE && broker.txns.config.transaction_version >= 2;
    let verify = add || broker.txns.config.partition_verification;
    let transactional_id = request
        .transactional_id
        .as_ref()
        .map(|id| id.0.to_string())
        .filter(|_| verify);
    // Checks take no lock but the partition's, briefly; keep them and the appends off the async
    // workers' backs (appends write to the page cache, a roll fsyncs the sealed segment) — in
    // one hand-over when nothing is to be asked of a transaction coordinator in between.
    let data = request.topic_data;
    let checks = PrepareArgs {
        image: image.as_deref(),
        valid_acks,
    };
    let (responses, waits) = match transactional_id {
        None => tokio::task::block_in_place(|| {
            let mut topics = prepare_all(broker, data, &checks);
            if broker.txns.config.partition_verification {
                // A transactional batch naming no transactional id cannot be verified: it may
                // not begin a transaction (Kafka's sentinel guard), only continue one.
                unverifiable(&mut topics);
            }
            append_all(broker, topics, &topic_ids, version, acks)
        }),
        Some(transactional_id) => {
            let mut topics = tokio::task::block_in_place(|| prepare_all(broker, data, &checks));
            verify_transaction(broker, &transactional_id, &mut topics, add).await;
            tokio::task::block_in_place(|| append_all(broker, topics, &topic_ids, version, acks))
        }
    };
    if !waits.is_empty() {
        return Outcome::Replicating(AwaitingReplication {
            broker: Arc::clone(broker),
            version,
            responses,
            waits,
            deadline: Instant::now() + timeout,
        });
    }
    if acks != 0 {
        let mut response = ProduceResponse::default().with_responses(responses);
        name_new_leaders(broker, version, &mut response);
        return Outcome::Respond(response);
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

/// What [`prepare_all`] needs of the request besides its data.
struct PrepareArgs<'a> {
    /// The metadata, for a request naming topics by id (v13+).
    image: Option<&'a skald_controller::MetadataImage>,
    valid_acks: bool,
}

/// Every partition of the request checked ([`prepare`]), by topic.
fn prepare_all(
    broker: &Broker,
    topic_data: Vec<TopicProduceData>,
    args: &PrepareArgs<'_>,
) -> Vec<(TopicName, Vec<Slot>)> {
    let (image, valid_acks) = (args.image, args.valid_acks);
    topic_data
        .into_iter()
        .map(|topic| {
            let name = match image {
                Some(image) => image
                    .topic_by_id(super::topic_id(&topic.topic_id))
                    .map(|known| known.name.clone())
                    .ok_or(ResponseError::UnknownTopicId),
                None => Ok(topic.name.0.to_string()),
            };
            let slots = topic
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
                        return Slot::Refused(
                            response.with_error_code(ResponseError::InvalidRequiredAcks.code()),
                        );
                    }
                    match &name {
                        Ok(name) => prepare(broker, name, data.index, data.records, response),
                        Err(error) => Slot::Refused(response.with_error_code(error.code())),
                    }
                })
                .collect();
            // The name is kept for the acks=0 failure's log line.
            (
                name.map_or(topic.name, |name| super::topic_name(&name)),
                slots,
            )
        })
        .collect()
}

/// Every prepared partition appended ([`append`]): the responses by topic, and the acks=all
/// waits with each one's place in them.
#[allow(clippy::type_complexity)]
fn append_all(
    broker: &Arc<Broker>,
    topics: Vec<(TopicName, Vec<Slot>)>,
    topic_ids: &[uuid::Uuid],
    version: i16,
    acks: i16,
) -> (
    Vec<TopicProduceResponse>,
    Vec<((usize, usize), ReplicationWait)>,
) {
    let mut waits = Vec::new();
    let responses = topics
        .into_iter()
        .enumerate()
        .map(|(topic_index, (name, slots))| {
            let partition_responses = slots
                .into_iter()
                .enumerate()
                .map(|(partition_index, slot)| match slot {
                    Slot::Refused(response) => response,
                    Slot::Ready(prepared) => {
                        let (response, wait) = append(broker, prepared, version, acks);
                        if let Some(wait) = wait {
                            waits.push(((topic_index, partition_index), wait));
                        }
                        response
                    }
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(name)
                .with_topic_id(topic_ids[topic_index])
                .with_partition_responses(partition_responses)
        })
        .collect();
    (responses, waits)
}

/// Marks every transactional batch as carrying no verification guard.
fn unverifiable(topics: &mut [(TopicName, Vec<Slot>)]) {
    for slot in topics.iter_mut().flat_map(|(_, slots)| slots.iter_mut()) {
        if let Slot::Ready(prepared) = slot {
            if prepared.header.is_transactional() {
                prepared.verification = TxnVerification::Guard(None);
            }
        }
    }
}

/// KIP-890 on the leader (Kafka's `handleProduceAppend`): each transactional batch that would
/// begin its producer's transaction in its partition gets a verification guard, and the
/// coordinator is asked, once for all of them, whether those partitions are in the open
/// transaction; the refused get the coordinator's answer as a produce error. Batches of a
/// transaction already open here need nothing asked, and carry no guard.
async fn verify_transaction(
    broker: &Arc<Broker>,
    transactional_id: &str,
    topics: &mut [(TopicName, Vec<Slot>)],
    add: bool,
) {
    // Kafka allows one producer per transactional request; the first transactional batch names it.
    let mut producer: Option<(i64, i16)> = None;
    let mut asked: Vec<(String, i32)> = Vec::new();
    let mut asked_slots: Vec<(usize, usize)> = Vec::new();
    tokio::task::block_in_place(|| {
        for (topic_index, (_, slots)) in topics.iter_mut().enumerate() {
            for (slot_index, slot) in slots.iter_mut().enumerate() {
                let Slot::Ready(prepared) = slot else {
                    continue;
                };
                let header = &prepared.header;
                if !header.is_transactional() || header.producer_id < 0 {
                    continue;
                }
                let this = (header.producer_id, header.producer_epoch);
                if *producer.get_or_insert(this) != this {
                    let response = prepared.response.clone();
                    *slot = Slot::Refused(refused(
                        response,
                        ResponseError::InvalidProducerIdMapping,
                        "Transactional records contained more than one producer ID".into(),
                    ));
                    continue;
                }
                let guard = prepared
                    .partition
                    .with_log(|log| log.start_txn_verification(this.0, this.1))
                    .flatten();
                prepared.verification = TxnVerification::Guard(guard);
                if guard.is_some() {
                    asked.push((prepared.topic.clone(), prepared.index));
                    asked_slots.push((topic_index, slot_index));
                }
            }
        }
    });
    let Some((producer_id, producer_epoch)) = producer.filter(|_| !asked.is_empty()) else {
        return;
    };
    let ask = || {
        broker.txn_verifier.verify(
            broker,
            transactional_id,
            producer_id,
            producer_epoch,
            &asked,
            add,
        )
    };
    let mut answers = ask().await;
    // Adding while the previous transaction's markers are still being written gets
    // CONCURRENT_TRANSACTIONS; as Kafka, retry briefly here rather than send the producer
    // through its own (slower) backoff.
    let mut retries = 0;
    while add
        && retries < ADD_RETRIES
        && answers.contains(&Some(ResponseError::ConcurrentTransactions))
    {
        tokio::time::sleep(ADD_RETRY_BACKOFF).await;
        retries += 1;
        answers = ask().await;
    }
    for ((topic_index, slot_index), answer) in asked_slots.into_iter().zip(answers) {
        let Some(error) = answer else { continue };
        let slot = &mut topics[topic_index].1[slot_index];
        if let Slot::Ready(prepared) = slot {
            let message = format!(
                "Unable to verify the partition has been added to the transaction: {error:?}"
            );
            tracing::debug!(
                transactional_id,
                topic = prepared.topic,
                partition = prepared.index,
                "{message}"
            );
            *slot = Slot::Refused(refused(prepared.response.clone(), error, message));
        }
    }
}

fn refused(
    response: PartitionProduceResponse,
    error: ResponseError,
    message: String,
) -> PartitionProduceResponse {
    response
        .with_error_code(error.code())
        .with_error_message(Some(StrBytes::from_string(message)))
}

/// The checks that need no lock but the partition's: this broker leads it, and the request holds
/// one valid client batch for it.
fn prepare(
    broker: &Broker,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
    response: PartitionProduceResponse,
) -> Slot {
    let fail = |error: ResponseError, message: String| {
        tracing::debug!(topic, partition = index, "produce refused: {message}");
        Slot::Refused(refused(response.clone(), error, message))
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
    let max_message_bytes = partition.settings().max_message_bytes;
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
    if partition.settings().compacted {
        if let Some(message) = keyless_record(&records) {
            return fail(
                ResponseError::InvalidRecord,
                format!("{message} in topic partition {topic}-{index}"),
            );
        }
    }
    Slot::Ready(Prepared {
        partition,
        topic: topic.to_owned(),
        index,
        records,
        header,
        response,
        verification: TxnVerification::Off,
    })
}

/// Appends a prepared batch as the leader; acks=all gets the wait for the ISR with it.
fn append(
    broker: &Arc<Broker>,
    prepared: Prepared,
    version: i16,
    acks: i16,
) -> (PartitionProduceResponse, Option<ReplicationWait>) {
    let Prepared {
        partition,
        topic,
        index,
        records,
        response,
        verification,
        ..
    } = prepared;
    let topic = topic.as_str();
    let fail = |error: ResponseError, message: String| {
        tracing::debug!(topic, partition = index, "produce refused: {message}");
        (refused(response.clone(), error, message), None)
    };
    let log_append_time = partition.settings().log_append_time.then(now_ms);
    let min_insync_replicas = partition.settings().min_insync_replicas;
    let min_isr = (acks == -1).then_some(min_insync_replicas);
    // A roll's fsync is taken here, under the lock, and run after it (see `log_flusher`).
    let mut rolled = None;
    let appended = broker
        .replicas
        .append_to_leader(&partition, min_isr, |log, leader_epoch| {
            let appended = log.append_client(&records, log_append_time, leader_epoch, verification);
            rolled = log.take_pending_flush();
            appended
        });
    if let Some(flush) = rolled {
        broker.log_flusher.schedule(broker, &partition, flush);
    }
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
                ProducerError::InvalidTxnState { .. } | ProducerError::UnverifiedTxn { .. } => {
                    ResponseError::InvalidTxnState
                }
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
