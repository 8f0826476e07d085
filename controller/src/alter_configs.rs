//! Config changes (Kafka's `ConfigurationControlManager`): IncrementalAlterConfigs (SET, DELETE,
//! APPEND, SUBTRACT per key) and the legacy AlterConfigs (a resource's configs replaced as a
//! whole), for topics and for dynamic broker configs (one broker's, or the cluster-wide default).
//! Each resource's changes are validated against the committed image as a whole and become
//! `Config` records, which every node replays; a refused resource changes nothing.
//!
//! The broker refuses what Kafka refuses before forwarding (duplicate resources or keys, null
//! values, unknown operations, a BROKER resource naming another broker), so requests reaching
//! here name each resource and key once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::controller::Planned;
use crate::error::TopicError;
use crate::image::MetadataImage;
use crate::record::{ConfigResource, MetadataRecord};
use crate::topic_config::{
    dynamic_broker_config_def, topic_config_def, validate_value, TopicConfigDef,
    BROKER_DECOMMISSIONED,
};

/// One key's change in an IncrementalAlterConfigs request (Kafka's `AlterConfigOp.OpType`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigOp {
    Set(String),
    /// Back to the default.
    Delete,
    /// List configs only: adds the items not already in the current value.
    Append(String),
    /// List configs only: removes the items from the current value.
    Subtract(String),
}

impl ConfigOp {
    fn kafka_name(&self) -> &'static str {
        match self {
            ConfigOp::Set(_) => "SET",
            ConfigOp::Delete => "DELETE",
            ConfigOp::Append(_) => "APPEND",
            ConfigOp::Subtract(_) => "SUBTRACT",
        }
    }
}

/// What happens to one resource's configs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigChanges {
    /// IncrementalAlterConfigs: only the named keys change.
    Incremental(Vec<(String, ConfigOp)>),
    /// AlterConfigs: these become the resource's only configs; every other one is removed.
    Replace(Vec<(String, String)>),
}

impl ConfigChanges {
    /// The keys named, in request order.
    pub fn names(&self) -> Vec<&str> {
        match self {
            ConfigChanges::Incremental(ops) => ops.iter().map(|(name, _)| name.as_str()).collect(),
            ConfigChanges::Replace(configs) => {
                configs.iter().map(|(name, _)| name.as_str()).collect()
            }
        }
    }
}

/// One resource of an AlterConfigs / IncrementalAlterConfigs request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterConfigsResource {
    pub resource: ConfigResource,
    pub changes: ConfigChanges,
}

/// Plans each resource's changes; with `validate_only`, the outcomes alone.
pub fn alter_configs(
    image: &MetadataImage,
    resources: &[AlterConfigsResource],
    validate_only: bool,
) -> Planned<Vec<Result<(), TopicError>>> {
    let mut records = Vec::new();
    let mut reply = Vec::with_capacity(resources.len());
    for request in resources {
        match plan_resource(image, request) {
            Ok(changes) => {
                if !validate_only {
                    records.extend(changes);
                }
                reply.push(Ok(()));
            }
            Err(err) => reply.push(Err(err)),
        }
    }
    Planned { records, reply }
}

/// How one kind of resource names, checks and refuses its configs.
struct Schema {
    def: fn(&str) -> Option<&'static TopicConfigDef>,
    /// Kafka refuses a bad topic config with INVALID_CONFIG and a bad broker config with
    /// INVALID_REQUEST (a broker config that fails validation surfaces as InvalidRequestException,
    /// KAFKA-13609).
    refusal: fn(String) -> TopicError,
    topic: bool,
}

const TOPIC_SCHEMA: Schema = Schema {
    def: topic_config_def,
    refusal: TopicError::InvalidConfig,
    topic: true,
};

const BROKER_SCHEMA: Schema = Schema {
    def: dynamic_broker_config_def,
    refusal: TopicError::InvalidRequest,
    topic: false,
};

fn plan_resource(
    image: &MetadataImage,
    request: &AlterConfigsResource,
) -> Result<Vec<MetadataRecord>, TopicError> {
    let empty = BTreeMap::new();
    let (current, schema) = match &request.resource {
        ConfigResource::Topic(name) => (
            &image
                .topic(name)
                .ok_or(TopicError::UnknownTopicOrPartition)?
                .configs,
            &TOPIC_SCHEMA,
        ),
        ConfigResource::Broker(broker_id) => (
            image.broker_configs.get(broker_id).unwrap_or(&empty),
            &BROKER_SCHEMA,
        ),
        ConfigResource::BrokerDefault => (&image.broker_default_configs, &BROKER_SCHEMA),
    };
    if !schema.topic {
        // Kafka's DynamicBrokerConfig names every config that cannot change at once.
        let static_names: Vec<&str> = request
            .changes
            .names()
            .into_iter()
            .filter(|name| (schema.def)(name).is_none() && !current.contains_key(*name))
            .collect();
        if !static_names.is_empty() {
            return Err(TopicError::InvalidRequest(format!(
                "Cannot update these configs dynamically: Set({})",
                static_names.join(", ")
            )));
        }
    }
    let unknown = |name: &str| {
        if schema.topic {
            TopicError::InvalidConfig(format!("Unknown topic config name: {name}"))
        } else {
            TopicError::InvalidRequest(format!(
                "Cannot update these configs dynamically: Set({name})"
            ))
        }
    };
    // (name, new value or None for back to the default)
    let mut changes: Vec<(String, Option<String>)> = Vec::new();
    match &request.changes {
        ConfigChanges::Incremental(ops) => {
            for (name, op) in ops {
                let value = match op {
                    ConfigOp::Set(value) => Some(value.clone()),
                    ConfigOp::Delete => None,
                    ConfigOp::Append(items) | ConfigOp::Subtract(items) => {
                        let def = (schema.def)(name).ok_or_else(|| unknown(name))?;
                        if !def.config_type.is_list() {
                            return Err(TopicError::InvalidConfig(format!(
                                "Can't {} to key {name} because its type is not LIST.",
                                op.kafka_name()
                            )));
                        }
                        let current_value = current.get(name).map_or(def.default, String::as_str);
                        let mut list = split_list(current_value);
                        let items = split_list(items);
                        if matches!(op, ConfigOp::Append(_)) {
                            for item in items {
                                if !list.contains(&item) {
                                    list.push(item);
                                }
                            }
                        } else {
                            list.retain(|item| !items.contains(item));
                        }
                        Some(list.join(","))
                    }
                };
                changes.push((name.clone(), value));
            }
        }
        ConfigChanges::Replace(configs) => {
            changes.extend(
                configs
                    .iter()
                    .map(|(name, value)| (name.clone(), Some(value.clone()))),
            );
            changes.extend(
                current
                    .keys()
                    .filter(|name| !configs.iter().any(|(given, _)| given == *name))
                    .map(|name| (name.clone(), None)),
            );
        }
    }
    for (name, value) in &changes {
        match (value, (schema.def)(name)) {
            (Some(value), Some(def)) => validate_value(def, value).map_err(|reason| {
                (schema.refusal)(format!(
                    "Invalid value {value} for configuration {name}: {reason}"
                ))
            })?,
            (Some(_), None) => return Err(unknown(name)),
            // Removing a config that is not set is a no-op, as in Kafka; removing an unknown
            // name is refused like setting one.
            (None, None) if !current.contains_key(name) => return Err(unknown(name)),
            (None, _) => {}
        }
    }
    refuse_early_decommission(image, &request.resource, &changes)?;
    Ok(changes
        .into_iter()
        .filter(|(name, value)| current.get(name) != value.as_ref())
        .map(|(name, value)| MetadataRecord::Config {
            resource: request.resource.clone(),
            name,
            value,
        })
        .collect())
}

/// `broker.decommissioned` shuts a broker down for good: it is set per broker only, and only
/// once the broker hosts no replica (not even one a reassignment is adding), so no partition
/// loses a replica to it.
fn refuse_early_decommission(
    image: &MetadataImage,
    resource: &ConfigResource,
    changes: &[(String, Option<String>)],
) -> Result<(), TopicError> {
    let Some((_, value)) = changes
        .iter()
        .find(|(name, _)| name == BROKER_DECOMMISSIONED)
    else {
        return Ok(());
    };
    let broker_id = match resource {
        ConfigResource::Broker(broker_id) => *broker_id,
        _ => {
            return Err(TopicError::InvalidRequest(format!(
                "{BROKER_DECOMMISSIONED} is set for one broker, never cluster-wide"
            )))
        }
    };
    if !value
        .as_deref()
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
    {
        return Ok(());
    }
    let hosted = image
        .topics
        .values()
        .flat_map(|topic| topic.partitions.values())
        .filter(|partition| partition.replicas.contains(&broker_id))
        .count();
    if hosted > 0 {
        return Err(TopicError::InvalidRequest(format!(
            "broker {broker_id} still hosts {hosted} partition replicas: move them off first \
             (skald cluster decommission {broker_id})"
        )));
    }
    Ok(())
}

/// A list config's items, as Kafka splits them (commas, surrounding spaces dropped, no empties).
fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::TopicId;

    fn image_with_topic(configs: &[(&str, &str)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        image.replay(&MetadataRecord::Topic {
            name: "orders".into(),
            topic_id: TopicId(7),
        });
        for (name, value) in configs {
            image.replay(&MetadataRecord::Config {
                resource: ConfigResource::Topic("orders".into()),
                name: (*name).into(),
                value: Some((*value).into()),
            });
        }
        image
    }

    fn incremental(ops: &[(&str, ConfigOp)]) -> AlterConfigsResource {
        AlterConfigsResource {
            resource: ConfigResource::Topic("orders".into()),
            changes: ConfigChanges::Incremental(
                ops.iter()
                    .map(|(name, op)| ((*name).to_string(), op.clone()))
                    .collect(),
            ),
        }
    }

    fn config(name: &str, value: Option<&str>) -> MetadataRecord {
        MetadataRecord::Config {
            resource: ConfigResource::Topic("orders".into()),
            name: name.into(),
            value: value.map(str::to_string),
        }
    }

    #[test]
    fn set_delete_append_and_subtract_plan_config_records() {
        let image = image_with_topic(&[("retention.ms", "1000"), ("segment.bytes", "1048576")]);
        let planned = alter_configs(
            &image,
            &[incremental(&[
                ("retention.ms", ConfigOp::Set("2000".into())),
                ("segment.bytes", ConfigOp::Delete),
                // From the default `delete`.
                ("cleanup.policy", ConfigOp::Append("compact".into())),
                // Deleting what is not overridden changes nothing.
                ("flush.ms", ConfigOp::Delete),
            ])],
            false,
        );
        assert_eq!(planned.reply, vec![Ok(())]);
        assert_eq!(
            planned.records,
            vec![
                config("retention.ms", Some("2000")),
                config("segment.bytes", None),
                config("cleanup.policy", Some("delete,compact")),
            ]
        );
        let mut image = image;
        image.replay_batch(&planned.records);
        let planned = alter_configs(
            &image,
            &[incremental(&[(
                "cleanup.policy",
                ConfigOp::Subtract("delete".into()),
            )])],
            false,
        );
        assert_eq!(
            planned.records,
            vec![config("cleanup.policy", Some("compact"))]
        );
    }

    #[test]
    fn refusals_carry_kafkas_errors_and_change_nothing() {
        let image = image_with_topic(&[]);
        let refused = |ops: &[(&str, ConfigOp)]| {
            let planned = alter_configs(&image, &[incremental(ops)], false);
            assert!(planned.records.is_empty());
            planned.reply.into_iter().next().unwrap().unwrap_err()
        };
        assert_eq!(
            refused(&[("no.such.config", ConfigOp::Set("1".into()))]),
            TopicError::InvalidConfig("Unknown topic config name: no.such.config".into())
        );
        assert_eq!(
            refused(&[
                ("retention.ms", ConfigOp::Set("1000".into())),
                ("retention.bytes", ConfigOp::Set("lots".into())),
            ]),
            TopicError::InvalidConfig(
                "Invalid value lots for configuration retention.bytes: Not a number of type LONG"
                    .into()
            )
        );
        assert_eq!(
            refused(&[("retention.ms", ConfigOp::Append("5".into()))]),
            TopicError::InvalidConfig(
                "Can't APPEND to key retention.ms because its type is not LIST.".into()
            )
        );
        assert_eq!(
            refused(&[("cleanup.policy", ConfigOp::Subtract("delete".into()))]),
            TopicError::InvalidConfig(
                "Invalid value  for configuration cleanup.policy: Each item must be one of: delete, compact"
                    .into()
            )
        );
        let unknown = AlterConfigsResource {
            resource: ConfigResource::Topic("missing".into()),
            changes: ConfigChanges::Incremental(vec![]),
        };
        assert_eq!(
            alter_configs(&image, &[unknown], false).reply,
            vec![Err(TopicError::UnknownTopicOrPartition)]
        );
    }

    #[test]
    fn a_broker_is_decommissioned_only_alone_and_once_it_hosts_nothing() {
        let mut image = image_with_topic(&[]);
        image.replay(&MetadataRecord::Partition {
            topic_id: TopicId(7),
            partition: 0,
            replicas: vec![1, 2],
            isr: vec![1, 2],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            removing_replicas: vec![],
            adding_replicas: vec![2],
        });
        let decommission = |resource: ConfigResource, value: &str| AlterConfigsResource {
            resource,
            changes: ConfigChanges::Incremental(vec![(
                BROKER_DECOMMISSIONED.into(),
                ConfigOp::Set(value.into()),
            )]),
        };
        let planned = alter_configs(
            &image,
            &[
                // A replica being added counts.
                decommission(ConfigResource::Broker(2), "true"),
                decommission(ConfigResource::BrokerDefault, "true"),
                decommission(ConfigResource::Broker(3), "maybe"),
                decommission(ConfigResource::Broker(2), "false"),
                decommission(ConfigResource::Broker(3), "TRUE"),
            ],
            false,
        );
        assert_eq!(
            planned.reply,
            vec![
                Err(TopicError::InvalidRequest(
                    "broker 2 still hosts 1 partition replicas: move them off first \
                     (skald cluster decommission 2)"
                        .into()
                )),
                Err(TopicError::InvalidRequest(
                    "broker.decommissioned is set for one broker, never cluster-wide".into()
                )),
                Err(TopicError::InvalidRequest(
                    "Invalid value maybe for configuration broker.decommissioned: Expected \
                     value to be either true or false"
                        .into()
                )),
                Ok(()),
                Ok(()),
            ]
        );
        let broker = |id, value: &str| MetadataRecord::Config {
            resource: ConfigResource::Broker(id),
            name: BROKER_DECOMMISSIONED.into(),
            value: Some(value.into()),
        };
        assert_eq!(planned.records, vec![broker(2, "false"), broker(3, "TRUE")]);
        image.replay_batch(&planned.records);
        assert!(!crate::topic_config::is_decommissioned(&image, 2));
        assert!(crate::topic_config::is_decommissioned(&image, 3));
    }

    #[test]
    fn replace_removes_every_override_not_given_and_validate_only_plans_nothing() {
        let image = image_with_topic(&[("retention.ms", "1000"), ("segment.bytes", "1048576")]);
        let replace = AlterConfigsResource {
            resource: ConfigResource::Topic("orders".into()),
            changes: ConfigChanges::Replace(vec![
                ("segment.bytes".into(), "1048576".into()),
                ("max.message.bytes".into(), "2048".into()),
            ]),
        };
        let planned = alter_configs(&image, std::slice::from_ref(&replace), false);
        assert_eq!(planned.reply, vec![Ok(())]);
        assert_eq!(
            planned.records,
            vec![
                config("max.message.bytes", Some("2048")),
                config("retention.ms", None),
            ]
        );
        let planned = alter_configs(&image, &[replace], true);
        assert_eq!(planned.reply, vec![Ok(())]);
        assert!(planned.records.is_empty());
    }

    #[test]
    fn dynamic_broker_configs_per_broker_and_cluster_wide() {
        let image = image_with_topic(&[]);
        let broker = |resource: ConfigResource, ops: &[(&str, ConfigOp)]| {
            alter_configs(
                &image,
                &[AlterConfigsResource {
                    resource,
                    changes: ConfigChanges::Incremental(
                        ops.iter()
                            .map(|(name, op)| ((*name).to_string(), op.clone()))
                            .collect(),
                    ),
                }],
                false,
            )
        };
        let planned = broker(
            ConfigResource::BrokerDefault,
            &[
                ("log.retention.ms", ConfigOp::Set("1000".into())),
                ("log.cleanup.policy", ConfigOp::Append("compact".into())),
            ],
        );
        assert_eq!(planned.reply, vec![Ok(())]);
        let default = |name: &str, value: &str| MetadataRecord::Config {
            resource: ConfigResource::BrokerDefault,
            name: name.into(),
            value: Some(value.into()),
        };
        assert_eq!(
            planned.records,
            vec![
                default("log.retention.ms", "1000"),
                default("log.cleanup.policy", "delete,compact"),
            ]
        );
        let mut image = image.clone();
        image.replay_batch(&planned.records);
        image.replay(&MetadataRecord::Config {
            resource: ConfigResource::Broker(2),
            name: "message.max.bytes".into(),
            value: Some("2048".into()),
        });
        assert_eq!(image.broker_default_configs.len(), 2);
        // A snapshot carries both kinds.
        let mut restored = MetadataImage::default();
        restored.replay_batch(&image.to_records());
        assert_eq!(restored, image);

        // Static configs and bad values: INVALID_REQUEST, as Kafka's broker-side validation.
        assert_eq!(
            broker(
                ConfigResource::Broker(2),
                &[
                    ("log.dirs", ConfigOp::Set("/tmp".into())),
                    ("log.retention.ms", ConfigOp::Set("1".into())),
                    ("broker.id", ConfigOp::Delete),
                ]
            )
            .reply,
            vec![Err(TopicError::InvalidRequest(
                "Cannot update these configs dynamically: Set(log.dirs, broker.id)".into()
            ))]
        );
        assert_eq!(
            broker(
                ConfigResource::Broker(2),
                &[("log.retention.ms", ConfigOp::Set("soon".into()))]
            )
            .reply,
            vec![Err(TopicError::InvalidRequest(
                "Invalid value soon for configuration log.retention.ms: Not a number of type LONG"
                    .into()
            ))]
        );
    }

    /// What `kafka-reassign-partitions --throttle` sets: the brokers' rates and the topic's
    /// throttled replica lists, which APPEND and SUBTRACT edit like any LIST config.
    #[test]
    fn replication_throttles_are_set_per_broker_and_per_topic() {
        let image = image_with_topic(&[]);
        let planned = alter_configs(
            &image,
            &[AlterConfigsResource {
                resource: ConfigResource::Broker(2),
                changes: ConfigChanges::Incremental(vec![
                    (
                        "leader.replication.throttled.rate".into(),
                        ConfigOp::Set("1048576".into()),
                    ),
                    (
                        "follower.replication.throttled.rate".into(),
                        ConfigOp::Set("2097152".into()),
                    ),
                ]),
            }],
            false,
        );
        assert_eq!(planned.reply, vec![Ok(())]);
        assert_eq!(planned.records.len(), 2);
        let planned = alter_configs(
            &image,
            &[incremental(&[
                (
                    "leader.replication.throttled.replicas",
                    ConfigOp::Append("0:1,1:2".into()),
                ),
                (
                    "follower.replication.throttled.replicas",
                    ConfigOp::Set("*".into()),
                ),
            ])],
            false,
        );
        assert_eq!(
            planned.records,
            vec![
                config("leader.replication.throttled.replicas", Some("0:1,1:2")),
                config("follower.replication.throttled.replicas", Some("*")),
            ]
        );
        let refused = alter_configs(
            &image,
            &[incremental(&[(
                "leader.replication.throttled.replicas",
                ConfigOp::Set("0-1".into()),
            )])],
            false,
        );
        assert!(refused.records.is_empty());
        assert!(matches!(
            &refused.reply[..],
            [Err(TopicError::InvalidConfig(message))] if message.contains("must be the literal '*'")
        ));
        let refused = alter_configs(
            &image,
            &[AlterConfigsResource {
                resource: ConfigResource::BrokerDefault,
                changes: ConfigChanges::Incremental(vec![(
                    "leader.replication.throttled.rate".into(),
                    ConfigOp::Set("-5".into()),
                )]),
            }],
            false,
        );
        assert_eq!(
            refused.reply,
            vec![Err(TopicError::InvalidRequest(
                "Invalid value -5 for configuration leader.replication.throttled.rate: \
                 Value must be at least 0"
                    .into()
            ))]
        );
    }
}
