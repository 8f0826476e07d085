//! Automatic balancing when brokers join or leave (Skald's `auto.partition.rebalance.enable`):
//! the active controller plans with [`skald_balancer`] over the registered brokers, and starts
//! the moves as partition reassignments, so a new broker gets its share of replicas and the
//! replicas of an unregistered broker move to the others without an operator.
//!
//! It plans only on a settled cluster: every registered broker unfenced (a broker that is merely
//! down for a restart must not have its replicas moved away) and no reassignment in progress. A
//! decommissioned broker (`broker.decommissioned`, stopping for good) counts as gone: nothing
//! moves onto it.
//! The controller knows no partition sizes, so it evens out replica counts and preferred
//! leaders; `skald cluster rebalance` weighs bytes too. Leadership follows the preferred
//! replicas at the next preferred-election pass (`auto.leader.rebalance.enable`).

use std::collections::BTreeSet;

use crate::image::MetadataImage;
use crate::ops::ControllerOp;
use crate::reassignment::ReassignmentSpec;

/// The registered brokers, for telling when membership changed.
pub fn members(image: &MetadataImage) -> BTreeSet<i32> {
    image.brokers.keys().copied().collect()
}

/// What balancing the cluster takes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// A broker is fenced or a reassignment is in progress: ask again later.
    NotSettled,
    /// Nothing needs to move.
    Balanced,
    /// These reassignments balance it.
    Moves(ControllerOp),
}

/// The reassignments that balance the cluster now (see [`Balance`]).
pub fn plan(image: &MetadataImage) -> Balance {
    if image.brokers.is_empty() || image.brokers.values().any(|b| b.fenced) {
        return Balance::NotSettled;
    }
    let moving = image.topics.values().any(|topic| {
        topic
            .partitions
            .values()
            .any(|p| !p.adding_replicas.is_empty() || !p.removing_replicas.is_empty())
    });
    if moving {
        return Balance::NotSettled;
    }
    let brokers: Vec<skald_balancer::Broker> = image
        .brokers
        .values()
        .filter(|b| !crate::topic_config::is_decommissioned(image, b.broker_id))
        .map(|b| skald_balancer::Broker {
            id: b.broker_id,
            rack: b.rack.clone(),
        })
        .collect();
    let partitions: Vec<skald_balancer::Partition> = image
        .topics
        .values()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|(index, p)| skald_balancer::Partition {
                    topic: topic.name.clone(),
                    partition: *index,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    size_bytes: 0,
                })
        })
        .collect();
    let plan = skald_balancer::plan(&brokers, &partitions, &Default::default());
    if plan.moves.is_empty() {
        return Balance::Balanced;
    }
    Balance::Moves(ControllerOp::AlterPartitionReassignments {
        partitions: plan
            .moves
            .into_iter()
            .map(|m| ReassignmentSpec {
                topic: m.topic,
                partition: m.partition,
                target: Some(m.target),
            })
            .collect(),
        allow_replication_factor_change: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{manual, Harness};
    use crate::ops::ControllerReply;

    fn moves(balance: Balance) -> ControllerOp {
        match balance {
            Balance::Moves(op) => op,
            other => panic!("no moves: {other:?}"),
        }
    }

    fn targets(op: &ControllerOp) -> Vec<(String, i32, Vec<i32>)> {
        let ControllerOp::AlterPartitionReassignments { partitions, .. } = op else {
            panic!("not a reassignment: {op:?}");
        };
        partitions
            .iter()
            .map(|s| (s.topic.clone(), s.partition, s.target.clone().unwrap()))
            .collect()
    }

    #[test]
    fn a_joining_broker_gets_its_share_once_the_cluster_is_settled() {
        let mut h = Harness::new();
        h.register(2);
        let topic = manual(
            "t",
            vec![(0, vec![1]), (1, vec![2]), (2, vec![1]), (3, vec![2])],
        );
        h.run(|c, i| c.create_topics(i, &[topic], false));
        assert_eq!(plan(h.image()), Balance::Balanced);

        h.register(3);
        let op = moves(plan(h.image()));
        // 4 replicas over 3 brokers: one moves to broker 3, from broker 1 (ties go to the
        // lower id), its first partition.
        assert_eq!(targets(&op), vec![("t".to_string(), 0, vec![3])]);
        let reply = h.run(|c, i| c.plan(i, &op));
        assert_eq!(
            reply,
            ControllerReply::AlterPartitionReassignments(vec![Ok(())])
        );
        // A reassignment in progress: no new plan until it completes.
        assert_eq!(plan(h.image()), Balance::NotSettled);
    }

    #[test]
    fn a_fenced_broker_holds_off_balancing_and_an_unregistered_one_is_drained() {
        let mut h = Harness::new();
        h.register(2);
        h.register(3);
        let topic = manual("t", vec![(0, vec![1, 2]), (1, vec![2, 3]), (2, vec![3, 1])]);
        h.run(|c, i| c.create_topics(i, &[topic], false));
        h.register(4);
        let epoch = h.image().brokers[&3].broker_epoch;
        h.run(|c, i| c.fence_broker(i, 3, epoch));
        // Broker 3 is down (a restart, say): nothing moves, though broker 4 holds nothing.
        assert_eq!(plan(h.image()), Balance::NotSettled);

        // Broker 3 left for good: its replicas, out of sync since its fencing, go to broker 4,
        // the one broker without any (each partition keeps its other, in-sync replica).
        h.run(|c, i| c.unregister_broker(i, 3)).unwrap();
        let op = moves(plan(h.image()));
        assert_eq!(
            targets(&op),
            vec![
                ("t".to_string(), 1, vec![2, 4]),
                ("t".to_string(), 2, vec![4, 1]),
            ]
        );
        let reply = h.run(|c, i| c.plan(i, &op));
        assert_eq!(
            reply,
            ControllerReply::AlterPartitionReassignments(vec![Ok(()), Ok(())])
        );
    }

    #[test]
    fn nothing_moves_onto_a_decommissioned_broker() {
        let mut h = Harness::new();
        h.register(2);
        let topic = manual(
            "t",
            vec![(0, vec![1]), (1, vec![2]), (2, vec![1]), (3, vec![2])],
        );
        h.run(|c, i| c.create_topics(i, &[topic], false));
        h.register(3);
        h.image.replay(&crate::record::MetadataRecord::Config {
            resource: crate::record::ConfigResource::Broker(3),
            name: crate::topic_config::BROKER_DECOMMISSIONED.into(),
            value: Some("true".into()),
        });
        // Broker 3 holds nothing and would take a share; decommissioned, it takes none.
        assert_eq!(plan(h.image()), Balance::Balanced);
    }
}
