//! ListTransactions (v0–2, KIP-664): the transactional ids this broker coordinates, filtered by
//! state name, producer id, (v1) how long the open transaction has run and (v2, KIP-1152) a
//! regular expression the whole id must match (INVALID_REGULAR_EXPRESSION if it does not
//! compile, within a size bound). Unknown state names are echoed back as Kafka does.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::txn::state::TxnState;
use crate::txn::TransactionCoordinator;

pub async fn handle(
    txns: &TransactionCoordinator,
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
    for (id, meta) in txns.list().await {
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::list_transactions_response::TransactionState;
    use kafka_protocol::messages::{
        ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;

    use super::handle;
    use crate::txn::state::{TxnMetadata, TxnState};
    use crate::txn::testing::{coordinator, open_txn};
    use crate::txn::TransactionCoordinator;

    fn text(value: &str) -> StrBytes {
        StrBytes::from_string(value.to_string())
    }

    fn listed(id: &str, producer_id: i64, state: &str) -> TransactionState {
        TransactionState::default()
            .with_transactional_id(TransactionalId(text(id)))
            .with_producer_id(ProducerId(producer_id))
            .with_transaction_state(text(state))
    }

    /// `t-open` (producer 5, open since 1.234 s after the epoch) and `t-idle` (producer 6,
    /// nothing open).
    fn two_ids() -> TransactionCoordinator {
        let txns = coordinator();
        let idle = TxnMetadata {
            state: TxnState::Empty,
            ..TxnMetadata::new(6, 60_000, 1_000)
        };
        txns.install_partition(
            0,
            3,
            HashMap::from([
                ("t-open".to_string(), Some(open_txn())),
                ("t-idle".to_string(), Some(idle)),
                ("t-gone".to_string(), None),
            ]),
        );
        txns
    }

    #[tokio::test]
    async fn every_id_sorted_then_filtered_by_state_producer_and_duration() {
        let txns = two_ids();
        let open = listed("t-open", 5, "Ongoing");
        let idle = listed("t-idle", 6, "Empty");
        let list = |request| handle(&txns, request);
        assert_eq!(
            list(ListTransactionsRequest::default()).await,
            ListTransactionsResponse::default()
                .with_transaction_states(vec![idle.clone(), open.clone()])
        );
        let by_state = ListTransactionsRequest::default()
            .with_state_filters(vec![text("Ongoing"), text("Bogus")]);
        assert_eq!(
            list(by_state).await,
            ListTransactionsResponse::default()
                .with_unknown_state_filters(vec![text("Bogus")])
                .with_transaction_states(vec![open.clone()])
        );
        let by_producer =
            ListTransactionsRequest::default().with_producer_id_filters(vec![ProducerId(6)]);
        assert_eq!(
            list(by_producer).await,
            ListTransactionsResponse::default().with_transaction_states(vec![idle])
        );
        // Open for at least a second: only the transaction open since 1970.
        let by_duration = ListTransactionsRequest::default().with_duration_filter(1_000);
        assert_eq!(
            list(by_duration).await,
            ListTransactionsResponse::default().with_transaction_states(vec![open.clone()])
        );
        let by_pattern =
            ListTransactionsRequest::default().with_transactional_id_pattern(Some(text("t-o.*")));
        assert_eq!(
            list(by_pattern).await,
            ListTransactionsResponse::default().with_transaction_states(vec![open])
        );
        // The whole id must match.
        let partial =
            ListTransactionsRequest::default().with_transactional_id_pattern(Some(text("open")));
        assert_eq!(list(partial).await, ListTransactionsResponse::default());
    }

    #[tokio::test]
    async fn a_pattern_that_does_not_compile_is_refused() {
        let txns = two_ids();
        let request =
            ListTransactionsRequest::default().with_transactional_id_pattern(Some(text("t-(")));
        assert_eq!(
            handle(&txns, request).await,
            ListTransactionsResponse::default()
                .with_error_code(ResponseError::InvalidRegularExpression.code())
        );
    }
}
