//! InitProducerId (KIP-98). Without a transactional id: a fresh producer id at epoch 0, from the
//! block of ids this broker holds (see [`crate::producer_ids`]); as in Kafka, a producer that
//! names its old id and epoch (v3+, KIP-360) also gets a fresh id. With one: the transaction
//! coordinator's answer (the id's producer id with its epoch bumped; see [`crate::txn`]).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::broker::Broker;
use crate::producer_ids::ProducerIdError;

pub async fn handle(broker: &Arc<Broker>, body: InitProducerIdRequest) -> InitProducerIdResponse {
    let failed = |error: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if body
        .transactional_id
        .as_ref()
        .is_some_and(|id| id.is_empty())
    {
        // Kafka's TransactionCoordinator: null means idempotent only; empty is malformed.
        return failed(ResponseError::InvalidRequest);
    }
    if let Some(transactional_id) = &body.transactional_id {
        let expected =
            (body.producer_id.0 >= 0).then_some((body.producer_id.0, body.producer_epoch));
        return match broker
            .txns
            .init_producer_id(
                broker,
                transactional_id,
                body.transaction_timeout_ms,
                expected,
            )
            .await
        {
            Ok((producer_id, epoch)) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch),
            Err(error) => failed(error),
        };
    }
    match broker.producer_ids.generate(broker).await {
        Ok(producer_id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(0),
        Err(err) => {
            tracing::warn!("InitProducerId failed: {err}");
            failed(match err {
                // Kafka's answer while a broker waits for its next block: the client retries.
                ProducerIdError::Unavailable(_) => ResponseError::CoordinatorLoadInProgress,
                ProducerIdError::Refused(_) => ResponseError::UnknownServerError,
            })
        }
    }
}
