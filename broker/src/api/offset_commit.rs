//! OffsetCommit: checked against the group's membership (generation, member id, static instance),
//! then appended to the group's `__consumer_offsets` partition, and acknowledged and made visible
//! only once that partition's ISR has it (Kafka's `offsets.commit.required.acks=-1`), so a
//! coordinator failover keeps every acknowledged commit.
//! Generation -1 with no member id is a "simple" commit (a consumer using assign()), accepted while
//! the group has no members. Partitions of unknown topics get UNKNOWN_TOPIC_OR_PARTITION.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use tokio::time::Instant;

use crate::group::{lock, CommittedOffset, GroupsHandle, OFFSET_METADATA_MAX_BYTES};

pub async fn handle(groups: GroupsHandle<'_>, body: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = body.group_id.0.to_string();
    let coordinator = groups.coordinator;
    // (topic index, partition index) → error, filled as decided.
    let mut errors: Vec<Vec<Option<ResponseError>>> = body
        .topics
        .iter()
        .map(|topic| vec![None; topic.partitions.len()])
        .collect();
    let group_error = if group_id.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        groups.check_coordinator(&group_id)
    };
    let now_ms = coordinator.now_ms();
    let outcome = group_error.and_then(|()| {
        let group = match coordinator.group(&group_id) {
            Some(group) => group,
            None if body.generation_id_or_member_epoch < 0 => {
                coordinator.group_or_create(&group_id)
            }
            None => return Err(ResponseError::IllegalGeneration),
        };
        // The append happens under the group's lock, so the log holds one group's commits in
        // the order they were checked.
        let appended = tokio::task::block_in_place(|| {
            let mut group = lock(&group);
            group.validate_commit(
                &body.member_id,
                body.group_instance_id.as_deref(),
                body.generation_id_or_member_epoch,
                now_ms,
            )?;
            let mut changes = Vec::new();
            for (t, topic) in body.topics.iter().enumerate() {
                for (p, partition) in topic.partitions.iter().enumerate() {
                    let metadata = partition
                        .committed_metadata
                        .as_deref()
                        .unwrap_or_default()
                        .to_string();
                    if !groups.partition_exists(&topic.name, partition.partition_index) {
                        errors[t][p] = Some(ResponseError::UnknownTopicOrPartition);
                    } else if metadata.len() > OFFSET_METADATA_MAX_BYTES {
                        errors[t][p] = Some(ResponseError::OffsetMetadataTooLarge);
                    } else {
                        changes.push((
                            topic.name.to_string(),
                            partition.partition_index,
                            Some(CommittedOffset {
                                offset: partition.committed_offset,
                                leader_epoch: partition.committed_leader_epoch,
                                metadata,
                                commit_timestamp_ms: now_ms,
                            }),
                        ));
                    }
                }
            }
            let wait = groups.append_offsets(&group_id, &changes)?;
            Ok((changes, wait))
        })?;
        Ok((group, appended))
    });
    let outcome = match outcome {
        Ok((group, (changes, wait))) => {
            let timeout = Duration::from_millis(coordinator.config.offsets_commit_timeout_ms);
            let replicated = match wait {
                Some(wait) => wait
                    .until_replicated(Instant::now() + timeout)
                    .await
                    .map_err(commit_error),
                None => Ok(()),
            };
            replicated.map(|()| {
                let mut group = lock(&group);
                for (topic, index, offset) in changes {
                    if let Some(offset) = offset {
                        group.offsets.insert((topic, index), offset);
                    }
                }
            })
        }
        Err(error) => Err(error),
    };
    let topics = body
        .topics
        .into_iter()
        .zip(errors)
        .map(|(topic, errors)| {
            let partitions = topic
                .partitions
                .iter()
                .zip(errors)
                .map(|(partition, error)| {
                    let error = outcome.err().or(error);
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(error.map_or(0, |error| error.code()))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// Kafka's mapping of a failed offsets append (`GroupMetadataManager.storeOffsets`): the client
/// retries a coordinator that is not available, and looks the coordinator up again after
/// NOT_COORDINATOR.
fn commit_error(error: ResponseError) -> ResponseError {
    match error {
        ResponseError::NotEnoughReplicas
        | ResponseError::NotEnoughReplicasAfterAppend
        | ResponseError::RequestTimedOut => ResponseError::CoordinatorNotAvailable,
        ResponseError::NotLeaderOrFollower | ResponseError::KafkaStorageError => {
            ResponseError::NotCoordinator
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_commit_response::{
        OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    };
    use kafka_protocol::messages::{GroupId, OffsetCommitRequest, OffsetCommitResponse};

    use super::handle;
    use crate::api::group_testing::{
        committed, offset_record, offsets_held, stable_member, text, GROUP,
    };
    use crate::api::topic_name;
    use crate::group::testing::{Fixture, START_MS};
    use crate::group::OFFSET_METADATA_MAX_BYTES;

    /// A commit of `partitions` ((topic, partition, offset, metadata)) by `member_id` in
    /// `generation`.
    fn commit(
        member_id: &str,
        generation: i32,
        partitions: &[(&str, i32, i64, &str)],
    ) -> OffsetCommitRequest {
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for &(topic, index, offset, metadata) in partitions {
            let partition = OffsetCommitRequestPartition::default()
                .with_partition_index(index)
                .with_committed_offset(offset)
                .with_committed_metadata(Some(text(metadata)));
            match topics.iter_mut().find(|t| t.name.as_str() == topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(
                    OffsetCommitRequestTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        OffsetCommitRequest::default()
            .with_group_id(GroupId(text(GROUP)))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(text(member_id))
            .with_topics(topics)
    }

    /// Each partition's answer: (partition, error).
    type Answers<'a> = &'a [(i32, Option<ResponseError>)];

    /// The response: per topic, its partitions' answers.
    fn answered(topics: &[(&str, Answers<'_>)]) -> OffsetCommitResponse {
        OffsetCommitResponse::default().with_topics(
            topics
                .iter()
                .map(|&(name, partitions)| {
                    OffsetCommitResponseTopic::default()
                        .with_name(topic_name(name))
                        .with_partitions(
                            partitions
                                .iter()
                                .map(|&(index, error)| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(index)
                                        .with_error_code(error.map_or(0, |e| e.code()))
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_simple_commit_is_written_then_made_visible_and_bad_partitions_are_refused_alone() {
        let fixture = Fixture::new();
        fixture.clock.advance(250);
        let too_large = "x".repeat(OFFSET_METADATA_MAX_BYTES + 1);
        let request = commit(
            "",
            -1,
            &[
                ("orders", 0, 42, "first"),
                ("orders", 1, 7, &too_large),
                ("orders", 9, 1, ""),
                ("unknown", 0, 1, ""),
            ],
        );
        assert_eq!(
            handle(fixture.handle(), request).await,
            answered(&[
                (
                    "orders",
                    &[
                        (0, None),
                        (1, Some(ResponseError::OffsetMetadataTooLarge)),
                        (9, Some(ResponseError::UnknownTopicOrPartition)),
                    ]
                ),
                (
                    "unknown",
                    &[(0, Some(ResponseError::UnknownTopicOrPartition))]
                ),
            ])
        );
        let at = START_MS + 250;
        assert_eq!(
            fixture.log.take_appended(),
            vec![(0, vec![offset_record(0, Some(committed(42, "first", at)))])]
        );
        assert_eq!(offsets_held(&fixture), vec![(("orders".into(), 0), 42)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_members_commit_is_checked_against_its_generation() {
        let fixture = Fixture::new();
        let member_id = stable_member(&fixture).await;
        let refused_all = |error| answered(&[("orders", &[(0, Some(error)), (1, Some(error))])]);
        let partitions = [("orders", 0, 10, ""), ("orders", 1, 11, "")];
        assert_eq!(
            handle(fixture.handle(), commit(&member_id, 2, &partitions)).await,
            refused_all(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            handle(fixture.handle(), commit("stranger", 1, &partitions)).await,
            refused_all(ResponseError::UnknownMemberId)
        );
        // A simple commit while the group has members.
        assert_eq!(
            handle(fixture.handle(), commit("", -1, &partitions)).await,
            refused_all(ResponseError::UnknownMemberId)
        );
        assert_eq!(fixture.log.take_appended(), Vec::new());
        assert_eq!(
            handle(fixture.handle(), commit(&member_id, 1, &partitions)).await,
            answered(&[("orders", &[(0, None), (1, None)])])
        );
        assert_eq!(
            offsets_held(&fixture),
            vec![(("orders".into(), 0), 10), (("orders".into(), 1), 11)]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_generation_for_an_unknown_group_an_empty_group_id_and_other_coordinators_are_refused(
    ) {
        let fixture = Fixture::new();
        let partitions = [("orders", 0, 10, "")];
        let refused = |error| answered(&[("orders", &[(0, Some(error))])]);
        assert_eq!(
            handle(fixture.handle(), commit("m", 3, &partitions)).await,
            refused(ResponseError::IllegalGeneration)
        );
        let no_group = commit("", -1, &partitions).with_group_id(GroupId(text("")));
        assert_eq!(
            handle(fixture.handle(), no_group).await,
            refused(ResponseError::InvalidGroupId)
        );
        for error in [
            ResponseError::NotCoordinator,
            ResponseError::CoordinatorLoadInProgress,
        ] {
            fixture.log.set_leadership(Err(error));
            assert_eq!(
                handle(fixture.handle(), commit("", -1, &partitions)).await,
                refused(error)
            );
        }
        assert!(fixture.coordinator.group(GROUP).is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_commit_the_isr_does_not_take_is_refused_and_stays_invisible() {
        for (failure, answer) in [
            (
                ResponseError::NotEnoughReplicas,
                ResponseError::CoordinatorNotAvailable,
            ),
            (
                ResponseError::RequestTimedOut,
                ResponseError::CoordinatorNotAvailable,
            ),
            (
                ResponseError::NotLeaderOrFollower,
                ResponseError::NotCoordinator,
            ),
        ] {
            let fixture = Fixture::new();
            fixture.log.set_replication(Err(failure));
            assert_eq!(
                handle(fixture.handle(), commit("", -1, &[("orders", 0, 5, "")])).await,
                answered(&[("orders", &[(0, Some(answer))])]),
                "replication failing with {failure:?}"
            );
            assert_eq!(fixture.log.take_appended().len(), 1);
            assert_eq!(offsets_held(&fixture), Vec::new());
        }
        let fixture = Fixture::new();
        fixture.log.fail_appends(ResponseError::NotCoordinator);
        assert_eq!(
            handle(fixture.handle(), commit("", -1, &[("orders", 0, 5, "")])).await,
            answered(&[("orders", &[(0, Some(ResponseError::NotCoordinator))])])
        );
    }
}
