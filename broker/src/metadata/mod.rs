//! How this node follows and changes the cluster metadata.
//!
//! # Layout
//! - [`driver`]: on controllers, the thread that owns the raft quorum and plans operations.
//! - [`publisher`]: applies each committed image to the hosted partitions, then completes replies.
//! - [`channel`]: [`ControllerChannel`], how the broker reaches the active controller — in-process
//!   when that is this node, over the controller listener otherwise — for metadata operations,
//!   registration, heartbeats and partition leaders' ISR changes ([`AlterPartitionOutcome`]).
//! - [`lifecycle`]: the broker's registration, heartbeats and controlled shutdown.
//! - [`follower`]: on broker-only nodes, fetching committed metadata from the controllers.

pub mod channel;
pub mod driver;
pub mod follower;
pub mod lifecycle;
pub mod publisher;

pub use channel::{AlterPartitionOutcome, ControllerChannel, PartitionAltered};

use kafka_protocol::ResponseError;

/// Why a request to the controller did not get its answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// This node is not the active controller; the leader it knows of, if any.
    #[error("This is not the correct controller for this cluster.")]
    NotController(Option<i32>),
    #[error("The controller did not commit the change in time.")]
    Timeout,
    #[error("The broker epoch is stale: the broker must register again.")]
    StaleBrokerEpoch,
    #[error("{0}")]
    Unavailable(String),
}

impl ControlError {
    /// The Kafka error code a client gets for this failure.
    pub fn code(&self) -> i16 {
        match self {
            ControlError::NotController(_) => ResponseError::NotController.code(),
            ControlError::Timeout => ResponseError::RequestTimedOut.code(),
            ControlError::StaleBrokerEpoch => ResponseError::StaleBrokerEpoch.code(),
            ControlError::Unavailable(_) => ResponseError::UnknownServerError.code(),
        }
    }
}
