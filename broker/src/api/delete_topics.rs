//! DeleteTopics: by name (v0–v5) or by name or id (v6+). The logs go when the removal commits.

use std::sync::Arc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use skald_controller::controller::TopicRef;
use skald_controller::{ControllerOp, ControllerReply};

use super::{topic_id, topic_name, topic_operation, uuid};
use crate::broker::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let refs: Vec<TopicRef> = if version >= 6 {
        request
            .topics
            .iter()
            .map(|topic| match &topic.name {
                Some(name) => TopicRef::Name(name.0.to_string()),
                None => TopicRef::Id(topic_id(&topic.topic_id)),
            })
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|name| TopicRef::Name(name.0.to_string()))
            .collect()
    };
    let asked = refs.clone();
    let op = ControllerOp::DeleteTopics { topics: refs };
    let results = topic_operation(broker, op, |reply| match reply {
        ControllerReply::DeleteTopics(results) => Some(results),
        _ => None,
    })
    .await;
    let responses = asked
        .into_iter()
        .zip(results)
        .map(|(asked, result)| {
            let mut response = DeletableTopicResult::default();
            match asked {
                TopicRef::Name(name) => response = response.with_name(Some(topic_name(&name))),
                TopicRef::Id(id) => response = response.with_topic_id(uuid(id)),
            }
            match result {
                Ok((name, id)) => {
                    response = response.with_name(Some(topic_name(&name)));
                    if version >= 6 {
                        response = response.with_topic_id(uuid(id));
                    }
                }
                Err((code, message)) => {
                    response = response.with_error_code(code);
                    if version >= 5 {
                        response = response.with_error_message(message);
                    }
                }
            }
            response
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
