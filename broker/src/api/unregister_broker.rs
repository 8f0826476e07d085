//! UnregisterBroker: a broker that left the cluster for good stops being registered (Kafka's
//! `Admin.unregisterBroker`), decided by the active controller. The broker is fenced first, so it
//! leaves every ISR and leads nothing; a broker still running registers again with its next
//! heartbeat, as with Kafka.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{UnregisterBrokerRequest, UnregisterBrokerResponse};
use kafka_protocol::protocol::StrBytes;
use skald_controller::{ControllerOp, ControllerReply, UnregisterBrokerError};

use super::controller_handle::ControllerHandle;
use crate::metadata::ControlError;

pub async fn handle(
    controller: &dyn ControllerHandle,
    request: UnregisterBrokerRequest,
) -> UnregisterBrokerResponse {
    let broker_id = request.broker_id.0;
    let op = ControllerOp::UnregisterBroker { broker_id };
    let (code, message) = match controller.control(op).await {
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

#[cfg(test)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::{BrokerId, UnregisterBrokerRequest, UnregisterBrokerResponse};
    use kafka_protocol::protocol::StrBytes;
    use skald_controller::{ControllerOp, ControllerReply, UnregisterBrokerError};

    use super::handle;
    use crate::api::controller_handle::CannedController;
    use crate::metadata::ControlError;

    fn answered(error: Option<(ResponseError, &str)>) -> UnregisterBrokerResponse {
        match error {
            None => UnregisterBrokerResponse::default().with_error_message(None),
            Some((error, message)) => UnregisterBrokerResponse::default()
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message.to_string()))),
        }
    }

    #[tokio::test]
    async fn the_controllers_decision_in_kafkas_codes() {
        let controller = CannedController::new(vec![
            Ok(ControllerReply::UnregisterBroker(Ok(()))),
            Ok(ControllerReply::UnregisterBroker(Err(
                UnregisterBrokerError::NotRegistered(4),
            ))),
            Err(ControlError::NotController(None)),
        ]);
        let request = UnregisterBrokerRequest::default().with_broker_id(BrokerId(4));
        assert_eq!(handle(&controller, request.clone()).await, answered(None));
        assert_eq!(
            handle(&controller, request.clone()).await,
            answered(Some((
                ResponseError::BrokerIdNotRegistered,
                "broker 4 is not registered"
            )))
        );
        assert_eq!(
            handle(&controller, request).await,
            answered(Some((
                ResponseError::NotController,
                "This is not the correct controller for this cluster."
            )))
        );
        assert_eq!(
            controller.take_ops(),
            vec![ControllerOp::UnregisterBroker { broker_id: 4 }; 3]
        );
    }
}
