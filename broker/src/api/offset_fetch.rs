//! OffsetFetch: committed offsets (-1 where nothing is committed). v1–v7 ask about one group,
//! v8+ about several. Null topics (v2+) means every partition the group has committed for.
//! With `require_stable` (v7+, what read_committed consumers send), a partition whose offset a
//! transaction has committed but not yet completed answers UNSTABLE_OFFSET_COMMIT (KIP-447), so
//! the consumer retries rather than starting from the offset before it.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse};
use kafka_protocol::protocol::StrBytes;

use super::topic_name;
use crate::group::{lock, CommittedOffset, GroupsHandle};

/// Kafka's UNSTABLE_OFFSET_COMMIT.
const UNSTABLE: i16 = ResponseError::UnstableOffsetCommit.code();

/// One answered partition: (topic, partition, committed offset or none).
type Answer = (String, i32, Option<CommittedOffset>);
/// Answers of one topic: (topic, [(partition, committed offset or none)]).
type TopicAnswers = (String, Vec<(i32, Option<CommittedOffset>)>);

pub fn handle(
    groups: GroupsHandle<'_>,
    body: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let require_stable = version >= 7 && body.require_stable;
    let unstable = |group: &str, topic: &str, partition: i32| {
        require_stable
            && groups
                .coordinator
                .has_pending_txn_offset(group, topic, partition)
    };
    if version >= 8 {
        let groups = body
            .groups
            .into_iter()
            .map(|group| {
                let group_name = group.group_id.to_string();
                let requested = group.topics.map(|topics| {
                    topics
                        .into_iter()
                        .map(|t| (t.name.to_string(), t.partition_indexes))
                        .collect()
                });
                let (error, answers) = fetch(groups, &group.group_id, requested);
                OffsetFetchResponseGroup::default()
                    .with_group_id(group.group_id)
                    .with_error_code(error.map_or(0, |e| e.code()))
                    .with_topics(
                        by_topic(answers)
                            .into_iter()
                            .map(|(name, partitions)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(topic_name(&name))
                                    .with_partitions(
                                        partitions
                                            .into_iter()
                                            .map(|(index, offset)| {
                                                let answer =
                                                    OffsetFetchResponsePartitions::default()
                                                        .with_partition_index(index);
                                                if unstable(&group_name, &name, index) {
                                                    return answer
                                                        .with_committed_offset(-1)
                                                        .with_committed_leader_epoch(-1)
                                                        .with_error_code(UNSTABLE);
                                                }
                                                let (offset, epoch, metadata) = values(offset);
                                                answer
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(metadata))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let requested = body.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    let (error, answers) = fetch(groups, &body.group_id, requested);
    // v1 has no top-level error code: the error goes on every partition.
    let partition_error = if version < 2 { error } else { None };
    let topics = by_topic(answers)
        .into_iter()
        .map(|(name, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&name))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, offset)| {
                            let answer =
                                OffsetFetchResponsePartition::default().with_partition_index(index);
                            if unstable(&body.group_id, &name, index) {
                                return answer
                                    .with_committed_offset(-1)
                                    .with_committed_leader_epoch(-1)
                                    .with_error_code(UNSTABLE);
                            }
                            let (offset, epoch, metadata) = values(offset);
                            answer
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(Some(metadata))
                                .with_error_code(partition_error.map_or(0, |e| e.code()))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default()
        .with_topics(topics)
        .with_error_code(if version >= 2 {
            error.map_or(0, |e| e.code())
        } else {
            0
        })
}

fn values(offset: Option<CommittedOffset>) -> (i64, i32, StrBytes) {
    match offset {
        Some(offset) => (
            offset.offset,
            offset.leader_epoch,
            StrBytes::from_string(offset.metadata),
        ),
        None => (-1, -1, StrBytes::default()),
    }
}

/// Looks up one group: the requested partitions (or all committed ones when `requested` is None).
fn fetch(
    groups: GroupsHandle<'_>,
    group_id: &GroupId,
    requested: Option<Vec<(String, Vec<i32>)>>,
) -> (Option<ResponseError>, Vec<Answer>) {
    let unanswered = |requested: &Option<Vec<(String, Vec<i32>)>>| -> Vec<Answer> {
        requested
            .iter()
            .flatten()
            .flat_map(|(topic, partitions)| {
                partitions.iter().map(move |p| (topic.clone(), *p, None))
            })
            .collect()
    };
    if let Err(error) = groups.check_coordinator(group_id) {
        return (Some(error), unanswered(&requested));
    }
    let Some(group) = groups.coordinator.group(group_id) else {
        return (None, unanswered(&requested));
    };
    let group = lock(&group);
    let answers = match requested {
        None => group
            .offsets
            .iter()
            .map(|((topic, partition), offset)| (topic.clone(), *partition, Some(offset.clone())))
            .collect(),
        Some(requested) => requested
            .into_iter()
            .flat_map(|(topic, partitions)| {
                partitions
                    .into_iter()
                    .map(|p| {
                        let offset = group.offsets.get(&(topic.clone(), p)).cloned();
                        (topic.clone(), p, offset)
                    })
                    .collect::<Vec<_>>()
            })
            .collect(),
    };
    (None, answers)
}

/// Groups answers by topic, keeping the order topics first appear in.
fn by_topic(answers: Vec<Answer>) -> Vec<TopicAnswers> {
    let mut topics: Vec<TopicAnswers> = Vec::new();
    for (topic, partition, offset) in answers {
        match topics.iter_mut().find(|(name, _)| *name == topic) {
            Some((_, partitions)) => partitions.push((partition, offset)),
            None => topics.push((topic, vec![(partition, offset)])),
        }
    }
    topics
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::offset_fetch_response::{
        OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
        OffsetFetchResponseTopic, OffsetFetchResponseTopics,
    };
    use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse};

    use super::handle;
    use crate::api::group_testing::{committed, offset_record, text, GROUP};
    use crate::api::topic_name;
    use crate::group::lock;
    use crate::group::testing::Fixture;

    /// A fixture whose [`GROUP`] has committed 42 ("first") for `orders-0`, nothing for
    /// `orders-1`.
    fn with_offsets() -> Fixture {
        let fixture = Fixture::new();
        let group = fixture.coordinator.group_or_create(GROUP);
        lock(&group)
            .offsets
            .insert(("orders".into(), 0), committed(42, "first", 5));
        fixture
    }

    fn asking(partitions: Vec<i32>) -> OffsetFetchRequest {
        OffsetFetchRequest::default()
            .with_group_id(GroupId(text(GROUP)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(topic_name("orders"))
                .with_partition_indexes(partitions)]))
    }

    /// A v1–v7 partition answer: (offset, metadata) or nothing committed, and its error.
    fn partition(
        index: i32,
        offset: Option<(i64, &str)>,
        error: i16,
    ) -> OffsetFetchResponsePartition {
        let (offset, metadata) = offset.unwrap_or((-1, ""));
        OffsetFetchResponsePartition::default()
            .with_partition_index(index)
            .with_committed_offset(offset)
            .with_committed_leader_epoch(-1)
            .with_metadata(Some(text(metadata)))
            .with_error_code(error)
    }

    fn orders(partitions: Vec<OffsetFetchResponsePartition>) -> OffsetFetchResponseTopic {
        OffsetFetchResponseTopic::default()
            .with_name(topic_name("orders"))
            .with_partitions(partitions)
    }

    #[test]
    fn committed_offsets_and_minus_one_where_nothing_is() {
        let fixture = with_offsets();
        assert_eq!(
            handle(fixture.handle(), asking(vec![0, 1]), 5),
            OffsetFetchResponse::default().with_topics(vec![orders(vec![
                partition(0, Some((42, "first")), 0),
                partition(1, None, 0),
            ])])
        );
        // Null topics (v2+): every partition committed for.
        let all = OffsetFetchRequest::default()
            .with_group_id(GroupId(text(GROUP)))
            .with_topics(None);
        assert_eq!(
            handle(fixture.handle(), all, 2),
            OffsetFetchResponse::default().with_topics(vec![orders(vec![partition(
                0,
                Some((42, "first")),
                0
            )])])
        );
        // An unknown group has nothing committed, without an error.
        let unknown = asking(vec![0]).with_group_id(GroupId(text("other")));
        assert_eq!(
            handle(fixture.handle(), unknown, 5),
            OffsetFetchResponse::default().with_topics(vec![orders(vec![partition(0, None, 0)])])
        );
    }

    #[test]
    fn another_coordinators_answer_is_per_partition_in_v1_and_top_level_after() {
        let fixture = with_offsets();
        let error = ResponseError::NotCoordinator.code();
        fixture
            .log
            .set_leadership(Err(ResponseError::NotCoordinator));
        assert_eq!(
            handle(fixture.handle(), asking(vec![0, 1]), 1),
            OffsetFetchResponse::default().with_topics(vec![orders(vec![
                partition(0, None, error),
                partition(1, None, error),
            ])])
        );
        fixture
            .log
            .set_leadership(Err(ResponseError::CoordinatorLoadInProgress));
        assert_eq!(
            handle(fixture.handle(), asking(vec![0, 1]), 2),
            OffsetFetchResponse::default()
                .with_error_code(ResponseError::CoordinatorLoadInProgress.code())
                .with_topics(vec![orders(vec![
                    partition(0, None, 0),
                    partition(1, None, 0),
                ])])
        );
    }

    #[test]
    fn v8_answers_each_group_on_its_own() {
        let fixture = with_offsets();
        let group = |id: &str, partitions: Option<Vec<i32>>| {
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(text(id)))
                .with_topics(partitions.map(|partitions| {
                    vec![OffsetFetchRequestTopics::default()
                        .with_name(topic_name("orders"))
                        .with_partition_indexes(partitions)]
                }))
        };
        let request = OffsetFetchRequest::default()
            .with_groups(vec![group(GROUP, Some(vec![0, 1])), group("other", None)]);
        let answer = |index: i32, offset: i64, metadata: &str| {
            OffsetFetchResponsePartitions::default()
                .with_partition_index(index)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(-1)
                .with_metadata(Some(text(metadata)))
        };
        assert_eq!(
            handle(fixture.handle(), request, 8),
            OffsetFetchResponse::default().with_groups(vec![
                OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(text(GROUP)))
                    .with_topics(vec![OffsetFetchResponseTopics::default()
                        .with_name(topic_name("orders"))
                        .with_partitions(vec![answer(0, 42, "first"), answer(1, -1, "")])]),
                OffsetFetchResponseGroup::default().with_group_id(GroupId(text("other"))),
            ])
        );
    }

    #[test]
    fn a_stable_read_of_an_offset_a_transaction_holds_is_answered_unstable() {
        let fixture = with_offsets();
        let pending = offset_record(1, Some(committed(50, "", 9)));
        fixture
            .coordinator
            .set_pending_txn_offsets(0, HashMap::from([(77, vec![pending])]));
        let unstable = OffsetFetchResponsePartition::default()
            .with_partition_index(1)
            .with_committed_offset(-1)
            .with_committed_leader_epoch(-1)
            .with_error_code(ResponseError::UnstableOffsetCommit.code());
        assert_eq!(
            handle(
                fixture.handle(),
                asking(vec![0, 1]).with_require_stable(true),
                7
            ),
            OffsetFetchResponse::default().with_topics(vec![orders(vec![
                partition(0, Some((42, "first")), 0),
                unstable,
            ])])
        );
        // Before v7 (or without require_stable) the last committed offset is answered.
        assert_eq!(
            handle(
                fixture.handle(),
                asking(vec![1]).with_require_stable(true),
                6
            ),
            OffsetFetchResponse::default().with_topics(vec![orders(vec![partition(1, None, 0)])])
        );
    }
}
