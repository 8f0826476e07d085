//! The metadata image: the state that the ordered metadata records replay into.
//!
//! The maps that grow with the cluster (brokers, topics, each topic's partitions, the topic-id
//! index) are persistent maps ([`imbl::OrdMap`]): a clone shares every node with the original and
//! an update copies only the path to what it changes. So the quorum applies a commit to an image
//! that the broker still serves in O(changed · log n), never copying the whole image, and two
//! images one derived from the other are compared in time proportional to what differs
//! ([`crate::delta::ImageDelta`]). The small per-topic and per-broker config maps stay `BTreeMap`s.

use std::collections::BTreeMap;

use imbl::OrdMap;

use crate::record::{ConfigResource, Endpoint, MetadataRecord, TopicId};

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerImage {
    pub broker_id: i32,
    pub incarnation_id: u64,
    pub broker_epoch: i64,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    /// A fenced broker leads no partitions and is not chosen for new ones.
    pub fenced: bool,
}

/// One partition's replicas, ISR and leadership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionImage {
    /// During a reassignment, the target replicas followed by those being removed (Kafka's
    /// `PartitionReassignmentReplicas`): every broker that must hold the partition meanwhile.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// Replicas a reassignment in progress removes once every target replica is in the ISR.
    pub removing_replicas: Vec<i32>,
    /// Replicas a reassignment in progress adds; they catch up as followers meanwhile.
    pub adding_replicas: Vec<i32>,
}

impl PartitionImage {
    /// Applies a `PartitionChange` (KRaft's PartitionChangeRecord merge): a new leader bumps the
    /// leader epoch, and every change, even one that sets a field to its current value, bumps the
    /// partition epoch. The controller plans replies with this too, so they match what replays.
    pub fn apply_change(
        &mut self,
        leader: Option<i32>,
        isr: Option<&[i32]>,
        replicas: Option<&[i32]>,
    ) {
        if let Some(leader) = leader {
            if leader != self.leader {
                self.leader = leader;
                self.leader_epoch += 1;
            }
        }
        if let Some(isr) = isr {
            self.isr = isr.to_vec();
        }
        if let Some(replicas) = replicas {
            self.replicas = replicas.to_vec();
        }
        self.partition_epoch += 1;
    }

    /// Applies a `PartitionChange` record's fields (any other record changes nothing): the
    /// reassignment fields, then [`Self::apply_change`], which bumps the partition epoch once
    /// for the whole record.
    pub fn apply_record(&mut self, record: &MetadataRecord) {
        let MetadataRecord::PartitionChange {
            leader,
            isr,
            replicas,
            removing_replicas,
            adding_replicas,
            ..
        } = record
        else {
            return;
        };
        if let Some(removing) = removing_replicas {
            self.removing_replicas = removing.clone();
        }
        if let Some(adding) = adding_replicas {
            self.adding_replicas = adding.clone();
        }
        self.apply_change(*leader, isr.as_deref(), replicas.as_deref());
    }

    /// Whether a reassignment is in progress (Kafka's `isReassignmentInProgress`).
    pub fn is_reassigning(&self) -> bool {
        !self.removing_replicas.is_empty() || !self.adding_replicas.is_empty()
    }

    /// The replicas before the reassignment in progress began (Kafka's `originalReplicas`).
    pub fn original_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|id| !self.adding_replicas.contains(id))
            .collect()
    }

    /// The replicas the reassignment in progress moves to (all replicas when none is).
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|id| !self.removing_replicas.contains(id))
            .collect()
    }
}

/// A topic, its partitions and its config overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: TopicId,
    pub partitions: OrdMap<i32, PartitionImage>,
    pub configs: BTreeMap<String, String>,
}

/// Everything the cluster knows, as of the records replayed into it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataImage {
    /// The largest broker epoch registered: the next registration gets a larger one. (Epochs are
    /// only ever compared with the same broker's current one, so a snapshot that forgets an
    /// unregistered broker's epoch loses nothing.)
    pub last_broker_epoch: i64,
    pub brokers: OrdMap<i32, BrokerImage>,
    pub topics: OrdMap<String, TopicImage>,
    pub topic_names_by_id: OrdMap<TopicId, String>,
    /// Each broker's dynamic configs (Kafka's DYNAMIC_BROKER_CONFIG).
    pub broker_configs: BTreeMap<i32, BTreeMap<String, String>>,
    /// The cluster-wide dynamic broker configs (Kafka's DYNAMIC_DEFAULT_BROKER_CONFIG).
    pub broker_default_configs: BTreeMap<String, String>,
    /// The first producer id no block holds yet (ids below it are handed out for good).
    pub next_producer_id: i64,
    /// Each broker's latest block of producer ids, with the request that asked for it.
    pub producer_id_blocks: BTreeMap<i32, ProducerIdBlock>,
}

/// A block of [`PRODUCER_ID_BLOCK_SIZE`] producer ids a broker hands out on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdBlock {
    pub request_id: u64,
    pub first_producer_id: i64,
}

/// Producer ids per block (Kafka's `ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

impl MetadataImage {
    /// Applies one record. Deterministic: the same records in the same order give the same image on
    /// every node. Records that refer to something absent are ignored (they cannot have been produced
    /// by a controller that validated them against the same image) with a log line.
    pub fn replay(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::RegisterBroker {
                broker_id,
                incarnation_id,
                broker_epoch,
                endpoints,
                rack,
                fenced,
            } => {
                self.last_broker_epoch = self.last_broker_epoch.max(*broker_epoch);
                self.brokers.insert(
                    *broker_id,
                    BrokerImage {
                        broker_id: *broker_id,
                        incarnation_id: *incarnation_id,
                        broker_epoch: *broker_epoch,
                        endpoints: endpoints.clone(),
                        rack: rack.clone(),
                        fenced: *fenced,
                    },
                );
            }
            MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            }
            | MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => match self.brokers.get_mut(broker_id) {
                Some(broker) if broker.broker_epoch == *broker_epoch => {
                    broker.fenced = matches!(record, MetadataRecord::FenceBroker { .. });
                }
                _ => tracing::warn!(
                    broker_id,
                    broker_epoch,
                    "fencing record for an unknown broker epoch"
                ),
            },
            MetadataRecord::UnregisterBroker {
                broker_id,
                broker_epoch,
            } => match self.brokers.get(broker_id) {
                Some(broker) if broker.broker_epoch == *broker_epoch => {
                    self.brokers.remove(broker_id);
                }
                _ => tracing::warn!(
                    broker_id,
                    broker_epoch,
                    "unregister record for an unknown broker epoch"
                ),
            },
            MetadataRecord::Topic { name, topic_id } => {
                // A controller never writes a Topic record for a name or an id in use. Should one
                // come, it replaces whatever held either, so that the two maps stay each other's
                // inverse (a stale id would route the old topic's records to the new one).
                let by_name = self.topics.remove(name).map(|old| old.topic_id);
                let by_id = self.topic_names_by_id.remove(topic_id);
                if by_name.is_some() || by_id.is_some() {
                    tracing::warn!(topic = name, %topic_id, "topic record replaces a topic in use");
                }
                if let Some(old_id) = by_name {
                    self.topic_names_by_id.remove(&old_id);
                }
                if let Some(old_name) = by_id {
                    self.topics.remove(&old_name);
                }
                self.topic_names_by_id.insert(*topic_id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: OrdMap::new(),
                        configs: BTreeMap::new(),
                    },
                );
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
                removing_replicas,
                adding_replicas,
            } => match self.topic_by_id_mut(*topic_id) {
                Some(topic) => {
                    topic.partitions.insert(
                        *partition,
                        PartitionImage {
                            replicas: replicas.clone(),
                            isr: isr.clone(),
                            leader: *leader,
                            leader_epoch: *leader_epoch,
                            partition_epoch: *partition_epoch,
                            removing_replicas: removing_replicas.clone(),
                            adding_replicas: adding_replicas.clone(),
                        },
                    );
                }
                None => {
                    tracing::warn!(%topic_id, partition, "partition record for an unknown topic")
                }
            },
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                ..
            } => match self
                .topic_by_id_mut(*topic_id)
                .and_then(|topic| topic.partitions.get_mut(partition))
            {
                Some(state) => state.apply_record(record),
                None => {
                    tracing::warn!(%topic_id, partition, "partition change for an unknown partition")
                }
            },
            MetadataRecord::Config {
                resource,
                name,
                value,
            } => {
                let configs = match resource {
                    ConfigResource::Topic(topic) => match self.topics.get_mut(topic) {
                        Some(topic) => &mut topic.configs,
                        None => {
                            tracing::warn!(topic, "config record for an unknown topic");
                            return;
                        }
                    },
                    ConfigResource::Broker(broker_id) => {
                        self.broker_configs.entry(*broker_id).or_default()
                    }
                    ConfigResource::BrokerDefault => &mut self.broker_default_configs,
                };
                match value {
                    Some(value) => configs.insert(name.clone(), value.clone()),
                    None => configs.remove(name),
                };
                // A broker whose last override went has no entry, as after a snapshot: every
                // image the same records make must be equal, however it was made.
                if let ConfigResource::Broker(broker_id) = resource {
                    if self
                        .broker_configs
                        .get(broker_id)
                        .is_some_and(BTreeMap::is_empty)
                    {
                        self.broker_configs.remove(broker_id);
                    }
                }
            }
            MetadataRecord::AllocateProducerIds {
                broker_id,
                request_id,
                ..
            } => {
                let first_producer_id = self.next_producer_id;
                match first_producer_id.checked_add(PRODUCER_ID_BLOCK_SIZE) {
                    Some(next) => {
                        self.next_producer_id = next;
                        self.producer_id_blocks.insert(
                            *broker_id,
                            ProducerIdBlock {
                                request_id: *request_id,
                                first_producer_id,
                            },
                        );
                    }
                    None => tracing::error!(broker_id, "producer ids are exhausted"),
                }
            }
            MetadataRecord::ProducerIds { next_producer_id } => {
                self.next_producer_id = self.next_producer_id.max(*next_producer_id);
            }
            MetadataRecord::ProducerIdBlock {
                broker_id,
                request_id,
                first_producer_id,
            } => {
                self.producer_id_blocks.insert(
                    *broker_id,
                    ProducerIdBlock {
                        request_id: *request_id,
                        first_producer_id: *first_producer_id,
                    },
                );
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                match self.topic_names_by_id.remove(topic_id) {
                    Some(name) => {
                        self.topics.remove(&name);
                    }
                    None => tracing::warn!(%topic_id, "remove record for an unknown topic"),
                }
            }
        }
    }

    /// Applies a whole batch of records, as committed together.
    pub fn replay_batch(&mut self, records: &[MetadataRecord]) {
        for record in records {
            self.replay(record);
        }
    }

    /// Records that replay into an image equal to this one (a snapshot's contents).
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut records =
            Vec::with_capacity(self.brokers.len() + self.partition_count() + self.topics.len() + 1);
        for broker in self.brokers.values() {
            records.push(MetadataRecord::RegisterBroker {
                broker_id: broker.broker_id,
                incarnation_id: broker.incarnation_id,
                broker_epoch: broker.broker_epoch,
                endpoints: broker.endpoints.clone(),
                rack: broker.rack.clone(),
                fenced: broker.fenced,
            });
        }
        if self.next_producer_id > 0 {
            records.push(MetadataRecord::ProducerIds {
                next_producer_id: self.next_producer_id,
            });
        }
        records.extend(self.producer_id_blocks.iter().map(|(broker_id, block)| {
            MetadataRecord::ProducerIdBlock {
                broker_id: *broker_id,
                request_id: block.request_id,
                first_producer_id: block.first_producer_id,
            }
        }));
        for (broker_id, configs) in &self.broker_configs {
            records.extend(configs.iter().map(|(name, value)| MetadataRecord::Config {
                resource: ConfigResource::Broker(*broker_id),
                name: name.clone(),
                value: Some(value.clone()),
            }));
        }
        records.extend(self.broker_default_configs.iter().map(|(name, value)| {
            MetadataRecord::Config {
                resource: ConfigResource::BrokerDefault,
                name: name.clone(),
                value: Some(value.clone()),
            }
        }));
        for topic in self.topics.values() {
            records.push(MetadataRecord::Topic {
                name: topic.name.clone(),
                topic_id: topic.topic_id,
            });
            records.extend(topic.partitions.iter().map(|(partition, state)| {
                MetadataRecord::Partition {
                    topic_id: topic.topic_id,
                    partition: *partition,
                    replicas: state.replicas.clone(),
                    isr: state.isr.clone(),
                    leader: state.leader,
                    leader_epoch: state.leader_epoch,
                    partition_epoch: state.partition_epoch,
                    removing_replicas: state.removing_replicas.clone(),
                    adding_replicas: state.adding_replicas.clone(),
                }
            }));
            records.extend(
                topic
                    .configs
                    .iter()
                    .map(|(name, value)| MetadataRecord::Config {
                        resource: ConfigResource::Topic(topic.name.clone()),
                        name: name.clone(),
                        value: Some(value.clone()),
                    }),
            );
        }
        records
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, topic_id: TopicId) -> Option<&TopicImage> {
        self.topic_names_by_id
            .get(&topic_id)
            .and_then(|name| self.topics.get(name))
    }

    fn topic_by_id_mut(&mut self, topic_id: TopicId) -> Option<&mut TopicImage> {
        let name = self.topic_names_by_id.get(&topic_id)?;
        self.topics.get_mut(name)
    }

    /// Total partitions over all topics.
    pub fn partition_count(&self) -> usize {
        self.topics
            .values()
            .map(|topic| topic.partitions.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(topic_id: TopicId, partition: i32) -> MetadataRecord {
        MetadataRecord::Partition {
            topic_id,
            partition,
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            removing_replicas: Vec::new(),
            adding_replicas: Vec::new(),
        }
    }

    /// Found by the `metadata_records` fuzz target: a second Topic record for a name in use left
    /// the old id mapped to the name, so the old topic's records would reach the new topic.
    #[test]
    fn a_topic_record_for_a_name_or_an_id_in_use_replaces_that_topic() {
        let data = br#"[{"version":1,"type":"Topic","name":"orders","topic_id":"0000000000000000000000005ca1ab1e"},{"version":1,"type":"Topic","name":"orders","topic_id":"0000000000000000010000005ca1ab1e"},{"version":1,"type":"Topic","name":"payments","topic_id":"0000000000000000010000005ca1ab1e"}]"#;
        let records = crate::raft_store::decode_records(data).unwrap();
        let mut image = MetadataImage::default();
        image.replay_batch(&records[..2]);
        assert!(image.topic_by_id(TopicId(0x5ca1_ab1e)).is_none());
        assert_eq!(
            image.topic("orders").unwrap().topic_id,
            TopicId(0x0100_0000_5ca1_ab1e)
        );
        image.replay_batch(&records[2..]);
        assert!(image.topic("orders").is_none());
        assert_eq!(image.topic_names_by_id.len(), 1);
        let mut restored = MetadataImage::default();
        restored.replay_batch(&image.to_records());
        assert_eq!(restored, image);
    }

    /// Found by the `metadata_records` fuzz target (its seed `record-06`): removing a broker's
    /// only override left an empty map that a snapshot does not carry, so an image restored from
    /// its own snapshot differed from the one that replayed the records.
    #[test]
    fn removing_a_brokers_last_override_leaves_the_image_its_snapshot_restores() {
        let data = br#"[{"version":1,"type":"Config","resource":{"kind":"Broker","name":1},"name":"log.retention.ms","value":null}]"#;
        let records = crate::raft_store::decode_records(data).unwrap();
        let mut image = MetadataImage::default();
        image.replay_batch(&records);
        assert!(image.broker_configs.is_empty());
        let mut restored = MetadataImage::default();
        restored.replay_batch(&image.to_records());
        assert_eq!(restored, image);
    }

    #[test]
    fn replay_builds_topics_partitions_and_configs_then_removes_them() {
        let id = TopicId(7);
        let mut image = MetadataImage::default();
        image.replay_batch(&[
            MetadataRecord::Topic {
                name: "orders".into(),
                topic_id: id,
            },
            partition(id, 0),
            partition(id, 1),
            MetadataRecord::Config {
                resource: ConfigResource::Topic("orders".into()),
                name: "retention.ms".into(),
                value: Some("60000".into()),
            },
        ]);
        let topic = image.topic("orders").unwrap();
        assert_eq!(
            topic.partitions.keys().copied().collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(
            topic.configs.get("retention.ms").map(String::as_str),
            Some("60000")
        );
        assert_eq!(
            image.topic_by_id(id).map(|t| t.name.as_str()),
            Some("orders")
        );

        image.replay_batch(&[MetadataRecord::Config {
            resource: ConfigResource::Topic("orders".into()),
            name: "retention.ms".into(),
            value: None,
        }]);
        assert!(image.topic("orders").unwrap().configs.is_empty());

        image.replay_batch(&[MetadataRecord::RemoveTopic { topic_id: id }]);
        assert!(image.topic("orders").is_none());
        assert!(image.topic_by_id(id).is_none());
    }

    #[test]
    fn every_partition_change_bumps_the_partition_epoch_and_a_new_leader_the_leader_epoch() {
        let id = TopicId(7);
        let mut image = MetadataImage::default();
        image.replay_batch(&[
            MetadataRecord::Topic {
                name: "orders".into(),
                topic_id: id,
            },
            MetadataRecord::Partition {
                topic_id: id,
                partition: 0,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
                leader: 1,
                leader_epoch: 4,
                partition_epoch: 9,
                removing_replicas: Vec::new(),
                adding_replicas: Vec::new(),
            },
        ]);
        let change = |leader: Option<i32>, isr: Option<Vec<i32>>| MetadataRecord::PartitionChange {
            topic_id: id,
            partition: 0,
            leader,
            isr,
            replicas: None,
            removing_replicas: None,
            adding_replicas: None,
        };
        let state = |image: &MetadataImage| {
            let p = &image.topic("orders").unwrap().partitions[&0];
            (p.leader, p.leader_epoch, p.isr.clone(), p.partition_epoch)
        };
        image.replay(&change(None, Some(vec![1, 2])));
        assert_eq!(state(&image), (1, 4, vec![1, 2], 10));
        // The same leader again: no new leader epoch, but still a new partition epoch.
        image.replay(&change(Some(1), None));
        assert_eq!(state(&image), (1, 4, vec![1, 2], 11));
        image.replay(&change(Some(2), Some(vec![2])));
        assert_eq!(state(&image), (2, 5, vec![2], 12));
        // A change for a partition that does not exist is ignored.
        image.replay(&MetadataRecord::PartitionChange {
            topic_id: id,
            partition: 5,
            leader: Some(3),
            isr: None,
            replicas: None,
            removing_replicas: None,
            adding_replicas: None,
        });
        assert_eq!(image.topic("orders").unwrap().partitions.len(), 1);
    }

    #[test]
    fn replay_is_deterministic() {
        let records = vec![
            MetadataRecord::Topic {
                name: "a".into(),
                topic_id: TopicId(1),
            },
            partition(TopicId(1), 0),
            MetadataRecord::Topic {
                name: "b".into(),
                topic_id: TopicId(2),
            },
            partition(TopicId(2), 0),
            MetadataRecord::RemoveTopic {
                topic_id: TopicId(1),
            },
        ];
        let mut first = MetadataImage::default();
        let mut second = MetadataImage::default();
        first.replay_batch(&records);
        second.replay_batch(&records);
        assert_eq!(first, second);
        assert_eq!(first.topics.keys().collect::<Vec<_>>(), vec!["b"]);
    }
}
