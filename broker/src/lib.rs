//! skald-broker: the Kafka API server.
//!
//! # Layout
//! - [`config`]: [`ServerConfig`], Kafka's property names with embedded defaults.
//! - [`dynamic_config`]: dynamic broker configs from the metadata image over the static ones.
//! - [`server`]: listeners, the connection limit, graceful shutdown.
//! - [`connection`]: one client connection: frames in, responses out, in order.
//! - [`api`]: one module per Kafka API and the dispatch between them.
//! - [`broker`]: [`Broker`], the state every connection shares (metadata image, controller channel,
//!   logs).
//! - [`metadata`]: following and changing the cluster metadata: the raft quorum driver, the
//!   image publisher, the broker's registration and heartbeats, broker-only metadata fetching.
//! - [`controller_plane`]: the controller listener, the raft transport between voters, and the
//!   broker's client for the active controller.
//! - [`group`]: the group coordinator: consumer-group membership and committed offsets.
//! - [`replica_manager`]: the hosted partitions and their logs, kept in line with the metadata.
//! - [`log_flusher`]: the fsyncs segment rolls leave pending, run off the partitions' locks.
//! - [`fetch_session`]: fetch sessions (KIP-227): the bounded cache, incremental fetches.
//! - [`replication`]: followers fetching from leaders, the high watermark, ISR changes through
//!   the controller, leader-epoch truncation.
//! - [`metrics`]: Prometheus metrics and the `/metrics` endpoint.
//! - `sim` (tests only): a seeded simulation of replication — three brokers' real logs and
//!   replica states, the real controller's decisions, a faulty network, crashes and power-offs —
//!   checking that no acknowledged record is lost and that replicas agree.
//! - `fuzzing`: what the `group_records` fuzz target in `fuzz/` runs, also run by the stable
//!   tests over the committed seed corpus. Not part of the supported API.
//!
//! Bad input from a client gets a Kafka error code or a closed connection and a log line; it must
//! never panic the process or reach the logs unvalidated.

pub mod api;
pub mod broker;
pub mod config;
pub mod connection;
pub mod controller_plane;
pub mod dynamic_config;
pub mod error;
pub mod fetch_session;
pub mod fetch_waiters;
#[doc(hidden)]
pub mod fuzzing;
pub mod group;
pub mod log_flusher;
pub mod metadata;
pub mod metrics;
pub mod peers;
pub mod producer_ids;
pub mod replica_manager;
pub mod replication;
pub mod server;
#[cfg(test)]
mod sim;
pub mod txn;

pub use broker::Broker;
pub use config::ServerConfig;
pub use error::{Error, Result};
pub use server::{run, run_until_signal};
