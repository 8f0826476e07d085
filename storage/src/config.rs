//! Per-partition log settings, named after Kafka's properties.

use crate::error::{Error, Result};

/// Settings of one partition log. [`Default`] matches Kafka's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `log.segment.bytes` / `segment.bytes`: roll to a new segment past this size (1 GiB).
    pub segment_bytes: u64,
    /// `index.interval.bytes`: log bytes between sparse index entries (4096).
    pub index_interval_bytes: u32,
    /// `segment.index.bytes` / `log.index.size.max.bytes`: size preallocated per index file (10 MiB).
    pub segment_index_bytes: u32,
    /// `segment.ms` / `log.roll.ms`: roll a non-empty active segment once the batches appended span
    /// more than this (7 days). Judged as Kafka does: the incoming batches' max timestamp minus the
    /// segment's first batch's max timestamp, or, when that batch has no timestamp, the clock minus
    /// the time the segment was created or opened.
    pub segment_ms: i64,
    /// `retention.ms` / `log.retention.ms`: delete segments whose largest timestamp is more than this
    /// old (7 days); -1 keeps them forever.
    pub retention_ms: i64,
    /// `retention.bytes` / `log.retention.bytes`: delete the oldest segments while the log would
    /// still hold at least this many bytes without them; -1 (the default) means no size limit.
    pub retention_bytes: i64,
    /// `flush.messages` / `log.flush.interval.messages`: fsync the log once this many messages
    /// (offsets) have been appended since the last flush; `i64::MAX` (the default) leaves it to the
    /// OS and to rolls.
    pub flush_messages: i64,
    /// `flush.ms` / `log.flush.interval.ms`: fsync the log once this long has passed since the last
    /// flush, checked every `log.flush.scheduler.interval.ms` ([`crate::Log::flush_if_due`]);
    /// `i64::MAX` (the default) never.
    pub flush_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1024 * 1024 * 1024,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
        }
    }
}

impl LogConfig {
    /// Kafka's lower bound for `segment.bytes` is 14 bytes; positions are 32-bit, so `i32::MAX` above.
    pub fn validate(&self) -> Result<()> {
        if !(14..=i32::MAX as u64).contains(&self.segment_bytes) {
            return Err(Error::InvalidConfig(format!(
                "segment.bytes {} is outside [14, {}]",
                self.segment_bytes,
                i32::MAX
            )));
        }
        // Room for at least two time index entries (one is kept for the entry written on roll).
        if self.segment_index_bytes < 24 {
            return Err(Error::InvalidConfig(format!(
                "segment.index.bytes {} is below 24",
                self.segment_index_bytes
            )));
        }
        if self.segment_ms < 1 {
            return Err(Error::InvalidConfig(format!(
                "segment.ms {} is below 1",
                self.segment_ms
            )));
        }
        // Kafka's bounds: flush.messages at least 1, flush.ms at least 0.
        if self.flush_messages < 1 {
            return Err(Error::InvalidConfig(format!(
                "flush.messages {} is below 1",
                self.flush_messages
            )));
        }
        if self.flush_ms < 0 {
            return Err(Error::InvalidConfig(format!(
                "flush.ms {} is below 0",
                self.flush_ms
            )));
        }
        Ok(())
    }
}
