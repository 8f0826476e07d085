//! Metadata: brokers, topics and partitions from the metadata image, with auto topic creation.
//!
//! A topic deleted in the last [`DELETED_TOPIC_AUTO_CREATE_HOLD`] is not auto-created: a client
//! that still knew it (librdkafka's and the Java producer's periodic refresh name every topic they
//! used, with `allow_auto_topic_creation`) would otherwise bring it back milliseconds after the
//! DeleteTopics. KRaft-era Kafka has no such hold — the race is a known Kafka annoyance, answered
//! on the client side (KAFKA-2948, KIP-361) — but ZooKeeper-era Kafka refused to create a topic
//! while its deletion was in progress, which gave the same window; Skald's deletions complete at
//! once, so the window is kept explicitly. Such a name is answered UNKNOWN_TOPIC_OR_PARTITION, as
//! when auto-creation is off; CreateTopics is not affected.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::StrBytes;
use skald_controller::names::{is_internal, validate_topic_name};
use skald_controller::{
    ControllerOp, ControllerReply, CreateTopicSpec, ImageDelta, MetadataImage, PartitionImage,
    TopicImage, NO_LEADER,
};

use super::controller_handle::ControllerHandle;
use super::{topic_id, topic_name, uuid};
use crate::broker::Broker;
use crate::config::ServerConfig;

/// With no authorizer every operation is allowed; these are the operations Kafka lists as
/// applicable to a topic (READ..ALTER_CONFIGS) and to the cluster, as bit fields.
pub(super) const TOPIC_AUTHORIZED_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
pub(super) const CLUSTER_AUTHORIZED_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

/// How long after its deletion a topic is not auto-created by a Metadata request.
pub const DELETED_TOPIC_AUTO_CREATE_HOLD: Duration = Duration::from_secs(10);

/// Topics this broker saw deleted, and when, for [`DELETED_TOPIC_AUTO_CREATE_HOLD`].
#[derive(Debug, Default)]
pub struct RecentlyDeletedTopics {
    deleted_at: Mutex<HashMap<String, Instant>>,
}

impl RecentlyDeletedTopics {
    /// Notes the topics a metadata change removed (or gave a new id: deleted and created again,
    /// by an explicit CreateTopics), at `now`.
    pub fn note_deletions(&self, delta: &ImageDelta, now: Instant) {
        let mut deleted_at = self.lock();
        deleted_at
            .retain(|_, at| now.saturating_duration_since(*at) < DELETED_TOPIC_AUTO_CREATE_HOLD);
        for (name, _) in &delta.removed_topics {
            deleted_at.insert(name.clone(), now);
        }
    }

    /// Whether `name` was deleted less than the hold before `now`.
    pub fn held(&self, name: &str, now: Instant) -> bool {
        self.lock()
            .get(name)
            .is_some_and(|at| now.saturating_duration_since(*at) < DELETED_TOPIC_AUTO_CREATE_HOLD)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.deleted_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the request asked about: every topic, or these names (an id resolves to its name).
enum Wanted {
    All,
    Topics(Vec<Result<String, uuid::Uuid>>),
}

/// What a Metadata request reaches: the controller (the image, and auto-creating topics), the
/// configuration (`auto.create.topics.enable`, the node id clients are given as controller),
/// the cluster id, and the topics deleted lately.
#[derive(Clone, Copy)]
pub struct MetadataView<'a> {
    pub controller: &'a dyn ControllerHandle,
    pub config: &'a ServerConfig,
    pub cluster_id: &'a str,
    pub recently_deleted_topics: &'a RecentlyDeletedTopics,
}

impl<'a> MetadataView<'a> {
    pub fn of(broker: &'a Broker) -> MetadataView<'a> {
        MetadataView {
            controller: broker,
            config: &broker.config,
            cluster_id: &broker.cluster_id,
            recently_deleted_topics: &broker.recently_deleted_topics,
        }
    }
}

pub async fn handle(
    view: MetadataView<'_>,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let mut image = view.controller.image();
    let wanted = match request.topics {
        None => Wanted::All,
        // v0 had no null array: an empty one meant every topic.
        Some(topics) if topics.is_empty() && version == 0 => Wanted::All,
        Some(topics) => Wanted::Topics(
            topics
                .into_iter()
                .map(|topic| match topic.name {
                    Some(name) => Ok(name.0.to_string()),
                    None => image
                        .topic_by_id(topic_id(&topic.topic_id))
                        .map(|t| t.name.clone())
                        .ok_or(topic.topic_id),
                })
                .collect(),
        ),
    };

    // Before v4 every Metadata request could create topics; since then the client says whether it may.
    let allow_auto_create =
        view.config.auto_create_topics_enable && (version < 4 || request.allow_auto_topic_creation);
    if let (Wanted::Topics(topics), true) = (&wanted, allow_auto_create) {
        // A name asked for twice is created once.
        let now = Instant::now();
        let missing: std::collections::BTreeSet<&String> = topics
            .iter()
            .filter_map(|topic| topic.as_ref().ok())
            .filter(|name| {
                image.topic(name).is_none()
                    && validate_topic_name(name).is_ok()
                    && !is_internal(name)
                    && !view.recently_deleted_topics.held(name, now)
            })
            .collect();
        let missing: Vec<CreateTopicSpec> = missing
            .into_iter()
            .map(|name| CreateTopicSpec {
                name: name.clone(),
                num_partitions: -1,
                replication_factor: -1,
                ..CreateTopicSpec::default()
            })
            .collect();
        if !missing.is_empty() {
            let op = ControllerOp::CreateTopics {
                topics: missing,
                validate_only: false,
                allow_internal: false,
            };
            match view.controller.control(op).await {
                Ok(ControllerReply::CreateTopics(results)) => {
                    let refused: Vec<_> = results
                        .iter()
                        .filter_map(|result| result.as_ref().err())
                        .collect();
                    if let Some(first) = refused.first() {
                        tracing::info!(
                            refused = refused.len(),
                            "topic auto-creation refused: {first}"
                        );
                    }
                }
                Ok(other) => tracing::error!("topic auto-creation got {other:?}"),
                Err(err) => tracing::error!("topic auto-creation failed: {err}"),
            }
            image = view.controller.image();
        }
    }

    let include_topic_operations = version >= 8 && request.include_topic_authorized_operations;
    let topics: Vec<MetadataResponseTopic> = match wanted {
        Wanted::All => image
            .topics
            .values()
            .map(|topic| describe_topic(&image, topic))
            .collect(),
        Wanted::Topics(topics) => topics
            .into_iter()
            .map(|topic| match topic {
                Ok(name) => match image.topic(&name) {
                    Some(found) => describe_topic(&image, found),
                    None => missing_topic(&name),
                },
                Err(id) => MetadataResponseTopic::default()
                    .with_error_code(ResponseError::UnknownTopicId.code())
                    .with_topic_id(id),
            })
            .collect(),
    };

    let topics = if include_topic_operations {
        topics
            .into_iter()
            .map(|topic: MetadataResponseTopic| {
                if topic.error_code == 0 {
                    topic.with_topic_authorized_operations(TOPIC_AUTHORIZED_OPERATIONS)
                } else {
                    topic
                }
            })
            .collect()
    } else {
        topics
    };
    let mut response = MetadataResponse::default();
    if (8..=10).contains(&version) && request.include_cluster_authorized_operations {
        response = response.with_cluster_authorized_operations(CLUSTER_AUTHORIZED_OPERATIONS);
    }
    response
        .with_brokers(brokers(&image))
        .with_cluster_id(Some(StrBytes::from_string(view.cluster_id.to_string())))
        .with_controller_id(BrokerId(crate::broker::controller_id_for_clients(
            view.config,
        )))
        .with_topics(topics)
}

/// The unfenced brokers: a fenced one leads nothing and clients must not be sent to it (KRaft).
fn brokers(image: &MetadataImage) -> Vec<MetadataResponseBroker> {
    image
        .brokers
        .values()
        .filter(|registered| !registered.fenced)
        .filter_map(|registered| {
            let endpoint = registered.endpoints.first()?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(registered.broker_id))
                    .with_host(StrBytes::from_string(endpoint.host.clone()))
                    .with_port(i32::from(endpoint.port))
                    .with_rack(registered.rack.clone().map(StrBytes::from_string)),
            )
        })
        .collect()
}

fn describe_topic(image: &MetadataImage, topic: &TopicImage) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .map(|(index, partition)| {
            let offline = offline_replicas(image, partition);
            // A partition no replica can lead is offline: clients get LEADER_NOT_AVAILABLE and
            // retry, as with Kafka.
            let error = if partition.leader == NO_LEADER {
                ResponseError::LeaderNotAvailable.code()
            } else {
                0
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(*index)
                .with_offline_replicas(offline)
                .with_leader_id(BrokerId(partition.leader))
                .with_leader_epoch(partition.leader_epoch)
                .with_replica_nodes(partition.replicas.iter().copied().map(BrokerId).collect())
                .with_isr_nodes(partition.isr.iter().copied().map(BrokerId).collect())
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(uuid(topic.topic_id))
        .with_is_internal(is_internal(&topic.name))
        .with_partitions(partitions)
}

/// A partition's replicas on brokers that are gone or fenced.
pub(super) fn offline_replicas(image: &MetadataImage, partition: &PartitionImage) -> Vec<BrokerId> {
    partition
        .replicas
        .iter()
        .copied()
        .filter(|id| image.brokers.get(id).is_none_or(|broker| broker.fenced))
        .map(BrokerId)
        .collect()
}

/// Kafka's error for a topic the image does not have: INVALID_TOPIC_EXCEPTION for a name no
/// topic may have, else UNKNOWN_TOPIC_OR_PARTITION.
pub(super) fn missing_topic_error(name: &str) -> ResponseError {
    if validate_topic_name(name).is_err() {
        ResponseError::InvalidTopicException
    } else {
        ResponseError::UnknownTopicOrPartition
    }
}

fn missing_topic(name: &str) -> MetadataResponseTopic {
    let code = missing_topic_error(name);
    MetadataResponseTopic::default()
        .with_error_code(code.code())
        .with_name(Some(topic_name(name)))
}

#[cfg(test)]
mod tests {
    use skald_controller::{MetadataRecord, TopicId};

    use super::*;

    fn image_with(topics: &[(&str, u128)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for &(name, id) in topics {
            image.replay(&MetadataRecord::Topic {
                name: name.to_string(),
                topic_id: TopicId(id),
            });
        }
        image
    }

    #[test]
    fn deleted_topics_are_held_back_from_auto_creation_for_a_while() {
        let deleted = RecentlyDeletedTopics::default();
        let t0 = Instant::now();
        let before = image_with(&[("kept", 1), ("gone", 2), ("renewed", 3)]);
        let after = image_with(&[("kept", 1), ("renewed", 4), ("new", 5)]);
        deleted.note_deletions(&ImageDelta::between(&before, &after), t0);
        assert!(deleted.held("gone", t0));
        assert!(deleted.held("renewed", t0), "deleted, then created again");
        assert!(!deleted.held("kept", t0));
        assert!(!deleted.held("new", t0));
        let almost = t0 + DELETED_TOPIC_AUTO_CREATE_HOLD - Duration::from_millis(1);
        assert!(deleted.held("gone", almost));
        assert!(!deleted.held("gone", t0 + DELETED_TOPIC_AUTO_CREATE_HOLD));

        // Entries past the hold are forgotten at the next change.
        deleted.note_deletions(
            &ImageDelta::between(&after, &after),
            t0 + DELETED_TOPIC_AUTO_CREATE_HOLD,
        );
        assert!(deleted.lock().is_empty());
    }

    mod handler {
        use std::sync::Arc;

        use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        use skald_controller::{Endpoint, TopicError};

        use super::*;
        use crate::api::controller_handle::CannedController;

        /// Broker 1 (`b1:9092`) and broker 2, fenced; topic `orders` (id 7): partition 0 led by
        /// 1 on [1, 2], partition 1 on [2] without a leader.
        fn cluster() -> MetadataImage {
            let register = |broker_id: i32, fenced: bool| MetadataRecord::RegisterBroker {
                broker_id,
                incarnation_id: 1,
                broker_epoch: 10,
                endpoints: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: format!("b{broker_id}"),
                    port: 9092,
                }],
                rack: None,
                fenced,
            };
            let partition = |index: i32, replicas: Vec<i32>, isr: Vec<i32>, leader: i32| {
                MetadataRecord::Partition {
                    topic_id: TopicId(7),
                    partition: index,
                    replicas,
                    isr,
                    leader,
                    leader_epoch: 3,
                    partition_epoch: 0,
                    removing_replicas: Vec::new(),
                    adding_replicas: Vec::new(),
                }
            };
            let mut image = MetadataImage::default();
            image.replay_batch(&[
                register(1, false),
                register(2, true),
                MetadataRecord::Topic {
                    name: "orders".into(),
                    topic_id: TopicId(7),
                },
                partition(0, vec![1, 2], vec![1], 1),
                partition(1, vec![2], vec![], NO_LEADER),
            ]);
            image
        }

        fn config(auto_create: bool) -> ServerConfig {
            ServerConfig::from_properties(
                [
                    ("node.id".to_string(), "1".to_string()),
                    (
                        "auto.create.topics.enable".to_string(),
                        auto_create.to_string(),
                    ),
                ]
                .into(),
            )
            .expect("valid config")
        }

        async fn metadata(
            controller: &CannedController,
            config: &ServerConfig,
            request: MetadataRequest,
            version: i16,
        ) -> MetadataResponse {
            let deleted = RecentlyDeletedTopics::default();
            let view = MetadataView {
                controller,
                config,
                cluster_id: "cluster-x",
                recently_deleted_topics: &deleted,
            };
            handle(view, request, version).await
        }

        fn named(names: &[&str]) -> MetadataRequest {
            MetadataRequest::default().with_topics(Some(
                names
                    .iter()
                    .map(|name| MetadataRequestTopic::default().with_name(Some(topic_name(name))))
                    .collect(),
            ))
        }

        fn orders() -> MetadataResponseTopic {
            let partition = |index: i32, leader: i32, replicas: &[i32], isr: &[i32]| {
                MetadataResponsePartition::default()
                    .with_partition_index(index)
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(3)
                    .with_replica_nodes(replicas.iter().copied().map(BrokerId).collect())
                    .with_isr_nodes(isr.iter().copied().map(BrokerId).collect())
                    .with_offline_replicas(vec![BrokerId(2)])
            };
            MetadataResponseTopic::default()
                .with_name(Some(topic_name("orders")))
                .with_topic_id(uuid::Uuid::from_u128(7))
                .with_partitions(vec![
                    partition(0, 1, &[1, 2], &[1]),
                    partition(1, NO_LEADER, &[2], &[])
                        .with_error_code(ResponseError::LeaderNotAvailable.code()),
                ])
        }

        fn answer(topics: Vec<MetadataResponseTopic>) -> MetadataResponse {
            MetadataResponse::default()
                .with_brokers(vec![MetadataResponseBroker::default()
                    .with_node_id(BrokerId(1))
                    .with_host(StrBytes::from_static_str("b1"))
                    .with_port(9092)
                    .with_rack(None)])
                .with_cluster_id(Some(StrBytes::from_static_str("cluster-x")))
                .with_controller_id(BrokerId(1))
                .with_topics(topics)
        }

        fn controller(
            replies: Vec<Result<ControllerReply, crate::metadata::ControlError>>,
        ) -> CannedController {
            CannedController {
                image: Arc::new(cluster()),
                ..CannedController::new(replies)
            }
        }

        #[tokio::test]
        async fn every_topic_with_its_partitions_and_the_unfenced_brokers() {
            let controller = controller(Vec::new());
            let all = MetadataRequest::default().with_topics(None);
            assert_eq!(
                metadata(&controller, &config(true), all, 12).await,
                answer(vec![orders()])
            );
            // v0: an empty list is every topic.
            let v0 = MetadataRequest::default().with_topics(Some(Vec::new()));
            assert_eq!(
                metadata(&controller, &config(true), v0, 0).await,
                answer(vec![orders()])
            );
            assert_eq!(controller.take_ops(), Vec::new());
        }

        #[tokio::test]
        async fn missing_topics_a_client_may_create_are_created_once() {
            let controller = controller(vec![Ok(ControllerReply::CreateTopics(vec![Err(
                TopicError::InvalidReplicationFactor("no brokers".into()),
            )]))]);
            let request = named(&["orders", "new", "new", "bad name!", "__consumer_offsets"])
                .with_allow_auto_topic_creation(true);
            let unknown = |name: &str, error: ResponseError| {
                MetadataResponseTopic::default()
                    .with_error_code(error.code())
                    .with_name(Some(topic_name(name)))
            };
            assert_eq!(
                metadata(&controller, &config(true), request, 9).await,
                answer(vec![
                    orders(),
                    unknown("new", ResponseError::UnknownTopicOrPartition),
                    unknown("new", ResponseError::UnknownTopicOrPartition),
                    unknown("bad name!", ResponseError::InvalidTopicException),
                    unknown("__consumer_offsets", ResponseError::UnknownTopicOrPartition),
                ])
            );
            assert_eq!(
                controller.take_ops(),
                vec![ControllerOp::CreateTopics {
                    topics: vec![CreateTopicSpec {
                        name: "new".into(),
                        num_partitions: -1,
                        replication_factor: -1,
                        ..CreateTopicSpec::default()
                    }],
                    validate_only: false,
                    allow_internal: false,
                }]
            );
        }

        #[tokio::test]
        async fn nothing_is_created_unless_both_the_client_and_the_broker_allow_it() {
            let controller = controller(Vec::new());
            // v4+ without the client's consent.
            let request = named(&["new"]).with_allow_auto_topic_creation(false);
            metadata(&controller, &config(true), request, 4).await;
            // auto.create.topics.enable=false, even before v4.
            metadata(&controller, &config(false), named(&["new"]), 3).await;
            assert_eq!(controller.take_ops(), Vec::new());
        }

        #[tokio::test]
        async fn an_unknown_topic_id_is_answered_with_it() {
            let controller = controller(Vec::new());
            let id = uuid::Uuid::from_u128(99);
            let request = MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default()
                    .with_name(None)
                    .with_topic_id(id),
                MetadataRequestTopic::default()
                    .with_name(None)
                    .with_topic_id(uuid::Uuid::from_u128(7)),
            ]));
            assert_eq!(
                metadata(&controller, &config(true), request, 12).await,
                answer(vec![
                    MetadataResponseTopic::default()
                        .with_error_code(ResponseError::UnknownTopicId.code())
                        .with_topic_id(id),
                    orders(),
                ])
            );
        }
    }
}
