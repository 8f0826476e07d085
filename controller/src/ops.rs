//! The metadata operations a broker asks of the active controller, as one serializable enum, so the
//! same request runs in-process on a combined node and crosses the controller listener otherwise.

use serde::{Deserialize, Serialize};

use crate::controller::{
    Controller, CreatePartitionsSpec, CreateTopicSpec, CreatedTopic, Planned, TopicRef,
};
use crate::election::{elect_leaders, ElectionResult, ElectionType};
use crate::error::TopicError;
use crate::image::MetadataImage;
use crate::record::TopicId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerOp {
    /// `allow_internal` only for the broker's own requests (`__consumer_offsets`), never a client's.
    CreateTopics {
        topics: Vec<CreateTopicSpec>,
        validate_only: bool,
        allow_internal: bool,
    },
    DeleteTopics {
        topics: Vec<TopicRef>,
    },
    CreatePartitions {
        topics: Vec<CreatePartitionsSpec>,
        validate_only: bool,
    },
    /// `partitions: None` asks for every partition where an election is needed.
    ElectLeaders {
        election_type: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    },
}

/// Each operation's per-topic outcomes, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerReply {
    CreateTopics(Vec<Result<CreatedTopic, TopicError>>),
    DeleteTopics(Vec<Result<(String, TopicId), TopicError>>),
    CreatePartitions(Vec<Result<(), TopicError>>),
    /// Per partition rather than per topic: for a request naming none, the partitions the
    /// controller chose.
    ElectLeaders(Vec<ElectionResult>),
}

impl ControllerOp {
    /// How many topics the operation names (the length of its reply); for ElectLeaders, how
    /// many partitions it names (none when it asks for every partition).
    pub fn topic_count(&self) -> usize {
        match self {
            ControllerOp::CreateTopics { topics, .. } => topics.len(),
            ControllerOp::DeleteTopics { topics } => topics.len(),
            ControllerOp::CreatePartitions { topics, .. } => topics.len(),
            ControllerOp::ElectLeaders { partitions, .. } => {
                partitions.as_ref().map_or(0, Vec::len)
            }
        }
    }
}

impl Controller {
    /// Plans any operation against the committed image.
    pub fn plan(&mut self, image: &MetadataImage, op: &ControllerOp) -> Planned<ControllerReply> {
        match op {
            ControllerOp::CreateTopics {
                topics,
                validate_only,
                allow_internal: false,
            } => map(
                self.create_topics(image, topics, *validate_only),
                ControllerReply::CreateTopics,
            ),
            ControllerOp::CreateTopics {
                topics,
                allow_internal: true,
                ..
            } => map(
                self.create_internal_topics(image, topics),
                ControllerReply::CreateTopics,
            ),
            ControllerOp::DeleteTopics { topics } => map(
                self.delete_topics(image, topics),
                ControllerReply::DeleteTopics,
            ),
            ControllerOp::CreatePartitions {
                topics,
                validate_only,
            } => map(
                self.create_partitions(image, topics, *validate_only),
                ControllerReply::CreatePartitions,
            ),
            ControllerOp::ElectLeaders {
                election_type,
                partitions,
            } => map(
                elect_leaders(image, *election_type, partitions.as_deref()),
                ControllerReply::ElectLeaders,
            ),
        }
    }
}

fn map<T>(
    planned: Planned<T>,
    wrap: impl FnOnce(T) -> ControllerReply,
) -> Planned<ControllerReply> {
    Planned {
        records: planned.records,
        reply: wrap(planned.reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_and_replies_cross_the_wire_as_json() {
        let op = ControllerOp::CreateTopics {
            topics: vec![CreateTopicSpec {
                name: "orders".into(),
                num_partitions: 3,
                replication_factor: -1,
                assignments: vec![(0, vec![1, 2])],
                configs: vec![("retention.ms".into(), Some("1000".into()))],
            }],
            validate_only: false,
            allow_internal: false,
        };
        let json = serde_json::to_vec(&op).unwrap();
        assert_eq!(serde_json::from_slice::<ControllerOp>(&json).unwrap(), op);
        let reply = ControllerReply::DeleteTopics(vec![
            Ok(("a".into(), TopicId(u128::MAX))),
            Err(TopicError::UnknownTopicId),
            Err(TopicError::InvalidRequest("Duplicate topic name.".into())),
        ]);
        let json = serde_json::to_vec(&reply).unwrap();
        assert_eq!(
            serde_json::from_slice::<ControllerReply>(&json).unwrap(),
            reply
        );
        let op = ControllerOp::ElectLeaders {
            election_type: ElectionType::Unclean,
            partitions: Some(vec![("orders".into(), 3)]),
        };
        let json = serde_json::to_vec(&op).unwrap();
        assert_eq!(serde_json::from_slice::<ControllerOp>(&json).unwrap(), op);
        let reply = ControllerReply::ElectLeaders(vec![
            ("orders".into(), 3, Ok(())),
            (
                "orders".into(),
                4,
                Err(crate::ElectionError::EligibleLeadersNotAvailable),
            ),
        ]);
        let json = serde_json::to_vec(&reply).unwrap();
        assert_eq!(
            serde_json::from_slice::<ControllerReply>(&json).unwrap(),
            reply
        );
    }
}
