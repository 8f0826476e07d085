//! Writing a transaction's markers to its partitions' leaders (Kafka's
//! `TransactionMarkerChannelManager`): in-process for the partitions this broker leads, with a
//! WriteTxnMarkers request to every other leader (over the broker's kept connection to it,
//! [`crate::peers`]), retried through leader changes until every
//! partition has its marker or the deadline passes (the coordinator's tick tries again later).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use super::state::TxnMetadata;
use crate::api::write_txn_markers::{write_and_wait, MarkerFor};
use crate::broker::Broker;

/// How long one attempt to end a transaction keeps trying its markers.
const MARKERS_DEADLINE: Duration = Duration::from_secs(60);
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// How long connecting to a partition leader may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes the COMMIT or ABORT marker of `txn` to every partition it touched. A partition whose
/// topic is gone needs none; a coordinator-fenced answer means another coordinator took over
/// (NOT_COORDINATOR).
pub async fn write_all(
    broker: &Broker,
    txn: &TxnMetadata,
    commit: bool,
    coordinator_epoch: i32,
) -> Result<(), ResponseError> {
    let marker = MarkerFor {
        producer_id: txn.producer_id,
        producer_epoch: txn.producer_epoch,
        commit,
        coordinator_epoch,
    };
    let mut left: BTreeSet<(String, i32)> = txn.partitions.clone();
    let deadline = Instant::now() + MARKERS_DEADLINE;
    while !left.is_empty() {
        let image = broker.image();
        // By leader; partitions of deleted topics are done.
        let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
        left.retain(|(topic, index)| {
            let Some(placement) = image.topic(topic).and_then(|t| t.partitions.get(index)) else {
                return false;
            };
            by_leader
                .entry(placement.leader)
                .or_default()
                .push((topic.clone(), *index));
            true
        });
        for (leader, partitions) in by_leader {
            if leader == broker.config.node_id {
                for (topic, index) in partitions {
                    match write_and_wait(broker, &image, &topic, index, marker).await {
                        Ok(()) | Err(ResponseError::InvalidProducerEpoch) => {
                            left.remove(&(topic, index));
                        }
                        Err(ResponseError::TransactionCoordinatorFenced) => {
                            return Err(ResponseError::NotCoordinator)
                        }
                        Err(error) => {
                            tracing::debug!(topic, index, "marker not written yet: {error:?}")
                        }
                    }
                }
            } else if leader >= 0 {
                match write_remote(broker, leader, &partitions, marker).await {
                    Ok(results) => {
                        for ((topic, index), error) in partitions.into_iter().zip(results) {
                            match error {
                                None | Some(ResponseError::InvalidProducerEpoch) => {
                                    left.remove(&(topic, index));
                                }
                                Some(ResponseError::TransactionCoordinatorFenced) => {
                                    return Err(ResponseError::NotCoordinator)
                                }
                                Some(error) => tracing::debug!(
                                    topic,
                                    index,
                                    leader,
                                    "marker not written yet: {error:?}"
                                ),
                            }
                        }
                    }
                    Err(err) => tracing::debug!(leader, "cannot send markers: {err}"),
                }
            }
        }
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                producer_id = txn.producer_id,
                partitions = left.len(),
                "transaction markers not all written yet; retrying later"
            );
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        tokio::time::sleep(RETRY_BACKOFF).await;
    }
    Ok(())
}

/// One WriteTxnMarkers to broker `leader` for `partitions`; each partition's error.
async fn write_remote(
    broker: &Broker,
    leader: i32,
    partitions: &[(String, i32)],
    marker: MarkerFor,
) -> Result<Vec<Option<ResponseError>>, String> {
    let image = broker.image();
    let endpoint = image
        .brokers
        .get(&leader)
        .and_then(|b| b.endpoints.first())
        .ok_or_else(|| format!("broker {leader} has no endpoint"))?;
    let address = format!("{}:{}", endpoint.host, endpoint.port);
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, index) in partitions {
        by_topic.entry(topic).or_default().push(*index);
    }
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(marker.producer_id))
            .with_producer_epoch(marker.producer_epoch)
            .with_transaction_result(marker.commit)
            .with_coordinator_epoch(marker.coordinator_epoch)
            .with_topics(
                by_topic
                    .iter()
                    .map(|(topic, indexes)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(StrBytes::from_string((*topic).to_owned())))
                            .with_partition_indexes(indexes.clone())
                    })
                    .collect(),
            )]);
    let mut connection = broker.peers.take(leader, &address, CONNECT_TIMEOUT).await?;
    let response = tokio::time::timeout(MARKERS_DEADLINE, connection.send(request))
        .await
        .map_err(|_| "WriteTxnMarkers timed out".to_string())?
        .map_err(|err| err.to_string())?;
    broker.peers.give_back(leader, connection).await;
    let answered = response
        .markers
        .iter()
        .flat_map(|m| &m.topics)
        .flat_map(|topic| {
            topic.partitions.iter().map(move |partition| {
                (
                    (topic.name.to_string(), partition.partition_index),
                    partition.error_code,
                )
            })
        });
    Ok(super::partition_errors(partitions, answered))
}
