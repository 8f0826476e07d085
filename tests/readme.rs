//! README.md's snippets, run as written against the real binary, and its clients table checked
//! against the versions the client matrix pins.
//!
//! A runnable snippet is a fenced block whose marker comment, `<!-- readme-test: NAME -->`, sits
//! just before it, followed by an `Install: `command`` line: the step a reader needs first. The
//! blocks run in README order against one server, as a reader following the README would; only
//! the addresses change (the README's 127.0.0.1:9092 and :9644 become the test server's ports).
//! `sh` blocks run under `bash -euo pipefail` with the built `skald` first on `PATH`; `python`
//! blocks with the matrix's confluent-kafka (scripts/clients.sh). Each run's output is compared
//! with what the snippet is documented to do.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::clients::installed;
use common::{run_with_timeout, skald_bin, TestServer};

const SNIPPET_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Snippet {
    name: String,
    install: String,
    language: String,
    body: String,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every marked snippet, in README order. A marker without an install line or a block right
/// after it is a failure, not a skipped snippet.
fn snippets(readme: &str) -> Vec<Snippet> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut found = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        let Some(name) = line
            .trim()
            .strip_prefix("<!-- readme-test:")
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            continue;
        };
        let name = name.trim().to_string();
        let install = lines
            .get(at + 1)
            .and_then(|l| l.strip_prefix("Install: `"))
            .and_then(|l| l.split_once('`'))
            .map(|(command, _)| command.to_string())
            .unwrap_or_else(|| panic!("snippet {name}: no `Install: ` line after its marker"));
        let fence = (at + 2..lines.len())
            .find(|&i| !lines[i].trim().is_empty())
            .filter(|&i| lines[i].starts_with("```"))
            .unwrap_or_else(|| panic!("snippet {name}: no fenced block after its install line"));
        let language = lines[fence].trim_start_matches('`').trim().to_string();
        let end = (fence + 1..lines.len())
            .find(|&i| lines[i].starts_with("```"))
            .unwrap_or_else(|| panic!("snippet {name}: its block is not closed"));
        let body = lines[fence + 1..end].join("\n") + "\n";
        found.push(Snippet {
            name,
            install,
            language,
            body,
        });
    }
    found
}

/// Runs a snippet against `server`; returns its stdout, asserting it succeeded.
fn run(snippet: &Snippet, server: &TestServer) -> String {
    let body = snippet
        .body
        .replace("127.0.0.1:9092", &server.bootstrap())
        .replace("127.0.0.1:9644", &server.metrics_addr().to_string());
    let mut command = match snippet.language.as_str() {
        "sh" => {
            let mut command = Command::new("bash");
            command.args(["-euo", "pipefail", "-c", &body]);
            command
        }
        "python" => {
            let mut command = Command::new("python3");
            command
                .args(["-c", &body])
                .env("PYTHONPATH", installed("python"));
            command
        }
        other => panic!("snippet {}: no runner for {other:?} blocks", snippet.name),
    };
    let bin_dir = Path::new(skald_bin()).parent().expect("skald's folder");
    let path = std::env::var("PATH").unwrap_or_default();
    command
        .env("PATH", format!("{}:{path}", bin_dir.display()))
        .env("SKALD_BROKERS", server.bootstrap())
        .env_remove("LD_LIBRARY_PATH");
    let (status, stdout, stderr) = run_with_timeout(command, b"", SNIPPET_TIMEOUT);
    assert!(
        status.success(),
        "snippet {} failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}\n--- server ---\n{}",
        snippet.name,
        server.stderr_tail()
    );
    stdout
}

fn lines(output: &str) -> BTreeSet<&str> {
    output.lines().collect()
}

#[test]
fn every_readme_snippet_names_its_install_step_and_runs_as_written() {
    let readme = read(&repo().join("README.md"));
    let snippets = snippets(&readme);
    let names: Vec<(&str, &str)> = snippets
        .iter()
        .map(|s| (s.name.as_str(), s.install.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("using-it", "cargo install --path ."),
            ("kcat", "apt-get install kcat"),
            ("python", "pip install confluent-kafka"),
        ]
    );
    // The Python snippet's install names the package the matrix pins.
    let requirements = read(&repo().join("tests/clients/python/requirements.txt"));
    assert!(requirements
        .lines()
        .any(|l| l.starts_with("confluent-kafka==")));

    let server = TestServer::start();
    let mut outputs = snippets.iter().map(|snippet| run(snippet, &server));

    let using_it = outputs.next().expect("using-it ran");
    let seen = lines(&using_it);
    for expected in [
        "created topic orders",
        "created topic bench",
        "k1\thello",
        "k2\tworld",
    ] {
        assert!(seen.contains(expected), "{expected:?} not in:\n{using_it}");
    }
    assert!(
        using_it
            .lines()
            .any(|l| l.starts_with(r#"skald_requests_total{api="Produce"} "#)),
        "no produce requests in the metrics:\n{using_it}"
    );

    // kcat reads back what it wrote and what `skald produce` wrote, partition by partition.
    let kcat = outputs.next().expect("kcat ran");
    let records: BTreeSet<&str> = kcat
        .lines()
        .filter_map(|l| l.split_once(" @ ").map(|(record, _)| record))
        .collect();
    assert_eq!(
        records,
        BTreeSet::from(["a=1", "b=2", "k1=hello", "k2=world"]),
        "{kcat}"
    );

    // The Python example reads its ten records back: each key once, each partition's offsets
    // from 0 without a gap.
    let python = outputs.next().expect("python ran");
    let mut by_partition: std::collections::BTreeMap<i32, Vec<i64>> = Default::default();
    let mut keys = BTreeSet::new();
    for line in python.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [partition, offset, key, value] = fields[..] else {
            panic!("unexpected line {line:?} in:\n{python}");
        };
        assert_eq!(
            value,
            key.replace('k', "v"),
            "{line}: value does not match key"
        );
        keys.insert(key.to_string());
        by_partition
            .entry(partition.parse().expect("partition"))
            .or_default()
            .push(offset.parse().expect("offset"));
    }
    let expected_keys: BTreeSet<String> = (0..10).map(|i| format!("b'k{i}'")).collect();
    assert_eq!(keys, expected_keys, "{python}");
    for (partition, mut offsets) in by_partition {
        offsets.sort_unstable();
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, expected, "partition {partition}:\n{python}");
    }
    assert!(outputs.next().is_none());
}

/// The README clients table's version column, row by row, against the files the matrix installs
/// from: a version bumped in one and not the other fails here.
#[test]
fn the_clients_table_names_the_pinned_versions() {
    let readme = read(&repo().join("README.md"));
    let section = readme
        .split("\n## Clients\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Clients section");
    let mut rows = section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| client") && !l.starts_with("|---"));
    let mut table = std::collections::BTreeMap::new();
    for row in rows.by_ref() {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert!(cells.len() >= 4, "row {row:?}");
        assert!(
            !cells[2].is_empty(),
            "row {row:?} says no settings (write `none`)"
        );
        table.insert(cells[0].to_string(), cells[1].to_string());
    }

    let pom = read(&repo().join("tests/clients/java/pom.xml"));
    let tools_pom = read(&repo().join("tests/clients/java/tools/pom.xml"));
    let go_mod = read(&repo().join("tests/clients/go/go.mod"));
    let package = read(&repo().join("tests/clients/js/package.json"));
    let requirements = read(&repo().join("tests/clients/python/requirements.txt"));
    let scripts_test = read(&repo().join("scripts/test"));
    let cargo_lock = read(&repo().join("Cargo.lock"));

    let between = |text: &str, before: &str, after: &str| -> String {
        let start = text
            .find(before)
            .unwrap_or_else(|| panic!("{before:?} not found"))
            + before.len();
        let end = text[start..]
            .find(after)
            .unwrap_or_else(|| panic!("{after:?} not found after {before:?}"));
        text[start..start + end].to_string()
    };
    let go = |module: &str| between(&go_mod, &format!("\t{module} v"), "\n");
    let npm = |name: &str| between(&package, &format!("\"{name}\": \""), "\"");
    let pip = |name: &str| between(&requirements, &format!("{name}=="), "\n");
    let librdkafka = between(&cargo_lock, "name = \"rdkafka-sys\"\nversion = \"", "\"");
    let librdkafka = librdkafka
        .split_once('+')
        .map(|(_, c)| c.to_string())
        .unwrap_or_default();

    let expected = [
        (
            "Apache Kafka Java client (`kafka-clients`)",
            between(&pom, "<kafka.version>", "<"),
        ),
        (
            "Kafka's command-line tools (`kafka-tools`)",
            between(&tools_pom, "<kafka.version>", "<"),
        ),
        (
            "franz-go (`kgo`, `kadm`)",
            format!(
                "{} / {}",
                go("github.com/twmb/franz-go"),
                go("github.com/twmb/franz-go/pkg/kadm")
            ),
        ),
        ("IBM/sarama", go("github.com/IBM/sarama")),
        (
            "Shopify/sarama (Debian's; Burrow 1.2 is built on it)",
            go("github.com/Shopify/sarama"),
        ),
        ("kafkajs", npm("kafkajs")),
        (
            "@confluentinc/kafka-javascript (librdkafka 2.15)",
            npm("@confluentinc/kafka-javascript"),
        ),
        ("aiokafka", pip("aiokafka")),
        (
            "confluent-kafka (Python, librdkafka 2.16)",
            pip("confluent-kafka"),
        ),
        (
            "kafka-python",
            between(&scripts_test, "KAFKA_PYTHON_VERSION=", "\n"),
        ),
        ("librdkafka (`rdkafka` crate)", librdkafka),
        ("kcat", "Debian's".to_string()),
    ];
    let expected: std::collections::BTreeMap<String, String> = expected
        .into_iter()
        .map(|(client, version)| (client.to_string(), version))
        .collect();
    assert_eq!(table, expected);
}
