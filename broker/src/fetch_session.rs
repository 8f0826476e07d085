//! Fetch sessions (KIP-227; Kafka's `FetchSession`, `FetchSessionCache` and `FetchManager`): a
//! fetcher that lists its partitions once in a full fetch gets a session id, and from then on
//! sends only what changed (partitions added or whose fetch position moved, and those it forgets);
//! the answer carries only the partitions with something new. A follower of thousands of
//! partitions then sends and receives almost nothing at rest, instead of listing every partition
//! twice a second.
//!
//! The cache is bounded as Kafka bounds it: at most `max.incremental.fetch.session.cache.slots`
//! sessions (followers' sessions privileged), a full one making room only by evicting a session
//! unused for [`EVICTION_MS`] or a less valuable one (not privileged before privileged, then fewer
//! partitions), and — Skald's addition — at most [`MAX_CACHED_PARTITIONS`] partitions across all
//! sessions, so clients cannot grow it without bound by adding partitions to their sessions.
//!
//! Sessions are not tied to connections (as in Kafka): a fetcher that reconnects keeps its
//! session. Time is passed in (`now_ms`), so the eviction rules are tested without a clock.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::Mutex;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
use kafka_protocol::messages::{FetchRequest, TopicName};
use prometheus::{IntCounter, IntGauge};
use uuid::Uuid;

/// Kafka's `FetchMetadata.INVALID_SESSION_ID`: no session.
pub const INVALID_SESSION_ID: i32 = 0;
/// A full fetch that asks for a session (Kafka's `INITIAL_EPOCH`).
pub const INITIAL_EPOCH: i32 = 0;
/// A full fetch that wants no session, or closes one (Kafka's `FINAL_EPOCH`).
pub const FINAL_EPOCH: i32 = -1;
/// Kafka's `MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS`: a session unused this long may be evicted
/// by anyone; a younger one only by a more valuable newcomer, and a young follower's not at all.
pub const EVICTION_MS: u64 = 120_000;
/// Skald's bound on the partitions cached across all sessions (a few hundred bytes each, so a
/// few hundred MB at worst). Kafka has none: there, a session grows with every partition an
/// incremental fetch adds.
pub const MAX_CACHED_PARTITIONS: usize = 1_000_000;
/// First Fetch version that names topics by id (KIP-516): a session started with ids must go on
/// with them, and one started with names with names.
const TOPIC_IDS_SINCE: i16 = 13;
/// First Fetch version with sessions; before it every fetch is full and sessionless.
const SESSIONS_SINCE: i16 = 7;

/// Kafka's `FetchMetadata.nextEpoch`: after the largest epoch comes 1 again.
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 {
        FINAL_EPOCH
    } else if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// A partition as its session names it: by topic name before v13, by topic id from v13 (the
/// other left empty), as the fetcher named it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionPartition {
    pub topic: TopicName,
    pub topic_id: Uuid,
    pub partition: i32,
}

impl SessionPartition {
    fn of(uses_topic_ids: bool, topic: &TopicName, topic_id: Uuid, partition: i32) -> Self {
        if uses_topic_ids {
            SessionPartition {
                topic: TopicName::default(),
                topic_id,
                partition,
            }
        } else {
            SessionPartition {
                topic: topic.clone(),
                topic_id: Uuid::nil(),
                partition,
            }
        }
    }
}

/// Kafka's `CachedPartition`: the fetch parameters last sent for a partition, and what the last
/// answer that carried it told the fetcher (so that an unchanged partition can be left out).
#[derive(Debug, Clone)]
struct CachedPartition {
    request: FetchPartition,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    /// Its place in the session's order: partitions that just sent records go to the back, so
    /// the response byte limits do not favour the same partitions fetch after fetch.
    order: u64,
}

/// One session: its partitions in fetch order.
#[derive(Debug)]
struct Session {
    privileged: bool,
    uses_topic_ids: bool,
    partitions: HashMap<SessionPartition, CachedPartition>,
    order: BTreeMap<u64, SessionPartition>,
    next_order: u64,
    creation_ms: u64,
    last_used_ms: u64,
    /// The epoch the next incremental fetch must carry.
    epoch: i32,
    /// The size the cache's totals and eviction keys count this session at.
    cached_size: usize,
}

impl Session {
    fn new(privileged: bool, uses_topic_ids: bool, now_ms: u64) -> Session {
        Session {
            privileged,
            uses_topic_ids,
            partitions: HashMap::new(),
            order: BTreeMap::new(),
            next_order: 0,
            creation_ms: now_ms,
            last_used_ms: now_ms,
            epoch: next_epoch(INITIAL_EPOCH),
            cached_size: 0,
        }
    }

    /// Adds a partition at the back of the order, or updates its fetch parameters in place.
    fn upsert(&mut self, key: SessionPartition, request: &FetchPartition) {
        if let Some(cached) = self.partitions.get_mut(&key) {
            cached.request = request.clone();
            return;
        }
        let order = self.next_order;
        self.next_order += 1;
        self.order.insert(order, key.clone());
        self.partitions.insert(
            key,
            CachedPartition {
                request: request.clone(),
                // Nothing told yet: the first answer carries the partition whatever it holds.
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                order,
            },
        );
    }

    fn remove(&mut self, key: &SessionPartition) {
        if let Some(cached) = self.partitions.remove(key) {
            self.order.remove(&cached.order);
        }
    }

    fn move_to_back(&mut self, key: &SessionPartition) {
        let Some(cached) = self.partitions.get_mut(key) else {
            return;
        };
        self.order.remove(&cached.order);
        cached.order = self.next_order;
        self.next_order += 1;
        self.order.insert(cached.order, key.clone());
    }

    /// The session's partitions as a fetch's topics, in order (a topic whose partitions are
    /// not adjacent in the order appears more than once, as a fetch may list it).
    fn topics(&self) -> Vec<FetchTopic> {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for key in self.order.values() {
            let Some(cached) = self.partitions.get(key) else {
                continue;
            };
            let same_topic = topics
                .last()
                .is_some_and(|last| last.topic == key.topic && last.topic_id == key.topic_id);
            if !same_topic {
                topics.push(
                    FetchTopic::default()
                        .with_topic(key.topic.clone())
                        .with_topic_id(key.topic_id),
                );
            }
            if let Some(last) = topics.last_mut() {
                last.partitions.push(cached.request.clone());
            }
        }
        topics
    }

    fn evictable_key(&self, id: i32) -> EvictableKey {
        (self.privileged, self.cached_size, id)
    }
}

/// Kafka's `EvictableKey`: the least valuable session first (not privileged before privileged,
/// then fewer partitions, then the session id).
type EvictableKey = (bool, usize, i32);

/// How a fetch request is to be served (Kafka's `FetchContext`s).
#[derive(Debug, Clone, PartialEq)]
pub enum FetchContext {
    /// Read the request's own partitions and answer with session id 0: a full fetch with epoch
    /// -1, or an incremental fetch that forgot its session's last partition.
    Sessionless,
    /// Read the request's own partitions; when answering, create a session of them if the
    /// cache has room ([`FetchSessionCache::create_session`]).
    Full { privileged: bool },
    /// Read `topics` (the session's partitions, this request's changes applied); when answering,
    /// keep only what changed ([`FetchSessionCache::filter_incremental`]).
    Incremental {
        session_id: i32,
        epoch: i32,
        topics: Vec<FetchTopic>,
    },
    /// Answer at once with this error, session id 0 and no partitions.
    Error(ResponseError),
}

/// The counts the cache keeps as Kafka's `NumIncrementalFetchSessions`,
/// `NumIncrementalFetchPartitionsCached` and `IncrementalFetchSessionEvictionsPerSec`.
#[derive(Debug, Clone)]
pub struct SessionMetrics {
    pub sessions: IntGauge,
    pub partitions: IntGauge,
    pub evictions: IntCounter,
}

impl SessionMetrics {
    /// Metrics that are not exported (tests).
    #[cfg(test)]
    pub fn unregistered() -> SessionMetrics {
        SessionMetrics {
            sessions: IntGauge::new("sessions", "-").expect("valid name"),
            partitions: IntGauge::new("partitions", "-").expect("valid name"),
            evictions: IntCounter::new("evictions", "-").expect("valid name"),
        }
    }
}

/// The broker's fetch sessions. One lock over the cache: each fetch takes it twice (on arrival
/// and when answering), for work proportional to its session's partitions.
#[derive(Debug)]
pub struct FetchSessionCache {
    inner: Mutex<Sessions>,
    metrics: SessionMetrics,
}

#[derive(Debug)]
struct Sessions {
    max_slots: usize,
    sessions: HashMap<i32, Session>,
    /// Kafka's `lastUsed`: `(last used ms, id)`, the least recently used first.
    last_used: BTreeSet<(u64, i32)>,
    /// Sessions anyone may evict (older than [`EVICTION_MS`]) and those a follower may evict
    /// (those and every consumer's).
    evictable_by_all: BTreeSet<EvictableKey>,
    evictable_by_privileged: BTreeSet<EvictableKey>,
    partitions: usize,
    /// Session ids are random (Kafka's are) so that a fetcher from before a restart, or another
    /// client, does not land in someone else's session by counting.
    ids: RandomState,
    ids_drawn: u64,
    /// Evictions not yet counted in the metric.
    evictions: u64,
}

impl FetchSessionCache {
    /// A cache of at most `max_slots` sessions (`max.incremental.fetch.session.cache.slots`).
    pub fn new(max_slots: usize, metrics: SessionMetrics) -> FetchSessionCache {
        FetchSessionCache {
            inner: Mutex::new(Sessions {
                max_slots,
                sessions: HashMap::new(),
                last_used: BTreeSet::new(),
                evictable_by_all: BTreeSet::new(),
                evictable_by_privileged: BTreeSet::new(),
                partitions: 0,
                ids: RandomState::new(),
                ids_drawn: 0,
                evictions: 0,
            }),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, sessions: &Sessions) {
        self.metrics.sessions.set(sessions.sessions.len() as i64);
        self.metrics.partitions.set(sessions.partitions as i64);
    }

    /// Kafka's `FetchManager.newContext`: decides how `request` is served, and applies an
    /// incremental fetch's changes to its session (moving the session to its next epoch).
    pub fn new_context(
        &self,
        request: &FetchRequest,
        version: i16,
        follower: bool,
        now_ms: u64,
    ) -> FetchContext {
        if version < SESSIONS_SINCE {
            return FetchContext::Sessionless;
        }
        let (session_id, epoch) = (request.session_id, request.session_epoch);
        let mut sessions = self.lock();
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            // A full fetch closes the session it names, if any.
            if session_id != INVALID_SESSION_ID && sessions.remove(session_id).is_some() {
                self.publish(&sessions);
            }
            return if epoch == FINAL_EPOCH {
                FetchContext::Sessionless
            } else {
                FetchContext::Full {
                    privileged: follower,
                }
            };
        }
        if epoch < FINAL_EPOCH {
            return FetchContext::Error(ResponseError::InvalidFetchSessionEpoch);
        }
        let uses_topic_ids = version >= TOPIC_IDS_SINCE;
        let Some(session) = sessions.sessions.get_mut(&session_id) else {
            return FetchContext::Error(ResponseError::FetchSessionIdNotFound);
        };
        if session.epoch != epoch {
            return FetchContext::Error(ResponseError::InvalidFetchSessionEpoch);
        }
        if session.uses_topic_ids != uses_topic_ids {
            return FetchContext::Error(ResponseError::FetchSessionTopicIdError);
        }
        // Kafka's `FetchSession.update`: added and changed partitions first, then the forgotten.
        for topic in &request.topics {
            for partition in &topic.partitions {
                let key = SessionPartition::of(
                    uses_topic_ids,
                    &topic.topic,
                    topic.topic_id,
                    partition.partition,
                );
                session.upsert(key, partition);
            }
        }
        for forgotten in &request.forgotten_topics_data {
            for &partition in &forgotten.partitions {
                let key = SessionPartition::of(
                    uses_topic_ids,
                    &forgotten.topic,
                    forgotten.topic_id,
                    partition,
                );
                session.remove(&key);
            }
        }
        if session.partitions.is_empty() {
            sessions.remove(session_id);
            self.publish(&sessions);
            return FetchContext::Sessionless;
        }
        let grown = session.partitions.len().saturating_sub(session.cached_size);
        if sessions.partitions + grown > MAX_CACHED_PARTITIONS {
            // Over the cache's bound: the session goes, and the fetcher starts over with a full
            // fetch (served without a session if the cache still has no room for it).
            sessions.remove(session_id);
            self.publish(&sessions);
            return FetchContext::Error(ResponseError::FetchSessionIdNotFound);
        }
        let Some(session) = sessions.sessions.get_mut(&session_id) else {
            return FetchContext::Error(ResponseError::FetchSessionIdNotFound);
        };
        session.epoch = next_epoch(session.epoch);
        let context = FetchContext::Incremental {
            session_id,
            epoch: session.epoch,
            topics: session.topics(),
        };
        sessions.touch(session_id, now_ms);
        self.publish(&sessions);
        context
    }

    /// Kafka's `FullFetchContext.updateAndGenerateResponseData`: a session of the answered
    /// partitions, if the cache has (or can make) room; returns its id, or 0 for none.
    /// `request` and `responses` list the same partitions in the same order.
    pub fn create_session(
        &self,
        privileged: bool,
        request: &FetchRequest,
        version: i16,
        responses: &[FetchableTopicResponse],
        now_ms: u64,
    ) -> i32 {
        let uses_topic_ids = version >= TOPIC_IDS_SINCE;
        let mut session = Session::new(privileged, uses_topic_ids, now_ms);
        for (topic, answered) in request.topics.iter().zip(responses) {
            for (partition, data) in topic.partitions.iter().zip(&answered.partitions) {
                let key = SessionPartition::of(
                    uses_topic_ids,
                    &topic.topic,
                    topic.topic_id,
                    partition.partition,
                );
                session.upsert(key.clone(), partition);
                if let Some(cached) = session.partitions.get_mut(&key) {
                    cached.remember(data);
                }
            }
        }
        let mut sessions = self.lock();
        let size = session.partitions.len();
        if !sessions.make_room(privileged, size, now_ms) {
            return INVALID_SESSION_ID;
        }
        let id = sessions.new_session_id();
        sessions.sessions.insert(id, session);
        sessions.touch(id, now_ms);
        self.metrics
            .evictions
            .inc_by(sessions.evicted_since_publish());
        self.publish(&sessions);
        id
    }

    /// Kafka's `IncrementalFetchContext.updateAndGenerateResponseData`: keeps in `responses`
    /// only the partitions with something new for the fetcher, and remembers what it was told.
    /// An error when the session went away or moved on meanwhile (its answer is then empty).
    pub fn filter_incremental(
        &self,
        session_id: i32,
        epoch: i32,
        responses: &mut Vec<FetchableTopicResponse>,
    ) -> Result<(), ResponseError> {
        let mut sessions = self.lock();
        let Some(session) = sessions.sessions.get_mut(&session_id) else {
            return Err(ResponseError::FetchSessionIdNotFound);
        };
        if session.epoch != epoch {
            return Err(ResponseError::InvalidFetchSessionEpoch);
        }
        let uses_topic_ids = session.uses_topic_ids;
        for topic in responses.iter_mut() {
            topic.partitions.retain(|data| {
                let key = SessionPartition::of(
                    uses_topic_ids,
                    &topic.topic,
                    topic.topic_id,
                    data.partition_index,
                );
                let Some(cached) = session.partitions.get_mut(&key) else {
                    return false;
                };
                let must_respond = cached.must_respond(data);
                if data
                    .records
                    .as_ref()
                    .is_some_and(|records| !records.is_empty())
                {
                    session.move_to_back(&key);
                }
                must_respond
            });
        }
        responses.retain(|topic| !topic.partitions.is_empty());
        Ok(())
    }

    /// How many sessions and cached partitions there are (for tests).
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize) {
        let sessions = self.lock();
        (sessions.sessions.len(), sessions.partitions)
    }
}

impl CachedPartition {
    fn remember(&mut self, data: &kafka_protocol::messages::fetch_response::PartitionData) {
        self.high_watermark = if data.error_code == 0 {
            data.high_watermark
        } else {
            -1
        };
        self.last_stable_offset = data.last_stable_offset;
        self.log_start_offset = data.log_start_offset;
    }

    /// Kafka's `CachedPartition.maybeUpdateResponseData` (updating): whether the fetcher must be
    /// told about this partition — records, a moved high watermark or log start offset, a
    /// preferred read replica, an error or a diverging epoch. Skald also sends a moved last
    /// stable offset (Kafka moves it only together with the high watermark, so it adds nothing
    /// there, but it keeps a read_committed reader's view exact if the two ever part). An error
    /// resets the remembered high watermark, so the partition is sent again once it clears.
    fn must_respond(
        &mut self,
        data: &kafka_protocol::messages::fetch_response::PartitionData,
    ) -> bool {
        let records = data
            .records
            .as_ref()
            .is_some_and(|records| !records.is_empty());
        let changed = self.high_watermark != data.high_watermark
            || self.log_start_offset != data.log_start_offset
            || self.last_stable_offset != data.last_stable_offset;
        let told = records
            || changed
            || data.preferred_read_replica.0 >= 0
            || data.error_code != 0
            || data.diverging_epoch.epoch >= 0;
        self.remember(data);
        told
    }
}

impl Sessions {
    fn remove(&mut self, id: i32) -> Option<Session> {
        let session = self.sessions.remove(&id)?;
        self.last_used.remove(&(session.last_used_ms, id));
        let key = session.evictable_key(id);
        self.evictable_by_all.remove(&key);
        self.evictable_by_privileged.remove(&key);
        self.partitions -= session.cached_size;
        Some(session)
    }

    /// Kafka's `FetchSessionCache.touch`: the session was used now; its size may have changed.
    fn touch(&mut self, id: i32, now_ms: u64) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        self.last_used.remove(&(session.last_used_ms, id));
        session.last_used_ms = now_ms;
        self.last_used.insert((now_ms, id));
        let old_key = session.evictable_key(id);
        self.evictable_by_all.remove(&old_key);
        self.evictable_by_privileged.remove(&old_key);
        self.partitions -= session.cached_size;
        session.cached_size = session.partitions.len();
        self.partitions += session.cached_size;
        let key = session.evictable_key(id);
        let old = now_ms.saturating_sub(session.creation_ms) > EVICTION_MS;
        if !session.privileged || old {
            self.evictable_by_privileged.insert(key);
        }
        if old {
            self.evictable_by_all.insert(key);
        }
    }

    /// Kafka's `maybeCreateSession` room check: a free slot, or one freed by evicting the
    /// least recently used session if it is stale, else the least valuable evictable one if the
    /// newcomer is worth more. Skald's partition bound is made room for the same way.
    fn make_room(&mut self, privileged: bool, size: usize, now_ms: u64) -> bool {
        if size > MAX_CACHED_PARTITIONS || self.max_slots == 0 {
            return false;
        }
        if self.sessions.len() >= self.max_slots && !self.try_evict(privileged, size, now_ms) {
            return false;
        }
        while self.partitions + size > MAX_CACHED_PARTITIONS {
            if !self.try_evict(privileged, size, now_ms) {
                return false;
            }
        }
        true
    }

    /// Kafka's `tryEvict`.
    fn try_evict(&mut self, privileged: bool, size: usize, now_ms: u64) -> bool {
        let Some(&(last_used_ms, oldest)) = self.last_used.first() else {
            return false;
        };
        let victim = if now_ms.saturating_sub(last_used_ms) > EVICTION_MS {
            oldest
        } else {
            let evictable = if privileged {
                &self.evictable_by_privileged
            } else {
                &self.evictable_by_all
            };
            match evictable.first() {
                // Id 0 sorts below every real id: an equal newcomer does not evict.
                Some(&(p, s, id)) if (privileged, size, INVALID_SESSION_ID) > (p, s, id) => id,
                _ => return false,
            }
        };
        self.remove(victim);
        self.evictions += 1;
        true
    }

    fn evicted_since_publish(&mut self) -> u64 {
        std::mem::take(&mut self.evictions)
    }

    fn new_session_id(&mut self) -> i32 {
        loop {
            self.ids_drawn += 1;
            let drawn = self.ids.hash_one(self.ids_drawn);
            // Positive, never 0 (Kafka's ids are in 1..Int.MaxValue).
            let id = (drawn & 0x7fff_ffff) as i32;
            if id != INVALID_SESSION_ID && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests;
