//! One transactional id's state as the transaction coordinator keeps it (Kafka's
//! `TransactionMetadata`), and the checks its requests make against it. No clock, no I/O.

use std::collections::BTreeSet;

use kafka_protocol::error::ResponseError;

/// Kafka's `TransactionState`, with its ids as stored in `__transaction_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's names, as DescribeTransactions and ListTransactions show them.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Markers are being written: requests wait (CONCURRENT_TRANSACTIONS) until they are.
    pub fn is_preparing(self) -> bool {
        matches!(
            self,
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence
        )
    }
}

/// One transactional id's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions the open transaction wrote to (or, while preparing, must end), sorted.
    pub partitions: BTreeSet<(String, i32)>,
    pub last_update_ms: i64,
    /// When the open transaction began (-1 when none is open).
    pub start_ms: i64,
    /// The producer id before the last one an epoch overflow replaced (-1: none), so a client
    /// retrying the EndTxn that moved it is recognised (transactions version 2).
    pub previous_producer_id: i64,
    /// The producer id a transaction ending with an exhausted epoch moves to once complete (-1:
    /// none), recorded with its Prepare state so a failover completes it alike.
    pub next_producer_id: i64,
    /// The client's transactions version (Kafka's ClientTransactionVersion): 2 when it ends
    /// transactions with EndTxn v5+, each bumping the epoch (KIP-890), else 0.
    pub client_version: i16,
}

impl TxnMetadata {
    /// A new transactional id's state: its producer id at epoch 0, nothing open.
    pub fn new(producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnMetadata {
        TxnMetadata {
            producer_id,
            producer_epoch: 0,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            last_update_ms: now_ms,
            start_ms: -1,
            previous_producer_id: -1,
            next_producer_id: -1,
            client_version: 0,
        }
    }

    /// The checks of AddPartitionsToTxn, AddOffsetsToTxn and EndTxn (Kafka's
    /// `TransactionCoordinator`): the request's producer id must be this id's current one
    /// (INVALID_PRODUCER_ID_MAPPING), its epoch the current one (PRODUCER_FENCED), and no
    /// markers may be in flight (CONCURRENT_TRANSACTIONS).
    pub fn check_producer(
        &self,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(), ResponseError> {
        if producer_id != self.producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if producer_epoch != self.producer_epoch {
            return Err(ResponseError::ProducerFenced);
        }
        if self.state.is_preparing() {
            return Err(ResponseError::ConcurrentTransactions);
        }
        if self.state == TxnState::Dead {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        Ok(())
    }

    /// The state after AddPartitionsToTxn or AddOffsetsToTxn adds `partitions`: Ongoing, the
    /// transaction's start recorded if it begins here.
    pub fn with_partitions(
        &self,
        partitions: impl IntoIterator<Item = (String, i32)>,
        now_ms: i64,
    ) -> TxnMetadata {
        let mut next = self.clone();
        if next.state != TxnState::Ongoing {
            next.partitions.clear();
            next.start_ms = now_ms;
        }
        next.state = TxnState::Ongoing;
        next.partitions.extend(partitions);
        next.last_update_ms = now_ms;
        next
    }

    /// The state that ends the open transaction: PrepareCommit or PrepareAbort, same partitions.
    pub fn preparing(&self, commit: bool, now_ms: i64) -> TxnMetadata {
        TxnMetadata {
            state: if commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            },
            last_update_ms: now_ms,
            ..self.clone()
        }
    }

    /// The state once every marker is written: CompleteCommit or CompleteAbort, no partitions.
    pub fn completed(&self, now_ms: i64) -> TxnMetadata {
        let mut done = TxnMetadata {
            state: if self.state == TxnState::PrepareCommit {
                TxnState::CompleteCommit
            } else {
                TxnState::CompleteAbort
            },
            partitions: BTreeSet::new(),
            last_update_ms: now_ms,
            start_ms: -1,
            ..self.clone()
        };
        // An exhausted epoch moves to the producer id recorded when the transaction prepared.
        if done.next_producer_id >= 0 {
            done.previous_producer_id = done.producer_id;
            done.producer_id = done.next_producer_id;
            done.producer_epoch = 0;
            done.next_producer_id = -1;
        }
        done
    }

    /// Whether the open transaction has outlived its timeout (the coordinator aborts it).
    pub fn has_expired(&self, now_ms: i64) -> bool {
        self.state == TxnState::Ongoing
            && now_ms.saturating_sub(self.start_ms) > i64::from(self.timeout_ms)
    }

    /// Whether the epoch can be bumped once more (Kafka starts a new producer id at
    /// `Short.MAX_VALUE - 1`).
    pub fn epoch_exhausted(&self) -> bool {
        self.producer_epoch >= i16::MAX - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_begins_prepares_and_completes() {
        let meta = TxnMetadata::new(7, 60_000, 100);
        assert_eq!(meta.check_producer(7, 0), Ok(()));
        assert_eq!(
            meta.check_producer(8, 0),
            Err(ResponseError::InvalidProducerIdMapping)
        );
        assert_eq!(
            meta.check_producer(7, 1),
            Err(ResponseError::ProducerFenced)
        );
        let ongoing = meta.with_partitions([("t".to_string(), 1)], 200);
        assert_eq!((ongoing.state, ongoing.start_ms), (TxnState::Ongoing, 200));
        let more = ongoing.with_partitions([("t".to_string(), 0)], 300);
        assert_eq!(more.start_ms, 200, "the start stays");
        assert_eq!(more.partitions.len(), 2);
        assert!(!more.has_expired(200 + 60_000));
        assert!(more.has_expired(200 + 60_001));
        let preparing = more.preparing(true, 400);
        assert_eq!(
            preparing.check_producer(7, 0),
            Err(ResponseError::ConcurrentTransactions)
        );
        let done = preparing.completed(500);
        assert_eq!(
            (done.state, done.partitions.len(), done.start_ms),
            (TxnState::CompleteCommit, 0, -1)
        );
        // The next transaction starts afresh.
        let next = done.with_partitions([("u".to_string(), 3)], 600);
        assert_eq!(next.partitions.len(), 1);
        assert_eq!(next.start_ms, 600);
    }

    #[test]
    fn states_round_trip_through_their_ids() {
        for id in 0..8 {
            assert_eq!(TxnState::from_id(id).map(TxnState::id), Some(id));
        }
        assert_eq!(TxnState::from_id(8), None);
    }
}
