//! The APIs and versions Skald implements, per listener: exactly what ApiVersions advertises.
//!
//! There are two listeners and so two tables. [`SUPPORTED_APIS`] is the client listener's: what
//! producers, consumers and admin clients may send. [`CONTROLLER_APIS`] is the CONTROLLER
//! listener's, reached only by brokers: BrokerRegistration and BrokerHeartbeat, which brokers use
//! to join the cluster and keep their lease, and AlterPartition, with which partition leaders
//! change their ISR (topic administration reaches the controller through any broker, which
//! forwards it with Skald's private controller RPC). BrokerRegistration v2+
//! (log dirs, previous epoch) and BrokerHeartbeat v1 (offline log dirs) wait until the controller
//! acts on those fields. Kafka's schemas
//! mark those two `"listeners": ["controller"]`; here they are never in the client table, so they
//! are never advertised to clients, and a client listener refuses them like any unknown key: a
//! client cannot register, fence or shut down a broker by guessing the API.
//!
//! A version is listed only when every field it carries is honoured by the broker's handler.
//! Produce v13 and Fetch v13+ name topics by id, resolved through the metadata image; ListOffsets
//! v7+ adds MAX_TIMESTAMP, and the tiered-storage lookups answered as Kafka does without remote
//! storage. OffsetCommit v1, which kafka-protocol no longer decodes, is rewritten as v2
//! ([`crate::legacy`]): Sarama 1.x commits with it. OffsetCommit and OffsetFetch stop at v9: kafka-protocol 0.18 lists v10 (topic ids)
//! but its request decoders stop at v9.
//! The group APIs are the classic protocol's (KIP-848's ConsumerGroupHeartbeat is not served);
//! FindCoordinator v5 only lets the broker answer TRANSACTION_ABORTABLE (KIP-890), which Skald
//! never sends, and v6 adds share-group keys (KIP-932), refused as an unknown key type as Kafka
//! does with share groups off; DescribeGroups v6 answers an unknown group GROUP_ID_NOT_FOUND
//! (KIP-1043).
//! DescribeQuorum is served by every broker on behalf of the active controller (as Kafka's
//! brokers forward it); DescribeCluster v2 (KIP-1073) lists fenced brokers when asked.
//! OffsetForLeaderEpoch starts at v2, the oldest kafka-protocol 0.18 decodes (Kafka 4 dropped v0
//! and v1, KIP-896); its `replica_id` (v3+) changes nothing, as in Kafka, which answers from the
//! leader's log whoever asks.
//! InitProducerId (every version kafka-protocol 0.18 decodes) hands out producer ids, and with a
//! `transactional_id` the transaction coordinator's. AddPartitionsToTxn v4–5 is the brokers'
//! batched form (KIP-890: verify-only checks); EndTxn v5, TxnOffsetCommit v5 and Produce v12 are
//! transactions version 2 (KIP-890), which ApiVersions advertises as the finalized feature
//! `transaction.version` when the broker's `transaction.version` is 2. DescribeProducers shows each
//! partition's producer state. WriteTxnMarkers (v1, the one Kafka 4 serves) is the partition
//! leader's side of ending a transaction; it is on the client listener, as Kafka serves it on
//! its broker listeners.
//! GetTelemetrySubscriptions and PushTelemetry (KIP-714) answer as Kafka does for a client no
//! metrics subscription matches: nothing is requested, so nothing is pushed. DescribeTopicPartitions
//! (KIP-966) is Metadata's paged form for admin clients. Metadata v13 only adds a top-level error
//! code (KIP-1102's REBOOTSTRAP_REQUIRED), which Skald never sends.
//! AlterConfigs and IncrementalAlterConfigs are served at every version kafka-protocol 0.18
//! decodes; the active controller validates and commits topic configs and the dynamic broker
//! configs that supply topic defaults (per broker and cluster-wide).
//! ElectLeaders is served at every version kafka-protocol 0.18 knows; the active controller
//! decides the elections, and the request's `timeout_ms` is the broker's own controller deadline.
//! AlterPartitionReassignments (0–1; v1's `allow_replication_factor_change`, KIP-860, is
//! honoured) and ListPartitionReassignments (0) are KIP-455's, decided and answered by the
//! active controller.

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
    api(ApiKey::Produce, 3, 13),
    api(ApiKey::Fetch, 4, 18),
    api(ApiKey::ListOffsets, 1, 10),
    api(ApiKey::Metadata, 0, 13),
    api(ApiKey::OffsetCommit, 1, 9),
    api(ApiKey::OffsetFetch, 1, 9),
    api(ApiKey::FindCoordinator, 0, 6),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::DescribeGroups, 0, 6),
    api(ApiKey::ListGroups, 0, 5),
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::InitProducerId, 0, 5),
    api(ApiKey::OffsetForLeaderEpoch, 2, 4),
    api(ApiKey::AddPartitionsToTxn, 0, 5),
    api(ApiKey::AddOffsetsToTxn, 0, 4),
    api(ApiKey::EndTxn, 0, 5),
    api(ApiKey::WriteTxnMarkers, 1, 1),
    api(ApiKey::TxnOffsetCommit, 0, 5),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::AlterReplicaLogDirs, 1, 2),
    api(ApiKey::DescribeLogDirs, 1, 4),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::ElectLeaders, 0, 2),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    api(ApiKey::AlterPartitionReassignments, 0, 1),
    api(ApiKey::ListPartitionReassignments, 0, 0),
    api(ApiKey::OffsetDelete, 0, 0),
    api(ApiKey::DescribeQuorum, 0, 2),
    api(ApiKey::DescribeCluster, 0, 2),
    api(ApiKey::DescribeProducers, 0, 0),
    api(ApiKey::UnregisterBroker, 0, 0),
    api(ApiKey::DescribeTransactions, 0, 0),
    api(ApiKey::ListTransactions, 0, 2),
    api(ApiKey::GetTelemetrySubscriptions, 0, 0),
    api(ApiKey::PushTelemetry, 0, 0),
    api(ApiKey::DescribeTopicPartitions, 0, 0),
];

/// Every API the CONTROLLER listener answers, in API-key order.
///
/// Topic administration is decided by the active controller, so it is served here at the same
/// versions as on the client listener. BrokerRegistration and BrokerHeartbeat are served at every
/// version kafka-protocol 0.18 knows; later versions only add fields, which the controller's
/// handlers must honour: `is_migrating_zk_broker` (v1), `log_dirs` (v2) and
/// `previous_broker_epoch` (v3) in a registration, `offline_log_dirs` (v1) in a heartbeat.
/// AlterPartition is served at every version kafka-protocol 0.18 knows, 2 (topic ids) and 3
/// (each new ISR member's broker epoch, checked by the controller).
pub const CONTROLLER_APIS: &[SupportedApi] = &[
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::AlterPartition, 2, 3),
    api(ApiKey::BrokerRegistration, 0, 1),
    api(ApiKey::BrokerHeartbeat, 0, 0),
];

/// The client listener's entry for a raw API key, if it serves that API at all.
pub fn supported_api(api_key: i16) -> Option<&'static SupportedApi> {
    find(SUPPORTED_APIS, api_key)
}

/// Whether the client listener serves `version` of the API with key `api_key`.
pub fn is_supported(api_key: i16, version: i16) -> bool {
    serves(SUPPORTED_APIS, api_key, version)
}

/// The CONTROLLER listener's entry for a raw API key, if it serves that API at all.
pub fn supported_controller_api(api_key: i16) -> Option<&'static SupportedApi> {
    find(CONTROLLER_APIS, api_key)
}

/// Whether the CONTROLLER listener serves `version` of the API with key `api_key`.
pub fn is_supported_on_controller(api_key: i16, version: i16) -> bool {
    serves(CONTROLLER_APIS, api_key, version)
}

/// Kafka's name of an API ("Produce", "Fetch", "ListOffsets", ...), for log lines and metric
/// labels: the API key's own name, which is Kafka's.
pub fn api_name(api_key: ApiKey) -> &'static str {
    static NAMES: std::sync::OnceLock<Vec<(ApiKey, &'static str)>> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        // One small string per API key, made once for the life of the process.
        ApiKey::iter()
            .map(|key| (key, &*Box::leak(format!("{key:?}").into_boxed_str())))
            .collect()
    });
    names
        .iter()
        .find(|(key, _)| *key == api_key)
        .map_or("unknown API", |(_, name)| name)
}

pub(crate) fn find(apis: &'static [SupportedApi], api_key: i16) -> Option<&'static SupportedApi> {
    apis.iter().find(|api| api.api_key as i16 == api_key)
}

pub(crate) fn serves(apis: &'static [SupportedApi], api_key: i16, version: i16) -> bool {
    find(apis, api_key).is_some_and(|api| (api.min_version..=api.max_version).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_range_is_within_what_the_message_types_can_decode() {
        for api in SUPPORTED_APIS.iter().chain(CONTROLLER_APIS) {
            let known = api.api_key.valid_versions();
            // A legacy version is decoded as the version it is rewritten into.
            let min = crate::legacy::codec_version(api.api_key, api.min_version);
            assert!(min >= known.min, "{:?}", api.api_key);
            assert!(api.max_version <= known.max, "{:?}", api.api_key);
            assert!(api.min_version <= api.max_version, "{:?}", api.api_key);
        }
    }

    #[test]
    fn lookups_by_raw_key_and_version() {
        assert!(is_supported(18, 0));
        assert!(is_supported(0, 13));
        assert!(!is_supported(0, 14));
        assert!(!is_supported(0, 2));
        assert!(!is_supported(9999, 0));
        assert_eq!(supported_api(3).map(|api| api.max_version), Some(13));
        assert!(!is_supported(23, 1));
        assert!(is_supported(23, 2));
        assert!(is_supported(23, 4));
        assert!(!is_supported(23, 5));
    }

    #[test]
    fn apis_are_named_as_kafka_names_them() {
        assert_eq!(api_name(ApiKey::Fetch), "Fetch");
        assert_eq!(api_name(ApiKey::ListOffsets), "ListOffsets");
        assert_eq!(api_name(ApiKey::OffsetCommit), "OffsetCommit");
        assert_eq!(
            api_name(ApiKey::GetTelemetrySubscriptions),
            "GetTelemetrySubscriptions"
        );
        assert_eq!(
            api_name(ApiKey::DescribeTopicPartitions),
            "DescribeTopicPartitions"
        );
    }

    #[test]
    fn tables_are_in_api_key_order_without_duplicates() {
        for apis in [SUPPORTED_APIS, CONTROLLER_APIS] {
            for pair in apis.windows(2) {
                assert!(
                    (pair[0].api_key as i16) < (pair[1].api_key as i16),
                    "{pair:?}"
                );
            }
        }
    }

    #[test]
    fn broker_lifecycle_apis_are_served_only_on_the_controller_listener() {
        for key in [
            ApiKey::BrokerRegistration,
            ApiKey::BrokerHeartbeat,
            ApiKey::AlterPartition,
        ] {
            assert_eq!(supported_api(key as i16), None);
            for version in 0..=3 {
                assert!(!is_supported(key as i16, version));
            }
        }
        assert!(!is_supported_on_controller(56, 1));
        assert!(is_supported_on_controller(56, 2));
        assert!(is_supported_on_controller(56, 3));
        assert!(!is_supported_on_controller(56, 4));
        assert!(is_supported_on_controller(62, 0));
        assert!(is_supported_on_controller(62, 1));
        assert!(!is_supported_on_controller(62, 2));
        assert!(is_supported_on_controller(63, 0));
        assert!(!is_supported_on_controller(63, 1));
        // Topic administration reaches the controller through brokers, not this listener.
        assert!(!is_supported_on_controller(19, 7));
        // Client traffic has no business on the controller listener.
        assert_eq!(supported_controller_api(ApiKey::Produce as i16), None);
        assert_eq!(supported_controller_api(ApiKey::Fetch as i16), None);
        assert_eq!(
            supported_controller_api(63).map(|api| (api.min_version, api.max_version)),
            Some((0, 0))
        );
    }
}
