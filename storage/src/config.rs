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
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1024 * 1024 * 1024,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 * 1024 * 1024,
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
        Ok(())
    }
}
