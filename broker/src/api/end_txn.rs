//! EndTxn: the producer commits or aborts its open transaction; answered once every marker is
//! written and the transaction is complete at the coordinator. v5 is transactions version 2.

use std::sync::Arc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use crate::broker::Broker;

/// First version of transactions version 2 (KIP-890): the epoch bumps at every EndTxn and the
/// answer carries the producer id and epoch to go on with.
const TRANSACTIONS_V2_SINCE: i16 = 5;

pub async fn handle(broker: &Arc<Broker>, body: EndTxnRequest, version: i16) -> EndTxnResponse {
    let outcome = broker
        .txns
        .end_txn(
            broker,
            &body.transactional_id,
            body.producer_id.0,
            body.producer_epoch,
            body.committed,
            version >= TRANSACTIONS_V2_SINCE,
        )
        .await;
    let (error, (producer_id, producer_epoch)) = match outcome {
        Ok(next) => (0, next),
        Err(error) => (error.code(), (-1, -1)),
    };
    EndTxnResponse::default()
        .with_error_code(error)
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(producer_epoch)
}
