use std::fs;

use super::*;
use crate::raft_disk::{FileDisk, MemDisk};
use crate::record::TopicId;

fn topic(name: &str, id: u128) -> MetadataRecord {
    MetadataRecord::Topic {
        name: name.into(),
        topic_id: TopicId(id),
    }
}

fn single(node_id: i32) -> QuorumConfig {
    QuorumConfig::new(node_id, vec![node_id])
}

/// Proposes and runs one ready round; returns what completed.
fn commit<D: RaftDisk>(quorum: &mut Quorum<D>, records: Vec<MetadataRecord>, token: u64) -> Output {
    quorum.propose(records, token).unwrap();
    quorum.handle_ready().unwrap()
}

#[test]
fn a_single_voter_leads_at_once_and_commits_in_one_ready_round() {
    let mut quorum = Quorum::open(single(0), MemDisk::new(), Vec::new()).unwrap();
    assert!(quorum.is_leader());
    assert_eq!(quorum.leader(), Some(0));
    let out = commit(&mut quorum, vec![topic("orders", 1)], 7);
    assert_eq!(out.completed, vec![(7, Ok(()))]);
    assert!(out.messages.is_empty());
    let image = out.image.expect("the image changed");
    assert!(image.topic("orders").is_some());
    assert_eq!(*quorum.image(), *image);
    // Bootstrap snapshot at 1, the election's no-op at 2, the batch at 3.
    assert_eq!(quorum.applied_index(), 3);
    let status = quorum.status();
    assert_eq!(
        status.voters,
        vec![VoterStatus {
            node_id: 0,
            matched_index: Some(3),
            recently_active: Some(true),
        }]
    );
}

#[test]
fn only_a_leader_accepts_proposals_and_batches_are_bounded() {
    let mut follower = Quorum::open(
        QuorumConfig::new(1, vec![1, 2, 3]),
        MemDisk::new(),
        Vec::new(),
    )
    .unwrap();
    assert!(!follower.is_leader());
    assert_eq!(
        follower.propose(vec![topic("a", 1)], 1),
        Err(ProposeError::NotLeader { leader: None })
    );

    let mut leader = Quorum::open(single(0), MemDisk::new(), Vec::new()).unwrap();
    let huge = "x".repeat(BATCH_BYTES_MAX);
    assert!(matches!(
        leader.propose(vec![topic(&huge, 1)], 1),
        Err(ProposeError::TooLarge { .. })
    ));
    for token in 0..PROPOSALS_PENDING_MAX as u64 {
        leader
            .propose(vec![topic(&format!("t{token}"), token.into())], token)
            .unwrap();
    }
    assert_eq!(
        leader.propose(vec![topic("one-too-many", 0)], 0),
        Err(ProposeError::Dropped)
    );
    let out = leader.handle_ready().unwrap();
    assert_eq!(out.completed.len(), PROPOSALS_PENDING_MAX);
    assert!(out.completed.iter().all(|(_, result)| result.is_ok()));
}

#[test]
fn a_failed_disk_stops_the_quorum_and_fails_its_proposals_on_restart() {
    let disk = MemDisk::new();
    let mut quorum = Quorum::open(single(0), disk.clone(), Vec::new()).unwrap();
    commit(&mut quorum, vec![topic("kept", 1)], 1);
    disk.fail_next_sync();
    quorum.propose(vec![topic("lost", 2)], 2).unwrap();
    assert!(matches!(quorum.handle_ready(), Err(Error::Failed { .. })));
    assert!(matches!(quorum.handle_ready(), Err(Error::Failed { .. })));
    assert_eq!(
        quorum.propose(vec![topic("after", 3)], 3),
        Err(ProposeError::Stopped)
    );
    drop(quorum);
    disk.crash();
    let quorum = Quorum::open(single(0), disk, Vec::new()).unwrap();
    let image = quorum.image();
    assert!(image.topic("kept").is_some());
    assert!(image.topic("lost").is_none(), "it was never synced");
}

#[test]
fn a_restart_from_file_disk_rebuilds_the_same_image_across_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let config = QuorumConfig {
        snapshot_after_entries: 4,
        ..single(3)
    };
    let mut quorum = Quorum::open(
        config.clone(),
        FileDisk::open(dir.path()).unwrap(),
        Vec::new(),
    )
    .unwrap();
    for token in 0..11u64 {
        let out = commit(
            &mut quorum,
            vec![topic(&format!("t{token}"), token.into())],
            token,
        );
        assert_eq!(out.completed, vec![(token, Ok(()))]);
    }
    let status = quorum.status();
    assert!(status.snapshot_index > 8, "{status:?}");
    assert_eq!(status.first_index, status.snapshot_index + 1);
    let image = quorum.image();
    let applied = quorum.applied_index();
    drop(quorum);

    let reopened = Quorum::open(config, FileDisk::open(dir.path()).unwrap(), Vec::new()).unwrap();
    assert_eq!(*reopened.image(), *image);
    // Plus the no-op of the term it elected itself in.
    assert_eq!(reopened.applied_index(), applied + 1);
}

#[test]
fn a_torn_raft_log_tail_is_cut_off_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut quorum =
        Quorum::open(single(0), FileDisk::open(dir.path()).unwrap(), Vec::new()).unwrap();
    commit(&mut quorum, vec![topic("a", 1)], 1);
    let image = quorum.image();
    drop(quorum);
    let log = dir
        .path()
        .join(crate::log::METADATA_DIR_NAME)
        .join("raft.log");
    let intact = fs::read(&log).unwrap();
    // The start of a frame: what a crash in the middle of an append leaves.
    let mut torn = intact.clone();
    torn.extend_from_slice(&100u32.to_be_bytes());
    torn.extend_from_slice(&[0xab; 20]);
    fs::write(&log, &torn).unwrap();
    let quorum = Quorum::open(single(0), FileDisk::open(dir.path()).unwrap(), Vec::new()).unwrap();
    assert_eq!(*quorum.image(), *image);
    assert!(fs::read(&log).unwrap().starts_with(&intact));
}

#[test]
fn a_legacy_log_seeds_a_single_voter_and_nothing_else() {
    let legacy = vec![vec![topic("old", 1)], vec![topic("older", 2)]];
    let quorum = Quorum::open(single(0), MemDisk::new(), legacy.clone()).unwrap();
    assert_eq!(quorum.image().topics.len(), 2);
    assert!(matches!(
        Quorum::open(QuorumConfig::new(0, vec![0, 1, 2]), MemDisk::new(), legacy),
        Err(Error::Bootstrap(_))
    ));
    assert!(matches!(
        Quorum::open(
            QuorumConfig::new(5, vec![0, 1, 2]),
            MemDisk::new(),
            Vec::new()
        ),
        Err(Error::Bootstrap(_))
    ));
}

#[test]
fn committed_since_serves_batches_then_up_to_date() {
    let mut quorum = Quorum::open(single(0), MemDisk::new(), Vec::new()).unwrap();
    commit(&mut quorum, vec![topic("a", 1)], 1);
    commit(&mut quorum, vec![topic("b", 2), topic("c", 3)], 2);
    // Index 0 was compacted into the bootstrap snapshot at 1: its first chunk comes first.
    let mut follower = crate::MetadataFollower::new();
    let update = quorum.committed_since(0, 64);
    assert!(
        matches!(
            update,
            MetadataUpdate::SnapshotChunk {
                index: 1,
                position: 0,
                ref bytes,
                ..
            } if bytes.len() == 32
        ),
        "{update:?}"
    );
    follower.apply(update);
    while follower.applied_index() < quorum.applied_index() {
        follower.apply(quorum.serve_fetch(follower.next_fetch(), 64));
    }
    assert_eq!(*follower.image(), *quorum.image());
    assert_eq!(
        quorum.committed_since(1, usize::MAX),
        MetadataUpdate::Entries {
            batches: vec![
                (2, vec![]),
                (3, vec![topic("a", 1)]),
                (4, vec![topic("b", 2), topic("c", 3)]),
            ],
        }
    );
    assert_eq!(
        quorum.committed_since(2, 1),
        MetadataUpdate::Entries {
            batches: vec![(3, vec![topic("a", 1)])],
        },
        "at least one batch, however small the limit"
    );
    assert_eq!(quorum.committed_since(4, 1), MetadataUpdate::UpToDate);
}
