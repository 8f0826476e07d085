//! CreatePartitions: grow a topic's partition count.

use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use skald_controller::{ControllerOp, ControllerReply, CreatePartitionsSpec};

use super::topic_operation;
use crate::broker::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
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
    let results = topic_operation(broker, op, |reply| match reply {
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
