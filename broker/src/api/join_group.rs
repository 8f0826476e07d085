//! JoinGroup: a long-poll. The answer comes when the group's rebalance completes (every member
//! rejoined, the rebalance timeout passed, or the initial delay of a new group ended); the
//! connection waits for it, answering its requests in order as Kafka does. v4+ (KIP-394): a new
//! member without an id first gets MEMBER_ID_REQUIRED and the id to join with. A static member
//! taking over its instance in a Stable group is answered once the group's record naming its new
//! member id is replicated (Kafka's `updateStaticMemberAndRebalance`).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::ClientInfo;
use crate::group::state::{JoinRequest, JoinResult, Reply};
use crate::group::{lock, new_member_id, GroupsHandle};

pub async fn handle(
    groups: GroupsHandle<'_>,
    body: JoinGroupRequest,
    version: i16,
    client: &ClientInfo,
) -> JoinGroupResponse {
    let group_id = body.group_id.0.to_string();
    let member_id = body.member_id.to_string();
    if group_id.is_empty() {
        return response(
            JoinResult::error(ResponseError::InvalidGroupId, &member_id),
            version,
        );
    }
    if let Err(error) = groups.check_coordinator(&group_id) {
        return response(JoinResult::error(error, &member_id), version);
    }
    let request = JoinRequest {
        member_id: member_id.clone(),
        group_instance_id: body.group_instance_id.map(|id| id.to_string()),
        client_id: client.client_id.clone(),
        client_host: client.host.clone(),
        session_timeout_ms: body.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version == 0 {
            body.session_timeout_ms
        } else {
            body.rebalance_timeout_ms
        },
        protocol_type: body.protocol_type.to_string(),
        protocols: body
            .protocols
            .into_iter()
            .map(|protocol| (protocol.name.to_string(), protocol.metadata))
            .collect(),
        require_known_member_id: version >= 4,
        fresh_member_id: new_member_id(&client.client_id),
    };
    let coordinator = groups.coordinator;
    let group = coordinator.group_or_create(&group_id);
    let (reply, waits) = {
        let mut locked = lock(&group);
        let reply = locked.join(request, coordinator.now_ms());
        (reply, groups.persist_due(&mut locked))
    };
    coordinator.await_stores(&group, waits).await;
    let result = match reply {
        Reply::Now(result) => result,
        Reply::Later(receiver) => receiver
            .await
            .unwrap_or_else(|_| JoinResult::error(ResponseError::UnknownMemberId, &member_id)),
    };
    response(result, version)
}

fn response(result: JoinResult, version: i16) -> JoinGroupResponse {
    let text = |value: String| StrBytes::from_string(value);
    // Before v7 the protocol name is not nullable.
    let protocol_name = match result.protocol_name {
        Some(name) => Some(text(name)),
        None if version < 7 => Some(StrBytes::default()),
        None => None,
    };
    JoinGroupResponse::default()
        .with_error_code(result.error.map_or(0, |error| error.code()))
        .with_generation_id(result.generation_id)
        .with_protocol_type(result.protocol_type.map(text))
        .with_protocol_name(protocol_name)
        .with_leader(text(result.leader_id))
        .with_member_id(text(result.member_id))
        .with_members(
            result
                .members
                .into_iter()
                .map(|member| {
                    JoinGroupResponseMember::default()
                        .with_member_id(text(member.member_id))
                        .with_group_instance_id(member.group_instance_id.map(text))
                        .with_metadata(member.metadata)
                })
                .collect(),
        )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
    use kafka_protocol::messages::{GroupId, JoinGroupResponse};

    use crate::api::group_testing::{join, join_request, stable_member, text, SUBSCRIPTION};
    use crate::group::records::Change;
    use crate::group::testing::Fixture;

    fn refused(
        error: ResponseError,
        member_id: &str,
        protocol_name: Option<&str>,
    ) -> JoinGroupResponse {
        JoinGroupResponse::default()
            .with_error_code(error.code())
            .with_generation_id(-1)
            .with_protocol_name(protocol_name.map(text))
            .with_member_id(text(member_id))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_new_member_is_given_an_id_then_leads_generation_one() {
        let fixture = Fixture::new();
        let first = join(&fixture, join_request(""), 5, 1).await;
        let member_id = first.member_id.to_string();
        let uuid = member_id
            .strip_prefix("consumer-1-")
            .expect("the client id first");
        assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{member_id}");
        // Before v7 the protocol name is not nullable: empty.
        assert_eq!(
            first,
            refused(ResponseError::MemberIdRequired, &member_id, Some(""))
        );

        let joined = join(&fixture, join_request(&member_id), 5, 1).await;
        assert_eq!(joined, sole_member_elected(&member_id));
        // Nothing is written before the leader's SyncGroup.
        assert_eq!(fixture.log.take_appended(), Vec::new());
    }

    /// Generation 1 of a group whose one member, `member_id`, leads it with the range protocol.
    fn sole_member_elected(member_id: &str) -> JoinGroupResponse {
        JoinGroupResponse::default()
            .with_generation_id(1)
            .with_protocol_type(Some(text("consumer")))
            .with_protocol_name(Some(text("range")))
            .with_leader(text(member_id))
            .with_member_id(text(member_id))
            .with_members(vec![JoinGroupResponseMember::default()
                .with_member_id(text(member_id))
                .with_metadata(Bytes::from_static(SUBSCRIPTION))])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn before_v4_a_member_without_an_id_joins_at_once() {
        let fixture = Fixture::new();
        let joined = join(&fixture, join_request(""), 3, 1).await;
        let member_id = joined.member_id.to_string();
        assert!(member_id.starts_with("consumer-1-"), "{member_id}");
        assert_eq!(joined, sole_member_elected(&member_id));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn another_coordinator_or_a_loading_one_is_answered_with_the_member_id_sent() {
        let fixture = Fixture::new();
        for error in [
            ResponseError::NotCoordinator,
            ResponseError::CoordinatorLoadInProgress,
            ResponseError::CoordinatorNotAvailable,
        ] {
            fixture.log.set_leadership(Err(error));
            // v7+: a null protocol name.
            assert_eq!(
                join(&fixture, join_request("m-1"), 7, 0).await,
                refused(error, "m-1", None)
            );
            assert_eq!(
                join(&fixture, join_request("m-1"), 6, 0).await,
                refused(error, "m-1", Some(""))
            );
        }
        assert!(fixture.coordinator.group("payments").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_empty_group_id_and_an_unknown_member_are_refused() {
        let fixture = Fixture::new();
        let no_group = join_request("").with_group_id(GroupId(text("")));
        assert_eq!(
            join(&fixture, no_group, 5, 0).await,
            refused(ResponseError::InvalidGroupId, "", Some(""))
        );
        stable_member(&fixture).await;
        assert_eq!(
            join(&fixture, join_request("stranger"), 5, 1).await,
            refused(ResponseError::UnknownMemberId, "stranger", Some(""))
        );
        let bad_timeout = join_request("").with_session_timeout_ms(10);
        assert_eq!(
            join(&fixture, bad_timeout, 5, 1).await,
            refused(ResponseError::InvalidSessionTimeout, "", Some(""))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_static_member_rejoining_with_a_new_id_is_answered_once_its_record_is_written() {
        let fixture = Fixture::new();
        let static_join = |member_id: &str| {
            join_request(member_id).with_group_instance_id(Some(text("instance-a")))
        };
        let joined = join(&fixture, static_join(""), 5, 1).await;
        let old_id = joined.member_id.to_string();
        assert_eq!((joined.error_code, joined.generation_id), (0, 1));
        let synced = crate::api::group_testing::sync(
            &fixture,
            crate::api::group_testing::sync_request(&old_id, 1, true)
                .with_group_instance_id(Some(text("instance-a"))),
        )
        .await;
        assert_eq!(synced.error_code, 0);
        fixture.log.take_appended();

        // The instance restarts without its member id: it takes over generation 1 as a new id,
        // once the group's record naming that id is stored.
        let rejoined = join(&fixture, static_join(""), 5, 1).await;
        let new_id = rejoined.member_id.to_string();
        assert_ne!(new_id, old_id);
        assert_eq!(rejoined.error_code, 0);
        assert_eq!(rejoined.generation_id, 1);
        let appended = fixture.log.take_appended();
        assert_eq!(appended.len(), 1);
        let [Change::Group {
            group,
            value: Some(value),
        }] = appended[0].1.as_slice()
        else {
            panic!("one group metadata record expected: {appended:?}");
        };
        assert_eq!(group, "payments");
        assert_eq!(value.generation, 1);
        assert_eq!(
            value
                .members
                .iter()
                .map(|member| (
                    member.member_id.as_str(),
                    member.group_instance_id.as_deref()
                ))
                .collect::<Vec<_>>(),
            vec![(new_id.as_str(), Some("instance-a"))]
        );

        // If that record cannot be written the takeover is undone and the join refused.
        fixture.log.fail_appends(ResponseError::NotLeaderOrFollower);
        let refused_join = join(&fixture, static_join(""), 5, 1).await;
        assert_eq!(
            refused_join.error_code,
            ResponseError::NotCoordinator.code()
        );
    }
}
