//! Unresponsive brokers: fencing a broker that is silent *and* does not answer, without waiting
//! out its session (`broker.unresponsive.fencing.enable`, `broker.unresponsive.probe.timeout.ms`).
//!
//! Evident death ([`super::departure`]) covers a process that is gone. A paused process (SIGSTOP,
//! a frozen VM, a process stuck in the kernel) leaves no such evidence: its sockets stay open and
//! the kernel completes handshakes on its listener. What it cannot do is answer. So the probe the
//! controller's policy (`skald_controller::policy::ControllerLoop`, through the driver) asks for
//! when a broker has been silent for two `broker.heartbeat.interval.ms` goes one step further:
//! on the connection its advertised listener accepted it sends an ApiVersions
//! request (v0, which every Kafka broker answers, cheapest of all requests: no disk, no lock, no
//! metadata) and waits `broker.unresponsive.probe.timeout.ms` for the first byte of an answer.
//! Anything back means the process runs, and it is left alone whatever its heartbeats do. No
//! answer in time makes it *unresponsive*, and the policy fences it only if, in addition:
//!
//! - it is still unfenced at the epoch probed and has not heartbeated since the probe was asked
//!   for (so it has been silent for at least two heartbeat intervals plus the probe timeout);
//! - the controller itself ran throughout: its policy checked liveness with no gap over a second
//!   from the broker's last heartbeat until the verdict (`BrokerLiveness::ran_throughout`, the
//!   policy's stall detection made tighter), and the probe's own waits on this node's runtime
//!   each woke up within [`LATE_MAX`] of when they were due. A controller that was paused or
//!   starved could neither receive heartbeats nor read answers, so its own stall never counts
//!   against a broker: the probe is then inconclusive ([`Probe::ProberLate`]);
//! - the broker is the odd one out: at least one other unfenced broker exists (someone must be
//!   able to take its leaderships) and no other is silent too. Many silent brokers at once say
//!   more about the controller or its network than about the brokers; they get their sessions.
//!
//! Why these thresholds hold on a loaded host. A broker is fenced this way only after at least
//! six seconds (with Skald's 2 s heartbeat and 2 s probe) in which it neither heartbeated nor
//! answered a request that needs a few microseconds of CPU: a heartbeat is two intervals late
//! and the answer a full 2 s late. On a saturated host (load far above the core count) a runnable
//! thread waits tens to a few hundred milliseconds for a core, not seconds, so a live broker
//! answers well within the timeout; and a host so starved that it does not is one where the
//! controller, on the same kind of host, would itself be late — which the lateness checks turn
//! into no fencing. The probe is asked for only after silence, so a broker that heartbeats is
//! never probed, and a broker whose heartbeats are lost on their way (a controller that moved, a
//! broken connection) still answers the probe and keeps its session. What remains is a broker that
//! really does not run its network tasks for six seconds; it serves clients no better than a
//! paused one, and moving its leaderships is what a client would want.
//!
//! Fencing is safe for acknowledged data whatever the verdict: it only takes the broker out of
//! leaderships and ISRs through the metadata log, exactly as a session expiry does, and a broker
//! that was wrongly fenced unfences at its next heartbeat once caught up with the metadata. A
//! wrong verdict costs availability (leaderships move, ISRs shrink for a while), never records;
//! that is why it is on by default, and why `broker.unresponsive.fencing.enable=false` returns
//! to evident death and the session alone.

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, ApiVersionsRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::departure::{self, Connected};
use crate::metadata::driver::{DriverHandle, Event, SilentBroker};
use crate::metrics::Metrics;

/// How long the probe waits between looks at the answer: the granularity of its lateness check.
const SLICE: Duration = Duration::from_millis(100);
/// How much later than due a wait may end before the prober counts itself as having stalled (a
/// paused or starved controller, whose verdict would be about itself).
pub const LATE_MAX: Duration = Duration::from_millis(500);
/// How long writing the few bytes of the request may take (a send buffer is never full here).
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// The client id the probe's requests carry, for a broker's request log.
const CLIENT_ID: &str = "skald-controller-probe";

/// What a probe of a silent broker's listener found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Refused, or accepted and closed before answering: the process is gone (evident death).
    Gone,
    /// Something answered: the process runs.
    Answered,
    /// Accepted, and no answer to ApiVersions within the timeout while the prober kept time.
    Unanswered,
    /// No evidence either way: the connection timed out, the host is unreachable, the name does
    /// not resolve, or (answers not asked for) the listener accepted and stayed open.
    NoEvidence,
    /// The prober itself woke up late: whatever it saw says nothing about the broker.
    ProberLate,
}

impl Probe {
    /// The `outcome` label of `skald_controller_silent_broker_probes_total`.
    pub fn label(self) -> &'static str {
        match self {
            Probe::Gone => "gone",
            Probe::Answered => "answered",
            Probe::Unanswered => "unanswered",
            Probe::NoEvidence => "no_evidence",
            Probe::ProberLate => "prober_late",
        }
    }
}

/// Probes the brokers the driver found silent (see [`SilentBroker`]), each on a task of its own,
/// until the driver goes away; `answer_timeout` is `broker.unresponsive.probe.timeout.ms` when
/// unresponsive brokers are fenced, `None` for evident death alone.
pub async fn serve_probes(
    driver: DriverHandle,
    metrics: Metrics,
    answer_timeout: Option<Duration>,
    mut silent: mpsc::Receiver<SilentBroker>,
) {
    while let Some(broker) = silent.recv().await {
        let (driver, metrics) = (driver.clone(), metrics.clone());
        tokio::spawn(async move {
            let probe = probe(&broker.address, answer_timeout).await;
            metrics
                .silent_broker_probes_total
                .with_label_values(&[&broker.broker_id.to_string(), probe.label()])
                .inc();
            tracing::debug!(
                broker_id = broker.broker_id,
                address = broker.address,
                ?probe,
                "probed a silent broker"
            );
            let (broker_id, broker_epoch, since) =
                (broker.broker_id, broker.broker_epoch, broker.since);
            match probe {
                Probe::Gone => drop(driver.send(Event::Departed {
                    broker_id,
                    broker_epoch,
                    closed_at: since,
                })),
                Probe::Unanswered => drop(driver.send(Event::Unresponsive {
                    broker_id,
                    broker_epoch,
                    since,
                })),
                Probe::Answered | Probe::NoEvidence | Probe::ProberLate => {}
            }
        });
    }
}

/// Probes the listener at `address`: evident death as [`departure::listener_gone`] sees it, and
/// with `answer_timeout`, whether the process answers an ApiVersions request within it.
pub async fn probe(address: &str, answer_timeout: Option<Duration>) -> Probe {
    let Some(answer_timeout) = answer_timeout else {
        return match departure::listener_gone(address).await {
            true => Probe::Gone,
            false => Probe::NoEvidence,
        };
    };
    let mut stream = match departure::connect(address).await {
        Connected::Stream(stream) => stream,
        Connected::Refused => return Probe::Gone,
        Connected::NoEvidence => return Probe::NoEvidence,
    };
    let Ok(request) = skald_protocol::codec::encode_request_frame(
        ApiKey::ApiVersions,
        0,
        1,
        CLIENT_ID,
        &ApiVersionsRequest::default(),
    ) else {
        // Cannot happen for an empty v0 request; if it did, no evidence was gathered.
        return Probe::NoEvidence;
    };
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&request)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return closed_or_not(&err),
        Err(_) => return Probe::NoEvidence,
    }
    await_answer(stream, answer_timeout).await
}

/// A read or write error: a reset or broken pipe is a close (the process or the proxy in front
/// of it gave up the connection), anything else is no evidence.
fn closed_or_not(err: &std::io::Error) -> Probe {
    match err.kind() {
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => Probe::Gone,
        _ => Probe::NoEvidence,
    }
}

/// Waits up to `answer_timeout` for the first byte of an answer on `stream`, in [`SLICE`]s, each
/// of which must end within [`LATE_MAX`] of when it was due.
async fn await_answer(mut stream: TcpStream, answer_timeout: Duration) -> Probe {
    let sent = Instant::now();
    let deadline = sent + answer_timeout;
    let mut byte = [0u8; 1];
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let slice = SLICE.min(deadline - now);
        match tokio::time::timeout(slice, stream.read(&mut byte)).await {
            Ok(Ok(0)) => return Probe::Gone,
            Ok(Ok(_)) => return Probe::Answered,
            Ok(Err(err)) => return closed_or_not(&err),
            Err(_) if now.elapsed() > slice + LATE_MAX => return Probe::ProberLate,
            Err(_) => {}
        }
    }
    if sent.elapsed() > answer_timeout + LATE_MAX {
        return Probe::ProberLate;
    }
    // One last look straight at the socket, past the runtime's readiness: an answer that arrived
    // just as the wait ended still counts.
    let Ok(mut stream) = stream.into_std() else {
        return Probe::NoEvidence;
    };
    match stream.read(&mut byte) {
        Ok(0) => Probe::Gone,
        Ok(_) => Probe::Answered,
        Err(err) if err.kind() == ErrorKind::WouldBlock => Probe::Unanswered,
        Err(err) => closed_or_not(&err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const ANSWER_TIMEOUT: Duration = Duration::from_millis(300);

    /// A listener that accepts one connection and hands it to `serve`; its address.
    async fn listener<F, Fut>(serve: F) -> (String, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let serving = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            serve(stream).await;
        });
        (address, serving)
    }

    /// Reads one Kafka request frame from `stream`: (api key, api version, correlation id).
    async fn read_request(stream: &mut TcpStream) -> (i16, i16, i32) {
        let size = stream.read_i32().await.unwrap();
        let mut frame = vec![0u8; usize::try_from(size).unwrap()];
        stream.read_exact(&mut frame).await.unwrap();
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        (key, version, correlation_id)
    }

    #[tokio::test]
    async fn a_listener_that_answers_api_versions_is_alive() {
        let (address, serving) = listener(|mut stream| async move {
            let (key, version, correlation_id) = read_request(&mut stream).await;
            assert_eq!((key, version), (ApiKey::ApiVersions as i16, 0));
            // Size, correlation id, error code 0, no APIs: the shape of a v0 answer.
            let mut answer = 10i32.to_be_bytes().to_vec();
            answer.extend(correlation_id.to_be_bytes());
            answer.extend([0, 0, 0, 0, 0, 0]);
            stream.write_all(&answer).await.unwrap();
            // Held open: a live broker does not close after answering.
            let _ = stream.read(&mut [0u8; 1]).await;
        })
        .await;
        assert_eq!(probe(&address, Some(ANSWER_TIMEOUT)).await, Probe::Answered);
        serving.await.unwrap();
    }

    #[tokio::test]
    async fn a_listener_that_accepts_and_never_answers_is_unresponsive() {
        let (address, serving) = listener(|mut stream| async move {
            read_request(&mut stream).await;
            // Read, never answered, held open past the probe (a paused process's kernel keeps the
            // connection; its bytes just sit there).
            tokio::time::sleep(ANSWER_TIMEOUT * 4).await;
        })
        .await;
        assert_eq!(
            probe(&address, Some(ANSWER_TIMEOUT)).await,
            Probe::Unanswered
        );
        serving.abort();

        // A paused process never even accepts: the kernel's backlog completes the handshake.
        let backlog = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = backlog.local_addr().unwrap().to_string();
        assert_eq!(
            probe(&address, Some(ANSWER_TIMEOUT)).await,
            Probe::Unanswered
        );
        // Without answers asked for, that is no evidence: evident death alone.
        assert_eq!(probe(&address, None).await, Probe::NoEvidence);
        drop(backlog);
    }

    #[tokio::test]
    async fn a_listener_that_closes_or_refuses_is_gone() {
        let (address, serving) = listener(|stream| async move { drop(stream) }).await;
        assert_eq!(probe(&address, Some(ANSWER_TIMEOUT)).await, Probe::Gone);
        serving.await.unwrap();

        // Closed after reading the request, without a word.
        let (address, serving) = listener(|mut stream| async move {
            read_request(&mut stream).await;
        })
        .await;
        assert_eq!(probe(&address, Some(ANSWER_TIMEOUT)).await, Probe::Gone);
        serving.await.unwrap();

        let refused = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = refused.local_addr().unwrap().to_string();
        drop(refused);
        assert_eq!(probe(&address, Some(ANSWER_TIMEOUT)).await, Probe::Gone);
        assert_eq!(probe(&address, None).await, Probe::Gone);
    }

    #[tokio::test]
    async fn a_prober_that_stalls_past_its_timeout_reaches_no_verdict() {
        let (read, request_read) = tokio::sync::oneshot::channel();
        let (address, serving) = listener(|mut stream| async move {
            read_request(&mut stream).await;
            read.send(()).unwrap();
            tokio::time::sleep(ANSWER_TIMEOUT * 8).await;
        })
        .await;
        // This test's runtime has one thread: blocking it once the probe waits for its answer is
        // a controller paused mid-probe (its waits end late, and its timeout has passed).
        let probing = tokio::spawn(async move { probe(&address, Some(ANSWER_TIMEOUT)).await });
        request_read.await.unwrap();
        std::thread::sleep(ANSWER_TIMEOUT + LATE_MAX * 2);
        assert_eq!(probing.await.unwrap(), Probe::ProberLate);
        serving.abort();
    }
}
