//! Helpers for the replication tests: a partition as a broker's Metadata shows it, produces with
//! explicit acks over the raw wire client, a node's log end offset from its metrics, and the
//! records a fetch returned.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, MetadataResponse, ProduceRequest, ProduceResponse};
use kafka_protocol::records::RecordBatchDecoder;

use super::cluster::TestCluster;
use super::poll_until;
use super::wire::{topic_name, RawConn};

/// How long replication may take to reach a state the tests wait for (elections, ISR changes,
/// followers catching up).
pub const REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);
/// The produce timeout of [`produce_with_acks`].
pub const PRODUCE_TIMEOUT_MS: i32 = 10_000;

/// One partition as a broker's Metadata lists it: (leader, leader epoch, replicas, ISR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    /// Sorted.
    pub isr: Vec<i32>,
}

pub fn partition_view(
    metadata: &MetadataResponse,
    topic: &str,
    index: i32,
) -> Option<PartitionView> {
    let topic = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|name| name.as_str() == topic))?;
    let p = topic
        .partitions
        .iter()
        .find(|p| p.partition_index == index)?;
    let mut isr: Vec<i32> = p.isr_nodes.iter().map(|id| id.0).collect();
    isr.sort_unstable();
    Some(PartitionView {
        leader: p.leader_id.0,
        leader_epoch: p.leader_epoch,
        replicas: p.replica_nodes.iter().map(|id| id.0).collect(),
        isr,
    })
}

/// Partition 0 of `topic` as broker `via` sees it now (through its real listener), if it answers.
pub fn view_on(cluster: &TestCluster, via: i32, topic: &str) -> Option<PartitionView> {
    let mut conn = RawConn::try_connect(cluster.node(via).kafka_addr())?;
    partition_view(&conn.metadata(Some(&[topic]), false), topic, 0)
}

/// Polls broker `via` until partition 0 of `topic` satisfies `accept`.
pub fn wait_for_partition(
    cluster: &TestCluster,
    via: i32,
    topic: &str,
    what: &str,
    accept: impl Fn(&PartitionView) -> bool,
) -> PartitionView {
    poll_until(what, REPLICATION_TIMEOUT, || {
        view_on(cluster, via, topic).filter(|view| accept(view))
    })
}

/// A produce of one batch to partition 0 with the given acks and a [`PRODUCE_TIMEOUT_MS`]
/// timeout; the partition's (error code, base offset).
pub fn produce_with_acks(conn: &mut RawConn, topic: &str, acks: i16, records: Bytes) -> (i16, i64) {
    produce_with_timeout(conn, topic, acks, PRODUCE_TIMEOUT_MS, records)
}

/// As [`produce_with_acks`], with the request's `timeout_ms` given.
pub fn produce_with_timeout(
    conn: &mut RawConn,
    topic: &str,
    acks: i16,
    timeout_ms: i32,
    records: Bytes,
) -> (i16, i64) {
    let version = conn.negotiate(ApiKey::Produce, 9);
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let response: ProduceResponse = conn.request(&request, version);
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// As [`produce_with_acks`], retrying while the leader has yet to apply the metadata that made
/// it leader (UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER), as clients do.
pub fn produce_once_served(
    conn: &mut RawConn,
    topic: &str,
    acks: i16,
    records: Bytes,
) -> (i16, i64) {
    poll_until(
        "the leader to serve the partition",
        REPLICATION_TIMEOUT,
        || {
            let produced = produce_with_acks(conn, topic, acks, records.clone());
            (!matches!(produced.0, 3 | 6)).then_some(produced)
        },
    )
}

/// `skald_log_end_offset` of partition 0 of `topic` on one node.
pub fn log_end_offset(cluster: &TestCluster, node: i32, topic: &str) -> Option<i64> {
    let series = format!(r#"skald_log_end_offset{{partition="0",topic="{topic}"}}"#);
    super::metric_sample(cluster.node(node).metrics_addr(), &series).map(|value| value as i64)
}

/// One record as a log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: i64,
    /// The leader epoch stamped on its batch: the epoch of the leader that appended it.
    pub leader_epoch: i32,
    pub key: String,
    pub value: String,
}

/// Every record in fetched record bytes (v2 batches), in order.
pub fn stored_records(records: &Bytes) -> Vec<StoredRecord> {
    let mut buf = records.clone();
    RecordBatchDecoder::decode_all(&mut buf)
        .expect("decode fetched record batches")
        .into_iter()
        .flat_map(|set| set.records)
        .map(|record| {
            let text = |bytes: Option<Bytes>| {
                String::from_utf8(bytes.unwrap_or_default().to_vec()).expect("UTF-8 test record")
            };
            StoredRecord {
                offset: record.offset,
                leader_epoch: record.partition_leader_epoch,
                key: text(record.key),
                value: text(record.value),
            }
        })
        .collect()
}
