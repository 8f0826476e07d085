//! FindCoordinator: a group's coordinator is the broker leading its `__consumer_offsets`
//! partition; that topic is created (compacted, `offsets.topic.num.partitions` partitions) on the
//! first request for a group. v4+ asks about several keys at once. Transaction coordinators do not
//! exist yet: key type 1 gets COORDINATOR_NOT_AVAILABLE.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use skald_controller::names::CONSUMER_OFFSETS_TOPIC;
use skald_controller::{ControllerOp, ControllerReply, CreateTopicSpec};

use crate::broker::Broker;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;
/// Kafka's `offsets.topic.segment.bytes` default.
const OFFSETS_TOPIC_SEGMENT_BYTES: &str = "104857600";

pub async fn handle(
    broker: &Arc<Broker>,
    body: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let keys = if version >= 4 {
        body.coordinator_keys
    } else {
        vec![body.key]
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    for key in keys {
        coordinators.push(find(broker, body.key_type, key).await);
    }
    let response = FindCoordinatorResponse::default();
    if version >= 4 {
        return response.with_coordinators(coordinators);
    }
    let found = coordinators.pop().unwrap_or_default();
    response
        .with_error_code(found.error_code)
        .with_error_message(found.error_message)
        .with_node_id(found.node_id)
        .with_host(found.host)
        .with_port(found.port)
}

async fn find(broker: &Arc<Broker>, key_type: i8, key: StrBytes) -> Coordinator {
    let failed = |error: ResponseError, key: StrBytes| {
        Coordinator::default()
            .with_key(key)
            .with_node_id(BrokerId(-1))
            .with_host(StrBytes::default())
            .with_port(-1)
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(error.to_string())))
    };
    match key_type {
        KEY_TYPE_GROUP => {}
        KEY_TYPE_TRANSACTION => return failed(ResponseError::CoordinatorNotAvailable, key),
        _ => return failed(ResponseError::InvalidRequest, key),
    }
    if let Err(error) = ensure_offsets_topic(broker).await {
        return failed(error, key);
    }
    // The coordinator is whichever broker leads the group's `__consumer_offsets` partition.
    let image = broker.image();
    let partition = broker.groups.partition_for(&key);
    let leader = image
        .topic(CONSUMER_OFFSETS_TOPIC)
        .and_then(|topic| topic.partitions.get(&partition))
        .map(|placement| placement.leader);
    let endpoint = leader
        .and_then(|leader| image.brokers.get(&leader))
        .filter(|registered| !registered.fenced)
        .and_then(|registered| Some((registered.broker_id, registered.endpoints.first()?)));
    match endpoint {
        Some((leader, endpoint)) => Coordinator::default()
            .with_key(key)
            .with_node_id(BrokerId(leader))
            .with_host(StrBytes::from_string(endpoint.host.clone()))
            .with_port(i32::from(endpoint.port))
            .with_error_code(0),
        None => failed(ResponseError::CoordinatorNotAvailable, key),
    }
}

/// Creates `__consumer_offsets` if it does not exist yet (Kafka does the same on the first
/// FindCoordinator for a group).
async fn ensure_offsets_topic(broker: &Arc<Broker>) -> Result<(), ResponseError> {
    if broker.image().topic(CONSUMER_OFFSETS_TOPIC).is_some() {
        return Ok(());
    }
    let config = broker.groups.config;
    let spec = CreateTopicSpec {
        name: CONSUMER_OFFSETS_TOPIC.to_string(),
        num_partitions: config.offsets_topic_partitions,
        replication_factor: config.offsets_topic_replication_factor,
        assignments: Vec::new(),
        configs: vec![
            ("cleanup.policy".into(), Some("compact".into())),
            (
                "segment.bytes".into(),
                Some(OFFSETS_TOPIC_SEGMENT_BYTES.into()),
            ),
        ],
    };
    let op = ControllerOp::CreateTopics {
        topics: vec![spec],
        validate_only: false,
        allow_internal: true,
    };
    match broker.control(op).await {
        Ok(ControllerReply::CreateTopics(results)) => {
            if let Some(Err(err)) = results.first() {
                // Another request may have just created it; anything else is logged.
                if broker.image().topic(CONSUMER_OFFSETS_TOPIC).is_none() {
                    tracing::error!("cannot create {CONSUMER_OFFSETS_TOPIC}: {err}");
                    return Err(ResponseError::CoordinatorNotAvailable);
                }
            } else {
                tracing::info!("created {CONSUMER_OFFSETS_TOPIC}");
            }
            Ok(())
        }
        Ok(other) => {
            tracing::error!("cannot create {CONSUMER_OFFSETS_TOPIC}: unexpected reply {other:?}");
            Err(ResponseError::CoordinatorNotAvailable)
        }
        Err(err) => {
            tracing::error!("cannot create {CONSUMER_OFFSETS_TOPIC}: {err}");
            Err(ResponseError::CoordinatorNotAvailable)
        }
    }
}
