//! Protocol hot paths: decoding a Produce request (and pre-checking its body), validating its batch,
//! encoding a Fetch response.
//!
//! `cargo bench -p skald-protocol --bench codec`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchResponse, ProduceRequest, RequestHeader, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use skald_protocol::batch::{testing::simple_batch, validate_batch};
use skald_protocol::codec::{decode_request, encode_response};
use skald_protocol::precheck::check_body;

/// A 16 KiB-ish batch of 16 records of 1 KiB, as a producer with default batching sends.
fn batch() -> Bytes {
    Bytes::from(simple_batch(0, 16, 1_700_000_000_000, 1024))
}

/// A Produce v9 request frame, and where its body starts.
fn produce_frame(records: Bytes) -> (Bytes, usize) {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(9)
        .with_correlation_id(1);
    let body = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("bench")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, ApiKey::Produce.request_header_version(9))
        .expect("header encodes");
    let header_len = buf.len();
    RequestKind::Produce(body)
        .encode(&mut buf, 9)
        .expect("request encodes");
    (buf.freeze(), header_len)
}

fn benches(c: &mut Criterion) {
    let records = batch();
    let (frame, header_len) = produce_frame(records.clone());

    let mut group = c.benchmark_group("produce");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("decode_request_16KiB", |b| {
        b.iter(|| decode_request(frame.clone()).expect("decodes"));
    });
    let body = frame.slice(header_len..);
    group.bench_function("precheck_16KiB", |b| {
        b.iter(|| check_body(ApiKey::Produce, 9, black_box(&body)).expect("passes"));
    });
    group.bench_function("validate_batch_16KiB", |b| {
        b.iter(|| validate_batch(&records).expect("valid"));
    });
    group.finish();

    let fetched: Bytes = (0..64)
        .flat_map(|_| records.iter().copied())
        .collect::<Vec<u8>>()
        .into();
    let response = ResponseKind::Fetch(FetchResponse::default().with_responses(vec![
        FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("bench")))
            .with_partitions(vec![PartitionData::default().with_records(Some(fetched.clone()))]),
    ]));
    let mut group = c.benchmark_group("fetch");
    group.throughput(Throughput::Bytes(fetched.len() as u64));
    group.bench_function("encode_response_1MiB", |b| {
        b.iter_batched(
            || (),
            |()| encode_response(1, ApiKey::Fetch, 12, &response).expect("encodes"),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(codec, benches);
criterion_main!(codec);
