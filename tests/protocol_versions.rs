//! The newest protocol versions, on the wire against the real binary, with exact answers:
//! ListOffsets v7–v10 (MAX_TIMESTAMP and the tiered-storage lookups), Produce v13 and Fetch
//! v13–v18 (topics by id), Metadata v13, DescribeTopicPartitions, GetTelemetrySubscriptions and PushTelemetry; and
//! a refused version is logged with the API's name.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::wire::{self, topic_name, RawConn};
use common::{poll_until, TestServer};
use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::list_offsets_response::ListOffsetsPartitionResponse;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
    FetchRequest, FetchResponse, GetTelemetrySubscriptionsRequest,
    GetTelemetrySubscriptionsResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, PushTelemetryRequest, PushTelemetryResponse,
};
use kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupId,
};
use kafka_protocol::protocol::StrBytes;
use skald_protocol::batch::RecordBatches;

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const GROUP_ID_NOT_FOUND: i16 = 69;
const FENCED_LEADER_EPOCH: i16 = 74;
const INVALID_REQUEST: i16 = 42;
const UNKNOWN_TOPIC_ID: i16 = 100;
const UNKNOWN_SUBSCRIPTION_ID: i16 = 117;

const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;
const LATEST_TIERED_TIMESTAMP: i64 = -5;

fn list_offset_at(
    conn: &mut RawConn,
    version: i16,
    topic: &str,
    timestamp: i64,
) -> ListOffsetsPartitionResponse {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_timeout_ms(if version >= 10 { 5_000 } else { 0 })
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
    let response: ListOffsetsResponse = conn.request(&request, version);
    assert_eq!(response.topics.len(), 1, "{response:?}");
    assert_eq!(response.topics[0].partitions.len(), 1, "{response:?}");
    response.topics[0].partitions[0].clone()
}

#[test]
fn list_offsets_v7_to_v10_answer_max_timestamp_and_the_tiered_lookups_as_kafka_without_remote_storage(
) {
    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    assert_eq!(conn.api_versions().get(&2), Some(&(1, 10)));
    wire::create_topics(&mut conn, &[("timed", 1), ("empty", 1)]);
    // The largest timestamp (30 000) first at offset 1, again at offset 3.
    let first = wire::batch_v2(&[("a", "1", 10_000), ("b", "2", 30_000), ("c", "3", 20_000)]);
    assert_eq!(conn.produce_raw("timed", 0, first), (NONE, 0));
    let second = wire::batch_v2(&[("d", "4", 30_000), ("e", "5", 25_000)]);
    assert_eq!(conn.produce_raw("timed", 0, second), (NONE, 3));

    for version in 7..=10 {
        let answer = list_offset_at(&mut conn, version, "timed", MAX_TIMESTAMP);
        assert_eq!(
            (answer.error_code, answer.offset, answer.timestamp),
            (NONE, 1, 30_000),
            "v{version}: {answer:?}"
        );
        // No record carries a timestamp yet: Kafka's "unknown" offset and timestamp.
        let answer = list_offset_at(&mut conn, version, "empty", MAX_TIMESTAMP);
        assert_eq!(
            (answer.error_code, answer.offset, answer.timestamp),
            (NONE, -1, -1),
            "v{version}: {answer:?}"
        );
        let answer = list_offset_at(&mut conn, version, "no-such-topic", MAX_TIMESTAMP);
        assert_eq!(answer.error_code, UNKNOWN_TOPIC_OR_PARTITION, "{answer:?}");
    }
    for version in 8..=10 {
        // Without tiered storage the local log is the whole log.
        let answer = list_offset_at(&mut conn, version, "timed", EARLIEST_LOCAL_TIMESTAMP);
        assert_eq!(
            (answer.error_code, answer.offset, answer.timestamp),
            (NONE, 0, -1),
            "v{version}: {answer:?}"
        );
    }
    for version in 9..=10 {
        // Nothing is tiered: offset -1, and no leader epoch.
        let answer = list_offset_at(&mut conn, version, "timed", LATEST_TIERED_TIMESTAMP);
        assert_eq!(
            (
                answer.error_code,
                answer.offset,
                answer.timestamp,
                answer.leader_epoch
            ),
            (NONE, -1, -1, -1),
            "v{version}: {answer:?}"
        );
    }
    // A timestamp no version defines is still refused.
    let answer = list_offset_at(&mut conn, 10, "timed", -7);
    assert_eq!(answer.error_code, INVALID_REQUEST, "{answer:?}");
}

fn topic_id(conn: &mut RawConn, topic: &str) -> uuid::Uuid {
    let metadata = conn.metadata(Some(&[topic]), false);
    assert_eq!(metadata.topics[0].error_code, NONE, "{metadata:?}");
    metadata.topics[0].topic_id
}

fn fetch_by_id(id: uuid::Uuid, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(offset)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(1 << 20)])])
}

#[test]
fn fetch_v13_to_v18_name_topics_by_id_and_unknown_ids_are_told_so() {
    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    assert_eq!(conn.api_versions().get(&1), Some(&(4, 18)));
    wire::create_topics(&mut conn, &[("by-id", 1)]);
    let batch = wire::batch_v2(&[
        ("k1", "v1", 1_000),
        ("k2", "v2", 2_000),
        ("k3", "v3", 3_000),
    ]);
    assert_eq!(conn.produce_raw("by-id", 0, batch.clone()), (NONE, 0));
    let id = topic_id(&mut conn, "by-id");
    assert!(!id.is_nil());
    let unknown = uuid::Uuid::from_u128(0x5ca1_ab1e);

    for version in 13..=18 {
        let response: FetchResponse = conn.request(&fetch_by_id(id, 1), version);
        assert_eq!(response.error_code, NONE, "v{version}: {response:?}");
        assert_eq!(response.responses.len(), 1, "v{version}: {response:?}");
        let topic = &response.responses[0];
        assert_eq!(topic.topic_id, id, "v{version}");
        let partition = &topic.partitions[0];
        assert_eq!(
            (
                partition.error_code,
                partition.high_watermark,
                partition.log_start_offset
            ),
            (NONE, 3, 0),
            "v{version}: {partition:?}"
        );
        // The whole stored batch comes back (a fetch from the middle starts at its batch).
        let records = partition.records.clone().unwrap_or_default();
        let headers: Vec<(i64, i64)> = RecordBatches::new(&records)
            .map(|batch| {
                let header = batch.expect("valid batch").1;
                (header.base_offset, header.next_offset())
            })
            .collect();
        assert_eq!(headers, vec![(0, 3)], "v{version}");
        assert_eq!(
            records.slice(wire::BATCH_V2_CRC_RANGE.start..),
            batch.slice(wire::BATCH_V2_CRC_RANGE.start..),
            "v{version}: the stored batch, byte for byte"
        );

        let response: FetchResponse = conn.request(&fetch_by_id(unknown, 0), version);
        let topic = &response.responses[0];
        assert_eq!(topic.topic_id, unknown, "v{version}");
        let partition = &topic.partitions[0];
        assert_eq!(
            (partition.error_code, partition.high_watermark),
            (UNKNOWN_TOPIC_ID, -1),
            "v{version}: {partition:?}"
        );
        assert_eq!(
            partition.records.as_ref().map_or(0, Bytes::len),
            0,
            "v{version}"
        );
    }
}

#[test]
fn fetch_v16_names_the_leader_when_the_fetcher_knows_an_old_epoch() {
    let mut server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    wire::create_topics(&mut conn, &[("moved", 1)]);
    // A restart makes this node the partition's leader again, in a new epoch.
    server.restart();
    let mut conn = RawConn::connect(server.kafka_addr());
    let metadata = conn.metadata(Some(&["moved"]), false);
    let epoch = metadata.topics[0].partitions[0].leader_epoch;
    assert!(epoch > 0, "{metadata:?}");
    let id = metadata.topics[0].topic_id;
    let mut request = fetch_by_id(id, 0);
    request.topics[0].partitions[0].current_leader_epoch = epoch - 1;

    let old: FetchResponse = conn.request(&request, 15);
    let partition = &old.responses[0].partitions[0];
    assert_eq!(partition.error_code, FENCED_LEADER_EPOCH);
    assert_eq!(
        (partition.current_leader.leader_id, old.node_endpoints.len()),
        (BrokerId(-1), 0)
    );
    for version in 16..=18 {
        let response: FetchResponse = conn.request(&request, version);
        let partition = &response.responses[0].partitions[0];
        assert_eq!(partition.error_code, FENCED_LEADER_EPOCH, "v{version}");
        assert_eq!(
            (
                partition.current_leader.leader_id,
                partition.current_leader.leader_epoch
            ),
            (BrokerId(1), epoch),
            "v{version}"
        );
        let endpoints: Vec<(i32, String, i32)> = response
            .node_endpoints
            .iter()
            .map(|node| (node.node_id.0, node.host.to_string(), node.port))
            .collect();
        assert_eq!(
            endpoints,
            vec![(
                1,
                "127.0.0.1".to_string(),
                i32::from(server.kafka_addr().port())
            )],
            "v{version}"
        );
    }
}

#[test]
fn metadata_v13_and_describe_topic_partitions_pages_by_cursor() {
    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    let versions = conn.api_versions();
    assert_eq!(versions.get(&3), Some(&(0, 13)));
    assert_eq!(versions.get(&75), Some(&(0, 0)));
    wire::create_topics(&mut conn, &[("pages-a", 3), ("pages-b", 2)]);

    let metadata: MetadataResponse = conn.request(
        &MetadataRequest::default()
            .with_topics(Some(vec![
                kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(topic_name("pages-a"))),
            ]))
            .with_allow_auto_topic_creation(false),
        13,
    );
    assert_eq!(metadata.error_code, NONE);
    assert_eq!(metadata.topics.len(), 1);
    assert_eq!(metadata.topics[0].partitions.len(), 3);
    let id_a = metadata.topics[0].topic_id;

    let describe =
        |conn: &mut RawConn, topics: &[&str], limit: i32, cursor: Option<(&str, i32)>| {
            let request = DescribeTopicPartitionsRequest::default()
                .with_topics(
                    topics
                        .iter()
                        .map(|name| TopicRequest::default().with_name(topic_name(name)))
                        .collect(),
                )
                .with_response_partition_limit(limit)
                .with_cursor(cursor.map(|(name, index)| {
                    Cursor::default()
                        .with_topic_name(topic_name(name))
                        .with_partition_index(index)
                }));
            let response: DescribeTopicPartitionsResponse = conn.request(&request, 0);
            let topics: Vec<(String, i16, Vec<i32>)> = response
                .topics
                .iter()
                .map(|topic| {
                    (
                        topic
                            .name
                            .as_ref()
                            .map(|n| n.to_string())
                            .unwrap_or_default(),
                        topic.error_code,
                        topic.partitions.iter().map(|p| p.partition_index).collect(),
                    )
                })
                .collect();
            let next = response
                .next_cursor
                .as_ref()
                .map(|c| (c.topic_name.to_string(), c.partition_index));
            (response, topics, next)
        };
    let page =
        |name: &str, error: i16, partitions: &[i32]| (name.to_string(), error, partitions.to_vec());

    let (first, topics, next) = describe(&mut conn, &["pages-b", "pages-a"], 2, None);
    assert_eq!(topics, vec![page("pages-a", NONE, &[0, 1])]);
    assert_eq!(next, Some(("pages-a".to_string(), 2)));
    assert_eq!(first.topics[0].topic_id, id_a);
    let partition = &first.topics[0].partitions[0];
    assert_eq!(
        (
            partition.leader_id,
            partition.replica_nodes.clone(),
            partition.isr_nodes.clone()
        ),
        (BrokerId(1), vec![BrokerId(1)], vec![BrokerId(1)])
    );
    let (_, topics, next) = describe(&mut conn, &["pages-b", "pages-a"], 2, Some(("pages-a", 2)));
    assert_eq!(
        topics,
        vec![page("pages-a", NONE, &[2]), page("pages-b", NONE, &[0])]
    );
    assert_eq!(next, Some(("pages-b".to_string(), 1)));
    // Topics sort by name: "absent" is before the cursor and so not answered again; "unknown"
    // is after it.
    let (_, topics, next) = describe(
        &mut conn,
        &["pages-b", "absent", "pages-a", "unknown"],
        2,
        Some(("pages-b", 1)),
    );
    assert_eq!(
        topics,
        vec![
            page("pages-b", NONE, &[1]),
            page("unknown", UNKNOWN_TOPIC_OR_PARTITION, &[])
        ]
    );
    assert_eq!(next, None);
    // A cursor naming a topic not asked for.
    let (_, topics, next) = describe(&mut conn, &["pages-b"], 2, Some(("pages-a", 0)));
    assert_eq!(topics, vec![page("pages-b", INVALID_REQUEST, &[])]);
    assert_eq!(next, None);
}

#[test]
fn telemetry_subscriptions_request_nothing_and_pushes_are_checked_against_them() {
    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    let versions = conn.api_versions();
    assert_eq!(versions.get(&71), Some(&(0, 0)));
    assert_eq!(versions.get(&72), Some(&(0, 0)));

    let first: GetTelemetrySubscriptionsResponse =
        conn.request(&GetTelemetrySubscriptionsRequest::default(), 0);
    assert_eq!(first.error_code, NONE);
    assert!(!first.client_instance_id.is_nil(), "{first:?}");
    assert!(first.requested_metrics.is_empty(), "{first:?}");
    assert_eq!(
        (
            first.push_interval_ms,
            first.telemetry_max_bytes,
            first.delta_temporality
        ),
        (300_000, 1 << 20, true)
    );
    // The instance keeps its id and subscription when it asks again.
    let again: GetTelemetrySubscriptionsResponse = conn.request(
        &GetTelemetrySubscriptionsRequest::default()
            .with_client_instance_id(first.client_instance_id),
        0,
    );
    assert_eq!(
        (again.client_instance_id, again.subscription_id),
        (first.client_instance_id, first.subscription_id)
    );

    let push = |subscription_id: i32| {
        PushTelemetryRequest::default()
            .with_client_instance_id(first.client_instance_id)
            .with_subscription_id(subscription_id)
            .with_terminating(true)
            .with_metrics(Bytes::from_static(b"metrics"))
    };
    let pushed: PushTelemetryResponse = conn.request(&push(first.subscription_id), 0);
    assert_eq!(pushed.error_code, NONE);
    let stale: PushTelemetryResponse =
        conn.request(&push(first.subscription_id.wrapping_add(1)), 0);
    assert_eq!(stale.error_code, UNKNOWN_SUBSCRIPTION_ID);
}

#[test]
fn produce_v13_names_topics_by_id_and_unknown_ids_are_told_so() {
    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    assert_eq!(conn.api_versions().get(&0), Some(&(3, 13)));
    wire::create_topics(&mut conn, &[("produced-by-id", 1)]);
    let id = topic_id(&mut conn, "produced-by-id");
    let unknown = uuid::Uuid::from_u128(0x5ca1_ab1e);
    let batch = wire::batch_v2(&[("k1", "v1", 1_000), ("k2", "v2", 2_000)]);
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(
            [id, unknown]
                .into_iter()
                .map(|topic_id| {
                    TopicProduceData::default()
                        .with_topic_id(topic_id)
                        .with_partition_data(vec![PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch.clone()))])
                })
                .collect(),
        );
    let response: ProduceResponse = conn.request(&request, 13);
    let answers: Vec<(uuid::Uuid, i16, i64)> = response
        .responses
        .iter()
        .map(|topic| {
            let partition = &topic.partition_responses[0];
            (topic.topic_id, partition.error_code, partition.base_offset)
        })
        .collect();
    assert_eq!(
        answers,
        vec![(id, NONE, 0), (unknown, UNKNOWN_TOPIC_ID, -1)]
    );
    // Stored under the topic's name, as by any other version.
    let (error, high_watermark, records) = conn.fetch_raw("produced-by-id", 0, 0);
    assert_eq!((error, high_watermark), (NONE, 2));
    assert_eq!(
        records.slice(wire::BATCH_V2_CRC_RANGE.start..),
        batch.slice(wire::BATCH_V2_CRC_RANGE.start..)
    );
}

#[test]
fn find_coordinator_v5_v6_and_describe_groups_v6_answer_as_kafka_4() {
    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    let versions = conn.api_versions();
    assert_eq!(versions.get(&10), Some(&(0, 6)));
    assert_eq!(versions.get(&15), Some(&(0, 6)));
    for version in 5..=6 {
        let request = FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![StrBytes::from_static_str("g-find")]);
        let response: FindCoordinatorResponse = conn.request(&request, version);
        let found: Vec<(i16, i32)> = response
            .coordinators
            .iter()
            .map(|c| (c.error_code, c.node_id.0))
            .collect();
        assert_eq!(found, vec![(NONE, 1)], "v{version}: {response:?}");
    }
    // A share group's key (v6, KIP-932): share groups are not served.
    let share = FindCoordinatorRequest::default()
        .with_key_type(2)
        .with_coordinator_keys(vec![StrBytes::from_static_str("g-share")]);
    let response: FindCoordinatorResponse = conn.request(&share, 6);
    assert_eq!(response.coordinators[0].error_code, INVALID_REQUEST);

    let describe = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_static_str("never-seen"))]);
    let old: DescribeGroupsResponse = conn.request(&describe, 5);
    assert_eq!(
        (old.groups[0].error_code, old.groups[0].group_state.as_str()),
        (NONE, "Dead")
    );
    let new: DescribeGroupsResponse = conn.request(&describe, 6);
    assert_eq!(
        (
            new.groups[0].error_code,
            new.groups[0].group_state.as_str(),
            new.groups[0].error_message.as_deref()
        ),
        (
            GROUP_ID_NOT_FOUND,
            "Dead",
            Some("Group never-seen not found.")
        )
    );
}

#[test]
fn an_unsupported_version_closes_the_connection_with_the_api_named_in_the_log() {
    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    assert_eq!(
        conn.api_versions().get(&(ApiKey::Produce as i16)),
        Some(&(3, 13))
    );
    // A v13 body under a v14 header: kafka-protocol cannot encode v14, nor Skald serve it.
    let mut payload = RawConn::encode_request(&ProduceRequest::default().with_acks(1), 13, 7);
    payload[2..4].copy_from_slice(&14i16.to_be_bytes());
    conn.write_frame(&payload).expect("send Produce v14");
    conn.expect_closed("Produce v14");
    poll_until("the refusal in the log", Duration::from_secs(10), || {
        server
            .stderr_tail()
            .contains("unsupported version 14 of Produce")
            .then_some(())
    });
}

/// KIP-951 for Produce: a v10+ produce sent to a broker that does not lead the partition gets
/// NOT_LEADER_OR_FOLLOWER naming the current leader and its epoch, with the leader's endpoint in
/// the response; v9 gets the bare error, as from Kafka.
#[test]
fn produce_v10_names_the_leader_when_sent_to_another_broker() {
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
    let cluster = common::cluster::TestCluster::start(1, 2, &[]);
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    wire::create_topics(&mut conn, &[("elsewhere", 2)]);
    // Each broker leads one partition (RF 1): find the one broker 2 does not lead.
    let (index, leader, epoch) = poll_until("both partitions led", Duration::from_secs(30), || {
        let metadata = conn.metadata(Some(&["elsewhere"]), false);
        let topic = metadata.topics.first()?;
        let foreign = topic
            .partitions
            .iter()
            .find(|p| p.leader_id.0 >= 0 && p.leader_id.0 != 2)?;
        Some((
            foreign.partition_index,
            foreign.leader_id.0,
            foreign.leader_epoch,
        ))
    });
    let produce = |conn: &mut RawConn, version: i16| -> ProduceResponse {
        conn.request(
            &ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(10_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(topic_name("elsewhere"))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(index)
                        .with_records(Some(wire::batch_v2(&[("k", "v", 1_000)])))])]),
            version,
        )
    };
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    let answer = produce(&mut conn, 10);
    let partition = &answer.responses[0].partition_responses[0];
    assert_eq!(
        (
            partition.error_code,
            partition.current_leader.leader_id.0,
            partition.current_leader.leader_epoch
        ),
        (NOT_LEADER_OR_FOLLOWER, leader, epoch)
    );
    let leader_addr = cluster.node(leader).kafka_addr();
    let endpoints: Vec<(i32, String, i32)> = answer
        .node_endpoints
        .iter()
        .map(|e| (e.node_id.0, e.host.to_string(), e.port))
        .collect();
    assert_eq!(
        endpoints,
        vec![(
            leader,
            leader_addr.ip().to_string(),
            i32::from(leader_addr.port())
        )]
    );
    let old = produce(&mut conn, 9);
    let partition = &old.responses[0].partition_responses[0];
    assert_eq!(
        (
            partition.error_code,
            partition.current_leader.leader_id.0,
            old.node_endpoints.len()
        ),
        (NOT_LEADER_OR_FOLLOWER, -1, 0)
    );
}
