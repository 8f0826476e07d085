//! skald-protocol: Kafka's wire protocol, sans-io. Bytes in, typed requests out, and back.
//!
//! # Layout
//! - [`frame`]: the 4-byte size prefix, with `socket.request.max.bytes` enforced before allocating.
//! - [`codec`]: request decoding and response encoding over kafka-protocol's message types, per
//!   listener; and the client side (request frames out, responses in) for the broker's own calls
//!   to the controller.
//! - [`pieces`]: response frames as pieces, a Fetch response's record bytes shared rather than
//!   copied, for vectored writes.
//! - [`precheck`]: a structural walk over each request body that refuses impossible lengths before
//!   kafka-protocol decodes it (its decoders allocate whatever array length the wire declares).
//! - [`api_versions`]: exactly the APIs and versions Skald implements (what ApiVersions advertises),
//!   one table for the client listener and one for the CONTROLLER listener.
//! - [`legacy`]: request versions Kafka 3.9 served that kafka-protocol no longer decodes (OffsetCommit
//!   v1), rewritten into one it does.
//! - [`batch`]: a zero-copy view over RecordBatch v2 headers, CRC32C checks and in-place patching.
//! - `fuzzing`: what the fuzz targets in `fuzz/` run (request decoding, batch walks), also run by
//!   the stable tests over the committed seed corpus. Not part of the supported API.
//!
//! This crate never does I/O and never decodes records on the produce or fetch path.

pub mod api_versions;
pub mod batch;
pub mod codec;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod legacy;
pub mod pieces;
pub mod precheck;
