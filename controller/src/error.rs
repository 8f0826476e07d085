//! Errors of the metadata layer.

use std::path::PathBuf;

/// A failure of the metadata log itself: the operation's outcome is unknown to the caller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("metadata log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata log {path} is corrupt at byte {position}: {reason}; refusing to start rather than lose committed metadata")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("metadata record cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(
        "metadata log {path} refuses further metadata changes until the server restarts: {reason}"
    )]
    Failed { path: PathBuf, reason: String },
    #[error("metadata record batch of {size} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge { size: usize, max: usize },
    /// Raft itself refused: a configuration it rejects, or a state it cannot start from.
    #[error("metadata quorum: {0}")]
    Raft(#[from] raft::Error),
    /// The quorum cannot start as configured (e.g. a legacy log with more than one voter).
    #[error("metadata quorum cannot start: {0}")]
    Bootstrap(String),
    /// A committed metadata entry or snapshot that this Skald cannot read: applying past it would
    /// make this node's image differ from the others'.
    #[error("committed metadata at index {index} cannot be read: {reason}")]
    Unreadable { index: u64, reason: String },
    /// A raft message frame from a peer that is not a valid frame: the connection must be dropped.
    #[error("invalid raft message frame: {0}")]
    Frame(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why one topic of a CreateTopics / DeleteTopics / CreatePartitions request was refused.
/// The broker maps each variant to the Kafka error code of the same name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum TopicError {
    #[error("Topic '{0}' already exists.")]
    TopicAlreadyExists(String),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("This server does not host this topic-partition.")]
    UnknownTopicOrPartition,
    #[error("This server does not host this topic ID.")]
    UnknownTopicId,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("No partition reassignment is in progress.")]
    NoReassignmentInProgress,
}
