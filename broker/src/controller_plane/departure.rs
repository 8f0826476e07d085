//! Evident death: fencing a broker whose process is gone without waiting out its session.
//!
//! Kafka's controller fences a broker only when `broker.session.timeout.ms` passes without a
//! heartbeat, because silence alone cannot tell a dead broker from a paused one or one behind a
//! partition. A broker whose process died leaves more evidence than silence: the kernel closes
//! its sockets, so its connection to the controller ends (FIN or RST), and its listener refuses
//! new connections (or, behind a proxy, accepts and closes them). When both show, and the broker
//! has not heartbeated since, the active controller fences it at once; its leaderships move and
//! it leaves every ISR a session earlier than it would otherwise.
//!
//! A broker's heartbeats may also stop without any connection to this controller closing (its
//! connection went to a controller that has since lost leadership, or the node that died was
//! the previous controller itself): the driver asks for the same probe of any broker it has not
//! heard from for two heartbeat intervals ([`super::unresponsive::serve_probes`]).
//!
//! This stays conservative where silence is all there is: a paused process keeps its sockets
//! open and its listener accepting (the kernel completes the handshake), and a host behind a
//! silent partition lets the probe time out, so neither is evidently dead (a paused one that
//! does not answer a request is the business of [`super::unresponsive`]). A broker
//! that closed its heartbeat connection itself (a timed-out heartbeat moves to another voter)
//! is alive, and its listener accepts and stays open: it is left alone. Fencing is always safe
//! for acknowledged data (it only takes the broker out of the ISRs and leaderships); wrongly
//! fencing a live broker would cost availability, which the probe is there to prevent.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::metadata::driver::{DriverHandle, Event};

/// How long the probe waits to connect to the broker's listener.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an accepted probe connection is watched for a close. A live listener keeps an idle
/// connection open; a proxy in front of a dead process closes it at once.
const CLOSE_WATCH: Duration = Duration::from_secs(1);

/// Checks a broker whose heartbeat connection to this controller closed at `closed_at`, and
/// tells the driver to fence it if its listener shows the process gone. Spawned when such a
/// connection ends; cheap when the broker is still around (one connection, at most 2 s).
pub async fn check(driver: DriverHandle, broker_id: i32, broker_epoch: i64, closed_at: Instant) {
    let Some(address) = driver
        .departure_probe(broker_id, broker_epoch, closed_at)
        .await
    else {
        return;
    };
    if listener_gone(&address).await {
        driver.send(Event::Departed {
            broker_id,
            broker_epoch,
            closed_at,
        });
    } else {
        tracing::debug!(
            broker_id,
            address,
            "broker's controller connection closed, but its listener is there"
        );
    }
}

/// What connecting to a broker's listener found.
pub enum Connected {
    Stream(TcpStream),
    /// Nothing listens there: the process is gone.
    Refused,
    /// A timeout, an unreachable host, a name that does not resolve: silence, no evidence.
    NoEvidence,
}

/// Connects to the listener at `address` within [`CONNECT_TIMEOUT`].
pub async fn connect(address: &str) -> Connected {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => Connected::Stream(stream),
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => Connected::Refused,
        Ok(Err(_)) | Err(_) => Connected::NoEvidence,
    }
}

/// Whether the listener at `address` shows its process gone: the connection is refused, or
/// accepted and closed (or reset) before it sends anything. A timeout, an unreachable host or
/// a name that does not resolve are no evidence: silence is what the session is for.
pub async fn listener_gone(address: &str) -> bool {
    let mut stream = match connect(address).await {
        Connected::Stream(stream) => stream,
        Connected::Refused => return true,
        Connected::NoEvidence => return false,
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(CLOSE_WATCH, stream.read(&mut byte)).await {
        Ok(Ok(0)) => true,
        Ok(Err(err)) => err.kind() == std::io::ErrorKind::ConnectionReset,
        // A byte unasked for, or an open connection: something is alive there.
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_refused_or_closing_listener_is_gone_an_accepting_one_is_not() {
        // Nothing listening: refused.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = closed.local_addr().unwrap().to_string();
        drop(closed);
        assert!(listener_gone(&address).await);

        // A proxy in front of a dead process: accepts and closes.
        let closing = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = closing.local_addr().unwrap().to_string();
        let accepting = tokio::spawn(async move {
            let (stream, _) = closing.accept().await.unwrap();
            drop(stream);
        });
        assert!(listener_gone(&address).await);
        accepting.await.unwrap();

        // A live (or paused) listener: the connection stays open.
        let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = live.local_addr().unwrap().to_string();
        let holding = tokio::spawn(async move {
            let (stream, _) = live.accept().await.unwrap();
            tokio::time::sleep(CLOSE_WATCH * 2).await;
            drop(stream);
        });
        assert!(!listener_gone(&address).await);
        holding.abort();

        // A listener that never accepts (a full backlog of a paused process is the same to the
        // kernel: the handshake completes): no evidence either.
        let backlog = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = backlog.local_addr().unwrap().to_string();
        assert!(!listener_gone(&address).await);
        drop(backlog);
    }
}
