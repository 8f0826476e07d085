//! A steady load for cluster tests: a librdkafka producer with its default settings (acks=all)
//! on a thread of its own, sending numbered records round-robin to a topic's partitions until
//! stopped, at most [`WINDOW`] unreported, and keeping every record's delivery report.
//! Record `n` is `"{topic}-{n}"` ([`payload`]) to partition [`partition_of`]`(n)`, so a test
//! can tell every stored record's origin.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer as _};

use super::{poll_until, rdk};

/// Acknowledgements that show the producer gets through.
pub const PROGRESS: usize = 200;
/// Records sent but not yet reported on, at most.
const WINDOW: usize = 256;

/// Each record's delivery report, by record number: the acknowledged (partition, offset), or
/// the error.
pub type Deliveries = BTreeMap<u64, Result<(i32, i64), String>>;

/// Record `number`'s value.
pub fn payload(topic: &str, number: u64) -> String {
    format!("{topic}-{number}")
}

/// The partition record `number` goes to.
pub fn partition_of(number: u64, partitions: i32) -> i32 {
    (number % partitions as u64) as i32
}

/// The running producer.
pub struct SteadyProducer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    thread: JoinHandle<Deliveries>,
}

impl SteadyProducer {
    pub fn start(bootstrap: String, topic: &str, partitions: i32) -> SteadyProducer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::spawn({
            let (stop, acked, topic) = (Arc::clone(&stop), Arc::clone(&acked), topic.to_owned());
            move || produce(&bootstrap, &topic, partitions, &stop, &acked)
        });
        SteadyProducer {
            stop,
            acked,
            thread,
        }
    }

    /// How many records have been acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Acquire)
    }

    /// Waits until [`PROGRESS`] more records are acknowledged.
    pub fn wait_for_progress(&self, what: &str, timeout: Duration) {
        let target = self.acked() + PROGRESS;
        poll_until(what, timeout, || {
            assert!(
                !self.thread.is_finished(),
                "the producer thread ended early"
            );
            (self.acked() >= target).then_some(())
        });
    }

    /// Stops sending, waits for every report, and returns them.
    pub fn finish(self) -> Deliveries {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("producer thread")
    }
}

fn produce(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    stop: &AtomicBool,
    acked: &AtomicUsize,
) -> Deliveries {
    let producer = rdk::producer(bootstrap);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("build a runtime");
    let mut deliveries = Deliveries::new();
    let mut pending: VecDeque<(u64, DeliveryFuture)> = VecDeque::new();
    let settle = |deliveries: &mut Deliveries, (number, report): (u64, DeliveryFuture)| {
        let outcome = match runtime.block_on(report) {
            Ok(Ok(delivery)) => {
                acked.fetch_add(1, Ordering::AcqRel);
                Ok((delivery.partition, delivery.offset))
            }
            Ok(Err((error, _))) => Err(error.to_string()),
            Err(_) => Err("the delivery report was dropped".into()),
        };
        deliveries.insert(number, outcome);
    };
    let mut number = 0u64;
    while !stop.load(Ordering::Acquire) {
        let value = payload(topic, number);
        let report = producer
            .send_result(
                FutureRecord::<(), str>::to(topic)
                    .partition(partition_of(number, partitions))
                    .payload(&value),
            )
            .unwrap_or_else(|(error, _)| panic!("enqueue record {number}: {error}"));
        pending.push_back((number, report));
        number += 1;
        if pending.len() >= WINDOW {
            let oldest = pending.pop_front().expect("a pending report");
            settle(&mut deliveries, oldest);
        }
    }
    producer
        .flush(Duration::from_secs(90))
        .expect("every record reported on");
    for report in pending {
        settle(&mut deliveries, report);
    }
    deliveries
}
