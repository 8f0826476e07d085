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
