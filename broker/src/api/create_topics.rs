//! CreateTopics: validated and committed by the controller; the reply comes after the commit.

use std::sync::Arc;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use skald_controller::{ControllerOp, ControllerReply, CreateTopicSpec};

use super::describe_configs::effective_topic_configs;
use super::{topic_operation, uuid};
use crate::broker::Broker;
use crate::dynamic_config::BrokerDefaults;

pub async fn handle(
    broker: &Arc<Broker>,
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
    let results = topic_operation(broker, op, |reply| match reply {
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
                    let image = broker.image();
                    let defaults = BrokerDefaults::new(&broker.config, &image);
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
