//! ElectLeaders: preferred or unclean leader elections on request (`kafka-leader-election.sh`),
//! decided by the active controller.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};
use kafka_protocol::protocol::StrBytes;
use skald_controller::{
    ControllerOp, ControllerReply, ElectionError, ElectionResult, ElectionType,
};

use super::controller_handle::ControllerHandle;
use super::{topic_name, ErrorAnswer};
use crate::metadata::ControlError;

pub async fn handle(
    controller: &dyn ControllerHandle,
    request: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    // v0 has no election type on the wire: it decodes as 0, preferred.
    let partitions: Option<Vec<(String, i32)>> = request.topic_partitions.map(|topics| {
        topics
            .into_iter()
            .flat_map(|topic| {
                let name = topic.topic.0.to_string();
                topic
                    .partitions
                    .into_iter()
                    .map(move |partition| (name.clone(), partition))
            })
            .collect()
    });
    let Some(election_type) = ElectionType::from_wire(request.election_type) else {
        let answer = (
            ResponseError::InvalidRequest.code(),
            Some(StrBytes::from_string(format!(
                "Unknown election type {}",
                request.election_type
            ))),
        );
        return failed(partitions.as_deref(), answer, version);
    };
    let op = ControllerOp::ElectLeaders {
        election_type,
        partitions: partitions.clone(),
    };
    let failure = match controller.control(op).await {
        Ok(ControllerReply::ElectLeaders(results)) => return answered(results),
        Ok(_) => ControlError::Unavailable("the controller answered another operation".into()),
        Err(err) => err,
    };
    tracing::warn!("leader election failed: {failure}");
    let answer = (
        failure.code(),
        Some(StrBytes::from_string(failure.to_string())),
    );
    failed(partitions.as_deref(), answer, version)
}

/// The controller's per-partition outcomes, grouped by topic in the order topics first appear.
fn answered(results: Vec<ElectionResult>) -> ElectLeadersResponse {
    let results = results.into_iter().map(|(topic, partition, result)| {
        let (code, message) = match result {
            Ok(()) => (0, None),
            Err(err) => (
                election_error_code(&err),
                Some(StrBytes::from_string(err.to_string())),
            ),
        };
        let result = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(code)
            .with_error_message(message);
        (topic, result)
    });
    ElectLeadersResponse::default().with_replica_election_results(by_topic(results))
}

/// Every named partition gets `answer`, and so does the request (from v1, which carries a
/// top-level error): a request naming no partitions has nowhere else to carry it.
fn failed(
    partitions: Option<&[(String, i32)]>,
    answer: ErrorAnswer,
    version: i16,
) -> ElectLeadersResponse {
    let (code, message) = answer;
    let results = partitions
        .unwrap_or_default()
        .iter()
        .map(|(topic, partition)| {
            let result = PartitionResult::default()
                .with_partition_id(*partition)
                .with_error_code(code)
                .with_error_message(message.clone());
            (topic.clone(), result)
        });
    let response = ElectLeadersResponse::default().with_replica_election_results(by_topic(results));
    if version >= 1 {
        response.with_error_code(code)
    } else {
        response
    }
}

fn by_topic(
    results: impl Iterator<Item = (String, PartitionResult)>,
) -> Vec<ReplicaElectionResult> {
    let mut topics: Vec<ReplicaElectionResult> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (topic, result) in results {
        match names.iter().position(|name| *name == topic) {
            Some(index) => topics[index].partition_result.push(result),
            None => {
                topics.push(
                    ReplicaElectionResult::default()
                        .with_topic(topic_name(&topic))
                        .with_partition_result(vec![result]),
                );
                names.push(topic);
            }
        }
    }
    topics
}

fn election_error_code(error: &ElectionError) -> i16 {
    match error {
        ElectionError::ElectionNotNeeded => ResponseError::ElectionNotNeeded,
        ElectionError::PreferredLeaderNotAvailable => ResponseError::PreferredLeaderNotAvailable,
        ElectionError::EligibleLeadersNotAvailable => ResponseError::EligibleLeadersNotAvailable,
        ElectionError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
    }
    .code()
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::TopicName;

    use super::*;

    fn partitions(response: &ElectLeadersResponse) -> Vec<(String, i32, i16)> {
        response
            .replica_election_results
            .iter()
            .flat_map(|topic| {
                topic
                    .partition_result
                    .iter()
                    .map(|p| (topic.topic.0.to_string(), p.partition_id, p.error_code))
            })
            .collect()
    }

    #[test]
    fn outcomes_are_grouped_by_topic_with_kafka_error_codes() {
        let response = answered(vec![
            ("a".into(), 0, Ok(())),
            ("b".into(), 1, Err(ElectionError::ElectionNotNeeded)),
            (
                "a".into(),
                2,
                Err(ElectionError::PreferredLeaderNotAvailable),
            ),
            (
                "c".into(),
                0,
                Err(ElectionError::EligibleLeadersNotAvailable),
            ),
            ("d".into(), 0, Err(ElectionError::UnknownTopicOrPartition)),
        ]);
        assert_eq!(response.error_code, 0);
        let names: Vec<&TopicName> = response
            .replica_election_results
            .iter()
            .map(|topic| &topic.topic)
            .collect();
        assert_eq!(
            names,
            vec![
                &topic_name("a"),
                &topic_name("b"),
                &topic_name("c"),
                &topic_name("d")
            ]
        );
        assert_eq!(
            partitions(&response),
            vec![
                ("a".into(), 0, 0),
                ("a".into(), 2, 80),
                ("b".into(), 1, 84),
                ("c".into(), 0, 83),
                ("d".into(), 0, 3),
            ]
        );
    }

    #[test]
    fn a_failed_request_answers_every_named_partition_and_from_v1_the_request() {
        let named = [("a".to_string(), 0), ("a".to_string(), 1)];
        let answer = (41, Some(StrBytes::from_static_str("not the controller")));
        let response = failed(Some(&named), answer.clone(), 1);
        assert_eq!(response.error_code, 41);
        assert_eq!(
            partitions(&response),
            vec![("a".into(), 0, 41), ("a".into(), 1, 41)]
        );
        let response = failed(None, answer.clone(), 2);
        assert_eq!((response.error_code, partitions(&response)), (41, vec![]));
        // v0 has no top-level error code to set.
        let response = failed(Some(&named), answer, 0);
        assert_eq!(response.error_code, 0);
        assert_eq!(partitions(&response).len(), 2);
    }

    fn request(election_type: i8) -> ElectLeadersRequest {
        use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
        ElectLeadersRequest::default()
            .with_election_type(election_type)
            .with_topic_partitions(Some(vec![TopicPartitions::default()
                .with_topic(topic_name("orders"))
                .with_partitions(vec![0, 1])]))
    }

    fn partition(id: i32, error: Option<(ResponseError, &str)>) -> PartitionResult {
        let result = PartitionResult::default().with_partition_id(id);
        match error {
            None => result.with_error_message(None),
            Some((error, message)) => result
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message.to_string()))),
        }
    }

    #[tokio::test]
    async fn the_named_partitions_are_forwarded_and_answered_per_partition() {
        use crate::api::controller_handle::CannedController;
        let controller = CannedController::new(vec![Ok(ControllerReply::ElectLeaders(vec![
            ("orders".into(), 0, Ok(())),
            ("orders".into(), 1, Err(ElectionError::ElectionNotNeeded)),
        ]))]);
        assert_eq!(
            handle(&controller, request(1), 2).await,
            ElectLeadersResponse::default().with_replica_election_results(vec![
                ReplicaElectionResult::default()
                    .with_topic(topic_name("orders"))
                    .with_partition_result(vec![
                        partition(0, None),
                        partition(
                            1,
                            Some((
                                ResponseError::ElectionNotNeeded,
                                &ElectionError::ElectionNotNeeded.to_string()
                            ))
                        ),
                    ])
            ])
        );
        assert_eq!(
            controller.take_ops(),
            vec![ControllerOp::ElectLeaders {
                election_type: ElectionType::Unclean,
                partitions: Some(vec![("orders".into(), 0), ("orders".into(), 1)]),
            }]
        );
    }

    #[tokio::test]
    async fn an_unknown_election_type_is_refused_without_asking_the_controller() {
        use crate::api::controller_handle::CannedController;
        let controller = CannedController::new(Vec::new());
        let refused = Some((ResponseError::InvalidRequest, "Unknown election type 5"));
        assert_eq!(
            handle(&controller, request(5), 1).await,
            ElectLeadersResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_replica_election_results(vec![ReplicaElectionResult::default()
                    .with_topic(topic_name("orders"))
                    .with_partition_result(vec![partition(0, refused), partition(1, refused)])])
        );
        assert_eq!(controller.take_ops(), Vec::new());
    }
}
