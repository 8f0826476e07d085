//! [`ControllerChannel`]: how the broker side of a node reaches the active controller. When this
//! node's own quorum leads, requests go in-process to the driver; otherwise over the controller
//! listener to the leader (learned from the quorum, or from the controllers' answers).
//!
//! Leadership can move at any moment, so every call retries on NOT_CONTROLLER (after a short
//! pause for an election) until `controller.quorum.request.timeout.ms` runs out. Clients thus see
//! a controller failover as a slower answer, not an error.

use std::time::Duration;

use skald_controller::{BrokerRegistration, ControllerOp, ControllerReply};
use tokio::time::Instant;

use super::driver::{DriverHandle, Heartbeat, HeartbeatReply};
use super::ControlError;
use crate::controller_plane::client::RemoteControllers;
use crate::controller_plane::rpc::StatusReply;

/// Pause between attempts while no controller answers (an election is usually under way).
const RETRY_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub struct ControllerChannel {
    local: Option<DriverHandle>,
    remote: Option<RemoteControllers>,
    timeout: Duration,
}

impl ControllerChannel {
    pub fn new(
        local: Option<DriverHandle>,
        remote: Option<RemoteControllers>,
        timeout: Duration,
    ) -> Self {
        ControllerChannel {
            local,
            remote,
            timeout,
        }
    }

    /// This node's quorum driver, if it is a controller.
    pub fn local(&self) -> Option<&DriverHandle> {
        self.local.as_ref()
    }

    pub fn remote(&self) -> Option<&RemoteControllers> {
        self.remote.as_ref()
    }

    /// The active controller as far as this node knows.
    pub fn leader(&self) -> Option<i32> {
        self.local
            .as_ref()
            .and_then(DriverHandle::leader)
            .or_else(|| self.remote.as_ref().and_then(RemoteControllers::leader))
    }

    /// Runs an operation on the active controller. The index is set when it ran remotely: the
    /// controller's applied index after the commit, which this node's metadata has yet to reach.
    pub async fn operation(
        &self,
        op: ControllerOp,
    ) -> Result<(ControllerReply, Option<u64>), ControlError> {
        self.retrying(|local, remote| {
            let op = op.clone();
            async move {
                match (local, remote) {
                    (Some(local), _) => local.operation(op).await.map(|reply| (reply, None)),
                    (None, Some(remote)) => remote
                        .operation(op)
                        .await
                        .map(|(reply, index)| (reply, Some(index))),
                    (None, None) => Err(ControlError::NotController(None)),
                }
            }
        })
        .await
    }

    pub async fn register(&self, registration: BrokerRegistration) -> Result<i64, ControlError> {
        self.retrying(|local, remote| {
            let registration = registration.clone();
            async move {
                match (local, remote) {
                    (Some(local), _) => local.register(registration).await,
                    (None, Some(remote)) => remote.register(registration).await,
                    (None, None) => Err(ControlError::NotController(None)),
                }
            }
        })
        .await
    }

    /// One heartbeat; not retried (the next one follows soon), except across a leader change.
    pub async fn heartbeat(&self, heartbeat: Heartbeat) -> Result<HeartbeatReply, ControlError> {
        self.retrying(|local, remote| {
            let heartbeat = heartbeat.clone();
            async move {
                match (local, remote) {
                    (Some(local), _) => local.heartbeat(heartbeat).await,
                    (None, Some(remote)) => remote.heartbeat(heartbeat).await,
                    (None, None) => Err(ControlError::NotController(None)),
                }
            }
        })
        .await
    }

    /// The quorum as the active controller sees it (leader, term, each voter's progress): from
    /// this node's own driver when it leads, else from the leader over the controller listener.
    pub async fn quorum_status(&self) -> Result<StatusReply, ControlError> {
        if let Some(local) = self.local.as_ref().filter(|local| local.is_leader()) {
            if let Some(status) = local.status().await {
                return Ok(StatusReply::from(&status));
            }
        }
        let remote = self
            .remote
            .as_ref()
            .ok_or(ControlError::NotController(None))?;
        let leader = match remote.leader() {
            Some(leader) => leader,
            // Learn the leader from any voter first.
            None => remote
                .status(remote.any_voter())
                .await?
                .and_then(|status| status.leader)
                .ok_or(ControlError::NotController(None))?,
        };
        remote
            .status(leader)
            .await?
            .ok_or(ControlError::NotController(Some(leader)))
    }

    /// Calls the in-process driver when this node leads, the remote leader otherwise, until an
    /// answer other than NOT_CONTROLLER / unreachable, or the deadline.
    async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, ControlError>
    where
        F: FnMut(Option<DriverHandle>, Option<RemoteControllers>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ControlError>>,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            let local = self
                .local
                .as_ref()
                .filter(|local| local.is_leader())
                .cloned();
            let remote = if local.is_some() {
                None
            } else {
                self.remote.clone()
            };
            let waiting_for_local_election = local.is_none() && remote.is_none();
            let outcome = if waiting_for_local_election {
                Err(ControlError::NotController(None))
            } else {
                call(local, remote).await
            };
            match outcome {
                Err(ControlError::NotController(_)) | Err(ControlError::Unavailable(_))
                    if Instant::now() + RETRY_BACKOFF < deadline =>
                {
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                Err(ControlError::NotController(leader)) if Instant::now() >= deadline => {
                    return Err(ControlError::NotController(leader))
                }
                other => return other,
            }
        }
    }
}
