use super::*;
use bytes::Bytes;
use skald_storage::clock::ManualClock;
use state::{JoinRequest, Reply};

const MINUTE: i64 = 60_000;

pub(super) fn coordinator(clock: &Arc<ManualClock>) -> GroupCoordinator {
    let config = CoordinatorConfig {
        offsets_topic_partitions: 1,
        offsets_topic_replication_factor: 1,
        offsets_retention_ms: MINUTE,
        offsets_retention_check_interval_ms: 10_000,
        offsets_commit_timeout_ms: 5_000,
        group: GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..GroupConfig::default()
        },
    };
    GroupCoordinator::with_clock(config, Arc::clone(clock) as Arc<dyn Clock>)
}

pub(super) fn committed(offset: i64, at_ms: i64) -> CommittedOffset {
    CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: at_ms,
    }
}

/// A `ConsumerProtocolSubscription` v0 for `topics`.
pub(super) fn subscription(topics: &[&str]) -> Bytes {
    let mut out = vec![0u8, 0];
    out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for topic in topics {
        out.extend_from_slice(&(topic.len() as i16).to_be_bytes());
        out.extend_from_slice(topic.as_bytes());
    }
    out.extend_from_slice(&(-1i32).to_be_bytes()); // user data: null
    Bytes::from(out)
}

/// One consumer member subscribed to `topics`, joined and synced: Stable generation 1.
fn stable_member(group: &mut Group, topics: &[&str], now_ms: i64) -> String {
    let request = JoinRequest {
        client_id: "c".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), subscription(topics))],
        fresh_member_id: "m1".into(),
        ..JoinRequest::default()
    };
    let Reply::Later(mut joined) = group.join(request, now_ms) else {
        panic!("join should wait for the rebalance");
    };
    group.tick(now_ms);
    let joined = joined.try_recv().expect("rebalance completed");
    assert_eq!(joined.error, None);
    let Reply::Later(mut synced) = group.sync("m1", None, 1, None, None, Vec::new(), now_ms) else {
        panic!("the leader's sync completes through the waiter");
    };
    assert!(
        synced.try_recv().is_err(),
        "answered once the record is stored"
    );
    for store in group.take_due_stores() {
        group.store_completed(store.seq, Ok(()), now_ms);
    }
    assert_eq!(synced.try_recv().expect("synced").error, None);
    assert_eq!(group.state(), GroupState::Stable);
    "m1".into()
}

pub(super) type Persisted = Vec<(String, Tombstones)>;

pub(super) fn pass(coordinator: &GroupCoordinator, persisted: &mut Persisted) -> ExpiryOutcome {
    coordinator.expire_offsets_with(|group, tombstones| {
        persisted.push((group.to_string(), tombstones.clone()));
        Ok(())
    })
}

pub(super) fn tombstones(offsets: &[(&str, i32)], group: bool) -> Tombstones {
    Tombstones {
        offsets: offsets.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
        group,
    }
}

fn offsets_of(coordinator: &GroupCoordinator, group: &str) -> Vec<(String, i32)> {
    coordinator
        .group(group)
        .map(|g| lock(&g).offsets.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn standalone_offsets_expire_one_by_one_after_their_commit() {
    let clock = Arc::new(ManualClock::new(0));
    let coordinator = coordinator(&clock);
    {
        let group = coordinator.group_or_create("simple");
        let mut group = lock(&group);
        group.offsets.insert(("t".into(), 0), committed(5, 0));
        group.offsets.insert(("t".into(), 1), committed(7, 30_000));
    }
    let mut persisted = Persisted::new();
    clock.set(MINUTE - 1);
    assert_eq!(pass(&coordinator, &mut persisted), ExpiryOutcome::default());
    assert!(persisted.is_empty());

    clock.set(MINUTE);
    let outcome = pass(&coordinator, &mut persisted);
    assert_eq!(outcome.expired, vec![("simple".into(), "t".into(), 0)]);
    assert!(outcome.removed_groups.is_empty());
    assert_eq!(
        persisted,
        vec![("simple".into(), tombstones(&[("t", 0)], false))]
    );
    assert_eq!(offsets_of(&coordinator, "simple"), vec![("t".into(), 1)]);

    clock.set(30_000 + MINUTE);
    let outcome = pass(&coordinator, &mut persisted);
    assert_eq!(outcome.expired, vec![("simple".into(), "t".into(), 1)]);
    assert_eq!(outcome.removed_groups, vec!["simple".to_string()]);
    assert!(
        coordinator.group("simple").is_none(),
        "Empty without offsets: removed"
    );
    // Never had a generation, so no metadata record to tombstone.
    assert_eq!(
        persisted[1],
        ("simple".into(), tombstones(&[("t", 1)], false))
    );
}

#[test]
fn an_emptied_groups_offsets_expire_retention_after_it_emptied() {
    let clock = Arc::new(ManualClock::new(0));
    let coordinator = coordinator(&clock);
    let shared = coordinator.group_or_create("g");
    {
        let mut group = lock(&shared);
        let member = stable_member(&mut group, &["sub"], 0);
        group.offsets.insert(("sub".into(), 0), committed(10, 0));
        group.offsets.insert(("sub".into(), 1), committed(11, 0));
        group.offsets.insert(("gone".into(), 0), committed(12, 0));
        group
            .offsets
            .insert(("gone".into(), 1), committed(13, 50_000));
        // Stable, far past retention: subscribed topics' offsets stay, unsubscribed ones
        // expire after their commit (KIP-496).
        drop(group);
        clock.set(5 * MINUTE);
        let mut persisted = Persisted::new();
        let outcome = pass(&coordinator, &mut persisted);
        assert_eq!(
            outcome.expired,
            vec![
                ("g".into(), "gone".into(), 0),
                ("g".into(), "gone".into(), 1)
            ]
        );
        assert_eq!(
            offsets_of(&coordinator, "g"),
            vec![("sub".into(), 0), ("sub".into(), 1)]
        );
        let mut group = lock(&shared);
        assert_eq!(group.leave(&member, None, 5 * MINUTE), None);
        assert_eq!(group.state(), GroupState::Empty);
        assert_eq!(group.empty_since_ms(), Some(5 * MINUTE));
    }
    // The old commits do not count: the clock starts when the group became Empty.
    let mut persisted = Persisted::new();
    clock.set(6 * MINUTE - 1);
    assert_eq!(pass(&coordinator, &mut persisted), ExpiryOutcome::default());
    assert_eq!(offsets_of(&coordinator, "g").len(), 2);

    clock.set(6 * MINUTE);
    let outcome = pass(&coordinator, &mut persisted);
    assert_eq!(
        outcome.expired,
        vec![("g".into(), "sub".into(), 0), ("g".into(), "sub".into(), 1)]
    );
    assert_eq!(outcome.removed_groups, vec!["g".to_string()]);
    // The group goes with its last offsets: its metadata is tombstoned with them.
    assert_eq!(
        persisted,
        vec![("g".into(), tombstones(&[("sub", 0), ("sub", 1)], true))]
    );
    assert!(coordinator.group("g").is_none());
    assert_eq!(lock(&shared).state(), GroupState::Dead);
}

#[test]
fn groups_with_members_keep_their_offsets() {
    let clock = Arc::new(ManualClock::new(0));
    let coordinator = coordinator(&clock);
    {
        let shared = coordinator.group_or_create("busy");
        let mut group = lock(&shared);
        stable_member(&mut group, &["sub"], 0);
        group.offsets.insert(("sub".into(), 0), committed(1, 0));
    }
    clock.set(10 * MINUTE);
    // Heartbeats would keep the member; here its session is simply still long enough.
    lock(&coordinator.group("busy").unwrap()).heartbeat("m1", None, 1, 10 * MINUTE - 1);
    let mut persisted = Persisted::new();
    assert_eq!(pass(&coordinator, &mut persisted), ExpiryOutcome::default());
    assert_eq!(offsets_of(&coordinator, "busy"), vec![("sub".into(), 0)]);
}

#[test]
fn offsets_stay_if_their_tombstones_cannot_be_written() {
    let clock = Arc::new(ManualClock::new(0));
    let coordinator = coordinator(&clock);
    lock(&coordinator.group_or_create("s"))
        .offsets
        .insert(("t".into(), 0), committed(5, 0));
    clock.set(2 * MINUTE);
    let outcome = coordinator.expire_offsets_with(|_, _| Err(ResponseError::NotCoordinator));
    assert_eq!(outcome, ExpiryOutcome::default());
    assert_eq!(offsets_of(&coordinator, "s"), vec![("t".into(), 0)]);
    // Next pass succeeds.
    let mut persisted = Persisted::new();
    assert_eq!(
        pass(&coordinator, &mut persisted).removed_groups,
        vec!["s".to_string()]
    );
}

#[test]
fn empty_groups_without_offsets_are_removed() {
    let clock = Arc::new(ManualClock::new(0));
    let coordinator = coordinator(&clock);
    let shared = coordinator.group_or_create("left");
    {
        let mut group = lock(&shared);
        stable_member(&mut group, &["sub"], 0);
        assert_eq!(group.leave("m1", None, 1), None);
    }
    let mut persisted = Persisted::new();
    let outcome = pass(&coordinator, &mut persisted);
    assert_eq!(outcome.removed_groups, vec!["left".to_string()]);
    assert_eq!(
        persisted,
        vec![("left".into(), tombstones(&[], true))],
        "no offsets, but the group's metadata record"
    );
    assert!(coordinator.group("left").is_none());
}

#[test]
fn expiry_runs_at_the_first_tick_then_every_check_interval() {
    let clock = Arc::new(ManualClock::new(1_000));
    let coordinator = coordinator(&clock);
    assert!(coordinator.expiry_due());
    assert!(!coordinator.expiry_due());
    clock.set(10_999);
    assert!(!coordinator.expiry_due());
    clock.set(11_000);
    assert!(coordinator.expiry_due());
    assert!(!coordinator.expiry_due());
}

#[test]
fn retention_settings_follow_kafkas_names_and_limits() {
    let config = |overrides: &[(&str, &str)]| {
        let explicit = overrides
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        CoordinatorConfig::from_server(&ServerConfig::from_properties(explicit)?)
    };
    let defaults = config(&[]).unwrap();
    assert_eq!(defaults.offsets_retention_ms, 10_080 * MINUTE);
    assert_eq!(defaults.offsets_retention_check_interval_ms, 600_000);
    let set = config(&[
        ("offsets.retention.minutes", "1"),
        ("offsets.retention.check.interval.ms", "250"),
    ])
    .unwrap();
    assert_eq!(set.offsets_retention_ms, MINUTE);
    assert_eq!(set.offsets_retention_check_interval_ms, 250);
    assert!(config(&[("offsets.retention.minutes", "0")]).is_err());
    assert!(config(&[("offsets.retention.check.interval.ms", "0")]).is_err());
}

#[test]
fn group_partitions_follow_kafkas_hash() {
    assert_eq!(java_string_hash(""), 0);
    assert_eq!(java_string_hash("a"), 97);
    assert_eq!(java_string_hash("ab"), 97 * 31 + 98);
    assert_eq!(partition_for("", 50), 0);
    // A negative hash takes its absolute value before the modulo.
    let negative = "polygenelubricants";
    assert_eq!(java_string_hash(negative), i32::MIN);
    assert_eq!(partition_for(negative, 50), 0);
    let hash = java_string_hash("console-consumer-1");
    assert_eq!(partition_for("console-consumer-1", 50), hash.abs() % 50);
}
