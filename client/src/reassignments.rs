//! Partition reassignments (KIP-455): AlterPartitionReassignments to start or cancel moves,
//! ListPartitionReassignments for those in progress, ElectLeaders to put leadership back on
//! each partition's preferred (first) replica once a move is done. All decided by the active
//! controller.

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ElectLeadersRequest,
    ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::Client;
use crate::error::{check, Error, Result};

/// How long the controller may take over a reassignment request.
const TIMEOUT_MS: i32 = 30_000;

/// A reassignment in progress, as ListPartitionReassignments reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    /// The current replicas: the target, then those being removed.
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

fn broker_ids(ids: &[BrokerId]) -> Vec<i32> {
    ids.iter().map(|id| id.0).collect()
}

/// Groups `(topic, partition, value)` by topic, in the order topics first appear.
fn by_topic<T>(items: impl IntoIterator<Item = (String, i32, T)>) -> Vec<(String, Vec<(i32, T)>)> {
    let mut topics: Vec<(String, Vec<(i32, T)>)> = Vec::new();
    for (topic, partition, value) in items {
        match topics.iter_mut().find(|(name, _)| *name == topic) {
            Some((_, partitions)) => partitions.push((partition, value)),
            None => topics.push((topic, vec![(partition, value)])),
        }
    }
    topics
}

impl Client {
    /// Starts moving each partition to its target replicas (`Some`), or cancels its move
    /// (`None`). Returns each partition's outcome, in request order.
    pub async fn alter_partition_reassignments(
        &mut self,
        moves: &[(String, i32, Option<Vec<i32>>)],
    ) -> Result<Vec<(String, i32, Result<()>)>> {
        let topics = by_topic(moves.iter().cloned())
            .into_iter()
            .map(|(topic, partitions)| {
                ReassignableTopic::default()
                    .with_name(topic_name(&topic))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, target)| {
                                ReassignablePartition::default()
                                    .with_partition_index(index)
                                    .with_replicas(
                                        target.map(|ids| ids.into_iter().map(BrokerId).collect()),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        let request = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(TIMEOUT_MS)
            .with_topics(topics);
        let response = self.send_controller(request).await?;
        check(
            response.error_code,
            || "alter partition reassignments".to_owned(),
            response.error_message.as_deref(),
        )?;
        let outcome = |topic: &str, partition: i32| -> Result<()> {
            let answer = response
                .responses
                .iter()
                .filter(|t| t.name.as_str() == topic)
                .flat_map(|t| &t.partitions)
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| Error::Protocol {
                    addr: "the controller".to_owned(),
                    detail: format!("no answer for {topic}-{partition}"),
                })?;
            check(
                answer.error_code,
                || format!("reassign {topic}-{partition}"),
                answer.error_message.as_deref(),
            )
        };
        Ok(moves
            .iter()
            .map(|(topic, partition, _)| (topic.clone(), *partition, outcome(topic, *partition)))
            .collect())
    }

    /// Every reassignment in progress, by topic and partition.
    pub async fn list_partition_reassignments(&mut self) -> Result<Vec<OngoingReassignment>> {
        let request = ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(TIMEOUT_MS)
            .with_topics(None);
        let response = self.send_controller(request).await?;
        check(
            response.error_code,
            || "list partition reassignments".to_owned(),
            response.error_message.as_deref(),
        )?;
        let mut ongoing: Vec<OngoingReassignment> = response
            .topics
            .iter()
            .flat_map(|topic| {
                topic.partitions.iter().map(|p| OngoingReassignment {
                    topic: topic.name.to_string(),
                    partition: p.partition_index,
                    replicas: broker_ids(&p.replicas),
                    adding: broker_ids(&p.adding_replicas),
                    removing: broker_ids(&p.removing_replicas),
                })
            })
            .collect();
        ongoing.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(ongoing)
    }

    /// Preferred leader elections for `partitions` (ElectLeaders, election type 0). A partition
    /// already led by its preferred replica is not an error (ELECTION_NOT_NEEDED).
    pub async fn elect_preferred_leaders(&mut self, partitions: &[(String, i32)]) -> Result<()> {
        const ELECTION_NOT_NEEDED: i16 = 84;
        let topics = by_topic(partitions.iter().map(|(t, p)| (t.clone(), *p, ())))
            .into_iter()
            .map(|(topic, partitions)| {
                TopicPartitions::default()
                    .with_topic(topic_name(&topic))
                    .with_partitions(partitions.into_iter().map(|(p, ())| p).collect())
            })
            .collect();
        let request = ElectLeadersRequest::default()
            .with_election_type(0)
            .with_topic_partitions(Some(topics))
            .with_timeout_ms(TIMEOUT_MS);
        let response = self.send_controller(request).await?;
        check(response.error_code, || "elect leaders".to_owned(), None)?;
        for topic in &response.replica_election_results {
            for partition in &topic.partition_result {
                if partition.error_code == ELECTION_NOT_NEEDED {
                    continue;
                }
                check(
                    partition.error_code,
                    || {
                        format!(
                            "elect the preferred leader of {}-{}",
                            topic.topic.as_str(),
                            partition.partition_id
                        )
                    },
                    partition.error_message.as_deref(),
                )?;
            }
        }
        Ok(())
    }
}

/// Kafka's config resource types.
const TOPIC_RESOURCE: i8 = 2;
const BROKER_RESOURCE: i8 = 4;

/// Which of a move's (current, target) replicas a throttle list names.
type Pick = fn(&[i32], &[i32]) -> Vec<i32>;

/// The replication throttles of a set of moves, as Kafka's `kafka-reassign-partitions
/// --throttle` sets them: on every broker a move involves, the leader and follower rates; on
/// every moved topic, the replicas being copied from (`leader.replication.throttled.replicas`,
/// the current ones) and to (`follower.replication.throttled.replicas`, the new ones), as
/// `partition:broker` lists. Only catch-up traffic is throttled: in-sync replication never is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveThrottles {
    pub brokers: Vec<i32>,
    /// topic → (leader list, follower list).
    pub topics: Vec<(String, String, String)>,
}

impl MoveThrottles {
    /// The throttles of `moves`: (topic, partition, current replicas, target replicas).
    pub fn of(moves: &[(String, i32, Vec<i32>, Vec<i32>)]) -> MoveThrottles {
        let mut brokers: Vec<i32> = moves
            .iter()
            .flat_map(|(_, _, current, target)| current.iter().chain(target))
            .copied()
            .collect();
        brokers.sort_unstable();
        brokers.dedup();
        let topics = by_topic(
            moves
                .iter()
                .map(|(t, p, current, target)| (t.clone(), *p, (current, target))),
        )
        .into_iter()
        .map(|(topic, partitions)| {
            let list = |pick: Pick| {
                partitions
                    .iter()
                    .flat_map(|(p, (current, target))| {
                        pick(current, target)
                            .into_iter()
                            .map(move |b| format!("{p}:{b}"))
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let leaders = list(|current, _| current.to_vec());
            let followers = list(|current, target| {
                target
                    .iter()
                    .filter(|b| !current.contains(b))
                    .copied()
                    .collect()
            });
            (topic, leaders, followers)
        })
        .collect();
        MoveThrottles { brokers, topics }
    }
}

impl Client {
    /// Sets (`Some(bytes per second)`) or removes (`None`) the throttles of a set of moves
    /// (IncrementalAlterConfigs).
    pub async fn set_move_throttles(
        &mut self,
        throttles: &MoveThrottles,
        rate: Option<u64>,
    ) -> Result<()> {
        use kafka_protocol::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        use kafka_protocol::messages::IncrementalAlterConfigsRequest;
        const SET: i8 = 0;
        const DELETE: i8 = 1;
        let config = |name: &str, value: Option<String>| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(name.to_owned()))
                .with_config_operation(if value.is_some() { SET } else { DELETE })
                .with_value(value.map(StrBytes::from_string))
        };
        let rate = rate.map(|r| r.to_string());
        let check_all = |response: kafka_protocol::messages::IncrementalAlterConfigsResponse| {
            response.responses.iter().try_for_each(|resource| {
                check(
                    resource.error_code,
                    || format!("throttle {}", resource.resource_name.as_str()),
                    resource.error_message.as_deref(),
                )
            })
        };
        // A broker's own configs go to that broker (as Kafka's admin client sends them).
        for broker in &throttles.brokers {
            let resource = AlterConfigsResource::default()
                .with_resource_type(BROKER_RESOURCE)
                .with_resource_name(StrBytes::from_string(broker.to_string()))
                .with_configs(vec![
                    config("leader.replication.throttled.rate", rate.clone()),
                    config("follower.replication.throttled.rate", rate.clone()),
                ]);
            let request = IncrementalAlterConfigsRequest::default().with_resources(vec![resource]);
            check_all(self.broker_connection(*broker).await?.send(request).await?)?;
        }
        let mut resources = Vec::new();
        for (topic, leaders, followers) in &throttles.topics {
            // Set what the moves name; remove both (an empty list was never set).
            let configs = [
                ("leader.replication.throttled.replicas", leaders),
                ("follower.replication.throttled.replicas", followers),
            ]
            .into_iter()
            .filter(|(_, list)| rate.is_none() || !list.is_empty())
            .map(|(name, list)| config(name, rate.as_ref().map(|_| list.clone())))
            .collect();
            resources.push(
                AlterConfigsResource::default()
                    .with_resource_type(TOPIC_RESOURCE)
                    .with_resource_name(StrBytes::from_string(topic.clone()))
                    .with_configs(configs),
            );
        }
        if !resources.is_empty() {
            let request = IncrementalAlterConfigsRequest::default().with_resources(resources);
            check_all(self.send_controller(request).await?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_name_the_sources_and_the_new_replicas() {
        let moves = vec![
            ("a".to_string(), 0, vec![1, 2], vec![3, 2]),
            ("a".to_string(), 1, vec![2, 1], vec![2, 1]),
            ("b".to_string(), 4, vec![1], vec![4]),
        ];
        assert_eq!(
            MoveThrottles::of(&moves),
            MoveThrottles {
                brokers: vec![1, 2, 3, 4],
                topics: vec![
                    ("a".into(), "0:1,0:2,1:2,1:1".into(), "0:3".into()),
                    ("b".into(), "4:1".into(), "4:4".into()),
                ],
            }
        );
    }
}
