//! Consumer groups against the real binary: librdkafka consumers that subscribe (JoinGroup,
//! SyncGroup, Heartbeat, OffsetCommit, OffsetFetch, LeaveGroup through a client nobody here
//! wrote), committed offsets surviving a restart, auto.offset.reset for new groups, and the
//! group APIs' error codes on the wire.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::rdk;
use common::wire::RawConn;
use common::TestServer;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::Message;

const DEADLINE: Duration = Duration::from_secs(60);

/// Small initial delay and few `__consumer_offsets` partitions keep the tests quick.
fn start_server() -> TestServer {
    TestServer::start_with(&[
        ("group.initial.rebalance.delay.ms", "300"),
        ("offsets.topic.num.partitions", "8"),
    ])
}

fn group_consumer(bootstrap: &str, group: &str, reset: &str) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("client.id", "skald-group-tests")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", reset)
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "100");
    if let Ok(debug) = std::env::var("SKALD_TEST_RDKAFKA_DEBUG") {
        config.set("debug", &debug);
    }
    config.create().expect("create group consumer")
}

async fn produce(bootstrap: &str, topic: &str, partitions: i32, per_partition: usize, tag: &str) {
    let producer = rdk::producer(bootstrap);
    for partition in 0..partitions {
        for i in 0..per_partition {
            let key = format!("{tag}-{partition}-{i}");
            producer
                .send(
                    FutureRecord::to(topic)
                        .partition(partition)
                        .key(&key)
                        .payload(&key),
                    Duration::from_secs(30),
                )
                .await
                .unwrap_or_else(|(err, _)| panic!("produce to {topic}-{partition}: {err}"));
        }
    }
}

fn assigned(consumer: &BaseConsumer) -> BTreeSet<i32> {
    consumer
        .assignment()
        .expect("assignment")
        .elements()
        .iter()
        .map(|element| element.partition())
        .collect()
}

/// Committed offset per partition of `topic`, as the group coordinator returns it.
fn committed(consumer: &BaseConsumer, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    rdk::committed_offsets(consumer, topic, partitions)
}

/// (a) Three members share six partitions two each, and together read every record exactly once,
/// committing each record (synchronously) after processing it.
#[tokio::test(flavor = "multi_thread")]
async fn three_members_split_six_partitions_and_read_everything_once() {
    let server = start_server();
    let bootstrap = server.bootstrap();
    let topic = "orders";
    rdk::create_topic(&bootstrap, topic, 6).await;
    produce(&bootstrap, topic, 6, 20, "a").await;

    let consumers: Vec<BaseConsumer> = (0..3)
        .map(|_| group_consumer(&bootstrap, "billing", "earliest"))
        .collect();
    for consumer in &consumers {
        consumer.subscribe(&[topic]).expect("subscribe");
    }
    let mut seen: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        for (member, consumer) in consumers.iter().enumerate() {
            match consumer.poll(Duration::from_millis(50)) {
                None => {}
                Some(Err(err)) => panic!("consumer {member}: {err}"),
                Some(Ok(message)) => {
                    *seen
                        .entry((message.partition(), message.offset()))
                        .or_default() += 1;
                    consumer
                        .commit_message(&message, CommitMode::Sync)
                        .expect("commit");
                }
            }
        }
        let assignments: Vec<BTreeSet<i32>> = consumers.iter().map(assigned).collect();
        if seen.len() == 120 && assignments.iter().all(|a| a.len() == 2) {
            let union: BTreeSet<i32> = assignments.iter().flatten().copied().collect();
            assert_eq!(union, (0..6).collect(), "assignments {assignments:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "read {} of 120 records; assignments {assignments:?}",
            seen.len()
        );
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, count)| **count > 1).collect();
    assert!(duplicates.is_empty(), "read twice: {duplicates:?}");
    assert_eq!(
        committed(&consumers[0], topic, 6),
        (0..6).map(|p| (p, 20)).collect()
    );
}

/// (b) Offsets committed before a restart are where a new member of the group resumes.
#[tokio::test(flavor = "multi_thread")]
async fn committed_offsets_survive_a_restart() {
    let mut server = start_server();
    let bootstrap = server.bootstrap();
    let topic = "payments";
    rdk::create_topic(&bootstrap, topic, 3).await;
    produce(&bootstrap, topic, 3, 10, "before").await;
    {
        let consumer = group_consumer(&bootstrap, "ledger", "earliest");
        consumer.subscribe(&[topic]).expect("subscribe");
        let mut read = 0;
        let deadline = Instant::now() + DEADLINE;
        while read < 30 {
            assert!(Instant::now() < deadline, "read only {read} of 30");
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message.expect("consume");
                read += 1;
                consumer
                    .commit_message(&message, CommitMode::Sync)
                    .expect("commit");
            }
        }
        assert_eq!(
            committed(&consumer, topic, 3),
            (0..3).map(|p| (p, 10)).collect()
        );
    }
    server.restart();
    let bootstrap = server.bootstrap();
    produce(&bootstrap, topic, 3, 5, "after").await;

    let consumer = group_consumer(&bootstrap, "ledger", "earliest");
    assert_eq!(
        committed(&consumer, topic, 3),
        (0..3).map(|p| (p, 10)).collect(),
        "committed offsets after the restart"
    );
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut records = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while records.len() < 15 {
        assert!(Instant::now() < deadline, "read only {records:?}");
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("consume");
            let key = String::from_utf8(message.key().unwrap_or_default().to_vec()).unwrap();
            records.push((message.partition(), message.offset(), key));
        }
    }
    records.sort();
    let expected: Vec<(i32, i64, String)> = (0..3)
        .flat_map(|p| (0..5).map(move |i| (p, 10 + i as i64, format!("after-{p}-{i}"))))
        .collect();
    assert_eq!(
        records, expected,
        "resumed exactly at the committed offsets"
    );
}

/// (c) A new group with auto.offset.reset=latest sees only what is produced after it joined;
/// with earliest it reads from offset 0.
#[tokio::test(flavor = "multi_thread")]
async fn new_groups_start_at_latest_or_earliest() {
    let server = start_server();
    let bootstrap = server.bootstrap();
    let topic = "events";
    rdk::create_topic(&bootstrap, topic, 1).await;
    produce(&bootstrap, topic, 1, 10, "old").await;

    let latest = group_consumer(&bootstrap, "tail", "latest");
    latest.subscribe(&[topic]).expect("subscribe");
    // Joined once the partition is assigned and its start resolved: with no committed offset the
    // consumer asks ListOffsets for the log end (10); the server counts that request only after
    // answering it, so whatever is produced afterwards lies beyond the consumer's start.
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(
            Instant::now() < deadline,
            "latest consumer never resolved its start"
        );
        if let Some(message) = latest.poll(Duration::from_millis(100)) {
            panic!("latest consumer read an old record: {message:?}");
        }
        if assigned(&latest).len() == 1 && list_offsets_answered(&server) > 0 {
            break;
        }
    }
    produce(&bootstrap, topic, 1, 3, "new").await;
    let mut offsets = Vec::new();
    while offsets.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "latest consumer read {offsets:?}"
        );
        if let Some(message) = latest.poll(Duration::from_millis(100)) {
            offsets.push(message.expect("consume").offset());
        }
    }
    assert_eq!(offsets, vec![10, 11, 12]);

    let earliest = group_consumer(&bootstrap, "replay", "earliest");
    earliest.subscribe(&[topic]).expect("subscribe");
    let mut offsets = Vec::new();
    while offsets.len() < 13 {
        assert!(
            Instant::now() < deadline,
            "earliest consumer read {offsets:?}"
        );
        if let Some(message) = earliest.poll(Duration::from_millis(100)) {
            offsets.push(message.expect("consume").offset());
        }
    }
    assert_eq!(offsets, (0..13).collect::<Vec<i64>>());
}

/// ListOffsets requests the server has answered, from its metrics.
fn list_offsets_answered(server: &TestServer) -> u64 {
    let (status, body) =
        common::http_get(server.metrics_addr(), "/metrics").expect("scrape metrics");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| line.strip_prefix(r#"skald_requests_total{api="ListOffsets"} "#))
        .map_or(0, |value| value.trim().parse().expect("counter value"))
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn group_id(value: &str) -> GroupId {
    GroupId(text(value))
}

fn join(member_id: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group_id("raw"))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(text(member_id))
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(text("range"))
            .with_metadata(bytes::Bytes::from_static(b"meta"))])
}

fn heartbeat(conn: &mut RawConn, member_id: &str, generation: i32) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(group_id("raw"))
        .with_generation_id(generation)
        .with_member_id(text(member_id));
    conn.request(&request, 4).error_code
}

/// (d) The group APIs' error codes on the wire.
#[test]
fn group_error_codes_on_the_wire() {
    let server = start_server();
    let mut conn = RawConn::connect(server.kafka_addr());
    common::wire::ensure_topic(server.kafka_addr(), "wire-topic");

    // Before FindCoordinator created __consumer_offsets, there is no coordinator.
    let early = conn.request(&join(""), 5);
    assert_eq!(early.error_code, 15, "COORDINATOR_NOT_AVAILABLE");

    let found = conn.request(
        &FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![text("raw"), text("other")]),
        4,
    );
    assert_eq!(found.coordinators.len(), 2);
    for coordinator in &found.coordinators {
        assert_eq!(coordinator.error_code, 0);
        assert_eq!(coordinator.node_id.0, 1);
        assert_eq!(coordinator.port, i32::from(server.kafka_addr().port()));
    }
    let txn = conn.request(
        &FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_key(text("txn")),
        2,
    );
    // A transactional id's coordinator: this broker, leading its `__transaction_state` partition.
    assert_eq!(
        (txn.error_code, txn.node_id.0, txn.port),
        (0, 1, i32::from(server.kafka_addr().port()))
    );

    // KIP-394: v4+ with an empty member id gets MEMBER_ID_REQUIRED and an id.
    let first = conn.request(&join(""), 5);
    assert_eq!(first.error_code, 79);
    let member_id = first.member_id.to_string();
    assert!(member_id.starts_with("skald-tests-"), "{member_id}");
    let joined = conn.request(&join(&member_id), 5);
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader.as_str(), member_id);
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));
    assert_eq!(joined.members.len(), 1);

    let synced = conn.request(
        &SyncGroupRequest::default()
            .with_group_id(group_id("raw"))
            .with_generation_id(1)
            .with_member_id(text(&member_id))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(text(&member_id))
                .with_assignment(bytes::Bytes::from_static(b"mine"))]),
        3,
    );
    assert_eq!(synced.error_code, 0);
    assert_eq!(&synced.assignment[..], b"mine");

    assert_eq!(heartbeat(&mut conn, &member_id, 1), 0);
    assert_eq!(
        heartbeat(&mut conn, &member_id, 2),
        22,
        "ILLEGAL_GENERATION"
    );
    assert_eq!(heartbeat(&mut conn, "nobody", 1), 25, "UNKNOWN_MEMBER_ID");

    // Commits are checked against the generation; fetch returns them, -1 where nothing is.
    let commit = |generation: i32, partition: i32| {
        OffsetCommitRequest::default()
            .with_group_id(group_id("raw"))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(text(&member_id))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(text("wire-topic")))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(partition)
                    .with_committed_offset(42)
                    .with_committed_metadata(Some(text("m")))])])
    };
    let code = |response: kafka_protocol::messages::OffsetCommitResponse| {
        response.topics[0].partitions[0].error_code
    };
    assert_eq!(code(conn.request(&commit(1, 0), 8)), 0);
    assert_eq!(code(conn.request(&commit(7, 0), 8)), 22);
    assert_eq!(
        code(conn.request(&commit(1, 99), 8)),
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    let fetched = conn.request(
        &OffsetFetchRequest::default()
            .with_group_id(group_id("raw"))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(text("wire-topic")))
                .with_partition_indexes(vec![0, 1])])),
        5,
    );
    assert_eq!(fetched.error_code, 0);
    let partitions = &fetched.topics[0].partitions;
    assert_eq!(
        (
            partitions[0].committed_offset,
            partitions[0].metadata.as_deref()
        ),
        (42, Some("m"))
    );
    assert_eq!(partitions[1].committed_offset, -1);

    // Describe and list show the Stable group; deleting it is refused while it has a member.
    let described = conn.request(
        &DescribeGroupsRequest::default().with_groups(vec![group_id("raw")]),
        5,
    );
    let group = &described.groups[0];
    assert_eq!(
        (
            group.group_state.as_str(),
            group.protocol_type.as_str(),
            group.protocol_data.as_str()
        ),
        ("Stable", "consumer", "range")
    );
    assert_eq!(group.members[0].client_id.as_str(), "skald-tests");
    assert_eq!(group.members[0].client_host.as_str(), "/127.0.0.1");
    assert_eq!(&group.members[0].member_assignment[..], b"mine");
    let listed = conn.request(
        &ListGroupsRequest::default().with_states_filter(vec![text("stable")]),
        4,
    );
    assert_eq!(
        listed
            .groups
            .iter()
            .map(|g| g.group_id.as_str())
            .collect::<Vec<_>>(),
        vec!["raw"]
    );
    let delete = DeleteGroupsRequest::default().with_groups_names(vec![group_id("raw")]);
    assert_eq!(
        conn.request(&delete, 2).results[0].error_code,
        68,
        "NON_EMPTY_GROUP"
    );

    let left = conn.request(
        &LeaveGroupRequest::default()
            .with_group_id(group_id("raw"))
            .with_members(vec![
                MemberIdentity::default().with_member_id(text(&member_id)),
                MemberIdentity::default().with_member_id(text("nobody")),
            ]),
        3,
    );
    assert_eq!(
        left.members
            .iter()
            .map(|m| m.error_code)
            .collect::<Vec<_>>(),
        vec![0, 25]
    );
    assert_eq!(heartbeat(&mut conn, &member_id, 1), 25);
    assert_eq!(conn.request(&delete, 2).results[0].error_code, 0);
    assert_eq!(
        conn.request(&delete, 2).results[0].error_code,
        69,
        "GROUP_ID_NOT_FOUND"
    );
}

/// A static member (`group.instance.id`) sends no LeaveGroup when it closes: its session must end
/// on time, so that DeleteGroups succeeds once `session.timeout.ms` has passed since the client
/// last spoke to the coordinator (librdkafka's close commits nothing here: auto-commit is off).
#[tokio::test(flavor = "multi_thread")]
async fn a_closed_static_members_session_expires_on_time() {
    const SESSION_MS: u64 = 6_000;
    let server = start_server();
    let bootstrap = server.bootstrap();
    rdk::create_topic(&bootstrap, "static-topic", 1).await;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &bootstrap)
        .set("broker.address.family", "v4")
        .set("group.id", "static")
        .set("group.instance.id", "static-1")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", SESSION_MS.to_string())
        .set("heartbeat.interval.ms", "300");
    let consumer: BaseConsumer = config.create().expect("create static consumer");
    consumer.subscribe(&["static-topic"]).expect("subscribe");
    let deadline = Instant::now() + DEADLINE;
    while assigned(&consumer).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the static member never got its assignment"
        );
        let _ = consumer.poll(Duration::from_millis(50));
    }
    let mut conn = RawConn::connect(server.kafka_addr());
    let delete = DeleteGroupsRequest::default().with_groups_names(vec![group_id("static")]);
    assert_eq!(conn.request(&delete, 2).results[0].error_code, 68);

    // The client's last word to the coordinator is before `drop` returns.
    drop(consumer);
    let closed = Instant::now();
    let deleted = common::poll_until(
        "DeleteGroups succeeds",
        Duration::from_millis(SESSION_MS) * 3,
        || {
            let code = conn.request(&delete, 2).results[0].error_code;
            assert!(code == 0 || code == 68, "DeleteGroups answered {code}");
            (code == 0).then(Instant::now)
        },
    );
    let after_close = deleted - closed;
    // Not before the session ran out: it started at the last heartbeat, at most a heartbeat
    // interval before the close. Not later than one coordinator tick (50 ms) and one poll of
    // DeleteGroups (at most 100 ms apart) after it, measured from the close.
    assert!(
        after_close >= Duration::from_millis(SESSION_MS - 300),
        "the static member's session ended early: deleted {after_close:?} after the close"
    );
    assert!(
        after_close <= Duration::from_millis(SESSION_MS + 400),
        "the closed static member outlived its {SESSION_MS} ms session: deleted {after_close:?} \
         after the close"
    );
}
