//! `apply_metadata` driven by deltas: a commit opens, removes and re-roles exactly the partitions
//! it changed, and a chain of deltas leaves the broker as one delta from the empty image would.

use std::collections::BTreeMap;

use skald_controller::{ImageDelta, MetadataImage, MetadataRecord, TopicId};

use super::*;
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::replication::state::{Role, Transition};

const ME: i32 = 1;

fn server_config(log_dir: &Path) -> ServerConfig {
    ServerConfig::from_properties(BTreeMap::from([
        ("node.id".to_string(), ME.to_string()),
        ("log.dirs".to_string(), log_dir.display().to_string()),
    ]))
    .expect("config")
}

fn partition(topic_id: u128, partition: i32, replicas: &[i32]) -> MetadataRecord {
    MetadataRecord::Partition {
        topic_id: TopicId(topic_id),
        partition,
        replicas: replicas.to_vec(),
        isr: replicas.to_vec(),
        leader: replicas[0],
        leader_epoch: 0,
        partition_epoch: 0,
        removing_replicas: Vec::new(),
        adding_replicas: Vec::new(),
    }
}

fn new_leader(topic_id: u128, partition: i32, leader: i32, isr: &[i32]) -> MetadataRecord {
    MetadataRecord::PartitionChange {
        topic_id: TopicId(topic_id),
        partition,
        leader: Some(leader),
        isr: Some(isr.to_vec()),
        replicas: None,
        removing_replicas: None,
        adding_replicas: None,
    }
}

/// Topic `orders` (id 7): partitions 0 and 1 on this broker (leading), 2 elsewhere; topic
/// `audit` (id 8): partition 0 followed here.
fn cluster() -> MetadataImage {
    let mut image = MetadataImage::default();
    image.replay_batch(&[
        MetadataRecord::Topic {
            name: "orders".into(),
            topic_id: TopicId(7),
        },
        partition(7, 0, &[1, 2]),
        partition(7, 1, &[1, 2]),
        partition(7, 2, &[2, 3]),
        MetadataRecord::Topic {
            name: "audit".into(),
            topic_id: TopicId(8),
        },
        partition(8, 0, &[2, 1]),
    ]);
    image
}

/// Applies `after` as the publisher does, from `before`.
fn apply(
    replicas: &ReplicaManager,
    config: &ServerConfig,
    before: &MetadataImage,
    after: &MetadataImage,
) -> Vec<RoleChange> {
    replicas.apply_metadata(before, after, &ImageDelta::between(before, after), config)
}

fn change(topic: &str, partition: i32, transition: Transition) -> RoleChange {
    RoleChange {
        topic: topic.into(),
        partition,
        transition,
    }
}

/// Each hosted partition with its role: leader epoch when led, leader and epoch when followed.
fn hosted(replicas: &ReplicaManager) -> BTreeMap<(String, i32), (Option<i32>, i32)> {
    replicas
        .all()
        .iter()
        .map(|p| {
            let role = match p.role() {
                Role::Leader(state) => (None, state.leader_epoch),
                Role::Follower {
                    leader,
                    leader_epoch,
                } => (Some(leader), leader_epoch),
                Role::Offline => (Some(-1), -1),
            };
            ((p.topic.clone(), p.partition), role)
        })
        .collect()
}

#[test]
fn each_commit_changes_the_partitions_it_names_and_no_others() {
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(dir.path());
    let replicas = ReplicaManager::open(&config, Metrics::new().unwrap()).unwrap();

    let empty = MetadataImage::default();
    let first = cluster();
    let mut changes = apply(&replicas, &config, &empty, &first);
    changes.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    assert_eq!(
        changes,
        vec![
            change(
                "audit",
                0,
                Transition::BecameFollower {
                    leader: 2,
                    leader_epoch: 0
                }
            ),
            change("orders", 0, Transition::BecameLeader { leader_epoch: 0 }),
            change("orders", 1, Transition::BecameLeader { leader_epoch: 0 }),
        ]
    );

    // Broker 2 takes over orders-1; orders-0 only loses broker 2 from its ISR.
    let mut second = first.clone();
    second.replay_batch(&[new_leader(7, 1, 2, &[2]), new_leader(7, 0, 1, &[1])]);
    assert_eq!(
        apply(&replicas, &config, &first, &second),
        vec![change(
            "orders",
            1,
            Transition::BecameFollower {
                leader: 2,
                leader_epoch: 1
            }
        )]
    );
    let Role::Leader(orders_0) = replicas.get("orders", 0).unwrap().role() else {
        panic!("orders-0 is still led here");
    };
    assert_eq!(orders_0.isr, vec![1]);

    // A commit that touches no partition placed here changes nothing here.
    let mut third = second.clone();
    third.replay(&new_leader(7, 2, 3, &[3]));
    assert_eq!(apply(&replicas, &config, &second, &third), Vec::new());

    // audit is deleted; orders-0 moves away from this broker (a finished reassignment).
    let mut fourth = third.clone();
    fourth.replay_batch(&[
        MetadataRecord::RemoveTopic {
            topic_id: TopicId(8),
        },
        MetadataRecord::PartitionChange {
            topic_id: TopicId(7),
            partition: 0,
            leader: Some(2),
            isr: Some(vec![2]),
            replicas: Some(vec![2]),
            removing_replicas: None,
            adding_replicas: None,
        },
    ]);
    assert_eq!(apply(&replicas, &config, &third, &fourth), Vec::new());
    assert_eq!(
        hosted(&replicas),
        BTreeMap::from([(("orders".to_string(), 1), (Some(2), 1))])
    );
    assert!(replicas.get("audit", 0).is_none());
    assert!(!dir.path().join("audit-0").exists());
    assert!(!dir.path().join("orders-0").exists());
    assert!(dir.path().join("orders-1").exists());

    // The same end state as one delta from nothing, on another broker's disk.
    let other_dir = tempfile::tempdir().unwrap();
    let other_config = server_config(other_dir.path());
    let other = ReplicaManager::open(&other_config, Metrics::new().unwrap()).unwrap();
    apply(&other, &other_config, &empty, &fourth);
    assert_eq!(hosted(&other), hosted(&replicas));
}

#[test]
fn a_topic_deleted_and_created_again_under_its_name_gets_a_new_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(dir.path());
    let replicas = ReplicaManager::open(&config, Metrics::new().unwrap()).unwrap();
    let first = cluster();
    apply(&replicas, &config, &MetadataImage::default(), &first);
    let old = replicas.get("orders", 0).unwrap();
    let mut second = first.clone();
    second.replay_batch(&[
        MetadataRecord::RemoveTopic {
            topic_id: TopicId(7),
        },
        MetadataRecord::Topic {
            name: "orders".into(),
            topic_id: TopicId(70),
        },
        partition(70, 0, &[1]),
    ]);
    apply(&replicas, &config, &first, &second);
    // The old topic's log is closed and gone; the new topic's is a new one.
    assert!(old.with_log(|_| ()).is_none());
    let orders_0 = replicas.get("orders", 0).unwrap();
    assert_eq!(orders_0.topic_id, TopicId(70));
    assert_eq!(read_topic_id(&orders_0.dir()), Some(TopicId(70)));
    assert!(replicas.get("orders", 1).is_none());
    assert_eq!(replicas.all().len(), 2, "orders-0 and audit-0");
}
