//! DeleteTopics: by name (v0–v5) or by name or id (v6+). The logs go when the removal commits.

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use skald_controller::controller::TopicRef;
use skald_controller::{ControllerOp, ControllerReply};

use super::controller_handle::ControllerHandle;
use super::{topic_id, topic_name, topic_operation, uuid};

pub async fn handle(
    controller: &dyn ControllerHandle,
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
    let results = topic_operation(controller, op, |reply| match reply {
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

#[cfg(test)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
    use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
    use kafka_protocol::protocol::StrBytes;
    use skald_controller::controller::TopicRef;
    use skald_controller::{ControllerOp, ControllerReply, TopicError, TopicId};

    use super::handle;
    use crate::api::controller_handle::CannedController;
    use crate::api::topic_name;
    use crate::metadata::ControlError;

    fn text(value: &str) -> StrBytes {
        StrBytes::from_string(value.to_string())
    }

    fn reply() -> ControllerReply {
        ControllerReply::DeleteTopics(vec![
            Ok(("orders".to_string(), TopicId(7))),
            Err(TopicError::UnknownTopicOrPartition),
        ])
    }

    #[tokio::test]
    async fn by_name_before_v6_with_messages_from_v5() {
        let controller = CannedController::new(vec![Ok(reply()), Ok(reply())]);
        let request = DeleteTopicsRequest::default()
            .with_topic_names(vec![topic_name("orders"), topic_name("ghost")]);
        let deleted = DeletableTopicResult::default().with_name(Some(topic_name("orders")));
        let unknown = DeletableTopicResult::default()
            .with_name(Some(topic_name("ghost")))
            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
        assert_eq!(
            handle(&controller, request.clone(), 5).await,
            DeleteTopicsResponse::default().with_responses(vec![
                deleted.clone(),
                unknown.clone().with_error_message(Some(text(
                    "This server does not host this topic-partition."
                ))),
            ])
        );
        assert_eq!(
            handle(&controller, request, 4).await,
            DeleteTopicsResponse::default().with_responses(vec![deleted, unknown])
        );
        let asked = ControllerOp::DeleteTopics {
            topics: vec![
                TopicRef::Name("orders".into()),
                TopicRef::Name("ghost".into()),
            ],
        };
        assert_eq!(controller.take_ops(), vec![asked.clone(), asked]);
    }

    #[tokio::test]
    async fn by_name_or_id_from_v6_answered_with_both() {
        let controller = CannedController::new(vec![Ok(reply())]);
        let ghost_id = uuid::Uuid::from_u128(99);
        let request = DeleteTopicsRequest::default().with_topics(vec![
            DeleteTopicState::default().with_name(Some(topic_name("orders"))),
            DeleteTopicState::default()
                .with_name(None)
                .with_topic_id(ghost_id),
        ]);
        assert_eq!(
            handle(&controller, request, 6).await,
            DeleteTopicsResponse::default().with_responses(vec![
                DeletableTopicResult::default()
                    .with_name(Some(topic_name("orders")))
                    .with_topic_id(uuid::Uuid::from_u128(7)),
                DeletableTopicResult::default()
                    .with_topic_id(ghost_id)
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                    .with_error_message(Some(text(
                        "This server does not host this topic-partition."
                    ))),
            ])
        );
        assert_eq!(
            controller.take_ops(),
            vec![ControllerOp::DeleteTopics {
                topics: vec![TopicRef::Name("orders".into()), TopicRef::Id(TopicId(99))],
            }]
        );
    }

    #[tokio::test]
    async fn a_controller_that_cannot_answer_fails_every_topic() {
        let controller = CannedController::new(vec![Err(ControlError::Timeout)]);
        let request =
            DeleteTopicsRequest::default().with_topic_names(vec![topic_name("a"), topic_name("b")]);
        let timed_out = |name: &str| {
            DeletableTopicResult::default()
                .with_name(Some(topic_name(name)))
                .with_error_code(ResponseError::RequestTimedOut.code())
                .with_error_message(Some(text(
                    "The controller did not commit the change in time.",
                )))
        };
        assert_eq!(
            handle(&controller, request, 5).await,
            DeleteTopicsResponse::default().with_responses(vec![timed_out("a"), timed_out("b")])
        );
    }
}
