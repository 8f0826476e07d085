//! DescribeConfigs for topics (overrides over broker defaults), for this broker and for the
//! cluster-wide dynamic broker configs, with Kafka's sources and synonyms.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use skald_controller::topic_config::{
    broker_property_def, broker_property_defs, ConfigType, TOPIC_CONFIGS,
};

use super::cluster_view::ClusterView;
use super::config_changes::{RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::dynamic_config::{
    BrokerDefaults, SOURCE_DEFAULT_CONFIG, SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG,
    SOURCE_DYNAMIC_TOPIC_CONFIG, SOURCE_STATIC_BROKER_CONFIG,
};

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

impl ConfigValue {
    /// The value in force is the first synonym's.
    fn from_synonyms(
        name: &'static str,
        config_type: Option<ConfigType>,
        synonyms: Vec<(&'static str, String, i8)>,
    ) -> ConfigValue {
        let (_, value, source) = synonyms[0].clone();
        ConfigValue {
            name,
            value,
            source,
            config_type,
            synonyms,
        }
    }
}

/// Every topic config with its effective value: the topic's override, else the broker's setting
/// (dynamic for this broker, dynamic cluster-wide, static, Kafka's default).
pub fn effective_topic_configs(
    overrides: &BTreeMap<String, String>,
    defaults: &BrokerDefaults<'_>,
) -> Vec<ConfigValue> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let mut synonyms = Vec::new();
            if let Some(value) = overrides.get(def.name) {
                synonyms.push((def.name, value.clone(), SOURCE_DYNAMIC_TOPIC_CONFIG));
            }
            match def.broker_property {
                Some(property) => synonyms.extend(defaults.sources(property, def.default)),
                // Kafka's throttled replica lists have no broker synonym: the default is theirs.
                None => synonyms.push((def.name, def.default.to_string(), SOURCE_DEFAULT_CONFIG)),
            }
            ConfigValue::from_synonyms(def.name, Some(def.config_type), synonyms)
        })
        .collect()
}

/// Every broker property, as this broker runs with it.
fn broker_configs(defaults: &BrokerDefaults<'_>) -> Vec<ConfigValue> {
    defaults
        .config
        .known_properties()
        .into_iter()
        .map(|(name, static_value)| {
            let def = broker_property_def(name);
            let synonyms = match def {
                Some(def) => defaults.sources(name, def.default),
                None => {
                    let source = if defaults.config.is_explicit(name) {
                        SOURCE_STATIC_BROKER_CONFIG
                    } else {
                        SOURCE_DEFAULT_CONFIG
                    };
                    vec![(name, static_value, source)]
                }
            };
            ConfigValue::from_synonyms(name, def.map(|def| def.config_type), synonyms)
        })
        .collect()
}

/// The cluster-wide dynamic broker configs (Kafka's BROKER resource with an empty name).
fn broker_default_configs(defaults: &BrokerDefaults<'_>) -> Vec<ConfigValue> {
    broker_property_defs()
        .filter_map(|(property, def)| {
            let value = defaults.cluster.get(property)?;
            let synonym = (
                property,
                value.clone(),
                SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG,
            );
            Some(ConfigValue::from_synonyms(
                property,
                Some(def.config_type),
                vec![synonym],
            ))
        })
        .collect()
}

pub fn handle(
    cluster: ClusterView<'_>,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let image = cluster.image;
    let defaults = BrokerDefaults::new(cluster.config, image);
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let configs = match resource.resource_type {
                RESOURCE_TOPIC => match image.topic(resource.resource_name.as_str()) {
                    Some(topic) => effective_topic_configs(&topic.configs, &defaults),
                    None => {
                        return result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "Topic '{}' does not exist.",
                                resource.resource_name.as_str()
                            ))))
                    }
                },
                RESOURCE_BROKER if resource.resource_name.is_empty() => {
                    broker_default_configs(&defaults)
                }
                RESOURCE_BROKER
                    if resource.resource_name.as_str() == cluster.config.node_id.to_string() =>
                {
                    broker_configs(&defaults)
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
        Some(ConfigType::List(_) | ConfigType::ReplicaList) => 7,
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::describe_configs_response::{
        DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
    };
    use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
    use kafka_protocol::protocol::StrBytes;
    use skald_controller::{ConfigResource, MetadataImage, MetadataRecord, TopicId};

    use super::handle;
    use crate::api::cluster_view::ClusterView;
    use crate::api::config_changes::{RESOURCE_BROKER, RESOURCE_TOPIC};
    use crate::config::ServerConfig;

    fn text(value: &str) -> StrBytes {
        StrBytes::from_string(value.to_string())
    }

    /// Topic `orders` overriding `retention.ms`; `log.segment.bytes` set cluster-wide.
    fn image() -> MetadataImage {
        let mut image = MetadataImage::default();
        image.replay_batch(&[
            MetadataRecord::Topic {
                name: "orders".into(),
                topic_id: TopicId(7),
            },
            MetadataRecord::Config {
                resource: ConfigResource::Topic("orders".into()),
                name: "retention.ms".into(),
                value: Some("1000".into()),
            },
            MetadataRecord::Config {
                resource: ConfigResource::BrokerDefault,
                name: "log.segment.bytes".into(),
                value: Some("4096".into()),
            },
        ]);
        image
    }

    fn describe(
        resources: Vec<DescribeConfigsResource>,
        synonyms: bool,
        version: i16,
    ) -> DescribeConfigsResponse {
        let image = image();
        let config = ServerConfig::from_properties(
            [
                ("node.id".to_string(), "1".to_string()),
                ("message.max.bytes".to_string(), "2000000".to_string()),
            ]
            .into(),
        )
        .expect("valid config");
        let cluster = ClusterView {
            image: &image,
            config: &config,
            cluster_id: "cluster-x",
        };
        let request = DescribeConfigsRequest::default()
            .with_resources(resources)
            .with_include_synonyms(synonyms);
        handle(cluster, request, version)
    }

    fn resource(resource_type: i8, name: &str, keys: &[&str]) -> DescribeConfigsResource {
        DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(text(name))
            .with_configuration_keys(Some(keys.iter().map(|key| text(key)).collect()))
    }

    fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
        DescribeConfigsSynonym::default()
            .with_name(text(name))
            .with_value(Some(text(value)))
            .with_source(source)
    }

    fn config(name: &str, value: &str, source: i8) -> DescribeConfigsResourceResult {
        DescribeConfigsResourceResult::default()
            .with_name(text(name))
            .with_value(Some(text(value)))
            .with_config_source(source)
    }

    #[test]
    fn a_topics_configs_with_their_sources_and_synonyms() {
        let asked = resource(
            RESOURCE_TOPIC,
            "orders",
            &["retention.ms", "segment.bytes", "max.message.bytes"],
        );
        assert_eq!(
            describe(vec![asked.clone()], true, 3),
            DescribeConfigsResponse::default().with_results(vec![DescribeConfigsResult::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(text("orders"))
                .with_configs(vec![
                    config("max.message.bytes", "2000000", 4)
                        .with_config_type(3)
                        .with_synonyms(vec![
                            synonym("message.max.bytes", "2000000", 4),
                            synonym("message.max.bytes", "1048588", 5),
                        ]),
                    config("retention.ms", "1000", 1)
                        .with_config_type(5)
                        .with_synonyms(vec![
                            synonym("retention.ms", "1000", 1),
                            synonym("log.retention.ms", "604800000", 5),
                        ]),
                    config("segment.bytes", "4096", 3)
                        .with_config_type(3)
                        .with_synonyms(vec![
                            synonym("log.segment.bytes", "4096", 3),
                            synonym("log.segment.bytes", "1073741824", 5),
                        ]),
                ])])
        );
        // Before v3 no config type; without include_synonyms none.
        let configs = &describe(vec![asked], false, 2).results[0].configs;
        assert_eq!(configs[1], config("retention.ms", "1000", 1));
    }

    #[test]
    fn unknown_topics_other_brokers_and_unknown_resource_types_are_refused_alone() {
        let response = describe(
            vec![
                resource(RESOURCE_TOPIC, "missing", &[]),
                resource(RESOURCE_BROKER, "2", &[]),
                resource(9, "x", &[]),
                resource(RESOURCE_BROKER, "", &[]),
            ],
            false,
            4,
        );
        let refused = |resource_type: i8, name: &str, error: ResponseError, message: &str| {
            DescribeConfigsResult::default()
                .with_resource_type(resource_type)
                .with_resource_name(text(name))
                .with_error_code(error.code())
                .with_error_message(Some(text(message)))
        };
        assert_eq!(
            response,
            DescribeConfigsResponse::default().with_results(vec![
                refused(
                    RESOURCE_TOPIC,
                    "missing",
                    ResponseError::UnknownTopicOrPartition,
                    "Topic 'missing' does not exist."
                ),
                refused(
                    RESOURCE_BROKER,
                    "2",
                    ResponseError::InvalidRequest,
                    "Unexpected broker id 2"
                ),
                refused(
                    9,
                    "x",
                    ResponseError::InvalidRequest,
                    "Unsupported resource type 9"
                ),
                // The cluster-wide dynamic configs: only those set.
                DescribeConfigsResult::default()
                    .with_resource_type(RESOURCE_BROKER)
                    .with_resource_name(text(""))
                    .with_configs(vec![
                        config("log.segment.bytes", "4096", 3).with_config_type(3)
                    ]),
            ])
        );
    }

    #[test]
    fn this_brokers_configs_say_which_were_set() {
        let response = describe(
            vec![resource(
                RESOURCE_BROKER,
                "1",
                &["message.max.bytes", "log.segment.bytes"],
            )],
            false,
            4,
        );
        assert_eq!(
            response.results[0].configs,
            vec![
                config("log.segment.bytes", "4096", 3).with_config_type(3),
                config("message.max.bytes", "2000000", 4).with_config_type(3),
            ]
        );
    }
}
