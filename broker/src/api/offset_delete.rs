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

#[cfg(test)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    use kafka_protocol::messages::offset_delete_response::{
        OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
    };
    use kafka_protocol::messages::{GroupId, OffsetDeleteRequest, OffsetDeleteResponse};

    use super::handle;
    use crate::api::group_testing::{
        committed, offset_record, offsets_held, stable_member, text, GROUP,
    };
    use crate::api::topic_name;
    use crate::group::lock;
    use crate::group::testing::Fixture;

    fn deleting(partitions: Vec<i32>) -> OffsetDeleteRequest {
        OffsetDeleteRequest::default()
            .with_group_id(GroupId(text(GROUP)))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(topic_name("orders"))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|index| {
                            OffsetDeleteRequestPartition::default().with_partition_index(index)
                        })
                        .collect(),
                )])
    }

    fn answered(partitions: &[(i32, Option<ResponseError>)]) -> OffsetDeleteResponse {
        OffsetDeleteResponse::default().with_topics(vec![OffsetDeleteResponseTopic::default()
            .with_name(topic_name("orders"))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&(index, error)| {
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(index)
                            .with_error_code(error.map_or(0, |e| e.code()))
                    })
                    .collect(),
            )])
    }

    fn commit(fixture: &Fixture, partition: i32, offset: i64) {
        let group = fixture.coordinator.group_or_create(GROUP);
        lock(&group)
            .offsets
            .insert(("orders".into(), partition), committed(offset, "", 5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_empty_groups_offsets_are_tombstoned_and_forgotten() {
        let fixture = Fixture::new();
        commit(&fixture, 0, 42);
        commit(&fixture, 1, 43);
        assert_eq!(
            handle(fixture.handle(), deleting(vec![0, 9])),
            answered(&[(0, None), (9, Some(ResponseError::UnknownTopicOrPartition))])
        );
        assert_eq!(
            fixture.log.take_appended(),
            vec![(0, vec![offset_record(0, None)])]
        );
        assert_eq!(offsets_held(&fixture), vec![(("orders".into(), 1), 43)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_subscribed_topic_is_refused_per_partition() {
        let fixture = Fixture::new();
        stable_member(&fixture).await;
        commit(&fixture, 0, 42);
        assert_eq!(
            handle(fixture.handle(), deleting(vec![0])),
            answered(&[(0, Some(ResponseError::GroupSubscribedToTopic))])
        );
        assert_eq!(fixture.log.take_appended(), Vec::new());
        assert_eq!(offsets_held(&fixture), vec![(("orders".into(), 0), 42)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn unknown_groups_failed_appends_and_other_coordinators_fail_the_request() {
        let fixture = Fixture::new();
        let failed =
            |error: ResponseError| OffsetDeleteResponse::default().with_error_code(error.code());
        assert_eq!(
            handle(fixture.handle(), deleting(vec![0])),
            failed(ResponseError::GroupIdNotFound)
        );
        commit(&fixture, 0, 42);
        fixture.log.fail_appends(ResponseError::NotCoordinator);
        assert_eq!(
            handle(fixture.handle(), deleting(vec![0])),
            failed(ResponseError::NotCoordinator)
        );
        assert_eq!(offsets_held(&fixture), vec![(("orders".into(), 0), 42)]);
        fixture
            .log
            .set_leadership(Err(ResponseError::CoordinatorLoadInProgress));
        assert_eq!(
            handle(fixture.handle(), deleting(vec![0])),
            failed(ResponseError::CoordinatorLoadInProgress)
        );
    }
}
