//! A minimal blocking Kafka wire client over `std::net::TcpStream` for tests that need to send
//! exact bytes (valid requests encoded with `kafka_protocol`, or deliberately broken ones).
//! Every read has a deadline: a server that hangs fails the test instead of hanging it.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// How long any single read may block before the test calls it a hang.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The highest versions these tests speak (bounded so that field layouts the tests rely on,
/// e.g. Produce by topic name rather than topic id, stay valid).
pub const PRODUCE_VERSION_MAX: i16 = 12;
pub const METADATA_VERSION_MAX: i16 = 12;
pub const FETCH_VERSION_MAX: i16 = 12;

pub struct RawConn {
    pub stream: TcpStream,
    next_correlation_id: i32,
}

impl RawConn {
    pub fn connect(addr: SocketAddr) -> RawConn {
        RawConn::try_connect(addr).unwrap_or_else(|| panic!("cannot connect to {addr}"))
    }

    /// Connects, or `None` if nothing listens there (a node that is down or starting).
    pub fn try_connect(addr: SocketAddr) -> Option<RawConn> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).ok()?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set_read_timeout");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("set_write_timeout");
        stream.set_nodelay(true).expect("set_nodelay");
        Some(RawConn {
            stream,
            next_correlation_id: 1,
        })
    }

    /// Writes raw bytes (no size prefix added).
    pub fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Writes `payload` behind a 4-byte big-endian size prefix.
    pub fn write_frame(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let mut framed = Vec::with_capacity(payload.len() + 4);
        framed.extend_from_slice(&(payload.len() as i32).to_be_bytes());
        framed.extend_from_slice(payload);
        self.write_raw(&framed)
    }

    /// Reads one size-prefixed frame; panics on EOF, error or timeout.
    pub fn read_frame(&mut self) -> Vec<u8> {
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .unwrap_or_else(|e| panic!("reading response size prefix: {e}"));
        let size = i32::from_be_bytes(size);
        assert!(
            (0..=64 * 1024 * 1024).contains(&size),
            "implausible response size {size}"
        );
        let mut payload = vec![0u8; size as usize];
        self.stream
            .read_exact(&mut payload)
            .unwrap_or_else(|e| panic!("reading {size}-byte response: {e}"));
        payload
    }

    /// Asserts the server closes this connection (EOF or reset) within [`IO_TIMEOUT`],
    /// without sending any response bytes first.
    pub fn expect_closed(&mut self, what: &str) {
        let mut buf = [0u8; 256];
        match self.stream.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!(
                "{what}: expected the server to close the connection, got {n} response bytes: {:02x?}",
                &buf[..n]
            ),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => panic!(
                "{what}: server neither answered nor closed the connection within {IO_TIMEOUT:?} (hang)"
            ),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
                ) => {}
            Err(e) => panic!("{what}: unexpected read error {e}"),
        }
    }

    pub fn next_correlation_id(&mut self) -> i32 {
        let id = self.next_correlation_id;
        self.next_correlation_id += 1;
        id
    }

    /// Encodes header + body for `R` at `version`.
    pub fn encode_request<R: Request>(request: &R, version: i16, correlation_id: i32) -> Vec<u8> {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("skald-tests")));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, R::header_version(version))
            .expect("encode request header");
        request
            .encode(&mut buf, version)
            .expect("encode request body");
        buf.to_vec()
    }

    /// Sends `request` at `version` and decodes the response, checking the correlation id.
    pub fn request<R: Request>(&mut self, request: &R, version: i16) -> R::Response {
        let correlation_id = self.send(request, version);
        self.receive::<R>(version, correlation_id)
    }

    /// Sends `request` at `version` without waiting for the answer (for requests the broker
    /// parks, such as a JoinGroup); returns the correlation id for [`RawConn::receive`].
    pub fn send<R: Request>(&mut self, request: &R, version: i16) -> i32 {
        let correlation_id = self.next_correlation_id();
        let payload = Self::encode_request(request, version, correlation_id);
        self.write_frame(&payload)
            .unwrap_or_else(|e| panic!("sending api key {} v{version}: {e}", R::KEY));
        correlation_id
    }

    /// Reads and decodes the answer to a request [`RawConn::send`] sent, checking the
    /// correlation id and that nothing trails the body.
    pub fn receive<R: Request>(&mut self, version: i16, correlation_id: i32) -> R::Response {
        let response = self.read_frame();
        let mut buf = Bytes::from(response);
        let header = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
            .expect("decode response header");
        assert_eq!(
            header.correlation_id, correlation_id,
            "response correlation id"
        );
        let body = R::Response::decode(&mut buf, version)
            .unwrap_or_else(|e| panic!("decode api key {} v{version} response: {e}", R::KEY));
        assert_eq!(
            buf.len(),
            0,
            "trailing bytes after api key {} v{version} response",
            R::KEY
        );
        body
    }

    /// As [`RawConn::request`], but `None` when the connection fails or the response does not
    /// come within `timeout` (a node that is down or paused); the connection is then unusable.
    pub fn try_request<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Option<R::Response> {
        let correlation_id = self.next_correlation_id();
        let payload = Self::encode_request(request, version, correlation_id);
        self.stream.set_read_timeout(Some(timeout)).ok()?;
        self.write_frame(&payload).ok()?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).ok()?;
        let size = i32::from_be_bytes(size);
        assert!(
            (0..=64 * 1024 * 1024).contains(&size),
            "implausible response size {size}"
        );
        let mut payload = vec![0u8; size as usize];
        self.stream.read_exact(&mut payload).ok()?;
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
        let mut buf = Bytes::from(payload);
        let header = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
            .expect("decode response header");
        assert_eq!(
            header.correlation_id, correlation_id,
            "response correlation id"
        );
        let body = R::Response::decode(&mut buf, version)
            .unwrap_or_else(|e| panic!("decode api key {} v{version} response: {e}", R::KEY));
        Some(body)
    }

    /// ApiVersions v3, asserting success; returns api key → (min, max).
    pub fn api_versions(&mut self) -> BTreeMap<i16, (i16, i16)> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("skald-tests"))
            .with_client_software_version(StrBytes::from_static_str("0.1.0"));
        let response: ApiVersionsResponse = self.request(&request, 3);
        assert_eq!(response.error_code, 0, "ApiVersions v3 error code");
        response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect()
    }

    /// The highest version of `key` both the server and these tests speak.
    pub fn negotiate(&mut self, key: ApiKey, ours_max: i16) -> i16 {
        let versions = self.api_versions();
        let (min, max) = *versions
            .get(&(key as i16))
            .unwrap_or_else(|| panic!("server does not advertise {key:?}: {versions:?}"));
        let version = max.min(ours_max);
        assert!(
            version >= min,
            "no common version for {key:?}: server {min}..={max}, ours ..={ours_max}"
        );
        version
    }

    /// Metadata for `topics` (None = all), with auto-creation as given.
    pub fn metadata(&mut self, topics: Option<&[&str]>, auto_create: bool) -> MetadataResponse {
        let version = self.negotiate(ApiKey::Metadata, METADATA_VERSION_MAX);
        let topics = topics.map(|names| {
            names
                .iter()
                .map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n))))
                .collect()
        });
        let mut request = MetadataRequest::default().with_topics(topics);
        if version >= 4 {
            request = request.with_allow_auto_topic_creation(auto_create);
        }
        self.request(&request, version)
    }

    /// Produces `records` (already an encoded batch or message set) to `topic`/`partition` with
    /// acks=all; returns the partition's (error_code, base_offset).
    pub fn produce_raw(&mut self, topic: &str, partition: i32, records: Bytes) -> (i16, i64) {
        let p = self.produce(topic, partition, records);
        (p.error_code, p.base_offset)
    }

    /// As [`RawConn::produce_raw`], returning the partition's whole response.
    pub fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        records: Bytes,
    ) -> PartitionProduceResponse {
        let version = self.negotiate(ApiKey::Produce, PRODUCE_VERSION_MAX);
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records))])]);
        let response: ProduceResponse = self.request(&request, version);
        assert_eq!(
            response.responses.len(),
            1,
            "one topic in produce response: {response:?}"
        );
        let topic_response = &response.responses[0];
        assert_eq!(topic_response.name.as_str(), topic);
        assert_eq!(topic_response.partition_responses.len(), 1);
        let p = &topic_response.partition_responses[0];
        assert_eq!(p.index, partition);
        p.clone()
    }
}

impl RawConn {
    /// One Fetch of `topic`/`partition` from `offset` (no waiting, up to 1 MiB); returns the
    /// partition's (error_code, high_watermark, record bytes as sent by the server).
    pub fn fetch_raw(&mut self, topic: &str, partition: i32, offset: i64) -> (i16, i64, Bytes) {
        let version = self.negotiate(ApiKey::Fetch, FETCH_VERSION_MAX);
        let response: FetchResponse =
            self.request(&fetch_request(topic, partition, offset), version);
        assert_eq!(
            response.error_code, 0,
            "fetch top-level error: {response:?}"
        );
        assert_eq!(
            response.responses.len(),
            1,
            "one topic in fetch response: {response:?}"
        );
        let topic_response = &response.responses[0];
        assert_eq!(topic_response.topic.as_str(), topic);
        assert_eq!(topic_response.partitions.len(), 1);
        let p = &topic_response.partitions[0];
        assert_eq!(p.partition_index, partition);
        (
            p.error_code,
            p.high_watermark,
            p.records.clone().unwrap_or_default(),
        )
    }
}

/// A sessionless Fetch of one partition from `offset` that does not wait (max_wait_ms 0,
/// min_bytes 0) and takes up to 1 MiB; tests adjust the fields they exercise.
pub fn fetch_request(topic: &str, partition: i32, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(offset)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(1 << 20)])])
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Creates `topic` through Metadata auto-creation and waits until partition 0 has a leader.
pub fn ensure_topic(addr: SocketAddr, topic: &str) {
    super::poll_until(
        &format!("topic {topic} to exist with a leader"),
        Duration::from_secs(15),
        || {
            let mut conn = RawConn::connect(addr);
            let response = conn.metadata(Some(&[topic]), true);
            let t = response.topics.first()?;
            (t.error_code == 0
                && t.partitions
                    .iter()
                    .any(|p| p.partition_index == 0 && p.leader_id.0 >= 0))
            .then_some(())
        },
    );
}

/// A RecordBatch v2 (uncompressed, CreateTime) of keyed records with explicit timestamps.
pub fn batch_v2(records: &[(&str, &str, i64)]) -> Bytes {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value, timestamp))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder keeps records in one batch only while offset - sequence is constant;
            // this yields base_sequence -1 (no idempotence) for the batch.
            sequence: i as i32 - 1,
            timestamp: *timestamp,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: Default::default(),
        })
        .collect();
    encode_uncompressed(&records)
}

/// A RecordBatch v2 (uncompressed, CreateTime `timestamp`) from producer `producer_id` at
/// `epoch` with sequences from `first_seq`, transactional or not: one record per value, keyed
/// `k<sequence>`.
pub fn producer_batch(
    producer_id: i64,
    epoch: i16,
    first_seq: i32,
    values: &[&str],
    transactional: bool,
    timestamp: i64,
) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: first_seq + i as i32,
            timestamp,
            key: Some(Bytes::from(format!("k{}", first_seq + i as i32))),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: Default::default(),
        })
        .collect();
    encode_uncompressed(&records)
}

/// `records` as one uncompressed RecordBatch v2 (the encoder keeps them in one batch while
/// `offset - sequence` is constant).
fn encode_uncompressed(records: &[Record]) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode record batch");
    buf.freeze()
}

/// Byte range of the CRC32C field in a RecordBatch v2 header
/// (base_offset 8, batch_length 4, partition_leader_epoch 4, magic 1, then crc 4).
pub const BATCH_V2_CRC_RANGE: std::ops::Range<usize> = 17..21;

/// A legacy magic-1 message set holding one message (offset 0, CRC32/IEEE correct).
pub fn message_set_v1(key: &[u8], value: &[u8], timestamp: i64) -> Bytes {
    let mut body = Vec::new();
    body.push(1u8); // magic
    body.push(0u8); // attributes: no compression, CreateTime
    body.extend_from_slice(&timestamp.to_be_bytes());
    body.extend_from_slice(&(key.len() as i32).to_be_bytes());
    body.extend_from_slice(key);
    body.extend_from_slice(&(value.len() as i32).to_be_bytes());
    body.extend_from_slice(value);
    let crc = kafka_protocol::records::IEEE.checksum(&body);
    let mut message = Vec::new();
    message.extend_from_slice(&0i64.to_be_bytes()); // offset
    message.extend_from_slice(&((4 + body.len()) as i32).to_be_bytes()); // message size
    message.extend_from_slice(&crc.to_be_bytes());
    message.extend_from_slice(&body);
    Bytes::from(message)
}

/// Asserts a fresh connection gets a correct ApiVersions and Metadata answer: the server is
/// still serving after whatever the test did to another connection.
pub fn assert_serves(addr: SocketAddr) {
    let mut conn = RawConn::connect(addr);
    let versions = conn.api_versions();
    for key in [
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::Metadata,
        ApiKey::ApiVersions,
    ] {
        let (min, max) = versions
            .get(&(key as i16))
            .unwrap_or_else(|| panic!("ApiVersions lacks {key:?}: {versions:?}"));
        assert!(min <= max, "{key:?} range {min}..={max}");
    }
    let (_, api_versions_max) = versions[&(ApiKey::ApiVersions as i16)];
    assert!(
        api_versions_max >= 3,
        "ApiVersions max version {api_versions_max} < 3"
    );
    let metadata = conn.metadata(Some(&[]), false);
    assert_eq!(metadata.brokers.len(), 1, "brokers: {:?}", metadata.brokers);
    let broker = &metadata.brokers[0];
    assert_eq!(broker.node_id.0, 1);
    assert_eq!(broker.host.as_str(), "127.0.0.1");
    assert_eq!(broker.port, i32::from(addr.port()));
    assert!(
        metadata.topics.is_empty(),
        "asked for no topics, got {:?}",
        metadata.topics
    );
}

/// CreateTopics (v7) for `(name, partitions)` with the default replication factor; returns each
/// topic's error code in request order.
pub fn create_topics_codes(conn: &mut RawConn, topics: &[(&str, i32)]) -> Vec<(String, i16)> {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::CreateTopicsRequest;
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(
            topics
                .iter()
                .map(|(name, partitions)| {
                    CreatableTopic::default()
                        .with_name(topic_name(name))
                        .with_num_partitions(*partitions)
                        .with_replication_factor(-1)
                })
                .collect(),
        );
    let response = conn.request(&request, 7);
    response
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.error_code))
        .collect()
}

/// CreateTopics that must succeed for every topic.
/// Creates `topic` with a manual assignment, partition `i` on `replicas[i]` (leader first),
/// asserting success.
pub fn create_assigned_topic(conn: &mut RawConn, topic: &str, replicas: &[&[i32]]) {
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopic,
    };
    use kafka_protocol::messages::{BrokerId, CreateTopicsRequest};
    let assignments = replicas
        .iter()
        .enumerate()
        .map(|(partition, brokers)| {
            CreatableReplicaAssignment::default()
                .with_partition_index(partition as i32)
                .with_broker_ids(brokers.iter().copied().map(BrokerId).collect())
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(topic))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(assignments)]);
    assert_eq!(
        conn.request(&request, 7).topics[0].error_code,
        0,
        "create {topic}"
    );
}

/// AlterPartitionReassignments (v1, replication factor changes allowed) for partitions of one
/// topic (`None`: cancel): each partition's error code, in request order.
pub fn alter_partition_reassignments(
    conn: &mut RawConn,
    topic: &str,
    moves: &[(i32, Option<Vec<i32>>)],
) -> Vec<i16> {
    let partitions = moves
        .iter()
        .map(|(partition, target)| {
            kafka_protocol::messages::alter_partition_reassignments_request::ReassignablePartition::default()
                .with_partition_index(*partition)
                .with_replicas(
                    target
                        .as_ref()
                        .map(|ids| ids.iter().copied().map(kafka_protocol::messages::BrokerId).collect()),
                )
        })
        .collect();
    let request = kafka_protocol::messages::AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_allow_replication_factor_change(true)
        .with_topics(vec![kafka_protocol::messages::alter_partition_reassignments_request::ReassignableTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(partitions)]);
    let response = conn.request(&request, 1);
    assert_eq!(response.error_code, 0);
    assert!(response.allow_replication_factor_change);
    let [topic_response] = response.responses.as_slice() else {
        panic!("one topic answered: {response:?}");
    };
    assert_eq!(topic_response.name.0.as_str(), topic);
    assert_eq!(
        topic_response
            .partitions
            .iter()
            .map(|p| p.partition_index)
            .collect::<Vec<_>>(),
        moves
            .iter()
            .map(|(partition, _)| *partition)
            .collect::<Vec<_>>()
    );
    topic_response
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect()
}

pub fn create_topics(conn: &mut RawConn, topics: &[(&str, i32)]) {
    let codes = create_topics_codes(conn, topics);
    let expected: Vec<(String, i16)> = topics.iter().map(|(n, _)| (n.to_string(), 0)).collect();
    assert_eq!(codes, expected, "CreateTopics {topics:?}");
}
