//! DescribeTransactions (KIP-664): a transactional id's state at its coordinator — state name,
//! timeout, start time, producer id and epoch, and the partitions of its open transaction.
//! NOT_COORDINATOR elsewhere, TRANSACTIONAL_ID_NOT_FOUND for an id never initialised.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::txn::TransactionCoordinator;

pub async fn handle(
    txns: &TransactionCoordinator,
    body: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(body.transactional_ids.len());
    for id in body.transactional_ids {
        let answer = TransactionState::default()
            .with_transactional_id(id.clone())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_start_time_ms(-1);
        let described = txns.describe(&id).await;
        states.push(match described {
            Err(error) => answer.with_error_code(error.code()),
            Ok(None) => answer.with_error_code(ResponseError::TransactionalIdNotFound.code()),
            Ok(Some(meta)) => {
                let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (topic, partition) in &meta.partitions {
                    topics.entry(topic.clone()).or_default().push(*partition);
                }
                answer
                    .with_transaction_state(StrBytes::from_static_str(meta.state.name()))
                    .with_transaction_timeout_ms(meta.timeout_ms)
                    .with_transaction_start_time_ms(meta.start_ms)
                    .with_producer_id(ProducerId(meta.producer_id))
                    .with_producer_epoch(meta.producer_epoch)
                    .with_topics(
                        topics
                            .into_iter()
                            .map(|(topic, partitions)| {
                                TopicData::default()
                                    .with_topic(TopicName(StrBytes::from_string(topic)))
                                    .with_partitions(partitions)
                            })
                            .collect(),
                    )
            }
        });
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
    use kafka_protocol::messages::{
        DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
        TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;

    use super::handle;
    use crate::txn::testing::{coordinator, open_txn};

    fn text(value: &str) -> StrBytes {
        StrBytes::from_string(value.to_string())
    }

    fn request(ids: &[&str]) -> DescribeTransactionsRequest {
        DescribeTransactionsRequest::default()
            .with_transactional_ids(ids.iter().map(|id| TransactionalId(text(id))).collect())
    }

    fn unanswered(id: &str, error: ResponseError) -> TransactionState {
        TransactionState::default()
            .with_transactional_id(TransactionalId(text(id)))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_start_time_ms(-1)
            .with_error_code(error.code())
    }

    #[tokio::test]
    async fn an_open_transaction_with_its_partitions_by_topic() {
        let txns = coordinator();
        txns.install_partition(
            0,
            3,
            HashMap::from([("t-open".to_string(), Some(open_txn()))]),
        );
        assert_eq!(
            handle(&txns, request(&["t-open", "t-never"])).await,
            DescribeTransactionsResponse::default().with_transaction_states(vec![
                TransactionState::default()
                    .with_transactional_id(TransactionalId(text("t-open")))
                    .with_transaction_state(text("Ongoing"))
                    .with_transaction_timeout_ms(60_000)
                    .with_transaction_start_time_ms(1_234)
                    .with_producer_id(ProducerId(5))
                    .with_producer_epoch(2)
                    .with_topics(vec![
                        TopicData::default()
                            .with_topic(TopicName(text("audit")))
                            .with_partitions(vec![0]),
                        TopicData::default()
                            .with_topic(TopicName(text("orders")))
                            .with_partitions(vec![0, 1]),
                    ]),
                unanswered("t-never", ResponseError::TransactionalIdNotFound),
            ])
        );
    }

    #[tokio::test]
    async fn ids_coordinated_elsewhere_are_not_coordinator() {
        let txns = coordinator();
        assert_eq!(
            handle(&txns, request(&["t-open"])).await,
            DescribeTransactionsResponse::default()
                .with_transaction_states(vec![unanswered("t-open", ResponseError::NotCoordinator)])
        );
    }
}
