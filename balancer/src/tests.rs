use super::*;
use proptest::prelude::*;

fn brokers(ids: &[i32]) -> Vec<Broker> {
    ids.iter()
        .map(|id| Broker {
            id: *id,
            rack: None,
        })
        .collect()
}

fn racked(ids_and_racks: &[(i32, &str)]) -> Vec<Broker> {
    ids_and_racks
        .iter()
        .map(|(id, rack)| Broker {
            id: *id,
            rack: Some(rack.to_string()),
        })
        .collect()
}

fn partition(index: i32, replicas: &[i32], size_bytes: u64) -> Partition {
    Partition {
        topic: "t".into(),
        partition: index,
        replicas: replicas.to_vec(),
        isr: replicas.to_vec(),
        size_bytes,
    }
}

/// `count` partitions of `rf` replicas over brokers 1..=n, leaders and followers round robin.
fn round_robin(count: i32, rf: usize, n: i32) -> Vec<Partition> {
    (0..count)
        .map(|p| {
            let replicas: Vec<i32> = (0..rf as i32).map(|r| (p + r) % n + 1).collect();
            partition(p, &replicas, 1_000)
        })
        .collect()
}

fn counts(plan: &Plan, of: impl Fn(&Load) -> usize) -> Vec<usize> {
    plan.after.values().map(of).collect()
}

#[test]
fn a_balanced_cluster_moves_nothing() {
    let plan = plan(
        &brokers(&[1, 2, 3]),
        &round_robin(30, 3, 3),
        &Options::default(),
    );
    assert_eq!(plan.moves, Vec::new());
    assert_eq!(plan.before, plan.after);
    assert_eq!(counts(&plan, |l| l.replicas), vec![30, 30, 30]);
    assert_eq!(counts(&plan, |l| l.leaders), vec![10, 10, 10]);
}

#[test]
fn a_new_broker_gets_its_share_and_nothing_else_moves() {
    // The scenario: 3 brokers, 30 partitions RF=3, broker 4 added.
    let plan = plan(
        &brokers(&[1, 2, 3, 4]),
        &round_robin(30, 3, 3),
        &Options::default(),
    );
    // 90 replicas over 4 brokers: 22 or 23 each; broker 4 starts with none, so the fewest
    // replica moves is 22, each to broker 4.
    assert_eq!(counts(&plan, |l| l.replicas), vec![22, 23, 23, 22]);
    assert_eq!(plan.replicas_added(), 22);
    assert_eq!(plan.bytes(), 22_000);
    for m in &plan.moves {
        let added: Vec<i32> = m
            .target
            .iter()
            .filter(|b| !m.replicas.contains(b))
            .copied()
            .collect();
        assert!(added.is_empty() || added == [4], "{m:?}");
        let mut sorted = m.target.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 3, "{m:?}");
    }
    // 30 preferred leaders over 4 brokers: 7 or 8 each.
    let leaders = counts(&plan, |l| l.leaders);
    assert!(leaders.iter().all(|l| (7..=8).contains(l)), "{leaders:?}");
    assert_eq!(leaders.iter().sum::<usize>(), 30);
    assert_eq!(plan.after[&4].leaders, 7);
}

#[test]
fn ten_thousand_partitions_onto_a_fourth_broker() {
    let plan = plan(
        &brokers(&[1, 2, 3, 4]),
        &round_robin(10_000, 3, 3),
        &Options::default(),
    );
    assert_eq!(counts(&plan, |l| l.replicas), vec![7_500; 4]);
    assert_eq!(plan.replicas_added(), 7_500);
    assert_eq!(counts(&plan, |l| l.leaders), vec![2_500; 4]);
}

#[test]
fn draining_a_broker_moves_its_replicas_to_the_others_evenly() {
    let plan = plan(
        &brokers(&[1, 2, 3, 4]),
        &round_robin(12, 3, 4),
        &Options {
            drain: BTreeSet::from([2]),
        },
    );
    assert_eq!(plan.stuck, Vec::new());
    assert_eq!(plan.after[&2], Load::default());
    assert_eq!(counts(&plan, |l| l.replicas), vec![12, 0, 12, 12]);
    // Exactly the 9 replicas broker 2 held move.
    assert_eq!(plan.replicas_added(), 9);
    assert_eq!(
        counts(&plan, |l| l.leaders),
        vec![4, 0, 4, 4],
        "{:?}",
        plan.after
    );
}

#[test]
fn a_drained_broker_keeps_what_no_other_broker_can_take() {
    // RF=3 on 3 brokers: without broker 3 no partition can have three replicas.
    let plan = plan(
        &brokers(&[1, 2, 3]),
        &round_robin(2, 3, 3),
        &Options {
            drain: BTreeSet::from([3]),
        },
    );
    assert_eq!(plan.moves, Vec::new());
    assert_eq!(
        plan.stuck,
        vec![("t".to_string(), 0, 3), ("t".to_string(), 1, 3)]
    );
}

#[test]
fn under_replicated_partitions_stay_where_they_are() {
    let mut partitions = round_robin(6, 2, 2);
    partitions[0].isr = vec![1];
    let plan = plan(&brokers(&[1, 2, 3]), &partitions, &Options::default());
    assert_eq!(plan.under_replicated, vec![("t".to_string(), 0)]);
    assert!(
        plan.moves.iter().all(|m| m.partition != 0),
        "{:?}",
        plan.moves
    );
    assert_eq!(counts(&plan, |l| l.replicas), vec![4, 4, 4]);
}

#[test]
fn every_partition_keeps_spanning_both_racks() {
    // RF=2 across racks a and b; a new broker in rack a may only take a rack-a replica.
    let brokers = racked(&[(1, "a"), (2, "b"), (3, "a"), (4, "b"), (5, "a")]);
    let partitions = (0..8)
        .map(|p| {
            let a = [1, 3][p as usize % 2];
            let b = [2, 4][p as usize / 2 % 2];
            partition(p, &[a, b], 100)
        })
        .collect::<Vec<_>>();
    let plan = plan(&brokers, &partitions, &Options::default());
    let rack = |id: i32| brokers.iter().find(|b| b.id == id).unwrap().rack.clone();
    for m in &plan.moves {
        let racks: BTreeSet<_> = m.target.iter().map(|b| rack(*b)).collect();
        assert_eq!(racks.len(), 2, "{m:?}");
    }
    // Rack a's 8 replicas spread over its three brokers; rack b's stay 4 and 4.
    assert_eq!(counts(&plan, |l| l.replicas), vec![3, 4, 3, 4, 2]);
}

#[test]
fn the_partition_that_moves_brings_bytes_closest() {
    // Broker 1 holds three partitions, broker 2 none: one moves (counts 2 and 1), the one
    // whose size is nearest half the byte gap (1,410 / 2 = 705): 1,000 bytes.
    let partitions = vec![
        partition(0, &[1], 10),
        partition(1, &[1], 1_000),
        partition(2, &[1], 400),
    ];
    let plan = plan(&brokers(&[1, 2]), &partitions, &Options::default());
    assert_eq!(plan.moves.len(), 1, "{:?}", plan.moves);
    assert_eq!(plan.moves[0].partition, 1);
    assert_eq!(plan.moves[0].target, vec![2]);
    assert_eq!(plan.after[&1].bytes, 410);
    assert_eq!(plan.after[&2].bytes, 1_000);
}

proptest! {
    #[test]
    fn plans_keep_replica_sets_valid_and_counts_within_one(
        n in 2i32..7,
        extra in 0i32..3,
        count in 1i32..40,
        rf in 1usize..4,
        sizes in proptest::collection::vec(0u64..10_000, 40),
    ) {
        let rf = rf.min(n as usize);
        let mut partitions = round_robin(count, rf, n);
        for (p, size) in partitions.iter_mut().zip(&sizes) {
            p.size_bytes = *size;
        }
        let ids: Vec<i32> = (1..=n + extra).collect();
        let first = plan(&brokers(&ids), &partitions, &Options::default());
        let second = plan(&brokers(&ids), &partitions, &Options::default());
        prop_assert_eq!(&first, &second);
        for m in &first.moves {
            let set: BTreeSet<i32> = m.target.iter().copied().collect();
            prop_assert_eq!(set.len(), rf);
            prop_assert!(set.iter().all(|b| ids.contains(b)));
        }
        let replicas = counts(&first, |l| l.replicas);
        let (min, max) = (replicas.iter().min().unwrap(), replicas.iter().max().unwrap());
        prop_assert!(max - min <= 1, "{:?}", first.after);
        prop_assert_eq!(replicas.iter().sum::<usize>(), count as usize * rf);
    }
}

#[test]
fn replicas_on_a_gone_broker_move_when_an_in_sync_copy_is_left() {
    // Broker 4 is gone (not among the brokers): its replica of partition 0 is out of sync and
    // moves (the new one copies from broker 1); partition 1 had its only replica there, so
    // nothing is left to copy from and it stays.
    let mut partitions = vec![partition(0, &[1, 4], 10), partition(1, &[4], 10)];
    partitions[0].isr = vec![1];
    let plan = plan(&brokers(&[1, 2, 3]), &partitions, &Options::default());
    assert_eq!(plan.under_replicated, vec![("t".to_string(), 1)]);
    assert_eq!(
        plan.moves,
        vec![Move {
            topic: "t".into(),
            partition: 0,
            replicas: vec![1, 4],
            target: vec![1, 2],
            bytes: 10,
        }]
    );
    assert_eq!(plan.stuck, vec![("t".to_string(), 1, 4)]);
}
