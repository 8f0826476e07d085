use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use crate::group::records::{GroupMetadataValue, MemberMetadata};
use crate::group::state::tests::{
    config, join_new, join_request, later, now, stable_pair, stable_pair_with_record, store_all,
    REBALANCE_MS, SESSION_MS,
};
use crate::group::state::{Group, GroupConfig, GroupState};

#[test]
fn the_leaders_assignment_is_stored_with_the_whole_generation() {
    let (_, value) = stable_pair_with_record();
    let member = |id: &str, assignment: &'static [u8]| MemberMetadata {
        member_id: id.into(),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        rebalance_timeout_ms: REBALANCE_MS,
        session_timeout_ms: SESSION_MS,
        subscription: Bytes::from("range-meta"),
        assignment: Bytes::from_static(assignment),
    };
    assert_eq!(
        value,
        GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation: 1,
            protocol: Some("range".into()),
            leader: Some("a".into()),
            // When the group entered CompletingRebalance (the initial delay ended).
            current_state_timestamp_ms: 200,
            members: vec![member("a", b"A"), member("b", b"B")],
        }
    );
}

#[test]
fn members_the_leader_left_out_are_stored_with_an_empty_assignment() {
    let mut group = Group::new("g", config());
    let mut a = join_new(&mut group, "a", &["range"], 0);
    let mut b = join_new(&mut group, "b", &["range"], 0);
    group.tick(100);
    assert!(a.try_recv().is_ok() && b.try_recv().is_ok());
    let only_a = vec![("a".to_string(), Bytes::from_static(b"A"))];
    let _a_sync = later(group.sync("a", None, 1, None, None, only_a, 110));
    // A second SyncGroup from the leader while the record is in flight stores nothing more.
    let _again = later(group.sync("a", None, 1, None, None, Vec::new(), 111));
    let stores = group.take_due_stores();
    assert_eq!(stores.len(), 1);
    let assignments: Vec<_> = stores[0]
        .value
        .members
        .iter()
        .map(|m| (m.member_id.as_str(), m.assignment.clone()))
        .collect();
    assert_eq!(
        assignments,
        vec![("a", Bytes::from_static(b"A")), ("b", Bytes::new())]
    );
}

#[test]
fn a_failed_assignment_store_answers_the_error_and_rebalances() {
    let mut group = Group::new("g", config());
    let mut a = join_new(&mut group, "a", &["range"], 0);
    let mut b = join_new(&mut group, "b", &["range"], 0);
    group.tick(100);
    assert!(a.try_recv().is_ok() && b.try_recv().is_ok());
    let mut b_sync = later(group.sync("b", None, 1, None, None, Vec::new(), 110));
    let assignments = vec![("a".to_string(), Bytes::from_static(b"A"))];
    let mut a_sync = later(group.sync("a", None, 1, None, None, assignments, 120));
    let stores = group.take_due_stores();
    group.store_completed(
        stores[0].seq,
        Err(ResponseError::CoordinatorNotAvailable),
        130,
    );
    for sync in [a_sync.try_recv().unwrap(), b_sync.try_recv().unwrap()] {
        assert_eq!(sync.error, Some(ResponseError::CoordinatorNotAvailable));
        assert_eq!(sync.assignment, Bytes::new());
    }
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert_eq!(
        group.heartbeat("a", None, 1, 140),
        Some(ResponseError::RebalanceInProgress)
    );
    assert!(group
        .describe_members()
        .iter()
        .all(|m| m.assignment.is_empty()));
    // A completion arriving again (or late) changes nothing.
    group.store_completed(stores[0].seq, Ok(()), 150);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
}

#[test]
fn a_store_the_group_moved_past_changes_nothing() {
    let mut group = Group::new("g", config());
    let mut a = join_new(&mut group, "a", &["range"], 0);
    group.tick(100);
    assert!(a.try_recv().is_ok());
    let assignments = vec![("a".to_string(), Bytes::from_static(b"A"))];
    let mut a_sync = later(group.sync("a", None, 1, None, None, assignments, 110));
    let stores = group.take_due_stores();
    // Someone joins while the record is in flight: the group rebalances, the sync is told so.
    let _b = join_new(&mut group, "b", &["range"], 120);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert_eq!(
        a_sync.try_recv().unwrap().error,
        Some(ResponseError::RebalanceInProgress)
    );
    group.store_completed(stores[0].seq, Ok(()), 130);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert!(group
        .describe_members()
        .iter()
        .all(|m| m.assignment.is_empty()));
}

#[test]
fn emptying_stores_the_generation_without_members() {
    let mut group = stable_pair();
    assert_eq!(group.leave("a", None, 300), None);
    assert!(!group.has_due_stores(), "a rebalance is not stored");
    assert_eq!(group.leave("b", None, 310), None);
    assert_eq!(group.state(), GroupState::Empty);
    let stores = group.take_due_stores();
    assert_eq!(stores.len(), 1);
    assert!(
        !stores[0].awaited,
        "nobody waits for an empty group's record"
    );
    assert_eq!(
        stores[0].value,
        GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation: 2,
            protocol: None,
            leader: None,
            current_state_timestamp_ms: 310,
            members: Vec::new(),
        }
    );
}

#[test]
fn a_loaded_group_is_stable_with_its_members_and_fresh_sessions() {
    let (_, value) = stable_pair_with_record();
    let mut group = Group::load("g", config(), value, 1_000);
    assert_eq!(group.state(), GroupState::Stable);
    assert_eq!(group.generation_id(), 1);
    assert_eq!(
        (
            group.protocol_type(),
            group.protocol_name(),
            group.leader_id()
        ),
        (Some("consumer"), Some("range"), Some("a"))
    );
    let described: Vec<_> = group
        .describe_members()
        .into_iter()
        .map(|m| (m.member_id, m.metadata, m.assignment))
        .collect();
    assert_eq!(
        described,
        vec![
            (
                "a".into(),
                Bytes::from("range-meta"),
                Bytes::from_static(b"A")
            ),
            (
                "b".into(),
                Bytes::from("range-meta"),
                Bytes::from_static(b"B")
            ),
        ]
    );
    // Heartbeats of the stored generation are answered NONE; other generations are not.
    assert_eq!(group.heartbeat("a", None, 1, 1_100), None);
    assert_eq!(
        group.heartbeat("b", None, 2, 1_100),
        Some(ResponseError::IllegalGeneration)
    );
    // A SyncGroup returns the member's assignment at once; commits are accepted.
    let synced = now(group.sync(
        "a",
        None,
        1,
        Some("consumer"),
        Some("range"),
        Vec::new(),
        1_200,
    ));
    assert_eq!(
        (synced.error, synced.assignment),
        (None, Bytes::from_static(b"A"))
    );
    assert_eq!(group.validate_commit("a", None, 1, 1_200), Ok(()));
    // Sessions started at load time: b, silent since, expires a session after the load.
    group.tick(1_000 + i64::from(SESSION_MS) - 1);
    assert_eq!(group.member_count(), 2);
    group.tick(1_000 + i64::from(SESSION_MS));
    assert!(group.has_member("a") && !group.has_member("b"));
    assert_eq!(group.state(), GroupState::PreparingRebalance);
}

#[test]
fn joins_to_a_loaded_group_behave_as_for_a_stable_one() {
    let (_, value) = stable_pair_with_record();
    let mut group = Group::load("g", config(), value, 1_000);
    // A follower rejoining with the stored protocol (Kafka keeps only that one) changes
    // nothing: the current generation comes back at once.
    let follower = now(group.join(join_request("b", "x", &["range"]), 1_100));
    assert_eq!(
        (
            follower.error,
            follower.generation_id,
            follower.leader_id.as_str()
        ),
        (None, 1, "a")
    );
    assert_eq!(group.state(), GroupState::Stable);
    // The leader rejoining starts a rebalance, as in Kafka.
    let _leader = later(group.join(join_request("a", "x", &["range"]), 1_200));
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    let mut b = later(group.join(join_request("b", "x", &["range"]), 1_300));
    let b = b.try_recv().unwrap();
    assert_eq!((b.error, b.generation_id), (None, 2));
}

#[test]
fn a_loaded_static_member_takes_over_its_instance_and_keeps_its_assignment() {
    let mut group = Group::new("g", config());
    let mut request = join_request("", "s1", &["range"]);
    request.group_instance_id = Some("instance-1".into());
    let mut first = later(group.join(request.clone(), 0));
    group.tick(100);
    assert_eq!(first.try_recv().unwrap().member_id, "s1");
    let assignment = vec![("s1".to_string(), Bytes::from_static(b"S"))];
    let _synced = later(group.sync("s1", Some("instance-1"), 1, None, None, assignment, 110));
    let stored = store_all(&mut group, 110).remove(0).value;

    let mut loaded = Group::load("g", config(), stored, 5_000);
    assert_eq!(
        loaded.heartbeat("s1", Some("instance-1"), 1, 5_100),
        None,
        "static members are mapped by instance id"
    );
    // The consumer restarts: same instance, no member id.
    request.fresh_member_id = "s2".into();
    request.protocols = vec![("range".into(), Bytes::from("range-meta"))];
    let mut rejoined = later(loaded.join(request.clone(), 5_200));
    let stores = store_all(&mut loaded, 5_210);
    assert_eq!(stores[0].value.members[0].member_id, "s2");
    let rejoined = rejoined.try_recv().unwrap();
    assert_eq!(
        (
            rejoined.error,
            rejoined.generation_id,
            rejoined.member_id.as_str()
        ),
        (None, 1, "s2")
    );
    assert_eq!(loaded.state(), GroupState::Stable);
    let synced = now(loaded.sync("s2", Some("instance-1"), 1, None, None, Vec::new(), 5_300));
    assert_eq!(synced.assignment, Bytes::from_static(b"S"));
    assert_eq!(
        loaded.heartbeat("s1", Some("instance-1"), 1, 5_300),
        Some(ResponseError::FencedInstanceId)
    );

    // A takeover whose record fails is undone: the old member id is the instance's again.
    request.fresh_member_id = "s3".into();
    let mut failed = later(loaded.join(request, 5_400));
    let stores = loaded.take_due_stores();
    loaded.store_completed(stores[0].seq, Err(ResponseError::NotCoordinator), 5_410);
    let failed = failed.try_recv().unwrap();
    assert_eq!(
        (
            failed.error,
            failed.member_id.as_str(),
            failed.generation_id
        ),
        (Some(ResponseError::NotCoordinator), "", 1)
    );
    assert_eq!(loaded.heartbeat("s2", Some("instance-1"), 1, 5_500), None);
    assert_eq!(
        loaded.heartbeat("s3", Some("instance-1"), 1, 5_500),
        Some(ResponseError::FencedInstanceId)
    );
}

#[test]
fn a_loaded_empty_group_keeps_its_generation() {
    let empty = GroupMetadataValue {
        protocol_type: "consumer".into(),
        generation: 2,
        protocol: None,
        leader: None,
        current_state_timestamp_ms: 310,
        members: Vec::new(),
    };
    let mut group = Group::load("g", config(), empty, 1_000);
    assert_eq!(group.state(), GroupState::Empty);
    assert_eq!(group.generation_id(), 2);
    assert_eq!(group.protocol_type(), Some("consumer"));
    assert_eq!(
        group.empty_since_ms(),
        Some(310),
        "offsets expire from when it emptied"
    );
    assert_eq!(
        group.heartbeat("a", None, 2, 1_000),
        Some(ResponseError::UnknownMemberId)
    );
    let mut a = join_new(&mut group, "a", &["range"], 1_000);
    group.tick(1_100);
    let a = a.try_recv().unwrap();
    assert_eq!(
        (a.error, a.generation_id, a.leader_id.as_str()),
        (None, 3, "a")
    );
}

#[test]
fn a_group_loaded_over_its_max_size_rebalances() {
    let mut group = Group::new(
        "g",
        GroupConfig {
            max_size: 5,
            ..config()
        },
    );
    let mut waiting: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|id| join_new(&mut group, id, &["range"], 0))
        .collect();
    group.tick(100);
    assert!(waiting.iter_mut().all(|w| w.try_recv().is_ok()));
    let _sync = later(group.sync("a", None, 1, None, None, Vec::new(), 110));
    let value = store_all(&mut group, 110).remove(0).value;
    // config() allows 3.
    let mut loaded = Group::load("g", config(), value, 1_000);
    assert_eq!(loaded.state(), GroupState::PreparingRebalance);
    assert_eq!(
        loaded.heartbeat("b", None, 1, 1_100),
        Some(ResponseError::RebalanceInProgress)
    );
}

#[test]
fn unloading_tells_waiting_members_not_coordinator() {
    let mut group = Group::new("g", config());
    let mut a = join_new(&mut group, "a", &["range"], 0);
    let mut b = join_new(&mut group, "b", &["range"], 0);
    group.tick(100);
    assert!(a.try_recv().is_ok() && b.try_recv().is_ok());
    let mut b_sync = later(group.sync("b", None, 1, None, None, Vec::new(), 110));
    group.unload();
    assert_eq!(group.state(), GroupState::Dead);
    assert_eq!(
        b_sync.try_recv().unwrap().error,
        Some(ResponseError::NotCoordinator)
    );
    assert_eq!(
        group.heartbeat("a", None, 1, 120),
        Some(ResponseError::CoordinatorNotAvailable)
    );
}
