//! One client connection: read frames, decode, handle one request at a time (Kafka processes a
//! connection's requests in order), write the responses in the same order. Anything malformed
//! closes the connection with a log line; nothing a client sends can take the server down.
//!
//! Reading and writing are two halves run together. The reader handles each request to its end
//! before the next — except an acks=all Produce, which is done once its batches are appended:
//! its wait for the ISR ([`Reply::Later`]) is left to the writer, so a producer with several
//! requests in flight has their replication overlap instead of queueing behind each other.
//! At most [`PIPELINE_DEPTH`] responses wait to be written; then the reader waits too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseKind};
use skald_protocol::api_versions::api_name;
use skald_protocol::codec::{self, DecodeError};
use skald_protocol::frame::take_frame;
use skald_protocol::pieces::{encode_response_pieces, FramePieces};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};

use crate::api::{self, Reply};
use crate::broker::Broker;

/// Read buffer to start with; it grows to the largest frame seen (bounded by socket.request.max.bytes).
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Responses of one connection waiting to be written (Kafka producers keep at most 5 requests
/// in flight by default).
pub const PIPELINE_DEPTH: usize = 8;

/// Reads the next request frame (size prefix removed); bytes past it stay in `buffer`. `None`
/// once the peer closes, a read fails, the frame is invalid or oversized (logged), or the server
/// shuts down.
pub async fn next_frame(
    stream: &mut (impl AsyncRead + Unpin),
    buffer: &mut BytesMut,
    max_bytes: usize,
    peer: SocketAddr,
    shutdown: &mut broadcast::Receiver<()>,
) -> Option<Bytes> {
    let mut last_read = Instant::now();
    next_frame_received(stream, buffer, max_bytes, peer, shutdown, &mut last_read).await
}

/// As [`next_frame`], also keeping in `last_read` when the last read returned bytes: a frame
/// taken from the buffer arrived then (the buffer is read from only once it holds no whole
/// frame), so the time from there to its handling is the time it queued behind the requests
/// before it on the connection.
async fn next_frame_received(
    stream: &mut (impl AsyncRead + Unpin),
    buffer: &mut BytesMut,
    max_bytes: usize,
    peer: SocketAddr,
    shutdown: &mut broadcast::Receiver<()>,
    last_read: &mut Instant,
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
            Ok(_) => *last_read = Instant::now(),
            Err(err) => {
                tracing::debug!(%peer, "connection read failed: {err}");
                return None;
            }
        }
    }
}

/// A request's reply on its way to the writer, with what its response frame and metrics need.
struct Pending {
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    /// When the request's last bytes were read.
    received: Instant,
    reply: Reply,
}

/// Serves one connection until the client closes it, it misbehaves, or the server shuts down.
pub async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: broadcast::Receiver<()>,
) {
    let (read_half, write_half) = stream.into_split();
    let (replies, queued) = mpsc::channel(PIPELINE_DEPTH);
    let writer_shutdown = shutdown.resubscribe();
    let reader = read_requests(&broker, read_half, peer, shutdown, replies);
    let writer = write_replies(&broker, write_half, peer, writer_shutdown, queued);
    tokio::pin!(reader, writer);
    tokio::select! {
        // The writer stopped (write failed, a reply closes the connection, shutdown): done.
        () = &mut writer => {}
        // The reader stopped (the peer closed its side, a bad frame, shutdown): what was read
        // still gets its responses.
        () = &mut reader => writer.await,
    }
}

/// Reads, decodes and handles requests in order, queueing their replies for the writer.
async fn read_requests(
    broker: &Arc<Broker>,
    mut stream: impl AsyncRead + Unpin,
    peer: SocketAddr,
    mut shutdown: broadcast::Receiver<()>,
    replies: mpsc::Sender<Pending>,
) {
    let max_bytes = broker.config.socket_request_max_bytes;
    let mut buffer = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut last_read = Instant::now();
    loop {
        let Some(frame) = next_frame_received(
            &mut stream,
            &mut buffer,
            max_bytes,
            peer,
            &mut shutdown,
            &mut last_read,
        )
        .await
        else {
            return;
        };
        let (received, started) = (last_read, Instant::now());
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
                    reply = api::handle_from(broker, request, Some(peer)) => reply,
                    _ = shutdown.recv() => return,
                };
                // Kafka's RequestQueueTimeMs and LocalTimeMs: waiting behind the requests
                // before it, then this broker's own work (an acks=all wait comes after).
                let api = api_name(api_key);
                let metrics = &broker.metrics;
                metrics
                    .request_queue_time_seconds
                    .with_label_values(&[api])
                    .observe(started.duration_since(received).as_secs_f64());
                metrics
                    .request_processing_time_seconds
                    .with_label_values(&[api])
                    .observe(started.elapsed().as_secs_f64());
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
                // The error names the API ("unsupported version 13 of Produce").
                tracing::warn!(%peer, "closing connection: {err}");
                return;
            }
        };
        // Nothing after a reply that closes the connection is read (Kafka closes at once).
        let closing = matches!(reply, Reply::Close(_));
        let pending = Pending {
            api_key,
            version,
            correlation_id,
            received,
            reply,
        };
        if replies.send(pending).await.is_err() || closing {
            // The writer is gone (the connection is closing), or it will close it.
            return;
        }
    }
}

/// Writes the replies in request order, waiting for each deferred one in turn.
async fn write_replies(
    broker: &Broker,
    mut stream: impl AsyncWrite + Unpin,
    peer: SocketAddr,
    mut shutdown: broadcast::Receiver<()>,
    mut queued: mpsc::Receiver<Pending>,
) {
    while let Some(pending) = queued.recv().await {
        let mut reply = pending.reply;
        if let Reply::Later(later) = reply {
            reply = tokio::select! {
                reply = later => reply,
                _ = shutdown.recv() => return,
            };
        }
        if let Reply::Send(body) | Reply::SendCopied(body) = &reply {
            count_errors(broker, pending.api_key, body);
        }
        match reply {
            Reply::Send(body) => {
                let written = write_response(
                    &mut stream,
                    peer,
                    (pending.correlation_id, pending.api_key, pending.version),
                    &body,
                    true,
                )
                .await;
                if !written {
                    return;
                }
            }
            Reply::SendCopied(body) => {
                let written = write_response(
                    &mut stream,
                    peer,
                    (pending.correlation_id, pending.api_key, pending.version),
                    &body,
                    false,
                )
                .await;
                if !written {
                    return;
                }
            }
            Reply::Nothing => {}
            Reply::Later(_) => {
                tracing::error!(%peer, "closing connection: a deferred reply deferred again");
                return;
            }
            Reply::Close(reason) => {
                tracing::info!(%peer, "closing connection: {reason}");
                return;
            }
        }
        // Kafka's name for the API ("Produce", "Fetch", ...) labels its metrics.
        let api = api_name(pending.api_key);
        broker
            .metrics
            .requests_total
            .with_label_values(&[api])
            .inc();
        broker
            .metrics
            .request_latency_seconds
            .with_label_values(&[api])
            .observe(pending.received.elapsed().as_secs_f64());
    }
}

/// Counts every error code of a response by API and Kafka's error name (NONE included).
fn count_errors(broker: &Broker, api_key: ApiKey, body: &ResponseKind) {
    let api = api_name(api_key);
    let errors = &broker.metrics.request_errors_total;
    api::error_codes::for_each(body, |code| {
        errors
            .with_label_values(&[api, skald_client::error::error_name(code)])
            .inc();
    });
}

/// Encodes and writes one response (`answering`: the request's correlation id, key and version).
/// `shared`: a Fetch response's records go out from the segment maps rather than copied.
async fn write_response(
    stream: &mut (impl AsyncWrite + Unpin),
    peer: SocketAddr,
    answering: (i32, ApiKey, i16),
    body: &ResponseKind,
    shared: bool,
) -> bool {
    let (correlation_id, api_key, version) = answering;
    let encoded = if shared {
        encode_response_pieces(correlation_id, api_key, version, body)
    } else {
        codec::encode_response(correlation_id, api_key, version, body).map(|frame| FramePieces {
            pieces: vec![frame.freeze()],
        })
    };
    let frame = match encoded {
        Ok(frame) => frame,
        Err(err) => {
            tracing::error!(%peer, "closing connection: {err}");
            return false;
        }
    };
    match write_pieces(stream, frame.pieces).await {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!(%peer, "connection write failed: {err}");
            false
        }
    }
}

/// Writes every piece, in order, with as few (vectored) writes as the socket allows.
async fn write_pieces(
    stream: &mut (impl AsyncWrite + Unpin),
    mut pieces: Vec<Bytes>,
) -> std::io::Result<()> {
    /// Linux's IOV_MAX is 1024; a response with more pieces goes out in several writes.
    const SLICES_MAX: usize = 64;
    let mut first = 0;
    while first < pieces.len() {
        let slices: Vec<std::io::IoSlice<'_>> = pieces[first..]
            .iter()
            .take(SLICES_MAX)
            .map(|piece| std::io::IoSlice::new(piece))
            .collect();
        let mut written = stream.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let piece = &mut pieces[first];
            if written >= piece.len() {
                written -= piece.len();
                first += 1;
            } else {
                let _ = piece.split_to(written);
                written = 0;
            }
        }
        while first < pieces.len() && pieces[first].is_empty() {
            first += 1;
        }
    }
    stream.flush().await
}
