//! CreatePartitions: grow a topic's partition count.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use skald_controller::{ControllerOp, ControllerReply, CreatePartitionsSpec};

use super::controller_handle::ControllerHandle;
use super::topic_operation;

pub async fn handle(
    controller: &dyn ControllerHandle,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let names: Vec<_> = request
        .topics
        .iter()
        .map(|topic| topic.name.clone())
        .collect();
    let specs: Vec<CreatePartitionsSpec> = request
        .topics
        .into_iter()
        .map(|topic| CreatePartitionsSpec {
            name: topic.name.0.to_string(),
            count: topic.count,
            assignments: topic.assignments.map(|assignments| {
                assignments
                    .into_iter()
                    .map(|a| a.broker_ids.into_iter().map(|id| id.0).collect())
                    .collect()
            }),
        })
        .collect();
    let validate_only = request.validate_only;
    let op = ControllerOp::CreatePartitions {
        topics: specs,
        validate_only,
    };
    let results = topic_operation(controller, op, |reply| match reply {
        ControllerReply::CreatePartitions(results) => Some(results),
        _ => None,
    })
    .await;
    let results = names
        .into_iter()
        .zip(results)
        .map(|(name, result)| {
            let response = CreatePartitionsTopicResult::default().with_name(name);
            match result {
                Ok(()) => response,
                Err((code, message)) => response.with_error_code(code).with_error_message(message),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::create_partitions_request::{
        CreatePartitionsAssignment, CreatePartitionsTopic,
    };
    use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
    use kafka_protocol::messages::{BrokerId, CreatePartitionsRequest, CreatePartitionsResponse};
    use kafka_protocol::protocol::StrBytes;
    use skald_controller::{ControllerOp, ControllerReply, CreatePartitionsSpec, TopicError};

    use super::handle;
    use crate::api::controller_handle::CannedController;
    use crate::api::topic_name;

    fn request() -> CreatePartitionsRequest {
        CreatePartitionsRequest::default()
            .with_validate_only(true)
            .with_topics(vec![
                CreatePartitionsTopic::default()
                    .with_name(topic_name("orders"))
                    .with_count(4)
                    .with_assignments(Some(vec![
                        CreatePartitionsAssignment::default()
                            .with_broker_ids(vec![BrokerId(1), BrokerId(2)]),
                        CreatePartitionsAssignment::default()
                            .with_broker_ids(vec![BrokerId(2), BrokerId(3)]),
                    ])),
                CreatePartitionsTopic::default()
                    .with_name(topic_name("audit"))
                    .with_count(1)
                    .with_assignments(None),
            ])
    }

    #[tokio::test]
    async fn each_topic_answered_with_the_controllers_outcome() {
        let controller = CannedController::new(vec![Ok(ControllerReply::CreatePartitions(vec![
            Ok(()),
            Err(TopicError::InvalidPartitions(
                "Topic currently has 3 partitions, which is higher than the requested 1.".into(),
            )),
        ]))]);
        assert_eq!(
            handle(&controller, request()).await,
            CreatePartitionsResponse::default().with_results(vec![
                CreatePartitionsTopicResult::default().with_name(topic_name("orders")),
                CreatePartitionsTopicResult::default()
                    .with_name(topic_name("audit"))
                    .with_error_code(ResponseError::InvalidPartitions.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "Topic currently has 3 partitions, which is higher than the requested 1."
                    ))),
            ])
        );
        assert_eq!(
            controller.take_ops(),
            vec![ControllerOp::CreatePartitions {
                topics: vec![
                    CreatePartitionsSpec {
                        name: "orders".into(),
                        count: 4,
                        assignments: Some(vec![vec![1, 2], vec![2, 3]]),
                    },
                    CreatePartitionsSpec {
                        name: "audit".into(),
                        count: 1,
                        assignments: None,
                    },
                ],
                validate_only: true,
            }]
        );
    }

    #[tokio::test]
    async fn a_reply_to_another_operation_fails_every_topic() {
        let controller = CannedController::new(vec![Ok(ControllerReply::UnregisterBroker(Ok(())))]);
        let failed = |name: &str| {
            CreatePartitionsTopicResult::default()
                .with_name(topic_name(name))
                .with_error_code(ResponseError::UnknownServerError.code())
                .with_error_message(Some(StrBytes::from_static_str(
                    "the controller answered another operation",
                )))
        };
        assert_eq!(
            handle(&controller, request()).await,
            CreatePartitionsResponse::default()
                .with_results(vec![failed("orders"), failed("audit")])
        );
    }
}
