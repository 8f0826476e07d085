//! UnregisterBroker: a broker that left the cluster for good stops being registered (Kafka's
//! `Admin.unregisterBroker`), decided by the active controller. The broker is fenced first, so it
//! leaves every ISR and leads nothing; a broker still running registers again with its next
//! heartbeat, as with Kafka.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{UnregisterBrokerRequest, UnregisterBrokerResponse};
use kafka_protocol::protocol::StrBytes;
use skald_controller::{ControllerOp, ControllerReply, UnregisterBrokerError};

use crate::broker::Broker;
use crate::metadata::ControlError;

pub async fn handle(
    broker: &Arc<Broker>,
    request: UnregisterBrokerRequest,
) -> UnregisterBrokerResponse {
    let broker_id = request.broker_id.0;
    let op = ControllerOp::UnregisterBroker { broker_id };
    let (code, message) = match broker.control(op).await {
        Ok(ControllerReply::UnregisterBroker(Ok(()))) => {
            tracing::info!(broker_id, "unregistered a broker");
            (0, None)
        }
        Ok(ControllerReply::UnregisterBroker(Err(
            err @ UnregisterBrokerError::NotRegistered(_),
        ))) => (
            ResponseError::BrokerIdNotRegistered.code(),
            Some(err.to_string()),
        ),
        Ok(_) => {
            let err = ControlError::Unavailable("the controller answered another operation".into());
            (err.code(), Some(err.to_string()))
        }
        Err(err) => {
            tracing::warn!(broker_id, "unregistering a broker failed: {err}");
            (err.code(), Some(err.to_string()))
        }
    };
    UnregisterBrokerResponse::default()
        .with_error_code(code)
        .with_error_message(message.map(StrBytes::from_string))
}
