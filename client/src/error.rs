//! The client's error type, and Kafka's error codes by name.

use std::time::Duration;

/// Everything that can go wrong in the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker answered with a Kafka error code.
    #[error("{context}: {name}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kafka {
        code: i16,
        /// Kafka's own name for `code`, e.g. `TOPIC_ALREADY_EXISTS`.
        name: &'static str,
        /// What the client was doing, e.g. `create topic orders`.
        context: String,
        /// The broker's error message, when it sent one.
        message: Option<String>,
    },
    /// No broker in the bootstrap list (or a broker's advertised address) accepted a connection.
    #[error("cannot connect to {addr}: {}", io_reason(source))]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The connection failed after it was established.
    #[error("connection to {addr} failed: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The broker closed the connection while a response was outstanding.
    #[error("connection to {addr} closed by the broker")]
    Disconnected { addr: String },
    /// No response arrived in time.
    #[error("request {api} to {addr} timed out after {timeout:?}")]
    Timeout {
        api: String,
        addr: String,
        timeout: Duration,
    },
    /// The bytes on the wire did not follow the protocol.
    #[error("protocol error from {addr}: {detail}")]
    Protocol { addr: String, detail: String },
    /// Client and broker share no version of an API.
    #[error("broker {addr} does not support {api} in any version this client speaks ({detail})")]
    UnsupportedVersion {
        api: String,
        addr: String,
        detail: String,
    },
    /// A request could not be encoded in the negotiated version.
    #[error("cannot encode {api} v{version}: {detail}")]
    Encode {
        api: String,
        version: i16,
        detail: String,
    },
    /// The topic is not in the cluster's metadata.
    #[error("topic {topic} does not exist")]
    UnknownTopic { topic: String },
    /// The partition is not one of the topic's partitions.
    #[error("topic {topic} has no partition {partition} (it has {partitions})")]
    UnknownPartition {
        topic: String,
        partition: i32,
        partitions: usize,
    },
    /// A record batch this client cannot read (compressed, or an old message format).
    #[error("unsupported record batch in {topic}-{partition} at offset {offset}: {detail}")]
    UnsupportedRecords {
        topic: String,
        partition: i32,
        offset: i64,
        detail: String,
    },
    /// A fetched record batch that does not parse.
    #[error("corrupt record batch in {topic}-{partition} at offset {offset}: {detail}")]
    CorruptRecords {
        topic: String,
        partition: i32,
        offset: i64,
        detail: String,
    },
    /// The caller asked for something that cannot be done.
    #[error("{0}")]
    InvalidArgument(String),
}

/// An I/O error's text without the "(os error N)" suffix, e.g. `Connection refused`.
pub fn io_reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error for a non-zero Kafka error code.
    pub fn kafka(code: i16, context: impl Into<String>, message: Option<String>) -> Self {
        Error::Kafka {
            code,
            name: error_name(code),
            context: context.into(),
            message: message.filter(|m| !m.is_empty()),
        }
    }

    /// The Kafka error code, when the broker sent one.
    pub fn kafka_code(&self) -> Option<i16> {
        match self {
            Error::Kafka { code, .. } => Some(*code),
            Error::UnknownTopic { .. } => Some(UNKNOWN_TOPIC_OR_PARTITION),
            _ => None,
        }
    }

    /// Whether a fresh look at the metadata (and a new connection) may make a retry succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Kafka { code, .. } => is_retriable(*code),
            Error::Io { .. } | Error::Disconnected { .. } | Error::Timeout { .. } => true,
            _ => false,
        }
    }
}

/// Turns a response's error code into `Ok(())` or an [`Error::Kafka`].
pub fn check(code: i16, context: impl FnOnce() -> String, message: Option<&str>) -> Result<()> {
    if code == NONE {
        Ok(())
    } else {
        Err(Error::kafka(code, context(), message.map(str::to_owned)))
    }
}

pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const LEADER_NOT_AVAILABLE: i16 = 5;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const BROKER_NOT_AVAILABLE: i16 = 8;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const NOT_CONTROLLER: i16 = 41;

/// Errors after which refreshing metadata and retrying is what Kafka's own clients do.
pub fn is_retriable(code: i16) -> bool {
    matches!(
        code,
        UNKNOWN_TOPIC_OR_PARTITION
            | LEADER_NOT_AVAILABLE
            | NOT_LEADER_OR_FOLLOWER
            | REQUEST_TIMED_OUT
            | NOT_CONTROLLER
            | 13 // NETWORK_EXCEPTION
            | 14 // COORDINATOR_LOAD_IN_PROGRESS
            | 15 // COORDINATOR_NOT_AVAILABLE
            | 19 // NOT_ENOUGH_REPLICAS
            | 20 // NOT_ENOUGH_REPLICAS_AFTER_APPEND
            | 56 // KAFKA_STORAGE_ERROR
            | 74 // FENCED_LEADER_EPOCH
            | 75 // UNKNOWN_LEADER_EPOCH
    )
}

/// Kafka's name for an error code (`Errors.java`), or `UNKNOWN_ERROR_CODE` for codes it does not know.
pub fn error_name(code: i16) -> &'static str {
    if code == -1 {
        return "UNKNOWN_SERVER_ERROR";
    }
    usize::try_from(code)
        .ok()
        .and_then(|index| ERROR_NAMES.get(index))
        .copied()
        .unwrap_or("UNKNOWN_ERROR_CODE")
}

/// Kafka's error names, indexed by code from 0.
const ERROR_NAMES: [&str; 134] = [
    "NONE",
    "OFFSET_OUT_OF_RANGE",
    "CORRUPT_MESSAGE",
    "UNKNOWN_TOPIC_OR_PARTITION",
    "INVALID_FETCH_SIZE",
    "LEADER_NOT_AVAILABLE",
    "NOT_LEADER_OR_FOLLOWER",
    "REQUEST_TIMED_OUT",
    "BROKER_NOT_AVAILABLE",
    "REPLICA_NOT_AVAILABLE",
    "MESSAGE_TOO_LARGE",
    "STALE_CONTROLLER_EPOCH",
    "OFFSET_METADATA_TOO_LARGE",
    "NETWORK_EXCEPTION",
    "COORDINATOR_LOAD_IN_PROGRESS",
    "COORDINATOR_NOT_AVAILABLE",
    "NOT_COORDINATOR",
    "INVALID_TOPIC_EXCEPTION",
    "RECORD_LIST_TOO_LARGE",
    "NOT_ENOUGH_REPLICAS",
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "INVALID_REQUIRED_ACKS",
    "ILLEGAL_GENERATION",
    "INCONSISTENT_GROUP_PROTOCOL",
    "INVALID_GROUP_ID",
    "UNKNOWN_MEMBER_ID",
    "INVALID_SESSION_TIMEOUT",
    "REBALANCE_IN_PROGRESS",
    "INVALID_COMMIT_OFFSET_SIZE",
    "TOPIC_AUTHORIZATION_FAILED",
    "GROUP_AUTHORIZATION_FAILED",
    "CLUSTER_AUTHORIZATION_FAILED",
    "INVALID_TIMESTAMP",
    "UNSUPPORTED_SASL_MECHANISM",
    "ILLEGAL_SASL_STATE",
    "UNSUPPORTED_VERSION",
    "TOPIC_ALREADY_EXISTS",
    "INVALID_PARTITIONS",
    "INVALID_REPLICATION_FACTOR",
    "INVALID_REPLICA_ASSIGNMENT",
    "INVALID_CONFIG",
    "NOT_CONTROLLER",
    "INVALID_REQUEST",
    "UNSUPPORTED_FOR_MESSAGE_FORMAT",
    "POLICY_VIOLATION",
    "OUT_OF_ORDER_SEQUENCE_NUMBER",
    "DUPLICATE_SEQUENCE_NUMBER",
    "INVALID_PRODUCER_EPOCH",
    "INVALID_TXN_STATE",
    "INVALID_PRODUCER_ID_MAPPING",
    "INVALID_TRANSACTION_TIMEOUT",
    "CONCURRENT_TRANSACTIONS",
    "TRANSACTION_COORDINATOR_FENCED",
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    "SECURITY_DISABLED",
    "OPERATION_NOT_ATTEMPTED",
    "KAFKA_STORAGE_ERROR",
    "LOG_DIR_NOT_FOUND",
    "SASL_AUTHENTICATION_FAILED",
    "UNKNOWN_PRODUCER_ID",
    "REASSIGNMENT_IN_PROGRESS",
    "DELEGATION_TOKEN_AUTH_DISABLED",
    "DELEGATION_TOKEN_NOT_FOUND",
    "DELEGATION_TOKEN_OWNER_MISMATCH",
    "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED",
    "DELEGATION_TOKEN_AUTHORIZATION_FAILED",
    "DELEGATION_TOKEN_EXPIRED",
    "INVALID_PRINCIPAL_TYPE",
    "NON_EMPTY_GROUP",
    "GROUP_ID_NOT_FOUND",
    "FETCH_SESSION_ID_NOT_FOUND",
    "INVALID_FETCH_SESSION_EPOCH",
    "LISTENER_NOT_FOUND",
    "TOPIC_DELETION_DISABLED",
    "FENCED_LEADER_EPOCH",
    "UNKNOWN_LEADER_EPOCH",
    "UNSUPPORTED_COMPRESSION_TYPE",
    "STALE_BROKER_EPOCH",
    "OFFSET_NOT_AVAILABLE",
    "MEMBER_ID_REQUIRED",
    "PREFERRED_LEADER_NOT_AVAILABLE",
    "GROUP_MAX_SIZE_REACHED",
    "FENCED_INSTANCE_ID",
    "ELIGIBLE_LEADERS_NOT_AVAILABLE",
    "ELECTION_NOT_NEEDED",
    "NO_REASSIGNMENT_IN_PROGRESS",
    "GROUP_SUBSCRIBED_TO_TOPIC",
    "INVALID_RECORD",
    "UNSTABLE_OFFSET_COMMIT",
    "THROTTLING_QUOTA_EXCEEDED",
    "PRODUCER_FENCED",
    "RESOURCE_NOT_FOUND",
    "DUPLICATE_RESOURCE",
    "UNACCEPTABLE_CREDENTIAL",
    "INCONSISTENT_VOTER_SET",
    "INVALID_UPDATE_VERSION",
    "FEATURE_UPDATE_FAILED",
    "PRINCIPAL_DESERIALIZATION_FAILURE",
    "SNAPSHOT_NOT_FOUND",
    "POSITION_OUT_OF_RANGE",
    "UNKNOWN_TOPIC_ID",
    "DUPLICATE_BROKER_REGISTRATION",
    "BROKER_ID_NOT_REGISTERED",
    "INCONSISTENT_TOPIC_ID",
    "INCONSISTENT_CLUSTER_ID",
    "TRANSACTIONAL_ID_NOT_FOUND",
    "FETCH_SESSION_TOPIC_ID_ERROR",
    "INELIGIBLE_REPLICA",
    "NEW_LEADER_ELECTED",
    "OFFSET_MOVED_TO_TIERED_STORAGE",
    "FENCED_MEMBER_EPOCH",
    "UNRELEASED_INSTANCE_ID",
    "UNSUPPORTED_ASSIGNOR",
    "STALE_MEMBER_EPOCH",
    "MISMATCHED_ENDPOINT_TYPE",
    "UNSUPPORTED_ENDPOINT_TYPE",
    "UNKNOWN_CONTROLLER_ID",
    "UNKNOWN_SUBSCRIPTION_ID",
    "TELEMETRY_TOO_LARGE",
    "INVALID_REGISTRATION",
    "TRANSACTION_ABORTABLE",
    "INVALID_RECORD_STATE",
    "SHARE_SESSION_NOT_FOUND",
    "INVALID_SHARE_SESSION_EPOCH",
    "FENCED_STATE_EPOCH",
    "INVALID_VOTER_KEY",
    "DUPLICATE_VOTER",
    "VOTER_NOT_FOUND",
    "INVALID_REGULAR_EXPRESSION",
    "REBOOTSTRAP_REQUIRED",
    "STREAMS_INVALID_TOPOLOGY",
    "STREAMS_INVALID_TOPOLOGY_EPOCH",
    "STREAMS_TOPOLOGY_FENCED",
    "SHARE_SESSION_LIMIT_REACHED",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_kafka() {
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(1), "OFFSET_OUT_OF_RANGE");
        assert_eq!(error_name(2), "CORRUPT_MESSAGE");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(35), "UNSUPPORTED_VERSION");
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(37), "INVALID_PARTITIONS");
        assert_eq!(error_name(38), "INVALID_REPLICATION_FACTOR");
        assert_eq!(error_name(40), "INVALID_CONFIG");
        assert_eq!(error_name(41), "NOT_CONTROLLER");
        assert_eq!(error_name(73), "TOPIC_DELETION_DISABLED");
        assert_eq!(error_name(89), "THROTTLING_QUOTA_EXCEEDED");
        assert_eq!(error_name(100), "UNKNOWN_TOPIC_ID");
        assert_eq!(error_name(-2), "UNKNOWN_ERROR_CODE");
        assert_eq!(error_name(999), "UNKNOWN_ERROR_CODE");
    }

    #[test]
    fn names_agree_with_kafka_protocol_crate() {
        use kafka_protocol::error::ResponseError;
        for code in 1..ERROR_NAMES.len() as i16 {
            let camel = ResponseError::try_from_code(code).map(|e| e.to_string());
            let camel = camel.expect("non-zero code");
            let screaming: String = ERROR_NAMES[code as usize]
                .split('_')
                .map(|word| {
                    let mut chars = word.chars();
                    match chars.next() {
                        Some(first) => first.to_string() + &chars.as_str().to_lowercase(),
                        None => String::new(),
                    }
                })
                .collect();
            assert_eq!(screaming, camel, "code {code}");
        }
    }

    #[test]
    fn connect_errors_read_like_the_os_says_them() {
        let err = Error::Connect {
            addr: "127.0.0.1:9092".into(),
            source: std::io::Error::from_raw_os_error(111),
        };
        let text = err.to_string();
        assert!(
            text.starts_with("cannot connect to 127.0.0.1:9092: "),
            "{text}"
        );
        assert!(!text.contains("os error"), "{text}");
    }

    #[test]
    fn kafka_error_displays_context_name_and_message() {
        let err = Error::kafka(
            36,
            "create topic orders",
            Some("Topic 'orders' already exists.".into()),
        );
        assert_eq!(
            err.to_string(),
            "create topic orders: TOPIC_ALREADY_EXISTS (Topic 'orders' already exists.)"
        );
        assert_eq!(err.kafka_code(), Some(TOPIC_ALREADY_EXISTS));
        assert_eq!(
            Error::kafka(3, "x", Some(String::new())).to_string(),
            "x: UNKNOWN_TOPIC_OR_PARTITION"
        );
    }
}
