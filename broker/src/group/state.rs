//! One consumer group's membership, as Kafka's classic protocol runs it (`GroupMetadata` plus the
//! join/sync/heartbeat/leave logic of `GroupCoordinator`): a pure state machine. No clock, no I/O:
//! every call takes `now_ms`, and a JoinGroup or SyncGroup that has to wait gets a oneshot receiver
//! the machine completes later (when the rebalance completes, or the leader syncs). Time-driven
//! transitions (session expiry, the rebalance deadline, the initial rebalance delay) happen in
//! [`Group::tick`], which the coordinator calls periodically and tests call with any time they like.
//!
//! What must be persisted (Kafka's `storeGroup`) the machine only *asks for*: a transition that
//! needs a `GroupMetadataValue` written queues a [`GroupStore`]. The group's side of that
//! exchange — the records it queues, what their completion does, and the group rebuilt from its
//! last record ([`Group::load`]) or given up when another broker coordinates it
//! ([`Group::unload`]) — is in the child module `persistence`, an `impl Group` of its own: it is
//! the part that must agree with the record format and with the coordinator's
//! `group::persistence`, while this file is the membership protocol itself.

mod members;
mod persistence;

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;

use members::Members;
pub use persistence::GroupStore;
use persistence::StorePurpose;

/// The most protocols a member may name in JoinGroup (clients name one to three assignors).
pub const PROTOCOLS_PER_MEMBER_MAX: usize = 64;

/// Kafka's group states (classic protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name DescribeGroups and ListGroups report.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Broker settings that bound every group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an Empty group waits
    /// for more members before completing.
    pub initial_rebalance_delay_ms: i32,
    /// `group.max.size`
    pub max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: i32::MAX as usize,
        }
    }
}

/// A JoinGroup request, as the state machine needs it.
#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// KIP-394 (JoinGroup v4+): a new member first gets MEMBER_ID_REQUIRED and its id.
    pub require_known_member_id: bool,
    /// The id a new member gets (the coordinator makes it: `<client id>-<random>`).
    pub fresh_member_id: String,
}

/// A member as the JoinGroup response lists it to the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: String,
    pub member_id: String,
    /// Only the leader gets the members (with their metadata for the chosen protocol).
    pub members: Vec<JoinedMember>,
}

impl JoinResult {
    pub fn error(error: ResponseError, member_id: &str) -> JoinResult {
        JoinResult {
            error: Some(error),
            generation_id: -1,
            member_id: member_id.to_string(),
            ..JoinResult::default()
        }
    }
}

/// A SyncGroup answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncResult {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: ResponseError) -> SyncResult {
        SyncResult {
            error: Some(error),
            ..SyncResult::default()
        }
    }
}

/// An answer now, or one that arrives when the group gets there.
#[derive(Debug)]
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// A committed offset (Kafka's `OffsetAndMetadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// One member as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
    session_deadline_ms: i64,
    /// Order of first join: the leader is re-chosen as the earliest remaining member.
    joined_seq: u64,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    /// Kafka's `shouldKeepAlive`: a member whose JoinGroup is parked stays until the rebalance
    /// answers it (the rebalance timeout bounds that); otherwise, a SyncGroup in wait included,
    /// the session decides. A member that went away mid-sync (a static member sends no
    /// LeaveGroup) would otherwise outlive its session until the sync completed.
    fn keep_alive(&self, now_ms: i64) -> bool {
        self.join_waiter.is_some() || self.session_deadline_ms > now_ms
    }
}

/// One group: membership, generation, and committed offsets.
#[derive(Debug)]
pub struct Group {
    pub id: String,
    config: GroupConfig,
    state: GroupState,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader_id: Option<String>,
    members: Members,
    /// KIP-394: member ids handed out with MEMBER_ID_REQUIRED, not yet joined, and their deadline.
    pending_members: HashMap<String, i64>,
    /// group.instance.id → member id.
    static_members: HashMap<String, String>,
    rebalance_deadline_ms: i64,
    /// While the first rebalance of an Empty group waits for more members: (until, hard limit).
    initial_delay: Option<(i64, i64)>,
    next_seq: u64,
    /// Rebalances started since the group was loaded (a metric).
    rebalances: u64,
    /// Committed offsets by (topic, partition).
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// When the group last became Empty (Kafka's `currentStateTimestamp` while Empty); `None` for a
    /// group that has not emptied since it was created, unless loaded Empty with that time.
    empty_since_ms: Option<i64>,
    /// When the group entered its current state (Kafka's `currentStateTimestamp`; -1 unknown).
    state_since_ms: i64,
    /// Records to append, in the order the state changed.
    stores_due: Vec<GroupStore>,
    /// Awaited records appended or about to be, not yet known replicated.
    stores_in_flight: Vec<(u64, StorePurpose)>,
    next_store_seq: u64,
}

impl Group {
    pub fn new(id: &str, config: GroupConfig) -> Group {
        Group {
            id: id.to_string(),
            config,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: Members::default(),
            pending_members: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay: None,
            next_seq: 0,
            rebalances: 0,
            offsets: BTreeMap::new(),
            empty_since_ms: None,
            state_since_ms: -1,
            stores_due: Vec::new(),
            stores_in_flight: Vec::new(),
            next_store_seq: 0,
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    pub fn leader_id(&self) -> Option<&str> {
        self.leader_id.as_deref()
    }

    /// Rebalances started since the group was created or loaded.
    pub fn rebalances(&self) -> u64 {
        self.rebalances
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    /// Marks the group deleted: it answers nothing any more (DeleteGroups on an Empty group).
    pub fn mark_dead(&mut self) {
        self.state = GroupState::Dead;
        self.offsets.clear();
    }

    /// Members with their metadata for the chosen protocol and their assignment.
    pub fn describe_members(&self) -> Vec<MemberDescription> {
        let protocol = self.protocol_name.as_deref().unwrap_or("");
        self.members
            .iter()
            .map(|(id, member)| MemberDescription {
                member_id: id.clone(),
                group_instance_id: member.instance_id.clone(),
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                metadata: member.metadata_for(protocol),
                assignment: member.assignment.clone(),
            })
            .collect()
    }

    /// The topics the members subscribe to, if the group uses the consumer protocol and every
    /// member's metadata parses (Kafka's `ConsumerProtocolSubscription`); `None` otherwise.
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = Vec::new();
        for member in self.members.values() {
            topics.extend(parse_subscription_topics(&member.metadata_for(protocol))?);
        }
        Some(topics)
    }

    // ---------------------------------------------------------------------------------------------
    // JoinGroup

    pub fn join(&mut self, request: JoinRequest, now_ms: i64) -> Reply<JoinResult> {
        let fail = |error| Reply::Now(JoinResult::error(error, &request.member_id));
        if self.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if !self.supports_protocols(&request.protocol_type, &request.protocols) {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        if request.session_timeout_ms < self.config.min_session_timeout_ms
            || request.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        if request.member_id.is_empty() {
            return self.join_unknown_member(request, now_ms);
        }
        if self.pending_members.contains_key(&request.member_id) {
            self.pending_members.remove(&request.member_id);
            let id = request.member_id.clone();
            return self.add_member_and_rebalance(id, request, now_ms);
        }
        if self.is_static_member_fenced(request.group_instance_id.as_deref(), &request.member_id) {
            return fail(ResponseError::FencedInstanceId);
        }
        let Some(member) = self.members.get(&request.member_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        let unchanged = member.same_protocols(&request.protocols);
        let is_leader = self.leader_id.as_deref() == Some(request.member_id.as_str());
        match self.state {
            GroupState::CompletingRebalance if unchanged => {
                Reply::Now(self.current_join_result(&request.member_id))
            }
            GroupState::Stable if unchanged && !is_leader => {
                Reply::Now(self.current_join_result(&request.member_id))
            }
            GroupState::Empty | GroupState::Dead => fail(ResponseError::UnknownMemberId),
            _ => self.update_member_and_rebalance(request, now_ms),
        }
    }

    fn join_unknown_member(&mut self, request: JoinRequest, now_ms: i64) -> Reply<JoinResult> {
        let id = request.fresh_member_id.clone();
        if let Some(instance_id) = &request.group_instance_id {
            if let Some(old_id) = self.static_members.get(instance_id).cloned() {
                return self.replace_static_member(old_id, id, request, now_ms);
            }
        } else if request.require_known_member_id {
            if self.is_full() {
                return Reply::Now(JoinResult::error(ResponseError::GroupMaxSizeReached, ""));
            }
            self.pending_members
                .insert(id.clone(), now_ms + i64::from(request.session_timeout_ms));
            return Reply::Now(JoinResult::error(ResponseError::MemberIdRequired, &id));
        }
        self.add_member_and_rebalance(id, request, now_ms)
    }

    fn is_full(&self) -> bool {
        self.members.len() + self.pending_members.len() >= self.config.max_size
    }

    /// A static member whose instance id now belongs to another member id.
    fn is_static_member_fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        instance_id
            .and_then(|instance| self.static_members.get(instance))
            .is_some_and(|owner| owner != member_id)
    }

    fn add_member_and_rebalance(
        &mut self,
        id: String,
        request: JoinRequest,
        now_ms: i64,
    ) -> Reply<JoinResult> {
        // A pending member was counted already; anyone else must fit.
        if self.members.len() >= self.config.max_size {
            return Reply::Now(JoinResult::error(ResponseError::GroupMaxSizeReached, &id));
        }
        let (sender, receiver) = oneshot::channel();
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        if let Some(instance_id) = &request.group_instance_id {
            self.static_members.insert(instance_id.clone(), id.clone());
        }
        self.next_seq += 1;
        self.members.insert(
            id.clone(),
            Member {
                instance_id: request.group_instance_id,
                client_id: request.client_id,
                client_host: request.client_host,
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                protocol_type: request.protocol_type,
                protocols: request.protocols,
                assignment: Bytes::new(),
                join_waiter: Some(sender),
                sync_waiter: None,
                session_deadline_ms: now_ms + i64::from(request.session_timeout_ms),
                joined_seq: self.next_seq,
            },
        );
        if self.leader_id.is_none() {
            self.leader_id = Some(id);
        }
        match self.state {
            GroupState::PreparingRebalance => {
                // Kafka's InitialDelayedJoin: every new member restarts the delay, up to the limit.
                if let Some((until, limit)) = &mut self.initial_delay {
                    *until = (now_ms + i64::from(self.config.initial_rebalance_delay_ms))
                        .min(*limit)
                        .max(*until);
                }
            }
            _ => self.prepare_rebalance(now_ms),
        }
        self.try_complete_join(now_ms);
        Reply::Later(receiver)
    }

    fn update_member_and_rebalance(
        &mut self,
        request: JoinRequest,
        now_ms: i64,
    ) -> Reply<JoinResult> {
        let (sender, receiver) = oneshot::channel();
        let Some(member) = self
            .members
            .set_protocols(&request.member_id, request.protocols)
        else {
            return Reply::Now(JoinResult::error(
                ResponseError::UnknownMemberId,
                &request.member_id,
            ));
        };
        member.protocol_type = request.protocol_type;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.session_deadline_ms = now_ms + i64::from(request.session_timeout_ms);
        if let Some(old) = member.join_waiter.replace(sender) {
            // A member re-sent its JoinGroup: the earlier request is superseded.
            drop(old.send(JoinResult::error(
                ResponseError::RebalanceInProgress,
                &request.member_id,
            )));
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now_ms);
        }
        self.try_complete_join(now_ms);
        Reply::Later(receiver)
    }

    /// KIP-345: a known group.instance.id joins with an empty member id (a restarted static
    /// member). It takes over the old member (fencing it) under a new member id; a Stable group
    /// keeps its generation and assignment, so there is no rebalance.
    fn replace_static_member(
        &mut self,
        old_id: String,
        new_id: String,
        request: JoinRequest,
        now_ms: i64,
    ) -> Reply<JoinResult> {
        let Some(mut member) = self.members.remove(&old_id) else {
            self.static_members
                .remove(request.group_instance_id.as_deref().unwrap_or(""));
            return self.add_member_and_rebalance(new_id, request, now_ms);
        };
        if let Some(waiter) = member.join_waiter.take() {
            drop(waiter.send(JoinResult::error(ResponseError::FencedInstanceId, &old_id)));
        }
        if let Some(waiter) = member.sync_waiter.take() {
            drop(waiter.send(SyncResult::error(ResponseError::FencedInstanceId)));
        }
        let unchanged = member.same_protocols(&request.protocols);
        let old_session_timeout_ms = member.session_timeout_ms;
        let old_rebalance_timeout_ms = member.rebalance_timeout_ms;
        member.client_id = request.client_id.clone();
        member.client_host = request.client_host.clone();
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.session_deadline_ms = now_ms + i64::from(request.session_timeout_ms);
        self.members.insert(new_id.clone(), member);
        let instance_id = request.group_instance_id.clone().unwrap_or_default();
        self.static_members
            .insert(instance_id.clone(), new_id.clone());
        if self.leader_id.as_deref() == Some(old_id.as_str()) {
            self.leader_id = Some(new_id.clone());
        }
        if self.state == GroupState::Stable && unchanged {
            // The new member id is persisted before the member hears it (so a restarted
            // coordinator knows it); the answer waits for the record.
            let (sender, receiver) = oneshot::channel();
            if let Some(member) = self.members.get_mut(&new_id) {
                member.join_waiter = Some(sender);
            }
            let value = self.metadata_value(&|_, member| member.assignment.clone());
            let seq = self.queue_store(value, true);
            self.stores_in_flight.push((
                seq,
                StorePurpose::StaticMember {
                    generation: self.generation_id,
                    instance_id,
                    old_id,
                    new_id,
                    old_session_timeout_ms,
                    old_rebalance_timeout_ms,
                },
            ));
            return Reply::Later(receiver);
        }
        let request = JoinRequest {
            member_id: new_id,
            ..request
        };
        self.update_member_and_rebalance(request, now_ms)
    }

    /// The answer for a member of the current generation (a repeated join that changes nothing).
    fn current_join_result(&self, member_id: &str) -> JoinResult {
        let is_leader = self.leader_id.as_deref() == Some(member_id);
        JoinResult {
            error: None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.joined_members()
            } else {
                Vec::new()
            },
        }
    }

    fn joined_members(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or("");
        let mut members: Vec<(&String, &Member)> = self.members.iter().collect();
        members.sort_by_key(|(_, member)| member.joined_seq);
        members
            .into_iter()
            .map(|(id, member)| JoinedMember {
                member_id: id.clone(),
                group_instance_id: member.instance_id.clone(),
                metadata: member.metadata_for(protocol),
            })
            .collect()
    }

    /// Kafka's `supportsProtocols`: a non-empty group takes only members of its protocol type that
    /// share a protocol with every current member. A member naming more than
    /// [`PROTOCOLS_PER_MEMBER_MAX`] protocols is refused too: choosing among them costs every
    /// rebalance time under the group's lock.
    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty()
            || protocols.is_empty()
            || protocols.len() > PROTOCOLS_PER_MEMBER_MAX
        {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let everyone = self.members.len();
        protocols
            .iter()
            .any(|(name, _)| self.members.support(name) == everyone)
    }

    /// Kafka's `selectProtocol`: among the protocols every member supports, each member votes for
    /// the first of its own list; the most votes wins (ties go to the earliest member's
    /// preference). Linear in the members' protocols.
    fn select_protocol(&self) -> Option<String> {
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|member| member.joined_seq);
        let first = members.first()?;
        let mut candidates: Vec<&str> = Vec::new();
        let mut position: HashMap<&str, usize> = HashMap::new();
        for (name, _) in &first.protocols {
            if self.members.support(name) == members.len() && !position.contains_key(name.as_str())
            {
                position.insert(name.as_str(), candidates.len());
                candidates.push(name.as_str());
            }
        }
        let mut votes: Vec<usize> = vec![0; candidates.len()];
        for member in &members {
            if let Some(&choice) = member
                .protocols
                .iter()
                .find_map(|(name, _)| position.get(name.as_str()))
            {
                votes[choice] += 1;
            }
        }
        let best = votes.iter().copied().max()?;
        let winner = votes.iter().position(|v| *v == best)?;
        Some(candidates[winner].to_owned())
    }

    fn prepare_rebalance(&mut self, now_ms: i64) {
        if self.state != GroupState::PreparingRebalance {
            self.rebalances += 1;
            self.state_since_ms = now_ms;
        }
        // A store still in flight belongs to a state the group has left: its completion changes
        // nothing (Kafka's callbacks check the state and generation first).
        self.stores_in_flight.clear();
        if self.state == GroupState::CompletingRebalance {
            self.reset_assignments_and_fail_syncs();
        }
        let max_rebalance_ms = self
            .members
            .values()
            .map(|member| i64::from(member.rebalance_timeout_ms.max(0)))
            .max()
            .unwrap_or(0);
        if self.state == GroupState::Empty {
            let delay = i64::from(self.config.initial_rebalance_delay_ms).min(max_rebalance_ms);
            let until = now_ms + delay;
            self.initial_delay = Some((until, now_ms + max_rebalance_ms));
            self.rebalance_deadline_ms = now_ms + max_rebalance_ms;
        } else {
            self.initial_delay = None;
            self.rebalance_deadline_ms = now_ms + max_rebalance_ms;
        }
        self.state = GroupState::PreparingRebalance;
    }

    fn reset_assignments_and_fail_syncs(&mut self) {
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
            if let Some(waiter) = member.sync_waiter.take() {
                drop(waiter.send(SyncResult::error(ResponseError::RebalanceInProgress)));
            }
        }
    }

    fn try_complete_join(&mut self, now_ms: i64) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if let Some((until, _)) = self.initial_delay {
            if now_ms < until {
                return;
            }
            self.complete_join(now_ms);
            return;
        }
        let all_joined = self.pending_members.is_empty()
            && self.members.values().all(|m| m.join_waiter.is_some());
        if all_joined || now_ms >= self.rebalance_deadline_ms {
            self.complete_join(now_ms);
        }
    }

    /// Kafka's `onCompleteJoin`: members that did not rejoin are dropped, the next generation
    /// starts, and every waiting member gets its JoinGroup answer.
    fn complete_join(&mut self, now_ms: i64) {
        self.initial_delay = None;
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| member.join_waiter.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.forget_member(&id);
        }
        self.generation_id += 1;
        self.state_since_ms = now_ms;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.empty_since_ms = Some(now_ms);
            self.protocol_name = None;
            self.leader_id = None;
            // Kafka's onCompleteJoin stores the empty generation, so that a restarted
            // coordinator does not bring back the members of the last stored one.
            let value = self.metadata_value(&|_, _| Bytes::new());
            self.queue_store(value, false);
            return;
        }
        if self
            .leader_id
            .as_ref()
            .is_none_or(|leader| !self.members.contains_key(leader))
        {
            self.leader_id = self.earliest_member();
        }
        self.protocol_name = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.current_join_result(&id);
            if let Some(member) = self.members.get_mut(&id) {
                member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                if let Some(waiter) = member.join_waiter.take() {
                    drop(waiter.send(result));
                }
            }
        }
    }

    fn earliest_member(&self) -> Option<String> {
        self.members
            .iter()
            .min_by_key(|(_, member)| member.joined_seq)
            .map(|(id, _)| id.clone())
    }

    /// Removes a member without any state transition, answering whatever it waits for.
    fn forget_member(&mut self, id: &str) {
        let Some(mut member) = self.members.remove(id) else {
            return;
        };
        if let Some(instance_id) = &member.instance_id {
            if self.static_members.get(instance_id).map(String::as_str) == Some(id) {
                self.static_members.remove(instance_id);
            }
        }
        if let Some(waiter) = member.join_waiter.take() {
            drop(waiter.send(JoinResult::error(ResponseError::UnknownMemberId, id)));
        }
        if let Some(waiter) = member.sync_waiter.take() {
            drop(waiter.send(SyncResult::error(ResponseError::UnknownMemberId)));
        }
        if self.leader_id.as_deref() == Some(id) {
            self.leader_id = None;
        }
    }

    /// A member left or expired: the others rebalance.
    fn remove_member(&mut self, id: &str, now_ms: i64) {
        self.forget_member(id);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms);
                // The last member gone: nobody to wait for, the group is Empty at once.
                self.try_complete_join(now_ms);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now_ms),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ---------------------------------------------------------------------------------------------
    // SyncGroup, Heartbeat, LeaveGroup

    /// `assignments` is what the leader sends (ignored from followers).
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now_ms: i64,
    ) -> Reply<SyncResult> {
        let fail = |error| Reply::Now(SyncResult::error(error));
        if self.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if let Err(error) = self.validate_member(member_id, instance_id, generation_id) {
            return fail(error);
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol_name.is_some_and(|n| Some(n) != self.protocol_name.as_deref())
        {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => fail(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => fail(ResponseError::RebalanceInProgress),
            GroupState::Stable => {
                let result = self.sync_result(member_id);
                if let Some(member) = self.members.get_mut(member_id) {
                    member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                }
                Reply::Now(result)
            }
            GroupState::CompletingRebalance => {
                let (sender, receiver) = oneshot::channel();
                if let Some(member) = self.members.get_mut(member_id) {
                    member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                    member.sync_waiter = Some(sender);
                }
                let storing = self
                    .stores_in_flight
                    .iter()
                    .any(|(_, purpose)| matches!(purpose, StorePurpose::Assignment { .. }));
                if self.leader_id.as_deref() == Some(member_id) && !storing {
                    // Kafka's doSyncGroup: members the leader left out get an empty assignment;
                    // it takes effect once the group's record is replicated.
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    let assignment: HashMap<String, Bytes> = self
                        .members
                        .keys()
                        .map(|id| (id.clone(), given.remove(id).unwrap_or_default()))
                        .collect();
                    let value = self
                        .metadata_value(&|id, _| assignment.get(id).cloned().unwrap_or_default());
                    let seq = self.queue_store(value, true);
                    self.stores_in_flight.push((
                        seq,
                        StorePurpose::Assignment {
                            generation: self.generation_id,
                            assignment,
                        },
                    ));
                }
                Reply::Later(receiver)
            }
        }
    }

    fn sync_result(&self, member_id: &str) -> SyncResult {
        SyncResult {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|member| member.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// Kafka's `validateCurrentMember`: fenced static member, unknown member, wrong generation.
    fn validate_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), ResponseError> {
        if self.is_static_member_fenced(instance_id, member_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation_id != self.generation_id {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> Option<ResponseError> {
        match self.state {
            GroupState::Dead => return Some(ResponseError::CoordinatorNotAvailable),
            GroupState::Empty => return Some(ResponseError::UnknownMemberId),
            _ => {}
        }
        if let Err(error) = self.validate_member(member_id, instance_id, generation_id) {
            return Some(error);
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
        }
        (self.state == GroupState::PreparingRebalance).then_some(ResponseError::RebalanceInProgress)
    }

    /// One member leaving (LeaveGroup; v3+ names static members by instance id alone).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now_ms: i64,
    ) -> Option<ResponseError> {
        if self.state == GroupState::Dead {
            return Some(ResponseError::CoordinatorNotAvailable);
        }
        let member_id = match instance_id {
            Some(instance) => match self.static_members.get(instance) {
                Some(owner) if member_id.is_empty() || owner == member_id => owner.clone(),
                Some(_) => return Some(ResponseError::FencedInstanceId),
                None => return Some(ResponseError::UnknownMemberId),
            },
            None => member_id.to_string(),
        };
        if self.pending_members.remove(&member_id).is_some() {
            return None;
        }
        if !self.members.contains_key(&member_id) {
            return Some(ResponseError::UnknownMemberId);
        }
        self.remove_member(&member_id, now_ms);
        None
    }

    /// Checks an OffsetCommit against the membership (Kafka's `doCommitOffsets`). Generation -1
    /// with no member id is a commit from a consumer that assigns itself partitions: accepted only
    /// while the group has no members.
    pub fn validate_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        match self.state {
            GroupState::Dead => return Err(ResponseError::CoordinatorNotAvailable),
            GroupState::Empty if generation_id < 0 && member_id.is_empty() => return Ok(()),
            _ => {}
        }
        self.validate_member(member_id, instance_id, generation_id)?;
        if self.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------------
    // Offset expiry

    /// When the group last became Empty, if it did since it was created or loaded.
    pub fn empty_since_ms(&self) -> Option<i64> {
        self.empty_since_ms
    }

    /// The committed offsets that have outlived `retention_ms` at `now_ms` (Kafka's
    /// `GroupMetadata.removeExpiredOffsets`, KIP-211 and KIP-496):
    ///
    /// - an Empty group that has had members (a protocol type): every offset expires
    ///   `retention_ms` after the group became Empty; if that moment is unknown (the group was
    ///   loaded at start-up and has not emptied since), after its commit timestamp;
    /// - a standalone group (never had a protocol type; commits from `assign()` consumers): each
    ///   offset expires `retention_ms` after its commit timestamp;
    /// - a Stable consumer-protocol group whose subscriptions are known: offsets of topics no
    ///   member subscribes to expire `retention_ms` after their commit timestamp;
    /// - any other group keeps its offsets.
    pub fn expired_offsets(&self, now_ms: i64, retention_ms: i64) -> Vec<(String, i32)> {
        let expired = |base_ms: i64| now_ms.saturating_sub(base_ms) >= retention_ms;
        let select = |keep_topic: &dyn Fn(&str) -> bool, base: &dyn Fn(&CommittedOffset) -> i64| {
            self.offsets
                .iter()
                .filter(|((topic, _), offset)| !keep_topic(topic) && expired(base(offset)))
                .map(|(key, _)| key.clone())
                .collect()
        };
        match (self.state, self.protocol_type.as_deref()) {
            (GroupState::Empty, Some(_)) => select(&|_| false, &|offset| {
                self.empty_since_ms.unwrap_or(offset.commit_timestamp_ms)
            }),
            (GroupState::Empty, None) => select(&|_| false, &|offset| offset.commit_timestamp_ms),
            (GroupState::Stable, Some("consumer")) => match self.subscribed_topics() {
                Some(subscribed) => {
                    select(&|topic| subscribed.iter().any(|s| s == topic), &|offset| {
                        offset.commit_timestamp_ms
                    })
                }
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Time

    /// Expires sessions and pending member ids, and completes a rebalance whose time is up.
    pub fn tick(&mut self, now_ms: i64) {
        if self.state == GroupState::Dead {
            return;
        }
        self.pending_members
            .retain(|_, deadline_ms| *deadline_ms > now_ms);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| !member.keep_alive(now_ms))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = self.id, member = id, "member session expired");
            self.remove_member(&id, now_ms);
        }
        self.try_complete_join(now_ms);
    }
}

/// The topic list of a `ConsumerProtocolSubscription` (version INT16, then an array of INT16-length
/// strings; every version starts that way).
fn parse_subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut rest = metadata.get(2..)?;
    let count = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    rest = &rest[4..];
    let mut topics = Vec::new();
    for _ in 0..count.max(0) {
        let len = i16::from_be_bytes(rest.get(..2)?.try_into().ok()?);
        let len = usize::try_from(len).ok()?;
        let name = rest.get(2..2 + len)?;
        topics.push(String::from_utf8(name.to_vec()).ok()?);
        rest = &rest[2 + len..];
    }
    Some(topics)
}

#[cfg(test)]
mod tests;
