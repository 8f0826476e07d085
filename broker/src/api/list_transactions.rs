//! ListTransactions (v0–2, KIP-664): the transactional ids this broker coordinates, filtered by
//! state name, producer id, (v1) how long the open transaction has run and (v2, KIP-1152) a
//! regular expression the whole id must match (INVALID_REGULAR_EXPRESSION if it does not
//! compile, within a size bound). Unknown state names are echoed back as Kafka does.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
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
    let pattern = match body
        .transactional_id_pattern
        .as_deref()
        .filter(|pattern| !pattern.is_empty())
        .map(id_pattern)
        .transpose()
    {
        Ok(pattern) => pattern,
        Err(error) => return ListTransactionsResponse::default().with_error_code(error.code()),
    };
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
        let id_ok = pattern.as_ref().is_none_or(|pattern| pattern.is_match(&id));
        if state_ok && producer_ok && duration_ok && id_ok {
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

/// The compiled size a pattern may take (a pattern is a client's input).
const PATTERN_BYTES_MAX: usize = 1 << 20;

/// A transactional id pattern as Kafka applies it (`Pattern.matcher(id).matches()`: the whole id).
fn id_pattern(pattern: &str) -> Result<regex::Regex, ResponseError> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(PATTERN_BYTES_MAX)
        .build()
        .map_err(|_| ResponseError::InvalidRegularExpression)
}
