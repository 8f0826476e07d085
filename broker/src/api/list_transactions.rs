//! ListTransactions (v0–1, KIP-664): the transactional ids this broker coordinates, filtered by
//! state name, producer id and (v1) how long the open transaction has run. Unknown state names
//! are echoed back as Kafka does. (v2's id pattern is a Java regular expression; not served.)

use std::sync::Arc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::txn::state::TxnState;

pub async fn handle(
    broker: &Arc<Broker>,
    body: ListTransactionsRequest,
) -> ListTransactionsResponse {
    const STATES: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];
    let unknown: Vec<StrBytes> = body
        .state_filters
        .iter()
        .filter(|name| !STATES.iter().any(|s| s.name() == name.as_str()))
        .cloned()
        .collect();
    let now_ms = crate::txn::now_ms();
    let mut states = Vec::new();
    for (id, meta) in broker.txns.list().await {
        let state_ok = body.state_filters.is_empty()
            || body
                .state_filters
                .iter()
                .any(|name| name.as_str() == meta.state.name());
        let producer_ok = body.producer_id_filters.is_empty()
            || body
                .producer_id_filters
                .contains(&ProducerId(meta.producer_id));
        let duration_ok = body.duration_filter < 0
            || (meta.start_ms >= 0 && now_ms - meta.start_ms >= body.duration_filter);
        if state_ok && producer_ok && duration_ok {
            states.push(
                TransactionState::default()
                    .with_transactional_id(TransactionalId(StrBytes::from_string(id)))
                    .with_producer_id(ProducerId(meta.producer_id))
                    .with_transaction_state(StrBytes::from_static_str(meta.state.name())),
            );
        }
    }
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}
