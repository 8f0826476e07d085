//! CreateTopics: validated and committed by the controller; the reply comes after the commit.

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use skald_controller::{ControllerOp, ControllerReply, CreateTopicSpec};

use super::controller_handle::ControllerHandle;
use super::describe_configs::effective_topic_configs;
use super::{topic_operation, uuid};
use crate::config::ServerConfig;
use crate::dynamic_config::BrokerDefaults;

pub async fn handle(
    controller: &dyn ControllerHandle,
    config: &ServerConfig,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let names: Vec<_> = request
        .topics
        .iter()
        .map(|topic| topic.name.clone())
        .collect();
    let specs: Vec<CreateTopicSpec> = request
        .topics
        .into_iter()
        .map(|topic| CreateTopicSpec {
            name: topic.name.0.to_string(),
            num_partitions: topic.num_partitions,
            replication_factor: topic.replication_factor,
            assignments: topic
                .assignments
                .into_iter()
                .map(|assignment| {
                    (
                        assignment.partition_index,
                        assignment.broker_ids.into_iter().map(|id| id.0).collect(),
                    )
                })
                .collect(),
            configs: topic
                .configs
                .into_iter()
                .map(|config| {
                    (
                        config.name.to_string(),
                        config.value.map(|value| value.to_string()),
                    )
                })
                .collect(),
        })
        .collect();
    let validate_only = request.validate_only;
    let op = ControllerOp::CreateTopics {
        topics: specs,
        validate_only,
        allow_internal: false,
    };
    let results = topic_operation(controller, op, |reply| match reply {
        ControllerReply::CreateTopics(results) => Some(results),
        _ => None,
    })
    .await;
    let topics = names
        .into_iter()
        .zip(results)
        .map(|(name, result)| match result {
            Ok(created) => {
                let mut result = CreatableTopicResult::default()
                    .with_name(name)
                    .with_num_partitions(created.num_partitions)
                    .with_replication_factor(created.replication_factor);
                if version >= 7 {
                    result = result.with_topic_id(uuid(created.topic_id));
                }
                if version >= 5 {
                    let image = controller.image();
                    let defaults = BrokerDefaults::new(config, &image);
                    let configs = effective_topic_configs(&created.configs, &defaults)
                        .into_iter()
                        .map(|config| {
                            CreatableTopicConfigs::default()
                                .with_name(StrBytes::from_static_str(config.name))
                                .with_value(Some(StrBytes::from_string(config.value)))
                                .with_config_source(config.source)
                        })
                        .collect();
                    result = result.with_configs(Some(configs));
                }
                result
            }
            Err((code, message)) => CreatableTopicResult::default()
                .with_name(name)
                .with_error_code(code)
                .with_error_message(message),
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
    };
    use kafka_protocol::messages::create_topics_response::{
        CreatableTopicConfigs, CreatableTopicResult,
    };
    use kafka_protocol::messages::{BrokerId, CreateTopicsRequest, CreateTopicsResponse};
    use kafka_protocol::protocol::StrBytes;
    use skald_controller::controller::CreatedTopic;
    use skald_controller::topic_config::TOPIC_CONFIGS;
    use skald_controller::{ControllerOp, ControllerReply, CreateTopicSpec, TopicError, TopicId};

    use super::handle;
    use crate::api::controller_handle::CannedController;
    use crate::api::topic_name;
    use crate::config::ServerConfig;
    use crate::dynamic_config::SOURCE_DYNAMIC_TOPIC_CONFIG;

    fn text(value: &str) -> StrBytes {
        StrBytes::from_string(value.to_string())
    }

    fn request() -> CreateTopicsRequest {
        CreateTopicsRequest::default().with_topics(vec![
            CreatableTopic::default()
                .with_name(topic_name("orders"))
                .with_num_partitions(3)
                .with_replication_factor(2)
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(text("retention.ms"))
                    .with_value(Some(text("1000")))]),
            CreatableTopic::default()
                .with_name(topic_name("audit"))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_assignments(vec![CreatableReplicaAssignment::default()
                    .with_partition_index(0)
                    .with_broker_ids(vec![BrokerId(1)])]),
        ])
    }

    fn reply() -> ControllerReply {
        ControllerReply::CreateTopics(vec![
            Ok(CreatedTopic {
                topic_id: TopicId(7),
                num_partitions: 3,
                replication_factor: 2,
                configs: [("retention.ms".to_string(), "1000".to_string())].into(),
            }),
            Err(TopicError::TopicAlreadyExists("audit".into())),
        ])
    }

    fn config() -> ServerConfig {
        ServerConfig::from_properties([("node.id".to_string(), "1".to_string())].into())
            .expect("valid config")
    }

    fn exists() -> CreatableTopicResult {
        CreatableTopicResult::default()
            .with_name(topic_name("audit"))
            .with_error_code(ResponseError::TopicAlreadyExists.code())
            .with_error_message(Some(text("Topic 'audit' already exists.")))
    }

    #[tokio::test]
    async fn the_controller_gets_the_specs_and_each_topic_its_outcome() {
        let controller = CannedController::new(vec![Ok(reply())]);
        assert_eq!(
            handle(&controller, &config(), request(), 4).await,
            CreateTopicsResponse::default().with_topics(vec![
                CreatableTopicResult::default()
                    .with_name(topic_name("orders"))
                    .with_num_partitions(3)
                    .with_replication_factor(2),
                exists(),
            ])
        );
        assert_eq!(
            controller.take_ops(),
            vec![ControllerOp::CreateTopics {
                topics: vec![
                    CreateTopicSpec {
                        name: "orders".into(),
                        num_partitions: 3,
                        replication_factor: 2,
                        assignments: Vec::new(),
                        configs: vec![("retention.ms".into(), Some("1000".into()))],
                    },
                    CreateTopicSpec {
                        name: "audit".into(),
                        num_partitions: -1,
                        replication_factor: -1,
                        assignments: vec![(0, vec![1])],
                        configs: Vec::new(),
                    },
                ],
                validate_only: false,
                allow_internal: false,
            }]
        );
    }

    #[tokio::test]
    async fn from_v5_every_config_in_force_and_from_v7_the_topic_id() {
        let controller = CannedController::new(vec![Ok(reply())]);
        let response = handle(&controller, &config(), request(), 7).await;
        let [created, refused] = response.topics.as_slice() else {
            panic!("two topics expected: {response:?}");
        };
        assert_eq!(refused, &exists());
        assert_eq!(created.topic_id, uuid::Uuid::from_u128(7));
        let configs = created.configs.as_ref().expect("configs from v5");
        assert_eq!(configs.len(), TOPIC_CONFIGS.len());
        assert_eq!(
            configs.iter().find(|c| c.name.as_str() == "retention.ms"),
            Some(
                &CreatableTopicConfigs::default()
                    .with_name(text("retention.ms"))
                    .with_value(Some(text("1000")))
                    .with_config_source(SOURCE_DYNAMIC_TOPIC_CONFIG)
            )
        );
    }
}
