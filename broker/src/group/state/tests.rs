use super::*;
use crate::group::records::GroupMetadataValue;

pub(super) const SESSION_MS: i32 = 10_000;
pub(super) const REBALANCE_MS: i32 = 30_000;

pub(super) fn config() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: 100,
        max_size: 3,
        ..GroupConfig::default()
    }
}

pub(super) fn join_request(member_id: &str, fresh: &str, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|name| (name.to_string(), Bytes::from(format!("{name}-meta"))))
            .collect(),
        require_known_member_id: true,
        fresh_member_id: fresh.to_string(),
    }
}

pub(super) fn now<T>(reply: Reply<T>) -> T {
    match reply {
        Reply::Now(result) => result,
        Reply::Later(_) => panic!("expected an immediate answer"),
    }
}

pub(super) fn later<T>(reply: Reply<T>) -> oneshot::Receiver<T> {
    match reply {
        Reply::Later(receiver) => receiver,
        Reply::Now(_) => panic!("expected to wait"),
    }
}

/// KIP-394 two-step join; returns the waiting receiver.
pub(super) fn join_new(
    group: &mut Group,
    fresh: &str,
    protocols: &[&str],
    at: i64,
) -> oneshot::Receiver<JoinResult> {
    let first = now(group.join(join_request("", fresh, protocols), at));
    assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
    assert_eq!(first.member_id, fresh);
    later(group.join(join_request(fresh, "unused", protocols), at))
}

/// Completes every due store as replicated at `at`; returns them.
pub(super) fn store_all(group: &mut Group, at: i64) -> Vec<GroupStore> {
    let stores = group.take_due_stores();
    for store in &stores {
        group.store_completed(store.seq, Ok(()), at);
    }
    stores
}

/// Two members joined, the initial delay over, both synced: a Stable generation 1.
pub(super) fn stable_pair() -> Group {
    stable_pair_with_record().0
}

/// [`stable_pair`] and the group metadata record its generation was stored with.
pub(super) fn stable_pair_with_record() -> (Group, GroupMetadataValue) {
    let mut group = Group::new("g", config());
    let mut a = join_new(&mut group, "a", &["range", "roundrobin"], 0);
    let mut b = join_new(&mut group, "b", &["roundrobin", "range"], 10);
    group.tick(50);
    assert!(a.try_recv().is_err(), "the initial delay holds the join");
    group.tick(200);
    let a = a.try_recv().unwrap();
    let b = b.try_recv().unwrap();
    assert_eq!((a.error, a.generation_id, b.generation_id), (None, 1, 1));
    assert_eq!(a.leader_id, "a");
    assert_eq!(a.members.len(), 2, "the leader sees every member");
    assert!(b.members.is_empty());
    let mut b_sync = later(group.sync("b", None, 1, None, None, Vec::new(), 210));
    assert!(b_sync.try_recv().is_err(), "followers wait for the leader");
    let assignments = vec![
        ("a".to_string(), Bytes::from_static(b"A")),
        ("b".to_string(), Bytes::from_static(b"B")),
    ];
    let mut a_sync = later(group.sync("a", None, 1, Some("consumer"), None, assignments, 220));
    assert!(
        a_sync.try_recv().is_err(),
        "the leader too waits for the record"
    );
    assert_eq!(group.state(), GroupState::CompletingRebalance);
    let mut stores = store_all(&mut group, 230);
    assert_eq!(stores.len(), 1);
    let store = stores.remove(0);
    assert!(store.awaited);
    assert_eq!(
        a_sync.try_recv().unwrap().assignment,
        Bytes::from_static(b"A")
    );
    assert_eq!(
        b_sync.try_recv().unwrap().assignment,
        Bytes::from_static(b"B")
    );
    assert_eq!(group.state(), GroupState::Stable);
    (group, store.value)
}

#[test]
fn first_rebalance_waits_for_the_initial_delay_then_leader_assigns() {
    let group = stable_pair();
    assert_eq!(group.generation_id(), 1);
    // Votes: a prefers range, b roundrobin; a tie goes to the earliest member's preference.
    assert_eq!(group.protocol_name(), Some("range"));
    assert_eq!(
        group.describe_members()[1].metadata,
        Bytes::from("range-meta")
    );
}

#[test]
fn protocol_selection_follows_the_members_votes() {
    let mut group = Group::new("g", config());
    let mut rx: Vec<_> = [
        ("a", ["range", "sticky"]),
        ("b", ["sticky", "range"]),
        ("c", ["sticky", "range"]),
    ]
    .iter()
    .map(|(id, protocols)| join_new(&mut group, id, protocols, 0))
    .collect();
    group.tick(1_000);
    assert_eq!(
        rx[0].try_recv().unwrap().protocol_name.as_deref(),
        Some("sticky")
    );
    assert_eq!(group.protocol_name(), Some("sticky"));
    // A fourth member is over group.max.size = 3.
    let full = now(group.join(join_request("", "d", &["sticky"]), 1_000));
    assert_eq!(full.error, Some(ResponseError::GroupMaxSizeReached));
    drop(rx.pop());
}

/// Members naming many protocols: the choice is the shared one every member votes for, and a
/// member naming more than the bound is refused (INCONSISTENT_GROUP_PROTOCOL) rather than making
/// every rebalance scan it.
#[test]
fn protocol_selection_scales_with_many_protocols_and_is_bounded() {
    let mut group = Group::new("g", config());
    let own = |member: &str| -> Vec<String> {
        (0..PROTOCOLS_PER_MEMBER_MAX - 1)
            .map(|i| format!("{member}-only-{i}"))
            .collect()
    };
    let a: Vec<String> = own("a").into_iter().chain(["shared".to_string()]).collect();
    let b: Vec<String> = ["shared".to_string()].into_iter().chain(own("b")).collect();
    fn names(list: &[String]) -> Vec<&str> {
        list.iter().map(String::as_str).collect()
    }
    let mut rx = vec![
        join_new(&mut group, "a", &names(&a), 0),
        join_new(&mut group, "b", &names(&b), 0),
    ];
    group.tick(1_000);
    assert_eq!(
        rx[0].try_recv().unwrap().protocol_name.as_deref(),
        Some("shared")
    );
    let too_many: Vec<String> = (0..=PROTOCOLS_PER_MEMBER_MAX)
        .map(|i| format!("p{i}"))
        .collect();
    let mut fresh = Group::new("h", config());
    let refused = now(fresh.join(join_request("", "c", &names(&too_many)), 0));
    assert_eq!(
        refused.error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
    drop(rx.pop());
}

/// The group's count of who names which protocol follows members changing theirs: once both
/// members of a Stable pair rejoin naming only roundrobin, a newcomer naming only range is
/// refused (nobody names range any more), and one naming roundrobin is taken.
#[test]
fn protocol_support_follows_members_that_change_their_protocols() {
    let mut group = stable_pair();
    let mut a = later(group.join(join_request("a", "unused", &["roundrobin"]), 300));
    let mut b = later(group.join(join_request("b", "unused", &["roundrobin"]), 310));
    let (a, b) = (a.try_recv().unwrap(), b.try_recv().unwrap());
    assert_eq!((a.error, b.error), (None, None));
    assert_eq!(a.generation_id, 2);
    assert_eq!(a.protocol_name.as_deref(), Some("roundrobin"));
    let refused = now(group.join(join_request("", "c", &["range"]), 320));
    assert_eq!(
        refused.error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
    let taken = now(group.join(join_request("", "d", &["roundrobin"]), 330));
    assert_eq!(taken.error, Some(ResponseError::MemberIdRequired));
}

#[test]
fn heartbeat_errors_and_rebalance_in_progress() {
    let mut group = stable_pair();
    assert_eq!(group.heartbeat("a", None, 1, 300), None);
    assert_eq!(
        group.heartbeat("a", None, 0, 300),
        Some(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        group.heartbeat("zz", None, 1, 300),
        Some(ResponseError::UnknownMemberId)
    );
    // A new member joins: the Stable group rebalances, members are told so.
    let first = now(group.join(join_request("", "c", &["range"]), 400));
    assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
    let mut c = later(group.join(join_request("c", "x", &["range"]), 400));
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert_eq!(
        group.heartbeat("a", None, 1, 410),
        Some(ResponseError::RebalanceInProgress)
    );
    let mut a = later(group.join(join_request("a", "x", &["range", "roundrobin"]), 420));
    let mut b = later(group.join(join_request("b", "x", &["roundrobin", "range"]), 430));
    // Everyone rejoined: no waiting for the rebalance timeout.
    let (a, b, c) = (
        a.try_recv().unwrap(),
        b.try_recv().unwrap(),
        c.try_recv().unwrap(),
    );
    assert_eq!(
        (a.generation_id, b.generation_id, c.generation_id),
        (2, 2, 2)
    );
    assert_eq!(group.state(), GroupState::CompletingRebalance);
    assert_eq!(group.heartbeat("c", None, 2, 440), None);
}

#[test]
fn members_that_do_not_rejoin_are_dropped_at_the_rebalance_deadline() {
    let mut group = stable_pair();
    assert_eq!(group.leave("a", None, 300), None);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert_eq!(
        group.leave("a", None, 300),
        Some(ResponseError::UnknownMemberId)
    );
    // b keeps heartbeating but never rejoins: at the deadline the rebalance completes without it
    // and the group is Empty.
    for at in (1_000..300 + i64::from(REBALANCE_MS)).step_by(1_000) {
        assert_eq!(
            group.heartbeat("b", None, 1, at),
            Some(ResponseError::RebalanceInProgress)
        );
        group.tick(at);
    }
    group.tick(300 + i64::from(REBALANCE_MS) - 1);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    group.tick(300 + i64::from(REBALANCE_MS));
    assert_eq!(group.state(), GroupState::Empty);
    assert_eq!(group.generation_id(), 2);
    assert_eq!(group.member_count(), 0);
}

#[test]
fn expired_sessions_leave_the_group() {
    let mut group = stable_pair();
    // Only b keeps heartbeating.
    for at in (1_000..=11_000).step_by(1_000) {
        assert_eq!(group.heartbeat("b", None, 1, at), None);
        group.tick(at);
    }
    assert!(!group.has_member("a"), "a's session ran out");
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert_eq!(
        group.heartbeat("b", None, 1, 12_100),
        Some(ResponseError::RebalanceInProgress)
    );
    let mut b = later(group.join(join_request("b", "x", &["range"]), 12_200));
    let b = b.try_recv().unwrap();
    assert_eq!((b.generation_id, b.leader_id.as_str()), (2, "b"));
}

#[test]
fn rebalance_during_sync_fails_the_waiting_followers() {
    let mut group = Group::new("g", config());
    let mut a = join_new(&mut group, "a", &["range"], 0);
    let mut b = join_new(&mut group, "b", &["range"], 0);
    group.tick(100);
    assert!(a.try_recv().is_ok() && b.try_recv().is_ok());
    let mut b_sync = later(group.sync("b", None, 1, None, None, Vec::new(), 110));
    // The leader leaves before syncing.
    assert_eq!(group.leave("a", None, 120), None);
    assert_eq!(
        b_sync.try_recv().unwrap().error,
        Some(ResponseError::RebalanceInProgress)
    );
    assert_eq!(
        now(group.sync("b", None, 1, None, None, Vec::new(), 130)).error,
        Some(ResponseError::RebalanceInProgress)
    );
}

#[test]
fn incompatible_protocols_and_bad_session_timeouts_are_refused() {
    let mut group = stable_pair();
    let other = now(group.join(join_request("", "c", &["sticky"]), 300));
    assert_eq!(other.error, Some(ResponseError::InconsistentGroupProtocol));
    let mut short = join_request("", "c", &["range"]);
    short.session_timeout_ms = 10;
    assert_eq!(
        now(group.join(short, 300)).error,
        Some(ResponseError::InvalidSessionTimeout)
    );
    assert_eq!(
        now(group.join(join_request("nobody", "c", &["range"]), 300)).error,
        Some(ResponseError::UnknownMemberId)
    );
}

#[test]
fn static_member_rejoining_a_stable_group_keeps_its_assignment_without_rebalance() {
    let mut group = Group::new("g", config());
    let mut request = join_request("", "s1", &["range"]);
    request.group_instance_id = Some("instance-1".into());
    // Static members skip MEMBER_ID_REQUIRED.
    let mut first = later(group.join(request.clone(), 0));
    group.tick(100);
    assert_eq!(first.try_recv().unwrap().member_id, "s1");
    let assignment = vec![("s1".to_string(), Bytes::from_static(b"S"))];
    let mut synced = later(group.sync("s1", Some("instance-1"), 1, None, None, assignment, 110));
    store_all(&mut group, 110);
    assert_eq!(
        synced.try_recv().unwrap().assignment,
        Bytes::from_static(b"S")
    );

    // Restarted with the same instance id: a new member id, same generation, no rebalance. The
    // answer waits until the new member id is stored.
    request.fresh_member_id = "s2".into();
    let mut rejoined = later(group.join(request, 200));
    assert!(rejoined.try_recv().is_err());
    let stores = store_all(&mut group, 200);
    assert_eq!(stores.len(), 1);
    assert_eq!(stores[0].value.members[0].member_id, "s2");
    assert_eq!(
        stores[0].value.members[0].group_instance_id.as_deref(),
        Some("instance-1")
    );
    assert_eq!(
        stores[0].value.members[0].assignment,
        Bytes::from_static(b"S")
    );
    let rejoined = rejoined.try_recv().unwrap();
    assert_eq!((rejoined.error, rejoined.generation_id), (None, 1));
    assert_eq!(rejoined.member_id, "s2");
    assert_eq!(group.state(), GroupState::Stable);
    let synced = now(group.sync("s2", Some("instance-1"), 1, None, None, Vec::new(), 210));
    assert_eq!(synced.assignment, Bytes::from_static(b"S"));
    // The old member id is fenced.
    assert_eq!(
        group.heartbeat("s1", Some("instance-1"), 1, 220),
        Some(ResponseError::FencedInstanceId)
    );
}

#[test]
fn a_static_member_that_goes_silent_leaves_at_its_session_deadline() {
    // Static members send no LeaveGroup: the session is all that ends them, and it must end at
    // the last heartbeat plus the session timeout, not later (a DeleteGroups then succeeds).
    let mut group = Group::new("g", config());
    let mut request = join_request("", "s1", &["range"]);
    request.group_instance_id = Some("instance-1".into());
    let mut joined = later(group.join(request, 0));
    group.tick(100);
    assert_eq!(joined.try_recv().unwrap().member_id, "s1");
    let assignment = vec![("s1".to_string(), Bytes::from_static(b"S"))];
    let mut synced = later(group.sync("s1", Some("instance-1"), 1, None, None, assignment, 110));
    store_all(&mut group, 120);
    assert_eq!(
        synced.try_recv().unwrap().assignment,
        Bytes::from_static(b"S")
    );
    assert_eq!(group.heartbeat("s1", Some("instance-1"), 1, 1_000), None);

    let deadline = 1_000 + i64::from(SESSION_MS);
    group.tick(deadline - 1);
    assert_eq!(
        (group.state(), group.member_count()),
        (GroupState::Stable, 1)
    );
    group.tick(deadline);
    assert_eq!(
        (group.state(), group.member_count()),
        (GroupState::Empty, 0)
    );
    assert!(!group.has_member("s1"));
}

#[test]
fn a_member_waiting_in_sync_still_leaves_at_its_session_deadline() {
    // Kafka's shouldKeepAlive: only a JoinGroup in progress keeps a member beyond its session. A
    // member that sent SyncGroup and went away (a static member closing mid-rebalance sends no
    // LeaveGroup) is gone at its deadline, even though its SyncGroup was never answered.
    let mut group = Group::new("g", config());
    let mut a = join_new(&mut group, "a", &["range"], 0);
    let mut b = join_new(&mut group, "b", &["range"], 0);
    group.tick(100);
    assert!(a.try_recv().is_ok() && b.try_recv().is_ok());
    let mut b_sync = later(group.sync("b", None, 1, None, None, Vec::new(), 110));
    // The leader keeps heartbeating but has not synced yet; b says nothing more.
    let deadline = 110 + i64::from(SESSION_MS);
    for at in (1_000..deadline).step_by(1_000) {
        assert_eq!(group.heartbeat("a", None, 1, at), None);
        group.tick(at);
    }
    group.tick(deadline - 1);
    assert!(group.has_member("b"));
    group.tick(deadline);
    assert!(!group.has_member("b"), "b's session ran out");
    assert_eq!(
        b_sync.try_recv().unwrap().error,
        Some(ResponseError::UnknownMemberId)
    );
    assert_eq!(group.state(), GroupState::PreparingRebalance);
}

#[test]
fn offset_commits_are_checked_against_the_membership() {
    let mut group = Group::new("g", config());
    assert_eq!(
        group.validate_commit("", None, -1, 0),
        Ok(()),
        "simple commit, empty group"
    );
    let mut group = stable_pair();
    assert_eq!(group.validate_commit("a", None, 1, 300), Ok(()));
    assert_eq!(
        group.validate_commit("a", None, 7, 300),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        group.validate_commit("", None, -1, 300),
        Err(ResponseError::UnknownMemberId)
    );
}

#[test]
fn subscriptions_are_read_from_consumer_protocol_metadata() {
    // version 0, topics ["orders", "pay"], no user data
    let metadata = [
        &[0u8, 0, 0, 0, 0, 2, 0, 6][..],
        b"orders",
        &[0, 3],
        b"pay",
        &[255, 255, 255, 255],
    ]
    .concat();
    assert_eq!(
        parse_subscription_topics(&metadata),
        Some(vec!["orders".to_string(), "pay".to_string()])
    );
    assert_eq!(parse_subscription_topics(&[0, 0, 0, 0, 0, 9]), None);
}
