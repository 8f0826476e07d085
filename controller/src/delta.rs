//! What changed between two metadata images (Kafka's `MetadataDelta`, as its publishers see it).
//!
//! Kafka builds the delta while it replays records; here it is computed by comparing the image a
//! consumer last applied with the newest one. The image's maps are persistent, so when one image
//! was derived from the other by replay (the quorum's and the metadata follower's applied image,
//! and every image the publisher coalesces) the comparison skips every subtree they share: the
//! cost is proportional to what changed, not to the cluster. Two unrelated images (one restored
//! from a snapshot) compare entry by entry and the delta names everything that differs, so a
//! consumer that applies deltas needs no second code path for snapshots.

use imbl::ordmap::DiffItem;

use crate::image::{MetadataImage, TopicImage};
use crate::record::TopicId;

/// The changes from one image to another that a broker acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDelta {
    /// Topics of the old image that are gone from the new one, or whose name now belongs to a
    /// topic with another id (deleted and created again): name and old id.
    pub removed_topics: Vec<(String, TopicId)>,
    /// Topics of the new image that are new or changed, by name, in name order.
    pub changed_topics: Vec<TopicDelta>,
    /// A broker registered, unregistered, or was fenced or unfenced.
    pub brokers_changed: bool,
    /// A dynamic broker config (one broker's or the cluster default) changed.
    pub broker_configs_changed: bool,
}

/// How one topic of the new image differs from the old image's topic of that name and id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicDelta {
    pub name: String,
    /// No topic of that name and id was in the old image: every partition is in `partitions`.
    pub created: bool,
    /// The topic's config overrides differ.
    pub configs_changed: bool,
    /// Partitions that are new or whose state differs, in partition order.
    pub partitions: Vec<i32>,
    /// Partitions the old image had and the new one does not (the topic itself stayed).
    pub removed_partitions: Vec<i32>,
}

impl ImageDelta {
    /// The changes that turn `before` into `after`.
    pub fn between(before: &MetadataImage, after: &MetadataImage) -> ImageDelta {
        let mut delta = ImageDelta {
            brokers_changed: before.brokers != after.brokers,
            broker_configs_changed: before.broker_configs != after.broker_configs
                || before.broker_default_configs != after.broker_default_configs,
            ..ImageDelta::default()
        };
        for item in before.topics.diff(&after.topics) {
            match item {
                DiffItem::Add(_, topic) => delta.changed_topics.push(TopicDelta::created(topic)),
                DiffItem::Remove(name, topic) => {
                    delta.removed_topics.push((name.clone(), topic.topic_id));
                }
                DiffItem::Update {
                    old: (name, old),
                    new: (_, new),
                } => {
                    if old.topic_id != new.topic_id {
                        delta.removed_topics.push((name.clone(), old.topic_id));
                        delta.changed_topics.push(TopicDelta::created(new));
                    } else {
                        delta.changed_topics.push(TopicDelta::updated(old, new));
                    }
                }
            }
        }
        delta
    }

    /// Whether nothing a broker acts on changed.
    pub fn is_empty(&self) -> bool {
        self.removed_topics.is_empty()
            && self.changed_topics.is_empty()
            && !self.brokers_changed
            && !self.broker_configs_changed
    }
}

impl TopicDelta {
    fn created(topic: &TopicImage) -> TopicDelta {
        TopicDelta {
            name: topic.name.clone(),
            created: true,
            configs_changed: !topic.configs.is_empty(),
            partitions: topic.partitions.keys().copied().collect(),
            removed_partitions: Vec::new(),
        }
    }

    fn updated(old: &TopicImage, new: &TopicImage) -> TopicDelta {
        let mut delta = TopicDelta {
            name: new.name.clone(),
            created: false,
            configs_changed: old.configs != new.configs,
            partitions: Vec::new(),
            removed_partitions: Vec::new(),
        };
        for item in old.partitions.diff(&new.partitions) {
            match item {
                DiffItem::Add(index, _)
                | DiffItem::Update {
                    new: (index, _), ..
                } => delta.partitions.push(*index),
                DiffItem::Remove(index, _) => delta.removed_partitions.push(*index),
            }
        }
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ConfigResource, Endpoint, MetadataRecord};

    fn topic(name: &str, id: u128) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.into(),
            topic_id: TopicId(id),
        }
    }

    fn partition(id: u128, partition: i32, leader: i32) -> MetadataRecord {
        MetadataRecord::Partition {
            topic_id: TopicId(id),
            partition,
            replicas: vec![1, 2],
            isr: vec![1, 2],
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            removing_replicas: Vec::new(),
            adding_replicas: Vec::new(),
        }
    }

    fn isr_change(id: u128, partition: i32, isr: Vec<i32>) -> MetadataRecord {
        MetadataRecord::PartitionChange {
            topic_id: TopicId(id),
            partition,
            leader: None,
            isr: Some(isr),
            replicas: None,
            removing_replicas: None,
            adding_replicas: None,
        }
    }

    /// 50 topics × 200 partitions: big enough that the maps have many nodes to share.
    fn cluster() -> MetadataImage {
        let mut image = MetadataImage::default();
        image.replay(&MetadataRecord::RegisterBroker {
            broker_id: 1,
            incarnation_id: 1,
            broker_epoch: 1,
            endpoints: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9092,
            }],
            rack: None,
            fenced: false,
        });
        for t in 0..50u128 {
            image.replay(&topic(&format!("topic-{t:02}"), 100 + t));
            for p in 0..200 {
                image.replay(&partition(100 + t, p, 1));
            }
        }
        image
    }

    #[test]
    fn an_image_compared_with_itself_or_an_unchanged_clone_has_no_changes() {
        let image = cluster();
        assert!(ImageDelta::between(&image, &image).is_empty());
        let mut clone = image.clone();
        clone.replay_batch(&[]);
        assert!(ImageDelta::between(&image, &clone).is_empty());
    }

    #[test]
    fn partition_changes_name_only_the_partitions_that_changed() {
        let before = cluster();
        let mut after = before.clone();
        after.replay_batch(&[
            isr_change(107, 3, vec![1]),
            isr_change(107, 150, vec![1]),
            isr_change(142, 0, vec![2]),
            // A change that ends where it started still bumps the partition epoch.
            isr_change(120, 9, vec![1, 2]),
        ]);
        let delta = ImageDelta::between(&before, &after);
        assert_eq!(
            delta,
            ImageDelta {
                changed_topics: vec![
                    TopicDelta {
                        name: "topic-07".into(),
                        partitions: vec![3, 150],
                        ..TopicDelta::default()
                    },
                    TopicDelta {
                        name: "topic-20".into(),
                        partitions: vec![9],
                        ..TopicDelta::default()
                    },
                    TopicDelta {
                        name: "topic-42".into(),
                        partitions: vec![0],
                        ..TopicDelta::default()
                    },
                ],
                ..ImageDelta::default()
            }
        );
    }

    #[test]
    fn created_deleted_and_recreated_topics_and_config_changes() {
        let before = cluster();
        let mut after = before.clone();
        after.replay_batch(&[
            MetadataRecord::RemoveTopic {
                topic_id: TopicId(103),
            },
            // topic-04 deleted and created again under a new id, with one partition.
            MetadataRecord::RemoveTopic {
                topic_id: TopicId(104),
            },
            topic("topic-04", 900),
            partition(900, 0, 1),
            topic("new", 901),
            partition(901, 0, 1),
            partition(901, 1, 1),
            MetadataRecord::Config {
                resource: ConfigResource::Topic("new".into()),
                name: "retention.ms".into(),
                value: Some("1000".into()),
            },
            MetadataRecord::Config {
                resource: ConfigResource::Topic("topic-05".into()),
                name: "retention.ms".into(),
                value: Some("1000".into()),
            },
            MetadataRecord::Config {
                resource: ConfigResource::BrokerDefault,
                name: "log.retention.ms".into(),
                value: Some("1000".into()),
            },
        ]);
        let delta = ImageDelta::between(&before, &after);
        assert_eq!(
            delta,
            ImageDelta {
                removed_topics: vec![
                    ("topic-03".into(), TopicId(103)),
                    ("topic-04".into(), TopicId(104)),
                ],
                changed_topics: vec![
                    TopicDelta {
                        name: "new".into(),
                        created: true,
                        configs_changed: true,
                        partitions: vec![0, 1],
                        removed_partitions: Vec::new(),
                    },
                    TopicDelta {
                        name: "topic-04".into(),
                        created: true,
                        configs_changed: false,
                        partitions: vec![0],
                        removed_partitions: Vec::new(),
                    },
                    TopicDelta {
                        name: "topic-05".into(),
                        configs_changed: true,
                        ..TopicDelta::default()
                    },
                ],
                brokers_changed: false,
                broker_configs_changed: true,
            }
        );
    }

    #[test]
    fn an_image_restored_from_a_snapshot_differs_from_an_empty_one_in_everything() {
        let image = cluster();
        let mut restored = MetadataImage::default();
        restored.replay_batch(&image.to_records());
        // Nothing shared, yet equal: no changes.
        assert!(ImageDelta::between(&image, &restored).is_empty());
        let delta = ImageDelta::between(&MetadataImage::default(), &restored);
        assert!(delta.brokers_changed);
        assert_eq!(delta.changed_topics.len(), 50);
        assert!(delta
            .changed_topics
            .iter()
            .all(|topic| topic.created && topic.partitions == (0..200).collect::<Vec<_>>()));
    }

    #[test]
    fn fencing_a_broker_is_a_broker_change() {
        let before = cluster();
        let mut after = before.clone();
        after.replay(&MetadataRecord::FenceBroker {
            broker_id: 1,
            broker_epoch: 1,
        });
        assert_eq!(
            ImageDelta::between(&before, &after),
            ImageDelta {
                brokers_changed: true,
                ..ImageDelta::default()
            }
        );
    }
}
