//! Kafka's rules for topic names (`org.apache.kafka.common.internals.Topic`).

/// The topic the group coordinator keeps committed offsets in; only the broker creates it.
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";
/// The topic the transaction coordinator keeps its state in; only the broker creates it.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";
/// Kafka's internal topics (`Topic.INTERNAL_TOPICS`): exactly these, not every `__` name.
pub const INTERNAL_TOPICS: [&str; 2] = [CONSUMER_OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC];
/// The metadata log's topic. Never a user topic: its partition directory would be the metadata
/// log's own (`crate::log::METADATA_DIR_NAME`).
pub const CLUSTER_METADATA_TOPIC: &str = "__cluster_metadata";

/// Kafka's limit: a partition directory `<topic>-<partition>` must fit a 255-byte file name.
pub const TOPIC_NAME_MAX_CHARS: usize = 249;

/// Checks a topic name, returning Kafka's message for an invalid one.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > TOPIC_NAME_MAX_CHARS {
        return Err(format!(
            "Topic name is illegal, it can't be longer than {TOPIC_NAME_MAX_CHARS} characters, topic name: {name}"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    if name == CLUSTER_METADATA_TOPIC {
        return Err(format!(
            "Topic name \"{name}\" is reserved for the cluster metadata log"
        ));
    }
    Ok(())
}

/// Whether `name` is one of Kafka's internal topics, which clients may neither create nor delete.
pub fn is_internal(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_topic_name_rules() {
        assert_eq!(validate_topic_name("orders.v2_eu-1"), Ok(()));
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name(".").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("bad/name").is_err());
        assert!(validate_topic_name("spa ce").is_err());
        assert_eq!(validate_topic_name(&"a".repeat(249)), Ok(()));
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
    }

    #[test]
    fn only_kafkas_two_internal_topics_are_internal() {
        assert!(is_internal("__consumer_offsets"));
        assert!(is_internal("__transaction_state"));
        assert!(!is_internal("__foo"));
        assert!(!is_internal("__cluster_metadata"));
        assert!(!is_internal("__consumer_offsets2"));
        assert_eq!(validate_topic_name("__foo"), Ok(()));
        assert_eq!(validate_topic_name("__consumer_offsets"), Ok(()));
    }

    #[test]
    fn the_metadata_topic_name_is_refused() {
        assert_eq!(
            validate_topic_name("__cluster_metadata"),
            Err(
                "Topic name \"__cluster_metadata\" is reserved for the cluster metadata log".into()
            )
        );
        assert_eq!(
            format!("{CLUSTER_METADATA_TOPIC}-0"),
            crate::log::METADATA_DIR_NAME
        );
    }
}
