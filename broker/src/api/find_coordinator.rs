//! FindCoordinator: a group's coordinator is the broker leading its `__consumer_offsets`
//! partition, a transactional id's the one leading its `__transaction_state` partition; each
//! topic is created (compacted) on the first request for its kind of key. v4+ asks about several
//! keys at once.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use skald_controller::names::{CONSUMER_OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC};
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
    let ensured = match key_type {
        KEY_TYPE_GROUP => ensure_offsets_topic(broker).await,
        KEY_TYPE_TRANSACTION => ensure_transaction_state_topic(broker).await,
        _ => return failed(ResponseError::InvalidRequest, key),
    };
    if let Err(error) = ensured {
        return failed(error, key);
    }
    // The coordinator is whichever broker leads the key's partition of `__consumer_offsets`
    // (a group) or `__transaction_state` (a transactional id).
    let image = broker.image();
    let (topic, partition) = if key_type == KEY_TYPE_GROUP {
        (CONSUMER_OFFSETS_TOPIC, broker.groups.partition_for(&key))
    } else {
        (TRANSACTION_STATE_TOPIC, broker.txns.partition_for(&key))
    };
    let leader = image
        .topic(topic)
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
pub(crate) async fn ensure_offsets_topic(broker: &Arc<Broker>) -> Result<(), ResponseError> {
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
    ensure_internal_topic(broker, spec).await
}

/// Creates `__transaction_state` if it does not exist yet (on the first FindCoordinator for a
/// transactional id, as Kafka does), with `transaction.state.log.*`: compacted, its
/// `min.insync.replicas` at most its replication factor.
async fn ensure_transaction_state_topic(broker: &Arc<Broker>) -> Result<(), ResponseError> {
    let config = broker.txns.config;
    let min_isr = config.min_isr.min(config.replication_factor);
    let spec = CreateTopicSpec {
        name: TRANSACTION_STATE_TOPIC.to_string(),
        num_partitions: config.num_partitions,
        replication_factor: config.replication_factor,
        assignments: Vec::new(),
        configs: vec![
            ("cleanup.policy".into(), Some("compact".into())),
            (
                "segment.bytes".into(),
                Some(OFFSETS_TOPIC_SEGMENT_BYTES.into()),
            ),
            ("min.insync.replicas".into(), Some(min_isr.to_string())),
        ],
    };
    ensure_internal_topic(broker, spec).await
}

async fn ensure_internal_topic(
    broker: &Arc<Broker>,
    spec: CreateTopicSpec,
) -> Result<(), ResponseError> {
    let name = spec.name.clone();
    if broker.image().topic(&name).is_some() {
        return Ok(());
    }
    let op = ControllerOp::CreateTopics {
        topics: vec![spec],
        validate_only: false,
        allow_internal: true,
    };
    match broker.control(op).await {
        Ok(ControllerReply::CreateTopics(results)) => {
            if let Some(Err(err)) = results.first() {
                // Another request may have just created it; anything else is logged.
                if broker.image().topic(&name).is_none() {
                    tracing::error!("cannot create {name}: {err}");
                    return Err(ResponseError::CoordinatorNotAvailable);
                }
            } else {
                tracing::info!("created {name}");
            }
            Ok(())
        }
        Ok(other) => {
            tracing::error!("cannot create {name}: unexpected reply {other:?}");
            Err(ResponseError::CoordinatorNotAvailable)
        }
        Err(err) => {
            tracing::error!("cannot create {name}: {err}");
            Err(ResponseError::CoordinatorNotAvailable)
        }
    }
}
