//! Metrics on a cluster: consumer-group lag is complete — every partition of every group, each
//! reported once, by the group's coordinator, equal to ListOffsets minus the committed offset
//! and to what `skald group describe` shows — cluster-wide gauges come from the active
//! controller alone, and partition and leader counts per broker add up to the cluster's.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use common::cluster::TestCluster;
use common::{cells, http_get, poll_until, run_with_timeout, skald_bin};
use skald_client::{Client, ClientConfig, NewTopic, Producer, ProducerConfig, ProducerRecord};

const TOPIC: &str = "lagged";
const PARTITIONS: i32 = 6;
const OFFSETS_PARTITIONS: i32 = 6;
const GROUPS: [&str; 6] = ["g0", "g1", "g2", "g3", "g4", "g5"];
const CONTROLLER: i32 = 1;
const BROKERS: [i32; 3] = [2, 3, 4];

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

async fn client(bootstrap: &str) -> Client {
    Client::connect(ClientConfig::new(bootstrap).expect("config"))
        .await
        .expect("connect")
}

/// Records in partition `p`: 5, 7, 9, ...
fn records_in(partition: i32) -> i64 {
    5 + 2 * i64::from(partition)
}

/// What group `g` (by index) commits for partition `p`: a different offset for every pair,
/// never past the partition's end; group 0 leaves partition 5 uncommitted.
fn committed(group: usize, partition: i32) -> Option<i64> {
    let offset =
        (i64::try_from(group).expect("index") + i64::from(partition)) % records_in(partition);
    (group != 0 || partition != 5).then_some(offset)
}

/// `(series labels → value)` of every sample of `name` a node exports.
fn samples(body: &str, name: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample");
            (
                series[name.len()..].to_string(),
                value.parse().expect("value"),
            )
        })
        .collect()
}

fn scrape(cluster: &TestCluster, node: i32) -> String {
    let (status, body) = http_get(cluster.node(node).metrics_addr(), "/metrics").expect("scrape");
    assert_eq!(status, 200, "{body}");
    body
}

/// Every node's `skald_consumer_group_lag` samples: (group, partition) → [(node, lag)].
fn lag_reports(cluster: &TestCluster) -> BTreeMap<(String, i32), Vec<(i32, i64)>> {
    let mut reports: BTreeMap<(String, i32), Vec<(i32, i64)>> = BTreeMap::new();
    for node in BROKERS.into_iter().chain([CONTROLLER]) {
        for (labels, value) in samples(&scrape(cluster, node), "skald_consumer_group_lag") {
            let label = |key: &str| {
                let start = labels.find(&format!("{key}=\"")).expect("label") + key.len() + 2;
                labels[start..start + labels[start..].find('"').expect("quote")].to_string()
            };
            assert_eq!(label("topic"), TOPIC, "{labels}");
            reports
                .entry((
                    label("group"),
                    label("partition").parse().expect("partition"),
                ))
                .or_default()
                .push((node, value as i64));
        }
    }
    reports
}

/// `skald group describe`'s LAG column: partition → lag.
fn described_lag(bootstrap: &str, group: &str) -> BTreeMap<i32, i64> {
    let mut command = Command::new(skald_bin());
    command
        .args(["group", "describe", group, "--brokers", bootstrap])
        .env_remove("SKALD_BROKERS")
        .env("RUST_LOG", "warn");
    let (status, stdout, stderr) = run_with_timeout(command, b"", Duration::from_secs(60));
    assert!(status.success(), "group describe {group}: {stderr}");
    let table = stdout.split("\n\n").last().expect("offsets table");
    let rows = cells(table);
    assert_eq!(
        rows[0][..5],
        [
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG"
        ],
        "{stdout}"
    );
    rows[1..]
        .iter()
        .filter(|row| row[4] != "-")
        .map(|row| {
            (
                row[1].parse().expect("partition"),
                row[4].parse().expect("lag"),
            )
        })
        .collect()
}

#[test]
fn lag_is_complete_on_a_cluster_and_cluster_gauges_come_from_the_active_controller() {
    let cluster = TestCluster::start(
        1,
        3,
        &[
            (
                "offsets.topic.num.partitions",
                &OFFSETS_PARTITIONS.to_string(),
            ),
            ("group.initial.rebalance.delay.ms", "0"),
        ],
    );
    let bootstrap = cluster.bootstrap();

    // One replica per partition, so each has one leader, spread over the three brokers.
    block_on(async {
        let mut admin = client(&bootstrap).await;
        admin
            .create_topic(NewTopic {
                name: TOPIC.into(),
                partitions: PARTITIONS,
                replication_factor: 1,
                configs: Vec::new(),
            })
            .await
            .expect("create topic");
        let mut producer = Producer::new(client(&bootstrap).await, ProducerConfig::default());
        for partition in 0..PARTITIONS {
            for i in 0..records_in(partition) {
                producer
                    .send(
                        TOPIC,
                        Some(partition),
                        ProducerRecord::value(format!("r{i}")),
                    )
                    .await
                    .expect("send");
            }
        }
        for delivery in producer.flush().await.expect("flush") {
            delivery.result.expect("delivered");
        }
        for (index, group) in GROUPS.iter().enumerate() {
            let offsets: BTreeMap<i32, i64> = (0..PARTITIONS)
                .filter_map(|p| committed(index, p).map(|offset| (p, offset)))
                .collect();
            client(&bootstrap)
                .await
                .commit_offsets(group, TOPIC, &offsets)
                .await
                .expect("commit");
        }
    });

    // ListOffsets (latest) minus the committed offsets: the lag the metric must show.
    let log_ends = block_on(async {
        let mut client = client(&bootstrap).await;
        let partitions: Vec<i32> = (0..PARTITIONS).collect();
        skald_client::consumer::list_offsets(&mut client, TOPIC, &partitions, -1)
            .await
            .expect("list offsets")
    });
    assert_eq!(
        log_ends,
        (0..PARTITIONS)
            .map(|p| (p, records_in(p)))
            .collect::<BTreeMap<_, _>>()
    );
    let expected: BTreeMap<(String, i32), i64> = GROUPS
        .iter()
        .enumerate()
        .flat_map(|(index, group)| {
            let log_ends = &log_ends;
            (0..PARTITIONS).filter_map(move |p| {
                committed(index, p).map(|offset| ((group.to_string(), p), log_ends[&p] - offset))
            })
        })
        .collect();
    assert_eq!(expected.len(), GROUPS.len() * PARTITIONS as usize - 1);

    // Each (group, partition) reported once, by one broker, with the exact lag (the leaders'
    // high watermarks reach the coordinators within a refresh interval).
    let reports = poll_until(
        "every group's lag on every partition from its coordinator",
        Duration::from_secs(30),
        || {
            let reports = lag_reports(&cluster);
            let lags: BTreeMap<(String, i32), i64> = reports
                .iter()
                .filter(|(_, by)| by.len() == 1)
                .map(|(key, by)| (key.clone(), by[0].1))
                .collect();
            (lags == expected && reports.len() == expected.len()).then_some(reports)
        },
    );
    let coordinators: BTreeSet<i32> = reports.values().map(|by| by[0].0).collect();
    assert!(
        coordinators.is_subset(&BROKERS.into_iter().collect()),
        "{coordinators:?}"
    );
    // The groups' coordinators are not all one broker, so some lag is of partitions led elsewhere.
    assert!(coordinators.len() > 1, "{reports:?}");
    for (index, group) in GROUPS.iter().enumerate() {
        let by_group: BTreeSet<i32> = reports
            .iter()
            .filter(|((g, _), _)| g == group)
            .map(|(_, by)| by[0].0)
            .collect();
        assert_eq!(by_group.len(), 1, "{group} reported by one coordinator");
        let wanted: BTreeMap<i32, i64> = expected
            .iter()
            .filter(|((g, _), _)| g == group)
            .map(|((_, p), lag)| (*p, *lag))
            .collect();
        assert_eq!(described_lag(&bootstrap, group), wanted, "group {index}");
    }

    // Cluster-wide gauges: on the active controller (node 1) only.
    let total_partitions = f64::from(PARTITIONS + OFFSETS_PARTITIONS);
    let controller = scrape(&cluster, CONTROLLER);
    let gauge = |body: &str, name: &str| samples(body, name).get("").copied();
    assert_eq!(gauge(&controller, "skald_controller_active"), Some(1.0));
    assert_eq!(gauge(&controller, "skald_leaderless_partitions"), Some(0.0));
    assert_eq!(
        gauge(&controller, "skald_cluster_partitions"),
        Some(total_partitions)
    );
    assert_eq!(gauge(&controller, "skald_cluster_topics"), Some(2.0));
    assert_eq!(
        samples(&controller, "skald_brokers"),
        BTreeMap::from([
            (r#"{state="fenced"}"#.to_string(), 0.0),
            (r#"{state="unfenced"}"#.to_string(), 3.0)
        ])
    );
    // Brokers: none of the cluster's gauges; their own partition and leader counts add up to
    // the cluster's (each partition led once; `lagged` has one replica, the offsets topic three).
    let (mut hosted, mut led) = (0.0, 0.0);
    for broker in BROKERS {
        let body = scrape(&cluster, broker);
        for name in [
            "skald_leaderless_partitions",
            "skald_cluster_partitions",
            "skald_cluster_topics",
            "skald_cluster_under_min_isr_partitions",
            "skald_brokers",
        ] {
            assert_eq!(samples(&body, name), BTreeMap::new(), "{name} on {broker}");
        }
        hosted += gauge(&body, "skald_partitions").expect("skald_partitions");
        led += gauge(&body, "skald_leader_partitions").expect("skald_leader_partitions");
    }
    assert_eq!(
        (hosted, led),
        (
            f64::from(PARTITIONS + 3 * OFFSETS_PARTITIONS),
            total_partitions
        )
    );
}
