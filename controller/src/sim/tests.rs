use super::*;

/// A run of random proposals and faults (drops, delays, cuts, isolation, crashes losing unsynced
/// writes, failing disks, leadership transfers), then healing and settling.
fn mixed_faults(seed: u64) {
    let voters = if seed.is_multiple_of(2) { 3 } else { 5 };
    let snapshot_after_entries = 5 + seed % 20;
    let mut sim = Sim::new(seed, voters, |config| {
        config.snapshot_after_entries = snapshot_after_entries;
    });
    sim.drop_per_mille = sim.rng.below(200);
    sim.delay_ticks_max = sim.rng.below(3);
    let minority = (voters - 1) / 2;
    for _ in 0..300 {
        sim.tick();
        let roll = sim.rng.below(100);
        let pick = |rng: &mut Rng, ids: Vec<i32>| -> Option<i32> {
            (!ids.is_empty()).then(|| ids[rng.below(ids.len() as u64) as usize])
        };
        let (live, down) = (sim.live(), sim.down());
        match roll {
            0..=34 => {
                sim.propose();
            }
            35..=37 if down.len() < minority as usize => {
                if let Some(id) = pick(&mut sim.rng, live.clone()) {
                    sim.crash(id);
                }
            }
            38..=40 => {
                if let Some(id) = pick(&mut sim.rng, down.clone()) {
                    sim.restart(id);
                }
            }
            41..=42 => {
                let a = sim.rng.below(voters as u64) as i32;
                let b = sim.rng.below(voters as u64) as i32;
                sim.cut(a, b);
            }
            43..=44 => {
                let id = sim.rng.below(voters as u64) as i32;
                sim.isolate(id);
            }
            45..=47 => sim.heal(),
            48 => {
                if let Some(id) = pick(&mut sim.rng, live.clone()) {
                    sim.nodes[&id].disk.fail_next_sync();
                }
            }
            49 => {
                let to = sim.rng.below(voters as u64) as i32;
                if let Some(leader) = sim.leader() {
                    if let Some(quorum) = sim.nodes.get_mut(&leader).and_then(|n| n.quorum.as_mut())
                    {
                        quorum.transfer_leadership(to);
                    }
                }
            }
            _ => {}
        }
    }
    sim.heal();
    sim.drop_per_mille = 0;
    // A batch of the final leader's term commits everything before it.
    let mut last = None;
    for _ in 0..100 {
        // A disk armed to fail may still stop a node after the faults end.
        for id in sim.down() {
            sim.restart(id);
        }
        if sim.settle(50) {
            if let Some(token) = sim.propose() {
                last = Some(token);
                if sim.settle(100) && sim.proposals[&token].acked_at.is_some() {
                    break;
                }
            }
        }
    }
    let last = last.unwrap_or_else(|| panic!("seed {seed}: nothing committed after healing"));
    assert!(
        sim.proposals[&last].acked_at.is_some(),
        "seed {seed}: the final batch never committed"
    );
    sim.check_converged();
    if std::env::var_os("SIM_STATS").is_some() {
        let acked = sim
            .proposals
            .values()
            .filter(|p| p.acked_at.is_some())
            .count();
        let failed = sim.proposals.values().filter(|p| p.failed).count();
        let snapshots: u64 = sim.nodes.values().map(|n| n.snapshots_installed).sum();
        let leader = sim.leader().expect("leader");
        let status = sim.quorum(leader).expect("live").status();
        eprintln!(
            "seed {seed}: voters {voters} proposals {} acked {acked} failed {failed} snapshots {snapshots} term {} commit {} first_index {}",
            sim.proposals.len(), status.term, status.commit_index, status.first_index
        );
    }
}

/// `SIM_SEEDS=n` runs n seeds instead of 200 (a longer hunt); `SIM_SEED=s` runs only seed s.
#[test]
fn committed_metadata_survives_mixed_faults_over_many_seeds() {
    let env = |name| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let seeds = match (env("SIM_SEED"), env("SIM_SEEDS")) {
        (Some(seed), _) => seed..seed + 1,
        (None, seeds) => 0..seeds.unwrap_or(200),
    };
    for seed in seeds {
        mixed_faults(seed);
    }
}

#[test]
fn a_minority_partition_cannot_commit() {
    for (voters, minority_size) in [(3, 1), (5, 2)] {
        for seed in 0..10 {
            let mut sim = Sim::new(seed, voters, |_| {});
            assert!(sim.settle(200));
            for _ in 0..3 {
                sim.propose().expect("a leader accepts");
            }
            assert!(sim.settle(50));
            let old_leader = sim.leader().expect("leader");
            let commit_before = sim.quorum(old_leader).expect("live").status().commit_index;
            let minority: Vec<i32> = std::iter::once(old_leader)
                .chain((0..voters).filter(|id| *id != old_leader))
                .take(minority_size)
                .collect();
            for a in &minority {
                for b in (0..voters).filter(|b| !minority.contains(b)) {
                    sim.cut(*a, b);
                }
            }
            let stranded: Vec<u64> = (0..3).filter_map(|_| sim.propose_on(old_leader)).collect();
            assert!(
                !stranded.is_empty(),
                "the old leader still takes proposals at first"
            );
            let mut majority_acked = Vec::new();
            for _ in 0..60 {
                sim.tick();
                if let Some(leader) = sim.leader().filter(|l| !minority.contains(l)) {
                    majority_acked.extend(sim.propose_on(leader));
                }
                for id in &minority {
                    let status = sim.quorum(*id).expect("live").status();
                    assert!(
                        status.applied_index <= commit_before,
                        "minority node {id} applied {} past {commit_before}",
                        status.applied_index
                    );
                }
                for token in &stranded {
                    assert_eq!(sim.proposals[token].acked_at, None);
                }
            }
            assert!(
                !sim.quorum(old_leader).expect("live").is_leader(),
                "check_quorum makes an isolated leader step down"
            );
            assert!(majority_acked
                .iter()
                .any(|t| sim.proposals[t].acked_at.is_some()));
            sim.heal();
            assert!(sim.settle(200));
            for token in &stranded {
                let proposal = &sim.proposals[token];
                assert!(proposal.failed && proposal.acked_at.is_none());
            }
            sim.check_converged();
        }
    }
}

#[test]
fn a_crashed_voter_that_lost_unsynced_writes_catches_up() {
    for seed in 0..20 {
        let mut sim = Sim::new(seed, 3, |_| {});
        assert!(sim.settle(200));
        let leader = sim.leader().expect("leader");
        let follower = (0..3).find(|id| *id != leader).expect("a follower");
        // The follower's next sync fails: the appends it received are never durable, and it
        // stops; then the leader crashes too, losing nothing it acknowledged.
        sim.nodes[&follower].disk.fail_next_sync();
        sim.propose().expect("accepted");
        sim.ticks(5);
        assert!(
            sim.quorum(follower).is_none(),
            "the failed disk stopped the follower"
        );
        sim.crash(leader);
        sim.restart(follower);
        sim.restart(leader);
        assert!(sim.settle(300));
        let after = sim.propose().expect("accepted");
        assert!(sim.settle(100));
        assert!(sim.proposals[&after].acked_at.is_some());
        sim.check_converged();
    }
}

#[test]
fn a_lagging_follower_catches_up_by_snapshot() {
    let mut sim = Sim::new(7, 3, |config| config.snapshot_after_entries = 5);
    assert!(sim.settle(200));
    let leader = sim.leader().expect("leader");
    let follower = (0..3).find(|id| *id != leader).expect("a follower");
    sim.crash(follower);
    for _ in 0..30 {
        sim.propose().expect("the majority still commits");
        sim.ticks(2);
    }
    // Until the crashed follower stops counting as recently active, compaction waits for it.
    sim.ticks(30);
    sim.propose().expect("accepted");
    assert!(sim.settle(50));
    let status = sim.quorum(leader).expect("live").status();
    assert!(
        status.first_index > 20,
        "the leader compacted its log: {status:?}"
    );
    sim.restart(follower);
    assert!(sim.settle(200));
    assert_eq!(sim.nodes[&follower].snapshots_installed, 1);
    sim.check_converged();

    // A broker-only follower that has applied nothing also starts from the image.
    let quorum = sim.quorum(leader).expect("live");
    let mut broker = crate::follower::MetadataFollower::new();
    loop {
        let update = quorum.serve_fetch(broker.next_fetch(), 1024);
        if update == crate::follower::MetadataUpdate::UpToDate {
            break;
        }
        let update = crate::follower::MetadataUpdate::decode(&update.encode().unwrap()).unwrap();
        broker.apply(update);
    }
    assert_eq!(broker.applied_index(), quorum.applied_index());
    assert_eq!(*broker.image(), *quorum.image());
}

/// A topic of `partitions` partitions (replicas striped over brokers 0..3), as one batch.
fn big_topic(name: &str, id: u128, partitions: i32) -> Vec<MetadataRecord> {
    let topic_id = crate::record::TopicId(id);
    let mut batch = vec![MetadataRecord::Topic {
        name: name.into(),
        topic_id,
    }];
    batch.extend((0..partitions).map(|partition| {
        let replicas: Vec<i32> = (0..3).map(|i| (partition + i) % 3).collect();
        MetadataRecord::Partition {
            topic_id,
            partition,
            leader: replicas[0],
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
            removing_replicas: Vec::new(),
            adding_replicas: Vec::new(),
        }
    }));
    batch
}

/// Issue 16: an image whose snapshot is over the 64 MiB a frame holds still reaches a lagging
/// voter (through the chunked frames a real transport sends) and a broker that fetches it.
#[test]
fn a_lagging_voter_and_a_broker_catch_up_by_a_snapshot_larger_than_a_frame() {
    let mut sim = Sim::new(11, 3, |config| config.snapshot_after_entries = 5);
    assert!(sim.settle(200));
    let leader = sim.leader().expect("leader");
    let follower = (0..3).find(|id| *id != leader).expect("a follower");
    sim.crash(follower);
    for (i, name) in ["big-a", "big-b", "big-c"].into_iter().enumerate() {
        let batch = big_topic(name, 0xb16 + i as u128, 150_000);
        sim.propose_batch_on(leader, name.to_string(), batch)
            .expect("accepted");
        sim.ticks(2);
    }
    for _ in 0..8 {
        sim.propose().expect("the majority still commits");
        sim.ticks(2);
    }
    // Until the crashed follower stops counting as recently active, compaction waits for it.
    sim.ticks(30);
    sim.propose().expect("accepted");
    assert!(sim.settle(50));
    let status = sim.quorum(leader).expect("live").status();
    let saved = sim.nodes[&leader].disk.durable().snapshot;
    assert!(
        saved.data.len() > crate::log::BATCH_BYTES_MAX,
        "the snapshot ({} bytes) is larger than a frame",
        saved.data.len()
    );
    assert!(status.first_index > 10, "compacted: {status:?}");
    sim.restart(follower);
    assert!(sim.settle(200));
    assert_eq!(sim.nodes[&follower].snapshots_installed, 1);
    sim.check_converged();
    let image = sim.quorum(leader).expect("live").image();
    assert_eq!(image.partition_count(), 450_000);
    assert_eq!(*sim.quorum(follower).expect("live").image(), *image);

    // A broker fetches the saved snapshot by position, a bounded chunk at a time.
    let quorum = sim.quorum(leader).expect("live");
    let mut broker = crate::follower::MetadataFollower::new();
    let mut chunks = 0;
    loop {
        let update = quorum.serve_fetch(broker.next_fetch(), 16 * 1024 * 1024);
        match &update {
            crate::follower::MetadataUpdate::UpToDate => break,
            crate::follower::MetadataUpdate::SnapshotChunk { bytes, .. } => {
                assert!(bytes.len() <= crate::follower::SNAPSHOT_FETCH_BYTES_MAX);
                chunks += 1;
            }
            crate::follower::MetadataUpdate::Entries { .. } => {}
        }
        broker.apply(update);
    }
    assert!(chunks > 16, "{chunks} chunks");
    assert_eq!(broker.applied_index(), quorum.applied_index());
    assert_eq!(*broker.image(), *quorum.image());
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let run = |seed| {
        let mut sim = Sim::new(seed, 5, |_| {});
        sim.drop_per_mille = 100;
        sim.delay_ticks_max = 2;
        for _ in 0..100 {
            sim.tick();
            sim.propose();
        }
        (sim.history.clone(), sim.leader(), sim.now)
    };
    assert_eq!(run(42), run(42));
}
