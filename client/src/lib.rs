//! skald-client: a Rust Kafka client (admin, producer, consumer) and the `skald` command-line tool.
//!
//! It speaks Kafka's wire protocol to any Kafka-compatible cluster, Skald or Apache Kafka alike:
//! messages come from the `kafka-protocol` crate, framing from `skald-protocol`, and this crate
//! adds version negotiation, routing to partition leaders, retries, batching and the CLI.
//!
//! # Layout
//!
//! - [`error`]: the crate's [`Error`] and [`Result`]; Kafka error codes by Kafka's names.
//! - [`connection`]: one TCP connection: framing, ApiVersions negotiation, pipelined requests.
//! - [`client`]: the cluster: bootstrap, metadata cache, a connection per broker, leaders.
//! - [`admin`]: create, delete, list and describe topics.
//! - [`cluster`]: the controller quorum and the registered brokers.
//! - [`groups`]: find coordinators; list, describe and delete groups; fetch and commit offsets.
//! - [`partitioner`]: Kafka's murmur2 key partitioner and round robin.
//! - [`records`]: building v2 record batches and reading fetched ones.
//! - [`producer`]: batching per partition, pipelined Produce requests, delivery reports.
//! - [`consumer`]: ListOffsets then Fetch loops over assigned partitions.
//! - [`bench`]: end-to-end produce and consume throughput through this client.
//! - [`cli`]: the `skald` subcommands other than `server`.
//!
//! # Never
//!
//! - panic on anything the network or the user can get wrong: those are [`Error`]s;
//! - wait without a bound: every response has a timeout, every retry loop a maximum;
//! - buffer without a bound: responses are capped in size, requests in flight in number;
//! - depend on the broker's crates: this client must work against any Kafka cluster.

pub mod admin;
pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod groups;
pub mod partitioner;
pub mod producer;
pub mod producers;
pub mod reassignments;
pub mod records;
pub mod transactions;

pub use admin::{ConfigEntry, NewTopic, PartitionDescription, TopicDescription, TopicListing};
pub use client::{Client, ClientConfig};
pub use cluster::{ClusterBroker, ClusterDescription, QuorumDescription, QuorumReplica};
pub use connection::{Connection, ConnectionConfig};
pub use consumer::{Consumer, ConsumerConfig, StartOffset};
pub use error::{Error, Result};
pub use groups::{GroupDescription, GroupListing, GroupMember};
pub use producer::{Acks, Delivery, Producer, ProducerConfig};
pub use records::{ConsumerRecord, ProducerRecord};
