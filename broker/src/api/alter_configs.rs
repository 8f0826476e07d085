//! AlterConfigs, the legacy form: each resource's configs replace all of its overrides.

use kafka_protocol::messages::alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use skald_controller::ConfigChanges;

use super::config_changes::{
    alter, has_duplicates, null_values_refused, ResourceChanges, DUPLICATE_KEYS,
};
use super::controller_handle::ControllerHandle;

/// `node_id`: this broker's.
pub async fn handle(
    controller: &dyn ControllerHandle,
    node_id: i32,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let resources: Vec<ResourceChanges> = request.resources.iter().map(changes).collect();
    let outcomes = alter(controller, node_id, resources, request.validate_only).await;
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

#[cfg(test)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
    use kafka_protocol::protocol::StrBytes;
    use skald_controller::{
        AlterConfigsResource as Forwarded, ConfigChanges, ConfigResource, ControllerOp,
        ControllerReply, TopicError,
    };

    use super::handle;
    use crate::api::config_changes::{RESOURCE_BROKER, RESOURCE_TOPIC};
    use crate::api::controller_handle::CannedController;

    fn text(value: &str) -> StrBytes {
        StrBytes::from_string(value.to_string())
    }

    fn resource(
        resource_type: i8,
        name: &str,
        configs: &[(&str, Option<&str>)],
    ) -> AlterConfigsResource {
        AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(text(name))
            .with_configs(
                configs
                    .iter()
                    .map(|(name, value)| {
                        AlterableConfig::default()
                            .with_name(text(name))
                            .with_value(value.map(text))
                    })
                    .collect(),
            )
    }

    fn answered(
        resource_type: i8,
        name: &str,
        error: Option<(ResponseError, &str)>,
    ) -> AlterConfigsResourceResponse {
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource_type)
            .with_resource_name(text(name));
        match error {
            None => response.with_error_message(None),
            Some((error, message)) => response
                .with_error_code(error.code())
                .with_error_message(Some(text(message))),
        }
    }

    #[tokio::test]
    async fn refusals_are_answered_here_and_the_rest_forwarded_in_one_operation() {
        let controller = CannedController::new(vec![Ok(ControllerReply::AlterConfigs(vec![
            Ok(()),
            Err(TopicError::InvalidConfig(
                "Invalid value -5 for retention.ms".into(),
            )),
        ]))]);
        let request = AlterConfigsRequest::default()
            .with_validate_only(true)
            .with_resources(vec![
                resource(RESOURCE_BROKER, "1", &[("log.retention.ms", Some("5000"))]),
                resource(RESOURCE_BROKER, "2", &[("log.retention.ms", Some("5000"))]),
                resource(RESOURCE_TOPIC, "", &[("retention.ms", Some("1"))]),
                resource(RESOURCE_TOPIC, "audit", &[("retention.ms", None)]),
                resource(
                    RESOURCE_TOPIC,
                    "keys",
                    &[("a", Some("1")), ("a", Some("2"))],
                ),
                resource(RESOURCE_TOPIC, "orders", &[("retention.ms", Some("-5"))]),
                resource(9, "x", &[]),
            ]);
        assert_eq!(
            handle(&controller, 1, request).await,
            AlterConfigsResponse::default().with_responses(vec![
                answered(RESOURCE_BROKER, "1", None),
                answered(
                    RESOURCE_BROKER,
                    "2",
                    Some((
                        ResponseError::InvalidRequest,
                        "Unexpected broker id, expected 1, but received 2"
                    ))
                ),
                answered(
                    RESOURCE_TOPIC,
                    "",
                    Some((
                        ResponseError::InvalidRequest,
                        "Default topic resources are not allowed."
                    ))
                ),
                answered(
                    RESOURCE_TOPIC,
                    "audit",
                    Some((
                        ResponseError::InvalidRequest,
                        "Null value not supported for : retention.ms"
                    ))
                ),
                answered(
                    RESOURCE_TOPIC,
                    "keys",
                    Some((
                        ResponseError::InvalidRequest,
                        "Error due to duplicate config keys"
                    ))
                ),
                answered(
                    RESOURCE_TOPIC,
                    "orders",
                    Some((
                        ResponseError::InvalidConfig,
                        "Invalid value -5 for retention.ms"
                    ))
                ),
                answered(
                    9,
                    "x",
                    Some((ResponseError::InvalidRequest, "Unknown resource type 9"))
                ),
            ])
        );
        assert_eq!(
            controller.take_ops(),
            vec![ControllerOp::AlterConfigs {
                resources: vec![
                    Forwarded {
                        resource: ConfigResource::Broker(1),
                        changes: ConfigChanges::Replace(vec![(
                            "log.retention.ms".into(),
                            "5000".into()
                        )]),
                    },
                    Forwarded {
                        resource: ConfigResource::Topic("orders".into()),
                        changes: ConfigChanges::Replace(vec![("retention.ms".into(), "-5".into())]),
                    },
                ],
                validate_only: true,
            }]
        );
    }

    #[tokio::test]
    async fn nothing_left_to_forward_asks_nothing() {
        let controller = CannedController::new(Vec::new());
        let request =
            AlterConfigsRequest::default().with_resources(vec![resource(RESOURCE_TOPIC, "", &[])]);
        let response = handle(&controller, 1, request).await;
        assert_eq!(
            response.responses[0].error_code,
            ResponseError::InvalidRequest.code()
        );
        assert_eq!(controller.take_ops(), Vec::new());
    }
}
