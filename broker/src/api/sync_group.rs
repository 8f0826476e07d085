//! SyncGroup: the leader hands in the assignment; every member (the leader included) waits until
//! it has and the group's metadata record carrying it is replicated (Kafka's `storeGroup`), then
//! gets its own share. If the record cannot be written, every waiting member gets the error
//! (COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR, or REBALANCE_IN_PROGRESS after
//! `offsets.commit.timeout.ms`) and the group rebalances. In a Stable group the current assignment
//! comes back at once.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use crate::group::state::{Reply, SyncResult};
use crate::group::{lock, GroupsHandle};

pub async fn handle(groups: GroupsHandle<'_>, body: SyncGroupRequest) -> SyncGroupResponse {
    let group_id = body.group_id.0.to_string();
    let coordinator = groups.coordinator;
    let result = match groups.check_coordinator(&group_id) {
        Err(error) => SyncResult::error(error),
        Ok(()) => match coordinator.group(&group_id) {
            None => SyncResult::error(ResponseError::UnknownMemberId),
            Some(group) => {
                let assignments = body
                    .assignments
                    .into_iter()
                    .map(|a| (a.member_id.to_string(), a.assignment))
                    .collect();
                let (reply, waits) = {
                    let mut locked = lock(&group);
                    let reply = locked.sync(
                        &body.member_id,
                        body.group_instance_id.as_deref(),
                        body.generation_id,
                        body.protocol_type.as_deref(),
                        body.protocol_name.as_deref(),
                        assignments,
                        coordinator.now_ms(),
                    );
                    (reply, groups.persist_due(&mut locked))
                };
                coordinator.await_stores(&group, waits).await;
                match reply {
                    Reply::Now(result) => result,
                    Reply::Later(receiver) => receiver
                        .await
                        .unwrap_or_else(|_| SyncResult::error(ResponseError::UnknownMemberId)),
                }
            }
        },
    };
    SyncGroupResponse::default()
        .with_error_code(result.error.map_or(0, |error| error.code()))
        .with_protocol_type(result.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(result.protocol_name.map(StrBytes::from_string))
        .with_assignment(result.assignment)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::{GroupId, SyncGroupResponse};

    use crate::api::group_testing::{
        group_record, join, join_request, member_record, stable_member, sync, sync_request, text,
        ASSIGNMENT, GROUP,
    };
    use crate::group::testing::Fixture;
    use crate::group::{lock, GroupState};

    fn refused(error: ResponseError) -> SyncGroupResponse {
        SyncGroupResponse::default().with_error_code(error.code())
    }

    fn assigned() -> SyncGroupResponse {
        SyncGroupResponse::default()
            .with_protocol_type(Some(text("consumer")))
            .with_protocol_name(Some(text("range")))
            .with_assignment(Bytes::from_static(ASSIGNMENT))
    }

    /// A member joined generation 1 (CompletingRebalance); its id.
    async fn joined_member(fixture: &Fixture) -> String {
        let first = join(fixture, join_request(""), 5, 1).await;
        let member_id = first.member_id.to_string();
        let joined = join(fixture, join_request(&member_id), 5, 1).await;
        assert_eq!((joined.error_code, joined.generation_id), (0, 1));
        member_id
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_leaders_sync_is_answered_once_the_generation_is_written() {
        let fixture = Fixture::new();
        let member_id = joined_member(&fixture).await;
        let synced = sync(&fixture, sync_request(&member_id, 1, true)).await;
        assert_eq!(synced, assigned());
        assert_eq!(
            fixture.log.take_appended(),
            vec![(
                0,
                vec![group_record(
                    1,
                    Some("range"),
                    Some(&member_id),
                    vec![member_record(&member_id, ASSIGNMENT)]
                )]
            )]
        );
        let group = fixture.coordinator.group(GROUP).unwrap();
        assert_eq!(lock(&group).state(), GroupState::Stable);

        // In a Stable group the assignment comes back at once, without another record.
        let again = sync(&fixture, sync_request(&member_id, 1, false)).await;
        assert_eq!(again, assigned());
        assert_eq!(fixture.log.take_appended(), Vec::new());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_failed_store_answers_kafkas_mapping_and_the_group_rebalances() {
        for (failure, answer) in [
            (
                ResponseError::NotLeaderOrFollower,
                ResponseError::NotCoordinator,
            ),
            (
                ResponseError::NotEnoughReplicas,
                ResponseError::CoordinatorNotAvailable,
            ),
            (
                ResponseError::RequestTimedOut,
                ResponseError::RebalanceInProgress,
            ),
        ] {
            // Failing the append itself.
            let fixture = Fixture::new();
            let member_id = joined_member(&fixture).await;
            fixture.log.fail_appends(failure);
            let synced = sync(&fixture, sync_request(&member_id, 1, true)).await;
            assert_eq!(synced, refused(answer), "append failing with {failure:?}");
            let group = fixture.coordinator.group(GROUP).unwrap();
            assert_eq!(lock(&group).state(), GroupState::PreparingRebalance);

            // Failing its replication.
            let fixture = Fixture::new();
            let member_id = joined_member(&fixture).await;
            fixture.log.set_replication(Err(failure));
            let synced = sync(&fixture, sync_request(&member_id, 1, true)).await;
            assert_eq!(
                synced,
                refused(answer),
                "replication failing with {failure:?}"
            );
            assert_eq!(fixture.log.take_appended().len(), 1);
            let group = fixture.coordinator.group(GROUP).unwrap();
            assert_eq!(lock(&group).state(), GroupState::PreparingRebalance);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn wrong_generations_unknown_members_and_other_coordinators_are_refused() {
        let fixture = Fixture::new();
        assert_eq!(
            sync(&fixture, sync_request("nobody", 1, false)).await,
            refused(ResponseError::UnknownMemberId),
            "no such group"
        );
        let member_id = stable_member(&fixture).await;
        assert_eq!(
            sync(&fixture, sync_request(&member_id, 2, false)).await,
            refused(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            sync(&fixture, sync_request("nobody", 1, false)).await,
            refused(ResponseError::UnknownMemberId)
        );
        let other_protocol =
            sync_request(&member_id, 1, false).with_protocol_name(Some(text("roundrobin")));
        assert_eq!(
            sync(&fixture, other_protocol).await,
            refused(ResponseError::InconsistentGroupProtocol)
        );
        for error in [
            ResponseError::NotCoordinator,
            ResponseError::CoordinatorLoadInProgress,
        ] {
            fixture.log.set_leadership(Err(error));
            assert_eq!(
                sync(&fixture, sync_request(&member_id, 1, false)).await,
                refused(error)
            );
        }
        let other_group = sync_request(&member_id, 1, false).with_group_id(GroupId(text("x")));
        fixture.log.set_leadership(Ok(()));
        assert_eq!(
            sync(&fixture, other_group).await,
            refused(ResponseError::UnknownMemberId)
        );
        assert_eq!(fixture.log.take_appended(), Vec::new());
    }
}
