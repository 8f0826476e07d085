//! kill -9 mid-stream: every record acknowledged with acks=all survives, at its acknowledged
//! offset, and the log continues contiguously after recovery.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::rdk::{self, Rec};
use common::{poll_until, TestServer};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};

const TOPIC: &str = "crash";
const PARTITIONS: i32 = 2;
/// Kill only after this many acknowledgements, so the kill lands mid-stream with data on disk.
const ACKED_BEFORE_KILL: usize = 6_000;
/// ~400-byte values, so each partition rolls at least one 1 MiB segment before the kill.
const VALUE_PAD: usize = 400;

/// Records every successful delivery: (partition, offset, key, value).
#[derive(Clone, Default)]
struct AckLog {
    acked: Arc<Mutex<Vec<Rec>>>,
}

impl ClientContext for AckLog {}

impl ProducerContext for AckLog {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(m) = result {
            self.acked.lock().expect("ack log lock").push(Rec {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                timestamp: None,
            });
        }
    }
}

fn value_of(i: u64) -> String {
    format!("{i:0>width$}", width = VALUE_PAD)
}

#[test]
fn kill_9_loses_no_acknowledged_record() {
    let mut server =
        TestServer::start_with(&[("num.partitions", "2"), ("log.segment.bytes", "1048576")]);
    let boot = server.bootstrap();

    let acks = AckLog::default();
    let producer: ThreadedProducer<AckLog> = ClientConfig::new()
        .set("bootstrap.servers", &boot)
        .set("broker.address.family", "v4")
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("linger.ms", "2")
        .set("queue.buffering.max.messages", "2000")
        .set("message.timeout.ms", "60000")
        .create_with_context(acks.clone())
        .expect("create producer");
    let producer = Arc::new(producer);

    // Stream numbered records until told to stop; a full queue is back-pressure, retried.
    let stop = Arc::new(AtomicBool::new(false));
    let streamer = {
        let producer = Arc::clone(&producer);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut i: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("n-{i}");
                let value = value_of(i);
                let partition = (i % PARTITIONS as u64) as i32;
                let record = BaseRecord::to(TOPIC)
                    .key(&key)
                    .payload(&value)
                    .partition(partition);
                match producer.send(record) {
                    Ok(()) => i += 1,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => panic!("enqueue record {i}: {e}"),
                }
            }
            i
        })
    };

    poll_until(
        &format!("{ACKED_BEFORE_KILL} acknowledgements"),
        Duration::from_secs(120),
        || (acks.acked.lock().expect("lock").len() >= ACKED_BEFORE_KILL).then_some(()),
    );
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    let enqueued = streamer.join().expect("streamer thread");
    // Dropping the producer purges whatever was queued or in flight: no late acks, no retries
    // against the restarted server.
    drop(Arc::into_inner(producer).expect("sole owner of the producer"));
    let mut acked = std::mem::take(&mut *acks.acked.lock().expect("lock"));
    acked.sort();
    assert!(acked.len() >= ACKED_BEFORE_KILL);
    assert!(enqueued as usize >= acked.len());
    eprintln!(
        "killed with {} of {enqueued} enqueued records acknowledged",
        acked.len()
    );

    // The stream crossed segment boundaries, so recovery has more than one segment to walk.
    for p in 0..PARTITIONS {
        let dir = server.data_dir().join(format!("{TOPIC}-{p}"));
        let segments = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
            })
            .count();
        assert!(
            segments >= 2,
            "{} has {segments} segment(s); expected a roll",
            dir.display()
        );
    }

    server.restart();

    // Everything on disk after recovery: high watermarks, then the records themselves.
    let consumer = rdk::consumer(&boot);
    let mut high = BTreeMap::new();
    for p in 0..PARTITIONS {
        let (low, hi) = consumer
            .fetch_watermarks(TOPIC, p, rdk::RPC_TIMEOUT)
            .unwrap_or_else(|e| panic!("watermarks of {TOPIC}-{p}: {e}"));
        assert_eq!(low, 0, "log start offset of {TOPIC}-{p}");
        high.insert(p, hi);
    }
    let total: i64 = high.values().sum();
    let partitions: Vec<i32> = (0..PARTITIONS).collect();
    let read = rdk::read_all(
        &boot,
        TOPIC,
        &partitions,
        total as usize,
        Duration::from_secs(120),
    );
    let counts = rdk::assert_contiguous(&read);
    assert_eq!(counts, high, "records read per partition = high watermarks");
    eprintln!("recovered high watermarks {high:?}");

    // Every acknowledged record is there, at its acknowledged offset, byte for byte.
    let by_position: BTreeMap<(i32, i64), &Rec> =
        read.iter().map(|r| ((r.partition, r.offset), r)).collect();
    for a in &acked {
        let r = by_position
            .get(&(a.partition, a.offset))
            .unwrap_or_else(|| {
                panic!(
                    "acknowledged record {:?} at {TOPIC}-{}@{} lost (high watermark {})",
                    a.key.as_deref().map(String::from_utf8_lossy),
                    a.partition,
                    a.offset,
                    high[&a.partition]
                )
            });
        assert_eq!(
            (&r.key, &r.value),
            (&a.key, &a.value),
            "record at {TOPIC}-{}@{}",
            a.partition,
            a.offset
        );
    }
    // Whatever survived beyond the acks is well-formed: one of ours, in the partition it was sent to.
    for r in &read {
        let key = String::from_utf8(r.key.clone().expect("key")).expect("utf-8 key");
        let i: u64 = key
            .strip_prefix("n-")
            .expect("n- prefix")
            .parse()
            .expect("numbered key");
        assert!(i < enqueued, "record {key} was never enqueued");
        assert_eq!(
            r.partition,
            (i % PARTITIONS as u64) as i32,
            "partition of {key}"
        );
        assert_eq!(
            r.value.as_deref(),
            Some(value_of(i).as_bytes()),
            "value of {key}"
        );
    }

    // Producing after recovery continues at the log end of each partition.
    let producer = rdk::producer(&boot);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for p in 0..PARTITIONS {
        let delivery = runtime
            .block_on(
                producer.send(
                    rdkafka::producer::FutureRecord::to(TOPIC)
                        .key("after")
                        .payload("crash")
                        .partition(p),
                    Duration::from_secs(30),
                ),
            )
            .unwrap_or_else(|(e, _)| panic!("produce after recovery: {e}"));
        assert_eq!((delivery.partition, delivery.offset), (p, high[&p]));
    }
    let (_, hi) = consumer
        .fetch_watermarks(TOPIC, 0, rdk::RPC_TIMEOUT)
        .expect("watermarks after append");
    assert_eq!(hi, high[&0] + 1);
}
