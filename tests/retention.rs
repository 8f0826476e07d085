//! Retention and DeleteRecords through librdkafka against the real binary: DeleteRecords moves the
//! low watermark (durably, across a restart) and consumers start exactly there; time retention
//! deletes the expired segments in the background and keeps the active one.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::rdk::{self, Rec, RPC_TIMEOUT};
use common::wire::{self, RawConn};
use common::{poll_until, TestServer};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::DeleteRecordsRequest;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

const CONSUME_TIMEOUT: Duration = Duration::from_secs(30);
const OFFSET_OUT_OF_RANGE: i16 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

async fn create_topic_with(boot: &str, topic: &str, configs: &[(&str, &str)]) {
    let mut new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    for (key, value) in configs {
        new_topic = new_topic.set(key, value);
    }
    let results = rdk::admin(boot)
        .create_topics(&[new_topic], &rdk::admin_options())
        .await
        .expect("CreateTopics request");
    assert_eq!(results, vec![Ok(topic.to_string())], "create topic {topic}");
}

/// Produces one record and waits for its acknowledgement, so every call is a batch of its own.
async fn produce_one(boot: &str, topic: &str, value: &str, timestamp: i64) -> i64 {
    let delivery = rdk::producer(boot)
        .send(
            FutureRecord::to(topic)
                .key("k")
                .payload(value)
                .partition(0)
                .timestamp(timestamp),
            RPC_TIMEOUT,
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("record {value} not acknowledged: {e}"));
    delivery.offset
}

/// DeleteRecords for partition 0 of `topic`: the returned low watermark, or the partition's error.
async fn delete_records(boot: &str, topic: &str, offset: Offset) -> Result<Offset, KafkaError> {
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(topic, 0, offset)
        .expect("add partition");
    let result = rdk::admin(boot)
        .delete_records(&offsets, &rdk::admin_options())
        .await
        .expect("DeleteRecords request");
    let elements = result.elements();
    assert_eq!(elements.len(), 1, "one result per partition");
    elements[0].error().map(|()| elements[0].offset())
}

fn watermarks(boot: &str, topic: &str) -> (i64, i64) {
    rdk::consumer(boot)
        .fetch_watermarks(topic, 0, RPC_TIMEOUT)
        .expect("watermarks")
}

fn offsets_and_values(records: &[Rec]) -> Vec<(i64, String)> {
    records
        .iter()
        .map(|r| {
            let value = r.value.clone().expect("value");
            (r.offset, String::from_utf8(value).expect("utf-8 value"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_low_watermark_durably() {
    let mut server = TestServer::start();
    let boot = server.bootstrap();
    let topic = "delete-records";
    // Small segments, so deleting records also deletes whole segments below the new start.
    create_topic_with(&boot, topic, &[("segment.bytes", "300")]).await;

    // Five batches of one record, then records 5..10 sent together (librdkafka batches them, so
    // offset 7 is usually inside a batch).
    for i in 0..5 {
        assert_eq!(
            produce_one(&boot, topic, &format!("v{i}"), now_ms()).await,
            i
        );
    }
    let producer = rdk::producer(&boot);
    let pending: Vec<_> = (5..10)
        .map(|i| {
            let value = format!("v{i}");
            producer
                .send_result(
                    FutureRecord::to(topic)
                        .key("k")
                        .payload(&value)
                        .partition(0)
                        .timestamp(now_ms()),
                )
                .unwrap_or_else(|(e, _)| panic!("enqueue record {i}: {e}"))
        })
        .collect();
    for future in pending {
        future
            .await
            .expect("delivery future cancelled")
            .expect("acknowledged");
    }
    assert_eq!(watermarks(&boot, topic), (0, 10));

    assert_eq!(
        delete_records(&boot, topic, Offset::Offset(7)).await,
        Ok(Offset::Offset(7))
    );
    let expected: Vec<(i64, String)> = (7..10).map(|i| (i, format!("v{i}"))).collect();
    let check = |boot: &str, addr| {
        assert_eq!(watermarks(boot, topic), (7, 10));
        // A fetch below the low watermark is OFFSET_OUT_OF_RANGE; at it, the batch holding it.
        let mut conn = RawConn::connect(addr);
        assert_eq!(conn.fetch_raw(topic, 0, 6).0, OFFSET_OUT_OF_RANGE);
        let (error, high_watermark, records) = conn.fetch_raw(topic, 0, 7);
        assert_eq!((error, high_watermark), (0, 10));
        assert!(!records.is_empty());
        // From the beginning = from the low watermark; records 5 and 6 share offset 7's batch but
        // the client skips what lies below the fetch offset.
        let records = rdk::read_all(boot, topic, &[0], 3, CONSUME_TIMEOUT);
        assert_eq!(offsets_and_values(&records), expected);
    };
    check(&boot, server.kafka_addr());

    // Past the high watermark: OFFSET_OUT_OF_RANGE, and nothing moves. Backwards: nothing moves.
    assert_eq!(
        delete_records(&boot, topic, Offset::Offset(11)).await,
        Err(KafkaError::OffsetFetch(RDKafkaErrorCode::OffsetOutOfRange))
    );
    assert_eq!(
        delete_records(&boot, topic, Offset::Offset(3)).await,
        Ok(Offset::Offset(7))
    );

    server.restart();
    check(&boot, server.kafka_addr());
    let data = server.data_dir().join(format!("{topic}-0"));
    let leftovers: Vec<String> = std::fs::read_dir(&data)
        .expect("partition dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .into_string()
                .expect("name")
        })
        .filter(|name| name.ends_with(".deleted") || name.starts_with("00000000000000000000."))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new(), "in {}", data.display());

    // Offset -1 (Offset::End): everything below the high watermark.
    assert_eq!(
        delete_records(&boot, topic, Offset::End).await,
        Ok(Offset::Offset(10))
    );
    assert_eq!(watermarks(&boot, topic), (10, 10));
    assert_eq!(produce_one(&boot, topic, "v10", now_ms()).await, 10);
    let records = rdk::read_all(&boot, topic, &[0], 1, CONSUME_TIMEOUT);
    assert_eq!(offsets_and_values(&records), vec![(10, "v10".to_string())]);

    // What librdkafka checks before sending, over the wire: every advertised version answers
    // UNKNOWN_TOPIC_OR_PARTITION for an unknown partition and OFFSET_OUT_OF_RANGE below -1.
    let mut conn = RawConn::connect(server.kafka_addr());
    assert_eq!(
        conn.api_versions().get(&21),
        Some(&(0, 2)),
        "DeleteRecords advertised"
    );
    for version in 0..=2 {
        let request = DeleteRecordsRequest::default()
            .with_topics(vec![
                DeleteRecordsTopic::default()
                    .with_name(wire::topic_name(topic))
                    .with_partitions(vec![
                        DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(-2),
                        DeleteRecordsPartition::default()
                            .with_partition_index(1)
                            .with_offset(0),
                    ]),
                DeleteRecordsTopic::default()
                    .with_name(wire::topic_name("no-such-topic"))
                    .with_partitions(vec![DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(0)]),
            ])
            .with_timeout_ms(5_000);
        let response = conn.request(&request, version);
        let results: Vec<(String, i32, i64, i16)> = response
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    (
                        t.name.to_string(),
                        p.partition_index,
                        p.low_watermark,
                        p.error_code,
                    )
                })
            })
            .collect();
        assert_eq!(
            results,
            vec![
                (topic.to_string(), 0, -1, OFFSET_OUT_OF_RANGE),
                (topic.to_string(), 1, -1, UNKNOWN_TOPIC_OR_PARTITION),
                (
                    "no-such-topic".to_string(),
                    0,
                    -1,
                    UNKNOWN_TOPIC_OR_PARTITION
                ),
            ],
            "v{version}"
        );
    }
    assert_eq!(watermarks(&boot, topic), (10, 11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_retention_deletes_expired_segments_in_the_background() {
    let server = TestServer::start_with(&[("log.retention.check.interval.ms", "200")]);
    let boot = server.bootstrap();
    let topic = "time-retention";
    // One batch per segment; retention 10 minutes, so an hour-old record is long expired while a
    // fresh one stays put for the whole test.
    create_topic_with(
        &boot,
        topic,
        &[("retention.ms", "600000"), ("segment.bytes", "100")],
    )
    .await;
    let hour_ago = now_ms() - 3_600_000;
    for i in 0..4 {
        let offset = produce_one(&boot, topic, &format!("old{i}"), hour_ago + i).await;
        assert_eq!(offset, i);
    }
    assert_eq!(produce_one(&boot, topic, "fresh", now_ms()).await, 4);

    // One retention pass deletes all four expired segments under the partition's lock.
    let low = poll_until(
        "retention to move the low watermark",
        CONSUME_TIMEOUT,
        || {
            let (low, _) = watermarks(&boot, topic);
            (low > 0).then_some(low)
        },
    );
    assert_eq!(low, 4);
    assert_eq!(watermarks(&boot, topic), (4, 5));
    let records = rdk::read_all(&boot, topic, &[0], 1, CONSUME_TIMEOUT);
    assert_eq!(offsets_and_values(&records), vec![(4, "fresh".to_string())]);

    let data = server.data_dir().join(format!("{topic}-0"));
    let mut segment_files: Vec<String> = std::fs::read_dir(&data)
        .expect("partition dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .into_string()
                .expect("name")
        })
        .filter(|name| name.starts_with("0000"))
        .collect();
    segment_files.sort();
    assert_eq!(
        segment_files,
        vec![
            "00000000000000000004.index",
            "00000000000000000004.log",
            "00000000000000000004.timeindex",
        ],
        "in {}",
        data.display()
    );
}

/// Sealed segments a consumer read give their maps back once idle for
/// `log.segment.unload.idle.ms`: right after reading every segment each `.log` is mapped; then
/// only the active segment's stays mapped.
#[test]
fn idle_sealed_segments_are_unmapped() {
    const RECORDS: i64 = 40;
    let server = TestServer::start_with(&[
        ("log.segment.bytes", "1024"),
        ("log.segment.unload.idle.ms", "3000"),
    ]);
    let mut conn = RawConn::connect(server.kafka_addr());
    wire::ensure_topic(server.kafka_addr(), "cold");
    let value = "v".repeat(100);
    for i in 0..RECORDS {
        let batch = wire::batch_v2(&[("k", value.as_str(), now_ms())]);
        assert_eq!(conn.produce_raw("cold", 0, batch), (0, i));
    }
    let partition_dir = server.data_dir().join("cold-0");
    let segments = std::fs::read_dir(&partition_dir)
        .expect("list the partition's dir")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
        })
        .count();
    assert!(segments >= 5, "{segments} segments: too few to tell");
    let mapped_logs = || {
        std::fs::read_to_string(format!("/proc/{}/maps", server.pid()))
            .expect("read the server's maps")
            .lines()
            .filter(|line| line.contains("/cold-0/") && line.ends_with(".log"))
            .count()
    };
    // Reading every record loads every segment.
    for offset in 0..RECORDS {
        let (error, high_watermark, records) = conn.fetch_raw("cold", 0, offset);
        assert_eq!((error, high_watermark), (0, RECORDS));
        assert!(!records.is_empty(), "no records at offset {offset}");
    }
    assert_eq!(mapped_logs(), segments);
    poll_until("idle segments unmapped", Duration::from_secs(30), || {
        (mapped_logs() == 1).then_some(())
    });
}
