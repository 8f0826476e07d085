//! The coordinator's narrow handle on `__consumer_offsets` (the seam between the group APIs and
//! the replicas): whether this broker leads a partition of it, and appending records to one.
//! The broker implements it over its replica manager ([`persistence::append_to_partition`]);
//! tests of the group handlers implement it in memory, so a handler runs without a broker, a log
//! or a network, and a test can make the partition led elsewhere or an append fail.
//!
//! [`persistence::append_to_partition`]: super::persistence::append_to_partition

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use skald_controller::names::CONSUMER_OFFSETS_TOPIC;
use tokio::time::Instant;

use crate::broker::Broker;
use crate::replication::ReplicationWait;

/// One `__consumer_offsets` record: key, and value (`None`: a tombstone).
pub type OffsetsRecord = (Bytes, Option<Bytes>);

/// The `__consumer_offsets` partitions this broker can coordinate groups from.
pub trait OffsetsLog: Send + Sync {
    /// Whether this broker leads and hosts `__consumer_offsets-<partition>`:
    /// COORDINATOR_NOT_AVAILABLE before the topic exists, NOT_COORDINATOR when another broker
    /// leads it.
    fn check_leader(&self, partition: i32) -> Result<(), ResponseError>;

    /// Appends `records` to `__consumer_offsets-<partition>` as one batch (timestamped
    /// `now_ms`), if this broker leads it; the wait for the batch's replication. Blocking: callers
    /// hold the group's lock, so the log holds one group's records in the order they happened.
    fn append(
        &self,
        partition: i32,
        records: &[OffsetsRecord],
        now_ms: i64,
    ) -> Result<AppendWait, ResponseError>;
}

/// The replication of an append, still to be waited for (without the group's lock).
pub struct AppendWait(Box<dyn AwaitReplication>);

impl AppendWait {
    /// An append whose outcome is already known (what in-memory logs hand back).
    pub fn ready(result: Result<(), ResponseError>) -> AppendWait {
        AppendWait(Box::new(Ready(result)))
    }

    /// Done once the partition's ISR has the append; the error otherwise (REQUEST_TIMED_OUT
    /// at `deadline`).
    pub async fn until_replicated(self, deadline: Instant) -> Result<(), ResponseError> {
        self.0.until_replicated(deadline).await
    }
}

impl From<ReplicationWait> for AppendWait {
    fn from(wait: ReplicationWait) -> AppendWait {
        AppendWait(Box::new(wait))
    }
}

impl fmt::Debug for AppendWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppendWait")
    }
}

type WaitFuture = Pin<Box<dyn Future<Output = Result<(), ResponseError>> + Send>>;

/// What an [`AppendWait`] waits on: a real partition's high watermark, or a known outcome.
trait AwaitReplication: Send {
    fn until_replicated(self: Box<Self>, deadline: Instant) -> WaitFuture;
}

impl AwaitReplication for ReplicationWait {
    fn until_replicated(self: Box<Self>, deadline: Instant) -> WaitFuture {
        Box::pin(async move { ReplicationWait::until_replicated(&self, deadline).await })
    }
}

struct Ready(Result<(), ResponseError>);

impl AwaitReplication for Ready {
    fn until_replicated(self: Box<Self>, _deadline: Instant) -> WaitFuture {
        Box::pin(std::future::ready(self.0))
    }
}

/// The broker's `__consumer_offsets`: the partitions its replica manager leads, as of the image
/// it serves.
impl OffsetsLog for Broker {
    fn check_leader(&self, partition: i32) -> Result<(), ResponseError> {
        let image = self.image();
        if image.topic(CONSUMER_OFFSETS_TOPIC).is_none() {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        match self.replicas.led(&image, CONSUMER_OFFSETS_TOPIC, partition) {
            Ok(_) => Ok(()),
            Err(_) => Err(ResponseError::NotCoordinator),
        }
    }

    fn append(
        &self,
        partition: i32,
        records: &[OffsetsRecord],
        now_ms: i64,
    ) -> Result<AppendWait, ResponseError> {
        super::persistence::append_to_partition(&self.replicas, partition, records, now_ms)
            .map(AppendWait::from)
    }
}
