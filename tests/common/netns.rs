//! Hosts in network namespaces (needs root and iproute2's `ip`, as CI and the developers'
//! machines have): each node of a cluster runs in a namespace of its own with one address on a
//! bridge in the test's own namespace, so the network between any two of them can fail the way
//! a real one does — per pair of hosts and per direction, packets silently lost.
//!
//! **How packets are lost.** This kernel has no `sch_netem` and no iptables, so loss is made
//! with the neighbour table: [`Fabric::drop_packets`] gives `from` a permanent ARP entry for
//! `to`'s address pointing at a hardware address nobody has. Every frame `from` sends to `to`
//! then goes to that address and is discarded by the bridge's other ports, silently — no
//! error for the sender, whose TCP retransmits until its own timeouts decide — while `to`'s
//! frames to `from` still arrive (ARP replies go to the asker's own hardware address, not
//! through the table). Removing the entry heals the direction: the next frame asks ARP again.
//! Loss is all or nothing per direction: packet loss rates and delays need netem, which is not
//! here.
//!
//! **Clean-up.** A fabric claims a number (its `/24` and its names) by creating a file in
//! [`REGISTRY`] holding the test process's pid; dropping it deletes its namespaces (their veths
//! go with them), its bridge and the file. A test killed half-way leaves them behind: the next
//! fabric to be made removes every one whose pid is no longer running before it claims its own.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

/// Where fabrics register (one file per claimed number, holding the owner's pid).
const REGISTRY: &str = "/tmp/skald-netns";
/// How many fabrics can exist at once (their numbers are the third byte of their `/24`).
const FABRICS_MAX: u32 = 250;
/// A hardware address no host has: frames sent to it are lost.
const NOWHERE_MAC: &str = "02:00:00:5e:ad:01";

/// One end of a path through the fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    /// The host of this node id.
    Host(i32),
    /// The test's own namespace: the test and its clients.
    Outside,
}

pub struct Fabric {
    number: u32,
    hosts: Vec<i32>,
    /// Directions whose packets are being dropped, as `(from, to)`.
    dropped: Mutex<BTreeSet<(Endpoint, Endpoint)>>,
}

impl Fabric {
    /// A bridge in this namespace and one namespace per host id (1..=253), each with an address
    /// on the bridge.
    pub fn new(hosts: &[i32]) -> Result<Fabric, String> {
        assert!(
            hosts.iter().all(|&h| (1..=253).contains(&h)),
            "host ids are the last byte of their address: 1..=253"
        );
        std::fs::create_dir_all(REGISTRY).map_err(|e| format!("create {REGISTRY}: {e}"))?;
        remove_abandoned();
        let number = (0..FABRICS_MAX)
            .find(|n| claim(*n))
            .ok_or("every fabric number is taken")?;
        let fabric = Fabric {
            number,
            hosts: hosts.to_vec(),
            dropped: Mutex::new(BTreeSet::new()),
        };
        // Built after the claim, so a failure half-way is cleaned up by the fabric's drop.
        fabric.build()?;
        Ok(fabric)
    }

    fn build(&self) -> Result<(), String> {
        let bridge = self.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.outside_ip()),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for &host in &self.hosts {
            let namespace = self.namespace(host);
            let (outer, inner) = (
                format!("sk{}v{host}", self.number),
                format!("sk{}p{host}", self.number),
            );
            ip(&["netns", "add", &namespace])?;
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            ip(&["link", "set", &inner, "netns", &namespace])?;
            ip(&["link", "set", &outer, "master", &bridge])?;
            ip(&["link", "set", &outer, "up"])?;
            ip(&["-n", &namespace, "link", "set", &inner, "name", "eth0"])?;
            let address = format!("{}/24", self.ip(host));
            ip(&["-n", &namespace, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// The address of host `host`.
    pub fn ip(&self, host: i32) -> Ipv4Addr {
        Ipv4Addr::new(10, 201, self.number as u8, host as u8)
    }

    /// The test's own address on the bridge.
    pub fn outside_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 201, self.number as u8, 254)
    }

    pub fn namespace(&self, host: i32) -> String {
        format!("sk{}h{host}", self.number)
    }

    fn bridge(&self) -> String {
        format!("skbr{}", self.number)
    }

    /// A command that runs `program` inside host `host`'s namespace (`ip netns exec` execs it,
    /// so the child's pid is the program's own: signals reach it directly).
    pub fn command(&self, host: i32, program: &str) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace(host)])
            .arg(program);
        command
    }

    /// From now on every packet `from` sends to `to` is lost (see the module doc); the other
    /// direction is untouched.
    pub fn drop_packets(&self, from: Endpoint, to: Endpoint) {
        let mut dropped = self.dropped.lock().unwrap();
        if !dropped.insert((from, to)) {
            return;
        }
        let (namespace, device) = self.device(from);
        let target = self.address(to).to_string();
        let mut args = namespace_args(&namespace);
        args.extend([
            "neigh",
            "replace",
            &target,
            "lladdr",
            NOWHERE_MAC,
            "dev",
            &device,
            "nud",
            "permanent",
        ]);
        ip(&args).unwrap_or_else(|e| panic!("drop {from:?} -> {to:?}: {e}"));
    }

    /// [`Fabric::drop_packets`] both ways between `a` and `b`.
    pub fn cut(&self, a: Endpoint, b: Endpoint) {
        self.drop_packets(a, b);
        self.drop_packets(b, a);
    }

    /// Every host and the outside but `host`.
    pub fn others(&self, host: i32) -> Vec<Endpoint> {
        self.hosts
            .iter()
            .filter(|&&h| h != host)
            .map(|&h| Endpoint::Host(h))
            .chain([Endpoint::Outside])
            .collect()
    }

    /// Every direction delivers again.
    pub fn heal_all(&self) {
        let dropped = std::mem::take(&mut *self.dropped.lock().unwrap());
        for (from, to) in dropped {
            let (namespace, device) = self.device(from);
            let target = self.address(to).to_string();
            let mut args = namespace_args(&namespace);
            args.extend(["neigh", "del", &target, "dev", &device]);
            ip(&args).unwrap_or_else(|e| panic!("heal {from:?} -> {to:?}: {e}"));
        }
    }

    fn address(&self, endpoint: Endpoint) -> Ipv4Addr {
        match endpoint {
            Endpoint::Host(host) => self.ip(host),
            Endpoint::Outside => self.outside_ip(),
        }
    }

    /// The namespace (empty: the test's own) and device an endpoint sends from.
    fn device(&self, endpoint: Endpoint) -> (String, String) {
        match endpoint {
            Endpoint::Host(host) => (self.namespace(host), "eth0".into()),
            Endpoint::Outside => (String::new(), self.bridge()),
        }
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        remove_fabric(self.number);
    }
}

fn namespace_args(namespace: &str) -> Vec<&str> {
    if namespace.is_empty() {
        Vec::new()
    } else {
        vec!["-n", namespace]
    }
}

/// Runs `ip ARGS`; Err with what it printed if it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip").args(args).output().map_err(|e| {
        format!(
            "run ip {}: {e} (the netns harness needs iproute2)",
            args.join(" ")
        )
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Takes fabric number `n` for this process if nobody holds it.
fn claim(n: u32) -> bool {
    let path = Path::new(REGISTRY).join(n.to_string());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path);
    match file {
        Ok(mut file) => {
            use std::io::Write;
            writeln!(file, "{}", std::process::id()).is_ok()
        }
        Err(_) => false,
    }
}

/// Removes every fabric whose owner is no longer running.
fn remove_abandoned() {
    let Ok(entries) = std::fs::read_dir(REGISTRY) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(number) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let owner = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let alive = owner
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            eprintln!("harness: removing network fabric {number} left by a dead process");
            remove_fabric(number);
        }
    }
}

/// Deletes fabric `number`'s namespaces, bridge and registry file, whatever of them exists.
fn remove_fabric(number: u32) {
    let prefix = format!("sk{number}h");
    let namespaces = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for namespace in namespaces
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| {
            name.strip_prefix(&prefix)
                .is_some_and(|id| id.parse::<i32>().is_ok())
        })
    {
        let _ = ip(&["netns", "del", namespace]);
    }
    let _ = ip(&["link", "del", &format!("skbr{number}")]);
    let _ = std::fs::remove_file(Path::new(REGISTRY).join(number.to_string()));
}
