//! DescribeTopicPartitions (KIP-966): topics and their partitions like Metadata, but paged, so
//! an admin client can describe topics with more partitions than one response should carry.
//!
//! Kafka's rules (`DescribeTopicPartitionsRequestHandler`, `KRaftMetadataCache
//! .describeTopicResponse`): the topics asked for (every topic when none is named, unknown ones
//! then skipped) are described in name order, from the cursor's topic and partition on; a
//! response holds at most `response_partition_limit` partitions (capped by the broker's
//! `max.request.partition.size.limit`, 2000 by default, and at least one), and when it stops
//! early `next_cursor` says where the next request starts. A cursor must name one of the topics
//! asked for and a partition index of at least 0, else every topic is answered INVALID_REQUEST.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
};
use skald_controller::names::is_internal;
use skald_controller::{MetadataImage, TopicImage};

use super::metadata::{missing_topic_error, offline_replicas, TOPIC_AUTHORIZED_OPERATIONS};
use super::{topic_name, uuid};

/// Kafka's default `max.request.partition.size.limit`: the most partitions one response holds.
pub const PARTITIONS_PER_RESPONSE_MAX: i32 = 2000;

pub fn handle(
    image: &MetadataImage,
    request: &DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let every_topic = request.topics.is_empty();
    let mut names: Vec<&str> = if every_topic {
        image.topics.keys().map(String::as_str).collect()
    } else {
        request
            .topics
            .iter()
            .map(|topic| topic.name.as_str())
            .collect()
    };
    names.sort_unstable();
    names.dedup();
    let cursor = request.cursor.as_ref();
    if let Some(cursor) = cursor {
        if cursor.partition_index < 0 || !names.contains(&cursor.topic_name.as_str()) {
            return refuse_all(&names, ResponseError::InvalidRequest);
        }
        names.retain(|name| *name >= cursor.topic_name.as_str());
    }
    let mut remaining = request
        .response_partition_limit
        .clamp(1, PARTITIONS_PER_RESPONSE_MAX);
    let mut response = DescribeTopicPartitionsResponse::default();
    for name in names {
        if remaining == 0 {
            // Every partition of the topics before is in; the next page starts at this topic.
            response.next_cursor = Some(
                Cursor::default()
                    .with_topic_name(topic_name(name))
                    .with_partition_index(0),
            );
            break;
        }
        let Some(topic) = image.topic(name) else {
            if !every_topic {
                response.topics.push(
                    DescribeTopicPartitionsResponseTopic::default()
                        .with_error_code(missing_topic_error(name).code())
                        .with_name(Some(topic_name(name)))
                        .with_is_internal(is_internal(name)),
                );
            }
            continue;
        };
        let first = cursor
            .filter(|cursor| cursor.topic_name.as_str() == name)
            .map_or(0, |cursor| cursor.partition_index);
        let (partitions, next) = describe_partitions(image, topic, first, remaining);
        remaining -= partitions.len() as i32;
        response.topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(topic_name(name)))
                .with_topic_id(uuid(topic.topic_id))
                .with_is_internal(is_internal(name))
                .with_partitions(partitions)
                .with_topic_authorized_operations(TOPIC_AUTHORIZED_OPERATIONS),
        );
        if let Some(next) = next {
            response.next_cursor = Some(
                Cursor::default()
                    .with_topic_name(topic_name(name))
                    .with_partition_index(next),
            );
            break;
        }
    }
    response
}

/// Up to `limit` partitions of `topic` from index `first`, and the index the next page starts
/// at if some are left.
fn describe_partitions(
    image: &MetadataImage,
    topic: &TopicImage,
    first: i32,
    limit: i32,
) -> (Vec<DescribeTopicPartitionsResponsePartition>, Option<i32>) {
    let count = topic.partitions.len() as i32;
    let end = count.min(first.saturating_add(limit));
    let partitions = topic
        .partitions
        .range(first..end)
        .map(|(index, partition)| {
            DescribeTopicPartitionsResponsePartition::default()
                .with_partition_index(*index)
                .with_leader_id(BrokerId(partition.leader))
                .with_leader_epoch(partition.leader_epoch)
                .with_replica_nodes(partition.replicas.iter().copied().map(BrokerId).collect())
                .with_isr_nodes(partition.isr.iter().copied().map(BrokerId).collect())
                // No eligible leader replicas (KIP-966's ELR is not kept): empty, as Kafka
                // answers with the feature off.
                .with_eligible_leader_replicas(Some(Vec::new()))
                .with_last_known_elr(Some(Vec::new()))
                .with_offline_replicas(offline_replicas(image, partition))
        })
        .collect();
    (partitions, (end < count).then_some(end))
}

fn refuse_all(names: &[&str], error: ResponseError) -> DescribeTopicPartitionsResponse {
    DescribeTopicPartitionsResponse::default().with_topics(
        names
            .iter()
            .map(|name| {
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(error.code())
                    .with_name(Some(topic_name(name)))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::describe_topic_partitions_request::{
        Cursor as RequestCursor, TopicRequest,
    };
    use skald_controller::{MetadataRecord, TopicId};

    use super::*;

    /// Topics `a` (3 partitions), `b` (1), `c` (2), led by broker 1.
    fn image() -> MetadataImage {
        let mut image = MetadataImage::default();
        for (name, id, partitions) in [("a", 1, 3), ("b", 2, 1), ("c", 3, 2)] {
            image.replay(&MetadataRecord::Topic {
                name: name.into(),
                topic_id: TopicId(id),
            });
            for partition in 0..partitions {
                image.replay(&MetadataRecord::Partition {
                    topic_id: TopicId(id),
                    partition,
                    replicas: vec![1],
                    isr: vec![1],
                    leader: 1,
                    leader_epoch: 4,
                    partition_epoch: 0,
                    removing_replicas: Vec::new(),
                    adding_replicas: Vec::new(),
                });
            }
        }
        image
    }

    fn request(
        topics: &[&str],
        limit: i32,
        cursor: Option<(&str, i32)>,
    ) -> DescribeTopicPartitionsRequest {
        DescribeTopicPartitionsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|name| TopicRequest::default().with_name(topic_name(name)))
                    .collect(),
            )
            .with_response_partition_limit(limit)
            .with_cursor(cursor.map(|(name, index)| {
                RequestCursor::default()
                    .with_topic_name(topic_name(name))
                    .with_partition_index(index)
            }))
    }

    /// Each topic as (name, error, partition indexes), and the next cursor.
    #[allow(clippy::type_complexity)]
    fn outline(
        response: &DescribeTopicPartitionsResponse,
    ) -> (Vec<(String, i16, Vec<i32>)>, Option<(String, i32)>) {
        let topics = response
            .topics
            .iter()
            .map(|topic| {
                (
                    topic
                        .name
                        .as_ref()
                        .map(|n| n.to_string())
                        .unwrap_or_default(),
                    topic.error_code,
                    topic.partitions.iter().map(|p| p.partition_index).collect(),
                )
            })
            .collect();
        let cursor = response
            .next_cursor
            .as_ref()
            .map(|c| (c.topic_name.to_string(), c.partition_index));
        (topics, cursor)
    }

    fn t(name: &str, error: i16, partitions: &[i32]) -> (String, i16, Vec<i32>) {
        (name.to_string(), error, partitions.to_vec())
    }

    #[test]
    fn every_topic_in_name_order_paged_by_partition_count() {
        let image = image();
        let first = handle(&image, &request(&[], 2, None));
        assert_eq!(
            outline(&first),
            (vec![t("a", 0, &[0, 1])], Some(("a".into(), 2)))
        );
        let second = handle(&image, &request(&[], 2, Some(("a", 2))));
        assert_eq!(
            outline(&second),
            (
                vec![t("a", 0, &[2]), t("b", 0, &[0])],
                Some(("c".into(), 0))
            )
        );
        let third = handle(&image, &request(&[], 2, Some(("c", 0))));
        assert_eq!(outline(&third), (vec![t("c", 0, &[0, 1])], None));
        let all = handle(&image, &request(&[], 2000, None));
        assert_eq!(
            outline(&all),
            (
                vec![t("a", 0, &[0, 1, 2]), t("b", 0, &[0]), t("c", 0, &[0, 1])],
                None
            )
        );
        let a = &all.topics[0];
        assert_eq!(a.topic_id, uuid(TopicId(1)));
        assert_eq!(a.partitions[1].leader_id, BrokerId(1));
        assert_eq!(a.partitions[1].leader_epoch, 4);
        assert_eq!(a.partitions[1].isr_nodes, vec![BrokerId(1)]);
        // Broker 1 never registered in this image: its replicas are offline.
        assert_eq!(a.partitions[1].offline_replicas, vec![BrokerId(1)]);
    }

    #[test]
    fn named_topics_include_the_unknown_and_a_limit_below_one_still_makes_progress() {
        let image = image();
        let response = handle(&image, &request(&["c", "nope", "a", "bad name!"], 0, None));
        // Sorted by name; the limit is raised to one partition.
        assert_eq!(
            outline(&response),
            (vec![t("a", 0, &[0])], Some(("a".into(), 1)))
        );
        let response = handle(&image, &request(&["c", "nope", "a", "bad name!"], 10, None));
        assert_eq!(
            outline(&response),
            (
                vec![
                    t("a", 0, &[0, 1, 2]),
                    t(
                        "bad name!",
                        ResponseError::InvalidTopicException.code(),
                        &[]
                    ),
                    t("c", 0, &[0, 1]),
                    t("nope", ResponseError::UnknownTopicOrPartition.code(), &[]),
                ],
                None
            )
        );
    }

    #[test]
    fn a_cursor_outside_the_topics_asked_for_is_an_invalid_request() {
        let image = image();
        let invalid = ResponseError::InvalidRequest.code();
        let response = handle(&image, &request(&["b", "a"], 10, Some(("c", 0))));
        assert_eq!(
            outline(&response),
            (vec![t("a", invalid, &[]), t("b", invalid, &[])], None)
        );
        let response = handle(&image, &request(&["a"], 10, Some(("a", -1))));
        assert_eq!(outline(&response), (vec![t("a", invalid, &[])], None));
    }
}
