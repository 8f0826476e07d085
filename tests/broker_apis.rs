//! Raw-protocol tests of the broker's APIs where Kafka's answer is specific: fetch long-poll and
//! its errors, fetch sessions, per-topic configs on the produce path (max.message.bytes,
//! LogAppendTime, segment.bytes), CreateTopics validation, ListOffsets edge cases, graceful
//! shutdown and topic re-creation. Each test owns its server and asserts exact answers.

mod common;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::wire::{self, topic_name, RawConn};
use common::TestServer;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::ForgottenTopic;
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::list_offsets_response::ListOffsetsPartitionResponse;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse, FetchRequest,
    FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use kafka_protocol::protocol::StrBytes;
use skald_protocol::batch::{RecordBatchHeader, RecordBatches, TIMESTAMP_TYPE_MASK};

// Kafka's error codes.
const NONE: i16 = 0;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
const FETCH_SESSION_TOPIC_ID_ERROR: i16 = 106;

/// Kafka's ConfigResource types.
const TOPIC_RESOURCE: i8 = 2;
const BROKER_RESOURCE: i8 = 4;

/// ListOffsets' special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

/// Versions these tests speak (the field layouts used below hold up to these).
const CREATE_TOPICS_VERSION_MAX: i16 = 7;
const DELETE_TOPICS_VERSION_MAX: i16 = 5;
const LIST_OFFSETS_VERSION_MAX: i16 = 6;

/// Byte range of a v2 batch from the CRC on: what the broker must store exactly as the producer
/// sent it (for CreateTime); it patches only the base offset and partition leader epoch before it.
const CRC_AND_AFTER: std::ops::RangeFrom<usize> = 17..;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// CreateTopics for one topic with `partitions` partitions (replication factor 1) and `configs`;
/// returns the topic's result.
fn create_topic(
    conn: &mut RawConn,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> CreatableTopicResult {
    let version = conn.negotiate(ApiKey::CreateTopics, CREATE_TOPICS_VERSION_MAX);
    let configs = configs
        .iter()
        .map(|(name, value)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(name.to_string()))
                .with_value(Some(StrBytes::from_string(value.to_string())))
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_validate_only(validate_only)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
            .with_configs(configs)]);
    let response: CreateTopicsResponse = conn.request(&request, version);
    assert_eq!(response.topics.len(), 1, "{response:?}");
    let result = response.topics[0].clone();
    assert_eq!(result.name.as_str(), topic);
    result
}

/// Creates a topic and asserts success.
fn create_topic_ok(addr: SocketAddr, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut conn = RawConn::connect(addr);
    let result = create_topic(&mut conn, topic, partitions, configs, false);
    assert_eq!(
        (result.error_code, result.num_partitions),
        (NONE, partitions),
        "create {topic}: {result:?}"
    );
}

/// DeleteTopics for one topic by name; returns its error code.
fn delete_topic(conn: &mut RawConn, topic: &str) -> i16 {
    let version = conn.negotiate(ApiKey::DeleteTopics, DELETE_TOPICS_VERSION_MAX);
    let request = DeleteTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topic_names(vec![topic_name(topic)]);
    let response: DeleteTopicsResponse = conn.request(&request, version);
    assert_eq!(response.responses.len(), 1, "{response:?}");
    let result = &response.responses[0];
    assert_eq!(result.name.as_ref().map(|n| n.as_str()), Some(topic));
    result.error_code
}

/// ListOffsets for one partition at `timestamp` (or LATEST / EARLIEST).
fn list_offset(
    conn: &mut RawConn,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> ListOffsetsPartitionResponse {
    let version = conn.negotiate(ApiKey::ListOffsets, LIST_OFFSETS_VERSION_MAX);
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp)])]);
    let response: ListOffsetsResponse = conn.request(&request, version);
    assert_eq!(response.topics.len(), 1, "{response:?}");
    assert_eq!(response.topics[0].name.as_str(), topic);
    assert_eq!(response.topics[0].partitions.len(), 1, "{response:?}");
    let p = response.topics[0].partitions[0].clone();
    assert_eq!(p.partition_index, partition);
    p
}

/// Sends `request` and returns the only partition of the response, asserting no top-level error.
fn fetch_one(conn: &mut RawConn, request: &FetchRequest) -> PartitionData {
    let version = conn.negotiate(ApiKey::Fetch, wire::FETCH_VERSION_MAX);
    let response: FetchResponse = conn.request(request, version);
    only_partition(&response)
}

fn only_partition(response: &FetchResponse) -> PartitionData {
    assert_eq!(
        response.error_code, NONE,
        "fetch top-level error: {response:?}"
    );
    assert_eq!(response.responses.len(), 1, "{response:?}");
    assert_eq!(response.responses[0].partitions.len(), 1, "{response:?}");
    response.responses[0].partitions[0].clone()
}

/// Every batch header in `records`, CRC-checked.
fn batch_headers(records: &[u8]) -> Vec<RecordBatchHeader> {
    RecordBatches::new(records)
        .map(|batch| batch.expect("valid stored batch").1)
        .collect()
}

/// Reads the whole partition with repeated fetches from offset 0; returns every batch's bytes.
fn read_partition(conn: &mut RawConn, topic: &str, partition: i32) -> Vec<Bytes> {
    let mut batches = Vec::new();
    let mut offset = 0;
    loop {
        let (error, high_watermark, records) = conn.fetch_raw(topic, partition, offset);
        assert_eq!(error, NONE, "fetch {topic}-{partition} at {offset}");
        if offset >= high_watermark {
            assert!(records.is_empty(), "records at the log end: {records:?}");
            return batches;
        }
        let mut position = 0;
        for header in batch_headers(&records) {
            let size = header.total_size();
            batches.push(records.slice(position..position + size));
            position += size;
            offset = header.next_offset();
        }
        assert!(
            position > 0,
            "no batch below the high watermark at {offset}"
        );
    }
}

fn value(len: usize, i: usize) -> String {
    format!("{i:0>len$}")
}

#[test]
fn fetch_long_poll_is_answered_by_a_produce_on_another_connection() {
    let server = TestServer::start();
    let addr = server.kafka_addr();
    create_topic_ok(addr, "long-poll", 1, &[]);
    let mut producer = RawConn::connect(addr);
    for i in 0..2 {
        let batch = wire::batch_v2(&[("k", "before", 1_000 + i)]);
        assert_eq!(producer.produce_raw("long-poll", 0, batch), (NONE, i));
    }

    // Parked at the log end (offset 2), wanting at least one byte for up to 10 s.
    let mut fetcher = RawConn::connect(addr);
    let version = fetcher.negotiate(ApiKey::Fetch, wire::FETCH_VERSION_MAX);
    let request = wire::fetch_request("long-poll", 0, 2)
        .with_min_bytes(1)
        .with_max_wait_ms(10_000);
    let correlation_id = fetcher.next_correlation_id();
    fetcher
        .write_frame(&RawConn::encode_request(&request, version, correlation_id))
        .expect("send long-poll fetch");
    let sent = Instant::now();
    let waiting = std::thread::spawn(move || {
        let frame = fetcher.read_frame();
        (sent.elapsed(), frame, version, correlation_id)
    });

    let batch = wire::batch_v2(&[("k", "woken", 5_000), ("k2", "woken-2", 5_001)]);
    assert_eq!(
        producer.produce_raw("long-poll", 0, batch.clone()),
        (NONE, 2)
    );

    let (elapsed, frame, version, correlation_id) = waiting.join().expect("fetch thread");
    assert!(
        elapsed < Duration::from_secs(5),
        "the fetch was answered after {elapsed:?}: the append did not wake it"
    );
    let response = decode_fetch_response(frame, version, correlation_id);
    let partition = only_partition(&response);
    assert_eq!(
        (
            partition.error_code,
            partition.high_watermark,
            partition.log_start_offset
        ),
        (NONE, 4, 0)
    );
    let records = partition.records.unwrap_or_default();
    let headers = batch_headers(&records);
    assert_eq!(headers.len(), 1, "exactly the produced batch: {headers:?}");
    assert_eq!(
        (
            headers[0].base_offset,
            headers[0].records_count,
            headers[0].last_offset()
        ),
        (2, 2, 3)
    );
    assert_eq!(records.len(), batch.len(), "stored batch size");
    assert_eq!(
        &records[CRC_AND_AFTER], &batch[CRC_AND_AFTER],
        "stored batch differs from the produced one"
    );
}

fn decode_fetch_response(frame: Vec<u8>, version: i16, correlation_id: i32) -> FetchResponse {
    use kafka_protocol::messages::ResponseHeader;
    use kafka_protocol::protocol::{Decodable, HeaderVersion};
    let mut buf = Bytes::from(frame);
    let header = ResponseHeader::decode(&mut buf, FetchResponse::header_version(version))
        .expect("decode fetch response header");
    assert_eq!(header.correlation_id, correlation_id);
    let response = FetchResponse::decode(&mut buf, version).expect("decode fetch response");
    assert!(buf.is_empty(), "trailing bytes after the fetch response");
    response
}

#[test]
fn fetch_without_data_waits_max_wait_then_answers_empty() {
    let server = TestServer::start();
    create_topic_ok(server.kafka_addr(), "idle", 1, &[]);
    let mut conn = RawConn::connect(server.kafka_addr());
    let batch = wire::batch_v2(&[("k", "v", 1_000)]);
    assert_eq!(conn.produce_raw("idle", 0, batch), (NONE, 0));

    let request = wire::fetch_request("idle", 0, 1)
        .with_min_bytes(1)
        .with_max_wait_ms(200);
    let started = Instant::now();
    let partition = fetch_one(&mut conn, &request);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(150),
        "answered after {elapsed:?}, without waiting max_wait_ms=200"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "answered after {elapsed:?} for max_wait_ms=200"
    );
    assert_eq!(
        (
            partition.error_code,
            partition.high_watermark,
            partition.log_start_offset
        ),
        (NONE, 1, 0)
    );
    assert!(
        partition.records.unwrap_or_default().is_empty(),
        "no records past the log end"
    );
}

#[test]
fn fetch_errors_offset_out_of_range_and_unknown_partition() {
    let server = TestServer::start();
    create_topic_ok(server.kafka_addr(), "ranged", 1, &[]);
    let mut conn = RawConn::connect(server.kafka_addr());
    let batch = wire::batch_v2(&[("a", "1", 1_000), ("b", "2", 1_001), ("c", "3", 1_002)]);
    assert_eq!(conn.produce_raw("ranged", 0, batch), (NONE, 0));

    // The log end itself is a valid position (nothing there yet); one past it is not.
    let at_end = fetch_one(&mut conn, &wire::fetch_request("ranged", 0, 3));
    assert_eq!((at_end.error_code, at_end.high_watermark), (NONE, 3));
    assert!(at_end.records.unwrap_or_default().is_empty());
    for offset in [4, 1_000, -5] {
        let partition = fetch_one(&mut conn, &wire::fetch_request("ranged", 0, offset));
        assert_eq!(
            (
                partition.error_code,
                partition.high_watermark,
                partition.log_start_offset
            ),
            (OFFSET_OUT_OF_RANGE, 3, 0),
            "fetch at {offset}"
        );
        assert!(partition.records.unwrap_or_default().is_empty());
    }

    // An error answers at once, even with max_wait_ms: a client must not wait 10 s to learn it.
    let started = Instant::now();
    let partition = fetch_one(
        &mut conn,
        &wire::fetch_request("ranged", 7, 0)
            .with_min_bytes(1)
            .with_max_wait_ms(10_000),
    );
    assert_eq!(
        (partition.partition_index, partition.error_code),
        (7, UNKNOWN_TOPIC_OR_PARTITION)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let partition = fetch_one(&mut conn, &wire::fetch_request("no-such-topic", 0, 0));
    assert_eq!(partition.error_code, UNKNOWN_TOPIC_OR_PARTITION);
    let mut check = RawConn::connect(server.kafka_addr());
    let metadata = check.metadata(Some(&["no-such-topic"]), false);
    assert_eq!(
        metadata.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION,
        "a fetch must not create the topic"
    );
}

/// A fetch of `partitions` of topic "sessions" (partition, fetch offset) in session
/// `(session_id, epoch)`, answered at once.
fn session_fetch(session_id: i32, epoch: i32, partitions: &[(i32, i64)]) -> FetchRequest {
    let mut request = wire::fetch_request("sessions", 0, 0)
        .with_session_id(session_id)
        .with_session_epoch(epoch);
    let topic = &mut request.topics[0];
    let template = topic.partitions[0].clone();
    topic.partitions = partitions
        .iter()
        .map(|&(partition, offset)| {
            template
                .clone()
                .with_partition(partition)
                .with_fetch_offset(offset)
        })
        .collect();
    if partitions.is_empty() {
        request.topics.clear();
    }
    request
}

/// What a fetch answer holds: (partition, error, high watermark, record bytes) in order.
fn answered(response: &FetchResponse) -> Vec<(i32, i16, i64, usize)> {
    response
        .responses
        .iter()
        .flat_map(|topic| &topic.partitions)
        .map(|p| {
            (
                p.partition_index,
                p.error_code,
                p.high_watermark,
                p.records.as_ref().map_or(0, |r| r.len()),
            )
        })
        .collect()
}

#[test]
fn fetch_sessions_send_only_what_changed() {
    let server = TestServer::start();
    create_topic_ok(server.kafka_addr(), "sessions", 3, &[]);
    let mut conn = RawConn::connect(server.kafka_addr());
    let batch = wire::batch_v2(&[("k", "v", 1_000)]);
    let size = batch.len();
    assert_eq!(conn.produce_raw("sessions", 0, batch.clone()), (NONE, 0));
    assert_eq!(conn.produce_raw("sessions", 1, batch.clone()), (NONE, 0));
    let sessions = || common::metric_sample(server.metrics_addr(), "skald_fetch_sessions");
    let cached = || common::metric_sample(server.metrics_addr(), "skald_fetch_session_partitions");

    // Epoch 0: a full answer of every partition, and a session.
    let all = [(0, 0), (1, 0), (2, 0)];
    let full: FetchResponse = conn.request(&session_fetch(0, 0, &all), 12);
    assert_eq!(full.error_code, NONE);
    assert_ne!(full.session_id, 0, "a session was created: {full:?}");
    let id = full.session_id;
    assert_eq!(
        answered(&full),
        vec![(0, NONE, 1, size), (1, NONE, 1, size), (2, NONE, 0, 0)]
    );
    assert_eq!((sessions(), cached()), (Some(1.0), Some(3.0)));

    // Epoch 1 moves partitions 0 and 1 past their records: nothing new anywhere, nothing listed.
    let moved: FetchResponse = conn.request(&session_fetch(id, 1, &[(0, 1), (1, 1)]), 12);
    assert_eq!((moved.error_code, moved.session_id), (NONE, id));
    assert_eq!(answered(&moved), vec![]);

    // A record on partition 2 (still fetched from 0 in the session): only it is answered.
    assert_eq!(conn.produce_raw("sessions", 2, batch.clone()), (NONE, 0));
    let changed: FetchResponse = conn.request(&session_fetch(id, 2, &[]), 12);
    assert_eq!((changed.error_code, changed.session_id), (NONE, id));
    assert_eq!(answered(&changed), vec![(2, NONE, 1, size)]);

    // Session errors, each answered with no partitions and session id 0; none moves the session.
    for (request, version, error) in [
        (session_fetch(id, 2, &[]), 12, INVALID_FETCH_SESSION_EPOCH),
        (session_fetch(id, 7, &[]), 12, INVALID_FETCH_SESSION_EPOCH),
        (
            session_fetch(id.checked_add(1).unwrap_or(1), 3, &[]),
            12,
            FETCH_SESSION_ID_NOT_FOUND,
        ),
        // Begun with names (v12), it cannot go on with topic ids (v13).
        (session_fetch(id, 3, &[]), 13, FETCH_SESSION_TOPIC_ID_ERROR),
    ] {
        let response: FetchResponse = conn.request(&request, version);
        assert_eq!(
            (
                response.error_code,
                response.session_id,
                answered(&response)
            ),
            (error, 0, vec![]),
            "{request:?} v{version}"
        );
    }

    // Epoch 3 forgets partition 0 and moves partition 2 on: still nothing new.
    let mut forget = session_fetch(id, 3, &[(2, 1)]);
    forget.forgotten_topics_data = vec![ForgottenTopic::default()
        .with_topic(topic_name("sessions"))
        .with_partitions(vec![0])];
    let response: FetchResponse = conn.request(&forget, 12);
    assert_eq!(
        (
            response.error_code,
            response.session_id,
            answered(&response)
        ),
        (NONE, id, vec![])
    );
    assert_eq!(cached(), Some(2.0));

    // Epoch 4 lists nothing and waits for data: a record on partition 1, which only the session
    // names, answers it. Whichever comes first, the answer is the same; a parked fetch that
    // missed the append would sit out its 30 s wait, past the connection's 10 s read timeout.
    let parked_fetch = session_fetch(id, 4, &[])
        .with_max_wait_ms(30_000)
        .with_min_bytes(1);
    let parked = std::thread::scope(|scope| {
        let fetching = scope.spawn(|| -> FetchResponse { conn.request(&parked_fetch, 12) });
        let mut producer = RawConn::connect(server.kafka_addr());
        assert_eq!(
            producer.produce_raw("sessions", 1, batch.clone()),
            (NONE, 1)
        );
        fetching.join().expect("the parked fetch")
    });
    assert_eq!(
        (parked.error_code, parked.session_id, answered(&parked)),
        (NONE, id, vec![(1, NONE, 2, size)])
    );

    // Epoch -1 closes it: a sessionless full answer, and the session is gone.
    let closed: FetchResponse = conn.request(&session_fetch(id, -1, &[(0, 1)]), 12);
    assert_eq!(
        (closed.error_code, closed.session_id, answered(&closed)),
        (NONE, 0, vec![(0, NONE, 1, 0)])
    );
    assert_eq!((sessions(), cached()), (Some(0.0), Some(0.0)));
    let gone: FetchResponse = conn.request(&session_fetch(id, 5, &[]), 12);
    assert_eq!(
        (gone.error_code, gone.session_id),
        (FETCH_SESSION_ID_NOT_FOUND, 0)
    );
}

#[test]
fn produce_over_topic_max_message_bytes_is_refused_and_stores_nothing() {
    let server = TestServer::start();
    create_topic_ok(
        server.kafka_addr(),
        "small-messages",
        1,
        &[("max.message.bytes", "1024")],
    );
    let mut conn = RawConn::connect(server.kafka_addr());
    let big = wire::batch_v2(&[("k", &"x".repeat(2_000), 1_000)]);
    assert!(big.len() > 1024);
    let refused = conn.produce("small-messages", 0, big);
    assert_eq!(
        (refused.error_code, refused.base_offset),
        (MESSAGE_TOO_LARGE, -1),
        "{refused:?}"
    );
    let (error, high_watermark, records) = conn.fetch_raw("small-messages", 0, 0);
    assert_eq!((error, high_watermark), (NONE, 0), "nothing was stored");
    assert!(records.is_empty());

    // A batch within the limit still goes in, at offset 0.
    let small = wire::batch_v2(&[("k", &"x".repeat(500), 1_000)]);
    assert!(small.len() <= 1024);
    assert_eq!(conn.produce_raw("small-messages", 0, small), (NONE, 0));
}

#[test]
fn log_append_time_topic_stamps_batches_with_the_broker_clock() {
    let server = TestServer::start();
    create_topic_ok(
        server.kafka_addr(),
        "append-time",
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    );
    create_topic_ok(server.kafka_addr(), "create-time", 1, &[]);
    let mut conn = RawConn::connect(server.kafka_addr());
    let batch = wire::batch_v2(&[("a", "1", 1_000), ("b", "2", 1_001)]);

    let before = now_ms();
    let response = conn.produce("append-time", 0, batch.clone());
    let after = now_ms();
    assert_eq!((response.error_code, response.base_offset), (NONE, 0));
    let append_time = response.log_append_time_ms;
    let ten_minutes = 10 * 60 * 1_000;
    assert!(
        (before - ten_minutes..=after + ten_minutes).contains(&append_time),
        "log_append_time_ms {append_time} is not near the test's clock ({before}..{after})"
    );

    let (error, high_watermark, records) = conn.fetch_raw("append-time", 0, 0);
    assert_eq!((error, high_watermark), (NONE, 2));
    let headers = batch_headers(&records);
    assert_eq!(headers.len(), 1, "{headers:?}");
    let stored = headers[0];
    assert_eq!(stored.max_timestamp, append_time, "{stored:?}");
    assert_ne!(
        stored.attributes & TIMESTAMP_TYPE_MASK,
        0,
        "timestamp-type bit not set: {stored:?}"
    );
    assert!(stored.timestamp_type_is_log_append_time());
    // The records themselves are untouched.
    assert_eq!(records.len(), batch.len());
    assert_eq!(&records[61..], &batch[61..]);

    // A CreateTime topic keeps the producer's timestamps and answers log_append_time_ms -1.
    let response = conn.produce("create-time", 0, batch.clone());
    assert_eq!(
        (
            response.error_code,
            response.base_offset,
            response.log_append_time_ms
        ),
        (NONE, 0, -1)
    );
    let (_, _, records) = conn.fetch_raw("create-time", 0, 0);
    let stored = batch_headers(&records)[0];
    assert_eq!(stored.max_timestamp, 1_001);
    assert_eq!(stored.attributes & TIMESTAMP_TYPE_MASK, 0);
}

#[test]
fn create_topics_validate_only_and_invalid_config() {
    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());

    let result = create_topic(
        &mut conn,
        "only-validated",
        2,
        &[("retention.ms", "60000")],
        true,
    );
    assert_eq!(
        (result.error_code, result.num_partitions),
        (NONE, 2),
        "{result:?}"
    );
    let metadata = conn.metadata(Some(&["only-validated"]), false);
    assert_eq!(
        metadata.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION,
        "validate_only created the topic: {metadata:?}"
    );
    assert!(
        !server.data_dir().join("only-validated-0").exists(),
        "validate_only created a partition directory"
    );

    let result = create_topic(
        &mut conn,
        "bad-config",
        1,
        &[("no.such.config", "1")],
        false,
    );
    assert_eq!(result.error_code, INVALID_CONFIG, "{result:?}");
    let result = create_topic(
        &mut conn,
        "bad-value",
        1,
        &[("retention.ms", "soon")],
        false,
    );
    assert_eq!(result.error_code, INVALID_CONFIG, "{result:?}");
    let metadata = conn.metadata(Some(&["bad-config", "bad-value"]), false);
    let codes: Vec<i16> = metadata.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(
        codes,
        vec![UNKNOWN_TOPIC_OR_PARTITION; 2],
        "refused topics exist: {metadata:?}"
    );
}

#[test]
fn small_segment_bytes_rolls_segments_and_keeps_offsets_contiguous() {
    let server = TestServer::start();
    create_topic_ok(
        server.kafka_addr(),
        "rolling",
        1,
        &[("segment.bytes", "1024")],
    );
    let mut conn = RawConn::connect(server.kafka_addr());
    const BATCHES: usize = 6;
    let mut produced = Vec::new();
    for i in 0..BATCHES {
        let batch = wire::batch_v2(&[("k", &value(600, i), 1_000 + i as i64)]);
        assert!(batch.len() > 600 && batch.len() <= 1024, "{}", batch.len());
        assert_eq!(
            conn.produce_raw("rolling", 0, batch.clone()),
            (NONE, i as i64)
        );
        produced.push(batch);
    }

    let stored = read_partition(&mut conn, "rolling", 0);
    assert_eq!(stored.len(), BATCHES, "batches read back");
    for (i, (stored, produced)) in stored.iter().zip(&produced).enumerate() {
        let header = RecordBatchHeader::parse(stored).expect("stored header");
        assert_eq!(header.base_offset, i as i64, "offsets are contiguous");
        assert_eq!(
            &stored[CRC_AND_AFTER], &produced[CRC_AND_AFTER],
            "batch {i}"
        );
    }

    // Kafka rolls before an append that would take the segment past segment.bytes: two of these
    // batches never share a segment, so each starts its own, named by its base offset.
    let partition_dir = server.data_dir().join("rolling-0");
    let mut segments = BTreeSet::new();
    for entry in std::fs::read_dir(&partition_dir).expect("read partition dir") {
        let name = entry.expect("dir entry").file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log") {
            assert!(
                stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()),
                "segment file name {name:?} is not a 20-digit base offset"
            );
            segments.insert(stem.parse::<i64>().expect("numeric segment name"));
        }
    }
    assert!(segments.len() > 1, "no segment was rolled: {segments:?}");
    assert_eq!(
        segments,
        (0..BATCHES as i64).collect::<BTreeSet<_>>(),
        "one segment per batch"
    );
}

#[test]
fn list_offsets_unknown_partition_and_time_after_every_record() {
    let server = TestServer::start();
    create_topic_ok(server.kafka_addr(), "timed", 1, &[]);
    let mut conn = RawConn::connect(server.kafka_addr());
    let batch = wire::batch_v2(&[("a", "1", 10_000), ("b", "2", 20_000), ("c", "3", 30_000)]);
    assert_eq!(conn.produce_raw("timed", 0, batch), (NONE, 0));

    for (topic, partition) in [("timed", 1), ("timed", -1), ("no-such-topic", 0)] {
        for timestamp in [LATEST, EARLIEST, 0] {
            let answer = list_offset(&mut conn, topic, partition, timestamp);
            assert_eq!(
                answer.error_code, UNKNOWN_TOPIC_OR_PARTITION,
                "{topic}-{partition} at {timestamp}: {answer:?}"
            );
        }
    }

    let answer = list_offset(&mut conn, "timed", 0, 30_001);
    assert_eq!(
        (answer.error_code, answer.offset, answer.timestamp),
        (NONE, -1, -1),
        "{answer:?}"
    );
    // And, around it, the exact answers.
    let answer = list_offset(&mut conn, "timed", 0, 20_000);
    assert_eq!((answer.error_code, answer.offset), (NONE, 1), "{answer:?}");
    let answer = list_offset(&mut conn, "timed", 0, 20_001);
    assert_eq!((answer.error_code, answer.offset), (NONE, 2), "{answer:?}");
    assert_eq!(list_offset(&mut conn, "timed", 0, LATEST).offset, 3);
    assert_eq!(list_offset(&mut conn, "timed", 0, EARLIEST).offset, 0);
}

#[test]
fn sigterm_with_a_parked_fetch_exits_cleanly_and_keeps_everything() {
    let mut server = TestServer::start();
    let addr = server.kafka_addr();
    create_topic_ok(addr, "durable", 2, &[("retention.ms", "60000")]);
    let mut conn = RawConn::connect(addr);
    let mut produced = Vec::new();
    for i in 0..3 {
        let batch = wire::batch_v2(&[("k", &value(100, i), 1_000 + i as i64)]);
        assert_eq!(
            conn.produce_raw("durable", 1, batch.clone()),
            (NONE, i as i64)
        );
        produced.push(batch);
    }

    // A fetch parked for the longest wait the broker allows, and an idle connection.
    let mut parked = RawConn::connect(addr);
    let version = parked.negotiate(ApiKey::Fetch, wire::FETCH_VERSION_MAX);
    let request = wire::fetch_request("durable", 1, 3)
        .with_min_bytes(1)
        .with_max_wait_ms(30_000);
    let correlation_id = parked.next_correlation_id();
    parked
        .write_frame(&RawConn::encode_request(&request, version, correlation_id))
        .expect("send parked fetch");
    let mut idle = RawConn::connect(addr);
    idle.api_versions();

    let started = Instant::now();
    let status = server.stop();
    let elapsed = started.elapsed();
    assert!(
        status.success(),
        "exit status {status} after SIGTERM\n{}",
        server.stderr_tail()
    );
    assert!(
        elapsed < Duration::from_secs(15),
        "shutdown took {elapsed:?}: held up by the parked 30 s fetch"
    );
    idle.expect_closed("idle connection at shutdown");
    // The parked fetch is either answered (empty, nothing was appended) or its connection closed.
    let mut size = [0u8; 4];
    match parked.stream.read_exact(&mut size) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
            ) => {}
        Err(e) => panic!("parked fetch: neither answered nor closed: {e}"),
        Ok(()) => {
            let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
            parked.stream.read_exact(&mut frame).expect("response body");
            let partition = only_partition(&decode_fetch_response(frame, version, correlation_id));
            // Empty, or NOT_LEADER_OR_FOLLOWER: controlled shutdown took the partition's
            // leadership away, which completes a parked fetch at once, as in Kafka.
            match partition.error_code {
                NONE => assert_eq!(partition.high_watermark, 3),
                code => assert_eq!(code, NOT_LEADER_OR_FOLLOWER),
            }
            assert!(partition.records.unwrap_or_default().is_empty());
        }
    }

    server.restart();
    let mut conn = RawConn::connect(addr);
    let stored = read_partition(&mut conn, "durable", 1);
    assert_eq!(stored.len(), produced.len());
    for (i, (stored, produced)) in stored.iter().zip(&produced).enumerate() {
        let header = RecordBatchHeader::parse(stored).expect("stored header");
        assert_eq!(header.base_offset, i as i64);
        assert_eq!(
            &stored[CRC_AND_AFTER], &produced[CRC_AND_AFTER],
            "batch {i}"
        );
    }
    assert!(read_partition(&mut conn, "durable", 0).is_empty());
    let metadata = conn.metadata(Some(&["durable"]), false);
    assert_eq!(metadata.topics[0].partitions.len(), 2, "{metadata:?}");
    assert_eq!(
        describe_topic_config(&mut conn, "durable", "retention.ms"),
        (Some("60000".to_string()), 1),
        "the topic's config override survives the restart (DynamicTopic source)"
    );
    let batch = wire::batch_v2(&[("k", "after", 9_000)]);
    assert_eq!(conn.produce_raw("durable", 1, batch), (NONE, 3));
}

#[test]
fn describe_configs_errors_are_per_resource() {
    let server = TestServer::start();
    create_topic_ok(server.kafka_addr(), "present", 1, &[]);
    let mut conn = RawConn::connect(server.kafka_addr());
    let version = conn.negotiate(ApiKey::DescribeConfigs, 4);
    let resource = |resource_type: i8, name: &'static str| {
        DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_static_str(name))
            .with_configuration_keys(Some(vec![StrBytes::from_static_str("retention.ms")]))
    };
    let request = DescribeConfigsRequest::default().with_resources(vec![
        resource(TOPIC_RESOURCE, "absent"),
        resource(TOPIC_RESOURCE, "present"),
        resource(BROKER_RESOURCE, "2"),
    ]);
    let response: DescribeConfigsResponse = conn.request(&request, version);
    let answers: Vec<(&str, i16, usize)> = response
        .results
        .iter()
        .map(|r| (r.resource_name.as_str(), r.error_code, r.configs.len()))
        .collect();
    assert_eq!(
        answers,
        vec![
            ("absent", UNKNOWN_TOPIC_OR_PARTITION, 0),
            ("present", NONE, 1),
            ("2", INVALID_REQUEST, 0),
        ],
        "{response:?}"
    );
}

/// (value, config source) of one topic config, through DescribeConfigs.
fn describe_topic_config(conn: &mut RawConn, topic: &str, key: &str) -> (Option<String>, i8) {
    let version = conn.negotiate(ApiKey::DescribeConfigs, 4);
    let resource = DescribeConfigsResource::default()
        .with_resource_type(TOPIC_RESOURCE)
        .with_resource_name(StrBytes::from_string(topic.to_string()))
        .with_configuration_keys(Some(vec![StrBytes::from_string(key.to_string())]));
    let response: DescribeConfigsResponse = conn.request(
        &DescribeConfigsRequest::default().with_resources(vec![resource]),
        version,
    );
    let result = &response.results[0];
    assert_eq!(result.error_code, NONE, "{response:?}");
    assert_eq!(result.configs.len(), 1, "{response:?}");
    let config = &result.configs[0];
    (
        config.value.as_ref().map(|v| v.to_string()),
        config.config_source,
    )
}

#[test]
fn deleted_then_recreated_topic_starts_empty_even_after_restart() {
    let mut server = TestServer::start();
    let addr = server.kafka_addr();
    create_topic_ok(addr, "phoenix", 1, &[]);
    let mut conn = RawConn::connect(addr);
    for i in 0..3 {
        let batch = wire::batch_v2(&[("old", "data", 1_000 + i)]);
        assert_eq!(conn.produce_raw("phoenix", 0, batch), (NONE, i));
    }
    assert_eq!(list_offset(&mut conn, "phoenix", 0, LATEST).offset, 3);

    assert_eq!(delete_topic(&mut conn, "phoenix"), NONE);
    create_topic_ok(addr, "phoenix", 1, &[]);
    let assert_empty = |conn: &mut RawConn, when: &str| {
        for timestamp in [LATEST, EARLIEST] {
            let answer = list_offset(conn, "phoenix", 0, timestamp);
            assert_eq!(
                (answer.error_code, answer.offset),
                (NONE, 0),
                "{when}: ListOffsets {timestamp}: {answer:?}"
            );
        }
        let (error, high_watermark, records) = conn.fetch_raw("phoenix", 0, 0);
        assert_eq!((error, high_watermark), (NONE, 0), "{when}");
        assert!(records.is_empty(), "{when}: old records came back");
    };
    assert_empty(&mut conn, "after re-create");

    server.restart();
    let mut conn = RawConn::connect(addr);
    assert_empty(&mut conn, "after restart");
    let batch = wire::batch_v2(&[("new", "data", 2_000)]);
    assert_eq!(conn.produce_raw("phoenix", 0, batch.clone()), (NONE, 0));
    let (_, high_watermark, records) = conn.fetch_raw("phoenix", 0, 0);
    assert_eq!(high_watermark, 1);
    assert_eq!(&records[CRC_AND_AFTER], &batch[CRC_AND_AFTER]);
}

/// A client that still knew a topic names it in its next metadata refresh, with auto-creation
/// allowed: right after a DeleteTopics that must not bring the topic back (a name never seen
/// is auto-created by the same request, and CreateTopics is not held back).
#[test]
fn a_just_deleted_topic_is_not_auto_created_by_a_racing_metadata_request() {
    let server = TestServer::start();
    let addr = server.kafka_addr();
    create_topic_ok(addr, "doomed", 1, &[]);
    let mut conn = RawConn::connect(addr);
    assert_eq!(delete_topic(&mut conn, "doomed"), NONE);

    let answer = conn.metadata(Some(&["doomed", "fresh"]), true);
    let codes: Vec<(String, i16)> = answer
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                t.error_code,
            )
        })
        .collect();
    assert_eq!(
        codes,
        vec![("doomed".to_string(), 3), ("fresh".to_string(), NONE)],
        "UNKNOWN_TOPIC_OR_PARTITION for the deleted topic"
    );
    let listed: Vec<String> = conn
        .metadata(None, false)
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
        .collect();
    assert_eq!(listed, vec!["fresh".to_string()]);

    create_topic_ok(addr, "doomed", 1, &[]);
}

/// Every record of partition 0 as (offset, key, value), reading segment by segment to the end.
fn read_all_records(conn: &mut RawConn, topic: &str) -> Vec<(i64, String, String)> {
    let mut records = Vec::new();
    let mut offset = 0;
    loop {
        let (error, high_watermark, bytes) = conn.fetch_raw(topic, 0, offset);
        assert_eq!(error, NONE, "fetch {topic} at {offset}");
        if bytes.is_empty() {
            assert_eq!(
                offset, high_watermark,
                "an empty read ends at the high watermark"
            );
            return records;
        }
        for batch in RecordBatches::new(&bytes) {
            let (position, header) = batch.expect("valid batch");
            let whole = &bytes[position..position + header.total_size()];
            for record in skald_protocol::batch::record_views(whole).expect("uncompressed") {
                let record = record.expect("valid record");
                let at = header.base_offset + i64::from(record.offset_delta);
                if at >= offset {
                    let text = |b: Option<&[u8]>| {
                        String::from_utf8_lossy(b.unwrap_or_default()).into_owned()
                    };
                    records.push((at, text(record.key), text(record.value)));
                }
            }
            offset = header.next_offset();
        }
    }
}

#[test]
fn compacted_topics_keep_the_latest_value_per_key_at_its_offset_and_refuse_keyless_records() {
    let server = TestServer::start_with(&[("log.cleaner.backoff.ms", "100")]);
    create_topic_ok(
        server.kafka_addr(),
        "compacted",
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "200"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    );
    let mut conn = RawConn::connect(server.kafka_addr());
    let writes = [
        ("k1", "a"),
        ("k2", "b"),
        ("k1", "c"),
        ("k3", "d"),
        ("k2", "e"),
        ("k4", "f"),
        ("k5", "g"),
        ("k6", "h"),
    ];
    for (offset, (key, value)) in writes.iter().enumerate() {
        let batch = wire::batch_v2(&[(key, value, 1_000 + offset as i64)]);
        assert_eq!(
            conn.produce_raw("compacted", 0, batch),
            (NONE, offset as i64)
        );
    }
    // The cleaner runs in the background: poll until the superseded k1=a and k2=b are gone.
    let expected: Vec<(i64, String, String)> = [
        (2, "k1", "c"),
        (3, "k3", "d"),
        (4, "k2", "e"),
        (5, "k4", "f"),
        (6, "k5", "g"),
        (7, "k6", "h"),
    ]
    .iter()
    .map(|(offset, key, value)| (*offset, key.to_string(), value.to_string()))
    .collect();
    let compacted = common::poll_until(
        "the cleaner to compact the topic",
        Duration::from_secs(20),
        || {
            let records = read_all_records(&mut RawConn::connect(server.kafka_addr()), "compacted");
            (records.first().map(|r| r.0) != Some(0)).then_some(records)
        },
    );
    assert_eq!(
        compacted, expected,
        "latest value per key, at its original offset"
    );
    assert_eq!(
        conn.produce_raw("compacted", 0, wire::batch_v2(&[("k7", "i", 2_000)])),
        (NONE, 8),
        "offsets go on"
    );

    let keyless = skald_protocol::batch::testing::build_batch(
        0,
        &[skald_protocol::batch::testing::TestRecord::new(
            None,
            Some(b"v"),
            3_000,
        )],
    );
    assert_eq!(
        conn.produce_raw("compacted", 0, Bytes::from(keyless)),
        (87, -1),
        "INVALID_RECORD"
    );
}

/// DeleteRecords on a topic whose cleanup.policy lacks `delete` is refused with Kafka's
/// POLICY_VIOLATION and moves nothing; with `compact,delete` it works.
#[test]
fn delete_records_needs_the_delete_cleanup_policy() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::DeleteRecordsRequest;
    const POLICY_VIOLATION: i16 = 44;

    let server = TestServer::start();
    let addr = server.kafka_addr();
    create_topic_ok(addr, "compact-only", 1, &[("cleanup.policy", "compact")]);
    create_topic_ok(
        addr,
        "compact-delete",
        1,
        &[("cleanup.policy", "compact,delete")],
    );
    let mut conn = RawConn::connect(addr);
    let mut delete = |topic: &str| {
        for i in 0..3 {
            let batch = wire::batch_v2(&[("k", &value(10, i), 1_000 + i as i64)]);
            assert_eq!(conn.produce_raw(topic, 0, batch), (NONE, i as i64));
        }
        let request = DeleteRecordsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(2)])]);
        let response = conn.request(&request, 2);
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.low_watermark)
    };
    assert_eq!(delete("compact-only"), (POLICY_VIOLATION, -1));
    assert_eq!(delete("compact-delete"), (NONE, 2));
}

/// DescribeLogDirs: the one log dir (its absolute path) with each partition's size on disk —
/// exactly the batches written — and no offset lag; a request naming partitions gets only those;
/// v4 adds the file system's total and usable bytes.
#[test]
fn describe_log_dirs_lists_partition_sizes_and_disk_space() {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};

    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    wire::create_topics(&mut conn, &[("dirs", 2)]);
    let batch = wire::batch_v2(&[("k", "a value", 1_000), ("k", "another", 2_000)]);
    assert_eq!(conn.produce_raw("dirs", 1, batch.clone()).0, 0);
    let describe = |conn: &mut RawConn, topics: Option<Vec<DescribableLogDirTopic>>, version| {
        let response: DescribeLogDirsResponse = conn.request(
            &DescribeLogDirsRequest::default().with_topics(topics),
            version,
        );
        response
    };
    let all = describe(&mut conn, None, 4);
    assert_eq!(all.results.len(), 1);
    let dir = &all.results[0];
    let expected_dir = std::path::absolute(server.data_dir()).unwrap();
    assert_eq!(
        (dir.error_code, dir.log_dir.as_str()),
        (0, expected_dir.to_str().unwrap())
    );
    let partitions: Vec<(String, i32, i64, i64)> = dir
        .topics
        .iter()
        .filter(|t| t.name.as_str() == "dirs")
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.to_string(),
                    p.partition_index,
                    p.partition_size,
                    p.offset_lag,
                )
            })
        })
        .collect();
    assert_eq!(
        partitions,
        vec![
            ("dirs".to_string(), 0, 0, 0),
            ("dirs".to_string(), 1, batch.len() as i64, 0),
        ]
    );
    assert!(
        dir.total_bytes > 0 && dir.usable_bytes > 0 && dir.usable_bytes <= dir.total_bytes,
        "disk space: {} of {}",
        dir.usable_bytes,
        dir.total_bytes
    );
    let one = describe(
        &mut conn,
        Some(vec![DescribableLogDirTopic::default()
            .with_topic(topic_name("dirs"))
            .with_partitions(vec![1])]),
        1,
    );
    let listed: Vec<(String, Vec<i32>)> = one.results[0]
        .topics
        .iter()
        .map(|t| {
            (
                t.name.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    assert_eq!(listed, vec![("dirs".to_string(), vec![1])]);
    assert_eq!(one.results[0].total_bytes, -1, "v1 has no disk space");
}
