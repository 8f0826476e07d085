//! Interop with librdkafka (the `rdkafka` crate builds it from source): admin, produce with
//! acks=all, consume by manual assignment, watermarks, offsets by time, a restart, and the admin
//! APIs CreatePartitions and DescribeConfigs.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::rdk::{self, Rec};
use common::{poll_until, TestServer};
use rdkafka::admin::{
    ConfigSource, NewPartitions, NewTopic, OwnedResourceSpecifier, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

const RECORDS: usize = 10_000;
const PARTITIONS: i32 = 3;
/// Record i is produced with timestamp BASE_TS + 2 * i (ms), so every odd offset from BASE_TS
/// lies strictly between two produced timestamps.
const BASE_TS: i64 = 1_700_000_000_000;

fn timestamp_of(i: usize) -> i64 {
    BASE_TS + 2 * i as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_watermarks_times_and_restart() {
    let mut server = TestServer::start();
    let boot = server.bootstrap();
    let topic = "interop-rdkafka";
    rdk::create_topic(&boot, topic, PARTITIONS).await;

    // Produce 10,000 keyed records with acks=all; remember where each one landed.
    let producer = rdk::producer(&boot);
    let mut pending = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let key = format!("key-{i}");
        let value = format!("value-{i}");
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&value)
            .timestamp(timestamp_of(i));
        let future = producer
            .send_result(record)
            .unwrap_or_else(|(e, _)| panic!("enqueue record {i}: {e}"));
        pending.push(future);
    }
    let mut acked: Vec<Rec> = Vec::with_capacity(RECORDS);
    for (i, future) in pending.into_iter().enumerate() {
        let delivery = future
            .await
            .expect("delivery future cancelled")
            .unwrap_or_else(|(e, _)| panic!("record {i} not acknowledged: {e}"));
        acked.push(Rec {
            partition: delivery.partition,
            offset: delivery.offset,
            key: Some(format!("key-{i}").into_bytes()),
            value: Some(format!("value-{i}").into_bytes()),
            timestamp: Some(timestamp_of(i)),
        });
    }
    acked.sort();
    let counts = rdk::assert_contiguous(&acked);
    assert_eq!(
        counts.values().sum::<i64>(),
        RECORDS as i64,
        "acknowledged offsets per partition: {counts:?}"
    );
    assert!(
        counts.keys().all(|p| (0..PARTITIONS).contains(p)),
        "deliveries to unknown partitions: {counts:?}"
    );
    assert_eq!(
        counts.len(),
        PARTITIONS as usize,
        "10,000 keys must hit every partition: {counts:?}"
    );

    let partitions: Vec<i32> = (0..PARTITIONS).collect();
    let read = rdk::read_all(&boot, topic, &partitions, RECORDS, Duration::from_secs(60));
    assert_records_equal(&read, &acked);

    let consumer = rdk::consumer(&boot);
    assert_eq!(
        rdk::topic_partitions(&consumer, topic),
        Some(partitions.clone())
    );
    assert_watermarks(&consumer, topic, &counts);
    assert_offsets_for_times(&consumer, topic, &acked);
    drop(consumer);
    drop(producer);

    // Everything is still there, exactly, after a clean restart.
    server.restart();
    let read = rdk::read_all(&boot, topic, &partitions, RECORDS, Duration::from_secs(60));
    assert_records_equal(&read, &acked);
    let consumer = rdk::consumer(&boot);
    assert_watermarks(&consumer, topic, &counts);
    assert_offsets_for_times(&consumer, topic, &acked);

    // And appends continue at the log end.
    let producer = rdk::producer(&boot);
    let delivery = producer
        .send(
            FutureRecord::to(topic)
                .key("after-restart")
                .payload("v")
                .partition(1),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("produce after restart: {e}"));
    assert_eq!((delivery.partition, delivery.offset), (1, counts[&1]));

    server.stop_clean();
}

fn assert_records_equal(read: &[Rec], acked: &[Rec]) {
    assert_eq!(read.len(), acked.len(), "record count");
    for (r, a) in read.iter().zip(acked) {
        assert_eq!(r, a, "consumed record differs from the acknowledged one");
    }
}

fn assert_watermarks(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    counts: &BTreeMap<i32, i64>,
) {
    for (&p, &n) in counts {
        let marks = consumer
            .fetch_watermarks(topic, p, rdk::RPC_TIMEOUT)
            .unwrap_or_else(|e| panic!("watermarks of {topic}-{p}: {e}"));
        assert_eq!(marks, (0, n), "(low, high) watermarks of {topic}-{p}");
    }
}

/// ListOffsets by timestamp: the earliest offset whose timestamp is >= the target.
fn assert_offsets_for_times(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    acked: &[Rec],
) {
    // Strictly between the timestamps of records 4,321 and 4,322.
    let target = timestamp_of(4_321) + 1;
    let mut query = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        query
            .add_partition_offset(topic, p, Offset::Offset(target))
            .expect("add partition");
    }
    let answer = consumer
        .offsets_for_times(query, rdk::RPC_TIMEOUT)
        .expect("offsets_for_times");
    for p in 0..PARTITIONS {
        let expected = acked
            .iter()
            .filter(|r| r.partition == p && r.timestamp.expect("timestamp") >= target)
            .map(|r| r.offset)
            .min()
            .expect("some record after the target in every partition");
        let element = answer
            .find_partition(topic, p)
            .expect("partition in answer");
        assert_eq!(
            element.error(),
            Ok(()),
            "offsets_for_times error for {topic}-{p}"
        );
        assert_eq!(
            element.offset(),
            Offset::Offset(expected),
            "offset for time {target} in {topic}-{p}"
        );
    }

    // Later than every record: no such offset (Kafka answers -1, librdkafka's End).
    let mut query = TopicPartitionList::new();
    query
        .add_partition_offset(topic, 0, Offset::Offset(timestamp_of(RECORDS) + 1_000))
        .expect("add partition");
    let answer = consumer
        .offsets_for_times(query, rdk::RPC_TIMEOUT)
        .expect("offsets_for_times");
    let element = answer
        .find_partition(topic, 0)
        .expect("partition in answer");
    assert_eq!(
        element.offset(),
        Offset::End,
        "offset for a time after every record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_errors_and_delete() {
    let server = TestServer::start();
    let boot = server.bootstrap();

    rdk::create_topic(&boot, "admin-a", 2).await;
    assert_eq!(
        rdk::try_create_topic(&boot, "admin-a", 2).await,
        Err(("admin-a".to_string(), RDKafkaErrorCode::TopicAlreadyExists))
    );
    assert_eq!(
        rdk::try_create_topic(&boot, "bad/name", 1).await,
        Err(("bad/name".to_string(), RDKafkaErrorCode::InvalidTopic))
    );
    assert_eq!(
        rdk::try_create_topic(&boot, "zero-partitions", 0).await,
        Err((
            "zero-partitions".to_string(),
            RDKafkaErrorCode::InvalidPartitions
        ))
    );

    let consumer = rdk::consumer(&boot);
    assert_eq!(
        rdk::topic_partitions(&consumer, "admin-a"),
        Some(vec![0, 1])
    );
    assert_eq!(
        rdk::all_topics(&consumer),
        vec!["admin-a".to_string()],
        "failed creates left no topic"
    );

    let results = rdk::admin(&boot)
        .delete_topics(&["admin-a"], &rdk::admin_options())
        .await
        .expect("DeleteTopics request");
    assert_eq!(results, vec![Ok("admin-a".to_string())]);
    poll_until(
        "admin-a to disappear from metadata",
        Duration::from_secs(15),
        || rdk::all_topics(&consumer).is_empty().then_some(()),
    );

    // Deleting it again: unknown topic.
    let results = rdk::admin(&boot)
        .delete_topics(&["admin-a"], &rdk::admin_options())
        .await
        .expect("DeleteTopics request");
    assert_eq!(
        results,
        vec![Err((
            "admin-a".to_string(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_auto_creates_topic_with_num_partitions() {
    let server = TestServer::start_with(&[("num.partitions", "4")]);
    let boot = server.bootstrap();
    let topic = "auto-created";

    let producer = rdk::producer(&boot);
    let delivery = producer
        .send(
            FutureRecord::to(topic).key("k").payload("v").partition(3),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("produce to a new topic: {e}"));
    assert_eq!((delivery.partition, delivery.offset), (3, 0));

    let consumer = rdk::consumer(&boot);
    assert_eq!(
        rdk::topic_partitions(&consumer, topic),
        Some(vec![0, 1, 2, 3])
    );
    let read = rdk::read_all(&boot, topic, &[0, 1, 2, 3], 1, Duration::from_secs(30));
    assert_eq!(read.len(), 1);
    assert_eq!(
        (
            read[0].partition,
            read[0].offset,
            read[0].key.as_deref(),
            read[0].value.as_deref()
        ),
        (3, 0, Some(&b"k"[..]), Some(&b"v"[..]))
    );
}

#[test]
fn auto_create_disabled_leaves_topic_unknown() {
    let server = TestServer::start_with(&[("auto.create.topics.enable", "false")]);
    let mut conn = common::wire::RawConn::connect(server.kafka_addr());
    // Even a Metadata request that allows auto-creation must not create it.
    let response = conn.metadata(Some(&["never-created"]), true);
    assert_eq!(response.topics.len(), 1, "{response:?}");
    assert_eq!(
        response.topics[0].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION: {response:?}"
    );
    let consumer = rdk::consumer(&server.bootstrap());
    assert!(rdk::all_topics(&consumer).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_partitions_grows_a_topic_and_refuses_to_shrink_it() {
    let server = TestServer::start();
    let boot = server.bootstrap();
    let topic = "growing";
    rdk::create_topic(&boot, topic, 1).await;
    let admin = rdk::admin(&boot);

    let results = admin
        .create_partitions(&[NewPartitions::new(topic, 3)], &rdk::admin_options())
        .await
        .expect("CreatePartitions request");
    assert_eq!(results, vec![Ok(topic.to_string())]);
    let consumer = rdk::consumer(&boot);
    assert_eq!(rdk::topic_partitions(&consumer, topic), Some(vec![0, 1, 2]));

    let producer = rdk::producer(&boot);
    let delivery = producer
        .send(
            FutureRecord::to(topic)
                .key("k")
                .payload("in-2")
                .partition(2),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("produce to the new partition 2: {e}"));
    assert_eq!((delivery.partition, delivery.offset), (2, 0));
    let read = rdk::read_all(&boot, topic, &[0, 1, 2], 1, Duration::from_secs(30));
    assert_eq!(
        (read[0].partition, read[0].offset, read[0].value.as_deref()),
        (2, 0, Some(&b"in-2"[..]))
    );

    for count in [2, 3] {
        let results = admin
            .create_partitions(&[NewPartitions::new(topic, count)], &rdk::admin_options())
            .await
            .expect("CreatePartitions request");
        assert_eq!(
            results,
            vec![Err((
                topic.to_string(),
                RDKafkaErrorCode::InvalidPartitions
            ))],
            "CreatePartitions to {count}"
        );
    }
    assert_eq!(rdk::topic_partitions(&consumer, topic), Some(vec![0, 1, 2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_configs_reports_topic_overrides_defaults_and_broker_configs() {
    let server = TestServer::start_with(&[("num.partitions", "3")]);
    let boot = server.bootstrap();
    let admin = rdk::admin(&boot);
    let topic = "configured";
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("retention.ms", "60000")],
            &rdk::admin_options(),
        )
        .await
        .expect("CreateTopics request");
    assert_eq!(results, vec![Ok(topic.to_string())]);

    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &rdk::admin_options())
        .await
        .expect("DescribeConfigs request");
    assert_eq!(described.len(), 1);
    let resource = described[0].as_ref().expect("topic configs");
    assert_eq!(
        resource.specifier,
        OwnedResourceSpecifier::Topic(topic.to_string())
    );
    let entry = |name: &str| {
        let e = resource
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from {resource:?}"));
        (e.value.as_deref(), &e.source, e.is_default)
    };
    assert_eq!(
        entry("retention.ms"),
        (Some("60000"), &ConfigSource::DynamicTopic, false)
    );
    assert_eq!(
        entry("cleanup.policy"),
        (Some("delete"), &ConfigSource::Default, true)
    );
    assert_eq!(
        entry("segment.bytes"),
        (Some("1073741824"), &ConfigSource::Default, true)
    );

    let described = admin
        .describe_configs(&[ResourceSpecifier::Broker(1)], &rdk::admin_options())
        .await
        .expect("DescribeConfigs request");
    assert_eq!(described.len(), 1);
    let resource = described[0].as_ref().expect("broker configs");
    assert_eq!(resource.specifier, OwnedResourceSpecifier::Broker(1));
    let entry = |name: &str| {
        let e = resource
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from {resource:?}"));
        (e.value.as_deref(), &e.source)
    };
    assert_eq!(
        entry("num.partitions"),
        (Some("3"), &ConfigSource::StaticBroker)
    );
    assert_eq!(
        entry("log.retention.ms"),
        (Some("604800000"), &ConfigSource::Default)
    );

    // (An unknown topic's per-resource error is checked raw in broker_apis.rs: rdkafka 0.39's
    // describe_configs does not read rd_kafka_ConfigResource_error and reports Ok, no entries.)
}
