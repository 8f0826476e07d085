//! Disk faults, end to end: a log dir on a 2 MiB tmpfs fills up while the broker serves.
//!
//! The producer gets KAFKA_STORAGE_ERROR (56), the segment holds exactly the acknowledged
//! batches, the dir goes offline (log line, `skald_log_dir_offline`, `skald_offline_partitions`)
//! while the other log dir keeps serving, and a restart serves every acknowledged record. A
//! broker whose only log dir goes offline stops (exit code 1), as Kafka halts one.
//!
//! Needs `mount -t tmpfs` (root in a container or VM). Where mounting is refused the test says
//! so and returns; the same outcomes are covered without a mount by the storage crate's
//! fault-injection unit tests (`storage/src/log/disk_fault_tests.rs`).

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::tmpfs::Tmpfs;
use common::wire::{self, topic_name, RawConn};
use common::{http_get, TestServer};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, ListOffsetsRequest, ListOffsetsResponse};

const KAFKA_STORAGE_ERROR: i16 = 56;
const TOPIC: &str = "filling";

/// A tmpfs on a fresh temporary directory for the test's lifetime: unmounted (lazily) before
/// the directory goes.
struct TempTmpfs {
    mount: Tmpfs,
    _dir: tempfile::TempDir,
}

impl TempTmpfs {
    fn mount(bytes: u64) -> Result<TempTmpfs, String> {
        let dir = tempfile::Builder::new()
            .prefix("skald-tmpfs-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        Ok(TempTmpfs {
            mount: Tmpfs::mount(dir.path(), bytes)?,
            _dir: dir,
        })
    }

    fn path(&self) -> &Path {
        self.mount.path()
    }
}

fn list_offset_error(conn: &mut RawConn, partition: i32) -> i16 {
    let version = conn.negotiate(ApiKey::ListOffsets, 7);
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(TOPIC))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(-1)])]);
    let response: ListOffsetsResponse = conn.request(&request, version);
    response.topics[0].partitions[0].error_code
}

fn sample(body: &str, series: &str) -> Option<String> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(str::to_string)
}

/// Every batch of the partition, fetched from offset 0 to the high watermark.
fn fetch_all(conn: &mut RawConn, partition: i32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let (error, high_watermark, records) = conn.fetch_raw(TOPIC, partition, offset);
        assert_eq!(error, 0, "fetch {TOPIC}-{partition} at {offset}");
        if offset >= high_watermark {
            return out;
        }
        // One record per batch here: the next offset is the number of batches read.
        offset += skald_protocol::batch::RecordBatches::headers_only(&records)
            .map_while(Result::ok)
            .count() as i64;
        out.extend_from_slice(&records);
    }
}

/// A stored batch equals the sent one but for the base offset and partition leader epoch.
fn assert_stored_as_sent(stored: &[u8], sent: &[Bytes]) {
    assert_eq!(
        stored.len(),
        sent.iter().map(Bytes::len).sum::<usize>(),
        "stored bytes are exactly the acknowledged batches"
    );
    let mut at = 0;
    for (offset, batch) in sent.iter().enumerate() {
        let one = &stored[at..at + batch.len()];
        assert_eq!(one[..8], (offset as i64).to_be_bytes(), "base offset");
        assert_eq!(one[8..12], batch[8..12], "batch length");
        assert_eq!(one[16..], batch[16..], "batch {offset} as sent");
        at += batch.len();
    }
}

#[test]
fn a_full_log_dir_goes_offline_and_the_other_keeps_serving() {
    // CI and the developers' machines run as root with mount allowed: a refusal is a failure, not
    // a reason to skip.
    let tmpfs = TempTmpfs::mount(2 << 20)
        .expect("mount -t tmpfs (the disk-fault tests need root and mount)");
    let roomy = tempfile::Builder::new()
        .prefix("skald-roomy-")
        .tempdir()
        .expect("temp dir");
    let (full_dir, roomy_dir) = (tmpfs.path().to_path_buf(), roomy.path().to_path_buf());
    let log_dirs = format!("{},{}", roomy_dir.display(), full_dir.display());
    // An index entry every 4 KiB (the default): its pages must get blocks before the map is
    // written, or a full tmpfs answers the store with SIGBUS.
    let mut server = TestServer::start_with(&[
        ("log.dirs", &log_dirs),
        ("metadata.log.dir", &roomy_dir.display().to_string()),
        ("num.partitions", "2"),
        ("log.index.interval.bytes", "4096"),
    ]);
    wire::ensure_topic(server.kafka_addr(), TOPIC);
    let in_dir = |dir: &Path, p: i32| dir.join(format!("{TOPIC}-{p}")).is_dir();
    let (full_p, roomy_p) = if in_dir(&full_dir, 0) { (0, 1) } else { (1, 0) };
    assert!(in_dir(&full_dir, full_p) && in_dir(&roomy_dir, roomy_p));
    let segment: PathBuf = full_dir
        .join(format!("{TOPIC}-{full_p}"))
        .join("00000000000000000000.log");

    // 300 KB batches until the 2 MiB file system is full.
    let value = "x".repeat(300_000);
    let mut conn = RawConn::connect(server.kafka_addr());
    let mut acked = Vec::new();
    let refused = loop {
        assert!(acked.len() < 10, "2 MiB never filled up");
        let batch = wire::batch_v2(&[("k", &value, 1_000 + acked.len() as i64)]);
        let (error, base_offset) = conn.produce_raw(TOPIC, full_p, batch.clone());
        if error != 0 {
            break error;
        }
        assert_eq!(base_offset, acked.len() as i64);
        acked.push(batch);
    };
    eprintln!(
        "{} batches acknowledged before the file system filled",
        acked.len()
    );
    assert_eq!(refused, KAFKA_STORAGE_ERROR);
    assert!(acked.len() >= 3, "{} batches fitted", acked.len());
    // The failed write's partial bytes were cut off: exactly the acknowledged batches remain.
    assert_stored_as_sent(&std::fs::read(&segment).expect("read segment"), &acked);

    // The dir stays offline even though the cut freed space: produce, fetch, ListOffsets all 56.
    let small = wire::batch_v2(&[("k", "v", 1)]);
    assert_eq!(
        conn.produce_raw(TOPIC, full_p, small.clone()).0,
        KAFKA_STORAGE_ERROR
    );
    assert_eq!(conn.fetch_raw(TOPIC, full_p, 0).0, KAFKA_STORAGE_ERROR);
    assert_eq!(list_offset_error(&mut conn, full_p), KAFKA_STORAGE_ERROR);

    // The other log dir keeps serving.
    assert_eq!(conn.produce_raw(TOPIC, roomy_p, small.clone()), (0, 0));
    assert_eq!(conn.produce_raw(TOPIC, roomy_p, small.clone()), (0, 1));
    let (error, high_watermark, records) = conn.fetch_raw(TOPIC, roomy_p, 0);
    assert_eq!((error, high_watermark), (0, 2));
    assert_eq!(records.len(), 2 * small.len());
    assert!(server.is_running());

    let (status, body) = http_get(server.metrics_addr(), "/metrics").expect("scrape");
    assert_eq!(status, 200);
    let offline = |dir: &Path| format!("skald_log_dir_offline{{dir=\"{}\"}}", dir.display());
    assert_eq!(
        sample(&body, &offline(&full_dir)).as_deref(),
        Some("1"),
        "{body}"
    );
    assert_eq!(
        sample(&body, &offline(&roomy_dir)).as_deref(),
        Some("0"),
        "{body}"
    );
    assert_eq!(
        sample(&body, "skald_offline_partitions").as_deref(),
        Some("1")
    );
    assert!(
        server
            .stderr_tail()
            .contains("log dir taken offline after a disk failure"),
        "{}",
        server.stderr_tail()
    );

    // A restart brings the dir back (Kafka's behaviour too): every acknowledged record is served.
    server.restart();
    let mut conn = RawConn::connect(server.kafka_addr());
    assert_stored_as_sent(&fetch_all(&mut conn, full_p), &acked);
    assert_eq!(fetch_all(&mut conn, roomy_p).len(), 2 * small.len());
}

/// Fills `dir`'s file system to the last byte with a filler file.
fn fill_up(dir: &Path) {
    use std::io::Write;
    let mut filler = std::fs::File::create(dir.join("filler")).expect("create filler");
    for chunk in [4096usize, 1] {
        let bytes = vec![0u8; chunk];
        while filler.write_all(&bytes).is_ok() {}
    }
}

/// A full disk must never reach the process as SIGBUS: index pages are written through a map, and
/// the next index page gets its blocks with a `pwrite` first, so a full file system skips the index
/// entry (indexes are sparse) instead of killing the broker.
#[test]
fn an_index_page_on_a_full_disk_skips_the_entry_instead_of_killing_the_broker() {
    // CI and the developers' machines run as root with mount allowed: a refusal is a failure, not
    // a reason to skip.
    let tmpfs = TempTmpfs::mount(1 << 20)
        .expect("mount -t tmpfs (the disk-fault tests need root and mount)");
    let roomy = tempfile::Builder::new()
        .prefix("skald-roomy-")
        .tempdir()
        .expect("temp dir");
    let full_dir = tmpfs.path().to_path_buf();
    // Only the tmpfs holds partitions; an index entry after every batch (0 bytes apart).
    let mut server = TestServer::start_with(&[
        ("log.dirs", &full_dir.display().to_string()),
        ("metadata.log.dir", &roomy.path().display().to_string()),
        ("log.index.interval.bytes", "0"),
    ]);
    wire::ensure_topic(server.kafka_addr(), TOPIC);
    // Entry i (of batch i + 1) is at byte 8 * i: entry 512, batch 513's, opens the second page.
    // Pick a batch size that keeps batches 508..=516 in one page of the `.log`, so after the
    // fill-up only the index needs a new block.
    let (value, size) = (10..400)
        .map(|len| {
            let size = wire::batch_v2(&[("k", &"v".repeat(len), 1)]).len();
            (len, size)
        })
        .find(|(_, size)| (508 * size) % 4096 + 9 * size <= 4096)
        .expect("some batch size fits");
    let value = "v".repeat(value);
    let mut conn = RawConn::connect(server.kafka_addr());
    for offset in 0..508 {
        let batch = wire::batch_v2(&[("k", &value, 1)]);
        assert_eq!(conn.produce_raw(TOPIC, 0, batch), (0, offset));
    }
    fill_up(&full_dir);
    for offset in 508..517 {
        let batch = wire::batch_v2(&[("k", &value, 1)]);
        assert_eq!(
            conn.produce_raw(TOPIC, 0, batch),
            (0, offset),
            "batch {offset} ({size} bytes) fits the .log's last page"
        );
    }
    assert!(server.is_running());
    assert!(server.stderr_tail().contains("offset index entry skipped"));
    // The `.log` eventually needs a block too: the ordinary storage error.
    let mut next_offset = 517;
    let refused = (517..600)
        .map(|_| conn.produce_raw(TOPIC, 0, wire::batch_v2(&[("k", &value, 1)])))
        .find(|(error, offset)| {
            if *error == 0 {
                assert_eq!(*offset, next_offset);
                next_offset += 1;
            }
            *error != 0
        })
        .map(|(error, _)| error);
    assert_eq!(refused, Some(KAFKA_STORAGE_ERROR));
    // Its only log dir offline, the broker stops (as Kafka halts it) rather than keep refusing
    // every write; with the space back, a restart serves on after the acknowledged batches.
    let status = server.wait_for_exit();
    assert_eq!(status.code(), Some(1), "{}", server.stderr_tail());
    assert!(server
        .stderr_tail()
        .contains("every log dir has failed: shutting down"));
    std::fs::remove_file(full_dir.join("filler")).expect("remove filler");
    server.restart();
    let mut conn = RawConn::connect(server.kafka_addr());
    assert_eq!(
        conn.produce_raw(TOPIC, 0, wire::batch_v2(&[("k", &value, 1)])),
        (0, next_offset)
    );
}
