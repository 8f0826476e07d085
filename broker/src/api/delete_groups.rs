//! DeleteGroups: a group without members is deleted with its committed offsets and its metadata
//! (tombstones in `__consumer_offsets`, appended but not waited for, as Kafka's
//! `cleanupGroupMetadata` does), so it stays gone after a restart; one with members gets
//! NON_EMPTY_GROUP, an unknown one GROUP_ID_NOT_FOUND.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::group::{lock, GroupState, GroupsHandle, Tombstones};

pub fn handle(groups: GroupsHandle<'_>, body: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let results = body
        .groups_names
        .into_iter()
        .map(|group_id| {
            let outcome = groups.check_coordinator(&group_id).and_then(|()| {
                let group = groups
                    .coordinator
                    .group(&group_id)
                    .ok_or(ResponseError::GroupIdNotFound)?;
                tokio::task::block_in_place(|| {
                    let mut locked = lock(&group);
                    match locked.state() {
                        GroupState::Dead => return Err(ResponseError::GroupIdNotFound),
                        GroupState::Empty => {}
                        _ => return Err(ResponseError::NonEmptyGroup),
                    }
                    let tombstones = Tombstones {
                        offsets: locked.offsets.keys().cloned().collect(),
                        group: locked.generation_id() > 0,
                    };
                    groups.append_tombstones(&group_id, &tombstones)?;
                    locked.mark_dead();
                    Ok(())
                })?;
                groups.coordinator.remove_group(&group_id, &group);
                Ok(())
            });
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(outcome.err().map_or(0, |error| error.code()))
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
