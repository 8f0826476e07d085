//! ListGroups: every group this broker coordinates, optionally filtered by state (v4+, matched
//! case-insensitively as Kafka does) and type (v5+; every group here is "classic").

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::group::{lock, GroupState, GroupsHandle};

const GROUP_TYPE: &str = "classic";

pub fn handle(groups: GroupsHandle<'_>, body: ListGroupsRequest) -> ListGroupsResponse {
    let wanted_state = |state: GroupState| {
        body.states_filter.is_empty()
            || body
                .states_filter
                .iter()
                .any(|s| s.eq_ignore_ascii_case(state.name()))
    };
    let wanted_type = body.types_filter.is_empty()
        || body
            .types_filter
            .iter()
            .any(|t| t.eq_ignore_ascii_case(GROUP_TYPE));
    let mut listed: Vec<ListedGroup> = Vec::new();
    if wanted_type {
        for group in groups.coordinator.all_groups() {
            let group = lock(&group);
            let state = group.state();
            if state == GroupState::Dead || !wanted_state(state) {
                continue;
            }
            listed.push(
                ListedGroup::default()
                    .with_group_id(GroupId(StrBytes::from_string(group.id.clone())))
                    .with_protocol_type(StrBytes::from_string(
                        group.protocol_type().unwrap_or("").to_string(),
                    ))
                    .with_group_state(StrBytes::from_static_str(state.name()))
                    .with_group_type(StrBytes::from_static_str(GROUP_TYPE)),
            );
        }
    }
    listed.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    ListGroupsResponse::default().with_groups(listed)
}
