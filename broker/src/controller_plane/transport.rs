//! Raft messages to the other voters over TCP: one task per peer owns a connection to that peer's
//! controller listener, opens it with [`RAFT_MAGIC`] and this node's id, and writes one frame per
//! message — a snapshot as a header frame and bounded chunks ([`raft_wire::message_frames`]),
//! written one at a time so the sender holds one chunk's frame besides the snapshot. Sending never blocks the quorum driver: each peer has a bounded queue and a message
//! that does not fit is dropped — raft resends what matters. A broken connection is re-dialled
//! with backoff, and the driver is told the peer is unreachable so raft probes instead of
//! streaming.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use raft::eraftpb::{Message, MessageType};
use skald_controller::raft_wire;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::RAFT_MAGIC;
use crate::config::Voter;
use crate::metadata::driver::{DriverHandle, Event, RaftSender};

/// Messages that may wait for one peer's connection.
const PEER_QUEUE_MAX: usize = 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The sending half, handed to the driver.
pub struct RaftTransport {
    peers: HashMap<i32, mpsc::Sender<Message>>,
    driver: Arc<OnceLock<DriverHandle>>,
}

impl RaftTransport {
    /// Starts one sender task per other voter on the current tokio runtime. `driver` is filled in
    /// once the driver has started (it needs the transport first).
    pub fn start(node_id: i32, voters: &[Voter], driver: Arc<OnceLock<DriverHandle>>) -> Self {
        let mut peers = HashMap::new();
        for voter in voters.iter().filter(|voter| voter.node_id != node_id) {
            let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
            peers.insert(voter.node_id, tx);
            tokio::spawn(peer_task(node_id, voter.clone(), rx, Arc::clone(&driver)));
        }
        RaftTransport { peers, driver }
    }
}

impl RaftSender for RaftTransport {
    fn send(&self, to: i32, message: Message) {
        let Some(peer) = self.peers.get(&to) else {
            tracing::debug!(to, "raft message for a node that is not a voter; dropped");
            return;
        };
        if peer.try_send(message).is_err() {
            if let Some(driver) = self.driver.get() {
                driver.send(Event::Unreachable(to));
            }
        }
    }
}

async fn peer_task(
    node_id: i32,
    peer: Voter,
    mut queue: mpsc::Receiver<Message>,
    driver: Arc<OnceLock<DriverHandle>>,
) {
    let mut backoff = BACKOFF_MIN;
    let address = peer.address();
    let unreachable = |driver: &OnceLock<DriverHandle>| {
        if let Some(driver) = driver.get() {
            driver.send(Event::Unreachable(peer.node_id));
        }
    };
    loop {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&address)).await;
        let mut stream = match connected {
            Ok(Ok(stream)) => stream,
            Ok(Err(_)) | Err(_) => {
                // Whatever queued meanwhile is stale: raft will resend from its own state.
                while queue.try_recv().is_ok() {}
                unreachable(&driver);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                if queue.is_closed() {
                    return;
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Raft writes to its peers all the time: a dead or cut-off peer shows as bytes left
        // unacknowledged, and the connection is given up (and the peer reported unreachable)
        // within seconds rather than at the kernel's retransmission limit.
        if let Err(err) = super::client::detect_dead_peer(&stream) {
            tracing::debug!(
                peer = peer.node_id,
                "cannot set keepalive on a raft connection: {err}"
            );
        }
        let mut hello = Vec::with_capacity(8);
        hello.extend_from_slice(&RAFT_MAGIC);
        hello.extend_from_slice(&node_id.to_be_bytes());
        if stream.write_all(&hello).await.is_err() {
            continue;
        }
        tracing::info!(peer = peer.node_id, %address, "raft connection open");
        backoff = BACKOFF_MIN;
        // A peer never writes on this stream, so a read that completes means it is gone (a
        // killed process's socket closes at once). Noticing that while idle matters: otherwise
        // the next message (often a vote) is written into the dead socket and lost, and raft
        // does not resend votes before its next election timeout.
        let mut probe = [0u8; 1];
        loop {
            let message = tokio::select! {
                message = queue.recv() => match message {
                    Some(message) => message,
                    None => return,
                },
                _ = stream.read(&mut probe) => {
                    tracing::debug!(peer = peer.node_id, "raft connection closed by the peer");
                    unreachable(&driver);
                    break;
                }
            };
            let is_snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
            let frames = match raft_wire::message_frames(&message) {
                Ok(frames) => frames,
                Err(err) => {
                    tracing::error!(peer = peer.node_id, "raft message not sent: {err}");
                    if is_snapshot {
                        if let Some(driver) = driver.get() {
                            driver.send(Event::SnapshotFailed(peer.node_id));
                        }
                    }
                    continue;
                }
            };
            let mut written = Ok(());
            for frame in frames {
                written = stream.write_all(&frame).await;
                if written.is_err() {
                    break;
                }
            }
            if let Err(err) = written {
                tracing::debug!(peer = peer.node_id, "raft connection lost: {err}");
                if is_snapshot {
                    if let Some(driver) = driver.get() {
                        driver.send(Event::SnapshotFailed(peer.node_id));
                    }
                }
                unreachable(&driver);
                break;
            }
        }
    }
}
