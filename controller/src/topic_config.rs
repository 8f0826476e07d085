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
}

/// One known topic config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicConfigDef {
    pub name: &'static str,
    /// The broker property whose value is this config's default.
    pub broker_property: &'static str,
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
        broker_property,
        default,
        config_type,
        min,
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
    def(
        "index.interval.bytes",
        "log.index.interval.bytes",
        "4096",
        Int,
        Some(0),
    ),
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

/// The topic config whose default a dynamic broker config supplies, if `name` is one.
pub fn dynamic_broker_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    if !DYNAMIC_BROKER_CONFIGS.contains(&name) {
        return None;
    }
    TOPIC_CONFIGS.iter().find(|def| def.broker_property == name)
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
    fn table_is_sorted_and_defaults_are_valid() {
        for pair in TOPIC_CONFIGS.windows(2) {
            assert!(pair[0].name < pair[1].name);
        }
        for def in TOPIC_CONFIGS {
            assert_eq!(validate_value(def, def.default), Ok(()), "{}", def.name);
        }
    }
}
