//! `deploy/` validated without a container engine: the compose files resolve (docker-compose
//! `config`) to the expected services whose environment is a valid Skald configuration, the
//! Kubernetes manifests pass kubeconform's strict schema check and describe a working quorum,
//! Prometheus' config and rules pass promtool (with the rules' unit tests), and the dashboard's
//! queries parse and use only metrics Skald exports.
//!
//! The tools come from `scripts/deploy-tools` (which `scripts/test` runs): promtool and
//! docker-compose from Debian, kubeconform and the Kubernetes schemas under `.tools/`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;
use skald_broker::config::env_var_name;
use skald_broker::ServerConfig;

/// The Kubernetes version `scripts/deploy-tools` installs schemas for.
const KUBERNETES_VERSION: &str = "1.37.0";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(path: &str) -> PathBuf {
    repo().join("deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs a validation tool to completion; panics (naming the installer) if it is not there.
/// Returns (success, stdout, stderr).
fn run(program: &Path, args: &[&str], dir: &Path) -> (bool, String, String) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (scripts/deploy-tools installs it; scripts/test runs that)",
                program.display()
            )
        });
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value:?}"))
}

fn keys(mapping: &Value) -> BTreeSet<String> {
    mapping
        .as_mapping()
        .unwrap_or_else(|| panic!("not a mapping: {mapping:?}"))
        .keys()
        .map(|key| str_of(key, "a key").to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The environment variable of every property Skald knows.
fn known_env_vars() -> BTreeSet<String> {
    ServerConfig::load(None, &[])
        .expect("defaults load")
        .known_properties()
        .into_iter()
        .map(|(key, _)| env_var_name(key))
        .collect()
}

/// Loads a node's configuration from its `SKALD_*` environment exactly as the binary does,
/// after checking that every variable names a known property (a typo would be ignored).
fn server_config(env: &BTreeMap<String, String>, what: &str) -> ServerConfig {
    let known = known_env_vars();
    for name in env.keys().filter(|name| name.starts_with("SKALD_")) {
        assert!(known.contains(name), "{what}: {name} is no Skald property");
    }
    let vars = env
        .iter()
        .map(|(name, value)| (OsString::from(name), OsString::from(value)));
    ServerConfig::load_with_env(None, vars, &[])
        .unwrap_or_else(|e| panic!("{what}: invalid configuration: {e}"))
}

/// `docker-compose config` of one compose file, parsed.
fn compose_config(file: &str) -> Value {
    let docker_compose = PathBuf::from("docker-compose");
    let (ok, stdout, stderr) = run(
        &docker_compose,
        &["-f", file, "config"],
        &repo().join("deploy"),
    );
    assert!(ok, "docker-compose -f {file} config failed:\n{stderr}");
    serde_yaml_ng::from_str(&stdout).unwrap_or_else(|e| panic!("{file} resolved: {e}"))
}

/// The Skald nodes of a resolved compose file: service name → (configuration, published ports).
fn compose_nodes(config: &Value) -> BTreeMap<String, (ServerConfig, Vec<u16>)> {
    let mut nodes = BTreeMap::new();
    for (name, service) in config["services"].as_mapping().expect("services") {
        let name = str_of(name, "service name").to_string();
        if service["image"].as_str() != Some("skald:dev") {
            continue;
        }
        assert_eq!(
            service["build"]["dockerfile"].as_str(),
            Some("deploy/Dockerfile"),
            "{name}"
        );
        assert_eq!(
            service["build"]["context"].as_str().map(Path::new),
            Some(repo().as_path()),
            "{name} builds from the repository root"
        );
        assert_eq!(service["hostname"].as_str(), Some(name.as_str()));
        let volumes: Vec<&str> = service["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .map(|v| str_of(v, "volume"))
            .collect();
        assert_eq!(volumes, vec![format!("{name}:/var/lib/skald:rw")], "{name}");
        let env: BTreeMap<String, String> = service["environment"]
            .as_mapping()
            .expect("environment")
            .iter()
            .map(|(k, v)| (str_of(k, "variable").into(), str_of(v, "value").into()))
            .collect();
        let ports: Vec<u16> = service["ports"]
            .as_sequence()
            .map(|ports| {
                ports
                    .iter()
                    .map(|port| {
                        assert_eq!(port["published"], port["target"], "{name}: {port:?}");
                        port["target"].as_u64().expect("port") as u16
                    })
                    .collect()
            })
            .unwrap_or_default();
        nodes.insert(name.clone(), (server_config(&env, &name), ports));
    }
    nodes
}

/// The scrape targets of the `skald` job of a Prometheus config.
fn scrape_targets(prometheus_yml: &Path) -> BTreeSet<String> {
    let config = yaml(prometheus_yml);
    let jobs = config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["job_name"].as_str(), Some("skald"));
    jobs[0]["static_configs"]
        .as_sequence()
        .expect("static_configs")
        .iter()
        .flat_map(|group| group["targets"].as_sequence().expect("targets").iter())
        .map(|target| str_of(target, "target").to_string())
        .collect()
}

/// What every compose node shares: one advertised endpoint named after its service on the
/// port it publishes, a quorum of the given voters, metrics on 9644 for Prometheus.
fn assert_node(name: &str, config: &ServerConfig, ports: &[u16], voters: &[(i32, &str)]) {
    let voter_list: Vec<(i32, String)> = config
        .voters
        .iter()
        .map(|v| (v.node_id, v.address()))
        .collect();
    let expected: Vec<(i32, String)> = voters
        .iter()
        .map(|(id, host)| (*id, format!("{host}:9093")))
        .collect();
    assert_eq!(voter_list, expected, "{name}");
    assert_eq!(
        config.metrics_listener.to_string(),
        "0.0.0.0:9644",
        "{name}"
    );
    assert_eq!(config.log_dirs, vec![PathBuf::from("/var/lib/skald/data")]);
    // The same topic defaults on every node: controllers place topics (partitions, replication
    // factor), brokers enforce min.insync.replicas and create __consumer_offsets.
    for (key, value) in [
        ("num.partitions", "3"),
        ("default.replication.factor", "3"),
        ("min.insync.replicas", "2"),
        ("offsets.topic.replication.factor", "3"),
    ] {
        assert_eq!(config.get(key), value, "{name}: {key}");
    }
    if config.roles.broker {
        let advertised: Vec<(String, u16)> = config
            .advertised_listeners
            .iter()
            .map(|l| (l.host.clone(), l.port))
            .collect();
        assert_eq!(advertised, vec![(name.to_string(), ports[0])], "{name}");
        assert_eq!(ports.len(), 1, "{name}");
    } else {
        assert!(ports.is_empty(), "{name}: a controller serves no clients");
    }
    if config.roles.controller {
        assert_eq!(
            config.controller_listener().map(|l| l.bind_address()),
            Some("0.0.0.0:9093".to_string()),
            "{name}"
        );
    }
}

#[test]
fn compose_file_runs_three_combined_nodes_with_prometheus_and_grafana() {
    let config = compose_config("compose.yaml");
    assert_eq!(
        keys(&config["services"]),
        set(&["skald-1", "skald-2", "skald-3", "prometheus", "grafana"])
    );
    assert_eq!(
        keys(&config["volumes"]),
        set(&["skald-1", "skald-2", "skald-3", "prometheus", "grafana"])
    );
    let nodes = compose_nodes(&config);
    let voters = [(1, "skald-1"), (2, "skald-2"), (3, "skald-3")];
    for (index, (name, (node, ports))) in nodes.iter().enumerate() {
        assert_eq!(node.node_id, index as i32 + 1, "{name}");
        assert!(node.roles.broker && node.roles.controller, "{name}");
        assert_node(name, node, ports, &voters);
    }
    assert_eq!(
        scrape_targets(&deploy("prometheus/prometheus.yml")),
        set(&["skald-1:9644", "skald-2:9644", "skald-3:9644"])
    );
    assert_monitoring_services(&config, "prometheus.yml");
}

#[test]
fn split_compose_file_runs_three_controllers_and_three_brokers() {
    let config = compose_config("compose.split.yaml");
    let services = [
        "controller-1",
        "controller-2",
        "controller-3",
        "broker-4",
        "broker-5",
        "broker-6",
    ];
    let mut all = services.to_vec();
    all.extend(["prometheus", "grafana"]);
    assert_eq!(keys(&config["services"]), set(&all));
    assert_eq!(keys(&config["volumes"]), set(&all));
    let nodes = compose_nodes(&config);
    assert_eq!(
        nodes.keys().cloned().collect::<BTreeSet<_>>(),
        set(&services)
    );
    let voters = [
        (1, "controller-1"),
        (2, "controller-2"),
        (3, "controller-3"),
    ];
    for (name, (node, ports)) in &nodes {
        let id: i32 = name
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("id");
        assert_eq!(node.node_id, id, "{name}");
        let controller = name.starts_with("controller-");
        assert_eq!(
            (node.roles.controller, node.roles.broker),
            (controller, !controller),
            "{name}"
        );
        assert_node(name, node, ports, &voters);
    }
    assert_eq!(
        scrape_targets(&deploy("prometheus/prometheus.split.yml")),
        services.iter().map(|s| format!("{s}:9644")).collect()
    );
    assert_monitoring_services(&config, "prometheus.split.yml");
}

/// Prometheus reads the given config from deploy/prometheus; Grafana gets the provisioning and
/// the dashboard where the provisioning looks for it.
fn assert_monitoring_services(config: &Value, prometheus_yml: &str) {
    let prometheus = &config["services"]["prometheus"];
    let command: Vec<&str> = prometheus["command"]
        .as_sequence()
        .expect("command")
        .iter()
        .map(|c| str_of(c, "argument"))
        .collect();
    assert_eq!(
        command,
        vec![
            format!("--config.file=/etc/prometheus/{prometheus_yml}"),
            "--storage.tsdb.path=/prometheus".to_string(),
        ]
    );
    let volumes = |service: &Value| -> Vec<String> {
        service["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .map(|v| str_of(v, "volume").to_string())
            .collect()
    };
    let deploy_dir = repo().join("deploy");
    assert_eq!(
        volumes(prometheus),
        vec![
            format!(
                "{}:/etc/prometheus:ro",
                deploy_dir.join("prometheus").display()
            ),
            "prometheus:/prometheus:rw".to_string(),
        ]
    );
    let provider = yaml(&deploy("grafana/provisioning/dashboards/skald.yml"));
    let dashboards_dir = str_of(
        &provider["providers"][0]["options"]["path"],
        "dashboards path",
    );
    assert_eq!(
        volumes(&config["services"]["grafana"]),
        vec![
            format!(
                "{}:/etc/grafana/provisioning:ro",
                deploy_dir.join("grafana/provisioning").display()
            ),
            format!(
                "{}:{dashboards_dir}/skald.json:ro",
                deploy_dir.join("grafana/dashboard.json").display()
            ),
            "grafana:/var/lib/grafana:rw".to_string(),
        ]
    );
}

/// Kubernetes' `$(VAR)` expansion of an env value, from the variables defined before it.
fn expand(value: &str, defined: &BTreeMap<String, String>) -> String {
    let mut out = value.to_string();
    for (name, replacement) in defined {
        out = out.replace(&format!("$({name})"), replacement);
    }
    assert!(!out.contains("$("), "unexpanded reference in {value}");
    out
}

#[test]
fn kubernetes_manifests_pass_kubeconform_and_give_each_pod_its_identity() {
    let tools = repo().join(".tools");
    let schema_location = format!(
        "{}/{{{{ .NormalizedKubernetesVersion }}}}-standalone{{{{ .StrictSuffix }}}}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        tools.join("kubernetes-json-schema").display()
    );
    let (ok, stdout, stderr) = run(
        &tools.join("bin/kubeconform"),
        &[
            "-strict",
            "-summary",
            "-verbose",
            "-output",
            "json",
            "-kubernetes-version",
            KUBERNETES_VERSION,
            "-schema-location",
            &schema_location,
            "deploy/kubernetes",
        ],
        &repo(),
    );
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("kubeconform output: {e}\n{stdout}\n{stderr}"));
    assert!(ok, "kubeconform failed:\n{report:#}\n{stderr}");
    let resources: BTreeSet<(String, String, String)> = report["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or_default().to_string(),
                r["name"].as_str().unwrap_or_default().to_string(),
                r["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let valid = |kind: &str, name: &str| (kind.into(), name.into(), "statusValid".into());
    assert_eq!(
        resources,
        BTreeSet::from([
            valid("StatefulSet", "skald"),
            valid("Service", "skald-headless"),
            valid("Service", "skald"),
            valid("PodDisruptionBudget", "skald"),
        ])
    );
    assert_eq!(
        report["summary"],
        serde_json::json!({"valid": 4, "invalid": 0, "errors": 0, "skipped": 0})
    );

    let statefulset = yaml(&deploy("kubernetes/statefulset.yaml"));
    let spec = &statefulset["spec"];
    assert_eq!(spec["podManagementPolicy"].as_str(), Some("Parallel"));
    assert_eq!(spec["serviceName"].as_str(), Some("skald-headless"));
    assert_eq!(spec["replicas"].as_u64(), Some(3));
    let services = read(&deploy("kubernetes/services.yaml"));
    let headless: Value = services
        .split("\n---\n")
        .map(|document| serde_yaml_ng::from_str(document).expect("services.yaml"))
        .find(|service: &Value| service["metadata"]["name"].as_str() == Some("skald-headless"))
        .expect("the headless service");
    assert_eq!(
        headless["metadata"]["name"].as_str(),
        Some("skald-headless")
    );
    assert_eq!(headless["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true)
    );

    let template = &spec["template"];
    assert_eq!(
        keys(&template["metadata"]["annotations"]),
        set(&[
            "prometheus.io/scrape",
            "prometheus.io/port",
            "prometheus.io/path"
        ])
    );
    assert_eq!(
        template["metadata"]["annotations"]["prometheus.io/port"].as_str(),
        Some("9644")
    );
    let container = &template["spec"]["containers"][0];
    let probe = |name: &str| {
        let get = &container[name]["httpGet"];
        (
            get["path"].as_str().unwrap_or_default().to_string(),
            get["port"].as_str().unwrap_or_default().to_string(),
        )
    };
    assert_eq!(probe("readinessProbe"), ("/ready".into(), "metrics".into()));
    assert_eq!(probe("livenessProbe"), ("/health".into(), "metrics".into()));
    assert_eq!(probe("startupProbe"), ("/health".into(), "metrics".into()));
    assert_eq!(
        container["volumeMounts"][0]["mountPath"].as_str(),
        Some("/var/lib/skald")
    );
    assert_eq!(
        spec["volumeClaimTemplates"][0]["metadata"]["name"],
        container["volumeMounts"][0]["name"]
    );

    // Pod skald-1 in namespace "streams", as the kubelet would set its environment.
    let mut env = BTreeMap::new();
    for var in container["env"].as_sequence().expect("env") {
        let name = str_of(&var["name"], "env name").to_string();
        let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => "skald-1".to_string(),
            Some("metadata.namespace") => "streams".to_string(),
            Some("metadata.labels['apps.kubernetes.io/pod-index']") => "1".to_string(),
            Some(other) => panic!("{name}: unexpected field {other}"),
            None => expand(str_of(&var["value"], "env value"), &env),
        };
        env.insert(name, value);
    }
    let config = server_config(&env, "pod skald-1");
    assert_eq!(config.node_id, 1);
    assert!(config.roles.broker && config.roles.controller);
    let voters: Vec<(i32, String)> = config
        .voters
        .iter()
        .map(|v| (v.node_id, v.address()))
        .collect();
    assert_eq!(
        voters,
        (0..3)
            .map(|i| (i, format!("skald-{i}.skald-headless.streams.svc:9093")))
            .collect::<Vec<_>>()
    );
    let advertised: Vec<String> = config
        .advertised_listeners
        .iter()
        .map(|l| format!("{}://{}:{}", l.name, l.host, l.port))
        .collect();
    assert_eq!(
        advertised,
        vec!["PLAINTEXT://skald-1.skald-headless.streams.svc:9092"]
    );
    assert_eq!(config.metrics_listener.to_string(), "0.0.0.0:9644");
    let ports: BTreeMap<String, u64> = container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                str_of(&p["name"], "port name").to_string(),
                p["containerPort"].as_u64().expect("containerPort"),
            )
        })
        .collect();
    assert_eq!(
        ports,
        BTreeMap::from([
            ("kafka".to_string(), 9092),
            ("controller".to_string(), 9093),
            ("metrics".to_string(), 9644),
        ])
    );
}

/// Every metric Skald's source registers, the process collector's included: (names, histogram
/// names). A histogram's samples are `<name>_bucket`, `_sum` and `_count`.
fn exported_metrics() -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut names, mut histograms) = (BTreeSet::new(), BTreeSet::new());
    names.extend(PROCESS_METRICS.iter().map(|name| name.to_string()));
    let mut files = vec![repo().join("broker/src")];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read_dir") {
                files.push(entry.expect("dir entry").path());
            }
            continue;
        }
        if path.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let text = read(&path);
        for (at, _) in text.match_indices("\"skald_") {
            let rest = &text[at + 1..];
            let name = &rest[..rest.find('"').expect("closing quote")];
            // A metric's name alone; other strings merely start like one (a sample in a test).
            if !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                continue;
            }
            if text[..at].trim_end().ends_with("HistogramOpts::new(") {
                histograms.insert(name.to_string());
            }
            names.insert(name.to_string());
        }
    }
    (names, histograms)
}

/// The metric and recording-rule names a PromQL expression refers to (outside string literals).
fn referenced_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut in_string = false;
    let mut token = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_string = !in_string;
        }
        if !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            token.push(c);
            continue;
        }
        if token.starts_with("skald_") || token.starts_with("skald:") {
            names.insert(std::mem::take(&mut token));
        }
        token.clear();
    }
    names
}

/// Asserts `expr` uses only exported metrics and the given recording rules.
fn assert_names_exist(expr: &str, recorded: &BTreeSet<String>) {
    let (exported, histograms) = exported_metrics();
    for name in referenced_names(expr) {
        let histogram_sample = ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| histograms.contains(base))
        });
        assert!(
            exported.contains(&name) || histogram_sample || recorded.contains(&name),
            "{expr}: {name} is neither a metric Skald exports nor a recording rule"
        );
    }
}

/// (record names, alert names) of rules.yml, in file order, and every expression.
fn rules() -> (Vec<String>, Vec<String>, Vec<String>) {
    let rules = yaml(&deploy("prometheus/rules.yml"));
    let (mut records, mut alerts, mut exprs) = (Vec::new(), Vec::new(), Vec::new());
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            if let Some(record) = rule["record"].as_str() {
                records.push(record.to_string());
            }
            if let Some(alert) = rule["alert"].as_str() {
                alerts.push(alert.to_string());
            }
            exprs.push(str_of(&rule["expr"], "expr").to_string());
        }
    }
    (records, alerts, exprs)
}

#[test]
fn prometheus_config_and_rules_pass_promtool_and_their_unit_tests() {
    let promtool = PathBuf::from("promtool");
    let dir = repo().join("deploy/prometheus");
    for config in ["prometheus.yml", "prometheus.split.yml"] {
        let (ok, stdout, stderr) = run(&promtool, &["check", "config", config], &dir);
        assert!(ok, "promtool check config {config}:\n{stdout}\n{stderr}");
        let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
        assert!(
            lines.contains(
                &format!("SUCCESS: {config} is valid prometheus config file syntax").as_str()
            ) && lines.contains(&"SUCCESS: 1 rule files found")
                && lines.contains(&"SUCCESS: 26 rules found"),
            "{stdout}"
        );
    }
    let (ok, stdout, stderr) = run(&promtool, &["check", "rules", "rules.yml"], &dir);
    assert!(ok, "promtool check rules:\n{stdout}\n{stderr}");
    assert_eq!(
        stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>(),
        vec!["Checking rules.yml", "SUCCESS: 26 rules found"]
    );

    let (records, alerts, exprs) = rules();
    assert_eq!(
        records,
        vec![
            "skald:under_replicated_partitions:sum",
            "skald:under_min_isr_partitions:sum",
            "skald:leaderless_partitions:max",
            "skald:controller_active:sum",
            "skald:consumer_group_lag:sum",
            "skald:requests:rate5m",
            "skald:request_latency_seconds:p99_5m",
            "skald:bytes_in:rate5m",
            "skald:bytes_out:rate5m",
            "skald:log_dir_available:ratio",
            "skald:request_errors:rate5m",
            "skald:request_queue_time_seconds:p99_5m",
            "skald:request_processing_time_seconds:p99_5m",
            "skald:open_fds:ratio",
        ]
    );
    assert_eq!(
        alerts,
        vec![
            "SkaldNodeDown",
            "SkaldUnderReplicatedPartitions",
            "SkaldUnderMinIsrPartitions",
            "SkaldLeaderlessPartitions",
            "SkaldLogDirOffline",
            "SkaldNoActiveController",
            "SkaldFencedBrokers",
            "SkaldConsumerLagGrowing",
            "SkaldLogDirFillingUp",
            "SkaldLogDirAlmostFull",
            "SkaldServerErrors",
            "SkaldOpenFilesNearLimit",
        ]
    );
    let recorded: BTreeSet<String> = records.into_iter().collect();
    for expr in &exprs {
        assert_names_exist(expr, &recorded);
    }

    // The unit tests pass and cover every alert but the trivial fenced-broker threshold.
    let (ok, stdout, stderr) = run(&promtool, &["test", "rules", "rules_test.yml"], &dir);
    assert!(ok, "promtool test rules:\n{stdout}\n{stderr}");
    assert_eq!(
        stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>(),
        vec!["Unit Testing:  rules_test.yml", "SUCCESS"]
    );
    let tests = yaml(&dir.join("rules_test.yml"));
    let tested: BTreeSet<String> = tests["tests"]
        .as_sequence()
        .expect("tests")
        .iter()
        .flat_map(|test| {
            test["alert_rule_test"]
                .as_sequence()
                .expect("alert tests")
                .iter()
        })
        .map(|case| str_of(&case["alertname"], "alertname").to_string())
        .collect();
    let untested: BTreeSet<String> = alerts
        .into_iter()
        .filter(|alert| !tested.contains(alert))
        .collect();
    assert_eq!(untested, set(&["SkaldFencedBrokers"]));
}

#[test]
fn dashboard_queries_parse_and_use_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&deploy("grafana/dashboard.json"))).expect("dashboard.json");
    assert_eq!(dashboard["uid"], "skald-overview");
    let datasource = yaml(&deploy("grafana/provisioning/datasources/prometheus.yml"));
    let uid = str_of(&datasource["datasources"][0]["uid"], "datasource uid");
    let mut exprs = Vec::new();
    let mut titles = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        titles.push(panel["title"].as_str().expect("title").to_string());
        assert_eq!(panel["datasource"]["uid"], uid, "{}", panel["title"]);
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(target["datasource"]["uid"], uid);
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    assert_eq!(titles.len(), 28, "{titles:?}");
    assert_eq!(exprs.len(), 32);

    let (records, _, _) = rules();
    let recorded: BTreeSet<String> = records.into_iter().collect();
    for expr in &exprs {
        assert_names_exist(expr, &recorded);
    }

    // promtool parses PromQL only in rules: check each query as a recording rule, with
    // Grafana's variables replaced by what they stand for.
    let mut rules_file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*");
        assert!(!expr.contains('$'), "unknown Grafana variable in {expr}");
        rules_file.push_str(&format!(
            "      - record: dashboard:query_{index}\n        expr: {}\n",
            serde_json::to_string(&expr).expect("quote")
        ));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("dashboard.yml"), rules_file).expect("write rules");
    let (ok, stdout, stderr) = run(
        &PathBuf::from("promtool"),
        &["check", "rules", "dashboard.yml"],
        dir.path(),
    );
    assert!(ok, "dashboard queries:\n{stdout}\n{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.trim() == format!("SUCCESS: {} rules found", exprs.len())),
        "{stdout}"
    );
}

/// What the prometheus crate's process collector exports on Linux (registered in `Metrics::new`).
const PROCESS_METRICS: [&str; 7] = [
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

/// The metric names of README.md's metrics table (its rows' first cells), in table order.
fn readme_metrics_table() -> Vec<String> {
    let readme = read(&repo().join("README.md"));
    let section = readme
        .split_once("\n## Metrics\n")
        .expect("README.md has a Metrics section")
        .1;
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .map(|rest| rest[..rest.find('`').expect("closing backtick")].to_string())
        .collect()
}

#[test]
fn every_exported_metric_has_one_row_in_the_readme_metrics_table() {
    let rows = readme_metrics_table();
    let documented: BTreeSet<String> = rows.iter().cloned().collect();
    assert_eq!(documented.len(), rows.len(), "a metric twice: {rows:?}");
    let (exported, _) = exported_metrics();
    assert_eq!(
        documented, exported,
        "README.md's metrics table and the metrics the source registers differ"
    );
}

#[test]
fn dockerfile_builds_a_static_binary_into_an_empty_image_run_unprivileged() {
    let dockerfile = read(&deploy("Dockerfile"));
    let instructions: Vec<&str> = dockerfile
        .lines()
        .filter(|line| !line.starts_with('#') && !line.starts_with(' ') && !line.is_empty())
        .collect();
    let from: Vec<&str> = instructions
        .iter()
        .filter(|line| line.starts_with("FROM "))
        .copied()
        .collect();
    assert_eq!(
        from,
        vec![
            "FROM rust:${RUST_VERSION}-bookworm AS build",
            "FROM scratch"
        ]
    );
    for expected in [
        "USER 10001:10001",
        "VOLUME [\"/var/lib/skald\"]",
        "EXPOSE 9092 9093 9644",
        "ENTRYPOINT [\"/usr/local/bin/skald\"]",
        "CMD [\"server\"]",
    ] {
        assert!(
            instructions.contains(&expected),
            "no `{expected}` in deploy/Dockerfile"
        );
    }
    // The image's default environment is a valid single-node configuration.
    let env: BTreeMap<String, String> = dockerfile
        .lines()
        .map(|line| {
            line.trim()
                .trim_start_matches("ENV ")
                .trim_end_matches(" \\")
        })
        .filter_map(|line| line.split_once('='))
        .filter(|(name, _)| name.starts_with("SKALD_"))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    assert_eq!(
        env.keys().cloned().collect::<BTreeSet<_>>(),
        set(&[
            "SKALD_LOG_DIRS",
            "SKALD_LISTENERS",
            "SKALD_ADVERTISED_LISTENERS",
            "SKALD_METRICS_LISTENER"
        ])
    );
    let config = server_config(&env, "deploy/Dockerfile");
    assert_eq!(config.log_dirs, vec![PathBuf::from("/var/lib/skald/data")]);
    assert_eq!(
        config
            .client_listeners()
            .map(|l| l.bind_address())
            .collect::<Vec<_>>(),
        vec!["0.0.0.0:9092"]
    );
    let ignored = read(&repo().join(".dockerignore"));
    for path in [".git", "target", ".tools"] {
        assert!(
            ignored.lines().any(|l| l == path),
            ".dockerignore lacks {path}"
        );
    }
}
