//! Every error code a response carries, for the per-API error counter (Kafka's
//! `AbstractResponse.errorCounts`, which feeds its `ErrorsPerSec{request, error}`). Read from the
//! typed response the handler built, just before it is encoded: nothing is decoded twice.
//!
//! As Kafka, a code is counted once per place it answers: each partition of a Produce, Fetch or
//! ListOffsets, each topic of a CreateTopics, each group of a DescribeGroups, and the top-level
//! code where the response has one — NONE included, so the error share of an API is a ratio of
//! two series of the same counter. Where a version moved the answer from the top level into an
//! array (FindCoordinator v4, OffsetFetch v8, AddPartitionsToTxn v4), the array counts when it is
//! filled and the top-level code otherwise.

use kafka_protocol::messages::ResponseKind;

/// Calls `count` with every error code in `response`.
pub fn for_each(response: &ResponseKind, mut count: impl FnMut(i16)) {
    match response {
        ResponseKind::Produce(r) => r
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .for_each(|p| count(p.error_code)),
        ResponseKind::Fetch(r) => {
            count(r.error_code);
            r.responses
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| count(p.error_code));
        }
        ResponseKind::ListOffsets(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| count(p.error_code)),
        ResponseKind::Metadata(r) => {
            count(r.error_code);
            for topic in &r.topics {
                count(topic.error_code);
                topic.partitions.iter().for_each(|p| count(p.error_code));
            }
        }
        ResponseKind::ApiVersions(r) => count(r.error_code),
        ResponseKind::CreateTopics(r) => r.topics.iter().for_each(|t| count(t.error_code)),
        ResponseKind::DeleteTopics(r) => r.responses.iter().for_each(|t| count(t.error_code)),
        ResponseKind::DeleteRecords(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| count(p.error_code)),
        ResponseKind::CreatePartitions(r) => r.results.iter().for_each(|t| count(t.error_code)),
        ResponseKind::DescribeConfigs(r) => r.results.iter().for_each(|t| count(t.error_code)),
        ResponseKind::AlterConfigs(r) => r.responses.iter().for_each(|t| count(t.error_code)),
        ResponseKind::AlterReplicaLogDirs(r) => r
            .results
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| count(p.error_code)),
        ResponseKind::DescribeLogDirs(r) => {
            count(r.error_code);
            r.results.iter().for_each(|d| count(d.error_code));
        }
        ResponseKind::IncrementalAlterConfigs(r) => {
            r.responses.iter().for_each(|t| count(t.error_code))
        }
        ResponseKind::DescribeCluster(r) => count(r.error_code),
        ResponseKind::UnregisterBroker(r) => count(r.error_code),
        ResponseKind::DescribeQuorum(r) => {
            count(r.error_code);
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| count(p.error_code));
        }
        ResponseKind::AlterPartitionReassignments(r) => {
            count(r.error_code);
            r.responses
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| count(p.error_code));
        }
        ResponseKind::ListPartitionReassignments(r) => count(r.error_code),
        ResponseKind::ElectLeaders(r) => {
            count(r.error_code);
            r.replica_election_results
                .iter()
                .flat_map(|t| &t.partition_result)
                .for_each(|p| count(p.error_code));
        }
        ResponseKind::FindCoordinator(r) => {
            if r.coordinators.is_empty() {
                count(r.error_code);
            } else {
                r.coordinators.iter().for_each(|c| count(c.error_code));
            }
        }
        ResponseKind::JoinGroup(r) => count(r.error_code),
        ResponseKind::SyncGroup(r) => count(r.error_code),
        ResponseKind::Heartbeat(r) => count(r.error_code),
        ResponseKind::LeaveGroup(r) => {
            count(r.error_code);
            r.members.iter().for_each(|m| count(m.error_code));
        }
        ResponseKind::OffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| count(p.error_code)),
        ResponseKind::OffsetFetch(r) => {
            if r.groups.is_empty() {
                count(r.error_code);
                r.topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .for_each(|p| count(p.error_code));
            } else {
                for group in &r.groups {
                    count(group.error_code);
                    group
                        .topics
                        .iter()
                        .flat_map(|t| &t.partitions)
                        .for_each(|p| count(p.error_code));
                }
            }
        }
        ResponseKind::OffsetDelete(r) => {
            count(r.error_code);
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| count(p.error_code));
        }
        ResponseKind::DescribeGroups(r) => r.groups.iter().for_each(|g| count(g.error_code)),
        ResponseKind::ListGroups(r) => count(r.error_code),
        ResponseKind::DeleteGroups(r) => r.results.iter().for_each(|g| count(g.error_code)),
        ResponseKind::OffsetForLeaderEpoch(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| count(p.error_code)),
        ResponseKind::InitProducerId(r) => count(r.error_code),
        ResponseKind::AddPartitionsToTxn(r) => {
            if r.results_by_transaction.is_empty() {
                r.results_by_topic_v3_and_below
                    .iter()
                    .flat_map(|t| &t.results_by_partition)
                    .for_each(|p| count(p.partition_error_code));
            } else {
                count(r.error_code);
                r.results_by_transaction
                    .iter()
                    .flat_map(|t| &t.topic_results)
                    .flat_map(|t| &t.results_by_partition)
                    .for_each(|p| count(p.partition_error_code));
            }
        }
        ResponseKind::AddOffsetsToTxn(r) => count(r.error_code),
        ResponseKind::EndTxn(r) => count(r.error_code),
        ResponseKind::TxnOffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| count(p.error_code)),
        ResponseKind::WriteTxnMarkers(r) => r
            .markers
            .iter()
            .flat_map(|m| &m.topics)
            .flat_map(|t| &t.partitions)
            .for_each(|p| count(p.error_code)),
        ResponseKind::DescribeProducers(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| count(p.error_code)),
        ResponseKind::DescribeTransactions(r) => r
            .transaction_states
            .iter()
            .for_each(|t| count(t.error_code)),
        ResponseKind::ListTransactions(r) => count(r.error_code),
        ResponseKind::DescribeTopicPartitions(r) => r
            .topics
            .iter()
            .flat_map(|t| {
                std::iter::once(t.error_code).chain(t.partitions.iter().map(|p| p.error_code))
            })
            .for_each(&mut count),
        ResponseKind::GetTelemetrySubscriptions(r) => count(r.error_code),
        ResponseKind::PushTelemetry(r) => count(r.error_code),
        // Not served here: nothing to count.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::find_coordinator_response::Coordinator;
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{FindCoordinatorResponse, ProduceResponse};

    fn codes(response: &ResponseKind) -> Vec<i16> {
        let mut seen = Vec::new();
        for_each(response, |code| seen.push(code));
        seen
    }

    #[test]
    fn every_partition_of_a_produce_is_counted() {
        let partition = |code| PartitionProduceResponse::default().with_error_code(code);
        let response = ProduceResponse::default().with_responses(vec![
            TopicProduceResponse::default()
                .with_partition_responses(vec![partition(0), partition(6)]),
            TopicProduceResponse::default().with_partition_responses(vec![partition(3)]),
        ]);
        assert_eq!(codes(&ResponseKind::Produce(response)), vec![0, 6, 3]);
    }

    #[test]
    fn a_batched_find_coordinator_counts_its_coordinators_not_the_top_level() {
        let old = FindCoordinatorResponse::default().with_error_code(15);
        assert_eq!(codes(&ResponseKind::FindCoordinator(old)), vec![15]);
        let batched = FindCoordinatorResponse::default().with_coordinators(vec![
            Coordinator::default().with_error_code(0),
            Coordinator::default().with_error_code(15),
        ]);
        assert_eq!(codes(&ResponseKind::FindCoordinator(batched)), vec![0, 15]);
    }
}
