use super::*;
use crate::alter_partition::{
    AlterPartitionRequest, IsrChange, IsrMember, PartitionState, LEADER_RECOVERED,
};
use crate::controller::testing::{manual, Harness};
use crate::controller::ControllerConfig;
use crate::record::VersionedRecord;

/// Brokers 1-4 live; "orders" partition 0 on [1, 2, 3] led by 1, partition 1 on [2, 3, 1].
fn cluster() -> (Harness, TopicId) {
    let mut h = Harness::new();
    for id in 2..=4 {
        h.register(id);
    }
    h.run(|c, i| {
        c.create_topics(
            i,
            &[manual(
                "orders",
                vec![(0, vec![1, 2, 3]), (1, vec![2, 3, 1])],
            )],
            false,
        )
    });
    let orders = h.image().topic("orders").unwrap().topic_id;
    (h, orders)
}

fn spec(partition: i32, target: Option<Vec<i32>>) -> ReassignmentSpec {
    ReassignmentSpec {
        topic: "orders".into(),
        partition,
        target,
    }
}

fn reassign(h: &mut Harness, specs: &[ReassignmentSpec]) -> Vec<Result<(), TopicError>> {
    h.run(|c, i| c.alter_partition_reassignments(i, specs, true))
}

fn partition(h: &Harness, partition: i32) -> PartitionImage {
    h.image().topic("orders").unwrap().partitions[&partition].clone()
}

/// (replicas, isr, leader, removing, adding).
type Shape = (Vec<i32>, Vec<i32>, i32, Vec<i32>, Vec<i32>);

fn shape(p: &PartitionImage) -> Shape {
    (
        p.replicas.clone(),
        p.isr.clone(),
        p.leader,
        p.removing_replicas.clone(),
        p.adding_replicas.clone(),
    )
}

/// The ISR expansion partition 0's leader asks for, as the controller sees it.
fn expand(h: &Harness, orders: TopicId, isr: &[i32]) -> AlterPartitionRequest {
    let p = partition(h, 0);
    let epoch = |id: i32| h.image().brokers[&id].broker_epoch;
    AlterPartitionRequest {
        broker_id: p.leader,
        broker_epoch: epoch(p.leader),
        partitions: vec![IsrChange {
            topic_id: orders,
            partition: 0,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: isr
                .iter()
                .map(|&broker_id| IsrMember {
                    broker_id,
                    broker_epoch: epoch(broker_id),
                })
                .collect(),
            leader_recovery_state: LEADER_RECOVERED,
        }],
    }
}

/// Commits an AlterPartition the controller must accept.
fn accept(h: &mut Harness, request: &AlterPartitionRequest) {
    let reply = h.run(|c, i| c.alter_partition(i, request));
    assert!(
        reply.as_ref().is_ok_and(|r| r.iter().all(Result::is_ok)),
        "{reply:?}"
    );
}

#[test]
fn a_move_keeps_the_union_until_the_new_replica_joins_the_isr_then_completes() {
    let (mut h, orders) = cluster();
    assert_eq!(
        reassign(&mut h, &[spec(0, Some(vec![2, 3, 4]))]),
        vec![Ok(())]
    );
    let p = partition(&h, 0);
    assert_eq!(
        shape(&p),
        (vec![2, 3, 4, 1], vec![1, 2, 3], 1, vec![1], vec![4])
    );
    assert_eq!((p.leader_epoch, p.partition_epoch), (0, 1));
    assert_eq!(
        Controller::list_partition_reassignments(h.image(), None),
        vec![OngoingReassignment {
            topic: "orders".into(),
            partition: 0,
            replicas: vec![2, 3, 4, 1],
            adding_replicas: vec![4],
            removing_replicas: vec![1],
        }]
    );

    // The leader adds the caught-up replica 4: the same change completes the reassignment,
    // drops the removed leader and elects the first target replica in the ISR.
    let request = expand(&h, orders, &[1, 2, 3, 4]);
    let reply = h.run(|c, i| c.alter_partition(i, &request));
    assert_eq!(
        reply,
        Ok(vec![Ok(PartitionState {
            leader: 2,
            leader_epoch: 1,
            isr: vec![2, 3, 4],
            partition_epoch: 2,
        })])
    );
    let p = partition(&h, 0);
    assert_eq!(shape(&p), (vec![2, 3, 4], vec![2, 3, 4], 2, vec![], vec![]));
    assert!(Controller::list_partition_reassignments(h.image(), None).is_empty());
    // Partition 1 never moved.
    assert_eq!(partition(&h, 1).replicas, vec![2, 3, 1]);
}

#[test]
fn a_partial_expansion_does_not_complete_and_a_kept_leader_stays() {
    let (mut h, orders) = cluster();
    // Replace 3 and add 4: two new replicas, the leader 1 stays.
    reassign(&mut h, &[spec(0, Some(vec![1, 2, 4]))]);
    assert_eq!(
        shape(&partition(&h, 0)),
        (vec![1, 2, 4, 3], vec![1, 2, 3], 1, vec![3], vec![4])
    );
    // The ISR shrinks (3 fell behind) without completing: 4 is not in it yet.
    let request = expand(&h, orders, &[1, 2]);
    accept(&mut h, &request);
    assert_eq!(
        shape(&partition(&h, 0)),
        (vec![1, 2, 4, 3], vec![1, 2], 1, vec![3], vec![4])
    );
    let request = expand(&h, orders, &[1, 2, 4]);
    accept(&mut h, &request);
    let p = partition(&h, 0);
    assert_eq!(shape(&p), (vec![1, 2, 4], vec![1, 2, 4], 1, vec![], vec![]));
    assert_eq!(p.leader_epoch, 0, "the leader did not change");
}

#[test]
fn reordering_and_removal_complete_at_once() {
    let (mut h, _) = cluster();
    assert_eq!(
        reassign(
            &mut h,
            &[spec(0, Some(vec![3, 2, 1])), spec(1, Some(vec![3, 1]))]
        ),
        vec![Ok(()), Ok(())]
    );
    assert_eq!(
        shape(&partition(&h, 0)),
        (vec![3, 2, 1], vec![1, 2, 3], 1, vec![], vec![])
    );
    // Partition 1's leader 2 is removed: 3 leads.
    let p = partition(&h, 1);
    assert_eq!(shape(&p), (vec![3, 1], vec![3, 1], 3, vec![], vec![]));
    assert_eq!(p.leader_epoch, 1);
    // The same target again changes nothing: no record.
    let planned =
        h.controller
            .alter_partition_reassignments(&h.image, &[spec(1, Some(vec![3, 1]))], true);
    assert_eq!(planned.reply, vec![Ok(())]);
    assert!(planned.records.is_empty());
}

#[test]
fn cancel_reverts_to_the_original_replicas_and_cancel_of_nothing_is_refused() {
    let (mut h, orders) = cluster();
    reassign(&mut h, &[spec(0, Some(vec![2, 3, 4]))]);
    assert_eq!(reassign(&mut h, &[spec(0, None)]), vec![Ok(())]);
    // Kafka's revert drops the added replicas from the list as it stands (target first).
    let p = partition(&h, 0);
    assert_eq!(shape(&p), (vec![2, 3, 1], vec![1, 2, 3], 1, vec![], vec![]));
    assert_eq!((p.leader_epoch, p.partition_epoch), (0, 2));
    assert_eq!(
        reassign(&mut h, &[spec(0, None)]),
        vec![Err(TopicError::NoReassignmentInProgress)]
    );

    // An added replica that joined the ISR and leads leaves both on cancel.
    reassign(&mut h, &[spec(0, Some(vec![4, 1, 2, 3]))]);
    let request = expand(&h, orders, &[1, 2, 3, 4]);
    accept(&mut h, &request);
    // An RF increase completes as soon as 4 is in: nothing left to cancel.
    assert_eq!(
        shape(&partition(&h, 0)),
        (vec![4, 1, 2, 3], vec![1, 2, 3, 4], 1, vec![], vec![])
    );
    reassign(&mut h, &[spec(0, Some(vec![4, 1]))]);
    assert_eq!(
        shape(&partition(&h, 0)),
        (vec![4, 1], vec![1, 4], 1, vec![], vec![])
    );
    reassign(&mut h, &[spec(0, Some(vec![2, 3]))]);
    h.change(orders, 0, Some(2), Some(vec![2, 4, 1]));
    assert_eq!(
        shape(&partition(&h, 0)),
        (vec![2, 3, 1, 4], vec![2, 4, 1], 2, vec![1, 4], vec![2, 3])
    );
    assert_eq!(reassign(&mut h, &[spec(0, None)]), vec![Ok(())]);
    assert_eq!(
        shape(&partition(&h, 0)),
        (vec![1, 4], vec![4, 1], 1, vec![], vec![])
    );
}

#[test]
fn bad_input_gets_kafkas_errors_and_changes_nothing() {
    let (mut h, _) = cluster();
    let before = h.image().clone();
    let invalid = |message: &str| Err(TopicError::InvalidReplicaAssignment(message.into()));
    let planned = h.controller.alter_partition_reassignments(
        &h.image,
        &[
            spec(0, Some(vec![2, 3, 9])),
            spec(0, Some(vec![2, 2, 3])),
            spec(0, Some(vec![])),
            spec(7, Some(vec![1, 2, 3])),
            ReassignmentSpec {
                topic: "missing".into(),
                partition: 0,
                target: Some(vec![1]),
            },
            spec(1, None),
        ],
        true,
    );
    assert_eq!(
        planned.reply,
        vec![
            invalid("The manual partition assignment includes broker 9, but no such broker is registered."),
            invalid("The manual partition assignment includes the broker 2 more than once."),
            invalid("The manual partition assignment includes an empty replica list."),
            Err(TopicError::UnknownTopicOrPartition),
            Err(TopicError::UnknownTopicOrPartition),
            Err(TopicError::NoReassignmentInProgress),
        ]
    );
    assert!(planned.records.is_empty());

    // Without allowReplicationFactorChange (v1) a change of size is refused; a good partition
    // in the same request still moves.
    let reply = h.run(|c, i| {
        c.alter_partition_reassignments(
            i,
            &[spec(0, Some(vec![1, 2])), spec(1, Some(vec![2, 3, 4]))],
            false,
        )
    });
    assert_eq!(
        reply,
        vec![
            Err(TopicError::InvalidReplicationFactor(
                "The replication factor is changed from 3 to 2 but allowReplicationFactorChange is false".into()
            )),
            Ok(())
        ]
    );
    assert_eq!(
        partition(&h, 0),
        before.topic("orders").unwrap().partitions[&0]
    );
    assert_eq!(partition(&h, 1).adding_replicas, vec![4]);
}

#[test]
fn the_reassignment_lives_in_the_records_so_a_new_controller_completes_it() {
    let (mut h, orders) = cluster();
    reassign(&mut h, &[spec(0, Some(vec![2, 3, 4]))]);
    // A snapshot (what a new controller or a restarted node loads) keeps the reassignment.
    let mut restored = MetadataImage::default();
    for record in h.image().to_records() {
        let json = serde_json::to_string(&VersionedRecord::from(record)).unwrap();
        restored.replay(
            &serde_json::from_str::<VersionedRecord>(&json)
                .unwrap()
                .record,
        );
    }
    assert_eq!(&restored, h.image());
    let successor = Controller::new(ControllerConfig {
        node_id: 2,
        num_partitions: 1,
        default_replication_factor: 1,
    });
    let request = expand(&h, orders, &[1, 2, 3, 4]);
    let planned = successor.alter_partition(&restored, &request);
    restored.replay_batch(&planned.records);
    assert_eq!(
        shape(&restored.topic("orders").unwrap().partitions[&0]),
        (vec![2, 3, 4], vec![2, 3, 4], 2, vec![], vec![])
    );
}

#[test]
fn records_written_before_reassignments_still_read() {
    let old = r#"{"version":1,"type":"Partition","topic_id":"00000000000000000000000000000001","partition":0,"replicas":[1],"isr":[1],"leader":1,"leader_epoch":0,"partition_epoch":0}"#;
    let record = serde_json::from_str::<VersionedRecord>(old).unwrap().record;
    let MetadataRecord::Partition {
        removing_replicas,
        adding_replicas,
        ..
    } = &record
    else {
        panic!("not a partition record: {record:?}");
    };
    assert!(removing_replicas.is_empty() && adding_replicas.is_empty());
    // And a record without a reassignment is written as before.
    assert_eq!(
        serde_json::to_string(&VersionedRecord::from(record)).unwrap(),
        old
    );
    let change = r#"{"version":1,"type":"PartitionChange","topic_id":"00000000000000000000000000000001","partition":0,"isr":[1]}"#;
    let record = serde_json::from_str::<VersionedRecord>(change)
        .unwrap()
        .record;
    assert_eq!(
        serde_json::to_string(&VersionedRecord::from(record)).unwrap(),
        change
    );
}

#[test]
fn fencing_the_leader_mid_reassignment_keeps_the_reassignment() {
    let (mut h, orders) = cluster();
    reassign(&mut h, &[spec(0, Some(vec![2, 3, 4]))]);
    let epoch = h.image().brokers[&1].broker_epoch;
    h.run(|c, i| c.fence_broker(i, 1, epoch));
    let p = partition(&h, 0);
    assert_eq!(
        shape(&p),
        (vec![2, 3, 4, 1], vec![2, 3], 2, vec![1], vec![4])
    );
    let request = expand(&h, orders, &[2, 3, 4]);
    accept(&mut h, &request);
    assert_eq!(
        shape(&partition(&h, 0)),
        (vec![2, 3, 4], vec![2, 3, 4], 2, vec![], vec![])
    );
}
