//! Multi-node clusters of real processes: 3 controllers (a raft quorum) and 3 brokers on loopback
//! ports. Every broker serves the same metadata; the quorum survives losing its leader; brokers
//! that die are fenced and their partitions' leadership moves.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::TestCluster;
use common::poll_until;
use common::wire::RawConn;
use kafka_protocol::messages::MetadataResponse;

const METADATA_TIMEOUT: Duration = Duration::from_secs(20);

/// Brokers as a broker's Metadata lists them: id -> port.
fn brokers_of(metadata: &MetadataResponse) -> BTreeMap<i32, u16> {
    metadata
        .brokers
        .iter()
        .map(|broker| (broker.node_id.0, broker.port as u16))
        .collect()
}

/// One partition as Metadata lists it: (error code, leader, replicas).
type PartitionState = (i16, i32, Vec<i32>);

/// A topic's partitions as a broker's Metadata lists them.
fn partitions_of(
    metadata: &MetadataResponse,
    topic: &str,
) -> Option<BTreeMap<i32, PartitionState>> {
    let topic = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|name| name.as_str() == topic))?;
    if topic.error_code != 0 {
        return None;
    }
    Some(
        topic
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition_index,
                    (
                        p.error_code,
                        p.leader_id.0,
                        p.replica_nodes.iter().map(|id| id.0).collect(),
                    ),
                )
            })
            .collect(),
    )
}

#[test]
fn every_broker_serves_the_whole_cluster_and_topics_spread_over_all_brokers() {
    let cluster = TestCluster::start(3, 3, &[]);
    let expected: BTreeMap<i32, u16> = cluster
        .brokers()
        .map(|node| (node.node_id, node.kafka_port))
        .collect();
    assert_eq!(expected.keys().copied().collect::<Vec<_>>(), vec![4, 5, 6]);
    for broker in cluster.brokers() {
        let mut conn = RawConn::connect(broker.kafka_addr());
        let listed = poll_until(
            "every broker registered and unfenced",
            METADATA_TIMEOUT,
            || {
                let metadata = conn.metadata(None, false);
                let brokers = brokers_of(&metadata);
                (brokers == expected).then_some(brokers)
            },
        );
        assert_eq!(listed, expected);
    }

    // Created through broker 4, visible on every broker, one leader per broker.
    let mut conn = RawConn::connect(cluster.node(4).kafka_addr());
    common::wire::create_topics(&mut conn, &[("spread", 6)]);
    // The broker that forwarded the request replies only once it serves the result itself.
    assert_eq!(
        partitions_of(&conn.metadata(Some(&["spread"]), false), "spread").map(|p| p.len()),
        Some(6)
    );
    for broker in cluster.brokers() {
        let mut conn = RawConn::connect(broker.kafka_addr());
        let partitions = poll_until("topic on every broker", METADATA_TIMEOUT, || {
            partitions_of(&conn.metadata(Some(&["spread"]), false), "spread")
        });
        assert_eq!(partitions.len(), 6);
        let mut leaders = BTreeMap::new();
        for (error, leader, replicas) in partitions.values() {
            assert_eq!(*error, 0);
            assert_eq!(replicas, &vec![*leader]);
            *leaders.entry(*leader).or_insert(0) += 1;
        }
        assert_eq!(leaders, BTreeMap::from([(4, 2), (5, 2), (6, 2)]));
    }

    // Only the leader serves a partition: the others send the client back to its metadata.
    let partitions = partitions_of(&conn.metadata(Some(&["spread"]), false), "spread").unwrap();
    for (partition, (_, leader, _)) in &partitions {
        for broker in cluster.brokers() {
            let mut conn = RawConn::connect(broker.kafka_addr());
            let batch = common::wire::batch_v2(&[("k", "v", 1_700_000_000_000)]);
            let (produced, _) = conn.produce_raw("spread", *partition, batch);
            let (fetched, _, _) = conn.fetch_raw("spread", *partition, 0);
            if broker.node_id == *leader {
                assert_eq!((produced, fetched), (0, 0), "leader {leader}");
            } else {
                // NOT_LEADER_OR_FOLLOWER
                assert_eq!((produced, fetched), (6, 6), "broker {}", broker.node_id);
            }
        }
    }
}

/// Every topic with its partitions' replicas, as one broker serves them (ids and leaders aside).
fn topics_on(addr: std::net::SocketAddr) -> BTreeMap<String, Vec<Vec<i32>>> {
    let metadata = RawConn::connect(addr).metadata(None, false);
    metadata
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .map(|t| {
            let mut partitions: Vec<_> = t.partitions.iter().collect();
            partitions.sort_by_key(|p| p.partition_index);
            (
                t.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                partitions
                    .iter()
                    .map(|p| p.replica_nodes.iter().map(|id| id.0).collect())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn killing_the_active_controller_loses_no_acknowledged_topic() {
    let mut cluster = TestCluster::start(3, 3, &[]);
    let first_leader = cluster.active_controller(METADATA_TIMEOUT);
    let broker = cluster.node(4).kafka_addr();
    let mut conn = RawConn::connect(broker);
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for i in 0..60 {
        if i == 20 {
            cluster.kill9(first_leader);
        }
        let name = format!("stream-{i:02}");
        match common::wire::create_topics_codes(&mut conn, &[(&name, 1)])[0].1 {
            0 => acknowledged.push(name),
            // The request caught by the kill may have committed on the old leader before the
            // broker's retry reached the new one: then the retry finds the topic (as a Kafka
            // client's retry would). It exists, so it is held to the same check.
            36 => acknowledged.push(name),
            // Otherwise the outcome of a request caught by the failover is unknown.
            code => {
                assert!(
                    [7, 41].contains(&code),
                    "{name}: unexpected error code {code}"
                );
                refused += 1;
            }
        }
    }
    assert!(
        refused <= 3,
        "{refused} CreateTopics failed across one failover"
    );
    assert!(acknowledged.len() >= 57);
    let second_leader = cluster.active_controller(METADATA_TIMEOUT);
    assert_ne!(second_leader, first_leader);
    for node in cluster.brokers() {
        let topics = poll_until(
            "every acknowledged topic on every broker",
            METADATA_TIMEOUT,
            || {
                let topics = topics_on(node.kafka_addr());
                acknowledged
                    .iter()
                    .all(|name| topics.contains_key(name))
                    .then_some(topics)
            },
        );
        assert!(acknowledged.iter().all(|name| topics[name].len() == 1));
    }
}

#[test]
fn stopping_and_restarting_every_node_keeps_the_metadata_identical() {
    let mut cluster = TestCluster::start(3, 3, &[]);
    let mut conn = RawConn::connect(cluster.node(5).kafka_addr());
    common::wire::create_topics(&mut conn, &[("orders", 3), ("audit", 2), ("events", 6)]);
    let before = poll_until("topics on broker 6", METADATA_TIMEOUT, || {
        let topics = topics_on(cluster.node(6).kafka_addr());
        (topics.len() == 3).then_some(topics)
    });
    for node_id in [4, 5, 6, 1, 2, 3] {
        cluster.stop(node_id);
    }
    for node_id in [1, 2, 3, 4, 5, 6] {
        cluster.start_node(node_id);
    }
    for node_id in [1, 2, 3, 4, 5, 6] {
        cluster.wait_node_ready(node_id);
    }
    for node in cluster.brokers() {
        let after = poll_until("leaders back after the restart", METADATA_TIMEOUT, || {
            let metadata = RawConn::connect(node.kafka_addr()).metadata(None, false);
            let all_led = metadata
                .topics
                .iter()
                .all(|t| t.partitions.iter().all(|p| p.leader_id.0 >= 0));
            all_led.then(|| topics_on(node.kafka_addr()))
        });
        assert_eq!(after, before, "metadata on broker {}", node.node_id);
    }
}

#[test]
fn a_killed_broker_is_fenced_and_its_partitions_come_back_when_it_returns() {
    let mut cluster = TestCluster::start(3, 3, &[]);
    let mut conn = RawConn::connect(cluster.node(4).kafka_addr());
    common::wire::create_topics(&mut conn, &[("fenced", 3)]);
    let initial = poll_until("topic on broker 4", METADATA_TIMEOUT, || {
        partitions_of(&conn.metadata(Some(&["fenced"]), false), "fenced")
    });
    let (&on_5, _) = initial
        .iter()
        .find(|(_, (_, leader, _))| *leader == 5)
        .expect("a partition led by broker 5");
    cluster.kill9(5);
    // Fenced after the session timeout: its partition has no leader (RF=1, nowhere to move),
    // the others keep theirs, and broker 5 drops out of the broker list.
    let offline = poll_until("broker 5 fenced", METADATA_TIMEOUT, || {
        let metadata = conn.metadata(Some(&["fenced"]), false);
        let partitions = partitions_of(&metadata, "fenced")?;
        (partitions[&on_5].1 == -1 && !brokers_of(&metadata).contains_key(&5)).then_some(partitions)
    });
    assert_eq!(
        offline[&on_5].0, 5,
        "LEADER_NOT_AVAILABLE for the offline partition"
    );
    for (partition, (error, leader, _)) in &offline {
        if *partition != on_5 {
            assert_eq!((*error, *leader), (0, initial[partition].1));
        }
    }
    cluster.restart(5);
    let back = poll_until("broker 5 back as leader", METADATA_TIMEOUT, || {
        let partitions = partitions_of(&conn.metadata(Some(&["fenced"]), false), "fenced")?;
        (partitions[&on_5].1 == 5).then_some(partitions)
    });
    assert_eq!(back, initial);
}

#[test]
fn a_broker_stopped_with_sigterm_hands_its_leaderships_over_before_it_exits() {
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopic,
    };
    use kafka_protocol::messages::{BrokerId, CreateTopicsRequest};
    let mut cluster = TestCluster::start(3, 3, &[]);
    let mut conn = RawConn::connect(cluster.node(4).kafka_addr());
    // Replicas listed leader first: partition 0 led by 5, partition 1 by 6.
    let assignment = |partition: i32, replicas: &[i32]| {
        CreatableReplicaAssignment::default()
            .with_partition_index(partition)
            .with_broker_ids(replicas.iter().copied().map(BrokerId).collect())
    };
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(common::wire::topic_name("handover"))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(vec![
                assignment(0, &[5, 4, 6]),
                assignment(1, &[6, 5, 4]),
            ])]);
    let response = conn.request(&request, 7);
    assert_eq!(response.topics[0].error_code, 0);
    poll_until("topic on broker 4", METADATA_TIMEOUT, || {
        partitions_of(&conn.metadata(Some(&["handover"]), false), "handover")
    });

    cluster.stop(5);
    // Broker 5 asked to be fenced before exiting: its leadership moved to the next in-sync
    // replica (a new leader epoch) and it left every ISR. (Broker 4 learns of it within one
    // metadata poll.)
    let expected = vec![(4, 1, vec![4, 6]), (6, 0, vec![6, 4])];
    let (state, metadata) = poll_until("leadership moved off broker 5", METADATA_TIMEOUT, || {
        let metadata = conn.metadata(Some(&["handover"]), false);
        let state: Vec<(i32, i32, Vec<i32>)> = metadata.topics[0]
            .partitions
            .iter()
            .map(|p| {
                (
                    p.leader_id.0,
                    p.leader_epoch,
                    p.isr_nodes.iter().map(|id| id.0).collect(),
                )
            })
            .collect();
        (state == expected).then_some((state, metadata))
    });
    assert_eq!(state, expected);
    assert!(!brokers_of(&metadata).contains_key(&5));
}

#[test]
fn a_broker_that_joins_a_running_cluster_gets_new_partitions_at_once() {
    let mut cluster = TestCluster::start(3, 2, &[]);
    let mut conn = RawConn::connect(cluster.node(4).kafka_addr());
    common::wire::create_topics(&mut conn, &[("before", 4)]);
    let joined = cluster.add_broker();
    assert_eq!(joined, 6);
    // The new broker is registered and unfenced before it serves clients, so the next topic's
    // replicas are striped over all three brokers.
    common::wire::create_topics(&mut conn, &[("after", 6)]);
    let partitions = partitions_of(&conn.metadata(Some(&["after"]), false), "after").unwrap();
    let mut leaders = BTreeMap::new();
    for (_, leader, _) in partitions.values() {
        *leaders.entry(*leader).or_insert(0) += 1;
    }
    assert_eq!(leaders, BTreeMap::from([(4, 2), (5, 2), (6, 2)]));
    // Existing partitions stay where they were.
    let before = partitions_of(&conn.metadata(Some(&["before"]), false), "before").unwrap();
    assert!(before
        .values()
        .all(|(_, leader, _)| [4, 5].contains(leader)));
}

/// A node's `skald_metadata_applied_index` gauge.
fn applied_index(node: &common::cluster::ClusterNode) -> Option<u64> {
    let (_, body) = common::http_get(node.metrics_addr(), "/metrics").ok()?;
    body.lines()
        .find_map(|line| line.strip_prefix("skald_metadata_applied_index "))
        .and_then(|value| value.trim().parse().ok())
}

#[test]
fn a_controller_that_missed_compacted_entries_catches_up_by_snapshot() {
    // Snapshots every 20 entries, so the leader drops the log a stopped voter would need.
    let mut cluster = TestCluster::start(
        3,
        1,
        &[("metadata.log.max.entries.between.snapshots", "20")],
    );
    let leader = cluster.active_controller(METADATA_TIMEOUT);
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    cluster.stop(lagging);
    let mut conn = RawConn::connect(cluster.node(4).kafka_addr());
    for i in 0..60 {
        common::wire::create_topics(&mut conn, &[(&format!("snap-{i:02}"), 1)]);
    }
    let target = applied_index(cluster.node(leader)).expect("leader's applied index");
    assert!(target > 60, "applied index {target}");
    cluster.restart(lagging);
    let caught_up = poll_until("the lagging voter caught up", METADATA_TIMEOUT, || {
        applied_index(cluster.node(lagging)).filter(|index| *index >= target)
    });
    assert!(caught_up >= target);
    // It is a full member again: with the old leader gone, the two left elect a leader and the
    // metadata (all 60 topics) is intact.
    cluster.kill9(leader);
    let new_leader = cluster.active_controller(METADATA_TIMEOUT);
    assert_ne!(new_leader, leader);
    common::wire::create_topics(&mut conn, &[("after-snapshot", 1)]);
    let topics = topics_on(cluster.node(4).kafka_addr());
    assert_eq!(topics.keys().filter(|t| t.starts_with("snap-")).count(), 60);
    assert!(topics.contains_key("after-snapshot"));
}

/// Registered brokers as DescribeCluster v2 lists them with fenced ones: (id, fenced).
fn registered(conn: &mut RawConn) -> Vec<(i32, bool)> {
    use kafka_protocol::messages::DescribeClusterRequest;
    let request = DescribeClusterRequest::default().with_include_fenced_brokers(true);
    let response = conn.request(&request, 2);
    assert_eq!(response.error_code, 0);
    let mut brokers: Vec<(i32, bool)> = response
        .brokers
        .iter()
        .map(|b| (b.broker_id.0, b.is_fenced))
        .collect();
    brokers.sort_unstable();
    brokers
}

/// UnregisterBroker, as Kafka: an unknown id gets BROKER_ID_NOT_REGISTERED; a stopped broker is
/// removed from the registered brokers (and again is not registered); started again, it
/// registers anew; a running broker unregistered registers again with its next heartbeat.
#[test]
fn unregister_broker_removes_a_stopped_broker_and_a_running_one_comes_back() {
    use kafka_protocol::messages::{BrokerId, UnregisterBrokerRequest};
    const BROKER_ID_NOT_REGISTERED: i16 = 102;
    // A short heartbeat so the running broker notices promptly.
    let mut cluster = TestCluster::start(1, 3, &[("broker.heartbeat.interval.ms", "500")]);
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    let unregister = |conn: &mut RawConn, id: i32| {
        let request = UnregisterBrokerRequest::default().with_broker_id(BrokerId(id));
        conn.request(&request, 0).error_code
    };
    let settled = |conn: &mut RawConn, expected: &[(i32, bool)], what: &str| {
        poll_until(what, METADATA_TIMEOUT, || {
            (registered(conn) == expected).then_some(())
        })
    };
    settled(
        &mut conn,
        &[(2, false), (3, false), (4, false)],
        "three brokers",
    );
    assert_eq!(unregister(&mut conn, 9), BROKER_ID_NOT_REGISTERED);

    cluster.stop(4);
    settled(
        &mut conn,
        &[(2, false), (3, false), (4, true)],
        "broker 4 fenced",
    );
    assert_eq!(unregister(&mut conn, 4), 0);
    settled(&mut conn, &[(2, false), (3, false)], "broker 4 gone");
    assert_eq!(unregister(&mut conn, 4), BROKER_ID_NOT_REGISTERED);

    cluster.restart(4);
    settled(
        &mut conn,
        &[(2, false), (3, false), (4, false)],
        "broker 4 back",
    );

    // A running broker: its next heartbeat is refused as stale and it registers again (its
    // log shows a second registration) and serves.
    let registrations = |cluster: &TestCluster| {
        std::fs::read_to_string(cluster.node(3).stderr_path())
            .expect("read node 3's stderr")
            .matches("registered with the controller")
            .count()
    };
    assert_eq!(registrations(&cluster), 1);
    assert_eq!(unregister(&mut conn, 3), 0);
    poll_until("broker 3 registered again", METADATA_TIMEOUT, || {
        (registrations(&cluster) == 2).then_some(())
    });
    settled(
        &mut conn,
        &[(2, false), (3, false), (4, false)],
        "broker 3 back",
    );
}
