//! The idempotent producer at the wire, against the real binary: producer ids from
//! InitProducerId, retries answered with their original offsets, and Kafka's error codes for a
//! sequence gap, an old epoch and a header that lies about its records — each refused without
//! changing the log — plus DescribeProducers and the state surviving a restart.

mod common;

use bytes::Bytes;
use common::wire::{self, RawConn};
use common::TestServer;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

const TOPIC: &str = "idempotence";
// Kafka's error codes.
const NONE: i16 = 0;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_RECORD: i16 = 87;

/// A batch of `count` records from `producer_id` at `epoch`, sequences from `first_seq`.
fn batch(producer_id: i64, epoch: i16, first_seq: i32, count: usize) -> Bytes {
    let values: Vec<String> = (0..count)
        .map(|i| format!("v{}", first_seq + i as i32))
        .collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    wire::producer_batch(
        producer_id,
        epoch,
        first_seq,
        &values,
        false,
        1_700_000_000_000,
    )
}

/// `bytes` with its header's last offset delta set to `delta` and its CRC32C made right again:
/// a batch whose header lies about how many records it holds.
fn with_last_offset_delta(bytes: &Bytes, delta: i32) -> Bytes {
    let mut bytes = bytes.to_vec();
    bytes[23..27].copy_from_slice(&delta.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(bytes)
}

fn init_producer_id(conn: &mut RawConn, version: i16) -> InitProducerIdResponse {
    conn.request(
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
        version,
    )
}

/// (producer id, epoch, last sequence, transaction start) of each producer the leader reports.
fn describe_producers(conn: &mut RawConn) -> Vec<(i64, i32, i32, i64)> {
    let response: DescribeProducersResponse = conn.request(
        &DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
            .with_name(wire::topic_name(TOPIC))
            .with_partition_indexes(vec![0])]),
        0,
    );
    let partition = &response.topics[0].partitions[0];
    assert_eq!(partition.error_code, NONE, "{response:?}");
    partition
        .active_producers
        .iter()
        .map(|p| {
            (
                p.producer_id.0,
                p.producer_epoch,
                p.last_sequence,
                p.current_txn_start_offset,
            )
        })
        .collect()
}

fn log_end(conn: &mut RawConn) -> i64 {
    let (error, high_watermark, _) = conn.fetch_raw(TOPIC, 0, 0);
    assert_eq!(error, NONE);
    high_watermark
}

#[test]
fn retries_are_deduplicated_and_bad_sequences_refused_with_kafkas_codes() {
    let mut server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    wire::create_topics(&mut conn, &[(TOPIC, 1)]);

    // Producer ids: distinct, epoch 0, at every version; a transactional id is refused.
    let ids: Vec<(i16, i64, i16)> = (0..=5)
        .map(|version| {
            let r = init_producer_id(&mut conn, version);
            (r.error_code, r.producer_id.0, r.producer_epoch)
        })
        .collect();
    assert_eq!(
        ids,
        (0..=5).map(|id| (NONE, id, 0)).collect::<Vec<_>>(),
        "one block of ids from the controller, handed out in order"
    );
    let transactional: InitProducerIdResponse = conn.request(
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("t1"))))
            .with_transaction_timeout_ms(60_000),
        4,
    );
    // Nobody coordinates a transactional id before FindCoordinator has created
    // `__transaction_state`: NOT_COORDINATOR, and the client looks the coordinator up.
    assert_eq!(transactional.error_code, 16, "NOT_COORDINATOR");
    let producer = ids[0].1;

    // First batches: offsets 0..3 and 3..5.
    let first = batch(producer, 0, 0, 3);
    assert_eq!(conn.produce_raw(TOPIC, 0, first.clone()), (NONE, 0));
    assert_eq!(
        conn.produce_raw(TOPIC, 0, batch(producer, 0, 3, 2)),
        (NONE, 3)
    );
    // A retry of either: the original offset, nothing appended.
    assert_eq!(conn.produce_raw(TOPIC, 0, first), (NONE, 0));
    assert_eq!(
        conn.produce_raw(TOPIC, 0, batch(producer, 0, 3, 2)),
        (NONE, 3)
    );
    assert_eq!(log_end(&mut conn), 5);

    // A gap, an old epoch, a lying header (plain and compressed): Kafka's codes, log unchanged.
    let gap = conn.produce(TOPIC, 0, batch(producer, 0, 6, 1));
    assert_eq!(
        (gap.error_code, gap.base_offset),
        (OUT_OF_ORDER_SEQUENCE_NUMBER, -1)
    );
    // The producer bumps its epoch (KIP-360): a new epoch starts at 0.
    assert_eq!(
        conn.produce_raw(TOPIC, 0, batch(producer, 1, 0, 1)),
        (NONE, 5)
    );
    let zombie = conn.produce(TOPIC, 0, batch(producer, 0, 5, 1));
    assert_eq!(zombie.error_code, INVALID_PRODUCER_EPOCH);
    let new_epoch_late_start = conn.produce(TOPIC, 0, batch(producer, 2, 4, 1));
    assert_eq!(
        new_epoch_late_start.error_code,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    // One record whose header claims 2^30 or 2^31 - 1 more (compressed liars are refused
    // alike: storage's log_validator tests walk every codec).
    for delta in [1 << 30, i32::MAX] {
        let liar = with_last_offset_delta(&batch(-1, -1, -1, 1), delta);
        let refused = conn.produce(TOPIC, 0, liar);
        assert_eq!(refused.error_code, INVALID_RECORD, "{delta}: {refused:?}");
    }
    assert_eq!(log_end(&mut conn), 6);

    // A producer id this partition never saw (state expired, or written elsewhere) may start
    // at any sequence (KIP-360).
    assert_eq!(conn.produce_raw(TOPIC, 0, batch(4242, 3, 17, 2)), (NONE, 6));
    assert_eq!(
        describe_producers(&mut conn),
        vec![(producer, 1, 0, -1), (4242, 3, 18, -1)]
    );

    // The same through the tool (partition, producer id, epoch, last sequence; the timestamp is
    // the batch's, the coordinator epoch -1, no transaction).
    let output = std::process::Command::new(common::skald_bin())
        .args(["producers", "describe", TOPIC, "-b", &server.bootstrap()])
        .output()
        .expect("run skald producers describe");
    assert!(output.status.success(), "{output:?}");
    let table = common::cells(&String::from_utf8_lossy(&output.stdout));
    let columns = |row: &Vec<String>| row[..4].to_vec();
    assert_eq!(
        table.iter().map(columns).collect::<Vec<_>>(),
        vec![
            common::row(&["PARTITION", "PRODUCER-ID", "EPOCH", "LAST-SEQUENCE"]),
            common::row(&["0", &producer.to_string(), "1", "0"]),
            common::row(&["0", "4242", "3", "18"]),
        ]
    );
    assert_eq!(table[1][5..], ["-1", "-"]);

    // A clean restart keeps the state (snapshot) and hands out ids from a new block.
    server.restart();
    let mut conn = RawConn::connect(server.kafka_addr());
    assert_eq!(
        describe_producers(&mut conn),
        vec![(producer, 1, 0, -1), (4242, 3, 18, -1)]
    );
    assert_eq!(conn.produce_raw(TOPIC, 0, batch(4242, 3, 17, 2)), (NONE, 6));
    assert_eq!(
        conn.produce_raw(TOPIC, 0, batch(producer, 1, 1, 1)),
        (NONE, 8)
    );
    let after_restart = init_producer_id(&mut conn, 5);
    assert_eq!(
        (after_restart.error_code, after_restart.producer_id.0),
        (NONE, 1000)
    );
    // After a kill -9 the state is rebuilt from the log.
    server.kill9();
    server.restart();
    let mut conn = RawConn::connect(server.kafka_addr());
    assert_eq!(
        conn.produce_raw(TOPIC, 0, batch(producer, 1, 1, 1)),
        (NONE, 8)
    );
    assert_eq!(log_end(&mut conn), 9);
}
