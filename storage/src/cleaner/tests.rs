use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use skald_protocol::batch::testing::{build_batch, build_batch_with, BatchOptions, TestRecord};
use skald_protocol::batch::{record_views, RecordBatches};
use tempfile::TempDir;

use super::codec::{self, Codec};
use super::*;
use crate::clock::ManualClock;
use crate::config::LogConfig;

/// `(offset, key, value)` of one record as read back.
type Row = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// One record to append: key (None = keyless), value (None = tombstone), timestamp.
type Input = (Option<u8>, Option<u8>, i64);

/// Segments roll on `segment.ms` (100 ms of batch timestamps) and on `segment_bytes`.
fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 64,
        segment_index_bytes: 4096,
        segment_ms: 100,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, segment_bytes: u64) -> Log {
    Log::open_with_clock(
        dir,
        config(segment_bytes),
        Arc::new(ManualClock::new(1_000_000)),
    )
    .unwrap()
}

fn record((key, value, timestamp): Input) -> TestRecord {
    TestRecord {
        key: key.map(|k| format!("key-{k}").into_bytes()),
        value: value.map(|v| format!("value-{v}").into_bytes()),
        timestamp,
        headers: Vec::new(),
    }
}

/// Appends `inputs` in batches of the given sizes (cycled); returns the rows as written.
fn append_all(log: &mut Log, inputs: &[Input], batch_sizes: &[usize]) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut rest = inputs;
    let mut sizes = batch_sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        let (now, later) = rest.split_at(n);
        let records: Vec<TestRecord> = now.iter().copied().map(record).collect();
        let mut batch = build_batch(0, &records);
        let info = log.append(&mut batch, None, 0).unwrap();
        for (i, r) in records.into_iter().enumerate() {
            rows.push((info.first_offset + i as i64, r.key, r.value));
        }
        rest = later;
    }
    rows
}

/// Every record readable in the log, checking that batches are valid and offsets increase.
fn read_rows(log: &Log) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, usize::MAX).unwrap();
        if read.records.is_empty() {
            break;
        }
        for item in RecordBatches::new(&read.records) {
            let (position, header) = item.unwrap();
            let mut bytes = read.records[position..position + header.total_size()].to_vec();
            match Codec::from_id(header.compression()) {
                Some(codec) => bytes = codec::decompressed_batch(&bytes, codec).unwrap(),
                // Test "snappy" batches hold plain records under the codec bits.
                None => bytes[22] &= !0x07,
            }
            for view in record_views(&bytes).unwrap() {
                let view = view.unwrap();
                let row_offset = header.base_offset + i64::from(view.offset_delta);
                assert!(row_offset <= header.last_offset());
                if let Some(last) = rows.last() {
                    assert!(row_offset > last.0, "offsets must increase");
                }
                rows.push((
                    row_offset,
                    view.key.map(<[u8]>::to_vec),
                    view.value.map(<[u8]>::to_vec),
                ));
            }
        }
        offset = read.next_offset;
    }
    rows
}

/// `(base, end, largest timestamp)` of each non-active segment.
fn sealed_segments(log: &Log) -> Vec<(i64, i64, i64)> {
    let bases = log.segment_base_offsets();
    let segments: Vec<&Segment> = log.segments().collect();
    (0..bases.len() - 1)
        .map(|i| {
            (
                bases[i],
                bases[i + 1],
                segments[i].largest_timestamp().unwrap(),
            )
        })
        .collect()
}

/// The model: what one pass over all sealed segments from the log start must leave, given no
/// compressed batches and an offset map holding every dirty key.
fn expected(
    rows: &[Row],
    sealed: &[(i64, i64, i64)],
    clean_below: i64,
    end: i64,
    now_ms: i64,
    delete_retention_ms: i64,
) -> Vec<Row> {
    let mut latest: HashMap<&[u8], i64> = HashMap::new();
    for (offset, key, _) in rows {
        if let (Some(key), true) = (key, (clean_below..end).contains(offset)) {
            latest.insert(key, *offset);
        }
    }
    rows.iter()
        .filter(|(offset, key, value)| {
            if *offset >= end {
                return true;
            }
            let Some(key) = key else { return true };
            if latest.get(key.as_slice()).is_some_and(|&l| l > *offset) {
                return false;
            }
            let largest = sealed
                .iter()
                .find(|(b, e, _)| (*b..*e).contains(offset))
                .map(|s| s.2)
                .unwrap();
            value.is_some() || now_ms - largest <= delete_retention_ms
        })
        .cloned()
        .collect()
}

fn all_cleanable() -> CompactionOptions {
    CompactionOptions {
        delete_retention_ms: 500,
        min_compaction_lag_ms: 0,
        min_cleanable_dirty_ratio: 0.0,
        offset_map_keys_max: 1 << 20,
    }
}

fn arb_inputs() -> impl Strategy<Value = Vec<Input>> {
    proptest::collection::vec(
        (
            proptest::option::weighted(0.95, 0u8..12),
            proptest::option::weighted(0.8, any::<u8>()),
            0i64..10,
        ),
        1..120,
    )
    .prop_map(|inputs| {
        // Timestamps rise 20 ms per record with some jitter, so segment.ms rolls often.
        inputs
            .into_iter()
            .enumerate()
            .map(|(i, (k, v, jitter))| (k, v, 10 * i as i64 + jitter))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn compaction_keeps_the_latest_record_of_each_key_at_its_offset(
        inputs in arb_inputs(),
        batch_sizes in proptest::collection::vec(1usize..5, 1..6),
        small_segments in any::<bool>(),
        now_ms in 0i64..3_000,
        delete_retention_ms in 0i64..1_500,
    ) {
        let temp = TempDir::new().unwrap();
        let segment_bytes = if small_segments { 400 } else { 1 << 20 };
        let mut log = open(temp.path(), segment_bytes);
        let written = append_all(&mut log, &inputs, &batch_sizes);
        prop_assert_eq!(read_rows(&log), written.clone());
        let log_end_offset = log.log_end_offset();
        let sealed = sealed_segments(&log);
        let end = log.segment_base_offsets().last().copied().unwrap();
        let options = CompactionOptions { delete_retention_ms, ..all_cleanable() };
        let want = expected(&written, &sealed, 0, end, now_ms, delete_retention_ms);

        let stats = log.compact(now_ms, &options).unwrap();
        prop_assert_eq!(stats.cleaned, !sealed.is_empty());
        prop_assert_eq!(stats.clean_end_offset, if sealed.is_empty() { 0 } else { end });
        prop_assert_eq!(stats.records_removed as usize, written.len() - want.len());
        prop_assert_eq!(read_rows(&log), want.clone());
        prop_assert_eq!(log.log_end_offset(), log_end_offset);
        prop_assert_eq!(log.log_start_offset(), 0);

        // The same again after a restart; and a second pass has nothing dirty.
        drop(log);
        let mut log = open(temp.path(), segment_bytes);
        prop_assert_eq!(read_rows(&log), want.clone());
        prop_assert_eq!(log.log_end_offset(), log_end_offset);
        let again = log.compact(now_ms, &options).unwrap();
        prop_assert!(!again.cleaned);
        prop_assert_eq!(read_rows(&log), want);
    }
}

/// A fixed stream over many small segments (rolled by segment.ms), all in one cleaning group.
fn crash_test_log(dir: &Path) -> Log {
    let mut log = open(dir, 1 << 20);
    let mut state = 7u64;
    let inputs: Vec<Input> = (0..90)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = (state >> 33) as u8 % 9;
            let value = ((state >> 20) % 5 != 0).then_some((state >> 40) as u8);
            (Some(key), value, 20 * i)
        })
        .collect();
    append_all(&mut log, &inputs, &[1, 2, 3]);
    log
}

#[test]
fn a_crash_at_any_step_of_the_swap_leaves_the_old_or_the_new_log() {
    let now_ms = 2_200;
    let options = all_cleanable();
    let reference = TempDir::new().unwrap();
    let mut log = crash_test_log(reference.path());
    let before = read_rows(&log);
    let log_end_offset = log.log_end_offset();
    assert!(log.segment_count() > 10);
    let stats = log.compact(now_ms, &options).unwrap();
    assert_eq!(stats.segments_written, 1, "one group, one atomic swap");
    assert!(
        stats.tombstones_removed > 0 && stats.records_removed > stats.tombstones_removed,
        "{stats:?}"
    );
    let after = read_rows(&log);
    assert_ne!(before, after);

    let mut outcomes = Vec::new();
    for steps in 1.. {
        let temp = TempDir::new().unwrap();
        let mut log = crash_test_log(temp.path());
        match compact(&mut log, now_ms, &options, &mut CrashPoint::after(steps)) {
            Ok(_) => {
                assert_eq!(read_rows(&log), after);
                break;
            }
            Err(Error::Io { source, .. }) => assert_eq!(source.to_string(), "injected crash"),
            Err(other) => panic!("unexpected error {other}"),
        }
        // The crash: nothing is closed or cleaned up.
        drop(log);
        let mut log = open(temp.path(), 1 << 20);
        let rows = read_rows(&log);
        assert!(
            rows == before || rows == after,
            "crash after step {steps} left a third state"
        );
        assert_eq!(log.log_end_offset(), log_end_offset);
        outcomes.push(rows == after);
        let names: Vec<String> = fs::read_dir(temp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names.iter().all(|n| !n.contains(".cleaned")
                && !n.contains(".swap")
                && !n.contains(".deleted")),
            "leftovers after recovery: {names:?}"
        );
        // Compacting the recovered log reaches the same end state.
        log.compact(now_ms, &options).unwrap();
        assert_eq!(read_rows(&log), after);
        drop(log);
        assert_eq!(read_rows(&open(temp.path(), 1 << 20)), after);
    }
    // The commit point splits the steps: old before it, new from it on.
    let committed = outcomes.iter().position(|&new| new).unwrap();
    assert!(committed > 0);
    assert!(outcomes[committed..].iter().all(|&new| new));
    assert!(outcomes.len() > 10, "every rename is a step: {outcomes:?}");
}

/// Appends one batch per `(key, value, timestamp)` group; each call's batch lands in a new segment
/// when `timestamp` jumps by more than segment.ms.
fn append_one(log: &mut Log, records: &[(&str, Option<&str>, i64)], attributes: i16) -> i64 {
    let records: Vec<TestRecord> = records
        .iter()
        .map(|(k, v, ts)| TestRecord::new(Some(k.as_bytes()), v.map(str::as_bytes), *ts))
        .collect();
    let options = BatchOptions {
        attributes,
        ..BatchOptions::default()
    };
    let mut batch = build_batch_with(&options, &records);
    log.append(&mut batch, None, 0).unwrap().first_offset
}

fn row(offset: i64, key: &str, value: Option<&str>) -> Row {
    (
        offset,
        Some(key.as_bytes().to_vec()),
        value.map(|v| v.as_bytes().to_vec()),
    )
}

#[test]
fn min_compaction_lag_stops_at_the_first_segment_too_new() {
    let temp = TempDir::new().unwrap();
    let mut log = open(temp.path(), 1 << 20);
    append_one(
        &mut log,
        &[("a", Some("1"), 1_000), ("b", Some("1"), 1_000)],
        0,
    ); // 0-1
    append_one(&mut log, &[("a", Some("2"), 5_000)], 0); // 2
    append_one(
        &mut log,
        &[("b", Some("2"), 9_000), ("a", Some("3"), 9_000)],
        0,
    ); // 3-4
    append_one(&mut log, &[("a", Some("4"), 20_000)], 0); // 5, active
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 3, 5]);
    let options = CompactionOptions {
        min_compaction_lag_ms: 3_000,
        ..all_cleanable()
    };
    let stats = log.compact(10_000, &options).unwrap();
    // The segment at 3 holds a record of 9,000, newer than 10,000 - 3,000: it and all after it wait.
    assert!(stats.cleaned);
    assert_eq!(stats.clean_end_offset, 3);
    assert_eq!(read_cleaner_checkpoint(temp.path()).unwrap(), Some(3));
    assert_eq!(
        read_rows(&log),
        vec![
            row(1, "b", Some("1")),
            row(2, "a", Some("2")),
            row(3, "b", Some("2")),
            row(4, "a", Some("3")),
            row(5, "a", Some("4")),
        ]
    );
    // Later, with the lag passed, the rest of the sealed segments are cleaned.
    let stats = log.compact(30_000, &options).unwrap();
    assert_eq!((stats.first_dirty_offset, stats.clean_end_offset), (3, 5));
    assert_eq!(
        read_rows(&log),
        vec![
            row(3, "b", Some("2")),
            row(4, "a", Some("3")),
            row(5, "a", Some("4")),
        ]
    );
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(log.log_end_offset(), 6);
}

#[test]
fn dirty_ratio_decides_whether_a_pass_runs() {
    let temp = TempDir::new().unwrap();
    let mut log = open(temp.path(), 1 << 20);
    for i in 0..6 {
        append_one(&mut log, &[("k", Some("v"), 1_000 * i)], 0);
    }
    // Six segments of one record each; five sealed, all dirty.
    let first = log.compact(10_000, &all_cleanable()).unwrap();
    assert_eq!(first.dirty_ratio, 1.0);
    assert_eq!(first.records_removed, 4);
    assert_eq!(first.clean_end_offset, 5);
    let clean_bytes = log.size_bytes() - log.segments().last().unwrap().size();

    append_one(&mut log, &[("k", Some("w"), 7_000)], 0); // rolls: the segment at 5 is sealed
    let dirty_bytes = log.segment_map().values().rev().nth(1).unwrap().size();
    let ratio = dirty_bytes as f64 / (clean_bytes + dirty_bytes) as f64;
    assert!(ratio > 0.3 && ratio < 0.7, "{ratio}");
    let high = CompactionOptions {
        min_cleanable_dirty_ratio: 0.7,
        ..all_cleanable()
    };
    let skipped = log.compact(10_000, &high).unwrap();
    assert!(!skipped.cleaned);
    assert_eq!(skipped.dirty_ratio, ratio);
    assert_eq!(
        (skipped.first_dirty_offset, skipped.clean_end_offset),
        (5, 5)
    );
    assert_eq!(
        read_rows(&log),
        vec![
            row(4, "k", Some("v")),
            row(5, "k", Some("v")),
            row(6, "k", Some("w"))
        ]
    );
    let low = CompactionOptions {
        min_cleanable_dirty_ratio: 0.3,
        ..all_cleanable()
    };
    let cleaned = log.compact(10_000, &low).unwrap();
    assert!(cleaned.cleaned);
    assert_eq!(cleaned.clean_end_offset, 6);
    assert_eq!(
        read_rows(&log),
        vec![row(5, "k", Some("v")), row(6, "k", Some("w"))]
    );
}

#[test]
fn unreadable_compressed_batches_are_kept_whole_and_protect_older_keys_from_tombstone_removal() {
    let temp = TempDir::new().unwrap();
    let mut log = open(temp.path(), 1 << 20);
    append_one(&mut log, &[("c", Some("1"), 0), ("c", None, 0)], 0); // 0-1
    append_one(
        &mut log,
        &[("b", Some("1"), 1_000), ("b", Some("2"), 1_000)],
        2,
    ); // 2-3, "snappy" (a codec the cleaner does not decompress)
    append_one(&mut log, &[("b", None, 2_000), ("a", Some("1"), 2_000)], 0); // 4-5
    append_one(&mut log, &[("a", Some("2"), 3_000)], 0); // 6, active
    let stats = log.compact(100_000, &all_cleanable()).unwrap();
    assert_eq!(stats.compressed_batches_skipped, 1);
    // The tombstone of "c" (before any compressed batch) goes; that of "b" stays, since the
    // snappy batch before it holds values of "b" the cleaner cannot see; both values of "b"
    // stay inside their untouched batch.
    assert_eq!(stats.tombstones_removed, 1);
    assert_eq!(
        read_rows(&log),
        vec![
            row(2, "b", Some("1")),
            row(3, "b", Some("2")),
            row(4, "b", None),
            row(5, "a", Some("1")),
            row(6, "a", Some("2")),
        ]
    );
}

#[test]
fn keyless_records_are_kept_and_counted() {
    let temp = TempDir::new().unwrap();
    let mut log = open(temp.path(), 1 << 20);
    let records = vec![
        TestRecord::new(None, Some(b"x"), 0),
        TestRecord::new(Some(b"k"), Some(b"1"), 0),
    ];
    log.append(&mut build_batch(0, &records), None, 0).unwrap();
    append_one(&mut log, &[("k", Some("2"), 1_000)], 0);
    append_one(&mut log, &[("k", Some("3"), 2_000)], 0);
    let stats = log.compact(10_000, &all_cleanable()).unwrap();
    // The active segment's record does not count: "k" = "2" is the latest cleanable one.
    assert_eq!((stats.keyless_records, stats.records_removed), (1, 1));
    assert_eq!(
        read_rows(&log),
        vec![
            (0, None, Some(b"x".to_vec())),
            row(2, "k", Some("2")),
            row(3, "k", Some("3"))
        ]
    );
}

#[test]
fn recovery_without_a_swap_end_marker_refuses_to_guess() {
    let temp = TempDir::new().unwrap();
    let mut log = crash_test_log(temp.path());
    let err = compact(&mut log, 2_200, &all_cleanable(), &mut CrashPoint::after(4));
    assert!(err.is_err());
    drop(log);
    fs::remove_file(temp.path().join(segment_file_name(0, SWAP_END_SUFFIX))).unwrap();
    assert!(Log::open(temp.path(), config(1 << 20)).is_err());
}

#[test]
fn options_are_validated() {
    let temp = TempDir::new().unwrap();
    let mut log = open(temp.path(), 1 << 20);
    for bad in [
        CompactionOptions {
            min_cleanable_dirty_ratio: 1.5,
            ..CompactionOptions::default()
        },
        CompactionOptions {
            delete_retention_ms: -1,
            ..CompactionOptions::default()
        },
        CompactionOptions {
            offset_map_keys_max: 0,
            ..CompactionOptions::default()
        },
    ] {
        assert!(matches!(log.compact(0, &bad), Err(Error::InvalidConfig(_))));
    }
}

/// A batch of `records` compressed with `codec`, valid (CRC included).
fn compressed(codec: Codec, records: &[(&str, Option<&str>, i64)]) -> Vec<u8> {
    let records: Vec<TestRecord> = records
        .iter()
        .map(|(k, v, ts)| TestRecord::new(Some(k.as_bytes()), v.map(str::as_bytes), *ts))
        .collect();
    codec::compressed_batch(&build_batch(0, &records), codec).unwrap()
}

#[test]
fn gzip_and_zstd_batches_are_filtered_and_recompressed_with_their_codec() {
    let temp = TempDir::new().unwrap();
    let mut log = open(temp.path(), 1 << 20);
    let gzip = compressed(
        Codec::Gzip,
        &[
            ("a", Some("1"), 0),
            ("b", Some("1"), 0),
            ("d", Some("1"), 0),
        ],
    ); // 0-2
    let zstd = compressed(
        Codec::Zstd,
        &[
            ("a", Some("2"), 1_000),
            ("c", Some("1"), 1_000),
            ("c", Some("2"), 1_000),
        ],
    ); // 3-5, unchanged by the cleaner but for "c" = "1"
    for mut batch in [gzip, zstd] {
        log.append(&mut batch, None, 0).unwrap();
    }
    append_one(&mut log, &[("b", None, 2_000)], 0); // 6
    append_one(&mut log, &[("z", Some("1"), 3_000)], 0); // 7, active
    assert_eq!(log.segment_count(), 4);

    let stats = log.compact(100_000, &all_cleanable()).unwrap();
    assert_eq!(stats.compressed_batches_rewritten, 2);
    assert_eq!(stats.compressed_batches_skipped, 0);
    // "a" = "1", "b" = "1", "c" = "1", and the expired tombstone of "b": no unreadable batch
    // precedes it, so it goes too.
    assert_eq!((stats.records_removed, stats.tombstones_removed), (4, 1));
    assert_eq!(
        read_rows(&log),
        vec![
            row(2, "d", Some("1")),
            row(3, "a", Some("2")),
            row(5, "c", Some("2")),
            row(7, "z", Some("1")),
        ]
    );
    // Each rewritten batch keeps its codec, its offsets and a valid CRC.
    for (offset, codec, base, last) in [(2, 1, 0, 2), (3, 4, 3, 5)] {
        let read = log.read(offset, 1).unwrap();
        let (_, header) = RecordBatches::new(&read.records).next().unwrap().unwrap();
        assert_eq!(
            (
                header.compression(),
                header.base_offset,
                header.last_offset()
            ),
            (codec, base, last)
        );
    }
    // And the log reopens (every batch is validated again on recovery).
    drop(log);
    let log = Log::open_with_recovery_point(temp.path(), config(1 << 20), 0).unwrap();
    assert_eq!(read_rows(&log).len(), 4);
}

#[test]
fn undecodable_gzip_batches_are_copied_untouched() {
    let temp = TempDir::new().unwrap();
    let mut log = open(temp.path(), 1 << 20);
    // Plain records under the gzip bit: not gzip data.
    append_one(&mut log, &[("a", Some("1"), 0), ("a", Some("2"), 0)], 1);
    append_one(&mut log, &[("a", Some("3"), 1_000)], 0);
    append_one(&mut log, &[("z", Some("1"), 2_000)], 0); // active
    let before = log.read(0, 1).unwrap().records;
    let stats = log.compact(100_000, &all_cleanable()).unwrap();
    assert_eq!(
        (stats.compressed_batches_skipped, stats.records_removed),
        (1, 0)
    );
    assert_eq!(log.read(0, 1).unwrap().records, before);
}
