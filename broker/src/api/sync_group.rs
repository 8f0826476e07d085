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
