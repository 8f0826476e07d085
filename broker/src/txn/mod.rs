//! The transaction coordinator (Kafka's `TransactionCoordinator`, KIP-98): one per partition of
//! `__transaction_state`, on that partition's leader, like the group coordinator.
//!
//! A transactional id's coordinator partition is `abs(hash(id)) % transaction.state.log.num.
//! partitions`. Its state ([`state::TxnMetadata`]) is written to that partition in Kafka's record
//! format ([`records`]) and acknowledged once the ISR has it; a broker that becomes the
//! partition's leader replays it (last record per id wins) and finishes any transaction caught
//! preparing. Requests on one transactional id are serialised by its own async lock, since ending
//! a transaction awaits markers.
//!
//! - InitProducerId: a new id gets a producer id (from this broker's block) at epoch 0; a known
//!   one has its epoch bumped (fencing the previous producer), and an open transaction of the
//!   previous epoch is aborted first.
//! - AddPartitionsToTxn / AddOffsetsToTxn: the partitions (an AddOffsetsToTxn's group's
//!   `__consumer_offsets` partition) join the open transaction, which begins if none was open.
//! - EndTxn: PrepareCommit/PrepareAbort is written, then a marker to every partition of the
//!   transaction ([`markers`]: WriteTxnMarkers, in-process for partitions led here), then
//!   CompleteCommit/CompleteAbort; EndTxn is answered after that (Kafka answers after the
//!   prepare and writes markers in the background; answering later costs the producer latency,
//!   never correctness). Markers that cannot be written in time leave the transaction preparing;
//!   the coordinator's tick retries them.
//! - A transaction open past its timeout is aborted by the tick, with the epoch bumped so the
//!   producer is fenced (Kafka's `abortTimedOutTransactions`).

pub mod markers;
pub mod records;
pub mod state;
#[cfg(test)]
pub(crate) mod testing;
pub mod verifier;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::records::RecordBatchDecoder;
use skald_controller::names::TRANSACTION_STATE_TOPIC;

use crate::broker::Broker;
use crate::config::ServerConfig;
use crate::group::partition_for;
use crate::replica_manager::{ReplicaManager, RoleChange};
use crate::replication::state::Transition;
use crate::replication::ReplicationWait;
use state::{TxnMetadata, TxnState};

/// How long a state write waits for the ISR (Kafka's `transaction.state.log` appends use the
/// request timeout).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a verification waits for a transactional id another request holds.
const VERIFY_WAIT_MAX: Duration = Duration::from_secs(5);
/// How much of a `__transaction_state` partition one replay read takes.
const REPLAY_READ_BYTES: usize = 1 << 20;
/// How many transactions one periodic pass ends at once.
const TICK_CONCURRENCY: usize = 16;

/// The transaction coordinator's settings (Kafka's names).
#[derive(Debug, Clone, Copy)]
pub struct TxnConfig {
    /// `transaction.state.log.num.partitions`.
    pub num_partitions: i32,
    /// `transaction.state.log.replication.factor`.
    pub replication_factor: i16,
    /// `transaction.state.log.min.isr` (capped at the replication factor when the topic is made).
    pub min_isr: i16,
    /// `transaction.max.timeout.ms`: the longest timeout a producer may ask for.
    pub max_timeout_ms: i32,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub abort_check_interval_ms: u64,
    /// `transaction.partition.verification.enable` (KIP-890): a partition leader asks the
    /// coordinator before a transaction's first batch there ([`verifier`]).
    pub partition_verification: bool,
    /// `transactional.id.expiration.ms`: a transactional id with no transaction open and no
    /// request for this long is forgotten (a tombstone in `__transaction_state`).
    pub id_expiration_ms: i64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`: how often that is checked.
    pub id_expiration_check_interval_ms: u64,
    /// `transaction.version` (Kafka's finalized feature of that name, set here as a property):
    /// 2 advertises transactions version 2 (KIP-890: partitions added by their leaders, the
    /// epoch bumped at every EndTxn) to clients that support it; 0 or 1 does not.
    pub transaction_version: i16,
}

impl TxnConfig {
    pub fn from_server(config: &ServerConfig) -> Result<TxnConfig, String> {
        let parse = |key: &str| -> Result<i64, String> {
            config
                .get(key)
                .parse()
                .map_err(|_| format!("{key} must be a number"))
        };
        let parsed = TxnConfig {
            num_partitions: parse("transaction.state.log.num.partitions")? as i32,
            replication_factor: parse("transaction.state.log.replication.factor")? as i16,
            min_isr: parse("transaction.state.log.min.isr")? as i16,
            max_timeout_ms: parse("transaction.max.timeout.ms")? as i32,
            abort_check_interval_ms: parse(
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            )? as u64,
            partition_verification: match config
                .get("transaction.partition.verification.enable")
                .trim()
            {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(
                        "transaction.partition.verification.enable must be true or false".into(),
                    )
                }
            },
            id_expiration_ms: parse("transactional.id.expiration.ms")?,
            id_expiration_check_interval_ms: parse(
                "transaction.remove.expired.transaction.cleanup.interval.ms",
            )? as u64,
            transaction_version: match parse("transaction.version")? {
                level @ 0..=2 => level as i16,
                _ => return Err("transaction.version must be 0, 1 or 2".into()),
            },
        };
        if parsed.num_partitions < 1
            || parsed.replication_factor < 1
            || parsed.min_isr < 1
            || parsed.max_timeout_ms < 1
            || parsed.abort_check_interval_ms < 1
            || parsed.id_expiration_ms < 1
            || parsed.id_expiration_check_interval_ms < 1
        {
            return Err("transaction.* settings must be at least 1".into());
        }
        Ok(parsed)
    }
}

/// A producer id and epoch.
type ProducerAndEpoch = (i64, i16);

/// One transactional id: its state, `None` until InitProducerId has written one.
type SharedTxn = Arc<tokio::sync::Mutex<Option<TxnMetadata>>>;

#[derive(Debug)]
pub struct TransactionCoordinator {
    pub config: TxnConfig,
    /// `__transaction_state` partitions this broker coordinates, with the leader epoch it leads
    /// them in (Kafka's coordinator epoch, carried by the markers it writes).
    partitions: Mutex<HashMap<i32, i32>>,
    txns: Mutex<HashMap<String, SharedTxn>>,
    /// Each id's last InitProducerId bump: (producer id, epoch) asked with → given. A producer
    /// retrying a bump whose answer it lost asks with the old pair again and must get the same
    /// answer, not PRODUCER_FENCED (Kafka keeps `lastProducerId` / `lastProducerEpoch`).
    last_bump: Mutex<HashMap<String, (ProducerAndEpoch, ProducerAndEpoch)>>,
    /// Each id's state as last written to `__transaction_state` (or loaded from it), for
    /// DescribeTransactions and ListTransactions: they read it without waiting on an id whose
    /// EndTxn holds its lock while markers are written.
    published: Mutex<HashMap<String, TxnMetadata>>,
}

impl TransactionCoordinator {
    pub fn new(config: TxnConfig) -> TransactionCoordinator {
        TransactionCoordinator {
            config,
            partitions: Mutex::new(HashMap::new()),
            txns: Mutex::new(HashMap::new()),
            last_bump: Mutex::new(HashMap::new()),
            published: Mutex::new(HashMap::new()),
        }
    }

    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        partition_for(transactional_id, self.config.num_partitions)
    }

    fn loaded(&self) -> MutexGuard<'_, HashMap<i32, i32>> {
        self.partitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn txn_map(&self) -> MutexGuard<'_, HashMap<String, SharedTxn>> {
        self.txns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The coordinator epoch if this broker coordinates `transactional_id`, else NOT_COORDINATOR.
    pub fn coordinator_epoch(&self, transactional_id: &str) -> Result<i32, ResponseError> {
        self.loaded()
            .get(&self.partition_for(transactional_id))
            .copied()
            .ok_or(ResponseError::NotCoordinator)
    }

    /// Locks `transactional_id`'s state (created empty when `create`, for InitProducerId; for
    /// any other request an id never initialised is INVALID_PRODUCER_ID_MAPPING) and returns it
    /// with the coordinator epoch it is held under. The lock is taken, then the id checked to
    /// still be coordinated here under the same epoch and entry: a partition unloaded and
    /// reloaded meanwhile replaced the entry, whose old lock fences nothing.
    async fn lock_txn(
        &self,
        transactional_id: &str,
        create: bool,
    ) -> Result<(tokio::sync::OwnedMutexGuard<Option<TxnMetadata>>, i32), ResponseError> {
        let coordinator_epoch = self.coordinator_epoch(transactional_id)?;
        let txn = {
            let mut map = self.txn_map();
            match map.get(transactional_id) {
                Some(txn) => Arc::clone(txn),
                None if create => Arc::clone(map.entry(transactional_id.to_owned()).or_default()),
                None => return Err(ResponseError::InvalidProducerIdMapping),
            }
        };
        let guard = Arc::clone(&txn).lock_owned().await;
        let current = self
            .txn_map()
            .get(transactional_id)
            .is_some_and(|held| Arc::ptr_eq(held, &txn));
        if !current || self.coordinator_epoch(transactional_id) != Ok(coordinator_epoch) {
            return Err(ResponseError::NotCoordinator);
        }
        Ok((guard, coordinator_epoch))
    }

    /// Every transactional id this broker coordinates, with its state (for the tick and
    /// introspection).
    pub fn all(&self) -> Vec<(String, SharedTxn)> {
        self.txn_map()
            .iter()
            .map(|(id, txn)| (id.clone(), Arc::clone(txn)))
            .collect()
    }

    fn published_map(&self) -> MutexGuard<'_, HashMap<String, TxnMetadata>> {
        self.published
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// DescribeTransactions: the state of `transactional_id` as last written, if this broker
    /// coordinates it (`None`: never initialised). Never waits on a request holding the id.
    pub async fn describe(
        &self,
        transactional_id: &str,
    ) -> Result<Option<TxnMetadata>, ResponseError> {
        self.coordinator_epoch(transactional_id)?;
        Ok(self.published_map().get(transactional_id).cloned())
    }

    /// ListTransactions: every transactional id this broker coordinates with its state as last
    /// written, sorted.
    pub async fn list(&self) -> Vec<(String, TxnMetadata)> {
        let mut listed: Vec<(String, TxnMetadata)> = self
            .published_map()
            .iter()
            .map(|(id, meta)| (id.clone(), meta.clone()))
            .collect();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        listed
    }

    /// InitProducerId with a transactional id. Returns (producer id, epoch).
    pub async fn init_producer_id(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), ResponseError> {
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        let (mut guard, coordinator_epoch) = self.lock_txn(transactional_id, true).await?;
        let now_ms = now_ms();
        let next = match guard.as_ref() {
            None => {
                let producer_id = broker
                    .producer_ids
                    .generate(broker)
                    .await
                    .map_err(|_| ResponseError::CoordinatorLoadInProgress)?;
                TxnMetadata::new(producer_id, timeout_ms, now_ms)
            }
            Some(current) => {
                if current.state.is_preparing() {
                    return Err(ResponseError::ConcurrentTransactions);
                }
                // KIP-360: a producer naming its id and epoch must be the current one — or be
                // retrying the bump that made the current one.
                if let Some(asked) = expected {
                    let now = (current.producer_id, current.producer_epoch);
                    let retried = self
                        .last_bump
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .get(transactional_id)
                        .is_some_and(|&(from, to)| from == asked && to == now);
                    if retried && current.state != TxnState::Ongoing {
                        return Ok(now);
                    }
                    if asked != now {
                        return Err(ResponseError::ProducerFenced);
                    }
                }
                let mut current = current.clone();
                if current.state == TxnState::Ongoing {
                    // The previous producer's transaction is aborted under a bumped epoch, so
                    // its late writes and its own EndTxn are fenced (the epoch exhausted: under
                    // a new producer id from the abort on).
                    current = self.fenced(broker, &current, 1).await?;
                    current = self
                        .end(
                            broker,
                            transactional_id,
                            &mut guard,
                            &current,
                            false,
                            coordinator_epoch,
                        )
                        .await?;
                }
                let mut next = current;
                if next.epoch_exhausted() || next.producer_epoch == i16::MAX {
                    let producer_id = broker
                        .producer_ids
                        .generate(broker)
                        .await
                        .map_err(|_| ResponseError::CoordinatorLoadInProgress)?;
                    next.producer_id = producer_id;
                    next.producer_epoch = 0;
                } else {
                    next.producer_epoch += 1;
                }
                next.timeout_ms = timeout_ms;
                next.state = TxnState::Empty;
                next.partitions.clear();
                next.start_ms = -1;
                next.last_update_ms = now_ms;
                next
            }
        };
        self.write(broker, transactional_id, &next, coordinator_epoch)
            .await?;
        let reply = (next.producer_id, next.producer_epoch);
        if let Some(asked) = expected {
            self.last_bump
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(transactional_id.to_owned(), (asked, reply));
        }
        *guard = Some(next);
        Ok(reply)
    }

    /// AddPartitionsToTxn and AddOffsetsToTxn: `partitions` join the open transaction.
    pub async fn add_partitions(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<(String, i32)>,
    ) -> Result<(), ResponseError> {
        let (mut guard, coordinator_epoch) = self.lock_txn(transactional_id, false).await?;
        let current = guard
            .as_ref()
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        current.check_producer(producer_id, producer_epoch)?;
        if current.state == TxnState::Ongoing
            && partitions.iter().all(|p| current.partitions.contains(p))
        {
            return Ok(());
        }
        let next = current.with_partitions(partitions, now_ms());
        self.write(broker, transactional_id, &next, coordinator_epoch)
            .await?;
        *guard = Some(next);
        Ok(())
    }

    /// KIP-890's verification (AddPartitionsToTxn v4+ with `verify_only`, and a partition
    /// leader's check before it accepts a transaction's first batch): whether each partition is
    /// in `transactional_id`'s open transaction of this producer id and epoch. Kafka's
    /// `handleVerifyPartitionsInTransaction`: NOT_COORDINATOR, INVALID_PRODUCER_ID_MAPPING,
    /// PRODUCER_FENCED or CONCURRENT_TRANSACTIONS for every partition, else INVALID_TXN_STATE for
    /// each partition not in the transaction.
    pub async fn verify(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Vec<Option<ResponseError>> {
        let all = |error: ResponseError| vec![Some(error); partitions.len()];
        if let Err(error) = self.coordinator_epoch(transactional_id) {
            return all(error);
        }
        let Some(txn) = self.txn_map().get(transactional_id).cloned() else {
            return all(ResponseError::InvalidProducerIdMapping);
        };
        // An EndTxn holds the id while it writes markers: the transaction is ending.
        let Ok(guard) = tokio::time::timeout(VERIFY_WAIT_MAX, txn.lock()).await else {
            return all(ResponseError::ConcurrentTransactions);
        };
        let Some(current) = guard.as_ref() else {
            return all(ResponseError::InvalidProducerIdMapping);
        };
        if let Err(error) = current.check_producer(producer_id, producer_epoch) {
            return all(error);
        }
        partitions
            .iter()
            .map(|partition| {
                (current.state != TxnState::Ongoing || !current.partitions.contains(partition))
                    .then_some(ResponseError::InvalidTxnState)
            })
            .collect()
    }

    /// `current` with its epoch bumped `bumps` times to fence its producer; where that would
    /// pass the last usable epoch, the epoch stops at `i16::MAX` and the transaction records a
    /// new producer id to move to once it completes (Kafka's exhausted-epoch rule).
    async fn fenced(
        &self,
        broker: &Arc<Broker>,
        current: &TxnMetadata,
        bumps: i16,
    ) -> Result<TxnMetadata, ResponseError> {
        let mut fenced = current.clone();
        match current.producer_epoch.checked_add(bumps) {
            Some(epoch) if epoch < i16::MAX => fenced.producer_epoch = epoch,
            _ => {
                fenced.producer_epoch = i16::MAX;
                fenced.next_producer_id = broker
                    .producer_ids
                    .generate(broker)
                    .await
                    .map_err(|_| ResponseError::CoordinatorLoadInProgress)?;
            }
        }
        Ok(fenced)
    }

    /// EndTxn: commits or aborts the open transaction. `tv2` (EndTxn v5+, KIP-890's transactions
    /// version 2): every ending bumps the producer's epoch, and the answer is the producer id and
    /// epoch the producer goes on with.
    pub async fn end_txn(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        tv2: bool,
    ) -> Result<(i64, i16), ResponseError> {
        let (mut guard, coordinator_epoch) = self.lock_txn(transactional_id, false).await?;
        let current = guard
            .as_ref()
            .ok_or(ResponseError::InvalidProducerIdMapping)?
            .clone();
        if tv2 {
            return self
                .end_txn_v2(
                    broker,
                    transactional_id,
                    &mut guard,
                    current,
                    (producer_id, producer_epoch),
                    commit,
                    coordinator_epoch,
                )
                .await;
        }
        current.check_producer(producer_id, producer_epoch)?;
        match (current.state, commit) {
            (TxnState::Ongoing, _) => {}
            // A retry of what already completed; anything else (the other outcome, or nothing
            // open: clients end an empty transaction without asking) is Kafka's
            // INVALID_TXN_STATE.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                return Ok((current.producer_id, current.producer_epoch))
            }
            _ => return Err(ResponseError::InvalidTxnState),
        }
        let done = self
            .end(
                broker,
                transactional_id,
                &mut guard,
                &current,
                commit,
                coordinator_epoch,
            )
            .await?;
        Ok((done.producer_id, done.producer_epoch))
    }

    /// EndTxn under transactions version 2 (Kafka's `endTransaction` with a client that supports
    /// the epoch bump): the transaction prepares under the next epoch — or, the epoch exhausted,
    /// a new producer id taken at completion — so its markers fence the producer's late writes
    /// and its next transaction starts afresh. A retry of an EndTxn whose answer was lost (the
    /// epoch already bumped, or the producer id replaced) gets the same answer.
    #[allow(clippy::too_many_arguments)]
    async fn end_txn_v2(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        guard: &mut Option<TxnMetadata>,
        current: TxnMetadata,
        (producer_id, producer_epoch): ProducerAndEpoch,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<(i64, i16), ResponseError> {
        let retry_on_bump = i32::from(current.producer_epoch) == i32::from(producer_epoch) + 1
            && current.producer_id == producer_id;
        let retry_on_overflow = current.previous_producer_id == producer_id
            && producer_epoch >= i16::MAX - 1
            && current.producer_epoch == 0;
        if current.producer_id != producer_id && !retry_on_overflow {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        let same_epoch = producer_epoch == current.producer_epoch;
        let valid_epoch = match current.state {
            TxnState::Ongoing | TxnState::Empty => same_epoch,
            TxnState::PrepareCommit | TxnState::PrepareAbort => retry_on_bump,
            TxnState::CompleteCommit | TxnState::CompleteAbort => {
                retry_on_bump || retry_on_overflow || same_epoch
            }
            TxnState::Dead | TxnState::PrepareEpochFence => false,
        };
        if !valid_epoch {
            return Err(ResponseError::ProducerFenced);
        }
        let retry = retry_on_bump || retry_on_overflow;
        let answer = Ok((current.producer_id, current.producer_epoch));
        match (current.state, commit) {
            (TxnState::Ongoing, _) => {}
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) if retry => {
                return answer
            }
            // Aborting with nothing open still bumps the epoch (the client asks it to start
            // clean, e.g. after an abortable error).
            (TxnState::CompleteCommit | TxnState::CompleteAbort | TxnState::Empty, false)
                if !retry => {}
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                return Err(ResponseError::ConcurrentTransactions)
            }
            _ => return Err(ResponseError::InvalidTxnState),
        }
        let mut bumped = current.clone();
        bumped.client_version = 2;
        if current.epoch_exhausted() {
            bumped.next_producer_id = broker
                .producer_ids
                .generate(broker)
                .await
                .map_err(|_| ResponseError::CoordinatorLoadInProgress)?;
        }
        bumped.producer_epoch = current.producer_epoch.saturating_add(1);
        let done = self
            .end(
                broker,
                transactional_id,
                guard,
                &bumped,
                commit,
                coordinator_epoch,
            )
            .await?;
        Ok((done.producer_id, done.producer_epoch))
    }

    /// Writes Prepare, the markers, then Complete for an open transaction; `state` (the id's,
    /// under its lock) follows every write as it lands, so a failure midway leaves it preparing —
    /// decided, to be finished by a retry or the tick, never expired into the other outcome.
    /// Returns the completed state.
    async fn end(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        state: &mut Option<TxnMetadata>,
        ongoing: &TxnMetadata,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<TxnMetadata, ResponseError> {
        let preparing = ongoing.preparing(commit, now_ms());
        self.write(broker, transactional_id, &preparing, coordinator_epoch)
            .await?;
        *state = Some(preparing.clone());
        self.finish(
            broker,
            transactional_id,
            state,
            &preparing,
            coordinator_epoch,
        )
        .await
    }

    /// From a Prepare state: markers to every partition, then the Complete state written (and
    /// set in `state`).
    async fn finish(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        state: &mut Option<TxnMetadata>,
        preparing: &TxnMetadata,
        coordinator_epoch: i32,
    ) -> Result<TxnMetadata, ResponseError> {
        let commit = preparing.state == TxnState::PrepareCommit;
        markers::write_all(broker, preparing, commit, coordinator_epoch).await?;
        let done = preparing.completed(now_ms());
        self.write(broker, transactional_id, &done, coordinator_epoch)
            .await?;
        *state = Some(done.clone());
        tracing::debug!(
            transactional_id,
            producer_id = done.producer_id,
            commit,
            "transaction ended"
        );
        Ok(done)
    }

    /// Appends `meta` for `transactional_id` to its `__transaction_state` partition and waits
    /// for the ISR (Kafka's `appendTransactionToLog`; its error mapping).
    async fn write(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        meta: &TxnMetadata,
        coordinator_epoch: i32,
    ) -> Result<(), ResponseError> {
        let value = records::value(meta).map_err(|err| {
            tracing::error!(transactional_id, "cannot encode transaction state: {err}");
            ResponseError::UnknownServerError
        })?;
        self.append_state(broker, transactional_id, Some(value), coordinator_epoch)
            .await?;
        self.published_map()
            .insert(transactional_id.to_owned(), meta.clone());
        Ok(())
    }

    /// Appends `transactional_id`'s record (`None`: its tombstone) to its `__transaction_state`
    /// partition under `coordinator_epoch` and waits for the ISR.
    async fn append_state(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        value: Option<bytes::Bytes>,
        coordinator_epoch: i32,
    ) -> Result<(), ResponseError> {
        let key = records::key(transactional_id).map_err(|err| {
            tracing::error!(transactional_id, "cannot encode transaction state: {err}");
            ResponseError::UnknownServerError
        })?;
        let partition = broker
            .replicas
            .get(
                TRANSACTION_STATE_TOPIC,
                self.partition_for(transactional_id),
            )
            .ok_or(ResponseError::NotCoordinator)?;
        let mut batch =
            crate::group::records::build_batch(&[(key, value)], now_ms()).map_err(|err| {
                tracing::error!("cannot encode a transaction state batch: {err}");
                ResponseError::UnknownServerError
            })?;
        let min_isr = partition.settings().min_insync_replicas;
        // Written only under the leadership the operation started in: a coordinator that lost
        // and regained the partition meanwhile must not overwrite what its successor decided.
        let mut fenced = false;
        let appended = tokio::task::block_in_place(|| {
            broker
                .replicas
                .append_to_leader(&partition, Some(min_isr), |log, leader_epoch| {
                    if leader_epoch != coordinator_epoch {
                        fenced = true;
                        return Err(skald_storage::Error::InvalidRecord(
                            "stale coordinator epoch".into(),
                        ));
                    }
                    log.append(&mut batch, None, leader_epoch)
                })
        })
        .map_err(|_| ResponseError::NotCoordinator)?;
        if fenced {
            return Err(ResponseError::NotCoordinator);
        }
        let info = appended.appended.map_err(|err| {
            tracing::error!(transactional_id, "cannot append transaction state: {err}");
            ResponseError::NotCoordinator
        })?;
        let wait = ReplicationWait {
            partition,
            leader_epoch: appended.leader_epoch,
            required_offset: info.last_offset + 1,
            min_insync_replicas: min_isr,
        };
        wait.until_replicated(tokio::time::Instant::now() + WRITE_TIMEOUT)
            .await
            .map_err(|error| match error {
                ResponseError::NotEnoughReplicas
                | ResponseError::NotEnoughReplicasAfterAppend
                | ResponseError::RequestTimedOut => ResponseError::CoordinatorNotAvailable,
                _ => ResponseError::NotCoordinator,
            })
    }

    /// Kafka's `onElection` / `onResignation` for `__transaction_state` partitions.
    pub fn on_role_changes(&self, replicas: &ReplicaManager, changes: &[RoleChange]) {
        for change in changes {
            if change.topic != TRANSACTION_STATE_TOPIC {
                continue;
            }
            match change.transition {
                Transition::BecameLeader { leader_epoch } => {
                    match self.load_partition(replicas, change.partition, leader_epoch) {
                        Ok(loaded) => tracing::info!(
                            partition = change.partition,
                            leader_epoch,
                            loaded,
                            "coordinating the transactions of __transaction_state partition"
                        ),
                        Err(err) => tracing::error!(
                            partition = change.partition,
                            "cannot load transaction state: {err}"
                        ),
                    }
                }
                Transition::BecameFollower { .. } | Transition::WentOffline => {
                    self.unload_partition(change.partition)
                }
                Transition::Unchanged => {}
            }
        }
    }

    fn unload_partition(&self, index: i32) {
        self.loaded().remove(&index);
        let partitions = self.config.num_partitions;
        self.txn_map()
            .retain(|id, _| partition_for(id, partitions) != index);
        self.published_map()
            .retain(|id, _| partition_for(id, partitions) != index);
    }

    /// Replays a `__transaction_state` partition (the last record per id wins; a tombstone
    /// deletes) and starts coordinating it. Returns how many ids were loaded.
    fn load_partition(
        &self,
        replicas: &ReplicaManager,
        index: i32,
        leader_epoch: i32,
    ) -> Result<usize, String> {
        self.unload_partition(index);
        let Some(partition) = replicas.get(TRANSACTION_STATE_TOPIC, index) else {
            return Ok(0);
        };
        let mut latest: HashMap<String, Option<TxnMetadata>> = HashMap::new();
        partition
            .with_log(|log| {
                let mut offset = log.log_start_offset();
                loop {
                    let read = log
                        .read(offset, REPLAY_READ_BYTES)
                        .map_err(|err| err.to_string())?;
                    if read.records.is_empty() {
                        return Ok::<_, String>(());
                    }
                    let mut buf = read.records.clone();
                    let batches =
                        RecordBatchDecoder::decode_all(&mut buf).map_err(|err| err.to_string())?;
                    for record in batches.iter().flat_map(|b| &b.records) {
                        let Some(key) = record.key.as_deref() else {
                            continue;
                        };
                        let Some(id) = records::parse_key(key).map_err(|e| e.to_string())? else {
                            continue;
                        };
                        let value = record
                            .value
                            .as_deref()
                            .map(records::parse_value)
                            .transpose()
                            .map_err(|e| e.to_string())?;
                        latest.insert(id, value);
                    }
                    offset = read.next_offset;
                }
            })
            .unwrap_or(Ok(()))?;
        Ok(self.install_partition(index, leader_epoch, latest))
    }

    /// Starts coordinating `__transaction_state-<index>` under `leader_epoch` with the ids
    /// replayed from it (`latest`: each id's last record, `None` for a tombstone). Returns how
    /// many ids were loaded.
    pub fn install_partition(
        &self,
        index: i32,
        leader_epoch: i32,
        latest: HashMap<String, Option<TxnMetadata>>,
    ) -> usize {
        let mut txns = self.txn_map();
        let mut loaded = 0;
        let mut published = self.published_map();
        for (id, meta) in latest {
            if let Some(meta) = meta {
                published.insert(id.clone(), meta.clone());
                txns.insert(id, Arc::new(tokio::sync::Mutex::new(Some(meta))));
                loaded += 1;
            }
        }
        drop(published);
        drop(txns);
        self.loaded().insert(index, leader_epoch);
        loaded
    }

    /// Forgets the transactional ids idle past `transactional.id.expiration.ms` with no
    /// transaction open or ending (Kafka's `removeExpiredTransactionalIds`): a tombstone each in
    /// `__transaction_state`, then out of memory. A later InitProducerId with the id starts it
    /// afresh with a new producer id. Returns how many went.
    pub async fn expire_transactional_ids(&self, broker: &Arc<Broker>) -> usize {
        let now = now_ms();
        let mut expired = 0;
        for (id, txn) in self.all() {
            let Ok(coordinator_epoch) = self.coordinator_epoch(&id) else {
                continue;
            };
            let Ok(mut guard) = Arc::clone(&txn).try_lock_owned() else {
                continue; // a request holds it: not idle
            };
            let idle = guard.as_ref().is_some_and(|meta| {
                matches!(
                    meta.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                ) && now.saturating_sub(meta.last_update_ms) >= self.config.id_expiration_ms
            });
            if !idle {
                continue;
            }
            if let Err(error) = self
                .append_state(broker, &id, None, coordinator_epoch)
                .await
            {
                tracing::warn!(transactional_id = id, "cannot expire yet: {error:?}");
                continue;
            }
            *guard = None;
            self.published_map().remove(&id);
            let mut map = self.txn_map();
            if map.get(&id).is_some_and(|held| Arc::ptr_eq(held, &txn)) {
                map.remove(&id);
            }
            drop(map);
            self.last_bump
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&id);
            expired += 1;
        }
        if expired > 0 {
            tracing::info!(expired, "expired idle transactional ids");
        }
        expired
    }

    /// The periodic pass (Kafka's `abortTimedOutTransactions`, and the completion of
    /// transactions a failover caught preparing): aborts the transactions open past their
    /// timeout, with the epoch bumped so their producer is fenced, and writes the markers of
    /// those still preparing. Up to [`TICK_CONCURRENCY`] transactions at once: one whose markers
    /// cannot be written (a partition without a leader) keeps trying for a minute, and must not
    /// hold every other transaction's abort back meanwhile. Returns when all are done.
    pub async fn tick(self: &Arc<Self>, broker: &Arc<Broker>) {
        let now = now_ms();
        let slots = Arc::new(tokio::sync::Semaphore::new(TICK_CONCURRENCY));
        let mut running = tokio::task::JoinSet::new();
        for (id, txn) in self.all() {
            let Ok(coordinator_epoch) = self.coordinator_epoch(&id) else {
                continue;
            };
            // A slot first: no id's lock is held while waiting for one.
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let Ok(guard) = txn.try_lock_owned() else {
                continue; // a request holds it: it decides
            };
            let due = guard
                .as_ref()
                .is_some_and(|meta| meta.has_expired(now) || meta.state.is_preparing());
            if !due {
                continue;
            }
            let (coordinator, broker) = (Arc::clone(self), Arc::clone(broker));
            running.spawn(async move {
                let _slot = slot;
                coordinator
                    .tick_one(&broker, &id, guard, coordinator_epoch, now)
                    .await;
            });
        }
        while running.join_next().await.is_some() {}
    }

    /// One transaction's part of [`TransactionCoordinator::tick`], under its lock.
    async fn tick_one(
        &self,
        broker: &Arc<Broker>,
        id: &str,
        mut guard: tokio::sync::OwnedMutexGuard<Option<TxnMetadata>>,
        coordinator_epoch: i32,
        now: i64,
    ) {
        let Some(current) = guard.clone() else {
            return;
        };
        let outcome = if current.has_expired(now) {
            tracing::info!(
                transactional_id = id,
                producer_id = current.producer_id,
                "aborting a transaction open past its timeout"
            );
            // Transactions version 2 prepares under one more epoch still, so the producer's
            // own EndTxn at its old epoch is fenced rather than taken for a retry (Kafka's
            // fence and then its version 2 bump).
            let bumps = if current.client_version >= 2 { 2 } else { 1 };
            match self.fenced(broker, &current, bumps).await {
                Ok(fenced) => {
                    self.end(broker, id, &mut guard, &fenced, false, coordinator_epoch)
                        .await
                }
                Err(error) => Err(error),
            }
        } else {
            self.finish(broker, id, &mut guard, &current, coordinator_epoch)
                .await
        };
        if let Err(error) = outcome {
            tracing::warn!(
                transactional_id = id,
                "cannot end a transaction yet: {error:?}"
            );
        }
    }
}

/// Each of `partitions`' error in an answer that lists `(topic, partition) → error code` (a
/// WriteTxnMarkers or AddPartitionsToTxn response): `None` for 0, UNKNOWN_SERVER_ERROR for a
/// partition the answer left out or a code this client does not know.
pub(crate) fn partition_errors(
    partitions: &[(String, i32)],
    answered: impl IntoIterator<Item = ((String, i32), i16)>,
) -> Vec<Option<ResponseError>> {
    let answered: HashMap<(String, i32), i16> = answered.into_iter().collect();
    partitions
        .iter()
        .map(|key| match answered.get(key) {
            Some(0) => None,
            Some(&code) => Some(
                ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError),
            ),
            None => Some(ResponseError::UnknownServerError),
        })
        .collect()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
