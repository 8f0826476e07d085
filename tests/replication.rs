//! Replication across real broker processes: followers copy the leader's log byte for byte, the
//! high watermark bounds what consumers see, acks=all waits for the ISR, min.insync.replicas
//! refuses acks=all when the ISR is too small, and a failed-over partition serves the same log.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::TestCluster;
use common::poll_until;
use common::replica::{
    log_end_offset, produce_once_served, produce_with_acks, wait_for_partition, PartitionView,
};
use common::wire::{batch_v2, RawConn};

const TIMEOUT: Duration = Duration::from_secs(30);
/// Kafka's error codes.
const NOT_ENOUGH_REPLICAS: i16 = 19;

fn start_cluster() -> TestCluster {
    TestCluster::start(
        1,
        3,
        &[
            ("default.replication.factor", "3"),
            ("min.insync.replicas", "2"),
            // Followers that stop fetching leave the ISR quickly (the brokers' sessions are 1.5 s).
            ("replica.lag.time.max.ms", "3000"),
            ("auto.leader.rebalance.enable", "false"),
        ],
    )
}

#[test]
fn followers_copy_the_leader_and_a_failed_over_partition_serves_the_same_records() {
    let mut cluster = start_cluster();
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    common::wire::create_topics(&mut conn, &[("replicated", 1)]);
    let first = wait_for_partition(
        &cluster,
        2,
        "replicated",
        "a leader and a full ISR",
        |v: &PartitionView| v.leader > 0 && v.isr == vec![2, 3, 4],
    );
    assert_eq!(first.replicas.len(), 3);

    let mut leader = RawConn::connect(cluster.node(first.leader).kafka_addr());
    let mut offsets = Vec::new();
    for i in 0..5 {
        let value = format!("value-{i}");
        let batch = batch_v2(&[
            ("k", &value, 1_700_000_000_000 + i),
            ("k2", &value, 1_700_000_000_000 + i),
        ]);
        offsets.push(produce_once_served(&mut leader, "replicated", -1, batch));
    }
    assert_eq!(offsets, vec![(0, 0), (0, 2), (0, 4), (0, 6), (0, 8)]);

    // acks=all returned: every ISR member has everything, and consumers may read all of it.
    let (error, high_watermark, records) = leader.fetch_raw("replicated", 0, 0);
    assert_eq!((error, high_watermark), (0, 10));
    // Only an assigned replica may fetch as one (past the high watermark): a made-up replica id
    // gets NOT_LEADER_OR_FOLLOWER.
    {
        use kafka_protocol::messages::{BrokerId, FetchResponse};
        let request = common::wire::fetch_request("replicated", 0, 0).with_replica_id(BrokerId(99));
        let response: FetchResponse = leader.request(&request, 12);
        let p = &response.responses[0].partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (6, -1));
    }
    for node in [2, 3, 4] {
        let end = poll_until("every replica at the log end", TIMEOUT, || {
            log_end_offset(&cluster, node, "replicated").filter(|end| *end == 10)
        });
        assert_eq!(end, 10, "node {node}");
    }

    // The leader dies: another ISR member leads at a higher epoch and serves the same bytes.
    cluster.kill9(first.leader);
    let survivor = [2, 3, 4]
        .into_iter()
        .find(|id| *id != first.leader)
        .unwrap();
    let second = wait_for_partition(
        &cluster,
        survivor,
        "replicated",
        "a new leader",
        |v: &PartitionView| v.leader > 0 && v.leader != first.leader,
    );
    assert!(second.leader_epoch > first.leader_epoch);
    let mut new_leader = RawConn::connect(cluster.node(second.leader).kafka_addr());
    let (error, high_watermark, failed_over) = poll_until(
        "the new leader's high watermark covers what was acknowledged",
        TIMEOUT,
        || {
            let fetched = new_leader.fetch_raw("replicated", 0, 0);
            (fetched.1 == 10).then_some(fetched)
        },
    );
    assert_eq!((error, high_watermark), (0, 10));
    assert_eq!(failed_over, records, "the same batches, byte for byte");

    // It keeps the log going: the next acknowledged offset follows on.
    let batch = batch_v2(&[("k", "after", 1_700_000_000_100)]);
    assert_eq!(
        produce_once_served(&mut new_leader, "replicated", -1, batch),
        (0, 10)
    );

    // OffsetForLeaderEpoch (KIP-320): the old leader's epoch ended where the new one began; the
    // new epoch ends at the log end; a client behind on epochs is fenced, one ahead told to wait.
    let ask = |conn: &mut RawConn, current: i32, epoch: i32| {
        use kafka_protocol::messages::offset_for_leader_epoch_request::{
            OffsetForLeaderPartition, OffsetForLeaderTopic,
        };
        use kafka_protocol::messages::{BrokerId, OffsetForLeaderEpochRequest};
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(common::wire::topic_name("replicated"))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(current)
                    .with_leader_epoch(epoch)])]);
        let response = conn.request(&request, 4);
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.leader_epoch, p.end_offset)
    };
    assert_eq!(
        ask(&mut new_leader, second.leader_epoch, first.leader_epoch),
        (0, first.leader_epoch, 10)
    );
    assert_eq!(
        ask(&mut new_leader, second.leader_epoch, second.leader_epoch),
        (0, second.leader_epoch, 11)
    );
    // FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH
    assert_eq!(
        ask(&mut new_leader, first.leader_epoch, first.leader_epoch),
        (74, -1, -1)
    );
    assert_eq!(
        ask(&mut new_leader, second.leader_epoch + 1, first.leader_epoch),
        (75, -1, -1)
    );
}

#[test]
fn with_one_in_sync_replica_acks_all_is_refused_and_acks_one_still_works() {
    let mut cluster = start_cluster();
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    common::wire::create_topics(&mut conn, &[("guarded", 1)]);
    let view = wait_for_partition(&cluster, 2, "guarded", "a full ISR", |v: &PartitionView| {
        v.leader > 0 && v.isr == vec![2, 3, 4]
    });
    let followers: Vec<i32> = view
        .replicas
        .iter()
        .copied()
        .filter(|id| *id != view.leader)
        .collect();
    let mut leader = RawConn::connect(cluster.node(view.leader).kafka_addr());
    assert_eq!(
        produce_once_served(&mut leader, "guarded", -1, batch_v2(&[("k", "a", 1)])),
        (0, 0)
    );

    for follower in &followers {
        cluster.kill9(*follower);
    }
    wait_for_partition(
        &cluster,
        view.leader,
        "guarded",
        "the ISR down to the leader",
        |v: &PartitionView| v.isr == vec![view.leader],
    );
    assert_eq!(
        produce_with_acks(&mut leader, "guarded", -1, batch_v2(&[("k", "b", 2)])),
        (NOT_ENOUGH_REPLICAS, -1)
    );
    assert_eq!(
        produce_with_acks(&mut leader, "guarded", 1, batch_v2(&[("k", "c", 3)])),
        (0, 1)
    );

    // The followers return, catch up and rejoin the ISR: acks=all works again.
    for follower in &followers {
        cluster.restart(*follower);
    }
    wait_for_partition(
        &cluster,
        view.leader,
        "guarded",
        "the followers back in the ISR",
        |v: &PartitionView| v.isr == vec![2, 3, 4],
    );
    assert_eq!(
        produce_with_acks(&mut leader, "guarded", -1, batch_v2(&[("k", "d", 4)])),
        (0, 2)
    );
    let ends: BTreeMap<i32, i64> = [2, 3, 4]
        .into_iter()
        .map(|node| {
            let end = poll_until("every replica at the log end", TIMEOUT, || {
                log_end_offset(&cluster, node, "guarded").filter(|end| *end == 3)
            });
            (node, end)
        })
        .collect();
    assert_eq!(ends, BTreeMap::from([(2, 3), (3, 3), (4, 3)]));
}

/// A producer pipelines requests on one connection: the broker appends each acks=all batch as it
/// reads it and overlaps their waits for the ISR, but answers strictly in request order — a
/// request read after them (here Metadata) is answered after them too.
#[test]
fn pipelined_acks_all_requests_are_answered_in_order() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiKey, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, ResponseHeader,
    };
    use kafka_protocol::protocol::Decodable;

    let cluster = start_cluster();
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    common::wire::create_topics(&mut conn, &[("pipelined", 1)]);
    let view = wait_for_partition(
        &cluster,
        2,
        "pipelined",
        "a leader and a full ISR",
        |v: &PartitionView| v.leader > 0 && v.isr == vec![2, 3, 4],
    );
    let mut leader = RawConn::connect(cluster.node(view.leader).kafka_addr());
    // Served by the leader before the pipeline starts, so nothing in it is refused.
    assert_eq!(
        produce_once_served(&mut leader, "pipelined", -1, batch_v2(&[("k", "first", 1)])),
        (0, 0)
    );
    let produce_version = leader.negotiate(ApiKey::Produce, 9);
    let produce = |value: &str| {
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(common::wire::topic_name("pipelined"))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch_v2(&[("k", value, 2)])))])])
    };
    // Five produces and a Metadata, written back to back before reading anything.
    let mut sent = Vec::new();
    for i in 0..5 {
        let id = leader.next_correlation_id();
        let frame = RawConn::encode_request(&produce(&format!("v{i}")), produce_version, id);
        leader.write_frame(&frame).expect("send produce");
        sent.push((id, ApiKey::Produce));
    }
    let id = leader.next_correlation_id();
    leader
        .write_frame(&RawConn::encode_request(&MetadataRequest::default(), 4, id))
        .expect("send metadata");
    sent.push((id, ApiKey::Metadata));

    let mut answered = Vec::new();
    for (expected_id, api) in &sent {
        let frame = leader.read_frame();
        let mut body = bytes::Bytes::from(frame);
        let header_version = api.response_header_version(if *api == ApiKey::Produce {
            produce_version
        } else {
            4
        });
        let header = ResponseHeader::decode(&mut body, header_version).expect("response header");
        assert_eq!(
            header.correlation_id, *expected_id,
            "responses in request order"
        );
        if *api == ApiKey::Produce {
            let response = ProduceResponse::decode(&mut body, produce_version).expect("produce");
            let p = &response.responses[0].partition_responses[0];
            answered.push((p.error_code, p.base_offset));
        } else {
            let response = MetadataResponse::decode(&mut body, 4).expect("metadata");
            assert_eq!(response.brokers.len(), 3);
        }
    }
    assert_eq!(answered, vec![(0, 1), (0, 2), (0, 3), (0, 4), (0, 5)]);
}

/// `unclean.leader.election.enable`: two topics on brokers [2, 3] (2 leads); broker 3 dies, 2
/// takes a record alone (acks=1), then 2 dies too. When 3 returns, the topic that allows unclean
/// elections gets 3 as leader at once — losing the record only 2 had, which 2 truncates when it
/// returns — while the other stays leaderless until 2, its last in-sync replica, is back, and then
/// keeps every record.
#[test]
fn unclean_leader_election_trades_the_last_replicas_records_for_availability() {
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
    };
    use kafka_protocol::messages::{BrokerId, CreateTopicsRequest, CreateTopicsResponse};
    use kafka_protocol::protocol::StrBytes;

    let mut cluster = TestCluster::start(1, 2, &[("auto.leader.rebalance.enable", "false")]);
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    let topic = |name: &str, unclean: &str| {
        CreatableTopic::default()
            .with_name(common::wire::topic_name(name))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(vec![CreatableReplicaAssignment::default()
                .with_partition_index(0)
                .with_broker_ids(vec![BrokerId(2), BrokerId(3)])])
            .with_configs(vec![CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("unclean.leader.election.enable"))
                .with_value(Some(StrBytes::from_string(unclean.to_string())))])
    };
    let created: CreateTopicsResponse = conn.request(
        &CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![topic("careful", "false"), topic("available", "true")]),
        7,
    );
    let codes: Vec<i16> = created.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, vec![0, 0], "{created:?}");
    for name in ["careful", "available"] {
        wait_for_partition(
            &cluster,
            2,
            name,
            "both replicas in sync",
            |v: &PartitionView| v.leader == 2 && v.isr == vec![2, 3],
        );
        let mut leader = RawConn::connect(cluster.node(2).kafka_addr());
        assert_eq!(
            produce_once_served(&mut leader, name, -1, batch_v2(&[("k", "acked", 1)])),
            (0, 0)
        );
    }

    cluster.kill9(3);
    let mut leader = RawConn::connect(cluster.node(2).kafka_addr());
    for name in ["careful", "available"] {
        wait_for_partition(
            &cluster,
            2,
            name,
            "broker 3 out of the ISR",
            |v: &PartitionView| v.isr == vec![2],
        );
        assert_eq!(
            produce_with_acks(&mut leader, name, 1, batch_v2(&[("k", "only-on-2", 2)])),
            (0, 1)
        );
    }
    cluster.kill9(2);
    cluster.restart(3);
    let available = wait_for_partition(
        &cluster,
        3,
        "available",
        "an unclean election of broker 3",
        |v: &PartitionView| v.leader == 3,
    );
    assert_eq!(available.isr, vec![3]);
    let careful = wait_for_partition(
        &cluster,
        3,
        "careful",
        "the careful topic's view",
        |v: &PartitionView| v.isr == vec![2],
    );
    assert_eq!(careful.leader, -1, "no live in-sync replica: offline");
    let mut on_3 = RawConn::connect(cluster.node(3).kafka_addr());
    assert_eq!(
        produce_once_served(&mut on_3, "available", -1, batch_v2(&[("k", "after", 3)])),
        (0, 1)
    );

    // Broker 2 returns: it leads the careful topic again with everything, and follows broker 3
    // on the other, giving up the record only it had.
    cluster.restart(2);
    wait_for_partition(
        &cluster,
        3,
        "careful",
        "broker 2 leading again",
        |v: &PartitionView| v.leader == 2,
    );
    wait_for_partition(
        &cluster,
        3,
        "available",
        "broker 2 back in sync",
        |v: &PartitionView| v.leader == 3 && v.isr == vec![2, 3],
    );
    assert_eq!(
        values(&cluster, 2, "careful", 2),
        vec![(0, "acked".to_string()), (1, "only-on-2".to_string())]
    );
    assert_eq!(
        values(&cluster, 3, "available", 2),
        vec![(0, "acked".to_string()), (1, "after".to_string())]
    );
    // Broker 2's own copy holds what broker 3 has: let it lead, and read it.
    cluster.kill9(3);
    wait_for_partition(
        &cluster,
        2,
        "available",
        "broker 2 leading",
        |v: &PartitionView| v.leader == 2,
    );
    assert_eq!(
        values(&cluster, 2, "available", 2),
        vec![(0, "acked".to_string()), (1, "after".to_string())]
    );
}

/// (offset, value) of each record of partition 0 of `name`, read from `node` once its high
/// watermark is `end`.
fn values(cluster: &TestCluster, node: i32, name: &str, end: i64) -> Vec<(i64, String)> {
    poll_until(
        &format!("{name} on node {node} up to {end}"),
        TIMEOUT,
        || {
            let mut conn = RawConn::try_connect(cluster.node(node).kafka_addr())?;
            let (error, high_watermark, records) = conn.fetch_raw(name, 0, 0);
            (error == 0 && high_watermark == end).then(|| {
                common::replica::stored_records(&records)
                    .into_iter()
                    .map(|r| (r.offset, r.value))
                    .collect()
            })
        },
    )
}

/// A replica that starts empty (its disk replaced) while the leader's log starts inside a batch
/// (DeleteRecords moved it there): it is told to start at the leader's log start, is sent the
/// whole batch holding it, restarts its log at the batch's base, takes the leader's start, and
/// catches up into the ISR.
#[test]
fn an_empty_replica_catches_up_from_a_log_start_inside_a_batch() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::DeleteRecordsRequest;

    let mut cluster = start_cluster();
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    common::wire::create_topics(&mut conn, &[("trimmed", 1)]);
    let view = wait_for_partition(&cluster, 2, "trimmed", "a full ISR", |v: &PartitionView| {
        v.leader > 0 && v.isr == vec![2, 3, 4]
    });
    let mut leader = RawConn::connect(cluster.node(view.leader).kafka_addr());
    let five: Vec<(String, String, i64)> = (0..5)
        .map(|i| ("k".to_string(), format!("v{i}"), 1_700_000_000_000 + i))
        .collect();
    let five: Vec<(&str, &str, i64)> = five
        .iter()
        .map(|(k, v, t)| (k.as_str(), v.as_str(), *t))
        .collect();
    assert_eq!(
        produce_once_served(&mut leader, "trimmed", -1, batch_v2(&five)),
        (0, 0)
    );
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(common::wire::topic_name("trimmed"))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(2)])]);
    let response = leader.request(&request, 2);
    let p = &response.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, 2));

    // A follower loses its disk and comes back empty.
    let follower = view
        .replicas
        .iter()
        .copied()
        .find(|id| *id != view.leader)
        .unwrap();
    cluster.kill9(follower);
    std::fs::remove_dir_all(cluster.node(follower).data_dir()).expect("wipe the follower");
    wait_for_partition(
        &cluster,
        view.leader,
        "trimmed",
        "the follower out of the ISR",
        |v: &PartitionView| !v.isr.contains(&follower),
    );
    cluster.restart(follower);
    wait_for_partition(
        &cluster,
        view.leader,
        "trimmed",
        "the empty follower back in the ISR",
        |v: &PartitionView| v.isr == vec![2, 3, 4],
    );
    assert_eq!(
        poll_until(
            "the follower's log to end with the leader's",
            TIMEOUT,
            || { log_end_offset(&cluster, follower, "trimmed").filter(|end| *end == 5) }
        ),
        5
    );
}
