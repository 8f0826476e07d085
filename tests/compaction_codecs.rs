//! Compaction of compressed batches against the real binary, with librdkafka on both sides: an
//! rdkafka producer writes each codec's batches (librdkafka writes raw snappy and the LZ4 frame
//! format), the cleaner decompresses, filters and recompresses them (snappy in snappy-java's
//! framing), and an rdkafka consumer must read back exactly the latest record of each key at its
//! original offset, from batches that still carry the producer's codec.
//!
//! gzip and zstd are covered by the storage crate's tests only: this workspace builds librdkafka
//! without zlib and libzstd (`rdkafka` default features off), so its producer cannot write them.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::rdk::{self, Rec};
use common::wire::RawConn;
use common::{poll_until, TestServer};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use skald_protocol::batch::{RecordBatchHeader, RecordBatches, RECORD_BATCH_HEADER_BYTES};

const COMPACTION_TIMEOUT: Duration = Duration::from_secs(60);
const CONSUME_TIMEOUT: Duration = Duration::from_secs(30);

/// Which keys each round writes (`false`: a tombstone). Every round is acknowledged before the
/// next is sent, so each is a batch of its own; with tiny segments each lands in a segment of its
/// own. Rounds overwrite some keys of earlier ones, so the first three batches each keep some
/// records and lose others (rewritten and recompressed), and the last round keeps the one before
/// it out of the active segment.
const ROUNDS: &[&[(&str, bool)]] = &[
    &[
        ("k0", true),
        ("k1", true),
        ("k2", true),
        ("k3", true),
        ("k4", true),
        ("k5", true),
        ("k7", true),
    ],
    &[("k0", true), ("k1", true), ("k2", true)],
    &[("k0", true), ("k3", true), ("k5", false)],
    &[("k0", true), ("k4", true), ("k1", true)],
    &[("k6", true)],
];

/// Compressible on purpose: librdkafka sends a batch uncompressed when compressing it does not
/// make it smaller.
fn value(key: &str, round: usize) -> String {
    format!("{key}-round-{round}-").repeat(8)
}

/// librdkafka with `compression.type` set; one partition, acks=all, no idempotence.
fn producer(bootstrap: &str, codec: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("client.id", "skald-tests")
        .set("acks", "all")
        .set("enable.idempotence", "false")
        // Long enough for each round to go out as one batch.
        .set("linger.ms", "50")
        .set("message.timeout.ms", "30000")
        .set("compression.type", codec)
        .create()
        .expect("create FutureProducer")
}

/// Produces every round, each awaited before the next; returns what was acknowledged.
async fn produce_rounds(bootstrap: &str, topic: &str, codec: &str) -> Vec<Rec> {
    let producer = producer(bootstrap, codec);
    let mut written = Vec::new();
    for (round, writes) in ROUNDS.iter().enumerate() {
        let pending: Vec<_> = writes
            .iter()
            .map(|&(key, has_value)| {
                let payload = has_value.then(|| value(key, round));
                let mut record = FutureRecord::<str, String>::to(topic).key(key).partition(0);
                if let Some(payload) = &payload {
                    record = record.payload(payload);
                }
                let delivery = producer
                    .send_result(record)
                    .unwrap_or_else(|(e, _)| panic!("enqueue {key} of round {round}: {e}"));
                (key, payload, delivery)
            })
            .collect();
        for (key, payload, delivery) in pending {
            let delivered = delivery
                .await
                .expect("delivery future cancelled")
                .unwrap_or_else(|(e, _)| panic!("{key} of round {round} not acknowledged: {e}"));
            written.push(Rec {
                partition: 0,
                offset: delivered.offset,
                key: Some(key.as_bytes().to_vec()),
                value: payload.map(String::into_bytes),
                timestamp: None,
            });
        }
    }
    written.sort();
    written
}

/// Every batch of partition 0, read with raw fetches (no decompression needed): its header and
/// the first bytes of its compressed records.
fn batches(conn: &mut RawConn, topic: &str) -> Vec<(RecordBatchHeader, Vec<u8>)> {
    let mut batches = Vec::new();
    let mut offset = 0;
    loop {
        let (error, high_watermark, bytes) = conn.fetch_raw(topic, 0, offset);
        assert_eq!(error, 0, "fetch {topic} at {offset}");
        if bytes.is_empty() {
            assert_eq!(
                offset, high_watermark,
                "an empty read ends at the high watermark"
            );
            return batches;
        }
        for batch in RecordBatches::new(&bytes) {
            let (position, header) = batch.expect("valid batch");
            let records = position + RECORD_BATCH_HEADER_BYTES;
            offset = header.next_offset();
            batches.push((header, bytes[records..records + 8].to_vec()));
        }
    }
}

/// snappy-java's stream magic and the LZ4 frame magic.
const SNAPPY_JAVA_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const LZ4_FRAME_MAGIC: &[u8] = b"\x04\x22\x4d\x18";

async fn compacts_with(codec: &str, codec_id: u8) {
    let server = TestServer::start_with(&[("log.cleaner.backoff.ms", "100")]);
    let boot = server.bootstrap();
    let topic = format!("compacted-{codec}");
    let new_topic = NewTopic::new(&topic, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "200")
        .set("min.cleanable.dirty.ratio", "0.01")
        .set("min.compaction.lag.ms", "0");
    let results = rdk::admin(&boot)
        .create_topics(&[new_topic], &rdk::admin_options())
        .await
        .expect("CreateTopics request");
    assert_eq!(results, vec![Ok(topic.clone())]);

    let written = produce_rounds(&boot, &topic, codec).await;
    let total: usize = ROUNDS.iter().map(|round| round.len()).sum();
    assert_eq!(written.len(), total);
    assert_eq!(
        written.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (0..total as i64).collect::<Vec<_>>()
    );
    // The latest record of each key (tombstones too: delete.retention.ms is a day).
    let latest: BTreeMap<&[u8], &Rec> = written
        .iter()
        .map(|r| (r.key.as_deref().expect("keyed"), r))
        .collect();
    let mut expected: Vec<Rec> = latest.into_values().cloned().collect();
    expected.sort();

    // The cleaner runs in the background (it may have started while the rounds were produced);
    // the batch headers' record counts tell when it is done.
    let mut conn = RawConn::connect(server.kafka_addr());
    let after = poll_until(
        "the cleaner to compact every sealed segment",
        COMPACTION_TIMEOUT,
        || {
            let after = batches(&mut conn, &topic);
            let records: i32 = after.iter().map(|(h, _)| h.records_count).sum();
            (records as usize == expected.len()).then_some(after)
        },
    );
    // One batch per round, each still spanning its round's offsets, with the producer's codec.
    let mut round_start = 0;
    assert_eq!(after.len(), ROUNDS.len(), "{after:?}");
    for (round, (header, start)) in after.iter().enumerate() {
        let round_len = ROUNDS[round].len();
        assert_eq!(
            (
                header.compression(),
                header.base_offset,
                header.last_offset()
            ),
            (codec_id, round_start, round_start + round_len as i64 - 1),
            "round {round}"
        );
        round_start += round_len as i64;
        // The first three rounds lost records and were rewritten; the rest are as librdkafka
        // wrote them. librdkafka writes raw snappy, the cleaner snappy-java's framing (what the
        // Java producer writes); both write the LZ4 frame format.
        let rewritten = round < 3;
        assert_eq!(
            (header.records_count as usize) < round_len,
            rewritten,
            "round {round}"
        );
        match codec {
            "snappy" => assert_eq!(start.starts_with(SNAPPY_JAVA_MAGIC), rewritten),
            _ => assert!(start.starts_with(LZ4_FRAME_MAGIC), "round {round}"),
        }
    }

    let mut consumed = rdk::read_all(&boot, &topic, &[0], expected.len(), CONSUME_TIMEOUT);
    for record in &mut consumed {
        record.timestamp = None;
    }
    assert_eq!(
        consumed, expected,
        "exactly the latest record of each key, at its original offset"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snappy_batches_from_librdkafka_are_compacted() {
    compacts_with("snappy", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lz4_batches_from_librdkafka_are_compacted() {
    compacts_with("lz4", 3).await;
}
