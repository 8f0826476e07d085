//! Producer ids for InitProducerId (Kafka's `RPCProducerIdManager`): the broker hands them out
//! from a block of [`PRODUCER_ID_BLOCK_SIZE`] that the active controller records in the metadata
//! log for it, so no id is ever handed out twice — across brokers, restarts and controller
//! failovers alike. A block is asked for when the current one runs out; callers wait for it
//! (one metadata commit per thousand producers).

use std::sync::atomic::{AtomicU64, Ordering};

use skald_controller::{ControllerOp, ControllerReply, PRODUCER_ID_BLOCK_SIZE};
use tokio::sync::Mutex;

use crate::broker::Broker;
use crate::metadata::ControlError;

/// How long one block request may wait for this broker's metadata to show the block after it
/// committed (it arrives by the metadata long poll, normally in milliseconds).
const BLOCK_VISIBLE_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// Why no producer id could be handed out; InitProducerId answers with the Kafka error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerIdError {
    /// No controller answered (COORDINATOR_NOT_AVAILABLE: the client retries).
    #[error("no producer id block: {0}")]
    Unavailable(String),
    /// The controller refused (stale broker epoch, ids exhausted): UNKNOWN_SERVER_ERROR.
    #[error("producer id block refused: {0}")]
    Refused(String),
}

/// The ids of the current block not yet handed out: `[next, end)`.
#[derive(Debug, Default)]
struct Block {
    next: i64,
    end: i64,
}

#[derive(Debug, Default)]
pub struct ProducerIdManager {
    block: Mutex<Block>,
    /// Tells this broker's block requests apart (the controller records the latest one per
    /// broker with its request id): the incarnation's start time in the high bits, a counter low.
    next_request_id: AtomicU64,
}

impl ProducerIdManager {
    pub fn new() -> ProducerIdManager {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_micros() as u64);
        ProducerIdManager {
            block: Mutex::new(Block::default()),
            next_request_id: AtomicU64::new(started << 16),
        }
    }

    /// The next producer id, asking the controller for a new block first if this one is spent.
    pub async fn generate(&self, broker: &Broker) -> Result<i64, ProducerIdError> {
        let mut block = self.block.lock().await;
        if block.next >= block.end {
            let first = self.allocate_block(broker).await?;
            *block = Block {
                next: first,
                end: first + PRODUCER_ID_BLOCK_SIZE,
            };
        }
        let id = block.next;
        block.next += 1;
        Ok(id)
    }

    /// Kafka's AllocateProducerIds: one block recorded for this broker, read back from the image
    /// once it shows the request.
    async fn allocate_block(&self, broker: &Broker) -> Result<i64, ProducerIdError> {
        let broker_id = broker.config.node_id;
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let op = ControllerOp::AllocateProducerIds {
            broker_id,
            broker_epoch: broker.broker_epoch.load(Ordering::Acquire),
            request_id,
        };
        match broker.control(op).await {
            Ok(ControllerReply::AllocateProducerIds(Ok(()))) => {}
            Ok(ControllerReply::AllocateProducerIds(Err(refused))) => {
                return Err(ProducerIdError::Refused(refused.to_string()))
            }
            Ok(other) => {
                return Err(ProducerIdError::Refused(format!(
                    "unexpected controller reply {other:?}"
                )))
            }
            Err(ControlError::Timeout) => {
                return Err(ProducerIdError::Unavailable("controller timed out".into()))
            }
            Err(err) => return Err(ProducerIdError::Unavailable(err.to_string())),
        }
        let block_of = |image: &skald_controller::MetadataImage| {
            image
                .producer_id_blocks
                .get(&broker_id)
                .filter(|block| block.request_id == request_id)
                .map(|block| block.first_producer_id)
        };
        if !broker
            .wait_for_image(|image| block_of(image).is_some(), BLOCK_VISIBLE_MAX)
            .await
        {
            return Err(ProducerIdError::Unavailable(
                "the producer id block committed but this broker's metadata does not show it yet"
                    .into(),
            ));
        }
        let first = block_of(&broker.image())
            .ok_or_else(|| ProducerIdError::Unavailable("producer id block vanished".into()))?;
        tracing::info!(broker_id, first, "got a block of producer ids");
        Ok(first)
    }
}
