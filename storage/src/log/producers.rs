//! A log's producer state on disk: loading it (newest valid snapshot, then the batches after it),
//! keeping its snapshots in step with the segments, and expiring producers. The state itself and
//! the checks made with it are in [`crate::producer_state`].

use skald_protocol::batch::{self, RecordBatchHeader, RecordBatches};

use super::{AppendInfo, Log, LEADER_EPOCH_REBUILD_BYTES_MAX};
use crate::error::Result;
use crate::producer_state::{self, ProducerStateManager, TxnVerification};
use crate::txn_index::AbortedTxn;

impl Log {
    /// Every idempotent producer's state as of the log end offset.
    pub fn producer_state(&self) -> &ProducerStateManager {
        &self.producer_state
    }

    /// Drops the aborted-transaction index entries whose ABORT markers compaction removed
    /// (`(producer id, marker offset)`).
    pub(crate) fn forget_aborted_txns(
        &mut self,
        removed: &std::collections::HashSet<(i64, i64)>,
    ) -> Result<()> {
        self.txn_index
            .retain(|entry| !removed.contains(&(entry.producer_id, entry.last_offset)))
    }

    /// Starts KIP-890's verification of `producer_id`'s transaction in this partition: `None`
    /// when it is already open here, else the guard to append its first batch with (see
    /// [`ProducerStateManager::start_verification`]).
    pub fn start_txn_verification(&mut self, producer_id: i64, epoch: i16) -> Option<u64> {
        let now_ms = self.clock.now_ms();
        self.producer_state
            .start_verification(producer_id, epoch, now_ms)
    }

    /// Forgets producers silent for `expiration_ms` on the log's clock with no open transaction
    /// (Kafka's `producer.id.expiration.ms`). Returns how many went.
    pub fn remove_expired_producers(&mut self, expiration_ms: i64) -> usize {
        let now_ms = self.clock.now_ms();
        self.producer_state.remove_expired(now_ms, expiration_ms)
    }

    /// Rebuilds the producer state for the log as it now is (Kafka's `loadProducerState`): the
    /// snapshots past the log end offset describe records this log no longer has and go; the
    /// newest remaining one that reads back is the base (unreadable ones are deleted), and the
    /// batches from its offset on are replayed. Without any snapshot the newest segments are
    /// replayed, as far back as [`LEADER_EPOCH_REBUILD_BYTES_MAX`] allows (the active one always):
    /// a producer whose last batch lies before that is unknown, and is accepted as new if it
    /// writes again.
    pub(crate) fn load_producer_state(&mut self) -> Result<()> {
        let log_end_offset = self.log_end_offset();
        let mut snapshots = producer_state::list_snapshots(&self.dir)?;
        while let Some(&offset) = snapshots.last() {
            if offset <= log_end_offset {
                break;
            }
            producer_state::delete_snapshot(&self.dir, offset)?;
            snapshots.pop();
        }
        let mut base = None;
        while let Some(offset) = snapshots.pop() {
            let path = producer_state::snapshot_path(&self.dir, offset);
            match ProducerStateManager::read_snapshot(&path)? {
                Some(state) => {
                    base = Some((offset, state));
                    break;
                }
                None => {
                    tracing::warn!(file = %path.display(), "deleting an unreadable producer state snapshot");
                    producer_state::delete_snapshot(&self.dir, offset)?;
                }
            }
        }
        let (replay_from, state) = match base {
            Some(base) => base,
            None => (
                self.replay_floor_without_snapshot(),
                ProducerStateManager::default(),
            ),
        };
        self.producer_state = state;
        // The replay re-adds the aborted transactions whose markers it meets.
        let log_start_offset = self.log_start_offset;
        self.txn_index
            .retain(|e| e.last_offset < replay_from && e.last_offset >= log_start_offset)?;
        self.replay_producer_batches(replay_from)?;
        // The replay may start below the log start offset (inside its segment).
        self.prune_txn_index()
    }

    /// Applies one batch now in the log (`bytes`, headed by `header`) to the producer state, and
    /// indexes the transaction an ABORT marker ends.
    pub(crate) fn apply_to_producer_state(
        &mut self,
        header: &RecordBatchHeader,
        bytes: &[u8],
    ) -> Result<()> {
        let marker = if header.is_control() {
            batch::end_txn_marker(bytes)
        } else {
            None
        };
        self.apply_with_marker(header, marker)
    }

    /// [`Log::apply_to_producer_state`] with the batch's marker (if a control batch) read.
    fn apply_with_marker(
        &mut self,
        header: &RecordBatchHeader,
        marker: Option<batch::EndTxnMarker>,
    ) -> Result<()> {
        let Some(completed) = self.producer_state.update(header, marker) else {
            return Ok(());
        };
        if !completed.aborted {
            return Ok(());
        }
        let last_stable_offset = self
            .producer_state
            .first_unstable_offset()
            .unwrap_or(completed.last_offset + 1);
        self.txn_index.append(AbortedTxn {
            producer_id: completed.producer_id,
            first_offset: completed.first_offset,
            last_offset: completed.last_offset,
            last_stable_offset,
        })
    }

    /// The first offset of the oldest open transaction, if any: `read_committed` readers stop
    /// there (below the high watermark).
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.producer_state.first_unstable_offset()
    }

    /// The aborted transactions a fetch of `[from, upper)` must report (Kafka's
    /// `collectAbortedTransactions`).
    pub fn collect_aborted_txns(&self, from: i64, upper: i64) -> Vec<AbortedTxn> {
        self.txn_index.collect(from, upper)
    }

    /// An append a coordinator makes on a producer's behalf (TxnOffsetCommit's offsets: Kafka's
    /// `AppendOrigin.COORDINATOR`): the producer's epoch is checked, its sequence is not (such
    /// batches carry none). A batch that would begin the producer's transaction here needs a
    /// current verification guard when `verification` asks for one (KIP-890), so offsets
    /// verified for a transaction that a marker has since ended are refused, not written into
    /// the next one.
    pub fn append_for_producer(
        &mut self,
        batches: &mut [u8],
        leader_epoch: i32,
        verification: TxnVerification,
    ) -> Result<AppendInfo> {
        let headers = self.validate_append(batches)?;
        for (_, header) in &headers {
            if !self
                .producer_state
                .admits_coordinator_batch(header, verification)
            {
                return Err(producer_state::ProducerError::UnverifiedTxn {
                    producer_id: header.producer_id,
                }
                .into());
            }
            let Some(entry) = self.producer_state.entry(header.producer_id) else {
                continue;
            };
            if header.producer_epoch < entry.producer_epoch {
                return Err(producer_state::ProducerError::InvalidProducerEpoch {
                    producer_id: header.producer_id,
                    epoch: header.producer_epoch,
                    current: entry.producer_epoch,
                }
                .into());
            }
        }
        Ok(self
            .append_as_leader(batches, headers, None, leader_epoch)?
            .patch(batches))
    }

    /// Writes a transaction marker as the partition leader (Kafka's WriteTxnMarkers append):
    /// COMMIT or ABORT for `producer_id`'s open transaction, after the producer and coordinator
    /// epoch checks. The marker is a control batch the log builds; it is appended like any batch.
    pub fn append_txn_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        leader_epoch: i32,
    ) -> Result<AppendInfo> {
        self.producer_state
            .check_marker(producer_id, producer_epoch, coordinator_epoch)?;
        let marker = batch::end_txn_marker_batch(
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            self.clock.now_ms(),
        );
        let headers = self.validate_append(&marker)?;
        Ok(self
            .append_as_leader(&marker, headers, None, leader_epoch)?
            .info)
    }

    /// Where a rebuild without a snapshot starts: the base of the oldest of the newest segments
    /// that fit in the byte budget (the active one whatever its size).
    fn replay_floor_without_snapshot(&self) -> i64 {
        let mut budget = LEADER_EPOCH_REBUILD_BYTES_MAX;
        let mut floor = self.log_end_offset();
        for (index, (&base, segment)) in self.segments.iter().rev().enumerate() {
            match budget.checked_sub(segment.size()) {
                Some(left) => budget = left,
                None if index > 0 => break,
                None => budget = 0,
            }
            floor = base;
        }
        floor
    }

    /// Applies every batch whose base offset is at or past `from` to the producer state (headers
    /// only; the batches were validated when written or recovered). Sealed segments loaded for it
    /// are unloaded again.
    fn replay_producer_batches(&mut self, from: i64) -> Result<()> {
        let first_segment = self
            .segments
            .range(..=from)
            .next_back()
            .map_or(i64::MIN, |(&base, _)| base);
        let bases: Vec<i64> = self
            .segments
            .range(first_segment..)
            .map(|(&b, _)| b)
            .collect();
        for base in bases {
            let Some(segment) = self.segments.get_mut(&base) else {
                continue;
            };
            let was_loaded = segment.is_loaded();
            let bytes = segment.log_bytes()?;
            // Producers' batches only, each control batch with its marker (a few bytes of a map
            // the header walk has touched already).
            let mut replayed = Vec::new();
            for item in RecordBatches::headers_only(bytes) {
                let Ok((position, header)) = item else { break };
                if header.base_offset >= from && header.producer_id >= 0 {
                    let marker = header
                        .is_control()
                        .then(|| batch::end_txn_marker(&bytes[position..]))
                        .flatten();
                    replayed.push((header, marker));
                }
            }
            if !was_loaded {
                segment.unload();
            }
            for (header, marker) in replayed {
                self.apply_with_marker(&header, marker)?;
            }
        }
        Ok(())
    }

    /// Forgets the aborted transactions whose markers are below the log start offset.
    pub(crate) fn prune_txn_index(&mut self) -> Result<()> {
        let log_start_offset = self.log_start_offset;
        self.txn_index.retain(|e| e.last_offset >= log_start_offset)
    }

    /// After segments were deleted from the front: snapshots older than the first segment could
    /// only be replayed through records that are gone, so they go too; if any did, the current
    /// state is snapshotted at the log end so a restart still starts from one.
    pub(crate) fn delete_producer_snapshots_before_segments(&mut self) -> Result<()> {
        let first_base = self.segments.keys().next().copied().unwrap_or(0);
        let mut removed = false;
        for offset in producer_state::list_snapshots(&self.dir)? {
            if offset >= first_base {
                break;
            }
            producer_state::delete_snapshot(&self.dir, offset)?;
            removed = true;
        }
        if removed {
            self.snapshot_producer_state(self.log_end_offset())?;
        }
        Ok(())
    }

    /// Writes the producer state as of `offset` (the log end) to a snapshot, unless there is no
    /// producer to remember: a snapshot only shortens the rebuild, and an empty one would make
    /// most logs (no idempotent producer) carry a file per segment for nothing.
    pub(crate) fn snapshot_producer_state(&mut self, offset: i64) -> Result<()> {
        // Entries below the snapshot are the ones no replay recreates: durable first.
        self.txn_index.flush()?;
        if self.producer_state.is_empty() {
            return Ok(());
        }
        self.producer_state.write_snapshot(&self.dir, offset)
    }
}
