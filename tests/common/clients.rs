//! The client matrix's shared plumbing: where `scripts/clients.sh` put each client, running a
//! client program with a deadline, and comparing its JSON summary exactly.
//!
//! Every client lives in the git-ignored `.clients-cache/` at the repository root (the
//! environment variable `SKALD_CLIENTS_CACHE` names another folder): `java/` (jars, compiled
//! check programs, classpath files), `go/bin/`, `js/node_modules/`, ... A test whose client is
//! missing fails and says to run `scripts/clients.sh` (which `scripts/test` runs first).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::run_with_timeout;

/// The folder `scripts/clients.sh` installs into.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("SKALD_CLIENTS_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".clients-cache"),
    }
}

/// A file `scripts/clients.sh` made, or a panic that says how to make it.
pub fn installed(relative: &str) -> PathBuf {
    let path = cache_dir().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run scripts/clients.sh (scripts/test runs it)",
        path.display()
    );
    path
}

/// The Java classpath `scripts/clients.sh` wrote to `java/NAME.classpath`.
pub fn java_classpath(name: &str) -> String {
    let file = installed(&format!("java/{name}.classpath"));
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
        .trim()
        .to_string()
}

/// Cargo runs tests with LD_LIBRARY_PATH naming its build folders, where rdkafka-sys leaves a
/// librdkafka built with this workspace's features (no zlib): a client that loads its own
/// librdkafka (@confluentinc/kafka-javascript) would get that one instead. Clients run with the
/// library path a user's shell would have.
pub fn without_cargo_library_path(command: &mut Command) {
    command.env_remove("LD_LIBRARY_PATH");
}

/// A `java` command for short runs: the C1 compiler only and the serial collector start a JVM
/// about twice as fast and use less CPU; neither changes what a program does.
pub fn java() -> Command {
    let mut command = Command::new("java");
    command.args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]);
    without_cargo_library_path(&mut command);
    command
}

/// Wall-clock milliseconds an hour ago: a base for record timestamps that is old enough to be in
/// the past on every clock involved, and young enough that no retention rule touches it.
pub fn base_timestamp_ms() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    now.as_millis() as i64 - 3_600_000
}

/// Runs `command` (at most `timeout`), asserts it succeeded and parses the last line of its
/// stdout as the JSON summary (clients may log to stdout before it).
pub fn run_json(what: &str, mut command: Command, timeout: Duration) -> Value {
    without_cargo_library_path(&mut command);
    let (status, stdout, stderr) = run_with_timeout(command, b"", timeout);
    assert!(
        status.success(),
        "{what} failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!("{what}: summary is not JSON ({e}): {stdout}\nstderr:\n{stderr}")
    })
}

/// Asserts `summary == expected`, field by field first so a failure names the field.
pub fn assert_summary(what: &str, summary: &Value, expected: &Value) {
    if summary == expected {
        return;
    }
    let expected_fields = expected.as_object().expect("expected summary is an object");
    for (key, value) in expected_fields {
        assert_eq!(&summary[key], value, "{what}: summary field {key:?}");
    }
    assert_eq!(summary, expected, "{what}: fields not expected");
}

/// The matrix's workload, the same for every client: runs of PER_CODEC records per compression
/// codec the client can write, record i with key `key-i`, value `value-i`, headers `codec` and
/// `seq`, timestamp base + i seconds, sent to partition i % 2 of a 2-partition topic; a group
/// reads them all and commits COMMIT, and after a restart a new member resumes there.
pub struct Workload {
    pub codecs: &'static [&'static str],
}

/// Every codec Kafka has; what the Java client, franz-go and sarama write.
pub const ALL_CODECS: Workload = Workload {
    codecs: &["none", "gzip", "snappy", "lz4", "zstd"],
};
pub const PER_CODEC: usize = 10;
/// The offsets the first group member commits, per partition.
pub const COMMIT: [u64; 2] = [10, 5];

impl Workload {
    pub fn records(&self) -> usize {
        self.codecs.len() * PER_CODEC
    }

    /// The log end offset of each partition.
    pub fn end_offset(&self) -> u64 {
        (self.records() / 2) as u64
    }

    /// Record `i` as a check program prints a consumed record: partition, offset, timestamp
    /// (relative to the base), key, value, headers.
    pub fn record(&self, i: usize) -> Value {
        json!([
            i % 2,
            i / 2,
            i * 1000,
            format!("key-{i}"),
            format!("value-{i}"),
            [
                ["codec", self.codecs[i / PER_CODEC]],
                ["seq", i.to_string()]
            ]
        ])
    }

    /// The records of both partitions from the given offsets on, sorted by partition and offset.
    pub fn records_from(&self, offsets: [u64; 2]) -> Vec<Value> {
        let mut records: Vec<(usize, usize)> = (0..self.records())
            .filter(|i| (i / 2) as u64 >= offsets[i % 2])
            .map(|i| (i % 2, i))
            .collect();
        records.sort();
        records.into_iter().map(|(_, i)| self.record(i)).collect()
    }

    /// Where each record went when produced: [partition, offset, relative timestamp], in send
    /// order.
    pub fn produced(&self) -> Vec<Value> {
        (0..self.records())
            .map(|i| json!([i % 2, i / 2, i * 1000]))
            .collect()
    }
}
