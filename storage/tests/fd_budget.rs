//! The descriptor budget: an open log holds exactly one file descriptor (its active segment's
//! `.log`), however many segments it has; sealed segments are mapped when first read and hold no
//! descriptor even then.
//!
//! One test in its own binary, so no other test opens files while `/proc/self/fd` is counted
//! (nextest also runs it in a process of its own).

use std::fs;
use std::path::Path;

use skald_protocol::batch::testing::simple_batch;
use skald_storage::{Log, LogConfig};
use tempfile::TempDir;

const LOGS: usize = 50;
const SEGMENTS_PER_LOG: usize = 3;
const BATCHES_PER_SEGMENT: usize = 4;

fn open_descriptors() -> usize {
    fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd is readable")
        .count()
}

fn config() -> LogConfig {
    let batch_bytes = simple_batch(0, 2, 0, 100).len() as u64;
    LogConfig {
        segment_bytes: BATCHES_PER_SEGMENT as u64 * batch_bytes,
        // An index entry for every batch, so appends go through the index's reservation path.
        index_interval_bytes: 1,
        segment_index_bytes: 4096,
        ..LogConfig::default()
    }
}

fn append(log: &mut Log, i: usize) {
    let mut batch = simple_batch(0, 2, 1_000 * i as i64, 100);
    log.append(&mut batch, None, 0).expect("append");
}

fn write_log(dir: &Path) {
    let mut log = Log::open(dir, config()).expect("open");
    for i in 0..SEGMENTS_PER_LOG * BATCHES_PER_SEGMENT {
        append(&mut log, i);
    }
    assert_eq!(log.segment_count(), SEGMENTS_PER_LOG);
    log.close().expect("close");
}

#[test]
fn an_open_log_holds_exactly_one_descriptor() {
    let root = TempDir::new().expect("temp dir");
    let dirs: Vec<_> = (0..LOGS)
        .map(|i| root.path().join(format!("topic-{i}")))
        .collect();
    for dir in &dirs {
        write_log(dir);
    }

    let before = open_descriptors();
    let mut logs: Vec<Log> = dirs
        .iter()
        .map(|dir| Log::open(dir, config()).expect("reopen"))
        .collect();
    assert_eq!(
        open_descriptors() - before,
        LOGS,
        "after opening {LOGS} logs"
    );
    assert!(logs
        .iter()
        .all(|log| log.segment_count() == SEGMENTS_PER_LOG));
    assert!(logs.iter().all(|log| log.loaded_segment_count() == 1));

    // Reading the oldest segment maps it lazily, without a descriptor.
    for log in &logs {
        let read = log.read(0, 1).expect("read");
        assert_eq!(read.first_batch_offset, Some(0));
    }
    assert!(logs.iter().all(|log| log.loaded_segment_count() == 2));
    assert_eq!(
        open_descriptors() - before,
        LOGS,
        "after reading old segments"
    );

    // Appends that index, roll and flush leave the count where it was.
    for log in &mut logs {
        for i in 0..BATCHES_PER_SEGMENT {
            append(log, 100 + i);
        }
        log.flush().expect("flush");
        assert_eq!(log.segment_count(), SEGMENTS_PER_LOG + 1);
    }
    assert_eq!(
        open_descriptors() - before,
        LOGS,
        "after appends and a roll"
    );

    for log in logs {
        log.close().expect("close");
    }
    assert_eq!(open_descriptors(), before, "after closing");
}
