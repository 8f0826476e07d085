//! Broker liveness across controller faults (issue 12): a stalled, stopped or restarted node
//! costs the cluster that node only. Three combined nodes (each a broker and a controller voter),
//! a replicated topic under acks=all load, and one fault at a time:
//!
//! - the active controller is paused (SIGSTOP) for 15 s: a new controller is elected, fences the
//!   paused broker and nobody else, and every partition takes acks=all writes again within
//!   `broker.session.timeout.ms` + 2 s of the pause;
//! - a node is restarted (SIGTERM, start): no other broker is fenced;
//! - a node exits within 2 s of SIGTERM, with its peers up or already gone;
//! - a broker killed (kill -9) is fenced at once, without waiting out its session (its process
//!   is evidently gone), and so is a killed active controller's broker by the next controller; a
//!   paused one is not, but the partitions it follows stop waiting for it after
//!   `replica.unresponsive.time.max.ms`;
//! - a paused partition leader, silent and not answering ApiVersions, is fenced as unresponsive
//!   long before its session, and rejoins every ISR when it resumes; a live broker whose
//!   heartbeats are lost answers the probe and is not fenced.
//!
//! Whether a broker was fenced for a missed session is read from every node's
//! `skald_controller_timed_out_broker_heartbeats_total`, and before its session from
//! `skald_controller_early_fenced_brokers_total`, counted by whichever node was the active
//! controller when it decided.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::cluster::{Role, TestCluster};
use common::poll_until;
use common::replica::partition_view;
use common::wire::{batch_v2, create_topics, topic_name, RawConn};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, ProduceRequest};

const SESSION_TIMEOUT_MS: u64 = 4_000;
const TOPIC: &str = "load";
const PARTITIONS: i32 = 12;
/// How long the paused controller stays paused (the tracker's reproducer).
const PAUSE: Duration = Duration::from_secs(15);
/// How long a node may take to exit after SIGTERM.
const EXIT_MAX: Duration = Duration::from_secs(2);
/// How long a probe waits for one answer; a paused node never answers.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1_500);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Metadata v12 and Produce v9: both served by every Skald broker, so the probes need no
/// ApiVersions round trip (which would block on a paused node).
const METADATA_VERSION: i16 = 12;
const PRODUCE_VERSION: i16 = 9;

/// The settings every cluster here runs with.
fn overrides(session: &str) -> [(&str, &str); 5] {
    [
        // Kafka's ratio of heartbeat interval to session (2 s : 9 s), scaled down.
        ("broker.session.timeout.ms", session),
        ("broker.heartbeat.interval.ms", "1000"),
        ("default.replication.factor", "3"),
        ("min.insync.replicas", "2"),
        ("auto.leader.rebalance.enable", "false"),
    ]
}

/// Three combined nodes with [`TOPIC`] created and fully in sync.
fn start_cluster() -> TestCluster {
    let session = SESSION_TIMEOUT_MS.to_string();
    let cluster = TestCluster::start_roles(&[Role::Combined; 3], &overrides(&session));
    create_topic(&cluster);
    cluster
}

fn create_topic(cluster: &TestCluster) {
    let first = cluster.brokers().next().expect("a broker").node_id;
    create_topics(
        &mut RawConn::connect(cluster.node(first).kafka_addr()),
        &[(TOPIC, PARTITIONS)],
    );
    wait_for_full_isrs(&addrs(cluster), first);
}

/// Every broker's Kafka listener, by node id: what the probes and the load need of the cluster.
type Addrs = BTreeMap<i32, SocketAddr>;

fn addrs(cluster: &TestCluster) -> Arc<Addrs> {
    Arc::new(
        cluster
            .brokers()
            .map(|node| (node.node_id, node.kafka_addr()))
            .collect(),
    )
}

/// The brokers, sorted: every partition's replicas, and its ISR when all are in sync.
fn broker_ids(addrs: &Addrs) -> Vec<i32> {
    addrs.keys().copied().collect()
}

/// Metadata of [`TOPIC`] from `via`, or `None` if it does not answer in time.
fn metadata(addrs: &Addrs, via: i32) -> Option<MetadataResponse> {
    let mut conn = RawConn::try_connect(addrs[&via])?;
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(TOPIC)))
        ]))
        .with_allow_auto_topic_creation(false);
    conn.try_request(&request, METADATA_VERSION, PROBE_TIMEOUT)
}

/// Each partition of [`TOPIC`] as `via` serves it: (leader, sorted ISR).
fn partitions(addrs: &Addrs, via: i32) -> Option<BTreeMap<i32, (i32, Vec<i32>)>> {
    let metadata = metadata(addrs, via)?;
    (0..PARTITIONS)
        .map(|p| {
            let view = partition_view(&metadata, TOPIC, p)?;
            Some((p, (view.leader, view.isr)))
        })
        .collect()
}

/// One acks=all produce of one record to `partition` at `leader`: its error code, or `None` if
/// the leader did not answer in time.
fn produce_acks_all(addrs: &Addrs, leader: i32, partition: i32, value: &str) -> Option<i16> {
    produce_acks_all_at(addrs, leader, partition, value).map(|(code, _)| code)
}

/// [`produce_acks_all`], with the base offset the leader gave the record.
fn produce_acks_all_at(
    addrs: &Addrs,
    leader: i32,
    partition: i32,
    value: &str,
) -> Option<(i16, i64)> {
    let mut conn = RawConn::try_connect(addrs[&leader])?;
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(TOPIC))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch_v2(&[("k", value, 1_700_000_000_000)])))])]);
    let response = conn.try_request(&request, PRODUCE_VERSION, PROBE_TIMEOUT)?;
    let answer = &response.responses[0].partition_responses[0];
    Some((answer.error_code, answer.base_offset))
}

/// Produces acks=all to every partition's leader, round after round, until stopped; counts the
/// acknowledged writes. The load the faults happen under.
struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(addrs: &Arc<Addrs>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicU64::new(0));
        // One producer per broker, each asking its own broker's metadata where the leaders are.
        let threads = broker_ids(addrs)
            .into_iter()
            .map(|via| {
                let (addrs, stop, acknowledged) = (
                    Arc::clone(addrs),
                    Arc::clone(&stop),
                    Arc::clone(&acknowledged),
                );
                std::thread::spawn(move || {
                    let mut round = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        round += 1;
                        let Some(leaders) = partitions(&addrs, via) else {
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        };
                        for (partition, (leader, _)) in leaders {
                            if stop.load(Ordering::Acquire) || leader <= 0 {
                                continue;
                            }
                            let value = format!("{via}-{round}");
                            if produce_acks_all(&addrs, leader, partition, &value) == Some(0) {
                                acknowledged.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            acknowledged,
            threads,
        }
    }

    fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Relaxed)
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for thread in self.threads {
            thread.join().expect("load thread");
        }
    }
}

/// Counter `name` per broker, summed over every controller's metrics (`skip` is not asked: a
/// paused node would not answer), counting only samples labelled `label="value"` when given.
fn per_broker(
    cluster: &TestCluster,
    skip: Option<i32>,
    name: &str,
    label: Option<(&str, &str)>,
) -> BTreeMap<i32, u64> {
    let mut total = BTreeMap::new();
    let controllers = cluster.controllers().map(|node| node.node_id);
    for node in controllers.filter(|id| Some(*id) != skip) {
        let (_, body) = common::http_get(cluster.node(node).metrics_addr(), "/metrics")
            .unwrap_or_else(|e| panic!("metrics of node {node}: {e}"));
        for line in body.lines() {
            let Some(rest) = line
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('{'))
            else {
                continue;
            };
            let (labels, value) = rest.split_once("} ").expect("a labelled sample");
            let labels: BTreeMap<&str, &str> = labels
                .split(',')
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("label=\"value\"");
                    (key, value.trim_matches('"'))
                })
                .collect();
            if label.is_some_and(|(key, wanted)| labels.get(key) != Some(&wanted)) {
                continue;
            }
            let broker: i32 = labels["broker_id"].parse().expect("a broker id");
            let value: f64 = value.trim().parse().expect("a sample value");
            *total.entry(broker).or_insert(0) += value as u64;
        }
    }
    total
}

/// Session fencings per broker.
fn session_fencings(cluster: &TestCluster, skip: Option<i32>) -> BTreeMap<i32, u64> {
    per_broker(
        cluster,
        skip,
        "skald_controller_timed_out_broker_heartbeats_total",
        None,
    )
}

/// Fencings of unresponsive brokers (silent, no answer to ApiVersions) per broker.
fn unresponsive_fencings(cluster: &TestCluster, skip: Option<i32>) -> BTreeMap<i32, u64> {
    per_broker(
        cluster,
        skip,
        "skald_controller_early_fenced_brokers_total",
        Some(("reason", "unresponsive")),
    )
}

/// Fencings for silence, per broker: a missed session, or silent and unresponsive. What can
/// hit a live broker if liveness is judged wrong (evident death needs a refused listener).
fn silence_fencings(cluster: &TestCluster, skip: Option<i32>) -> BTreeMap<i32, u64> {
    let mut total = session_fencings(cluster, skip);
    for (broker, count) in unresponsive_fencings(cluster, skip) {
        *total.entry(broker).or_insert(0) += count;
    }
    total
}

/// A broker other than `faulty`.
fn healthy_broker(addrs: &Addrs, faulty: i32) -> i32 {
    *addrs
        .keys()
        .find(|id| **id != faulty)
        .expect("a healthy broker")
}

/// Polls until every partition, as `via` sees it, takes an acks=all write at its leader. A
/// partition still led by `down` (a paused node, which would only time the probe out) is not
/// writable yet.
fn wait_until_every_partition_takes_acks_all(
    addrs: &Addrs,
    via: i32,
    down: Option<i32>,
    timeout: Duration,
) {
    let mut writable = BTreeMap::new();
    poll_until("every partition to take an acks=all write", timeout, || {
        let leaders = partitions(addrs, via)?;
        let probes: Vec<(i32, i32)> = leaders
            .into_iter()
            .filter(|(partition, (leader, _))| {
                *leader > 0 && Some(*leader) != down && !writable.contains_key(partition)
            })
            .map(|(partition, (leader, _))| (partition, leader))
            .collect();
        // All at once: one partition's wait must not delay noticing the others'.
        let written: Vec<(i32, i32)> = std::thread::scope(|scope| {
            let probing: Vec<_> = probes
                .into_iter()
                .map(|(partition, leader)| {
                    scope.spawn(move || {
                        let code = produce_acks_all(addrs, leader, partition, "probe");
                        (code == Some(0)).then_some((partition, leader))
                    })
                })
                .collect();
            probing
                .into_iter()
                .filter_map(|probe| probe.join().expect("probe thread"))
                .collect()
        });
        writable.extend(written);
        (writable.len() == PARTITIONS as usize).then_some(())
    });
}

/// Keeps checking, for `window`, that no broker but those in `allowed` was fenced for silence
/// (holding a fault, or watching the cluster settle after one).
fn watch_fencings(cluster: &TestCluster, skip: Option<i32>, allowed: &[i32], window: Duration) {
    let until = Instant::now() + window;
    while Instant::now() < until {
        let fenced = silence_fencings(cluster, skip);
        assert!(
            fenced.keys().all(|broker| allowed.contains(broker)),
            "healthy brokers fenced: {fenced:?} (only {allowed:?} may be)"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until every partition, as `via` sees it, has a leader and all three nodes in its ISR.
fn wait_for_full_isrs(addrs: &Addrs, via: i32) {
    poll_until(
        "every partition with all three nodes in sync",
        SETTLE_TIMEOUT,
        || {
            partitions(addrs, via)?
                .values()
                .all(|(leader, isr)| *leader > 0 && *isr == broker_ids(addrs))
                .then_some(())
        },
    );
}

#[test]
fn pausing_the_active_controller_fences_the_paused_broker_only() {
    let cluster = start_cluster();
    let addrs = addrs(&cluster);
    let paused = cluster.active_controller(SETTLE_TIMEOUT);
    let healthy = healthy_broker(&addrs, paused);
    let load = Load::start(&addrs);
    poll_until("the load to be acknowledged", SETTLE_TIMEOUT, || {
        (load.acknowledged() >= 50).then_some(())
    });
    assert_eq!(silence_fencings(&cluster, None), BTreeMap::new());

    cluster.pause(paused);
    let paused_at = Instant::now();
    wait_until_every_partition_takes_acks_all(&addrs, healthy, Some(paused), SETTLE_TIMEOUT);
    let writable_after = paused_at.elapsed();
    eprintln!("measured: every partition took acks=all writes {writable_after:?} after the pause");
    // Every partition it led or followed had to get past it, which only its fencing does: for
    // its session or, since it answers nothing, as unresponsive, whichever came first. (A second
    // election while it is paused fences it again: every new controller does, once.)
    let fenced = silence_fencings(&cluster, Some(paused));
    assert_eq!(
        fenced.keys().copied().collect::<Vec<_>>(),
        vec![paused],
        "only the paused node is fenced: {fenced:?}"
    );
    assert!(
        writable_after <= Duration::from_millis(SESSION_TIMEOUT_MS + 2_000),
        "every partition took acks=all writes again only {writable_after:?} after the pause"
    );
    watch_fencings(
        &cluster,
        Some(paused),
        &[paused],
        PAUSE.saturating_sub(paused_at.elapsed()),
    );

    // Back, the old controller follows the new one: it fences nobody with what it knew before
    // the pause, and rejoins every ISR.
    cluster.resume(paused);
    let acknowledged = load.acknowledged();
    wait_for_full_isrs(&addrs, healthy);
    watch_fencings(
        &cluster,
        None,
        &[paused],
        Duration::from_millis(2 * SESSION_TIMEOUT_MS),
    );
    let fenced = silence_fencings(&cluster, None);
    assert_eq!(
        fenced.keys().copied().collect::<Vec<_>>(),
        vec![paused],
        "only the paused node was ever fenced: {fenced:?}"
    );
    assert!(load.acknowledged() > acknowledged, "the load goes on");
    load.stop();
}

/// How a controller is taken off the network.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// Its connections break and new ones are refused.
    Cut,
    /// Nothing it sends or is sent arrives, and nothing tells anyone.
    Silent,
}

/// Three controller-only nodes and three healthy brokers, every connection among them through
/// links; the active controller is taken off the network for 15 s under load. No broker may be
/// fenced, by the new controller or by the old one when it comes back.
fn controller_outage_fences_no_broker(outage: Outage) {
    let session = SESSION_TIMEOUT_MS.to_string();
    let cluster = TestCluster::start_with_links(3, 3, &overrides(&session));
    create_topic(&cluster);
    let addrs = addrs(&cluster);
    let lost = cluster.active_controller(SETTLE_TIMEOUT);
    let load = Load::start(&addrs);
    poll_until("the load to be acknowledged", SETTLE_TIMEOUT, || {
        (load.acknowledged() >= 50).then_some(())
    });

    match outage {
        Outage::Cut => cluster.cut_off_controller(lost),
        Outage::Silent => cluster.silence_controller(lost),
    }
    let lost_at = Instant::now();
    let elected = poll_until("another active controller", SETTLE_TIMEOUT, || {
        cluster
            .controllers()
            .map(|node| node.node_id)
            .filter(|id| *id != lost)
            .find(|id| {
                common::http_get(cluster.node(*id).metrics_addr(), "/metrics").is_ok_and(
                    |(_, body)| body.lines().any(|line| line == "skald_controller_active 1"),
                )
            })
    });
    eprintln!(
        "measured: {outage:?}: controller {elected} active {:?} after {lost} was lost",
        lost_at.elapsed()
    );
    let via = *addrs.keys().next().expect("a broker");
    let acknowledged = load.acknowledged();
    watch_fencings(&cluster, None, &[], PAUSE.saturating_sub(lost_at.elapsed()));
    wait_until_every_partition_takes_acks_all(&addrs, via, None, SETTLE_TIMEOUT);
    assert!(load.acknowledged() > acknowledged, "the load went on");

    cluster.reconnect_controller(lost);
    watch_fencings(
        &cluster,
        None,
        &[],
        Duration::from_millis(2 * SESSION_TIMEOUT_MS),
    );
    assert_eq!(silence_fencings(&cluster, None), BTreeMap::new());
    wait_for_full_isrs(&addrs, via);
    load.stop();
}

#[test]
fn cutting_off_the_active_controller_fences_no_broker() {
    controller_outage_fences_no_broker(Outage::Cut);
}

#[test]
fn silencing_the_active_controller_fences_no_broker() {
    controller_outage_fences_no_broker(Outage::Silent);
}

#[test]
fn restarting_a_node_fences_no_other_broker() {
    let mut cluster = start_cluster();
    let addrs = addrs(&cluster);
    let load = Load::start(&addrs);
    poll_until("the load to be acknowledged", SETTLE_TIMEOUT, || {
        (load.acknowledged() >= 50).then_some(())
    });
    // The active controller first (its restart moves the controller too), then one that is not.
    let active = cluster.active_controller(SETTLE_TIMEOUT);
    let follower = *addrs.keys().find(|id| **id != active).expect("a follower");
    for restarted in [active, follower] {
        let healthy = healthy_broker(&addrs, restarted);
        let took = cluster.stop_timed(restarted);
        eprintln!("measured: node {restarted} exited {took:?} after SIGTERM");
        assert!(
            took <= EXIT_MAX,
            "node {restarted} took {took:?} to exit after SIGTERM"
        );
        cluster.restart(restarted);
        wait_for_full_isrs(&addrs, healthy);
        // The tracker's runs saw a healthy broker fenced within 30 s of a restart.
        watch_fencings(&cluster, None, &[], Duration::from_secs(10));
        assert_eq!(silence_fencings(&cluster, None), BTreeMap::new());
        wait_until_every_partition_takes_acks_all(&addrs, healthy, None, SETTLE_TIMEOUT);
    }
    load.stop();
}

#[test]
fn a_node_exits_within_two_seconds_of_sigterm_even_with_its_peers_gone() {
    let mut cluster = start_cluster();
    cluster.kill9(1);
    cluster.kill9(2);
    let took = cluster.stop_timed(3);
    eprintln!("measured: the last node exited {took:?} after SIGTERM");
    assert!(
        took <= EXIT_MAX,
        "the last node took {took:?} to exit after SIGTERM"
    );
}

/// 880 partitions (11 topics of 80, replication factor 3) on a cluster of three combined nodes.
const MANY_PARTITIONS: usize = 880;

/// Creates the [`MANY_PARTITIONS`] and waits until node `via` shows each led with `isr_size` (or
/// more) replicas in sync.
fn create_many_partitions(addrs: &Addrs, via: i32) {
    let topics: Vec<String> = (0..11).map(|t| format!("many-{t}")).collect();
    let mut conn = RawConn::connect(addrs[&via]);
    // One topic at a time: all 2,640 replicas at once can take a loaded test machine's disk
    // longer than the controller's request timeout to open.
    for topic in &topics {
        create_topics(&mut conn, &[(topic.as_str(), 80)]);
    }
    wait_for_many_partitions(addrs, via, 1, SETTLE_TIMEOUT);
}

/// Waits until node `via` shows all [`MANY_PARTITIONS`] led, each with at least `isr_size`
/// replicas in sync.
fn wait_for_many_partitions(addrs: &Addrs, via: i32, isr_size: usize, timeout: Duration) {
    poll_until(
        &format!("{MANY_PARTITIONS} partitions led with {isr_size} in sync"),
        timeout,
        || {
            let mut conn = RawConn::try_connect(addrs[&via])?;
            let metadata = conn.try_request(
                &MetadataRequest::default().with_topics(None),
                METADATA_VERSION,
                PROBE_TIMEOUT,
            )?;
            let ready = metadata
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .filter(|p| p.leader_id.0 > 0 && p.isr_nodes.len() >= isr_size)
                .count();
            (ready == MANY_PARTITIONS).then_some(())
        },
    );
}

/// The tracker saw over 10 s with about 880 partitions: the flush and checkpoints of every log
/// must fit in the budget too.
#[test]
fn a_node_with_880_partitions_exits_within_two_seconds_of_sigterm() {
    let session = SESSION_TIMEOUT_MS.to_string();
    let mut cluster = TestCluster::start_roles(&[Role::Combined; 3], &overrides(&session));
    let addrs = addrs(&cluster);
    create_many_partitions(&addrs, 1);
    let took = cluster.stop_timed(3);
    eprintln!("measured: a node with 880 partitions exited {took:?} after SIGTERM");
    assert!(
        took <= EXIT_MAX,
        "node 3 took {took:?} to exit after SIGTERM"
    );
}

/// The tracker's restart fencing: a node that comes back must be taken back into the ISR of
/// every partition it hosts, hundreds of AlterPartitions from the leaders; queued one per
/// partition on the connection the leaders' heartbeats also took, they held those heartbeats
/// up past the session.
#[test]
fn a_node_with_880_partitions_rejoining_fences_no_other_broker() {
    let session = SESSION_TIMEOUT_MS.to_string();
    let mut cluster = TestCluster::start_roles(&[Role::Combined; 3], &overrides(&session));
    let addrs = addrs(&cluster);
    create_many_partitions(&addrs, 1);
    wait_for_many_partitions(&addrs, 1, 3, Duration::from_secs(90));
    // A node that is not the controller: the leaders' ISR changes then cross the network.
    let active = cluster.active_controller(SETTLE_TIMEOUT);
    let restarted = *addrs.keys().find(|id| **id != active).expect("a follower");
    let healthy = healthy_broker(&addrs, restarted);

    cluster.stop(restarted);
    wait_for_many_partitions(&addrs, healthy, 2, SETTLE_TIMEOUT);
    cluster.restart(restarted);
    let back = Instant::now();
    wait_for_many_partitions(&addrs, healthy, 3, Duration::from_secs(90));
    eprintln!(
        "measured: node {restarted} back in all {MANY_PARTITIONS} ISRs {:?} after it served again",
        back.elapsed()
    );
    watch_fencings(
        &cluster,
        None,
        &[],
        Duration::from_millis(2 * SESSION_TIMEOUT_MS),
    );
    assert_eq!(silence_fencings(&cluster, None), BTreeMap::new());
}

/// A session far longer than any poll here: what these tests see within a poll cannot come
/// from a session expiring.
const LONG_SESSION_MS: &str = "120000";

/// The brokers `via` lists in Metadata: the unfenced ones.
fn listed_brokers(addrs: &Addrs, via: i32) -> Option<Vec<i32>> {
    let mut listed: Vec<i32> = metadata(addrs, via)?
        .brokers
        .iter()
        .map(|broker| broker.node_id.0)
        .collect();
    listed.sort_unstable();
    Some(listed)
}

/// Polls `via` until `gone` is fenced (no longer listed) and every partition is led by another
/// broker with all the others, and only them, in sync.
fn wait_until_fenced_and_replaced(addrs: &Addrs, via: i32, gone: i32) {
    let live: Vec<i32> = broker_ids(addrs)
        .into_iter()
        .filter(|id| *id != gone)
        .collect();
    poll_until(
        &format!("broker {gone} fenced, every partition led and in sync without it"),
        SETTLE_TIMEOUT,
        || {
            let listed = listed_brokers(addrs, via)?;
            let moved = partitions(addrs, via)?
                .values()
                .all(|(leader, isr)| *leader > 0 && *leader != gone && *isr == live);
            (listed == live && moved).then_some(())
        },
    );
}

/// [`overrides`] with a [`LONG_SESSION_MS`] session and `replica.lag.time.max.ms`: Kafka's lag
/// rule out of the way too, so only an early shrink explains one within a poll.
fn long_session_settings() -> Vec<(&'static str, &'static str)> {
    let mut settings = overrides(LONG_SESSION_MS).to_vec();
    settings.push(("replica.lag.time.max.ms", LONG_SESSION_MS));
    settings
}

/// One controller and three brokers with [`TOPIC`] in sync, under a [`LONG_SESSION_MS`] session
/// and `replica.lag.time.max.ms`, and `extra` settings.
fn start_brokers_with_a_long_session(extra: &[(&str, &str)]) -> (TestCluster, Arc<Addrs>) {
    let mut settings = long_session_settings();
    settings.extend_from_slice(extra);
    let cluster = TestCluster::start(1, 3, &settings);
    create_topic(&cluster);
    let addrs = addrs(&cluster);
    (cluster, addrs)
}

/// Evident death: a killed broker's connection to the controller closes and its listener
/// refuses connections, so the controller fences it without waiting out its session; its
/// leaderships move and it leaves every ISR.
#[test]
fn a_killed_leader_is_fenced_and_replaced_without_waiting_out_its_session() {
    let (mut cluster, addrs) = start_brokers_with_a_long_session(&[]);
    let first = broker_ids(&addrs)[0];
    let leaders = partitions(&addrs, first).expect("metadata");
    let killed = leaders[&0].0;
    let healthy = healthy_broker(&addrs, killed);
    assert!(leaders.values().filter(|(l, _)| *l == killed).count() > 0);

    cluster.kill9(killed);
    wait_until_fenced_and_replaced(&addrs, healthy, killed);
    wait_until_every_partition_takes_acks_all(&addrs, healthy, Some(killed), SETTLE_TIMEOUT);
    assert_eq!(
        session_fencings(&cluster, None),
        BTreeMap::new(),
        "fenced for its death, not for a missed session"
    );

    cluster.restart(killed);
    wait_for_full_isrs(&addrs, healthy);
    assert_eq!(listed_brokers(&addrs, healthy), Some(broker_ids(&addrs)));
}

/// The node that dies is the active controller of three combined nodes: its broker's heartbeats
/// went to itself, so the new controller sees no connection of it close — only silence from the
/// election on. After two heartbeat intervals of it, the new controller probes the node's
/// listener, finds it refusing, and fences it without waiting out the session.
#[test]
fn a_killed_active_controller_is_fenced_by_its_successor_without_waiting_out_its_session() {
    let mut cluster = TestCluster::start_roles(&[Role::Combined; 3], &long_session_settings());
    create_topic(&cluster);
    let addrs = addrs(&cluster);
    let killed = cluster.active_controller(SETTLE_TIMEOUT);
    let healthy = healthy_broker(&addrs, killed);

    cluster.kill9(killed);
    wait_until_fenced_and_replaced(&addrs, healthy, killed);
    wait_until_every_partition_takes_acks_all(&addrs, healthy, Some(killed), SETTLE_TIMEOUT);
    assert_eq!(session_fencings(&cluster, Some(killed)), BTreeMap::new());

    cluster.restart(killed);
    wait_for_full_isrs(&addrs, healthy);
}

/// A paused broker keeps its sockets open: no evidence of death, so with unresponsive fencing off
/// it is not fenced before its session; but the partitions it follows stop waiting for it once
/// it has been silent for `replica.unresponsive.time.max.ms`, well before
/// `replica.lag.time.max.ms`.
#[test]
fn a_paused_follower_leaves_the_isr_early_and_is_not_fenced() {
    let (cluster, addrs) =
        start_brokers_with_a_long_session(&[("broker.unresponsive.fencing.enable", "false")]);
    let brokers = broker_ids(&addrs);
    let paused = brokers[2];
    let healthy = brokers[0];
    let others: Vec<i32> = brokers.iter().copied().filter(|id| *id != paused).collect();

    cluster.pause(paused);
    let mut writable = BTreeMap::new();
    poll_until(
        "every partition the paused broker follows to take acks=all writes without it",
        SETTLE_TIMEOUT,
        || {
            let followed: Vec<(i32, i32)> = partitions(&addrs, healthy)?
                .into_iter()
                .filter(|(_, (leader, _))| *leader != paused)
                .map(|(partition, (leader, _))| (partition, leader))
                .collect();
            for (partition, leader) in &followed {
                if !writable.contains_key(partition)
                    && produce_acks_all(&addrs, *leader, *partition, "probe") == Some(0)
                {
                    writable.insert(*partition, *leader);
                }
            }
            (writable.len() == followed.len()).then_some(())
        },
    );
    let views = partitions(&addrs, healthy).expect("metadata");
    for (partition, (leader, isr)) in &views {
        if *leader != paused {
            assert_eq!(
                isr, &others,
                "partition {partition} without the paused follower"
            );
        }
    }
    assert_eq!(
        listed_brokers(&addrs, healthy),
        Some(brokers.clone()),
        "a paused broker is not fenced before its session"
    );
    assert_eq!(session_fencings(&cluster, None), BTreeMap::new());

    cluster.resume(paused);
    wait_for_full_isrs(&addrs, healthy);
}

/// Error codes with which a leader refuses a produce before appending anything: retrying one
/// cannot write a record twice.
fn refused_before_append(code: i16) -> bool {
    // UNKNOWN_TOPIC_OR_PARTITION (a new topic's leader has not opened its log yet: Metadata
    // shows a new partition's ISR in full from its creation), LEADER_NOT_AVAILABLE,
    // NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS.
    matches!(code, 3 | 5 | 6 | 19)
}

/// Writes `value` acks=all to every partition at its leader as `via` sees it (polling while a
/// leader refuses before appending) and asserts each lands at `offset`.
fn write_everywhere_at(addrs: &Addrs, via: i32, value: &str, offset: i64) {
    let mut written = BTreeMap::new();
    poll_until(
        &format!("{value:?} written to every partition"),
        SETTLE_TIMEOUT,
        || {
            for (partition, (leader, _)) in partitions(addrs, via)? {
                if written.contains_key(&partition) || leader <= 0 {
                    continue;
                }
                match produce_acks_all_at(addrs, leader, partition, value) {
                    Some((0, base_offset)) => {
                        written.insert(partition, base_offset);
                    }
                    Some((code, _)) if refused_before_append(code) => {}
                    other => panic!(
                        "partition {partition}: {other:?} from leader {leader}; a retry could \
                         write {value:?} twice"
                    ),
                }
            }
            (written.len() == PARTITIONS as usize).then_some(())
        },
    );
    let expected: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, offset)).collect();
    assert_eq!(written, expected, "{value:?}: offsets by partition");
}

/// A paused partition leader keeps its sockets open and its listener accepting, but answers
/// nothing: once it has been silent for two heartbeat intervals, the controller's probe sends
/// ApiVersions, gets no answer within `broker.unresponsive.probe.timeout.ms`, and fences it as
/// unresponsive — long before its [`LONG_SESSION_MS`] session. Its leaderships move to the
/// brokers that are live (and never fenced), which take acks=all writes; resumed, it rejoins
/// every ISR.
#[test]
fn a_paused_leader_is_fenced_as_unresponsive_and_replaced_without_waiting_out_its_session() {
    let (cluster, addrs) = start_brokers_with_a_long_session(&[]);
    let brokers = broker_ids(&addrs);
    let paused = partitions(&addrs, brokers[0]).expect("metadata")[&0].0;
    let live: Vec<i32> = brokers.iter().copied().filter(|id| *id != paused).collect();
    let via = live[0];
    write_everywhere_at(&addrs, via, "before", 0);

    cluster.pause(paused);
    wait_until_fenced_and_replaced(&addrs, via, paused);
    assert_eq!(
        unresponsive_fencings(&cluster, None),
        BTreeMap::from([(paused, 1)]),
        "the paused broker, and only it, fenced as unresponsive"
    );
    assert_eq!(session_fencings(&cluster, None), BTreeMap::new());
    write_everywhere_at(&addrs, via, "while paused", 1);
    let views = partitions(&addrs, via).expect("metadata");
    for (partition, (leader, isr)) in &views {
        assert!(
            live.contains(leader),
            "partition {partition} led by {leader}"
        );
        assert_eq!(isr, &live, "partition {partition}'s ISR");
    }
    // The live brokers were never fenced for anything.
    assert_eq!(listed_brokers(&addrs, via), Some(live.clone()));
    assert_eq!(
        per_broker(
            &cluster,
            None,
            "skald_controller_early_fenced_brokers_total",
            None
        ),
        BTreeMap::from([(paused, 1)])
    );

    cluster.resume(paused);
    wait_for_full_isrs(&addrs, via);
    assert_eq!(listed_brokers(&addrs, via), Some(brokers.clone()));
    write_everywhere_at(&addrs, via, "after", 2);
    assert_eq!(
        silence_fencings(&cluster, None),
        BTreeMap::from([(paused, 1)])
    );
}

/// A live broker whose heartbeats are lost on their way (its link to the controller drops every
/// byte) is silent to the controller, but answers the probe's ApiVersions on its listener: it is
/// left alone, probe after probe, and keeps its leaderships and ISR places.
#[test]
fn a_live_broker_whose_heartbeats_are_lost_answers_the_probe_and_is_not_fenced() {
    let cluster = TestCluster::start_with_links(1, 3, &long_session_settings());
    create_topic(&cluster);
    let addrs = addrs(&cluster);
    let brokers = broker_ids(&addrs);
    let (silent, via) = (brokers[1], brokers[0]);
    let controller = cluster.controllers().next().expect("a controller").node_id;
    let before = partitions(&addrs, via).expect("metadata");

    cluster.links(silent).controllers[&controller].black_hole();
    let answered = |cluster: &TestCluster| {
        per_broker(
            cluster,
            None,
            "skald_controller_silent_broker_probes_total",
            Some(("outcome", "answered")),
        )
    };
    poll_until(
        "the silent broker to answer two probes",
        SETTLE_TIMEOUT,
        || (answered(&cluster).get(&silent).copied().unwrap_or(0) >= 2).then_some(()),
    );
    for outcome in ["unanswered", "gone", "no_evidence", "prober_late"] {
        assert_eq!(
            per_broker(
                &cluster,
                None,
                "skald_controller_silent_broker_probes_total",
                Some(("outcome", outcome)),
            ),
            BTreeMap::new(),
            "{outcome} probes"
        );
    }
    assert_eq!(listed_brokers(&addrs, via), Some(brokers.clone()));
    assert_eq!(silence_fencings(&cluster, None), BTreeMap::new());
    assert_eq!(partitions(&addrs, via), Some(before));

    cluster.links(silent).controllers[&controller].heal();
    wait_for_full_isrs(&addrs, via);
    assert_eq!(silence_fencings(&cluster, None), BTreeMap::new());
}
