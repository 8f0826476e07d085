//! Group metadata persistence against the real binary, over the raw wire protocol: a group's
//! membership is a record of `__consumer_offsets` (Kafka's `GroupMetadataValue`), so a restarted
//! coordinator loads it as Kafka's does.
//!
//! 1. Two members (one static) join and sync; the server is killed with SIGKILL right after (the
//!    SyncGroup answer means the record was appended and replicated). After the restart each
//!    member's heartbeat of that generation is answered NONE, DescribeGroups shows the group
//!    Stable with both members and their assignments, a commit of that generation is accepted,
//!    and the static member restarting takes its instance over with the same assignment — which
//!    a second restart keeps too.
//! 2. Both members leave: after a restart the group is Empty with no members and its generation
//!    kept (the next member joins the generation after it). Deleted, it stays gone after a
//!    restart (the group's tombstone).

mod common;

use std::time::Duration;

use bytes::Bytes;
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
    DeleteGroupsRequest, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest,
    GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
    SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const TOPIC: &str = "persisted-topic";
const SESSION_MS: i32 = 30_000;
const TIMEOUT: Duration = Duration::from_secs(30);

// Error codes.
const NONE: i16 = 0;
const UNKNOWN_MEMBER_ID: i16 = 25;
const MEMBER_ID_REQUIRED: i16 = 79;
const FENCED_INSTANCE_ID: i16 = 82;

fn start_server() -> TestServer {
    TestServer::start_with(&[
        ("group.initial.rebalance.delay.ms", "300"),
        ("offsets.topic.num.partitions", "4"),
    ])
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn group_id(value: &str) -> GroupId {
    GroupId(text(value))
}

/// A `ConsumerProtocolSubscription` v0 for [`TOPIC`], no user data.
fn subscription() -> Bytes {
    let mut out = vec![0u8, 0, 0, 0, 0, 1];
    out.extend_from_slice(&(TOPIC.len() as i16).to_be_bytes());
    out.extend_from_slice(TOPIC.as_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(out)
}

/// A `ConsumerProtocolAssignment` v0 of `partition` of [`TOPIC`], no user data.
fn assignment(partition: i32) -> Bytes {
    let mut out = vec![0u8, 0, 0, 0, 0, 1];
    out.extend_from_slice(&(TOPIC.len() as i16).to_be_bytes());
    out.extend_from_slice(TOPIC.as_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&partition.to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(out)
}

/// One member as the test drives it.
#[derive(Debug, Clone)]
struct Member {
    id: String,
    instance: Option<String>,
}

fn join_request(group: &str, member: &Member) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group_id(group))
        .with_session_timeout_ms(SESSION_MS)
        .with_rebalance_timeout_ms(SESSION_MS)
        .with_member_id(text(&member.id))
        .with_group_instance_id(member.instance.as_deref().map(text))
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(text("range"))
            .with_metadata(subscription())])
}

/// JoinGroup v5, taking the KIP-394 second step if asked; waits for the rebalance.
fn join(addr: std::net::SocketAddr, group: &str, member: &mut Member) -> JoinGroupResponse {
    let mut conn = RawConn::connect(addr);
    let mut joined = conn.request(&join_request(group, member), 5);
    if joined.error_code == MEMBER_ID_REQUIRED {
        member.id = joined.member_id.to_string();
        joined = conn.request(&join_request(group, member), 5);
    }
    assert_eq!(
        joined.error_code, NONE,
        "JoinGroup of {member:?}: {joined:?}"
    );
    member.id = joined.member_id.to_string();
    joined
}

/// Both members join one generation (rejoining together should the first rebalance complete
/// before the second arrives); returns it and the leader's member id.
fn join_both(addr: std::net::SocketAddr, group: &str, members: &mut [Member; 2]) -> (i32, String) {
    loop {
        let [a, b] = members;
        let (ja, jb) = std::thread::scope(|scope| {
            let ja = scope.spawn(|| join(addr, group, a));
            let jb = scope.spawn(|| join(addr, group, b));
            (ja.join().expect("join a"), jb.join().expect("join b"))
        });
        if ja.generation_id == jb.generation_id {
            assert_eq!(ja.leader, jb.leader);
            return (ja.generation_id, ja.leader.to_string());
        }
    }
}

fn sync_request(group: &str, member: &Member, generation: i32) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id(generation)
        .with_member_id(text(&member.id))
        .with_group_instance_id(member.instance.as_deref().map(text))
        .with_protocol_type(Some(text("consumer")))
        .with_protocol_name(Some(text("range")))
}

fn sync(addr: std::net::SocketAddr, request: &SyncGroupRequest) -> SyncGroupResponse {
    RawConn::connect(addr).request(request, 5)
}

/// The leader hands in partition i to member i; both SyncGroups (the follower's waits for the
/// leader's) are answered with their own share.
fn sync_both(
    addr: std::net::SocketAddr,
    group: &str,
    members: &[Member; 2],
    generation: i32,
    leader: &str,
) {
    let assignments = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            SyncGroupRequestAssignment::default()
                .with_member_id(text(&m.id))
                .with_assignment(assignment(i as i32))
        })
        .collect::<Vec<_>>();
    let requests: Vec<SyncGroupRequest> = members
        .iter()
        .map(|m| {
            let request = sync_request(group, m, generation);
            if m.id == leader {
                request.with_assignments(assignments.clone())
            } else {
                request
            }
        })
        .collect();
    let answers = std::thread::scope(|scope| {
        let handles: Vec<_> = requests
            .iter()
            .map(|request| scope.spawn(move || sync(addr, request)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sync"))
            .collect::<Vec<_>>()
    });
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.error_code, NONE, "SyncGroup {i}: {answer:?}");
        assert_eq!(answer.assignment, assignment(i as i32));
    }
}

fn heartbeat(conn: &mut RawConn, group: &str, member: &Member, generation: i32) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id(generation)
        .with_member_id(text(&member.id))
        .with_group_instance_id(member.instance.as_deref().map(text));
    conn.request(&request, 4).error_code
}

/// The first heartbeat answer that is not a coordinator error (the restarted server may still
/// be taking up its partitions).
fn heartbeat_after_restart(
    server: &TestServer,
    group: &str,
    member: &Member,
    generation: i32,
) -> i16 {
    common::poll_until("the restarted coordinator", TIMEOUT, || {
        let mut conn = RawConn::try_connect(server.kafka_addr())?;
        let code = heartbeat(&mut conn, group, member, generation);
        // COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR
        (!matches!(code, 14..=16)).then_some(code)
    })
}

/// Creates `__consumer_offsets` (FindCoordinator) and waits until this node coordinates `group`.
fn find_coordinator(server: &TestServer, group: &str) {
    common::poll_until("a coordinator", TIMEOUT, || {
        let mut conn = RawConn::try_connect(server.kafka_addr())?;
        let found = conn.request(
            &FindCoordinatorRequest::default()
                .with_key_type(0)
                .with_key(text(group)),
            3,
        );
        (found.error_code == NONE && found.node_id.0 == 1).then_some(())
    });
}

fn commit(conn: &mut RawConn, group: &str, member: &Member, generation: i32, offset: i64) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(text(&member.id))
        .with_group_instance_id(member.instance.as_deref().map(text))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(text(TOPIC)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])]);
    conn.request(&request, 8).topics[0].partitions[0].error_code
}

fn committed(conn: &mut RawConn, group: &str) -> i64 {
    let fetched = conn.request(
        &OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(text(TOPIC)))
                .with_partition_indexes(vec![0])])),
        5,
    );
    assert_eq!(fetched.error_code, NONE);
    fetched.topics[0].partitions[0].committed_offset
}

fn describe(conn: &mut RawConn, group: &str) -> DescribeGroupsResponse {
    conn.request(
        &DescribeGroupsRequest::default().with_groups(vec![group_id(group)]),
        5,
    )
}

/// (member id, instance id, metadata, assignment) of each member DescribeGroups reports,
/// sorted by member id.
fn described_members(
    response: &DescribeGroupsResponse,
) -> Vec<(String, Option<String>, Bytes, Bytes)> {
    let mut members: Vec<_> = response.groups[0]
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.group_instance_id.as_ref().map(|i| i.to_string()),
                m.member_metadata.clone(),
                m.member_assignment.clone(),
            )
        })
        .collect();
    members.sort();
    members
}

fn expected_members(members: &[Member; 2]) -> Vec<(String, Option<String>, Bytes, Bytes)> {
    let mut expected: Vec<_> = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                m.id.clone(),
                m.instance.clone(),
                subscription(),
                assignment(i as i32),
            )
        })
        .collect();
    expected.sort();
    expected
}

fn setup(server: &TestServer, group: &str) {
    let mut conn = RawConn::connect(server.kafka_addr());
    common::wire::create_topics(&mut conn, &[(TOPIC, 2)]);
    find_coordinator(server, group);
}

#[test]
fn a_stable_group_survives_a_coordinator_restart() {
    const GROUP: &str = "stable-across-restarts";
    let mut server = start_server();
    setup(&server, GROUP);
    let addr = server.kafka_addr();
    let mut members = [
        Member {
            id: String::new(),
            instance: None,
        },
        Member {
            id: String::new(),
            instance: Some("instance-b".into()),
        },
    ];
    let (generation, leader) = join_both(addr, GROUP, &mut members);
    sync_both(addr, GROUP, &members, generation, &leader);
    let mut conn = RawConn::connect(addr);
    assert_eq!(commit(&mut conn, GROUP, &members[0], generation, 11), NONE);

    // Answered SyncGroup = the record is in the log: SIGKILL loses nothing.
    server.kill9();
    server.restart();

    for member in &members {
        assert_eq!(
            heartbeat_after_restart(&server, GROUP, member, generation),
            NONE,
            "heartbeat of {member:?}, generation {generation}"
        );
    }
    let mut conn = RawConn::connect(server.kafka_addr());
    assert_eq!(
        heartbeat(&mut conn, GROUP, &members[0], generation + 1),
        22,
        "ILLEGAL_GENERATION"
    );
    let described = describe(&mut conn, GROUP);
    let group = &described.groups[0];
    assert_eq!(group.error_code, NONE);
    assert_eq!(
        (
            group.group_state.as_str(),
            group.protocol_type.as_str(),
            group.protocol_data.as_str()
        ),
        ("Stable", "consumer", "range")
    );
    assert_eq!(described_members(&described), expected_members(&members));
    assert!(group
        .members
        .iter()
        .all(|m| m.client_id.as_str() == "skald-tests" && m.client_host.as_str() == "/127.0.0.1"));

    // The loaded generation takes commits, and a follower's SyncGroup gets its assignment.
    assert_eq!(commit(&mut conn, GROUP, &members[1], generation, 12), NONE);
    assert_eq!(committed(&mut conn, GROUP), 12);
    let follower = members
        .iter()
        .position(|m| m.id != leader)
        .expect("a follower");
    let resynced = conn.request(&sync_request(GROUP, &members[follower], generation), 5);
    assert_eq!(
        (resynced.error_code, resynced.assignment.clone()),
        (NONE, assignment(follower as i32))
    );

    // The static member restarts (no member id): it takes its instance over, same generation,
    // same assignment, no rebalance; its old member id is fenced.
    let old_b = members[1].clone();
    members[1].id = String::new();
    let rejoined = conn.request(&join_request(GROUP, &members[1]), 5);
    assert_eq!(
        (rejoined.error_code, rejoined.generation_id),
        (NONE, generation)
    );
    members[1].id = rejoined.member_id.to_string();
    assert_ne!(members[1].id, old_b.id);
    let synced = conn.request(&sync_request(GROUP, &members[1], generation), 5);
    assert_eq!(
        (synced.error_code, synced.assignment),
        (NONE, assignment(1))
    );
    assert_eq!(
        heartbeat(&mut conn, GROUP, &old_b, generation),
        FENCED_INSTANCE_ID
    );
    assert_eq!(heartbeat(&mut conn, GROUP, &members[0], generation), NONE);

    // The takeover was stored: a second restart (SIGTERM) knows the new member id.
    server.restart();
    for member in &members {
        assert_eq!(
            heartbeat_after_restart(&server, GROUP, member, generation),
            NONE,
            "heartbeat of {member:?} after the second restart"
        );
    }
    let mut conn = RawConn::connect(server.kafka_addr());
    assert_eq!(
        heartbeat(&mut conn, GROUP, &old_b, generation),
        FENCED_INSTANCE_ID
    );
    let described = describe(&mut conn, GROUP);
    assert_eq!(described.groups[0].group_state.as_str(), "Stable");
    assert_eq!(described_members(&described), expected_members(&members));
}

#[test]
fn an_emptied_group_stays_empty_and_a_deleted_one_stays_gone() {
    const GROUP: &str = "emptied-across-restarts";
    let mut server = start_server();
    setup(&server, GROUP);
    let addr = server.kafka_addr();
    let mut members = [
        Member {
            id: String::new(),
            instance: None,
        },
        Member {
            id: String::new(),
            instance: None,
        },
    ];
    let (generation, leader) = join_both(addr, GROUP, &mut members);
    sync_both(addr, GROUP, &members, generation, &leader);
    let mut conn = RawConn::connect(addr);
    // Offsets keep the Empty group from expiring at the first check after the restart.
    assert_eq!(commit(&mut conn, GROUP, &members[0], generation, 21), NONE);
    let left = conn.request(
        &LeaveGroupRequest::default()
            .with_group_id(group_id(GROUP))
            .with_members(
                members
                    .iter()
                    .map(|m| MemberIdentity::default().with_member_id(text(&m.id)))
                    .collect(),
            ),
        3,
    );
    assert_eq!(
        left.members
            .iter()
            .map(|m| m.error_code)
            .collect::<Vec<_>>(),
        vec![NONE, NONE]
    );

    server.restart();

    // Without the Empty group's record the last Stable one would bring both members back.
    assert_eq!(
        heartbeat_after_restart(&server, GROUP, &members[0], generation),
        UNKNOWN_MEMBER_ID
    );
    let mut conn = RawConn::connect(server.kafka_addr());
    let described = describe(&mut conn, GROUP);
    let group = &described.groups[0];
    assert_eq!(
        (
            group.error_code,
            group.group_state.as_str(),
            group.protocol_type.as_str(),
            group.members.len()
        ),
        (NONE, "Empty", "consumer", 0)
    );
    assert_eq!(committed(&mut conn, GROUP), 21);
    // The generation was kept: emptying made it generation + 1, the next rebalance is + 2.
    let mut newcomer = Member {
        id: String::new(),
        instance: None,
    };
    let joined = join(server.kafka_addr(), GROUP, &mut newcomer);
    assert_eq!(joined.generation_id, generation + 2);
    let left = conn.request(
        &LeaveGroupRequest::default()
            .with_group_id(group_id(GROUP))
            .with_members(vec![
                MemberIdentity::default().with_member_id(text(&newcomer.id))
            ]),
        3,
    );
    assert_eq!(left.members[0].error_code, NONE);

    // Deleted: tombstones for its offsets and its metadata, so a restart does not revive it.
    let deleted = conn.request(
        &DeleteGroupsRequest::default().with_groups_names(vec![group_id(GROUP)]),
        2,
    );
    assert_eq!(deleted.results[0].error_code, NONE);
    server.restart();
    find_coordinator(&server, GROUP);
    let mut conn = RawConn::connect(server.kafka_addr());
    let described = describe(&mut conn, GROUP);
    assert_eq!(
        (
            described.groups[0].error_code,
            described.groups[0].group_state.as_str()
        ),
        (NONE, "Dead")
    );
    let listed = conn.request(&ListGroupsRequest::default(), 4);
    assert!(
        listed.groups.iter().all(|g| g.group_id.as_str() != GROUP),
        "{listed:?}"
    );
    assert_eq!(committed(&mut conn, GROUP), -1);
}
