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

#[cfg(test)]
mod tests {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::{GroupId, HeartbeatRequest, HeartbeatResponse};

    use super::handle;
    use crate::api::group_testing::{stable_member, text, GROUP};
    use crate::group::lock;
    use crate::group::state::{JoinRequest, Reply};
    use crate::group::testing::Fixture;

    fn heartbeat(fixture: &Fixture, member_id: &str, generation: i32) -> HeartbeatResponse {
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(text(GROUP)))
            .with_member_id(text(member_id))
            .with_generation_id(generation);
        handle(fixture.handle(), request)
    }

    fn answered(error: Option<ResponseError>) -> HeartbeatResponse {
        HeartbeatResponse::default().with_error_code(error.map_or(0, |e| e.code()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_current_member_is_kept_and_others_are_told_why_not() {
        let fixture = Fixture::new();
        assert_eq!(
            heartbeat(&fixture, "m", 1),
            answered(Some(ResponseError::UnknownMemberId)),
            "no such group"
        );
        let member_id = stable_member(&fixture).await;
        assert_eq!(heartbeat(&fixture, &member_id, 1), answered(None));
        assert_eq!(
            heartbeat(&fixture, &member_id, 2),
            answered(Some(ResponseError::IllegalGeneration))
        );
        assert_eq!(
            heartbeat(&fixture, "stranger", 1),
            answered(Some(ResponseError::UnknownMemberId))
        );
        for error in [
            ResponseError::NotCoordinator,
            ResponseError::CoordinatorLoadInProgress,
        ] {
            fixture.log.set_leadership(Err(error));
            assert_eq!(heartbeat(&fixture, &member_id, 1), answered(Some(error)));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_member_is_told_to_rejoin_while_the_group_rebalances() {
        let fixture = Fixture::new();
        let member_id = stable_member(&fixture).await;
        // A second consumer joins (v3: no member id round), which starts a rebalance.
        let group = fixture.coordinator.group(GROUP).unwrap();
        let second = lock(&group).join(
            JoinRequest {
                client_id: "consumer-2".into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 30_000,
                protocol_type: "consumer".into(),
                protocols: vec![("range".into(), Default::default())],
                fresh_member_id: "consumer-2-x".into(),
                ..JoinRequest::default()
            },
            fixture.coordinator.now_ms(),
        );
        assert!(matches!(second, Reply::Later(_)));
        assert_eq!(
            heartbeat(&fixture, &member_id, 1),
            answered(Some(ResponseError::RebalanceInProgress))
        );
    }
}
