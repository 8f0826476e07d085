//! `deploy/`'s topologies run without a container engine or a Kubernetes cluster: each node is
//! the real `skald` binary in a network namespace of its own, named and configured as compose or
//! the kubelet would (its name in every host's `/etc/hosts`; the environment `docker-compose
//! config` resolves, or the StatefulSet's with the downward API and `$(VAR)` expansion done as
//! for pod `skald-N` in namespace `streams`), on a bridge with a client host. The nodes form a
//! quorum, report ready, and keep what an acks=all producer wrote through the death of one node
//! (`compose.yaml`, the StatefulSet) or of a controller and a broker (`compose.split.yaml`),
//! serving on, with every consumer group's coordinator answering its committed offsets. Needs root (`ip netns`), as the disk-fault tests do.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{cells, poll_until, run_with_timeout, skald_bin};
use serde_yaml_ng::Value;

/// The bridge's subnet: addresses that exist only inside this test's namespaces.
const SUBNET: &str = "10.77.0";
const CLIENT_HOST: &str = "client";
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// Consumer groups given committed offsets before the kill, each checked after it.
const GROUPS: i64 = 10;

fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run ip {args:?}: {e} (this test needs iproute2 and root)"));
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Network namespaces on one bridge, each a host with the given name; removed on drop.
struct Hosts {
    prefix: String,
    names: Vec<String>,
}

impl Hosts {
    fn new(names: &[&str]) -> Hosts {
        let prefix = format!("skd{}", std::process::id());
        let hosts = Hosts {
            prefix,
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        let switch = hosts.switch();
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        let mut etc_hosts = String::from("127.0.0.1 localhost\n");
        for (index, name) in hosts.names.iter().enumerate() {
            etc_hosts.push_str(&format!("{SUBNET}.{} {name}\n", index + 1));
        }
        for (index, name) in hosts.names.iter().enumerate() {
            let ns = hosts.netns(name);
            let port = format!("p{}", index + 1);
            ip(&["netns", "add", &ns]);
            // Both ends are made in the switch's namespace, so no name is taken in the host's.
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"]);
            let address = format!("{SUBNET}.{}/24", index + 1);
            ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            // `ip netns exec` mounts /etc/netns/<ns>/hosts over /etc/hosts.
            let dir = PathBuf::from("/etc/netns").join(&ns);
            std::fs::create_dir_all(&dir).expect("create /etc/netns/<ns>");
            std::fs::write(dir.join("hosts"), &etc_hosts).expect("write the namespace's hosts");
        }
        hosts
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    fn netns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// `program args` on `host`.
    fn command(&self, host: &str, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.netns(host)])
            .arg(program);
        command
    }

    /// The skald tool on the client host, run to its end; (success, stdout, stderr).
    fn tool(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        let mut command = self.command(CLIENT_HOST, Path::new(skald_bin()));
        command.args(args).env_remove("SKALD_BROKERS");
        let (status, stdout, stderr) = run_with_timeout(command, stdin.as_bytes(), TOOL_TIMEOUT);
        (status.success(), stdout, stderr)
    }

    /// `GET url` from the client host (curl, as a probe would); the body, if it answered 2xx.
    fn http_get(&self, url: &str) -> Option<String> {
        let output = self
            .command(CLIENT_HOST, Path::new("curl"))
            .args(["-sf", "--max-time", "5", url])
            .output()
            .expect("run curl in the client namespace");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for name in &self.names {
            let ns = self.netns(name);
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&ns));
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.switch()])
            .status();
    }
}

/// The `SKALD_*` environment of each skald service of a compose file, as docker-compose
/// resolves it.
fn compose_environments(file: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let output = Command::new("docker-compose")
        .args(["-f", file, "config"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy"))
        .output()
        .expect("run docker-compose (scripts/deploy-tools installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config: Value = serde_yaml_ng::from_slice(&output.stdout).expect("compose config");
    let mut services = BTreeMap::new();
    for (name, service) in config["services"].as_mapping().expect("services") {
        if service["image"].as_str() != Some("skald:dev") {
            continue;
        }
        let env = service["environment"]
            .as_mapping()
            .expect("environment")
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().expect("name").to_string(),
                    v.as_str().expect("value").to_string(),
                )
            })
            .collect();
        services.insert(name.as_str().expect("service").to_string(), env);
    }
    services
}

/// A node's process, killed on drop.
struct Node {
    child: Option<Child>,
    stderr: PathBuf,
}

impl Node {
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL a node");
            child.wait().expect("wait for a killed node");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
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
fn the_compose_cluster_forms_serves_and_survives_the_loss_of_a_node() {
    run_topology(
        compose_environments("compose.yaml"),
        &[("skald-1", 19092), ("skald-2", 29092), ("skald-3", 39092)],
        &[],
        &["skald-3"],
    );
}

#[test]
fn the_split_compose_cluster_survives_the_loss_of_a_controller_and_a_broker() {
    run_topology(
        compose_environments("compose.split.yaml"),
        &[
            ("broker-4", 49092),
            ("broker-5", 59092),
            ("broker-6", 60092),
        ],
        &["controller-1", "controller-2", "controller-3"],
        &["controller-3", "broker-6"],
    );
}

/// The environment the kubelet gives each pod of `deploy/kubernetes/statefulset.yaml` in
/// namespace `namespace`, by the pod's headless-service name (`skald-0.skald-headless.<ns>.svc`).
fn statefulset_environments(namespace: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/statefulset.yaml");
    let text = std::fs::read_to_string(&path).expect("read statefulset.yaml");
    let statefulset: Value = serde_yaml_ng::from_str(&text).expect("statefulset.yaml");
    let spec = &statefulset["spec"];
    let replicas = spec["replicas"].as_u64().expect("replicas");
    let service = spec["serviceName"].as_str().expect("serviceName");
    let container = &spec["template"]["spec"]["containers"][0];
    let mut pods = BTreeMap::new();
    for index in 0..replicas {
        let pod = format!("skald-{index}");
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for var in container["env"].as_sequence().expect("env") {
            let name = var["name"].as_str().expect("env name").to_string();
            let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => pod.clone(),
                Some("metadata.namespace") => namespace.to_string(),
                Some("metadata.labels['apps.kubernetes.io/pod-index']") => index.to_string(),
                Some(other) => panic!("{name}: unexpected field {other}"),
                // Kubernetes' $(VAR) expansion, from the variables defined before.
                None => env.iter().fold(
                    var["value"].as_str().expect("env value").to_string(),
                    |value, (defined, replacement)| {
                        value.replace(&format!("$({defined})"), replacement)
                    },
                ),
            };
            env.insert(name, value);
        }
        pods.insert(format!("{pod}.{service}.{namespace}.svc"), env);
    }
    pods
}

#[test]
fn the_kubernetes_statefulset_pods_form_a_cluster_that_survives_the_loss_of_a_pod() {
    run_topology(
        statefulset_environments("streams"),
        &[
            ("skald-0.skald-headless.streams.svc", 9092),
            ("skald-1.skald-headless.streams.svc", 9092),
            ("skald-2.skald-headless.streams.svc", 9092),
        ],
        &[],
        &["skald-2.skald-headless.streams.svc"],
    );
}

/// Runs `services` (host name → `SKALD_*` environment), each on its own host: `brokers` (with
/// the port each serves clients on) and `controllers_only`. Once every node is ready, an acks=all producer
/// writes 50 records to partition 0 of a topic created with the compose defaults (replication
/// factor 3, min.insync.replicas 2) and [`GROUPS`] groups commit offsets; `victims` are
/// SIGKILLed; 50 more records are acknowledged by what remains; partition 0 then reads back
/// exactly both batches, in order, and every group's committed offset is served.
fn run_topology(
    services: BTreeMap<String, BTreeMap<String, String>>,
    brokers: &[(&str, u16)],
    controllers_only: &[&str],
    victims: &[&str],
) {
    let mut expected: Vec<&str> = brokers.iter().map(|(name, _)| *name).collect();
    expected.extend(controllers_only);
    expected.sort_unstable();
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(names, expected);
    let mut host_names = names.clone();
    host_names.push(CLIENT_HOST);
    let hosts = Hosts::new(&host_names);
    let data = tempfile::tempdir().expect("temp dir");

    let mut nodes: BTreeMap<&str, Node> = BTreeMap::new();
    for (name, env) in &services {
        let stderr = data.path().join(format!("{name}.stderr"));
        let file = std::fs::File::create(&stderr).expect("create stderr file");
        let mut command = hosts.command(name, Path::new(skald_bin()));
        command
            .arg("server")
            .envs(env)
            // The volume: a directory of this test's instead of /var/lib/skald.
            .env(
                "SKALD_LOG_DIRS",
                data.path().join(name).display().to_string(),
            )
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone stderr file"))
            .stderr(file);
        let child = command.spawn().expect("spawn a node");
        nodes.insert(
            name,
            Node {
                child: Some(child),
                stderr,
            },
        );
    }

    // Every node ready: brokers registered, unfenced and listening; controllers knowing the
    // leader of their three-voter quorum.
    for name in &names {
        let url = format!("http://{name}:9644/ready");
        poll_until(
            &format!("{url} to say ready"),
            Duration::from_secs(60),
            || (hosts.http_get(&url)? == "ready\n").then_some(()),
        );
    }
    let bootstrap_of = |brokers: &mut dyn Iterator<Item = &(&str, u16)>| {
        brokers
            .map(|(name, port)| format!("{name}:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let bootstrap = bootstrap_of(&mut brokers.iter());

    let (ok, _, stderr) = hosts.tool(&["topic", "create", "orders", "-b", &bootstrap], "");
    assert!(ok, "topic create: {stderr}");
    let first: String = (0..50).map(|i| format!("before-{i}\n")).collect();
    let (ok, _, stderr) = hosts.tool(
        &[
            "produce", "orders", "--acks", "all", "-p", "0", "-b", &bootstrap,
        ],
        &first,
    );
    assert!(ok, "produce: {stderr}");
    // Groups with committed offsets, their coordinators spread over __consumer_offsets'
    // partitions (three replicas at the defaults).
    let committed: Vec<(String, i64)> =
        (0..GROUPS).map(|i| (format!("group-{i}"), i * 5)).collect();
    for (group, offset) in &committed {
        let (ok, _, stderr) = hosts.tool(
            &[
                "group",
                "reset-offsets",
                group,
                "--topic",
                "orders:0",
                "--to-offset",
                &offset.to_string(),
                "--execute",
                "-b",
                &bootstrap,
            ],
            "",
        );
        assert!(ok, "commit {group}: {stderr}");
    }

    // The quorum keeps two of three voters, partition 0 two in-sync replicas.
    for victim in victims {
        nodes.get_mut(victim).expect("a victim").kill9();
    }
    let survivors = bootstrap_of(&mut brokers.iter().filter(|(name, _)| !victims.contains(name)));
    let second: String = (0..50).map(|i| format!("after-{i}\n")).collect();
    poll_until(
        &format!("an acks=all produce to succeed without {victims:?}"),
        Duration::from_secs(60),
        || {
            let (ok, _, _) = hosts.tool(
                &[
                    "produce", "orders", "--acks", "all", "-p", "0", "-b", &survivors,
                ],
                &second,
            );
            ok.then_some(())
        },
    );

    // Both batches once each, in order, read from the survivors. (A produce attempt that failed
    // above was refused, not appended: a dead node cannot take it, and the survivors answer
    // within the producer's timeout once the controller has fenced the dead broker.)
    let (ok, stdout, stderr) = hosts.tool(
        &[
            "consume",
            "orders",
            "-p",
            "0",
            "--from-beginning",
            "--count",
            "100",
            "-b",
            &survivors,
        ],
        "",
    );
    assert!(ok, "consume: {stderr}");
    let read: Vec<&str> = stdout.lines().collect();
    let expected: Vec<String> = first
        .lines()
        .chain(second.lines())
        .map(String::from)
        .collect();
    assert_eq!(read, expected);

    // Every group still has a coordinator, which answers its committed offset.
    for (group, offset) in &committed {
        let current = poll_until(
            &format!("{group}'s coordinator without {victims:?}"),
            Duration::from_secs(60),
            || {
                let (ok, stdout, _) =
                    hosts.tool(&["group", "describe", group, "-b", &survivors], "");
                // The last table: TOPIC PARTITION CURRENT-OFFSET ...
                let table = stdout.split("\n\n").last()?;
                cells(table)
                    .into_iter()
                    .find(|row| row.len() > 2 && row[0] == "orders" && row[1] == "0")
                    .filter(|_| ok)
                    .map(|row| row[2].clone())
            },
        );
        assert_eq!(current, offset.to_string(), "{group}");
    }
}
