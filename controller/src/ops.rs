//! The metadata operations a broker asks of the active controller, as one serializable enum, so the
//! same request runs in-process on a combined node and crosses the controller listener otherwise.

use serde::{Deserialize, Serialize};

use crate::alter_configs::{alter_configs, AlterConfigsResource};
use crate::controller::{
    Controller, CreatePartitionsSpec, CreateTopicSpec, CreatedTopic, Planned, TopicRef,
};
use crate::election::{elect_leaders, ElectionResult, ElectionType};
use crate::error::TopicError;
use crate::image::{MetadataImage, PRODUCER_ID_BLOCK_SIZE};
use crate::reassignment::{OngoingReassignment, ReassignmentSpec};
use crate::record::{MetadataRecord, TopicId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerOp {
    /// `allow_internal` only for the broker's own requests (`__consumer_offsets`), never a client's.
    CreateTopics {
        topics: Vec<CreateTopicSpec>,
        validate_only: bool,
        allow_internal: bool,
    },
    DeleteTopics {
        topics: Vec<TopicRef>,
    },
    CreatePartitions {
        topics: Vec<CreatePartitionsSpec>,
        validate_only: bool,
    },
    /// `partitions: None` asks for every partition where an election is needed.
    ElectLeaders {
        election_type: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    },
    /// IncrementalAlterConfigs / AlterConfigs for topics and dynamic broker configs, each
    /// resource on its own.
    AlterConfigs {
        resources: Vec<AlterConfigsResource>,
        validate_only: bool,
    },
    /// AlterPartitionReassignments: each partition's target replicas, or `None` to cancel.
    AlterPartitionReassignments {
        partitions: Vec<ReassignmentSpec>,
        allow_replication_factor_change: bool,
    },
    /// ListPartitionReassignments: the named (topic, partitions), or `None` for every topic.
    /// Answered from the active controller's committed image; it plans no records.
    ListPartitionReassignments {
        topics: Option<Vec<(String, Vec<i32>)>>,
    },
    /// A broker's request for a block of producer ids (Kafka's AllocateProducerIds); once it
    /// commits, the block is in the image under the broker's id and `request_id`.
    AllocateProducerIds {
        broker_id: i32,
        broker_epoch: i64,
        request_id: u64,
    },
    /// Kafka's UnregisterBroker: a broker that left for good stops being registered.
    UnregisterBroker {
        broker_id: i32,
    },
}

/// Each operation's per-topic outcomes, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerReply {
    CreateTopics(Vec<Result<CreatedTopic, TopicError>>),
    DeleteTopics(Vec<Result<(String, TopicId), TopicError>>),
    CreatePartitions(Vec<Result<(), TopicError>>),
    /// Per partition rather than per topic: for a request naming none, the partitions the
    /// controller chose.
    ElectLeaders(Vec<ElectionResult>),
    AllocateProducerIds(Result<(), ProducerIdsError>),
    AlterConfigs(Vec<Result<(), TopicError>>),
    UnregisterBroker(Result<(), UnregisterBrokerError>),
    /// Per partition, in request order.
    AlterPartitionReassignments(Vec<Result<(), TopicError>>),
    ListPartitionReassignments(Vec<OngoingReassignment>),
}

/// Why a broker could not be unregistered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum UnregisterBrokerError {
    /// Kafka's BROKER_ID_NOT_REGISTERED.
    #[error("broker {0} is not registered")]
    NotRegistered(i32),
}

/// Why a block of producer ids was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ProducerIdsError {
    /// The broker is not registered with that epoch (Kafka's STALE_BROKER_EPOCH).
    #[error("broker {broker_id} is not registered with epoch {broker_epoch}")]
    StaleBrokerEpoch { broker_id: i32, broker_epoch: i64 },
    /// Every producer id has been handed out.
    #[error("producer ids are exhausted")]
    Exhausted,
}

impl ControllerOp {
    /// How many topics the operation names (the length of its reply); for ElectLeaders, how
    /// many partitions it names (none when it asks for every partition).
    pub fn topic_count(&self) -> usize {
        match self {
            ControllerOp::CreateTopics { topics, .. } => topics.len(),
            ControllerOp::DeleteTopics { topics } => topics.len(),
            ControllerOp::CreatePartitions { topics, .. } => topics.len(),
            ControllerOp::ElectLeaders { partitions, .. } => {
                partitions.as_ref().map_or(0, Vec::len)
            }
            ControllerOp::AllocateProducerIds { .. } => 1,
            ControllerOp::UnregisterBroker { .. } => 1,
            ControllerOp::AlterConfigs { resources, .. } => resources.len(),
            ControllerOp::AlterPartitionReassignments { partitions, .. } => partitions.len(),
            ControllerOp::ListPartitionReassignments { topics } => {
                topics.as_ref().map_or(0, Vec::len)
            }
        }
    }
}

impl Controller {
    /// Plans any operation against the committed image.
    pub fn plan(&mut self, image: &MetadataImage, op: &ControllerOp) -> Planned<ControllerReply> {
        match op {
            ControllerOp::CreateTopics {
                topics,
                validate_only,
                allow_internal: false,
            } => map(
                self.create_topics(image, topics, *validate_only),
                ControllerReply::CreateTopics,
            ),
            ControllerOp::CreateTopics {
                topics,
                allow_internal: true,
                ..
            } => map(
                self.create_internal_topics(image, topics),
                ControllerReply::CreateTopics,
            ),
            ControllerOp::DeleteTopics { topics } => map(
                self.delete_topics(image, topics),
                ControllerReply::DeleteTopics,
            ),
            ControllerOp::CreatePartitions {
                topics,
                validate_only,
            } => map(
                self.create_partitions(image, topics, *validate_only),
                ControllerReply::CreatePartitions,
            ),
            ControllerOp::ElectLeaders {
                election_type,
                partitions,
            } => map(
                elect_leaders(image, *election_type, partitions.as_deref()),
                ControllerReply::ElectLeaders,
            ),
            ControllerOp::AllocateProducerIds {
                broker_id,
                broker_epoch,
                request_id,
            } => allocate_producer_ids(image, *broker_id, *broker_epoch, *request_id),
            ControllerOp::AlterConfigs {
                resources,
                validate_only,
            } => map(
                alter_configs(image, resources, *validate_only),
                ControllerReply::AlterConfigs,
            ),
            ControllerOp::UnregisterBroker { broker_id } => map(
                self.unregister_broker(image, *broker_id),
                ControllerReply::UnregisterBroker,
            ),
            ControllerOp::AlterPartitionReassignments {
                partitions,
                allow_replication_factor_change,
            } => map(
                self.alter_partition_reassignments(
                    image,
                    partitions,
                    *allow_replication_factor_change,
                ),
                ControllerReply::AlterPartitionReassignments,
            ),
            ControllerOp::ListPartitionReassignments { topics } => Planned {
                records: Vec::new(),
                reply: ControllerReply::ListPartitionReassignments(
                    Controller::list_partition_reassignments(image, topics.as_deref()),
                ),
            },
        }
    }
}

/// Kafka's `ProducerIdControlManager.generateNextProducerId`, except that the block is fixed when
/// the record replays (see [`crate::MetadataRecord::AllocateProducerIds`]).
fn allocate_producer_ids(
    image: &MetadataImage,
    broker_id: i32,
    broker_epoch: i64,
    request_id: u64,
) -> Planned<ControllerReply> {
    let registered = image
        .brokers
        .get(&broker_id)
        .is_some_and(|broker| broker.broker_epoch == broker_epoch);
    let refused = if !registered {
        Some(ProducerIdsError::StaleBrokerEpoch {
            broker_id,
            broker_epoch,
        })
    } else if image.next_producer_id > i64::MAX - PRODUCER_ID_BLOCK_SIZE {
        Some(ProducerIdsError::Exhausted)
    } else {
        None
    };
    if let Some(error) = refused {
        return Planned {
            records: Vec::new(),
            reply: ControllerReply::AllocateProducerIds(Err(error)),
        };
    }
    Planned {
        records: vec![MetadataRecord::AllocateProducerIds {
            broker_id,
            broker_epoch,
            request_id,
        }],
        reply: ControllerReply::AllocateProducerIds(Ok(())),
    }
}

fn map<T>(
    planned: Planned<T>,
    wrap: impl FnOnce(T) -> ControllerReply,
) -> Planned<ControllerReply> {
    Planned {
        records: planned.records,
        reply: wrap(planned.reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ProducerIdBlock;

    #[test]
    fn operations_and_replies_cross_the_wire_as_json() {
        let op = ControllerOp::CreateTopics {
            topics: vec![CreateTopicSpec {
                name: "orders".into(),
                num_partitions: 3,
                replication_factor: -1,
                assignments: vec![(0, vec![1, 2])],
                configs: vec![("retention.ms".into(), Some("1000".into()))],
            }],
            validate_only: false,
            allow_internal: false,
        };
        let json = serde_json::to_vec(&op).unwrap();
        assert_eq!(serde_json::from_slice::<ControllerOp>(&json).unwrap(), op);
        let reply = ControllerReply::DeleteTopics(vec![
            Ok(("a".into(), TopicId(u128::MAX))),
            Err(TopicError::UnknownTopicId),
            Err(TopicError::InvalidRequest("Duplicate topic name.".into())),
        ]);
        let json = serde_json::to_vec(&reply).unwrap();
        assert_eq!(
            serde_json::from_slice::<ControllerReply>(&json).unwrap(),
            reply
        );
        let op = ControllerOp::ElectLeaders {
            election_type: ElectionType::Unclean,
            partitions: Some(vec![("orders".into(), 3)]),
        };
        let json = serde_json::to_vec(&op).unwrap();
        assert_eq!(serde_json::from_slice::<ControllerOp>(&json).unwrap(), op);
        let reply = ControllerReply::ElectLeaders(vec![
            ("orders".into(), 3, Ok(())),
            (
                "orders".into(),
                4,
                Err(crate::ElectionError::EligibleLeadersNotAvailable),
            ),
        ]);
        let json = serde_json::to_vec(&reply).unwrap();
        assert_eq!(
            serde_json::from_slice::<ControllerReply>(&json).unwrap(),
            reply
        );
    }

    fn image_with_broker(broker_id: i32, broker_epoch: i64) -> MetadataImage {
        let mut image = MetadataImage::default();
        image.replay(&MetadataRecord::RegisterBroker {
            broker_id,
            incarnation_id: 1,
            broker_epoch,
            endpoints: Vec::new(),
            rack: None,
            fenced: false,
        });
        image
    }

    fn allocate(broker_id: i32, broker_epoch: i64, request_id: u64) -> ControllerOp {
        ControllerOp::AllocateProducerIds {
            broker_id,
            broker_epoch,
            request_id,
        }
    }

    #[test]
    fn producer_id_blocks_never_overlap_even_when_planned_against_the_same_image() {
        let mut image = image_with_broker(1, 10);
        image.replay(&MetadataRecord::RegisterBroker {
            broker_id: 2,
            incarnation_id: 2,
            broker_epoch: 11,
            endpoints: Vec::new(),
            rack: None,
            fenced: false,
        });
        let mut controller = Controller::new(crate::ControllerConfig {
            node_id: 1,
            num_partitions: 1,
            default_replication_factor: 1,
        });
        // Two requests planned before either commits (a timed-out one committing late).
        let first = controller.plan(&image, &allocate(1, 10, 100));
        let second = controller.plan(&image, &allocate(2, 11, 200));
        assert_eq!(first.reply, ControllerReply::AllocateProducerIds(Ok(())));
        image.replay_batch(&first.records);
        image.replay_batch(&second.records);
        assert_eq!(
            image.producer_id_blocks.get(&1),
            Some(&ProducerIdBlock {
                request_id: 100,
                first_producer_id: 0
            })
        );
        assert_eq!(
            image.producer_id_blocks.get(&2),
            Some(&ProducerIdBlock {
                request_id: 200,
                first_producer_id: PRODUCER_ID_BLOCK_SIZE
            })
        );
        assert_eq!(image.next_producer_id, 2 * PRODUCER_ID_BLOCK_SIZE);
        // A snapshot carries the blocks and the next id.
        let mut restored = MetadataImage::default();
        restored.replay_batch(&image.to_records());
        assert_eq!(restored, image);
        let third = controller.plan(&restored, &allocate(1, 10, 101));
        restored.replay_batch(&third.records);
        assert_eq!(
            restored.producer_id_blocks[&1].first_producer_id,
            2 * PRODUCER_ID_BLOCK_SIZE
        );
    }

    #[test]
    fn producer_ids_for_a_stale_broker_epoch_are_refused_without_records() {
        let image = image_with_broker(1, 10);
        let planned = Controller::new(crate::ControllerConfig {
            node_id: 1,
            num_partitions: 1,
            default_replication_factor: 1,
        })
        .plan(&image, &allocate(1, 9, 1));
        assert!(planned.records.is_empty());
        assert_eq!(
            planned.reply,
            ControllerReply::AllocateProducerIds(Err(ProducerIdsError::StaleBrokerEpoch {
                broker_id: 1,
                broker_epoch: 9
            }))
        );
    }
}
