//! FindCoordinator: a group's coordinator is the broker leading its `__consumer_offsets`
//! partition, a transactional id's the one leading its `__transaction_state` partition; each
//! topic is created (compacted) on the first request for its kind of key. v4+ asks about several
//! keys at once; v5 only allows TRANSACTION_ABORTABLE in answers (never sent here); v6 adds
//! share-group keys (KIP-932), refused like any unknown key type (INVALID_REQUEST), as Kafka does
//! with share groups off.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use skald_controller::names::{CONSUMER_OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC};
use skald_controller::{ControllerOp, ControllerReply, CreateTopicSpec, MetadataImage};

use super::controller_handle::ControllerHandle;
use crate::broker::Broker;
use crate::config::ServerConfig;
use crate::group::{partition_for, CoordinatorConfig};
use crate::txn::TxnConfig;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;
/// Kafka's `offsets.topic.segment.bytes` default.
const OFFSETS_TOPIC_SEGMENT_BYTES: &str = "104857600";

/// What FindCoordinator reaches: the controller (the image, and creating the coordinators'
/// topics), the broker's configuration, and both coordinators' settings.
#[derive(Clone, Copy)]
pub struct Coordinators<'a> {
    pub controller: &'a dyn ControllerHandle,
    pub config: &'a ServerConfig,
    pub groups: CoordinatorConfig,
    pub txns: TxnConfig,
}

impl<'a> Coordinators<'a> {
    pub fn of(broker: &'a Broker) -> Coordinators<'a> {
        Coordinators {
            controller: broker,
            config: &broker.config,
            groups: broker.groups.config,
            txns: broker.txns.config,
        }
    }
}

pub async fn handle(
    coordinators: Coordinators<'_>,
    body: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let keys = if version >= 4 {
        body.coordinator_keys
    } else {
        vec![body.key]
    };
    let mut found = Vec::with_capacity(keys.len());
    for key in keys {
        found.push(find(coordinators, body.key_type, key).await);
    }
    let response = FindCoordinatorResponse::default();
    if version >= 4 {
        return response.with_coordinators(found);
    }
    let found = found.pop().unwrap_or_default();
    response
        .with_error_code(found.error_code)
        .with_error_message(found.error_message)
        .with_node_id(found.node_id)
        .with_host(found.host)
        .with_port(found.port)
}

async fn find(coordinators: Coordinators<'_>, key_type: i8, key: StrBytes) -> Coordinator {
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
        KEY_TYPE_GROUP => ensure_offsets_topic(coordinators).await,
        KEY_TYPE_TRANSACTION => ensure_transaction_state_topic(coordinators).await,
        _ => return failed(ResponseError::InvalidRequest, key),
    };
    if let Err(error) = ensured {
        return failed(error, key);
    }
    // The coordinator is whichever broker leads the key's partition of `__consumer_offsets`
    // (a group) or `__transaction_state` (a transactional id).
    let image = coordinators.controller.image();
    let (topic, partition) = if key_type == KEY_TYPE_GROUP {
        let partitions = coordinators.groups.offsets_topic_partitions;
        (CONSUMER_OFFSETS_TOPIC, partition_for(&key, partitions))
    } else {
        let partitions = coordinators.txns.num_partitions;
        (TRANSACTION_STATE_TOPIC, partition_for(&key, partitions))
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
    config: &ServerConfig,
    image: &MetadataImage,
    topic: InternalTopic,
    configured: i16,
) -> Result<i16, ResponseError> {
    internal_topic_replication_factor(
        topic,
        configured,
        config.is_explicit(topic.property()),
        config.voters.is_empty(),
        image.brokers.values().filter(|b| !b.fenced).count(),
    )
    .map_err(|reason| {
        tracing::info!("cannot create {} yet: {reason}", topic.described());
        ResponseError::CoordinatorNotAvailable
    })
}

/// Creates `__consumer_offsets` if it does not exist yet (Kafka does the same on the first
/// FindCoordinator for a group).
pub(crate) async fn ensure_offsets_topic(
    coordinators: Coordinators<'_>,
) -> Result<(), ResponseError> {
    let image = coordinators.controller.image();
    if image.topic(CONSUMER_OFFSETS_TOPIC).is_some() {
        return Ok(());
    }
    let config = coordinators.groups;
    let replication_factor = replication_factor_now(
        coordinators.config,
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
    ensure_internal_topic(coordinators.controller, spec).await
}

/// Creates `__transaction_state` if it does not exist yet (on the first FindCoordinator for a
/// transactional id, as Kafka does), with `transaction.state.log.*`: compacted, its
/// `min.insync.replicas` at most its replication factor.
async fn ensure_transaction_state_topic(
    coordinators: Coordinators<'_>,
) -> Result<(), ResponseError> {
    let image = coordinators.controller.image();
    if image.topic(TRANSACTION_STATE_TOPIC).is_some() {
        return Ok(());
    }
    let config = coordinators.txns;
    let replication_factor = replication_factor_now(
        coordinators.config,
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
    ensure_internal_topic(coordinators.controller, spec).await
}

async fn ensure_internal_topic(
    controller: &dyn ControllerHandle,
    spec: CreateTopicSpec,
) -> Result<(), ResponseError> {
    let (name, replication_factor) = (spec.name.clone(), spec.replication_factor);
    if controller.image().topic(&name).is_some() {
        return Ok(());
    }
    let op = ControllerOp::CreateTopics {
        topics: vec![spec],
        validate_only: false,
        allow_internal: true,
    };
    match controller.control(op).await {
        Ok(ControllerReply::CreateTopics(results)) => {
            if let Some(Err(err)) = results.first() {
                // Another request may have just created it; anything else is logged.
                if controller.image().topic(&name).is_none() {
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
    use std::sync::{Arc, Mutex};

    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::find_coordinator_response::Coordinator;
    use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
    use kafka_protocol::protocol::StrBytes;
    use skald_controller::controller::CreatedTopic;
    use skald_controller::{
        ControllerOp, ControllerReply, CreateTopicSpec, Endpoint, MetadataImage, MetadataRecord,
        TopicId,
    };

    use super::{handle, internal_topic_replication_factor, Coordinators, InternalTopic};
    use crate::api::controller_handle::{ControlFuture, ControllerHandle};
    use crate::config::ServerConfig;
    use crate::group::CoordinatorConfig;
    use crate::metadata::ControlError;
    use crate::txn::TxnConfig;

    /// A controller in memory: CreateTopics puts the topic in the image with every partition led
    /// by broker 1, unless `failure` is set; every operation asked for is kept.
    struct MemoryController {
        image: Mutex<Arc<MetadataImage>>,
        ops: Mutex<Vec<ControllerOp>>,
        failure: Option<ControlError>,
    }

    impl MemoryController {
        /// Broker 1 (`b1:9092`) registered, fenced or not.
        fn new(fenced: bool) -> MemoryController {
            let mut image = MetadataImage::default();
            image.replay(&MetadataRecord::RegisterBroker {
                broker_id: 1,
                incarnation_id: 1,
                broker_epoch: 10,
                endpoints: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: "b1".into(),
                    port: 9092,
                }],
                rack: None,
                fenced,
            });
            MemoryController {
                image: Mutex::new(Arc::new(image)),
                ops: Mutex::new(Vec::new()),
                failure: None,
            }
        }

        fn create(&self, spec: &CreateTopicSpec, topic_id: u128) -> CreatedTopic {
            let mut image = (**self.image.lock().unwrap()).clone();
            image.replay(&MetadataRecord::Topic {
                name: spec.name.clone(),
                topic_id: TopicId(topic_id),
            });
            for partition in 0..spec.num_partitions {
                image.replay(&MetadataRecord::Partition {
                    topic_id: TopicId(topic_id),
                    partition,
                    replicas: vec![1],
                    isr: vec![1],
                    leader: 1,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    removing_replicas: Vec::new(),
                    adding_replicas: Vec::new(),
                });
            }
            *self.image.lock().unwrap() = Arc::new(image);
            CreatedTopic {
                topic_id: TopicId(topic_id),
                num_partitions: spec.num_partitions,
                replication_factor: spec.replication_factor,
                configs: Default::default(),
            }
        }

        fn take_ops(&self) -> Vec<ControllerOp> {
            std::mem::take(&mut *self.ops.lock().unwrap())
        }
    }

    impl ControllerHandle for MemoryController {
        fn image(&self) -> Arc<MetadataImage> {
            Arc::clone(&self.image.lock().unwrap())
        }

        fn control(&self, op: ControllerOp) -> ControlFuture<'_> {
            self.ops.lock().unwrap().push(op.clone());
            let reply = match (&self.failure, op) {
                (Some(failure), _) => Err(failure.clone()),
                (None, ControllerOp::CreateTopics { topics, .. }) => {
                    let created = topics
                        .iter()
                        .enumerate()
                        .map(|(i, spec)| Ok(self.create(spec, 100 + i as u128)))
                        .collect();
                    Ok(ControllerReply::CreateTopics(created))
                }
                (None, other) => panic!("FindCoordinator asked for {other:?}"),
            };
            Box::pin(std::future::ready(reply))
        }
    }

    fn config(properties: &[(&str, &str)]) -> ServerConfig {
        ServerConfig::from_properties(
            properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .expect("valid config")
    }

    async fn find(
        controller: &MemoryController,
        config: &ServerConfig,
        request: FindCoordinatorRequest,
        version: i16,
    ) -> FindCoordinatorResponse {
        let coordinators = Coordinators {
            controller,
            config,
            groups: CoordinatorConfig::from_server(config).unwrap(),
            txns: TxnConfig::from_server(config).unwrap(),
        };
        handle(coordinators, request, version).await
    }

    fn text(value: &str) -> StrBytes {
        StrBytes::from_string(value.to_string())
    }

    fn request(key_type: i8, key: &str) -> FindCoordinatorRequest {
        FindCoordinatorRequest::default()
            .with_key_type(key_type)
            .with_key(text(key))
    }

    /// A v0–v3 answer naming broker 1.
    fn broker_one() -> FindCoordinatorResponse {
        FindCoordinatorResponse::default()
            .with_node_id(BrokerId(1))
            .with_host(text("b1"))
            .with_port(9092)
            .with_error_message(Coordinator::default().error_message)
    }

    fn not_available(key: &str, error: ResponseError) -> Coordinator {
        Coordinator::default()
            .with_key(text(key))
            .with_node_id(BrokerId(-1))
            .with_host(text(""))
            .with_port(-1)
            .with_error_code(error.code())
            .with_error_message(Some(text(&error.to_string())))
    }

    fn internal_topic(name: &str, extra: &[(&str, &str)]) -> ControllerOp {
        let mut configs = vec![
            ("cleanup.policy".to_string(), Some("compact".to_string())),
            ("segment.bytes".to_string(), Some("104857600".to_string())),
        ];
        configs.extend(
            extra
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.to_string()))),
        );
        ControllerOp::CreateTopics {
            topics: vec![CreateTopicSpec {
                name: name.into(),
                num_partitions: 50,
                replication_factor: 1,
                assignments: Vec::new(),
                configs,
            }],
            validate_only: false,
            allow_internal: true,
        }
    }

    #[tokio::test]
    async fn the_offsets_topic_is_created_on_first_use_and_its_leader_answered() {
        let controller = MemoryController::new(false);
        let lone = config(&[("node.id", "1")]);
        assert_eq!(
            find(&controller, &lone, request(0, "payments"), 3).await,
            broker_one()
        );
        assert_eq!(
            controller.take_ops(),
            vec![internal_topic("__consumer_offsets", &[])]
        );
        // Once it exists nothing more is asked.
        assert_eq!(
            find(&controller, &lone, request(0, "audit"), 2).await,
            broker_one()
        );
        assert_eq!(controller.take_ops(), Vec::new());
    }

    #[tokio::test]
    async fn the_transaction_state_topic_gets_its_min_isr_capped_at_its_replicas() {
        let controller = MemoryController::new(false);
        let lone = config(&[("node.id", "1")]);
        assert_eq!(
            find(&controller, &lone, request(1, "txn-a"), 3).await,
            broker_one()
        );
        assert_eq!(
            controller.take_ops(),
            vec![internal_topic(
                "__transaction_state",
                &[("min.insync.replicas", "1")]
            )]
        );
    }

    #[tokio::test]
    async fn v4_answers_each_key_and_refuses_unknown_key_types() {
        let controller = MemoryController::new(false);
        let lone = config(&[("node.id", "1")]);
        let batched = FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![text("a"), text("b")]);
        let found = |key: &str| {
            Coordinator::default()
                .with_key(text(key))
                .with_node_id(BrokerId(1))
                .with_host(text("b1"))
                .with_port(9092)
        };
        assert_eq!(
            find(&controller, &lone, batched, 4).await,
            FindCoordinatorResponse::default().with_coordinators(vec![found("a"), found("b")])
        );
        let share_group = FindCoordinatorRequest::default()
            .with_key_type(2)
            .with_coordinator_keys(vec![text("s")]);
        assert_eq!(
            find(&controller, &lone, share_group, 6).await,
            FindCoordinatorResponse::default()
                .with_coordinators(vec![not_available("s", ResponseError::InvalidRequest)])
        );
    }

    #[tokio::test]
    async fn no_coordinator_while_too_few_brokers_are_up_the_leader_is_fenced_or_the_controller_fails(
    ) {
        let v4 = |key: &str| {
            FindCoordinatorRequest::default()
                .with_key_type(0)
                .with_coordinator_keys(vec![text(key)])
        };
        let unavailable = |key: &str| {
            FindCoordinatorResponse::default().with_coordinators(vec![not_available(
                key,
                ResponseError::CoordinatorNotAvailable,
            )])
        };
        // A cluster at the default replication factor (3) with one broker up.
        let controller = MemoryController::new(false);
        let cluster = config(&[
            ("node.id", "1"),
            ("process.roles", "broker"),
            ("controller.quorum.voters", "9@c9:9093"),
        ]);
        assert_eq!(
            find(&controller, &cluster, v4("g"), 4).await,
            unavailable("g")
        );
        assert_eq!(controller.take_ops(), Vec::new());

        let lone = config(&[("node.id", "1")]);
        let failing = MemoryController {
            failure: Some(ControlError::Timeout),
            ..MemoryController::new(false)
        };
        assert_eq!(find(&failing, &lone, v4("g"), 4).await, unavailable("g"));
        assert_eq!(failing.take_ops().len(), 1);

        // The topic exists but its leader is fenced.
        let fenced = MemoryController::new(true);
        let spec = CreateTopicSpec {
            name: "__consumer_offsets".into(),
            num_partitions: 50,
            replication_factor: 1,
            ..CreateTopicSpec::default()
        };
        fenced.create(&spec, 9);
        assert_eq!(find(&fenced, &lone, v4("g"), 4).await, unavailable("g"));
        assert_eq!(fenced.take_ops(), Vec::new());
    }

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
