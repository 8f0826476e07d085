//! AddPartitionsToTxn (v0–3): a transactional producer names the partitions it is about to
//! write; they join its open transaction at the coordinator. Partitions of unknown topics get
//! UNKNOWN_TOPIC_OR_PARTITION and the rest OPERATION_NOT_ATTEMPTED, as in Kafka; otherwise
//! every partition gets the coordinator's answer.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use crate::broker::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    body: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let image = broker.image();
    let requested: Vec<(String, i32)> = body
        .v3_and_below_topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.to_string(), *p)))
        .collect();
    let unknown = |topic: &str, index: i32| {
        image
            .topic(topic)
            .is_none_or(|t| !t.partitions.contains_key(&index))
    };
    let any_unknown = requested.iter().any(|(t, p)| unknown(t, *p));
    let outcome = if any_unknown {
        None
    } else {
        Some(
            broker
                .txns
                .add_partitions(
                    broker,
                    &body.v3_and_below_transactional_id,
                    body.v3_and_below_producer_id.0,
                    body.v3_and_below_producer_epoch,
                    requested,
                )
                .await,
        )
    };
    let results = body
        .v3_and_below_topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|&index| {
                    let error = match &outcome {
                        None if unknown(&topic.name, index) => {
                            Some(ResponseError::UnknownTopicOrPartition)
                        }
                        None => Some(ResponseError::OperationNotAttempted),
                        Some(result) => result.err(),
                    };
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(index)
                        .with_partition_error_code(error.map_or(0, |e| e.code()))
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(topic.name.clone())
                .with_results_by_partition(partitions)
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}
