//! Leader elections beyond the clean ones fencing does: unclean elections (a live replica outside
//! the ISR leads when no ISR member can, `unclean.leader.election.enable`) and preferred leader
//! elections (leadership goes back to each partition's first replica, Kafka's
//! `auto.leader.rebalance.enable`), and both on request (Kafka's ElectLeaders API).

use serde::{Deserialize, Serialize};

use crate::controller::{Planned, NO_LEADER};
use crate::image::{MetadataImage, PartitionImage, TopicImage};
use crate::record::MetadataRecord;

/// The topic config (and broker property of the same name) that allows unclean elections.
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

/// The most leaderships one preferred-election pass moves (Kafka's MAX_ELECTIONS_PER_IMBALANCE):
/// one committed batch stays small, and the next pass, scheduled at once, moves the rest.
pub const PREFERRED_ELECTIONS_PER_PASS_MAX: usize = 1000;

/// The controller's election settings, Kafka's defaults unless the server configuration says
/// otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionConfig {
    /// `unclean.leader.election.enable`: the default for topics that do not set it.
    pub unclean_leader_election_enable: bool,
    /// `auto.leader.rebalance.enable`: whether preferred leader elections run periodically.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds` (or Skald's `leader.imbalance.check.interval.ms`):
    /// how often they run.
    pub leader_imbalance_check_interval_ms: u64,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            unclean_leader_election_enable: false,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_ms: 300_000,
        }
    }
}

/// Whether `topic` allows unclean elections: its own config, else the broker default. A value the
/// config validation let through is `true`/`false` in any case (Kafka's boolean parsing).
pub fn unclean_leader_election_enabled(topic: &TopicImage, default: bool) -> bool {
    topic
        .configs
        .get(UNCLEAN_LEADER_ELECTION_ENABLE)
        .map_or(default, |value| value.trim().eq_ignore_ascii_case("true"))
}

/// Whether a broker is registered and unfenced: only such a broker may lead or join an ISR.
pub fn is_live(image: &MetadataImage, broker_id: i32) -> bool {
    image
        .brokers
        .get(&broker_id)
        .is_some_and(|broker| !broker.fenced)
}

/// The election an ElectLeaders request asks for (Kafka's `ElectionType`, 0 and 1 on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionType {
    /// Leadership goes to the first replica, if it is live and in sync.
    Preferred,
    /// A partition without a leader gets one even if no in-sync replica is live.
    Unclean,
}

impl ElectionType {
    /// The wire value's election, if it names one.
    pub fn from_wire(value: i8) -> Option<ElectionType> {
        match value {
            0 => Some(ElectionType::Preferred),
            1 => Some(ElectionType::Unclean),
            _ => None,
        }
    }
}

/// Why one partition of an ElectLeaders request elected no leader. The broker maps each variant
/// to the Kafka error code of the same name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ElectionError {
    #[error("Leader election not needed for topic partition.")]
    ElectionNotNeeded,
    #[error("The preferred leader was not available.")]
    PreferredLeaderNotAvailable,
    #[error("Eligible topic partition leaders are not available.")]
    EligibleLeadersNotAvailable,
    #[error("This server does not host this topic-partition.")]
    UnknownTopicOrPartition,
}

/// One partition's outcome of an ElectLeaders request: topic, partition, and whether it elected.
pub type ElectionResult = (String, i32, Result<(), ElectionError>);

/// The leadership change an election of `election_type` makes to one partition, or why it makes
/// none. Preferred: the first replica leads, if it is live and in the ISR. Unclean: a partition
/// without a leader gets its first live ISR member (a clean election), else its first live
/// replica with an ISR of just that replica.
pub fn elect(
    image: &MetadataImage,
    topic: &TopicImage,
    partition: i32,
    state: &PartitionImage,
    election_type: ElectionType,
) -> Result<MetadataRecord, ElectionError> {
    let change = |leader: i32, isr: Option<Vec<i32>>| MetadataRecord::PartitionChange {
        topic_id: topic.topic_id,
        partition,
        leader: Some(leader),
        isr,
        replicas: None,
        removing_replicas: None,
        adding_replicas: None,
    };
    match election_type {
        ElectionType::Preferred => {
            let preferred = state
                .replicas
                .first()
                .copied()
                .ok_or(ElectionError::PreferredLeaderNotAvailable)?;
            if preferred == state.leader {
                Err(ElectionError::ElectionNotNeeded)
            } else if preferred != NO_LEADER
                && state.isr.contains(&preferred)
                && is_live(image, preferred)
            {
                Ok(change(preferred, None))
            } else {
                Err(ElectionError::PreferredLeaderNotAvailable)
            }
        }
        ElectionType::Unclean => {
            if state.leader != NO_LEADER {
                return Err(ElectionError::ElectionNotNeeded);
            }
            let live = |id: &&i32| is_live(image, **id);
            if let Some(&leader) = state
                .replicas
                .iter()
                .filter(|id| state.isr.contains(id))
                .find(live)
            {
                return Ok(change(leader, None));
            }
            let leader = *state
                .replicas
                .iter()
                .find(live)
                .ok_or(ElectionError::EligibleLeadersNotAvailable)?;
            tracing::warn!(
                topic = topic.name,
                partition,
                leader,
                "unclean leader election requested: no in-sync replica is live"
            );
            Ok(change(leader, Some(vec![leader])))
        }
    }
}

/// Preferred leader elections: every partition whose first replica is live and in the ISR but
/// does not lead gets it back as leader (a `PartitionChange`, so the leader epoch bumps). At most
/// [`PREFERRED_ELECTIONS_PER_PASS_MAX`] records, in topic-name and partition order.
pub fn preferred_leader_elections(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics.values() {
        for (partition, state) in &topic.partitions {
            if records.len() >= PREFERRED_ELECTIONS_PER_PASS_MAX {
                return records;
            }
            if let Ok(record) = elect(image, topic, *partition, state, ElectionType::Preferred) {
                records.push(record);
            }
        }
    }
    records
}

/// Plans an ElectLeaders request: the named partitions' outcomes in request order (a partition
/// named twice is elected once and answered alike), or, with `None`, Kafka's answer for every
/// partition: those where an election was needed, elected or not. That sweep stops after
/// [`PREFERRED_ELECTIONS_PER_PASS_MAX`] elections, so one committed batch stays small; the rest
/// are left for the next request (or the periodic preferred pass).
pub fn elect_leaders(
    image: &MetadataImage,
    election_type: ElectionType,
    partitions: Option<&[(String, i32)]>,
) -> Planned<Vec<ElectionResult>> {
    let mut records = Vec::new();
    let mut reply = Vec::new();
    let Some(partitions) = partitions else {
        'topics: for topic in image.topics.values() {
            for (partition, state) in &topic.partitions {
                if records.len() >= PREFERRED_ELECTIONS_PER_PASS_MAX {
                    break 'topics;
                }
                let outcome = match elect(image, topic, *partition, state, election_type) {
                    Err(ElectionError::ElectionNotNeeded) => continue,
                    Ok(record) => {
                        records.push(record);
                        Ok(())
                    }
                    Err(err) => Err(err),
                };
                reply.push((topic.name.clone(), *partition, outcome));
            }
        }
        return Planned { records, reply };
    };
    let mut answered: std::collections::HashMap<(&str, i32), Result<(), ElectionError>> =
        std::collections::HashMap::new();
    for (name, partition) in partitions {
        let outcome = answered
            .entry((name.as_str(), *partition))
            .or_insert_with(|| {
                let topic = image
                    .topic(name)
                    .ok_or(ElectionError::UnknownTopicOrPartition)?;
                let state = topic
                    .partitions
                    .get(partition)
                    .ok_or(ElectionError::UnknownTopicOrPartition)?;
                records.push(elect(image, topic, *partition, state, election_type)?);
                Ok(())
            })
            .clone();
        reply.push((name.clone(), *partition, outcome));
    }
    Planned { records, reply }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{manual, Harness};
    use crate::controller::NO_LEADER;
    use crate::ops::{ControllerOp, ControllerReply};

    /// (leader, isr, leader epoch) of each partition of `topic`.
    fn leaders(h: &Harness, topic: &str) -> Vec<(i32, Vec<i32>, i32)> {
        h.image()
            .topic(topic)
            .unwrap()
            .partitions
            .values()
            .map(|p| (p.leader, p.isr.clone(), p.leader_epoch))
            .collect()
    }

    fn unclean(h: &mut Harness, topic: &str, value: &str) {
        let mut spec = manual(topic, vec![(0, vec![1, 2, 3])]);
        spec.configs = vec![(UNCLEAN_LEADER_ELECTION_ENABLE.into(), Some(value.into()))];
        h.run(|c, i| c.create_topics(i, &[spec], false));
    }

    #[test]
    fn fencing_the_last_isr_member_elects_a_live_replica_only_where_unclean_is_allowed() {
        let mut h = Harness::new();
        h.register(2);
        h.register(3);
        unclean(&mut h, "unclean", "TRUE");
        unclean(&mut h, "clean", "false");
        h.run(|c, i| c.create_topics(i, &[manual("default", vec![(0, vec![1, 2, 3])])], false));
        // Brokers 2 and 3 fall out of every ISR (the leader shrank it), so 1 alone is in sync.
        for topic in ["unclean", "clean", "default"] {
            let topic_id = h.image().topic(topic).unwrap().topic_id;
            h.change(topic_id, 0, None, Some(vec![1]));
        }
        let epoch_1 = h.image().brokers[&1].broker_epoch;
        h.run(|c, i| c.fence_broker(i, 1, epoch_1));
        // The first live replica leads alone, with a new leader epoch.
        assert_eq!(leaders(&h, "unclean"), vec![(2, vec![2], 1)]);
        // Without unclean elections the partition goes offline, keeping its last ISR member.
        assert_eq!(leaders(&h, "clean"), vec![(NO_LEADER, vec![1], 1)]);
        assert_eq!(leaders(&h, "default"), vec![(NO_LEADER, vec![1], 1)]);
    }

    #[test]
    fn the_broker_default_allows_unclean_elections_for_topics_that_do_not_say() {
        let mut h = Harness::with_elections(ElectionConfig {
            unclean_leader_election_enable: true,
            ..ElectionConfig::default()
        });
        h.register(2);
        h.register(3);
        unclean(&mut h, "clean", "false");
        h.run(|c, i| c.create_topics(i, &[manual("default", vec![(0, vec![1, 2])])], false));
        for topic in ["clean", "default"] {
            let topic_id = h.image().topic(topic).unwrap().topic_id;
            h.change(topic_id, 0, None, Some(vec![1]));
        }
        let epoch_1 = h.image().brokers[&1].broker_epoch;
        h.run(|c, i| c.fence_broker(i, 1, epoch_1));
        assert_eq!(leaders(&h, "default"), vec![(2, vec![2], 1)]);
        assert_eq!(leaders(&h, "clean"), vec![(NO_LEADER, vec![1], 1)]);
    }

    #[test]
    fn an_unclean_election_picks_no_fenced_replica_and_none_when_every_replica_is_down() {
        let mut h = Harness::new();
        h.register(2);
        h.register(3);
        unclean(&mut h, "unclean", "true");
        let topic_id = h.image().topic("unclean").unwrap().topic_id;
        h.change(topic_id, 0, None, Some(vec![1]));
        let epoch = |h: &Harness, id: i32| h.image().brokers[&id].broker_epoch;
        // Broker 2, first in line, is down: broker 3 is elected.
        let epoch_2 = epoch(&h, 2);
        h.run(|c, i| c.fence_broker(i, 2, epoch_2));
        let epoch_1 = epoch(&h, 1);
        h.run(|c, i| c.fence_broker(i, 1, epoch_1));
        assert_eq!(leaders(&h, "unclean"), vec![(3, vec![3], 1)]);
        // Then broker 3 goes too: nobody is left, the partition is offline with ISR [3].
        let epoch_3 = epoch(&h, 3);
        h.run(|c, i| c.fence_broker(i, 3, epoch_3));
        assert_eq!(leaders(&h, "unclean"), vec![(NO_LEADER, vec![3], 2)]);
    }

    #[test]
    fn unfencing_a_replica_outside_the_isr_elects_it_only_where_unclean_is_allowed() {
        let mut h = Harness::new();
        h.register(2);
        h.register(3);
        unclean(&mut h, "unclean", "true");
        unclean(&mut h, "clean", "false");
        for topic in ["unclean", "clean"] {
            let topic_id = h.image().topic(topic).unwrap().topic_id;
            h.change(topic_id, 0, None, Some(vec![1]));
        }
        let epoch = |h: &Harness, id: i32| h.image().brokers[&id].broker_epoch;
        let (epoch_1, epoch_2, epoch_3) = (epoch(&h, 1), epoch(&h, 2), epoch(&h, 3));
        h.run(|c, i| c.fence_broker(i, 3, epoch_3));
        h.run(|c, i| c.fence_broker(i, 2, epoch_2));
        h.run(|c, i| c.fence_broker(i, 1, epoch_1));
        // Every replica down: both offline, keeping their last ISR member.
        assert_eq!(leaders(&h, "unclean"), vec![(NO_LEADER, vec![1], 1)]);
        assert_eq!(leaders(&h, "clean"), vec![(NO_LEADER, vec![1], 1)]);
        // Broker 2 returns: out of sync, it leads only where unclean elections are allowed.
        h.run(|c, i| c.unfence_broker(i, 2, epoch_2));
        assert_eq!(leaders(&h, "unclean"), vec![(2, vec![2], 2)]);
        assert_eq!(leaders(&h, "clean"), vec![(NO_LEADER, vec![1], 1)]);
        // Broker 1, the last ISR member, returns: the clean partition is back; the unclean one
        // keeps its new leader (broker 1 rejoins its ISR only through replication).
        h.run(|c, i| c.unfence_broker(i, 1, epoch_1));
        assert_eq!(leaders(&h, "clean"), vec![(1, vec![1], 2)]);
        assert_eq!(leaders(&h, "unclean"), vec![(2, vec![2], 2)]);
    }

    #[test]
    fn preferred_elections_move_leadership_back_to_the_first_replica_when_it_is_in_sync() {
        let mut h = Harness::new();
        h.register(2);
        h.register(3);
        h.run(|c, i| {
            c.create_topics(
                i,
                &[manual(
                    "orders",
                    vec![(0, vec![1, 2, 3]), (1, vec![2, 3, 1]), (2, vec![3, 1, 2])],
                )],
                false,
            )
        });
        assert_eq!(preferred_leader_elections(h.image()), vec![]);
        let orders = h.image().topic("orders").unwrap().topic_id;
        let epoch_1 = h.image().brokers[&1].broker_epoch;
        let epoch_3 = h.image().brokers[&3].broker_epoch;
        h.run(|c, i| c.fence_broker(i, 1, epoch_1));
        h.run(|c, i| c.fence_broker(i, 3, epoch_3));
        assert_eq!(
            leaders(&h, "orders"),
            vec![(2, vec![2], 1), (2, vec![2], 0), (2, vec![2], 1)]
        );
        h.run(|c, i| c.unfence_broker(i, 1, epoch_1));
        h.run(|c, i| c.unfence_broker(i, 3, epoch_3));
        // Back, but not in sync: nothing moves.
        assert_eq!(preferred_leader_elections(h.image()), vec![]);
        // Broker 1 catches up on partition 0, broker 3 on partition 2, and broker 1 on 1 (where
        // broker 2 is already preferred).
        h.change(orders, 0, None, Some(vec![2, 1]));
        h.change(orders, 1, None, Some(vec![2, 1]));
        h.change(orders, 2, None, Some(vec![2, 3]));
        let records = preferred_leader_elections(h.image());
        assert_eq!(
            records,
            vec![
                MetadataRecord::PartitionChange {
                    topic_id: orders,
                    partition: 0,
                    leader: Some(1),
                    isr: None,
                    replicas: None,
                    removing_replicas: None,
                    adding_replicas: None,
                },
                MetadataRecord::PartitionChange {
                    topic_id: orders,
                    partition: 2,
                    leader: Some(3),
                    isr: None,
                    replicas: None,
                    removing_replicas: None,
                    adding_replicas: None,
                },
            ]
        );
        h.replay(&records);
        assert_eq!(
            leaders(&h, "orders"),
            vec![(1, vec![2, 1], 2), (2, vec![2, 1], 0), (3, vec![2, 3], 2)]
        );
        assert_eq!(preferred_leader_elections(h.image()), vec![]);
        // A fenced preferred replica is never elected, in the ISR or not.
        let epoch_3 = h.image().brokers[&3].broker_epoch;
        h.run(|c, i| c.fence_broker(i, 3, epoch_3));
        let epoch_3 = h.image().brokers[&3].broker_epoch;
        assert!(h.image().brokers[&3].fenced);
        h.change(orders, 2, None, Some(vec![2, 3]));
        assert_eq!(preferred_leader_elections(h.image()), vec![]);
        h.run(|c, i| c.unfence_broker(i, 3, epoch_3));
        assert_eq!(preferred_leader_elections(h.image()).len(), 1);
    }

    #[test]
    fn a_preferred_election_pass_is_bounded() {
        let mut h = Harness::new();
        h.register(2);
        let count = PREFERRED_ELECTIONS_PER_PASS_MAX as i32 + 5;
        let assignments = (0..count).map(|p| (p, vec![1, 2])).collect();
        h.run(|c, i| c.create_topics(i, &[manual("wide", assignments)], false));
        let epoch_1 = h.image().brokers[&1].broker_epoch;
        h.run(|c, i| c.fence_broker(i, 1, epoch_1));
        h.run(|c, i| c.unfence_broker(i, 1, epoch_1));
        let wide = h.image().topic("wide").unwrap().topic_id;
        let rejoin: Vec<MetadataRecord> = (0..count)
            .map(|partition| MetadataRecord::PartitionChange {
                topic_id: wide,
                partition,
                leader: None,
                isr: Some(vec![2, 1]),
                replicas: None,
                removing_replicas: None,
                adding_replicas: None,
            })
            .collect();
        h.replay(&rejoin);
        let first = preferred_leader_elections(h.image());
        assert_eq!(first.len(), PREFERRED_ELECTIONS_PER_PASS_MAX);
        h.replay(&first);
        let second = preferred_leader_elections(h.image());
        assert_eq!(second.len(), 5);
        h.replay(&second);
        assert!(h
            .image()
            .topic("wide")
            .unwrap()
            .partitions
            .values()
            .all(|p| p.leader == 1));
    }

    /// Plans and commits an ElectLeaders request through [`Controller::plan`], as the quorum
    /// would; returns the reply and how many records it committed.
    fn elect_leaders(
        h: &mut Harness,
        election_type: ElectionType,
        partitions: Option<&[(&str, i32)]>,
    ) -> (Vec<ElectionResult>, usize) {
        let op = ControllerOp::ElectLeaders {
            election_type,
            partitions: partitions.map(|partitions| {
                partitions
                    .iter()
                    .map(|(topic, partition)| (topic.to_string(), *partition))
                    .collect()
            }),
        };
        let mut committed = 0;
        let reply = h.run(|c, i| {
            let planned = c.plan(i, &op);
            committed = planned.records.len();
            planned
        });
        let ControllerReply::ElectLeaders(results) = reply else {
            panic!("another reply: {reply:?}");
        };
        (results, committed)
    }

    fn outcome(topic: &str, partition: i32, result: Result<(), ElectionError>) -> ElectionResult {
        (topic.to_string(), partition, result)
    }

    /// Three brokers; `orders` led by 2 on partition 0 after broker 1 came back out of sync, and
    /// `other` likewise on its only partition.
    fn broker_1_back_out_of_sync() -> Harness {
        let mut h = Harness::new();
        h.register(2);
        h.register(3);
        h.run(|c, i| {
            c.create_topics(
                i,
                &[
                    manual("orders", vec![(0, vec![1, 2, 3]), (1, vec![2, 3, 1])]),
                    manual("other", vec![(0, vec![1, 2])]),
                ],
                false,
            )
        });
        let epoch_1 = h.image().brokers[&1].broker_epoch;
        h.run(|c, i| c.fence_broker(i, 1, epoch_1));
        h.run(|c, i| c.unfence_broker(i, 1, epoch_1));
        assert_eq!(
            leaders(&h, "orders"),
            vec![(2, vec![2, 3], 1), (2, vec![2, 3], 0)]
        );
        h
    }

    #[test]
    fn a_requested_preferred_election_elects_the_first_replica_only_when_it_is_in_sync() {
        let mut h = broker_1_back_out_of_sync();
        let named = [("orders", 0), ("orders", 1), ("orders", 9), ("missing", 0)];
        let (results, committed) = elect_leaders(&mut h, ElectionType::Preferred, Some(&named));
        assert_eq!(
            results,
            vec![
                outcome("orders", 0, Err(ElectionError::PreferredLeaderNotAvailable)),
                outcome("orders", 1, Err(ElectionError::ElectionNotNeeded)),
                outcome("orders", 9, Err(ElectionError::UnknownTopicOrPartition)),
                outcome("missing", 0, Err(ElectionError::UnknownTopicOrPartition)),
            ]
        );
        assert_eq!(committed, 0);
        // Broker 1 catches up: named twice, partition 0 is elected once (one leader epoch bump).
        let orders = h.image().topic("orders").unwrap().topic_id;
        h.change(orders, 0, None, Some(vec![2, 3, 1]));
        let twice = [("orders", 0), ("orders", 0)];
        let (results, committed) = elect_leaders(&mut h, ElectionType::Preferred, Some(&twice));
        assert_eq!(
            results,
            vec![outcome("orders", 0, Ok(())), outcome("orders", 0, Ok(()))]
        );
        assert_eq!(committed, 1);
        assert_eq!(leaders(&h, "orders")[0], (1, vec![2, 3, 1], 2));
        let (results, committed) =
            elect_leaders(&mut h, ElectionType::Preferred, Some(&[("orders", 0)]));
        assert_eq!(
            results,
            vec![outcome("orders", 0, Err(ElectionError::ElectionNotNeeded))]
        );
        assert_eq!(committed, 0);
        // A fenced preferred replica is not available, even while it is the last ISR member.
        h.change(orders, 0, None, Some(vec![1]));
        let epoch_1 = h.image().brokers[&1].broker_epoch;
        h.run(|c, i| c.fence_broker(i, 1, epoch_1));
        h.change(orders, 0, Some(2), None);
        let (results, _) = elect_leaders(&mut h, ElectionType::Preferred, Some(&[("orders", 0)]));
        assert_eq!(
            results,
            vec![outcome(
                "orders",
                0,
                Err(ElectionError::PreferredLeaderNotAvailable)
            )]
        );
    }

    #[test]
    fn a_preferred_election_over_every_partition_answers_those_that_need_one() {
        let mut h = broker_1_back_out_of_sync();
        let orders = h.image().topic("orders").unwrap().topic_id;
        h.change(orders, 0, None, Some(vec![2, 3, 1]));
        let (results, committed) = elect_leaders(&mut h, ElectionType::Preferred, None);
        // Kafka leaves out only the partitions whose preferred replica already leads.
        assert_eq!(
            results,
            vec![
                outcome("orders", 0, Ok(())),
                outcome("other", 0, Err(ElectionError::PreferredLeaderNotAvailable)),
            ]
        );
        assert_eq!(committed, 1);
        assert_eq!(leaders(&h, "orders")[0], (1, vec![2, 3, 1], 2));
        let other = h.image().topic("other").unwrap().topic_id;
        h.change(other, 0, None, Some(vec![2, 1]));
        let (results, committed) = elect_leaders(&mut h, ElectionType::Preferred, None);
        assert_eq!(results, vec![outcome("other", 0, Ok(()))]);
        assert_eq!(committed, 1);
        let (results, committed) = elect_leaders(&mut h, ElectionType::Preferred, None);
        assert_eq!((results, committed), (vec![], 0));
    }

    #[test]
    fn a_requested_unclean_election_leads_offline_partitions_with_a_live_replica() {
        let mut h = Harness::new();
        h.register(2);
        h.register(3);
        h.run(|c, i| {
            c.create_topics(
                i,
                &[
                    manual("a", vec![(0, vec![1, 2])]),
                    manual("b", vec![(0, vec![1, 3])]),
                    manual("c", vec![(0, vec![3, 2])]),
                ],
                false,
            )
        });
        for topic in ["a", "b"] {
            let topic_id = h.image().topic(topic).unwrap().topic_id;
            h.change(topic_id, 0, None, Some(vec![1]));
        }
        // Leaderless although its ISR is live (as if the leader had just resigned).
        let c = h.image().topic("c").unwrap().topic_id;
        h.change(c, 0, Some(NO_LEADER), None);
        let epoch = |h: &Harness, id: i32| h.image().brokers[&id].broker_epoch;
        let (epoch_1, epoch_3) = (epoch(&h, 1), epoch(&h, 3));
        h.run(|c, i| c.fence_broker(i, 1, epoch_1));
        // Unclean elections are off by default: both offline with ISR [1].
        assert_eq!(leaders(&h, "a"), vec![(NO_LEADER, vec![1], 1)]);
        assert_eq!(leaders(&h, "b"), vec![(NO_LEADER, vec![1], 1)]);
        h.run(|c, i| c.fence_broker(i, 3, epoch_3));
        assert_eq!(leaders(&h, "c"), vec![(NO_LEADER, vec![2], 1)]);
        let named = [("a", 0), ("b", 0), ("c", 0), ("d", 0)];
        let (results, committed) = elect_leaders(&mut h, ElectionType::Unclean, Some(&named));
        assert_eq!(
            results,
            vec![
                outcome("a", 0, Ok(())),
                outcome("b", 0, Err(ElectionError::EligibleLeadersNotAvailable)),
                outcome("c", 0, Ok(())),
                outcome("d", 0, Err(ElectionError::UnknownTopicOrPartition)),
            ]
        );
        assert_eq!(committed, 2);
        // Broker 2, out of sync, leads alone; on c it was in sync, so the election is clean.
        assert_eq!(leaders(&h, "a"), vec![(2, vec![2], 2)]);
        assert_eq!(leaders(&h, "b"), vec![(NO_LEADER, vec![1], 1)]);
        assert_eq!(leaders(&h, "c"), vec![(2, vec![2], 2)]);
        let (results, committed) = elect_leaders(&mut h, ElectionType::Unclean, Some(&[("a", 0)]));
        assert_eq!(
            results,
            vec![outcome("a", 0, Err(ElectionError::ElectionNotNeeded))]
        );
        assert_eq!(committed, 0);
        // Over every partition: only b still needs a leader, and none is live.
        let (results, committed) = elect_leaders(&mut h, ElectionType::Unclean, None);
        assert_eq!(
            results,
            vec![outcome(
                "b",
                0,
                Err(ElectionError::EligibleLeadersNotAvailable)
            )]
        );
        assert_eq!(committed, 0);
    }

    #[test]
    fn election_types_on_the_wire() {
        assert_eq!(ElectionType::from_wire(0), Some(ElectionType::Preferred));
        assert_eq!(ElectionType::from_wire(1), Some(ElectionType::Unclean));
        assert_eq!(ElectionType::from_wire(2), None);
        assert_eq!(ElectionType::from_wire(-1), None);
    }
}
