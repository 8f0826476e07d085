//! The broker's errors: failures to start or to keep serving. Request-level problems never become
//! these; they become Kafka error codes in responses.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another process holds the `.lock` of one of this node's log dirs (Kafka's refusal to
    /// share a log dir between two servers).
    #[error("log dir {} is in use by another process (its .lock is held): is another skald server running on it?", dir.display())]
    LogDirLocked { dir: PathBuf },
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] skald_storage::Error),
    #[error(transparent)]
    Metadata(#[from] skald_controller::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("every log dir has failed: {}", dirs.join(", "))]
    EveryLogDirFailed { dirs: Vec<String> },
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
