//! raft-rs logs through `slog`; Skald logs through `tracing`. This drain forwards raft's records as
//! tracing events with target `raft`, so `RUST_LOG=raft=debug` works like any other target and no
//! second logging stack (raft's `default-logger` feature pulls in about 25 crates) is built.
//!
//! Formatting is skipped unless tracing would record the event: raft logs at debug level on every
//! message, and the metadata quorum must cost nothing when nobody listens.

use std::fmt::{self, Write as _};

use slog::{Drain, Key, Level, OwnedKVList, Record, Serializer, KV};

/// A [`slog::Logger`] whose records become tracing events (target `raft`) carrying `node_id`.
pub fn raft_logger(node_id: i32) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("node_id" => node_id))
}

/// Forwards slog records to tracing.
#[derive(Debug, Clone, Copy)]
pub struct TracingDrain;

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let enabled = match record.level() {
            Level::Critical | Level::Error => {
                tracing::enabled!(target: "raft", tracing::Level::ERROR)
            }
            Level::Warning => tracing::enabled!(target: "raft", tracing::Level::WARN),
            Level::Info => tracing::enabled!(target: "raft", tracing::Level::INFO),
            Level::Debug => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
            Level::Trace => tracing::enabled!(target: "raft", tracing::Level::TRACE),
        };
        if !enabled {
            return Ok(());
        }
        let mut kv = KeyValues(String::new());
        // Formatting into a String cannot fail, and a failure would only shorten the line.
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let (message, kv) = (record.msg(), kv.0);
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{message}{kv}"),
            Level::Warning => tracing::warn!(target: "raft", "{message}{kv}"),
            Level::Info => tracing::info!(target: "raft", "{message}{kv}"),
            Level::Debug => tracing::debug!(target: "raft", "{message}{kv}"),
            Level::Trace => tracing::trace!(target: "raft", "{message}{kv}"),
        }
        Ok(())
    }
}

/// Appends ` key=value` for each key-value pair.
struct KeyValues(String);

impl Serializer for KeyValues {
    fn emit_arguments(&mut self, key: Key, value: &fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_formatted_with_their_key_values() {
        let logger = raft_logger(3);
        // With no subscriber nothing is enabled: this must return without formatting.
        slog::info!(logger, "became leader"; "term" => 2);
        let mut kv = KeyValues(String::new());
        kv.emit_arguments("term", &format_args!("{}", 2)).unwrap();
        kv.emit_arguments("raft_id", &format_args!("{}", 4))
            .unwrap();
        assert_eq!(kv.0, " term=2 raft_id=4");
    }
}
