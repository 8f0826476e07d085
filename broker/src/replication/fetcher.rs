//! Replica fetchers (Kafka's `ReplicaFetcherThread`): one task per leader broker, fetching every
//! partition this broker follows there in one Fetch request (`replica_id` = this broker), so the
//! connections and requests grow with brokers, not partitions. Each keeps a fetch session with its
//! leader (KIP-227, [`super::session_handler`]): after the first full fetch, a request lists only
//! the partitions whose fetch position changed, and the answer only those with something new.
//!
//! Each response is applied partition by partition under the log's lock: records are appended
//! exactly as the leader stored them, the follower's high watermark becomes the leader's (capped
//! at its own log end), and a `diverging_epoch` answer (the leader's log took another path after
//! the epoch this follower last fetched in) truncates the divergent tail before fetching on.
//! Fetch errors that mean "ask again once the metadata moved" (NOT_LEADER_OR_FOLLOWER, fenced or
//! unknown epochs) back the partition off until its role changes, and so does a diverging epoch
//! that leaves the next fetch's position unchanged (it would come back forever: one error line).
//!
//! A leader answers within its long-poll, so a fetch that has not started answering 5 s after it
//! (`FETCH_RESPONSE_GRACE`) means a dead connection (a paused process, a lossy path): it is
//! dropped and dialled again, rather than waited on for `replica.socket.timeout.ms`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use skald_protocol::batch::RecordBatchHeader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::session_handler::FetchSessionHandler;
use super::state::Role;
use crate::broker::Broker;
use crate::config::ReplicationConfig;
use crate::replica_manager::Partition;

/// Fetch v12: the last version naming topics by name, with `last_fetched_epoch` and
/// `diverging_epoch` (KIP-595's truncation without OffsetsForLeaderEpoch).
const FETCH_VERSION: i16 = 12;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long past its long-poll (`replica.fetch.wait.max.ms`) a fetch may go unanswered before
/// the connection counts as dead. A leader answers when the wait is over whatever it holds, so
/// silence beyond this means a paused process or a path that lost packets: waiting out
/// `replica.socket.timeout.ms` (30 s) would keep the follower out of the ISR that long after the
/// peer is back. That setting stays the upper bound.
const FETCH_RESPONSE_GRACE: Duration = Duration::from_secs(5);
/// TCP keepalive on the connection to the leader: a peer that vanished while this follower reads a
/// long answer (no data of ours in flight, so no retransmission to time out) is noticed after
/// about `KEEPALIVE_IDLE + KEEPALIVE_PROBES * KEEPALIVE_INTERVAL`, not the kernel's two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(3);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_PROBES: u32 = 3;
/// How often the manager re-checks for fetcher tasks that ended while partitions remained.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// Which partitions this broker follows, by leader broker id.
#[derive(Debug, Default)]
pub struct FetchAssignments {
    by_leader: Mutex<Assigned>,
    changed: Notify,
}

/// The partitions followed, by leader, and how many times they were replaced.
#[derive(Debug, Default)]
struct Assigned {
    generation: u64,
    by_leader: BTreeMap<i32, Vec<Arc<Partition>>>,
}

impl FetchAssignments {
    /// Replaces the assignment (after each metadata image).
    pub fn set(&self, by_leader: BTreeMap<i32, Vec<Arc<Partition>>>) {
        {
            let mut assigned = self.lock();
            assigned.generation += 1;
            assigned.by_leader = by_leader;
        }
        self.changed.notify_waiters();
    }

    /// The partitions followed at `leader`, and the assignment's generation.
    fn of(&self, leader: i32) -> (u64, Vec<Arc<Partition>>) {
        let assigned = self.lock();
        let partitions = assigned.by_leader.get(&leader).cloned().unwrap_or_default();
        (assigned.generation, partitions)
    }

    fn leaders(&self) -> Vec<i32> {
        self.lock().by_leader.keys().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Assigned> {
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
    last_fetched_epoch: i32,
    log_start_offset: i64,
}

/// Fetches from `leader` until this broker follows nothing there any more.
async fn fetch_from(broker: Arc<Broker>, leader: i32) {
    let mut connection: Option<TcpStream> = None;
    let mut correlation_id = 0i32;
    // Partitions backed off after an error, until their leader epoch changes or the time passes.
    let mut backoff: HashMap<(String, i32), (i32, Instant)> = HashMap::new();
    let mut stalls = Stalls::default();
    // Whether each partition's last answer left it caught up with the leader's high watermark
    // (Kafka's `PartitionFetchState.isReplicaInSync`): a throttle never holds back one that is.
    let mut in_sync: HashMap<(String, i32), bool> = HashMap::new();
    let mut session = FetchSessionHandler::default();
    let mut generation = None;
    let config = broker.config.replication.clone();
    let backoff_for = Duration::from_millis(config.fetch_backoff_ms);
    let (first_byte_timeout, round_trip_timeout) = response_timeouts(&config);
    loop {
        let (assigned, partitions) = broker.replicas.fetch_assignments.of(leader);
        if partitions.is_empty() {
            return;
        }
        let now = Instant::now();
        let now_ms = super::now_ms();
        if generation != Some(assigned) {
            // Only when the assignment changed: at rest this loop must not cost a hash of every
            // partition per fetch.
            let followed: HashSet<(&str, i32)> = partitions
                .iter()
                .map(|p| (p.topic.as_str(), p.partition))
                .collect();
            in_sync.retain(|(topic, index), _| followed.contains(&(topic.as_str(), *index)));
            generation = Some(assigned);
        }
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
            // Keys are built only when there is something to look up.
            let key = || (partition.topic.clone(), partition.partition);
            if !backoff.is_empty() {
                let key = key();
                if let Some((epoch, until)) = backoff.get(&key) {
                    if *epoch == leader_epoch && *until > now {
                        continue;
                    }
                    backoff.remove(&key);
                }
            }
            // Kafka's `shouldFollowerThrottle`: a throttled partition still catching up is left
            // out of the fetch while the follower's quota is exceeded.
            if partition.follower_throttled()
                && !in_sync.get(&key()).copied().unwrap_or(false)
                && broker.replicas.quotas.follower.is_exceeded(now_ms)
            {
                continue;
            }
            let Some((position, log_start_offset)) =
                partition.with_log(|log| (FetchPosition::of(log), log.log_start_offset()))
            else {
                continue;
            };
            asked.push(Asked {
                partition,
                leader_epoch,
                fetch_offset: position.log_end_offset,
                last_fetched_epoch: position.last_fetched_epoch,
                log_start_offset,
            });
        }
        if asked.is_empty() {
            tokio::time::sleep(backoff_for.max(Duration::from_millis(10))).await;
            continue;
        }
        let request = fetch_request(&broker, &asked, &mut session);
        correlation_id = correlation_id.wrapping_add(1);
        let response = tokio::time::timeout(
            round_trip_timeout,
            round_trip(
                &broker,
                leader,
                &mut connection,
                correlation_id,
                &request,
                first_byte_timeout,
            ),
        )
        .await
        .unwrap_or_else(|_| Err("fetch timed out".to_string()));
        let response = match response {
            Ok(response) => response,
            Err(err) => {
                tracing::debug!(leader, "replica fetch failed: {err}");
                session.handle_error();
                connection = None;
                tokio::time::sleep(backoff_for).await;
                continue;
            }
        };
        session.handle_response(&response);
        if response.error_code != 0 {
            let error = ResponseError::try_from_code(response.error_code);
            if matches!(
                error,
                Some(
                    ResponseError::FetchSessionIdNotFound
                        | ResponseError::InvalidFetchSessionEpoch
                        | ResponseError::FetchSessionTopicIdError
                )
            ) {
                // The session is gone or out of step: the next fetch is full (Kafka's fetcher
                // goes on at once, without backing off).
                tracing::debug!(leader, "fetch session reset: {error:?}");
            } else {
                tracing::debug!(
                    leader,
                    "replica fetch refused with error code {}",
                    response.error_code
                );
                connection = None;
                tokio::time::sleep(backoff_for).await;
            }
            continue;
        }
        let failed = tokio::task::block_in_place(|| {
            apply_response(&broker, &asked, response, &mut stalls, &mut in_sync)
        });
        let until = Instant::now() + backoff_for;
        for (topic, partition, leader_epoch) in failed {
            backoff.insert((topic, partition), (leader_epoch, until));
        }
    }
}

/// The next fetch: every partition of `asked` with its current position, as the session
/// needs it (all of them in a full fetch, else only what changed and what left).
fn fetch_request(
    broker: &Broker,
    asked: &[Asked],
    session: &mut FetchSessionHandler,
) -> FetchRequest {
    let config = &broker.config.replication;
    let wanted = asked
        .iter()
        .map(|one| {
            (
                one.partition.topic.as_str(),
                FetchPartition::default()
                    .with_partition(one.partition.partition)
                    .with_current_leader_epoch(one.leader_epoch)
                    .with_fetch_offset(one.fetch_offset)
                    .with_last_fetched_epoch(one.last_fetched_epoch)
                    .with_log_start_offset(one.log_start_offset)
                    .with_partition_max_bytes(config.fetch_max_bytes),
            )
        })
        .collect();
    let fetch = session.build(wanted);
    FetchRequest::default()
        .with_replica_id(BrokerId(broker.config.node_id))
        .with_max_wait_ms(config.fetch_wait_max_ms)
        .with_min_bytes(config.fetch_min_bytes)
        .with_max_bytes(config.fetch_response_max_bytes)
        .with_session_id(fetch.session_id)
        .with_session_epoch(fetch.epoch)
        .with_topics(fetch.topics)
        .with_forgotten_topics_data(fetch.forgotten)
}

/// Sends one Fetch to `leader` (dialling it if needed) and reads its answer.
async fn round_trip(
    broker: &Broker,
    leader: i32,
    connection: &mut Option<TcpStream>,
    correlation_id: i32,
    request: &FetchRequest,
    first_byte_timeout: Duration,
) -> Result<FetchResponse, String> {
    if connection.is_none() {
        let address = leader_address(broker, leader)
            .ok_or_else(|| format!("broker {leader} has no known endpoint"))?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&address))
            .await
            .map_err(|_| format!("connecting to {address} timed out"))?
            .map_err(|err| format!("cannot connect to {address}: {err}"))?;
        let _ = stream.set_nodelay(true);
        if let Err(err) = detect_dead_peers(&stream, first_byte_timeout) {
            // Only slower detection of a dead leader: replicate anyway.
            tracing::debug!(
                leader,
                "cannot set keepalive on the connection to {address}: {err}"
            );
        }
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
    let limit = broker
        .config
        .socket_request_max_bytes
        .max(usize::try_from(broker.config.replication.fetch_response_max_bytes).unwrap_or(0) * 2);
    let body = exchange(stream, &frame, limit, first_byte_timeout).await?;
    let (correlation, response) =
        skald_protocol::codec::decode_response::<FetchResponse>(body, ApiKey::Fetch, FETCH_VERSION)
            .map_err(|err| err.to_string())?;
    if correlation != correlation_id {
        return Err("fetch response correlation id mismatch".into());
    }
    Ok(response)
}

/// Writes one request frame and reads the answer's body (at most `limit` bytes), whose first
/// bytes must come within `first_byte_timeout`.
async fn exchange(
    stream: &mut TcpStream,
    frame: &[u8],
    limit: usize,
    first_byte_timeout: Duration,
) -> Result<Bytes, String> {
    let sent_and_sized = async {
        stream.write_all(frame).await?;
        stream.read_i32().await
    };
    let size = tokio::time::timeout(first_byte_timeout, sent_and_sized)
        .await
        .map_err(|_| "the leader did not answer within its fetch wait and grace".to_string())?
        .map_err(|err| err.to_string())?;
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
    Ok(body.freeze())
}

/// How long a fetch may take to start answering, and to answer whole: the long-poll plus
/// [`FETCH_RESPONSE_GRACE`] for the first bytes, and `replica.socket.timeout.ms` (Kafka's bound on
/// a replica fetch) for the whole answer, plus the long-poll as before. Neither is below the
/// long-poll itself.
fn response_timeouts(config: &ReplicationConfig) -> (Duration, Duration) {
    let wait = Duration::from_millis(u64::try_from(config.fetch_wait_max_ms).unwrap_or(0));
    let socket_timeout = Duration::from_millis(config.socket_timeout_ms);
    let first_byte = (wait + FETCH_RESPONSE_GRACE).min(socket_timeout).max(wait);
    (first_byte, socket_timeout + wait)
}

/// TCP keepalive with short timers, and `TCP_USER_TIMEOUT` (Linux) so that a request that the
/// leader's host never acknowledges breaks the connection after `unacknowledged_max`, as the
/// fetch's own deadline would, rather than after the kernel's retransmissions (~15 minutes).
fn detect_dead_peers(stream: &TcpStream, unacknowledged_max: Duration) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    socket.set_tcp_keepalive(&keepalive)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket.set_tcp_user_timeout(Some(unacknowledged_max.max(Duration::from_secs(1))))?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = unacknowledged_max;
    Ok(())
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
/// Notes which partitions the answer left caught up with the leader's high watermark, and counts
/// the throttled partitions' bytes against the follower quota.
fn apply_response(
    broker: &Arc<Broker>,
    asked: &[Asked],
    response: FetchResponse,
    stalls: &mut Stalls,
    in_sync: &mut HashMap<(String, i32), bool>,
) -> Vec<(String, i32, i32)> {
    let now_ms = super::now_ms();
    let mut failed = Vec::new();
    let mut truncated = false;
    if response
        .responses
        .iter()
        .all(|topic| topic.partitions.is_empty())
    {
        // An incremental answer with nothing new (a follower at rest).
        return failed;
    }
    // By (topic, partition): linear in the partitions asked for, however many are answered.
    let asked: HashMap<(&str, i32), &Asked> = asked
        .iter()
        .map(|one| ((one.partition.topic.as_str(), one.partition.partition), one))
        .collect();
    for topic in response.responses {
        for data in topic.partitions {
            let Some(&one) = asked.get(&(topic.topic.as_str(), data.partition_index)) else {
                continue;
            };
            let answered = data.error_code == 0;
            let leader_high_watermark = data.high_watermark;
            let bytes = data.records.as_ref().map_or(0, |records| records.len());
            if answered && one.partition.follower_throttled() {
                // Kafka records a throttled partition's bytes whether or not it is in sync.
                broker.replicas.quotas.follower.record(bytes as u64, now_ms);
            }
            if answered && bytes > 0 && one.partition.is_adding_replica(broker.config.node_id) {
                broker
                    .metrics
                    .reassignment_bytes_in_total
                    .inc_by(bytes as u64);
            }
            let applied = apply_partition(broker, one, data, stalls);
            if answered {
                in_sync.insert(
                    (one.partition.topic.clone(), one.partition.partition),
                    one.partition.log_end_offset() >= leader_high_watermark,
                );
            }
            match applied {
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
fn apply_partition(
    broker: &Arc<Broker>,
    asked: &Asked,
    data: PartitionData,
    stalls: &mut Stalls,
) -> Applied {
    let partition = &asked.partition;
    let mut rolled = None;
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
            let diverging = (data.diverging_epoch.epoch, data.diverging_epoch.end_offset);
            let truncated = truncate_diverged(log, diverging, partition.high_watermark())?;
            partition.follower_log_changed(log.log_end_offset(), -1);
            if truncated.progressed() {
                tracing::info!(
                    topic = partition.topic,
                    partition = partition.partition,
                    diverging_epoch = diverging.0,
                    leader_end_offset = diverging.1,
                    from = truncated.before.log_end_offset,
                    to = truncated.after.log_end_offset,
                    last_fetched_epoch = truncated.after.last_fetched_epoch,
                    "follower log diverged from the leader's: truncated"
                );
                stalls.clear(&partition.topic, partition.partition);
                return Ok(Applied::Truncated);
            }
            // The next fetch would ask the very question this answers: a bug on one side or
            // the other. Said once, then the partition waits like after any error (its leader
            // epoch changing ends the wait at once).
            let key = (partition.topic.clone(), partition.partition);
            if stalls.first_report(key, truncated.after, diverging) {
                tracing::error!(
                    topic = partition.topic,
                    partition = partition.partition,
                    diverging_epoch = diverging.0,
                    leader_end_offset = diverging.1,
                    log_end_offset = truncated.after.log_end_offset,
                    last_fetched_epoch = truncated.after.last_fetched_epoch,
                    "the leader's diverging epoch changes nothing in this follower's log; \
                     backing off instead of asking again"
                );
            }
            return Ok(Applied::BackOff);
        }
        stalls.clear(&partition.topic, partition.partition);
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
            rolled = log.take_pending_flush();
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
    if let Some(flush) = rolled {
        broker.log_flusher.schedule(broker, partition, flush);
    }
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

/// What the next fetch of a partition sends: its log end offset and the epoch of its latest leader
/// epoch entry (`last_fetched_epoch`). The leader answers the same position the same way, so a
/// divergence that leaves it unchanged would be asked about again and again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FetchPosition {
    pub log_end_offset: i64,
    pub last_fetched_epoch: i32,
}

impl FetchPosition {
    pub(crate) fn of(log: &skald_storage::Log) -> FetchPosition {
        FetchPosition {
            log_end_offset: log.log_end_offset(),
            last_fetched_epoch: log.latest_leader_epoch().unwrap_or(-1),
        }
    }
}

/// The fetch positions before and after a truncation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Truncated {
    pub before: FetchPosition,
    pub after: FetchPosition,
}

impl Truncated {
    pub(crate) fn progressed(&self) -> bool {
        self.before != self.after
    }
}

/// Cuts `log` where the leader's `diverging` answer `(epoch, end offset)` says it left the
/// leader's (the leader epochs starting at or past the cut go with it, even when no record does).
pub(crate) fn truncate_diverged(
    log: &mut skald_storage::Log,
    diverging: (i32, i64),
    high_watermark: i64,
) -> Result<Truncated, skald_storage::Error> {
    let before = FetchPosition::of(log);
    let to = truncation_offset(log, diverging.0, diverging.1, high_watermark);
    log.truncate_to(to)?;
    Ok(Truncated {
        before,
        after: FetchPosition::of(log),
    })
}

/// Partitions whose diverging-epoch answer left their fetch position unchanged, with the answer
/// and position last reported, so that a repeat is logged once and not at every fetch.
#[derive(Debug, Default)]
pub(crate) struct Stalls {
    reported: HashMap<(String, i32), (FetchPosition, (i32, i64))>,
}

impl Stalls {
    /// Whether this stall is new (not the one last reported for the partition).
    pub(crate) fn first_report(
        &mut self,
        key: (String, i32),
        position: FetchPosition,
        diverging: (i32, i64),
    ) -> bool {
        self.reported.insert(key, (position, diverging)) != Some((position, diverging))
    }

    /// The partition made progress: a later stall is news again.
    pub(crate) fn clear(&mut self, topic: &str, partition: i32) {
        // Almost always empty: no key is built for the partitions that never stalled.
        if !self.reported.is_empty() {
            self.reported.remove(&(topic.to_string(), partition));
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

#[cfg(test)]
mod tests {
    use skald_protocol::batch::testing::simple_batch;
    use skald_storage::{Log, LogConfig};

    use super::*;

    /// A follower's log: `batches` batches of 2 records written in leader epoch 1, then, if
    /// `elected` is newer, that epoch recorded at the log end by a leadership that appended
    /// nothing.
    fn log_with_empty_epoch(dir: &std::path::Path, batches: i64, elected: i32) -> Log {
        let mut log = Log::open(dir, LogConfig::default()).unwrap();
        for i in 0..batches {
            log.append(&mut simple_batch(0, 2, i, 10), None, 1).unwrap();
        }
        log.assign_leader_epoch(elected, log.log_end_offset())
            .unwrap();
        log
    }

    #[test]
    fn a_divergence_at_the_log_end_moves_the_next_fetchs_epoch() {
        // The tracker's loop: the new leader answers last fetched epoch 2 with (1, 2739-like
        // end = this log's end). Nothing is cut, but epoch 2 must go so that the next fetch
        // sends epoch 1 — which the leader then accepts.
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_with_empty_epoch(dir.path(), 5, 2);
        assert_eq!(
            FetchPosition::of(&log),
            FetchPosition {
                log_end_offset: 10,
                last_fetched_epoch: 2
            }
        );
        let truncated = truncate_diverged(&mut log, (1, 10), 10).unwrap();
        assert_eq!(
            truncated,
            Truncated {
                before: FetchPosition {
                    log_end_offset: 10,
                    last_fetched_epoch: 2
                },
                after: FetchPosition {
                    log_end_offset: 10,
                    last_fetched_epoch: 1
                },
            }
        );
        assert!(truncated.progressed());
        assert_eq!(log.read(0, usize::MAX).unwrap().next_offset, 10);
    }

    #[test]
    fn a_divergence_that_changes_nothing_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_with_empty_epoch(dir.path(), 5, 1);
        // A (wrong) answer saying epoch 1 ends where this log ends: nothing to cut, no epoch
        // past the end, so the next fetch would ask exactly the same.
        let truncated = truncate_diverged(&mut log, (1, 10), 10).unwrap();
        let position = FetchPosition {
            log_end_offset: 10,
            last_fetched_epoch: 1,
        };
        assert_eq!(
            truncated,
            Truncated {
                before: position,
                after: position
            }
        );
        assert!(!truncated.progressed());

        let mut stalls = Stalls::default();
        let key = || ("chaos".to_string(), 0);
        assert!(stalls.first_report(key(), position, (1, 10)));
        assert!(!stalls.first_report(key(), position, (1, 10)), "a repeat");
        assert!(
            stalls.first_report(("chaos".to_string(), 1), position, (1, 10)),
            "another partition"
        );
        assert!(
            stalls.first_report(key(), position, (0, 4)),
            "another answer"
        );
        stalls.clear("chaos", 0);
        assert!(
            stalls.first_report(key(), position, (0, 4)),
            "after progress"
        );
    }

    #[tokio::test]
    async fn a_leader_that_accepts_but_never_answers_is_given_up_on_at_the_deadline() {
        // A paused (SIGSTOP) leader: its kernel accepts and acknowledges, nothing answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut stream = TcpStream::connect(address).await.unwrap();
        let (_held, _) = listener.accept().await.unwrap();
        detect_dead_peers(&stream, Duration::from_secs(1)).unwrap();
        let started = Instant::now();
        let answer = exchange(
            &mut stream,
            b"\0\0\0\x01x",
            1024,
            Duration::from_millis(300),
        )
        .await;
        let waited = started.elapsed();
        assert_eq!(
            answer,
            Err("the leader did not answer within its fetch wait and grace".to_string())
        );
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
            "{waited:?}"
        );

        // An answer that comes in time is read whole.
        let (mut stream, mut peer) = {
            let connecting = TcpStream::connect(address);
            let (stream, accepted) = tokio::join!(connecting, listener.accept());
            (stream.unwrap(), accepted.unwrap().0)
        };
        let answering = async {
            let mut request = [0u8; 5];
            peer.read_exact(&mut request).await.unwrap();
            peer.write_all(b"\0\0\0\x04abcd").await.unwrap();
        };
        let (answer, ()) = tokio::join!(
            exchange(&mut stream, b"\0\0\0\x01x", 1024, Duration::from_secs(5)),
            answering
        );
        assert_eq!(answer, Ok(Bytes::from_static(b"abcd")));
    }

    #[test]
    fn a_silent_leader_is_given_up_on_soon_after_its_long_poll() {
        let mut config = ReplicationConfig {
            lag_time_max_ms: 30_000,
            unresponsive_time_max_ms: 3_000,
            fetch_wait_max_ms: 500,
            fetch_min_bytes: 1,
            fetch_max_bytes: 1 << 20,
            fetch_response_max_bytes: 10 << 20,
            fetch_backoff_ms: 200,
            socket_timeout_ms: 30_000,
            high_watermark_checkpoint_interval_ms: 5_000,
            quota_window_num: 11,
            quota_window_size_seconds: 1,
        };
        assert_eq!(
            response_timeouts(&config),
            (Duration::from_millis(5_500), Duration::from_millis(30_500))
        );
        // replica.socket.timeout.ms stays the upper bound...
        config.socket_timeout_ms = 2_000;
        assert_eq!(
            response_timeouts(&config),
            (Duration::from_millis(2_000), Duration::from_millis(2_500))
        );
        // ...but the long-poll is always waited out.
        config.fetch_wait_max_ms = 3_000;
        assert_eq!(response_timeouts(&config).0, Duration::from_millis(3_000));
    }
}
