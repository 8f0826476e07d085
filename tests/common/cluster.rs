//! A cluster of real `skald` processes on loopback ports: controllers (`process.roles=controller`)
//! and brokers (`process.roles=broker`), or combined nodes, sharing one
//! `controller.quorum.voters`. Each node has its own data directory and stderr file, kept across
//! restarts; nothing sleeps to synchronise — readiness and state are polled with deadlines.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{
    free_port, poll_until, read_tail, skald_bin, wait_until_serving, PORT_ATTEMPTS, STOP_TIMEOUT,
};

const STDERR_TAIL_BYTES: u64 = 12 * 1024;

/// What a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Controller,
    Broker,
    Combined,
}

impl Role {
    fn roles(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Broker => "broker",
            Role::Combined => "broker,controller",
        }
    }

    pub fn is_broker(self) -> bool {
        self != Role::Controller
    }

    pub fn is_controller(self) -> bool {
        self != Role::Broker
    }
}

pub struct ClusterNode {
    pub node_id: i32,
    pub role: Role,
    dir: PathBuf,
    pub kafka_port: u16,
    pub controller_port: u16,
    pub metrics_port: u16,
    child: Option<Child>,
}

impl ClusterNode {
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    pub fn kafka_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.kafka_port))
    }

    pub fn controller_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.controller_port))
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.metrics_port))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.dir.join("server.stderr")
    }

    pub fn stderr_tail(&self) -> String {
        read_tail(&self.stderr_path(), STDERR_TAIL_BYTES)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().expect("try_wait").is_none())
    }

    /// The address that shows the node is up: its Kafka listener, or a controller's listener.
    fn ready_addr(&self) -> SocketAddr {
        if self.role.is_broker() {
            self.kafka_addr()
        } else {
            self.controller_addr()
        }
    }
}

pub struct TestCluster {
    dir: tempfile::TempDir,
    pub nodes: Vec<ClusterNode>,
    voters: String,
    overrides: Vec<(String, String)>,
}

impl TestCluster {
    /// `controllers` controller-only nodes (ids 1..) and `brokers` broker-only nodes (ids after
    /// them), all started; returns once every broker serves clients.
    pub fn start(controllers: usize, brokers: usize, overrides: &[(&str, &str)]) -> TestCluster {
        let roles = (0..controllers)
            .map(|_| Role::Controller)
            .chain((0..brokers).map(|_| Role::Broker))
            .collect::<Vec<_>>();
        TestCluster::start_roles(&roles, overrides)
    }

    pub fn start_roles(roles: &[Role], overrides: &[(&str, &str)]) -> TestCluster {
        let dir = tempfile::Builder::new()
            .prefix("skald-cluster-")
            .tempdir()
            .expect("create temp dir");
        let mut cluster = TestCluster {
            nodes: roles
                .iter()
                .enumerate()
                .map(|(index, role)| ClusterNode {
                    node_id: index as i32 + 1,
                    role: *role,
                    dir: dir.path().join(format!("node-{}", index + 1)),
                    kafka_port: 0,
                    controller_port: 0,
                    metrics_port: 0,
                    child: None,
                })
                .collect(),
            dir,
            voters: String::new(),
            overrides: overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        // A port found free can be taken by another test before a node binds it: then start the
        // whole cluster again on fresh ports (the voters list names the controllers' ports).
        for attempt in 1..=PORT_ATTEMPTS {
            cluster.assign_ports();
            for index in 0..cluster.nodes.len() {
                cluster.spawn(index);
            }
            let ready: Result<(), String> =
                (0..cluster.nodes.len()).try_for_each(|index| cluster.try_wait_ready(index));
            match ready {
                Ok(()) => return cluster,
                Err(reason) if attempt < PORT_ATTEMPTS && reason.contains("in use") => {
                    cluster.kill_all();
                    for node in &cluster.nodes {
                        let _ = std::fs::remove_dir_all(&node.dir);
                    }
                }
                Err(reason) => panic!("{reason}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn assign_ports(&mut self) {
        for node in &mut self.nodes {
            node.kafka_port = free_port();
            node.controller_port = free_port();
            node.metrics_port = free_port();
        }
        self.voters = self
            .nodes
            .iter()
            .filter(|node| node.role.is_controller())
            .map(|node| format!("{}@127.0.0.1:{}", node.node_id, node.controller_port))
            .collect::<Vec<_>>()
            .join(",");
    }

    fn kill_all(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    pub fn node(&self, node_id: i32) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|node| node.node_id == node_id)
            .expect("no such node")
    }

    fn index_of(&self, node_id: i32) -> usize {
        self.nodes
            .iter()
            .position(|node| node.node_id == node_id)
            .expect("no such node")
    }

    pub fn brokers(&self) -> impl Iterator<Item = &ClusterNode> {
        self.nodes.iter().filter(|node| node.role.is_broker())
    }

    pub fn controllers(&self) -> impl Iterator<Item = &ClusterNode> {
        self.nodes.iter().filter(|node| node.role.is_controller())
    }

    /// Every broker's bootstrap address, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.brokers()
            .map(ClusterNode::bootstrap)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, index: usize) {
        let voters = self.voters.clone();
        let overrides = self.overrides.clone();
        let node = &mut self.nodes[index];
        assert!(
            node.child.is_none(),
            "node {} already running",
            node.node_id
        );
        std::fs::create_dir_all(node.data_dir()).expect("create data dir");
        let mut stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.stderr_path())
            .expect("open stderr file");
        writeln!(stderr, "==== harness: starting node {} ====", node.node_id).expect("write");
        let mut listeners = Vec::new();
        if node.role.is_broker() {
            listeners.push(format!("PLAINTEXT://127.0.0.1:{}", node.kafka_port));
        }
        if node.role.is_controller() {
            listeners.push(format!("CONTROLLER://127.0.0.1:{}", node.controller_port));
        }
        let mut command = Command::new(skald_bin());
        command.arg("server");
        let mut set = |key: &str, value: String| {
            command.arg("--override").arg(format!("{key}={value}"));
        };
        set("node.id", node.node_id.to_string());
        set("process.roles", node.role.roles().to_string());
        set("controller.quorum.voters", voters);
        set("listeners", listeners.join(","));
        set("log.dirs", node.data_dir().display().to_string());
        set(
            "metrics.listener",
            format!("127.0.0.1:{}", node.metrics_port),
        );
        // Fast failure detection on loopback; tests override where they need to.
        set("broker.heartbeat.interval.ms", "200".into());
        set("broker.session.timeout.ms", "1500".into());
        for (key, value) in overrides {
            set(&key, value);
        }
        command
            .env(
                "RUST_LOG",
                std::env::var("SKALD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("clone stderr file"))
            .stderr(stderr);
        node.child = Some(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", skald_bin())),
        );
    }

    fn wait_ready(&mut self, index: usize) {
        if let Err(reason) = self.try_wait_ready(index) {
            panic!("{reason}");
        }
    }

    /// Waits until a node serves; Err (with its stderr) if it exits first or takes too long.
    fn try_wait_ready(&mut self, index: usize) -> Result<(), String> {
        let node = &mut self.nodes[index];
        let (addr, stderr) = (node.ready_addr(), node.stderr_path());
        let what = format!("node {}", node.node_id);
        wait_until_serving(&mut node.child, addr, &what, &stderr)
    }

    /// Adds a broker-only node with the next node id to the running cluster and waits until it
    /// serves clients. Returns its node id.
    pub fn add_broker(&mut self) -> i32 {
        let node_id = self.nodes.len() as i32 + 1;
        self.nodes.push(ClusterNode {
            node_id,
            role: Role::Broker,
            dir: self.dir.path().join(format!("node-{node_id}")),
            kafka_port: free_port(),
            controller_port: free_port(),
            metrics_port: free_port(),
            child: None,
        });
        let index = self.nodes.len() - 1;
        self.spawn(index);
        self.wait_ready(index);
        node_id
    }

    /// SIGKILL one node.
    pub fn kill9(&mut self, node_id: i32) {
        let index = self.index_of(node_id);
        let mut child = self.nodes[index].child.take().expect("node is not running");
        child.kill().expect("SIGKILL node");
        child.wait().expect("wait for killed node");
    }

    /// SIGTERM one node and wait for a clean exit.
    pub fn stop(&mut self, node_id: i32) {
        let index = self.index_of(node_id);
        let node = &mut self.nodes[index];
        let mut child = node.child.take().expect("node is not running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success());
        let status = poll_until("node exit after SIGTERM", STOP_TIMEOUT, || {
            child.try_wait().expect("try_wait")
        });
        assert!(
            status.success(),
            "node {node_id} exited with {status}\n--- stderr ---\n{}",
            node.stderr_tail()
        );
    }

    /// Starts a stopped node again (same ports and data) without waiting for it.
    pub fn start_node(&mut self, node_id: i32) {
        let index = self.index_of(node_id);
        self.spawn(index);
    }

    /// Waits until a (re)started node serves.
    pub fn wait_node_ready(&mut self, node_id: i32) {
        let index = self.index_of(node_id);
        self.wait_ready(index);
    }

    pub fn restart(&mut self, node_id: i32) {
        self.start_node(node_id);
        self.wait_node_ready(node_id);
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.kill_all();
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!(
                    "--- node {} ({:?}) stderr, last {} bytes ---\n{}",
                    node.node_id,
                    node.role,
                    STDERR_TAIL_BYTES,
                    node.stderr_tail()
                );
            }
        }
        let _ = &self.dir;
    }
}
