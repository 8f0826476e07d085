//! A group's side of `__consumer_offsets` (Kafka's `storeGroup` callbacks, `loadGroup` and
//! `onGroupUnloaded`), still pure: the `GroupMetadataValue` records the membership machine queues,
//! what happens when the coordinator reports one replicated or failed, and the group rebuilt from
//! its last record or dropped when coordination moves to another broker.
//!
//! The coordinator takes the due stores with [`Group::take_due_stores`] under the group's lock,
//! appends them, and reports back through [`Group::store_completed`]. The leader's assignment takes
//! effect (the group becomes Stable and the SyncGroups are answered) only once its record is
//! replicated, as in Kafka; a record that fails sends the group back to rebalancing, and a static
//! member's failed takeover is undone.
//!
//! A child of `state` so it can read the group's private fields; `state` calls
//! [`Group::queue_store`] and [`Group::metadata_value`] where a transition needs a record.

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::{Group, GroupConfig, GroupState, JoinResult, Member, SyncResult};
use crate::group::records::{GroupMetadataValue, MemberMetadata};

/// A group metadata record the group needs written to its `__consumer_offsets` partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStore {
    /// Names the store in [`Group::store_completed`].
    pub seq: u64,
    pub value: GroupMetadataValue,
    /// Whether a request's answer waits until the record is replicated (the leader's
    /// SyncGroup, a static member's JoinGroup); if not, nothing depends on it (the group became
    /// Empty) and a failure is only logged, as in Kafka.
    pub awaited: bool,
}

/// What a store in flight completes.
#[derive(Debug)]
pub(super) enum StorePurpose {
    /// The leader's assignment for `generation` (Kafka's `doSyncGroup` callback).
    Assignment {
        generation: i32,
        assignment: HashMap<String, Bytes>,
    },
    /// KIP-345: a static member took over its instance under `new_id` in a Stable group
    /// (Kafka's `updateStaticMemberAndRebalance`); on failure the takeover is undone.
    StaticMember {
        generation: i32,
        instance_id: String,
        old_id: String,
        new_id: String,
        old_session_timeout_ms: i32,
        old_rebalance_timeout_ms: i32,
    },
}

impl Group {
    /// A group as its last `GroupMetadataValue` left it (Kafka's `GroupMetadata.loadGroup` and
    /// `onGroupLoaded`): Stable with its members, generation, protocol, leader and assignments,
    /// or Empty if it has none. Each member's session starts now; static members are mapped by
    /// instance id. A group over `group.max.size` starts rebalancing, as in Kafka.
    pub fn load(id: &str, config: GroupConfig, value: GroupMetadataValue, now_ms: i64) -> Group {
        let mut group = Group::new(id, config);
        group.generation_id = value.generation;
        group.protocol_type =
            (!value.protocol_type.is_empty()).then(|| value.protocol_type.clone());
        group.state_since_ms = value.current_state_timestamp_ms;
        let protocol = value.protocol.clone().unwrap_or_default();
        for member in value.members {
            if group.members.contains_key(&member.member_id) {
                continue;
            }
            if let Some(instance_id) = &member.group_instance_id {
                group
                    .static_members
                    .insert(instance_id.clone(), member.member_id.clone());
            }
            group.next_seq += 1;
            group.members.insert(
                member.member_id,
                Member {
                    instance_id: member.group_instance_id,
                    client_id: member.client_id,
                    client_host: member.client_host,
                    session_timeout_ms: member.session_timeout_ms,
                    rebalance_timeout_ms: member.rebalance_timeout_ms,
                    protocol_type: value.protocol_type.clone(),
                    // Kafka keeps only the chosen protocol's metadata for a loaded member.
                    protocols: vec![(protocol.clone(), member.subscription)],
                    assignment: member.assignment,
                    join_waiter: None,
                    sync_waiter: None,
                    session_deadline_ms: now_ms
                        .saturating_add(i64::from(member.session_timeout_ms)),
                    joined_seq: group.next_seq,
                },
            );
        }
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.empty_since_ms =
                (value.current_state_timestamp_ms >= 0).then_some(value.current_state_timestamp_ms);
            return group;
        }
        group.state = GroupState::Stable;
        group.protocol_name = value.protocol;
        group.leader_id = value
            .leader
            .filter(|leader| group.members.contains_key(leader))
            .or_else(|| group.earliest_member());
        if group.members.len() > group.config.max_size {
            group.prepare_rebalance(now_ms);
        }
        group
    }

    /// Kafka's `onGroupUnloaded`: another broker coordinates the group now. It is Dead here, and
    /// whoever waits on a JoinGroup or SyncGroup is told NOT_COORDINATOR.
    pub fn unload(&mut self) {
        self.state = GroupState::Dead;
        self.stores_due.clear();
        self.stores_in_flight.clear();
        for (id, member) in self.members.iter_mut() {
            if let Some(waiter) = member.join_waiter.take() {
                drop(waiter.send(JoinResult::error(ResponseError::NotCoordinator, id)));
            }
            if let Some(waiter) = member.sync_waiter.take() {
                drop(waiter.send(SyncResult::error(ResponseError::NotCoordinator)));
            }
        }
    }

    /// Whether records wait to be appended.
    pub fn has_due_stores(&self) -> bool {
        !self.stores_due.is_empty()
    }

    /// The records to append, oldest first. Take them under the group's lock and append them
    /// before releasing it, so the log holds the group's states in order.
    pub fn take_due_stores(&mut self) -> Vec<GroupStore> {
        std::mem::take(&mut self.stores_due)
    }

    /// The outcome of an awaited store: `Ok` once its record is replicated, or the error to
    /// answer (already mapped to what the client should see). A store the group has moved past
    /// (another state or generation) changes nothing.
    pub fn store_completed(&mut self, seq: u64, result: Result<(), ResponseError>, now_ms: i64) {
        let Some(at) = self.stores_in_flight.iter().position(|(s, _)| *s == seq) else {
            return;
        };
        let (_, purpose) = self.stores_in_flight.remove(at);
        match purpose {
            StorePurpose::Assignment {
                generation,
                mut assignment,
            } => {
                if self.state != GroupState::CompletingRebalance || self.generation_id != generation
                {
                    return;
                }
                match result {
                    Ok(()) => {
                        for (id, member) in self.members.iter_mut() {
                            member.assignment = assignment.remove(id).unwrap_or_default();
                        }
                        self.state = GroupState::Stable;
                        self.state_since_ms = now_ms;
                        self.propagate_assignment(None, now_ms);
                    }
                    Err(error) => {
                        // Kafka's resetAndPropagateAssignmentError, then maybePrepareRebalance.
                        for member in self.members.values_mut() {
                            member.assignment = Bytes::new();
                        }
                        self.propagate_assignment(Some(error), now_ms);
                        self.prepare_rebalance(now_ms);
                    }
                }
            }
            StorePurpose::StaticMember {
                generation,
                instance_id,
                old_id,
                new_id,
                old_session_timeout_ms,
                old_rebalance_timeout_ms,
            } => {
                if self.state != GroupState::Stable
                    || self.generation_id != generation
                    || self.static_members.get(&instance_id) != Some(&new_id)
                {
                    return;
                }
                let Some(mut member) = self.members.remove(&new_id) else {
                    return;
                };
                let waiter = member.join_waiter.take();
                let answer = match result {
                    Ok(()) => {
                        self.members.insert(new_id.clone(), member);
                        self.current_join_result(&new_id)
                    }
                    Err(error) => {
                        // The old member id is the instance's again (Kafka reverts the update).
                        member.session_timeout_ms = old_session_timeout_ms;
                        member.rebalance_timeout_ms = old_rebalance_timeout_ms;
                        member.session_deadline_ms = now_ms + i64::from(old_session_timeout_ms);
                        self.members.insert(old_id.clone(), member);
                        self.static_members.insert(instance_id, old_id.clone());
                        if self.leader_id.as_deref() == Some(new_id.as_str()) {
                            self.leader_id = Some(old_id);
                        }
                        JoinResult {
                            generation_id: self.generation_id,
                            protocol_type: self.protocol_type.clone(),
                            protocol_name: self.protocol_name.clone(),
                            leader_id: self.leader_id.clone().unwrap_or_default(),
                            ..JoinResult::error(error, "")
                        }
                    }
                };
                if let Some(waiter) = waiter {
                    drop(waiter.send(answer));
                }
            }
        }
    }

    /// Answers every waiting SyncGroup with its member's assignment, or `error` (Kafka's
    /// `propagateAssignment`); a member answered starts a new session.
    fn propagate_assignment(&mut self, error: Option<ResponseError>, now_ms: i64) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = match error {
                None => self.sync_result(&id),
                Some(error) => SyncResult::error(error),
            };
            if let Some(member) = self.members.get_mut(&id) {
                if let Some(waiter) = member.sync_waiter.take() {
                    drop(waiter.send(result));
                    member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                }
            }
        }
    }

    pub(super) fn queue_store(&mut self, value: GroupMetadataValue, awaited: bool) -> u64 {
        self.next_store_seq += 1;
        let seq = self.next_store_seq;
        self.stores_due.push(GroupStore {
            seq,
            value,
            awaited,
        });
        seq
    }

    /// Kafka's `groupMetadataValue`: the group with every member (in joining order) and the
    /// assignment `assignment` gives it.
    pub(super) fn metadata_value(
        &self,
        assignment: &dyn Fn(&str, &Member) -> Bytes,
    ) -> GroupMetadataValue {
        let protocol = self.protocol_name.as_deref().unwrap_or("");
        let mut members: Vec<(&String, &Member)> = self.members.iter().collect();
        members.sort_by_key(|(_, member)| member.joined_seq);
        GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation_id,
            protocol: self.protocol_name.clone(),
            leader: self.leader_id.clone(),
            current_state_timestamp_ms: self.state_since_ms,
            members: members
                .into_iter()
                .map(|(id, member)| MemberMetadata {
                    member_id: id.clone(),
                    group_instance_id: member.instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    rebalance_timeout_ms: member.rebalance_timeout_ms,
                    session_timeout_ms: member.session_timeout_ms,
                    subscription: member.metadata_for(protocol),
                    assignment: assignment(id, member),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
