//! The controller plane: what travels on the controller listener (`controller.listener.names`),
//! between controllers and from brokers to controllers — never client traffic.
//!
//! # Layout
//! - [`server`]: serves the controller listener. A connection that opens with [`RAFT_MAGIC`] is a
//!   raft peer's one-way message stream; any other carries Kafka-framed requests (ApiVersions,
//!   BrokerRegistration, BrokerHeartbeat, AlterPartition and Skald's private [`rpc`]).
//! - [`transport`]: raft messages to the other voters, one reconnecting stream per peer.
//! - [`client`]: [`client::RemoteControllers`], a broker's requests to the active controller.
//! - [`rpc`]: Skald's private controller RPC (forwarded operations, metadata fetch, status).
//! - [`alter_partition`]: AlterPartition's wire form to and from the controller's types.
//! - [`departure`]: evident death — a broker whose heartbeat connection closed and whose
//!   listener refuses connections is fenced without waiting out its session.
//! - [`unresponsive`]: the probe of a silent broker's listener, which with
//!   `broker.unresponsive.fencing.enable` also asks it for ApiVersions: a silent broker that
//!   does not answer either is fenced too, unless the controller itself was the one stalled.

pub mod alter_partition;
pub mod client;
pub mod departure;
pub mod rpc;
pub mod server;
pub mod transport;
pub mod unresponsive;

/// The first bytes of a raft peer stream. As a Kafka frame size it would be over 1.3 GB, which
/// no listener accepts, so the two kinds of connection cannot be confused.
pub const RAFT_MAGIC: [u8; 4] = *b"SKRF";

#[cfg(test)]
mod tests;
