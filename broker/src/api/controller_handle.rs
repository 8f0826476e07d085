//! [`ControllerHandle`]: the controller as a handler reaches it — the metadata image this broker
//! serves, and the metadata operations it forwards to the active controller (answered once
//! committed and, here, served). The broker implements it over its controller channel; a test
//! implements it over an image it changes itself, so a handler that creates topics (such as
//! FindCoordinator's internal topics) runs without a quorum.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use skald_controller::{ControllerOp, ControllerReply, MetadataImage};

use crate::broker::Broker;
use crate::metadata::ControlError;

/// A forwarded operation's reply, to be awaited.
pub type ControlFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ControllerReply, ControlError>> + Send + 'a>>;

pub trait ControllerHandle: Send + Sync {
    /// The metadata image served now.
    fn image(&self) -> Arc<MetadataImage>;

    /// Has the active controller carry out `op` (see [`Broker::control`]).
    fn control(&self, op: ControllerOp) -> ControlFuture<'_>;
}

impl ControllerHandle for Broker {
    fn image(&self) -> Arc<MetadataImage> {
        Broker::image(self)
    }

    fn control(&self, op: ControllerOp) -> ControlFuture<'_> {
        Box::pin(Broker::control(self, op))
    }
}
