//! A partition leader's side of KIP-890 (Kafka's `AddPartitionsToTxnManager`): before it appends
//! a transaction's first batch to a partition, the leader asks the transaction's coordinator
//! whether the partition is in the producer's open transaction (AddPartitionsToTxn v4+ with
//! `verify_only`). A producer whose AddPartitionsToTxn never landed, or a batch that arrives after
//! its transaction ended, then gets an error instead of opening a transaction nobody will ever
//! end (one that would hold every partition's last stable offset back for good).
//!
//! The coordinator is asked in process when this broker is it; otherwise over the broker's kept
//! connection to the coordinator's broker ([`crate::peers`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, ProducerId, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use skald_controller::names::TRANSACTION_STATE_TOPIC;

use crate::broker::Broker;

/// How long a leader waits for a coordinator's answer before answering the producer with a
/// retriable error.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks transactions' coordinators (over the broker's peer connections, [`crate::peers`]).
#[derive(Debug, Default)]
pub struct TxnVerifier;

impl TxnVerifier {
    /// Whether each of `partitions` is in `transactional_id`'s open transaction of this producer
    /// id and epoch, as its coordinator answers — or, with `add` (transactions version 2, where
    /// producers name no partitions themselves), adds them to it; each error already translated
    /// for a Produce response ([`for_produce`]).
    pub async fn verify(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
        add: bool,
    ) -> Vec<Option<ResponseError>> {
        let answers = if broker.txns.coordinator_epoch(transactional_id).is_ok() {
            if add {
                let added = broker
                    .txns
                    .add_partitions(
                        broker,
                        transactional_id,
                        producer_id,
                        producer_epoch,
                        partitions.to_vec(),
                    )
                    .await;
                vec![added.err(); partitions.len()]
            } else {
                broker
                    .txns
                    .verify(transactional_id, producer_id, producer_epoch, partitions)
                    .await
            }
        } else {
            match self
                .ask_remote(
                    broker,
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    partitions,
                    add,
                )
                .await
            {
                Ok(answers) => answers,
                Err(error) => vec![Some(error); partitions.len()],
            }
        };
        answers
            .into_iter()
            .map(|error| error.map(|e| for_produce(e, add)))
            .collect()
    }

    async fn ask_remote(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
        add: bool,
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let image = broker.image();
        let index = broker.txns.partition_for(transactional_id);
        let coordinator = image
            .topic(TRANSACTION_STATE_TOPIC)
            .and_then(|topic| topic.partitions.get(&index))
            .map(|placement| placement.leader)
            .filter(|leader| *leader >= 0)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let address = image
            .brokers
            .get(&coordinator)
            .and_then(|b| b.endpoints.first())
            .map(|endpoint| format!("{}:{}", endpoint.host, endpoint.port))
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, index) in partitions {
            by_topic.entry(topic).or_default().push(*index);
        }
        let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(
                    transactional_id.to_owned(),
                )))
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(producer_epoch)
                .with_verify_only(!add)
                .with_topics(
                    by_topic
                        .iter()
                        .map(|(topic, indexes)| {
                            AddPartitionsToTxnTopic::default()
                                .with_name(TopicName(StrBytes::from_string((*topic).to_owned())))
                                .with_partitions(indexes.clone())
                        })
                        .collect(),
                ),
        ]);
        let mut connection = broker
            .peers
            .take(coordinator, &address, VERIFY_TIMEOUT)
            .await
            .map_err(|err| {
                tracing::debug!(
                    coordinator,
                    "cannot reach the transaction coordinator: {err}"
                );
                ResponseError::NetworkException
            })?;
        // The batched form (v4+) is the only one with `verify_only`. A coordinator without it
        // (an older broker mid-upgrade) cannot verify — skipped, as Kafka does — nor add for
        // transactions version 2, which must then wait for it (a partition never added would
        // never get its marker).
        if connection
            .version_for::<AddPartitionsToTxnRequest>()
            .is_ok_and(|version| version < 4)
        {
            broker.peers.give_back(coordinator, connection).await;
            if add {
                return Err(ResponseError::CoordinatorNotAvailable);
            }
            tracing::warn!(
                coordinator,
                "the coordinator cannot verify transactions; skipped"
            );
            return Ok(vec![None; partitions.len()]);
        }
        let response = match tokio::time::timeout(VERIFY_TIMEOUT, connection.send(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => {
                tracing::debug!(coordinator, "transaction verification failed: {err}");
                return Err(ResponseError::NetworkException);
            }
            Err(_) => return Err(ResponseError::NetworkException),
        };
        broker.peers.give_back(coordinator, connection).await;
        if response.error_code != 0 {
            return Err(ResponseError::try_from_code(response.error_code)
                .unwrap_or(ResponseError::UnknownServerError));
        }
        let answered = response
            .results_by_transaction
            .iter()
            .filter(|t| t.transactional_id.as_str() == transactional_id)
            .flat_map(|result| &result.topic_results)
            .flat_map(|topic| {
                topic.results_by_partition.iter().map(move |partition| {
                    (
                        (topic.name.to_string(), partition.partition_index),
                        partition.partition_error_code,
                    )
                })
            });
        Ok(super::partition_errors(partitions, answered))
    }
}

/// A coordinator's verification error as a Produce response carries it (Kafka's translation):
/// producers handle INVALID_PRODUCER_EPOCH, not PRODUCER_FENCED; an unverifiable partition
/// (coordinator moving, loading or busy ending the transaction) becomes NOT_ENOUGH_REPLICAS,
/// which every client retries without a metadata refresh — except CONCURRENT_TRANSACTIONS when
/// adding (transactions version 2), which those producers handle themselves.
pub fn for_produce(error: ResponseError, add: bool) -> ResponseError {
    match error {
        ResponseError::ProducerFenced => ResponseError::InvalidProducerEpoch,
        ResponseError::ConcurrentTransactions if add => error,
        ResponseError::NetworkException
        | ResponseError::CoordinatorLoadInProgress
        | ResponseError::CoordinatorNotAvailable
        | ResponseError::NotCoordinator
        | ResponseError::ConcurrentTransactions => ResponseError::NotEnoughReplicas,
        other => other,
    }
}
