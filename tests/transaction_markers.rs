//! The partition leader's side of transactions, against the real binary, with this test acting
//! as the transaction coordinator: transactional batches hold back the last stable offset,
//! WriteTxnMarkers ends them, a read_committed Fetch stops at the last stable offset and names
//! the aborted transactions — so librdkafka's read_committed consumer (its default) delivers only
//! committed records — ListOffsets honours the isolation level, fenced markers get Kafka's codes,
//! and all of it survives a kill -9.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::wire::{self, RawConn};
use common::{rdk, TestServer};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    BrokerId, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, ProducerId,
    WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};

const TOPIC: &str = "txn-markers";
const NONE: i16 = 0;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;
const TRANSACTION_COORDINATOR_FENCED: i16 = 52;
/// Producer ids the test makes up, as a coordinator would hand them out.
const ABORTED: i64 = 1_000;
const COMMITTED: i64 = 2_000;

fn batch(producer_id: i64, first_seq: i32, values: &[&str], transactional: bool) -> Bytes {
    // Now, like the markers the broker stamps: no segment.ms roll between them.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    wire::producer_batch(producer_id, 0, first_seq, values, transactional, now)
}

/// WriteTxnMarkers for one producer on partition 0; the partition's error code.
fn write_marker(
    conn: &mut RawConn,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
) -> i16 {
    let response: WriteTxnMarkersResponse = conn.request(
        &WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_transaction_result(commit)
            .with_coordinator_epoch(coordinator_epoch)
            .with_topics(vec![WritableTxnMarkerTopic::default()
                .with_name(wire::topic_name(TOPIC))
                .with_partition_indexes(vec![0])])]),
        1,
    );
    let marker = &response.markers[0];
    assert_eq!(marker.producer_id.0, producer_id);
    marker.topics[0].partitions[0].error_code
}

/// (last stable offset, aborted transactions as (producer id, first offset), offsets of the
/// data records returned) of a read_committed fetch from `offset`.
fn fetch_committed(conn: &mut RawConn, offset: i64) -> (i64, Vec<(i64, i64)>, Vec<i64>) {
    let request = wire::fetch_request(TOPIC, 0, offset).with_isolation_level(1);
    let response: FetchResponse = conn.request(&request, 12);
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, NONE, "{response:?}");
    let aborted = partition
        .aborted_transactions
        .as_ref()
        .expect("read_committed answers carry the aborted transactions")
        .iter()
        .map(|t| (t.producer_id.0, t.first_offset))
        .collect();
    let mut records = partition.records.clone().unwrap_or_default();
    let mut offsets = Vec::new();
    for batch in kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records).unwrap() {
        offsets.extend(
            batch
                .records
                .iter()
                .filter(|r| !r.control)
                .map(|r| r.offset),
        );
    }
    (partition.last_stable_offset, aborted, offsets)
}

/// ListOffsets LATEST at `isolation_level`.
fn latest(conn: &mut RawConn, isolation_level: i8) -> i64 {
    let response: ListOffsetsResponse = conn.request(
        &ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation_level)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(wire::topic_name(TOPIC))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_current_leader_epoch(-1)
                    .with_timestamp(-1)])]),
        6,
    );
    let partition = &response.topics[0].partitions[0];
    assert_eq!(partition.error_code, NONE);
    partition.offset
}

/// The `skald_producer_ids` and `skald_open_transactions` lines of the server's metrics.
fn producer_metrics(server: &TestServer) -> (String, String) {
    let (status, body) = common::http_get(server.metrics_addr(), "/metrics").expect("scrape");
    assert_eq!(status, 200);
    let line = |name: &str| {
        body.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_default()
            .to_string()
    };
    (line("skald_producer_ids"), line("skald_open_transactions"))
}

fn committed_values(server: &TestServer, expected: usize) -> Vec<(i64, String)> {
    // librdkafka's consumer is read_committed by default.
    rdk::read_all(
        &server.bootstrap(),
        TOPIC,
        &[0],
        expected,
        Duration::from_secs(30),
    )
    .into_iter()
    .map(|r| (r.offset, String::from_utf8(r.value.unwrap()).unwrap()))
    .collect()
}

#[test]
fn markers_end_transactions_for_read_committed_readers() {
    // The batches here name no transactional id and no coordinator knows them: partition-side
    // verification (KIP-890, tested in tests/transactions.rs) would refuse them.
    let mut server =
        TestServer::start_with(&[("transaction.partition.verification.enable", "false")]);
    let mut conn = RawConn::connect(server.kafka_addr());
    wire::create_topics(&mut conn, &[(TOPIC, 1)]);

    // 0-1: a transaction that will abort; 2: one that will commit; 3: a plain record.
    assert_eq!(
        conn.produce_raw(TOPIC, 0, batch(ABORTED, 0, &["a0", "a1"], true)),
        (NONE, 0)
    );
    assert_eq!(
        conn.produce_raw(TOPIC, 0, batch(COMMITTED, 0, &["c0"], true)),
        (NONE, 2)
    );
    assert_eq!(
        conn.produce_raw(TOPIC, 0, batch(-1, -1, &["plain"], false)),
        (NONE, 3)
    );
    // Both transactions are open: read_committed readers stop at the first one.
    assert_eq!((latest(&mut conn, 0), latest(&mut conn, 1)), (4, 0));
    assert_eq!(fetch_committed(&mut conn, 0), (0, vec![], vec![]));
    assert_eq!(
        producer_metrics(&server),
        (
            "skald_producer_ids 2".into(),
            "skald_open_transactions 2".into()
        )
    );
    // A producer inside a transaction cannot write outside it.
    let outside = conn.produce(TOPIC, 0, batch(ABORTED, 2, &["stray"], false));
    assert_eq!(outside.error_code, INVALID_TXN_STATE);

    assert_eq!(write_marker(&mut conn, ABORTED, 0, false, 7), NONE); // offset 4
    assert_eq!((latest(&mut conn, 0), latest(&mut conn, 1)), (5, 2));
    assert_eq!(write_marker(&mut conn, COMMITTED, 0, true, 7), NONE); // offset 5
    assert_eq!(
        producer_metrics(&server),
        (
            "skald_producer_ids 2".into(),
            "skald_open_transactions 0".into()
        )
    );
    assert_eq!((latest(&mut conn, 0), latest(&mut conn, 1)), (6, 6));
    assert_eq!(
        fetch_committed(&mut conn, 0),
        (6, vec![(ABORTED, 0)], vec![0, 1, 2, 3])
    );
    assert_eq!(fetch_committed(&mut conn, 5), (6, vec![], vec![]));

    // Fenced markers change nothing.
    assert_eq!(
        write_marker(&mut conn, COMMITTED, 0, true, 6),
        TRANSACTION_COORDINATOR_FENCED
    );
    assert_eq!(
        conn.produce_raw(TOPIC, 0, {
            let mut next = batch(ABORTED, 0, &["epoch 1"], true).to_vec();
            // producer epoch (bytes 51..53) 1, CRC recomputed.
            next[51..53].copy_from_slice(&1i16.to_be_bytes());
            let crc = crc32c::crc32c(&next[21..]);
            next[17..21].copy_from_slice(&crc.to_be_bytes());
            Bytes::from(next)
        }),
        (NONE, 6)
    );
    assert_eq!(
        write_marker(&mut conn, ABORTED, 0, false, 7),
        INVALID_PRODUCER_EPOCH
    );
    assert_eq!(write_marker(&mut conn, ABORTED, 1, true, 7), NONE); // offset 7
    assert_eq!(latest(&mut conn, 1), 8);

    let expected = vec![
        (2, "c0".to_string()),
        (3, "plain".to_string()),
        (6, "epoch 1".to_string()),
    ];
    assert_eq!(committed_values(&server, 3), expected);

    // After a crash the producer state and the aborted transaction index are rebuilt.
    server.kill9();
    server.restart();
    let mut conn = RawConn::connect(server.kafka_addr());
    assert_eq!(
        fetch_committed(&mut conn, 0),
        (8, vec![(ABORTED, 0)], vec![0, 1, 2, 3, 6])
    );
    assert_eq!(committed_values(&server, 3), expected);
}
