//! A cluster of real `skald` processes on loopback ports: controllers (`process.roles=controller`)
//! and brokers (`process.roles=broker`), or combined nodes, sharing one
//! `controller.quorum.voters`. Each node has its own data directory and stderr file, kept across
//! restarts; nothing sleeps to synchronise — readiness and state are polled with deadlines.
//!
//! [`TestCluster::start_with_links`] routes brokers' and controllers' traffic through cuttable
//! [`Link`]s so that a test can isolate a broker ([`TestCluster::isolate`]) or cut a controller off
//! ([`TestCluster::cut_off_controller`]) and heal them again.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::netns::{Endpoint, Fabric};
use super::netsplit::{Direction, Link};
use super::{
    free_port, metric_sample, poll_until, read_tail, skald_bin, wait_until_serving, PORT_ATTEMPTS,
    STOP_TIMEOUT,
};

const STDERR_TAIL_BYTES: u64 = 12 * 1024;
/// The `cluster.id` of a cluster with links: each broker names the controllers by its own links'
/// ports, so the id cannot be derived from `controller.quorum.voters` (which then differs per node).
const LINKED_CLUSTER_ID: &str = "skaldNetsplitTestClstr";

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
    /// The address the node listens on: loopback, or its host's in a cluster in network
    /// namespaces.
    pub host: Ipv4Addr,
    dir: PathBuf,
    pub kafka_port: u16,
    pub controller_port: u16,
    pub metrics_port: u16,
    child: Option<Child>,
}

impl ClusterNode {
    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.host, self.kafka_port)
    }

    pub fn kafka_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.host), self.kafka_port)
    }

    pub fn controller_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.host), self.controller_port)
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.host), self.metrics_port)
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

/// The links a broker's traffic takes in a cluster started with
/// [`TestCluster::start_with_links`].
pub struct BrokerLinks {
    /// In front of the broker's Kafka listener, and registered as its advertised listener: every
    /// connection made to the address Metadata gives for the broker (other brokers' replica
    /// fetchers, clients that follow Metadata) goes through it.
    pub listener: Link,
    /// The broker's way to each controller voter, by node id: its `controller.quorum.voters`
    /// names these (registration, heartbeats, metadata fetches, AlterPartition).
    pub controllers: BTreeMap<i32, Link>,
}

pub struct TestCluster {
    dir: tempfile::TempDir,
    pub nodes: Vec<ClusterNode>,
    voters: String,
    overrides: Vec<(String, String)>,
    /// `Some` for a cluster started with [`TestCluster::start_with_links`]: each broker's links.
    links: Option<BTreeMap<i32, BrokerLinks>>,
    /// In a cluster with links, controller `from`'s way to controller `to` (raft), by
    /// `(from, to)`: each controller's `controller.quorum.voters` names these for its peers.
    raft_links: BTreeMap<(i32, i32), Link>,
    /// `Some` for a cluster started with [`TestCluster::start_in_netns_prepared`]: each node a
    /// host of its own. Dropped after the nodes are killed (fields drop after `Drop::drop`).
    fabric: Option<Fabric>,
}

impl TestCluster {
    /// `controllers` controller-only nodes (ids 1..) and `brokers` broker-only nodes (ids after
    /// them), all started; returns once every broker serves clients.
    pub fn start(controllers: usize, brokers: usize, overrides: &[(&str, &str)]) -> TestCluster {
        let roles = controllers_then_brokers(controllers, brokers);
        TestCluster::start_roles(&roles, overrides)
    }

    pub fn start_roles(roles: &[Role], overrides: &[(&str, &str)]) -> TestCluster {
        TestCluster::start_roles_linked(roles, overrides, false, &mut |_| {})
    }

    /// As [`TestCluster::start`], with every broker's traffic routed through [`Link`]s the test
    /// can cut ([`TestCluster::isolate`]) and heal ([`TestCluster::heal`]):
    /// - each broker reaches each controller through a link of its own (its
    ///   `controller.quorum.voters` names the links' ports);
    /// - each broker advertises a link in front of its Kafka listener (`advertised.listeners`),
    ///   so other brokers' replica fetchers reach it only through that link;
    /// - each controller reaches each other controller through a link of its own (raft), so a
    ///   controller can be cut off ([`TestCluster::cut_off_controller`]).
    ///
    /// Not routed through links: the test's own connections to [`ClusterNode::kafka_addr`] (the
    /// real listener) and metrics. Every node gets an explicit `cluster.id`, since the nodes'
    /// voters strings differ.
    pub fn start_with_links(
        controllers: usize,
        brokers: usize,
        overrides: &[(&str, &str)],
    ) -> TestCluster {
        TestCluster::start_with_links_prepared(controllers, brokers, overrides, &mut |_| {})
    }

    /// As [`TestCluster::start_with_links`], calling `prepare` for each node once its ports and
    /// directory are chosen and before it starts (e.g. to mount a file system at its data dir);
    /// again for every node if the cluster starts again on fresh ports.
    pub fn start_with_links_prepared(
        controllers: usize,
        brokers: usize,
        overrides: &[(&str, &str)],
        prepare: &mut dyn FnMut(&ClusterNode),
    ) -> TestCluster {
        let roles = controllers_then_brokers(controllers, brokers);
        TestCluster::start_roles_linked(&roles, overrides, true, prepare)
    }

    /// A cluster of `roles` with its ports chosen and no node started: the test starts each with
    /// [`TestCluster::start_node`] and waits with [`TestCluster::wait_node_ready`] (unlike
    /// [`TestCluster::start`], no fresh ports if another process takes one meanwhile).
    pub fn unstarted(roles: &[Role], overrides: &[(&str, &str)]) -> TestCluster {
        let mut cluster = TestCluster::unstarted_linked(roles, overrides, false);
        cluster.assign_ports();
        cluster
    }

    /// As [`TestCluster::start_with_links_prepared`], but each node is a host of its own in a
    /// network namespace ([`Fabric`], needs root and iproute2), on an address of its own: the
    /// faults ([`TestCluster::isolate`], [`TestCluster::stall_one_way`],
    /// [`TestCluster::split`], [`TestCluster::cut_pair`]) lose packets between hosts, per pair
    /// and per direction, for every connection — brokers' fetches from each other and the
    /// test's clients (which run outside every host) included.
    pub fn start_in_netns_prepared(
        controllers: usize,
        brokers: usize,
        overrides: &[(&str, &str)],
        prepare: &mut dyn FnMut(&ClusterNode),
    ) -> TestCluster {
        let roles = controllers_then_brokers(controllers, brokers);
        let mut cluster = TestCluster::unstarted_linked(&roles, overrides, false);
        let hosts: Vec<i32> = cluster.nodes.iter().map(|node| node.node_id).collect();
        let fabric = Fabric::new(&hosts)
            .unwrap_or_else(|e| panic!("the netns harness needs root and iproute2: {e}"));
        for node in &mut cluster.nodes {
            node.host = fabric.ip(node.node_id);
        }
        cluster.fabric = Some(fabric);
        TestCluster::start_unstarted(cluster, prepare)
    }

    fn start_roles_linked(
        roles: &[Role],
        overrides: &[(&str, &str)],
        linked: bool,
        prepare: &mut dyn FnMut(&ClusterNode),
    ) -> TestCluster {
        let cluster = TestCluster::unstarted_linked(roles, overrides, linked);
        TestCluster::start_unstarted(cluster, prepare)
    }

    /// Starts every node of `cluster` and waits until each serves.
    fn start_unstarted(
        mut cluster: TestCluster,
        prepare: &mut dyn FnMut(&ClusterNode),
    ) -> TestCluster {
        // A port found free can be taken by another test before a node binds it: then start the
        // whole cluster again on fresh ports (the voters list names the controllers' ports).
        for attempt in 1..=PORT_ATTEMPTS {
            cluster.assign_ports();
            for index in 0..cluster.nodes.len() {
                prepare(&cluster.nodes[index]);
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

    /// The cluster's nodes, with no ports assigned and none started.
    fn unstarted_linked(roles: &[Role], overrides: &[(&str, &str)], linked: bool) -> TestCluster {
        // A combined node's controller traffic (Raft among voters) would bypass the links.
        assert!(
            !linked || !roles.contains(&Role::Combined),
            "a cluster with links has controller-only and broker-only nodes"
        );
        let dir = tempfile::Builder::new()
            .prefix("skald-cluster-")
            // SKALD_TEST_KEEP=1 keeps every node's data and stderr for a post-mortem.
            .disable_cleanup(std::env::var_os("SKALD_TEST_KEEP").is_some())
            .tempdir()
            .expect("create temp dir");
        if std::env::var_os("SKALD_TEST_KEEP").is_some() {
            eprintln!("harness: cluster directory {}", dir.path().display());
        }
        TestCluster {
            nodes: roles
                .iter()
                .enumerate()
                .map(|(index, role)| ClusterNode {
                    node_id: index as i32 + 1,
                    role: *role,
                    host: Ipv4Addr::LOCALHOST,
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
            links: linked.then(BTreeMap::new),
            raft_links: BTreeMap::new(),
            fabric: None,
        }
    }

    fn assign_ports(&mut self) {
        // A link binds a port of the kernel's choosing, which can be one just picked (and
        // released) for a node: that node could not listen, and its link would make it look
        // ready. Pick again until the two sets are apart.
        loop {
            self.assign_ports_once();
            let node_ports: std::collections::BTreeSet<u16> = self
                .nodes
                .iter()
                .flat_map(|node| [node.kafka_port, node.controller_port, node.metrics_port])
                .collect();
            let link_ports = self
                .links
                .iter()
                .flat_map(|links| links.values())
                .flat_map(|links| {
                    std::iter::once(&links.listener).chain(links.controllers.values())
                })
                .chain(self.raft_links.values())
                .map(|link| link.addr().port());
            if link_ports
                .into_iter()
                .all(|port| !node_ports.contains(&port))
            {
                return;
            }
        }
    }

    fn assign_ports_once(&mut self) {
        // A port the kernel just handed out and took back can come round again at once: never
        // give two listeners of this cluster the same one (a node would then see another's
        // listener as its own and look ready).
        let mut taken = std::collections::BTreeSet::new();
        let mut unique_port = || loop {
            let port = free_port();
            if taken.insert(port) {
                return port;
            }
        };
        for node in &mut self.nodes {
            node.kafka_port = unique_port();
            node.controller_port = unique_port();
            node.metrics_port = unique_port();
        }
        self.voters = self
            .nodes
            .iter()
            .filter(|node| node.role.is_controller())
            .map(|node| format!("{}@{}", node.node_id, node.controller_addr()))
            .collect::<Vec<_>>()
            .join(",");
        if self.links.is_some() {
            let brokers: Vec<i32> = self.brokers().map(|node| node.node_id).collect();
            // New links for new ports; the old ones (a retried start) close as they drop.
            self.links = Some(BTreeMap::new());
            for broker in brokers {
                self.make_links(broker);
            }
            let controllers: Vec<(i32, SocketAddr)> = self
                .controllers()
                .map(|node| (node.node_id, node.controller_addr()))
                .collect();
            self.raft_links = controllers
                .iter()
                .flat_map(|(from, _)| {
                    controllers
                        .iter()
                        .filter(move |(to, _)| to != from)
                        .map(move |(to, addr)| ((*from, *to), Link::new(*addr)))
                })
                .collect();
        }
    }

    /// Creates the links of broker `node_id` (a cluster with links only).
    fn make_links(&mut self, node_id: i32) {
        let listener = Link::new(self.node(node_id).kafka_addr());
        let controllers = self
            .controllers()
            .map(|controller| (controller.node_id, Link::new(controller.controller_addr())))
            .collect();
        let links = self.links.as_mut().expect("a cluster with links");
        links.insert(
            node_id,
            BrokerLinks {
                listener,
                controllers,
            },
        );
    }

    /// The links of broker `node_id`; panics unless the cluster was started with links.
    pub fn links(&self, node_id: i32) -> &BrokerLinks {
        self.links
            .as_ref()
            .expect("the cluster was not started with links")
            .get(&node_id)
            .unwrap_or_else(|| panic!("node {node_id} is not a broker with links"))
    }

    /// Cuts broker `node_id` off: its links to every controller and the link in front of its
    /// listener. Then it can reach no controller (so it learns no metadata, cannot heartbeat and
    /// its AlterPartition requests fail), and no other broker can fetch from it. Still open: its
    /// own connections to other brokers (they go through *their* listener links, which stay up),
    /// the test's direct connections to its real listener ([`ClusterNode::kafka_addr`]), and its
    /// metrics endpoint.
    ///
    /// In a cluster in namespaces, every packet to and from its host is lost instead: its
    /// fetches from other brokers, the test's connections and its metrics endpoint included.
    pub fn isolate(&self, node_id: i32) {
        if let Some(fabric) = &self.fabric {
            for other in fabric.others(node_id) {
                fabric.cut(Endpoint::Host(node_id), other);
            }
            return;
        }
        let links = self.links(node_id);
        for link in links.controllers.values() {
            link.cut();
        }
        links.listener.cut();
    }

    /// Cuts controller `node_id` off (a cluster with links only): the raft links to and from it
    /// and every broker's link to it. It keeps running, and believes it leads until raft's
    /// check-quorum tells it otherwise; nobody reaches it and it reaches nobody.
    pub fn cut_off_controller(&self, node_id: i32) {
        for link in self.controller_links(node_id) {
            link.cut();
        }
    }

    /// As [`TestCluster::cut_off_controller`], but silently ([`Link::black_hole`]): no
    /// connection to or from it breaks, nothing arrives — a dead host or a dropping firewall,
    /// which peers notice only by their own timeouts. Connections open meanwhile stay silent for
    /// good, also after [`TestCluster::reconnect_controller`].
    pub fn silence_controller(&self, node_id: i32) {
        for link in self.controller_links(node_id) {
            link.black_hole();
        }
    }

    /// Undoes [`TestCluster::cut_off_controller`] and [`TestCluster::silence_controller`].
    pub fn reconnect_controller(&self, node_id: i32) {
        for link in self.controller_links(node_id) {
            link.heal();
        }
    }

    /// Every link that carries controller `node_id`'s traffic.
    fn controller_links(&self, node_id: i32) -> Vec<&Link> {
        assert!(
            self.node(node_id).role.is_controller() && self.links.is_some(),
            "node {node_id} is not a controller of a cluster with links"
        );
        let raft = self
            .raft_links
            .iter()
            .filter(|((from, to), _)| *from == node_id || *to == node_id)
            .map(|(_, link)| link);
        let brokers = self
            .links
            .iter()
            .flat_map(|links| links.values())
            .filter_map(|links| links.controllers.get(&node_id));
        raft.chain(brokers).collect()
    }

    /// A one-way partition of node `node_id` (a cluster with links only): with `outbound`, every
    /// byte it sends is held (its requests to controllers and raft peers, its answers to whoever
    /// asked it), otherwise every byte it would receive; the other direction flows. Undone by
    /// [`TestCluster::heal_all`]. Not covered: a broker's own connections to other brokers'
    /// listeners (replica fetching), which share those brokers' listener links with everyone.
    ///
    /// In a cluster in namespaces, the packets of that direction are lost between its host and
    /// every other host and the outside, its own fetches from other brokers included.
    pub fn stall_one_way(&self, node_id: i32, outbound: bool) {
        if let Some(fabric) = &self.fabric {
            let host = Endpoint::Host(node_id);
            for other in fabric.others(node_id) {
                if outbound {
                    fabric.drop_packets(host, other);
                } else {
                    fabric.drop_packets(other, host);
                }
            }
            return;
        }
        let (sending, receiving) = if outbound {
            (Direction::ToTarget, Direction::FromTarget)
        } else {
            (Direction::FromTarget, Direction::ToTarget)
        };
        if self.node(node_id).role.is_broker() {
            let links = self.links(node_id);
            for link in links.controllers.values() {
                link.stall(sending);
            }
            links.listener.stall(receiving);
        } else {
            for ((from, to), link) in &self.raft_links {
                if *from == node_id {
                    link.stall(sending);
                } else if *to == node_id {
                    link.stall(receiving);
                }
            }
            for links in self.links.iter().flat_map(|links| links.values()) {
                if let Some(link) = links.controllers.get(&node_id) {
                    link.stall(receiving);
                }
            }
        }
    }

    /// Splits the cluster in two (a cluster with links only): `minority` on one side, every
    /// other node and the test's clients on the other. Cut: raft between the sides, brokers'
    /// links to controllers across, and the listener links of the minority's brokers (the
    /// clients and the other brokers are on the majority side). Not covered: a minority
    /// broker's own connections to majority brokers' listeners (see
    /// [`TestCluster::stall_one_way`]). Undone by [`TestCluster::heal_all`].
    ///
    /// In a cluster in namespaces, every packet between the two sides is lost (the test's
    /// clients are on the majority side), every connection included.
    pub fn split(&self, minority: &[i32]) {
        if let Some(fabric) = &self.fabric {
            for &member in minority {
                for other in fabric.others(member) {
                    if !matches!(other, Endpoint::Host(h) if minority.contains(&h)) {
                        fabric.cut(Endpoint::Host(member), other);
                    }
                }
            }
            return;
        }
        let apart = |a: &i32, b: &i32| minority.contains(a) != minority.contains(b);
        for ((from, to), link) in &self.raft_links {
            if apart(from, to) {
                link.cut();
            }
        }
        for (broker, links) in self.links.iter().flat_map(|links| links.iter()) {
            for (controller, link) in &links.controllers {
                if apart(broker, controller) {
                    link.cut();
                }
            }
            if minority.contains(broker) {
                links.listener.cut();
            }
        }
    }

    /// Cuts hosts `a` and `b` apart, both ways, and nothing else (a cluster in namespaces only):
    /// what links cannot do, since every broker reaches another through that broker's one
    /// listener link. Undone by [`TestCluster::heal_all`].
    pub fn cut_pair(&self, a: i32, b: i32) {
        let fabric = self
            .fabric
            .as_ref()
            .expect("a cluster in network namespaces");
        fabric.cut(Endpoint::Host(a), Endpoint::Host(b));
    }

    /// Whether the cluster's nodes are hosts in network namespaces.
    pub fn in_netns(&self) -> bool {
        self.fabric.is_some()
    }

    /// Heals every link of the cluster (cuts, black holes, stalls), or every lost direction
    /// between its hosts.
    pub fn heal_all(&self) {
        if let Some(fabric) = &self.fabric {
            fabric.heal_all();
            return;
        }
        let brokers = self.links.iter().flat_map(|links| links.values());
        let broker_links = brokers
            .flat_map(|links| std::iter::once(&links.listener).chain(links.controllers.values()));
        for link in broker_links.chain(self.raft_links.values()) {
            link.heal();
        }
    }

    /// Undoes [`TestCluster::isolate`]: new connections through the broker's links go through.
    pub fn heal(&self, node_id: i32) {
        if self.fabric.is_some() {
            return self.heal_all();
        }
        let links = self.links(node_id);
        for link in links.controllers.values() {
            link.heal();
        }
        links.listener.heal();
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

    /// The value of one metric series on `node` (see [`metric_sample`]); panics if it has none.
    pub fn metric(&self, node: i32, series: &str) -> f64 {
        metric_sample(self.node(node).metrics_addr(), series)
            .unwrap_or_else(|| panic!("node {node} exports no {series}"))
    }

    /// The first controller `consider` accepts that reports itself the active one
    /// (`skald_controller_active 1`), asking each once; a paused node costs the HTTP deadline.
    pub fn active_controller_among(&self, consider: impl Fn(i32) -> bool) -> Option<i32> {
        self.controllers()
            .filter(|node| consider(node.node_id))
            .find(|node| metric_sample(node.metrics_addr(), "skald_controller_active") == Some(1.0))
            .map(|node| node.node_id)
    }

    /// Waits until exactly one controller reports itself active (a deposed leader may still
    /// say so until it steps down) and returns it.
    pub fn active_controller(&self, timeout: Duration) -> i32 {
        poll_until("exactly one active controller", timeout, || {
            let active: Vec<i32> = self
                .controllers()
                .filter(|node| {
                    metric_sample(node.metrics_addr(), "skald_controller_active") == Some(1.0)
                })
                .map(|node| node.node_id)
                .collect();
            (active.len() == 1).then(|| active[0])
        })
    }

    /// Every broker's bootstrap address, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.brokers()
            .map(ClusterNode::bootstrap)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, index: usize) {
        let node_id = self.nodes[index].node_id;
        // With links, a broker names the controllers by its own links and advertises the link in
        // front of its listener; controllers keep the real addresses.
        let linked = self.links.is_some();
        let (voters, advertised) = match self.links.as_ref().and_then(|l| l.get(&node_id)) {
            Some(links) => (
                links
                    .controllers
                    .iter()
                    .map(|(id, link)| format!("{id}@{}", link.addr()))
                    .collect::<Vec<_>>()
                    .join(","),
                Some(links.listener.addr()),
            ),
            None if linked && self.nodes[index].role.is_controller() => (
                self.controllers()
                    .map(
                        |controller| match self.raft_links.get(&(node_id, controller.node_id)) {
                            Some(link) => format!("{}@{}", controller.node_id, link.addr()),
                            None => {
                                format!("{}@{}", controller.node_id, controller.controller_addr())
                            }
                        },
                    )
                    .collect::<Vec<_>>()
                    .join(","),
                None,
            ),
            None => (self.voters.clone(), None),
        };
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
            listeners.push(format!("PLAINTEXT://{}", node.kafka_addr()));
        }
        if node.role.is_controller() {
            listeners.push(format!("CONTROLLER://{}", node.controller_addr()));
        }
        let mut command = match &self.fabric {
            Some(fabric) => fabric.command(node.node_id, skald_bin()),
            None => Command::new(skald_bin()),
        };
        command.arg("server");
        let mut set = |key: &str, value: String| {
            command.arg("--override").arg(format!("{key}={value}"));
        };
        set("node.id", node.node_id.to_string());
        set("process.roles", node.role.roles().to_string());
        set("controller.quorum.voters", voters);
        set("listeners", listeners.join(","));
        if linked {
            set("cluster.id", LINKED_CLUSTER_ID.to_string());
        }
        if let Some(advertised) = advertised {
            set("advertised.listeners", format!("PLAINTEXT://{advertised}"));
        }
        set("log.dirs", node.data_dir().display().to_string());
        set("metrics.listener", node.metrics_addr().to_string());
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
        assert!(
            self.fabric.is_none(),
            "a cluster in namespaces has a fixed set of hosts"
        );
        self.nodes.push(ClusterNode {
            node_id,
            role: Role::Broker,
            host: Ipv4Addr::LOCALHOST,
            dir: self.dir.path().join(format!("node-{node_id}")),
            kafka_port: free_port(),
            controller_port: free_port(),
            metrics_port: free_port(),
            child: None,
        });
        if self.links.is_some() {
            self.make_links(node_id);
        }
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

    /// SIGSTOP one node: its sockets stay open and its kernel keeps accepting and acknowledging,
    /// but nothing answers (a stalled process, a long GC pause) until [`TestCluster::resume`].
    /// Nothing may connect to it meanwhile expecting an answer: the test's own requests would
    /// time out too.
    pub fn pause(&self, node_id: i32) {
        self.signal(node_id, "-STOP");
    }

    /// SIGCONT a node [`TestCluster::pause`]d.
    pub fn resume(&self, node_id: i32) {
        self.signal(node_id, "-CONT");
    }

    fn signal(&self, node_id: i32, signal: &str) {
        let node = self.node(node_id);
        let pid = node
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {node_id} is not running"))
            .id();
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .unwrap_or_else(|e| panic!("run kill {signal}: {e}"));
        assert!(status.success(), "kill {signal} {pid} (node {node_id})");
    }

    /// SIGTERM one node and wait for a clean exit.
    pub fn stop(&mut self, node_id: i32) {
        self.stop_timed(node_id);
    }

    /// SIGTERM one node, wait for a clean exit and return how long it took from the signal.
    pub fn stop_timed(&mut self, node_id: i32) -> Duration {
        let index = self.index_of(node_id);
        let node = &mut self.nodes[index];
        let mut child = node.child.take().expect("node is not running");
        signal(&child, "-TERM");
        let signalled = Instant::now();
        let status = poll_until("node exit after SIGTERM", STOP_TIMEOUT, || {
            child.try_wait().expect("try_wait")
        });
        let took = signalled.elapsed();
        assert!(
            status.success(),
            "node {node_id} exited with {status}\n--- stderr ---\n{}",
            node.stderr_tail()
        );
        took
    }

    /// Waits for one node to exit by itself (a decommissioned broker does) and returns how it
    /// exited.
    pub fn wait_for_exit(&mut self, node_id: i32) -> std::process::ExitStatus {
        let index = self.index_of(node_id);
        let node = &mut self.nodes[index];
        let mut child = node.child.take().expect("node is not running");
        poll_until("the node's own exit", STOP_TIMEOUT, || {
            child.try_wait().expect("try_wait")
        })
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

    /// The process id of a running node.
    pub fn pid(&self, node_id: i32) -> u32 {
        self.node(node_id)
            .child
            .as_ref()
            .expect("node is not running")
            .id()
    }
}

/// `controllers` controller-only nodes (ids 1..) then `brokers` broker-only ones.
fn controllers_then_brokers(controllers: usize, brokers: usize) -> Vec<Role> {
    (0..controllers)
        .map(|_| Role::Controller)
        .chain((0..brokers).map(|_| Role::Broker))
        .collect()
}

/// Sends `signal` (`-TERM`, `-STOP`, ...) to a node's process.
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(signal)
        .arg(child.id().to_string())
        .status()
        .unwrap_or_else(|e| panic!("run kill {signal}: {e}"));
    assert!(
        status.success(),
        "kill {signal} {} failed: {status}",
        child.id()
    );
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
