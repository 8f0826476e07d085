//! Request semantics where Kafka's behaviour is specific: acks=0 failures, control batches from
//! clients, DescribeConfigs key filters and fetch.max.bytes. Raw requests, exact answers.

mod common;

use bytes::Bytes;
use common::wire::{self, topic_name, RawConn};
use common::TestServer;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeConfigsRequest, DescribeConfigsResponse, FetchRequest, FetchResponse,
    ProduceRequest,
};
use kafka_protocol::protocol::StrBytes;
use skald_protocol::batch::testing::{build_batch_with, BatchOptions, TestRecord};
use skald_protocol::batch::RecordBatches;

/// INVALID_RECORD
const INVALID_RECORD: i16 = 87;
/// Kafka's ConfigResource type for topics.
const TOPIC_RESOURCE: i8 = 2;

fn produce_acks0(conn: &mut RawConn, topic: &str, partition: i32, records: Bytes) {
    let request = ProduceRequest::default()
        .with_acks(0)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    let correlation_id = conn.next_correlation_id();
    conn.write_frame(&RawConn::encode_request(&request, 9, correlation_id))
        .expect("send acks=0 produce");
}

#[test]
fn acks_zero_sends_nothing_on_success_and_closes_the_connection_on_failure() {
    let server = TestServer::start();
    wire::ensure_topic(server.kafka_addr(), "quiet");
    let mut conn = RawConn::connect(server.kafka_addr());
    produce_acks0(&mut conn, "quiet", 0, wire::batch_v2(&[("k", "v", 1_000)]));
    // No response for the acks=0 request: the next response on the connection answers the next
    // request (RawConn checks the correlation id), and the record was stored at offset 0.
    let (error, high_watermark, records) = conn.fetch_raw("quiet", 0, 0);
    assert_eq!((error, high_watermark), (0, 1));
    let offsets: Vec<i64> = RecordBatches::new(&records)
        .map(|b| b.expect("valid batch").1.base_offset)
        .collect();
    assert_eq!(offsets, vec![0]);

    // A failed acks=0 produce (unknown partition) closes the connection so the producer notices.
    produce_acks0(&mut conn, "quiet", 7, wire::batch_v2(&[("k", "v", 1_000)]));
    conn.expect_closed("acks=0 produce to an unknown partition");
    wire::assert_serves(server.kafka_addr());
}

#[test]
fn clients_cannot_write_control_batches() {
    let server = TestServer::start();
    wire::ensure_topic(server.kafka_addr(), "ctl");
    let control = BatchOptions {
        attributes: 0x20,
        ..BatchOptions::default()
    };
    let batch = build_batch_with(&control, &[TestRecord::new(Some(b"k"), Some(b"v"), 1_000)]);
    let mut conn = RawConn::connect(server.kafka_addr());
    assert_eq!(
        conn.produce_raw("ctl", 0, Bytes::from(batch)),
        (INVALID_RECORD, -1)
    );
    let (error, high_watermark, _) = conn.fetch_raw("ctl", 0, 0);
    assert_eq!((error, high_watermark), (0, 0), "nothing was stored");
}

#[test]
fn describe_configs_with_no_keys_lists_every_topic_config_and_keys_filter() {
    let server = TestServer::start();
    wire::ensure_topic(server.kafka_addr(), "described");
    let mut conn = RawConn::connect(server.kafka_addr());
    let describe =
        |conn: &mut RawConn, keys: Option<Vec<&'static str>>| -> Vec<(String, Option<String>)> {
            let resource = DescribeConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(StrBytes::from_static_str("described"))
                .with_configuration_keys(
                    keys.map(|keys| keys.into_iter().map(StrBytes::from_static_str).collect()),
                );
            let response: DescribeConfigsResponse = conn.request(
                &DescribeConfigsRequest::default().with_resources(vec![resource]),
                4,
            );
            assert_eq!(response.results[0].error_code, 0);
            response.results[0]
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                .collect()
        };
    let all = describe(&mut conn, None);
    assert_eq!(all.len(), 20, "{all:?}");
    assert_eq!(
        describe(&mut conn, Some(vec![])),
        all,
        "an empty key list means every config"
    );
    assert_eq!(
        describe(&mut conn, Some(vec!["retention.ms", "segment.bytes"])),
        vec![
            ("retention.ms".to_string(), Some("604800000".to_string())),
            ("segment.bytes".to_string(), Some("1073741824".to_string()))
        ]
    );
}

#[test]
fn fetch_max_bytes_caps_the_response_but_one_batch_always_fits() {
    let server = TestServer::start_with(&[("fetch.max.bytes", "1000")]);
    wire::ensure_topic(server.kafka_addr(), "capped");
    let mut conn = RawConn::connect(server.kafka_addr());
    let value = "x".repeat(600);
    for i in 0..3 {
        let batch = wire::batch_v2(&[("k", value.as_str(), 1_000 + i)]);
        assert_eq!(conn.produce_raw("capped", 0, batch), (0, i));
    }
    let version = conn.negotiate(ApiKey::Fetch, 12);
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_bytes(i32::MAX)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name("capped"))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(0)
                .with_partition_max_bytes(i32::MAX)])]);
    let response: FetchResponse = conn.request(&request, version);
    let partition = &response.responses[0].partitions[0];
    assert_eq!((partition.error_code, partition.high_watermark), (0, 3));
    let records = partition.records.clone().unwrap_or_default();
    let offsets: Vec<i64> = RecordBatches::new(&records)
        .map(|b| b.expect("valid batch").1.base_offset)
        .collect();
    // Each batch is ~680 bytes: the first always comes whole, the second would pass 1000.
    assert_eq!(offsets, vec![0]);
}
