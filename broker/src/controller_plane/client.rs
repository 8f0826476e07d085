//! [`RemoteControllers`]: a broker's connections to the controller quorum's voters. Requests go
//! to the leader when it is known and to the voters in turn otherwise (skipping, while others
//! remain, a voter that just failed to answer); a NOT_CONTROLLER answer names the leader, which
//! becomes the next target. One request at a time per connection (these are rare and small),
//! each with a timeout; a connection that fails or times out is dropped and re-dialled.
//!
//! Heartbeats have a connection of their own to each voter ([`Lane::Heartbeats`]) and a timeout
//! of their own: a heartbeat must never wait behind a forwarded operation or an AlterPartition
//! that waits for a commit, nor for `controller.quorum.request.timeout.ms` on a controller that
//! stopped answering — by then the new controller would have fenced this broker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::broker_registration_request::Listener;
use kafka_protocol::messages::{
    AlterPartitionResponse, ApiKey, BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerId,
    BrokerRegistrationRequest, BrokerRegistrationResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use skald_controller::follower::{MetadataFetch, MetadataUpdate};
use skald_controller::{
    AlterPartitionRequest, BrokerRegistration, ControllerOp, ControllerReply, PartitionOutcome,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::alter_partition;
use super::rpc::{self, ControlRequest, ControlResponse, StatusReply};
use crate::config::Voter;
use crate::metadata::driver::{Heartbeat, HeartbeatReply};
use crate::metadata::ControlError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Keepalive probes on a controller connection: after this long idle, this often, this many
/// unanswered before the connection is given up (about 4 s in all).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(1);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_RETRIES: u32 = 3;
/// How long sent bytes may go unacknowledged before the connection is given up.
const UNACKNOWLEDGED_MAX: Duration = Duration::from_secs(5);
/// BrokerRegistration v1 and BrokerHeartbeat v0: what every KRaft controller serves.
const REGISTRATION_VERSION: i16 = 1;
const HEARTBEAT_VERSION: i16 = 0;

/// How long a voter that failed to answer is passed over while others can be tried.
const UNRESPONSIVE_SKIP: Duration = Duration::from_secs(2);

/// Which of a voter's connections a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Registration, forwarded operations, AlterPartition, metadata fetches, status.
    Requests,
    /// Broker heartbeats only.
    Heartbeats,
}

#[derive(Clone)]
pub struct RemoteControllers {
    inner: Arc<Inner>,
    /// The active controller as last learned (-1: unknown); shared by every
    /// [`RemoteControllers::with_own_connections`] copy, so what one learns the others use.
    leader: Arc<AtomicI32>,
}

struct Inner {
    cluster_id: String,
    voters: Vec<Voter>,
    connections: HashMap<i32, VoterSlot>,
    next_voter: AtomicUsize,
    next_correlation: AtomicI32,
    request_timeout: Duration,
    frame_bytes_max: usize,
    /// The clock of [`VoterSlot::failed_at_ms`].
    started: Instant,
}

/// One voter's connections, and when it last failed to answer.
struct VoterSlot {
    requests: Mutex<Option<TcpStream>>,
    heartbeats: Mutex<Option<TcpStream>>,
    /// Milliseconds since [`Inner::started`] (plus one; 0: never failed).
    failed_at_ms: AtomicU64,
}

impl VoterSlot {
    fn new() -> VoterSlot {
        VoterSlot {
            requests: Mutex::new(None),
            heartbeats: Mutex::new(None),
            failed_at_ms: AtomicU64::new(0),
        }
    }

    fn lane(&self, lane: Lane) -> &Mutex<Option<TcpStream>> {
        match lane {
            Lane::Requests => &self.requests,
            Lane::Heartbeats => &self.heartbeats,
        }
    }
}

impl std::fmt::Debug for RemoteControllers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteControllers")
            .field("voters", &self.inner.voters)
            .field("leader", &self.leader())
            .finish()
    }
}

impl RemoteControllers {
    pub fn new(
        cluster_id: String,
        voters: Vec<Voter>,
        request_timeout: Duration,
        frame_bytes_max: usize,
    ) -> Self {
        RemoteControllers {
            inner: Arc::new(Inner::new(
                cluster_id,
                voters,
                request_timeout,
                frame_bytes_max,
            )),
            leader: Arc::new(AtomicI32::new(-1)),
        }
    }

    /// A copy with connections of its own and `request_timeout` per request, sharing what is
    /// known of the leader: for the metadata long poll, which must not hold up the requests
    /// queued behind it on a shared connection.
    pub fn with_own_connections(&self, request_timeout: Duration) -> RemoteControllers {
        RemoteControllers {
            inner: Arc::new(Inner::new(
                self.inner.cluster_id.clone(),
                self.inner.voters.clone(),
                request_timeout,
                self.inner.frame_bytes_max,
            )),
            leader: Arc::clone(&self.leader),
        }
    }

    /// The leader as last learned from the controllers.
    pub fn leader(&self) -> Option<i32> {
        let leader = self.leader.load(Ordering::Acquire);
        (leader >= 0).then_some(leader)
    }

    /// Takes `leader` as the active controller (a voter's answer, or this node's own quorum).
    pub fn learn_leader(&self, leader: Option<i32>) {
        let known = leader.filter(|id| self.inner.connections.contains_key(id));
        self.leader.store(known.unwrap_or(-1), Ordering::Release);
    }

    /// The next voter in turn, passing over those that failed to answer in the last
    /// [`UNRESPONSIVE_SKIP`] while any other is left.
    pub fn any_voter(&self) -> i32 {
        let voters = &self.inner.voters;
        let now_ms = self.inner.now_ms();
        let skip_ms = UNRESPONSIVE_SKIP.as_millis() as u64;
        let mut first = None;
        for _ in 0..voters.len() {
            let turn = self.inner.next_voter.fetch_add(1, Ordering::Relaxed);
            let node_id = voters[turn % voters.len()].node_id;
            let failed_at_ms = self.inner.connections[&node_id]
                .failed_at_ms
                .load(Ordering::Acquire);
            let responsive = failed_at_ms == 0 || now_ms + 1 >= failed_at_ms + skip_ms;
            if responsive {
                return node_id;
            }
            first.get_or_insert(node_id);
        }
        first.unwrap_or(voters[0].node_id)
    }

    /// The leader if known, else the next voter in turn.
    fn target(&self) -> i32 {
        self.leader().unwrap_or_else(|| self.any_voter())
    }

    /// Runs an operation on the active controller: its reply, and the controller's applied index
    /// once it had committed.
    pub async fn operation(
        &self,
        op: ControllerOp,
    ) -> Result<(ControllerReply, u64), ControlError> {
        match self
            .control(self.target(), &ControlRequest::Operation(op))
            .await?
        {
            ControlResponse::Operation {
                result,
                applied_index,
            } => {
                let result = result.map_err(ControlError::from);
                if let Err(ControlError::NotController(leader)) = &result {
                    self.learn_leader(*leader);
                }
                result.map(|reply| (reply, applied_index))
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Committed metadata after an index, or the next chunk of a snapshot, from the leader or
    /// any voter (every voter serves only committed entries). A snapshot whose chunks come
    /// from two voters is safe: each frame is checked, and a mismatch starts it over.
    pub async fn fetch_metadata(
        &self,
        fetch: MetadataFetch,
        max_bytes: usize,
    ) -> Result<MetadataUpdate, ControlError> {
        let request = match fetch {
            MetadataFetch::After(after_index) => ControlRequest::FetchMetadata {
                after_index,
                max_bytes,
            },
            MetadataFetch::Snapshot { index, position } => ControlRequest::FetchSnapshot {
                index,
                position,
                max_bytes,
            },
        };
        match self.control(self.target(), &request).await? {
            ControlResponse::FetchMetadata { update, leader } => {
                self.learn_leader(leader);
                serde_json::to_vec(&update)
                    .map_err(|err| err.to_string())
                    .and_then(|bytes| MetadataUpdate::decode(&bytes).map_err(|err| err.to_string()))
                    .map_err(|err| ControlError::Unavailable(format!("bad metadata update: {err}")))
            }
            other => Err(unexpected(&other)),
        }
    }

    /// One voter's view of the quorum.
    pub async fn status(&self, node_id: i32) -> Result<Option<StatusReply>, ControlError> {
        match self.control(node_id, &ControlRequest::Status).await? {
            ControlResponse::Status(status) => Ok(status),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn register(&self, registration: BrokerRegistration) -> Result<i64, ControlError> {
        let listeners = registration
            .endpoints
            .iter()
            .map(|endpoint| {
                Listener::default()
                    .with_name(StrBytes::from_string(endpoint.name.clone()))
                    .with_host(StrBytes::from_string(endpoint.host.clone()))
                    .with_port(endpoint.port)
                    .with_security_protocol(0)
            })
            .collect();
        let request = BrokerRegistrationRequest::default()
            .with_broker_id(BrokerId(registration.broker_id))
            .with_cluster_id(StrBytes::from_string(self.inner.cluster_id.clone()))
            .with_incarnation_id(uuid::Uuid::from_u64_pair(0, registration.incarnation_id))
            .with_listeners(listeners)
            .with_rack(registration.rack.map(StrBytes::from_string));
        let target = self.target();
        let response: BrokerRegistrationResponse = self
            .kafka_call(
                target,
                ApiKey::BrokerRegistration,
                REGISTRATION_VERSION,
                &request,
            )
            .await?;
        self.check(response.error_code, target)?;
        Ok(response.broker_epoch)
    }

    /// One heartbeat on the heartbeat connection, answered within `timeout` or failed.
    pub async fn heartbeat(
        &self,
        heartbeat: Heartbeat,
        timeout: Duration,
    ) -> Result<HeartbeatReply, ControlError> {
        let request = BrokerHeartbeatRequest::default()
            .with_broker_id(BrokerId(heartbeat.broker_id))
            .with_broker_epoch(heartbeat.broker_epoch)
            .with_current_metadata_offset(heartbeat.current_metadata_offset)
            .with_want_fence(heartbeat.want_fence)
            .with_want_shut_down(heartbeat.want_shut_down);
        let target = self.target();
        let response: BrokerHeartbeatResponse = self
            .kafka_call_on(
                Lane::Heartbeats,
                timeout,
                target,
                ApiKey::BrokerHeartbeat,
                HEARTBEAT_VERSION,
                &request,
            )
            .await?;
        self.check(response.error_code, target)?;
        Ok(HeartbeatReply {
            is_caught_up: response.is_caught_up,
            is_fenced: response.is_fenced,
            should_shut_down: response.should_shut_down,
        })
    }

    /// A partition leader's ISR changes (AlterPartition v3): each partition's outcome, in request
    /// order. A refusal of the whole request is the error (STALE_BROKER_EPOCH, NOT_CONTROLLER).
    pub async fn alter_partition(
        &self,
        request: &AlterPartitionRequest,
    ) -> Result<Vec<PartitionOutcome>, ControlError> {
        let target = self.target();
        let response: AlterPartitionResponse = self
            .kafka_call(
                target,
                ApiKey::AlterPartition,
                alter_partition::VERSION,
                &alter_partition::request_to_wire(request),
            )
            .await?;
        self.check(response.error_code, target)?;
        alter_partition::response_from_wire(request, &response)
            .map_err(|reason| ControlError::Unavailable(format!("controller {target}: {reason}")))
    }

    /// Maps a Kafka error code from a controller to a [`ControlError`].
    fn check(&self, error_code: i16, target: i32) -> Result<(), ControlError> {
        match error_code {
            0 => Ok(()),
            code if code == ResponseError::NotController.code() => {
                if self.leader() == Some(target) {
                    self.learn_leader(None);
                }
                Err(ControlError::NotController(None))
            }
            code if code == ResponseError::StaleBrokerEpoch.code() => {
                Err(ControlError::StaleBrokerEpoch)
            }
            code if code == ResponseError::RequestTimedOut.code() => Err(ControlError::Timeout),
            code => Err(ControlError::Unavailable(format!(
                "controller {target} answered error code {code}"
            ))),
        }
    }

    async fn control(
        &self,
        target: i32,
        request: &ControlRequest,
    ) -> Result<ControlResponse, ControlError> {
        let correlation_id = self.inner.next_correlation.fetch_add(1, Ordering::Relaxed);
        let frame = rpc::encode_request(correlation_id, request)
            .map_err(|err| ControlError::Unavailable(err.to_string()))?;
        let response = self
            .round_trip(
                Lane::Requests,
                self.inner.request_timeout,
                target,
                frame,
                correlation_id,
            )
            .await?;
        let (_, response) = rpc::decode_response(&response).map_err(ControlError::Unavailable)?;
        Ok(response)
    }

    async fn kafka_call<Req, Resp>(
        &self,
        target: i32,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, ControlError>
    where
        Req: kafka_protocol::protocol::Encodable + kafka_protocol::protocol::HeaderVersion,
        Resp: kafka_protocol::protocol::Decodable + kafka_protocol::protocol::HeaderVersion,
    {
        let timeout = self.inner.request_timeout;
        self.kafka_call_on(Lane::Requests, timeout, target, api_key, version, request)
            .await
    }

    async fn kafka_call_on<Req, Resp>(
        &self,
        lane: Lane,
        timeout: Duration,
        target: i32,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, ControlError>
    where
        Req: kafka_protocol::protocol::Encodable + kafka_protocol::protocol::HeaderVersion,
        Resp: kafka_protocol::protocol::Decodable + kafka_protocol::protocol::HeaderVersion,
    {
        let correlation_id = self.inner.next_correlation.fetch_add(1, Ordering::Relaxed);
        let frame = skald_protocol::codec::encode_request_frame(
            api_key,
            version,
            correlation_id,
            "skald-broker",
            request,
        )
        .map_err(|err| ControlError::Unavailable(err.to_string()))?;
        let response = self
            .round_trip(lane, timeout, target, frame, correlation_id)
            .await?;
        let (_, response) =
            skald_protocol::codec::decode_response::<Resp>(response, api_key, version)
                .map_err(|err| ControlError::Unavailable(err.to_string()))?;
        Ok(response)
    }

    /// Sends one frame to `target` on `lane` and reads its response frame (size prefix removed),
    /// all within `timeout` (waiting for the connection included).
    async fn round_trip(
        &self,
        lane: Lane,
        timeout: Duration,
        target: i32,
        frame: Bytes,
        correlation_id: i32,
    ) -> Result<Bytes, ControlError> {
        let Some(slot) = self.inner.connections.get(&target) else {
            return Err(ControlError::NotController(None));
        };
        let voter = self
            .inner
            .voters
            .iter()
            .find(|voter| voter.node_id == target)
            .ok_or(ControlError::NotController(None))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let Ok(mut connection) = tokio::time::timeout_at(deadline, slot.lane(lane).lock()).await
        else {
            // The request before this one on the lane is still waiting for its answer.
            return Err(ControlError::Timeout);
        };
        let outcome = tokio::time::timeout_at(
            deadline,
            exchange(
                &mut connection,
                voter,
                &frame,
                correlation_id,
                self.inner.frame_bytes_max,
            ),
        )
        .await;
        match outcome {
            Ok(Ok(body)) => {
                slot.failed_at_ms.store(0, Ordering::Release);
                Ok(body)
            }
            Ok(Err(err)) => {
                *connection = None;
                self.unresponsive(target);
                Err(ControlError::Unavailable(format!(
                    "controller {target} at {}: {err}",
                    voter.address()
                )))
            }
            Err(_) => {
                // A late answer would arrive on this connection: the next request dials afresh.
                *connection = None;
                self.unresponsive(target);
                Err(ControlError::Timeout)
            }
        }
    }

    /// `target` failed to answer: it is no longer taken for the leader, and is passed over for
    /// a while when a voter is picked in turn.
    fn unresponsive(&self, target: i32) {
        if let Some(slot) = self.inner.connections.get(&target) {
            slot.failed_at_ms
                .store(self.inner.now_ms() + 1, Ordering::Release);
        }
        self.forget_leader(target);
    }

    fn forget_leader(&self, target: i32) {
        let _ = self
            .leader
            .compare_exchange(target, -1, Ordering::AcqRel, Ordering::Acquire);
    }
}

impl Inner {
    fn new(
        cluster_id: String,
        voters: Vec<Voter>,
        request_timeout: Duration,
        frame_bytes_max: usize,
    ) -> Inner {
        let connections = voters
            .iter()
            .map(|voter| (voter.node_id, VoterSlot::new()))
            .collect();
        Inner {
            cluster_id,
            voters,
            connections,
            next_voter: AtomicUsize::new(0),
            next_correlation: AtomicI32::new(1),
            request_timeout,
            frame_bytes_max,
            started: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// Writes `frame` on the connection (dialling it first if needed) and reads the response frame.
async fn exchange(
    connection: &mut Option<TcpStream>,
    voter: &Voter,
    frame: &Bytes,
    correlation_id: i32,
    frame_bytes_max: usize,
) -> std::io::Result<Bytes> {
    let stream = match connection {
        Some(stream) => stream,
        None => {
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(voter.address()))
                .await
                .map_err(|_| std::io::Error::other("connect timed out"))??;
            let _ = stream.set_nodelay(true);
            if let Err(err) = detect_dead_peer(&stream) {
                tracing::debug!("cannot set keepalive on a controller connection: {err}");
            }
            connection.insert(stream)
        }
    };
    stream.write_all(frame).await?;
    let size = stream.read_i32().await?;
    let size = usize::try_from(size)
        .ok()
        .filter(|size| (4..=frame_bytes_max).contains(size))
        .ok_or_else(|| std::io::Error::other(format!("bad response size {size}")))?;
    let mut body = BytesMut::zeroed(size);
    stream.read_exact(&mut body).await?;
    let body = body.freeze();
    if body[..4] != correlation_id.to_be_bytes() {
        return Err(std::io::Error::other("response correlation id mismatch"));
    }
    Ok(body)
}

/// A controller host that died or was cut off closes nothing: without this, a request waiting on
/// its connection would learn of it only at its own timeout (the request timeout, 10 s), and an
/// idle connection after the kernel's two hours. Keepalive probes notice a silent peer on an idle
/// or waiting connection, TCP_USER_TIMEOUT one that stopped acknowledging what was sent; either
/// way within seconds.
pub(crate) fn detect_dead_peer(stream: &TcpStream) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    socket.set_tcp_keepalive(&keepalive)?;
    #[cfg(target_os = "linux")]
    socket.set_tcp_user_timeout(Some(UNACKNOWLEDGED_MAX))?;
    Ok(())
}

fn unexpected(response: &ControlResponse) -> ControlError {
    ControlError::Unavailable(format!("unexpected controller response {response:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn controller_connections_probe_for_a_dead_peer_within_seconds() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let stream = TcpStream::connect(listener.local_addr().expect("local addr"))
            .await
            .expect("connect");
        detect_dead_peer(&stream).expect("set the options");
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(socket.tcp_keepalive_time().expect("idle"), KEEPALIVE_IDLE);
        assert_eq!(
            socket.tcp_keepalive_interval().expect("interval"),
            KEEPALIVE_INTERVAL
        );
        assert_eq!(
            socket.tcp_keepalive_retries().expect("retries"),
            KEEPALIVE_RETRIES
        );
        #[cfg(target_os = "linux")]
        assert_eq!(
            socket.tcp_user_timeout().expect("TCP_USER_TIMEOUT"),
            Some(UNACKNOWLEDGED_MAX)
        );
    }
}
