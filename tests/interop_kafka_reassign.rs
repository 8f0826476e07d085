//! Kafka's own `kafka-reassign-partitions.sh` (`org.apache.kafka.tools.reassign.
//! ReassignPartitionsCommand`, from the tools release pinned in tests/clients/java/tools/pom.xml)
//! against a cluster of real processes, unmodified: `--generate` a plan for a broker added to the
//! running cluster, `--execute` a move onto it, `--verify` until it completes, then `--execute`
//! a move onto a broker that is down, `--verify` it in progress, `--cancel` it and `--verify`
//! that nothing is left. What the tool prints is compared exactly, line by line.
//!
//! The first move runs with `--throttle`: `--execute` sets the replication throttles
//! (`leader.replication.throttled.rate`, ... per broker, the throttled replica lists on the topic)
//! and the `--verify` that finds it completed clears them. The later `--verify` and `--cancel`
//! run with `--preserve-throttles`: clearing would alter the killed broker's own configs, which
//! only that broker takes (Kafka's admin client times out waiting for it, as against Kafka).

mod common;

use std::path::Path;
use std::time::Duration;

use common::clients::{java, java_classpath};
use common::cluster::TestCluster;
use common::replica::{view_on, PartitionView};
use common::wire::RawConn;
use common::{poll_until, run_with_timeout};

const TOPIC: &str = "tools-moving";
const TOOL: &str = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand";

/// Runs the tool with `args` (whitespace-separated) against the brokers `bootstrap` names:
/// success, stdout, stderr.
fn reassign_tool(bootstrap: &str, args: &str) -> (bool, String, String) {
    let mut command = java();
    command
        .arg("-cp")
        .arg(java_classpath("tools"))
        .arg(TOOL)
        .arg("--bootstrap-server")
        .arg(bootstrap)
        .args(args.split_whitespace());
    let (status, stdout, stderr) = run_with_timeout(command, b"", Duration::from_secs(90));
    (status.success(), stdout, stderr)
}

fn ok(bootstrap: &str, args: &str) -> Vec<String> {
    let (success, stdout, stderr) = reassign_tool(bootstrap, args);
    assert!(
        success,
        "kafka-reassign-partitions {args} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout.lines().map(str::to_string).collect()
}

/// The unfenced brokers' ids as the tool lists them, comma-separated in id order.
fn brokers_listed(cluster: &TestCluster) -> String {
    let mut ids: Vec<i32> = cluster.brokers().map(|node| node.node_id).collect();
    ids.sort_unstable();
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write a JSON file");
    path.to_str().expect("UTF-8 path").to_string()
}

/// The tool's JSON for partition 0 of [`TOPIC`] on `replicas`, in any log dir (a plan).
fn assignment(replicas: &[i32]) -> String {
    assignment_in(
        replicas,
        replicas.iter().map(|_| "any".to_string()).collect(),
    )
}

/// The tool's JSON for the current assignment: each replica's log dir as DescribeLogDirs
/// reports it (the broker's absolute path).
fn current(cluster: &TestCluster, replicas: &[i32]) -> String {
    let dirs = replicas
        .iter()
        .map(|&id| {
            let dir = std::path::absolute(cluster.node(id).data_dir()).expect("absolute path");
            dir.to_str().expect("UTF-8 path").to_string()
        })
        .collect();
    assignment_in(replicas, dirs)
}

fn assignment_in(replicas: &[i32], dirs: Vec<String>) -> String {
    let ids: Vec<String> = replicas.iter().map(i32::to_string).collect();
    let dirs: Vec<String> = dirs.iter().map(|dir| format!("\"{dir}\"")).collect();
    format!(
        r#"{{"version":1,"partitions":[{{"topic":"{TOPIC}","partition":0,"replicas":[{}],"log_dirs":[{}]}}]}}"#,
        ids.join(","),
        dirs.join(","),
    )
}

/// Polls `probe` until it holds or `timeout` passes; whether it held.
fn poll_until_or_timeout(timeout: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if probe() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Polls broker `via`'s Metadata until partition 0 of [`TOPIC`] has a leader and `accept`s.
fn wait_for(
    cluster: &TestCluster,
    via: i32,
    what: &str,
    accept: impl Fn(&PartitionView) -> bool,
) -> PartitionView {
    poll_until(what, Duration::from_secs(60), || {
        view_on(cluster, via, TOPIC).filter(|v| v.leader >= 0 && accept(v))
    })
}

#[test]
fn kafka_reassign_partitions_generates_executes_verifies_and_cancels() {
    let mut cluster = TestCluster::start(
        1,
        3,
        &[
            ("default.replication.factor", "3"),
            ("auto.leader.rebalance.enable", "false"),
            // The broker paused below stays unfenced, so the tool still finds it.
            ("broker.session.timeout.ms", "60000"),
        ],
    );
    let mut conn = RawConn::connect(cluster.node(2).kafka_addr());
    common::wire::create_topics(&mut conn, &[(TOPIC, 1)]);
    let before = wait_for(&cluster, 2, "a leader and a full ISR", |v| v.isr.len() == 3);
    let added = cluster.add_broker();
    let files = tempfile::tempdir().expect("a temporary directory");
    let mut bootstrap = cluster.bootstrap();

    // --generate: the current assignment exactly; the proposal (Kafka's randomised placement)
    // puts three distinct brokers of the list on the partition.
    let topics = write(
        files.path(),
        "topics.json",
        &format!(r#"{{"topics":[{{"topic":"{TOPIC}"}}],"version":1}}"#),
    );
    let generated = ok(
        &bootstrap,
        &format!("--generate --topics-to-move-json-file {topics} --broker-list 2,3,4,{added}"),
    );
    assert_eq!(
        generated[..3],
        [
            "Current partition replica assignment".to_string(),
            current(&cluster, &before.replicas),
            String::new(),
        ],
        "{generated:#?}"
    );
    assert_eq!(
        generated[3],
        "Proposed partition reassignment configuration"
    );
    let proposal: serde_json::Value = serde_json::from_str(&generated[4]).expect("proposal JSON");
    let replicas: Vec<i64> = proposal["partitions"][0]["replicas"]
        .as_array()
        .expect("proposed replicas")
        .iter()
        .map(|id| id.as_i64().expect("broker id"))
        .collect();
    let mut distinct = replicas.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() == 3
            && distinct
                .iter()
                .all(|id| [2, 3, 4, added as i64].contains(id)),
        "{proposal}"
    );

    // --execute a move of the leader's replica onto the new broker; --verify until it is done.
    let target: Vec<i32> = before
        .replicas
        .iter()
        .map(|&id| if id == before.leader { added } else { id })
        .collect();
    let plan = write(files.path(), "plan.json", &assignment(&target));
    assert_eq!(
        ok(
            &bootstrap,
            &format!("--execute --reassignment-json-file {plan} --throttle 50000000")
        ),
        [
            "Current partition replica assignment".to_string(),
            String::new(),
            current(&cluster, &before.replicas),
            String::new(),
            "Save this to use as the --reassignment-json-file option during rollback".to_string(),
            "Warning: You must run --verify periodically, until the reassignment completes, to \
             ensure the throttle is removed."
                .to_string(),
            "The inter-broker throttle limit was set to 50000000 B/s".to_string(),
            format!("Successfully started partition reassignment for {TOPIC}-0"),
        ]
    );
    let verify = format!("--verify --reassignment-json-file {plan}");
    let completed = [
        "Status of partition reassignment:".to_string(),
        format!("Reassignment of partition {TOPIC}-0 is completed."),
        String::new(),
    ];
    let mut last = Vec::new();
    let done = poll_until_or_timeout(Duration::from_secs(60), || {
        last = ok(&bootstrap, &verify);
        last.contains(&completed[1])
    });
    assert!(done, "--verify never said completed; last:\n{last:#?}");
    // Done: the tool removes the throttles --execute set (IncrementalAlterConfigs DELETE of the
    // brokers' rates and the topic's throttled replica lists).
    let mut cleared = completed.to_vec();
    cleared.push(format!(
        "Clearing broker-level throttles on brokers {}",
        brokers_listed(&cluster)
    ));
    cleared.push(format!("Clearing topic-level throttles on topic {TOPIC}"));
    assert_eq!(last, cleared);
    let mut sorted = target.clone();
    sorted.sort_unstable();
    wait_for(&cluster, target[1], "the moved partition in sync", |v| {
        v.replicas == target && v.isr == sorted
    });

    // A move onto a broker that never catches up stays in progress until it is cancelled. It
    // is paused while the tool starts the move (the tool refuses a broker DescribeCluster does
    // not list, as a fenced one; a paused one stays unfenced for its session), then killed.
    let down = before.leader;
    cluster.pause(down);
    // The tool's admin client is pointed at the brokers that answer.
    bootstrap = cluster
        .brokers()
        .filter(|node| node.node_id != down)
        .map(|node| node.bootstrap())
        .collect::<Vec<_>>()
        .join(",");
    let back: Vec<i32> = target
        .iter()
        .map(|&id| if id == added { down } else { id })
        .collect();
    let rollback = write(files.path(), "back.json", &assignment(&back));
    assert_eq!(
        ok(
            &bootstrap,
            &format!("--execute --reassignment-json-file {rollback}")
        ),
        [
            "Current partition replica assignment".to_string(),
            String::new(),
            current(&cluster, &target),
            String::new(),
            "Save this to use as the --reassignment-json-file option during rollback".to_string(),
            format!("Successfully started partition reassignment for {TOPIC}-0"),
        ]
    );
    // Gone for good: it never catches up, and the admin client never waits on it.
    cluster.kill9(down);
    let verify_back = format!("--verify --reassignment-json-file {rollback} --preserve-throttles");
    assert_eq!(
        ok(&bootstrap, &verify_back),
        [
            "Status of partition reassignment:".to_string(),
            format!("Reassignment of partition {TOPIC}-0 is still in progress."),
            String::new(),
        ]
    );
    assert_eq!(
        ok(
            &bootstrap,
            &format!("--cancel --reassignment-json-file {rollback} --preserve-throttles")
        ),
        [
            format!("Successfully cancelled partition reassignment for: {TOPIC}-0"),
            // About log dir moves (AlterReplicaLogDirs), none of which the plan asks for.
            "None of the specified partition moves are active.".to_string(),
        ]
    );
    // Kafka's revert keeps the replica list as the move left it (target first, then the
    // replica it was removing), less the replica it was adding.
    let current: Vec<String> = back
        .iter()
        .filter(|id| **id != down)
        .chain(std::iter::once(&added))
        .map(i32::to_string)
        .collect();
    let wanted: Vec<String> = back.iter().map(i32::to_string).collect();
    assert_eq!(
        ok(&bootstrap, &verify_back),
        [
            "Status of partition reassignment:".to_string(),
            format!(
                "There is no active reassignment of partition {TOPIC}-0, but replica set is {} rather than {}.",
                current.join(","),
                wanted.join(",")
            ),
            String::new(),
        ]
    );
    assert_eq!(
        ok(&bootstrap, "--list"),
        ["No partition reassignments found.".to_string()]
    );
}
