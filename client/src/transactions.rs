//! Transactional ids as their coordinators describe them (ListTransactions on every broker,
//! DescribeTransactions at the id's coordinator), as `skald transactions` prints them.

use kafka_protocol::messages::{
    DescribeTransactionsRequest, ListTransactionsRequest, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::Client;
use crate::error::{check, Result};

/// Kafka's FindCoordinator key type of a transactional id.
const KEY_TYPE_TRANSACTION: i8 = 1;

/// One transactional id in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionListing {
    pub transactional_id: String,
    pub coordinator: i32,
    pub producer_id: i64,
    pub state: String,
}

/// One transactional id's state at its coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionDescription {
    pub transactional_id: String,
    pub coordinator: i32,
    pub state: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    /// -1 when no transaction is open.
    pub start_time_ms: i64,
    /// The open transaction's partitions, sorted.
    pub partitions: Vec<(String, i32)>,
}

impl Client {
    /// Every transactional id in the cluster (each broker lists those it coordinates), sorted.
    pub async fn list_transactions(&mut self) -> Result<Vec<TransactionListing>> {
        self.metadata(Some(&[])).await?;
        let node_ids: Vec<i32> = self.brokers().keys().copied().collect();
        let mut listed = Vec::new();
        for node_id in node_ids {
            let response = self
                .broker_connection(node_id)
                .await?
                .send(ListTransactionsRequest::default().with_duration_filter(-1))
                .await?;
            check(
                response.error_code,
                || format!("list transactions on broker {node_id}"),
                None,
            )?;
            listed.extend(
                response
                    .transaction_states
                    .into_iter()
                    .map(|t| TransactionListing {
                        transactional_id: t.transactional_id.to_string(),
                        coordinator: node_id,
                        producer_id: t.producer_id.0,
                        state: t.transaction_state.to_string(),
                    }),
            );
        }
        listed.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(listed)
    }

    /// `transactional_id`'s state at its coordinator.
    pub async fn describe_transaction(
        &mut self,
        transactional_id: &str,
    ) -> Result<TransactionDescription> {
        let coordinator = self
            .find_coordinator_of(KEY_TYPE_TRANSACTION, transactional_id)
            .await?;
        self.metadata(Some(&[])).await?;
        let response = self
            .broker_connection(coordinator.node_id)
            .await?
            .send(
                DescribeTransactionsRequest::default().with_transactional_ids(vec![
                    TransactionalId(StrBytes::from_string(transactional_id.to_owned())),
                ]),
            )
            .await?;
        let Some(state) = response.transaction_states.into_iter().next() else {
            return Err(crate::error::Error::Protocol {
                addr: coordinator.addr(),
                detail: format!("DescribeTransactions has no result for {transactional_id}"),
            });
        };
        check(
            state.error_code,
            || format!("describe transaction {transactional_id}"),
            None,
        )?;
        let mut partitions: Vec<(String, i32)> = state
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.to_string(), *p)))
            .collect();
        partitions.sort();
        Ok(TransactionDescription {
            transactional_id: transactional_id.to_owned(),
            coordinator: coordinator.node_id,
            state: state.transaction_state.to_string(),
            producer_id: state.producer_id.0,
            producer_epoch: state.producer_epoch,
            timeout_ms: state.transaction_timeout_ms,
            start_time_ms: state.transaction_start_time_ms,
            partitions,
        })
    }
}
