//! The crate's one error type.

use std::io;
use std::path::{Path, PathBuf};

use skald_protocol::batch::BatchError;

/// Everything that can go wrong in a partition log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error, with the file or directory it happened on.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A read or lookup for an offset outside `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// Bytes given to `append` are not whole, valid v2 batches.
    #[error("corrupt record batch: {0}")]
    CorruptBatch(#[from] BatchError),
    /// `append` was given no batches.
    #[error("append of an empty buffer")]
    EmptyAppend,
    /// One append larger than a segment can address (positions are 32-bit, as in Kafka).
    #[error("append of {size} bytes exceeds the largest possible segment")]
    AppendTooLarge { size: usize },
    /// A write to a segment failed and its partial bytes could not be cut off: the segment file
    /// holds bytes past what the log accounts for. The log refuses everything from then on.
    #[error("write to {} failed ({write}) and its partial bytes could not be cut off: {cut}", path.display())]
    TornAppend {
        path: PathBuf,
        write: io::Error,
        cut: io::Error,
    },
    /// The log was failed by an earlier [`Error::TornAppend`]; reopening it (a restart) recovers
    /// it by validating the segment's tail.
    #[error("log {} is failed after a torn write; it refuses appends and reads until reopened", dir.display())]
    LogFailed { dir: PathBuf },
    /// A follower append ([`crate::Log::append_as_follower`]) whose batches do not continue the
    /// log: a batch starts below the log end offset, or below the end of the batch before it.
    /// Nothing was written (Kafka's `UnexpectedAppendOffsetException`).
    #[error("unexpected append offset: a batch starts at {base_offset}, expected at least {expected_at_least}")]
    UnexpectedAppendOffset {
        base_offset: i64,
        expected_at_least: i64,
    },
    /// One append whose offsets span more than one segment can address (index offsets are 32-bit,
    /// relative to the segment's base). Nothing was written.
    #[error(
        "append of offsets {first_offset}..={last_offset} spans more than one segment can address"
    )]
    AppendOffsetSpanTooLarge { first_offset: i64, last_offset: i64 },
    /// A client's batch whose header disagrees with its records (Kafka's INVALID_RECORD; see
    /// [`crate::log_validator`]). Nothing was written.
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),
    /// A client's idempotent batch its producer's state refuses (a fenced epoch or a sequence
    /// gap). Nothing was written.
    #[error(transparent)]
    Producer(#[from] crate::producer_state::ProducerError),
    /// A `LogConfig` that cannot work.
    #[error("invalid log config: {0}")]
    InvalidConfig(String),
}

impl Error {
    /// The error came from the disk (an I/O error or a torn log), not from the request: the log
    /// dir it happened in should be taken offline.
    pub fn is_disk_failure(&self) -> bool {
        matches!(
            self,
            Error::Io { .. } | Error::TornAppend { .. } | Error::LogFailed { .. }
        )
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches the path an I/O error happened on.
pub(crate) trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
