//! The metadata quorum: the controllers agree, through raft, on one order of committed record
//! batches, and every one of them replays that order into the same [`MetadataImage`].
//!
//! [`Quorum`] wraps raft-rs's `RawNode` so that the rest of Skald sees batches and images, not
//! entries and Ready structs. It is sans-io: the driver (in the broker crate) owns one `Quorum`,
//! calls [`Quorum::tick`] every 100 ms, feeds it peers' messages with [`Quorum::step`], proposes
//! batches, and after each of those calls [`Quorum::handle_ready`], which persists what raft asks
//! for and returns the messages to send, the proposals that completed and the new image. Tests
//! drive the same calls in a simulated network (`sim`).
//!
//! A proposal succeeds only when the entry applied at the index it was given carries the term it
//! was proposed in: raft may overwrite an uncommitted entry after a leader change, and a follower
//! silently forwards proposals (raft-plan pitfall 2), so only the leader proposes and "appended"
//! is never mistaken for "committed".
//!
//! Voters are static (KRaft's `controller.quorum.voters`): every voter bootstraps from the same
//! snapshot at index 1, term 1, so no membership change is ever proposed; conf-change entries are
//! still applied should one appear. Raft ids are Kafka node ids + 1, since raft reserves 0.

use std::collections::VecDeque;
use std::sync::Arc;

use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, Message, Snapshot};
use raft::{Config, RawNode, SnapshotStatus, StateRole};

use crate::error::{Error, Result};
use crate::follower::{MetadataFetch, MetadataUpdate, SNAPSHOT_FETCH_BYTES_MAX};
use crate::image::MetadataImage;
use crate::log::BATCH_BYTES_MAX;
use crate::protobuf_guard::{self, Schema};
use crate::raft_disk::RaftDisk;
use crate::raft_log_bridge::raft_logger;
use crate::raft_store::{decode_records, encode_records, image_from_snapshot, RaftStore};
use crate::record::MetadataRecord;

/// Proposals waiting to commit, at most. Metadata operations are rare; a queue this long means
/// the quorum cannot commit, and callers should hear so rather than queue more.
pub const PROPOSALS_PENDING_MAX: usize = 1024;
/// Ready rounds one `handle_ready` runs at most before returning (each round can unlock another).
const READY_ROUNDS_MAX: usize = 16;
/// The largest batch a proposal may encode to: below the frame limit, with room for the entry's
/// and the append message's own fields, so every entry fits one raft.log frame and one message.
pub const PROPOSAL_BYTES_MAX: usize = BATCH_BYTES_MAX - 64 * 1024;
const MESSAGE_BYTES_MAX: u64 = 1024 * 1024;
const INFLIGHT_MESSAGES_MAX: usize = 64;
const UNCOMMITTED_BYTES_MAX: u64 = 64 * 1024 * 1024;
const COMMITTED_BYTES_PER_READY_MAX: u64 = 16 * 1024 * 1024;

/// How a controller takes part in the quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumConfig {
    /// This controller's Kafka `node.id`.
    pub node_id: i32,
    /// Every voter's node id, this one included (`controller.quorum.voters`).
    pub voters: Vec<i32>,
    /// Ticks without hearing from a leader before a follower campaigns.
    pub election_tick: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_tick: usize,
    /// Applied entries after the last snapshot that trigger a new one (and log compaction).
    pub snapshot_after_entries: u64,
    /// Fixes the election timeout to this many ticks instead of a random one in
    /// `[election_tick, 2 × election_tick)`: raft draws it from the thread RNG, which a seeded
    /// simulation cannot replay.
    pub election_ticks_pinned: Option<usize>,
}

impl QuorumConfig {
    /// The defaults: elections after 10–19 ticks, heartbeats every 2, a snapshot every 10,000
    /// entries.
    pub fn new(node_id: i32, voters: Vec<i32>) -> QuorumConfig {
        QuorumConfig {
            node_id,
            voters,
            election_tick: 10,
            heartbeat_tick: 2,
            snapshot_after_entries: 10_000,
            election_ticks_pinned: None,
        }
    }

    fn validate(&self) -> Result<()> {
        let mut voters = self.voters.clone();
        voters.sort_unstable();
        voters.dedup();
        if voters.len() != self.voters.len() || voters.iter().any(|id| *id < 0) {
            return Err(Error::Bootstrap(format!(
                "voters {:?} must be distinct node ids ≥ 0",
                self.voters
            )));
        }
        if !voters.contains(&self.node_id) {
            return Err(Error::Bootstrap(format!(
                "node {} is not one of the voters {:?}",
                self.node_id, self.voters
            )));
        }
        if self.snapshot_after_entries == 0 {
            return Err(Error::Bootstrap(
                "snapshot_after_entries must be > 0".into(),
            ));
        }
        Ok(())
    }

    fn raft_config(&self, applied: u64) -> Config {
        let (min_election_tick, max_election_tick) = match self.election_ticks_pinned {
            Some(ticks) => (ticks, ticks + 1),
            None => (0, 0),
        };
        Config {
            id: raft_id(self.node_id),
            election_tick: self.election_tick,
            heartbeat_tick: self.heartbeat_tick,
            min_election_tick,
            max_election_tick,
            applied,
            max_size_per_msg: MESSAGE_BYTES_MAX,
            max_inflight_msgs: INFLIGHT_MESSAGES_MAX,
            check_quorum: true,
            pre_vote: true,
            max_uncommitted_size: UNCOMMITTED_BYTES_MAX,
            max_committed_size_per_ready: COMMITTED_BYTES_PER_READY_MAX,
            ..Config::default()
        }
    }
}

fn raft_id(node_id: i32) -> u64 {
    node_id as u64 + 1
}

fn node_id(raft_id: u64) -> Option<i32> {
    raft_id.checked_sub(1).and_then(|id| i32::try_from(id).ok())
}

/// Why a proposal was not accepted; nothing was appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Not the leader, or a leader that has not yet applied its own term's first entry (its image
    /// may still be stale). `leader` is who is, if known.
    #[error("this controller is not the active controller")]
    NotLeader { leader: Option<i32> },
    /// Raft refused it (a leadership transfer in progress, too much uncommitted data) or too many
    /// proposals are pending. Retrying later may work.
    #[error("the metadata quorum cannot take more proposals now")]
    Dropped,
    #[error("metadata record batch of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// The quorum stopped after a disk failure.
    #[error("the metadata quorum stopped after a disk failure")]
    Stopped,
}

/// Why an accepted proposal did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// Leadership changed before the batch was seen to commit. It may still commit (under the
    /// new leader) or may have been overwritten: the outcome is unknown, as Kafka's
    /// NOT_CONTROLLER is. Callers must not assume it failed.
    #[error("leadership changed before the batch was known to commit")]
    LeaderChanged,
}

/// What one [`Quorum::handle_ready`] produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages to send, with the node id to send each to.
    pub messages: Vec<(i32, Message)>,
    /// Proposals that completed, by the token they were proposed with.
    pub completed: Vec<(u64, Result<(), ProposalError>)>,
    /// The applied image, when it changed.
    pub image: Option<Arc<MetadataImage>>,
    /// This node's role or the leader it knows changed.
    pub role_changed: bool,
}

/// What `skald cluster info` shows about the quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumStatus {
    pub node_id: i32,
    pub leader: Option<i32>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub first_index: u64,
    pub last_index: u64,
    /// Every voter; `matched_index` only on the leader.
    pub voters: Vec<VoterStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoterStatus {
    pub node_id: i32,
    /// The last index the leader knows this voter has (leader only).
    pub matched_index: Option<u64>,
    /// Whether the leader heard from it within the last election timeout (leader only).
    pub recently_active: Option<bool>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    index: u64,
    term: u64,
    token: u64,
}

/// What the simulation sees applied, to check every replica applies the same history.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Applied {
    Batch {
        index: u64,
        term: u64,
        records: Vec<MetadataRecord>,
    },
    Snapshot {
        index: u64,
    },
}

/// One controller's member of the metadata quorum. See the module doc.
pub struct Quorum<D: RaftDisk> {
    node: RawNode<RaftStore<D>>,
    config: QuorumConfig,
    pending: VecDeque<Pending>,
    /// Role and leader as last reported, to tell the driver when they change.
    seen: (StateRole, u64),
    /// Why the quorum stopped: a disk failure leaves raft mid-Ready, so nothing may touch it.
    failed: Option<String>,
    #[cfg(test)]
    pub(crate) trace: Vec<Applied>,
}

impl<D: RaftDisk> std::fmt::Debug for Quorum<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quorum")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl<D: RaftDisk> Quorum<D> {
    /// Opens this controller's quorum member on `disk`.
    ///
    /// An empty disk is bootstrapped with the snapshot every voter writes alike: index 1, term 1,
    /// the configured voters, and an image replayed from `legacy` (the batches of a pre-quorum
    /// single-node `metadata.log`; empty for none). Only a single-voter quorum may start from a
    /// legacy log, since every voter's bootstrap must be identical. `legacy` is ignored when the
    /// disk already holds raft state.
    ///
    /// The image is rebuilt from the snapshot and the committed entries after it. A single voter
    /// elects itself before this returns, so it can propose at once.
    pub fn open(config: QuorumConfig, disk: D, legacy: Vec<Vec<MetadataRecord>>) -> Result<Self> {
        config.validate()?;
        if !legacy.is_empty() && config.voters.len() != 1 {
            return Err(Error::Bootstrap(format!(
                "a legacy metadata.log can only seed a single-voter quorum, not voters {:?}",
                config.voters
            )));
        }
        let store = RaftStore::open(disk, bootstrap_snapshot(&config, &legacy)?)?;
        let commit = store.hard_state().commit;
        let raft_config = config.raft_config(store.applied_index());
        let node = RawNode::new(&raft_config, store, &raft_logger(config.node_id))?;
        let seen = (node.raft.state, node.raft.leader_id);
        let mut quorum = Quorum {
            node,
            config,
            pending: VecDeque::new(),
            seen,
            failed: None,
            #[cfg(test)]
            trace: Vec::new(),
        };
        // Re-apply what committed after the snapshot. A follower that has not ticked has nothing
        // to send, so these rounds produce no messages worth keeping.
        while quorum.applied_index() < commit {
            let before = quorum.applied_index();
            quorum.handle_ready()?;
            if quorum.applied_index() == before {
                break;
            }
        }
        if quorum.config.voters == [quorum.config.node_id] && quorum.node.raft.promotable() {
            quorum.node.campaign()?;
            // Commits the new term's no-op, after which proposals are accepted.
            quorum.handle_ready()?;
        }
        tracing::info!(
            node_id = quorum.config.node_id,
            applied_index = quorum.applied_index(),
            term = quorum.term(),
            "metadata quorum member started"
        );
        Ok(quorum)
    }

    /// Advances raft's clock by one tick (100 ms in Skald).
    pub fn tick(&mut self) {
        if self.failed.is_none() {
            self.node.tick();
        }
    }

    /// Hands raft a message from a peer.
    pub fn step(&mut self, message: Message) {
        if self.failed.is_some() {
            return;
        }
        if message.to != raft_id(self.config.node_id) {
            tracing::warn!(
                to = message.to,
                "dropping a raft message meant for another node"
            );
            return;
        }
        match self.node.step(message) {
            Ok(()) | Err(raft::Error::StepLocalMsg | raft::Error::StepPeerNotFound) => {}
            Err(err) => tracing::debug!(%err, "raft refused a message"),
        }
    }

    /// Proposes one batch of records, committed all together or not at all. Its completion is
    /// reported with `token` in a later [`Output::completed`].
    pub fn propose(
        &mut self,
        records: Vec<MetadataRecord>,
        token: u64,
    ) -> Result<(), ProposeError> {
        if self.failed.is_some() {
            return Err(ProposeError::Stopped);
        }
        if self.node.raft.state != StateRole::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
            });
        }
        if !self.node.raft.apply_to_current_term() {
            return Err(ProposeError::NotLeader { leader: None });
        }
        if self.pending.len() >= PROPOSALS_PENDING_MAX {
            return Err(ProposeError::Dropped);
        }
        let data = encode_records(&records).map_err(|_| ProposeError::Dropped)?;
        if data.len() > PROPOSAL_BYTES_MAX {
            return Err(ProposeError::TooLarge {
                size: data.len(),
                max: PROPOSAL_BYTES_MAX,
            });
        }
        let index = self.node.raft.raft_log.last_index() + 1;
        let term = self.node.raft.term;
        self.node
            .propose(Vec::new(), data)
            .map_err(|_| ProposeError::Dropped)?;
        if self.node.raft.raft_log.last_index() != index {
            return Err(ProposeError::Dropped);
        }
        self.pending.push_back(Pending { index, term, token });
        Ok(())
    }

    /// Does what raft asks after a tick, step or proposal: persists entries and state, applies
    /// what committed, and returns the messages to send and what completed. Call it after every
    /// such call, before the next. A disk error stops the quorum: this and every later call fail.
    pub fn handle_ready(&mut self) -> Result<Output> {
        if let Some(reason) = &self.failed {
            return Err(Error::Failed {
                path: "metadata quorum".into(),
                reason: reason.clone(),
            });
        }
        let mut out = Output::default();
        let mut image_changed = false;
        if let Err(err) = self.run_ready(&mut out, &mut image_changed) {
            tracing::error!(%err, "the metadata quorum stops");
            self.failed = Some(err.to_string());
            return Err(err);
        }
        let now = (self.node.raft.state, self.node.raft.leader_id);
        out.role_changed = now != self.seen;
        self.seen = now;
        let term = self.node.raft.term;
        if now.0 != StateRole::Leader || self.pending.iter().any(|p| p.term != term) {
            self.fail_pending(u64::MAX, &mut out);
        }
        if image_changed {
            out.image = Some(self.image());
        }
        Ok(out)
    }

    fn run_ready(&mut self, out: &mut Output, image_changed: &mut bool) -> Result<()> {
        for _ in 0..READY_ROUNDS_MAX {
            if !self.node.has_ready() {
                break;
            }
            // The order raft-rs 0.7 requires (raft-plan §2).
            let mut ready = self.node.ready();
            self.send(ready.take_messages(), out);
            if !ready.snapshot().is_empty() {
                self.install_snapshot(ready.snapshot().clone(), out)?;
                *image_changed = true;
            }
            self.apply(ready.take_committed_entries(), out, image_changed)?;
            let store = self.node.mut_store();
            store.append(ready.entries())?;
            if let Some(hard_state) = ready.hs() {
                store.set_hard_state(hard_state)?;
            }
            store.sync()?;
            self.send(ready.take_persisted_messages(), out);
            let mut light = self.node.advance(ready);
            if let Some(commit) = light.commit_index() {
                self.node.mut_store().set_commit(commit)?;
            }
            self.send(light.take_messages(), out);
            self.apply(light.take_committed_entries(), out, image_changed)?;
            self.node.advance_apply();
        }
        self.maybe_snapshot()?;
        // The commit index too, so a restart re-applies everything this node applied.
        self.node.mut_store().sync()
    }

    fn send(&self, messages: Vec<Message>, out: &mut Output) {
        for message in messages {
            match node_id(message.to) {
                Some(to) => out.messages.push((to, message)),
                None => tracing::warn!(to = message.to, "raft addressed a message to no node"),
            }
        }
    }

    fn install_snapshot(&mut self, snapshot: Snapshot, out: &mut Output) -> Result<()> {
        let index = snapshot.get_metadata().index;
        tracing::info!(
            node_id = self.config.node_id,
            index,
            bytes = snapshot.data.len(),
            "installing a metadata snapshot from the leader"
        );
        let image = image_from_snapshot(&snapshot)?;
        self.node.mut_store().install_snapshot(&snapshot, image)?;
        self.fail_pending(index, out);
        #[cfg(test)]
        self.trace.push(Applied::Snapshot { index });
        Ok(())
    }

    fn apply(
        &mut self,
        entries: Vec<Entry>,
        out: &mut Output,
        image_changed: &mut bool,
    ) -> Result<()> {
        for entry in entries {
            let index = entry.index;
            let unreadable = |reason: String| Error::Unreadable { index, reason };
            // By type first: an empty conf change (leaving a joint config) must still be applied
            // (raft-plan pitfall 3).
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {}
                EntryType::EntryNormal => {
                    let records = decode_records(&entry.data).map_err(unreadable)?;
                    self.node.mut_store().image_mut().replay_batch(&records);
                    *image_changed = true;
                    #[cfg(test)]
                    self.trace.push(Applied::Batch {
                        index,
                        term: entry.term,
                        records,
                    });
                }
                EntryType::EntryConfChange => {
                    let mut change = ConfChange::default();
                    protobuf_guard::merge(&mut change, &entry.data, Schema::ConfChange)
                        .map_err(unreadable)?;
                    let conf_state = self.node.apply_conf_change(&change)?;
                    self.node.mut_store().set_conf_state(conf_state);
                }
                EntryType::EntryConfChangeV2 => {
                    let mut change = ConfChangeV2::default();
                    protobuf_guard::merge(&mut change, &entry.data, Schema::ConfChangeV2)
                        .map_err(unreadable)?;
                    let conf_state = self.node.apply_conf_change(&change)?;
                    self.node.mut_store().set_conf_state(conf_state);
                }
            }
            self.node.mut_store().set_applied(index, entry.term);
            while let Some(pending) = self.pending.front().copied() {
                if pending.index > index {
                    break;
                }
                self.pending.pop_front();
                let result = if pending.index == index && pending.term == entry.term {
                    Ok(())
                } else {
                    Err(ProposalError::LeaderChanged)
                };
                out.completed.push((pending.token, result));
            }
        }
        Ok(())
    }

    /// Fails pending proposals at or below `index`.
    fn fail_pending(&mut self, index: u64, out: &mut Output) {
        while let Some(pending) = self.pending.front().copied() {
            if pending.index > index {
                break;
            }
            self.pending.pop_front();
            out.completed
                .push((pending.token, Err(ProposalError::LeaderChanged)));
        }
    }

    /// Snapshots the applied image every `snapshot_after_entries` entries, then drops the log it
    /// covers, except what a recently active voter still needs unless that voter lags so far that
    /// a snapshot is the better way to catch it up.
    fn maybe_snapshot(&mut self) -> Result<()> {
        let limit = self.config.snapshot_after_entries;
        let store = self.node.store();
        if store.applied_index() - store.snapshot_index() > limit {
            self.node.mut_store().save_snapshot()?;
        }
        let store = self.node.store();
        let snapshot_index = store.snapshot_index();
        let compacted = store.first_index() - 1;
        if snapshot_index <= compacted {
            return Ok(());
        }
        let mut through = snapshot_index;
        if self.node.raft.state == StateRole::Leader {
            let me = raft_id(self.config.node_id);
            for (id, progress) in self.node.raft.prs().iter() {
                if *id != me
                    && progress.recent_active
                    && progress.matched < through
                    && snapshot_index - progress.matched <= limit
                {
                    through = progress.matched;
                }
            }
        }
        // Rewriting the log for a handful of entries is not worth it.
        if through == snapshot_index || through.saturating_sub(compacted) >= (limit / 2).max(1) {
            self.node.mut_store().compact_through(through)?;
        }
        Ok(())
    }

    /// The image as of the last applied batch.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.node.store().image().clone()
    }

    pub fn applied_index(&self) -> u64 {
        self.node.store().applied_index()
    }

    pub fn leader(&self) -> Option<i32> {
        match self.node.raft.leader_id {
            0 => None,
            id => node_id(id),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// Whether this leader has applied every entry up to the start of its own term: before
    /// that, its image may lack what an earlier leader committed, so nothing may be decided
    /// from it (a refusal included), only proposed ([`Quorum::propose`] refuses until then).
    pub fn applied_to_current_term(&self) -> bool {
        self.node.raft.apply_to_current_term()
    }

    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// Asks raft to hand leadership to `to` (before a graceful shutdown). Proposals are dropped
    /// while the transfer is under way.
    pub fn transfer_leadership(&mut self, to: i32) {
        if self.failed.is_none() {
            self.node.transfer_leader(raft_id(to));
        }
    }

    /// The transport could not reach `to`: raft stops streaming to it until it answers again.
    pub fn report_unreachable(&mut self, to: i32) {
        if self.failed.is_none() {
            self.node.report_unreachable(raft_id(to));
        }
    }

    /// The transport finished (`delivered`) or failed sending a snapshot to `to`. Without this a
    /// lost snapshot leaves `to` paused for good.
    pub fn report_snapshot(&mut self, to: i32, delivered: bool) {
        if self.failed.is_none() {
            let status = if delivered {
                SnapshotStatus::Finish
            } else {
                SnapshotStatus::Failure
            };
            self.node.report_snapshot(raft_id(to), status);
        }
    }

    pub fn status(&self) -> QuorumStatus {
        let raft = &self.node.raft;
        let store = self.node.store();
        let leader = raft.state == StateRole::Leader;
        let mut voters: Vec<VoterStatus> = self
            .config
            .voters
            .iter()
            .map(|voter| {
                let progress = raft.prs().get(raft_id(*voter)).filter(|_| leader);
                let me = *voter == self.config.node_id;
                VoterStatus {
                    node_id: *voter,
                    matched_index: progress.map(|p| p.matched),
                    recently_active: progress.map(|p| p.recent_active || me),
                }
            })
            .collect();
        voters.sort_by_key(|voter| voter.node_id);
        QuorumStatus {
            node_id: self.config.node_id,
            leader: self.leader(),
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: store.applied_index(),
            snapshot_index: store.snapshot_index(),
            first_index: store.first_index(),
            last_index: store.last_index(),
            voters,
        }
    }

    /// What a broker that has applied through `index` is missing: the applied batches after it
    /// (at most about `max_bytes`, but at least one), or the first chunk of the saved snapshot
    /// if they were compacted away. Only applied, hence committed, batches are served.
    pub fn committed_since(&self, index: u64, max_bytes: usize) -> MetadataUpdate {
        let store = self.node.store();
        let applied = store.applied_index();
        if index >= applied {
            return MetadataUpdate::UpToDate;
        }
        // Compaction never passes the saved snapshot, so it is newer than `index`.
        let snapshot = || self.snapshot_chunk(store.snapshot_index(), 0, max_bytes);
        if index + 1 < store.first_index() {
            return snapshot();
        }
        let mut batches = Vec::new();
        for entry in store.entries_between(index + 1, applied + 1, max_bytes as u64) {
            let records = match entry.get_entry_type() {
                EntryType::EntryNormal if !entry.data.is_empty() => {
                    match decode_records(&entry.data) {
                        Ok(records) => records,
                        // It decoded when it was applied; if it no longer does, it cannot be
                        // served: the follower asks again and meets the next snapshot.
                        Err(reason) => {
                            tracing::error!(index = entry.index, %reason, "an applied entry no longer decodes");
                            break;
                        }
                    }
                }
                _ => Vec::new(),
            };
            batches.push((entry.index, records));
        }
        if batches.is_empty() {
            return MetadataUpdate::UpToDate;
        }
        MetadataUpdate::Entries { batches }
    }

    /// Bytes of the saved snapshot from `position`, at most `max_bytes` (and at most
    /// [`SNAPSHOT_FETCH_BYTES_MAX`]), if `index` is still the saved snapshot's; otherwise the
    /// first bytes of the one saved now. A disk error answers `UpToDate` (the follower asks again).
    pub fn snapshot_chunk(&self, index: u64, position: u64, max_bytes: usize) -> MetadataUpdate {
        let store = self.node.store();
        let saved = store.snapshot_index();
        let position = if index == saved { position } else { 0 };
        // Hex doubles the bytes on the wire.
        let max_bytes = (max_bytes / 2).clamp(1, SNAPSHOT_FETCH_BYTES_MAX);
        match store.read_snapshot(position, max_bytes) {
            Ok((total_bytes, bytes)) => MetadataUpdate::SnapshotChunk {
                index: saved,
                position,
                total_bytes,
                bytes,
            },
            Err(err) => {
                tracing::error!(%err, "cannot read the saved metadata snapshot for a broker");
                MetadataUpdate::UpToDate
            }
        }
    }

    /// Answers a follower's [`MetadataFetch`].
    pub fn serve_fetch(&self, fetch: MetadataFetch, max_bytes: usize) -> MetadataUpdate {
        match fetch {
            MetadataFetch::After(index) => self.committed_since(index, max_bytes),
            MetadataFetch::Snapshot { index, position } => {
                self.snapshot_chunk(index, position, max_bytes)
            }
        }
    }
}

/// The snapshot every voter starts from: index 1, term 1, the voters, and the legacy image.
fn bootstrap_snapshot(config: &QuorumConfig, legacy: &[Vec<MetadataRecord>]) -> Result<Snapshot> {
    let mut image = MetadataImage::default();
    for batch in legacy {
        image.replay_batch(batch);
    }
    let mut snapshot = Snapshot {
        data: encode_records(&image.to_records())?.into(),
        ..Snapshot::default()
    };
    let metadata = snapshot.mut_metadata();
    metadata.index = 1;
    metadata.term = 1;
    let mut voters: Vec<u64> = config.voters.iter().map(|id| raft_id(*id)).collect();
    voters.sort_unstable();
    metadata.mut_conf_state().voters = voters;
    Ok(snapshot)
}

#[cfg(test)]
mod tests;
