//! DescribeConfigs for topics (overrides over broker defaults) and for this broker.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use skald_controller::topic_config::{ConfigType, TOPIC_CONFIGS};

use crate::broker::Broker;
use crate::config::ServerConfig;

/// Kafka's ConfigResource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's ConfigSource values.
pub const SOURCE_DYNAMIC_TOPIC_CONFIG: i8 = 1;
pub const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
pub const SOURCE_DEFAULT_CONFIG: i8 = 5;

/// One config's effective value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigValue {
    pub name: &'static str,
    pub value: String,
    pub source: i8,
    pub config_type: Option<ConfigType>,
    /// Where the value would come from with each source removed, most specific first.
    pub synonyms: Vec<(&'static str, String, i8)>,
}

/// Every topic config with its effective value: the topic's override, else the broker's setting.
pub fn effective_topic_configs(
    overrides: &BTreeMap<String, String>,
    config: &ServerConfig,
) -> Vec<ConfigValue> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let mut synonyms = Vec::new();
            if let Some(value) = overrides.get(def.name) {
                synonyms.push((def.name, value.clone(), SOURCE_DYNAMIC_TOPIC_CONFIG));
            }
            // `log.retention.ms` may also be derived from an explicit `.minutes` or `.hours`.
            if config.is_explicit(def.broker_property)
                || config.get(def.broker_property) != def.default
            {
                synonyms.push((
                    def.broker_property,
                    config.get(def.broker_property),
                    SOURCE_STATIC_BROKER_CONFIG,
                ));
            }
            synonyms.push((
                def.broker_property,
                def.default.to_string(),
                SOURCE_DEFAULT_CONFIG,
            ));
            let (_, value, source) = synonyms[0].clone();
            ConfigValue {
                name: def.name,
                value,
                source,
                config_type: Some(def.config_type),
                synonyms,
            }
        })
        .collect()
}

fn broker_configs(config: &ServerConfig) -> Vec<ConfigValue> {
    config
        .known_properties()
        .into_iter()
        .map(|(name, value)| {
            let source = if config.is_explicit(name) {
                SOURCE_STATIC_BROKER_CONFIG
            } else {
                SOURCE_DEFAULT_CONFIG
            };
            let config_type = TOPIC_CONFIGS
                .iter()
                .find(|def| def.broker_property == name)
                .map(|def| def.config_type);
            ConfigValue {
                name,
                value: value.clone(),
                source,
                config_type,
                synonyms: vec![(name, value, source)],
            }
        })
        .collect()
}

pub fn handle(
    broker: &Arc<Broker>,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let image = broker.image();
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let configs = match resource.resource_type {
                RESOURCE_TOPIC => match image.topic(resource.resource_name.as_str()) {
                    Some(topic) => effective_topic_configs(&topic.configs, &broker.config),
                    None => {
                        return result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "Topic '{}' does not exist.",
                                resource.resource_name.as_str()
                            ))))
                    }
                },
                RESOURCE_BROKER if resource.resource_name.is_empty() => Vec::new(),
                RESOURCE_BROKER
                    if resource.resource_name.as_str() == broker.config.node_id.to_string() =>
                {
                    broker_configs(&broker.config)
                }
                RESOURCE_BROKER => {
                    return result
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(StrBytes::from_string(format!(
                            "Unexpected broker id {}",
                            resource.resource_name.as_str()
                        ))))
                }
                other => {
                    return result
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(StrBytes::from_string(format!(
                            "Unsupported resource type {other}"
                        ))))
                }
            };
            // Null or empty keys both mean every config (Kafka's ConfigHelper).
            let wanted: Option<HashSet<&str>> = resource
                .configuration_keys
                .as_ref()
                .filter(|keys| !keys.is_empty())
                .map(|keys| keys.iter().map(|key| key.as_str()).collect());
            let configs = configs
                .into_iter()
                .filter(|config| {
                    wanted
                        .as_ref()
                        .is_none_or(|keys| keys.contains(config.name))
                })
                .map(|config| describe(config, request.include_synonyms, version))
                .collect();
            result.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn describe(
    config: ConfigValue,
    include_synonyms: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let mut result = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_static_str(config.name))
        .with_value(Some(StrBytes::from_string(config.value)))
        .with_config_source(config.source);
    if version >= 3 {
        result = result.with_config_type(kafka_config_type(config.config_type));
    }
    if include_synonyms {
        result = result.with_synonyms(
            config
                .synonyms
                .into_iter()
                .map(|(name, value, source)| {
                    DescribeConfigsSynonym::default()
                        .with_name(StrBytes::from_static_str(name))
                        .with_value(Some(StrBytes::from_string(value)))
                        .with_source(source)
                })
                .collect(),
        );
    }
    result
}

/// Kafka's DescribeConfigs config type codes.
fn kafka_config_type(config_type: Option<ConfigType>) -> i8 {
    match config_type {
        Some(ConfigType::Boolean) => 1,
        Some(ConfigType::Enum(_)) | None => 2,
        Some(ConfigType::Int) => 3,
        Some(ConfigType::Long) => 5,
        Some(ConfigType::Double) => 6,
        Some(ConfigType::List(_)) => 7,
    }
}
