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

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::list_groups_response::ListedGroup;
    use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

    use super::handle;
    use crate::api::group_testing::{stable_member, text, GROUP};
    use crate::group::testing::Fixture;
    use crate::group::GroupState;

    fn listed(id: &str, protocol_type: &str, state: &str) -> ListedGroup {
        ListedGroup::default()
            .with_group_id(GroupId(text(id)))
            .with_protocol_type(text(protocol_type))
            .with_group_state(text(state))
            .with_group_type(text("classic"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn every_live_group_in_id_order_filtered_by_state_and_type() {
        let fixture = Fixture::new();
        stable_member(&fixture).await;
        fixture.coordinator.group_or_create("audit");
        let dead = fixture.coordinator.group_or_create("deleted");
        crate::group::lock(&dead).mark_dead();
        assert_eq!(
            crate::group::lock(&dead).state(),
            GroupState::Dead,
            "Dead groups are never listed"
        );
        let list = |states: &[&str], types: &[&str]| {
            let request = ListGroupsRequest::default()
                .with_states_filter(states.iter().map(|s| text(s)).collect())
                .with_types_filter(types.iter().map(|s| text(s)).collect());
            handle(fixture.handle(), request)
        };
        let audit = listed("audit", "", "Empty");
        let payments = listed(GROUP, "consumer", "Stable");
        assert_eq!(
            list(&[], &[]),
            ListGroupsResponse::default().with_groups(vec![audit.clone(), payments.clone()])
        );
        assert_eq!(
            list(&["stable"], &[]),
            ListGroupsResponse::default().with_groups(vec![payments.clone()])
        );
        assert_eq!(
            list(&["Empty", "Dead"], &["CLASSIC"]),
            ListGroupsResponse::default().with_groups(vec![audit])
        );
        assert_eq!(list(&[], &["consumer"]), ListGroupsResponse::default());
    }
}
