//! The broker properties in force on this broker: dynamic broker configs from the metadata image
//! (this broker's own, then the cluster-wide default; Kafka's DYNAMIC_BROKER_CONFIG and
//! DYNAMIC_DEFAULT_BROKER_CONFIG) over the static server properties. Only the properties
//! `skald_controller::topic_config::DYNAMIC_BROKER_CONFIGS` lists can be set dynamically; each is
//! a topic config's default, so topic settings are resolved here.

use std::collections::BTreeMap;

use skald_controller::topic_config::topic_config_def;
use skald_controller::MetadataImage;

use crate::config::ServerConfig;

/// Kafka's ConfigSource values, as DescribeConfigs reports them.
pub const SOURCE_DYNAMIC_TOPIC_CONFIG: i8 = 1;
pub const SOURCE_DYNAMIC_BROKER_CONFIG: i8 = 2;
pub const SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
pub const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
pub const SOURCE_DEFAULT_CONFIG: i8 = 5;

static NO_CONFIGS: BTreeMap<String, String> = BTreeMap::new();

/// A view of this broker's properties as of one metadata image.
#[derive(Debug, Clone, Copy)]
pub struct BrokerDefaults<'a> {
    pub config: &'a ServerConfig,
    /// This broker's dynamic configs.
    pub own: &'a BTreeMap<String, String>,
    /// The cluster-wide dynamic configs.
    pub cluster: &'a BTreeMap<String, String>,
}

impl<'a> BrokerDefaults<'a> {
    pub fn new(config: &'a ServerConfig, image: &'a MetadataImage) -> Self {
        BrokerDefaults {
            config,
            own: image
                .broker_configs
                .get(&config.node_id)
                .unwrap_or(&NO_CONFIGS),
            cluster: &image.broker_default_configs,
        }
    }

    /// A broker property's value in force.
    pub fn get(&self, property: &str) -> String {
        self.own
            .get(property)
            .or_else(|| self.cluster.get(property))
            .cloned()
            .unwrap_or_else(|| self.config.get(property))
    }

    /// Whether the property has a dynamic value (this broker's or the cluster's): its own
    /// dynamic values compare unequal to what the static file says.
    pub fn is_dynamic(&self, property: &str) -> bool {
        self.own.contains_key(property) || self.cluster.contains_key(property)
    }

    /// A topic config's effective value: the topic's override, else the broker property that
    /// supplies its default. `None` for an unknown config.
    pub fn topic_config(&self, overrides: &BTreeMap<String, String>, name: &str) -> Option<String> {
        let def = topic_config_def(name)?;
        overrides.get(name).cloned().or_else(|| {
            Some(match def.broker_property {
                Some(property) => self.get(property),
                None => def.default.to_string(),
            })
        })
    }

    /// Where a broker property's value comes from, most specific first, each with its source:
    /// Kafka's synonyms list (the static file's value only when it was set or differs from the
    /// default, e.g. `log.retention.ms` derived from `log.retention.hours`).
    pub fn sources(
        &self,
        property: &'static str,
        default: &str,
    ) -> Vec<(&'static str, String, i8)> {
        let mut sources = Vec::new();
        if let Some(value) = self.own.get(property) {
            sources.push((property, value.clone(), SOURCE_DYNAMIC_BROKER_CONFIG));
        }
        if let Some(value) = self.cluster.get(property) {
            sources.push((
                property,
                value.clone(),
                SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG,
            ));
        }
        let static_value = self.config.get(property);
        if self.config.is_explicit(property) || static_value != default {
            sources.push((property, static_value, SOURCE_STATIC_BROKER_CONFIG));
        }
        sources.push((property, default.to_string(), SOURCE_DEFAULT_CONFIG));
        sources
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skald_controller::{ConfigResource, MetadataRecord};

    #[test]
    fn own_then_cluster_then_static_values_apply() {
        let config = ServerConfig::load(
            None,
            &["node.id=1".to_string(), "log.retention.hours=1".to_string()],
        )
        .unwrap();
        let mut image = MetadataImage::default();
        let set = |resource, name: &str, value: &str| MetadataRecord::Config {
            resource,
            name: name.into(),
            value: Some(value.into()),
        };
        image.replay(&set(
            ConfigResource::BrokerDefault,
            "log.retention.ms",
            "2000",
        ));
        image.replay(&set(
            ConfigResource::BrokerDefault,
            "log.segment.bytes",
            "4096",
        ));
        image.replay(&set(ConfigResource::Broker(1), "log.retention.ms", "1000"));
        image.replay(&set(ConfigResource::Broker(2), "log.segment.bytes", "8192"));
        let defaults = BrokerDefaults::new(&config, &image);
        let none = BTreeMap::new();
        assert_eq!(
            defaults.topic_config(&none, "retention.ms").as_deref(),
            Some("1000")
        );
        assert_eq!(
            defaults.topic_config(&none, "segment.bytes").as_deref(),
            Some("4096")
        );
        assert_eq!(
            defaults.topic_config(&none, "max.message.bytes").as_deref(),
            Some("1048588")
        );
        let topic = BTreeMap::from([("retention.ms".to_string(), "5".to_string())]);
        assert_eq!(
            defaults.topic_config(&topic, "retention.ms").as_deref(),
            Some("5")
        );
        assert_eq!(
            defaults.sources("log.retention.ms", "604800000"),
            vec![
                (
                    "log.retention.ms",
                    "1000".to_string(),
                    SOURCE_DYNAMIC_BROKER_CONFIG
                ),
                (
                    "log.retention.ms",
                    "2000".to_string(),
                    SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG
                ),
                (
                    "log.retention.ms",
                    "3600000".to_string(),
                    SOURCE_STATIC_BROKER_CONFIG
                ),
                (
                    "log.retention.ms",
                    "604800000".to_string(),
                    SOURCE_DEFAULT_CONFIG
                ),
            ]
        );
    }
}
