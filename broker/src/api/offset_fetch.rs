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
