//! LeaveGroup: v0–v2 name one member; v3+ a batch, each by member id and/or group.instance.id,
//! each with its own error code. The last member leaving empties the group, whose metadata
//! record is then written (not waited for, as in Kafka).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use crate::group::{lock, GroupsHandle};

pub fn handle(
    groups: GroupsHandle<'_>,
    body: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let group_id = body.group_id.0.to_string();
    let members = if version >= 3 {
        body.members
    } else {
        vec![MemberIdentity::default().with_member_id(body.member_id)]
    };
    let code = |error: Option<ResponseError>| error.map_or(0, |error| error.code());
    if let Err(error) = groups.check_coordinator(&group_id) {
        return LeaveGroupResponse::default().with_error_code(error.code());
    }
    let group = groups.coordinator.group(&group_id);
    let now_ms = groups.coordinator.now_ms();
    let results: Vec<MemberResponse> = members
        .into_iter()
        .map(|member| {
            let error = match &group {
                None => Some(ResponseError::UnknownMemberId),
                Some(group) => {
                    let mut locked = lock(group);
                    let error = locked.leave(
                        &member.member_id,
                        member.group_instance_id.as_deref(),
                        now_ms,
                    );
                    let waits = groups.persist_due(&mut locked);
                    drop(locked);
                    if !waits.is_empty() {
                        let coordinator = Arc::clone(groups.coordinator);
                        let group = Arc::clone(group);
                        tokio::spawn(async move { coordinator.await_stores(&group, waits).await });
                    }
                    error
                }
            };
            MemberResponse::default()
                .with_member_id(member.member_id)
                .with_group_instance_id(member.group_instance_id)
                .with_error_code(code(error))
        })
        .collect();
    if version >= 3 {
        LeaveGroupResponse::default().with_members(results)
    } else {
        let error_code = results.first().map_or(0, |member| member.error_code);
        LeaveGroupResponse::default().with_error_code(error_code)
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::leave_group_response::MemberResponse;
    use kafka_protocol::messages::{GroupId, LeaveGroupRequest, LeaveGroupResponse};

    use super::handle;
    use crate::api::group_testing::{group_record, stable_member, text, GROUP};
    use crate::group::testing::Fixture;
    use crate::group::{lock, GroupState};

    fn batch(members: &[&str]) -> LeaveGroupRequest {
        LeaveGroupRequest::default()
            .with_group_id(GroupId(text(GROUP)))
            .with_members(
                members
                    .iter()
                    .map(|id| MemberIdentity::default().with_member_id(text(id)))
                    .collect(),
            )
    }

    fn left(member_id: &str, error: Option<ResponseError>) -> MemberResponse {
        MemberResponse::default()
            .with_member_id(text(member_id))
            .with_group_instance_id(None)
            .with_error_code(error.map_or(0, |e| e.code()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn v3_answers_each_member_and_the_last_one_empties_the_group() {
        let fixture = Fixture::new();
        let member_id = stable_member(&fixture).await;
        let response = handle(fixture.handle(), batch(&["stranger", &member_id]), 3);
        assert_eq!(
            response,
            LeaveGroupResponse::default().with_members(vec![
                left("stranger", Some(ResponseError::UnknownMemberId)),
                left(&member_id, None),
            ])
        );
        let group = fixture.coordinator.group(GROUP).unwrap();
        assert_eq!(lock(&group).state(), GroupState::Empty);
        // The Empty group's record: the next generation, no members (not waited for).
        assert_eq!(
            fixture.log.take_appended(),
            vec![(0, vec![group_record(2, None, None, Vec::new())])]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn before_v3_one_member_leaves_with_a_top_level_error() {
        let fixture = Fixture::new();
        let member_id = stable_member(&fixture).await;
        let single = |id: &str| {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(text(GROUP)))
                .with_member_id(text(id))
        };
        assert_eq!(
            handle(fixture.handle(), single("stranger"), 2),
            LeaveGroupResponse::default().with_error_code(ResponseError::UnknownMemberId.code())
        );
        assert_eq!(
            handle(fixture.handle(), single(&member_id), 0),
            LeaveGroupResponse::default()
        );
        let group = fixture.coordinator.group(GROUP).unwrap();
        assert_eq!(lock(&group).member_count(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn another_coordinator_refuses_the_whole_request() {
        let fixture = Fixture::new();
        let member_id = stable_member(&fixture).await;
        for error in [
            ResponseError::NotCoordinator,
            ResponseError::CoordinatorLoadInProgress,
        ] {
            fixture.log.set_leadership(Err(error));
            assert_eq!(
                handle(fixture.handle(), batch(&[&member_id]), 4),
                LeaveGroupResponse::default().with_error_code(error.code())
            );
        }
        let group = fixture.coordinator.group(GROUP).unwrap();
        assert_eq!(lock(&group).member_count(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_unknown_group_answers_every_member_unknown() {
        let fixture = Fixture::new();
        assert_eq!(
            handle(fixture.handle(), batch(&["a", "b"]), 5),
            LeaveGroupResponse::default().with_members(vec![
                left("a", Some(ResponseError::UnknownMemberId)),
                left("b", Some(ResponseError::UnknownMemberId)),
            ])
        );
    }
}
