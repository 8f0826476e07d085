//! README.md's cluster recipe runs as written: its shell block is taken from the README, with
//! only the port numbers' first digit changed (to ports found free), the data folder moved to a
//! temporary one and `skald` meaning the binary under test; then the cluster it started serves.

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{cells, row, run_with_timeout, skald_bin};

/// The first ```sh block after the `### A cluster` heading.
fn cluster_recipe() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = readme
        .split_once("\n### A cluster\n")
        .expect("README.md has a `### A cluster` section")
        .1;
    let block = section
        .split_once("```sh\n")
        .expect("a sh block in the section")
        .1;
    block
        .split_once("```")
        .expect("the block's end")
        .0
        .to_string()
}

/// Every port the script names after `127.0.0.1:`, with `${i}` expanded over 1..=6 (a superset
/// of what its loops use).
fn ports(script: &str) -> BTreeSet<String> {
    let mut ports = BTreeSet::new();
    for (at, _) in script.match_indices("127.0.0.1:") {
        let rest = &script[at + "127.0.0.1:".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || "${i}".contains(c)))
            .unwrap_or(rest.len());
        let port = &rest[..end];
        if port.contains("${i}") {
            ports.extend((1..=6).map(|i| port.replace("${i}", &i.to_string())));
        } else {
            ports.insert(port.to_string());
        }
    }
    ports
}

/// Stops every process the recipe left running in the background: the shell's process group,
/// whose id (the shell's pid) the script writes to `pgid_file` first thing.
struct ProcessGroup {
    pgid_file: std::path::PathBuf,
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Ok(pgid) = std::fs::read_to_string(&self.pgid_file) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", pgid.trim())])
                .status();
        }
    }
}

fn skald(bootstrap: &str, args: &[&str], stdin: &str) -> String {
    let mut command = Command::new(skald_bin());
    command
        .args(args)
        .args(["-b", bootstrap])
        .env_remove("SKALD_BROKERS")
        .env("RUST_LOG", "warn");
    let (status, stdout, stderr) =
        run_with_timeout(command, stdin.as_bytes(), Duration::from_secs(60));
    assert!(status.success(), "skald {args:?}: {stderr}");
    stdout
}

#[test]
fn the_readme_cluster_recipe_runs_as_written_and_the_cluster_serves() {
    let recipe = cluster_recipe();
    let original_ports = ports(&recipe);
    assert!(
        original_ports
            .iter()
            .all(|p| p.len() == 4 && p.starts_with('9')),
        "{original_ports:?}"
    );
    // The same ports with another first digit, all free (below the ephemeral range other tests
    // pick from).
    let digit = ['3', '4', '5', '6', '2']
        .into_iter()
        .find(|digit| {
            original_ports
                .iter()
                .all(|port| TcpListener::bind(format!("127.0.0.1:{digit}{}", &port[1..])).is_ok())
        })
        .expect("a free set of ports");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = "D=./skald-cluster\n";
    assert!(recipe.contains(data), "{recipe}");
    let script = recipe
        .replace("127.0.0.1:9", &format!("127.0.0.1:{digit}"))
        .replace(
            data,
            &format!("D={}\n", dir.path().join("cluster").display()),
        );
    // `skald` is the binary under test, and servers log to a file of their own. The script's
    // output goes to files too: the servers it leaves in the background would otherwise hold
    // the test's pipes open.
    let (servers_log, out, err) = (
        dir.path().join("servers.log"),
        dir.path().join("recipe.out"),
        dir.path().join("recipe.err"),
    );
    let pgid_file = dir.path().join("pgid");
    let script = format!(
        "set -e\necho $$ > '{pgid}'\nexec >'{out}' 2>'{err}'\n\
         skald() {{ if [ \"$1\" = server ]; then '{bin}' \"$@\" >>'{log}' 2>&1; else '{bin}' \"$@\"; fi; }}\n\
         {script}",
        pgid = pgid_file.display(),
        out = out.display(),
        err = err.display(),
        bin = skald_bin(),
        log = servers_log.display(),
    );
    let _servers = ProcessGroup { pgid_file };
    let mut command = Command::new("bash");
    command
        .args(["-c", &script])
        .current_dir(dir.path())
        .env_remove("SKALD_BROKERS")
        .env("RUST_LOG", "warn")
        // Its own process group, so the servers it leaves in the background can be stopped.
        .process_group(0);
    let (status, _, _) = run_with_timeout(command, b"", Duration::from_secs(180));
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let stdout = read(&out);
    assert!(
        status.success(),
        "the recipe failed ({status}):\nstdout:\n{stdout}\nstderr:\n{}\nservers:\n{}",
        read(&err),
        read(&servers_log)
    );
    // `skald cluster info`: three controllers and three unfenced brokers.
    let info = cells(&stdout);
    for broker in [4, 5, 6] {
        let endpoint = format!("127.0.0.1:{digit}{broker}92");
        assert!(
            info.contains(&row(&[&broker.to_string(), "UNFENCED", &endpoint, "-"])),
            "broker {broker} in cluster info:\n{stdout}"
        );
    }

    // The cluster serves: the recipe's acknowledged record, then records through each broker.
    let bootstrap = format!("127.0.0.1:{digit}492,127.0.0.1:{digit}592,127.0.0.1:{digit}692");
    let paid = skald(
        &bootstrap,
        &["consume", "payments", "--from-beginning", "--count", "1"],
        "",
    );
    assert_eq!(paid, "p1\n");
    let mut expected = String::new();
    for broker in [4, 5, 6] {
        let lines: String = (0..5).map(|i| format!("b{broker}-{i}\n")).collect();
        skald(
            &format!("127.0.0.1:{digit}{broker}92"),
            &["produce", "orders", "-p", "3", "--acks", "all"],
            &lines,
        );
        expected.push_str(&lines);
    }
    let read = skald(
        &bootstrap,
        &[
            "consume",
            "orders",
            "-p",
            "3",
            "--from-beginning",
            "--count",
            "15",
        ],
        "",
    );
    assert_eq!(read, expected);
}
