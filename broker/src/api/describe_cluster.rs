//! DescribeCluster (KIP-700): the cluster id, a controller id for clients and the brokers, from
//! this broker's metadata image. v2 (KIP-1073) lists fenced brokers too when asked, each marked.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use skald_controller::MetadataImage;

use super::metadata::CLUSTER_AUTHORIZED_OPERATIONS;
use crate::broker::Broker;

/// KIP-919's endpoint types: what a DescribeCluster asks about and where it was sent.
const ENDPOINT_TYPE_BROKER: i8 = 1;
const ENDPOINT_TYPE_CONTROLLER: i8 = 2;

pub fn handle(
    broker: &Arc<Broker>,
    request: DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    // Kafka's AuthHelper.computeDescribeClusterResponse: a broker describes brokers; asking it
    // about controllers is a mismatch, any other type is unknown. (v0 cannot carry a type: it
    // decodes as brokers.)
    let refusal = match request.endpoint_type {
        ENDPOINT_TYPE_BROKER => None,
        ENDPOINT_TYPE_CONTROLLER => Some((
            ResponseError::MismatchedEndpointType,
            "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER"
                .to_string(),
        )),
        other => Some((
            ResponseError::UnsupportedEndpointType,
            format!("Unsupported endpoint type {other}"),
        )),
    };
    if let Some((error, message)) = refusal {
        return DescribeClusterResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message)));
    }

    let include_fenced = version >= 2 && request.include_fenced_brokers;
    let brokers = brokers(&broker.image(), include_fenced);
    // As Kafka: a controller id the client cannot find among the brokers is -1.
    let controller_id = Some(broker.controller_id_for_clients())
        .filter(|id| brokers.iter().any(|listed| listed.broker_id.0 == *id))
        .unwrap_or(-1);
    let mut response = DescribeClusterResponse::default()
        .with_endpoint_type(ENDPOINT_TYPE_BROKER)
        .with_cluster_id(StrBytes::from_string(broker.cluster_id.clone()))
        .with_controller_id(BrokerId(controller_id))
        .with_brokers(brokers);
    if request.include_cluster_authorized_operations {
        response = response.with_cluster_authorized_operations(CLUSTER_AUTHORIZED_OPERATIONS);
    }
    response
}

/// Every registered broker with a client endpoint, by id: the unfenced ones, and the fenced
/// ones too when asked. A fenced broker is never listed to a client that cannot see the flag.
fn brokers(image: &MetadataImage, include_fenced: bool) -> Vec<DescribeClusterBroker> {
    image
        .brokers
        .values()
        .filter(|registered| include_fenced || !registered.fenced)
        .filter_map(|registered| {
            // The first advertised endpoint, as Metadata answers.
            let endpoint = registered.endpoints.first()?;
            Some(
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(registered.broker_id))
                    .with_host(StrBytes::from_string(endpoint.host.clone()))
                    .with_port(i32::from(endpoint.port))
                    .with_rack(registered.rack.clone().map(StrBytes::from_string))
                    .with_is_fenced(registered.fenced),
            )
        })
        .collect()
}
