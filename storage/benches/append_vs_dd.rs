//! Append throughput into the page cache, as a fraction of the file system's raw sequential write
//! speed measured in the same run by `dd if=/dev/zero bs=1M` (no fsync on either side).
//!
//! ```sh
//! cargo bench -p skald-storage --bench append_vs_dd
//! ```
//!
//! `SKALD_BENCH_DIR` picks the directory (default: the temp dir), `SKALD_BENCH_MIB` the amount per
//! run (2048), `SKALD_BENCH_ROUNDS` how many dd/append rounds (3). Each round runs `dd`, removes its
//! file, then appends the same amount through [`Log::append`] into a fresh log, twice: with the
//! default `segment.bytes` (1 GiB: the log rolls once, and a roll fsyncs the sealed segment before
//! the next append, as Kafka's roll flushes it) and with `segment.bytes` = 2 GiB - 1 (no roll).
//! Between runs `sync` writes the dirty pages back so one run's writeback does not slow the next.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use skald_protocol::batch::testing::simple_batch;
use skald_storage::{Log, LogConfig};

/// 1,000 records of 1,000 bytes: one batch of just under 1 MiB, as a producer's `batch.size`
/// would give with large records.
const RECORDS_PER_BATCH: usize = 1000;
const VALUE_BYTES: usize = 1000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sync() {
    let status = Command::new("sync").status().expect("run sync");
    assert!(status.success(), "sync failed");
}

/// Runs `dd` writing `mib` MiB to `file`; returns its own rate (bytes / the seconds it reports).
fn dd_bytes_per_s(file: &Path, mib: u64) -> f64 {
    let output = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .arg("bs=1M")
        .arg(format!("count={mib}"))
        .output()
        .expect("run dd");
    assert!(output.status.success(), "dd failed: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // "2147483648 bytes (2.1 GB, 2.0 GiB) copied, 1.02 s, 2.1 GB/s"
    let line = stderr.lines().last().expect("dd reports its rate");
    let bytes: f64 = line
        .split_whitespace()
        .next()
        .and_then(|b| b.parse().ok())
        .expect("dd reports bytes");
    let seconds: f64 = line
        .split(", ")
        .find_map(|part| part.strip_suffix(" s"))
        .and_then(|s| s.parse().ok())
        .expect("dd reports seconds");
    bytes / seconds
}

/// Appends `batches` copies of `batch` to a fresh log in `dir`; returns bytes per second and how
/// many segments it ended with. Not closed: closing fsyncs, and `dd` does not either.
fn append_bytes_per_s(dir: &Path, batch: &[u8], batches: u64, config: LogConfig) -> (f64, usize) {
    let mut log = Log::open(dir, config).expect("open log");
    let mut buf = batch.to_vec();
    let started = Instant::now();
    for _ in 0..batches {
        // Log::append patches the base offset in place; the same buffer is valid every time.
        log.append(&mut buf, None, 0).expect("append");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let segments = log.segment_count();
    drop(log);
    ((batches * batch.len() as u64) as f64 / elapsed, segments)
}

fn main() {
    let mib = env_or("SKALD_BENCH_MIB", 2048);
    let rounds = env_or("SKALD_BENCH_ROUNDS", 3);
    let base = std::env::var_os("SKALD_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let root = tempfile::Builder::new()
        .prefix("skald-append-vs-dd")
        .tempdir_in(base)
        .expect("temp dir");
    let batch = simple_batch(0, RECORDS_PER_BATCH, 1_700_000_000_000, VALUE_BYTES);
    let batches = (mib << 20) / batch.len() as u64;
    println!(
        "dir {}: {mib} MiB per run, batches of {} bytes x {batches}",
        root.path().display(),
        batch.len()
    );
    let no_roll = LogConfig {
        segment_bytes: i32::MAX as u64,
        ..LogConfig::default()
    };
    let mut ratios = (Vec::new(), Vec::new());
    for round in 0..rounds {
        sync();
        let file = root.path().join("dd.out");
        let dd = dd_bytes_per_s(&file, mib);
        std::fs::remove_file(&file).expect("remove dd output");
        sync();
        let dir = root.path().join(format!("default-{round}"));
        let (default, default_segments) =
            append_bytes_per_s(&dir, &batch, batches, LogConfig::default());
        std::fs::remove_dir_all(&dir).expect("remove log");
        sync();
        let dir = root.path().join(format!("no-roll-{round}"));
        let (single, single_segments) = append_bytes_per_s(&dir, &batch, batches, no_roll.clone());
        std::fs::remove_dir_all(&dir).expect("remove log");
        println!(
            "round {round}: dd {:.0} MB/s | append, segment.bytes 1 GiB ({default_segments} segments) {:.0} MB/s = {:.0}% | \
             append, no roll ({single_segments} segment) {:.0} MB/s = {:.0}%",
            dd / 1e6,
            default / 1e6,
            100.0 * default / dd,
            single / 1e6,
            100.0 * single / dd,
        );
        ratios.0.push(default / dd);
        ratios.1.push(single / dd);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median ratio: {:.0}% (default segment.bytes), {:.0}% (no roll)",
        100.0 * median(&mut ratios.0),
        100.0 * median(&mut ratios.1)
    );
}
