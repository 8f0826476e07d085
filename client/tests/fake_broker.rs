//! The client against an in-process fake broker: a TcpListener that answers ApiVersions,
//! Metadata, CreateTopics, Produce, ListOffsets and Fetch from memory, exactly as far as these
//! tests need. No Skald server is involved.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{
    decode_request_header_from_buffer, Decodable, Encodable, HeaderVersion, StrBytes,
};
use skald_client::partitioner::partition_for_key;
use skald_client::{
    Client, ClientConfig, Connection, Consumer, ConsumerConfig, Error, NewTopic, Producer,
    ProducerConfig, ProducerRecord, StartOffset,
};
use skald_protocol::frame::{patch_size_prefix, take_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct State {
    /// Highest ApiVersions version understood; above it the answer is UNSUPPORTED_VERSION in v0.
    api_versions_max: i16,
    /// Metadata versions advertised (to check negotiation).
    metadata_max: i16,
    /// topic -> partitions -> stored batches (base offsets patched).
    topics: HashMap<String, Vec<Vec<Bytes>>>,
    /// Next Produce to these partitions fails with NOT_LEADER_OR_FOLLOWER once.
    not_leader_once: Vec<(String, i32)>,
    /// Answer the next request with a wrong correlation id.
    wrong_correlation_id: bool,
    /// (api key, version) of every request seen.
    seen: Vec<(i16, i16)>,
}

impl State {
    fn next_offset(&self, topic: &str, partition: usize) -> i64 {
        self.topics[topic][partition].last().map_or(0, |b| {
            b.slice(0..8).get_i64() + i64::from(b.slice(23..27).get_i32()) + 1
        })
    }
}

struct FakeBroker {
    addr: String,
    state: Arc<Mutex<State>>,
}

impl FakeBroker {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State {
            api_versions_max: 3,
            metadata_max: 12,
            ..State::default()
        }));
        let shared = state.clone();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone(), port));
            }
        });
        FakeBroker { addr, state }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    async fn client(&self) -> Client {
        Client::connect(ClientConfig::new(&self.addr).unwrap())
            .await
            .unwrap()
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>, port: u16) {
    let mut buf = BytesMut::new();
    loop {
        let frame = loop {
            if let Some(frame) = take_frame(&mut buf, 1 << 20).unwrap() {
                break frame;
            }
            if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        };
        let mut body = frame.clone();
        let api_key = body.slice(0..2).get_i16();
        let version = body.slice(2..4).get_i16();
        let header = if api_key == ApiKey::ApiVersions as i16 && version > 3 {
            None
        } else {
            Some(decode_request_header_from_buffer(&mut body).unwrap())
        };
        let correlation_id = match &header {
            Some(h) => h.correlation_id,
            None => body.slice(4..8).get_i32(),
        };
        let response = {
            let mut state = state.lock().unwrap();
            state.seen.push((api_key, version));
            let correlation_id = if std::mem::take(&mut state.wrong_correlation_id) {
                correlation_id + 1
            } else {
                correlation_id
            };
            answer(&mut state, api_key, version, correlation_id, body, port)
        };
        if let Some(response) = response {
            if stream.write_all(&response).await.is_err() {
                return;
            }
        }
    }
}

fn encode<R: Encodable + HeaderVersion>(correlation_id: i32, version: i16, response: &R) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, R::header_version(version))
        .unwrap();
    response.encode(&mut buf, version).unwrap();
    patch_size_prefix(&mut buf, 0);
    buf.freeze()
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

fn answer(
    state: &mut State,
    api_key: i16,
    version: i16,
    correlation_id: i32,
    mut body: Bytes,
    port: u16,
) -> Option<Bytes> {
    let key = ApiKey::try_from(api_key).unwrap();
    Some(match key {
        ApiKey::ApiVersions => {
            let range = |key: ApiKey, min, max| {
                ApiVersion::default()
                    .with_api_key(key as i16)
                    .with_min_version(min)
                    .with_max_version(max)
            };
            if version > state.api_versions_max {
                let response = ApiVersionsResponse::default()
                    .with_error_code(35)
                    .with_api_keys(vec![range(ApiKey::ApiVersions, 0, state.api_versions_max)]);
                return Some(encode(correlation_id, 0, &response));
            }
            let response = ApiVersionsResponse::default().with_api_keys(vec![
                range(ApiKey::Produce, 3, 13),
                range(ApiKey::Fetch, 4, 18),
                range(ApiKey::ListOffsets, 1, 10),
                range(ApiKey::Metadata, 0, state.metadata_max),
                range(ApiKey::ApiVersions, 0, state.api_versions_max),
                range(ApiKey::CreateTopics, 2, 7),
                range(ApiKey::DeleteTopics, 1, 6),
            ]);
            encode(correlation_id, version, &response)
        }
        ApiKey::Metadata => {
            let request = MetadataRequest::decode(&mut body, version).unwrap();
            let names: Vec<String> = match request.topics {
                None => state.topics.keys().cloned().collect(),
                Some(topics) => topics
                    .into_iter()
                    .filter_map(|t| t.name.map(|n| n.0.to_string()))
                    .collect(),
            };
            let topics = names
                .iter()
                .map(|n| match state.topics.get(n) {
                    None => MetadataResponseTopic::default()
                        .with_name(Some(name(n)))
                        .with_error_code(3),
                    Some(partitions) => MetadataResponseTopic::default()
                        .with_name(Some(name(n)))
                        .with_partitions(
                            (0..partitions.len() as i32)
                                .map(|p| {
                                    MetadataResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_leader_id(BrokerId(1))
                                        .with_replica_nodes(vec![BrokerId(1)])
                                        .with_isr_nodes(vec![BrokerId(1)])
                                })
                                .collect(),
                        ),
                })
                .collect();
            let response = MetadataResponse::default()
                .with_brokers(vec![MetadataResponseBroker::default()
                    .with_node_id(BrokerId(1))
                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                    .with_port(i32::from(port))])
                .with_controller_id(BrokerId(1))
                .with_topics(topics);
            encode(correlation_id, version, &response)
        }
        ApiKey::CreateTopics => {
            let request = CreateTopicsRequest::decode(&mut body, version).unwrap();
            let topics = request
                .topics
                .into_iter()
                .map(|t| {
                    let n = t.name.0.to_string();
                    let result = CreatableTopicResult::default().with_name(t.name);
                    let partitions = t.num_partitions.max(1) as usize;
                    match state.topics.entry(n) {
                        std::collections::hash_map::Entry::Occupied(e) => result
                            .with_error_code(36)
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "Topic '{}' already exists.",
                                e.key()
                            )))),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(vec![Vec::new(); partitions]);
                            result
                        }
                    }
                })
                .collect();
            encode(
                correlation_id,
                version,
                &CreateTopicsResponse::default().with_topics(topics),
            )
        }
        ApiKey::Produce => {
            let request = ProduceRequest::decode(&mut body, version).unwrap();
            let mut responses = Vec::new();
            for topic in request.topic_data {
                let n = topic.name.0.to_string();
                let mut partitions = Vec::new();
                for data in topic.partition_data {
                    let p = data.index;
                    let response = PartitionProduceResponse::default().with_index(p);
                    let key = (n.clone(), p);
                    if let Some(at) = state.not_leader_once.iter().position(|k| *k == key) {
                        state.not_leader_once.remove(at);
                        partitions.push(response.with_error_code(6));
                        continue;
                    }
                    let base = state.next_offset(&n, p as usize);
                    let mut batch = BytesMut::from(&data.records.unwrap()[..]);
                    batch[0..8].copy_from_slice(&base.to_be_bytes());
                    state.topics.get_mut(&n).unwrap()[p as usize].push(batch.freeze());
                    partitions.push(response.with_base_offset(base));
                }
                responses.push(
                    TopicProduceResponse::default()
                        .with_name(topic.name)
                        .with_partition_responses(partitions),
                );
            }
            if request.acks == 0 {
                return None;
            }
            encode(
                correlation_id,
                version,
                &ProduceResponse::default().with_responses(responses),
            )
        }
        ApiKey::ListOffsets => {
            let request = ListOffsetsRequest::decode(&mut body, version).unwrap();
            assert_eq!(request.replica_id.0, -1, "consumers send replica id -1");
            let topics = request
                .topics
                .into_iter()
                .map(|t| {
                    let n = t.name.0.to_string();
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let offset = if p.timestamp == -2 {
                                0
                            } else {
                                state.next_offset(&n, p.partition_index as usize)
                            };
                            ListOffsetsPartitionResponse::default()
                                .with_partition_index(p.partition_index)
                                .with_offset(offset)
                        })
                        .collect();
                    ListOffsetsTopicResponse::default()
                        .with_name(t.name)
                        .with_partitions(partitions)
                })
                .collect();
            encode(
                correlation_id,
                version,
                &ListOffsetsResponse::default().with_topics(topics),
            )
        }
        ApiKey::Fetch => {
            let request = FetchRequest::decode(&mut body, version).unwrap();
            let responses = request
                .topics
                .into_iter()
                .map(|t| {
                    let n = t.topic.0.to_string();
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let batches = &state.topics[&n][p.partition as usize];
                            let mut records = BytesMut::new();
                            for batch in batches {
                                let last = batch.slice(0..8).get_i64()
                                    + i64::from(batch.slice(23..27).get_i32());
                                if last >= p.fetch_offset {
                                    records.extend_from_slice(batch);
                                }
                            }
                            PartitionData::default()
                                .with_partition_index(p.partition)
                                .with_high_watermark(state.next_offset(&n, p.partition as usize))
                                .with_records(Some(records.freeze()))
                        })
                        .collect();
                    FetchableTopicResponse::default()
                        .with_topic(t.topic)
                        .with_partitions(partitions)
                })
                .collect();
            encode(
                correlation_id,
                version,
                &FetchResponse::default().with_responses(responses),
            )
        }
        other => panic!("fake broker got unexpected {other:?}"),
    })
}

#[tokio::test]
async fn connection_negotiates_the_highest_common_version_capped_by_the_client() {
    let broker = FakeBroker::start().await;
    broker.state().metadata_max = 9;
    let conn = Connection::connect(&broker.addr).await.unwrap();
    assert_eq!(conn.version_for::<MetadataRequest>().unwrap(), 9);
    assert_eq!(
        conn.version_for::<ProduceRequest>().unwrap(),
        12,
        "capped: v13 needs topic ids"
    );
    assert_eq!(
        conn.version_for::<FetchRequest>().unwrap(),
        12,
        "capped: v13 needs topic ids"
    );
    assert_eq!(conn.version_for::<CreateTopicsRequest>().unwrap(), 7);
    assert_eq!(conn.version_for::<DeleteTopicsRequest>().unwrap(), 5);
    let err = conn.version_for::<JoinGroupRequest>().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "broker {} does not support JoinGroup in any version this client speaks (the broker does not advertise it)",
            broker.addr
        )
    );
    assert_eq!(broker.state().seen, vec![(ApiKey::ApiVersions as i16, 3)]);
}

#[tokio::test]
async fn api_versions_falls_back_when_the_broker_is_older() {
    let broker = FakeBroker::start().await;
    broker.state().api_versions_max = 0;
    let mut conn = Connection::connect(&broker.addr).await.unwrap();
    let response = conn
        .send(MetadataRequest::default().with_topics(Some(vec![])))
        .await
        .unwrap();
    assert_eq!(response.brokers.len(), 1);
    let api_versions = ApiKey::ApiVersions as i16;
    let metadata = ApiKey::Metadata as i16;
    assert_eq!(
        broker.state().seen,
        vec![(api_versions, 3), (api_versions, 0), (metadata, 12)]
    );
}

#[tokio::test]
async fn a_wrong_correlation_id_is_a_protocol_error() {
    let broker = FakeBroker::start().await;
    let mut conn = Connection::connect(&broker.addr).await.unwrap();
    broker.state().wrong_correlation_id = true;
    let err = conn.send(MetadataRequest::default()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "protocol error from {}: expected correlation id 1, got 2",
            broker.addr
        )
    );
    assert!(conn.is_broken());
}

#[tokio::test]
async fn connection_refused_reads_plainly() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let err = Client::connect(ClientConfig::new(&addr).unwrap())
        .await
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        format!("cannot connect to {addr}: Connection refused")
    );
}

#[tokio::test]
async fn unknown_topics_are_reported_by_name() {
    let broker = FakeBroker::start().await;
    let mut client = broker.client().await;
    let err = client.describe_topic("orders").await.unwrap_err();
    assert!(matches!(err, Error::UnknownTopic { .. }));
    assert_eq!(err.to_string(), "topic orders does not exist");
    let err = Producer::new(client, ProducerConfig::default())
        .send("orders", None, ProducerRecord::value("x"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "topic orders does not exist");
}

#[tokio::test]
async fn creating_an_existing_topic_is_topic_already_exists() {
    let broker = FakeBroker::start().await;
    let mut client = broker.client().await;
    let topic = NewTopic {
        partitions: 3,
        ..NewTopic::new("orders")
    };
    client.create_topic(topic.clone()).await.unwrap();
    let listed = client.list_topics().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].partitions),
        ("orders", 3)
    );
    let err = client.create_topic(topic).await.unwrap_err();
    assert_eq!(err.kafka_code(), Some(36));
    assert_eq!(
        err.to_string(),
        "create topic orders: TOPIC_ALREADY_EXISTS (Topic 'orders' already exists.)"
    );
}

#[tokio::test]
async fn produced_records_come_back_from_the_consumer_in_their_key_partitions() {
    let broker = FakeBroker::start().await;
    let mut client = broker.client().await;
    client
        .create_topic(NewTopic {
            partitions: 3,
            ..NewTopic::new("orders")
        })
        .await
        .unwrap();
    // Partition 1 "moves" once: the batch must be retried after a metadata refresh.
    broker
        .state()
        .not_leader_once
        .push(("orders".to_owned(), 1));

    let mut producer = Producer::new(client, ProducerConfig::default());
    let keys: Vec<String> = (0..30).map(|i| format!("key-{i}")).collect();
    let mut expected: HashMap<i32, Vec<(String, String)>> = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        let value = format!("value-{i}");
        let partition = producer
            .send(
                "orders",
                None,
                ProducerRecord::keyed(key.clone(), value.clone()),
            )
            .await
            .unwrap();
        assert_eq!(partition, partition_for_key(key.as_bytes(), 3));
        expected
            .entry(partition)
            .or_default()
            .push((key.clone(), value));
    }
    let deliveries = producer.flush().await.unwrap();
    let mut delivered: Vec<(i32, i64, usize)> = deliveries
        .into_iter()
        .map(|d| (d.partition, d.result.unwrap(), d.record_count))
        .collect();
    delivered.sort();
    let mut want: Vec<(i32, i64, usize)> = expected.iter().map(|(p, r)| (*p, 0, r.len())).collect();
    want.sort();
    assert_eq!(delivered, want, "one batch per partition, each at offset 0");
    assert!(
        broker.state().not_leader_once.is_empty(),
        "the NOT_LEADER_OR_FOLLOWER was served"
    );

    let client = producer.into_client();
    let mut consumer = Consumer::assign(
        client,
        ConsumerConfig::default(),
        "orders",
        None,
        StartOffset::Earliest,
    )
    .await
    .unwrap();
    let mut got: HashMap<i32, Vec<(String, String)>> = HashMap::new();
    let mut offsets: HashMap<i32, Vec<i64>> = HashMap::new();
    for _ in 0..30 {
        let record = consumer.next_record().await.unwrap();
        let text = |b: &Option<Bytes>| String::from_utf8(b.as_ref().unwrap().to_vec()).unwrap();
        got.entry(record.partition)
            .or_default()
            .push((text(&record.key), text(&record.value)));
        offsets
            .entry(record.partition)
            .or_default()
            .push(record.offset);
    }
    assert_eq!(got, expected);
    for (partition, offsets) in &offsets {
        let n = expected[partition].len() as i64;
        assert_eq!(offsets, &(0..n).collect::<Vec<_>>());
    }
    let positions: Vec<(i32, i64)> = consumer.positions().iter().map(|(p, o)| (*p, *o)).collect();
    let mut want: Vec<(i32, i64)> = (0..3)
        .map(|p| (p, expected.get(&p).map_or(0, |r| r.len() as i64)))
        .collect();
    want.sort();
    assert_eq!(positions, want);

    // An explicit offset in the middle of a batch skips the records before it.
    let client = broker.client().await;
    let mut consumer = Consumer::assign(
        client,
        ConsumerConfig::default(),
        "orders",
        Some(vec![2]),
        StartOffset::Offset(2),
    )
    .await
    .unwrap();
    let first = consumer.next_record().await.unwrap();
    assert_eq!((first.partition, first.offset), (2, 2));
    assert_eq!(first.key.as_deref(), Some(expected[&2][2].0.as_bytes()));
}

#[tokio::test]
async fn latest_starts_after_what_is_already_there() {
    let broker = FakeBroker::start().await;
    let mut client = broker.client().await;
    client.create_topic(NewTopic::new("t")).await.unwrap();
    let mut producer = Producer::new(client, ProducerConfig::default());
    for i in 0..5 {
        producer
            .send("t", None, ProducerRecord::value(format!("{i}")))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    let consumer = Consumer::assign(
        producer.into_client(),
        ConsumerConfig::default(),
        "t",
        None,
        StartOffset::Latest,
    )
    .await
    .unwrap();
    assert_eq!(consumer.positions().get(&0), Some(&5));
}
