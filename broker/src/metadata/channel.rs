//! [`ControllerChannel`]: how the broker side of a node reaches the active controller. When this
//! node's own quorum leads, requests go in-process to the driver; otherwise over the controller
//! listener to the leader (learned from the quorum, or from the controllers' answers).
//!
//! Leadership can move at any moment, so every call retries on NOT_CONTROLLER (after a short
//! pause for an election) until `controller.quorum.request.timeout.ms` runs out. Clients thus see
//! a controller failover as a slower answer, not an error.
//!
//! Heartbeats are held to a much shorter clock (KRaft's BrokerLifecycleManager): each attempt
//! gets [`ControllerChannel::with_heartbeat_timeout`] (a quarter of `broker.session.timeout.ms`)
//! and a silent controller is left for another voter at once, so a broker whose controller
//! stalled or died reaches the new one well inside the session the new one gives it.

use std::time::Duration;

use skald_controller::{
    AlterPartitionError, AlterPartitionRequest, BrokerRegistration, ControllerOp, ControllerReply,
    MetadataImage, PartitionOutcome, TopicId,
};
use tokio::time::Instant;

use super::driver::{DriverHandle, Heartbeat, HeartbeatReply};
use super::ControlError;
use crate::controller_plane::client::RemoteControllers;
use crate::controller_plane::rpc::StatusReply;

/// Pause between attempts while no controller answers (an election is usually under way).
const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// One partition's answer to an AlterPartition: which partition, and its state after the change
/// (the current state for an unchanged ISR) or why the change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAltered {
    pub topic_id: TopicId,
    pub partition: i32,
    pub result: PartitionOutcome,
}

/// What an AlterPartition came to, partition by partition in request order.
///
/// Accepted changes have committed, but this node's metadata may not show them yet when another
/// node is the active controller: [`AlterPartitionOutcome::is_applied_in`] tells when it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionOutcome {
    pub partitions: Vec<PartitionAltered>,
}

impl AlterPartitionOutcome {
    /// Whether `image` reflects every accepted change: each such partition is at the partition
    /// epoch the controller reported, or later (or gone). Refused changes need nothing.
    pub fn is_applied_in(&self, image: &MetadataImage) -> bool {
        self.partitions.iter().all(|altered| {
            let Ok(state) = &altered.result else {
                return true;
            };
            image
                .topic_by_id(altered.topic_id)
                .and_then(|topic| topic.partitions.get(&altered.partition))
                .is_none_or(|partition| partition.partition_epoch >= state.partition_epoch)
        })
    }
}

/// Which failures [`ControllerChannel::retrying_until`] tries again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// NOT_CONTROLLER and unreachable controllers. A timeout is final: the controller may have
    /// carried the request out.
    Unreachable,
    /// Those and timeouts: for requests that may safely arrive twice (heartbeats).
    AlsoTimeouts,
}

#[derive(Debug, Clone)]
pub struct ControllerChannel {
    local: Option<DriverHandle>,
    remote: Option<RemoteControllers>,
    timeout: Duration,
    heartbeat_timeout: Duration,
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
            heartbeat_timeout: timeout,
        }
    }

    /// How long one heartbeat attempt may wait for its answer; a heartbeat tries other voters
    /// for twice that.
    pub fn with_heartbeat_timeout(mut self, heartbeat_timeout: Duration) -> Self {
        self.heartbeat_timeout = heartbeat_timeout;
        self
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

    /// One heartbeat: each attempt bounded by the heartbeat timeout, sent again to another
    /// voter on NOT_CONTROLLER, a lost connection or no answer; no attempt starts later than
    /// twice that timeout (the next heartbeat follows soon). Every attempt gets the whole
    /// timeout: one cut short would count a slow but live controller as silent.
    pub async fn heartbeat(&self, heartbeat: Heartbeat) -> Result<HeartbeatReply, ControlError> {
        let attempt = self.heartbeat_timeout;
        let deadline = Instant::now() + attempt * 2;
        self.retrying_until(deadline, Retry::AlsoTimeouts, |local, remote| {
            let heartbeat = heartbeat.clone();
            async move {
                match (local, remote) {
                    (Some(local), _) => tokio::time::timeout(attempt, local.heartbeat(heartbeat))
                        .await
                        .unwrap_or(Err(ControlError::Timeout)),
                    (None, Some(remote)) => remote.heartbeat(heartbeat, attempt).await,
                    (None, None) => Err(ControlError::NotController(None)),
                }
            }
        })
        .await
    }

    /// A partition leader's ISR changes (AlterPartition), on the active controller: in-process
    /// when this node's quorum leads, else as a Kafka AlterPartition (v3) over the controller
    /// listener. NOT_CONTROLLER is retried until `controller.quorum.request.timeout.ms`, for the
    /// whole request or for single partitions (a controller whose metadata is behind the
    /// leader's answers NOT_CONTROLLER for those partitions, as in Kafka); a partition still
    /// answered so at the deadline keeps that answer. STALE_BROKER_EPOCH (the requester must
    /// register again) and other failures of the whole request are the error.
    ///
    /// On return the accepted changes have committed; when this node ran them in-process it
    /// already serves them, otherwise its metadata may lag: see
    /// [`AlterPartitionOutcome::is_applied_in`].
    pub async fn alter_partition(
        &self,
        request: AlterPartitionRequest,
    ) -> Result<AlterPartitionOutcome, ControlError> {
        let deadline = Instant::now() + self.timeout;
        let behind = Err(AlterPartitionError::NotController);
        let mut results: Vec<PartitionOutcome> = vec![behind.clone(); request.partitions.len()];
        let mut pending: Vec<usize> = (0..results.len()).collect();
        while !pending.is_empty() {
            let asked = AlterPartitionRequest {
                partitions: pending
                    .iter()
                    .map(|&i| request.partitions[i].clone())
                    .collect(),
                ..request.clone()
            };
            let answers = self
                .retrying_until(deadline, Retry::Unreachable, |local, remote| {
                    let asked = asked.clone();
                    async move {
                        match (local, remote) {
                            (Some(local), _) => local.alter_partition(asked).await,
                            (None, Some(remote)) => remote.alter_partition(&asked).await,
                            (None, None) => Err(ControlError::NotController(None)),
                        }
                    }
                })
                .await?;
            if answers.len() != pending.len() {
                return Err(ControlError::Unavailable(format!(
                    "the controller answered {} of {} partitions",
                    answers.len(),
                    pending.len()
                )));
            }
            for (&i, answer) in pending.iter().zip(answers) {
                results[i] = answer;
            }
            pending.retain(|&i| results[i] == behind);
            if pending.is_empty() || Instant::now() + RETRY_BACKOFF >= deadline {
                break;
            }
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
        let partitions = request
            .partitions
            .iter()
            .zip(results)
            .map(|(change, result)| PartitionAltered {
                topic_id: change.topic_id,
                partition: change.partition,
                result,
            })
            .collect();
        Ok(AlterPartitionOutcome { partitions })
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
    async fn retrying<T, F, Fut>(&self, call: F) -> Result<T, ControlError>
    where
        F: FnMut(Option<DriverHandle>, Option<RemoteControllers>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ControlError>>,
    {
        self.retrying_until(Instant::now() + self.timeout, Retry::Unreachable, call)
            .await
    }

    /// [`ControllerChannel::retrying`] with the deadline given.
    async fn retrying_until<T, F, Fut>(
        &self,
        deadline: Instant,
        retry: Retry,
        mut call: F,
    ) -> Result<T, ControlError>
    where
        F: FnMut(Option<DriverHandle>, Option<RemoteControllers>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ControlError>>,
    {
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
            if let (Some(remote), Some(leader)) =
                (&remote, self.local.as_ref().and_then(DriverHandle::leader))
            {
                // This node's own quorum member learns of a new leader first: address it at once
                // rather than wait for a NOT_CONTROLLER from the old one.
                remote.learn_leader(Some(leader));
            }
            let waiting_for_local_election = local.is_none() && remote.is_none();
            let outcome = if waiting_for_local_election {
                Err(ControlError::NotController(None))
            } else {
                call(local, remote).await
            };
            let retriable = match &outcome {
                Err(ControlError::NotController(_)) | Err(ControlError::Unavailable(_)) => true,
                Err(ControlError::Timeout) => retry == Retry::AlsoTimeouts,
                _ => false,
            };
            match outcome {
                Err(ControlError::Timeout) if retriable && Instant::now() < deadline => {
                    // The voter that did not answer is no longer taken for the leader: the next
                    // attempt goes elsewhere at once.
                }
                Err(_) if retriable && Instant::now() + RETRY_BACKOFF < deadline => {
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
