//! AlterConfigs, the legacy form: each resource's configs replace all of its overrides.

use std::sync::Arc;

use kafka_protocol::messages::alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use skald_controller::ConfigChanges;

use super::config_changes::{
    alter, has_duplicates, null_values_refused, ResourceChanges, DUPLICATE_KEYS,
};
use crate::broker::Broker;

pub async fn handle(broker: &Arc<Broker>, request: AlterConfigsRequest) -> AlterConfigsResponse {
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
    AlterConfigsResponse::default().with_responses(responses)
}

fn changes(resource: &AlterConfigsResource) -> ResourceChanges {
    ResourceChanges {
        resource_type: resource.resource_type,
        resource_name: resource.resource_name.clone(),
        changes: replacement(resource),
    }
}

fn replacement(resource: &AlterConfigsResource) -> Result<ConfigChanges, String> {
    if has_duplicates(resource.configs.iter().map(|config| config.name.as_str())) {
        return Err(DUPLICATE_KEYS.to_string());
    }
    let nulls: Vec<&str> = resource
        .configs
        .iter()
        .filter(|config| config.value.is_none())
        .map(|config| config.name.as_str())
        .collect();
    if !nulls.is_empty() {
        return Err(null_values_refused(&nulls));
    }
    Ok(ConfigChanges::Replace(
        resource
            .configs
            .iter()
            .map(|config| {
                (
                    config.name.to_string(),
                    config.value.as_deref().unwrap_or_default().to_string(),
                )
            })
            .collect(),
    ))
}
