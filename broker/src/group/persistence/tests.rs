use super::*;
use crate::group::state::{JoinRequest, Reply};
use crate::group::tests::{committed, coordinator, pass, subscription, tombstones, Persisted};
use crate::group::GroupState;
use bytes::Bytes;
use skald_storage::clock::ManualClock;

fn member(id: &str, instance: Option<&str>, assignment: &'static [u8]) -> records::MemberMetadata {
    records::MemberMetadata {
        member_id: id.into(),
        group_instance_id: instance.map(str::to_string),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        rebalance_timeout_ms: 30_000,
        session_timeout_ms: 10_000,
        subscription: subscription(&["t"]),
        assignment: Bytes::from_static(assignment),
    }
}

fn metadata(generation: i32, members: Vec<records::MemberMetadata>) -> records::GroupMetadataValue {
    let stable = !members.is_empty();
    records::GroupMetadataValue {
        protocol_type: "consumer".into(),
        generation,
        protocol: stable.then(|| "range".to_string()),
        leader: members.first().map(|m| m.member_id.clone()),
        current_state_timestamp_ms: 300,
        members,
    }
}

/// `records` as the log would return them: encoded in one batch, decoded back.
fn logged(records: Vec<(Bytes, Option<Bytes>)>) -> Vec<Change> {
    let batch = records::build_batch(&records, 0).unwrap();
    records::decode_batches(batch.freeze()).unwrap()
}

fn group_record(group: &str, value: Option<records::GroupMetadataValue>) -> (Bytes, Option<Bytes>) {
    (
        records::group_metadata_key(group).unwrap(),
        value.map(|value| records::group_metadata_value(&value).unwrap()),
    )
}

fn offset_record(group: &str, offset: Option<i64>) -> (Bytes, Option<Bytes>) {
    (
        records::offset_key(group, "t", 0),
        offset.map(|offset| records::offset_value(&committed(offset, 0))),
    )
}

#[test]
fn replay_loads_the_last_record_of_each_group() {
    let clock = Arc::new(ManualClock::new(10_000));
    let coordinator = coordinator(&clock);
    let changes = logged(vec![
        group_record("stable", Some(metadata(1, vec![member("a", None, b"A")]))),
        group_record(
            "stable",
            Some(metadata(
                2,
                vec![member("a", None, b"A2"), member("b", Some("inst-b"), b"B2")],
            )),
        ),
        offset_record("stable", Some(5)),
        group_record("emptied", Some(metadata(1, vec![member("a", None, b"A")]))),
        offset_record("emptied", Some(6)),
        group_record("emptied", Some(metadata(2, Vec::new()))),
        group_record("deleted", Some(metadata(3, Vec::new()))),
        offset_record("deleted", Some(7)),
        offset_record("deleted", None),
        group_record("deleted", None),
        group_record("reborn", Some(metadata(4, Vec::new()))),
        group_record("reborn", None),
        offset_record("reborn", Some(8)),
        offset_record("plain", Some(9)),
    ]);
    coordinator.replay(0, changes);

    let mut ids: Vec<String> = coordinator
        .all_groups()
        .iter()
        .map(|g| lock(g).id.clone())
        .collect();
    ids.sort();
    assert_eq!(ids, ["emptied", "plain", "reborn", "stable"]);

    let stable = coordinator.group("stable").unwrap();
    let mut stable = lock(&stable);
    assert_eq!(
        (stable.state(), stable.generation_id(), stable.leader_id()),
        (GroupState::Stable, 2, Some("a"))
    );
    let assignments: Vec<_> = stable
        .describe_members()
        .into_iter()
        .map(|m| (m.member_id, m.group_instance_id, m.assignment))
        .collect();
    assert_eq!(
        assignments,
        vec![
            ("a".into(), None, Bytes::from_static(b"A2")),
            ("b".into(), Some("inst-b".into()), Bytes::from_static(b"B2")),
        ]
    );
    assert_eq!(stable.heartbeat("a", None, 2, 10_100), None);
    assert_eq!(stable.heartbeat("b", Some("inst-b"), 2, 10_100), None);
    assert_eq!(offsets_of_locked(&stable), vec![(("t".into(), 0), 5)]);
    drop(stable);

    let emptied = coordinator.group("emptied").unwrap();
    let emptied = lock(&emptied);
    assert_eq!(
        (
            emptied.state(),
            emptied.generation_id(),
            emptied.member_count()
        ),
        (GroupState::Empty, 2, 0)
    );
    assert_eq!(emptied.empty_since_ms(), Some(300));
    assert_eq!(offsets_of_locked(&emptied), vec![(("t".into(), 0), 6)]);
    drop(emptied);

    // Deleted, then used for offsets only: Empty, no generation, like "plain".
    for id in ["reborn", "plain"] {
        let group = coordinator.group(id).unwrap();
        let group = lock(&group);
        assert_eq!(
            (group.state(), group.generation_id()),
            (GroupState::Empty, 0)
        );
        assert_eq!(group.protocol_type(), None);
    }
}

fn offsets_of_locked(group: &Group) -> Vec<((String, i32), i64)> {
    group
        .offsets
        .iter()
        .map(|(key, offset)| (key.clone(), offset.offset))
        .collect()
}

#[test]
fn replay_replaces_the_groups_held_and_answers_their_waiters() {
    let clock = Arc::new(ManualClock::new(0));
    let coordinator = coordinator(&clock);
    let held = coordinator.group_or_create("g");
    let request = JoinRequest {
        client_id: "c".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), subscription(&["t"]))],
        fresh_member_id: "m1".into(),
        ..JoinRequest::default()
    };
    let Reply::Later(mut joined) = lock(&held).join(request, 0) else {
        panic!("the first join waits");
    };
    assert_eq!(joined.try_recv().unwrap().error, None);
    let Reply::Later(mut waiting) = lock(&held).sync("m1", None, 1, None, None, Vec::new(), 0)
    else {
        panic!("the leader's sync waits for its record");
    };
    coordinator.replay(
        0,
        logged(vec![group_record(
            "g",
            Some(metadata(5, vec![member("x", None, b"X")])),
        )]),
    );
    assert_eq!(
        waiting.try_recv().unwrap().error,
        Some(ResponseError::NotCoordinator)
    );
    assert_eq!(lock(&held).state(), GroupState::Dead);
    let loaded = coordinator.group("g").unwrap();
    assert!(!Arc::ptr_eq(&loaded, &held));
    assert_eq!(lock(&loaded).generation_id(), 5);
}

#[test]
fn a_loaded_empty_group_without_offsets_is_removed_with_a_tombstone() {
    let clock = Arc::new(ManualClock::new(0));
    let coordinator = coordinator(&clock);
    coordinator.replay(
        0,
        logged(vec![
            group_record("gone", Some(metadata(3, Vec::new()))),
            group_record("kept", Some(metadata(3, Vec::new()))),
            offset_record("kept", Some(1)),
        ]),
    );
    let mut persisted = Persisted::new();
    let outcome = pass(&coordinator, &mut persisted);
    assert_eq!(outcome.removed_groups, vec!["gone".to_string()]);
    assert_eq!(persisted, vec![("gone".into(), tombstones(&[], true))]);
    assert!(coordinator.group("kept").is_some());
}

#[test]
fn store_errors_follow_kafkas_mapping() {
    for (append, answered) in [
        (
            ResponseError::NotEnoughReplicas,
            ResponseError::CoordinatorNotAvailable,
        ),
        (
            ResponseError::NotEnoughReplicasAfterAppend,
            ResponseError::CoordinatorNotAvailable,
        ),
        (
            ResponseError::NotLeaderOrFollower,
            ResponseError::NotCoordinator,
        ),
        (
            ResponseError::KafkaStorageError,
            ResponseError::NotCoordinator,
        ),
        (
            ResponseError::RequestTimedOut,
            ResponseError::RebalanceInProgress,
        ),
        (
            ResponseError::MessageTooLarge,
            ResponseError::UnknownServerError,
        ),
        (ResponseError::NotCoordinator, ResponseError::NotCoordinator),
    ] {
        assert_eq!(store_error(append), answered, "{append:?}");
    }
}
