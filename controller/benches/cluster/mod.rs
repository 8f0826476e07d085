//! The cluster the controller benches build: `BROKERS` brokers (1..=6) and topics of
//! replication factor 3 striped over them, as the records a controller would have committed.

use skald_controller::{Endpoint, MetadataRecord, TopicId};

pub const BROKERS: i32 = 6;
pub const REPLICATION_FACTOR: i32 = 3;

/// Topic `topic`'s id: random-looking 128 bits, as `random_topic_id` makes (the hex form is
/// fixed-width).
pub fn topic_id(topic: usize) -> TopicId {
    TopicId(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835u128.wrapping_mul(topic as u128 + 1))
}

/// The records of a cluster of `topics` topics of `partitions_per_topic` partitions: the
/// brokers' registrations in the first batch, then one batch per topic.
pub fn cluster_batches(topics: usize, partitions_per_topic: i32) -> Vec<Vec<MetadataRecord>> {
    let mut batches = vec![(1..=BROKERS)
        .map(|broker_id| MetadataRecord::RegisterBroker {
            broker_id,
            incarnation_id: 0x5eed_0000 + broker_id as u64,
            broker_epoch: i64::from(broker_id),
            endpoints: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9092 + broker_id as u16,
            }],
            rack: None,
            fenced: false,
        })
        .collect::<Vec<_>>()];
    for topic in 0..topics {
        let topic_id = topic_id(topic);
        let mut batch = vec![MetadataRecord::Topic {
            name: format!("topic-{topic:05}"),
            topic_id,
        }];
        for partition in 0..partitions_per_topic {
            let first = (topic as i32 + partition) % BROKERS;
            let replicas: Vec<i32> = (0..REPLICATION_FACTOR)
                .map(|i| (first + i) % BROKERS + 1)
                .collect();
            batch.push(MetadataRecord::Partition {
                topic_id,
                partition,
                leader: replicas[0],
                isr: replicas.clone(),
                replicas,
                leader_epoch: 0,
                partition_epoch: 0,
                removing_replicas: Vec::new(),
                adding_replicas: Vec::new(),
            });
        }
        batches.push(batch);
    }
    batches
}
