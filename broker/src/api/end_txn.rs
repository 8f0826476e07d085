//! EndTxn: the producer commits or aborts its open transaction; answered once every marker is
//! written and the transaction is complete at the coordinator.

use std::sync::Arc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use crate::broker::Broker;

pub async fn handle(broker: &Arc<Broker>, body: EndTxnRequest) -> EndTxnResponse {
    let outcome = broker
        .txns
        .end_txn(
            broker,
            &body.transactional_id,
            body.producer_id.0,
            body.producer_epoch,
            body.committed,
        )
        .await;
    EndTxnResponse::default()
        .with_error_code(outcome.err().map_or(0, |e| e.code()))
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}
