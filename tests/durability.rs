//! Durability against the real binary: a clean stop (SIGTERM) writes each log dir's
//! `recovery-point-offset-checkpoint` in Kafka's format and the `.kafka_cleanshutdown` marker, and
//! the next start skips recovery; kill -9 leaves no marker, so the next start validates the logs
//! from their recovery points and cuts a torn tail; logs flushed by `flush.messages` or `flush.ms`
//! need no validation at all after kill -9.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::wire::{self, RawConn};
use common::{poll_until, TestServer};

const TOPIC: &str = "durable";
const PARTITIONS: i32 = 2;
/// Batches produced per partition; with 4 KiB segments each partition rolls several times.
const BATCHES: usize = 30;

/// One produced batch as the broker stored it (offsets assigned) minus what the broker patches.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    base_offset: i64,
    /// Attributes onwards: what the CRC covers, never changed by the broker for CreateTime.
    body: Vec<u8>,
}

fn start(extra: &[(&str, &str)]) -> TestServer {
    let mut overrides = vec![("num.partitions", "2"), ("log.segment.bytes", "4096")];
    overrides.extend_from_slice(extra);
    let server = TestServer::start_with(&overrides);
    wire::ensure_topic(server.kafka_addr(), TOPIC);
    server
}

/// Produces `BATCHES` 3-record batches (~300 bytes) to each partition; returns them per partition.
fn produce(server: &TestServer) -> BTreeMap<i32, Vec<Stored>> {
    let mut conn = RawConn::connect(server.kafka_addr());
    let mut stored = BTreeMap::new();
    for p in 0..PARTITIONS {
        let mut batches = Vec::new();
        for i in 0..BATCHES {
            let value = format!("{p}-{i}-{}", "v".repeat(60));
            let batch = wire::batch_v2(&[
                ("a", &value, 1_700_000_000_000 + i as i64),
                ("b", &value, 1_700_000_000_001 + i as i64),
                ("c", &value, 1_700_000_000_002 + i as i64),
            ]);
            let (error, base_offset) = conn.produce_raw(TOPIC, p, batch.clone());
            assert_eq!(error, 0, "produce to {TOPIC}-{p}");
            assert_eq!(base_offset, 3 * i as i64);
            batches.push(Stored {
                base_offset,
                body: batch[21..].to_vec(),
            });
        }
        stored.insert(p, batches);
    }
    stored
}

fn log_end_offset() -> i64 {
    3 * BATCHES as i64
}

/// Every batch of the partition, fetched from offset 0 to the high watermark.
fn fetch_all(server: &TestServer, partition: i32) -> Vec<Stored> {
    let mut conn = RawConn::connect(server.kafka_addr());
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let (error, high_watermark, records) = conn.fetch_raw(TOPIC, partition, offset);
        assert_eq!(error, 0, "fetch {TOPIC}-{partition}@{offset}");
        assert_eq!(high_watermark, log_end_offset(), "{TOPIC}-{partition}");
        if offset >= high_watermark {
            return out;
        }
        let mut rest: Bytes = records;
        assert!(
            !rest.is_empty(),
            "no records at {offset} below {high_watermark}"
        );
        while rest.len() >= 12 {
            let base_offset = i64::from_be_bytes(rest[0..8].try_into().expect("8 bytes"));
            let length = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
            let batch = rest.split_to(12 + length);
            let last_offset_delta = i32::from_be_bytes(batch[23..27].try_into().expect("4 bytes"));
            out.push(Stored {
                base_offset,
                body: batch[21..].to_vec(),
            });
            offset = base_offset + i64::from(last_offset_delta) + 1;
        }
    }
}

fn assert_intact(server: &TestServer, produced: &BTreeMap<i32, Vec<Stored>>) {
    for (&p, batches) in produced {
        assert_eq!(&fetch_all(server, p), batches, "{TOPIC}-{p}");
    }
}

/// The `recovery-point-offset-checkpoint` of the data dir, parsed strictly (Kafka's format).
fn read_checkpoint(data_dir: &Path) -> Option<BTreeMap<(String, i32), i64>> {
    let text = std::fs::read_to_string(data_dir.join("recovery-point-offset-checkpoint")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    assert!(text.ends_with('\n'), "{text:?}");
    assert_eq!(lines[0], "0", "version line of {text:?}");
    let count: usize = lines[1].parse().expect("entry count");
    assert_eq!(lines.len(), 2 + count, "{text:?}");
    Some(
        lines[2..]
            .iter()
            .map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                assert_eq!(fields.len(), 3, "line {line:?}");
                (
                    (fields[0].to_string(), fields[1].parse().expect("partition")),
                    fields[2].parse().expect("offset"),
                )
            })
            .collect(),
    )
}

/// Our topic's entries of the checkpoint.
fn our_recovery_points(data_dir: &Path) -> Option<BTreeMap<i32, i64>> {
    Some(
        read_checkpoint(data_dir)?
            .into_iter()
            .filter(|((topic, _), _)| topic == TOPIC)
            .map(|((_, p), offset)| (p, offset))
            .collect(),
    )
}

/// Segment `.log` files of one partition, oldest first.
fn segment_logs(data_dir: &Path, partition: i32) -> Vec<PathBuf> {
    let dir = data_dir.join(format!("{TOPIC}-{partition}"));
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs
}

fn base_offset_of(segment: &Path) -> i64 {
    segment
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("segment file name")
}

/// The start-up report lines in the server's stderr (one per start with partitions).
fn startup_reports(server: &TestServer) -> Vec<String> {
    std::fs::read_to_string(server.stderr_path())
        .expect("stderr file")
        .lines()
        .filter(|line| line.contains("shutdown marker"))
        .map(str::to_string)
        .collect()
}

#[test]
fn clean_stop_writes_checkpoints_and_the_marker_and_restart_skips_recovery() {
    let mut server = start(&[]);
    let produced = produce(&server);
    let data_dir = server.data_dir();
    for p in 0..PARTITIONS {
        assert!(segment_logs(&data_dir, p).len() >= 3, "{TOPIC}-{p} rolled");
    }
    assert!(!data_dir.join(".kafka_cleanshutdown").exists());

    server.stop_clean();
    assert!(data_dir.join(".kafka_cleanshutdown").exists());
    let text = std::fs::read_to_string(data_dir.join("recovery-point-offset-checkpoint"))
        .expect("checkpoint written on shutdown");
    let entries = read_checkpoint(&data_dir).expect("checkpoint");
    assert_eq!(
        text.lines().nth(1),
        Some(entries.len().to_string().as_str())
    );
    assert_eq!(
        our_recovery_points(&data_dir),
        Some(BTreeMap::from([
            (0, log_end_offset()),
            (1, log_end_offset())
        ])),
        "{text}"
    );
    assert!(!data_dir
        .join("recovery-point-offset-checkpoint.tmp")
        .exists());

    server.restart();
    // The marker is consumed at start-up: a crash from now on is recognised as one.
    assert!(!data_dir.join(".kafka_cleanshutdown").exists());
    // The first start had no partitions to report on.
    let reports = startup_reports(&server);
    assert_eq!(reports.len(), 1, "{reports:?}");
    let report = &reports[0];
    assert!(
        report.contains("clean shutdown marker found: log recovery skipped"),
        "{report}"
    );
    assert!(report.contains("partitions=2"), "{report}");
    assert!(report.contains("segments_scanned=0"), "{report}");
    assert_intact(&server, &produced);

    // Appends continue at the log end, and a second clean stop checkpoints them.
    let mut conn = RawConn::connect(server.kafka_addr());
    let (error, offset) = conn.produce_raw(TOPIC, 0, wire::batch_v2(&[("k", "after", 1)]));
    assert_eq!((error, offset), (0, log_end_offset()));
    server.stop_clean();
    assert_eq!(
        our_recovery_points(&data_dir),
        Some(BTreeMap::from([
            (0, log_end_offset() + 1),
            (1, log_end_offset())
        ]))
    );
}

#[test]
fn kill_9_recovers_from_the_recovery_points_and_cuts_a_torn_tail() {
    let mut server = start(&[("log.flush.offset.checkpoint.interval.ms", "100")]);
    let produced = produce(&server);
    let data_dir = server.data_dir();
    // A roll's flush runs in the background (and before each checkpoint), so each recovery point
    // becomes its active segment's base offset.
    let active_bases: BTreeMap<i32, i64> = (0..PARTITIONS)
        .map(|p| {
            (
                p,
                base_offset_of(segment_logs(&data_dir, p).last().expect("a segment")),
            )
        })
        .collect();
    assert!(active_bases
        .values()
        .all(|&base| base > 0 && base < log_end_offset()));
    poll_until(
        "the periodic checkpoint to hold the active segments' base offsets",
        Duration::from_secs(10),
        || (our_recovery_points(&data_dir).as_ref() == Some(&active_bases)).then_some(()),
    );

    server.kill9();
    assert!(!data_dir.join(".kafka_cleanshutdown").exists());
    let active = segment_logs(&data_dir, 0).pop().expect("active segment");
    let valid_len = std::fs::metadata(&active).expect("active segment").len();
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&active)
            .expect("open active segment");
        file.write_all(&[0x5a; 100]).expect("append garbage");
    }

    server.restart();
    let reports = startup_reports(&server);
    let report = reports.last().expect("a start-up report");
    assert!(
        report.contains("no clean shutdown marker: logs recovered from their recovery points"),
        "{report}"
    );
    assert!(report.contains("partitions=2"), "{report}");
    // Exactly the active segment of each partition: the sealed ones lie below the recovery point.
    assert!(report.contains("segments_scanned=2"), "{report}");
    assert_eq!(
        std::fs::metadata(&active).expect("active segment").len(),
        valid_len,
        "torn tail cut"
    );
    assert_intact(&server, &produced);
    let mut conn = RawConn::connect(server.kafka_addr());
    let (error, offset) = conn.produce_raw(TOPIC, 0, wire::batch_v2(&[("k", "after", 1)]));
    assert_eq!((error, offset), (0, log_end_offset()));
}

/// kill -9 after a flush policy made everything durable: nothing needs validating.
fn flushed_logs_need_no_recovery_after_kill_9(flush_overrides: &[(&str, &str)]) {
    let mut overrides = vec![("log.flush.offset.checkpoint.interval.ms", "100")];
    overrides.extend_from_slice(flush_overrides);
    let mut server = start(&overrides);
    let produced = produce(&server);
    let data_dir = server.data_dir();
    let flushed = BTreeMap::from([(0, log_end_offset()), (1, log_end_offset())]);
    poll_until(
        "the periodic checkpoint to hold the log end offsets",
        Duration::from_secs(10),
        || (our_recovery_points(&data_dir).as_ref() == Some(&flushed)).then_some(()),
    );
    server.kill9();
    server.restart();
    let reports = startup_reports(&server);
    let report = reports.last().expect("a start-up report");
    assert!(report.contains("no clean shutdown marker"), "{report}");
    assert!(report.contains("segments_scanned=0"), "{report}");
    assert_intact(&server, &produced);
}

#[test]
fn flush_messages_makes_kill_9_recovery_free() {
    flushed_logs_need_no_recovery_after_kill_9(&[("log.flush.interval.messages", "1")]);
}

#[test]
fn flush_ms_makes_kill_9_recovery_free() {
    flushed_logs_need_no_recovery_after_kill_9(&[
        ("log.flush.interval.ms", "0"),
        ("log.flush.scheduler.interval.ms", "50"),
    ]);
}
