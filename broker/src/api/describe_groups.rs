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
