use bytes::Bytes;
use kafka_protocol::messages::fetch_request::ForgottenTopic;
use kafka_protocol::messages::fetch_response::{EpochEndOffset, PartitionData};
use kafka_protocol::protocol::StrBytes;

use super::*;

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

fn fetch_partition(partition: i32, fetch_offset: i64) -> FetchPartition {
    FetchPartition::default()
        .with_partition(partition)
        .with_fetch_offset(fetch_offset)
        .with_partition_max_bytes(1 << 20)
}

/// A v12 fetch (topics by name) of `(topic, [(partition, fetch offset)])`.
fn request(session_id: i32, epoch: i32, topics: &[(&str, &[(i32, i64)])]) -> FetchRequest {
    FetchRequest::default()
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(
            topics
                .iter()
                .map(|(topic, partitions)| {
                    FetchTopic::default()
                        .with_topic(name(topic))
                        .with_partitions(
                            partitions
                                .iter()
                                .map(|&(p, offset)| fetch_partition(p, offset))
                                .collect(),
                        )
                })
                .collect(),
        )
}

fn forget(request: FetchRequest, topic: &str, partitions: &[i32]) -> FetchRequest {
    request.with_forgotten_topics_data(vec![ForgottenTopic::default()
        .with_topic(name(topic))
        .with_partitions(partitions.to_vec())])
}

/// An answer for one partition: its high watermark, and `records` bytes of records.
fn data(partition: i32, high_watermark: i64, records: usize) -> PartitionData {
    PartitionData::default()
        .with_partition_index(partition)
        .with_high_watermark(high_watermark)
        .with_last_stable_offset(high_watermark)
        .with_log_start_offset(0)
        .with_records(Some(Bytes::from(vec![0u8; records])))
}

fn answer(topic: &str, partitions: Vec<PartitionData>) -> FetchableTopicResponse {
    FetchableTopicResponse::default()
        .with_topic(name(topic))
        .with_partitions(partitions)
}

/// What an answer holds: `(topic, [partition])`.
fn listed(responses: &[FetchableTopicResponse]) -> Vec<(String, Vec<i32>)> {
    responses
        .iter()
        .map(|topic| {
            (
                topic.topic.0.to_string(),
                topic.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect()
}

/// The partitions an incremental context reads: `(topic, partition, fetch offset)`.
fn reads(context: &FetchContext) -> Vec<(String, i32, i64)> {
    let FetchContext::Incremental { topics, .. } = context else {
        panic!("not incremental: {context:?}");
    };
    topics
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|p| (topic.topic.0.to_string(), p.partition, p.fetch_offset))
        })
        .collect()
}

/// A session of `a-0` (HW 5), `a-1` (HW 7) and `b-0` (HW 0) created by a consumer's full
/// fetch at `now_ms`.
fn session(cache: &FetchSessionCache, privileged: bool, now_ms: u64) -> i32 {
    let full = request(
        0,
        INITIAL_EPOCH,
        &[("a", &[(0, 5), (1, 7)]), ("b", &[(0, 0)])],
    );
    assert_eq!(
        cache.new_context(&full, 12, privileged, now_ms),
        FetchContext::Full { privileged }
    );
    let responses = [
        answer("a", vec![data(0, 5, 0), data(1, 7, 0)]),
        answer("b", vec![data(0, 0, 0)]),
    ];
    cache.create_session(privileged, &full, 12, &responses, now_ms)
}

#[test]
fn a_full_fetch_creates_a_session_and_an_incremental_one_reads_all_of_it() {
    let metrics = SessionMetrics::unregistered();
    let cache = FetchSessionCache::new(10, metrics.clone());
    let id = session(&cache, false, 0);
    assert_ne!(id, INVALID_SESSION_ID);
    assert_eq!(cache.counts(), (1, 3));
    assert_eq!((metrics.sessions.get(), metrics.partitions.get()), (1, 3));

    // Epoch 1 moves a-1 on and adds c-0; the read covers the whole session, in order.
    let incremental = request(id, 1, &[("a", &[(1, 9)]), ("c", &[(0, 3)])]);
    let context = cache.new_context(&incremental, 12, false, 10);
    assert_eq!(
        reads(&context),
        vec![
            ("a".to_string(), 0, 5),
            ("a".to_string(), 1, 9),
            ("b".to_string(), 0, 0),
            ("c".to_string(), 0, 3),
        ]
    );
    assert!(matches!(
        context,
        FetchContext::Incremental { session_id, epoch: 2, .. } if session_id == id
    ));
    assert_eq!(cache.counts(), (1, 4));

    // The same epoch again is refused: the session moved on to 2.
    assert_eq!(
        cache.new_context(&incremental, 12, false, 20),
        FetchContext::Error(ResponseError::InvalidFetchSessionEpoch)
    );
    // Forgetting b-0 (and naming nothing else) is epoch 2.
    let context = cache.new_context(&forget(request(id, 2, &[]), "b", &[0]), 12, false, 30);
    assert_eq!(
        reads(&context),
        vec![
            ("a".to_string(), 0, 5),
            ("a".to_string(), 1, 9),
            ("c".to_string(), 0, 3),
        ]
    );
    assert_eq!(cache.counts(), (1, 3));
}

/// One incremental fetch of session `id` at `epoch` that names nothing, answered with
/// `responses`: what the answer keeps.
fn answered_at(
    cache: &FetchSessionCache,
    id: i32,
    epoch: i32,
    mut responses: Vec<FetchableTopicResponse>,
) -> Vec<(String, Vec<i32>)> {
    let context = cache.new_context(&request(id, epoch, &[]), 12, false, epoch as u64);
    assert!(
        matches!(context, FetchContext::Incremental { .. }),
        "{context:?}"
    );
    cache
        .filter_incremental(id, next_epoch(epoch), &mut responses)
        .unwrap();
    listed(&responses)
}

#[test]
fn an_incremental_answer_carries_only_what_changed() {
    let cache = FetchSessionCache::new(10, SessionMetrics::unregistered());
    let id = session(&cache, false, 0);
    let a = |partitions| answer("a", partitions);
    let b = |partitions| answer("b", partitions);
    // a-0 unchanged; a-1's high watermark moved; b-0 unchanged.
    assert_eq!(
        answered_at(
            &cache,
            id,
            1,
            vec![
                a(vec![data(0, 5, 0), data(1, 8, 0)]),
                b(vec![data(0, 0, 0)])
            ]
        ),
        vec![("a".to_string(), vec![1])]
    );
    // Records for b-0; an error on a-0; a-1 as last told.
    let error = data(0, -1, 0).with_error_code(ResponseError::NotLeaderOrFollower.code());
    assert_eq!(
        answered_at(
            &cache,
            id,
            2,
            vec![a(vec![error, data(1, 8, 0)]), b(vec![data(0, 0, 100)])]
        ),
        vec![("a".to_string(), vec![0]), ("b".to_string(), vec![0])]
    );
    // The error cleared with a-0's old high watermark: sent again (the error reset what it was
    // last told). A moved log start offset, last stable offset and a diverging epoch each count.
    let moved_start = data(1, 8, 0).with_log_start_offset(2);
    assert_eq!(
        answered_at(
            &cache,
            id,
            3,
            vec![
                a(vec![data(0, 5, 0), moved_start.clone()]),
                b(vec![data(0, 0, 0)])
            ]
        ),
        vec![("a".to_string(), vec![0, 1])]
    );
    let moved_stable = data(0, 5, 0).with_last_stable_offset(4);
    let diverging = data(0, 0, 0)
        .with_diverging_epoch(EpochEndOffset::default().with_epoch(3).with_end_offset(0));
    assert_eq!(
        answered_at(
            &cache,
            id,
            4,
            vec![
                a(vec![moved_stable.clone(), moved_start.clone()]),
                b(vec![diverging])
            ]
        ),
        vec![("a".to_string(), vec![0]), ("b".to_string(), vec![0])]
    );
    // Nothing new at all: an empty answer.
    assert_eq!(
        answered_at(
            &cache,
            id,
            5,
            vec![a(vec![moved_stable, moved_start]), b(vec![data(0, 0, 0)])]
        ),
        vec![]
    );
}

#[test]
fn partitions_that_sent_records_are_read_last_next_time() {
    let cache = FetchSessionCache::new(10, SessionMetrics::unregistered());
    let id = session(&cache, true, 0);
    cache.new_context(&request(id, 1, &[]), 12, true, 1);
    let mut responses = vec![
        answer("a", vec![data(0, 5, 10), data(1, 7, 0)]),
        answer("b", vec![data(0, 0, 0)]),
    ];
    cache.filter_incremental(id, 2, &mut responses).unwrap();
    let context = cache.new_context(&request(id, 2, &[]), 12, true, 2);
    assert_eq!(
        reads(&context),
        vec![
            ("a".to_string(), 1, 7),
            ("b".to_string(), 0, 0),
            ("a".to_string(), 0, 5),
        ]
    );
}

#[test]
fn session_errors_are_kafkas() {
    let cache = FetchSessionCache::new(10, SessionMetrics::unregistered());
    let id = session(&cache, false, 0);
    assert_eq!(
        cache.new_context(&request(id.wrapping_add(1).max(1), 1, &[]), 12, false, 1),
        FetchContext::Error(ResponseError::FetchSessionIdNotFound)
    );
    assert_eq!(
        cache.new_context(&request(id, 2, &[]), 12, false, 1),
        FetchContext::Error(ResponseError::InvalidFetchSessionEpoch)
    );
    assert_eq!(
        cache.new_context(&request(id, -2, &[]), 12, false, 1),
        FetchContext::Error(ResponseError::InvalidFetchSessionEpoch)
    );
    // A session begun by name cannot go on by id.
    assert_eq!(
        cache.new_context(&request(id, 1, &[]), 13, false, 1),
        FetchContext::Error(ResponseError::FetchSessionTopicIdError)
    );
    // None of those moved the session: epoch 1 still works.
    assert!(matches!(
        cache.new_context(&request(id, 1, &[]), 12, false, 1),
        FetchContext::Incremental { epoch: 2, .. }
    ));
    // An answer for an epoch the session left behind (a second fetch came meanwhile).
    cache.new_context(&request(id, 2, &[]), 12, false, 2);
    let mut responses = vec![answer("a", vec![data(0, 5, 0)])];
    assert_eq!(
        cache.filter_incremental(id, 2, &mut responses),
        Err(ResponseError::InvalidFetchSessionEpoch)
    );
}

#[test]
fn sessions_close_with_epoch_minus_one_or_when_emptied() {
    let cache = FetchSessionCache::new(10, SessionMetrics::unregistered());
    let id = session(&cache, false, 0);
    assert_eq!(
        cache.new_context(&request(id, FINAL_EPOCH, &[]), 12, false, 1),
        FetchContext::Sessionless
    );
    assert_eq!(cache.counts(), (0, 0));
    assert_eq!(
        cache.new_context(&request(id, 1, &[]), 12, false, 1),
        FetchContext::Error(ResponseError::FetchSessionIdNotFound)
    );

    // A full fetch naming a session closes it and may open another.
    let id = session(&cache, false, 0);
    let full = request(id, INITIAL_EPOCH, &[("a", &[(0, 5)])]);
    assert_eq!(
        cache.new_context(&full, 12, false, 1),
        FetchContext::Full { privileged: false }
    );
    assert_eq!(cache.counts(), (0, 0));

    let id = session(&cache, false, 0);
    let mut forget_all = forget(request(id, 1, &[]), "a", &[0, 1]);
    forget_all.forgotten_topics_data.push(
        ForgottenTopic::default()
            .with_topic(name("b"))
            .with_partitions(vec![0]),
    );
    assert_eq!(
        cache.new_context(&forget_all, 12, false, 1),
        FetchContext::Sessionless
    );
    assert_eq!(cache.counts(), (0, 0));
}

#[test]
fn v13_sessions_are_keyed_by_topic_id() {
    let cache = FetchSessionCache::new(10, SessionMetrics::unregistered());
    let topic_id = Uuid::from_u128(7);
    let by_id = |session_id, epoch, offset| {
        FetchRequest::default()
            .with_session_id(session_id)
            .with_session_epoch(epoch)
            .with_topics(vec![FetchTopic::default()
                .with_topic_id(topic_id)
                .with_partitions(vec![fetch_partition(0, offset)])])
    };
    let full = by_id(0, 0, 1);
    // The answer names the topic too (the broker resolved it); the key is the id alone.
    let responses = [FetchableTopicResponse::default()
        .with_topic(name("t"))
        .with_topic_id(topic_id)
        .with_partitions(vec![data(0, 1, 0)])];
    let id = cache.create_session(false, &full, 13, &responses, 0);
    assert_eq!(
        cache.new_context(&by_id(id, 1, 1), 12, false, 1),
        FetchContext::Error(ResponseError::FetchSessionTopicIdError)
    );
    let context = cache.new_context(&by_id(id, 1, 4), 13, false, 1);
    assert_eq!(cache.counts(), (1, 1), "updated in place, not added");
    let FetchContext::Incremental { topics, .. } = context else {
        panic!("{context:?}");
    };
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].topic_id, topic_id);
    assert_eq!(topics[0].partitions[0].fetch_offset, 4);
    let mut unchanged = responses.to_vec();
    cache.filter_incremental(id, 2, &mut unchanged).unwrap();
    assert_eq!(unchanged, vec![]);
}

#[test]
fn a_full_cache_evicts_as_kafka_does() {
    let metrics = SessionMetrics::unregistered();
    let cache = FetchSessionCache::new(2, metrics.clone());
    let one = |cache: &FetchSessionCache, privileged, partitions: &[(i32, i64)], now_ms| {
        let full = request(0, 0, &[("a", partitions)]);
        let responses = [answer(
            "a",
            partitions.iter().map(|&(p, _)| data(p, 0, 0)).collect(),
        )];
        cache.create_session(privileged, &full, 12, &responses, now_ms)
    };
    let consumer = one(&cache, false, &[(0, 0)], 0);
    let follower = one(&cache, true, &[(0, 0), (1, 0)], 0);
    assert!(consumer > 0 && follower > 0);

    // Full and nothing stale: a consumer gets no session, however large.
    assert_eq!(one(&cache, false, &[(0, 0), (1, 0), (2, 0)], 1_000), 0);
    // A follower may evict a consumer's session at any age.
    let second_follower = one(&cache, true, &[(0, 0)], 1_000);
    assert_ne!(second_follower, 0);
    assert_eq!(metrics.evictions.get(), 1);
    assert_eq!(
        cache.new_context(&request(consumer, 1, &[]), 12, false, 1_000),
        FetchContext::Error(ResponseError::FetchSessionIdNotFound)
    );
    // Two young followers: nobody gets in.
    assert_eq!(one(&cache, true, &[(0, 0), (1, 0), (2, 0)], 2_000), 0);
    assert_eq!(cache.counts(), (2, 3));

    // Past the eviction age, used since: an old follower session may be evicted by a more
    // valuable newcomer (a follower's with more partitions), never by a consumer's.
    let later = 2_000 + EVICTION_MS;
    for id in [follower, second_follower] {
        assert!(matches!(
            cache.new_context(&request(id, 1, &[]), 12, true, later),
            FetchContext::Incremental { .. }
        ));
    }
    assert_eq!(one(&cache, false, &[(0, 0), (1, 0), (2, 0)], later), 0);
    assert_eq!(
        one(&cache, true, &[(0, 0)], later),
        0,
        "as valuable is not enough"
    );
    let third = one(&cache, true, &[(0, 0), (1, 0), (2, 0)], later + 1);
    assert_ne!(third, 0, "the least valuable old session goes");
    assert_eq!(metrics.evictions.get(), 2);
    assert_eq!(
        cache.new_context(&request(second_follower, 2, &[]), 12, true, later + 1),
        FetchContext::Error(ResponseError::FetchSessionIdNotFound)
    );

    // Unused for longer than the eviction age: anyone evicts the least recently used.
    let stale = later + EVICTION_MS + 1;
    let fourth = one(&cache, false, &[(0, 0)], stale);
    assert_ne!(fourth, 0);
    assert_eq!(metrics.evictions.get(), 3);
    assert_eq!(
        cache.new_context(&request(follower, 2, &[]), 12, true, stale),
        FetchContext::Error(ResponseError::FetchSessionIdNotFound)
    );
    assert_eq!(cache.counts(), (2, 4));
    assert_eq!((metrics.sessions.get(), metrics.partitions.get()), (2, 4));
    assert!(matches!(
        cache.new_context(&request(third, 1, &[]), 12, true, stale),
        FetchContext::Incremental { .. }
    ));
}

#[test]
fn no_slots_means_no_sessions() {
    let cache = FetchSessionCache::new(0, SessionMetrics::unregistered());
    assert_eq!(session(&cache, true, 0), INVALID_SESSION_ID);
    assert_eq!(cache.counts(), (0, 0));
}

#[test]
fn epochs_wrap_to_one() {
    assert_eq!(next_epoch(0), 1);
    assert_eq!(next_epoch(41), 42);
    assert_eq!(next_epoch(i32::MAX), 1);
    assert_eq!(next_epoch(-1), -1);
}
