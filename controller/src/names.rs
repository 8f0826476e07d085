//! Kafka's rules for topic names (`org.apache.kafka.common.internals.Topic`).

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
    Ok(())
}

/// Internal topics start with `__`; clients are not allowed to create or delete them directly.
pub fn is_internal(name: &str) -> bool {
    name.starts_with("__")
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
}
