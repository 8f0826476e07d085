//! Requests and group histories shared by the group handlers' unit tests: they drive the real
//! handlers over [`Fixture`]'s coordinator and in-memory offsets log.

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, JoinGroupRequest, JoinGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::{join_group, sync_group, ClientInfo};
use crate::group::records::{Change, GroupMetadataValue, MemberMetadata};
use crate::group::testing::{Fixture, START_MS};
use crate::group::{lock, CommittedOffset, GroupState};

pub const GROUP: &str = "payments";
/// The subscription every test member sends (opaque to the coordinator but for OffsetDelete).
pub const SUBSCRIPTION: &[u8] = b"\x00\x00\x00\x00\x00\x01\x00\x06orders\xff\xff\xff\xff";
pub const ASSIGNMENT: &[u8] = b"assignment-of-the-leader";

pub fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

pub fn client() -> ClientInfo {
    ClientInfo {
        client_id: "consumer-1".into(),
        host: "/10.0.0.7".into(),
    }
}

/// A consumer's JoinGroup for [`GROUP`], offering `range` with [`SUBSCRIPTION`].
pub fn join_request(member_id: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(text(GROUP)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(text(member_id))
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(text("range"))
            .with_metadata(Bytes::from_static(SUBSCRIPTION))])
}

/// Runs JoinGroup; when it waits for the rebalance, runs the coordinator's tick (which completes
/// it: no initial delay, every member joined) once `members` have joined.
pub async fn join(
    fixture: &Fixture,
    request: JoinGroupRequest,
    version: i16,
    members: usize,
) -> JoinGroupResponse {
    let joined = || {
        fixture
            .coordinator
            .group(GROUP)
            .is_some_and(|group| lock(&group).member_count() >= members)
    };
    let ticker = async {
        // Bounded: the join registers its member before it first waits.
        for _ in 0..1_000 {
            if joined() {
                break;
            }
            tokio::task::yield_now().await;
        }
        fixture.tick();
    };
    let client = client();
    let (response, ()) = tokio::join!(
        join_group::handle(fixture.handle(), request, version, &client),
        ticker
    );
    response
}

pub fn sync_request(member_id: &str, generation: i32, leader: bool) -> SyncGroupRequest {
    let assignments = if leader {
        vec![SyncGroupRequestAssignment::default()
            .with_member_id(text(member_id))
            .with_assignment(Bytes::from_static(ASSIGNMENT))]
    } else {
        Vec::new()
    };
    SyncGroupRequest::default()
        .with_group_id(GroupId(text(GROUP)))
        .with_generation_id(generation)
        .with_member_id(text(member_id))
        .with_protocol_type(Some(text("consumer")))
        .with_protocol_name(Some(text("range")))
        .with_assignments(assignments)
}

pub async fn sync(fixture: &Fixture, request: SyncGroupRequest) -> SyncGroupResponse {
    sync_group::handle(fixture.handle(), request).await
}

/// One consumer joined (KIP-394's two steps) and synced: [`GROUP`] is Stable in generation 1
/// with it as leader, and the log holds nothing yet (its appends taken). Its member id.
pub async fn stable_member(fixture: &Fixture) -> String {
    let first = join(fixture, join_request(""), 5, 1).await;
    let member_id = first.member_id.to_string();
    let joined = join(fixture, join_request(&member_id), 5, 1).await;
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    let synced = sync(fixture, sync_request(&member_id, 1, true)).await;
    assert_eq!(synced.error_code, 0);
    let group = fixture.coordinator.group(GROUP).expect("group exists");
    assert_eq!(lock(&group).state(), GroupState::Stable);
    fixture.log.take_appended();
    member_id
}

/// The group metadata record of [`GROUP`] with `members`, as the log holds it.
pub fn group_record(
    generation: i32,
    protocol: Option<&str>,
    leader: Option<&str>,
    members: Vec<MemberMetadata>,
) -> Change {
    Change::Group {
        group: GROUP.into(),
        value: Some(GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation,
            protocol: protocol.map(str::to_string),
            leader: leader.map(str::to_string),
            current_state_timestamp_ms: START_MS,
            members,
        }),
    }
}

/// A member of [`join_request`]'s making, as a group record lists it.
pub fn member_record(member_id: &str, assignment: &'static [u8]) -> MemberMetadata {
    MemberMetadata {
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: client().client_id,
        client_host: client().host,
        rebalance_timeout_ms: 30_000,
        session_timeout_ms: 10_000,
        subscription: Bytes::from_static(SUBSCRIPTION),
        assignment: Bytes::from_static(assignment),
    }
}

/// A committed offset as the coordinator stores it: no leader epoch, committed at `at_ms`.
pub fn committed(offset: i64, metadata: &str, at_ms: i64) -> CommittedOffset {
    CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: metadata.into(),
        commit_timestamp_ms: at_ms,
    }
}

/// An offset record of [`GROUP`] for `orders-<partition>`.
pub fn offset_record(partition: i32, value: Option<CommittedOffset>) -> Change {
    Change::Offset {
        group: GROUP.into(),
        topic: "orders".into(),
        partition,
        value,
    }
}

/// [`GROUP`]'s committed offsets: ((topic, partition), offset).
pub fn offsets_held(fixture: &Fixture) -> Vec<((String, i32), i64)> {
    fixture
        .coordinator
        .group(GROUP)
        .map(|group| {
            lock(&group)
                .offsets
                .iter()
                .map(|(key, offset)| (key.clone(), offset.offset))
                .collect()
        })
        .unwrap_or_default()
}
