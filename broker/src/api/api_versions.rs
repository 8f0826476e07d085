//! ApiVersions: exactly the table in `skald_protocol::api_versions`.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::messages::ResponseKind;
use skald_protocol::api_versions::{SupportedApi, SUPPORTED_APIS};

pub fn handle(_version: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(listed(SUPPORTED_APIS))
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
