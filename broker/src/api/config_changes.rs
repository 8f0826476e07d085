//! What AlterConfigs and IncrementalAlterConfigs share (Kafka's `ConfigAdminManager`): the checks a
//! broker makes before forwarding (each resource once, each key once, no null values, a known
//! resource type), then one controller operation for every topic resource.
//!
//! No broker config can change while Skald runs yet, so a BROKER resource that names any config is
//! refused with Kafka's "Cannot update these configs dynamically" (INVALID_REQUEST, as Kafka maps
//! a broker config it cannot apply): accepting one would store a value that takes no effect.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::StrBytes;
use skald_controller::{AlterTopicConfigs, ConfigChanges, ControllerOp, ControllerReply};

use super::{topic_operation, ErrorAnswer};
use crate::broker::Broker;

/// Kafka's ConfigResource types.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// One resource of either request, with its changes or the reason they were refused already.
pub struct ResourceChanges {
    pub resource_type: i8,
    pub resource_name: StrBytes,
    pub changes: Result<ConfigChanges, String>,
}

/// Kafka's per-resource outcome: error code NONE with no message, or a refusal.
pub type Outcome = Result<(), ErrorAnswer>;

/// Applies (or with `validate_only` checks) every resource, answering each in request order.
pub async fn alter(
    broker: &Arc<Broker>,
    resources: Vec<ResourceChanges>,
    validate_only: bool,
) -> Vec<Outcome> {
    let mut seen: HashMap<(i8, &str), usize> = HashMap::new();
    for resource in &resources {
        *seen
            .entry((resource.resource_type, resource.resource_name.as_str()))
            .or_default() += 1;
    }
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(resources.len());
    let mut topics = Vec::new();
    let mut topic_slots = Vec::new();
    for resource in &resources {
        let key = (resource.resource_type, resource.resource_name.as_str());
        let outcome = if seen[&key] > 1 {
            Some(invalid_request("Each resource must appear at most once."))
        } else {
            match (&resource.changes, resource.resource_type) {
                (Err(reason), _) => Some(invalid_request(reason)),
                (Ok(_), RESOURCE_TOPIC) if resource.resource_name.is_empty() => {
                    Some(invalid_request("Default topic resources are not allowed."))
                }
                (Ok(changes), RESOURCE_TOPIC) => {
                    topic_slots.push(outcomes.len());
                    topics.push(AlterTopicConfigs {
                        topic: resource.resource_name.to_string(),
                        changes: changes.clone(),
                    });
                    None
                }
                (Ok(changes), RESOURCE_BROKER) => Some(broker_changes(
                    broker.config.node_id,
                    resource.resource_name.as_str(),
                    changes,
                )),
                (Ok(_), other) => Some(invalid_request(&format!("Unknown resource type {other}"))),
            }
        };
        outcomes.push(outcome);
    }
    if !topics.is_empty() {
        let op = ControllerOp::AlterConfigs {
            topics,
            validate_only,
        };
        let results = topic_operation(broker, op, |reply| match reply {
            ControllerReply::AlterConfigs(results) => Some(results),
            _ => None,
        })
        .await;
        for (slot, result) in topic_slots.into_iter().zip(results) {
            outcomes[slot] = Some(result);
        }
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap_or_else(|| Err(unknown_server_error())))
        .collect()
}

/// A BROKER resource: this broker's id or empty (cluster-wide), as Kafka checks; then every
/// named config is refused, since none can change without a restart.
fn broker_changes(node_id: i32, name: &str, changes: &ConfigChanges) -> Outcome {
    if !name.is_empty() {
        let Ok(id) = name.parse::<i32>() else {
            return invalid_request(&format!("Node id must be an integer, but it is: {name}"));
        };
        if id != node_id {
            return invalid_request(&format!(
                "Unexpected broker id, expected {node_id}, but received {name}"
            ));
        }
    }
    let names: BTreeSet<&str> = match changes {
        ConfigChanges::Incremental(ops) => ops.iter().map(|(name, _)| name.as_str()).collect(),
        ConfigChanges::Replace(configs) => configs.iter().map(|(name, _)| name.as_str()).collect(),
    };
    if names.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = names.into_iter().collect();
    invalid_request(&format!(
        "Cannot update these configs dynamically: Set({})",
        names.join(", ")
    ))
}

/// Whether a name appears twice (Kafka refuses the resource with [`DUPLICATE_KEYS`]).
pub fn has_duplicates<'a>(names: impl IntoIterator<Item = &'a str>) -> bool {
    let mut seen = BTreeSet::new();
    !names.into_iter().all(|name| seen.insert(name))
}

pub const DUPLICATE_KEYS: &str = "Error due to duplicate config keys";

/// Kafka's refusal of null values (for every operation but DELETE).
pub fn null_values_refused(names: &[&str]) -> String {
    format!("Null value not supported for : {}", names.join(", "))
}

fn invalid_request(message: &str) -> Outcome {
    Err((
        ResponseError::InvalidRequest.code(),
        Some(StrBytes::from_string(message.to_string())),
    ))
}

fn unknown_server_error() -> ErrorAnswer {
    (ResponseError::UnknownServerError.code(), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skald_controller::ConfigOp;

    #[test]
    fn broker_resources_are_checked_like_kafka_and_refused_while_none_is_dynamic() {
        let set = ConfigChanges::Incremental(vec![
            ("log.retention.ms".into(), ConfigOp::Set("1".into())),
            ("log.dirs".into(), ConfigOp::Delete),
        ]);
        let message = |outcome: Outcome| {
            let (code, message) = outcome.unwrap_err();
            assert_eq!(code, ResponseError::InvalidRequest.code());
            message.unwrap().to_string()
        };
        assert_eq!(
            message(broker_changes(1, "2", &set)),
            "Unexpected broker id, expected 1, but received 2"
        );
        assert_eq!(
            message(broker_changes(1, "one", &set)),
            "Node id must be an integer, but it is: one"
        );
        assert_eq!(
            message(broker_changes(1, "", &set)),
            "Cannot update these configs dynamically: Set(log.dirs, log.retention.ms)"
        );
        assert_eq!(
            broker_changes(1, "1", &ConfigChanges::Replace(Vec::new())),
            Ok(())
        );
        assert!(has_duplicates(["a", "b", "a"]));
        assert!(!has_duplicates(["a", "b"]));
    }
}
