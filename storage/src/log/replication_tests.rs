//! The storage side of replication: follower appends, the leader epoch cache, truncation.

use std::fs;

use skald_protocol::batch::testing::simple_batch;
use skald_protocol::batch::BatchError;
use tempfile::TempDir;

use super::*;
use crate::cleaner::{read_cleaner_checkpoint, CrashPoint, CLEANER_OFFSET_FILE};
use crate::leader_epoch::LEADER_EPOCH_CHECKPOINT_FILE;
use crate::segment::segment_file_name;

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 1,
        segment_index_bytes: 4096,
        ..LogConfig::default()
    }
}

/// A batch as a leader stored it: `records` records from offset `base` with 30-byte values,
/// partition leader epoch `epoch`, timestamps from `timestamp`.
fn stored(base: i64, records: usize, epoch: i32, timestamp: i64) -> Vec<u8> {
    let mut bytes = simple_batch(base, records, timestamp, 30);
    batch::set_partition_leader_epoch(&mut bytes, epoch).unwrap();
    bytes
}

fn read_all(log: &Log) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, usize::MAX).unwrap();
        if read.records.is_empty() {
            break;
        }
        out.extend_from_slice(&read.records);
        offset = read.next_offset;
    }
    out
}

fn epochs(log: &Log) -> Vec<(i32, i64)> {
    log.leader_epoch_entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect()
}

fn epoch_file(dir: &Path) -> String {
    fs::read_to_string(dir.join(LEADER_EPOCH_CHECKPOINT_FILE)).unwrap()
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Exactly the segment files of `bases` plus the named checkpoints: no `.deleted`, `.cleaned`,
/// `.swap` or end marker left behind.
fn assert_files(dir: &Path, bases: &[i64], checkpoints: &[&str]) {
    let mut expected: Vec<String> = bases
        .iter()
        .flat_map(|&b| ["index", "log", "timeindex"].map(|s| segment_file_name(b, s)))
        .chain(checkpoints.iter().map(|c| c.to_string()))
        .collect();
    expected.sort();
    assert_eq!(file_names(dir), expected);
}

// The fixture: 8 leader batches of 2 records, 3 per segment, so segments [0, 6, 12]; batch i
// holds offsets 2i and 2i + 1 with timestamps 1000i and 1000i + 1; batches 0-2 are epoch 1, 3-5
// epoch 2, 6-7 epoch 4.
const BATCHES: usize = 8;

fn batch_bytes() -> u64 {
    simple_batch(0, 2, 0, 30).len() as u64
}

fn fixture_config() -> LogConfig {
    config(3 * batch_bytes())
}

fn fixture_epoch(i: usize) -> i32 {
    match i {
        0..=2 => 1,
        3..=5 => 2,
        _ => 4,
    }
}

/// The fixture's batches as stored.
fn fixture(dir: &Path) -> (Log, Vec<Vec<u8>>) {
    let mut log = Log::open(dir, fixture_config()).unwrap();
    let written = (0..BATCHES)
        .map(|i| {
            let mut bytes = simple_batch(0, 2, 1_000 * i as i64, 30);
            log.append(&mut bytes, None, fixture_epoch(i)).unwrap();
            bytes
        })
        .collect();
    assert_eq!(log.segment_base_offsets(), vec![0, 6, 12]);
    assert_eq!(epochs(&log), vec![(1, 0), (2, 6), (4, 12)]);
    (log, written)
}

#[test]
fn follower_append_keeps_what_the_leader_stored() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), config(1 << 20)).unwrap();
    let original = [stored(0, 3, 4, 1_000), stored(3, 2, 5, 900)].concat();
    let first = original.clone();
    let info = log.append_as_follower(&first).unwrap();
    assert_eq!(
        info,
        AppendInfo {
            first_offset: 0,
            last_offset: 4,
            max_timestamp: 1_002,
            log_append_time_ms: -1,
            bytes: original.len(),
            records_count: 5,
            duplicate: false,
        }
    );
    assert_eq!(first, original, "nothing patched");

    // A gap (a compacted leader) and a batch the leader stamped with LogAppendTime.
    let mut gap = stored(10, 2, 5, 2_000);
    batch::set_log_append_time(&mut gap, 77_000).unwrap();
    let info = log.append_as_follower(&gap.clone()).unwrap();
    assert_eq!(
        (
            info.first_offset,
            info.last_offset,
            info.max_timestamp,
            info.log_append_time_ms
        ),
        (10, 11, 77_000, -1)
    );
    assert_eq!(log.log_end_offset(), 12);
    assert_eq!(read_all(&log), [original.clone(), gap.clone()].concat());
    let in_gap = log.read(6, usize::MAX).unwrap();
    assert_eq!(
        (in_gap.first_batch_offset, in_gap.next_offset),
        (Some(10), 12)
    );
    assert_eq!(&in_gap.records[..], &gap[..]);
    let stored_headers: Vec<(i64, i32, i64)> = RecordBatches::new(&read_all(&log))
        .map(|r| r.unwrap().1)
        .map(|h| (h.base_offset, h.partition_leader_epoch, h.max_timestamp))
        .collect();
    assert_eq!(
        stored_headers,
        vec![(0, 4, 1_002), (3, 5, 901), (10, 5, 77_000)]
    );
    assert_eq!(epochs(&log), vec![(4, 0), (5, 3)]);
    assert_eq!(epoch_file(dir.path()), "0\n2\n4 0\n5 3\n");
}

#[test]
fn a_follower_replicating_a_leader_batch_by_batch_stores_identical_files() {
    let (leader_dir, follower_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (leader, _) = fixture(leader_dir.path());
    let mut follower = Log::open(follower_dir.path(), fixture_config()).unwrap();
    let mut offset = 0;
    while offset < leader.log_end_offset() {
        let read = leader.read(offset, 1).unwrap();
        follower.append_as_follower(&read.records).unwrap();
        offset = read.next_offset;
    }
    assert_eq!(follower.log_end_offset(), 16);
    assert_eq!(
        follower.segment_base_offsets(),
        leader.segment_base_offsets()
    );
    assert_eq!(epochs(&follower), epochs(&leader));
    leader.close().unwrap();
    follower.close().unwrap();
    assert_eq!(
        file_names(follower_dir.path()),
        file_names(leader_dir.path())
    );
    for name in file_names(leader_dir.path()) {
        assert_eq!(
            fs::read(follower_dir.path().join(&name)).unwrap(),
            fs::read(leader_dir.path().join(&name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn follower_appends_that_do_not_continue_the_log_write_nothing() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), config(1 << 20)).unwrap();
    log.append_as_follower(&stored(0, 3, 1, 0)).unwrap();
    let (size, file) = (log.size_bytes(), epoch_file(dir.path()));

    let err = log.append_as_follower(&stored(2, 1, 2, 0)).unwrap_err();
    assert!(matches!(
        err,
        Error::UnexpectedAppendOffset {
            base_offset: 2,
            expected_at_least: 3
        }
    ));
    let overlapping = [stored(3, 2, 2, 0), stored(4, 1, 2, 0)].concat();
    assert!(matches!(
        log.append_as_follower(&overlapping),
        Err(Error::UnexpectedAppendOffset {
            base_offset: 4,
            expected_at_least: 5
        })
    ));
    let mut corrupt = [stored(3, 1, 2, 0), stored(4, 1, 2, 0)].concat();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert!(matches!(
        log.append_as_follower(&corrupt),
        Err(Error::CorruptBatch(BatchError::CrcMismatch { .. }))
    ));
    assert!(matches!(
        log.append_as_follower(&[]),
        Err(Error::EmptyAppend)
    ));
    let far = 3 + (1i64 << 31) + 5;
    let too_wide = [stored(3, 1, 2, 0), stored(far, 1, 2, 0)].concat();
    assert!(matches!(
        log.append_as_follower(&too_wide),
        Err(Error::AppendOffsetSpanTooLarge {
            first_offset: 3,
            last_offset
        }) if last_offset == far
    ));

    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(log.size_bytes(), size);
    assert_eq!(epochs(&log), vec![(1, 0)]);
    assert_eq!(epoch_file(dir.path()), file);
    assert_eq!(read_all(&log), stored(0, 3, 1, 0));
}

#[test]
fn follower_appends_roll_as_appends_do() {
    let dir = TempDir::new().unwrap();
    let size = stored(0, 2, 1, 0).len() as u64;
    let mut log = Log::open(dir.path(), config(2 * size)).unwrap();
    log.append_as_follower(&stored(0, 2, 1, 0)).unwrap();
    log.append_as_follower(&stored(2, 2, 1, 0)).unwrap();
    // Does not fit: the new segment is named by the batch's own base offset, past the gap.
    log.append_as_follower(&stored(10, 2, 1, 0)).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 10]);
    // An offset the active segment cannot address (more than 2^31 past its base).
    let far = 10 + (1i64 << 31) + 7;
    log.append_as_follower(&stored(far, 1, 2, 0)).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 10, far]);

    // Even an empty active segment rolls for such an offset, or recovery would cut the batch.
    let empty_dir = TempDir::new().unwrap();
    let mut log = Log::open(empty_dir.path(), config(1 << 20)).unwrap();
    let far = 5_000_000_000;
    log.append_as_follower(&stored(far, 2, 3, 0)).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, far]);
    assert_eq!(log.log_end_offset(), far + 2);
    drop(log);
    let log = Log::open(empty_dir.path(), config(1 << 20)).unwrap();
    assert_eq!(log.log_end_offset(), far + 2);
    assert_eq!(read_all(&log), stored(far, 2, 3, 0));
    assert_eq!(epochs(&log), vec![(3, far)]);
}

#[test]
fn leader_epochs_are_written_only_when_they_change() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE);
    let mut log = Log::open(dir.path(), config(1 << 20)).unwrap();
    assert_eq!(log.latest_leader_epoch(), None);
    assert!(!path.exists(), "a new log writes no checkpoint");
    log.append(&mut simple_batch(0, 2, 0, 10), None, 1).unwrap();
    assert_eq!(epoch_file(dir.path()), "0\n1\n1 0\n");
    // The same epoch again: no write (the removed file stays removed).
    fs::remove_file(&path).unwrap();
    log.append(&mut simple_batch(0, 2, 0, 10), None, 1).unwrap();
    log.append_as_follower(&stored(4, 1, -1, 0)).unwrap();
    assert!(!path.exists());
    log.append(&mut simple_batch(0, 1, 0, 10), None, 3).unwrap();
    assert_eq!(epoch_file(dir.path()), "0\n2\n1 0\n3 5\n");

    // A new leader assigns its epoch at its log end; older or equal epochs are ignored.
    assert_eq!(log.log_end_offset(), 6);
    log.assign_leader_epoch(3, 6).unwrap();
    log.assign_leader_epoch(2, 6).unwrap();
    assert_eq!(epochs(&log), vec![(1, 0), (3, 5)]);
    log.assign_leader_epoch(6, 6).unwrap();
    assert_eq!(epoch_file(dir.path()), "0\n3\n1 0\n3 5\n6 6\n");
    // Elected again before writing anything: the newer epoch replaces the entry.
    log.assign_leader_epoch(7, 6).unwrap();
    assert_eq!(epochs(&log), vec![(1, 0), (3, 5), (7, 6)]);
    assert!(matches!(
        log.assign_leader_epoch(8, 7),
        Err(Error::OffsetOutOfRange { offset: 7, .. })
    ));
    assert_eq!(log.latest_leader_epoch(), Some(7));

    log.append(&mut simple_batch(0, 4, 0, 10), None, 7).unwrap();
    assert_eq!(log.log_end_offset(), 10);
    assert_eq!(log.end_offset_for_epoch(7), Some((7, 10)));
    assert_eq!(log.end_offset_for_epoch(6), Some((3, 6)));
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 6)));
    assert_eq!(log.end_offset_for_epoch(2), Some((1, 5)));
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 5)));
    assert_eq!(
        log.end_offset_for_epoch(0),
        Some((0, 0)),
        "below the earliest"
    );
    assert_eq!(log.end_offset_for_epoch(-1), None);
    assert_eq!(log.end_offset_for_epoch(8), None);
    assert_eq!(epoch_file(dir.path()), "0\n3\n1 0\n3 5\n7 6\n");
}

#[test]
fn retention_and_delete_records_trim_the_epochs_from_the_front() {
    let dir = TempDir::new().unwrap();
    let size = simple_batch(0, 1, 0, 30).len() as u64;
    let mut cfg = config(size);
    cfg.retention_bytes = 2 * size as i64;
    cfg.retention_ms = -1;
    let mut log = Log::open(dir.path(), cfg).unwrap();
    for (i, epoch) in [1, 1, 2, 2, 3].into_iter().enumerate() {
        log.append(&mut simple_batch(0, 1, i as i64, 30), None, epoch)
            .unwrap();
    }
    assert_eq!(epochs(&log), vec![(1, 0), (2, 2), (3, 4)]);
    // retention.bytes keeps the two newest segments.
    assert_eq!(log.delete_old_segments().unwrap().segments, 3);
    assert_eq!(log.log_start_offset(), 3);
    assert_eq!(epochs(&log), vec![(2, 3), (3, 4)]);
    assert_eq!(epoch_file(dir.path()), "0\n2\n2 3\n3 4\n");
    assert_eq!(
        log.end_offset_for_epoch(1),
        Some((1, 3)),
        "nothing of epoch 1 is left"
    );
    assert_eq!(log.delete_records_before(5).unwrap(), 5);
    assert_eq!(epochs(&log), vec![(3, 5)]);
    assert_eq!(epoch_file(dir.path()), "0\n1\n3 5\n");
}

#[test]
fn open_rebuilds_a_missing_or_unusable_epoch_checkpoint_and_fits_it_to_the_log() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE);
    let (log, _) = fixture(dir.path());
    log.close().unwrap();
    let expected = "0\n3\n1 0\n2 6\n4 12\n";
    assert_eq!(epoch_file(dir.path()), expected);

    for damage in [None, Some("0\n3\n1 0\n"), Some("not a checkpoint")] {
        match damage {
            None => fs::remove_file(&path).unwrap(),
            Some(text) => fs::write(&path, text).unwrap(),
        }
        let log = Log::open(dir.path(), fixture_config()).unwrap();
        assert_eq!(epochs(&log), vec![(1, 0), (2, 6), (4, 12)], "{damage:?}");
        assert_eq!(epoch_file(dir.path()), expected);
        // The sealed segments walked for it are unmapped again.
        assert_eq!(log.loaded_segment_count(), 1);
    }

    // Entries for batches a crash lost (at or past the log end) are dropped, the rest kept.
    fs::write(&path, "0\n4\n1 0\n2 6\n4 12\n9 16\n").unwrap();
    let log = Log::open(dir.path(), fixture_config()).unwrap();
    assert_eq!(epochs(&log), vec![(1, 0), (2, 6), (4, 12)]);
    assert_eq!(epoch_file(dir.path()), expected);

    // A log whose batches carry no epoch rebuilds an empty checkpoint.
    let plain = TempDir::new().unwrap();
    let mut log = Log::open(plain.path(), config(1 << 20)).unwrap();
    log.append_as_follower(&stored(0, 2, -1, 0)).unwrap();
    drop(log);
    assert!(!plain.path().join(LEADER_EPOCH_CHECKPOINT_FILE).exists());
    let log = Log::open(plain.path(), config(1 << 20)).unwrap();
    assert_eq!(epochs(&log), vec![]);
    assert_eq!(epoch_file(plain.path()), "0\n0\n");
}

#[test]
fn a_rebuild_walks_only_the_newest_segments_that_fit_its_budget() {
    let dir = TempDir::new().unwrap();
    let value_bytes = 1 << 20;
    let size = simple_batch(0, 1, 0, value_bytes).len() as u64;
    let segments = LEADER_EPOCH_REBUILD_BYTES_MAX / size + 3;
    let mut log = Log::open(dir.path(), config(size)).unwrap();
    for i in 0..segments {
        let mut bytes = simple_batch(0, 1, i as i64, value_bytes);
        log.append(&mut bytes, None, i as i32).unwrap();
    }
    assert_eq!(log.segment_count() as u64, segments);
    drop(log);
    fs::remove_file(dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE)).unwrap();
    let log = Log::open(dir.path(), config(size)).unwrap();
    let walked = LEADER_EPOCH_REBUILD_BYTES_MAX / size;
    let first_walked = (segments - walked) as i64;
    let expected: Vec<(i32, i64)> = (first_walked..segments as i64)
        .map(|i| (i as i32, i))
        .collect();
    assert_eq!(epochs(&log), expected);
    assert_eq!(
        log.end_offset_for_epoch(first_walked as i32 - 1),
        Some((first_walked as i32 - 1, first_walked))
    );
    assert_eq!(log.loaded_segment_count(), 1);

    // An active segment larger than the budget alone: the cache starts empty.
    let big = TempDir::new().unwrap();
    let mut log = Log::open(big.path(), config(1 << 30)).unwrap();
    let value_bytes = LEADER_EPOCH_REBUILD_BYTES_MAX as usize;
    log.append(&mut simple_batch(0, 1, 0, value_bytes), None, 4)
        .unwrap();
    drop(log);
    fs::remove_file(big.path().join(LEADER_EPOCH_CHECKPOINT_FILE)).unwrap();
    let log = Log::open(big.path(), config(1 << 30)).unwrap();
    assert_eq!(epochs(&log), vec![]);
    assert_eq!(epoch_file(big.path()), "0\n0\n");
}

#[test]
fn truncate_to_a_batch_boundary_cuts_the_segment_holding_it() {
    let dir = TempDir::new().unwrap();
    let (mut log, written) = fixture(dir.path());
    log.flush().unwrap();
    assert_eq!(log.recovery_point(), 16);
    fs::write(dir.path().join(CLEANER_OFFSET_FILE), "0\n12\n").unwrap();

    log.truncate_to(8).unwrap();
    assert_eq!(log.log_end_offset(), 8);
    assert_eq!(log.segment_base_offsets(), vec![0, 6]);
    assert_eq!(log.recovery_point(), 8);
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(read_all(&log), written[..4].concat());
    assert_eq!(epochs(&log), vec![(1, 0), (2, 6)]);
    assert_eq!(epoch_file(dir.path()), "0\n2\n1 0\n2 6\n");
    assert_eq!(read_cleaner_checkpoint(dir.path()).unwrap(), Some(6));
    assert_files(
        dir.path(),
        &[0, 6],
        &[LEADER_EPOCH_CHECKPOINT_FILE, CLEANER_OFFSET_FILE],
    );
    // The cut segment's indexes answer for what it still holds.
    assert_eq!(log.offset_for_timestamp(3_000).unwrap(), Some((6, 3_000)));
    assert_eq!(log.offset_for_timestamp(3_001).unwrap(), Some((7, 3_001)));
    assert_eq!(log.offset_for_timestamp(4_000).unwrap(), None);
    assert_eq!(log.read(7, 1).unwrap().records, written[3]);

    // It is the active segment again: appends continue at the cut, leader and follower alike.
    let mut again = simple_batch(0, 2, 9_000, 30);
    let info = log.append(&mut again, None, 5).unwrap();
    assert_eq!((info.first_offset, info.last_offset), (8, 9));
    log.append_as_follower(&stored(10, 2, 5, 9_500)).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 6]);
    assert_eq!(
        read_all(&log),
        [written[..4].concat(), again, stored(10, 2, 5, 9_500)].concat()
    );
    assert_eq!(epochs(&log), vec![(1, 0), (2, 6), (5, 8)]);
    assert_eq!(log.offset_for_timestamp(9_000).unwrap(), Some((8, 9_000)));
}

#[test]
fn truncate_to_inside_a_batch_drops_the_whole_batch() {
    let dir = TempDir::new().unwrap();
    let (mut log, written) = fixture(dir.path());
    log.truncate_to(9).unwrap();
    assert_eq!(log.log_end_offset(), 8);
    assert_eq!(read_all(&log), written[..4].concat());

    // The first batch of a segment: the segment is left empty, under its own name.
    log.truncate_to(7).unwrap();
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(log.segment_base_offsets(), vec![0, 6]);
    assert_eq!(log.segment_map()[&6].size(), 0);
    assert_eq!(read_all(&log), written[..3].concat());
    assert_eq!(epochs(&log), vec![(1, 0)]);
}

#[test]
fn truncate_to_a_segment_boundary_or_into_a_gap_starts_an_empty_segment_there() {
    let dir = TempDir::new().unwrap();
    let (mut log, written) = fixture(dir.path());
    log.truncate_to(12).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 6, 12]);
    assert_eq!(log.log_end_offset(), 12);
    assert_eq!(read_all(&log), written[..6].concat());
    assert_eq!(epochs(&log), vec![(1, 0), (2, 6)]);
    log.truncate_to(6).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 6]);
    assert_eq!(log.log_end_offset(), 6);
    assert_files(dir.path(), &[0, 6], &[LEADER_EPOCH_CHECKPOINT_FILE]);

    // A follower of a compacted leader: offset 20 is in the gap after batch 10-11.
    let gap_dir = TempDir::new().unwrap();
    let size = stored(0, 2, 1, 0).len() as u64;
    let mut log = Log::open(gap_dir.path(), config(2 * size)).unwrap();
    for base in [0, 10, 30, 32] {
        log.append_as_follower(&stored(base, 2, 1, 0)).unwrap();
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 30]);
    log.truncate_to(20).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 20]);
    assert_eq!(log.log_end_offset(), 20);
    assert_eq!(
        read_all(&log),
        [stored(0, 2, 1, 0), stored(10, 2, 1, 0)].concat()
    );
    log.append_as_follower(&stored(20, 2, 2, 0)).unwrap();
    assert_eq!(epochs(&log), vec![(1, 0), (2, 20)]);
}

#[test]
fn a_truncated_segment_is_the_segment_its_kept_batches_would_have_made() {
    let (cut_dir, fresh_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (mut cut, written) = fixture(cut_dir.path());
    cut.truncate_to(10).unwrap();
    cut.close().unwrap();
    let mut fresh = Log::open(fresh_dir.path(), fixture_config()).unwrap();
    for (i, bytes) in written.iter().take(5).enumerate() {
        let mut bytes = bytes.clone();
        fresh.append(&mut bytes, None, fixture_epoch(i)).unwrap();
    }
    fresh.close().unwrap();
    assert_eq!(file_names(cut_dir.path()), file_names(fresh_dir.path()));
    for name in file_names(fresh_dir.path()) {
        assert_eq!(
            fs::read(cut_dir.path().join(&name)).unwrap(),
            fs::read(fresh_dir.path().join(&name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn fetched_bytes_survive_truncation() {
    let dir = TempDir::new().unwrap();
    let (mut log, written) = fixture(dir.path());
    let sealed = log.read(0, usize::MAX).unwrap();
    let cut = log.read(6, usize::MAX).unwrap();
    let active = log.read(12, usize::MAX).unwrap();
    assert_eq!(sealed.records, written[..3].concat());
    assert_eq!(cut.records, written[3..6].concat());
    assert_eq!(active.records, written[6..].concat());

    log.truncate_to(8).unwrap();
    log.append_as_follower(&stored(8, 50, 7, 0)).unwrap();
    assert_eq!(sealed.records, written[..3].concat());
    assert_eq!(cut.records, written[3..6].concat());
    assert_eq!(active.records, written[6..].concat());

    let after_cut = log.read(8, usize::MAX).unwrap();
    log.truncate_fully_and_start_at(100).unwrap();
    log.append_as_follower(&stored(100, 50, 8, 0)).unwrap();
    assert_eq!(sealed.records, written[..3].concat());
    assert_eq!(cut.records, written[3..6].concat());
    assert_eq!(active.records, written[6..].concat());
    assert_eq!(after_cut.records, stored(8, 50, 7, 0));
}

#[test]
fn fetched_bytes_spanning_pages_past_the_cut_stay_readable() {
    // Had the file been shrunk in place, reading these pages past its new end would raise
    // SIGBUS and kill the test process.
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), config(1 << 20)).unwrap();
    let written: Vec<Vec<u8>> = (0..6)
        .map(|i| {
            let mut bytes = simple_batch(0, 1, i, 8 << 10);
            log.append(&mut bytes, None, 1).unwrap();
            bytes
        })
        .collect();
    let held = log.read(0, usize::MAX).unwrap();
    assert_eq!(held.records.len(), written.concat().len());
    assert!(held.records.len() > 12 * 4096);
    log.truncate_to(1).unwrap();
    assert_eq!(log.size_bytes(), written[0].len() as u64);
    assert_eq!(held.records, written.concat());
    log.truncate_fully_and_start_at(0).unwrap();
    log.append(&mut simple_batch(0, 40, 0, 2 << 10), None, 2)
        .unwrap();
    assert_eq!(held.records, written.concat());
}

#[test]
fn truncate_fully_and_start_at_empties_the_log() {
    let dir = TempDir::new().unwrap();
    let (mut log, _) = fixture(dir.path());
    assert_eq!(log.delete_records_before(3).unwrap(), 3);
    log.truncate_fully_and_start_at(100).unwrap();
    let check = |log: &Log, offset: i64| {
        assert_eq!(log.segment_base_offsets(), vec![offset]);
        assert_eq!(
            (
                log.log_start_offset(),
                log.log_end_offset(),
                log.recovery_point()
            ),
            (offset, offset, offset)
        );
        assert_eq!(epochs(log), vec![]);
        assert_eq!(log.latest_leader_epoch(), None);
        assert_eq!(read_all(log), Vec::<u8>::new());
    };
    check(&log, 100);
    assert_files(
        dir.path(),
        &[100],
        &[LEADER_EPOCH_CHECKPOINT_FILE, LOG_START_OFFSET_FILE],
    );
    assert_eq!(epoch_file(dir.path()), "0\n0\n");
    assert_eq!(
        fs::read_to_string(dir.path().join(LOG_START_OFFSET_FILE)).unwrap(),
        "0\n100\n"
    );
    drop(log);
    let mut log = Log::open(dir.path(), fixture_config()).unwrap();
    check(&log, 100);
    log.append_as_follower(&stored(100, 2, 9, 0)).unwrap();
    assert_eq!(epochs(&log), vec![(9, 100)]);

    // Down to a lower offset: the old start must not come back after a reopen.
    log.truncate_fully_and_start_at(5).unwrap();
    check(&log, 5);
    log.append_as_follower(&stored(5, 3, 9, 0)).unwrap();
    drop(log);
    let mut log = Log::open(dir.path(), fixture_config()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (5, 8));
    assert_eq!(read_all(&log), stored(5, 3, 9, 0));

    // Below the log start offset, truncate_to is a full truncation.
    log.truncate_to(2).unwrap();
    check(&log, 2);
}

#[test]
fn truncation_edge_cases() {
    let dir = TempDir::new().unwrap();
    let (mut log, written) = fixture(dir.path());
    let files = file_names(dir.path());
    log.truncate_to(16).unwrap();
    log.truncate_to(100).unwrap();
    assert_eq!(log.log_end_offset(), 16);
    assert_eq!(read_all(&log), written.concat());
    assert_eq!(file_names(dir.path()), files);
    assert!(matches!(
        log.truncate_to(-1),
        Err(Error::OffsetOutOfRange { offset: -1, .. })
    ));
    assert!(matches!(
        log.truncate_fully_and_start_at(-1),
        Err(Error::OffsetOutOfRange { offset: -1, .. })
    ));

    // Truncating into the batch holding the log start offset brings the start down with it.
    assert_eq!(log.delete_records_before(9).unwrap(), 9);
    log.truncate_to(9).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (8, 8));
    assert_eq!(
        fs::read_to_string(dir.path().join(LOG_START_OFFSET_FILE)).unwrap(),
        "0\n8\n"
    );
    drop(log);
    let log = Log::open(dir.path(), fixture_config()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (8, 8));
}

#[test]
fn truncate_to_the_log_end_still_drops_the_epochs_starting_there() {
    // A broker elected leader records its epoch at its log end (makeLeader); if it loses the
    // leadership before appending anything, that entry describes no record. Its new leader
    // answers the follower's fetch (last fetched epoch 6) with the previous epoch ending at this
    // very log end, and the truncation there must forget epoch 6 (Kafka's `truncateTo` always
    // runs `truncateFromEnd`), or the next fetch asks the same question forever.
    let dir = TempDir::new().unwrap();
    let (mut log, written) = fixture(dir.path());
    log.assign_leader_epoch(6, 16).unwrap();
    assert_eq!(epochs(&log), vec![(1, 0), (2, 6), (4, 12), (6, 16)]);
    let files = file_names(dir.path());

    log.truncate_to(16).unwrap();
    assert_eq!(log.log_end_offset(), 16);
    assert_eq!(read_all(&log), written.concat(), "no record goes");
    assert_eq!(file_names(dir.path()), files, "no segment is rewritten");
    assert_eq!(epochs(&log), vec![(1, 0), (2, 6), (4, 12)]);
    assert_eq!(log.latest_leader_epoch(), Some(4));
    assert_eq!(epoch_file(dir.path()), "0\n3\n1 0\n2 6\n4 12\n");

    // Past the log end likewise: nothing to cut, but no epoch may start at or past the end.
    log.assign_leader_epoch(7, 16).unwrap();
    log.truncate_to(30).unwrap();
    assert_eq!(epochs(&log), vec![(1, 0), (2, 6), (4, 12)]);
    drop(log);
    let log = Log::open(dir.path(), fixture_config()).unwrap();
    assert_eq!(epochs(&log), vec![(1, 0), (2, 6), (4, 12)]);
    assert_eq!(log.log_end_offset(), 16);
}

#[test]
fn truncation_and_follower_appends_survive_a_reopen() {
    let dir = TempDir::new().unwrap();
    let (mut log, written) = fixture(dir.path());
    log.truncate_to(8).unwrap();
    log.append_as_follower(&stored(8, 2, 5, 0)).unwrap();
    log.append_as_follower(&stored(14, 3, 6, 0)).unwrap();
    let expected = [
        written[..4].concat(),
        stored(8, 2, 5, 0),
        stored(14, 3, 6, 0),
    ]
    .concat();
    // Dropped, not closed: the active segment is recovered batch by batch.
    drop(log);
    let log = Log::open(dir.path(), fixture_config()).unwrap();
    assert_eq!(log.log_end_offset(), 17);
    assert_eq!(read_all(&log), expected);
    assert_eq!(epochs(&log), vec![(1, 0), (2, 6), (5, 8), (6, 14)]);
    assert_eq!(epoch_file(dir.path()), "0\n4\n1 0\n2 6\n5 8\n6 14\n");
    assert_eq!(log.end_offset_for_epoch(5), Some((5, 14)));
    log.close().unwrap();
    let log = Log::open(dir.path(), fixture_config()).unwrap();
    assert_eq!(log.log_end_offset(), 17);
    assert_eq!(read_all(&log), expected);
    assert_eq!(epochs(&log), vec![(1, 0), (2, 6), (5, 8), (6, 14)]);
}

/// What a crash test compares: log start, log end, every byte, the epochs.
type LogState = (i64, i64, Vec<u8>, Vec<(i32, i64)>);

fn state(log: &Log) -> LogState {
    (
        log.log_start_offset(),
        log.log_end_offset(),
        read_all(log),
        epochs(log),
    )
}

/// Runs `truncate` with a crash injected after every step in turn, reopening after each: the log
/// must come back exactly as it was or exactly truncated, with no leftover files, the old state
/// up to the commit point and the new one from it on.
fn check_crash_at_every_step(
    truncate: impl Fn(&mut Log, &mut CrashPoint) -> Result<()>,
    redo: impl Fn(&mut Log) -> Result<()>,
) {
    let reference = TempDir::new().unwrap();
    let (mut log, _) = fixture(reference.path());
    let before = state(&log);
    truncate(&mut log, &mut CrashPoint::never()).unwrap();
    let after = state(&log);
    assert_ne!(before, after);

    let mut outcomes = Vec::new();
    for steps in 1.. {
        let dir = TempDir::new().unwrap();
        let (mut log, _) = fixture(dir.path());
        match truncate(&mut log, &mut CrashPoint::after(steps)) {
            Ok(()) => {
                assert_eq!(state(&log), after);
                break;
            }
            Err(Error::Io { source, .. }) => assert_eq!(source.to_string(), "injected crash"),
            Err(other) => panic!("unexpected error {other}"),
        }
        drop(log);
        let mut log = Log::open(dir.path(), fixture_config()).unwrap();
        let found = state(&log);
        assert!(
            found == before || found == after,
            "a crash after step {steps} left a third state: {found:?}"
        );
        outcomes.push(found == after);
        assert!(
            file_names(dir.path())
                .iter()
                .all(|n| !n.contains(".cleaned")
                    && !n.contains(".swap")
                    && !n.contains(".deleted")),
            "leftovers after step {steps}: {:?}",
            file_names(dir.path())
        );
        redo(&mut log).unwrap();
        assert_eq!(state(&log), after);
        drop(log);
        assert_eq!(
            state(&Log::open(dir.path(), fixture_config()).unwrap()),
            after
        );
    }
    let committed = outcomes.iter().position(|&new| new).unwrap();
    assert!(committed > 0, "{outcomes:?}");
    assert!(outcomes[committed..].iter().all(|&new| new), "{outcomes:?}");
}

#[test]
fn a_crash_at_any_step_of_truncate_to_leaves_the_old_or_the_truncated_log() {
    // Cutting a segment, then replacing the segments past a boundary with an empty one.
    for offset in [8, 12] {
        check_crash_at_every_step(
            |log, crash| log.truncate_to_with(offset, crash),
            |log| log.truncate_to(offset),
        );
    }
}

#[test]
fn a_crash_at_any_step_of_truncate_fully_leaves_the_old_or_the_empty_log() {
    for offset in [100, 3] {
        check_crash_at_every_step(
            |log, crash| log.truncate_fully_with(offset, crash),
            |log| log.truncate_fully_and_start_at(offset),
        );
    }
}
