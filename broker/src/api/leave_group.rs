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
