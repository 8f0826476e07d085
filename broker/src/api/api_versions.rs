//! ApiVersions: exactly the table in `skald_protocol::api_versions`, and (v3+) the features: the
//! transactions version (`transaction.version`, 0–2 supported; finalized at the broker's
//! `transaction.version`), which clients read to choose between transactions version 1 and 2.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::messages::ResponseKind;
use kafka_protocol::protocol::StrBytes;
use skald_protocol::api_versions::{SupportedApi, SUPPORTED_APIS};

/// Kafka's feature name for the transactions version.
const TRANSACTION_VERSION: &str = "transaction.version";
/// The highest transactions version this broker implements.
const TRANSACTION_VERSION_MAX: i16 = 2;
/// First ApiVersions version with features (KIP-584).
const FEATURES_SINCE: i16 = 3;

/// `transaction_version`: the broker's `transaction.version`, the only feature it finalizes.
pub fn handle(transaction_version: i16, version: i16) -> ApiVersionsResponse {
    let response = ApiVersionsResponse::default().with_api_keys(listed(SUPPORTED_APIS));
    if version < FEATURES_SINCE {
        return response;
    }
    let level = transaction_version;
    let name = || StrBytes::from_static_str(TRANSACTION_VERSION);
    // A feature finalized at level 0 is not listed, as in Kafka.
    let finalized = if level > 0 {
        vec![FinalizedFeatureKey::default()
            .with_name(name())
            .with_min_version_level(level)
            .with_max_version_level(level)]
    } else {
        Vec::new()
    };
    response
        .with_supported_features(vec![SupportedFeatureKey::default()
            .with_name(name())
            .with_min_version(0)
            .with_max_version(TRANSACTION_VERSION_MAX)])
        .with_finalized_features_epoch(0)
        .with_finalized_features(finalized)
}

/// The answer to an ApiVersions version we don't know: sent as v0, so any client can read it and
/// retry with a version from the list.
pub fn unsupported_version() -> ResponseKind {
    ResponseKind::ApiVersions(
        ApiVersionsResponse::default()
            .with_error_code(ResponseError::UnsupportedVersion.code())
            .with_api_keys(listed(SUPPORTED_APIS)),
    )
}

/// A table of served APIs as ApiVersions lists them (the client or the controller listener's).
pub fn listed(table: &[SupportedApi]) -> Vec<ApiVersion> {
    table
        .iter()
        .map(|api| {
            ApiVersion::default()
                .with_api_key(api.api_key as i16)
                .with_min_version(api.min_version)
                .with_max_version(api.max_version)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::api_versions_response::{
        FinalizedFeatureKey, SupportedFeatureKey,
    };
    use kafka_protocol::messages::ApiVersionsResponse;
    use kafka_protocol::protocol::StrBytes;
    use skald_protocol::api_versions::SUPPORTED_APIS;

    use super::{handle, listed};

    fn feature() -> StrBytes {
        StrBytes::from_static_str("transaction.version")
    }

    fn with_features(finalized: Vec<FinalizedFeatureKey>) -> ApiVersionsResponse {
        ApiVersionsResponse::default()
            .with_api_keys(listed(SUPPORTED_APIS))
            .with_supported_features(vec![SupportedFeatureKey::default()
                .with_name(feature())
                .with_min_version(0)
                .with_max_version(2)])
            .with_finalized_features_epoch(0)
            .with_finalized_features(finalized)
    }

    #[test]
    fn the_table_and_from_v3_the_transactions_version() {
        assert_eq!(
            handle(2, 2),
            ApiVersionsResponse::default().with_api_keys(listed(SUPPORTED_APIS))
        );
        assert_eq!(
            handle(2, 3),
            with_features(vec![FinalizedFeatureKey::default()
                .with_name(feature())
                .with_min_version_level(2)
                .with_max_version_level(2)])
        );
        // Finalized at level 0: supported, not listed as finalized (as in Kafka).
        assert_eq!(handle(0, 4), with_features(Vec::new()));
        assert_eq!(handle(2, 3).api_keys.len(), SUPPORTED_APIS.len());
    }
}
