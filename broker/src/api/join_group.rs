//! JoinGroup: a long-poll. The answer comes when the group's rebalance completes (every member
//! rejoined, the rebalance timeout passed, or the initial delay of a new group ended); the
//! connection waits for it, answering its requests in order as Kafka does. v4+ (KIP-394): a new
//! member without an id first gets MEMBER_ID_REQUIRED and the id to join with. A static member
//! taking over its instance in a Stable group is answered once the group's record naming its new
//! member id is replicated (Kafka's `updateStaticMemberAndRebalance`).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::ClientInfo;
use crate::broker::Broker;
use crate::group::state::{JoinRequest, JoinResult, Reply};
use crate::group::{lock, new_member_id};

pub async fn handle(
    broker: &Arc<Broker>,
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
    if let Err(error) =
        broker
            .groups
            .check_coordinator(&broker.image(), &broker.replicas, &group_id)
    {
        return response(JoinResult::error(error, &member_id), version);
    }
    crate::group::GroupCoordinator::ensure_ticker(broker);
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
    let group = broker.groups.group_or_create(&group_id);
    let (reply, waits) = {
        let mut locked = lock(&group);
        let reply = locked.join(request, broker.groups.now_ms());
        (
            reply,
            broker.groups.persist_due(&broker.replicas, &mut locked),
        )
    };
    broker.groups.await_stores(&group, waits).await;
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
