//! Committed-offset deletion against the real binary (tombstones in `__consumer_offsets` survive a
//! restart), plus two `#[ignore]`d measurements for docs/PERFORMANCE.md:
//!
//! ```text
//! cargo test --release --test group_expiry -- --ignored --nocapture --test-threads=1
//! ```
//!
//! Time-based expiry itself (`offsets.retention.minutes`, at least one minute) is unit-tested with
//! an injected clock in `broker/src/group/mod.rs`; its tombstones are the same records the
//! deletions here write, and replay at start-up treats them alike.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::wire::RawConn;
use common::TestServer;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DeleteGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    LeaveGroupRequest, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetFetchRequest, ResponseHeader, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

const TOPIC: &str = "expiry-topic";

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn group_id(value: &str) -> GroupId {
    GroupId(text(value))
}

/// A simple (generation -1, no member) commit of `offset` for partition 0 of [`TOPIC`].
fn simple_commit(group: &str, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(text(""))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(text(TOPIC)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)
                .with_committed_metadata(Some(text("")))])])
}

fn commit_error(response: &OffsetCommitResponse) -> i16 {
    response.topics[0].partitions[0].error_code
}

/// The committed offset of partition 0 of [`TOPIC`] (-1: none), or the error code.
fn fetch_offset(conn: &mut RawConn, group: &str) -> Result<i64, i16> {
    let response = conn.request(
        &OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(text(TOPIC)))
                .with_partition_indexes(vec![0])])),
        5,
    );
    if response.error_code != 0 {
        return Err(response.error_code);
    }
    let partition = &response.topics[0].partitions[0];
    match partition.error_code {
        0 => Ok(partition.committed_offset),
        code => Err(code),
    }
}

fn start_server(overrides: &[(&str, &str)]) -> (TestServer, RawConn) {
    let mut all = vec![
        ("offsets.topic.num.partitions", "4"),
        ("group.initial.rebalance.delay.ms", "0"),
    ];
    all.extend_from_slice(overrides);
    let server = TestServer::start_with(&all);
    common::wire::ensure_topic(server.kafka_addr(), TOPIC);
    let mut conn = RawConn::connect(server.kafka_addr());
    // FindCoordinator creates __consumer_offsets.
    let found = conn.request(
        &FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![text("any")]),
        4,
    );
    assert_eq!(found.coordinators[0].error_code, 0);
    (server, conn)
}

#[test]
fn deleted_offsets_stay_deleted_after_a_restart() {
    let (mut server, mut conn) = start_server(&[]);
    for (group, offset) in [("kept", 42), ("deleted-group", 7), ("offset-deleted", 9)] {
        let response = common::poll_until("a simple commit", Duration::from_secs(15), || {
            let response = conn.request(&simple_commit(group, offset), 8);
            (commit_error(&response) == 0).then_some(response)
        });
        assert_eq!(commit_error(&response), 0);
        assert_eq!(fetch_offset(&mut conn, group), Ok(offset));
    }

    let deleted = conn.request(
        &DeleteGroupsRequest::default().with_groups_names(vec![group_id("deleted-group")]),
        2,
    );
    assert_eq!(deleted.results[0].error_code, 0);
    let offset_deleted = conn.request(
        &OffsetDeleteRequest::default()
            .with_group_id(group_id("offset-deleted"))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(text(TOPIC)))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0)
                ])]),
        0,
    );
    assert_eq!(offset_deleted.error_code, 0);
    assert_eq!(offset_deleted.topics[0].partitions[0].error_code, 0);
    assert_eq!(fetch_offset(&mut conn, "deleted-group"), Ok(-1));
    assert_eq!(fetch_offset(&mut conn, "offset-deleted"), Ok(-1));

    // Replay at start-up applies the tombstones: both stay gone, the other group is intact.
    drop(conn);
    server.restart();
    let mut conn = RawConn::connect(server.kafka_addr());
    let kept = common::poll_until(
        "the coordinator after restart",
        Duration::from_secs(15),
        || fetch_offset(&mut conn, "kept").ok(),
    );
    assert_eq!(kept, 42);
    assert_eq!(fetch_offset(&mut conn, "deleted-group"), Ok(-1));
    assert_eq!(fetch_offset(&mut conn, "offset-deleted"), Ok(-1));
    // A group deleted whole is unknown again (DeleteGroups says GROUP_ID_NOT_FOUND).
    let again = conn.request(
        &DeleteGroupsRequest::default().with_groups_names(vec![group_id("deleted-group")]),
        2,
    );
    assert_eq!(again.results[0].error_code, 69, "GROUP_ID_NOT_FOUND");
}

#[test]
fn the_retention_settings_are_checked_at_start_up() {
    let (_server, mut conn) = start_server(&[
        ("offsets.retention.minutes", "1"),
        ("offsets.retention.check.interval.ms", "100"),
    ]);
    // The server runs with the smallest retention; a fresh commit is not expired by the
    // frequent checks.
    assert_eq!(
        commit_error(&conn.request(&simple_commit("fresh", 3), 8)),
        0
    );
    thread::sleep(Duration::from_millis(500));
    assert_eq!(fetch_offset(&mut conn, "fresh"), Ok(3));
}

// -------------------------------------------------------------------------------------------------
// Measurements (not assertions): run in release mode, see the module comment.

/// Offset commits per second over one connection, `window` requests in flight.
#[test]
#[ignore = "benchmark: cargo test --release --test group_expiry -- --ignored --nocapture"]
fn bench_offset_commit_throughput() {
    let (_server, mut conn) = start_server(&[]);
    assert_eq!(
        commit_error(&conn.request(&simple_commit("bench", 0), 8)),
        0
    );
    for window in [1usize, 16, 64] {
        let total = 20_000usize;
        let started = Instant::now();
        let (mut sent, mut received) = (0usize, 0usize);
        while received < total {
            while sent < total && sent - received < window {
                let id = conn.next_correlation_id();
                let frame = RawConn::encode_request(&simple_commit("bench", sent as i64), 8, id);
                conn.write_frame(&frame).expect("send commit");
                sent += 1;
            }
            let mut response = Bytes::from(conn.read_frame());
            // OffsetCommit v8 is a flexible version: response header v1.
            ResponseHeader::decode(&mut response, 1).expect("response header");
            let body = OffsetCommitResponse::decode(&mut response, 8).expect("commit response");
            assert_eq!(commit_error(&body), 0);
            received += 1;
        }
        let elapsed = started.elapsed();
        println!(
            "offset commit: window {window:>2}: {total} commits in {:.3} s = {:.0} commits/s",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64()
        );
    }
    assert_eq!(fetch_offset(&mut conn, "bench"), Ok(19_999));
}

enum Command {
    /// Heartbeat (expecting REBALANCE_IN_PROGRESS if `expect_rebalance`), then join and sync.
    Rejoin {
        expect_rebalance: bool,
    },
    Leave,
}

/// One raw-protocol member on its own connection and thread; reports each generation it synced.
struct Member {
    commands: mpsc::Sender<Command>,
    handle: thread::JoinHandle<()>,
}

fn join_request(group: &str, member_id: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group_id(group))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(text(member_id))
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(text("range"))
            .with_metadata(Bytes::from_static(b"meta"))])
}

fn spawn_member(
    addr: std::net::SocketAddr,
    group: String,
    synced: mpsc::Sender<(usize, i32)>,
    index: usize,
) -> Member {
    let (commands, inbox) = mpsc::channel::<Command>();
    let handle = thread::spawn(move || {
        let mut conn = RawConn::connect(addr);
        conn.stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let first = conn.request(&join_request(&group, ""), 5);
        assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
        let member_id = first.member_id.to_string();
        let mut generation = -1;
        for command in inbox {
            match command {
                Command::Leave => {
                    let left = conn.request(
                        &LeaveGroupRequest::default()
                            .with_group_id(group_id(&group))
                            .with_members(vec![
                                MemberIdentity::default().with_member_id(text(&member_id))
                            ]),
                        3,
                    );
                    assert_eq!(left.error_code, 0);
                    return;
                }
                Command::Rejoin { expect_rebalance } => {
                    if expect_rebalance {
                        let beat = conn.request(
                            &HeartbeatRequest::default()
                                .with_group_id(group_id(&group))
                                .with_generation_id(generation)
                                .with_member_id(text(&member_id)),
                            4,
                        );
                        assert_eq!(beat.error_code, 27, "REBALANCE_IN_PROGRESS");
                    }
                    loop {
                        let joined = conn.request(&join_request(&group, &member_id), 5);
                        assert_eq!(joined.error_code, 0, "join");
                        generation = joined.generation_id;
                        let assignments = joined
                            .members
                            .iter()
                            .map(|member| {
                                SyncGroupRequestAssignment::default()
                                    .with_member_id(member.member_id.clone())
                                    .with_assignment(Bytes::from_static(b"assignment"))
                            })
                            .collect();
                        let synced_now = conn.request(
                            &SyncGroupRequest::default()
                                .with_group_id(group_id(&group))
                                .with_generation_id(generation)
                                .with_member_id(text(&member_id))
                                .with_assignments(assignments),
                            3,
                        );
                        match synced_now.error_code {
                            0 => break,
                            27 => continue, // another rebalance started: rejoin
                            code => panic!("sync error {code}"),
                        }
                    }
                    synced.send((index, generation)).unwrap();
                }
            }
        }
    });
    Member { commands, handle }
}

/// Waits for `count` sync reports; returns their generations.
fn collect(synced: &mpsc::Receiver<(usize, i32)>, count: usize) -> Vec<i32> {
    (0..count)
        .map(|_| {
            synced
                .recv_timeout(Duration::from_secs(60))
                .expect("member synced")
                .1
        })
        .collect()
}

/// Time from a member's LeaveGroup to every remaining member having re-joined and synced the new
/// generation, for groups of 10 and 100 raw-protocol members.
#[test]
#[ignore = "benchmark: cargo test --release --test group_expiry -- --ignored --nocapture"]
fn bench_rebalance_after_a_member_leaves() {
    // Members form the first generation within the initial delay; the rebalance after a leave
    // does not wait for it (the group is not Empty).
    let (server, _conn) = start_server(&[("group.initial.rebalance.delay.ms", "1000")]);
    for size in [10usize, 100] {
        let mut samples = Vec::new();
        for trial in 0..5 {
            let group = format!("rebalance-{size}-{trial}");
            let (synced_tx, synced) = mpsc::channel();
            let members: Vec<Member> = (0..size)
                .map(|i| spawn_member(server.kafka_addr(), group.clone(), synced_tx.clone(), i))
                .collect();
            loop {
                for member in &members {
                    member
                        .commands
                        .send(Command::Rejoin {
                            expect_rebalance: false,
                        })
                        .unwrap();
                }
                let generations = collect(&synced, size);
                if generations.iter().all(|g| *g == generations[0]) {
                    break;
                }
            }
            let mut members = members.into_iter();
            let leaving = members.next().unwrap();
            let staying: Vec<Member> = members.collect();
            let started = Instant::now();
            leaving.commands.send(Command::Leave).unwrap();
            leaving.handle.join().unwrap();
            for member in &staying {
                member
                    .commands
                    .send(Command::Rejoin {
                        expect_rebalance: true,
                    })
                    .unwrap();
            }
            let generations = collect(&synced, size - 1);
            let elapsed = started.elapsed();
            assert!(generations.iter().all(|g| *g == generations[0]));
            samples.push(elapsed);
            for member in staying {
                drop(member.commands);
                member.handle.join().unwrap();
            }
        }
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "rebalance after leave: {size:>3} members: min {:.2} ms, median {:.2} ms, max {:.2} ms ({} trials)",
            ms(samples[0]),
            ms(samples[samples.len() / 2]),
            ms(samples[samples.len() - 1]),
            samples.len()
        );
    }
}

/// JoinGroup in a group of 1,000 members (issue 16: "JoinGroup with 1,000 members under
/// 10 ms"): the 1,000 members, each on its own connection from this one thread, form a
/// generation; then one leaves, 998 of the rest send their JoinGroup (parked by the
/// coordinator), and the JoinGroup of the last one is timed from its send to its answer — the
/// request that completes the round, so its latency holds the protocol choice over every member
/// and the leader's answer listing all 999 members' metadata. Also reported: LeaveGroup to the
/// last of the 999 answers read.
#[test]
#[ignore]
fn bench_join_group_with_1000_members() {
    const MEMBERS: usize = 1_000;
    const TRIALS: usize = 5;
    let (server, _conn) = start_server(&[("group.initial.rebalance.delay.ms", "500")]);
    let mut completing = Vec::new();
    let mut rounds = Vec::new();
    for trial in 0..TRIALS {
        let group = format!("join-{MEMBERS}-{trial}");
        let mut conns: Vec<RawConn> = (0..MEMBERS)
            .map(|_| {
                let conn = RawConn::connect(server.kafka_addr());
                conn.stream
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                conn
            })
            .collect();
        let member_ids: Vec<String> = conns
            .iter_mut()
            .map(|conn| {
                let first = conn.request(&join_request(&group, ""), 5);
                assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
                first.member_id.to_string()
            })
            .collect();
        // Generation 1: every member's join parks until the initial delay has passed.
        let sent: Vec<i32> = conns
            .iter_mut()
            .zip(&member_ids)
            .map(|(conn, id)| conn.send(&join_request(&group, id), 5))
            .collect();
        let joined: Vec<_> = conns
            .iter_mut()
            .zip(sent)
            .map(|(conn, correlation_id)| conn.receive::<JoinGroupRequest>(5, correlation_id))
            .collect();
        let generation = joined[0].generation_id;
        assert!(joined
            .iter()
            .all(|j| j.error_code == 0 && j.generation_id == generation));
        let leader = joined[0].leader.to_string();
        let leader_at = member_ids.iter().position(|id| *id == leader).unwrap();
        assert_eq!(joined[leader_at].members.len(), MEMBERS);
        let sync = |id: &str, assignments: Vec<SyncGroupRequestAssignment>| {
            SyncGroupRequest::default()
                .with_group_id(group_id(&group))
                .with_generation_id(generation)
                .with_member_id(text(id))
                .with_assignments(assignments)
        };
        let mut waiting = Vec::new();
        for (at, (conn, id)) in conns.iter_mut().zip(&member_ids).enumerate() {
            if at != leader_at {
                waiting.push((at, conn.send(&sync(id, Vec::new()), 3)));
            }
        }
        let assignments = member_ids
            .iter()
            .map(|id| {
                SyncGroupRequestAssignment::default()
                    .with_member_id(text(id))
                    .with_assignment(Bytes::from_static(b"assignment"))
            })
            .collect();
        let synced = conns[leader_at].request(&sync(&leader, assignments), 3);
        assert_eq!(synced.error_code, 0);
        for (at, correlation_id) in waiting {
            let synced = conns[at].receive::<SyncGroupRequest>(3, correlation_id);
            assert_eq!(synced.error_code, 0);
            assert_eq!(synced.assignment, Bytes::from_static(b"assignment"));
        }

        // One member leaves; the other 999 rejoin, the last one timed.
        let leaving = MEMBERS - 1;
        let started = Instant::now();
        let left = conns[leaving].request(
            &LeaveGroupRequest::default()
                .with_group_id(group_id(&group))
                .with_members(vec![
                    MemberIdentity::default().with_member_id(text(&member_ids[leaving]))
                ]),
            3,
        );
        assert_eq!(left.error_code, 0);
        let last = leaving - 1;
        let parked: Vec<i32> = (0..last)
            .map(|at| conns[at].send(&join_request(&group, &member_ids[at]), 5))
            .collect();
        // Nothing tells the client when the coordinator has read the 998 parked joins: one it
        // has not read yet when the last arrives delays the last one's answer, so the figure
        // is an upper bound on the coordinator's work for the completing request.
        let sent_at = Instant::now();
        let last_join = conns[last].request(&join_request(&group, &member_ids[last]), 5);
        let completing_join = sent_at.elapsed();
        assert_eq!(last_join.error_code, 0);
        assert_eq!(last_join.generation_id, generation + 1);
        for (at, correlation_id) in parked.into_iter().enumerate() {
            let rejoined = conns[at].receive::<JoinGroupRequest>(5, correlation_id);
            assert_eq!(rejoined.error_code, 0);
            assert_eq!(rejoined.generation_id, generation + 1);
            if rejoined.leader == rejoined.member_id {
                assert_eq!(rejoined.members.len(), MEMBERS - 1);
            }
        }
        rounds.push(started.elapsed());
        completing.push(completing_join);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (what, samples) in [
        ("the completing JoinGroup", &mut completing),
        ("LeaveGroup to every JoinGroup answered", &mut rounds),
    ] {
        samples.sort();
        println!(
            "{MEMBERS} members, {what}: min {:.2} ms, median {:.2} ms, max {:.2} ms ({TRIALS} trials)",
            ms(samples[0]),
            ms(samples[samples.len() / 2]),
            ms(samples[samples.len() - 1]),
        );
    }
}
