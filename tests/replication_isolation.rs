//! Replication under network partitions, across real broker processes (issue 5). The brokers'
//! traffic runs through cuttable links (`tests/common/netsplit.rs`,
//! `TestCluster::start_with_links`): isolating a broker cuts it off from the controller and from
//! the followers that fetch from it, while the test still talks to it directly, as a client on
//! its side of the partition would.
//!
//! - An isolated leader cannot acknowledge acks=all writes; the majority side elects a new leader
//!   and carries on; back, the old leader follows, and the log holds exactly what was acknowledged.
//! - A leader that accepted acks=1 records it could not replicate truncates them when it returns:
//!   the new leader's log wins, byte for byte, and stays so once the old leader leads again.
//! - Followers whose path to the leader silently loses every packet give their connection up
//!   seconds after the long-poll, so they are back in the ISR within seconds once it heals.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use common::cluster::TestCluster;
use common::netsplit::{Direction, Link};
use common::poll_until;
use common::replica::{
    log_end_offset, produce_once_served, produce_with_acks, produce_with_timeout, stored_records,
    view_on, wait_for_partition, StoredRecord, REPLICATION_TIMEOUT,
};
use common::wire::{batch_v2, create_topics, RawConn};

/// Kafka's error code for a produce whose acks did not come within its timeout.
const REQUEST_TIMED_OUT: i16 = 7;
/// The produce timeout for writes the isolated leader must not acknowledge.
const ISOLATED_PRODUCE_TIMEOUT_MS: i32 = 3_000;
const BROKERS: [i32; 3] = [2, 3, 4];

/// One controller (node 1) and brokers 2, 3, 4 behind links; topics of 3 replicas that need 2 in
/// sync for acks=all, and followers that leave the ISR 3 s after they stop fetching.
fn start_linked_cluster(elections: &[(&str, &str)]) -> TestCluster {
    let mut overrides = vec![
        ("default.replication.factor", "3"),
        ("min.insync.replicas", "2"),
        ("replica.lag.time.max.ms", "3000"),
    ];
    overrides.extend_from_slice(elections);
    TestCluster::start_with_links(1, 3, &overrides)
}

/// A batch of records with key `k`, one per value.
fn batch(values: &[&str]) -> Bytes {
    let records: Vec<(&str, &str, i64)> = values
        .iter()
        .zip(1_700_000_000_000..)
        .map(|(value, timestamp)| ("k", *value, timestamp))
        .collect();
    batch_v2(&records)
}

/// Polls a fetch from `node` (at its real listener) until partition 0 of `topic` answers with a
/// high watermark of `end`; returns the record bytes from offset 0 up to it.
fn committed_log(cluster: &TestCluster, node: i32, topic: &str, end: i64) -> Bytes {
    poll_until(
        &format!("node {node} to serve {topic} up to a high watermark of {end}"),
        REPLICATION_TIMEOUT,
        || {
            let mut conn = RawConn::try_connect(cluster.node(node).kafka_addr())?;
            let (error, high_watermark, records) = conn.fetch_raw(topic, 0, 0);
            (error == 0 && high_watermark == end).then_some(records)
        },
    )
}

/// (offset, leader epoch, value) of each record.
fn summary(records: &[StoredRecord]) -> Vec<(i64, i32, String)> {
    records
        .iter()
        .map(|r| (r.offset, r.leader_epoch, r.value.clone()))
        .collect()
}

fn wait_for_log_end(cluster: &TestCluster, node: i32, topic: &str, end: i64) {
    poll_until(
        &format!("node {node}'s log of {topic} to end at {end}"),
        REPLICATION_TIMEOUT,
        || log_end_offset(cluster, node, topic).filter(|found| *found == end),
    );
}

#[test]
fn an_isolated_leader_cannot_acknowledge_acks_all_and_the_majority_carries_on() {
    let cluster = start_linked_cluster(&[("auto.leader.rebalance.enable", "false")]);
    let topic = "isolated";
    create_topics(
        &mut RawConn::connect(cluster.node(2).kafka_addr()),
        &[(topic, 1)],
    );
    let first = wait_for_partition(&cluster, 2, topic, "a full ISR", |v| {
        v.leader > 0 && v.isr == BROKERS
    });
    let old = first.leader;
    let majority: Vec<i32> = BROKERS.into_iter().filter(|id| *id != old).collect();

    let mut to_old = RawConn::connect(cluster.node(old).kafka_addr());
    let mut acknowledged = Vec::new();
    for offset in 0..3 {
        let value = format!("before-{offset}");
        let produced = produce_once_served(&mut to_old, topic, -1, batch(&[&value]));
        assert_eq!(produced, (0, offset));
        acknowledged.push((offset, first.leader_epoch, value));
    }

    cluster.isolate(old);
    // Cut off from the controller, the old leader keeps the metadata it had: it leads with an
    // ISR of 3 ≥ min.insync.replicas, so it appends (no NOT_ENOUGH_REPLICAS before the append).
    // Its followers cannot fetch the record, so its high watermark cannot pass it; its ISR
    // shrink is an AlterPartition the controller never receives, and a shrink counts only once
    // committed (so no NOT_ENOUGH_REPLICAS_AFTER_APPEND, which needs the high watermark past the
    // record anyway); it never hears of the new leader (so no NOT_LEADER_OR_FOLLOWER). What is
    // left is Kafka's DelayedProduce expiring: REQUEST_TIMED_OUT, base offset -1.
    assert_eq!(
        produce_with_timeout(
            &mut to_old,
            topic,
            -1,
            ISOLATED_PRODUCE_TIMEOUT_MS,
            batch(&["isolated-acks-all"])
        ),
        (REQUEST_TIMED_OUT, -1)
    );
    // It did append it: only the acknowledgement was withheld.
    wait_for_log_end(&cluster, old, topic, 4);
    // Nor may DeleteRecords reach past the high watermark (3) to it: OFFSET_OUT_OF_RANGE.
    {
        use kafka_protocol::messages::delete_records_request::{
            DeleteRecordsPartition, DeleteRecordsTopic,
        };
        use kafka_protocol::messages::DeleteRecordsRequest;
        let request = DeleteRecordsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(common::wire::topic_name(topic))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(4)])]);
        let response = to_old.request(&request, 2);
        let p = &response.topics[0].partitions[0];
        assert_eq!((p.error_code, p.low_watermark), (1, -1));
    }

    // The controller fences the silent broker and the next in-sync replica leads.
    let second = wait_for_partition(
        &cluster,
        majority[0],
        topic,
        "the majority side to elect another leader",
        |v| v.leader > 0 && v.leader != old && v.isr == majority,
    );
    assert!(majority.contains(&second.leader), "{second:?}");
    assert!(
        second.leader_epoch > first.leader_epoch,
        "{second:?} after {first:?}"
    );
    // Meanwhile the isolated broker still believes it leads at the old epoch: only acks=all kept
    // its write from counting.
    let stale = view_on(&cluster, old, topic).expect("the isolated broker answers Metadata");
    assert_eq!(
        (stale.leader, stale.leader_epoch),
        (old, first.leader_epoch)
    );

    // The majority carries on after the acknowledged records: the isolated one is not there.
    let mut to_new = RawConn::connect(cluster.node(second.leader).kafka_addr());
    for offset in 3..5 {
        let value = format!("during-{offset}");
        let produced = produce_once_served(&mut to_new, topic, -1, batch(&[&value]));
        assert_eq!(produced, (0, offset));
        acknowledged.push((offset, second.leader_epoch, value));
    }

    cluster.heal(old);
    let healed = wait_for_partition(
        &cluster,
        second.leader,
        topic,
        "the old leader back in the ISR",
        |v| v.isr == BROKERS,
    );
    assert_eq!(
        (healed.leader, healed.leader_epoch),
        (second.leader, second.leader_epoch),
        "leadership stays where the election put it"
    );
    wait_for_partition(
        &cluster,
        old,
        topic,
        "the old leader to learn that it follows",
        |v| (v.leader, v.leader_epoch) == (second.leader, second.leader_epoch),
    );
    // With it in the ISR, acks=all needs it too.
    assert_eq!(
        produce_with_acks(&mut to_new, topic, -1, batch(&["after-heal"])),
        (0, 5)
    );
    acknowledged.push((5, second.leader_epoch, "after-heal".to_string()));
    for node in BROKERS {
        wait_for_log_end(&cluster, node, topic, 6);
    }

    let log = stored_records(&committed_log(&cluster, second.leader, topic, 6));
    assert_eq!(
        summary(&log),
        acknowledged,
        "exactly the acknowledged records, at their offsets"
    );
}

#[test]
fn a_returning_leader_truncates_what_it_alone_accepted_and_the_new_leaders_log_wins() {
    // Preferred elections every 250 ms bring leadership back to the old leader (replicas[0]) once
    // it is in sync again, so that its log can be read as a leader's.
    let cluster = start_linked_cluster(&[
        ("auto.leader.rebalance.enable", "true"),
        ("leader.imbalance.check.interval.ms", "250"),
    ]);
    let topic = "diverging";
    create_topics(
        &mut RawConn::connect(cluster.node(2).kafka_addr()),
        &[(topic, 1)],
    );
    let first = wait_for_partition(&cluster, 2, topic, "a full ISR", |v| {
        v.leader > 0 && v.isr == BROKERS
    });
    let old = first.leader;
    assert_eq!(
        old, first.replicas[0],
        "the first leader is the preferred replica: {first:?}"
    );
    let majority: Vec<i32> = BROKERS.into_iter().filter(|id| *id != old).collect();

    let mut to_old = RawConn::connect(cluster.node(old).kafka_addr());
    assert_eq!(
        produce_once_served(&mut to_old, topic, -1, batch(&["before-0"])),
        (0, 0)
    );
    assert_eq!(
        produce_with_acks(&mut to_old, topic, -1, batch(&["before-1"])),
        (0, 1)
    );

    cluster.isolate(old);
    // acks=1 needs no follower: the isolated leader takes these at offsets 2, 3, 4 of its log.
    for (offset, value) in [(2, "lost-2"), (3, "lost-3"), (4, "lost-4")] {
        assert_eq!(
            produce_with_acks(&mut to_old, topic, 1, batch(&[value])),
            (0, offset)
        );
    }
    wait_for_log_end(&cluster, old, topic, 5);

    let second = wait_for_partition(
        &cluster,
        majority[0],
        topic,
        "the majority side to elect another leader",
        |v| v.leader > 0 && v.leader != old && v.isr == majority,
    );
    assert!(
        second.leader_epoch > first.leader_epoch,
        "{second:?} after {first:?}"
    );
    // The new leader's records take the same offsets, in other batches, and end where the old
    // leader's log ends (5): only the leader epochs tell the two logs apart.
    let mut to_new = RawConn::connect(cluster.node(second.leader).kafka_addr());
    assert_eq!(
        produce_once_served(&mut to_new, topic, -1, batch(&["won-2", "won-3"])),
        (0, 2)
    );
    assert_eq!(
        produce_with_acks(&mut to_new, topic, -1, batch(&["won-4"])),
        (0, 4)
    );
    let winning_log = committed_log(&cluster, second.leader, topic, 5);
    let expected = vec![
        (0, first.leader_epoch, "before-0".to_string()),
        (1, first.leader_epoch, "before-1".to_string()),
        (2, second.leader_epoch, "won-2".to_string()),
        (3, second.leader_epoch, "won-3".to_string()),
        (4, second.leader_epoch, "won-4".to_string()),
    ];
    assert_eq!(summary(&stored_records(&winning_log)), expected);

    cluster.heal(old);
    wait_for_partition(
        &cluster,
        majority[0],
        topic,
        "the old leader back in the ISR",
        |v| v.isr == BROKERS,
    );
    let third = wait_for_partition(
        &cluster,
        majority[0],
        topic,
        "the old leader to lead again (preferred election)",
        |v| v.leader == old && v.leader_epoch > second.leader_epoch,
    );
    assert_eq!(third.isr, BROKERS);

    // Leading again, it serves the new leader's log, byte for byte: its acks=1 records are gone.
    let returned_log = committed_log(&cluster, old, topic, 5);
    assert_eq!(
        summary(&stored_records(&returned_log)),
        expected,
        "the old leader's log after its return"
    );
    assert!(
        returned_log == winning_log,
        "the old leader's log differs from the new leader's in its bytes"
    );
    // And it carries on from there.
    assert_eq!(
        produce_once_served(&mut to_old, topic, -1, batch(&["after-return"])),
        (0, 5)
    );
}

/// An echo server on a fresh loopback port, for the link's own test.
/// A metric's value on one node (the first sample whose name and labels start with `series`).
fn metric(cluster: &TestCluster, node: i32, series: &str) -> Option<i64> {
    common::metric_sample(cluster.node(node).metrics_addr(), series).map(|value| value as i64)
}

/// The lag path of the ISR, with every broker still alive and registered: followers that cannot
/// reach the leader stop fetching; after `replica.lag.time.max.ms` the leader itself asks the
/// controller (AlterPartition) to drop them, an acks=all write waiting meanwhile fails with
/// NOT_ENOUGH_REPLICAS_AFTER_APPEND, the next with NOT_ENOUGH_REPLICAS; once they fetch again
/// they are taken back, and the replication gauges and counters say so throughout.
#[test]
fn followers_that_stop_fetching_leave_the_isr_after_the_lag_time_and_rejoin() {
    const NOT_ENOUGH_REPLICAS: i16 = 19;
    const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
    let cluster = start_linked_cluster(&[("auto.leader.rebalance.enable", "false")]);
    let mut admin = RawConn::connect(cluster.node(2).kafka_addr());
    create_topics(&mut admin, &[("lagging", 1)]);
    let view = wait_for_partition(&cluster, 2, "lagging", "a full ISR", |v| {
        v.leader > 0 && v.isr == BROKERS.to_vec()
    });
    let leader = view.leader;
    let mut conn = RawConn::connect(cluster.node(leader).kafka_addr());
    assert_eq!(
        produce_once_served(&mut conn, "lagging", -1, batch(&["a"])),
        (0, 0)
    );
    assert_eq!(
        metric(&cluster, leader, "skald_under_replicated_partitions"),
        Some(0)
    );

    // Only the followers' way to the leader is cut: everyone still reaches the controller.
    cluster.links(leader).listener.cut();
    let waiting = produce_with_timeout(&mut conn, "lagging", -1, 30_000, batch(&["b"]));
    assert_eq!(waiting, (NOT_ENOUGH_REPLICAS_AFTER_APPEND, -1));
    let shrunk = wait_for_partition(
        &cluster,
        leader,
        "lagging",
        "the ISR down to the leader",
        |v| v.isr == vec![leader],
    );
    assert_eq!(shrunk.leader_epoch, view.leader_epoch, "no leader change");
    assert_eq!(
        produce_with_acks(&mut conn, "lagging", -1, batch(&["c"])),
        (NOT_ENOUGH_REPLICAS, -1)
    );
    assert_eq!(
        produce_with_acks(&mut conn, "lagging", 1, batch(&["d"])),
        (0, 2)
    );
    assert_eq!(metric(&cluster, leader, "skald_isr_shrinks_total"), Some(1));
    poll_until(
        "the replication gauges to count the partition",
        REPLICATION_TIMEOUT,
        || {
            (metric(&cluster, leader, "skald_under_replicated_partitions") == Some(1)
                && metric(&cluster, leader, "skald_under_min_isr_partitions") == Some(1))
            .then_some(())
        },
    );

    // Fetching again, the followers catch up and are taken back in.
    cluster.links(leader).listener.heal();
    wait_for_partition(
        &cluster,
        leader,
        "lagging",
        "the followers back in the ISR",
        |v| v.isr == BROKERS.to_vec(),
    );
    assert!(metric(&cluster, leader, "skald_isr_expands_total").is_some_and(|n| n >= 1));
    assert_eq!(
        produce_with_acks(&mut conn, "lagging", -1, batch(&["e"])),
        (0, 3)
    );
    for node in BROKERS {
        wait_for_log_end(&cluster, node, "lagging", 4);
    }
    poll_until("the gauges back to zero", REPLICATION_TIMEOUT, || {
        (metric(&cluster, leader, "skald_under_replicated_partitions") == Some(0)
            && metric(&cluster, leader, "skald_under_min_isr_partitions") == Some(0))
        .then_some(())
    });
}

/// Issue 12: the path from the followers to their leader starts losing every packet (the link
/// black-holes it; nothing is closed, nothing is refused). Their fetches go unanswered: each must
/// be given up a few seconds after its long-poll, not after `replica.socket.timeout.ms` (30 s),
/// so that once the path is back the followers are in the ISR again within seconds.
#[test]
fn followers_give_up_a_silent_connection_to_their_leader_within_seconds() {
    const REJOIN_MAX: Duration = Duration::from_secs(10);
    let cluster = start_linked_cluster(&[("auto.leader.rebalance.enable", "false")]);
    let mut admin = RawConn::connect(cluster.node(2).kafka_addr());
    create_topics(&mut admin, &[("silent", 1)]);
    let view = wait_for_partition(&cluster, 2, "silent", "a full ISR", |v| {
        v.leader > 0 && v.isr == BROKERS.to_vec()
    });
    let leader = view.leader;
    let mut conn = RawConn::connect(cluster.node(leader).kafka_addr());
    assert_eq!(
        produce_once_served(&mut conn, "silent", -1, batch(&["a"])),
        (0, 0)
    );

    cluster.links(leader).listener.black_hole();
    // A record the followers cannot fetch: lagging behind it, they leave the ISR.
    assert_eq!(
        produce_with_acks(&mut conn, "silent", 1, batch(&["b"])),
        (0, 1)
    );
    let shrunk = wait_for_partition(
        &cluster,
        leader,
        "silent",
        "the ISR down to the leader",
        |v| v.isr == vec![leader],
    );
    assert_eq!(shrunk.leader_epoch, view.leader_epoch, "no leader change");

    cluster.links(leader).listener.heal();
    let healed = std::time::Instant::now();
    wait_for_partition(
        &cluster,
        leader,
        "silent",
        "the followers back in the ISR",
        |v| v.isr == BROKERS.to_vec(),
    );
    let took = healed.elapsed();
    assert!(
        took < REJOIN_MAX,
        "the followers took {took:?} to be back in the ISR once the path was"
    );
    for node in BROKERS {
        wait_for_log_end(&cluster, node, "silent", 2);
    }
}

fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo server");
    let addr = listener.local_addr().expect("echo server address");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buffer = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect through the link");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set_read_timeout");
    stream
}

/// Sends `ping` and expects it back.
fn echoes(stream: &mut TcpStream) {
    stream.write_all(b"ping").expect("write through the link");
    let mut echoed = [0u8; 4];
    stream
        .read_exact(&mut echoed)
        .expect("read the echo through the link");
    assert_eq!(&echoed, b"ping");
}

/// Expects the connection to end (EOF or reset) without another byte.
fn closed(stream: &mut TcpStream, what: &str) {
    let mut buffer = [0u8; 16];
    match stream.read(&mut buffer) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: {n} bytes arrived through a cut link"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("{what}: the connection stayed open")
        }
        Err(_) => {}
    }
}

#[test]
fn a_black_holed_link_keeps_connections_open_and_silent_for_good() {
    let link = Link::new(echo_server());
    let mut before = connect(link.addr());
    echoes(&mut before);
    before
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("set_read_timeout");

    link.black_hole();
    silent(&mut before, "a connection made before the black hole");
    let mut during = connect(link.addr());
    during
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("set_read_timeout");
    silent(&mut during, "a connection made during the black hole");

    link.heal();
    silent(&mut before, "a connection that lost bytes, after the heal");
    let mut after = connect(link.addr());
    echoes(&mut after);
    assert_eq!(link.refused(), 0);
}

#[test]
fn a_stalled_direction_holds_its_bytes_until_healed_and_loses_none() {
    for direction in [Direction::ToTarget, Direction::FromTarget] {
        let link = Link::new(echo_server());
        let mut stream = connect(link.addr());
        echoes(&mut stream);
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("set_read_timeout");

        link.stall(direction);
        silent(
            &mut stream,
            &format!("a connection with {direction:?} stalled"),
        );
        link.heal();
        // The held ping, echoed once the stall ends; then the connection carries on.
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set_read_timeout");
        let mut held = [0u8; 4];
        stream.read_exact(&mut held).expect("the held bytes");
        assert_eq!(&held, b"ping", "{direction:?}");
        echoes(&mut stream);
        assert_eq!(link.refused(), 0);
    }
}

/// Sends `ping` and expects neither an answer nor the end of the connection before the read
/// timeout.
fn silent(stream: &mut TcpStream, what: &str) {
    stream.write_all(b"ping").expect("write through the link");
    let mut buffer = [0u8; 16];
    match stream.read(&mut buffer) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Ok(0) => panic!("{what}: the connection was closed"),
        Ok(n) => panic!("{what}: {n} bytes came through a black-holed link"),
        Err(e) => panic!("{what}: {e}"),
    }
}

#[test]
fn a_cut_link_breaks_its_connections_and_refuses_new_ones_until_healed() {
    let link = Link::new(echo_server());
    let mut before = connect(link.addr());
    echoes(&mut before);

    link.cut();
    assert!(link.is_cut());
    closed(&mut before, "a connection made before the cut");
    let mut during = connect(link.addr());
    let _ = during.write_all(b"ping");
    closed(&mut during, "a connection made during the cut");
    assert_eq!(link.refused(), 1);

    link.heal();
    let mut after = connect(link.addr());
    echoes(&mut after);
    echoes(&mut after);
}
