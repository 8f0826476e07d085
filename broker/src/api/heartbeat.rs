//! Heartbeat: keeps a member's session alive; REBALANCE_IN_PROGRESS tells it to rejoin.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::group::{lock, GroupsHandle};

pub fn handle(groups: GroupsHandle<'_>, body: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = body.group_id.0.to_string();
    let error = match groups.check_coordinator(&group_id) {
        Err(error) => Some(error),
        Ok(()) => match groups.coordinator.group(&group_id) {
            None => Some(ResponseError::UnknownMemberId),
            Some(group) => lock(&group).heartbeat(
                &body.member_id,
                body.group_instance_id.as_deref(),
                body.generation_id,
                groups.coordinator.now_ms(),
            ),
        },
    };
    HeartbeatResponse::default().with_error_code(error.map_or(0, |error| error.code()))
}
