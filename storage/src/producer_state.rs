//! Producer state of one partition (Kafka's `ProducerStateManager`): for every idempotent producer
//! that wrote here, its epoch and the metadata of its last few batches, so a leader can answer a
//! retried batch with the offsets it already got, refuse a sequence gap or a fenced epoch, and so a
//! follower that becomes leader knows the same.
//!
//! The state is derived from the log it describes: every append (leader's or follower's) updates
//! it from the batch headers, and on open it is rebuilt from the newest snapshot file plus the
//! batches after it. Snapshots (`<20-digit offset>.snapshot`, Kafka's format: the state after
//! every batch below that offset) are written at segment rolls and clean shutdowns; truncation
//! drops those past the new end and rebuilds.
//!
//! Memory is bounded: at most [`BATCHES_RETAINED`] batches per producer, at most
//! [`PRODUCERS_MAX`] producers per partition (the least recently active leave first), and
//! producers silent for `producer.id.expiration.ms` expire.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use skald_protocol::batch::{EndTxnMarker, RecordBatchHeader, CONTROL_TYPE_ABORT};

use crate::error::{IoContext, Result};

/// Kafka's `RecordBatch.NO_PRODUCER_EPOCH`.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// Kafka's `RecordBatch.NO_SEQUENCE`.
pub const NO_SEQUENCE: i32 = -1;
/// Batches remembered per producer for duplicate detection: the most a producer may have in
/// flight (`max.in.flight.requests.per.connection` ≤ 5 with idempotence), as Kafka.
pub const BATCHES_RETAINED: usize = 5;
/// Producers remembered per partition. Past it the least recently active producers (not in a
/// transaction) are forgotten; one of them that retries is then treated as new (KIP-360: any
/// sequence accepted), so the bound costs deduplication only for a producer silent while
/// tens of thousands of others wrote.
pub const PRODUCERS_MAX: usize = 50_000;
/// Snapshot file suffix.
pub const SNAPSHOT_SUFFIX: &str = "snapshot";

/// The snapshot format version this code writes and reads (Kafka's `ProducerSnapshot` v1).
const SNAPSHOT_VERSION: i16 = 1;
/// Version (2) + CRC (4) + entry count (4).
const SNAPSHOT_HEADER_BYTES: usize = 10;
/// producer id 8, epoch 2, last sequence 4, last offset 8, offset delta 4, timestamp 8,
/// coordinator epoch 4, current transaction first offset 8.
const SNAPSHOT_ENTRY_BYTES: usize = 46;

/// One batch a producer wrote, as remembered for duplicate detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub last_offset: i64,
    /// `last_offset - first offset`.
    pub offset_delta: i32,
    /// The batch's max timestamp.
    pub timestamp: i64,
}

impl BatchMetadata {
    pub fn first_offset(&self) -> i64 {
        self.last_offset - i64::from(self.offset_delta)
    }
}

/// What a partition knows of one producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerStateEntry {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Oldest first, at most [`BATCHES_RETAINED`], all of `producer_epoch`.
    batches: VecDeque<BatchMetadata>,
    /// The newest batch timestamp (what expiry is judged by, as in Kafka).
    pub last_timestamp: i64,
    /// The epoch of the transaction coordinator that wrote its last marker (-1 if none).
    pub coordinator_epoch: i32,
    /// The first offset of its open transaction, if it has one.
    pub current_txn_first_offset: Option<i64>,
}

impl ProducerStateEntry {
    fn new(producer_id: i64) -> Self {
        ProducerStateEntry {
            producer_id,
            producer_epoch: NO_PRODUCER_EPOCH,
            batches: VecDeque::new(),
            last_timestamp: -1,
            coordinator_epoch: -1,
            current_txn_first_offset: None,
        }
    }

    /// The batches remembered, oldest first.
    pub fn batches(&self) -> impl Iterator<Item = &BatchMetadata> {
        self.batches.iter()
    }

    /// The last sequence written in the current epoch, or [`NO_SEQUENCE`].
    pub fn last_seq(&self) -> i32 {
        self.batches.back().map_or(NO_SEQUENCE, |b| b.last_seq)
    }

    /// The last offset written in the current epoch, or -1.
    pub fn last_data_offset(&self) -> i64 {
        self.batches.back().map_or(-1, |b| b.last_offset)
    }

    fn find_duplicate(&self, epoch: i16, first_seq: i32, last_seq: i32) -> Option<BatchMetadata> {
        if epoch != self.producer_epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            .copied()
    }

    /// A new epoch forgets the old epoch's batches (Kafka's `maybeUpdateProducerEpoch`).
    fn set_epoch(&mut self, epoch: i16) {
        if epoch != self.producer_epoch {
            self.producer_epoch = epoch;
            self.batches.clear();
        }
    }

    fn add_batch(&mut self, epoch: i16, batch: BatchMetadata) {
        self.set_epoch(epoch);
        if self.batches.len() == BATCHES_RETAINED {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
        self.last_timestamp = batch.timestamp;
    }
}

/// How a leader's append of a client batch relates to what its producer already wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerCheck {
    /// Append it.
    Append,
    /// A retry of a batch already in the log: answer with its offsets, append nothing.
    Duplicate(BatchMetadata),
}

/// Why a leader refuses a client batch (Kafka's error codes in brackets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    /// [INVALID_PRODUCER_EPOCH] The batch's epoch is older than the producer's current one: a
    /// zombie producer, or a retry from before an epoch bump.
    #[error("epoch {epoch} of producer {producer_id} is older than its current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// [INVALID_TXN_STATE] A non-transactional batch from a producer whose transaction is
    /// open here (Kafka: "Expected transactional write from producer").
    #[error(
        "producer {producer_id} has an open transaction; a non-transactional write is not allowed"
    )]
    InvalidTxnState { producer_id: i64 },
    /// [INVALID_TXN_STATE] A transactional batch that would begin its producer's transaction
    /// here, without the coordinator having confirmed the partition is in it (KIP-890; Kafka:
    /// "Record was not part of an ongoing transaction").
    #[error("producer {producer_id}: the record was not part of an ongoing transaction")]
    UnverifiedTxn { producer_id: i64 },
    /// [TRANSACTION_COORDINATOR_FENCED] A transaction marker from a coordinator older than the
    /// one that wrote this producer's last marker.
    #[error("marker for producer {producer_id} from coordinator epoch {coordinator_epoch}, older than {current}")]
    CoordinatorFenced {
        producer_id: i64,
        coordinator_epoch: i32,
        current: i32,
    },
    /// [OUT_OF_ORDER_SEQUENCE_NUMBER] The batch does not follow the producer's last sequence.
    #[error("out of order sequence number for producer {producer_id} at epoch {epoch}: {first_seq} (incoming), {last_seq} (current end)")]
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    },
}

/// Kafka's `DefaultRecordBatch.incrementSequence`: sequences wrap from `i32::MAX` to 0.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// Kafka's `DefaultRecordBatch.decrementSequence`, the inverse of [`increment_sequence`].
pub fn decrement_sequence(sequence: i32, decrement: i32) -> i32 {
    if sequence < decrement {
        i32::MAX - (decrement - sequence) + 1
    } else {
        sequence - decrement
    }
}

/// The last sequence of a batch (its first plus its last offset delta, wrapping).
pub fn last_sequence(header: &RecordBatchHeader) -> i32 {
    increment_sequence(header.base_sequence, header.last_offset_delta)
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    i64::from(next_seq) == i64::from(last_seq) + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

/// Every producer of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerStateEntry>,
    /// The open transactions: first offset → producer id. The smallest key is the partition's
    /// first unstable offset.
    ongoing: BTreeMap<i64, i64>,
    /// KIP-890: producers whose next transaction here a leader is asking the coordinator about
    /// (producer id → the guard handed out and the epoch asked for). Leader memory only, never
    /// in a snapshot: a new leader verifies again. At most [`PRODUCERS_MAX`].
    verifications: HashMap<i64, Verification>,
}

/// Verification guards come from one process-wide counter, so a guard handed out before a
/// partition's producer state was rebuilt can never equal one handed out after.
static NEXT_GUARD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A verification in progress (Kafka's `VerificationStateEntry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Verification {
    guard: u64,
    epoch: i16,
    /// When it started, on the log's clock: one never finished leaves after
    /// `producer.id.expiration.ms`, as Kafka's verification entries do.
    started_ms: i64,
}

/// What a leader's append of client batches knows of KIP-890's verification of transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnVerification {
    /// Nothing to check: verification is off (`transaction.partition.verification.enable`),
    /// or the write is not a transactional client's.
    Off,
    /// A transactional batch that would begin its producer's transaction here must hold the
    /// guard [`ProducerStateManager::start_verification`] handed out, still current; `None`
    /// (none was needed: the transaction was open) admits no such batch.
    Guard(Option<u64>),
}

/// A transaction a marker ended in this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    pub aborted: bool,
}

impl ProducerStateManager {
    pub fn entry(&self, producer_id: i64) -> Option<&ProducerStateEntry> {
        self.producers.get(&producer_id)
    }

    /// Every producer remembered (in no particular order).
    pub fn entries(&self) -> impl Iterator<Item = &ProducerStateEntry> {
        self.producers.values()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// A leader's checks on client batches about to be appended together, in order (Kafka's
    /// `analyzeAndValidateProducerState` with `AppendOrigin.CLIENT`): the first retry of a
    /// remembered batch makes the append a duplicate; otherwise every idempotent batch must carry
    /// its producer's current epoch or a newer one, and continue its sequence (a new epoch starts
    /// at 0; a producer this partition does not know may start anywhere, as since KIP-360).
    ///
    /// With verification on, a transactional batch that would begin its producer's transaction
    /// must carry a current guard (KIP-890), else INVALID_TXN_STATE.
    pub fn check_client_batches<'a>(
        &self,
        headers: impl IntoIterator<Item = &'a RecordBatchHeader>,
        verification: TxnVerification,
    ) -> Result<ProducerCheck, ProducerError> {
        // Later batches of one append are checked against what the earlier ones would leave.
        let mut pending: HashMap<i64, ProducerStateEntry> = HashMap::new();
        let mut headers = headers.into_iter().peekable();
        while let Some(header) = headers.next() {
            let producer_id = header.producer_id;
            if producer_id < 0 {
                continue;
            }
            let fresh;
            let entry = match pending
                .get(&producer_id)
                .or_else(|| self.producers.get(&producer_id))
            {
                Some(entry) => entry,
                None => {
                    fresh = ProducerStateEntry::new(producer_id);
                    &fresh
                }
            };
            let epoch = header.producer_epoch;
            let first_seq = header.base_sequence;
            let last_seq = last_sequence(header);
            if let Some(duplicate) = entry.find_duplicate(epoch, first_seq, last_seq) {
                return Ok(ProducerCheck::Duplicate(duplicate));
            }
            if !header.is_transactional() && entry.current_txn_first_offset.is_some() {
                return Err(ProducerError::InvalidTxnState { producer_id });
            }
            let begins_txn = header.is_transactional()
                && !(entry.current_txn_first_offset.is_some() && entry.producer_epoch == epoch);
            if begins_txn && !self.verified(producer_id, verification) {
                return Err(ProducerError::UnverifiedTxn { producer_id });
            }
            let current = entry.producer_epoch;
            if epoch < current {
                return Err(ProducerError::InvalidProducerEpoch {
                    producer_id,
                    epoch,
                    current,
                });
            }
            let known = current != NO_PRODUCER_EPOCH;
            let ordered = if epoch != current {
                first_seq == 0 || !known
            } else {
                !known || in_sequence(entry.last_seq(), first_seq)
            };
            if !ordered {
                return Err(ProducerError::OutOfOrderSequence {
                    producer_id,
                    epoch,
                    first_seq,
                    last_seq: if epoch == current {
                        entry.last_seq()
                    } else {
                        NO_SEQUENCE
                    },
                });
            }
            // Only a later batch of the same append needs what this one leaves (produce sends
            // one batch per partition: no copy on that path).
            if headers.peek().is_some() {
                let mut next = entry.clone();
                next.add_batch(epoch, metadata(header));
                pending.insert(producer_id, next);
            }
        }
        Ok(ProducerCheck::Append)
    }

    /// Whether `producer_id` has a transaction open here at `epoch` (Kafka's
    /// `hasOngoingTransaction`).
    pub fn has_ongoing_txn(&self, producer_id: i64, epoch: i16) -> bool {
        self.producers.get(&producer_id).is_some_and(|entry| {
            entry.current_txn_first_offset.is_some() && entry.producer_epoch == epoch
        })
    }

    /// A leader about to ask the transaction coordinator whether `producer_id`'s transaction
    /// includes this partition (Kafka's `maybeStartTransactionVerification`): `None` when the
    /// transaction is already open here (nothing to ask), else the guard its first batch must
    /// carry. A marker or the transaction's first batch clears it, so a batch verified before
    /// the transaction ended cannot open a transaction the coordinator never heard of. A
    /// verification already started at this epoch or a newer one keeps its guard (a retry
    /// does not invalidate the request it retries).
    pub fn start_verification(&mut self, producer_id: i64, epoch: i16, now_ms: i64) -> Option<u64> {
        if self.has_ongoing_txn(producer_id, epoch) {
            return None;
        }
        if let Some(current) = self.verifications.get(&producer_id) {
            if current.epoch >= epoch {
                return Some(current.guard);
            }
        }
        if !self.verifications.contains_key(&producer_id)
            && self.verifications.len() >= PRODUCERS_MAX
        {
            // The oldest guard goes: its producer's append fails verification and is retried.
            if let Some(oldest) = self
                .verifications
                .iter()
                .min_by_key(|(_, v)| v.guard)
                .map(|(id, _)| *id)
            {
                self.verifications.remove(&oldest);
            }
        }
        let guard = NEXT_GUARD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.verifications.insert(
            producer_id,
            Verification {
                guard,
                epoch,
                started_ms: now_ms,
            },
        );
        Some(guard)
    }

    /// Whether a batch a coordinator appends for its producer (TxnOffsetCommit's offsets) may be
    /// written under KIP-890: one that would begin the producer's transaction here needs the
    /// producer's current guard, as a client's batch does.
    pub fn admits_coordinator_batch(
        &self,
        header: &RecordBatchHeader,
        verification: TxnVerification,
    ) -> bool {
        let open = self
            .producers
            .get(&header.producer_id)
            .is_some_and(|entry| {
                entry.current_txn_first_offset.is_some()
                    && entry.producer_epoch == header.producer_epoch
            });
        !header.is_transactional() || open || self.verified(header.producer_id, verification)
    }

    /// Whether a batch of `producer_id` at `epoch` that would begin its transaction here may
    /// (KIP-890): only with the producer's current guard.
    fn verified(&self, producer_id: i64, verification: TxnVerification) -> bool {
        match verification {
            TxnVerification::Off => true,
            TxnVerification::Guard(guard) => guard.is_some_and(|guard| {
                self.verifications
                    .get(&producer_id)
                    .is_some_and(|v| v.guard == guard)
            }),
        }
    }

    /// How many transactions are open in this partition.
    pub fn open_transactions(&self) -> usize {
        self.ongoing.len()
    }

    /// The first offset of the oldest open transaction: a `read_committed` consumer reads no
    /// further (the last stable offset is the smaller of this and the high watermark).
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// A leader's checks on a transaction marker a coordinator asks it to write (Kafka's
    /// `appendEndTxnMarker`): the producer's epoch may not be older than the one known here, nor
    /// the coordinator's epoch older than the one that wrote its last marker.
    pub fn check_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), ProducerError> {
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if epoch < entry.producer_epoch {
            return Err(ProducerError::InvalidProducerEpoch {
                producer_id,
                epoch,
                current: entry.producer_epoch,
            });
        }
        if coordinator_epoch < entry.coordinator_epoch {
            return Err(ProducerError::CoordinatorFenced {
                producer_id,
                coordinator_epoch,
                current: entry.coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Records a batch now in the log, with its final offsets (a leader's append, a follower's, or
    /// a batch replayed on open). Batches without a producer id change nothing. A transactional
    /// batch opens its producer's transaction here if none is open; a control batch (`marker`,
    /// read from it) moves the epoch, records the coordinator epoch and ends the transaction,
    /// which is returned.
    pub fn update(
        &mut self,
        header: &RecordBatchHeader,
        marker: Option<EndTxnMarker>,
    ) -> Option<CompletedTxn> {
        let producer_id = header.producer_id;
        if producer_id < 0 {
            return None;
        }
        if !self.producers.contains_key(&producer_id) && self.producers.len() >= PRODUCERS_MAX {
            self.evict_least_recent();
        }
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerStateEntry::new(producer_id));
        if header.is_control() {
            self.verifications.remove(&producer_id);
            entry.set_epoch(header.producer_epoch);
            entry.last_timestamp = entry.last_timestamp.max(header.max_timestamp);
            if let Some(marker) = marker {
                entry.coordinator_epoch = marker.coordinator_epoch;
            }
            let first_offset = entry.current_txn_first_offset.take()?;
            self.ongoing.remove(&first_offset);
            return Some(CompletedTxn {
                producer_id,
                first_offset,
                last_offset: header.base_offset,
                aborted: marker.is_some_and(|m| m.control_type == CONTROL_TYPE_ABORT),
            });
        }
        entry.add_batch(header.producer_epoch, metadata(header));
        if header.is_transactional() && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(header.base_offset);
            self.ongoing.insert(header.base_offset, producer_id);
            self.verifications.remove(&producer_id);
        }
        None
    }

    /// Forgets producers whose last batch is at least `expiration_ms` older than `now_ms` and who
    /// have no open transaction (Kafka's `removeExpiredProducers`). Returns how many went.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.verifications
            .retain(|_, v| now_ms.saturating_sub(v.started_ms) < expiration_ms);
        let before = self.producers.len();
        self.producers.retain(|_, entry| {
            entry.current_txn_first_offset.is_some()
                || now_ms.saturating_sub(entry.last_timestamp) < expiration_ms
        });
        before - self.producers.len()
    }

    /// Makes room below [`PRODUCERS_MAX`]: drops the least recently active eighth of the
    /// producers without an open transaction (batched, so the sort is paid rarely).
    fn evict_least_recent(&mut self) {
        let mut idle: Vec<(i64, i64)> = self
            .producers
            .values()
            .filter(|entry| entry.current_txn_first_offset.is_none())
            .map(|entry| (entry.last_timestamp, entry.producer_id))
            .collect();
        idle.sort_unstable();
        let evict = (PRODUCERS_MAX / 8).max(1);
        for (_, producer_id) in idle.into_iter().take(evict) {
            self.producers.remove(&producer_id);
        }
        tracing::warn!(
            producers = self.producers.len(),
            "a partition remembers too many producers; the least recently active were forgotten"
        );
    }

    /// Writes the state as `<dir>/<offset>.snapshot` (Kafka's format), atomically: a temporary
    /// file, fsynced, renamed into place.
    pub fn write_snapshot(&self, dir: &Path, offset: i64) -> Result<()> {
        let mut entries = Vec::with_capacity(self.producers.len() * SNAPSHOT_ENTRY_BYTES);
        let mut producers: Vec<&ProducerStateEntry> = self.producers.values().collect();
        producers.sort_unstable_by_key(|entry| entry.producer_id);
        for entry in &producers {
            let last = entry.batches.back();
            entries.extend_from_slice(&entry.producer_id.to_be_bytes());
            entries.extend_from_slice(&entry.producer_epoch.to_be_bytes());
            entries.extend_from_slice(&last.map_or(NO_SEQUENCE, |b| b.last_seq).to_be_bytes());
            entries.extend_from_slice(&last.map_or(-1i64, |b| b.last_offset).to_be_bytes());
            entries.extend_from_slice(&last.map_or(0i32, |b| b.offset_delta).to_be_bytes());
            entries.extend_from_slice(&entry.last_timestamp.to_be_bytes());
            entries.extend_from_slice(&entry.coordinator_epoch.to_be_bytes());
            entries.extend_from_slice(&entry.current_txn_first_offset.unwrap_or(-1).to_be_bytes());
        }
        let count = i32::try_from(producers.len()).unwrap_or(i32::MAX);
        let mut covered = Vec::with_capacity(4 + entries.len());
        covered.extend_from_slice(&count.to_be_bytes());
        covered.extend_from_slice(&entries);
        let mut file = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + entries.len());
        file.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        file.extend_from_slice(&crc32c::crc32c(&covered).to_be_bytes());
        file.extend_from_slice(&covered);
        let path = snapshot_path(dir, offset);
        let tmp = path.with_extension("snapshot.tmp");
        {
            let mut out = fs::File::create(&tmp).at(&tmp)?;
            out.write_all(&file).at(&tmp)?;
            out.sync_all().at(&tmp)?;
        }
        fs::rename(&tmp, &path).at(&path)?;
        crate::txn_index::sync_parent(&path)
    }

    /// Reads a snapshot written by [`ProducerStateManager::write_snapshot`] (or Kafka). `Ok(None)`
    /// for a file that is not a valid snapshot (wrong version, size or CRC).
    pub fn read_snapshot(path: &Path) -> Result<Option<ProducerStateManager>> {
        let bytes = fs::read(path).at(path)?;
        if bytes.len() < SNAPSHOT_HEADER_BYTES
            || i16::from_be_bytes([bytes[0], bytes[1]]) != SNAPSHOT_VERSION
        {
            return Ok(None);
        }
        let crc = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
        if crc32c::crc32c(&bytes[6..]) != crc {
            return Ok(None);
        }
        let count = i32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
        let body = &bytes[SNAPSHOT_HEADER_BYTES..];
        if usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(SNAPSHOT_ENTRY_BYTES))
            != Some(body.len())
        {
            return Ok(None);
        }
        let mut state = ProducerStateManager::default();
        for raw in body.chunks_exact(SNAPSHOT_ENTRY_BYTES) {
            let mut field = Fields(raw);
            let producer_id = field.i64();
            let producer_epoch = field.i16();
            let last_seq = field.i32();
            let last_offset = field.i64();
            let offset_delta = field.i32();
            let last_timestamp = field.i64();
            let coordinator_epoch = field.i32();
            let txn_first_offset = field.i64();
            let mut entry = ProducerStateEntry::new(producer_id);
            entry.producer_epoch = producer_epoch;
            if last_seq != NO_SEQUENCE {
                entry.batches.push_back(BatchMetadata {
                    first_seq: decrement_sequence(last_seq, offset_delta),
                    last_seq,
                    last_offset,
                    offset_delta,
                    timestamp: last_timestamp,
                });
            }
            entry.last_timestamp = last_timestamp;
            entry.coordinator_epoch = coordinator_epoch;
            entry.current_txn_first_offset = (txn_first_offset >= 0).then_some(txn_first_offset);
            if let Some(first) = entry.current_txn_first_offset {
                state.ongoing.insert(first, producer_id);
            }
            state.producers.insert(producer_id, entry);
        }
        Ok(Some(state))
    }
}

fn metadata(header: &RecordBatchHeader) -> BatchMetadata {
    BatchMetadata {
        first_seq: header.base_sequence,
        last_seq: last_sequence(header),
        last_offset: header.last_offset(),
        offset_delta: header.last_offset_delta,
        timestamp: header.max_timestamp,
    }
}

/// Big-endian fields read in order from a slice known to be long enough.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.0[..N]);
        self.0 = &self.0[N..];
        out
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take())
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take())
    }
    fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take())
    }
}

/// `<dir>/<20-digit offset>.snapshot`.
pub fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.{SNAPSHOT_SUFFIX}"))
}

/// The offsets of the snapshot files in `dir`, ascending.
pub fn list_snapshots(dir: &Path) -> Result<Vec<i64>> {
    let mut offsets = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(SNAPSHOT_SUFFIX) {
            continue;
        }
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if stem.len() == 20 {
            if let Ok(offset) = stem.parse::<i64>() {
                offsets.push(offset);
            }
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// Removes the snapshot at `offset` (gone already is fine).
pub fn delete_snapshot(dir: &Path, offset: i64) -> Result<()> {
    let path = snapshot_path(dir, offset);
    match fs::remove_file(&path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err).at(&path),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
