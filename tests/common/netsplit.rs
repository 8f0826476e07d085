//! Network partitions for process-level tests, in-process and without privileges: a [`Link`] is
//! a TCP forwarder on a loopback port of its own that a test can [`cut`](Link::cut) and
//! [`heal`](Link::heal). Nodes are configured to dial each other through links (see
//! `TestCluster::start_with_links`), so cutting a link cuts exactly the traffic routed over it.
//!
//! A cut link behaves like a path on which every connection breaks: connections it forwards are
//! shut down in both directions (bytes not yet forwarded are dropped; a write after the cut fails),
//! and connections made while it is cut are accepted and closed at once, never forwarded. Peers
//! therefore see errors quickly rather than time out, which keeps tests fast; it is a partition
//! of connectivity, not a simulation of packet loss. Healing lets new connections through again;
//! connections closed by the cut stay closed, as after a real outage.
//!
//! A link can also [`black_hole`](Link::black_hole) its traffic instead: connections stay open and
//! every byte is dropped, as on a path that loses packets, so peers notice only by their own
//! timeouts — the case a cut does not cover.
//!
//! A link can also [`stall`](Link::stall) one direction only: bytes that way are held (not lost)
//! until the link heals, while the other direction flows — a one-way partition as TCP presents it
//! to the processes (requests arrive and are acted on, their answers never come; after healing,
//! retransmission delivers what was held). New connections are forwarded and stall the same way.
//!
//! Threads, blocking sockets: one accepting thread per link and two copying threads per forwarded
//! connection. Nothing here sleeps to synchronise.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a link waits for its target to accept a connection (loopback: at once or never).
const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const COPY_BUFFER_BYTES: usize = 64 * 1024;

/// A cuttable TCP forwarder from its own loopback port to `target`.
pub struct Link {
    listen_addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    state: Mutex<State>,
    /// Signalled when a stall ends (heal, cut, close).
    unstalled: Condvar,
}

/// One direction of a link's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the connecting side to the target (requests).
    ToTarget,
    /// From the target back (responses).
    FromTarget,
}

#[derive(Default)]
struct State {
    cut: bool,
    /// New connections are black-holed (see [`Link::black_hole`]).
    black_hole: bool,
    /// Connections whose bytes are dropped, for good: bytes were lost, so their streams are
    /// broken even after the link heals.
    lost: std::collections::HashSet<u64>,
    closing: bool,
    next_id: u64,
    /// Both sockets of every connection being forwarded (clones of the copying threads' own), so
    /// that a cut can shut them down under the lock.
    connections: HashMap<u64, [TcpStream; 2]>,
    /// Connections accepted and closed because the link was cut (for failure messages).
    refused: u64,
    /// The direction held by [`Link::stall`], if any.
    stalled: Option<Direction>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn forget(&self, id: u64) {
        self.lock().connections.remove(&id);
    }
}

impl Link {
    /// Listens on a fresh loopback port (bound here, so no other process can take it) and forwards
    /// every connection to `target`, which need not be listening yet.
    pub fn new(target: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a link's port");
        let listen_addr = listener.local_addr().expect("link local_addr");
        let shared = Arc::new(Shared {
            target,
            state: Mutex::new(State::default()),
            unstalled: Condvar::new(),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("link-{}-to-{}", listen_addr.port(), target.port()))
                .spawn(move || accept_loop(&listener, &shared))
                .expect("spawn link thread")
        };
        Link {
            listen_addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Where to connect to reach the target through this link.
    pub fn addr(&self) -> SocketAddr {
        self.listen_addr
    }

    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// Breaks every forwarded connection and refuses new ones until [`Link::heal`]. When this
    /// returns, no byte crosses the link any more.
    pub fn cut(&self) {
        let mut state = self.shared.lock();
        state.cut = true;
        state.stalled = None;
        self.shared.unstalled.notify_all();
        for (_, sockets) in state.connections.drain() {
            for socket in sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
    }

    /// Drops every byte sent over the link from now on, in both directions, without closing
    /// anything: connections made before or during it stay open and silent, for good (bytes were
    /// lost: their streams are broken even after [`Link::heal`], as after a real outage, and only
    /// the peers' timeouts end them). New connections are accepted and go silent too until the
    /// link heals.
    pub fn black_hole(&self) {
        let mut state = self.shared.lock();
        state.black_hole = true;
        let ids: Vec<u64> = state.connections.keys().copied().collect();
        state.lost.extend(ids);
    }

    /// Holds every byte going `direction` from now on, on open and new connections alike,
    /// until [`Link::heal`] (or a cut); the other direction keeps flowing. Nothing is lost:
    /// held bytes are delivered after healing, as TCP retransmits across a one-way outage.
    pub fn stall(&self, direction: Direction) {
        self.shared.lock().stalled = Some(direction);
    }

    /// Forwards new connections again and releases a stall (cut or black-holed connections stay
    /// as they are).
    pub fn heal(&self) {
        let mut state = self.shared.lock();
        state.cut = false;
        state.black_hole = false;
        state.stalled = None;
        self.shared.unstalled.notify_all();
    }

    pub fn is_cut(&self) -> bool {
        self.shared.lock().cut
    }

    /// How many connections were refused because the link was cut.
    pub fn refused(&self) -> u64 {
        self.shared.lock().refused
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.closing = true;
            state.stalled = None;
            self.shared.unstalled.notify_all();
            for (_, sockets) in state.connections.drain() {
                for socket in sockets {
                    let _ = socket.shutdown(Shutdown::Both);
                }
            }
        }
        // Wake the accepting thread so that it sees `closing` and ends.
        let _ = TcpStream::connect_timeout(&self.listen_addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.lock().closing {
            return;
        }
        let Ok(client) = incoming else {
            continue;
        };
        if refuse_if_cut(shared) {
            continue; // `client` is dropped: closed without a byte forwarded
        }
        // A target that is down (a killed node) closes the client's connection at once, as a
        // refused connection would.
        let Ok(upstream) = TcpStream::connect_timeout(&shared.target, TARGET_CONNECT_TIMEOUT)
        else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let clones = (client.try_clone(), upstream.try_clone());
        let (Ok(client_clone), Ok(upstream_clone)) = clones else {
            continue;
        };
        let id = {
            let mut state = shared.lock();
            // Cut while the upstream connection was being made: never forward it.
            if state.cut || state.closing {
                state.refused += u64::from(state.cut);
                continue;
            }
            let id = state.next_id;
            state.next_id += 1;
            state.connections.insert(id, [client_clone, upstream_clone]);
            if state.black_hole {
                state.lost.insert(id);
            }
            id
        };
        let spawned = spawn_copy(shared, id, &client, &upstream, Direction::ToTarget)
            .and_then(|()| spawn_copy(shared, id, &upstream, &client, Direction::FromTarget));
        if spawned.is_err() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
            shared.forget(id);
        }
    }
}

/// Counts and refuses a connection while the link is cut.
fn refuse_if_cut(shared: &Shared) -> bool {
    let mut state = shared.lock();
    if state.cut {
        state.refused += 1;
    }
    state.cut
}

fn spawn_copy(
    shared: &Arc<Shared>,
    id: u64,
    from: &TcpStream,
    to: &TcpStream,
    direction: Direction,
) -> std::io::Result<()> {
    let (from, to) = (from.try_clone()?, to.try_clone()?);
    let shared = Arc::clone(shared);
    std::thread::Builder::new()
        .name(format!("link-copy-{id}-{direction:?}"))
        .spawn(move || copy(&shared, id, from, to, direction))
        .map(drop)
}

/// Copies `from` to `to` until either side ends or fails; then the whole connection goes, both
/// directions (Kafka's protocol never half-closes, and a broken path breaks both ways).
fn copy(shared: &Shared, id: u64, mut from: TcpStream, mut to: TcpStream, direction: Direction) {
    let mut buffer = vec![0u8; COPY_BUFFER_BYTES];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            // Held while this direction is stalled; a cut shuts the sockets, so the write fails.
            let mut state = shared.lock();
            while state.stalled == Some(direction) {
                state = shared
                    .unstalled
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if state.lost.contains(&id) {
                continue;
            }
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    shared.forget(id);
}
