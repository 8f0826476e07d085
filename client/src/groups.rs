//! Consumer-group administration: find a group's coordinator, list, describe and delete groups,
//! fetch committed offsets and commit offsets as a "simple" (memberless) consumer.
//!
//! Every group request but ListGroups goes to the group's coordinator, found with FindCoordinator
//! (key type 0). COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE and NOT_COORDINATOR make
//! the client look the coordinator up again and retry, a bounded number of times.

use std::collections::BTreeMap;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest,
    GroupId, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Message, Request, StrBytes};

use crate::client::{BrokerInfo, Client};
use crate::connection::Connection;
use crate::error::{check, Error, Result};

/// FindCoordinator's key type for consumer groups.
const KEY_TYPE_GROUP: i8 = 0;
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NOT_COORDINATOR: i16 = 16;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
/// The protocol type of groups formed by Kafka consumers; their assignments are
/// `ConsumerProtocolAssignment`s.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// A line of `list_groups`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    /// Empty for brokers older than ListGroups v4.
    pub state: String,
    /// `consumer` for Kafka consumers, empty for groups that only ever committed offsets.
    pub protocol_type: String,
}

/// A group as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    /// Kafka's state names: `Empty`, `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Dead`.
    pub state: String,
    pub protocol_type: String,
    /// The chosen assignor (e.g. `range`); brokers report it only for Stable groups.
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

impl GroupDescription {
    /// Kafka describes a group it does not know as Dead, without an error.
    pub fn exists(&self) -> bool {
        self.state != "Dead"
    }
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Decoded from the member's assignment for `consumer` groups: topic → partitions, sorted.
    /// Empty when the broker sent no assignment (not Stable) or another protocol type.
    pub assignment: BTreeMap<String, Vec<i32>>,
}

/// Decodes a consumer's assignment bytes: a version (i16) followed by a
/// `ConsumerProtocolAssignment` in that version. Empty bytes are an empty assignment.
pub fn decode_consumer_assignment(bytes: &Bytes) -> Result<BTreeMap<String, Vec<i32>>> {
    let mut assignment = BTreeMap::new();
    if bytes.is_empty() {
        return Ok(assignment);
    }
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return Err(assignment_error("shorter than its version"));
    }
    // Newer versions only add fields, so read anything newer as the newest we know.
    let version = buf
        .get_i16()
        .clamp(0, ConsumerProtocolAssignment::VERSIONS.max);
    let decoded = ConsumerProtocolAssignment::decode(&mut buf, version)
        .map_err(|err| assignment_error(&err.to_string()))?;
    for topic in decoded.assigned_partitions {
        let partitions: &mut Vec<i32> = assignment.entry(topic.topic.0.to_string()).or_default();
        partitions.extend(topic.partitions);
        partitions.sort_unstable();
        partitions.dedup();
    }
    Ok(assignment)
}

fn assignment_error(detail: &str) -> Error {
    Error::Protocol {
        addr: "coordinator".to_owned(),
        detail: format!("a member's ConsumerProtocolAssignment does not decode: {detail}"),
    }
}

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_owned()))
}

fn coordinator_moved(code: i16) -> bool {
    matches!(
        code,
        COORDINATOR_LOAD_IN_PROGRESS | COORDINATOR_NOT_AVAILABLE | NOT_COORDINATOR
    )
}

impl Client {
    /// The broker coordinating `group`, by FindCoordinator (key type 0) on any broker.
    pub async fn find_coordinator(&mut self, group: &str) -> Result<BrokerInfo> {
        self.find_coordinator_of(KEY_TYPE_GROUP, group).await
    }

    /// The broker coordinating `key` of `key_type` (0 a group, 1 a transactional id).
    pub async fn find_coordinator_of(&mut self, key_type: i8, group: &str) -> Result<BrokerInfo> {
        let mut attempt = 0;
        loop {
            let connection = self.any_connection().await?;
            let version = connection.version_for::<FindCoordinatorRequest>()?;
            let key = StrBytes::from_string(group.to_owned());
            let request = FindCoordinatorRequest::default().with_key_type(key_type);
            let request = if version >= 4 {
                request.with_coordinator_keys(vec![key])
            } else {
                request.with_key(key)
            };
            let response = self.send_any(request).await?;
            let (code, message, node_id, host, port) = if version >= 4 {
                let Some(c) = response.coordinators.into_iter().next() else {
                    return Err(Error::Protocol {
                        addr: "broker".to_owned(),
                        detail: format!("FindCoordinator response has no result for {group}"),
                    });
                };
                (c.error_code, c.error_message, c.node_id, c.host, c.port)
            } else {
                (
                    response.error_code,
                    response.error_message,
                    response.node_id,
                    response.host,
                    response.port,
                )
            };
            if code != 0 && coordinator_moved(code) && attempt < self.config().retries_max {
                // The first lookup creates __consumer_offsets; its leaders take a moment.
                attempt += 1;
                tokio::time::sleep(self.config().retry_backoff).await;
                continue;
            }
            check(
                code,
                || format!("find the coordinator of {group}"),
                message.as_deref(),
            )?;
            return Ok(BrokerInfo {
                node_id: node_id.0,
                host: host.to_string(),
                port,
                rack: None,
            });
        }
    }

    /// The connection to `group`'s coordinator.
    async fn coordinator_connection(&mut self, group: &str) -> Result<&mut Connection> {
        let coordinator = self.find_coordinator(group).await?;
        let known = self
            .brokers()
            .get(&coordinator.node_id)
            .is_some_and(|b| b.addr() == coordinator.addr());
        if !known {
            self.metadata(Some(&[])).await?;
        }
        self.broker_connection(coordinator.node_id).await
    }

    /// Sends a request built for the negotiated version to `group`'s coordinator, looking the
    /// coordinator up again (bounded) while `error_of` reports that it moved or is loading.
    async fn send_coordinator<R: Request>(
        &mut self,
        group: &str,
        build: impl Fn(i16) -> R,
        error_of: impl Fn(&R::Response) -> i16,
    ) -> Result<R::Response> {
        let mut attempt = 0;
        loop {
            let connection = self.coordinator_connection(group).await?;
            let version = connection.version_for::<R>()?;
            let response = connection.send(build(version)).await?;
            let code = error_of(&response);
            if !coordinator_moved(code) || attempt >= self.config().retries_max {
                return Ok(response);
            }
            attempt += 1;
            tokio::time::sleep(self.config().retry_backoff).await;
        }
    }

    /// Every group in the cluster (each broker lists the groups it coordinates), sorted by id.
    pub async fn list_groups(&mut self) -> Result<Vec<GroupListing>> {
        self.metadata(Some(&[])).await?;
        let node_ids: Vec<i32> = self.brokers().keys().copied().collect();
        let mut groups: BTreeMap<String, GroupListing> = BTreeMap::new();
        for node_id in node_ids {
            let response = self
                .broker_connection(node_id)
                .await?
                .send(ListGroupsRequest::default())
                .await?;
            check(
                response.error_code,
                || format!("list groups on broker {node_id}"),
                None,
            )?;
            for g in response.groups {
                let listing = GroupListing {
                    group_id: g.group_id.0.to_string(),
                    state: g.group_state.to_string(),
                    protocol_type: g.protocol_type.to_string(),
                };
                groups.insert(listing.group_id.clone(), listing);
            }
        }
        Ok(groups.into_values().collect())
    }

    /// A group's state and members (Dead for a group the coordinator does not know).
    pub async fn describe_group(&mut self, group: &str) -> Result<GroupDescription> {
        let response = self
            .send_coordinator(
                group,
                |_| DescribeGroupsRequest::default().with_groups(vec![group_id(group)]),
                |r| r.groups.first().map_or(0, |g| g.error_code),
            )
            .await?;
        let Some(described) = response.groups.into_iter().next() else {
            return Err(Error::Protocol {
                addr: "coordinator".to_owned(),
                detail: format!("DescribeGroups response has no result for {group}"),
            });
        };
        check(
            described.error_code,
            || format!("describe group {group}"),
            described.error_message.as_deref(),
        )?;
        let protocol_type = described.protocol_type.to_string();
        let members = described
            .members
            .into_iter()
            .map(|m| {
                let assignment = if protocol_type == CONSUMER_PROTOCOL_TYPE {
                    decode_consumer_assignment(&m.member_assignment)?
                } else {
                    BTreeMap::new()
                };
                Ok(GroupMember {
                    member_id: m.member_id.to_string(),
                    group_instance_id: m.group_instance_id.map(|i| i.to_string()),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                    assignment,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GroupDescription {
            group_id: described.group_id.0.to_string(),
            state: described.group_state.to_string(),
            protocol_type,
            protocol: described.protocol_data.to_string(),
            members,
        })
    }

    /// Deletes an Empty group and its committed offsets: NON_EMPTY_GROUP while it has members,
    /// GROUP_ID_NOT_FOUND if there is no such group.
    pub async fn delete_group(&mut self, group: &str) -> Result<()> {
        let response = self
            .send_coordinator(
                group,
                |_| DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]),
                |r| r.results.first().map_or(0, |g| g.error_code),
            )
            .await?;
        let result = response
            .results
            .iter()
            .find(|r| r.group_id.0.as_str() == group);
        match result {
            Some(r) => check(r.error_code, || format!("delete group {group}"), None),
            None => Err(Error::Protocol {
                addr: "coordinator".to_owned(),
                detail: format!("DeleteGroups response has no result for {group}"),
            }),
        }
    }

    /// Every offset `group` committed: (topic, partition) → offset.
    pub async fn committed_offsets(&mut self, group: &str) -> Result<BTreeMap<(String, i32), i64>> {
        let response = self
            .send_coordinator(
                group,
                |version| {
                    if version >= 8 {
                        OffsetFetchRequest::default().with_groups(vec![
                            OffsetFetchRequestGroup::default()
                                .with_group_id(group_id(group))
                                .with_member_epoch(-1)
                                .with_topics(None),
                        ])
                    } else {
                        OffsetFetchRequest::default()
                            .with_group_id(group_id(group))
                            .with_topics(None)
                    }
                },
                |r| match r.groups.first() {
                    Some(g) => g.error_code,
                    None => r.error_code,
                },
            )
            .await?;
        let mut offsets = BTreeMap::new();
        // (topic, partition, offset, partition error)
        let mut answers: Vec<(String, i32, i64, i16)> = Vec::new();
        if let Some(g) = response.groups.into_iter().next() {
            check(
                g.error_code,
                || format!("fetch the offsets of group {group}"),
                None,
            )?;
            for t in g.topics {
                for p in t.partitions {
                    answers.push((
                        t.name.0.to_string(),
                        p.partition_index,
                        p.committed_offset,
                        p.error_code,
                    ));
                }
            }
        } else {
            check(
                response.error_code,
                || format!("fetch the offsets of group {group}"),
                None,
            )?;
            for t in response.topics {
                for p in t.partitions {
                    answers.push((
                        t.name.0.to_string(),
                        p.partition_index,
                        p.committed_offset,
                        p.error_code,
                    ));
                }
            }
        }
        for (topic, partition, offset, code) in answers {
            check(
                code,
                || format!("fetch the offset of group {group} for {topic}-{partition}"),
                None,
            )?;
            if offset >= 0 {
                offsets.insert((topic, partition), offset);
            }
        }
        Ok(offsets)
    }

    /// Commits `offsets` (partition → offset) of `topic` for `group` as a simple consumer:
    /// generation -1 and no member id, which a coordinator accepts only while the group has no
    /// members.
    pub async fn commit_offsets(
        &mut self,
        group: &str,
        topic: &str,
        offsets: &BTreeMap<i32, i64>,
    ) -> Result<()> {
        let partitions: Vec<OffsetCommitRequestPartition> = offsets
            .iter()
            .map(|(partition, offset)| {
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*partition)
                    .with_committed_offset(*offset)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(Some(StrBytes::default()))
            })
            .collect();
        let request = OffsetCommitRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::default())
            .with_retention_time_ms(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(partitions)]);
        let response = self
            .send_coordinator(
                group,
                |_| request.clone(),
                |r| {
                    r.topics
                        .iter()
                        .flat_map(|t| t.partitions.iter())
                        .map(|p| p.error_code)
                        .find(|code| coordinator_moved(*code))
                        .unwrap_or(0)
                },
            )
            .await?;
        for partition in offsets.keys() {
            let code = response
                .topics
                .iter()
                .filter(|t| t.name.0.as_str() == topic)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == *partition)
                .map(|p| p.error_code);
            match code {
                Some(code) => check(
                    code,
                    || format!("commit the offset of group {group} for {topic}-{partition}"),
                    None,
                )?,
                None => {
                    return Err(Error::Protocol {
                        addr: "coordinator".to_owned(),
                        detail: format!(
                            "OffsetCommit response has no result for {topic}-{partition}"
                        ),
                    })
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::Encodable;

    fn assignment_bytes(version: i16, topics: &[(&str, &[i32])]) -> Bytes {
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
            topics
                .iter()
                .map(|(name, partitions)| {
                    TopicPartition::default()
                        .with_topic(TopicName(StrBytes::from_string((*name).to_owned())))
                        .with_partitions(partitions.to_vec())
                })
                .collect(),
        );
        let mut buf = BytesMut::new();
        buf.put_i16(version);
        assignment.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn consumer_assignments_decode_in_every_version() {
        for version in 0..=ConsumerProtocolAssignment::VERSIONS.max {
            let bytes = assignment_bytes(version, &[("orders", &[2, 0]), ("audit", &[1])]);
            let decoded = decode_consumer_assignment(&bytes).unwrap();
            assert_eq!(
                decoded,
                BTreeMap::from([
                    ("audit".to_owned(), vec![1]),
                    ("orders".to_owned(), vec![0, 2]),
                ]),
                "v{version}"
            );
        }
    }

    #[test]
    fn empty_and_truncated_assignments() {
        assert!(decode_consumer_assignment(&Bytes::new())
            .unwrap()
            .is_empty());
        assert!(decode_consumer_assignment(&Bytes::from_static(&[0])).is_err());
        let bytes = assignment_bytes(1, &[("orders", &[0, 1, 2])]);
        assert!(decode_consumer_assignment(&bytes.slice(..bytes.len() - 3)).is_err());
    }
}
