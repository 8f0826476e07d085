//! Running Skald under an operator or an orchestrator: a log dir belongs to one process at a
//! time, `/health` and `/ready` tell a probe whether a node is alive and serving, and a container
//! configures a node through `SKALD_<KEY>` environment variables.

mod common;

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::wire::{self, RawConn};
use common::{free_port, http_get, poll_until, run_with_timeout, skald_bin, TestServer};

/// How long a refused server may take to give up.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Produces one batch to `topic` and fetches it back: the server at `addr` serves.
fn assert_produce_then_fetch(addr: SocketAddr, topic: &str) {
    wire::ensure_topic(addr, topic);
    let mut conn = RawConn::connect(addr);
    let batch = wire::batch_v2(&[("k", "still mine", 1_000)]);
    assert_eq!(conn.produce_raw(topic, 0, batch.clone()), (0, 0));
    let (error_code, high_watermark, fetched) = conn.fetch_raw(topic, 0, 0);
    assert_eq!((error_code, high_watermark), (0, 1));
    assert_eq!(fetched.len(), batch.len());
    assert_eq!(fetched[16..], batch[16..], "the batch as it was sent");
}

/// `skald server` with `overrides`, run to its exit; returns (exit code, stderr).
fn run_server_to_exit(overrides: &[(&str, String)]) -> (Option<i32>, String) {
    let mut command = Command::new(skald_bin());
    command.arg("server").env("RUST_LOG", "info");
    for (key, value) in overrides {
        command.arg("--override").arg(format!("{key}={value}"));
    }
    let (status, _stdout, stderr) = run_with_timeout(command, b"", REFUSAL_TIMEOUT);
    (status.code(), stderr)
}

fn refusal(dir: &Path) -> String {
    format!(
        "log dir {} is in use by another process (its .lock is held): is another skald server running on it?",
        dir.canonicalize().expect("canonical data dir").display()
    )
}

#[test]
fn a_second_server_on_the_same_log_dirs_is_refused_and_the_first_keeps_serving() {
    let first = TestServer::start();
    let scratch = tempfile::tempdir().expect("temp dir");
    let second = |log_dirs: String, metadata_log_dir: Option<String>| {
        let mut overrides = vec![
            ("node.id", "1".to_string()),
            (
                "listeners",
                format!("PLAINTEXT://127.0.0.1:{}", free_port()),
            ),
            ("metrics.listener", format!("127.0.0.1:{}", free_port())),
            ("log.dirs", log_dirs),
        ];
        if let Some(dir) = metadata_log_dir {
            overrides.push(("metadata.log.dir", dir));
        }
        run_server_to_exit(&overrides)
    };

    // The same log.dirs (and so the same metadata log dir, their first).
    let (code, stderr) = second(first.data_dir().display().to_string(), None);
    assert_eq!(code, Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&refusal(&first.data_dir())),
        "stderr:\n{stderr}"
    );

    // Its own log dir, but the first server's metadata log dir.
    let own = scratch.path().join("own");
    let (code, stderr) = second(
        own.display().to_string(),
        Some(first.data_dir().display().to_string()),
    );
    assert_eq!(code, Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&refusal(&first.data_dir())),
        "stderr:\n{stderr}"
    );
    // Refused before it wrote anything: not even meta.properties in its own dir.
    assert!(!own.join("meta.properties").exists());

    assert_produce_then_fetch(first.kafka_addr(), "first-still-serves");
}

#[test]
fn a_restart_after_a_crash_takes_the_lock_again() {
    let mut server = TestServer::start();
    server.kill9();
    // The kernel dropped the dead process's lock: the restart is not refused.
    server.restart();
    assert_produce_then_fetch(server.kafka_addr(), "after-crash");
}

/// A `skald server` child killed when dropped, its stderr in `dir/name.stderr`.
struct Node {
    child: Child,
    stderr: PathBuf,
}

impl Node {
    fn spawn(dir: &Path, name: &str, overrides: &[(&str, String)], env: &[(&str, String)]) -> Node {
        let stderr = dir.join(format!("{name}.stderr"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr)
            .expect("open stderr file");
        let mut command = Command::new(skald_bin());
        command.arg("server");
        for (key, value) in overrides {
            command.arg("--override").arg(format!("{key}={value}"));
        }
        for (name, value) in env {
            command.env(name, value);
        }
        command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone stderr file"))
            .stderr(file);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", skald_bin()));
        Node { child, stderr }
    }

    /// Polls `GET path` until it answers exactly `(status, body)`.
    fn await_answer(&mut self, metrics: SocketAddr, path: &str, status: u16, body: &str) {
        let mut last = None;
        poll_until(
            &format!("GET {path} on {metrics} to answer {status} {body:?}"),
            Duration::from_secs(30),
            || {
                if let Ok(Some(exit)) = self.child.try_wait() {
                    panic!(
                        "the server exited with {exit}, last answer {last:?}\n{}",
                        std::fs::read_to_string(&self.stderr).unwrap_or_default()
                    );
                }
                let answer = http_get(metrics, path).ok();
                let done = answer
                    .as_ref()
                    .is_some_and(|(s, b)| *s == status && b == body);
                last = answer;
                done.then_some(())
            },
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- {} ---\n{}",
                self.stderr.display(),
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
        }
    }
}

#[test]
fn health_and_ready_follow_a_broker_from_waiting_for_controllers_to_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (controller_port, kafka_port) = (free_port(), free_port());
    let (controller_metrics, broker_metrics) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let voters = format!("1@127.0.0.1:{controller_port}");

    // A broker whose controller is not up yet: alive, not ready.
    let mut broker = Node::spawn(
        dir.path(),
        "broker",
        &[
            ("node.id", "2".into()),
            ("process.roles", "broker".into()),
            ("controller.quorum.voters", voters.clone()),
            ("listeners", format!("PLAINTEXT://127.0.0.1:{kafka_port}")),
            ("log.dirs", dir.path().join("broker").display().to_string()),
            ("metrics.listener", broker_metrics.to_string()),
        ],
        &[],
    );
    broker.await_answer(broker_metrics, "/health", 200, "ok\n");
    assert_eq!(
        http_get(broker_metrics, "/ready").expect("GET /ready"),
        (503, "not ready: starting\n".to_string())
    );
    assert_eq!(
        http_get(broker_metrics, "/nothing").expect("GET /nothing"),
        (
            404,
            "not found: try /metrics, /health or /ready\n".to_string()
        )
    );

    // The controller comes up: it is ready once it leads its quorum of one, and the broker once
    // it is registered, unfenced and listening.
    let mut controller = Node::spawn(
        dir.path(),
        "controller",
        &[
            ("node.id", "1".into()),
            ("process.roles", "controller".into()),
            ("controller.quorum.voters", voters),
            (
                "listeners",
                format!("CONTROLLER://127.0.0.1:{controller_port}"),
            ),
            (
                "log.dirs",
                dir.path().join("controller").display().to_string(),
            ),
            ("metrics.listener", controller_metrics.to_string()),
        ],
        &[],
    );
    controller.await_answer(controller_metrics, "/health", 200, "ok\n");
    controller.await_answer(controller_metrics, "/ready", 200, "ready\n");
    broker.await_answer(broker_metrics, "/ready", 200, "ready\n");
    assert_eq!(
        http_get(broker_metrics, "/health").expect("GET /health"),
        (200, "ok\n".to_string())
    );
    assert_produce_then_fetch(SocketAddr::from(([127, 0, 0, 1], kafka_port)), "ready");
}

#[test]
fn a_server_is_configured_from_skald_environment_variables_under_its_overrides() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (kafka_port, metrics) = (free_port(), SocketAddr::from(([127, 0, 0, 1], free_port())));
    let data = dir.path().join("data");
    let mut node = Node::spawn(
        dir.path(),
        "env",
        // An override wins over the environment.
        &[("num.partitions", "2".into())],
        &[
            ("SKALD_NODE_ID", "5".into()),
            ("SKALD_PROCESS_ROLES", "broker,controller".into()),
            (
                "SKALD_LISTENERS",
                format!("PLAINTEXT://127.0.0.1:{kafka_port}"),
            ),
            ("SKALD_LOG_DIRS", data.display().to_string()),
            ("SKALD_METRICS_LISTENER", metrics.to_string()),
            ("SKALD_NUM_PARTITIONS", "3".into()),
            // The tool's bootstrap list: not a server property, ignored.
            ("SKALD_BROKERS", "127.0.0.1:1".into()),
        ],
    );
    node.await_answer(metrics, "/ready", 200, "ready\n");
    assert_eq!(
        std::fs::read_to_string(data.join("meta.properties"))
            .expect("meta.properties in SKALD_LOG_DIRS")
            .lines()
            .find(|line| line.starts_with("node.id=")),
        Some("node.id=5")
    );
    let kafka = SocketAddr::from(([127, 0, 0, 1], kafka_port));
    wire::ensure_topic(kafka, "from-env");
    let metadata = RawConn::connect(kafka).metadata(Some(&["from-env"]), false);
    let brokers: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id.0).collect();
    assert_eq!(brokers, vec![5]);
    assert_eq!(metadata.topics[0].partitions.len(), 2);
}
