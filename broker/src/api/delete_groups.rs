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

#[cfg(test)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
    use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse, GroupId};

    use super::handle;
    use crate::api::group_testing::{committed, offset_record, stable_member, text, GROUP};
    use crate::group::lock;
    use crate::group::records::Change;
    use crate::group::testing::Fixture;

    fn delete(fixture: &Fixture, groups: &[&str]) -> DeleteGroupsResponse {
        let request = DeleteGroupsRequest::default()
            .with_groups_names(groups.iter().map(|id| GroupId(text(id))).collect());
        handle(fixture.handle(), request)
    }

    fn result(id: &str, error: Option<ResponseError>) -> DeletableGroupResult {
        DeletableGroupResult::default()
            .with_group_id(GroupId(text(id)))
            .with_error_code(error.map_or(0, |e| e.code()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn only_a_group_without_members_is_deleted_with_its_offsets_and_metadata() {
        let fixture = Fixture::new();
        let member_id = stable_member(&fixture).await;
        let group = fixture.coordinator.group(GROUP).unwrap();
        lock(&group)
            .offsets
            .insert(("orders".into(), 0), committed(42, "", 5));
        assert_eq!(
            delete(&fixture, &[GROUP, "ghost"]),
            DeleteGroupsResponse::default().with_results(vec![
                result(GROUP, Some(ResponseError::NonEmptyGroup)),
                result("ghost", Some(ResponseError::GroupIdNotFound)),
            ])
        );
        assert_eq!(fixture.log.take_appended(), Vec::new());

        let now_ms = fixture.coordinator.now_ms();
        assert_eq!(lock(&group).leave(&member_id, None, now_ms), None);
        assert_eq!(
            delete(&fixture, &[GROUP]).results,
            vec![result(GROUP, None)]
        );
        // The Empty group's own record, then the tombstones of its offsets and its metadata.
        let appended = fixture.log.take_appended();
        assert_eq!(
            appended.last(),
            Some(&(
                0,
                vec![
                    offset_record(0, None),
                    Change::Group {
                        group: GROUP.into(),
                        value: None
                    }
                ]
            ))
        );
        assert!(fixture.coordinator.group(GROUP).is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_group_whose_tombstones_cannot_be_written_stays() {
        let fixture = Fixture::new();
        fixture.coordinator.group_or_create("empty");
        fixture.log.fail_appends(ResponseError::NotCoordinator);
        let group = fixture.coordinator.group("empty").unwrap();
        lock(&group)
            .offsets
            .insert(("orders".into(), 0), committed(1, "", 5));
        assert_eq!(
            delete(&fixture, &["empty"]).results,
            vec![result("empty", Some(ResponseError::NotCoordinator))]
        );
        assert!(fixture.coordinator.group("empty").is_some());
        fixture
            .log
            .set_leadership(Err(ResponseError::CoordinatorLoadInProgress));
        assert_eq!(
            delete(&fixture, &["empty"]).results,
            vec![result(
                "empty",
                Some(ResponseError::CoordinatorLoadInProgress)
            )]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_group_that_never_had_a_generation_leaves_no_metadata_tombstone() {
        let fixture = Fixture::new();
        let group = fixture.coordinator.group_or_create(GROUP);
        lock(&group)
            .offsets
            .insert(("orders".into(), 1), committed(9, "", 5));
        assert_eq!(
            delete(&fixture, &[GROUP]).results,
            vec![result(GROUP, None)]
        );
        assert_eq!(
            fixture.log.take_appended(),
            vec![(0, vec![offset_record(1, None)])]
        );
    }
}
