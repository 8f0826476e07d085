//! Scaling out and in under load, as an operator does it with the `skald` tool (issue 15's
//! checks (a) and (b)): 3 brokers hold a 30-partition topic of three replicas while a
//! librdkafka producer (its defaults: acks=all) writes and a consumer group reads. A fourth
//! broker joins and `skald cluster rebalance --wait` gives it its share of replicas and
//! leaderships; then `skald cluster decommission` empties broker 3, which shuts itself down
//! and is unregistered. Every record is acknowledged, none fails, the group reads every acknowledged
//! record at its offset, and at the end every partition is fully in sync on the brokers left.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::TestCluster;
use common::load::{self, SteadyProducer};
use common::wire::RawConn;
use common::{poll_until, rdk};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 30;
const TIMEOUT: Duration = Duration::from_secs(120);
const SETTINGS: &[(&str, &str)] = &[
    ("default.replication.factor", "3"),
    ("min.insync.replicas", "2"),
    ("offsets.topic.num.partitions", "5"),
];

fn skald(bootstrap: &str, args: &[&str]) -> String {
    common::skald_ok(bootstrap, args, TIMEOUT)
}

/// Every partition of every topic as a broker lists it: (topic, partition) → (leader, replicas,
/// sorted ISR).
type Placement = BTreeMap<(String, i32), (i32, Vec<i32>, Vec<i32>)>;

fn placement(conn: &mut RawConn) -> Placement {
    conn.metadata(None, false)
        .topics
        .iter()
        .flat_map(|topic| {
            let name = topic
                .name
                .as_ref()
                .map(|n| n.to_string())
                .unwrap_or_default();
            topic.partitions.iter().map(move |p| {
                let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
                isr.sort_unstable();
                (
                    (name.clone(), p.partition_index),
                    (
                        p.leader_id.0,
                        p.replica_nodes.iter().map(|b| b.0).collect(),
                        isr,
                    ),
                )
            })
        })
        .collect()
}

/// Replicas and leaderships per broker, over every topic.
fn loads(placement: &Placement) -> BTreeMap<i32, (usize, usize)> {
    let mut loads: BTreeMap<i32, (usize, usize)> = BTreeMap::new();
    for (leader, replicas, _) in placement.values() {
        for replica in replicas {
            loads.entry(*replica).or_default().0 += 1;
        }
        loads.entry(*leader).or_default().1 += 1;
    }
    loads
}

/// What a group member read: (partition, offset) → value.
type Read = BTreeMap<(i32, i64), Vec<u8>>;

/// A consumer group member on a thread of its own, keeping every record it reads by
/// (partition, offset), until stopped.
struct GroupReader {
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Read>>,
    thread: std::thread::JoinHandle<()>,
}

impl GroupReader {
    fn start(bootstrap: &str) -> GroupReader {
        let consumer: BaseConsumer = rdk::base_config(bootstrap)
            .set("group.id", "scale-out")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("create the group consumer");
        consumer.subscribe(&[TOPIC]).expect("subscribe");
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(BTreeMap::new()));
        let thread = std::thread::spawn({
            let (stop, records) = (Arc::clone(&stop), Arc::clone(&records));
            move || {
                while !stop.load(Ordering::Acquire) {
                    // Errors a broker leaving causes are librdkafka's to retry; only records count.
                    if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                        records.lock().unwrap().insert(
                            (message.partition(), message.offset()),
                            message.payload().unwrap_or_default().to_vec(),
                        );
                    }
                }
            }
        });
        GroupReader {
            stop,
            records,
            thread,
        }
    }

    fn read(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    fn wait_for_progress(&self, what: &str) {
        let target = self.read() + load::PROGRESS;
        poll_until(what, TIMEOUT, || (self.read() >= target).then_some(()));
    }

    fn finish(self) -> Read {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("group reader thread");
        Arc::try_unwrap(self.records)
            .expect("the reader's records")
            .into_inner()
            .unwrap()
    }
}

#[test]
fn a_broker_joins_and_gets_its_share_then_another_leaves_under_load() {
    let mut cluster = TestCluster::start(1, 3, SETTINGS);
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    common::wire::create_topics(&mut conn, &[(TOPIC, PARTITIONS)]);
    poll_until("every partition in sync on three brokers", TIMEOUT, || {
        let placement = placement(&mut conn);
        let topic: Vec<_> = placement.iter().filter(|((t, _), _)| t == TOPIC).collect();
        (topic.len() == PARTITIONS as usize
            && topic
                .iter()
                .all(|(_, (l, _, isr))| *l >= 0 && isr.len() == 3))
        .then_some(())
    });
    let bootstrap = cluster.bootstrap();
    let producer = SteadyProducer::start(bootstrap.clone(), TOPIC, PARTITIONS);
    let reader = GroupReader::start(&bootstrap);
    producer.wait_for_progress("acknowledgements", TIMEOUT);
    reader.wait_for_progress("the group reading");

    // Scale out: broker 5 joins and gets at least a fifth of every replica and leadership.
    let added = cluster.add_broker();
    assert_eq!(added, 5);
    let rebalanced = skald(&bootstrap, &["cluster", "rebalance", "--wait"]);
    assert!(
        rebalanced.ends_with("each led by its preferred replica\n"),
        "{rebalanced}"
    );
    let (loads_after, total) = poll_until("broker 5 leading its share", TIMEOUT, || {
        let placement = placement(&mut conn);
        let loads = loads(&placement);
        let total = (loads.values().map(|l| l.0).sum::<usize>(), placement.len());
        let (replicas, leaders) = loads.get(&added).copied().unwrap_or_default();
        (replicas * 5 >= total.0 && leaders * 5 >= total.1).then_some((loads, total))
    });
    let (min, max) = (
        loads_after.values().map(|l| l.0).min().unwrap(),
        loads_after.values().map(|l| l.0).max().unwrap(),
    );
    assert!(
        max - min <= 1,
        "replicas even within one: {loads_after:?} of {total:?}"
    );
    producer.wait_for_progress("acknowledgements after the scale-out", TIMEOUT);
    reader.wait_for_progress("the group reading after the scale-out");

    // Scale in: broker 3 is emptied, shuts itself down and is unregistered.
    let decommissioned = skald(&bootstrap, &["cluster", "decommission", "3"]);
    assert!(
        decommissioned
            .ends_with("broker 3 holds no replicas\nbroker 3 shut down\nunregistered broker 3\n"),
        "{decommissioned}"
    );
    let exit = cluster.wait_for_exit(3);
    assert!(exit.success(), "broker 3 exited with {exit}");
    let final_placement = poll_until("every partition in sync without broker 3", TIMEOUT, || {
        let placement = placement(&mut conn);
        placement
            .values()
            .all(|(leader, replicas, isr)| {
                let mut sorted = replicas.clone();
                sorted.sort_unstable();
                *leader >= 0 && !replicas.contains(&3) && replicas.len() == 3 && *isr == sorted
            })
            .then_some(placement)
    });
    assert_eq!(final_placement.len(), PARTITIONS as usize + 5);
    producer.wait_for_progress("acknowledgements after the scale-in", TIMEOUT);
    reader.wait_for_progress("the group reading after the scale-in");

    // Every record acknowledged, and the group read each at its acknowledged offset.
    let deliveries = producer.finish();
    let acknowledged: Vec<(u64, (i32, i64))> = deliveries
        .iter()
        .map(|(number, outcome)| {
            let at = outcome
                .clone()
                .unwrap_or_else(|e| panic!("record {number} was not acknowledged: {e}"));
            (*number, at)
        })
        .collect();
    poll_until("the group read every acknowledged record", TIMEOUT, || {
        let records = reader.records.lock().unwrap();
        acknowledged
            .iter()
            .all(|(_, at)| records.contains_key(at))
            .then_some(())
    });
    let read = reader.finish();
    for (number, at) in &acknowledged {
        assert_eq!(
            read.get(at).map(Vec::as_slice),
            Some(load::payload(TOPIC, *number).as_bytes()),
            "record {number} at {at:?}"
        );
    }
}

/// `auto.partition.rebalance.enable`: with no operator, the active controller gives a broker
/// that joins its share. Brokers 2 and 3 hold two partitions each (partition 0 with records);
/// broker 4 joins; the controller moves partition 0 onto it (4 replicas over 3 brokers, from
/// the most loaded broker with the lowest id), and broker 4 serves its records.
#[test]
fn with_automatic_balancing_a_joining_broker_gets_its_share() {
    use common::wire::{batch_v2, create_assigned_topic};

    let mut cluster = TestCluster::start(1, 2, &[("auto.partition.rebalance.enable", "true")]);
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    create_assigned_topic(&mut conn, "spread", &[&[2], &[2], &[3], &[3]]);
    common::wire::ensure_topic(cluster.node(2).kafka_addr(), "spread");
    for i in 0..3 {
        let batch = batch_v2(&[("k", "v", 1_700_000_000_000 + i)]);
        assert_eq!(conn.produce_raw("spread", 0, batch), (0, i));
    }
    assert_eq!(cluster.add_broker(), 4);

    let expected: Vec<(i32, Vec<i32>)> =
        vec![(4, vec![4]), (2, vec![2]), (3, vec![3]), (3, vec![3])];
    let moved = poll_until("partition 0 moved onto broker 4", TIMEOUT, || {
        let placement = placement(&mut conn);
        let spread: Vec<(i32, Vec<i32>)> = placement
            .iter()
            .filter(|((topic, _), _)| topic == "spread")
            .map(|(_, (leader, replicas, _))| (*leader, replicas.clone()))
            .collect();
        (spread == expected).then_some(spread)
    });
    assert_eq!(moved, expected);
    let mut on_4 = RawConn::connect(cluster.node(4).kafka_addr());
    let served = poll_until("broker 4 serving partition 0", TIMEOUT, || {
        let (error, high_watermark, _) = on_4.fetch_raw("spread", 0, 0);
        (error == 0 && high_watermark == 3).then_some((error, high_watermark))
    });
    assert_eq!(served, (0, 3));
}
