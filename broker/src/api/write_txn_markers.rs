//! WriteTxnMarkers (v1): a transaction coordinator asks the leaders of a transaction's
//! partitions to end it — a COMMIT or ABORT control batch appended as the producer's, after
//! Kafka's checks (a marker from an older producer epoch or coordinator epoch is fenced), and
//! answered once the ISR has it, as Kafka appends markers with acks=all. A read_committed reader
//! then moves past the transaction, and an ABORT enters the partition's aborted transaction index.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use skald_controller::names::CONSUMER_OFFSETS_TOPIC;
use skald_storage::ProducerError;

use crate::broker::Broker;
use crate::replica_manager::{LeaderAppend, LeaderAppendRefused};
use crate::replication::ReplicationWait;

/// How long a marker waits for the ISR (Kafka's coordinator sends markers with the broker's
/// `request.timeout.ms`, 30 s by default).
const MARKER_REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn handle(broker: &Arc<Broker>, body: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let image = broker.image();
    let mut markers = Vec::with_capacity(body.markers.len());
    for marker in body.markers {
        let mut topics = Vec::with_capacity(marker.topics.len());
        for topic in marker.topics {
            let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
            for &index in &topic.partition_indexes {
                let error = write_and_wait(
                    broker,
                    &image,
                    &topic.name,
                    index,
                    MarkerFor {
                        producer_id: marker.producer_id.0,
                        producer_epoch: marker.producer_epoch,
                        commit: marker.transaction_result,
                        coordinator_epoch: marker.coordinator_epoch,
                    },
                )
                .await
                .err();
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(error.map_or(0, |e| e.code())),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(topic.name)
                    .with_partitions(partitions),
            );
        }
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(marker.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(markers)
}

/// Which transaction a marker ends, and how.
#[derive(Debug, Clone, Copy)]
pub struct MarkerFor {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// Writes one marker as this partition's leader and waits for the ISR. In a
/// `__consumer_offsets` partition the marker decides the transaction's offsets as it is
/// appended: committed ones become the group's, aborted ones are dropped.
pub async fn write_and_wait(
    broker: &Broker,
    image: &skald_controller::MetadataImage,
    topic: &str,
    index: i32,
    marker: MarkerFor,
) -> Result<(), ResponseError> {
    let wait = tokio::task::block_in_place(|| {
        write_marker(
            broker,
            image,
            topic,
            index,
            marker.producer_id,
            marker.producer_epoch,
            marker.commit,
            marker.coordinator_epoch,
        )
    })?;
    wait.until_replicated(tokio::time::Instant::now() + MARKER_REPLICATION_TIMEOUT)
        .await
}

/// Appends one marker as the partition's leader; the wait for its replication.
#[allow(clippy::too_many_arguments)]
fn write_marker(
    broker: &Broker,
    image: &skald_controller::MetadataImage,
    topic: &str,
    index: i32,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
) -> Result<ReplicationWait, ResponseError> {
    let (partition, _) = broker.replicas.serving(image, topic, index, -1)?;
    let min_insync_replicas = partition.settings().min_insync_replicas;
    let offsets_partition = topic == CONSUMER_OFFSETS_TOPIC;
    let mut decided = Vec::new();
    let appended = broker.replicas.append_to_leader(
        &partition,
        Some(min_insync_replicas),
        |log, leader_epoch| {
            let appended = log.append_txn_marker(
                producer_id,
                producer_epoch,
                commit,
                coordinator_epoch,
                leader_epoch,
            );
            // Under the log lock, in log order: this marker decides the transactional offsets
            // appended before it (Kafka's `handleTxnCompletion`).
            if offsets_partition && appended.is_ok() {
                decided = broker.groups.decide_txn(index, producer_id, commit);
            }
            appended
        },
    );
    broker.groups.apply_txn_offsets(decided);
    let LeaderAppend {
        appended,
        leader_epoch,
        ..
    } = appended.map_err(|refused| match refused {
        LeaderAppendRefused::NotLeader => ResponseError::NotLeaderOrFollower,
        LeaderAppendRefused::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        LeaderAppendRefused::Deleted => ResponseError::UnknownTopicOrPartition,
    })?;
    match appended {
        Ok(info) => Ok(ReplicationWait {
            partition,
            leader_epoch,
            required_offset: info.last_offset + 1,
            min_insync_replicas,
        }),
        Err(skald_storage::Error::Producer(refused)) => {
            tracing::info!(
                topic,
                partition = index,
                "transaction marker refused: {refused}"
            );
            Err(match refused {
                ProducerError::CoordinatorFenced { .. } => {
                    ResponseError::TransactionCoordinatorFenced
                }
                // Kafka answers a marker from a fenced producer epoch so.
                _ => ResponseError::InvalidProducerEpoch,
            })
        }
        Err(err) => {
            tracing::error!(
                topic,
                partition = index,
                "transaction marker append failed: {err}"
            );
            broker.replicas.on_storage_error(&partition, &err);
            Err(ResponseError::KafkaStorageError)
        }
    }
}
