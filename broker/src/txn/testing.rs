//! What the transaction handlers' unit tests run on instead of a broker: a coordinator with one
//! `__transaction_state` partition, and transactional ids' states to install in it.

use super::state::{TxnMetadata, TxnState};
use super::{TransactionCoordinator, TxnConfig};
use crate::config::ServerConfig;

/// A coordinator of one `__transaction_state` partition (every id maps to partition 0),
/// coordinating nothing until a test installs the partition.
pub fn coordinator() -> TransactionCoordinator {
    let config = ServerConfig::from_properties(
        [
            ("node.id".to_string(), "1".to_string()),
            (
                "transaction.state.log.num.partitions".to_string(),
                "1".to_string(),
            ),
        ]
        .into(),
    )
    .expect("valid config");
    TransactionCoordinator::new(TxnConfig::from_server(&config).expect("valid txn config"))
}

/// Producer 5 at epoch 2, a 60 s timeout, a transaction open since 1.234 s after the epoch
/// over `orders-0`, `orders-1` and `audit-0`.
pub fn open_txn() -> TxnMetadata {
    TxnMetadata {
        producer_epoch: 2,
        state: TxnState::Ongoing,
        partitions: [("orders", 1), ("orders", 0), ("audit", 0)]
            .into_iter()
            .map(|(topic, partition)| (topic.to_string(), partition))
            .collect(),
        start_ms: 1_234,
        ..TxnMetadata::new(5, 60_000, 1_000)
    }
}
