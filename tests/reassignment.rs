//! Partition reassignment (KIP-455) on a cluster of real processes: AlterPartitionReassignments
//! and ListPartitionReassignments over the wire, three partitions moved at once onto a broker
//! added to the running cluster under a steady acks=all producer, a cancel, Kafka's error codes
//! for bad input, and a reassignment that completes after the active controller was killed
//! mid-way.
//!
//! The move is checked exactly, per partition: every acknowledged record is at its acknowledged
//! offset in the leader's log, which has one record per offset up to the high watermark and only
//! records the producer sent there, and every final replica's segment files hold that same log;
//! no reassignment is left, and the removed replica's directory is gone.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::cluster::{Role, TestCluster};
use common::load::{self, SteadyProducer};
use common::replica::{partition_view, view_on, PartitionView, REPLICATION_TIMEOUT};
use common::wire::RawConn;
use common::{metric_sample, poll_until};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{BrokerId, ListPartitionReassignmentsRequest};
use kafka_protocol::records::RecordBatchDecoder;

const TOPIC: &str = "moving";
/// Partitions the test under load moves, all at once.
const MOVED_PARTITIONS: i32 = 3;
const TIMEOUT: Duration = Duration::from_secs(60);

/// Broker settings for every test: partitions of three replicas, and leadership that moves only
/// because a reassignment moves it.
const SETTINGS: &[(&str, &str)] = &[
    ("default.replication.factor", "3"),
    ("min.insync.replicas", "2"),
    ("auto.leader.rebalance.enable", "false"),
];

#[test]
fn partitions_move_onto_a_new_broker_under_an_acks_all_producer() {
    let mut cluster = TestCluster::start(1, 3, SETTINGS);
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    common::wire::create_topics(&mut conn, &[(TOPIC, MOVED_PARTITIONS)]);
    let before: Vec<PartitionView> = (0..MOVED_PARTITIONS)
        .map(|partition| {
            poll_until("a leader and a full ISR", TIMEOUT, || {
                view(&cluster, 2, partition).filter(|v| v.leader >= 0 && v.isr.len() == 3)
            })
        })
        .collect();
    let added = cluster.add_broker();

    let producer = SteadyProducer::start(cluster.bootstrap(), TOPIC, MOVED_PARTITIONS);
    producer.wait_for_progress("acknowledgements before the move", TIMEOUT);
    // Each leader's place goes to the new broker, in one request: every leader is removed, and
    // the new broker ends up leading every partition.
    let targets: Vec<Vec<i32>> = before.iter().map(|v| leader_replaced(v, added)).collect();
    let moves: Vec<(i32, Option<Vec<i32>>)> = (0..MOVED_PARTITIONS)
        .zip(targets.iter().cloned().map(Some))
        .collect();
    assert_eq!(
        common::wire::alter_partition_reassignments(&mut conn, TOPIC, &moves),
        vec![0; MOVED_PARTITIONS as usize],
        "reassigning to {targets:?}"
    );
    for (partition, target) in (0..MOVED_PARTITIONS).zip(&targets) {
        let mut sorted = target.clone();
        sorted.sort_unstable();
        let after = poll_until("the move completed", TIMEOUT, || {
            view(&cluster, 2, partition).filter(|v| v.replicas == *target && v.isr == sorted)
        });
        assert_eq!(
            after.leader, added,
            "partition {partition}: the first target replica leads once the old leader is removed"
        );
        assert!(after.leader_epoch > before[partition as usize].leader_epoch);
    }
    assert!(list(&mut conn).is_empty(), "no reassignment left");
    producer.wait_for_progress("acknowledgements after the move", TIMEOUT);
    let deliveries = producer.finish();

    let mut leader = RawConn::connect(cluster.node(added).kafka_addr());
    let sent = deliveries.len() as u64;
    let mut summary = Vec::new();
    for (partition, target) in (0..MOVED_PARTITIONS).zip(&targets) {
        let moved_from = &before[partition as usize];
        // The removed replica's copy is gone.
        let removed_dir = cluster
            .node(moved_from.leader)
            .data_dir()
            .join(format!("{TOPIC}-{partition}"));
        poll_until("the removed replica's directory deleted", TIMEOUT, || {
            (!removed_dir.exists()).then_some(())
        });
        // Every final replica holds the leader's log; every acknowledged record of the
        // partition is at its offset in it.
        let high_watermark = poll_until("every replica caught up", TIMEOUT, || {
            let ends: Vec<Option<i64>> = target
                .iter()
                .map(|&id| log_end_offset_of(&cluster, id, partition))
                .collect();
            let first = ends[0]?;
            ends.iter().all(|end| *end == Some(first)).then_some(first)
        });
        let log = read_log(&mut leader, partition, high_watermark);
        assert_eq!(log.len() as i64, high_watermark, "one record per offset");
        let mut acknowledged = 0;
        for (number, outcome) in &deliveries {
            let (record_partition, offset) = outcome
                .as_ref()
                .unwrap_or_else(|e| panic!("record {number} was not acknowledged: {e}"));
            if *record_partition != partition {
                continue;
            }
            assert_eq!(
                log.get(offset).map(Vec::as_slice),
                Some(payload(*number).as_bytes()),
                "record {number} at its acknowledged offset {partition}/{offset}"
            );
            acknowledged += 1;
        }
        // Nothing invented. Without idempotence (librdkafka's default) a send the old leader
        // appended but could not acknowledge before it was removed is retried, and Kafka
        // allows that retry to leave a second copy: counted, not refused.
        let mut copies: BTreeMap<&[u8], usize> = BTreeMap::new();
        for value in log.values() {
            let number = std::str::from_utf8(value)
                .ok()
                .and_then(|text| text.strip_prefix("moving-"))
                .and_then(|number| number.parse::<u64>().ok());
            assert!(
                number.is_some_and(|n| n < sent && partition_of(n) == partition),
                "a record the producer never sent to partition {partition}: {:?}",
                String::from_utf8_lossy(value)
            );
            *copies.entry(value).or_default() += 1;
        }
        let retried = copies.values().filter(|count| **count > 1).count();
        for &id in target {
            let dir = cluster
                .node(id)
                .data_dir()
                .join(format!("{TOPIC}-{partition}"));
            assert_eq!(
                stored_records(&dir),
                log,
                "broker {id}'s copy of partition {partition} equals the leader's log"
            );
        }
        summary.push(format!(
            "partition {partition}: {:?} -> {target:?}, {acknowledged} acknowledged, {} in the \
             log ({retried} written twice by retries)",
            moved_from.replicas,
            log.len()
        ));
    }
    eprintln!("{}", summary.join("\n"));
}

/// Reassignment traffic is counted where it flows (Kafka's `ReassignmentBytesIn/OutPerSec`):
/// the broker a move adds counts every byte it copies as `skald_reassignment_bytes_in_total`,
/// the leader the same bytes as `skald_reassignment_bytes_out_total` — exactly the partition's
/// log — and the replicas that stay count nothing.
#[test]
fn reassignment_bytes_are_counted_by_the_new_replica_and_its_leader() {
    let (mut cluster, mut conn, before) = three_brokers_and_a_topic();
    let mut leader = RawConn::connect(cluster.node(before.leader).kafka_addr());
    for batch in 0..20 {
        let value = format!("{batch:0>100}");
        let records = common::wire::batch_v2(&[("k", &value, 0), ("k", &value, 1)]);
        let (error, _) = leader.produce_raw(TOPIC, 0, records);
        assert_eq!(error, 0, "batch {batch}");
    }
    let added = cluster.add_broker();
    // The leader stays (it is the preferred, first replica), the last follower is replaced.
    assert_eq!(before.leader, before.replicas[0]);
    let target = vec![before.replicas[0], before.replicas[1], added];
    assert_eq!(reassign(&mut conn, Some(target.clone())), 0);
    let mut sorted = target.clone();
    sorted.sort_unstable();
    wait_for(&cluster, 2, "the move completed", |v| {
        v.replicas == target && v.isr == sorted
    });
    let log_size = metric(
        &cluster,
        before.leader,
        &format!(r#"skald_log_size_bytes{{partition="0",topic="{TOPIC}"}}"#),
    );
    assert!(log_size > 0);
    assert_eq!(
        metric(&cluster, added, "skald_reassignment_bytes_in_total"),
        log_size,
        "the new replica copied the whole log"
    );
    assert_eq!(
        metric(
            &cluster,
            before.leader,
            "skald_reassignment_bytes_out_total"
        ),
        log_size,
        "the leader sent it"
    );
    for id in [before.leader, before.replicas[1]] {
        assert_eq!(metric(&cluster, id, "skald_reassignment_bytes_in_total"), 0);
    }
    assert_eq!(
        metric(&cluster, added, "skald_reassignment_bytes_out_total"),
        0
    );
}

/// One unlabelled (or fully labelled) sample of a node's metrics.
fn metric(cluster: &TestCluster, node: i32, name: &str) -> i64 {
    cluster.metric(node, name) as i64
}

#[test]
fn a_reassignment_is_cancelled_and_bad_input_changes_nothing() {
    let (mut cluster, mut conn, before) = three_brokers_and_a_topic();
    // A registered broker that is down: a replica placed there never catches up, so the
    // reassignment stays in progress until it is cancelled.
    let added = cluster.add_broker();
    cluster.stop(added);

    // Bad input: Kafka's error codes, nothing changed.
    let unknown = [before.replicas[0], before.replicas[1], 42];
    let duplicate = [before.replicas[0], before.replicas[0], before.replicas[1]];
    assert_eq!(
        reassign(&mut conn, Some(unknown.to_vec())),
        ResponseError::InvalidReplicaAssignment.code()
    );
    assert_eq!(
        reassign(&mut conn, Some(duplicate.to_vec())),
        ResponseError::InvalidReplicaAssignment.code()
    );
    assert_eq!(
        reassign_topic(&mut conn, "absent", Some(vec![2, 3, 4])),
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert_eq!(
        reassign(&mut conn, None),
        ResponseError::NoReassignmentInProgress.code()
    );
    assert_eq!(view_on(&cluster, 2, TOPIC).as_ref(), Some(&before));
    assert!(list(&mut conn).is_empty());

    let target = vec![added, before.replicas[1], before.replicas[2]];
    assert_eq!(reassign(&mut conn, Some(target.clone())), 0);
    let union: Vec<i32> = target
        .iter()
        .copied()
        .chain(std::iter::once(before.replicas[0]))
        .collect();
    assert_eq!(
        list(&mut conn),
        vec![(0, union.clone(), vec![added], vec![before.replicas[0]])]
    );
    // The active controller (node 1) counts it.
    poll_until("one partition counted as reassigning", TIMEOUT, || {
        (reassigning_partitions(&cluster) == Some(1)).then_some(())
    });
    // Metadata lists every replica the partition has during the move, as Kafka does.
    let during = wait_for(&cluster, 3, "the union of replicas listed", |v| {
        v.replicas == union
    });
    assert_eq!(during.isr, before.isr);

    assert_eq!(reassign(&mut conn, None), 0);
    let reverted: Vec<i32> = union.iter().copied().filter(|id| *id != added).collect();
    wait_for(&cluster, 2, "the original replicas back", |v| {
        v.replicas == reverted && v.isr == before.isr
    });
    assert!(list(&mut conn).is_empty());
    poll_until("no partition counted as reassigning", TIMEOUT, || {
        (reassigning_partitions(&cluster) == Some(0)).then_some(())
    });
    assert_eq!(
        reassign(&mut conn, None),
        ResponseError::NoReassignmentInProgress.code()
    );
    // The broker that was never caught up holds nothing once back.
    cluster.restart(added);
    let dir = cluster.node(added).data_dir().join(format!("{TOPIC}-0"));
    assert!(!dir.exists(), "{} exists", dir.display());
}

#[test]
fn a_reassignment_completes_after_the_active_controller_is_killed_mid_way() {
    let roles = [
        Role::Controller,
        Role::Controller,
        Role::Controller,
        Role::Broker,
        Role::Broker,
        Role::Broker,
    ];
    let mut cluster = TestCluster::start_roles(&roles, SETTINGS);
    let mut conn = RawConn::connect(cluster.node(4).kafka_addr());
    common::wire::create_topics(&mut conn, &[(TOPIC, 1)]);
    let before = wait_for(&cluster, 4, "a leader and a full ISR", |v| v.isr.len() == 3);
    let added = cluster.add_broker();
    // The new broker is down while the reassignment starts, so it is still in progress when the
    // active controller dies.
    cluster.stop(added);
    let target = leader_replaced(&before, added);
    assert_eq!(reassign(&mut conn, Some(target.clone())), 0);
    assert_eq!(list(&mut conn).len(), 1);

    let active = cluster.active_controller(TIMEOUT);
    cluster.kill9(active);
    let successor = poll_until("a new active controller", TIMEOUT, || {
        let next = cluster.active_controller_among(|id| id != active)?;
        Some(next)
    });
    assert_ne!(successor, active);
    // The successor knows the reassignment from the replicated metadata alone.
    poll_until(
        "the reassignment listed by the new controller",
        TIMEOUT,
        || {
            let mut conn = RawConn::try_connect(cluster.node(4).kafka_addr())?;
            (list(&mut conn).len() == 1).then_some(())
        },
    );

    cluster.restart(added);
    let mut sorted_target = target.clone();
    sorted_target.sort_unstable();
    let after = wait_for(&cluster, 4, "the move completed", |v| {
        v.replicas == target && v.isr == sorted_target
    });
    assert_eq!(after.leader, added);
    let mut conn = RawConn::connect(cluster.node(4).kafka_addr());
    assert!(list(&mut conn).is_empty());
    let removed_dir = cluster
        .node(before.leader)
        .data_dir()
        .join(format!("{TOPIC}-0"));
    poll_until("the removed replica's directory deleted", TIMEOUT, || {
        (!removed_dir.exists()).then_some(())
    });
}

/// One controller, brokers 2-4, and [`TOPIC`] on all three with its full ISR: a connection to
/// broker 2 and the partition as it stands.
fn three_brokers_and_a_topic() -> (TestCluster, RawConn, PartitionView) {
    let cluster = TestCluster::start(1, 3, SETTINGS);
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    common::wire::create_topics(&mut conn, &[(TOPIC, 1)]);
    let before = wait_for(&cluster, 2, "a leader and a full ISR", |v| v.isr.len() == 3);
    // Every broker serves the partition before the test writes to its leader directly: broker
    // 2's metadata can be ahead of the leader's own (a produce would get UNKNOWN_TOPIC_OR_PARTITION).
    for via in [3, 4] {
        wait_for(&cluster, via, "a leader and a full ISR", |v| {
            v.isr.len() == 3
        });
    }
    (cluster, conn, before)
}

/// `replicas` with the leader's place given to `added`: a move that removes the leader.
fn leader_replaced(before: &PartitionView, added: i32) -> Vec<i32> {
    before
        .replicas
        .iter()
        .map(|&id| if id == before.leader { added } else { id })
        .collect()
}

/// Sends AlterPartitionReassignments (v1, replication factor changes allowed) for partition 0
/// of [`TOPIC`]; its error code.
fn reassign(conn: &mut RawConn, target: Option<Vec<i32>>) -> i16 {
    reassign_topic(conn, TOPIC, target)
}

fn reassign_topic(conn: &mut RawConn, topic: &str, target: Option<Vec<i32>>) -> i16 {
    common::wire::alter_partition_reassignments(conn, topic, &[(0, target)])[0]
}

/// One reassignment in progress: (partition, replicas, adding, removing).
type Ongoing = (i32, Vec<i32>, Vec<i32>, Vec<i32>);

/// ListPartitionReassignments for every topic: [`TOPIC`]'s reassignments.
fn list(conn: &mut RawConn) -> Vec<Ongoing> {
    let response = conn.request(
        &ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000),
        0,
    );
    assert_eq!(response.error_code, 0, "{response:?}");
    let ids = |ids: &[BrokerId]| ids.iter().map(|id| id.0).collect::<Vec<_>>();
    response
        .topics
        .iter()
        .inspect(|t| assert_eq!(t.name.0.as_str(), TOPIC))
        .flat_map(|t| &t.partitions)
        .map(|p| {
            (
                p.partition_index,
                ids(&p.replicas),
                ids(&p.adding_replicas),
                ids(&p.removing_replicas),
            )
        })
        .collect()
}

/// `skald_cluster_reassigning_partitions` as the active controller (node 1) exports it.
fn reassigning_partitions(cluster: &TestCluster) -> Option<i64> {
    metric_sample(
        cluster.node(1).metrics_addr(),
        "skald_cluster_reassigning_partitions",
    )
    .map(|value| value as i64)
}

/// One partition of [`TOPIC`] as broker `via` sees it now, if it answers.
fn view(cluster: &TestCluster, via: i32, partition: i32) -> Option<PartitionView> {
    let mut conn = RawConn::try_connect(cluster.node(via).kafka_addr())?;
    partition_view(&conn.metadata(Some(&[TOPIC]), false), TOPIC, partition)
}

/// `skald_log_end_offset` of one partition of [`TOPIC`] on one node.
fn log_end_offset_of(cluster: &TestCluster, node: i32, partition: i32) -> Option<i64> {
    let series = format!(r#"skald_log_end_offset{{partition="{partition}",topic="{TOPIC}"}}"#);
    metric_sample(cluster.node(node).metrics_addr(), &series).map(|value| value as i64)
}

fn wait_for(
    cluster: &TestCluster,
    via: i32,
    what: &str,
    accept: impl Fn(&PartitionView) -> bool,
) -> PartitionView {
    poll_until(what, REPLICATION_TIMEOUT.max(TIMEOUT), || {
        view_on(cluster, via, TOPIC).filter(|v| v.leader >= 0 && accept(v))
    })
}

fn payload(number: u64) -> String {
    load::payload(TOPIC, number)
}

/// The producer sends record `number` to this partition.
fn partition_of(number: u64) -> i32 {
    load::partition_of(number, MOVED_PARTITIONS)
}

/// A partition read through its leader from offset 0 up to `high_watermark`: offset → value.
fn read_log(leader: &mut RawConn, partition: i32, high_watermark: i64) -> BTreeMap<i64, Vec<u8>> {
    let mut log = BTreeMap::new();
    let mut offset = 0;
    while offset < high_watermark {
        let (error, _, bytes) = leader.fetch_raw(TOPIC, partition, offset);
        assert_eq!(error, 0, "fetch at offset {offset}");
        let records = decode(bytes);
        assert!(!records.is_empty(), "nothing at offset {offset}");
        for (record_offset, value) in records {
            if record_offset < high_watermark {
                log.insert(record_offset, value);
            }
            offset = record_offset + 1;
        }
    }
    log
}

/// The records in a partition directory's segment files: offset → value.
fn stored_records(dir: &std::path::Path) -> BTreeMap<i64, Vec<u8>> {
    common::segment_files(dir)
        .iter()
        .flat_map(|segment| {
            decode(Bytes::from(
                std::fs::read(segment)
                    .unwrap_or_else(|e| panic!("read {}: {e}", segment.display())),
            ))
        })
        .collect()
}

/// Every whole record batch's records (a fetch may end in a partial batch).
fn decode(mut bytes: Bytes) -> Vec<(i64, Vec<u8>)> {
    let mut records = Vec::new();
    while bytes.len() >= 12 {
        let length = i32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize + 12;
        if bytes.len() < length {
            break;
        }
        let mut batch = bytes.split_to(length);
        let decoded = RecordBatchDecoder::decode(&mut batch).expect("decode a record batch");
        records.extend(decoded.records.into_iter().map(|record| {
            (
                record.offset,
                record.value.map_or(Vec::new(), |value| value.to_vec()),
            )
        }));
    }
    records
}
