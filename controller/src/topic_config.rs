//! The topic-level configs Skald accepts, with Kafka's names, types, defaults and the broker property
//! that supplies each default (`retention.ms` ← `log.retention.ms`, ...).

/// A config's value type, as Kafka's ConfigDef declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean,
    Int,
    Long,
    Double,
    /// One of the listed values (case-sensitive, as Kafka).
    Enum(&'static [&'static str]),
    /// A comma-separated list, each item one of the listed values.
    List(&'static [&'static str]),
    /// Kafka's throttled replica list (a LIST config): `*`, or `partition:broker` items.
    ReplicaList,
}

impl ConfigType {
    /// Kafka's LIST type, on which IncrementalAlterConfigs' APPEND and SUBTRACT work.
    pub fn is_list(self) -> bool {
        matches!(self, List(_) | ReplicaList)
    }
}

/// One known topic config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicConfigDef {
    pub name: &'static str,
    /// The broker property whose value is this config's default (Kafka's synonym), if any.
    pub broker_property: Option<&'static str>,
    pub default: &'static str,
    pub config_type: ConfigType,
    /// Lower bound for numeric types.
    pub min: Option<i64>,
}

const fn def(
    name: &'static str,
    broker_property: &'static str,
    default: &'static str,
    config_type: ConfigType,
    min: Option<i64>,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        broker_property: Some(broker_property),
        default,
        config_type,
        min,
    }
}

/// A topic config no broker property supplies a default for.
const fn no_broker_default(
    name: &'static str,
    default: &'static str,
    config_type: ConfigType,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        broker_property: None,
        default,
        config_type,
        min: None,
    }
}

use ConfigType::*;

/// Every topic config Skald knows, sorted by name.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def(
        "cleanup.policy",
        "log.cleanup.policy",
        "delete",
        List(&["delete", "compact"]),
        None,
    ),
    def(
        "compression.type",
        "compression.type",
        "producer",
        Enum(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        None,
    ),
    def(
        "delete.retention.ms",
        "log.cleaner.delete.retention.ms",
        "86400000",
        Long,
        Some(0),
    ),
    def(
        "file.delete.delay.ms",
        "log.segment.delete.delay.ms",
        "60000",
        Long,
        Some(0),
    ),
    def(
        "flush.messages",
        "log.flush.interval.messages",
        "9223372036854775807",
        Long,
        Some(1),
    ),
    def(
        "flush.ms",
        "log.flush.interval.ms",
        "9223372036854775807",
        Long,
        Some(0),
    ),
    // Kafka's replication throttles (KIP-73): which replicas of the topic the brokers' throttled
    // rates apply to, as `partition:broker` items or `*`. No broker property supplies a default.
    no_broker_default("follower.replication.throttled.replicas", "", ReplicaList),
    def(
        "index.interval.bytes",
        "log.index.interval.bytes",
        "4096",
        Int,
        Some(0),
    ),
    no_broker_default("leader.replication.throttled.replicas", "", ReplicaList),
    def(
        "max.message.bytes",
        "message.max.bytes",
        "1048588",
        Int,
        Some(0),
    ),
    def(
        "message.timestamp.type",
        "log.message.timestamp.type",
        "CreateTime",
        Enum(&["CreateTime", "LogAppendTime"]),
        None,
    ),
    def(
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
        "0.5",
        Double,
        None,
    ),
    def(
        "min.compaction.lag.ms",
        "log.cleaner.min.compaction.lag.ms",
        "0",
        Long,
        Some(0),
    ),
    def(
        "min.insync.replicas",
        "min.insync.replicas",
        "1",
        Int,
        Some(1),
    ),
    def("retention.bytes", "log.retention.bytes", "-1", Long, None),
    def(
        "retention.ms",
        "log.retention.ms",
        "604800000",
        Long,
        Some(-1),
    ),
    // skald-storage accepts 14..=i32::MAX, the same bounds as Kafka's (Int caps the top).
    def(
        "segment.bytes",
        "log.segment.bytes",
        "1073741824",
        Int,
        Some(14),
    ),
    // Kafka allows 4, but skald-storage's `LogConfig::validate` needs room for two time index
    // entries (24 bytes) and refuses to open a log with less: a smaller value would commit a topic
    // whose partitions can never be opened.
    def(
        "segment.index.bytes",
        "log.index.size.max.bytes",
        "10485760",
        Int,
        Some(24),
    ),
    def("segment.ms", "log.roll.ms", "604800000", Long, Some(1)),
    def(
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
        "false",
        Boolean,
        None,
    ),
];

/// The broker properties that may change while brokers run, per broker or cluster-wide (Kafka's
/// dynamic log configs, less those Skald does not act on): each supplies a topic config's default,
/// so a change reaches every partition whose topic does not override it. Not among them:
/// `unclean.leader.election.enable` (the controller's elections read its static value),
/// `compression.type` and `log.segment.delete.delay.ms` (no effect yet).
pub const DYNAMIC_BROKER_CONFIGS: &[&str] = &[
    "log.cleaner.delete.retention.ms",
    "log.cleaner.min.cleanable.ratio",
    "log.cleaner.min.compaction.lag.ms",
    "log.cleanup.policy",
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.index.interval.bytes",
    "log.index.size.max.bytes",
    "log.message.timestamp.type",
    "log.retention.bytes",
    "log.retention.ms",
    "log.roll.ms",
    "log.segment.bytes",
    "message.max.bytes",
    "min.insync.replicas",
];

/// Kafka's "no throttle" rate (`QuotaConfig.QUOTA_BYTES_PER_SECOND_DEFAULT`, Long.MAX_VALUE).
pub const REPLICATION_THROTTLED_RATE_UNLIMITED: i64 = i64::MAX;

/// Dynamic broker configs that are no topic config's default (Kafka's `DynamicConfig.Broker`
/// quota configs): the replication throttles' rates in bytes per second, for the leader's
/// answers and the follower's fetches of throttled replicas. `name` and `broker_property` are
/// both the broker property. Also the bound on copying replicas between log dirs.
pub const REPLICATION_QUOTA_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "follower.replication.throttled.rate",
        broker_property: Some("follower.replication.throttled.rate"),
        default: "9223372036854775807",
        config_type: Long,
        min: Some(0),
    },
    TopicConfigDef {
        name: "leader.replication.throttled.rate",
        broker_property: Some("leader.replication.throttled.rate"),
        default: "9223372036854775807",
        config_type: Long,
        min: Some(0),
    },
    // The copy of replicas moving between this broker's log dirs (AlterReplicaLogDirs).
    TopicConfigDef {
        name: "replica.alter.log.dirs.io.max.bytes.per.second",
        broker_property: Some("replica.alter.log.dirs.io.max.bytes.per.second"),
        default: "9223372036854775807",
        config_type: Long,
        min: Some(0),
    },
];

/// Skald's own per-broker dynamic config: `true` tells the broker to shut down for good (a
/// controlled shutdown, then the process exits). `skald cluster decommission` sets it once the
/// broker holds no replica, and removes it once the broker is unregistered; the controller
/// refuses it cluster-wide and for a broker that still hosts replicas.
pub const BROKER_DECOMMISSIONED: &str = "broker.decommissioned";

const BROKER_DECOMMISSIONED_DEF: TopicConfigDef = TopicConfigDef {
    name: BROKER_DECOMMISSIONED,
    broker_property: Some(BROKER_DECOMMISSIONED),
    default: "false",
    config_type: ConfigType::Boolean,
    min: None,
};

/// Whether `broker_id`'s dynamic configs in `image` tell it to shut down for good.
pub fn is_decommissioned(image: &crate::MetadataImage, broker_id: i32) -> bool {
    image
        .broker_configs
        .get(&broker_id)
        .and_then(|configs| configs.get(BROKER_DECOMMISSIONED))
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
}

/// The definition behind a dynamic broker config, if `name` is one: a topic config whose default
/// it supplies, one of [`REPLICATION_QUOTA_CONFIGS`], or [`BROKER_DECOMMISSIONED`].
pub fn dynamic_broker_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    if name == BROKER_DECOMMISSIONED {
        return Some(&BROKER_DECOMMISSIONED_DEF);
    }
    if !DYNAMIC_BROKER_CONFIGS.contains(&name) {
        return REPLICATION_QUOTA_CONFIGS
            .iter()
            .find(|def| def.broker_property == Some(name));
    }
    broker_property_def(name)
}

/// The definition that names `property` as its broker property: a topic config's (whose default
/// it is) or a replication quota config's.
pub fn broker_property_def(property: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS
        .iter()
        .chain(REPLICATION_QUOTA_CONFIGS)
        .find(|def| def.broker_property == Some(property))
}

/// Every broker property a definition names, topic defaults and replication quotas.
pub fn broker_property_defs() -> impl Iterator<Item = (&'static str, &'static TopicConfigDef)> {
    TOPIC_CONFIGS
        .iter()
        .chain(REPLICATION_QUOTA_CONFIGS)
        .filter_map(|def| def.broker_property.map(|property| (property, def)))
}

/// A throttled replica list's meaning for one broker (Kafka's `parseThrottledPartitions`): every
/// partition (`*`), or the partitions listed with this broker's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThrottledReplicas {
    All,
    Partitions(Vec<i32>),
}

impl ThrottledReplicas {
    /// Parses a (validated) list for `broker_id`; items that do not parse are ignored.
    pub fn parse(value: &str, broker_id: i32) -> ThrottledReplicas {
        let value = value.trim();
        if value == "*" {
            return ThrottledReplicas::All;
        }
        let partitions = value
            .split(',')
            .filter_map(|item| {
                let (partition, broker) = item.trim().split_once(':')?;
                (broker.trim().parse::<i32>().ok()? == broker_id)
                    .then(|| partition.trim().parse::<i32>().ok())
                    .flatten()
            })
            .collect();
        ThrottledReplicas::Partitions(partitions)
    }

    pub fn contains(&self, partition: i32) -> bool {
        match self {
            ThrottledReplicas::All => true,
            ThrottledReplicas::Partitions(partitions) => partitions.contains(&partition),
        }
    }
}

/// Kafka's `ThrottledReplicaListValidator`: the literal `*`, or `partition:broker` items (each
/// an int), where empty items may only trail.
fn valid_replica_list(value: &str) -> bool {
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    if items == ["*"] {
        return true;
    }
    let mut found_empty = false;
    items.iter().all(|item| {
        if item.is_empty() {
            found_empty = true;
            return true;
        }
        let Some((partition, broker)) = item.split_once(':') else {
            return false;
        };
        let number = |text: &str| {
            !text.is_empty()
                && text.bytes().all(|byte| byte.is_ascii_digit())
                && text.parse::<i32>().is_ok()
        };
        !found_empty && number(partition) && number(broker)
    })
}

/// The definition of a topic config, if Skald knows it.
pub fn topic_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|def| def.name == name)
}

/// Checks a topic config's name and value, returning Kafka-style messages for INVALID_CONFIG.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), String> {
    let def = topic_config_def(name).ok_or_else(|| format!("Unknown topic config name: {name}"))?;
    validate_value(def, value)
        .map_err(|reason| format!("Invalid value {value} for configuration {name}: {reason}"))
}

/// Checks a value against a definition's type and bounds.
pub fn validate_value(def: &TopicConfigDef, value: &str) -> Result<(), String> {
    let value = value.trim();
    let number = match def.config_type {
        Boolean => {
            return match value.to_ascii_lowercase().as_str() {
                "true" | "false" => Ok(()),
                _ => Err("Expected value to be either true or false".into()),
            }
        }
        Int => value
            .parse::<i32>()
            .map(i64::from)
            .map_err(|_| "Not a number of type INT".to_string())?,
        Long => value
            .parse::<i64>()
            .map_err(|_| "Not a number of type LONG".to_string())?,
        Double => {
            return match value.parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(()),
                Ok(_) => Err("Value must be between 0 and 1".into()),
                Err(_) => Err("Not a number of type DOUBLE".into()),
            }
        }
        Enum(allowed) => {
            return if allowed.contains(&value) {
                Ok(())
            } else {
                Err(format!("String must be one of: {}", allowed.join(", ")))
            }
        }
        ReplicaList => {
            return if valid_replica_list(value) {
                Ok(())
            } else {
                Err(format!(
                    "{} must be the literal '*' or a list of replicas in the following format: \
                     [partitionId]:[brokerId],[partitionId]:[brokerId],...",
                    def.name
                ))
            };
        }
        List(allowed) => {
            return if value
                .split(',')
                .map(str::trim)
                .all(|item| allowed.contains(&item))
            {
                Ok(())
            } else {
                Err(format!("Each item must be one of: {}", allowed.join(", ")))
            }
        }
    };
    match def.min {
        Some(min) if number < min => Err(format!("Value must be at least {min}")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_configs_validate_by_type_and_bound() {
        assert_eq!(validate_topic_config("retention.ms", "1000"), Ok(()));
        assert_eq!(validate_topic_config("retention.ms", "-1"), Ok(()));
        assert!(validate_topic_config("retention.ms", "-2").is_err());
        assert!(validate_topic_config("retention.ms", "soon").is_err());
        assert_eq!(
            validate_topic_config("cleanup.policy", "compact,delete"),
            Ok(())
        );
        assert!(validate_topic_config("cleanup.policy", "shred").is_err());
        assert_eq!(
            validate_topic_config("message.timestamp.type", "LogAppendTime"),
            Ok(())
        );
        assert!(validate_topic_config("min.cleanable.dirty.ratio", "1.5").is_err());
        // Booleans as Kafka parses them: true or false, in any case.
        for value in ["true", "false", "TRUE", " False "] {
            assert_eq!(
                validate_topic_config("unclean.leader.election.enable", value),
                Ok(())
            );
        }
        assert_eq!(
            validate_topic_config("unclean.leader.election.enable", "yes"),
            Err("Invalid value yes for configuration unclean.leader.election.enable: Expected value to be either true or false".into())
        );
        assert_eq!(
            validate_topic_config("no.such.config", "1"),
            Err("Unknown topic config name: no.such.config".to_string())
        );
    }

    #[test]
    fn segment_bounds_match_what_storage_opens() {
        assert_eq!(
            validate_topic_config("segment.index.bytes", "23"),
            Err(
                "Invalid value 23 for configuration segment.index.bytes: Value must be at least 24"
                    .into()
            )
        );
        assert_eq!(validate_topic_config("segment.index.bytes", "24"), Ok(()));
        assert_eq!(
            validate_topic_config("segment.bytes", "13"),
            Err(
                "Invalid value 13 for configuration segment.bytes: Value must be at least 14"
                    .into()
            )
        );
        assert_eq!(validate_topic_config("segment.bytes", "14"), Ok(()));
        assert_eq!(validate_topic_config("segment.bytes", "2147483647"), Ok(()));
        assert_eq!(
            validate_topic_config("segment.bytes", "2147483648"),
            Err("Invalid value 2147483648 for configuration segment.bytes: Not a number of type INT".into())
        );
    }

    #[test]
    fn every_dynamic_broker_config_supplies_a_topic_default() {
        for pair in DYNAMIC_BROKER_CONFIGS.windows(2) {
            assert!(pair[0] < pair[1]);
        }
        for name in DYNAMIC_BROKER_CONFIGS {
            assert!(dynamic_broker_config_def(name).is_some(), "{name}");
        }
        assert_eq!(
            dynamic_broker_config_def("log.retention.ms").map(|def| def.name),
            Some("retention.ms")
        );
        assert_eq!(
            dynamic_broker_config_def("unclean.leader.election.enable"),
            None
        );
        assert_eq!(dynamic_broker_config_def("log.dirs"), None);
    }

    #[test]
    fn throttled_replica_lists_validate_as_kafkas() {
        let name = "leader.replication.throttled.replicas";
        for value in ["", "*", " * ", "0:1", "0:1, 1:2 ,2:3", "0:1,", "0:1,,"] {
            assert_eq!(validate_topic_config(name, value), Ok(()), "{value:?}");
        }
        for value in [
            "*,0:1",
            "0",
            "0:",
            ":1",
            "a:1",
            "0:1,,1:2",
            "-1:1",
            "0:99999999999",
        ] {
            assert_eq!(
                validate_topic_config(name, value),
                Err(format!(
                    "Invalid value {} for configuration {name}: {name} must be the literal '*' \
                     or a list of replicas in the following format: \
                     [partitionId]:[brokerId],[partitionId]:[brokerId],...",
                    value.trim()
                )),
                "{value:?}"
            );
        }
        assert_eq!(
            topic_config_def("follower.replication.throttled.replicas")
                .map(|def| (def.broker_property, def.config_type.is_list())),
            Some((None, true))
        );
    }

    #[test]
    fn throttled_replicas_name_this_brokers_partitions() {
        assert_eq!(ThrottledReplicas::parse("*", 3), ThrottledReplicas::All);
        let listed = ThrottledReplicas::parse("0:1, 1:2,2:1", 1);
        assert_eq!(listed, ThrottledReplicas::Partitions(vec![0, 2]));
        assert!(listed.contains(2));
        assert!(!listed.contains(1));
        assert_eq!(
            ThrottledReplicas::parse("", 1),
            ThrottledReplicas::Partitions(vec![])
        );
    }

    #[test]
    fn replication_rates_are_dynamic_broker_configs_of_their_own() {
        for name in [
            "leader.replication.throttled.rate",
            "follower.replication.throttled.rate",
        ] {
            let def = dynamic_broker_config_def(name).expect(name);
            assert_eq!((def.name, def.default), (name, "9223372036854775807"));
            assert_eq!(validate_value(def, "0"), Ok(()));
            assert_eq!(
                validate_value(def, "-1"),
                Err("Value must be at least 0".into())
            );
            assert_eq!(broker_property_def(name), Some(def));
            assert_eq!(topic_config_def(name), None);
        }
        assert_eq!(
            broker_property_def("log.retention.ms").map(|def| def.name),
            Some("retention.ms")
        );
    }

    #[test]
    fn table_is_sorted_and_defaults_are_valid() {
        for pair in TOPIC_CONFIGS.windows(2) {
            assert!(pair[0].name < pair[1].name);
        }
        for def in TOPIC_CONFIGS.iter().chain(REPLICATION_QUOTA_CONFIGS) {
            assert_eq!(validate_value(def, def.default), Ok(()), "{}", def.name);
        }
        for pair in REPLICATION_QUOTA_CONFIGS.windows(2) {
            assert!(pair[0].name < pair[1].name);
        }
    }
}
