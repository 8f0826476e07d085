use super::*;

const ME: i32 = 1;
const LAG_MS: i64 = 30_000;
/// Kafka's rule alone.
const RULES: IsrRules = IsrRules {
    lag_time_max_ms: LAG_MS,
    unresponsive_time_max_ms: 0,
    min_insync_replicas: 1,
};

fn placement(leader: i32, leader_epoch: i32, isr: &[i32]) -> PartitionImage {
    PartitionImage {
        replicas: vec![1, 2, 3],
        isr: isr.to_vec(),
        leader,
        leader_epoch,
        partition_epoch: leader_epoch,
        ..PartitionImage::default()
    }
}

fn leader_of_three(log_end_offset: i64) -> ReplicaState {
    let mut state = ReplicaState::new(0);
    let transition = state.apply(ME, &placement(ME, 5, &[1, 2, 3]), log_end_offset, 1_000);
    assert_eq!(transition, Transition::BecameLeader { leader_epoch: 5 });
    state
}

#[test]
fn high_watermark_is_the_smallest_isr_log_end_offset() {
    let mut state = leader_of_three(10);
    // Followers' LEOs are unknown until they fetch: the HW stays.
    assert!(!state.maybe_advance_high_watermark(ME, 10));
    assert!(!state.record_follower_fetch(ME, 2, 10, 10, 1_100));
    assert_eq!(state.high_watermark, 0);
    assert!(state.record_follower_fetch(ME, 3, 7, 10, 1_100));
    assert_eq!(state.high_watermark, 7);
    assert!(state.record_follower_fetch(ME, 3, 10, 10, 1_200));
    assert_eq!(state.high_watermark, 10);
    // It never goes down on the leader.
    assert!(!state.record_follower_fetch(ME, 3, 4, 10, 1_300));
    assert_eq!(state.high_watermark, 10);
}

#[test]
fn a_lagging_follower_leaves_the_isr_and_a_caught_up_one_joins() {
    let mut state = leader_of_three(10);
    state.record_follower_fetch(ME, 2, 10, 10, 1_100);
    state.record_follower_fetch(ME, 3, 10, 10, 1_100);
    assert_eq!(state.wanted_isr(ME, 10, 1_200, &RULES, |_| true), None);
    // Broker 3 stops fetching while the leader's log grows.
    state.record_follower_fetch(ME, 2, 20, 20, 20_000);
    assert_eq!(
        state.wanted_isr(ME, 20, 31_100 - 1, &RULES, |_| true),
        None,
        "within replica.lag.time.max.ms of its last catch-up"
    );
    assert_eq!(
        state.wanted_isr(ME, 20, 31_101, &RULES, |_| true),
        Some(vec![1, 2])
    );

    // Committed: broker 3 is out; the HW follows the ISR {1, 2} only.
    state.set_pending(vec![1, 2]);
    state.apply(
        ME,
        &PartitionImage {
            partition_epoch: 6,
            ..placement(ME, 5, &[1, 2])
        },
        20,
        31_200,
    );
    assert!(state.leader().unwrap().pending.is_none());
    assert!(state.maybe_advance_high_watermark(ME, 20));
    assert_eq!(state.high_watermark, 20);

    // Broker 3 fetches again: below the HW it may not join, at the HW it may (if live).
    state.record_follower_fetch(ME, 3, 15, 20, 31_300);
    assert_eq!(state.wanted_isr(ME, 20, 31_300, &RULES, |_| true), None);
    state.record_follower_fetch(ME, 3, 20, 20, 31_400);
    assert_eq!(state.wanted_isr(ME, 20, 31_400, &RULES, |id| id != 3), None);
    assert_eq!(
        state.wanted_isr(ME, 20, 31_400, &RULES, |_| true),
        Some(vec![1, 2, 3])
    );
    // While the expansion is in flight its new member already counts for the HW.
    state.set_pending(vec![1, 2, 3]);
    assert_eq!(state.leader().unwrap().maximal_isr(), vec![1, 2, 3]);
    assert_eq!(state.wanted_isr(ME, 20, 31_400, &RULES, |_| true), None);
}

#[test]
fn an_unresponsive_follower_leaves_early_while_the_isr_keeps_its_minimum() {
    let rules = IsrRules {
        lag_time_max_ms: LAG_MS,
        unresponsive_time_max_ms: 3_000,
        min_insync_replicas: 2,
    };
    let mut state = leader_of_three(10);
    state.record_follower_fetch(ME, 2, 10, 10, 1_100);
    state.record_follower_fetch(ME, 3, 10, 10, 1_100);
    // Both followers silent but caught up (nothing waits for them): they stay.
    assert_eq!(state.wanted_isr(ME, 10, 9_000, &rules, |_| true), None);
    // The leader's log grows; broker 2 keeps fetching, broker 3 has not since 1_100.
    state.record_follower_fetch(ME, 2, 10, 20, 3_000);
    assert_eq!(
        state.wanted_isr(ME, 20, 4_100, &rules, |_| true),
        None,
        "silent for just the bound"
    );
    assert_eq!(
        state.wanted_isr(ME, 20, 4_101, &rules, |_| true),
        Some(vec![1, 2])
    );
    // Off, only Kafka's lag rule counts.
    assert_eq!(state.wanted_isr(ME, 20, 4_101, &RULES, |_| true), None);
    // Both followers behind and silent: only the one silent longest goes, down to the minimum.
    assert_eq!(
        state.wanted_isr(ME, 20, 7_000, &rules, |_| true),
        Some(vec![1, 2])
    );
    // With min.insync.replicas = 3 nobody leaves early.
    let strict = IsrRules {
        min_insync_replicas: 3,
        ..rules
    };
    assert_eq!(state.wanted_isr(ME, 20, 7_000, &strict, |_| true), None);
}

#[test]
fn a_follower_that_caught_up_with_the_previous_fetch_counts_as_caught_up_then() {
    let mut state = leader_of_three(100);
    state.record_follower_fetch(ME, 2, 100, 100, 1_000);
    // Leader grows to 150; follower fetches 100 at 5_000 (behind), then 150 at 40_000 (reaching
    // what the leader had at its previous fetch): caught up as of 5_000.
    state.record_follower_fetch(ME, 2, 100, 150, 5_000);
    state.record_follower_fetch(ME, 2, 150, 200, 40_000);
    let progress = state.leader().unwrap().followers[&2];
    assert_eq!(progress.last_caught_up_ms, 5_000);
    assert_eq!(progress.log_end_offset, 150);
}

#[test]
fn acks_all_completes_at_the_high_watermark_with_enough_replicas() {
    let mut state = leader_of_three(10);
    assert_eq!(state.ack_status(5, 11, 2), None);
    state.record_follower_fetch(ME, 2, 11, 11, 1_100);
    state.record_follower_fetch(ME, 3, 11, 11, 1_100);
    assert_eq!(state.ack_status(5, 11, 2), Some(Ok(())));
    assert_eq!(
        state.ack_status(4, 11, 2),
        Some(Err(ResponseError::NotLeaderOrFollower)),
        "an append of an older leadership"
    );
    // The ISR shrank to the leader alone before the HW got there.
    let mut alone = leader_of_three(10);
    alone.apply(
        ME,
        &PartitionImage {
            partition_epoch: 6,
            ..placement(ME, 5, &[1])
        },
        11,
        2_000,
    );
    assert!(alone.maybe_advance_high_watermark(ME, 11));
    assert_eq!(
        alone.ack_status(5, 11, 2),
        Some(Err(ResponseError::NotEnoughReplicasAfterAppend))
    );
}

#[test]
fn becoming_a_follower_caps_the_high_watermark_and_fails_waiting_acks() {
    let mut state = leader_of_three(10);
    state.record_follower_fetch(ME, 2, 10, 10, 1_100);
    state.record_follower_fetch(ME, 3, 10, 10, 1_100);
    assert_eq!(state.high_watermark, 10);
    let transition = state.apply(ME, &placement(2, 6, &[2, 3]), 8, 2_000);
    assert_eq!(
        transition,
        Transition::BecameFollower {
            leader: 2,
            leader_epoch: 6
        }
    );
    assert_eq!(state.high_watermark, 8);
    assert_eq!(
        state.ack_status(5, 10, 1),
        Some(Err(ResponseError::NotLeaderOrFollower))
    );
    // The same placement again changes nothing.
    assert_eq!(
        state.apply(ME, &placement(2, 6, &[2, 3]), 8, 2_100),
        Transition::Unchanged
    );
    state.follower_high_watermark(12, 8);
    assert_eq!(state.high_watermark, 8);
    assert_eq!(
        state.apply(ME, &placement(-1, 7, &[2]), 8, 2_200),
        Transition::WentOffline
    );
}

#[test]
fn only_the_settled_request_clears_the_pending_isr() {
    let mut state = leader_of_three(10);
    state.record_follower_fetch(ME, 2, 10, 10, 1_100);
    state.set_pending(vec![1, 2]);
    // An answer for another request (other ISR, other epochs) leaves this one in flight.
    state.clear_pending(5, 5, &[1, 3]);
    state.clear_pending(4, 5, &[1, 2]);
    state.clear_pending(5, 4, &[1, 2]);
    assert!(state.is_pending(5, 5, &[1, 2]));
    assert_eq!(state.leader().unwrap().maximal_isr(), vec![1, 2, 3]);
    state.clear_pending(5, 5, &[1, 2]);
    assert!(!state.is_pending(5, 5, &[1, 2]));
    assert!(state.leader().unwrap().pending.is_none());
}

#[test]
fn a_refused_expansion_keeps_counting_unless_it_cannot_have_applied() {
    let mut state = ReplicaState::new(0);
    state.apply(ME, &placement(ME, 5, &[1, 2]), 10, 1_000);
    state.record_follower_fetch(ME, 2, 10, 10, 1_100);
    state.record_follower_fetch(ME, 3, 10, 10, 1_100);
    state.set_pending(vec![1, 2, 3]);
    // A resent expansion whose first copy committed comes back with a stale partition epoch:
    // broker 3 may be in the ISR now, so it keeps holding back the high watermark.
    state.alter_partition_refused(5, 5, &[1, 2, 3], AlterPartitionError::InvalidUpdateVersion);
    assert!(state.is_pending(5, 5, &[1, 2, 3]));
    state.record_follower_fetch(ME, 2, 12, 12, 1_200);
    assert!(!state.maybe_advance_high_watermark(ME, 12));
    assert_eq!(state.high_watermark, 10);
    // Ineligible: checked at the request's own partition epoch, so nothing was applied.
    state.alter_partition_refused(5, 5, &[1, 2, 3], AlterPartitionError::IneligibleReplica);
    assert!(state.leader().unwrap().pending.is_none());
    assert!(state.maybe_advance_high_watermark(ME, 12));
    assert_eq!(state.high_watermark, 12);
}

#[test]
fn a_reassignment_adds_followers_that_count_for_neither_the_hw_nor_the_replication_factor() {
    let mut state = leader_of_three(10);
    // Replica 4 is being added, replica 3 removed: the union is replicated meanwhile.
    let moving = PartitionImage {
        replicas: vec![1, 2, 4, 3],
        partition_epoch: 6,
        removing_replicas: vec![3],
        adding_replicas: vec![4],
        ..placement(ME, 5, &[1, 2, 3])
    };
    assert_eq!(state.apply(ME, &moving, 10, 2_000), Transition::Unchanged);
    let leader = state.leader().unwrap();
    assert_eq!(leader.replication_factor, 3);
    assert_eq!(
        leader.followers.keys().copied().collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    // The new follower is outside the ISR: its fetches do not hold the HW back.
    state.record_follower_fetch(ME, 2, 10, 10, 2_100);
    state.record_follower_fetch(ME, 3, 10, 10, 2_100);
    assert_eq!(state.high_watermark, 10);
    // Once it reaches the HW, the leader asks for it in the ISR.
    state.record_follower_fetch(ME, 4, 10, 10, 2_200);
    assert_eq!(
        state.wanted_isr(ME, 10, 2_200, &RULES, |_| true),
        Some(vec![1, 2, 3, 4])
    );
    // The completed move: replica 3 is gone from the followers.
    let moved = PartitionImage {
        replicas: vec![1, 2, 4],
        partition_epoch: 8,
        ..placement(ME, 5, &[1, 2, 4])
    };
    assert_eq!(state.apply(ME, &moved, 10, 2_300), Transition::Unchanged);
    let leader = state.leader().unwrap();
    assert_eq!(leader.replication_factor, 3);
    assert_eq!(
        leader.followers.keys().copied().collect::<Vec<_>>(),
        vec![2, 4]
    );
}
