//! skald-protocol: Kafka's wire protocol, sans-io. Bytes in, typed requests out, and back.
//!
//! # Layout
//! - [`frame`]: the 4-byte size prefix, with `socket.request.max.bytes` enforced before allocating.
//! - [`batch`]: a zero-copy view over RecordBatch v2 headers, CRC32C checks and in-place patching.
//!
//! This crate never does I/O and never decodes records on the produce or fetch path.

pub mod batch;
pub mod frame;
