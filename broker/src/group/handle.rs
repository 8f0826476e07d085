//! [`GroupsHandle`]: everything a group API handler (JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, OffsetDelete, DescribeGroups, ListGroups, DeleteGroups) reaches,
//! instead of the whole broker: the coordinator's groups and settings, the `__consumer_offsets`
//! partitions it persists them to ([`OffsetsLog`]), and the metadata image the request is
//! answered from (which topics' offsets can be committed). The dispatch builds one per request
//! from the broker ([`GroupsHandle::of`]); a test builds one over a coordinator with a manual
//! clock and an in-memory log.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use skald_controller::MetadataImage;

use super::offsets_log::{AppendWait, OffsetsLog};
use super::{CommittedOffset, Group, GroupCoordinator, StoreWait, Tombstones};
use crate::broker::Broker;

/// The narrow handle of the group APIs.
#[derive(Clone, Copy)]
pub struct GroupsHandle<'a> {
    pub coordinator: &'a Arc<GroupCoordinator>,
    pub offsets_log: &'a dyn OffsetsLog,
    pub image: &'a MetadataImage,
}

impl<'a> GroupsHandle<'a> {
    /// `broker`'s coordinator and offsets partitions, answering from `image`.
    pub fn of(broker: &'a Broker, image: &'a MetadataImage) -> GroupsHandle<'a> {
        GroupsHandle {
            coordinator: &broker.groups,
            offsets_log: broker,
            image,
        }
    }

    /// [`GroupCoordinator::check_coordinator`] over this handle's log.
    pub fn check_coordinator(&self, group_id: &str) -> Result<(), ResponseError> {
        self.coordinator
            .check_coordinator(self.offsets_log, group_id)
    }

    /// [`GroupCoordinator::persist_due`] to this handle's log.
    pub fn persist_due(&self, group: &mut Group) -> Vec<StoreWait> {
        self.coordinator.persist_due(self.offsets_log, group)
    }

    /// [`GroupCoordinator::append_offsets`] to this handle's log.
    pub fn append_offsets(
        &self,
        group_id: &str,
        changes: &[(String, i32, Option<CommittedOffset>)],
    ) -> Result<Option<AppendWait>, ResponseError> {
        self.coordinator
            .append_offsets(self.offsets_log, group_id, changes)
    }

    /// [`GroupCoordinator::append_tombstones`] to this handle's log.
    pub fn append_tombstones(
        &self,
        group_id: &str,
        tombstones: &Tombstones,
    ) -> Result<Option<AppendWait>, ResponseError> {
        self.coordinator
            .append_tombstones(self.offsets_log, group_id, tombstones)
    }

    /// Whether `topic` has partition `index` in the image.
    pub fn partition_exists(&self, topic: &str, index: i32) -> bool {
        self.image
            .topic(topic)
            .is_some_and(|t| t.partitions.contains_key(&index))
    }
}
