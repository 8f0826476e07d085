//! ListPartitionReassignments (KIP-455): the reassignments in progress
//! (`kafka-reassign-partitions.sh --verify`, `--list`), answered from the active controller's
//! committed metadata.

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};
use kafka_protocol::protocol::StrBytes;
use skald_controller::{ControllerOp, ControllerReply, OngoingReassignment};

use super::controller_handle::ControllerHandle;
use super::topic_name;
use crate::metadata::ControlError;

pub async fn handle(
    controller: &dyn ControllerHandle,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let topics = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|topic| (topic.name.0.to_string(), topic.partition_indexes))
            .collect()
    });
    let failure = match controller
        .control(ControllerOp::ListPartitionReassignments { topics })
        .await
    {
        Ok(ControllerReply::ListPartitionReassignments(ongoing)) => return answered(ongoing),
        Ok(_) => ControlError::Unavailable("the controller answered another operation".into()),
        Err(err) => err,
    };
    tracing::warn!("listing partition reassignments failed: {failure}");
    ListPartitionReassignmentsResponse::default()
        .with_error_code(failure.code())
        .with_error_message(Some(StrBytes::from_string(failure.to_string())))
}

/// The reassignments grouped by topic, in the controller's order.
fn answered(ongoing: Vec<OngoingReassignment>) -> ListPartitionReassignmentsResponse {
    let ids = |ids: Vec<i32>| ids.into_iter().map(BrokerId).collect();
    let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
    for reassignment in ongoing {
        let partition = OngoingPartitionReassignment::default()
            .with_partition_index(reassignment.partition)
            .with_replicas(ids(reassignment.replicas))
            .with_adding_replicas(ids(reassignment.adding_replicas))
            .with_removing_replicas(ids(reassignment.removing_replicas));
        match topics
            .last_mut()
            .filter(|t| t.name.0.as_str() == reassignment.topic)
        {
            Some(topic) => topic.partitions.push(partition),
            None => topics.push(
                OngoingTopicReassignment::default()
                    .with_name(topic_name(&reassignment.topic))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    ListPartitionReassignmentsResponse::default()
        .with_error_message(None)
        .with_topics(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassignments_are_grouped_by_topic() {
        let ongoing = |topic: &str, partition: i32| OngoingReassignment {
            topic: topic.into(),
            partition,
            replicas: vec![2, 3, 4, 1],
            adding_replicas: vec![4],
            removing_replicas: vec![1],
        };
        let response = answered(vec![ongoing("a", 0), ongoing("a", 2), ongoing("b", 1)]);
        assert_eq!(response.error_code, 0);
        let names: Vec<(&str, Vec<i32>)> = response
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.0.as_str(),
                    t.partitions.iter().map(|p| p.partition_index).collect(),
                )
            })
            .collect();
        assert_eq!(names, vec![("a", vec![0, 2]), ("b", vec![1])]);
        let p = &response.topics[0].partitions[0];
        assert_eq!(
            (&p.replicas, &p.adding_replicas, &p.removing_replicas),
            (
                &vec![BrokerId(2), BrokerId(3), BrokerId(4), BrokerId(1)],
                &vec![BrokerId(4)],
                &vec![BrokerId(1)]
            )
        );
    }

    #[tokio::test]
    async fn the_topics_asked_about_are_forwarded_and_a_failure_answered_at_the_top() {
        use kafka_protocol::error::ResponseError;
        use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
        use kafka_protocol::protocol::StrBytes;

        use crate::api::controller_handle::CannedController;
        use crate::metadata::ControlError;

        let controller = CannedController::new(vec![Err(ControlError::Timeout)]);
        let request = ListPartitionReassignmentsRequest::default().with_topics(Some(vec![
            ListPartitionReassignmentsTopics::default()
                .with_name(topic_name("orders"))
                .with_partition_indexes(vec![0, 2]),
        ]));
        assert_eq!(
            handle(&controller, request).await,
            ListPartitionReassignmentsResponse::default()
                .with_error_code(ResponseError::RequestTimedOut.code())
                .with_error_message(Some(StrBytes::from_static_str(
                    "The controller did not commit the change in time."
                )))
        );
        assert_eq!(
            controller.take_ops(),
            vec![ControllerOp::ListPartitionReassignments {
                topics: Some(vec![("orders".into(), vec![0, 2])]),
            }]
        );
    }
}
