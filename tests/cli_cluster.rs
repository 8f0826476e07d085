//! `skald cluster info` against a real cluster of 3 controllers (ids 1–3) and 3 brokers (4–6):
//! the quorum, the brokers and the partition spread, then a broker killed and fenced.

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::TestCluster;
use common::{cells, poll_until, row, run_with_timeout, skald_bin};

const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Long enough for an election, registrations and a fencing (session timeout 1.5 s here).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `skald ARGS --brokers BOOTSTRAP`, which must succeed; returns stdout.
fn skald(bootstrap: &str, args: &[&str]) -> String {
    let mut command = Command::new(skald_bin());
    command
        .args(args)
        .arg("--brokers")
        .arg(bootstrap)
        .env_remove("SKALD_BROKERS")
        .env("RUST_LOG", "warn");
    let (status, stdout, stderr) = run_with_timeout(command, b"", CLI_TIMEOUT);
    assert!(
        status.success(),
        "skald {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
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
