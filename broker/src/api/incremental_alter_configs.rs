//! IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT per key (KIP-339).

use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use skald_controller::{ConfigChanges, ConfigOp};

use super::config_changes::{
    alter, has_duplicates, null_values_refused, ResourceChanges, DUPLICATE_KEYS,
};
use super::controller_handle::ControllerHandle;

/// Kafka's `AlterConfigOp.OpType` ids.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// `node_id`: this broker's.
pub async fn handle(
    controller: &dyn ControllerHandle,
    node_id: i32,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
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

#[cfg(test)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    use kafka_protocol::messages::{
        IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    };
    use kafka_protocol::protocol::StrBytes;
    use skald_controller::{
        AlterConfigsResource as Forwarded, ConfigChanges, ConfigOp, ConfigResource, ControllerOp,
        ControllerReply,
    };

    use super::{handle, OP_APPEND, OP_DELETE, OP_SET, OP_SUBTRACT};
    use crate::api::config_changes::{RESOURCE_BROKER, RESOURCE_TOPIC};
    use crate::api::controller_handle::CannedController;
    use crate::metadata::ControlError;

    fn text(value: &str) -> StrBytes {
        StrBytes::from_string(value.to_string())
    }

    fn config(name: &str, op: i8, value: Option<&str>) -> AlterableConfig {
        AlterableConfig::default()
            .with_name(text(name))
            .with_config_operation(op)
            .with_value(value.map(text))
    }

    fn resource(
        resource_type: i8,
        name: &str,
        configs: Vec<AlterableConfig>,
    ) -> AlterConfigsResource {
        AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(text(name))
            .with_configs(configs)
    }

    fn answered(name: &str, error: Option<(ResponseError, &str)>) -> AlterConfigsResourceResponse {
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(text(name));
        match error {
            None => response.with_error_message(None),
            Some((error, message)) => response
                .with_error_code(error.code())
                .with_error_message(Some(text(message))),
        }
    }

    #[tokio::test]
    async fn each_operation_is_forwarded_and_malformed_ones_refused_here() {
        let controller =
            CannedController::new(vec![Ok(ControllerReply::AlterConfigs(vec![Ok(())]))]);
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            resource(
                RESOURCE_TOPIC,
                "orders",
                vec![
                    config("retention.ms", OP_SET, Some("1000")),
                    config("segment.bytes", OP_DELETE, None),
                    config("cleanup.policy", OP_APPEND, Some("compact")),
                    config(
                        "leader.replication.throttled.replicas",
                        OP_SUBTRACT,
                        Some("0:1"),
                    ),
                ],
            ),
            resource(
                RESOURCE_TOPIC,
                "nulls",
                vec![config("retention.ms", OP_SET, None)],
            ),
            resource(
                RESOURCE_TOPIC,
                "ops",
                vec![config("retention.ms", 7, Some("1"))],
            ),
        ]);
        assert_eq!(
            handle(&controller, 1, request).await,
            IncrementalAlterConfigsResponse::default().with_responses(vec![
                answered("orders", None),
                answered(
                    "nulls",
                    Some((
                        ResponseError::InvalidRequest,
                        "Null value not supported for : retention.ms"
                    ))
                ),
                answered(
                    "ops",
                    Some((ResponseError::InvalidRequest, "Unknown operations type 7"))
                ),
            ])
        );
        assert_eq!(
            controller.take_ops(),
            vec![ControllerOp::AlterConfigs {
                resources: vec![Forwarded {
                    resource: ConfigResource::Topic("orders".into()),
                    changes: ConfigChanges::Incremental(vec![
                        ("retention.ms".into(), ConfigOp::Set("1000".into())),
                        ("segment.bytes".into(), ConfigOp::Delete),
                        ("cleanup.policy".into(), ConfigOp::Append("compact".into())),
                        (
                            "leader.replication.throttled.replicas".into(),
                            ConfigOp::Subtract("0:1".into())
                        ),
                    ]),
                }],
                validate_only: false,
            }]
        );
    }

    #[tokio::test]
    async fn a_controller_that_cannot_answer_fails_every_forwarded_resource() {
        let controller = CannedController::new(vec![Err(ControlError::NotController(Some(3)))]);
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![resource(
            RESOURCE_BROKER,
            "",
            vec![config("log.retention.ms", OP_SET, Some("1"))],
        )]);
        assert_eq!(
            handle(&controller, 1, request).await,
            IncrementalAlterConfigsResponse::default().with_responses(vec![
                AlterConfigsResourceResponse::default()
                    .with_resource_type(RESOURCE_BROKER)
                    .with_resource_name(text(""))
                    .with_error_code(ResponseError::NotController.code())
                    .with_error_message(Some(text(
                        "This is not the correct controller for this cluster."
                    )))
            ])
        );
        assert_eq!(
            controller.take_ops(),
            vec![ControllerOp::AlterConfigs {
                resources: vec![Forwarded {
                    resource: ConfigResource::BrokerDefault,
                    changes: ConfigChanges::Incremental(vec![(
                        "log.retention.ms".into(),
                        ConfigOp::Set("1".into())
                    )]),
                }],
                validate_only: false,
            }]
        );
    }
}
