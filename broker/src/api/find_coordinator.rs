//! FindCoordinator: a group's coordinator is the broker leading its `__consumer_offsets`
//! partition, a transactional id's the one leading its `__transaction_state` partition; each
//! topic is created (compacted) on the first request for its kind of key. v4+ asks about several
//! keys at once; v5 only allows TRANSACTION_ABORTABLE in answers (never sent here); v6 adds
//! share-group keys (KIP-932), refused like any unknown key type (INVALID_REQUEST), as Kafka does
//! with share groups off.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use skald_controller::names::{CONSUMER_OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC};
use skald_controller::{ControllerOp, ControllerReply, CreateTopicSpec, MetadataImage};

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

/// An internal topic a coordinator lives on, and the property that sets its replication factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalTopic {
    /// `__consumer_offsets`, `offsets.topic.replication.factor`.
    Offsets,
    /// `__transaction_state`, `transaction.state.log.replication.factor`.
    TransactionState,
}

impl InternalTopic {
    fn property(self) -> &'static str {
        match self {
            InternalTopic::Offsets => "offsets.topic.replication.factor",
            InternalTopic::TransactionState => "transaction.state.log.replication.factor",
        }
    }

    /// How Kafka's refusal names the topic.
    fn described(self) -> &'static str {
        match self {
            InternalTopic::Offsets => "the offsets topic",
            InternalTopic::TransactionState => "the transactions state topic",
        }
    }
}

/// The replication factor an internal topic is created with now, or why it cannot be yet.
///
/// Kafka's rule: as many unfenced brokers as its replication factor property (3 by default),
/// else COORDINATOR_NOT_AVAILABLE and the next FindCoordinator tries again — a cluster that is
/// still starting must not get its coordinators on one broker for good. The exception is
/// Skald's own: a lone node (a single-node quorum of itself, no `controller.quorum.voters`) left at
/// the default gets what it has, so `skald server` serves consumer groups and transactions as it
/// is. A factor set explicitly is always Kafka's rule.
pub fn internal_topic_replication_factor(
    topic: InternalTopic,
    configured: i16,
    explicit: bool,
    lone_node: bool,
    unfenced_brokers: usize,
) -> Result<i16, String> {
    let alive = i16::try_from(unfenced_brokers).unwrap_or(i16::MAX);
    let required = if lone_node && !explicit {
        configured.min(alive.max(1))
    } else {
        configured
    };
    if alive < required {
        return Err(format!(
            "Number of alive brokers '{alive}' does not meet the required replication factor \
             '{required}' for {} (configured via '{}'). This error can be ignored if the cluster \
             is starting up and not all brokers are up yet.",
            topic.described(),
            topic.property()
        ));
    }
    Ok(required)
}

/// [`internal_topic_replication_factor`] for this broker and its current metadata.
fn replication_factor_now(
    broker: &Broker,
    image: &MetadataImage,
    topic: InternalTopic,
    configured: i16,
) -> Result<i16, ResponseError> {
    internal_topic_replication_factor(
        topic,
        configured,
        broker.config.is_explicit(topic.property()),
        broker.config.voters.is_empty(),
        image.brokers.values().filter(|b| !b.fenced).count(),
    )
    .map_err(|reason| {
        tracing::info!("cannot create {} yet: {reason}", topic.described());
        ResponseError::CoordinatorNotAvailable
    })
}

/// Creates `__consumer_offsets` if it does not exist yet (Kafka does the same on the first
/// FindCoordinator for a group).
pub(crate) async fn ensure_offsets_topic(broker: &Arc<Broker>) -> Result<(), ResponseError> {
    let image = broker.image();
    if image.topic(CONSUMER_OFFSETS_TOPIC).is_some() {
        return Ok(());
    }
    let config = broker.groups.config;
    let replication_factor = replication_factor_now(
        broker,
        &image,
        InternalTopic::Offsets,
        config.offsets_topic_replication_factor,
    )?;
    let spec = CreateTopicSpec {
        name: CONSUMER_OFFSETS_TOPIC.to_string(),
        num_partitions: config.offsets_topic_partitions,
        replication_factor,
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
    let image = broker.image();
    if image.topic(TRANSACTION_STATE_TOPIC).is_some() {
        return Ok(());
    }
    let config = broker.txns.config;
    let replication_factor = replication_factor_now(
        broker,
        &image,
        InternalTopic::TransactionState,
        config.replication_factor,
    )?;
    let min_isr = config.min_isr.min(replication_factor);
    let spec = CreateTopicSpec {
        name: TRANSACTION_STATE_TOPIC.to_string(),
        num_partitions: config.num_partitions,
        replication_factor,
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
    let (name, replication_factor) = (spec.name.clone(), spec.replication_factor);
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
                tracing::info!(replication_factor, "created {name}");
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

#[cfg(test)]
mod tests {
    use super::{internal_topic_replication_factor, InternalTopic};

    #[test]
    fn a_lone_node_at_the_default_gets_what_it_has_and_clusters_wait_for_enough_brokers() {
        let factor = |configured, explicit, lone, unfenced| {
            internal_topic_replication_factor(
                InternalTopic::Offsets,
                configured,
                explicit,
                lone,
                unfenced,
            )
        };
        // The embedded single node: default 3, one broker.
        assert_eq!(factor(3, false, true, 1), Ok(1));
        // A cluster at the default waits for three unfenced brokers (Kafka), then gets three.
        assert_eq!(
            factor(3, false, false, 2),
            Err("Number of alive brokers '2' does not meet the required replication factor '3' \
                 for the offsets topic (configured via 'offsets.topic.replication.factor'). This \
                 error can be ignored if the cluster is starting up and not all brokers are up yet."
                .to_string())
        );
        assert_eq!(factor(3, false, false, 3), Ok(3));
        assert_eq!(factor(3, false, false, 5), Ok(3));
        // Set explicitly, it is Kafka's rule even on a lone node.
        assert!(factor(3, true, true, 1).is_err());
        assert_eq!(factor(1, true, true, 1), Ok(1));
        assert_eq!(factor(2, true, false, 2), Ok(2));
        assert!(factor(3, false, true, 0).is_err_and(|e| e.contains("alive brokers '0'")));
        // The transaction state topic: the same rule, its own property named.
        assert_eq!(
            internal_topic_replication_factor(InternalTopic::TransactionState, 3, false, false, 1),
            Err(
                "Number of alive brokers '1' does not meet the required replication factor '3' \
                 for the transactions state topic (configured via \
                 'transaction.state.log.replication.factor'). This error can be ignored if the \
                 cluster is starting up and not all brokers are up yet."
                    .to_string()
            )
        );
        assert_eq!(
            internal_topic_replication_factor(InternalTopic::TransactionState, 3, false, true, 1),
            Ok(1)
        );
    }
}
