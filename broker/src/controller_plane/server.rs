//! Serves one connection on the controller listener: a raft peer's message stream (it opens with
//! [`RAFT_MAGIC`] and the peer's node id) or Kafka-framed controller requests. Anything malformed
//! closes the connection with a log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::{
    AlterPartitionRequest, AlterPartitionResponse, ApiVersionsResponse, BrokerHeartbeatRequest,
    BrokerHeartbeatResponse, BrokerRegistrationRequest, BrokerRegistrationResponse, RequestKind,
    ResponseKind,
};
use kafka_protocol::ResponseError;
use skald_controller::follower::MetadataFetch;
use skald_controller::raft_wire;
use skald_controller::{BrokerRegistration, Endpoint};
use skald_protocol::api_versions::CONTROLLER_APIS;
use skald_protocol::codec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

use super::rpc::{self, ControlRequest, ControlResponse, StatusReply};
use super::RAFT_MAGIC;
use super::{alter_partition, departure};
use crate::api::api_versions;
use crate::connection::next_frame;
use crate::metadata::driver::{DriverHandle, Event, Heartbeat};
use crate::metadata::ControlError;

const READ_BUFFER_BYTES: usize = 64 * 1024;

/// What a controller-listener connection needs.
#[derive(Clone)]
pub struct ControllerListenerContext {
    pub driver: DriverHandle,
    pub cluster_id: String,
    pub frame_bytes_max: usize,
}

pub async fn serve(
    context: Arc<ControllerListenerContext>,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: broadcast::Receiver<()>,
) {
    let mut buffer = BytesMut::with_capacity(READ_BUFFER_BYTES);
    while buffer.len() < RAFT_MAGIC.len() {
        let read = tokio::select! {
            read = stream.read_buf(&mut buffer) => read,
            _ = shutdown.recv() => return,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    if buffer[..RAFT_MAGIC.len()] == RAFT_MAGIC {
        buffer.advance(RAFT_MAGIC.len());
        raft_stream(&context, stream, peer, buffer, shutdown).await
    } else {
        requests(&context, stream, peer, buffer, shutdown).await
    }
}

/// Reads raft messages from a peer until it closes, hands each to the driver.
async fn raft_stream(
    context: &ControllerListenerContext,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut buffer: BytesMut,
    mut shutdown: broadcast::Receiver<()>,
) {
    let mut from = None;
    let mut decoder = raft_wire::MessageDecoder::new();
    loop {
        if from.is_none() && buffer.len() >= 4 {
            let id = buffer.get_i32();
            tracing::info!(%peer, node_id = id, "raft peer connected");
            from = Some(id);
        }
        if from.is_some() {
            match decoder.decode(&buffer) {
                Ok(Some((message, used))) => {
                    buffer.advance(used);
                    if let Some(message) = message {
                        context.driver.send(Event::Raft(Box::new(message)));
                    }
                    continue;
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(%peer, "closing raft connection: {err}");
                    return;
                }
            }
        }
        let read = tokio::select! {
            read = stream.read_buf(&mut buffer) => read,
            _ = shutdown.recv() => return,
        };
        match read {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(%peer, "raft connection read failed: {err}");
                return;
            }
        }
    }
}

async fn requests(
    context: &ControllerListenerContext,
    stream: TcpStream,
    peer: SocketAddr,
    buffer: BytesMut,
    shutdown: broadcast::Receiver<()>,
) {
    // The broker (id, epoch) this node answered a heartbeat from on this connection, as leader.
    // A close at this node's own shutdown is checked too: the broker's listener answers then.
    let mut heartbeats_from = None;
    serve_requests(
        context,
        stream,
        peer,
        buffer,
        shutdown,
        &mut heartbeats_from,
    )
    .await;
    if let Some((broker_id, broker_epoch)) = heartbeats_from {
        tokio::spawn(departure::check(
            context.driver.clone(),
            broker_id,
            broker_epoch,
            Instant::now(),
        ));
    }
}

/// Serves requests until the connection ends.
async fn serve_requests(
    context: &ControllerListenerContext,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut buffer: BytesMut,
    mut shutdown: broadcast::Receiver<()>,
    heartbeats_from: &mut Option<(i32, i64)>,
) {
    loop {
        let Some(frame) = next_frame(
            &mut stream,
            &mut buffer,
            context.frame_bytes_max,
            peer,
            &mut shutdown,
        )
        .await
        else {
            return;
        };
        let response = if codec::header_prefix(&frame)
            .is_some_and(|prefix| prefix.api_key == rpc::CONTROL_API_KEY)
        {
            match rpc::decode_request(&frame) {
                Ok((correlation_id, request)) => {
                    let response = control(context, request).await;
                    rpc::encode_response(correlation_id, &response).map_err(|err| err.to_string())
                }
                Err(err) => Err(err),
            }
        } else {
            kafka_request(context, frame, heartbeats_from).await
        };
        match response {
            Ok(bytes) => {
                if let Err(err) = stream.write_all(&bytes).await {
                    tracing::debug!(%peer, "controller connection write failed: {err}");
                    return;
                }
            }
            Err(reason) => {
                tracing::warn!(%peer, "closing controller connection: {reason}");
                return;
            }
        }
    }
}

async fn control(context: &ControllerListenerContext, request: ControlRequest) -> ControlResponse {
    let driver = &context.driver;
    match request {
        ControlRequest::Operation(op) => {
            let result = driver.operation(op).await.map_err(Into::into);
            ControlResponse::Operation {
                result,
                applied_index: driver.applied_index(),
            }
        }
        ControlRequest::FetchMetadata {
            after_index,
            max_bytes,
        } => fetch_metadata(context, MetadataFetch::After(after_index), max_bytes).await,
        ControlRequest::FetchSnapshot {
            index,
            position,
            max_bytes,
        } => {
            fetch_metadata(
                context,
                MetadataFetch::Snapshot { index, position },
                max_bytes,
            )
            .await
        }
        ControlRequest::Status => {
            ControlResponse::Status(driver.status().await.as_ref().map(StatusReply::from))
        }
    }
}

/// Committed metadata for a broker-only node: batches, or a chunk of the saved snapshot.
async fn fetch_metadata(
    context: &ControllerListenerContext,
    fetch: MetadataFetch,
    max_bytes: usize,
) -> ControlResponse {
    let driver = &context.driver;
    let max_bytes = max_bytes.min(context.frame_bytes_max / 2);
    match driver.fetch_metadata(fetch, max_bytes).await {
        Some((update, leader)) => ControlResponse::FetchMetadata {
            update: update
                .encode()
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .unwrap_or_default(),
            leader,
        },
        None => ControlResponse::FetchMetadata {
            update: serde_json::Value::Null,
            leader: None,
        },
    }
}

/// ApiVersions, BrokerRegistration, BrokerHeartbeat and AlterPartition: the Kafka RPCs a
/// controller serves here.
async fn kafka_request(
    context: &ControllerListenerContext,
    frame: bytes::Bytes,
    heartbeats_from: &mut Option<(i32, i64)>,
) -> Result<bytes::Bytes, String> {
    let request = codec::decode_controller_request(frame).map_err(|err| err.to_string())?;
    let (api_key, version, correlation_id) = (
        request.api_key,
        request.api_version,
        request.header.correlation_id,
    );
    let response = match request.body {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(
            ApiVersionsResponse::default().with_api_keys(api_versions::listed(CONTROLLER_APIS)),
        ),
        RequestKind::BrokerRegistration(request) => {
            ResponseKind::BrokerRegistration(register(context, request).await)
        }
        RequestKind::BrokerHeartbeat(request) => {
            let (broker_id, broker_epoch) = (request.broker_id.0, request.broker_epoch);
            let response = heartbeat(context, request).await;
            if response.error_code == 0 {
                *heartbeats_from = Some((broker_id, broker_epoch));
            }
            ResponseKind::BrokerHeartbeat(response)
        }
        RequestKind::AlterPartition(request) => {
            ResponseKind::AlterPartition(handle_alter_partition(context, request, version).await)
        }
        _ => {
            return Err(format!(
                "{api_key:?} is not served on the controller listener"
            ))
        }
    };
    codec::encode_response(correlation_id, api_key, version, &response)
        .map(BytesMut::freeze)
        .map_err(|err| err.to_string())
}

async fn register(
    context: &ControllerListenerContext,
    request: BrokerRegistrationRequest,
) -> BrokerRegistrationResponse {
    if request.cluster_id.as_str() != context.cluster_id {
        return BrokerRegistrationResponse::default()
            .with_error_code(ResponseError::InconsistentClusterId.code());
    }
    let registration = BrokerRegistration {
        broker_id: request.broker_id.0,
        incarnation_id: request.incarnation_id.as_u64_pair().1,
        endpoints: request
            .listeners
            .iter()
            .map(|listener| Endpoint {
                name: listener.name.to_string(),
                host: listener.host.to_string(),
                port: listener.port,
            })
            .collect(),
        rack: request.rack.as_ref().map(|rack| rack.to_string()),
    };
    match context.driver.register(registration).await {
        Ok(epoch) => BrokerRegistrationResponse::default().with_broker_epoch(epoch),
        Err(err) => BrokerRegistrationResponse::default()
            .with_error_code(err.code())
            .with_broker_epoch(-1),
    }
}

async fn heartbeat(
    context: &ControllerListenerContext,
    request: BrokerHeartbeatRequest,
) -> BrokerHeartbeatResponse {
    let heartbeat = Heartbeat {
        broker_id: request.broker_id.0,
        broker_epoch: request.broker_epoch,
        current_metadata_offset: request.current_metadata_offset,
        want_fence: request.want_fence,
        want_shut_down: request.want_shut_down,
    };
    match context.driver.heartbeat(heartbeat).await {
        Ok(reply) => BrokerHeartbeatResponse::default()
            .with_is_caught_up(reply.is_caught_up)
            .with_is_fenced(reply.is_fenced)
            .with_should_shut_down(reply.should_shut_down),
        Err(err @ ControlError::NotController(_)) | Err(err) => BrokerHeartbeatResponse::default()
            .with_error_code(err.code())
            .with_is_fenced(true),
    }
}

/// Carried out by the active controller once its records commit; NOT_CONTROLLER elsewhere.
async fn handle_alter_partition(
    context: &ControllerListenerContext,
    request: AlterPartitionRequest,
    version: i16,
) -> AlterPartitionResponse {
    let outcome = context
        .driver
        .alter_partition(alter_partition::request_from_wire(&request, version))
        .await;
    alter_partition::response_to_wire(&request, outcome)
}
