use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::alter_partition_request::{
    BrokerState, PartitionData as AlterPartitionData, TopicData as AlterPartitionTopic,
};
use kafka_protocol::messages::broker_registration_request::{Feature, Listener};
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions as ElectLeadersTopicPartitions;
use kafka_protocol::messages::fetch_request::{
    FetchPartition, FetchTopic, ForgottenTopic, ReplicaState,
};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    alter_replica_log_dirs_request, describe_log_dirs_request, describe_topic_partitions_request,
    AlterReplicaLogDirsRequest, DescribeLogDirsRequest, DescribeTopicPartitionsRequest,
    GetTelemetrySubscriptionsRequest, PushTelemetryRequest,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, DescribeProducersRequest,
    DescribeTransactionsRequest, EndTxnRequest, InitProducerIdRequest, ListTransactionsRequest,
    ProducerId, TxnOffsetCommitRequest, WriteTxnMarkersRequest,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterPartitionRequest, ApiVersionsRequest, BrokerHeartbeatRequest,
    BrokerId, BrokerRegistrationRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteRecordsRequest, DeleteTopicsRequest, DescribeConfigsRequest, FetchRequest,
    IncrementalAlterConfigsRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest,
    RequestHeader, RequestKind, TopicName, TransactionalId, UnregisterBrokerRequest,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, ListPartitionReassignmentsRequest,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeClusterRequest, DescribeGroupsRequest, DescribeQuorumRequest,
    ElectLeadersRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest, OffsetDeleteRequest,
    OffsetFetchRequest, OffsetForLeaderEpochRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use proptest::prelude::*;

use super::*;
use crate::api_versions::{self, SupportedApi, CONTROLLER_APIS, SUPPORTED_APIS};
use crate::batch::testing::simple_batch;
use crate::codec::{
    decode_controller_request, decode_request, header_prefix, DecodeError, Request,
};
use crate::legacy;

fn text(value: &'static str) -> StrBytes {
    StrBytes::from_static_str(value)
}

fn topic(name: &'static str) -> TopicName {
    TopicName(text(name))
}

fn group(name: &'static str) -> GroupId {
    GroupId(text(name))
}

fn brokers(ids: &[i32]) -> Vec<BrokerId> {
    ids.iter().copied().map(BrokerId).collect()
}

/// kafka-protocol's `Uuid` is the uuid crate's, which this crate does not name.
fn uuid<T: std::str::FromStr<Err: std::fmt::Debug>>(value: &str) -> T {
    value.parse().expect("a valid uuid")
}

fn flexible_since(api_key: ApiKey) -> i16 {
    REQUESTS
        .iter()
        .find(|layout| layout.api_key == api_key)
        .map(|layout| layout.flexible_since)
        .unwrap_or_else(|| panic!("no layout for {api_key:?}"))
}

/// A well-formed request with several elements per array, nested arrays, strings, nullable fields
/// either set or null (`nulls`), and unknown tagged fields on every struct in flexible versions.
fn sample_body(api_key: ApiKey, v: i16, nulls: bool) -> RequestKind {
    let tags = if v >= flexible_since(api_key) {
        BTreeMap::from([
            (5, Bytes::new()),
            (101, Bytes::from_static(b"x")),
            (20_000, Bytes::from_static(b"a tagged value")),
        ])
    } else {
        BTreeMap::new()
    };
    let nullable = |value: StrBytes| (!nulls).then_some(value);
    match api_key {
        ApiKey::Produce => {
            // Topics by name before v13, by id from it (KIP-516).
            let topic_data = |name: &'static str, id: &str| {
                if v >= 13 {
                    TopicProduceData::default().with_topic_id(uuid(id))
                } else {
                    TopicProduceData::default().with_name(topic(name))
                }
            };
            let records = Bytes::from(simple_batch(0, 3, 1_700_000_000_000, 64));
            RequestKind::Produce(
                ProduceRequest::default()
                    .with_transactional_id(nullable(text("txn-1")).map(TransactionalId))
                    .with_acks(-1)
                    .with_timeout_ms(30_000)
                    .with_topic_data(vec![
                        topic_data("orders", "6ba7b818-9dad-11d1-80b4-00c04fd430c8")
                            .with_partition_data(vec![
                                PartitionProduceData::default()
                                    .with_index(0)
                                    .with_records(Some(records.clone()))
                                    .with_unknown_tagged_fields(tags.clone()),
                                PartitionProduceData::default()
                                    .with_index(1)
                                    .with_records((!nulls).then(|| records.clone())),
                            ])
                            .with_unknown_tagged_fields(tags.clone()),
                        topic_data("payments", "6ba7b819-9dad-11d1-80b4-00c04fd430c8")
                            .with_partition_data(vec![PartitionProduceData::default()
                                .with_index(7)
                                .with_records(Some(records))]),
                    ])
                    .with_unknown_tagged_fields(tags),
            )
        }
        ApiKey::Fetch => {
            let partition = |index: i32| {
                let mut partition = FetchPartition::default()
                    .with_partition(index)
                    .with_fetch_offset(1_000 + i64::from(index))
                    .with_partition_max_bytes(1 << 20)
                    .with_unknown_tagged_fields(tags.clone());
                if v >= 5 {
                    partition = partition.with_log_start_offset(10);
                }
                if v >= 9 {
                    partition = partition.with_current_leader_epoch(4);
                }
                if v >= 12 {
                    partition = partition.with_last_fetched_epoch(3);
                }
                if v >= 17 && !nulls {
                    partition = partition
                        .with_replica_directory_id(uuid("6ba7b812-9dad-11d1-80b4-00c04fd430c8"));
                }
                if v >= 18 && !nulls {
                    partition = partition.with_high_watermark(900);
                }
                partition
            };
            // Topics by name before v13, by id from it (KIP-516).
            let fetch_topic = |name: &'static str, id: &str| {
                if v >= 13 {
                    FetchTopic::default().with_topic_id(uuid(id))
                } else {
                    FetchTopic::default().with_topic(topic(name))
                }
            };
            let forgotten_topic = |name: &'static str, id: &str| {
                if v >= 13 {
                    ForgottenTopic::default().with_topic_id(uuid(id))
                } else {
                    ForgottenTopic::default().with_topic(topic(name))
                }
            };
            let mut fetch = FetchRequest::default()
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_max_bytes(50 << 20)
                .with_isolation_level(1)
                .with_topics(vec![
                    fetch_topic("orders", "6ba7b813-9dad-11d1-80b4-00c04fd430c8")
                        .with_partitions(vec![partition(0), partition(1), partition(2)])
                        .with_unknown_tagged_fields(tags.clone()),
                    fetch_topic("payments", "6ba7b814-9dad-11d1-80b4-00c04fd430c8")
                        .with_partitions(vec![partition(5)]),
                ])
                .with_unknown_tagged_fields(tags.clone());
            // A follower names itself in replica_state from v15 (KIP-903).
            fetch = if v >= 15 {
                fetch.with_replica_state(
                    ReplicaState::default()
                        .with_replica_id(BrokerId(2))
                        .with_replica_epoch(if nulls { -1 } else { 77 }),
                )
            } else {
                fetch.with_replica_id(BrokerId(-1))
            };
            if v >= 7 {
                fetch = fetch
                    .with_session_id(17)
                    .with_session_epoch(2)
                    .with_forgotten_topics_data(vec![
                        forgotten_topic("old", "6ba7b815-9dad-11d1-80b4-00c04fd430c8")
                            .with_partitions(vec![1, 2, 3])
                            .with_unknown_tagged_fields(tags.clone()),
                        forgotten_topic("older", "6ba7b816-9dad-11d1-80b4-00c04fd430c8"),
                    ]);
            }
            if v >= 11 {
                fetch = fetch.with_rack_id(text("rack-a"));
            }
            if v >= 12 {
                fetch = fetch.with_cluster_id(nullable(text("cluster-1")));
            }
            RequestKind::Fetch(fetch)
        }
        ApiKey::ListOffsets => {
            let partition = |index: i32, timestamp: i64| {
                let partition = ListOffsetsPartition::default()
                    .with_partition_index(index)
                    .with_timestamp(timestamp)
                    .with_unknown_tagged_fields(tags.clone());
                if v >= 4 {
                    partition.with_current_leader_epoch(6)
                } else {
                    partition
                }
            };
            RequestKind::ListOffsets(
                ListOffsetsRequest::default()
                    .with_timeout_ms(if v >= 10 { 2_500 } else { 0 })
                    .with_replica_id(BrokerId(-1))
                    .with_isolation_level(if v >= 2 { 1 } else { 0 })
                    .with_topics(vec![
                        ListOffsetsTopic::default()
                            .with_name(topic("orders"))
                            .with_partitions(vec![
                                partition(0, -1),
                                partition(1, -2),
                                partition(2, 1_700_000_000_000),
                                // MAX_TIMESTAMP (v7+), EARLIEST_LOCAL (v8+), LATEST_TIERED (v9+).
                                partition(3, -3),
                                partition(4, -4),
                                partition(5, -5),
                            ])
                            .with_unknown_tagged_fields(tags.clone()),
                        ListOffsetsTopic::default()
                            .with_name(topic("payments"))
                            .with_partitions(vec![partition(0, -1)]),
                    ])
                    .with_unknown_tagged_fields(tags),
            )
        }
        ApiKey::Metadata => {
            let named = |name: &'static str, id: &str| {
                let topic = MetadataRequestTopic::default()
                    .with_name(Some(topic(name)))
                    .with_unknown_tagged_fields(tags.clone());
                if v >= 10 {
                    topic.with_topic_id(id.parse().expect("a valid uuid"))
                } else {
                    topic
                }
            };
            // Null means "all topics" from v1; v0 says that with an empty array.
            let topics = match (nulls, v) {
                (true, 0) => Some(Vec::new()),
                (true, _) => None,
                (false, _) => Some(vec![
                    named("orders", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
                    named("payments", "6ba7b811-9dad-11d1-80b4-00c04fd430c8"),
                    named("audit", "00000000-0000-0000-0000-000000000000"),
                ]),
            };
            let mut metadata = MetadataRequest::default()
                .with_topics(topics)
                .with_unknown_tagged_fields(tags);
            if v >= 4 {
                metadata = metadata.with_allow_auto_topic_creation(false);
            }
            if (8..=10).contains(&v) {
                metadata = metadata.with_include_cluster_authorized_operations(true);
            }
            if v >= 8 {
                metadata = metadata.with_include_topic_authorized_operations(true);
            }
            RequestKind::Metadata(metadata)
        }
        ApiKey::ApiVersions => {
            let mut api_versions = ApiVersionsRequest::default().with_unknown_tagged_fields(tags);
            if v >= 3 {
                api_versions = api_versions
                    .with_client_software_name(text("skald-test"))
                    .with_client_software_version(text("1.2.3"));
            }
            RequestKind::ApiVersions(api_versions)
        }
        ApiKey::CreateTopics => RequestKind::CreateTopics(
            CreateTopicsRequest::default()
                .with_topics(vec![
                    CreatableTopic::default()
                        .with_name(topic("orders"))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                        .with_assignments(vec![
                            CreatableReplicaAssignment::default()
                                .with_partition_index(0)
                                .with_broker_ids(brokers(&[1, 2, 3]))
                                .with_unknown_tagged_fields(tags.clone()),
                            CreatableReplicaAssignment::default()
                                .with_partition_index(1)
                                .with_broker_ids(brokers(&[2, 3, 1])),
                        ])
                        .with_configs(vec![
                            CreatableTopicConfig::default()
                                .with_name(text("retention.ms"))
                                .with_value(Some(text("86400000")))
                                .with_unknown_tagged_fields(tags.clone()),
                            CreatableTopicConfig::default()
                                .with_name(text("cleanup.policy"))
                                .with_value(nullable(text("compact"))),
                        ])
                        .with_unknown_tagged_fields(tags.clone()),
                    CreatableTopic::default()
                        .with_name(topic("payments"))
                        .with_num_partitions(6)
                        .with_replication_factor(3),
                ])
                .with_timeout_ms(5_000)
                .with_validate_only(nulls)
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::DeleteTopics => {
            let mut delete = DeleteTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_unknown_tagged_fields(tags.clone());
            if v >= 6 {
                delete = delete.with_topics(vec![
                    DeleteTopicState::default()
                        .with_name(Some(topic("orders")))
                        .with_unknown_tagged_fields(tags),
                    DeleteTopicState::default()
                        .with_name(nullable(text("payments")).map(TopicName))
                        .with_topic_id(
                            "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
                                .parse()
                                .expect("a valid uuid"),
                        ),
                ]);
            } else {
                delete = delete.with_topic_names(vec![
                    topic("orders"),
                    topic("payments"),
                    topic("audit"),
                ]);
            }
            RequestKind::DeleteTopics(delete)
        }
        ApiKey::DeleteRecords => RequestKind::DeleteRecords(
            DeleteRecordsRequest::default()
                .with_topics(vec![
                    DeleteRecordsTopic::default()
                        .with_name(topic("orders"))
                        .with_partitions(vec![
                            DeleteRecordsPartition::default()
                                .with_partition_index(0)
                                .with_offset(42)
                                .with_unknown_tagged_fields(tags.clone()),
                            DeleteRecordsPartition::default()
                                .with_partition_index(3)
                                .with_offset(-1),
                        ])
                        .with_unknown_tagged_fields(tags.clone()),
                    DeleteRecordsTopic::default()
                        .with_name(topic("payments"))
                        .with_partitions(Vec::new()),
                ])
                .with_timeout_ms(if nulls { 0 } else { 30_000 })
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::OffsetForLeaderEpoch => {
            // No nullable fields: `nulls` asks as a consumer that knows no current epoch instead.
            let partition = |index: i32, leader_epoch: i32| {
                OffsetForLeaderPartition::default()
                    .with_partition(index)
                    .with_current_leader_epoch(if nulls { -1 } else { 7 })
                    .with_leader_epoch(leader_epoch)
            };
            // v2 has no replica_id and decodes it as -2; from v3 a consumer sends -1, a follower
            // its broker id.
            let replica_id = match (v, nulls) {
                (2, _) => -2,
                (_, true) => -1,
                (_, false) => 3,
            };
            RequestKind::OffsetForLeaderEpoch(
                OffsetForLeaderEpochRequest::default()
                    .with_replica_id(BrokerId(replica_id))
                    .with_topics(vec![
                        OffsetForLeaderTopic::default()
                            .with_topic(topic("orders"))
                            .with_partitions(vec![
                                partition(0, 5).with_unknown_tagged_fields(tags.clone()),
                                partition(1, 0),
                                partition(2, 7),
                            ])
                            .with_unknown_tagged_fields(tags.clone()),
                        OffsetForLeaderTopic::default()
                            .with_topic(topic("payments"))
                            .with_partitions(Vec::new()),
                    ])
                    .with_unknown_tagged_fields(tags),
            )
        }
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(
            DescribeConfigsRequest::default()
                .with_resources(vec![
                    DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(text("orders"))
                        .with_configuration_keys(
                            (!nulls).then(|| vec![text("retention.ms"), text("cleanup.policy")]),
                        )
                        .with_unknown_tagged_fields(tags.clone()),
                    DescribeConfigsResource::default()
                        .with_resource_type(4)
                        .with_resource_name(text("1"))
                        .with_configuration_keys(Some(Vec::new())),
                ])
                .with_include_synonyms(true)
                .with_include_documentation(v >= 3)
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::AlterConfigs => {
            use kafka_protocol::messages::alter_configs_request::{
                AlterConfigsResource, AlterableConfig,
            };
            RequestKind::AlterConfigs(
                AlterConfigsRequest::default()
                    .with_resources(vec![
                        AlterConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(text("orders"))
                            .with_configs(vec![
                                AlterableConfig::default()
                                    .with_name(text("retention.ms"))
                                    .with_value(Some(text("1000")))
                                    .with_unknown_tagged_fields(tags.clone()),
                                AlterableConfig::default()
                                    .with_name(text("cleanup.policy"))
                                    .with_value((!nulls).then(|| text("compact"))),
                            ])
                            .with_unknown_tagged_fields(tags.clone()),
                        AlterConfigsResource::default()
                            .with_resource_type(4)
                            .with_resource_name(text("")),
                    ])
                    .with_validate_only(true)
                    .with_unknown_tagged_fields(tags),
            )
        }
        ApiKey::IncrementalAlterConfigs => {
            use kafka_protocol::messages::incremental_alter_configs_request::{
                AlterConfigsResource, AlterableConfig,
            };
            RequestKind::IncrementalAlterConfigs(
                IncrementalAlterConfigsRequest::default()
                    .with_resources(vec![
                        AlterConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(text("orders"))
                            .with_configs(vec![
                                AlterableConfig::default()
                                    .with_name(text("retention.ms"))
                                    .with_config_operation(0)
                                    .with_value(Some(text("1000")))
                                    .with_unknown_tagged_fields(tags.clone()),
                                AlterableConfig::default()
                                    .with_name(text("segment.bytes"))
                                    .with_config_operation(1)
                                    .with_value((!nulls).then(|| text("x"))),
                            ])
                            .with_unknown_tagged_fields(tags.clone()),
                        AlterConfigsResource::default()
                            .with_resource_type(4)
                            .with_resource_name(text("1")),
                    ])
                    .with_validate_only(false)
                    .with_unknown_tagged_fields(tags),
            )
        }
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(
            CreatePartitionsRequest::default()
                .with_topics(vec![
                    CreatePartitionsTopic::default()
                        .with_name(topic("orders"))
                        .with_count(6)
                        .with_assignments((!nulls).then(|| {
                            vec![
                                CreatePartitionsAssignment::default()
                                    .with_broker_ids(brokers(&[1, 2]))
                                    .with_unknown_tagged_fields(tags.clone()),
                                CreatePartitionsAssignment::default()
                                    .with_broker_ids(brokers(&[2, 3])),
                            ]
                        }))
                        .with_unknown_tagged_fields(tags.clone()),
                    CreatePartitionsTopic::default()
                        .with_name(topic("payments"))
                        .with_count(3)
                        .with_assignments(Some(Vec::new())),
                ])
                .with_timeout_ms(5_000)
                .with_validate_only(true)
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(
            OffsetCommitRequest::default()
                .with_group_id(group("billing"))
                .with_generation_id_or_member_epoch(3)
                .with_member_id(text("member-1"))
                .with_group_instance_id(if v >= 7 {
                    nullable(text("instance-1"))
                } else {
                    None
                })
                // v1 has no retention time: its rewrite as v2 (crate::legacy) says -1.
                .with_retention_time_ms(if (2..=4).contains(&v) { 60_000 } else { -1 })
                .with_topics(vec![
                    OffsetCommitRequestTopic::default()
                        .with_name(topic("orders"))
                        .with_partitions(vec![
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(42)
                                .with_committed_leader_epoch(if v >= 6 { 5 } else { -1 })
                                .with_committed_metadata(nullable(text("meta")))
                                .with_unknown_tagged_fields(tags.clone()),
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(3)
                                .with_committed_offset(7),
                        ])
                        .with_unknown_tagged_fields(tags.clone()),
                    OffsetCommitRequestTopic::default()
                        .with_name(topic("payments"))
                        .with_partitions(Vec::new()),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::OffsetFetch => {
            let fetch = OffsetFetchRequest::default().with_require_stable(v >= 7 && !nulls);
            let fetch = if v >= 8 {
                fetch.with_groups(vec![
                    OffsetFetchRequestGroup::default()
                        .with_group_id(group("billing"))
                        .with_member_id(if v >= 9 {
                            nullable(text("member-1"))
                        } else {
                            None
                        })
                        .with_member_epoch(if v >= 9 { 4 } else { -1 })
                        .with_topics((!nulls).then(|| {
                            vec![
                                OffsetFetchRequestTopics::default()
                                    .with_name(topic("orders"))
                                    .with_partition_indexes(vec![0, 1, 2])
                                    .with_unknown_tagged_fields(tags.clone()),
                                OffsetFetchRequestTopics::default()
                                    .with_name(topic("payments"))
                                    .with_partition_indexes(Vec::new()),
                            ]
                        }))
                        .with_unknown_tagged_fields(tags.clone()),
                    OffsetFetchRequestGroup::default()
                        .with_group_id(group("audit"))
                        .with_topics(Some(Vec::new())),
                ])
            } else {
                fetch
                    .with_group_id(group("billing"))
                    .with_topics((!nulls || v < 2).then(|| {
                        vec![
                            OffsetFetchRequestTopic::default()
                                .with_name(topic("orders"))
                                .with_partition_indexes(vec![0, 1, 2])
                                .with_unknown_tagged_fields(tags.clone()),
                            OffsetFetchRequestTopic::default()
                                .with_name(topic("payments"))
                                .with_partition_indexes(Vec::new()),
                        ]
                    }))
            };
            RequestKind::OffsetFetch(fetch.with_unknown_tagged_fields(tags))
        }
        ApiKey::FindCoordinator => {
            let find = FindCoordinatorRequest::default().with_key_type(if v >= 1 { 1 } else { 0 });
            let find = if v >= 4 {
                find.with_coordinator_keys(if nulls {
                    Vec::new()
                } else {
                    vec![text("billing"), text("audit")]
                })
            } else {
                find.with_key(text("billing"))
            };
            RequestKind::FindCoordinator(find.with_unknown_tagged_fields(tags))
        }
        ApiKey::JoinGroup => RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(group("billing"))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(if v >= 1 { 30_000 } else { -1 })
                .with_member_id(text("member-1"))
                .with_group_instance_id(if v >= 5 {
                    nullable(text("instance-1"))
                } else {
                    None
                })
                .with_protocol_type(text("consumer"))
                .with_protocols(vec![
                    JoinGroupRequestProtocol::default()
                        .with_name(text("range"))
                        .with_metadata(Bytes::from_static(b"\0\x01subscription"))
                        .with_unknown_tagged_fields(tags.clone()),
                    JoinGroupRequestProtocol::default()
                        .with_name(text("roundrobin"))
                        .with_metadata(Bytes::new()),
                ])
                .with_reason(if v >= 8 {
                    nullable(text("rejoin"))
                } else {
                    None
                })
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::Heartbeat => RequestKind::Heartbeat(
            HeartbeatRequest::default()
                .with_group_id(group("billing"))
                .with_generation_id(3)
                .with_member_id(text("member-1"))
                .with_group_instance_id(if v >= 3 {
                    nullable(text("instance-1"))
                } else {
                    None
                })
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::LeaveGroup => {
            let leave = LeaveGroupRequest::default().with_group_id(group("billing"));
            let leave = if v >= 3 {
                leave.with_members(vec![
                    MemberIdentity::default()
                        .with_member_id(text("member-1"))
                        .with_group_instance_id(nullable(text("instance-1")))
                        .with_reason(if v >= 5 { nullable(text("bye")) } else { None })
                        .with_unknown_tagged_fields(tags.clone()),
                    MemberIdentity::default().with_member_id(text("member-2")),
                ])
            } else {
                leave.with_member_id(text("member-1"))
            };
            RequestKind::LeaveGroup(leave.with_unknown_tagged_fields(tags))
        }
        ApiKey::SyncGroup => RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(group("billing"))
                .with_generation_id(3)
                .with_member_id(text("member-1"))
                .with_group_instance_id(if v >= 3 {
                    nullable(text("instance-1"))
                } else {
                    None
                })
                .with_protocol_type(if v >= 5 {
                    nullable(text("consumer"))
                } else {
                    None
                })
                .with_protocol_name(if v >= 5 {
                    nullable(text("range"))
                } else {
                    None
                })
                .with_assignments(vec![
                    SyncGroupRequestAssignment::default()
                        .with_member_id(text("member-1"))
                        .with_assignment(Bytes::from_static(b"assignment"))
                        .with_unknown_tagged_fields(tags.clone()),
                    SyncGroupRequestAssignment::default()
                        .with_member_id(text("member-2"))
                        .with_assignment(Bytes::new()),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(
            DescribeGroupsRequest::default()
                .with_groups(vec![group("billing"), group("audit")])
                .with_include_authorized_operations(v >= 3 && !nulls)
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::ListGroups => RequestKind::ListGroups(
            ListGroupsRequest::default()
                .with_states_filter(if v >= 4 {
                    vec![text("Stable"), text("Empty")]
                } else {
                    Vec::new()
                })
                .with_types_filter(if v >= 5 {
                    vec![text("classic")]
                } else {
                    Vec::new()
                })
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(
            DeleteGroupsRequest::default()
                .with_groups_names(vec![group("billing"), group("audit")])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::ElectLeaders => RequestKind::ElectLeaders(
            ElectLeadersRequest::default()
                // v0 has no election type: it is always preferred (0).
                .with_election_type(if v >= 1 && !nulls { 1 } else { 0 })
                .with_topic_partitions((!nulls).then(|| {
                    vec![
                        ElectLeadersTopicPartitions::default()
                            .with_topic(topic("orders"))
                            .with_partitions(vec![0, 4, 7])
                            .with_unknown_tagged_fields(tags.clone()),
                        ElectLeadersTopicPartitions::default()
                            .with_topic(topic("payments"))
                            .with_partitions(Vec::new()),
                    ]
                }))
                .with_timeout_ms(30_000)
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::AlterPartitionReassignments => RequestKind::AlterPartitionReassignments(
            AlterPartitionReassignmentsRequest::default()
                .with_timeout_ms(60_000)
                // v0 has no flag: it decodes as true.
                .with_allow_replication_factor_change(v == 0 || nulls)
                .with_topics(vec![
                    ReassignableTopic::default()
                        .with_name(topic("orders"))
                        .with_partitions(vec![
                            ReassignablePartition::default()
                                .with_partition_index(0)
                                .with_replicas(Some(vec![BrokerId(2), BrokerId(3), BrokerId(4)]))
                                .with_unknown_tagged_fields(tags.clone()),
                            // A null replica list cancels.
                            ReassignablePartition::default().with_partition_index(1),
                        ])
                        .with_unknown_tagged_fields(tags.clone()),
                    ReassignableTopic::default()
                        .with_name(topic("payments"))
                        .with_partitions(Vec::new()),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::ListPartitionReassignments => RequestKind::ListPartitionReassignments(
            ListPartitionReassignmentsRequest::default()
                .with_timeout_ms(60_000)
                .with_topics((!nulls).then(|| {
                    vec![
                        ListPartitionReassignmentsTopics::default()
                            .with_name(topic("orders"))
                            .with_partition_indexes(vec![0, 1, 2])
                            .with_unknown_tagged_fields(tags.clone()),
                        ListPartitionReassignmentsTopics::default()
                            .with_name(topic("payments"))
                            .with_partition_indexes(Vec::new()),
                    ]
                }))
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(
            OffsetDeleteRequest::default()
                .with_group_id(group("billing"))
                .with_topics(vec![
                    OffsetDeleteRequestTopic::default()
                        .with_name(topic("orders"))
                        .with_partitions(vec![
                            OffsetDeleteRequestPartition::default().with_partition_index(0),
                            OffsetDeleteRequestPartition::default().with_partition_index(4),
                        ]),
                    OffsetDeleteRequestTopic::default()
                        .with_name(topic("payments"))
                        .with_partitions(Vec::new()),
                ]),
        ),
        ApiKey::DescribeQuorum => RequestKind::DescribeQuorum(
            DescribeQuorumRequest::default()
                .with_topics(vec![
                    TopicData::default()
                        .with_topic_name(topic("__cluster_metadata"))
                        .with_partitions(vec![
                            PartitionData::default()
                                .with_partition_index(0)
                                .with_unknown_tagged_fields(tags.clone()),
                            PartitionData::default().with_partition_index(3),
                        ])
                        .with_unknown_tagged_fields(tags.clone()),
                    TopicData::default()
                        .with_topic_name(topic("orders"))
                        .with_partitions(Vec::new()),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::InitProducerId => RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_transactional_id(nullable(text("txn-1")).map(TransactionalId))
                .with_transaction_timeout_ms(60_000)
                // v0-2 carry no producer id or epoch: they decode as -1.
                .with_producer_id(ProducerId(if v >= 3 && !nulls { 4242 } else { -1 }))
                .with_producer_epoch(if v >= 3 && !nulls { 7 } else { -1 })
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::AddPartitionsToTxn if v >= 4 => RequestKind::AddPartitionsToTxn(
            AddPartitionsToTxnRequest::default()
                // v4+ carry no v3 fields: they decode as "", 0, 0 and empty.
                .with_v3_and_below_producer_id(ProducerId(0))
                .with_transactions(vec![
                    AddPartitionsToTxnTransaction::default()
                        .with_transactional_id(TransactionalId(text("txn-1")))
                        .with_producer_id(ProducerId(4242))
                        .with_producer_epoch(3)
                        .with_verify_only(!nulls)
                        .with_topics(vec![AddPartitionsToTxnTopic::default()
                            .with_name(topic("orders"))
                            .with_partitions(vec![0, 7])
                            .with_unknown_tagged_fields(tags.clone())])
                        .with_unknown_tagged_fields(tags.clone()),
                    AddPartitionsToTxnTransaction::default()
                        .with_transactional_id(TransactionalId(text("txn-2")))
                        .with_topics(Vec::new()),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::AddPartitionsToTxn => RequestKind::AddPartitionsToTxn(
            AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(text("txn-1")))
                .with_v3_and_below_producer_id(ProducerId(4242))
                .with_v3_and_below_producer_epoch(3)
                .with_v3_and_below_topics(vec![
                    AddPartitionsToTxnTopic::default()
                        .with_name(topic("orders"))
                        .with_partitions(vec![0, 7])
                        .with_unknown_tagged_fields(tags.clone()),
                    AddPartitionsToTxnTopic::default()
                        .with_name(topic("payments"))
                        .with_partitions(Vec::new()),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::AddOffsetsToTxn => RequestKind::AddOffsetsToTxn(
            AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(text("txn-1")))
                .with_producer_id(ProducerId(4242))
                .with_producer_epoch(3)
                .with_group_id(group("billing"))
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::EndTxn => RequestKind::EndTxn(
            EndTxnRequest::default()
                .with_transactional_id(TransactionalId(text("txn-1")))
                .with_producer_id(ProducerId(4242))
                .with_producer_epoch(3)
                .with_committed(!nulls)
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::TxnOffsetCommit => RequestKind::TxnOffsetCommit(
            TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(text("txn-1")))
                .with_group_id(group("billing"))
                .with_producer_id(ProducerId(4242))
                .with_producer_epoch(3)
                // v0-2 carry no generation, member or instance: they decode as -1, "" and null.
                .with_generation_id(if v >= 3 { 5 } else { -1 })
                .with_member_id(if v >= 3 { text("member-1") } else { text("") })
                .with_group_instance_id(if v >= 3 {
                    nullable(text("instance-1"))
                } else {
                    None
                })
                .with_topics(vec![
                    TxnOffsetCommitRequestTopic::default()
                        .with_name(topic("orders"))
                        .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(42)
                            .with_committed_leader_epoch(if v >= 2 { 3 } else { -1 })
                            .with_committed_metadata(nullable(text("meta")))
                            .with_unknown_tagged_fields(tags.clone())])
                        .with_unknown_tagged_fields(tags.clone()),
                    TxnOffsetCommitRequestTopic::default()
                        .with_name(topic("payments"))
                        .with_partitions(Vec::new()),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::WriteTxnMarkers => RequestKind::WriteTxnMarkers(
            WriteTxnMarkersRequest::default()
                .with_markers(vec![
                    WritableTxnMarker::default()
                        .with_producer_id(ProducerId(4242))
                        .with_producer_epoch(3)
                        .with_transaction_result(!nulls)
                        .with_topics(vec![
                            WritableTxnMarkerTopic::default()
                                .with_name(topic("orders"))
                                .with_partition_indexes(vec![0, 5])
                                .with_unknown_tagged_fields(tags.clone()),
                            WritableTxnMarkerTopic::default()
                                .with_name(topic("payments"))
                                .with_partition_indexes(Vec::new()),
                        ])
                        .with_coordinator_epoch(12)
                        .with_unknown_tagged_fields(tags.clone()),
                    WritableTxnMarker::default()
                        .with_producer_id(ProducerId(7))
                        .with_topics(Vec::new()),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::UnregisterBroker => RequestKind::UnregisterBroker(
            UnregisterBrokerRequest::default()
                .with_broker_id(BrokerId(4))
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::DescribeTransactions => RequestKind::DescribeTransactions(
            DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![
                    TransactionalId(text("txn-1")),
                    TransactionalId(text("txn-2")),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::ListTransactions => RequestKind::ListTransactions(
            ListTransactionsRequest::default()
                .with_state_filters(vec![text("Ongoing"), text("Empty")])
                .with_producer_id_filters(vec![ProducerId(7), ProducerId(4242)])
                .with_duration_filter(if v >= 1 { 60_000 } else { -1 })
                .with_transactional_id_pattern((v >= 2).then(|| text("etl-.*")))
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::DescribeProducers => RequestKind::DescribeProducers(
            DescribeProducersRequest::default()
                .with_topics(vec![
                    kafka_protocol::messages::describe_producers_request::TopicRequest::default()
                        .with_name(topic("orders"))
                        .with_partition_indexes(vec![0, 3])
                        .with_unknown_tagged_fields(tags.clone()),
                    kafka_protocol::messages::describe_producers_request::TopicRequest::default()
                        .with_name(topic("payments"))
                        .with_partition_indexes(Vec::new()),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::AlterReplicaLogDirs => RequestKind::AlterReplicaLogDirs(
            AlterReplicaLogDirsRequest::default()
                .with_dirs(vec![
                    alter_replica_log_dirs_request::AlterReplicaLogDir::default()
                        .with_path(StrBytes::from_static_str("/var/lib/skald/b"))
                        .with_topics(vec![
                            alter_replica_log_dirs_request::AlterReplicaLogDirTopic::default()
                                .with_name(topic("orders"))
                                .with_partitions(vec![0, 2])
                                .with_unknown_tagged_fields(tags.clone()),
                        ])
                        .with_unknown_tagged_fields(tags.clone()),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::DescribeLogDirs => RequestKind::DescribeLogDirs(
            DescribeLogDirsRequest::default()
                .with_topics((!nulls).then(|| {
                    vec![describe_log_dirs_request::DescribableLogDirTopic::default()
                        .with_topic(topic("orders"))
                        .with_partitions(vec![0, 2])
                        .with_unknown_tagged_fields(tags.clone())]
                }))
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::DescribeCluster => {
            // v0 has no endpoint_type (it decodes as 1, brokers); v1 may ask for controllers.
            let endpoint_type = if v >= 1 && !nulls { 2 } else { 1 };
            RequestKind::DescribeCluster(
                DescribeClusterRequest::default()
                    .with_include_cluster_authorized_operations(!nulls)
                    .with_endpoint_type(endpoint_type)
                    .with_include_fenced_brokers(v >= 2 && !nulls)
                    .with_unknown_tagged_fields(tags),
            )
        }
        ApiKey::BrokerRegistration => {
            let mut registration = BrokerRegistrationRequest::default()
                .with_broker_id(BrokerId(3))
                .with_cluster_id(text("MkU3OEVBNTcwNTJENDM2Qg"))
                .with_incarnation_id(uuid("6ba7b812-9dad-11d1-80b4-00c04fd430c8"))
                .with_listeners(vec![
                    Listener::default()
                        .with_name(text("PLAINTEXT"))
                        .with_host(text("broker-3.example"))
                        .with_port(9092)
                        .with_security_protocol(0)
                        .with_unknown_tagged_fields(tags.clone()),
                    Listener::default()
                        .with_name(text("SSL"))
                        .with_host(text("broker-3.example"))
                        .with_port(u16::MAX)
                        .with_security_protocol(1),
                ])
                .with_features(vec![
                    Feature::default()
                        .with_name(text("metadata.version"))
                        .with_min_supported_version(7)
                        .with_max_supported_version(21)
                        .with_unknown_tagged_fields(tags.clone()),
                    Feature::default()
                        .with_name(text("kraft.version"))
                        .with_max_supported_version(1),
                ])
                .with_rack(nullable(text("rack-a")))
                .with_unknown_tagged_fields(tags);
            if v >= 1 {
                registration = registration.with_is_migrating_zk_broker(!nulls);
            }
            if v >= 2 && !nulls {
                registration = registration.with_log_dirs(vec![
                    uuid("6ba7b813-9dad-11d1-80b4-00c04fd430c8"),
                    uuid("6ba7b814-9dad-11d1-80b4-00c04fd430c8"),
                ]);
            }
            if v >= 3 {
                registration = registration.with_previous_broker_epoch(if nulls { -1 } else { 41 });
            }
            RequestKind::BrokerRegistration(registration)
        }
        ApiKey::BrokerHeartbeat => {
            let mut heartbeat = BrokerHeartbeatRequest::default()
                .with_broker_id(BrokerId(3))
                .with_broker_epoch(41)
                .with_current_metadata_offset(1_234)
                .with_want_fence(nulls)
                .with_want_shut_down(!nulls)
                .with_unknown_tagged_fields(tags);
            // The only tagged field the decoder knows; empty is not written at all.
            if v >= 1 && !nulls {
                heartbeat = heartbeat.with_offline_log_dirs(vec![
                    uuid("6ba7b815-9dad-11d1-80b4-00c04fd430c8"),
                    uuid("00000000-0000-0000-0000-000000000000"),
                ]);
            }
            RequestKind::BrokerHeartbeat(heartbeat)
        }
        ApiKey::AlterPartition => {
            let partition = |index: i32, isr: &[i32]| {
                let partition = AlterPartitionData::default()
                    .with_partition_index(index)
                    .with_leader_epoch(5)
                    .with_leader_recovery_state(i8::from(nulls))
                    .with_partition_epoch(12)
                    .with_unknown_tagged_fields(tags.clone());
                if v >= 3 {
                    partition.with_new_isr_with_epochs(
                        isr.iter()
                            .map(|&id| {
                                BrokerState::default()
                                    .with_broker_id(BrokerId(id))
                                    .with_broker_epoch(if nulls { -1 } else { 40 + i64::from(id) })
                                    .with_unknown_tagged_fields(tags.clone())
                            })
                            .collect(),
                    )
                } else {
                    partition.with_new_isr(brokers(isr))
                }
            };
            RequestKind::AlterPartition(
                AlterPartitionRequest::default()
                    .with_broker_id(BrokerId(1))
                    .with_broker_epoch(41)
                    .with_topics(vec![
                        AlterPartitionTopic::default()
                            .with_topic_id(uuid("6ba7b810-9dad-11d1-80b4-00c04fd430c8"))
                            .with_partitions(vec![partition(0, &[1, 2, 3]), partition(1, &[1])])
                            .with_unknown_tagged_fields(tags.clone()),
                        AlterPartitionTopic::default()
                            .with_topic_id(uuid("6ba7b811-9dad-11d1-80b4-00c04fd430c8"))
                            .with_partitions(vec![partition(4, &[])]),
                    ])
                    .with_unknown_tagged_fields(tags),
            )
        }
        ApiKey::GetTelemetrySubscriptions => RequestKind::GetTelemetrySubscriptions(
            GetTelemetrySubscriptionsRequest::default()
                .with_client_instance_id(if nulls {
                    uuid("00000000-0000-0000-0000-000000000000")
                } else {
                    uuid("6ba7b817-9dad-11d1-80b4-00c04fd430c8")
                })
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::PushTelemetry => RequestKind::PushTelemetry(
            PushTelemetryRequest::default()
                .with_client_instance_id(uuid("6ba7b817-9dad-11d1-80b4-00c04fd430c8"))
                .with_subscription_id(-12_345)
                .with_terminating(nulls)
                .with_compression_type(4)
                .with_metrics(Bytes::from_static(b"opentelemetry metrics"))
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::DescribeTopicPartitions => {
            let cursor = (!nulls).then(|| {
                describe_topic_partitions_request::Cursor::default()
                    .with_topic_name(topic("orders"))
                    .with_partition_index(3)
                    .with_unknown_tagged_fields(tags.clone())
            });
            RequestKind::DescribeTopicPartitions(
                DescribeTopicPartitionsRequest::default()
                    .with_topics(vec![
                        describe_topic_partitions_request::TopicRequest::default()
                            .with_name(topic("orders"))
                            .with_unknown_tagged_fields(tags.clone()),
                        describe_topic_partitions_request::TopicRequest::default()
                            .with_name(topic("payments")),
                    ])
                    .with_response_partition_limit(2_000)
                    .with_cursor(cursor)
                    .with_unknown_tagged_fields(tags),
            )
        }
        other => panic!("no sample for {other:?}"),
    }
}

struct Sample {
    api_key: ApiKey,
    version: i16,
    body: RequestKind,
    frame: Bytes,
    header_len: usize,
}

impl Sample {
    fn encoded_body(&self) -> Bytes {
        self.frame.slice(self.header_len..)
    }
}

fn header_bytes(api_key: ApiKey, version: i16, client_id: Option<StrBytes>) -> BytesMut {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(42)
        .with_client_id(client_id);
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api_key.request_header_version(version))
        .expect("header encodes");
    buf
}

/// Each listener: its name, its decoder and the table it serves.
type ListenerDecoder = (
    &'static str,
    fn(Bytes) -> Result<Request, DecodeError>,
    &'static [SupportedApi],
);

const LISTENERS: [ListenerDecoder; 2] = [
    ("client", decode_request, SUPPORTED_APIS),
    ("controller", decode_controller_request, CONTROLLER_APIS),
];

/// Every API and version advertised on any listener, once each.
static ADVERTISED: LazyLock<Vec<(ApiKey, i16)>> = LazyLock::new(|| {
    let mut advertised = Vec::new();
    for api in SUPPORTED_APIS.iter().chain(CONTROLLER_APIS) {
        for version in api.min_version..=api.max_version {
            if !advertised.contains(&(api.api_key, version)) {
                advertised.push((api.api_key, version));
            }
        }
    }
    advertised
});

/// Decodes on a listener that serves the frame's API and version: the client listener when it
/// does, else the CONTROLLER listener.
fn decode_where_served(frame: Bytes) -> Result<Request, DecodeError> {
    match header_prefix(&frame) {
        Some(prefix)
            if !api_versions::is_supported(prefix.api_key, prefix.api_version)
                && api_versions::is_supported_on_controller(prefix.api_key, prefix.api_version) =>
        {
            decode_controller_request(frame)
        }
        _ => decode_request(frame),
    }
}

/// Two requests (nullable fields set, then null) for every advertised version of every API.
/// A legacy version's body from its rewritten form: for OffsetCommit v1, the v2 body without
/// its retention time and with a commit timestamp (-1) after each partition's offset.
fn legacy_body(api_key: ApiKey, version: i16, rewritten: &[u8]) -> Vec<u8> {
    assert_eq!(
        (api_key, version),
        (ApiKey::OffsetCommit, 1),
        "no legacy layout"
    );
    fn copy(rest: &mut &[u8], out: &mut Vec<u8>, len: usize) {
        out.extend_from_slice(&rest[..len]);
        *rest = &rest[len..];
    }
    fn copy_string(rest: &mut &[u8], out: &mut Vec<u8>) {
        let len = 2 + usize::try_from(i16::from_be_bytes([rest[0], rest[1]])).unwrap_or(0);
        copy(rest, out, len);
    }
    fn copy_count(rest: &mut &[u8], out: &mut Vec<u8>) -> i32 {
        let count = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]).max(0);
        copy(rest, out, 4);
        count
    }
    let mut rest = rewritten;
    let mut out = Vec::new();
    copy_string(&mut rest, &mut out); // group id
    copy(&mut rest, &mut out, 4); // generation
    copy_string(&mut rest, &mut out); // member id
    rest = &rest[8..]; // retention time
    for _ in 0..copy_count(&mut rest, &mut out) {
        copy_string(&mut rest, &mut out); // name
        for _ in 0..copy_count(&mut rest, &mut out) {
            copy(&mut rest, &mut out, 12); // index, offset
            out.extend_from_slice(&(-1i64).to_be_bytes()); // commit timestamp
            copy_string(&mut rest, &mut out); // metadata
        }
    }
    assert!(rest.is_empty());
    out
}

static SAMPLES: LazyLock<Vec<Sample>> = LazyLock::new(|| {
    let mut samples = Vec::new();
    for &(api_key, version) in ADVERTISED.iter() {
        for nulls in [false, true] {
            let client_id = (!nulls).then(|| text("test-client"));
            let mut frame = header_bytes(api_key, version, client_id);
            let header_len = frame.len();
            let body = sample_body(api_key, version, nulls);
            // A legacy version (crate::legacy) is encoded as the version it is rewritten into,
            // then turned back into its own layout.
            let codec_version = legacy::codec_version(api_key, version);
            let mut encoded = BytesMut::new();
            body.encode(&mut encoded, codec_version)
                .unwrap_or_else(|err| panic!("{api_key:?} v{version} does not encode: {err:#}"));
            if codec_version != version {
                encoded = BytesMut::from(&legacy_body(api_key, version, &encoded)[..]);
            }
            frame.extend_from_slice(&encoded);
            samples.push(Sample {
                api_key,
                version,
                body,
                frame: frame.freeze(),
                header_len,
            });
        }
    }
    samples
});

#[test]
fn every_advertised_api_and_version_has_a_layout() {
    for api in SUPPORTED_APIS.iter().chain(CONTROLLER_APIS) {
        let layout = REQUESTS
            .iter()
            .find(|layout| layout.api_key == api.api_key)
            .unwrap_or_else(|| panic!("no layout for {:?}", api.api_key));
        assert!(layout.min_version <= api.min_version, "{:?}", api.api_key);
        assert!(layout.max_version >= api.max_version, "{:?}", api.api_key);
    }
    assert_eq!(
        check_body(ApiKey::Produce, 14, &[]),
        Err(Rejection::UnknownLayout {
            api_key: ApiKey::Produce,
            api_version: 14
        })
    );
    assert_eq!(
        check_body(ApiKey::SaslHandshake, 0, &[]),
        Err(Rejection::UnknownLayout {
            api_key: ApiKey::SaslHandshake,
            api_version: 0
        })
    );
    assert_eq!(
        check_body(ApiKey::BrokerRegistration, 5, &[]),
        Err(Rejection::UnknownLayout {
            api_key: ApiKey::BrokerRegistration,
            api_version: 5
        })
    );
}

/// Each sample decodes unchanged on every listener that serves its API and version, and every
/// other listener refuses it by its header alone: an unknown key, or an unsupported version.
#[test]
fn every_valid_request_passes_whole_and_decodes_unchanged() {
    for (listener, _, apis) in LISTENERS {
        for api in apis {
            for version in api.min_version..=api.max_version {
                let samples = SAMPLES
                    .iter()
                    .filter(|sample| sample.api_key == api.api_key && sample.version == version)
                    .count();
                assert_eq!(samples, 2, "{:?} v{version} on {listener}", api.api_key);
            }
        }
    }
    for sample in SAMPLES.iter() {
        let what = format!("{:?} v{}", sample.api_key, sample.version);
        let body = sample.encoded_body();
        assert_eq!(
            check_body(sample.api_key, sample.version, &body),
            Ok(body.len()),
            "{what}"
        );
        let key = sample.api_key as i16;
        for (listener, decode, apis) in LISTENERS {
            let decoded = decode(sample.frame.clone());
            if api_versions::serves(apis, key, sample.version) {
                let request = decoded.unwrap_or_else(|err| {
                    panic!("{what} does not decode on the {listener} listener: {err}")
                });
                assert_eq!(request.api_version, sample.version, "{what}");
                assert_eq!(request.header.correlation_id, 42, "{what}");
                assert_eq!(request.body, sample.body, "{what}");
            } else if api_versions::find(apis, key).is_some() {
                assert!(
                    matches!(decoded, Err(DecodeError::UnsupportedVersion(prefix)) if prefix.correlation_id == 42),
                    "{what} on the {listener} listener: {decoded:?}"
                );
            } else {
                assert!(
                    matches!(decoded, Err(DecodeError::UnknownApiKey(prefix)) if prefix.correlation_id == 42),
                    "{what} on the {listener} listener: {decoded:?}"
                );
            }
        }
    }
}

/// Decodes a body as the broker does (a legacy version rewritten first, see crate::legacy);
/// returns the outcome and what is left unread.
fn decode_served(
    api_key: ApiKey,
    version: i16,
    mut body: Bytes,
) -> (anyhow::Result<RequestKind>, Bytes) {
    if let Some(rewritten) = legacy::rewrite_body(api_key, version, &body) {
        match rewritten {
            Ok(rewritten) => body = Bytes::from(rewritten),
            Err(rejection) => return (Err(anyhow::anyhow!("{rejection}")), body),
        }
    }
    let decoded = RequestKind::decode(api_key, &mut body, legacy::codec_version(api_key, version));
    (decoded, body)
}

#[test]
fn the_walk_ends_where_kafka_protocol_stops_reading() {
    for sample in SAMPLES.iter() {
        let mut body = sample.encoded_body();
        body = [&body[..], b"trailing"].concat().into();
        let walked = check_body(sample.api_key, sample.version, &body);
        let before = body.len();
        let (decoded, rest) = decode_served(sample.api_key, sample.version, body);
        decoded.expect("decodes");
        body = rest;
        assert_eq!(
            walked,
            Ok(before - body.len()),
            "{:?} v{}",
            sample.api_key,
            sample.version
        );
        assert_eq!(&body[..], b"trailing");
    }
}

fn frame(api_key: ApiKey, version: i16, body: &[u8]) -> Bytes {
    let mut frame = header_bytes(api_key, version, None);
    frame.put_slice(body);
    frame.freeze()
}

/// The layout walk alone refuses `body` (for versions that have a layout but are not served).
fn assert_layout_refuses(api_key: ApiKey, version: i16, body: &[u8], rejection: Rejection) {
    assert_eq!(check_body(api_key, version, body), Err(rejection));
}

/// Decodes on a listener serving the API and version, which must refuse the frame as malformed
/// for `reason`.
fn assert_refused(api_key: ApiKey, version: i16, body: &[u8], rejection: Rejection) {
    let started = Instant::now();
    let frame = frame(api_key, version, body);
    let header_len = frame.len() - body.len();
    assert_eq!(
        check_body(api_key, version, &frame[header_len..]),
        Err(rejection.clone())
    );
    match decode_where_served(frame) {
        Err(DecodeError::Malformed { prefix, reason }) => {
            assert_eq!(prefix.api_key, api_key as i16);
            assert_eq!(prefix.correlation_id, 42);
            assert_eq!(reason, rejection.to_string());
        }
        other => panic!("{api_key:?} v{version}: expected Malformed, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// Hand-built request bodies, for lengths no encoder would write.
#[derive(Default)]
struct Wire(Vec<u8>);

impl Wire {
    fn i8(mut self, value: i8) -> Self {
        self.0.put_i8(value);
        self
    }
    fn i16(mut self, value: i16) -> Self {
        self.0.put_i16(value);
        self
    }
    fn i32(mut self, value: i32) -> Self {
        self.0.put_i32(value);
        self
    }
    fn i64(mut self, value: i64) -> Self {
        self.0.put_i64(value);
        self
    }
    /// Varints and anything else spelled out byte by byte.
    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.put_slice(bytes);
        self
    }
    fn string(self, value: &str) -> Self {
        let len = i16::try_from(value.len()).expect("short string");
        self.i16(len).raw(value.as_bytes())
    }
    fn compact_string(self, value: &str) -> Self {
        let len = u8::try_from(value.len() + 1).expect("short string");
        assert!(len < 0x80);
        self.raw(&[len]).raw(value.as_bytes())
    }
}

#[test]
fn metadata_v0_claiming_54_million_topics_is_refused_before_allocating() {
    // The whole frame: api key 3, version 0, correlation id, null client id, topic count.
    let frame: &[u8] = &[0, 3, 0, 0, 0, 0, 0, 42, 0xff, 0xff, 0x03, 0x3c, 0x0c, 0x00];
    let rejection = Rejection::TooManyElements {
        field: "topics",
        count: 0x033c_0c00,
        remaining: 0,
    };
    assert_eq!(
        check_body(ApiKey::Metadata, 0, &frame[10..]),
        Err(rejection.clone())
    );
    match decode_request(Bytes::from_static(frame)) {
        Err(DecodeError::Malformed { prefix, reason }) => {
            assert_eq!(prefix.correlation_id, 42);
            assert_eq!(
                reason,
                "topics declares 54266880 elements but only 0 bytes remain"
            );
            assert_eq!(reason, rejection.to_string());
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    // The flexible form: compact count varint 0xffffffff, i.e. 2^32 - 2 elements after the bias.
    assert_refused(
        ApiKey::Metadata,
        12,
        &Wire::default().raw(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0]).0,
        Rejection::TooManyElements {
            field: "topics",
            count: 0xffff_fffe,
            remaining: 2,
        },
    );
}

#[test]
fn huge_counts_in_nested_arrays_are_refused() {
    // Produce v3: one topic with 2^31 - 1 partitions.
    let produce = Wire::default()
        .i16(-1) // transactional_id
        .i16(1) // acks
        .i32(30_000) // timeout_ms
        .i32(1) // topic_data
        .string("t")
        .i32(i32::MAX) // partition_data
        .i32(0);
    assert_refused(
        ApiKey::Produce,
        3,
        &produce.0,
        Rejection::TooManyElements {
            field: "partition_data",
            count: 0x7fff_ffff,
            remaining: 4,
        },
    );

    // Produce v9, compact: the same nesting with 2^28 partitions.
    let produce = Wire::default()
        .raw(&[0]) // transactional_id: null
        .i16(1)
        .i32(30_000)
        .raw(&[2]) // topic_data: one element
        .compact_string("t")
        .raw(&[0x81, 0x80, 0x80, 0x80, 0x01]); // partition_data: 2^28 + 1
    assert_refused(
        ApiKey::Produce,
        9,
        &produce.0,
        Rejection::TooManyElements {
            field: "partition_data",
            count: 1 << 28,
            remaining: 0,
        },
    );

    // Fetch v4: one topic with 2^28 partitions and room for one.
    let fetch = Wire::default()
        .i32(-1) // replica_id
        .i32(500) // max_wait_ms
        .i32(1) // min_bytes
        .i32(1 << 20) // max_bytes
        .i8(0) // isolation_level
        .i32(1) // topics
        .string("t")
        .i32(1 << 28) // partitions
        .raw(&[0; 28]);
    assert_refused(
        ApiKey::Fetch,
        4,
        &fetch.0,
        Rejection::TooManyElements {
            field: "partitions",
            count: 1 << 28,
            remaining: 28,
        },
    );

    // CreateTopics v2: one topic with 2^24 configs.
    let create = Wire::default()
        .i32(1) // topics
        .string("t")
        .i32(1) // num_partitions
        .i16(1) // replication_factor
        .i32(0) // assignments
        .i32(1 << 24) // configs
        .i32(5_000);
    assert_refused(
        ApiKey::CreateTopics,
        2,
        &create.0,
        Rejection::TooManyElements {
            field: "configs",
            count: 1 << 24,
            remaining: 4,
        },
    );

    // CreatePartitions v3, compact: one topic, one assignment listing 2^21 brokers.
    let create_partitions = Wire::default()
        .raw(&[2]) // topics
        .compact_string("t")
        .i32(2) // count
        .raw(&[2]) // assignments
        .raw(&[0x81, 0x80, 0x80, 0x01, 0]); // broker_ids: 2^21 + 1
    assert_refused(
        ApiKey::CreatePartitions,
        3,
        &create_partitions.0,
        Rejection::TooManyElements {
            field: "broker_ids",
            count: 1 << 21,
            remaining: 1,
        },
    );
}

#[test]
fn huge_counts_in_offset_for_leader_epoch_requests_are_refused() {
    // v2 has no replica_id: 2^31 - 1 topics in 8 bytes.
    assert_refused(
        ApiKey::OffsetForLeaderEpoch,
        2,
        &Wire::default().i32(i32::MAX).raw(&[0; 8]).0,
        Rejection::TooManyElements {
            field: "topics",
            count: 0x7fff_ffff,
            remaining: 8,
        },
    );
    // v3, a consumer: one topic with 2^24 partitions and room for one (12 bytes).
    let consumer = Wire::default()
        .i32(-1) // replica_id
        .i32(1) // topics
        .string("orders")
        .i32(1 << 24) // partitions
        .i32(0) // partition
        .i32(-1) // current_leader_epoch
        .i32(5); // leader_epoch
    assert_refused(
        ApiKey::OffsetForLeaderEpoch,
        3,
        &consumer.0,
        Rejection::TooManyElements {
            field: "partitions",
            count: 1 << 24,
            remaining: 12,
        },
    );
    // v4, compact: 2^32 - 2 topics in 3 bytes.
    assert_refused(
        ApiKey::OffsetForLeaderEpoch,
        4,
        &Wire::default()
            .i32(3) // replica_id: a follower
            .raw(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0])
            .0,
        Rejection::TooManyElements {
            field: "topics",
            count: 0xffff_fffe,
            remaining: 3,
        },
    );
    // v4: one topic with 2^21 partitions and room for one (12 bytes and its tagged fields).
    let follower = Wire::default()
        .i32(3) // replica_id
        .raw(&[2]) // topics: one
        .compact_string("orders")
        .raw(&[0x81, 0x80, 0x80, 0x01]) // partitions: 2^21 + 1
        .i32(0)
        .i32(5)
        .i32(5)
        .raw(&[0]);
    assert_refused(
        ApiKey::OffsetForLeaderEpoch,
        4,
        &follower.0,
        Rejection::TooManyElements {
            field: "partitions",
            count: 1 << 21,
            remaining: 13,
        },
    );
    // v0 and v1 are gone from kafka-protocol 0.18 (KIP-896): no layout, and not served.
    assert_eq!(
        check_body(ApiKey::OffsetForLeaderEpoch, 1, &[0; 4]),
        Err(Rejection::UnknownLayout {
            api_key: ApiKey::OffsetForLeaderEpoch,
            api_version: 1
        })
    );
    assert!(matches!(
        decode_request(frame(ApiKey::OffsetForLeaderEpoch, 1, &[0; 4])),
        Err(DecodeError::UnsupportedVersion(prefix)) if prefix.correlation_id == 42
    ));
}

#[test]
fn huge_counts_in_cluster_description_requests_are_refused() {
    // DescribeQuorum v0 (flexible from the start): one topic with 2^28 partitions.
    let quorum = Wire::default()
        .raw(&[2]) // topics: one element
        .compact_string("__cluster_metadata")
        .raw(&[0x81, 0x80, 0x80, 0x80, 0x01]) // partitions: 2^28 + 1
        .raw(&[0; 6]);
    assert_refused(
        ApiKey::DescribeQuorum,
        0,
        &quorum.0,
        Rejection::TooManyElements {
            field: "partitions",
            count: 1 << 28,
            remaining: 6,
        },
    );
    // v2: 2^32 - 2 topics in 3 bytes.
    assert_refused(
        ApiKey::DescribeQuorum,
        2,
        &Wire::default()
            .raw(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0])
            .0,
        Rejection::TooManyElements {
            field: "topics",
            count: 0xffff_fffe,
            remaining: 3,
        },
    );

    // DescribeCluster has no arrays; its only length is a tagged field's, here 2^28 bytes.
    let cluster = Wire::default()
        .i8(0) // include_cluster_authorized_operations
        .i8(1) // endpoint_type
        .i8(1) // include_fenced_brokers
        .raw(&[1, 9]) // one tagged field: tag 9
        .raw(&[0x80, 0x80, 0x80, 0x80, 0x01]) // size 2^28
        .raw(b"tiny");
    assert_refused(
        ApiKey::DescribeCluster,
        2,
        &cluster.0,
        Rejection::PastEnd {
            field: "tagged field",
            needed: 1 << 28,
            remaining: 4,
        },
    );
}

#[test]
fn huge_counts_in_elect_leaders_requests_are_refused() {
    // v1: preferred, 2^31 - 1 topics in 4 bytes.
    let topics = Wire::default().i8(0).i32(i32::MAX).i32(30_000);
    assert_refused(
        ApiKey::ElectLeaders,
        1,
        &topics.0,
        Rejection::TooManyElements {
            field: "topic_partitions",
            count: i32::MAX as usize,
            remaining: 4,
        },
    );
    // v0 (no election type): one topic listing 50 million partitions.
    let partitions = Wire::default()
        .i32(1)
        .string("orders")
        .i32(50_000_000)
        .i32(0)
        .i32(30_000);
    assert_refused(
        ApiKey::ElectLeaders,
        0,
        &partitions.0,
        Rejection::TooManyElements {
            field: "partitions",
            count: 50_000_000,
            remaining: 8,
        },
    );
    // v2, compact: one topic with 2^28 partitions.
    let compact = Wire::default()
        .i8(1)
        .raw(&[2]) // topic_partitions: one element
        .compact_string("orders")
        .raw(&[0x81, 0x80, 0x80, 0x80, 0x01]) // partitions: 2^28 + 1
        .raw(&[0; 6]);
    assert_refused(
        ApiKey::ElectLeaders,
        2,
        &compact.0,
        Rejection::TooManyElements {
            field: "partitions",
            count: 1 << 28,
            remaining: 6,
        },
    );
}

#[test]
fn huge_counts_in_broker_lifecycle_requests_are_refused() {
    // BrokerRegistration v1 up to its listeners: 2^28 of them.
    let registration = || {
        Wire::default()
            .i32(3) // broker_id
            .compact_string("c") // cluster_id
            .raw(&[7; 16]) // incarnation_id
    };
    assert_refused(
        ApiKey::BrokerRegistration,
        1,
        &registration()
            .raw(&[0x81, 0x80, 0x80, 0x80, 0x01]) // listeners: 2^28 + 1
            .raw(&[0; 3])
            .0,
        Rejection::TooManyElements {
            field: "listeners",
            count: 1 << 28,
            remaining: 3,
        },
    );
    // v0: no listeners, then 2^21 features.
    assert_refused(
        ApiKey::BrokerRegistration,
        0,
        &registration()
            .raw(&[1]) // listeners: empty
            .raw(&[0x81, 0x80, 0x80, 0x01]) // features: 2^21 + 1
            .raw(&[0, 0])
            .0,
        Rejection::TooManyElements {
            field: "features",
            count: 1 << 21,
            remaining: 2,
        },
    );
    // v2 (not served yet, but its layout is ready): 2^14 log dirs, each a 16-byte uuid, with
    // room for one.
    assert_layout_refuses(
        ApiKey::BrokerRegistration,
        2,
        &registration()
            .raw(&[1, 1]) // listeners, features: empty
            .raw(&[0]) // rack: null
            .i8(0) // is_migrating_zk_broker
            .raw(&[0x81, 0x80, 0x01]) // log_dirs: 2^14 + 1
            .raw(&[0; 17])
            .0,
        Rejection::TooManyElements {
            field: "log_dirs",
            count: 1 << 14,
            remaining: 17,
        },
    );

    // BrokerHeartbeat v1: tagged field 0, offline_log_dirs, declaring 2^32 - 2 dirs in 5 bytes.
    let heartbeat = Wire::default()
        .i32(3) // broker_id
        .i64(41) // broker_epoch
        .i64(1_234) // current_metadata_offset
        .i8(0) // want_fence
        .i8(0) // want_shut_down
        .raw(&[1, 0, 5]) // one tagged field: tag 0, size 5
        .raw(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // offline_log_dirs: 2^32 - 1
    assert_layout_refuses(
        ApiKey::BrokerHeartbeat,
        1,
        &heartbeat.0,
        Rejection::TooManyElements {
            field: "offline_log_dirs",
            count: 0xffff_fffe,
            remaining: 0,
        },
    );
    // v0 does not know tag 0, and kafka-protocol refuses it there rather than skipping it.
    assert_refused(
        ApiKey::BrokerHeartbeat,
        0,
        &heartbeat.0,
        Rejection::MisplacedTag {
            tag: 0,
            field: "offline_log_dirs",
        },
    );
    let mut body = Bytes::from(heartbeat.0);
    assert!(RequestKind::decode(ApiKey::BrokerHeartbeat, &mut body, 0).is_err());
}

#[test]
fn huge_counts_in_alter_partition_requests_are_refused() {
    // Up to the first partition's ISR: broker 1 at epoch 41, one topic, one partition 0 at
    // leader epoch 5.
    let head = || {
        Wire::default()
            .i32(1) // broker_id
            .i64(41) // broker_epoch
            .raw(&[2]) // topics: one
            .raw(&[7; 16]) // topic_id
            .raw(&[2]) // partitions: one
            .i32(0) // partition_index
            .i32(5) // leader_epoch
    };
    // v2: new_isr declaring 2^28 broker ids, with room for six bytes.
    assert_refused(
        ApiKey::AlterPartition,
        2,
        &head().raw(&[0x81, 0x80, 0x80, 0x80, 0x01]).raw(&[0; 6]).0,
        Rejection::TooManyElements {
            field: "new_isr",
            count: 1 << 28,
            remaining: 6,
        },
    );
    // v3: new_isr_with_epochs declaring 2^21 members, with room for one.
    assert_refused(
        ApiKey::AlterPartition,
        3,
        &head().raw(&[0x81, 0x80, 0x80, 0x01]).raw(&[0; 13]).0,
        Rejection::TooManyElements {
            field: "new_isr_with_epochs",
            count: 1 << 21,
            remaining: 13,
        },
    );
    // Either version: 2^32 - 2 topics in four bytes.
    assert_refused(
        ApiKey::AlterPartition,
        3,
        &Wire::default()
            .i32(1)
            .i64(41)
            .raw(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0])
            .0,
        Rejection::TooManyElements {
            field: "topics",
            count: 0xffff_fffe,
            remaining: 4,
        },
    );
    // One topic with 2^14 partitions, each at least 12 bytes, in 40.
    assert_refused(
        ApiKey::AlterPartition,
        2,
        &Wire::default()
            .i32(1)
            .i64(41)
            .raw(&[2])
            .raw(&[7; 16])
            .raw(&[0x81, 0x80, 0x01])
            .raw(&[0; 40])
            .0,
        Rejection::TooManyElements {
            field: "partitions",
            count: 1 << 14,
            remaining: 40,
        },
    );
}

#[test]
fn lengths_past_the_end_and_negative_lengths_are_refused() {
    // DescribeConfigs v1: a resource name claiming 300 bytes.
    let describe = Wire::default()
        .i32(1) // resources
        .i8(2) // resource_type
        .i16(300) // resource_name
        .raw(b"or");
    assert_refused(
        ApiKey::DescribeConfigs,
        1,
        &describe.0,
        Rejection::PastEnd {
            field: "resource_name",
            needed: 300,
            remaining: 2,
        },
    );

    // Produce v3: records of length -2.
    let produce = Wire::default()
        .i16(-1)
        .i16(1)
        .i32(1)
        .i32(1)
        .string("t")
        .i32(1) // partition_data
        .i32(0) // index
        .i32(-2); // records
    assert_refused(
        ApiKey::Produce,
        3,
        &produce.0,
        Rejection::NegativeLength {
            field: "records",
            length: -2,
        },
    );

    // ApiVersions v3: an unknown tagged field claiming 1000 bytes.
    let api_versions = Wire::default()
        .compact_string("") // client_software_name
        .compact_string("") // client_software_version
        .raw(&[1, 7, 0xe8, 0x07]) // one tagged field: tag 7, size 1000
        .raw(&[0xaa]);
    assert_refused(
        ApiKey::ApiVersions,
        3,
        &api_versions.0,
        Rejection::PastEnd {
            field: "tagged field",
            needed: 1000,
            remaining: 1,
        },
    );
}

#[test]
fn known_tags_are_read_by_type_not_by_declared_size() {
    // Fetch v12 with tag 0 (cluster_id) declaring 127 bytes but holding an empty string, then a
    // trailing byte: kafka-protocol reads the string and stops, and so must the walk.
    let fetch = Wire::default()
        .i32(-1)
        .i32(500)
        .i32(1)
        .i32(1 << 20)
        .i8(0)
        .i32(0) // session_id
        .i32(-1) // session_epoch
        .raw(&[1, 1]) // topics, forgotten_topics_data: empty
        .compact_string("") // rack_id
        .raw(&[1, 0, 0x7f]) // one tagged field: tag 0, size 127
        .compact_string("") // cluster_id
        .i64(7);
    let body = fetch.0;
    assert_eq!(check_body(ApiKey::Fetch, 12, &body), Ok(body.len() - 8));
    match decode_request(frame(ApiKey::Fetch, 12, &body)).map(|request| request.body) {
        Ok(RequestKind::Fetch(fetch)) => assert_eq!(fetch.cluster_id, Some(text(""))),
        other => panic!("expected a Fetch request, got {other:?}"),
    }
}

#[test]
fn a_known_tag_outside_its_versions_is_refused_like_the_decoder_does() {
    static TAGGED: Layout = Layout {
        fields: &[],
        tagged: &[(
            3,
            Field {
                name: "later",
                kind: Kind::Int32,
                since: 9,
                until: i16::MAX,
            },
        )],
    };
    let walk = |version: i16, body: &[u8]| {
        let mut walker = Walker {
            rest: body,
            version,
            flexible: true,
        };
        walker.structure(&TAGGED).map(|()| walker.rest.len())
    };
    let body = [0x01, 0x03, 0x04, 0, 0, 0, 9];
    assert_eq!(walk(9, &body), Ok(0));
    assert_eq!(
        walk(8, &body),
        Err(Rejection::MisplacedTag {
            tag: 3,
            field: "later"
        })
    );
}

#[test]
fn every_truncation_of_every_valid_request_is_refused_by_both() {
    for sample in SAMPLES.iter() {
        let what = format!("{:?} v{}", sample.api_key, sample.version);
        for end in sample.header_len..sample.frame.len() {
            let mut body = sample.frame.slice(sample.header_len..end);
            let walked = check_body(sample.api_key, sample.version, &body);
            assert!(walked.is_err(), "{what} cut at {end}: {walked:?}");
            // Safe to hand to kafka-protocol directly: a valid request's counts are small.
            let decoded = RequestKind::decode(sample.api_key, &mut body, sample.version);
            assert!(decoded.is_err(), "{what} cut at {end} decoded");
            assert!(matches!(
                decode_where_served(sample.frame.slice(..end)),
                Err(DecodeError::Malformed { .. })
            ));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Damage anywhere in a valid body: whatever the walk refuses (short of a huge count, which
    /// kafka-protocol could not be asked to decode safely) kafka-protocol refuses too, and
    /// whatever both accept they read to the same end.
    #[test]
    fn damaged_requests_are_judged_alike(
        which in any::<prop::sample::Index>(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let sample = which.get(&SAMPLES[..]);
        let mut body = sample.encoded_body().to_vec();
        prop_assume!(!body.is_empty());
        for (at, byte) in &damage {
            *at.get_mut(&mut body) = *byte;
        }
        let walked = check_body(sample.api_key, sample.version, &body);
        if matches!(walked, Err(Rejection::TooManyElements { .. })) {
            return Ok(());
        }
        let (decoded, buf) = decode_served(sample.api_key, sample.version, Bytes::from(body.clone()));
        match (walked, decoded) {
            (Ok(read), Ok(_)) => prop_assert_eq!(read, body.len() - buf.len()),
            (Err(rejection), Ok(_)) => prop_assert!(false, "walk refused {rejection} but it decodes"),
            (Ok(_) | Err(_), Err(_)) => {}
        }
    }
}

/// The `request` fuzz target's seeds: every API on each listener at the lowest and the highest
/// version it serves (the fuzzer reaches the versions between by changing two header bytes).
fn request_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (listener, _, apis) in LISTENERS {
        for api in apis {
            for (version, nulls) in [(api.min_version, true), (api.max_version, false)] {
                let sample = SAMPLES
                    .iter()
                    .filter(|s| s.api_key == api.api_key && s.version == version)
                    .nth(usize::from(nulls))
                    .expect("a sample for every advertised version");
                let nulls_suffix = if nulls { "-nulls" } else { "" };
                let name = format!("{listener}-{:?}-v{version}{nulls_suffix}", api.api_key);
                if !seeds.iter().any(|(_, frame)| frame == &sample.frame[..]) {
                    seeds.push((name, sample.frame.to_vec()));
                }
            }
        }
    }
    seeds.sort();
    seeds
}

/// `SKALD_FUZZ_WRITE_CORPUS=1` writes the seeds; otherwise the committed corpus must hold them.
/// Then the fuzz target's function runs over the whole corpus.
#[test]
fn the_request_fuzz_corpus_holds_every_api_at_its_lowest_and_highest_version_and_runs_clean() {
    let seeds = request_seeds();
    if let Some(dir) = crate::fuzzing::corpus_to_write("request") {
        for (name, frame) in &seeds {
            std::fs::write(dir.join(name), frame).expect("seed written");
        }
    }
    let committed = crate::fuzzing::seed_corpus("request");
    for seed in &seeds {
        assert!(committed.contains(seed), "{} is not in the corpus", seed.0);
    }
    for (name, frame) in committed {
        assert!(
            decode_where_served(Bytes::from(frame.clone())).is_ok(),
            "{name} does not decode"
        );
        crate::fuzzing::request(&frame);
    }
}

/// A brief mutation run of the `request` target over its corpus (see
/// [`crate::fuzzing::run_mutations`]).
#[test]
fn request_fuzz_mutations_run_clean() {
    crate::fuzzing::run_mutations(
        "request",
        crate::fuzzing::MUTATIONS_DEFAULT,
        crate::fuzzing::request,
    );
}
