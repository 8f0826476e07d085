//! Offsets committed inside a transaction (TxnOffsetCommit, KIP-98/KIP-447): written to the
//! group's `__consumer_offsets` partition as a transactional batch of the producer, held pending
//! — invisible to OffsetFetch, which answers UNSTABLE_OFFSET_COMMIT to a reader that asks for
//! stable offsets — until the producer's COMMIT marker makes them the group's committed offsets
//! or its ABORT marker drops them (Kafka's `handleTxnCompletion`). A coordinator loading the
//! partition replays the same way: transactional offsets wait for their marker in the log, and
//! those whose marker is not there yet stay pending.

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use skald_controller::names::CONSUMER_OFFSETS_TOPIC;

use super::records::{self, Change};
use super::{lock, CommittedOffset, GroupCoordinator};
use crate::replica_manager::ReplicaManager;
use crate::replication::ReplicationWait;

/// One pending transactional offset: (group, topic, partition, offset).
pub type PendingOffset = (String, String, i32, CommittedOffset);

/// Pending transactional offsets by (`__consumer_offsets` partition, producer id).
pub type PendingTxnOffsets = HashMap<(i32, i64), Vec<PendingOffset>>;

impl GroupCoordinator {
    fn pending(&self) -> std::sync::MutexGuard<'_, PendingTxnOffsets> {
        self.pending_txn_offsets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends a TxnOffsetCommit's offsets as producer `(producer_id, producer_epoch)`'s
    /// transactional batch to the group's partition. Blocking.
    pub fn append_txn_offsets(
        &self,
        replicas: &ReplicaManager,
        group_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        offsets: &[(String, i32, CommittedOffset)],
        verification: skald_storage::TxnVerification,
    ) -> Result<ReplicationWait, ResponseError> {
        let records: Vec<(Bytes, Option<Bytes>)> = offsets
            .iter()
            .map(|(topic, index, offset)| {
                (
                    records::offset_key(group_id, topic, *index),
                    Some(records::offset_value(offset)),
                )
            })
            .collect();
        let partition = replicas
            .get(CONSUMER_OFFSETS_TOPIC, self.partition_for(group_id))
            .ok_or(ResponseError::NotCoordinator)?;
        let mut batch =
            records::build_txn_batch(&records, self.now_ms(), producer_id, producer_epoch)
                .map_err(|err| {
                    tracing::error!(
                        group = group_id,
                        "cannot encode transactional offsets: {err}"
                    );
                    ResponseError::UnknownServerError
                })?;
        let min_isr = partition.settings().min_insync_replicas;
        // The offsets become pending under the partition's lock, in log order with the markers
        // (see `decide_txn`): a marker appended after them decides them, never one before.
        let appended = replicas
            .append_to_leader(&partition, Some(min_isr), |log, leader_epoch| {
                let appended = log.append_for_producer(&mut batch, leader_epoch, verification);
                if appended.is_ok() {
                    self.add_pending_txn_offsets(group_id, producer_id, offsets.to_vec());
                }
                appended
            })
            .map_err(|_| ResponseError::NotCoordinator)?;
        match appended.appended {
            Ok(info) => Ok(ReplicationWait {
                partition,
                leader_epoch: appended.leader_epoch,
                required_offset: info.last_offset + 1,
                min_insync_replicas: min_isr,
            }),
            Err(skald_storage::Error::Producer(
                refused @ skald_storage::ProducerError::UnverifiedTxn { .. },
            )) => {
                // Verified for a transaction a marker has ended since (KIP-890).
                tracing::info!(group = group_id, "transactional offsets refused: {refused}");
                Err(ResponseError::InvalidTxnState)
            }
            Err(skald_storage::Error::Producer(refused)) => {
                tracing::info!(group = group_id, "transactional offsets refused: {refused}");
                Err(ResponseError::ProducerFenced)
            }
            Err(err) => {
                tracing::error!(
                    group = group_id,
                    "cannot append transactional offsets: {err}"
                );
                Err(ResponseError::NotCoordinator)
            }
        }
    }

    /// Starts KIP-890's verification of `producer_id`'s transaction in the group's offsets
    /// partition: the guard its offsets' append must carry (`None` when the transaction is
    /// already open there, or the partition is not led here, which the append then answers).
    pub fn start_offsets_verification(
        &self,
        replicas: &ReplicaManager,
        group_id: &str,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Option<u64> {
        replicas
            .get(CONSUMER_OFFSETS_TOPIC, self.partition_for(group_id))?
            .with_log(|log| log.start_txn_verification(producer_id, producer_epoch))
            .flatten()
    }

    /// Holds offsets a transaction committed until its marker (called under the partition's
    /// log lock, right after their append).
    fn add_pending_txn_offsets(
        &self,
        group_id: &str,
        producer_id: i64,
        offsets: Vec<(String, i32, CommittedOffset)>,
    ) {
        let index = self.partition_for(group_id);
        self.pending()
            .entry((index, producer_id))
            .or_default()
            .extend(
                offsets.into_iter().map(|(topic, partition, offset)| {
                    (group_id.to_owned(), topic, partition, offset)
                }),
            );
    }

    /// Whether a transaction has offsets pending for `(group, topic, partition)`.
    pub fn has_pending_txn_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        let index = self.partition_for(group_id);
        self.pending().iter().any(|((p, _), offsets)| {
            *p == index
                && offsets
                    .iter()
                    .any(|(g, t, i, _)| g == group_id && t == topic && *i == partition)
        })
    }

    /// Producer `producer_id`'s marker in `__consumer_offsets-<index>`, called under that
    /// partition's log lock right after the marker's append, so it decides exactly the offsets
    /// appended before it: they are returned to apply (COMMIT) or dropped (ABORT). Applying takes
    /// group locks, which must not be taken under a log lock (commits take them the other way
    /// round): see [`GroupCoordinator::apply_txn_offsets`].
    pub fn decide_txn(&self, index: i32, producer_id: i64, commit: bool) -> Vec<PendingOffset> {
        let decided = self.pending().remove(&(index, producer_id));
        match decided {
            Some(offsets) if commit => offsets,
            _ => Vec::new(),
        }
    }

    /// Makes a committed transaction's offsets the groups' committed offsets.
    pub fn apply_txn_offsets(&self, offsets: Vec<PendingOffset>) {
        for (group_id, topic, partition, offset) in offsets {
            let group = self.group_or_create(&group_id);
            lock(&group).offsets.insert((topic, partition), offset);
        }
    }

    /// Forgets the pending offsets of a partition this broker no longer leads.
    pub(crate) fn drop_pending_txn_offsets(&self, index: i32) {
        self.pending().retain(|(p, _), _| *p != index);
    }

    /// Replay's share: the transactional offsets of `__consumer_offsets-<index>` still waiting
    /// for their marker when the log ended.
    pub(crate) fn set_pending_txn_offsets(&self, index: i32, pending: HashMap<i64, Vec<Change>>) {
        let mut all = self.pending();
        for (producer_id, changes) in pending {
            let offsets: Vec<PendingOffset> = changes
                .into_iter()
                .filter_map(|change| match change {
                    Change::Offset {
                        group,
                        topic,
                        partition,
                        value: Some(value),
                    } => Some((group, topic, partition, value)),
                    _ => None,
                })
                .collect();
            if !offsets.is_empty() {
                all.insert((index, producer_id), offsets);
            }
        }
    }
}
