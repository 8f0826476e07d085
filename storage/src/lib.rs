//! skald-storage: partition logs on local disk, in Kafka's file layout.
//!
//! A partition is a directory `<log.dir>/<topic>-<partition>/` of segments, each a `.log` of record
//! batches exactly as producers sent them (offsets patched in), with a sparse `.index` and
//! `.timeindex` named by the same 20-digit base offset. Indexes are derived data, rebuilt when
//! missing or wrong; on open, the tail of the active segment is validated batch by batch and torn
//! bytes are cut off. Reads are zero-copy [`bytes::Bytes`] over memory-mapped segments.
//!
//! Resources are bounded as in Kafka: an open partition holds one file descriptor (its active
//! segment's `.log`; maps outlive the descriptors they were made from), and a sealed segment
//! found on open is mapped only when first read ([`Log::unload_sealed_segments`] unmaps them
//! again).
//!
//! # Layout
//! - [`log`]: [`Log`], one partition: open/recovery (from a recovery point), append, flush
//!   policies (`flush.messages`, `flush_if_due` for `flush.ms`), read, offset-by-timestamp,
//!   retention (`delete_old_segments`), DeleteRecords (`delete_records_before`), delete; for
//!   replication, the follower's append (`append_as_follower`, batches kept as the leader stored
//!   them), the leader epochs (`assign_leader_epoch`, `end_offset_for_epoch`) and truncation
//!   (`truncate_to`, `truncate_fully_and_start_at`: files that may be mapped are replaced, never
//!   shrunk, so fetched bytes stay valid).
//! - [`leader_epoch`]: the leader epoch cache a log keeps (Kafka's `LeaderEpochFileCache`) and
//!   its `leader-epoch-checkpoint` file.
//! - [`producer_state`]: each idempotent producer's epoch and last batches (Kafka's
//!   `ProducerStateManager`), rebuilt from the log and its `.snapshot` files; what lets a leader
//!   answer a retry with the original offsets and refuse a sequence gap or a fenced epoch.
//! - [`txn_index`]: the aborted transactions a `read_committed` fetch reports (Kafka's
//!   `TransactionIndex`), one file per partition, rebuilt with the producer state.
//! - [`log_validator`]: the checks a leader makes on a client's batch before appending it
//!   (Kafka's `LogValidator`: record count, offset deltas, sequence), compressed ones included.
//! - [`cleaner`]: log compaction (`Log::compact`, Kafka's `LogCleaner`) for
//!   `cleanup.policy=compact`, its crash-safe segment swap (truncation commits through it too)
//!   and its per-partition checkpoint.
//! - [`checkpoint`]: the per-log-dir `recovery-point-offset-checkpoint` and clean shutdown
//!   marker.
//! - [`clock`]: the [`Clock`] segment.ms and retention.ms are judged by (fake in tests).
//! - [`segment`]: one segment (`.log` + indexes, loaded lazily once sealed), roll decisions,
//!   batch lookups.
//! - `index`: the offset and time indexes.
//! - `mmap`: every memory map and all of the crate's `unsafe`.
//! - [`dir`]: partition directory names and the scan of a log directory.
//! - [`config`]: [`LogConfig`], Kafka's property names and defaults.
//! - [`error`]: [`Error`] and [`Result`].
//! - [`fault`]: [`DiskFaults`], write faults (ENOSPC after k bytes) injected by tests.
//! - `fuzzing`: what the fuzz targets in `fuzz/` run (a client's batch down the produce path,
//!   crash recovery of a damaged partition directory), also run by the stable tests over the
//!   committed seed corpus. Not part of the supported API.
//!
//! This crate never touches the network, never decodes or re-encodes records outside the cleaner
//! (appends and reads see batch headers through `skald_protocol::batch` and nothing more), and
//! never writes a byte it has not validated as part of a whole v2 batch, and never leaves the
//! prefix of a failed write behind (it is cut off, or the log refuses everything until reopened).

pub mod checkpoint;
pub mod cleaner;
pub mod clock;
pub mod config;
pub mod dir;
pub mod error;
pub mod fault;
#[doc(hidden)]
pub mod fuzzing;
mod index;
pub mod leader_epoch;
pub mod log;
pub mod log_validator;
mod mmap;
pub mod producer_state;
pub mod segment;
pub mod txn_index;

pub use checkpoint::{
    read_offset_checkpoint, take_clean_shutdown_marker, write_clean_shutdown_marker,
    write_offset_checkpoint, OffsetCheckpoint, CLEAN_SHUTDOWN_FILE, RECOVERY_POINT_CHECKPOINT_FILE,
};
pub use cleaner::{CompactionOptions, CompactionStats, CLEANER_OFFSET_FILE};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::LogConfig;
pub use dir::{
    parse_partition_dir_name, partition_dir_name, scan_log_dir, DELETE_DIR_SUFFIX,
    FUTURE_DIR_SUFFIX,
};
pub use error::{Error, Result};
pub use fault::DiskFaults;
pub use leader_epoch::{EpochEntry, LEADER_EPOCH_CHECKPOINT_FILE};
pub use log::{
    AppendInfo, DeletedSegments, Log, LogOpenOptions, PendingFlush, ReadResult,
    LEADER_EPOCH_REBUILD_BYTES_MAX, LOG_START_OFFSET_FILE,
};
pub use producer_state::{
    BatchMetadata, CompletedTxn, ProducerCheck, ProducerError, ProducerStateEntry,
    ProducerStateManager, TxnVerification,
};
pub use segment::segment_file_name;
pub use txn_index::{AbortedTxn, TXN_INDEX_FILE};
