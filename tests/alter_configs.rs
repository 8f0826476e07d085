//! IncrementalAlterConfigs and AlterConfigs over the wire: Kafka's outcomes for each operation and
//! each kind of bad input, `validate_only`, and altered topic configs taking effect on open
//! partitions without a restart, on one broker and across a cluster.

mod common;

use std::time::Duration;

use common::cluster::TestCluster;
use common::replica::{produce_once_served, produce_with_acks, wait_for_partition};
use common::wire::{batch_v2, topic_name, RawConn};
use common::{poll_until, TestServer};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, ApiKey, BrokerId, CreateTopicsRequest,
    CreateTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ListOffsetsRequest,
    ListOffsetsResponse,
};
use kafka_protocol::protocol::StrBytes;

// Kafka's error codes.
const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MESSAGE_TOO_LARGE: i16 = 10;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;

/// Kafka's ConfigResource types and ConfigSource values.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const DYNAMIC_BROKER_CONFIG: i8 = 2;
const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

/// Kafka's AlterConfigOp types.
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// One resource of an IncrementalAlterConfigs request: (type, name, [(key, op, value)]).
type Changes<'a> = (i8, &'a str, &'a [(&'a str, i8, Option<&'a str>)]);

/// Every resource's (name, error code, error message).
type Outcomes = Vec<(String, i16, Option<String>)>;

fn incremental(conn: &mut RawConn, resources: &[Changes<'_>], validate_only: bool) -> Outcomes {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let version = conn.negotiate(ApiKey::IncrementalAlterConfigs, 1);
    let request = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(
            resources
                .iter()
                .map(|(resource_type, name, configs)| {
                    AlterConfigsResource::default()
                        .with_resource_type(*resource_type)
                        .with_resource_name(text(name))
                        .with_configs(
                            configs
                                .iter()
                                .map(|(key, op, value)| {
                                    AlterableConfig::default()
                                        .with_name(text(key))
                                        .with_config_operation(*op)
                                        .with_value(value.map(text))
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let response: IncrementalAlterConfigsResponse = conn.request(&request, version);
    response
        .responses
        .iter()
        .map(|r| {
            (
                r.resource_name.to_string(),
                r.error_code,
                r.error_message.as_ref().map(|m| m.to_string()),
            )
        })
        .collect()
}

/// One topic's IncrementalAlterConfigs, which must succeed.
fn alter_topic(conn: &mut RawConn, topic: &str, changes: &[(&str, i8, Option<&str>)]) {
    assert_eq!(
        incremental(conn, &[(TOPIC, topic, changes)], false),
        vec![(topic.to_string(), NONE, None)]
    );
}

fn legacy(conn: &mut RawConn, topic: &str, configs: &[(&str, &str)]) -> Outcomes {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let version = conn.negotiate(ApiKey::AlterConfigs, 2);
    let request =
        AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(text(topic))
            .with_configs(
                configs
                    .iter()
                    .map(|(key, value)| {
                        AlterableConfig::default()
                            .with_name(text(key))
                            .with_value(Some(text(value)))
                    })
                    .collect(),
            )]);
    let response: AlterConfigsResponse = conn.request(&request, version);
    response
        .responses
        .iter()
        .map(|r| {
            (
                r.resource_name.to_string(),
                r.error_code,
                r.error_message.as_ref().map(|m| m.to_string()),
            )
        })
        .collect()
}

/// The topic's overrides (DYNAMIC_TOPIC_CONFIG entries) as one broker describes them, sorted.
fn overrides(conn: &mut RawConn, topic: &str) -> Vec<(String, String)> {
    let version = conn.negotiate(ApiKey::DescribeConfigs, 4);
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(text(topic))]);
    let response: DescribeConfigsResponse = conn.request(&request, version);
    assert_eq!(response.results[0].error_code, NONE, "{response:?}");
    let mut overrides: Vec<(String, String)> = response.results[0]
        .configs
        .iter()
        .filter(|c| c.config_source == DYNAMIC_TOPIC_CONFIG)
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    overrides.sort();
    overrides
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn create_topic(
    conn: &mut RawConn,
    topic: &str,
    replication_factor: i16,
    configs: &[(&str, &str)],
) {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(topic))
            .with_num_partitions(1)
            .with_replication_factor(replication_factor)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(text(k))
                            .with_value(Some(text(v)))
                    })
                    .collect(),
            )]);
    let response: CreateTopicsResponse = conn.request(&request, 7);
    assert_eq!(response.topics[0].error_code, NONE, "{response:?}");
}

fn error(code: i16, message: &str) -> (i16, Option<String>) {
    (code, Some(message.to_string()))
}

fn outcome(outcomes: Outcomes) -> (i16, Option<String>) {
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    let (_, code, message) = outcomes.into_iter().next().unwrap();
    (code, message)
}

#[test]
fn set_delete_append_subtract_and_replace_change_exactly_the_overrides() {
    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    create_topic(&mut conn, "orders", 1, &[("segment.bytes", "1048576")]);

    alter_topic(
        &mut conn,
        "orders",
        &[
            ("retention.ms", SET, Some("3600000")),
            ("segment.bytes", DELETE, None),
            ("cleanup.policy", APPEND, Some("compact")),
        ],
    );
    assert_eq!(
        overrides(&mut conn, "orders"),
        pairs(&[
            ("cleanup.policy", "delete,compact"),
            ("retention.ms", "3600000")
        ])
    );
    alter_topic(
        &mut conn,
        "orders",
        &[("cleanup.policy", SUBTRACT, Some("delete"))],
    );
    assert_eq!(
        overrides(&mut conn, "orders"),
        pairs(&[("cleanup.policy", "compact"), ("retention.ms", "3600000")])
    );

    // validate_only answers as the change would and changes nothing.
    assert_eq!(
        incremental(
            &mut conn,
            &[(TOPIC, "orders", &[("retention.ms", SET, Some("1"))])],
            true
        ),
        vec![("orders".to_string(), NONE, None)]
    );
    assert_eq!(
        overrides(&mut conn, "orders"),
        pairs(&[("cleanup.policy", "compact"), ("retention.ms", "3600000")])
    );

    // AlterConfigs replaces the overrides as a whole.
    assert_eq!(
        legacy(&mut conn, "orders", &[("max.message.bytes", "2048")]),
        vec![("orders".to_string(), NONE, None)]
    );
    assert_eq!(
        overrides(&mut conn, "orders"),
        pairs(&[("max.message.bytes", "2048")])
    );
}

#[test]
fn bad_changes_get_kafkas_error_codes_and_change_nothing() {
    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    create_topic(&mut conn, "guarded", 1, &[("retention.ms", "1000")]);
    let mut refused = |resources: &[Changes<'_>]| outcome(incremental(&mut conn, resources, false));

    assert_eq!(
        refused(&[(TOPIC, "missing", &[("retention.ms", SET, Some("1"))])]),
        (
            UNKNOWN_TOPIC_OR_PARTITION,
            Some("This server does not host this topic-partition.".into())
        )
    );
    assert_eq!(
        refused(&[(TOPIC, "guarded", &[("no.such.config", SET, Some("1"))])]),
        error(INVALID_CONFIG, "Unknown topic config name: no.such.config")
    );
    // One bad key refuses the whole resource: retention.ms keeps its value.
    assert_eq!(
        refused(&[(
            TOPIC,
            "guarded",
            &[
                ("retention.ms", SET, Some("5000")),
                ("segment.bytes", SET, Some("13")),
            ]
        )]),
        error(
            INVALID_CONFIG,
            "Invalid value 13 for configuration segment.bytes: Value must be at least 14"
        )
    );
    assert_eq!(
        refused(&[(TOPIC, "guarded", &[("retention.ms", APPEND, Some("5"))])]),
        error(
            INVALID_CONFIG,
            "Can't APPEND to key retention.ms because its type is not LIST."
        )
    );
    assert_eq!(
        refused(&[(
            TOPIC,
            "guarded",
            &[
                ("retention.ms", SET, Some("1")),
                ("retention.ms", DELETE, None)
            ]
        )]),
        error(INVALID_REQUEST, "Error due to duplicate config keys")
    );
    assert_eq!(
        refused(&[(TOPIC, "guarded", &[("retention.ms", SET, None)])]),
        error(
            INVALID_REQUEST,
            "Null value not supported for : retention.ms"
        )
    );
    assert_eq!(
        refused(&[(TOPIC, "guarded", &[("retention.ms", 9, Some("1"))])]),
        error(INVALID_REQUEST, "Unknown operations type 9")
    );
    assert_eq!(
        refused(&[(TOPIC, "", &[("retention.ms", SET, Some("1"))])]),
        error(INVALID_REQUEST, "Default topic resources are not allowed.")
    );
    // Broker configs: static ones and bad values are refused as Kafka's brokers refuse them.
    assert_eq!(
        refused(&[(
            BROKER,
            "",
            &[
                ("log.dirs", SET, Some("/tmp")),
                ("log.retention.ms", SET, Some("1"))
            ]
        )]),
        error(
            INVALID_REQUEST,
            "Cannot update these configs dynamically: Set(log.dirs)"
        )
    );
    assert_eq!(
        refused(&[(BROKER, "1", &[("log.retention.ms", SET, Some("soon"))])]),
        error(
            INVALID_REQUEST,
            "Invalid value soon for configuration log.retention.ms: Not a number of type LONG"
        )
    );
    assert_eq!(
        refused(&[(BROKER, "7", &[("log.retention.ms", SET, Some("1"))])]),
        error(
            INVALID_REQUEST,
            "Unexpected broker id, expected 1, but received 7"
        )
    );
    assert_eq!(
        incremental(
            &mut conn,
            &[
                (TOPIC, "guarded", &[("retention.ms", SET, Some("1"))]),
                (TOPIC, "guarded", &[("retention.ms", SET, Some("2"))]),
            ],
            false
        ),
        vec![
            (
                "guarded".to_string(),
                INVALID_REQUEST,
                Some("Each resource must appear at most once.".to_string())
            );
            2
        ]
    );
    assert_eq!(
        outcome(legacy(&mut conn, "guarded", &[("retention.ms", "soon")])),
        error(
            INVALID_CONFIG,
            "Invalid value soon for configuration retention.ms: Not a number of type LONG"
        )
    );
    assert_eq!(
        overrides(&mut conn, "guarded"),
        pairs(&[("retention.ms", "1000")])
    );
    assert_eq!(describe_broker(&mut conn, ""), Vec::new());
}

/// A BROKER resource's configs as DescribeConfigs lists them with synonyms, only those not at
/// Kafka's default: (name, value, source, [(synonym, value, source)]).
type BrokerConfigs = Vec<(String, String, i8, Vec<(String, String, i8)>)>;

fn describe_broker(conn: &mut RawConn, name: &str) -> BrokerConfigs {
    describe(conn, BROKER, name)
        .into_iter()
        .filter(|(_, _, source, _)| *source != DEFAULT_CONFIG)
        .collect()
}

fn describe(conn: &mut RawConn, resource_type: i8, name: &str) -> BrokerConfigs {
    let version = conn.negotiate(ApiKey::DescribeConfigs, 4);
    let request = DescribeConfigsRequest::default()
        .with_include_synonyms(true)
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(text(name))]);
    let response: DescribeConfigsResponse = conn.request(&request, version);
    assert_eq!(response.results[0].error_code, NONE, "{response:?}");
    response.results[0]
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                c.config_source,
                c.synonyms
                    .iter()
                    .map(|s| {
                        (
                            s.name.to_string(),
                            s.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                            s.source,
                        )
                    })
                    .collect(),
            )
        })
        .collect()
}

fn entry(
    name: &str,
    value: &str,
    source: i8,
    synonyms: &[(&str, &str, i8)],
) -> (String, String, i8, Vec<(String, String, i8)>) {
    (
        name.to_string(),
        value.to_string(),
        source,
        synonyms
            .iter()
            .map(|(n, v, s)| (n.to_string(), v.to_string(), *s))
            .collect(),
    )
}

#[test]
fn dynamic_broker_configs_take_effect_with_kafkas_sources_and_synonyms() {
    let server = TestServer::start_with(&[
        ("log.retention.check.interval.ms", "200"),
        ("log.segment.bytes", "100"),
    ]);
    let mut conn = RawConn::connect(server.kafka_addr());
    create_topic(&mut conn, "defaults", 1, &[]);
    // Records stamped now: the default 7-day retention keeps them.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for i in 0..3 {
        let batch = batch_v2(&[("k", &"x".repeat(150), now_ms)]);
        assert_eq!(conn.produce_raw("defaults", 0, batch), (NONE, i));
    }

    // Cluster-wide, then for this broker: the broker's own value wins.
    assert_eq!(
        incremental(
            &mut conn,
            &[
                (BROKER, "", &[("log.retention.ms", SET, Some("3600000"))]),
                (BROKER, "1", &[("message.max.bytes", SET, Some("1024"))]),
            ],
            false
        ),
        vec![("".to_string(), NONE, None), ("1".to_string(), NONE, None)]
    );
    assert_eq!(
        describe_broker(&mut conn, ""),
        vec![entry(
            "log.retention.ms",
            "3600000",
            DYNAMIC_DEFAULT_BROKER_CONFIG,
            &[("log.retention.ms", "3600000", DYNAMIC_DEFAULT_BROKER_CONFIG)]
        )]
    );
    let topic_configs = describe(&mut conn, TOPIC, "defaults");
    let find = |name: &str| {
        topic_configs
            .iter()
            .find(|(n, ..)| n == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        find("max.message.bytes"),
        entry(
            "max.message.bytes",
            "1024",
            DYNAMIC_BROKER_CONFIG,
            &[
                ("message.max.bytes", "1024", DYNAMIC_BROKER_CONFIG),
                ("message.max.bytes", "1048588", DEFAULT_CONFIG),
            ]
        )
    );
    assert_eq!(
        find("segment.bytes"),
        entry(
            "segment.bytes",
            "100",
            STATIC_BROKER_CONFIG,
            &[
                ("log.segment.bytes", "100", STATIC_BROKER_CONFIG),
                ("log.segment.bytes", "1073741824", DEFAULT_CONFIG),
            ]
        )
    );

    // Both take effect on the open partition without a restart.
    let big = batch_v2(&[("k", &"x".repeat(2_000), now_ms)]);
    assert_eq!(
        conn.produce_raw("defaults", 0, big.clone()),
        (MESSAGE_TOO_LARGE, -1)
    );
    assert_eq!(log_start_offset(&mut conn, "defaults"), 0);
    assert_eq!(
        incremental(
            &mut conn,
            &[(BROKER, "", &[("log.retention.ms", SET, Some("1"))])],
            false
        ),
        vec![("".to_string(), NONE, None)]
    );
    poll_until(
        "segments deleted by the new default",
        Duration::from_secs(30),
        || (log_start_offset(&mut conn, "defaults") == 3).then_some(()),
    );

    // Deleted again, the static value and Kafka's default are back.
    assert_eq!(
        incremental(
            &mut conn,
            &[
                (BROKER, "", &[("log.retention.ms", DELETE, None)]),
                (BROKER, "1", &[("message.max.bytes", DELETE, None)]),
            ],
            false
        ),
        vec![("".to_string(), NONE, None), ("1".to_string(), NONE, None)]
    );
    assert_eq!(describe_broker(&mut conn, ""), Vec::new());
    assert_eq!(conn.produce_raw("defaults", 0, big), (NONE, 3));
}

/// The partition's log start offset, through ListOffsets EARLIEST.
fn log_start_offset(conn: &mut RawConn, topic: &str) -> i64 {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-2)])]);
    let response: ListOffsetsResponse = conn.request(&request, 6);
    let partition = &response.topics[0].partitions[0];
    assert_eq!(partition.error_code, NONE, "{response:?}");
    partition.offset
}

#[test]
fn altered_topic_configs_take_effect_on_the_open_partition() {
    let server = TestServer::start_with(&[("log.retention.check.interval.ms", "200")]);
    let mut conn = RawConn::connect(server.kafka_addr());
    // Records stamped in 1970 under retention.ms=-1 (kept forever), one batch per segment.
    create_topic(
        &mut conn,
        "live",
        1,
        &[("retention.ms", "-1"), ("segment.bytes", "100")],
    );
    for i in 0..4 {
        let batch = batch_v2(&[("k", &"x".repeat(150), 1_000 + i)]);
        assert_eq!(conn.produce_raw("live", 0, batch), (NONE, i));
    }
    assert_eq!(log_start_offset(&mut conn, "live"), 0);

    // retention.ms lowered: the next retention pass deletes every segment (the active one too,
    // as Kafka, rolling a new one at the log end).
    alter_topic(&mut conn, "live", &[("retention.ms", SET, Some("60000"))]);
    poll_until("old segments deleted", Duration::from_secs(30), || {
        (log_start_offset(&mut conn, "live") == 4).then_some(())
    });

    // max.message.bytes lowered: a batch over it is refused, and raised again, accepted.
    let big = batch_v2(&[("k", &"x".repeat(2_000), 2_000)]);
    alter_topic(
        &mut conn,
        "live",
        &[("max.message.bytes", SET, Some("1024"))],
    );
    assert_eq!(
        conn.produce_raw("live", 0, big.clone()),
        (MESSAGE_TOO_LARGE, -1)
    );
    alter_topic(&mut conn, "live", &[("max.message.bytes", DELETE, None)]);
    assert_eq!(conn.produce_raw("live", 0, big), (NONE, 4));
}

#[test]
fn an_altered_config_reaches_every_broker_and_min_insync_replicas_takes_effect() {
    let cluster = TestCluster::start(1, 3, &[("default.replication.factor", "3")]);
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    create_topic(&mut conn, "replicated", 3, &[]);
    let view = wait_for_partition(&cluster, 2, "replicated", "a full ISR", |v| {
        v.leader > 0 && v.isr == vec![2, 3, 4]
    });
    let mut leader = RawConn::connect(cluster.node(view.leader).kafka_addr());
    assert_eq!(
        produce_once_served(&mut leader, "replicated", -1, batch_v2(&[("k", "a", 1)])),
        (NONE, 0)
    );

    // Altered through broker 2; every broker serves the new value from its own metadata.
    alter_topic(
        &mut conn,
        "replicated",
        &[("min.insync.replicas", SET, Some("4"))],
    );
    for node in 2..=4 {
        let mut broker = RawConn::connect(cluster.node(node).kafka_addr());
        poll_until(
            &format!("broker {node} describes the new value"),
            Duration::from_secs(30),
            || {
                (overrides(&mut broker, "replicated") == pairs(&[("min.insync.replicas", "4")]))
                    .then_some(())
            },
        );
    }
    // A broker serves new metadata only after applying it to its partitions, so the leader
    // enforces it now. Three in-sync replicas are fewer than four: acks=all is refused before
    // anything is appended; acks=1 still works.
    assert_eq!(
        produce_with_acks(&mut leader, "replicated", -1, batch_v2(&[("k", "b", 2)])),
        (NOT_ENOUGH_REPLICAS, -1)
    );
    assert_eq!(
        produce_with_acks(&mut leader, "replicated", 1, batch_v2(&[("k", "c", 3)])),
        (NONE, 1)
    );
    alter_topic(
        &mut conn,
        "replicated",
        &[("min.insync.replicas", DELETE, None)],
    );
    poll_until(
        "the leader back at the default",
        Duration::from_secs(30),
        || {
            overrides(&mut leader, "replicated")
                .is_empty()
                .then_some(())
        },
    );
    assert_eq!(
        produce_with_acks(&mut leader, "replicated", -1, batch_v2(&[("k", "d", 4)])),
        (NONE, 2)
    );
}
