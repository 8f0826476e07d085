//! skald-controller: the cluster metadata. Every change is a versioned [`MetadataRecord`]; one
//! deterministic [`MetadataImage::replay`] turns the ordered records into the image that the broker
//! serves from (KRaft's model).
//!
//! # Layout
//! - [`record`]: the metadata records and their versioned JSON envelope.
//! - [`image`]: [`MetadataImage`] and `replay`, the only code that changes metadata state.
//! - [`log`]: [`MetadataLog`], the durable local log of record batches (one batch per operation).
//! - [`controller`]: [`Controller`], whose operations validate a request against the image, produce
//!   records and a reply, and return only once the records are durable and replayed.
//! - [`topic_config`]: the topic-level configs Skald knows, with their types and broker defaults.
//! - [`names`]: topic name rules.
//!
//! Until the Raft quorum lands, the local log is the commit point; the controller issue replaces it
//! with raft-rs behind the same `Controller` operations and the same `replay`. This crate does no
//! network I/O and never changes the image outside `replay`.

pub mod controller;
pub mod error;
pub mod image;
pub mod log;
pub mod names;
pub mod record;
pub mod topic_config;

pub use controller::{Controller, ControllerConfig, CreatePartitionsSpec, CreateTopicSpec};
pub use error::{Error, Result, TopicError};
pub use image::{BrokerImage, MetadataImage, PartitionImage, TopicImage};
pub use log::MetadataLog;
pub use record::{ConfigResource, Endpoint, MetadataRecord, TopicId};
