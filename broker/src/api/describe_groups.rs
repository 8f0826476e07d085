//! DescribeGroups: state, protocol type, chosen protocol and members. As in Kafka, member metadata
//! and assignments (and the protocol) are reported only for a Stable group, and an unknown group
//! is described as Dead with no error — from v6 (KIP-1043) with GROUP_ID_NOT_FOUND and Kafka's
//! message.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::group::{lock, GroupState, GroupsHandle};

/// First version that answers an unknown group GROUP_ID_NOT_FOUND (KIP-1043).
const GROUP_ID_NOT_FOUND_SINCE: i16 = 6;

pub fn handle(
    groups: GroupsHandle<'_>,
    body: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let text = |value: &str| StrBytes::from_string(value.to_string());
    let groups = body
        .groups
        .into_iter()
        .map(|group_id| {
            let described = DescribedGroup::default().with_group_id(group_id.clone());
            if let Err(error) = groups.check_coordinator(&group_id) {
                return described.with_error_code(error.code());
            }
            let Some(group) = groups.coordinator.group(&group_id) else {
                let dead = described.with_group_state(text(GroupState::Dead.name()));
                if version < GROUP_ID_NOT_FOUND_SINCE {
                    return dead;
                }
                return dead
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(text(&format!("Group {} not found.", group_id.0))));
            };
            let group = lock(&group);
            let stable = group.state() == GroupState::Stable;
            let members = group
                .describe_members()
                .into_iter()
                .map(|member| {
                    let member_out = DescribedGroupMember::default()
                        .with_member_id(text(&member.member_id))
                        .with_group_instance_id(member.group_instance_id.as_deref().map(text))
                        .with_client_id(text(&member.client_id))
                        .with_client_host(text(&member.client_host));
                    if stable {
                        member_out
                            .with_member_metadata(member.metadata)
                            .with_member_assignment(member.assignment)
                    } else {
                        member_out
                    }
                })
                .collect();
            described
                .with_group_state(text(group.state().name()))
                .with_protocol_type(text(group.protocol_type().unwrap_or("")))
                .with_protocol_data(text(if stable {
                    group.protocol_name().unwrap_or("")
                } else {
                    ""
                }))
                .with_members(members)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::describe_groups_response::{
        DescribedGroup, DescribedGroupMember,
    };
    use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};

    use super::handle;
    use crate::api::group_testing::{
        join, join_request, stable_member, text, ASSIGNMENT, GROUP, SUBSCRIPTION,
    };
    use crate::group::testing::Fixture;

    fn describe(fixture: &Fixture, groups: &[&str], version: i16) -> DescribeGroupsResponse {
        let request = DescribeGroupsRequest::default()
            .with_groups(groups.iter().map(|id| GroupId(text(id))).collect());
        handle(fixture.handle(), request, version)
    }

    fn member(member_id: &str) -> DescribedGroupMember {
        DescribedGroupMember::default()
            .with_member_id(text(member_id))
            .with_group_instance_id(None)
            .with_client_id(text("consumer-1"))
            .with_client_host(text("/10.0.0.7"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_stable_group_with_its_members_metadata_and_assignments() {
        let fixture = Fixture::new();
        let member_id = stable_member(&fixture).await;
        assert_eq!(
            describe(&fixture, &[GROUP], 5),
            DescribeGroupsResponse::default().with_groups(vec![DescribedGroup::default()
                .with_group_id(GroupId(text(GROUP)))
                .with_group_state(text("Stable"))
                .with_protocol_type(text("consumer"))
                .with_protocol_data(text("range"))
                .with_members(vec![member(&member_id)
                    .with_member_metadata(Bytes::from_static(SUBSCRIPTION))
                    .with_member_assignment(Bytes::from_static(ASSIGNMENT))])])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_rebalancing_group_is_described_without_protocol_or_assignments() {
        let fixture = Fixture::new();
        let first = join(&fixture, join_request(""), 5, 1).await;
        let member_id = first.member_id.to_string();
        join(&fixture, join_request(&member_id), 5, 1).await;
        assert_eq!(
            describe(&fixture, &[GROUP], 5),
            DescribeGroupsResponse::default().with_groups(vec![DescribedGroup::default()
                .with_group_id(GroupId(text(GROUP)))
                .with_group_state(text("CompletingRebalance"))
                .with_protocol_type(text("consumer"))
                .with_protocol_data(text(""))
                .with_members(vec![member(&member_id)])])
        );
    }

    #[test]
    fn an_unknown_group_is_dead_and_from_v6_not_found() {
        let fixture = Fixture::new();
        let dead = DescribedGroup::default()
            .with_group_id(GroupId(text("ghost")))
            .with_group_state(text("Dead"));
        assert_eq!(
            describe(&fixture, &["ghost"], 5),
            DescribeGroupsResponse::default().with_groups(vec![dead.clone()])
        );
        assert_eq!(
            describe(&fixture, &["ghost"], 6),
            DescribeGroupsResponse::default().with_groups(vec![dead
                .with_error_code(ResponseError::GroupIdNotFound.code())
                .with_error_message(Some(text("Group ghost not found.")))])
        );
    }

    #[test]
    fn another_coordinator_is_answered_per_group() {
        let fixture = Fixture::new();
        fixture
            .log
            .set_leadership(Err(ResponseError::NotCoordinator));
        let refused = |id: &str| {
            DescribedGroup::default()
                .with_group_id(GroupId(text(id)))
                .with_error_code(ResponseError::NotCoordinator.code())
        };
        assert_eq!(
            describe(&fixture, &["a", "b"], 5),
            DescribeGroupsResponse::default().with_groups(vec![refused("a"), refused("b")])
        );
    }
}
