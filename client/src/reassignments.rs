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
