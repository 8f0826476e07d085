//! One client connection: read frames, decode, handle one request at a time (Kafka answers a
//! connection's requests in order), write the responses. Anything malformed closes the connection
//! with a log line; nothing a client sends can take the server down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseKind};
use skald_protocol::codec::{self, DecodeError};
use skald_protocol::frame::take_frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

use crate::api::{self, Reply};
use crate::broker::Broker;

/// Read buffer to start with; it grows to the largest frame seen (bounded by socket.request.max.bytes).
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Reads the next request frame (size prefix removed); bytes past it stay in `buffer`. `None`
/// once the peer closes, a read fails, the frame is invalid or oversized (logged), or the server
/// shuts down.
pub async fn next_frame(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
    max_bytes: usize,
    peer: SocketAddr,
    shutdown: &mut broadcast::Receiver<()>,
) -> Option<Bytes> {
    loop {
        match take_frame(buffer, max_bytes) {
            Ok(Some(frame)) => return Some(frame),
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(%peer, "closing connection: {err}");
                return None;
            }
        }
        let read = tokio::select! {
            read = stream.read_buf(buffer) => read,
            _ = shutdown.recv() => return None,
        };
        match read {
            Ok(0) => return None,
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(%peer, "connection read failed: {err}");
                return None;
            }
        }
    }
}

/// Serves one connection until the client closes it, it misbehaves, or the server shuts down.
pub async fn serve(
    broker: Arc<Broker>,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: broadcast::Receiver<()>,
) {
    let max_bytes = broker.config.socket_request_max_bytes;
    let mut buffer = BytesMut::with_capacity(READ_BUFFER_BYTES);
    loop {
        let Some(frame) =
            next_frame(&mut stream, &mut buffer, max_bytes, peer, &mut shutdown).await
        else {
            return;
        };
        let started = Instant::now();
        let (api_key, version, correlation_id, reply) = match codec::decode_request(frame) {
            Ok(request) => {
                let (api_key, version, correlation_id) = (
                    request.api_key,
                    request.api_version,
                    request.header.correlation_id,
                );
                // A request still waiting at shutdown (a parked fetch) is dropped, not waited for.
                // Produce appends are synchronous inside the handler, so none is cut in half.
                let reply = tokio::select! {
                    reply = api::handle_from(&broker, request, Some(peer)) => reply,
                    _ = shutdown.recv() => return,
                };
                (api_key, version, correlation_id, reply)
            }
            Err(DecodeError::UnsupportedVersion(prefix))
                if prefix.api_key == ApiKey::ApiVersions as i16 =>
            {
                // KIP-511: an ApiVersions version we don't know is answered in v0 with our versions.
                let body = api::api_versions::unsupported_version();
                (
                    ApiKey::ApiVersions,
                    0,
                    prefix.correlation_id,
                    Reply::Send(Box::new(body)),
                )
            }
            Err(err) => {
                tracing::warn!(%peer, "closing connection: {err}");
                return;
            }
        };
        match reply {
            Reply::Send(body) => {
                if !write_response(&mut stream, peer, correlation_id, api_key, version, &body).await
                {
                    return;
                }
            }
            Reply::Nothing => {}
            Reply::Close(reason) => {
                tracing::info!(%peer, "closing connection: {reason}");
                return;
            }
        }
        let api = api_name(api_key);
        broker
            .metrics
            .requests_total
            .with_label_values(&[api])
            .inc();
        broker
            .metrics
            .request_latency_seconds
            .with_label_values(&[api])
            .observe(started.elapsed().as_secs_f64());
    }
}

async fn write_response(
    stream: &mut TcpStream,
    peer: SocketAddr,
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: &ResponseKind,
) -> bool {
    let frame = match codec::encode_response(correlation_id, api_key, version, body) {
        Ok(frame) => frame,
        Err(err) => {
            tracing::error!(%peer, "closing connection: {err}");
            return false;
        }
    };
    match stream.write_all(&frame).await {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!(%peer, "connection write failed: {err}");
            false
        }
    }
}

/// The API's name as a metric label ("Produce", "Fetch", ...).
pub fn api_name(api_key: ApiKey) -> &'static str {
    match api_key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DeleteGroups => "DeleteGroups",
        _ => "Other",
    }
}
