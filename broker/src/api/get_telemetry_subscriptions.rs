//! GetTelemetrySubscriptions (KIP-714): which client metrics the broker wants pushed. Skald has
//! no client-metrics receiver, so every client gets Kafka's answer for a client that matches no
//! subscription: no requested metrics (the client pushes nothing and asks again after the push
//! interval). A client's first request (a zero instance id) is given a new instance id.

use kafka_protocol::messages::{
    GetTelemetrySubscriptionsRequest, GetTelemetrySubscriptionsResponse,
};

/// Kafka's defaults for a subscription (`ClientMetricsConfigs`): push every five minutes, at
/// most 1 MiB per push.
const PUSH_INTERVAL_MS: i32 = 300_000;
pub(super) const TELEMETRY_MAX_BYTES: i32 = 1024 * 1024;
/// The compression types Kafka accepts for pushed metrics, in its order of preference
/// (zstd, lz4, gzip, snappy).
const ACCEPTED_COMPRESSION_TYPES: [i8; 4] = [4, 3, 1, 2];

pub fn handle(request: GetTelemetrySubscriptionsRequest) -> GetTelemetrySubscriptionsResponse {
    let client_instance_id = if request.client_instance_id.is_nil() {
        uuid::Uuid::from_u128(skald_controller::controller::random_topic_id())
    } else {
        request.client_instance_id
    };
    GetTelemetrySubscriptionsResponse::default()
        .with_client_instance_id(client_instance_id)
        .with_subscription_id(subscription_id(&client_instance_id))
        .with_accepted_compression_types(ACCEPTED_COMPRESSION_TYPES.to_vec())
        .with_push_interval_ms(PUSH_INTERVAL_MS)
        .with_telemetry_max_bytes(TELEMETRY_MAX_BYTES)
        .with_delta_temporality(true)
        .with_requested_metrics(Vec::new())
}

/// The id of the (empty) subscription handed to a client instance. Derived from the instance id
/// alone, so PushTelemetry can check it without the broker keeping any state per client.
pub fn subscription_id(client_instance_id: &uuid::Uuid) -> i32 {
    let bits = client_instance_id.as_u128();
    // Truncation is the point: 32 bits of the folded id.
    (bits ^ (bits >> 32) ^ (bits >> 64) ^ (bits >> 96)) as u32 as i32
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::{
        GetTelemetrySubscriptionsRequest, GetTelemetrySubscriptionsResponse,
    };

    use super::{handle, subscription_id, ACCEPTED_COMPRESSION_TYPES, PUSH_INTERVAL_MS};

    fn answer(instance: uuid::Uuid) -> GetTelemetrySubscriptionsResponse {
        GetTelemetrySubscriptionsResponse::default()
            .with_client_instance_id(instance)
            .with_subscription_id(subscription_id(&instance))
            .with_accepted_compression_types(ACCEPTED_COMPRESSION_TYPES.to_vec())
            .with_push_interval_ms(PUSH_INTERVAL_MS)
            .with_telemetry_max_bytes(1024 * 1024)
            .with_delta_temporality(true)
            .with_requested_metrics(Vec::new())
    }

    #[test]
    fn a_known_instance_keeps_its_id_and_a_new_one_is_given_one() {
        let instance = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let request = GetTelemetrySubscriptionsRequest::default().with_client_instance_id(instance);
        assert_eq!(handle(request), answer(instance));

        let first = handle(GetTelemetrySubscriptionsRequest::default());
        assert!(!first.client_instance_id.is_nil());
        assert_eq!(first, answer(first.client_instance_id));
    }

    #[test]
    fn the_subscription_id_folds_the_instance_id() {
        assert_eq!(subscription_id(&uuid::Uuid::from_u128(0)), 0);
        assert_eq!(
            subscription_id(&uuid::Uuid::from_u128(1 | 2 << 32 | 4 << 64 | 8 << 96)),
            15
        );
    }
}
