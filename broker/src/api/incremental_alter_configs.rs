//! IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT per key (KIP-339).

use std::sync::Arc;

use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use skald_controller::{ConfigChanges, ConfigOp};

use super::config_changes::{
    alter, has_duplicates, null_values_refused, ResourceChanges, DUPLICATE_KEYS,
};
use crate::broker::Broker;

/// Kafka's `AlterConfigOp.OpType` ids.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

pub async fn handle(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let resources: Vec<ResourceChanges> = request.resources.iter().map(changes).collect();
    let outcomes = alter(broker, resources, request.validate_only).await;
    let responses = request
        .resources
        .into_iter()
        .zip(outcomes)
        .map(|(resource, outcome)| {
            let response = AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
            match outcome {
                Ok(()) => response.with_error_message(None),
                Err((code, message)) => response.with_error_code(code).with_error_message(message),
            }
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

fn changes(resource: &AlterConfigsResource) -> ResourceChanges {
    ResourceChanges {
        resource_type: resource.resource_type,
        resource_name: resource.resource_name.clone(),
        changes: operations(resource),
    }
}

fn operations(resource: &AlterConfigsResource) -> Result<ConfigChanges, String> {
    if has_duplicates(resource.configs.iter().map(|config| config.name.as_str())) {
        return Err(DUPLICATE_KEYS.to_string());
    }
    let nulls: Vec<&str> = resource
        .configs
        .iter()
        .filter(|config| config.config_operation != OP_DELETE && config.value.is_none())
        .map(|config| config.name.as_str())
        .collect();
    if !nulls.is_empty() {
        return Err(null_values_refused(&nulls));
    }
    resource
        .configs
        .iter()
        .map(|config| {
            let value = || config.value.as_deref().unwrap_or_default().to_string();
            let op = match config.config_operation {
                OP_SET => ConfigOp::Set(value()),
                OP_DELETE => ConfigOp::Delete,
                OP_APPEND => ConfigOp::Append(value()),
                OP_SUBTRACT => ConfigOp::Subtract(value()),
                other => return Err(format!("Unknown operations type {other}")),
            };
            Ok((config.name.to_string(), op))
        })
        .collect::<Result<_, _>>()
        .map(ConfigChanges::Incremental)
}
