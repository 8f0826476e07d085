//! Config changes to existing topics (Kafka's `ConfigurationControlManager`): IncrementalAlterConfigs
//! (SET, DELETE, APPEND, SUBTRACT per key) and the legacy AlterConfigs (the topic's overrides
//! replaced as a whole). Each topic's changes are validated against the committed image as a whole
//! and become `Config` records, which every node replays; a refused topic changes nothing.
//!
//! The broker refuses what Kafka refuses before forwarding (duplicate resources or keys, null
//! values, unknown operations), so requests reaching here name each topic and key once.

use serde::{Deserialize, Serialize};

use crate::controller::Planned;
use crate::error::TopicError;
use crate::image::MetadataImage;
use crate::record::{ConfigResource, MetadataRecord};
use crate::topic_config::{topic_config_def, validate_topic_config, ConfigType};

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

/// What happens to one topic's overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigChanges {
    /// IncrementalAlterConfigs: only the named keys change.
    Incremental(Vec<(String, ConfigOp)>),
    /// AlterConfigs: these become the topic's only overrides; every other override is removed.
    Replace(Vec<(String, String)>),
}

/// One topic of an AlterConfigs / IncrementalAlterConfigs request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterTopicConfigs {
    pub topic: String,
    pub changes: ConfigChanges,
}

/// Plans each topic's changes; with `validate_only`, the outcomes alone.
pub fn alter_topic_configs(
    image: &MetadataImage,
    topics: &[AlterTopicConfigs],
    validate_only: bool,
) -> Planned<Vec<Result<(), TopicError>>> {
    let mut records = Vec::new();
    let mut reply = Vec::with_capacity(topics.len());
    for request in topics {
        match plan_topic(image, request) {
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

fn plan_topic(
    image: &MetadataImage,
    request: &AlterTopicConfigs,
) -> Result<Vec<MetadataRecord>, TopicError> {
    let topic = image
        .topic(&request.topic)
        .ok_or(TopicError::UnknownTopicOrPartition)?;
    // (name, new value or None for back to the default)
    let mut changes: Vec<(String, Option<String>)> = Vec::new();
    match &request.changes {
        ConfigChanges::Incremental(ops) => {
            for (name, op) in ops {
                let current = || {
                    topic
                        .configs
                        .get(name)
                        .cloned()
                        .or_else(|| topic_config_def(name).map(|def| def.default.to_string()))
                };
                let value = match op {
                    ConfigOp::Set(value) => Some(value.clone()),
                    ConfigOp::Delete => None,
                    ConfigOp::Append(items) | ConfigOp::Subtract(items) => {
                        let def = topic_config_def(name).ok_or_else(|| {
                            TopicError::InvalidConfig(format!("Unknown topic config name: {name}"))
                        })?;
                        if !matches!(def.config_type, ConfigType::List(_)) {
                            return Err(TopicError::InvalidConfig(format!(
                                "Can't {} to key {name} because its type is not LIST.",
                                op.kafka_name()
                            )));
                        }
                        let mut list = split_list(&current().unwrap_or_default());
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
                topic
                    .configs
                    .keys()
                    .filter(|name| !configs.iter().any(|(given, _)| given == *name))
                    .map(|name| (name.clone(), None)),
            );
        }
    }
    for (name, value) in &changes {
        match value {
            Some(value) => validate_topic_config(name, value).map_err(TopicError::InvalidConfig)?,
            // Removing an override no topic has is a no-op, as in Kafka; removing an unknown
            // name is refused like setting one.
            None if topic_config_def(name).is_none() && !topic.configs.contains_key(name) => {
                return Err(TopicError::InvalidConfig(format!(
                    "Unknown topic config name: {name}"
                )))
            }
            None => {}
        }
    }
    Ok(changes
        .into_iter()
        .filter(|(name, value)| topic.configs.get(name) != value.as_ref())
        .map(|(name, value)| MetadataRecord::Config {
            resource: ConfigResource::Topic(topic.name.clone()),
            name,
            value,
        })
        .collect())
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

    fn incremental(ops: &[(&str, ConfigOp)]) -> AlterTopicConfigs {
        AlterTopicConfigs {
            topic: "orders".into(),
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
        let planned = alter_topic_configs(
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
        let planned = alter_topic_configs(
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
            let planned = alter_topic_configs(&image, &[incremental(ops)], false);
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
        let unknown = AlterTopicConfigs {
            topic: "missing".into(),
            changes: ConfigChanges::Incremental(vec![]),
        };
        assert_eq!(
            alter_topic_configs(&image, &[unknown], false).reply,
            vec![Err(TopicError::UnknownTopicOrPartition)]
        );
    }

    #[test]
    fn replace_removes_every_override_not_given_and_validate_only_plans_nothing() {
        let image = image_with_topic(&[("retention.ms", "1000"), ("segment.bytes", "1048576")]);
        let replace = AlterTopicConfigs {
            topic: "orders".into(),
            changes: ConfigChanges::Replace(vec![
                ("segment.bytes".into(), "1048576".into()),
                ("max.message.bytes".into(), "2048".into()),
            ]),
        };
        let planned = alter_topic_configs(&image, std::slice::from_ref(&replace), false);
        assert_eq!(planned.reply, vec![Ok(())]);
        assert_eq!(
            planned.records,
            vec![
                config("max.message.bytes", Some("2048")),
                config("retention.ms", None),
            ]
        );
        let planned = alter_topic_configs(&image, &[replace], true);
        assert_eq!(planned.reply, vec![Ok(())]);
        assert!(planned.records.is_empty());
    }
}
