//! `skald cluster info` against a real cluster of 3 controllers (ids 1–3) and 3 brokers (4–6):
//! the quorum, the brokers and the partition spread, then a broker killed and fenced; and
//! `skald cluster rebalance` planning and carrying out the moves onto a broker that joined.

mod common;

use std::time::Duration;

use common::cluster::TestCluster;
use common::{cells, poll_until, row};

const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Long enough for an election, registrations and a fencing (session timeout 1.5 s here).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `skald ARGS --brokers BOOTSTRAP`: its exit status, stdout and stderr.
fn run_skald(bootstrap: &str, args: &[&str]) -> (std::process::ExitStatus, String, String) {
    common::run_skald(bootstrap, args, CLI_TIMEOUT)
}

/// Runs `skald ARGS --brokers BOOTSTRAP`, which must succeed; returns stdout.
fn skald(bootstrap: &str, args: &[&str]) -> String {
    common::skald_ok(bootstrap, args, CLI_TIMEOUT)
}

/// The three tables of `skald cluster info`, as rows of cells.
struct Info {
    controllers: Vec<Vec<String>>,
    brokers: Vec<Vec<String>>,
    partitions: Vec<Vec<String>>,
}

fn cluster_info(bootstrap: &str) -> Info {
    let stdout = skald(bootstrap, &["cluster", "info"]);
    let tables: Vec<Vec<Vec<String>>> = stdout.split("\n\n").map(cells).collect();
    let [controllers, brokers, partitions] = <[_; 3]>::try_from(tables)
        .unwrap_or_else(|tables| panic!("expected three tables, got {tables:?}\n{stdout}"));
    Info {
        controllers,
        brokers,
        partitions,
    }
}

/// The controllers table when the quorum is settled: one leader, one term, every voter at the
/// same log end offset with no lag. `None` while it is not.
fn settled_controllers(table: &[Vec<String>]) -> Option<Vec<Vec<String>>> {
    let leader = table
        .iter()
        .find(|r| r.get(1).map(String::as_str) == Some("LEADER"))?;
    let (term, log_end) = (leader[2].as_str(), leader[3].as_str());
    let expected: Vec<Vec<String>> = std::iter::once(row(&[
        "CONTROLLER",
        "ROLE",
        "TERM",
        "LOG-END-OFFSET",
        "LAG",
    ]))
    .chain((1..=3).map(|id| {
        let role = if leader[0] == id.to_string() {
            "LEADER"
        } else {
            "FOLLOWER"
        };
        row(&[&id.to_string(), role, term, log_end, "0"])
    }))
    .collect();
    (table == expected).then_some(expected)
}

#[test]
fn cluster_info_shows_the_quorum_the_brokers_and_the_partition_spread() {
    let mut cluster = TestCluster::start(3, 3, &[]);
    let bootstrap = cluster.node(4).bootstrap();
    assert_eq!(
        skald(
            &bootstrap,
            &["topic", "create", "spread", "--partitions", "6"]
        ),
        "created topic spread\n"
    );

    let endpoints: Vec<(i32, String)> = (4..=6)
        .map(|id| (id, format!("127.0.0.1:{}", cluster.node(id).kafka_port)))
        .collect();
    let brokers = |states: [&str; 3]| -> Vec<Vec<String>> {
        std::iter::once(row(&["BROKER", "STATE", "ENDPOINT", "RACK"]))
            .chain(
                endpoints
                    .iter()
                    .zip(states)
                    .map(|((id, endpoint), state)| row(&[&id.to_string(), state, endpoint, "-"])),
            )
            .collect()
    };
    let all_unfenced = brokers(["UNFENCED", "UNFENCED", "UNFENCED"]);
    let spread = vec![
        row(&["BROKER", "REPLICAS", "LEADERS"]),
        row(&["4", "2", "2"]),
        row(&["5", "2", "2"]),
        row(&["6", "2", "2"]),
    ];
    let info = poll_until("cluster info settles", SETTLE_TIMEOUT, || {
        let info = cluster_info(&bootstrap);
        let controllers = settled_controllers(&info.controllers)?;
        (info.brokers == all_unfenced && info.partitions == spread).then_some((controllers, info))
    });
    let (controllers, info) = info;
    assert_eq!(info.controllers, controllers);
    let leaders = controllers.iter().filter(|r| r[1] == "LEADER").count();
    assert_eq!(leaders, 1, "{controllers:?}");
    assert_eq!(info.brokers, all_unfenced);
    assert_eq!(info.partitions, spread);

    // A broker that dies is fenced after its session; with one replica per partition its two
    // partitions go offline (still its replicas, led by nobody).
    cluster.kill9(5);
    let fenced = brokers(["UNFENCED", "FENCED", "UNFENCED"]);
    let offline = vec![
        row(&["BROKER", "REPLICAS", "LEADERS"]),
        row(&["4", "2", "2"]),
        row(&["5", "2", "0"]),
        row(&["6", "2", "2"]),
    ];
    let (controllers, info) = poll_until("broker 5 fenced", SETTLE_TIMEOUT, || {
        let info = cluster_info(&bootstrap);
        let controllers = settled_controllers(&info.controllers)?;
        (info.brokers == fenced && info.partitions == offline).then_some((controllers, info))
    });
    assert_eq!(info.controllers, controllers);
    assert_eq!(info.brokers, fenced);
    assert_eq!(info.partitions, offline);
}

/// A controller and brokers 2 and 3 hold a 4-partition topic, two partitions each, three
/// records in partition 0; broker 4 joins. The plan moves exactly one replica onto it (4
/// replicas over 3 brokers), from the most loaded broker with the lowest id: partition 0 with
/// its records. `--dry-run` only prints it; `--wait` carries it out, waits, and leaves the
/// partition led by broker 4 with its records; after that nothing is left to move.
#[test]
fn rebalance_moves_a_replica_onto_a_new_broker() {
    use common::wire::{batch_v2, create_assigned_topic, RawConn};

    let mut cluster = TestCluster::start(1, 2, &[]);
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    create_assigned_topic(&mut conn, "spread", &[&[2], &[2], &[3], &[3]]);
    common::wire::ensure_topic(cluster.node(2).kafka_addr(), "spread");
    let mut bytes = 0;
    for (i, value) in ["a", "b", "c"].into_iter().enumerate() {
        let batch = batch_v2(&[("k", value, 1_700_000_000_000 + i as i64)]);
        bytes += batch.len();
        assert_eq!(conn.produce_raw("spread", 0, batch), (0, i as i64));
    }
    assert_eq!(cluster.add_broker(), 4);

    let plan = format!(
        "1 partitions to change: 1 replicas to add ({bytes} bytes), 0 only reordered\n\
         \n\
         TOPIC   PARTITION  REPLICAS  TARGET  BYTES\n\
         spread  0          2         4       {bytes}\n\
         \n\
         BROKER  REPLICAS  LEADERS  BYTES\n\
         2       2 -> 1    2 -> 1   {bytes} -> 0\n\
         3       2 -> 2    2 -> 2   0 -> 0\n\
         4       0 -> 1    0 -> 1   0 -> {bytes}\n"
    );
    let bootstrap = cluster.node(2).bootstrap();
    // Until the broker answering knows broker 4 and every partition, the plan differs: poll,
    // and on the deadline show the last plan.
    let deadline = std::time::Instant::now() + SETTLE_TIMEOUT;
    let planned = loop {
        let planned = skald(&bootstrap, &["cluster", "rebalance", "--dry-run"]);
        if planned == plan || std::time::Instant::now() > deadline {
            break planned;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(planned, plan);
    assert_eq!(
        skald(&bootstrap, &["cluster", "rebalance", "--status"]),
        "no reassignments in progress\n"
    );

    assert_eq!(
        skald(&bootstrap, &["cluster", "rebalance", "--wait"]),
        format!(
            "{plan}started 1 reassignments\n\
             done: 1 partitions moved, each led by its preferred replica\n"
        )
    );
    // Broker 4 leads partition 0 and serves its records.
    let mut on_4 = RawConn::connect(cluster.node(4).kafka_addr());
    let (error, high_watermark, _) =
        poll_until("broker 4 serving spread-0", SETTLE_TIMEOUT, || {
            let fetched = on_4.fetch_raw("spread", 0, 0);
            (fetched.0 == 0 && fetched.1 == 3).then_some(fetched)
        });
    assert_eq!((error, high_watermark), (0, 3));
    let balanced = poll_until("nothing left to move", SETTLE_TIMEOUT, || {
        let planned = skald(&bootstrap, &["cluster", "rebalance", "--dry-run"]);
        planned.starts_with("0 partitions").then_some(planned)
    });
    assert_eq!(
        balanced,
        format!(
            "0 partitions to change: 0 replicas to add (0 bytes), 0 only reordered\n\
             \n\
             BROKER  REPLICAS  LEADERS  BYTES\n\
             2       1 -> 1    1 -> 1   0 -> 0\n\
             3       2 -> 2    2 -> 2   0 -> 0\n\
             4       1 -> 1    1 -> 1   {bytes} -> {bytes}\n"
        )
    );
}

/// `skald cluster unregister BROKER`: a stopped broker is unregistered (gone from `cluster
/// info`'s brokers); a second time the controller's BROKER_ID_NOT_REGISTERED fails the command.
#[test]
fn unregister_forgets_a_stopped_broker() {
    let mut cluster = TestCluster::start(1, 2, &[]);
    let bootstrap = cluster.node(2).bootstrap();
    cluster.stop(3);
    assert_eq!(
        skald(&bootstrap, &["cluster", "unregister", "3"]),
        "unregistered broker 3\n"
    );
    let brokers = poll_until("broker 3 gone from cluster info", SETTLE_TIMEOUT, || {
        let brokers = cluster_info(&bootstrap).brokers;
        (brokers.len() == 2).then_some(brokers)
    });
    assert_eq!(brokers[1][0], "2");

    let (status, stdout, stderr) = run_skald(&bootstrap, &["cluster", "unregister", "3"]);
    assert_eq!(
        status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        "skald: unregister broker 3: BROKER_ID_NOT_REGISTERED (broker 3 is not registered)\n"
    );
}

/// `skald cluster decommission BROKER` moves every replica off broker 2 (to the broker each
/// partition lacks), waits, tells broker 2 to shut down, and unregisters it once its process
/// has exited (cleanly, by itself): broker 2 is gone, and every partition is fully in sync on
/// the two others. With only two brokers left, a second
/// decommission is refused: no partition of two replicas could keep both.
#[test]
fn decommission_moves_every_replica_off_a_broker() {
    use common::wire::{create_assigned_topic, RawConn};

    let mut cluster = TestCluster::start(1, 3, &[]);
    let mut conn = RawConn::connect(cluster.node(3).kafka_addr());
    create_assigned_topic(&mut conn, "leaving", &[&[2, 3], &[3, 4], &[4, 2]]);
    common::wire::ensure_topic(cluster.node(3).kafka_addr(), "leaving");
    let bootstrap = cluster.node(3).bootstrap();

    assert_eq!(
        skald(
            &bootstrap,
            &["cluster", "decommission", "2", "--throttle", "10000000"]
        ),
        "2 partitions to change: 2 replicas to add (0 bytes), 0 only reordered\n\
         \n\
         TOPIC    PARTITION  REPLICAS  TARGET  BYTES\n\
         leaving  0          2,3       4,3     0\n\
         leaving  2          4,2       4,3     0\n\
         \n\
         BROKER  REPLICAS  LEADERS  BYTES\n\
         2       2 -> 0    1 -> 0   0 -> 0\n\
         3       2 -> 3    1 -> 1   0 -> 0\n\
         4       2 -> 3    1 -> 2   0 -> 0\n\
         throttled at 10000000 bytes/s\n\
         started 2 reassignments\n\
         throttles removed\n\
         done: 2 partitions moved, each led by its preferred replica\n\
         broker 2 holds no replicas\n\
         broker 2 shut down\n\
         unregistered broker 2\n"
    );
    let exit = cluster.wait_for_exit(2);
    assert!(exit.success(), "broker 2 exited with {exit}");
    // The throttles are gone again: the topic's lists and broker 3's rates are at their
    // defaults (empty; unlimited: Kafka's Long.MAX_VALUE).
    let unlimited = Some(i64::MAX.to_string());
    let configs = throttle_configs(&mut conn);
    assert_eq!(
        configs,
        vec![
            (
                "follower.replication.throttled.rate".to_string(),
                unlimited.clone()
            ),
            (
                "follower.replication.throttled.replicas".to_string(),
                Some(String::new())
            ),
            ("leader.replication.throttled.rate".to_string(), unlimited),
            (
                "leader.replication.throttled.replicas".to_string(),
                Some(String::new())
            ),
        ]
    );
    // (leader, replicas, isr) per partition, on broker 3.
    let expected = vec![
        (4, vec![4, 3], vec![3, 4]),
        (3, vec![3, 4], vec![3, 4]),
        (4, vec![4, 3], vec![3, 4]),
    ];
    let placement = poll_until("every partition in sync on 3 and 4", SETTLE_TIMEOUT, || {
        let metadata = conn.metadata(Some(&["leaving"]), false);
        let brokers: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id.0).collect();
        let mut placement: Vec<(i32, i32, Vec<i32>, Vec<i32>)> = metadata.topics[0]
            .partitions
            .iter()
            .map(|p| {
                let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
                isr.sort_unstable();
                (
                    p.partition_index,
                    p.leader_id.0,
                    p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr,
                )
            })
            .collect();
        placement.sort();
        let placement: Vec<(i32, Vec<i32>, Vec<i32>)> = placement
            .into_iter()
            .map(|(_, l, r, i)| (l, r, i))
            .collect();
        let mut sorted_brokers = brokers.clone();
        sorted_brokers.sort_unstable();
        (placement == expected && sorted_brokers == [3, 4]).then_some(placement)
    });
    assert_eq!(placement, expected);

    let (status, stdout, stderr) = run_skald(&bootstrap, &["cluster", "decommission", "3"]);
    assert_eq!(
        status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(
        stderr,
        "skald: cannot move every replica off broker 3 (too few other brokers, or not all in \
         sync): leaving-0, leaving-1, leaving-2\n"
    );
    // Told directly (as kafka-configs would), a broker that hosts replicas is not
    // decommissioned: INVALID_REQUEST, and it keeps serving.
    {
        use kafka_protocol::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        use kafka_protocol::messages::IncrementalAlterConfigsRequest;
        use kafka_protocol::protocol::StrBytes;
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str("3"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("broker.decommissioned"))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_static_str("true")))]),
        ]);
        let response = conn.request(&request, 1);
        let refused = &response.responses[0];
        assert_eq!(
            (refused.error_code, refused.error_message.as_deref()),
            (
                42,
                Some(
                    "broker 3 still hosts 3 partition replicas: move them off first (skald \
                     cluster decommission 3)"
                )
            )
        );
    }
    // A controller voter's process is the quorum's too: refused before anything moves.
    let (status, stdout, stderr) = run_skald(&bootstrap, &["cluster", "decommission", "1"]);
    assert_eq!(
        (status.code(), stdout.as_str()),
        (Some(1), ""),
        "stderr:\n{stderr}"
    );
    assert_eq!(
        stderr,
        "skald: node 1 is a controller voter: decommission takes out broker-only nodes (a \
         voter's process is also the quorum's)\n"
    );
    assert_eq!(
        conn.metadata(Some(&["leaving"]), false).brokers.len(),
        2,
        "brokers 3 and 4 still serve"
    );
}

/// The replication throttle configs of topic `leaving` and broker 3 as DescribeConfigs answers
/// them: (name, value), sorted.
fn throttle_configs(conn: &mut common::wire::RawConn) -> Vec<(String, Option<String>)> {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::DescribeConfigsRequest;
    use kafka_protocol::protocol::StrBytes;
    let resource = |kind: i8, name: &str, keys: &[&str]| {
        DescribeConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(StrBytes::from_string(name.to_owned()))
            .with_configuration_keys(Some(
                keys.iter()
                    .map(|k| StrBytes::from_string((*k).to_owned()))
                    .collect(),
            ))
    };
    let request = DescribeConfigsRequest::default().with_resources(vec![
        resource(
            2,
            "leaving",
            &[
                "leader.replication.throttled.replicas",
                "follower.replication.throttled.replicas",
            ],
        ),
        resource(
            4,
            "3",
            &[
                "leader.replication.throttled.rate",
                "follower.replication.throttled.rate",
            ],
        ),
    ]);
    let response = conn.request(&request, 4);
    let mut configs: Vec<(String, Option<String>)> = response
        .results
        .iter()
        .flat_map(|result| {
            assert_eq!(result.error_code, 0, "{result:?}");
            result
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
        })
        .collect();
    configs.sort();
    configs
}
