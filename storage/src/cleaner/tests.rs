use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use skald_protocol::batch::testing::{build_batch, build_batch_with, BatchOptions, TestRecord};
use skald_protocol::batch::{record_views, RecordBatches, RECORD_BATCH_HEADER_BYTES};
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
    append_all_with(log, inputs, batch_sizes, None)
}

/// [`append_all`] with every batch compressed by `codec`, if given.
fn append_all_with(
    log: &mut Log,
    inputs: &[Input],
    batch_sizes: &[usize],
    codec: Option<Codec>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut rest = inputs;
    let mut sizes = batch_sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        let (now, later) = rest.split_at(n);
        let records: Vec<TestRecord> = now.iter().copied().map(record).collect();
        let mut batch = build_batch(0, &records);
        if let Some(codec) = codec {
            batch = codec::compressed_batch(&batch, codec).unwrap();
        }
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
            match Codec::from_id(header.compression())
                .map(|codec| codec::decompressed_batch(&bytes, codec))
            {
                Some(Ok(plain)) => bytes = plain,
                // The tests' undecodable batches hold plain records under the codec bits.
                Some(Err(_)) => bytes[22] &= !0x07,
                None => {}
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

/// The codec bits of every batch in the log.
fn batch_codecs(log: &Log) -> Vec<u8> {
    let mut codecs = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, usize::MAX).unwrap();
        if read.records.is_empty() {
            break;
        }
        for item in RecordBatches::new(&read.records) {
            codecs.push(item.unwrap().1.compression());
        }
        offset = read.next_offset;
    }
    codecs
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
/// undecodable batches and an offset map holding every dirty key.
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

fn arb_codec() -> impl Strategy<Value = Option<Codec>> {
    proptest::option::of(prop_oneof![
        Just(Codec::Gzip),
        Just(Codec::Snappy),
        Just(Codec::Lz4),
        Just(Codec::Zstd),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every codec compacts exactly like uncompressed batches, and keeps its codec.
    #[test]
    fn compaction_keeps_the_latest_record_of_each_key_at_its_offset(
        inputs in arb_inputs(),
        batch_sizes in proptest::collection::vec(1usize..5, 1..6),
        small_segments in any::<bool>(),
        now_ms in 0i64..3_000,
        delete_retention_ms in 0i64..1_500,
        codec in arb_codec(),
    ) {
        let temp = TempDir::new().unwrap();
        let segment_bytes = if small_segments { 400 } else { 1 << 20 };
        let mut log = open(temp.path(), segment_bytes);
        let written = append_all_with(&mut log, &inputs, &batch_sizes, codec);
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
        prop_assert_eq!(stats.compressed_batches_skipped, 0);
        prop_assert_eq!(read_rows(&log), want.clone());
        let codec_id = codec.map_or(0, |c| c.id());
        prop_assert!(batch_codecs(&log).iter().all(|&c| c == codec_id));
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
            let value = (!(state >> 20).is_multiple_of(5)).then_some((state >> 40) as u8);
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
        1,
    ); // 2-3, "gzip" holding plain records: it does not decompress
    append_one(&mut log, &[("b", None, 2_000), ("a", Some("1"), 2_000)], 0); // 4-5
    append_one(&mut log, &[("a", Some("2"), 3_000)], 0); // 6, active
    let stats = log.compact(100_000, &all_cleanable()).unwrap();
    assert_eq!(stats.compressed_batches_skipped, 1);
    // The tombstone of "c" (before any compressed batch) goes; that of "b" stays, since the
    // undecodable batch before it holds values of "b" the cleaner cannot see; both values of "b"
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

#[test]
fn snappy_and_lz4_batches_are_filtered_and_recompressed_with_their_codec() {
    let temp = TempDir::new().unwrap();
    let mut log = open(temp.path(), 1 << 20);
    // librdkafka's form of snappy (one raw block), then snappy-java's, then lz4.
    let plain = build_batch(
        0,
        &[
            TestRecord::new(Some(b"a"), Some(b"1"), 0),
            TestRecord::new(Some(b"b"), Some(b"1"), 0),
            TestRecord::new(Some(b"d"), Some(b"1"), 0),
        ],
    );
    let raw_snappy = snap::raw::Encoder::new()
        .compress_vec(&plain[RECORD_BATCH_HEADER_BYTES..])
        .unwrap();
    let mut batch = with_records_section(
        codec::compressed_batch(&plain, Codec::Snappy).unwrap(),
        &raw_snappy,
    ); // 0-2
    log.append(&mut batch, None, 0).unwrap();
    let mut xerial = compressed(
        Codec::Snappy,
        &[
            ("a", Some("2"), 1_000),
            ("c", Some("1"), 1_000),
            ("c", Some("2"), 1_000),
        ],
    ); // 3-5
    log.append(&mut xerial, None, 0).unwrap();
    let mut lz4 = compressed(
        Codec::Lz4,
        &[
            ("e", Some("1"), 2_000),
            ("a", Some("3"), 2_000),
            ("e", Some("2"), 2_000),
        ],
    ); // 6-8
    log.append(&mut lz4, None, 0).unwrap();
    append_one(&mut log, &[("b", None, 3_000)], 0); // 9
    append_one(&mut log, &[("z", Some("1"), 4_000)], 0); // 10, active
    assert_eq!(log.segment_count(), 5);

    let stats = log.compact(100_000, &all_cleanable()).unwrap();
    assert_eq!(stats.compressed_batches_rewritten, 3);
    assert_eq!(stats.compressed_batches_skipped, 0);
    assert_eq!((stats.records_removed, stats.tombstones_removed), (6, 1));
    assert_eq!(
        read_rows(&log),
        vec![
            row(2, "d", Some("1")),
            row(5, "c", Some("2")),
            row(7, "a", Some("3")),
            row(8, "e", Some("2")),
            row(10, "z", Some("1")),
        ]
    );
    // Each rewritten batch keeps its codec and offsets; snappy is written in snappy-java's
    // framing (even where the producer wrote raw snappy), lz4 as Kafka's frame.
    for (offset, codec, base, last, prefix) in [
        (
            2,
            2,
            0,
            2,
            &b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01"[..],
        ),
        (
            5,
            2,
            3,
            5,
            &b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01"[..],
        ),
        (8, 3, 6, 8, &b"\x04\x22\x4d\x18\x60\x40\x82"[..]),
    ] {
        let read = log.read(offset, 1).unwrap();
        let (position, header) = RecordBatches::new(&read.records).next().unwrap().unwrap();
        assert_eq!(
            (
                header.compression(),
                header.base_offset,
                header.last_offset()
            ),
            (codec, base, last)
        );
        let records = &read.records[position + RECORD_BATCH_HEADER_BYTES..];
        assert!(records.starts_with(prefix), "batch at {base}");
    }
    drop(log);
    let log = Log::open_with_recovery_point(temp.path(), config(1 << 20), 0).unwrap();
    assert_eq!(read_rows(&log).len(), 5);
}

/// `batch` with its records section replaced by `section` (length and CRC fixed, so the log
/// accepts it).
fn with_records_section(mut batch: Vec<u8>, section: &[u8]) -> Vec<u8> {
    batch.truncate(RECORD_BATCH_HEADER_BYTES);
    batch.extend_from_slice(section);
    let length = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

#[test]
fn bombs_and_unparsable_records_are_copied_untouched() {
    let temp = TempDir::new().unwrap();
    let mut log = open(temp.path(), 1 << 20);
    let template = compressed(Codec::Snappy, &[("a", Some("1"), 0), ("a", Some("2"), 0)]);
    // Raw snappy claiming 300 MiB: refused before anything is allocated.
    let mut bomb = with_records_section(template.clone(), &snappy_claim(300 << 20)); // 0-1
                                                                                     // Valid snappy-java data of bytes that are not records.
    let garbage = Codec::Snappy.compress(&[0xff; 40]).unwrap();
    let mut unparsable = with_records_section(template, &garbage); // 2-3
    for batch in [&mut bomb, &mut unparsable] {
        log.append(batch, None, 0).unwrap();
    }
    append_one(&mut log, &[("a", Some("3"), 1_000)], 0); // 4
    append_one(&mut log, &[("z", Some("1"), 2_000)], 0); // 5, active
    let before = log.read(0, usize::MAX).unwrap().records;
    let before = before[..bomb.len() + unparsable.len()].to_vec();

    let stats = log.compact(100_000, &all_cleanable()).unwrap();
    assert!(stats.cleaned);
    assert_eq!(
        (stats.compressed_batches_skipped, stats.records_removed),
        (2, 0)
    );
    let after = log.read(0, usize::MAX).unwrap().records;
    assert_eq!(&after[..before.len()], &before[..]);
}

/// A raw snappy block whose header claims `length` bytes, followed by a little junk.
fn snappy_claim(mut length: u64) -> Vec<u8> {
    let mut claim = Vec::new();
    while length >= 0x80 {
        claim.push(length as u8 | 0x80);
        length >>= 7;
    }
    claim.push(length as u8);
    claim.extend_from_slice(&[0; 8]);
    claim
}

const ALL_CODECS: [Codec; 4] = [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd];

/// Deterministic bytes: runs of repeated text mixed with noise, `len` long.
fn sample(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if (i / 300) % 3 == 0 {
                (state >> 56) as u8
            } else {
                b"key-value-record "[i % 17]
            }
        })
        .collect()
}

#[test]
fn every_codec_round_trips() {
    for codec in ALL_CODECS {
        // Empty, one block, and several blocks of snappy-java (32 KiB) and lz4 (64 KiB).
        for len in [0, 1, 100, 32 * 1024, 32 * 1024 + 1, 200_000] {
            let data = sample(len);
            let compressed = codec.compress(&data).unwrap();
            assert_eq!(
                codec.decompress(&compressed).unwrap(),
                data,
                "{codec:?} {len}"
            );
        }
    }
}

#[test]
fn lz4_is_kafkas_frame_format() {
    let data = sample(150_000);
    let frame = Codec::Lz4.compress(&data).unwrap();
    // Magic, FLG (version 1, independent blocks, no checksums or content size), BD (64 KiB
    // blocks), and the header checksum computed correctly (magic 2 has no legacy HC bug).
    assert_eq!(frame[..7], [0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x82]);
    assert_eq!(frame[frame.len() - 4..], [0, 0, 0, 0], "end mark");
    // Three blocks (64 + 64 + 18 KiB), each a little-endian length (high bit: stored raw).
    let mut rest = &frame[7..frame.len() - 4];
    let mut blocks = 0;
    while !rest.is_empty() {
        let length = u32::from_le_bytes(rest[..4].try_into().unwrap()) & 0x7fff_ffff;
        rest = &rest[4 + length as usize..];
        blocks += 1;
    }
    assert_eq!(blocks, 3);
}

#[test]
fn snappy_is_written_in_snappy_java_framing() {
    let data = sample(100_000);
    let framed = Codec::Snappy.compress(&data).unwrap();
    assert_eq!(
        framed[..16],
        *b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01"
    );
    // Big-endian length-prefixed raw snappy blocks of 32 KiB of input each.
    let mut rest = &framed[16..];
    let mut chunks = data.chunks(32 * 1024);
    while !rest.is_empty() {
        let length = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let block = snap::raw::Decoder::new()
            .decompress_vec(&rest[4..4 + length])
            .unwrap();
        assert_eq!(block, chunks.next().unwrap());
        rest = &rest[4 + length..];
    }
    assert_eq!(chunks.next(), None);
}

#[test]
fn snappy_reads_raw_framed_and_concatenated_streams() {
    let data = sample(80_000);
    let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
    assert_eq!(Codec::Snappy.decompress(&raw).unwrap(), data);
    let framed = Codec::Snappy.compress(&data).unwrap();
    assert_eq!(Codec::Snappy.decompress(&framed).unwrap(), data);
    // Blocks of any size, and a second stream header mid-way (snappy-java reads both).
    let mut uneven = framed[..16].to_vec();
    for (i, part) in [&data[..10], &data[10..50_010], &data[50_010..]]
        .into_iter()
        .enumerate()
    {
        if i == 2 {
            uneven.extend_from_slice(&framed[..16]);
        }
        let block = snap::raw::Encoder::new().compress_vec(part).unwrap();
        uneven.extend_from_slice(&(block.len() as u32).to_be_bytes());
        uneven.extend_from_slice(&block);
    }
    assert_eq!(Codec::Snappy.decompress(&uneven).unwrap(), data);
}

#[test]
fn corrupt_input_is_an_error() {
    let data = sample(5_000);
    for codec in ALL_CODECS {
        assert!(
            codec.decompress(b"\x05 this is not compressed").is_err(),
            "{codec:?}"
        );
        // No strict prefix decompresses to the whole, except that lz4_flex takes the end of the
        // data for a frame's end mark (harmless: every block is still checked whole).
        let compressed = codec.compress(&data).unwrap();
        let whole_from = match codec {
            Codec::Lz4 => compressed.len() - 4,
            _ => compressed.len(),
        };
        for len in 0..whole_from {
            let result = codec.decompress(&compressed[..len]);
            assert!(
                result.as_ref().map_or(true, |out| *out != data),
                "{codec:?} prefix {len} decompressed whole"
            );
        }
        let cut = codec.decompress(&compressed[..compressed.len() / 2]);
        assert!(cut.is_err(), "{codec:?} cut in half");
    }
    // snappy-java framing whose block length runs past the data.
    let mut framed = Codec::Snappy.compress(&data).unwrap();
    framed[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(Codec::Snappy.decompress(&framed).is_err());
}

#[test]
fn decompression_is_capped_for_every_codec() {
    let mut data = vec![0; 10_000];
    data.push(b'x');
    for codec in ALL_CODECS {
        let compressed = codec.compress(&data).unwrap();
        let err = codec.decompress_capped(&compressed, 10_000).unwrap_err();
        assert!(
            err.to_string().contains("more than 10000 bytes"),
            "{codec:?}: {err}"
        );
        assert_eq!(codec.decompress_capped(&compressed, 10_001).unwrap(), data);
    }
    // Snappy's claimed lengths are checked against the real cap before allocating: a raw block
    // claiming 1 GiB, and a framed stream whose second block would pass the cap.
    let err = Codec::Snappy
        .decompress(&snappy_claim(1 << 30))
        .unwrap_err();
    assert!(err.to_string().contains("more than"), "{err}");
    let mut framed = Codec::Snappy.compress(b"x").unwrap();
    let claim = snappy_claim(codec::DECOMPRESSED_BYTES_MAX as u64);
    framed.extend_from_slice(&(claim.len() as u32).to_be_bytes());
    framed.extend_from_slice(&claim);
    let err = Codec::Snappy.decompress(&framed).unwrap_err();
    assert!(err.to_string().contains("more than"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes, or valid data with bytes changed, never panic any decoder.
    #[test]
    fn decoders_never_panic(
        garbage in proptest::collection::vec(any::<u8>(), 0..300),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        len in 0usize..3_000,
    ) {
        for codec in ALL_CODECS {
            let _ = codec.decompress(&garbage);
            let mut compressed = codec.compress(&sample(len)).unwrap();
            for (index, byte) in &flips {
                let i = index.index(compressed.len());
                compressed[i] ^= byte | 1;
            }
            let _ = codec.decompress(&compressed);
        }
    }
}

/// A transactional batch of one record `key-k = value-v` from `producer_id`.
fn transactional_record(producer_id: i64, key: u8, value: u8, timestamp: i64) -> Vec<u8> {
    build_batch_with(
        &BatchOptions {
            producer_id,
            producer_epoch: 0,
            base_sequence: 0,
            attributes: skald_protocol::batch::TRANSACTIONAL_FLAG_MASK,
            ..BatchOptions::default()
        },
        &[record((Some(key), Some(value), timestamp))],
    )
}

#[test]
fn aborted_records_never_shadow_and_open_transactions_are_not_cleaned() {
    let dir = TempDir::new().unwrap();
    let mut log = open(dir.path(), 1 << 20);
    // 0: key-1 = value-1 (plain); 1: key-1 = value-2 in producer 7's transaction, aborted at 2
    // (the marker carries the log clock's time, 1,000,000); 3: key-2 = value-3 (plain); 4:
    // key-2 = value-4 in producer 8's transaction, still open; 5: key-2 = value-5 (plain); 6:
    // key-9. Timestamps 200 ms apart, segment.ms 100: every batch its own segment.
    append_all(&mut log, &[(Some(1), Some(1), 999_600)], &[1]);
    log.append(&mut transactional_record(7, 1, 2, 999_800), None, 0)
        .unwrap();
    log.append_txn_marker(7, 0, false, 0, 0).unwrap();
    append_all(&mut log, &[(Some(2), Some(3), 1_000_200)], &[1]);
    log.append(&mut transactional_record(8, 2, 4, 1_000_400), None, 0)
        .unwrap();
    append_all(&mut log, &[(Some(2), Some(5), 1_000_600)], &[1]);
    append_all(&mut log, &[(Some(9), Some(9), 1_000_800)], &[1]);
    assert_eq!(log.first_unstable_offset(), Some(4));
    assert_eq!(
        log.segment_base_offsets(),
        vec![0, 1, 2, 3, 4, 5, 6],
        "one batch a segment"
    );
    let before = read_rows(&log);
    let stats = log.compact(2_000_000, &all_cleanable()).unwrap();
    assert!(stats.cleaned);
    // Cleaning stopped at the segment holding the open transaction (offset 4).
    assert_eq!(stats.clean_end_offset, 4);
    // value-1 stays: the only later record of key-1 was aborted. The aborted record goes; its
    // marker stays this pass (its transaction's batch was still there when it began). Nothing
    // else had a later committed record below the open transaction.
    let without_aborted: Vec<Row> = before.iter().filter(|row| row.0 != 1).cloned().collect();
    assert_eq!(read_rows(&log), without_aborted);
    assert_eq!(
        (
            stats.records_removed,
            stats.aborted_records_removed,
            stats.markers_removed
        ),
        (1, 1, 0)
    );

    // Producer 8 commits (its marker at 7); a later record rolls the log.
    log.append_txn_marker(8, 0, true, 0, 0).unwrap();
    append_all(&mut log, &[(Some(9), Some(10), 1_001_000)], &[1]);
    let stats = log.compact(2_000_000, &all_cleanable()).unwrap();
    assert!(stats.cleaned);
    // Both markers stay: the batches of their transactions (at 1 and 4, each its producer's
    // last, kept empty) were there when the pass began. key-2's older values go (key-9's newer
    // value at 8 is in the active segment, which is never cleaned, so 6 stays).
    assert_eq!(stats.markers_removed, 0);
    let offsets: Vec<i64> = read_rows(&log).iter().map(|row| row.0).collect();
    assert_eq!(offsets, vec![0, 2, 5, 6, 7, 8]);
    assert_eq!(log.first_unstable_offset(), None);

    // Producer 7 commits a later transaction (9, marker at 10): its aborted batch at 1 is no
    // longer its last and goes; a pass later, nothing of that transaction is left and its
    // ABORT marker goes too.
    let mut later = build_batch_with(
        &BatchOptions {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: 1,
            attributes: skald_protocol::batch::TRANSACTIONAL_FLAG_MASK,
            ..BatchOptions::default()
        },
        &[record((Some(3), Some(11), 1_001_200))],
    );
    log.append(&mut later, None, 0).unwrap();
    log.append_txn_marker(7, 0, true, 0, 0).unwrap();
    append_all(&mut log, &[(Some(9), Some(12), 1_001_400)], &[1]);
    let stats = log.compact(2_000_000, &all_cleanable()).unwrap();
    assert_eq!(stats.markers_removed, 0, "its batch at 1 was still there");
    append_all(&mut log, &[(Some(9), Some(13), 1_001_600)], &[1]);
    let stats = log.compact(2_000_000, &all_cleanable()).unwrap();
    assert_eq!(stats.markers_removed, 1, "the ABORT marker at 2");
    let batches: Vec<i64> = batch_headers(&log).iter().map(|b| b.0).collect();
    assert!(
        !batches.contains(&1) && !batches.contains(&2),
        "the aborted transaction is gone: {batches:?}"
    );
    // And so is its index entry: a read_committed reader told of it would skip producer 7's
    // committed batch at 9 waiting for a marker that no longer exists.
    assert_eq!(
        log.collect_aborted_txns(0, log.log_end_offset()),
        Vec::new(),
        "no aborted transaction left to report"
    );
    assert_eq!(log.first_unstable_offset(), None);
}

/// Every batch of the log: (base offset, records count, producer id, base sequence).
fn batch_headers(log: &Log) -> Vec<(i64, i32, i64, i32)> {
    let mut headers = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, usize::MAX).unwrap();
        if read.records.is_empty() {
            break;
        }
        for item in RecordBatches::new(&read.records) {
            let (_, header) = item.unwrap();
            headers.push((
                header.base_offset,
                header.records_count,
                header.producer_id,
                header.base_sequence,
            ));
        }
        offset = read.next_offset;
    }
    headers
}

/// A producer's last batch stays, emptied of the records compaction removes, so a producer
/// state rebuilt from the log alone (no snapshot) still knows its last sequence — and a retry of
/// that batch is still a duplicate, not appended again.
#[test]
fn a_producers_last_batch_stays_empty_so_its_sequence_survives_a_rebuild() {
    let dir = TempDir::new().unwrap();
    let mut log = open(dir.path(), 1 << 20);
    // 0: producer 7 (idempotent) writes key-1 = value-1 at sequence 0; 1: a plain later key-1;
    // 2: key-9 (the active segment). Timestamps 200 ms apart: a segment each.
    let mut idempotent = build_batch_with(
        &BatchOptions {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: 0,
            ..BatchOptions::default()
        },
        &[record((Some(1), Some(1), 999_600))],
    );
    log.append(&mut idempotent.clone(), None, 0).unwrap();
    append_all(&mut log, &[(Some(1), Some(2), 999_800)], &[1]);
    append_all(&mut log, &[(Some(9), Some(9), 1_000_000)], &[1]);
    let stats = log.compact(2_000_000, &all_cleanable()).unwrap();
    assert_eq!(stats.records_removed, 1);
    assert_eq!(
        batch_headers(&log),
        vec![(0, 0, 7, 0), (1, 1, -1, -1), (2, 1, -1, -1)],
        "producer 7's batch is kept, with no records"
    );
    assert_eq!(
        read_rows(&log).iter().map(|row| row.0).collect::<Vec<_>>(),
        vec![1, 2]
    );
    // Rebuilt from the log alone: the producer is still known at sequence 0.
    drop(log);
    for offset in crate::producer_state::list_snapshots(dir.path()).unwrap() {
        crate::producer_state::delete_snapshot(dir.path(), offset).unwrap();
    }
    let mut log = open(dir.path(), 1 << 20);
    assert_eq!(log.producer_state().entry(7).map(|e| e.last_seq()), Some(0));
    // The emptied batch kept its max timestamp, what the producer's expiry is judged by.
    assert_eq!(
        log.producer_state().entry(7).map(|e| e.last_timestamp),
        Some(999_600)
    );
    let retried = log.append(&mut idempotent, None, 0).unwrap();
    assert!(retried.duplicate, "the retry is recognised");
    assert_eq!(retried.first_offset, 0);
}
