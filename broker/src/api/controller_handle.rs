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

/// A controller for handler tests: the image a test sets, and one canned reply per operation,
/// in order; every operation asked for is kept.
#[cfg(test)]
pub(crate) struct CannedController {
    pub image: Arc<MetadataImage>,
    pub replies:
        std::sync::Mutex<std::collections::VecDeque<Result<ControllerReply, ControlError>>>,
    pub ops: std::sync::Mutex<Vec<ControllerOp>>,
}

#[cfg(test)]
impl CannedController {
    pub fn new(replies: Vec<Result<ControllerReply, ControlError>>) -> CannedController {
        CannedController {
            image: Arc::default(),
            replies: std::sync::Mutex::new(replies.into()),
            ops: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn take_ops(&self) -> Vec<ControllerOp> {
        std::mem::take(&mut *self.ops.lock().unwrap())
    }
}

#[cfg(test)]
impl ControllerHandle for CannedController {
    fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.image)
    }

    fn control(&self, op: ControllerOp) -> ControlFuture<'_> {
        self.ops.lock().unwrap().push(op);
        let reply = self
            .replies
            .lock()
            .unwrap()
            .pop_front()
            .expect("a reply for every operation");
        Box::pin(std::future::ready(reply))
    }
}
