//! OffsetDelete: removes a group's committed offsets for some partitions (tombstones in
//! `__consumer_offsets`). Refused per partition with GROUP_SUBSCRIBED_TO_TOPIC while a member
//! subscribes to the topic; a non-empty group whose subscriptions cannot be read (not the consumer
//! protocol) gets NON_EMPTY_GROUP, as in Kafka.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use crate::group::{lock, GroupState, GroupsHandle};

pub fn handle(groups: GroupsHandle<'_>, body: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = body.group_id.0.to_string();
    let fail = |error: ResponseError| OffsetDeleteResponse::default().with_error_code(error.code());
    if let Err(error) = groups.check_coordinator(&group_id) {
        return fail(error);
    }
    let Some(group) = groups.coordinator.group(&group_id) else {
        return fail(ResponseError::GroupIdNotFound);
    };
    let outcome = tokio::task::block_in_place(|| {
        let mut group = lock(&group);
        let subscribed = match group.state() {
            GroupState::Dead => return Err(ResponseError::GroupIdNotFound),
            GroupState::Empty => Vec::new(),
            _ => group
                .subscribed_topics()
                .ok_or(ResponseError::NonEmptyGroup)?,
        };
        let mut errors = Vec::new();
        let mut tombstones = Vec::new();
        for topic in &body.topics {
            let mut topic_errors = Vec::new();
            for partition in &topic.partitions {
                let index = partition.partition_index;
                let error = if !groups.partition_exists(&topic.name, index) {
                    Some(ResponseError::UnknownTopicOrPartition)
                } else if subscribed.iter().any(|s| s.as_str() == topic.name.as_str()) {
                    Some(ResponseError::GroupSubscribedToTopic)
                } else {
                    if group.offsets.contains_key(&(topic.name.to_string(), index)) {
                        tombstones.push((topic.name.to_string(), index, None));
                    }
                    None
                };
                topic_errors.push((index, error));
            }
            errors.push((topic.name.clone(), topic_errors));
        }
        groups.append_offsets(&group_id, &tombstones)?;
        for (topic, index, _) in tombstones {
            group.offsets.remove(&(topic, index));
        }
        Ok(errors)
    });
    match outcome {
        Err(error) => fail(error),
        Ok(errors) => OffsetDeleteResponse::default().with_topics(
            errors
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(name)
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|(index, error)| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(index)
                                        .with_error_code(error.map_or(0, |e| e.code()))
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    }
}
