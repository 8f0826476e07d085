//! The table of APIs and versions Skald implements: exactly what ApiVersions advertises.
//!
//! A version is listed only when every field it carries is honoured by the broker's handler.
//! Produce v13 and Fetch v13+ name topics by id only; they wait until the handlers resolve ids.
//! The group APIs are the classic protocol's (KIP-848's ConsumerGroupHeartbeat is not served);
//! FindCoordinator v5+ and DescribeGroups v6 wait for their new error semantics.

use kafka_protocol::messages::ApiKey;

/// One advertised API: its key and the inclusive version range the broker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupportedApi {
    pub api_key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
}

const fn api(api_key: ApiKey, min_version: i16, max_version: i16) -> SupportedApi {
    SupportedApi {
        api_key,
        min_version,
        max_version,
    }
}

/// Every API the broker answers, in API-key order.
pub const SUPPORTED_APIS: &[SupportedApi] = &[
    api(ApiKey::Produce, 3, 12),
    api(ApiKey::Fetch, 4, 12),
    api(ApiKey::ListOffsets, 1, 6),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::OffsetCommit, 2, 9),
    api(ApiKey::OffsetFetch, 1, 9),
    api(ApiKey::FindCoordinator, 0, 4),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::DescribeGroups, 0, 5),
    api(ApiKey::ListGroups, 0, 5),
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::OffsetDelete, 0, 0),
];

/// The advertised entry for a raw API key, if Skald implements that API at all.
pub fn supported_api(api_key: i16) -> Option<&'static SupportedApi> {
    SUPPORTED_APIS
        .iter()
        .find(|api| api.api_key as i16 == api_key)
}

/// Whether `version` of the API with key `api_key` is served.
pub fn is_supported(api_key: i16, version: i16) -> bool {
    supported_api(api_key).is_some_and(|api| (api.min_version..=api.max_version).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_range_is_within_what_the_message_types_can_decode() {
        for api in SUPPORTED_APIS {
            let known = api.api_key.valid_versions();
            assert!(api.min_version >= known.min, "{:?}", api.api_key);
            assert!(api.max_version <= known.max, "{:?}", api.api_key);
            assert!(api.min_version <= api.max_version, "{:?}", api.api_key);
        }
    }

    #[test]
    fn lookups_by_raw_key_and_version() {
        assert!(is_supported(18, 0));
        assert!(is_supported(0, 12));
        assert!(!is_supported(0, 13));
        assert!(!is_supported(0, 2));
        assert!(!is_supported(9999, 0));
        assert_eq!(supported_api(3).map(|api| api.max_version), Some(12));
    }
}
