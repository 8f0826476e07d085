//! skald-controller: the cluster metadata. Every change is a versioned [`MetadataRecord`]; one
//! deterministic [`MetadataImage::replay`] turns the ordered records into the image that the broker
//! serves from (KRaft's model).
//!
//! # Layout
//! - [`record`]: the metadata records and their versioned JSON envelope.
//! - [`image`]: [`MetadataImage`] and `replay`, the only code that changes metadata state. Its
//!   big maps are persistent, so a commit costs what it changes, never a copy of the image.
//! - [`delta`]: [`ImageDelta`], what changed between two images, found in time proportional to
//!   the change: how the broker's consumers of the image do O(changes) work per commit.
//! - [`log`]: [`MetadataLog`], the legacy single-node log of record batches, read once to seed
//!   the quorum's first snapshot.
//! - [`controller`]: [`Controller`], whose operations validate a request against the committed
//!   image and plan the records that carry it out plus the reply to send once they commit.
//! - [`ops`]: [`ControllerOp`], the operations brokers send the active controller, and their
//!   replies; producer id blocks (AllocateProducerIds) are planned there.
//! - [`alter_configs`]: config changes to topics and dynamic broker configs (IncrementalAlterConfigs,
//!   AlterConfigs).
//! - [`alter_partition`]: AlterPartition, a partition leader's ISR change, with Kafka's checks.
//! - [`reassignment`]: partition reassignments (AlterPartitionReassignments,
//!   ListPartitionReassignments) and their completion once the target replicas are in sync.
//! - [`election`]: unclean and preferred leader elections (periodic and on request, ElectLeaders),
//!   and their settings.
//! - [`placement`]: where new partitions' replicas go (striped over unfenced brokers, rack-aware).
//! - [`liveness`]: when each broker last heartbeated, as the active controller sees it.
//! - [`policy`]: [`ControllerLoop`], the active controller's event-loop policy (operation queue,
//!   proposal timeouts, fencing, probes of silent brokers, preferred elections), sans-io with an
//!   injected clock: the broker's quorum driver does its I/O.
//! - [`quorum`]: [`Quorum`], this controller's member of the raft quorum that orders committed
//!   record batches; sans-io, driven by the broker's quorum driver.
//! - [`raft_store`]: the raft log as raft-rs reads it, with snapshots built from the applied image.
//! - [`raft_disk`]: [`RaftDisk`], where raft state is made durable: [`FileDisk`] (the
//!   `__cluster_metadata-0` directory) and [`MemDisk`] for tests.
//! - [`raft_wire`]: the checksummed frame raft messages (and log entries) travel in.
//! - [`raft_log_bridge`]: raft-rs's slog records forwarded to tracing.
//! - [`follower`]: [`MetadataFollower`], how brokers that are not controllers follow the
//!   committed metadata, and the [`MetadataUpdate`]s they fetch.
//! - `fuzzing`: what the fuzz targets in `fuzz/` run (metadata records and updates, raft
//!   messages), also run by the stable tests over the committed seed corpus. Not supported API.
//! - `sim` (tests only): a seeded in-process cluster with a faulty network and crashing disks;
//!   `sim::cluster` runs the [`policy`] on every controller, with brokers, a client and paused
//!   processes, and checks the controller's invariants on every tick.
//! - [`topic_config`]: the topic-level configs Skald knows, with their types and broker defaults.
//! - [`names`]: topic name rules.
//!
//! This crate does no network I/O and never changes the image outside `replay`.

pub mod alter_configs;
pub mod alter_partition;
pub mod auto_balance;
pub mod controller;
pub mod delta;
pub mod election;
pub mod error;
pub mod follower;
#[doc(hidden)]
pub mod fuzzing;
pub mod image;
pub mod liveness;
pub mod log;
pub mod names;
pub mod ops;
pub mod placement;
pub mod policy;
pub mod protobuf_guard;
pub mod quorum;
pub mod raft_disk;
pub mod raft_log_bridge;
pub mod raft_store;
pub mod raft_wire;
pub mod reassignment;
pub mod record;
#[cfg(test)]
mod sim;
pub mod snapshot_chunks;
pub mod topic_config;

pub use alter_configs::{AlterConfigsResource, ConfigChanges, ConfigOp};
pub use alter_partition::{
    AlterPartitionError, AlterPartitionReply, AlterPartitionRequest, IsrChange, IsrMember,
    PartitionOutcome, PartitionState, StaleBrokerEpoch,
};
pub use controller::{
    BrokerRegistration, Controller, ControllerConfig, CreatePartitionsSpec, CreateTopicSpec,
    Planned, NO_LEADER,
};
pub use delta::{ImageDelta, TopicDelta};
pub use election::{
    preferred_leader_elections, ElectionConfig, ElectionError, ElectionResult, ElectionType,
};
pub use error::{Error, Result, TopicError};
pub use follower::{MetadataFollower, MetadataUpdate};
pub use image::{
    BrokerImage, MetadataImage, PartitionImage, ProducerIdBlock, TopicImage, PRODUCER_ID_BLOCK_SIZE,
};
pub use log::MetadataLog;
pub use ops::{ControllerOp, ControllerReply, ProducerIdsError, UnregisterBrokerError};
pub use policy::ControllerLoop;
pub use quorum::{ProposalError, ProposeError, Quorum, QuorumConfig, QuorumStatus, VoterStatus};
pub use raft_disk::{DiskState, FileDisk, MemDisk, RaftDisk};
pub use reassignment::{OngoingReassignment, ReassignmentSpec};
pub use record::{ConfigResource, Endpoint, MetadataRecord, TopicId};
