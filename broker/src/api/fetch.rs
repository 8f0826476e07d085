//! Fetch: whole stored batches, zero-copy from the segment maps, with Kafka's long-poll
//! (`max_wait_ms` / `min_bytes`) woken by appends. Fetch sessions (KIP-227, `fetch_session`): a
//! full fetch with epoch 0 gets a session when the cache has room; an incremental fetch reads its
//! whole session (so a parked one wakes on any of its partitions) and answers only the partitions
//! with something new; session errors are answered at once with no partitions.
//!
//! From v13 topics are named by id only (KIP-516): each id is resolved through the metadata image,
//! and an id the image does not know answers UNKNOWN_TOPIC_ID for each of its partitions, as
//! Kafka does. From v15 a follower names itself in `replica_state` instead of `replica_id`
//! (KIP-903); the replica epoch it adds, and v17's replica directory id (KIP-853) and v18's
//! high watermark, serve KRaft's own replication and change nothing for a partition's fetch.
//! From v16 a partition refused because its leader moved names the new leader (KIP-951).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint,
    PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId};
use kafka_protocol::protocol::StrBytes;
use skald_controller::MetadataImage;
use skald_storage::Log;
use tokio::time::Instant;

use super::new_leaders;
use crate::broker::Broker;
use crate::fetch_session::FetchContext;
use crate::replica_manager::Partition;
use crate::replication;

/// Kafka's `IsolationLevel.READ_COMMITTED`.
pub const READ_COMMITTED: i8 = 1;

/// Kafka's last stable offset: the high watermark, or the first offset of the oldest open
/// transaction if that is lower. read_committed readers see nothing past it.
pub fn last_stable(log: &Log, high_watermark: i64) -> i64 {
    // An open transaction's first offset may lie below the log start after DeleteRecords or
    // retention (Kafka clamps it so): readers are never sent below the log start.
    log.first_unstable_offset().map_or(high_watermark, |first| {
        first.max(log.log_start_offset()).min(high_watermark)
    })
}

/// The longest a fetch may wait for data, whatever it asks (bounded so shutdown is never held up).
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

/// First version that names topics by id (KIP-516).
const TOPIC_IDS_SINCE: i16 = 13;
/// First version whose `replica_state` replaces `replica_id` (KIP-903).
const REPLICA_STATE_SINCE: i16 = 15;
/// First version that tells a fetcher sent to the wrong broker where the leader is (KIP-951).
const NEW_LEADERS_SINCE: i16 = 16;

/// Kafka's KIP-951 answer (`KafkaApis.handleFetchRequest`, v16+): each partition refused with
/// NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH names its current leader and epoch, and the
/// response carries those leaders' endpoints, so the client need not wait for a metadata refresh.
fn name_new_leaders(image: &MetadataImage, response: &mut FetchResponse) {
    let moved = [
        ResponseError::NotLeaderOrFollower.code(),
        ResponseError::FencedLeaderEpoch.code(),
    ];
    let mut leaders = std::collections::BTreeSet::new();
    for topic in &mut response.responses {
        for partition in &mut topic.partitions {
            if !moved.contains(&partition.error_code) {
                continue;
            }
            let current =
                new_leaders::current_leader(image, topic.topic.as_str(), partition.partition_index);
            if let Some((leader, leader_epoch)) = current {
                partition.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(leader_epoch);
                leaders.insert(leader);
            }
        }
    }
    response.node_endpoints = new_leaders::endpoints(image, &leaders)
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

/// The fetching replica's id, -1 for a consumer: from `replica_state` since v15.
pub fn replica_id(request: &FetchRequest, version: i16) -> i32 {
    if version >= REPLICA_STATE_SINCE {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    }
}

/// The clock fetch sessions age by.
fn now_ms() -> u64 {
    u64::try_from(replication::now_ms()).unwrap_or(0)
}

pub async fn handle(broker: &Arc<Broker>, request: FetchRequest, version: i16) -> FetchResponse {
    let follower = replica_id(&request, version) >= 0;
    let context = broker
        .fetch_sessions
        .new_context(&request, version, follower, now_ms());
    let topics = match &context {
        FetchContext::Error(error) => {
            return FetchResponse::default().with_error_code(error.code());
        }
        FetchContext::Incremental { topics, .. } => topics.as_slice(),
        FetchContext::Sessionless | FetchContext::Full { .. } => request.topics.as_slice(),
    };
    let max_wait =
        Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)).min(MAX_WAIT_CAP);
    let deadline = Instant::now() + max_wait;
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    // Woken by an append to, or a high watermark move of, a partition this fetch reads. A fetch
    // answered at once (the busy case) registers nothing; one that must wait registers with its
    // partitions during a second read, each before it is read, so nothing appended between that
    // read and the wait is missed. A session fetch that changed nothing (a follower at rest)
    // nearly always waits: it registers from its first read, which saves a read of its session.
    let quiet = matches!(context, FetchContext::Incremental { .. })
        && request.topics.is_empty()
        && request.forgotten_topics_data.is_empty();
    let waiter = Arc::new(tokio::sync::Notify::new());
    let (mut watch, mut watching) = if quiet {
        (Some(&waiter), true)
    } else {
        (None, false)
    };
    loop {
        // Metadata changes (a partition hosted or led here now, an ISR shrink) wake every fetch.
        let placement_changed = broker.replicas.placement_changed().notified();
        tokio::pin!(placement_changed);
        placement_changed.as_mut().enable();

        let (mut responses, read) =
            read_partitions(broker, &request, topics, version, watch.take());
        if read.bytes >= min_bytes.max(1) || read.any_error || Instant::now() >= deadline {
            let session_id = match &context {
                FetchContext::Full { privileged } => broker.fetch_sessions.create_session(
                    *privileged,
                    &request,
                    version,
                    &responses,
                    now_ms(),
                ),
                FetchContext::Incremental {
                    session_id, epoch, ..
                } => {
                    if let Err(error) = broker.fetch_sessions.filter_incremental(
                        *session_id,
                        *epoch,
                        &mut responses,
                    ) {
                        // The session went (evicted) or moved on (a later fetch of it came
                        // meanwhile): what was read is not sent; the fetcher starts over.
                        return FetchResponse::default().with_error_code(error.code());
                    }
                    *session_id
                }
                FetchContext::Sessionless | FetchContext::Error(_) => {
                    crate::fetch_session::INVALID_SESSION_ID
                }
            };
            // Kafka's `sizeOfThrottledPartitions`: what throttled partitions send a follower
            // counts against the leader's quota, in sync or not.
            broker
                .replicas
                .quotas
                .leader
                .record(read.throttled_bytes as u64, replication::now_ms());
            if read.reassignment_bytes > 0 {
                broker
                    .metrics
                    .reassignment_bytes_out_total
                    .inc_by(read.reassignment_bytes as u64);
            }
            for topic in &responses {
                let fetched: usize = topic
                    .partitions
                    .iter()
                    .filter_map(|p| p.records.as_ref())
                    .map(|records| records.len())
                    .sum();
                if fetched > 0 {
                    broker
                        .metrics
                        .bytes_out_total
                        .with_label_values(&[topic.topic.as_str()])
                        .inc_by(fetched as u64);
                }
            }
            let mut response = FetchResponse::default()
                .with_session_id(session_id)
                .with_responses(responses);
            if version >= NEW_LEADERS_SINCE {
                name_new_leaders(&broker.image(), &mut response);
            }
            return response;
        }
        if !watching {
            (watch, watching) = (Some(&waiter), true);
            continue;
        }
        tokio::select! {
            () = waiter.notified() => {}
            () = &mut placement_changed => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Runs `read` where blocking is allowed when it must open and map a cold segment (files
/// opened, indexes checked and maybe rebuilt): on the multi-threaded runtime the worker first
/// hands its other tasks to another thread (`block_in_place`), so the connections sharing it
/// are not held up. Reads of loaded segments, nearly all of them, run as they are.
fn reading<T>(cold: bool, read: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if cold && multi_thread {
        tokio::task::block_in_place(read)
    } else {
        read()
    }
}

/// What one pass over a fetch's partitions read.
#[derive(Debug, Default)]
struct ReadTotals {
    /// Record bytes in the responses.
    bytes: usize,
    /// Whether any partition failed (Kafka answers at once when one does).
    any_error: bool,
    /// For a follower: the record bytes of partitions whose leader replica is throttled.
    throttled_bytes: usize,
    /// For a follower a reassignment is adding: the record bytes it copies (Kafka's
    /// `ReassignmentBytesOutPerSec`).
    reassignment_bytes: usize,
}

/// Reads every partition of `topics` (the request's, or its session's) once; returns the
/// responses and what they hold. With `watch`, registers that wake-up with every partition served
/// here (before reading it).
fn read_partitions(
    broker: &Arc<Broker>,
    request: &FetchRequest,
    topics: &[FetchTopic],
    version: i16,
    watch: Option<&Arc<tokio::sync::Notify>>,
) -> (Vec<FetchableTopicResponse>, ReadTotals) {
    let image = broker.image();
    let replica_id = replica_id(request, version);
    // Kafka caps what a response carries at fetch.max.bytes, whatever the request asks.
    let mut remaining = usize::try_from(request.max_bytes)
        .unwrap_or(0)
        .min(broker.config.fetch_max_bytes);
    let mut totals = ReadTotals::default();
    let responses = topics
        .iter()
        .map(|topic| {
            let name = if version >= TOPIC_IDS_SINCE {
                image
                    .topic_by_id(super::topic_id(&topic.topic_id))
                    .map(|known| known.name.as_str())
                    .ok_or(ResponseError::UnknownTopicId)
            } else {
                Ok(topic.topic.as_str())
            };
            let partitions = topic
                .partitions
                .iter()
                .map(|fetch| {
                    let serving = name.and_then(|name| {
                        let (partition, _) = broker.replicas.serving(
                            &image,
                            name,
                            fetch.partition,
                            fetch.current_leader_epoch,
                        )?;
                        if let Some(waiter) = watch {
                            partition.fetch_waiters.watch(waiter);
                        }
                        Ok(partition)
                    });
                    let throttled = replica_id >= 0
                        && serving
                            .as_ref()
                            .is_ok_and(|partition| partition.leader_throttled());
                    let reassigning = replica_id >= 0
                        && serving
                            .as_ref()
                            .is_ok_and(|partition| partition.is_adding_replica(replica_id));
                    let data = read_partition(
                        broker,
                        name.unwrap_or_default(),
                        fetch,
                        replica_id,
                        request.isolation_level == READ_COMMITTED,
                        serving,
                        remaining,
                        totals.bytes == 0,
                    );
                    // An error or a diverging epoch is answered at once, as Kafka does.
                    totals.any_error |= data.error_code != 0 || data.diverging_epoch.epoch >= 0;
                    let bytes = data.records.as_ref().map_or(0, |records| records.len());
                    totals.bytes += bytes;
                    if throttled {
                        totals.throttled_bytes += bytes;
                    }
                    if reassigning {
                        totals.reassignment_bytes += bytes;
                    }
                    remaining = remaining.saturating_sub(bytes);
                    data
                })
                .collect();
            // Each version encodes one of the two: the name before v13, the id from it. The name
            // is kept either way for the bytes-out metric.
            FetchableTopicResponse::default()
                .with_topic(name.map_or_else(|_| topic.topic.clone(), super::topic_name))
                .with_topic_id(topic.topic_id)
                .with_partitions(partitions)
        })
        .collect();
    (responses, totals)
}

/// Reads one partition. `min_one_batch`: until some data is in the response, a batch larger than
/// the limits is still returned whole, so a consumer can always make progress (Kafka's rule).
#[allow(clippy::too_many_arguments)]
fn read_partition(
    broker: &Arc<Broker>,
    topic: &str,
    fetch: &FetchPartition,
    replica_id: i32,
    read_committed: bool,
    serving: Result<Arc<Partition>, ResponseError>,
    response_bytes_left: usize,
    min_one_batch: bool,
) -> PartitionData {
    let response = PartitionData::default().with_partition_index(fetch.partition);
    let partition = match serving {
        Ok(partition) => partition,
        // Kafka's "no high watermark" on an error.
        Err(error) => {
            return response
                .with_error_code(error.code())
                .with_high_watermark(-1)
        }
    };
    let limit = usize::try_from(fetch.partition_max_bytes)
        .unwrap_or(0)
        .min(response_bytes_left);
    let follower = (replica_id >= 0).then_some(replica_id);
    let mut last_stable_offset = -1;
    let read = partition.with_log(|log| {
        let high_watermark = partition.high_watermark();
        last_stable_offset = last_stable(log, high_watermark);
        let Some(follower) = follower else {
            // Consumers read only what the ISR has: up to the high watermark, and under
            // read_committed up to the last stable offset, told which transactions aborted.
            let max_offset = if read_committed {
                last_stable_offset
            } else {
                high_watermark
            };
            let cold = log.reads_cold_segment(fetch.fetch_offset);
            let read = reading(cold, || {
                log.read_up_to(fetch.fetch_offset, limit.max(1), max_offset)
            })?;
            let aborted = read_committed.then(|| {
                log.collect_aborted_txns(fetch.fetch_offset, read.next_offset)
                    .iter()
                    .map(|txn| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(txn.producer_id))
                            .with_first_offset(txn.first_offset)
                    })
                    .collect()
            });
            return Ok(Read::Records(read, aborted));
        };
        // Kafka's `followerReplicaOrThrow`: only an assigned replica reads past the high
        // watermark (a fetcher left over from a reassignment is told to refresh its metadata).
        let (is_replica, in_sync) =
            partition
                .replica_state()
                .leader()
                .map_or((false, false), |leader| {
                    (
                        leader.followers.contains_key(&follower),
                        leader.isr.contains(&follower),
                    )
                });
        if !is_replica {
            return Ok(Read::Refused(ResponseError::NotLeaderOrFollower));
        }
        if let Some(diverging) = replication::diverging_epoch(log, fetch) {
            return Ok(Read::Diverging(diverging));
        }
        // Kafka's `shouldLeaderThrottle`: a follower catching up on a throttled partition gets
        // no records while the leader's quota is exceeded (its fetch offset still counts); one
        // in the ISR is never held back.
        let read = if !in_sync
            && partition.leader_throttled()
            && broker
                .replicas
                .quotas
                .leader
                .is_exceeded(replication::now_ms())
        {
            skald_storage::ReadResult {
                records: Default::default(),
                first_batch_offset: None,
                next_offset: fetch.fetch_offset,
                log_start_offset: log.log_start_offset(),
                log_end_offset: log.log_end_offset(),
            }
        } else {
            let cold = log.reads_cold_segment(fetch.fetch_offset);
            reading(cold, || log.read(fetch.fetch_offset, limit.max(1)))?
        };
        replication::record_follower_fetch(broker, &partition, follower, fetch.fetch_offset);
        Ok(Read::Records(read, None))
    });
    let Some(read) = read else {
        return response.with_error_code(ResponseError::UnknownTopicOrPartition.code());
    };
    let high_watermark = partition.high_watermark();
    let response = response
        .with_high_watermark(high_watermark)
        .with_last_stable_offset(last_stable_offset);
    match read {
        Ok(Read::Records(read, aborted)) => {
            let records = if !min_one_batch && read.records.len() > limit {
                Default::default()
            } else {
                read.records
            };
            response
                .with_log_start_offset(read.log_start_offset)
                .with_aborted_transactions(aborted)
                .with_records(Some(records))
        }
        Ok(Read::Refused(error)) => response
            .with_error_code(error.code())
            .with_high_watermark(-1),
        Ok(Read::Diverging((epoch, end_offset))) => {
            let log_start_offset = partition
                .with_log(|log| log.log_start_offset())
                .unwrap_or(-1);
            response
                .with_log_start_offset(log_start_offset)
                .with_diverging_epoch(
                    EpochEndOffset::default()
                        .with_epoch(epoch)
                        .with_end_offset(end_offset),
                )
                .with_records(Some(Default::default()))
        }
        Err(skald_storage::Error::OffsetOutOfRange {
            log_start_offset, ..
        }) => response
            .with_error_code(ResponseError::OffsetOutOfRange.code())
            .with_log_start_offset(log_start_offset),
        Err(err) => {
            tracing::error!(topic, partition = fetch.partition, "read failed: {err}");
            broker.replicas.on_storage_error(&partition, &err);
            response.with_error_code(ResponseError::KafkaStorageError.code())
        }
    }
}

/// What a fetch found in one partition's log.
enum Read {
    /// With the aborted transactions of the range read, for a read_committed consumer.
    Records(skald_storage::ReadResult, Option<Vec<AbortedTransaction>>),
    /// A follower's log diverged from this leader's: the epoch and end offset it must cut to.
    Diverging((i32, i64)),
    /// The fetch is refused (a replica id that is not a follower of this partition).
    Refused(ResponseError),
}
