//! Metadata records: the only way metadata changes. Each is stored inside a versioned envelope so a
//! newer Skald can still read what an older one wrote.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The record schema version this code writes. Readers accept every version up to it.
pub const RECORD_VERSION: u16 = 1;

/// A topic's unique id (Kafka's topic UUID), stable across renames of nothing and deletes of the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct TopicId(pub u128);

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl From<TopicId> for String {
    fn from(id: TopicId) -> String {
        id.to_string()
    }
}

impl TryFrom<String> for TopicId {
    type Error = std::num::ParseIntError;
    fn try_from(hex: String) -> Result<Self, Self::Error> {
        u128::from_str_radix(&hex, 16).map(TopicId)
    }
}

/// A listener a broker accepts clients on, as advertised to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// What a config record applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name")]
pub enum ConfigResource {
    Topic(String),
    /// One broker's dynamic configs (Kafka's BROKER resource named by the broker's id).
    Broker(i32),
    /// The cluster-wide default of every broker's dynamic configs (Kafka's BROKER resource with
    /// an empty name); a broker's own value wins over it.
    BrokerDefault,
}

/// One change to the cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// A broker (re-)registered; a new incarnation replaces the old registration. `broker_epoch`
    /// grows with every registration, so requests from an older incarnation can be told apart.
    RegisterBroker {
        broker_id: i32,
        incarnation_id: u64,
        #[serde(default)]
        broker_epoch: i64,
        endpoints: Vec<Endpoint>,
        rack: Option<String>,
        /// A fresh registration starts fenced (KRaft): it serves no partitions until unfenced.
        #[serde(default)]
        fenced: bool,
    },
    /// A broker missed its session or asked to stop: it leads nothing until unfenced.
    FenceBroker { broker_id: i32, broker_epoch: i64 },
    /// A registered broker caught up with the metadata and may lead partitions.
    UnfenceBroker { broker_id: i32, broker_epoch: i64 },
    /// A broker left the cluster for good.
    UnregisterBroker { broker_id: i32, broker_epoch: i64 },
    /// A topic was created. Its partitions follow as `Partition` records in the same batch.
    Topic { name: String, topic_id: TopicId },
    /// A partition was created, or its replicas, ISR or leader changed.
    Partition {
        topic_id: TopicId,
        partition: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        /// A reassignment in progress (Kafka's PartitionRecord `removingReplicas`): replicas
        /// that leave once it completes. Absent in records written before reassignments.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removing_replicas: Vec<i32>,
        /// Replicas a reassignment in progress adds (Kafka's `addingReplicas`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        adding_replicas: Vec<i32>,
    },
    /// Some of a partition's state changed (leader election, ISR change, reassignment): only the
    /// fields that are `Some` change. A new leader bumps the leader epoch; every change bumps the
    /// partition epoch (KRaft's PartitionChangeRecord).
    PartitionChange {
        topic_id: TopicId,
        partition: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leader: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        isr: Option<Vec<i32>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replicas: Option<Vec<i32>>,
        /// A reassignment starts (non-empty), ends or is cancelled (empty) — Kafka's
        /// PartitionChangeRecord `removingReplicas` / `addingReplicas`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        removing_replicas: Option<Vec<i32>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        adding_replicas: Option<Vec<i32>>,
    },
    /// A config was set (`value: Some`) or removed back to its default (`value: None`).
    Config {
        resource: ConfigResource,
        name: String,
        value: Option<String>,
    },
    /// A topic, with its partitions and configs, was deleted.
    RemoveTopic { topic_id: TopicId },
    /// A broker asked for a block of producer ids (Kafka's AllocateProducerIds). The block is
    /// chosen when the record *replays* — the next `PRODUCER_ID_BLOCK_SIZE` ids after every block
    /// before it — so two requests planned against the same image can never get the same ids.
    /// The broker finds its block in the image under its `request_id`.
    AllocateProducerIds {
        broker_id: i32,
        broker_epoch: i64,
        request_id: u64,
    },
    /// Snapshot form of the producer id state: the first id never handed out (Kafka's
    /// ProducerIdsRecord `nextProducerId`).
    ProducerIds { next_producer_id: i64 },
    /// Snapshot form of a broker's latest block.
    ProducerIdBlock {
        broker_id: i32,
        request_id: u64,
        first_producer_id: i64,
    },
}

/// A record as stored: the schema version travels with it.
///
/// Fields must not be `u128`/`i128` numbers: serde's `flatten` buffers values in a form that cannot
/// hold them, so such a record would fail to read back. 128-bit ids are stored as hex strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedRecord {
    pub version: u16,
    #[serde(flatten)]
    pub record: MetadataRecord,
}

impl From<MetadataRecord> for VersionedRecord {
    fn from(record: MetadataRecord) -> Self {
        VersionedRecord {
            version: RECORD_VERSION,
            record,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_stored_as_versioned_tagged_json() {
        let record = VersionedRecord::from(MetadataRecord::Topic {
            name: "orders".into(),
            topic_id: TopicId(0xabc),
        });
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"version":1,"type":"Topic","name":"orders","topic_id":"00000000000000000000000000000abc"}"#
        );
        assert_eq!(
            serde_json::from_str::<VersionedRecord>(&json).unwrap(),
            record
        );

        let config = VersionedRecord::from(MetadataRecord::Config {
            resource: ConfigResource::Topic("orders".into()),
            name: "retention.ms".into(),
            value: Some("1000".into()),
        });
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(
            serde_json::from_str::<VersionedRecord>(&json).unwrap(),
            config
        );

        let default = VersionedRecord::from(MetadataRecord::Config {
            resource: ConfigResource::BrokerDefault,
            name: "log.retention.ms".into(),
            value: None,
        });
        let json = serde_json::to_string(&default).unwrap();
        assert_eq!(
            json,
            r#"{"version":1,"type":"Config","resource":{"kind":"BrokerDefault"},"name":"log.retention.ms","value":null}"#
        );
        assert_eq!(
            serde_json::from_str::<VersionedRecord>(&json).unwrap(),
            default
        );
    }
}
