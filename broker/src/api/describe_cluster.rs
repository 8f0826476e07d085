//! DescribeCluster (KIP-700): the cluster id, a controller id for clients and the brokers, from
//! this broker's metadata image. v2 (KIP-1073) lists fenced brokers too when asked, each marked.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use skald_controller::MetadataImage;

use super::cluster_view::ClusterView;
use super::metadata::CLUSTER_AUTHORIZED_OPERATIONS;

/// KIP-919's endpoint types: what a DescribeCluster asks about and where it was sent.
const ENDPOINT_TYPE_BROKER: i8 = 1;
const ENDPOINT_TYPE_CONTROLLER: i8 = 2;

pub fn handle(
    cluster: ClusterView<'_>,
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
    let brokers = brokers(cluster.image, include_fenced);
    // As Kafka: a controller id the client cannot find among the brokers is -1.
    let controller_id = Some(cluster.controller_id_for_clients())
        .filter(|id| brokers.iter().any(|listed| listed.broker_id.0 == *id))
        .unwrap_or(-1);
    let mut response = DescribeClusterResponse::default()
        .with_endpoint_type(ENDPOINT_TYPE_BROKER)
        .with_cluster_id(StrBytes::from_string(cluster.cluster_id.to_string()))
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

#[cfg(test)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
    use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
    use kafka_protocol::protocol::StrBytes;
    use skald_controller::{Endpoint, MetadataImage, MetadataRecord};

    use super::{handle, CLUSTER_AUTHORIZED_OPERATIONS};
    use crate::api::cluster_view::ClusterView;
    use crate::config::ServerConfig;

    fn config(node_id: i32) -> ServerConfig {
        ServerConfig::from_properties([("node.id".to_string(), node_id.to_string())].into())
            .expect("valid config")
    }

    /// Broker 1 (rack r1) and broker 2, which is fenced.
    fn image() -> MetadataImage {
        let register =
            |broker_id: i32, rack: Option<&str>, fenced: bool| MetadataRecord::RegisterBroker {
                broker_id,
                incarnation_id: 1,
                broker_epoch: 10,
                endpoints: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: format!("b{broker_id}"),
                    port: 9092,
                }],
                rack: rack.map(str::to_string),
                fenced,
            };
        let mut image = MetadataImage::default();
        image.replay_batch(&[register(1, Some("r1"), false), register(2, None, true)]);
        image
    }

    fn text(value: &str) -> StrBytes {
        StrBytes::from_string(value.to_string())
    }

    fn listed(broker_id: i32, rack: Option<&str>, fenced: bool) -> DescribeClusterBroker {
        DescribeClusterBroker::default()
            .with_broker_id(BrokerId(broker_id))
            .with_host(text(&format!("b{broker_id}")))
            .with_port(9092)
            .with_rack(rack.map(text))
            .with_is_fenced(fenced)
    }

    fn describe(
        node_id: i32,
        request: DescribeClusterRequest,
        version: i16,
    ) -> DescribeClusterResponse {
        let (image, config) = (image(), config(node_id));
        let cluster = ClusterView {
            image: &image,
            config: &config,
            cluster_id: "cluster-x",
        };
        handle(cluster, request, version)
    }

    fn brokers_request() -> DescribeClusterRequest {
        DescribeClusterRequest::default().with_endpoint_type(1)
    }

    #[test]
    fn the_unfenced_brokers_and_this_one_as_controller() {
        let answer = DescribeClusterResponse::default()
            .with_endpoint_type(1)
            .with_cluster_id(text("cluster-x"))
            .with_controller_id(BrokerId(1));
        assert_eq!(
            describe(1, brokers_request(), 1),
            answer
                .clone()
                .with_brokers(vec![listed(1, Some("r1"), false)])
        );
        // v2 lists fenced brokers when asked, marked; v1 never does.
        let with_fenced = brokers_request().with_include_fenced_brokers(true);
        assert_eq!(
            describe(1, with_fenced.clone(), 2),
            answer
                .clone()
                .with_brokers(vec![listed(1, Some("r1"), false), listed(2, None, true)])
        );
        assert_eq!(
            describe(1, with_fenced, 1),
            answer
                .clone()
                .with_brokers(vec![listed(1, Some("r1"), false)])
        );
        let operations = brokers_request().with_include_cluster_authorized_operations(true);
        assert_eq!(
            describe(1, operations, 1),
            answer
                .with_brokers(vec![listed(1, Some("r1"), false)])
                .with_cluster_authorized_operations(CLUSTER_AUTHORIZED_OPERATIONS)
        );
    }

    #[test]
    fn a_controller_id_the_client_cannot_find_is_minus_one() {
        // Broker 2 is fenced, so not listed to this client.
        assert_eq!(
            describe(2, brokers_request(), 1).controller_id,
            BrokerId(-1)
        );
        assert_eq!(
            describe(3, brokers_request(), 1).controller_id,
            BrokerId(-1)
        );
    }

    #[test]
    fn controller_and_unknown_endpoint_types_are_refused() {
        assert_eq!(
            describe(
                1,
                DescribeClusterRequest::default().with_endpoint_type(2),
                1
            ),
            DescribeClusterResponse::default()
                .with_error_code(ResponseError::MismatchedEndpointType.code())
                .with_error_message(Some(text(
                    "The request was sent to an endpoint of type BROKER, but we wanted an \
                     endpoint of type CONTROLLER"
                )))
        );
        assert_eq!(
            describe(
                1,
                DescribeClusterRequest::default().with_endpoint_type(7),
                1
            ),
            DescribeClusterResponse::default()
                .with_error_code(ResponseError::UnsupportedEndpointType.code())
                .with_error_message(Some(text("Unsupported endpoint type 7")))
        );
    }
}
