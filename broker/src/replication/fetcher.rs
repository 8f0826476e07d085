//! Replica fetchers (Kafka's `ReplicaFetcherThread`): one task per leader broker, fetching every
//! partition this broker follows there in one Fetch request (`replica_id` = this broker), so the
//! connections and requests grow with brokers, not partitions.
//!
//! Each response is applied partition by partition under the log's lock: records are appended
//! exactly as the leader stored them, the follower's high watermark becomes the leader's (capped
//! at its own log end), and a `diverging_epoch` answer (the leader's log took another path after
//! the epoch this follower last fetched in) truncates the divergent tail before fetching on.
//! Fetch errors that mean "ask again once the metadata moved" (NOT_LEADER_OR_FOLLOWER, fenced or
//! unknown epochs) back the partition off until its role changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use skald_protocol::batch::RecordBatchHeader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::state::Role;
use crate::broker::Broker;
use crate::replica_manager::Partition;

/// Fetch v12: the last version naming topics by name, with `last_fetched_epoch` and
/// `diverging_epoch` (KIP-595's truncation without OffsetsForLeaderEpoch).
const FETCH_VERSION: i16 = 12;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the manager re-checks for fetcher tasks that ended while partitions remained.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// Which partitions this broker follows, by leader broker id.
#[derive(Debug, Default)]
pub struct FetchAssignments {
    by_leader: Mutex<BTreeMap<i32, Vec<Arc<Partition>>>>,
    changed: Notify,
}

impl FetchAssignments {
    /// Replaces the assignment (after each metadata image).
    pub fn set(&self, by_leader: BTreeMap<i32, Vec<Arc<Partition>>>) {
        *self.lock() = by_leader;
        self.changed.notify_waiters();
    }

    fn of(&self, leader: i32) -> Vec<Arc<Partition>> {
        self.lock().get(&leader).cloned().unwrap_or_default()
    }

    fn leaders(&self) -> Vec<i32> {
        self.lock().keys().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, Vec<Arc<Partition>>>> {
        self.by_leader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Keeps one fetcher task per leader that this broker follows partitions of, until shutdown.
pub async fn run(broker: Arc<Broker>, mut stop: broadcast::Receiver<()>) {
    let mut tasks: HashMap<i32, JoinHandle<()>> = HashMap::new();
    loop {
        let assignments = &broker.replicas.fetch_assignments;
        let changed = assignments.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        tasks.retain(|_, task| !task.is_finished());
        for leader in assignments.leaders() {
            tasks
                .entry(leader)
                .or_insert_with(|| tokio::spawn(fetch_from(Arc::clone(&broker), leader)));
        }
        tokio::select! {
            () = &mut changed => {}
            () = tokio::time::sleep(RECONCILE_EVERY) => {}
            _ = stop.recv() => break,
        }
    }
    for (_, task) in tasks {
        task.abort();
        let _ = task.await;
    }
}

/// What was asked of one partition, to apply its answer against.
struct Asked {
    partition: Arc<Partition>,
    leader_epoch: i32,
    fetch_offset: i64,
}

/// Fetches from `leader` until this broker follows nothing there any more.
async fn fetch_from(broker: Arc<Broker>, leader: i32) {
    let mut connection: Option<TcpStream> = None;
    let mut correlation_id = 0i32;
    // Partitions backed off after an error, until their leader epoch changes or the time passes.
    let mut backoff: HashMap<(String, i32), (i32, Instant)> = HashMap::new();
    let config = broker.config.replication.clone();
    let backoff_for = Duration::from_millis(config.fetch_backoff_ms);
    loop {
        let partitions = broker.replicas.fetch_assignments.of(leader);
        if partitions.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut asked = Vec::new();
        for partition in partitions {
            let Role::Follower {
                leader: followed,
                leader_epoch,
            } = partition.role()
            else {
                continue;
            };
            if followed != leader {
                continue;
            }
            let key = (partition.topic.clone(), partition.partition);
            if let Some((epoch, until)) = backoff.get(&key) {
                if *epoch == leader_epoch && *until > now {
                    continue;
                }
                backoff.remove(&key);
            }
            let Some(fetch_offset) = partition.with_log(|log| log.log_end_offset()) else {
                continue;
            };
            asked.push(Asked {
                partition,
                leader_epoch,
                fetch_offset,
            });
        }
        if asked.is_empty() {
            tokio::time::sleep(backoff_for.max(Duration::from_millis(10))).await;
            continue;
        }
        let request = fetch_request(&broker, &asked);
        correlation_id = correlation_id.wrapping_add(1);
        let timeout = Duration::from_millis(config.socket_timeout_ms)
            + Duration::from_millis(u64::try_from(config.fetch_wait_max_ms).unwrap_or(0));
        let response = tokio::time::timeout(
            timeout,
            round_trip(&broker, leader, &mut connection, correlation_id, &request),
        )
        .await
        .unwrap_or_else(|_| Err("fetch timed out".to_string()));
        let response = match response {
            Ok(response) => response,
            Err(err) => {
                tracing::debug!(leader, "replica fetch failed: {err}");
                connection = None;
                tokio::time::sleep(backoff_for).await;
                continue;
            }
        };
        let failed = tokio::task::block_in_place(|| apply_response(&broker, &asked, response));
        let until = Instant::now() + backoff_for;
        for (topic, partition, leader_epoch) in failed {
            backoff.insert((topic, partition), (leader_epoch, until));
        }
    }
}

fn fetch_request(broker: &Broker, asked: &[Asked]) -> FetchRequest {
    let config = &broker.config.replication;
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for one in asked {
        let (last_fetched_epoch, log_start_offset) = one
            .partition
            .with_log(|log| {
                (
                    log.latest_leader_epoch().unwrap_or(-1),
                    log.log_start_offset(),
                )
            })
            .unwrap_or((-1, -1));
        topics
            .entry(one.partition.topic.as_str())
            .or_default()
            .push(
                FetchPartition::default()
                    .with_partition(one.partition.partition)
                    .with_current_leader_epoch(one.leader_epoch)
                    .with_fetch_offset(one.fetch_offset)
                    .with_last_fetched_epoch(last_fetched_epoch)
                    .with_log_start_offset(log_start_offset)
                    .with_partition_max_bytes(config.fetch_max_bytes),
            );
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(broker.config.node_id))
        .with_max_wait_ms(config.fetch_wait_max_ms)
        .with_min_bytes(config.fetch_min_bytes)
        .with_max_bytes(config.fetch_response_max_bytes)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    FetchTopic::default()
                        .with_topic(crate::api::topic_name(topic))
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

/// Sends one Fetch to `leader` (dialling it if needed) and reads its answer.
async fn round_trip(
    broker: &Broker,
    leader: i32,
    connection: &mut Option<TcpStream>,
    correlation_id: i32,
    request: &FetchRequest,
) -> Result<FetchResponse, String> {
    if connection.is_none() {
        let address = leader_address(broker, leader)
            .ok_or_else(|| format!("broker {leader} has no known endpoint"))?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&address))
            .await
            .map_err(|_| format!("connecting to {address} timed out"))?
            .map_err(|err| format!("cannot connect to {address}: {err}"))?;
        let _ = stream.set_nodelay(true);
        *connection = Some(stream);
    }
    let stream = connection.as_mut().ok_or("not connected")?;
    let frame = skald_protocol::codec::encode_request_frame(
        ApiKey::Fetch,
        FETCH_VERSION,
        correlation_id,
        "skald-replica-fetcher",
        request,
    )
    .map_err(|err| err.to_string())?;
    stream
        .write_all(&frame)
        .await
        .map_err(|err| err.to_string())?;
    let size = stream.read_i32().await.map_err(|err| err.to_string())?;
    let limit = broker
        .config
        .socket_request_max_bytes
        .max(usize::try_from(broker.config.replication.fetch_response_max_bytes).unwrap_or(0) * 2);
    let size = usize::try_from(size)
        .ok()
        .filter(|size| (4..=limit).contains(size))
        .ok_or_else(|| format!("bad fetch response size {size}"))?;
    // Read straight into spare capacity: zeroing a response-sized buffer first would touch every
    // byte once more.
    let mut body = BytesMut::with_capacity(size);
    while body.len() < size {
        let read = (&mut *stream)
            .take((size - body.len()) as u64)
            .read_buf(&mut body)
            .await
            .map_err(|err| err.to_string())?;
        if read == 0 {
            return Err("the leader closed the connection mid-response".into());
        }
    }
    let body: Bytes = body.freeze();
    let (correlation, response) =
        skald_protocol::codec::decode_response::<FetchResponse>(body, ApiKey::Fetch, FETCH_VERSION)
            .map_err(|err| err.to_string())?;
    if correlation != correlation_id {
        return Err("fetch response correlation id mismatch".into());
    }
    if response.error_code != 0 {
        return Err(format!(
            "fetch refused with error code {}",
            response.error_code
        ));
    }
    Ok(response)
}

/// The leader's client endpoint as registered (the first listener, as for clients).
fn leader_address(broker: &Broker, leader: i32) -> Option<String> {
    let image = broker.image();
    let endpoint = image.brokers.get(&leader)?.endpoints.first()?.clone();
    Some(if endpoint.host.contains(':') {
        format!("[{}]:{}", endpoint.host, endpoint.port)
    } else {
        format!("{}:{}", endpoint.host, endpoint.port)
    })
}

/// Applies a fetch response; returns the partitions to back off `(topic, partition, epoch)`.
fn apply_response(
    broker: &Broker,
    asked: &[Asked],
    response: FetchResponse,
) -> Vec<(String, i32, i32)> {
    let mut failed = Vec::new();
    let mut truncated = false;
    for topic in response.responses {
        for data in topic.partitions {
            let Some(one) = asked.iter().find(|one| {
                one.partition.topic == topic.topic.as_str()
                    && one.partition.partition == data.partition_index
            }) else {
                continue;
            };
            match apply_partition(broker, one, data) {
                Applied::Done => {}
                Applied::Truncated => truncated = true,
                Applied::BackOff => failed.push((
                    one.partition.topic.clone(),
                    one.partition.partition,
                    one.leader_epoch,
                )),
            }
        }
    }
    if truncated {
        // Kafka's `LogManager.truncateTo` checkpoints recovery points at once: the one on disk
        // may lie past the cut, and a crash would then trust whatever is written there next.
        broker.replicas.checkpoint_recovery_points();
    }
    failed
}

/// What applying one partition's answer did.
enum Applied {
    Done,
    /// The log was cut back (diverging epoch or out of range).
    Truncated,
    /// An error the partition waits out (`replica.fetch.backoff.ms`, or a new leader epoch).
    BackOff,
}

/// Applies one partition's answer (under its log's lock).
fn apply_partition(broker: &Broker, asked: &Asked, data: PartitionData) -> Applied {
    let partition = &asked.partition;
    let applied = partition.with_log(|log| {
        // The role may have changed while the fetch was out: then this answer is stale.
        let still_following = matches!(
            partition.role(),
            Role::Follower { leader_epoch, .. } if leader_epoch == asked.leader_epoch
        );
        if !still_following || log.log_end_offset() != asked.fetch_offset {
            return Ok(Applied::Done);
        }
        let error = ResponseError::try_from_code(data.error_code);
        match error {
            None => {}
            Some(ResponseError::OffsetOutOfRange) => {
                // Below the leader's start: start over there. Above its end (its log is shorter
                // and no epoch told us where we diverged): cut back to its high watermark, or
                // this follower's own if higher.
                if asked.fetch_offset < data.log_start_offset {
                    log.truncate_fully_and_start_at(data.log_start_offset)?;
                } else {
                    // Never below this follower's own high watermark: what it has below that
                    // is committed, and a new leader's high watermark can lag it.
                    let keep = data.high_watermark.max(partition.high_watermark()).max(0);
                    if keep >= log.log_end_offset() {
                        // Nothing this follower may cut: wait for the leader to catch up or
                        // for new metadata.
                        return Ok(Applied::BackOff);
                    }
                    log.truncate_to(keep)?;
                }
                tracing::info!(
                    topic = partition.topic,
                    partition = partition.partition,
                    from = asked.fetch_offset,
                    to = log.log_end_offset(),
                    "follower log cut back after OFFSET_OUT_OF_RANGE from the leader"
                );
                partition.follower_log_changed(log.log_end_offset(), -1);
                return Ok(Applied::Truncated);
            }
            Some(other) => {
                tracing::debug!(
                    topic = partition.topic,
                    partition = partition.partition,
                    "replica fetch answered {other:?}"
                );
                return Ok(Applied::BackOff);
            }
        }
        if data.diverging_epoch.epoch >= 0 {
            let to = truncation_offset(
                log,
                data.diverging_epoch.epoch,
                data.diverging_epoch.end_offset,
                partition.high_watermark(),
            );
            tracing::info!(
                topic = partition.topic,
                partition = partition.partition,
                diverging_epoch = data.diverging_epoch.epoch,
                leader_end_offset = data.diverging_epoch.end_offset,
                from = log.log_end_offset(),
                to,
                "follower log diverged from the leader's: truncating"
            );
            log.truncate_to(to)?;
            partition.follower_log_changed(log.log_end_offset(), -1);
            return Ok(Applied::Truncated);
        }
        if let Some(records) = data.records.filter(|records| !records.is_empty()) {
            // An empty log starting inside the leader's first batch (the leader's log start was
            // moved into a batch by DeleteRecords, and this follower started there): the batch
            // comes whole, so the log restarts at its base (Kafka's follower append does the
            // same); the leader's log start offset below brings the start back up.
            if log.log_end_offset() == log.log_start_offset() {
                if let Ok(first) = RecordBatchHeader::parse(&records) {
                    if first.base_offset < log.log_end_offset()
                        && first.last_offset() >= log.log_end_offset()
                    {
                        log.truncate_fully_and_start_at(first.base_offset)?;
                    }
                }
            }
            // Stored as the leader sent them: no copy, nothing patched.
            let appended = log.append_as_follower(&records)?;
            broker.metrics.set_partition_log(
                &partition.topic,
                partition.partition,
                log.log_end_offset(),
                log.size_bytes(),
            );
            tracing::trace!(
                topic = partition.topic,
                partition = partition.partition,
                last_offset = appended.last_offset,
                "follower appended"
            );
        }
        if data.log_start_offset > log.log_start_offset()
            && data.log_start_offset <= log.log_end_offset()
        {
            // Kafka's follower `maybeIncrementLogStartOffset`: DeleteRecords and retention on
            // the leader reach the followers.
            log.delete_records_before(data.log_start_offset)?;
        }
        partition.follower_log_changed(log.log_end_offset(), data.high_watermark);
        Ok::<Applied, skald_storage::Error>(Applied::Done)
    });
    match applied {
        None => Applied::Done,
        Some(Ok(applied)) => applied,
        Some(Err(err)) => {
            tracing::error!(
                topic = partition.topic,
                partition = partition.partition,
                "follower could not apply the leader's records: {err}"
            );
            broker.replicas.on_storage_error(partition, &err);
            Applied::BackOff
        }
    }
}

/// Kafka's `getOffsetTruncationState` for a diverging epoch `(epoch, end_offset)` from the
/// leader: where this follower's log must be cut.
fn truncation_offset(
    log: &skald_storage::Log,
    leader_epoch: i32,
    leader_end_offset: i64,
    high_watermark: i64,
) -> i64 {
    let log_end_offset = log.log_end_offset();
    if leader_end_offset < 0 {
        return high_watermark.min(log_end_offset);
    }
    match log.end_offset_for_epoch(leader_epoch) {
        // Both know the epoch: keep what both have of it. If this log does not know it, cut to
        // the end of its largest earlier epoch; the next fetch checks again from there.
        Some((_, local_end_offset)) => local_end_offset.min(leader_end_offset).min(log_end_offset),
        None => leader_end_offset.min(log_end_offset),
    }
}
