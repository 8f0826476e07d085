//! A log's producer state on disk: loading it (newest valid snapshot, then the batches after it),
//! keeping its snapshots in step with the segments, and expiring producers. The state itself and
//! the checks made with it are in [`crate::producer_state`].

use skald_protocol::batch::RecordBatches;

use super::{Log, LEADER_EPOCH_REBUILD_BYTES_MAX};
use crate::error::Result;
use crate::producer_state::{self, ProducerStateManager};

impl Log {
    /// Every idempotent producer's state as of the log end offset.
    pub fn producer_state(&self) -> &ProducerStateManager {
        &self.producer_state
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
        self.replay_producer_batches(replay_from)
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
            for item in RecordBatches::headers_only(segment.log_bytes()?) {
                let Ok((_, header)) = item else { break };
                if header.base_offset >= from {
                    self.producer_state.update(&header);
                }
            }
            if !was_loaded {
                segment.unload();
            }
        }
        Ok(())
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
    pub(crate) fn snapshot_producer_state(&self, offset: i64) -> Result<()> {
        if self.producer_state.is_empty() {
            return Ok(());
        }
        self.producer_state.write_snapshot(&self.dir, offset)
    }
}
