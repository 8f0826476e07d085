//! What AlterConfigs and IncrementalAlterConfigs share (Kafka's `ConfigAdminManager`): the checks a
//! broker makes before forwarding (each resource once, each key once, no null values, a known
//! resource type, a BROKER resource naming this broker or none), then one controller operation for
//! every resource left. The controller validates the configs themselves.

use std::collections::{BTreeSet, HashMap};

use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::StrBytes;
use skald_controller::{
    AlterConfigsResource, ConfigChanges, ConfigResource, ControllerOp, ControllerReply,
};

use super::controller_handle::ControllerHandle;
use super::{topic_operation, ErrorAnswer};

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
/// `node_id`: this broker's, the only one whose configs it takes changes to.
pub async fn alter(
    controller: &dyn ControllerHandle,
    node_id: i32,
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
    let mut forwarded = Vec::new();
    let mut slots = Vec::new();
    for resource in &resources {
        let key = (resource.resource_type, resource.resource_name.as_str());
        let target = if seen[&key] > 1 {
            Err("Each resource must appear at most once.".to_string())
        } else {
            resource.changes.clone().and_then(|changes| {
                let name = resource.resource_name.as_str();
                let resource = match resource.resource_type {
                    RESOURCE_TOPIC if name.is_empty() => {
                        return Err("Default topic resources are not allowed.".to_string())
                    }
                    RESOURCE_TOPIC => ConfigResource::Topic(name.to_string()),
                    RESOURCE_BROKER => broker_resource(node_id, name)?,
                    other => return Err(format!("Unknown resource type {other}")),
                };
                Ok(AlterConfigsResource { resource, changes })
            })
        };
        match target {
            Ok(target) => {
                slots.push(outcomes.len());
                forwarded.push(target);
                outcomes.push(None);
            }
            Err(reason) => outcomes.push(Some(invalid_request(&reason))),
        }
    }
    if !forwarded.is_empty() {
        let op = ControllerOp::AlterConfigs {
            resources: forwarded,
            validate_only,
        };
        let results = topic_operation(controller, op, |reply| match reply {
            ControllerReply::AlterConfigs(results) => Some(results),
            _ => None,
        })
        .await;
        for (slot, result) in slots.into_iter().zip(results) {
            outcomes[slot] = Some(result);
        }
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap_or_else(|| Err(unknown_server_error())))
        .collect()
}

/// A BROKER resource names this broker (its own dynamic configs) or none (the cluster-wide
/// default), as Kafka checks: a broker validates only changes it can apply itself.
fn broker_resource(node_id: i32, name: &str) -> Result<ConfigResource, String> {
    if name.is_empty() {
        return Ok(ConfigResource::BrokerDefault);
    }
    let id = name
        .parse::<i32>()
        .map_err(|_| format!("Node id must be an integer, but it is: {name}"))?;
    if id != node_id {
        return Err(format!(
            "Unexpected broker id, expected {node_id}, but received {name}"
        ));
    }
    Ok(ConfigResource::Broker(id))
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

    #[test]
    fn broker_resources_name_this_broker_or_none() {
        assert_eq!(
            broker_resource(1, "2"),
            Err("Unexpected broker id, expected 1, but received 2".into())
        );
        assert_eq!(
            broker_resource(1, "one"),
            Err("Node id must be an integer, but it is: one".into())
        );
        assert_eq!(broker_resource(1, ""), Ok(ConfigResource::BrokerDefault));
        assert_eq!(broker_resource(1, "1"), Ok(ConfigResource::Broker(1)));
        assert!(has_duplicates(["a", "b", "a"]));
        assert!(!has_duplicates(["a", "b"]));
    }
}
