//! PushTelemetry (KIP-714): a client's metrics, pushed for the subscription it was given. No
//! metrics are requested by Skald's subscriptions (see [`super::get_telemetry_subscriptions`]),
//! so a push carries nothing wanted: it is acknowledged and dropped when it names the
//! subscription its instance was given, and refused with Kafka's UNKNOWN_SUBSCRIPTION_ID when it
//! does not (a client then asks for its subscription again), TELEMETRY_TOO_LARGE past the
//! subscription's size limit, or INVALID_REQUEST without an instance id.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{PushTelemetryRequest, PushTelemetryResponse};

use super::get_telemetry_subscriptions::{subscription_id, TELEMETRY_MAX_BYTES};

pub fn handle(request: PushTelemetryRequest) -> PushTelemetryResponse {
    let error = if request.client_instance_id.is_nil() {
        ResponseError::InvalidRequest.code()
    } else if request.subscription_id != subscription_id(&request.client_instance_id) {
        ResponseError::UnknownSubscriptionId.code()
    } else if request.metrics.len() > TELEMETRY_MAX_BYTES as usize {
        ResponseError::TelemetryTooLarge.code()
    } else {
        0
    };
    PushTelemetryResponse::default().with_error_code(error)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::{PushTelemetryRequest, PushTelemetryResponse};

    use super::handle;
    use crate::api::get_telemetry_subscriptions::{subscription_id, TELEMETRY_MAX_BYTES};

    fn push(instance: u128, subscription: i32, metrics: usize) -> PushTelemetryResponse {
        let instance = uuid::Uuid::from_u128(instance);
        handle(
            PushTelemetryRequest::default()
                .with_client_instance_id(instance)
                .with_subscription_id(subscription)
                .with_metrics(Bytes::from(vec![0u8; metrics])),
        )
    }

    fn answered(error: Option<ResponseError>) -> PushTelemetryResponse {
        PushTelemetryResponse::default().with_error_code(error.map_or(0, |e| e.code()))
    }

    #[test]
    fn a_push_for_the_instances_subscription_is_acknowledged_within_its_size() {
        let instance = 0x00ab_cdef_u128 << 64 | 42;
        let subscription = subscription_id(&uuid::Uuid::from_u128(instance));
        let max = TELEMETRY_MAX_BYTES as usize;
        assert_eq!(push(instance, subscription, max), answered(None));
        assert_eq!(
            push(instance, subscription, max + 1),
            answered(Some(ResponseError::TelemetryTooLarge))
        );
        assert_eq!(
            push(instance, subscription.wrapping_add(1), 10),
            answered(Some(ResponseError::UnknownSubscriptionId))
        );
        assert_eq!(
            push(0, subscription_id(&uuid::Uuid::nil()), 10),
            answered(Some(ResponseError::InvalidRequest))
        );
    }
}
