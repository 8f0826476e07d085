//! Bad input over a raw socket gets Kafka's behaviour: a closed connection or an exact error
//! code, never a hang, a panic or a stopped server. After each case a second client must be
//! served correctly.

mod common;

use bytes::{Bytes, BytesMut};
use common::wire::{self, assert_serves, RawConn};
use common::TestServer;
use kafka_protocol::messages::{ApiVersionsResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// UNSUPPORTED_VERSION
const UNSUPPORTED_VERSION: i16 = 35;
/// CORRUPT_MESSAGE
const CORRUPT_MESSAGE: i16 = 2;
/// UNSUPPORTED_FOR_MESSAGE_FORMAT (the contract for a magic-1 message set).
const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;

const DEFAULT_REQUEST_MAX_BYTES: i32 = 104_857_600;

#[test]
fn oversized_frame_closes_connection() {
    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    // Only the prefix is sent: the server must refuse without waiting for 100 MiB of body.
    let _ = conn.write_raw(&(DEFAULT_REQUEST_MAX_BYTES + 1).to_be_bytes());
    conn.expect_closed("size prefix socket.request.max.bytes + 1");
    assert_serves(server.kafka_addr());

    let mut conn = RawConn::connect(server.kafka_addr());
    let _ = conn.write_raw(&i32::MAX.to_be_bytes());
    conn.expect_closed("size prefix i32::MAX");

    let mut conn = RawConn::connect(server.kafka_addr());
    let _ = conn.write_raw(&(-1i32).to_be_bytes());
    conn.expect_closed("negative size prefix");
    assert_serves(server.kafka_addr());
}

#[test]
fn array_counts_larger_than_the_frame_close_the_connection_without_allocating() {
    let server = TestServer::start();
    // Metadata v0, correlation id 9, null client_id, then a topics array claiming 54 million
    // entries: decoded naively this asks the allocator for gigabytes and aborts the process.
    let metadata_v0 = [
        0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0xff, 0xff, 0x03, 0x3c, 0x0c, 0x00,
    ];
    // Produce v3: null transactional id, acks, timeout, one topic "t" whose partition array
    // claims i32::MAX entries.
    let produce_v3 = [
        0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x0a, 0xff, 0xff, 0xff, 0xff, 0x00, 0x01, 0x00,
        0x00, 0x75, 0x30, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, b't', 0x7f, 0xff, 0xff, 0xff,
    ];
    for (what, frame) in [
        ("Metadata v0 topics", &metadata_v0[..]),
        ("Produce v3 partitions", &produce_v3[..]),
    ] {
        let mut conn = RawConn::connect(server.kafka_addr());
        let _ = conn.write_frame(frame);
        conn.expect_closed(what);
        assert_serves(server.kafka_addr());
    }
}

#[test]
fn configured_request_max_bytes_is_enforced() {
    let server = TestServer::start_with(&[("socket.request.max.bytes", "1024")]);
    // A request that fits is answered.
    assert_serves(server.kafka_addr());
    let mut conn = RawConn::connect(server.kafka_addr());
    let _ = conn.write_raw(&1025i32.to_be_bytes());
    let _ = conn.write_raw(&[0u8; 1025]);
    conn.expect_closed("1025-byte frame with socket.request.max.bytes=1024");
    assert_serves(server.kafka_addr());
}

#[test]
fn garbage_frames_close_connection() {
    let server = TestServer::start();
    let cases: [(&str, Vec<u8>); 4] = [
        ("empty frame", vec![]),
        (
            "frame shorter than a request header",
            vec![0x00, 0x12, 0x00],
        ),
        (
            // ApiVersions v1 header whose client_id claims 32,767 bytes that are not there.
            "client_id longer than the frame",
            vec![
                0x00, 0x12, 0x00, 0x01, 0x00, 0x00, 0x00, 0x07, 0x7f, 0xff, b'x',
            ],
        ),
        (
            "random bytes",
            (0u8..64)
                .map(|i| i.wrapping_mul(37).wrapping_add(0xa5))
                .collect(),
        ),
    ];
    for (what, payload) in cases {
        let mut conn = RawConn::connect(server.kafka_addr());
        let _ = conn.write_frame(&payload);
        conn.expect_closed(what);
        assert_serves(server.kafka_addr());
    }
}

#[test]
fn unknown_api_key_closes_connection() {
    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    // api_key 9999, api_version 0, correlation_id 42, client_id "x", then an empty body.
    let mut payload = Vec::new();
    payload.extend_from_slice(&9999i16.to_be_bytes());
    payload.extend_from_slice(&0i16.to_be_bytes());
    payload.extend_from_slice(&42i32.to_be_bytes());
    payload.extend_from_slice(&1i16.to_be_bytes());
    payload.push(b'x');
    let _ = conn.write_frame(&payload);
    conn.expect_closed("unknown api key 9999");
    assert_serves(server.kafka_addr());
}

#[test]
fn api_versions_unsupported_version_answers_v0_with_error_35() {
    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    // What a newer client sends: ApiVersions v99 with a flexible (v2) request header and a body
    // the server cannot know; Kafka answers in v0 format so the client can downgrade.
    let header = RequestHeader::default()
        .with_request_api_key(18)
        .with_request_api_version(99)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("future-client")));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, 2).expect("encode header");
    buf.extend_from_slice(&[0x01, 0x02, 0x03, 0x00]);
    conn.write_frame(&buf).expect("send ApiVersions v99");

    let mut response = Bytes::from(conn.read_frame());
    let header = ResponseHeader::decode(&mut response, 0).expect("response header v0");
    assert_eq!(header.correlation_id, 7);
    let body = ApiVersionsResponse::decode(&mut response, 0).expect("ApiVersions v0 body");
    assert_eq!(
        response.len(),
        0,
        "trailing bytes after an ApiVersions v0 body"
    );
    assert_eq!(body.error_code, UNSUPPORTED_VERSION);
    assert!(
        !body.api_keys.is_empty(),
        "api_keys must be listed so the client can downgrade"
    );
    let api_versions = body
        .api_keys
        .iter()
        .find(|k| k.api_key == 18)
        .expect("ApiVersions itself is listed");
    assert_eq!(api_versions.min_version, 0);
    assert!(api_versions.max_version >= 3 && api_versions.max_version < 99);

    // The connection stays usable at a supported version, like Kafka's.
    let versions = conn.api_versions();
    assert!(versions.contains_key(&0), "Produce listed: {versions:?}");
    assert_serves(server.kafka_addr());
}

#[test]
fn corrupt_batch_crc_is_rejected_and_stores_nothing() {
    let server = TestServer::start();
    let topic = "bad-crc";
    wire::ensure_topic(server.kafka_addr(), topic);
    let mut conn = RawConn::connect(server.kafka_addr());

    let good = wire::batch_v2(&[("k0", "v0", 1_000), ("k1", "v1", 1_001)]);
    let mut corrupt = BytesMut::from(&good[..]);
    for byte in &mut corrupt[wire::BATCH_V2_CRC_RANGE] {
        *byte ^= 0xff;
    }
    assert_eq!(
        conn.produce_raw(topic, 0, corrupt.freeze()),
        (CORRUPT_MESSAGE, -1),
        "(error_code, base_offset) for a batch with a wrong CRC"
    );

    // A record whose body is flipped (CRC now stale) is just as corrupt.
    let mut corrupt = BytesMut::from(&good[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x01;
    assert_eq!(
        conn.produce_raw(topic, 0, corrupt.freeze()),
        (CORRUPT_MESSAGE, -1)
    );

    // The same connection keeps working, and the corrupt batches took no offsets.
    assert_eq!(conn.produce_raw(topic, 0, good.clone()), (0, 0));
    assert_eq!(conn.produce_raw(topic, 0, good), (0, 2));
    assert_serves(server.kafka_addr());
}

#[test]
fn magic_1_message_set_is_rejected() {
    let server = TestServer::start();
    let topic = "old-format";
    wire::ensure_topic(server.kafka_addr(), topic);
    let mut conn = RawConn::connect(server.kafka_addr());
    assert_eq!(
        conn.produce_raw(topic, 0, wire::message_set_v1(b"k", b"v", 1_000)),
        (UNSUPPORTED_FOR_MESSAGE_FORMAT, -1),
        "(error_code, base_offset) for a magic-1 message set"
    );
    assert_eq!(
        conn.produce_raw(topic, 0, wire::batch_v2(&[("k", "v", 1_000)])),
        (0, 0)
    );
    assert_serves(server.kafka_addr());
}

#[test]
fn produce_to_unknown_partition_is_an_error_code() {
    let server = TestServer::start();
    let topic = "one-partition";
    wire::ensure_topic(server.kafka_addr(), topic);
    let mut conn = RawConn::connect(server.kafka_addr());
    // UNKNOWN_TOPIC_OR_PARTITION
    assert_eq!(
        conn.produce_raw(topic, 7, wire::batch_v2(&[("k", "v", 1_000)])),
        (3, -1)
    );
    assert_serves(server.kafka_addr());
}

/// A raft peer's frame that would overflow rust-protobuf 2's stack (RUSTSEC-2024-0437: an
/// unknown group field nested 100,000 deep, with a valid length and checksum) is refused before
/// it is parsed: the controller closes that connection, logs why, and its broker goes on
/// creating topics.
#[test]
fn a_raft_frame_of_deeply_nested_groups_is_refused_and_the_controller_goes_on() {
    use std::io::{Read, Write};
    let cluster = common::cluster::TestCluster::start(1, 1, &[]);
    let depth = 100_000;
    // Field 20, wire type 3 (start group), as a two-byte tag, nested `depth` deep.
    let payload: Vec<u8> = [0xa3u8, 0x01]
        .iter()
        .copied()
        .cycle()
        .take(2 * depth)
        .collect();
    let mut frame = Vec::new();
    frame.extend_from_slice(b"SKRF");
    frame.extend_from_slice(&2i32.to_be_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    frame.extend_from_slice(&payload);
    let mut stream =
        std::net::TcpStream::connect(cluster.node(1).controller_addr()).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    stream.write_all(&frame).expect("send the frame");
    let mut byte = [0u8; 1];
    assert_eq!(
        stream.read(&mut byte).expect("a close, not a timeout"),
        0,
        "the controller closes the connection"
    );
    common::poll_until("the refusal in the log", common::STOP_TIMEOUT, || {
        std::fs::read_to_string(cluster.node(1).stderr_path())
            .ok()?
            .contains(
                "closing raft connection: invalid raft message frame: cannot decode raft message: \
                 a group (field 20) in a \
                 Message: raft's messages have none",
            )
            .then_some(())
    });
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    wire::create_topics(&mut conn, &[("after", 1)]);
    wire::ensure_topic(cluster.node(2).kafka_addr(), "after");
}
