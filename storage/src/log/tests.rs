use std::fs;

use proptest::prelude::*;
use skald_protocol::batch::testing::{build_batch, simple_batch, TestRecord};
use skald_protocol::batch::{validate_batch, BatchError, RecordBatchHeader};
use tempfile::TempDir;

use super::*;
use crate::clock::ManualClock;
use crate::dir::partition_dir_name;
use crate::segment::segment_file_name;

/// One batch as stored: the buffer `append` patched in place is exactly what is on disk.
#[derive(Debug, Clone)]
struct Written {
    base: i64,
    last: i64,
    bytes: Vec<u8>,
}

fn config(segment_bytes: u64, index_interval_bytes: u32) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes,
        segment_index_bytes: 4096,
        ..LogConfig::default()
    }
}

fn append(log: &mut Log, mut batch: Vec<u8>) -> Written {
    let info = log.append(&mut batch, None, 7).unwrap();
    Written {
        base: info.first_offset,
        last: info.last_offset,
        bytes: batch,
    }
}

/// `count` batches of `records` records each with 50-byte values (all the same size).
fn append_uniform(log: &mut Log, count: usize, records: usize) -> Vec<Written> {
    (0..count)
        .map(|i| append(log, simple_batch(0, records, 1_000 * i as i64, 50)))
        .collect()
}

fn concat(batches: &[Written]) -> Vec<u8> {
    batches
        .iter()
        .flat_map(|w| w.bytes.iter().copied())
        .collect()
}

/// Everything in the log, read segment by segment.
fn read_all(log: &Log) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, usize::MAX).unwrap();
        assert!(!read.records.is_empty());
        out.extend_from_slice(&read.records);
        offset = read.next_offset;
    }
    out
}

fn headers(bytes: &[u8]) -> Vec<RecordBatchHeader> {
    RecordBatches::new(bytes).map(|r| r.unwrap().1).collect()
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn append_assigns_offsets_and_patches_the_header() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    let mut first = simple_batch(999, 3, 5_000, 10);
    let info = log.append(&mut first, None, 4).unwrap();
    assert_eq!(
        info,
        AppendInfo {
            first_offset: 0,
            last_offset: 2,
            max_timestamp: 5_002,
            log_append_time_ms: -1,
            bytes: first.len(),
            records_count: 3,
            duplicate: false,
        }
    );
    let header = validate_batch(&first).unwrap();
    assert_eq!((header.base_offset, header.partition_leader_epoch), (0, 4));

    // Two batches in one call, stamped with LogAppendTime.
    let mut two = [simple_batch(0, 2, 10, 10), simple_batch(0, 1, 20, 10)].concat();
    let info = log.append(&mut two, Some(77_000), 5).unwrap();
    assert_eq!((info.first_offset, info.last_offset), (3, 5));
    assert_eq!(
        (info.max_timestamp, info.log_append_time_ms),
        (77_000, 77_000)
    );
    assert_eq!(info.records_count, 3);
    let stored = headers(&two);
    assert_eq!(
        stored.iter().map(|h| h.base_offset).collect::<Vec<_>>(),
        vec![3, 5]
    );
    assert!(stored.iter().all(|h| h.timestamp_type_is_log_append_time()
        && h.max_timestamp == 77_000
        && h.partition_leader_epoch == 5));
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(log.size_bytes(), (first.len() + two.len()) as u64);
    assert_eq!(read_all(&log), [first, two].concat());
}

#[test]
fn a_client_append_stores_the_patched_batch_and_leaves_the_request_bytes_alone() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.append(&mut simple_batch(0, 2, 1_000, 10), None, 3)
        .unwrap();
    // Two batches in one call, as received: neither is changed by the append.
    let received = [simple_batch(42, 2, 10, 10), simple_batch(42, 1, 20, 10)].concat();
    let sent = received.clone();
    let info = log
        .append_client(&received, None, 4, TxnVerification::Off)
        .unwrap();
    assert_eq!(received, sent);
    assert_eq!((info.first_offset, info.last_offset), (2, 4));
    // What the log holds is the old in-place patch of a copy, byte for byte.
    let mut expected = sent.clone();
    let second = RecordBatchHeader::parse(&sent).unwrap().total_size();
    for (position, base_offset) in [(0, 2), (second, 4)] {
        batch::set_base_offset(&mut expected[position..], base_offset).unwrap();
        batch::set_partition_leader_epoch(&mut expected[position..], 4).unwrap();
    }
    let read = log.read(2, usize::MAX).unwrap();
    assert_eq!(&read.records[..], &expected[..]);

    // LogAppendTime changes the CRC-covered fields: the stored CRC is right, the request's
    // bytes still as sent.
    let info = log
        .append_client(&received, Some(99_000), 5, TxnVerification::Off)
        .unwrap();
    assert_eq!(received, sent);
    assert_eq!(info.log_append_time_ms, 99_000);
    let mut expected = sent.clone();
    for (position, base_offset) in [(0, 5), (second, 7)] {
        batch::set_base_offset(&mut expected[position..], base_offset).unwrap();
        batch::set_partition_leader_epoch(&mut expected[position..], 5).unwrap();
        batch::set_log_append_time(&mut expected[position..], 99_000).unwrap();
    }
    let read = log.read(5, usize::MAX).unwrap();
    assert_eq!(&read.records[..], &expected[..]);
    assert!(headers(&read.records)
        .iter()
        .all(|h| h.timestamp_type_is_log_append_time() && h.max_timestamp == 99_000));

    // And it all reads back the same after a reopen (recovery checks every CRC).
    let end = log.log_end_offset();
    drop(log);
    let log = Log::open_with_recovery_point(dir.path(), LogConfig::default(), 0).unwrap();
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(&log.read(5, usize::MAX).unwrap().records[..], &expected[..]);
}

#[test]
fn invalid_appends_write_nothing() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
    append(&mut log, simple_batch(0, 2, 0, 10));
    let size = log.size_bytes();

    assert!(matches!(
        log.append(&mut [], None, 0),
        Err(Error::EmptyAppend)
    ));
    let mut garbage = vec![0xAB; 100];
    assert!(matches!(
        log.append(&mut garbage, None, 0),
        Err(Error::CorruptBatch(BatchError::UnsupportedMagic(_)))
    ));
    let mut second_bad = [simple_batch(0, 1, 0, 10), simple_batch(0, 1, 0, 10)].concat();
    let last = second_bad.len() - 1;
    second_bad[last] ^= 1;
    assert!(matches!(
        log.append(&mut second_bad, None, 0),
        Err(Error::CorruptBatch(BatchError::CrcMismatch { .. }))
    ));
    let mut torn = simple_batch(0, 1, 0, 10);
    torn.pop();
    assert!(matches!(
        log.append(&mut torn, None, 0),
        Err(Error::CorruptBatch(BatchError::Truncated { .. }))
    ));
    assert_eq!((log.log_end_offset(), log.size_bytes()), (2, size));
}

#[test]
fn read_from_every_offset_returns_the_batch_containing_it() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), config(1 << 20, 100)).unwrap();
    let written: Vec<Written> = (0..20)
        .map(|i| append(&mut log, simple_batch(0, 1 + i % 4, i as i64, 50)))
        .collect();
    assert!(log.segments().next().unwrap().index_entries().0 > 5);
    let end = written.last().unwrap().last + 1;
    assert_eq!(log.log_end_offset(), end);
    for (i, w) in written.iter().enumerate() {
        for offset in w.base..=w.last {
            let one = log.read(offset, 1).unwrap();
            assert_eq!(one.records, w.bytes, "offset {offset}");
            assert_eq!(one.first_batch_offset, Some(w.base));
            assert_eq!(one.next_offset, w.last + 1);
            assert_eq!((one.log_start_offset, one.log_end_offset), (0, end));
            let rest = log.read(offset, usize::MAX).unwrap();
            assert_eq!(rest.records, concat(&written[i..]));
            assert_eq!(rest.next_offset, end);
        }
    }
    let at_end = log.read(end, 1000).unwrap();
    assert!(at_end.records.is_empty());
    assert_eq!((at_end.first_batch_offset, at_end.next_offset), (None, end));
}

#[test]
fn out_of_range_reads_are_errors() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
    append_uniform(&mut log, 2, 3);
    for offset in [-1, 7, i64::MAX, i64::MIN] {
        match log.read(offset, 100) {
            Err(Error::OffsetOutOfRange {
                offset: o,
                log_start_offset: 0,
                log_end_offset: 6,
            }) => assert_eq!(o, offset),
            other => panic!("offset {offset}: {other:?}"),
        }
    }
}

#[test]
fn max_bytes_limits_whole_batches_but_returns_at_least_one() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let written = append_uniform(&mut log, 4, 2);
    let big = append(&mut log, simple_batch(0, 3, 0, 10_000));
    let size = written[0].bytes.len();
    let read = |offset, max| log.read(offset, max).unwrap();
    assert_eq!(read(0, 0).records, written[0].bytes);
    assert_eq!(read(0, size).records, written[0].bytes);
    assert_eq!(read(0, 2 * size - 1).records, written[0].bytes);
    assert_eq!(read(0, 2 * size).records, concat(&written[..2]));
    assert_eq!(read(3, 3 * size).records, concat(&written[1..4]));
    assert_eq!(read(4, 3 * size + 1).records, concat(&written[2..4])); // big does not fit
    assert_eq!(read(9, 100).records, big.bytes); // oversized first batch, whole
    assert_eq!(read(8, 100).records, big.bytes);
}

#[test]
fn read_up_to_leaves_out_batches_ending_at_or_past_the_bound() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let written = append_uniform(&mut log, 3, 2); // offsets 0-1, 2-3, 4-5
    let read = |offset, bound| log.read_up_to(offset, usize::MAX, bound).unwrap();
    assert_eq!(read(0, 4).records, concat(&written[..2]));
    assert_eq!(read(0, 3).records, written[0].bytes);
    assert_eq!(read(0, 1).records, Bytes::new());
    assert_eq!(read(2, 2).records, Bytes::new());
    assert_eq!(read(1, 6).records, concat(&written));
}

#[test]
fn rolls_at_segment_bytes_with_kafka_file_names() {
    let dir = TempDir::new().unwrap();
    let size = simple_batch(0, 2, 0, 50).len() as u64;
    let mut log = Log::open(dir.path(), config(3 * size, 1)).unwrap();
    let written = append_uniform(&mut log, 10, 2);
    assert_eq!(log.segment_base_offsets(), vec![0, 6, 12, 18]);
    assert_eq!(log.segment_count(), 4);
    let mut expected: Vec<String> = [0, 6, 12, 18]
        .iter()
        .flat_map(|&b| ["index", "log", "timeindex"].map(|s| segment_file_name(b, s)))
        .collect();
    // Written once, by the first append: its epoch (7) starts at offset 0.
    expected.push(crate::LEADER_EPOCH_CHECKPOINT_FILE.to_string());
    expected.sort();
    assert_eq!(file_names(dir.path()), expected);
    assert_eq!(
        fs::read_to_string(dir.path().join(crate::LEADER_EPOCH_CHECKPOINT_FILE)).unwrap(),
        "0\n1\n7 0\n"
    );
    assert_eq!(
        fs::metadata(dir.path().join("00000000000000000006.log"))
            .unwrap()
            .len(),
        3 * size
    );
    // Sealed indexes are trimmed: batches 2 and 3 of each segment are indexed.
    assert_eq!(
        fs::metadata(dir.path().join("00000000000000000006.index"))
            .unwrap()
            .len(),
        16
    );
    for w in &written {
        for offset in w.base..=w.last {
            assert_eq!(log.read(offset, 1).unwrap().records, w.bytes);
        }
    }
    // One segment per read.
    assert_eq!(
        log.read(7, usize::MAX).unwrap().records,
        concat(&written[3..6])
    );
    assert_eq!(read_all(&log), concat(&written));
    assert_eq!(log.size_bytes(), 10 * size);
}

#[test]
fn a_batch_larger_than_a_segment_gets_its_own() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), config(100, 1)).unwrap();
    let a = append(&mut log, simple_batch(0, 1, 0, 500));
    let b = append(&mut log, simple_batch(0, 1, 0, 10_000)); // larger than the map reservation
    let c = append(&mut log, simple_batch(0, 1, 0, 5));
    assert_eq!(log.segment_base_offsets(), vec![0, 1, 2]);
    assert_eq!(read_all(&log), concat(&[a, b, c]));
}

#[test]
fn fetched_bytes_survive_appends_rolls_and_close() {
    let dir = TempDir::new().unwrap();
    let size = simple_batch(0, 2, 0, 50).len() as u64;
    let mut log = Log::open(dir.path(), config(3 * size, 1)).unwrap();
    let written = append_uniform(&mut log, 2, 2);
    let held = log.read(0, usize::MAX).unwrap().records;
    append_uniform(&mut log, 10, 2);
    assert_eq!(held, concat(&written));
    log.close().unwrap();
    assert_eq!(held, concat(&written));
}

#[test]
fn reopen_after_close_or_drop_keeps_everything() {
    let dir = TempDir::new().unwrap();
    let size = simple_batch(0, 2, 0, 50).len() as u64;
    let cfg = config(3 * size, 1);
    let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
    let mut written = append_uniform(&mut log, 8, 2);
    log.flush().unwrap();
    log.close().unwrap();

    let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
    assert_eq!(log.log_end_offset(), 16);
    assert_eq!(log.segment_base_offsets(), vec![0, 6, 12]);
    assert_eq!(read_all(&log), concat(&written));
    written.extend(append_uniform(&mut log, 3, 2));
    assert_eq!(written.last().unwrap().base, 20);
    drop(log);

    let log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(log.log_end_offset(), 22);
    assert_eq!(read_all(&log), concat(&written));
    for w in &written {
        assert_eq!(log.read(w.last, 1).unwrap().records, w.bytes);
    }
}

/// Writes 5 batches to a fresh log, closes it, lets `damage` edit the `.log`, reopens, and checks
/// the log holds exactly `expected_batches` of them and appends continue at their end.
fn check_recovery(damage: impl FnOnce(&Path), expected_batches: usize) {
    let dir = TempDir::new().unwrap();
    let cfg = config(1 << 20, 1);
    let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
    let written: Vec<Written> = (0..5)
        .map(|i| append(&mut log, simple_batch(0, 1 + i, 10 * i as i64, 20)))
        .collect();
    log.close().unwrap();
    damage(&dir.path().join("00000000000000000000.log"));

    let mut log = Log::open(dir.path(), cfg).unwrap();
    let kept = &written[..expected_batches];
    let end = kept.last().map_or(0, |w| w.last + 1);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.size_bytes(), concat(kept).len() as u64);
    assert_eq!(read_all(&log), concat(kept));
    for w in kept {
        assert_eq!(log.read(w.base, 1).unwrap().records, w.bytes);
    }
    let next = append(&mut log, simple_batch(0, 2, 0, 5));
    assert_eq!(next.base, end);
    assert_eq!(log.read(end, 1).unwrap().records, next.bytes);
}

#[test]
fn recovery_cuts_a_torn_last_batch_at_every_byte() {
    let sizes: Vec<usize> = (0..5)
        .map(|i| simple_batch(0, 1 + i, 0, 20).len())
        .collect();
    let last_start: usize = sizes[..4].iter().sum();
    for cut in last_start..last_start + sizes[4] {
        check_recovery(
            |path| {
                fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .unwrap()
                    .set_len(cut as u64)
                    .unwrap()
            },
            4,
        );
    }
    // Nothing torn: all five stay.
    check_recovery(|_| {}, 5);
}

#[test]
fn recovery_cuts_at_a_corrupt_byte() {
    let sizes: Vec<usize> = (0..5)
        .map(|i| simple_batch(0, 1 + i, 0, 20).len())
        .collect();
    let starts: Vec<usize> = sizes
        .iter()
        .scan(0, |acc, s| {
            let at = *acc;
            *acc += s;
            Some(at)
        })
        .collect();
    for (batch, (&start, &size)) in starts.iter().zip(&sizes).enumerate() {
        // Length, magic, CRC and everything the CRC covers (not base offset / leader epoch).
        for at in (start + 8..start + 12)
            .chain(start + 16..start + size)
            .step_by(3)
        {
            check_recovery(
                |path| {
                    let mut bytes = fs::read(path).unwrap();
                    bytes[at] ^= 0x10;
                    fs::write(path, bytes).unwrap();
                },
                batch,
            );
        }
    }
    // Trailing garbage, e.g. zeroes from a preallocating filesystem.
    check_recovery(
        |path| {
            let mut bytes = fs::read(path).unwrap();
            bytes.extend_from_slice(&[0; 100]);
            fs::write(path, bytes).unwrap();
        },
        5,
    );
}

#[test]
fn missing_or_corrupt_indexes_are_rebuilt_identically() {
    let size = simple_batch(0, 2, 0, 50).len() as u64;
    let cfg = config(4 * size, 1);
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 4] = [
        ("index", |p| fs::remove_file(p).unwrap()),
        ("timeindex", |p| fs::remove_file(p).unwrap()),
        ("index", |p| {
            // A plausible-looking entry pointing past the log.
            let mut bytes = fs::read(p).unwrap();
            bytes[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
            fs::write(p, bytes).unwrap();
        }),
        ("timeindex", |p| {
            let mut bytes = fs::read(p).unwrap();
            bytes.push(0);
            fs::write(p, bytes).unwrap();
        }),
    ];
    for (suffix, damage) in damages {
        let dir = TempDir::new().unwrap();
        let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
        let written: Vec<Written> = (0..10)
            .map(|i| append(&mut log, simple_batch(0, 2, 100 * i, 50)))
            .collect();
        log.close().unwrap();
        // Segment 8 is sealed (segment 16 is active).
        let path = dir.path().join(segment_file_name(8, suffix));
        let original = fs::read(&path).unwrap();
        assert!(!original.is_empty());
        damage(&path);

        // Segment 8 is checked, and its indexes rebuilt, when it is first read (as in Kafka).
        let log = Log::open(dir.path(), cfg.clone()).unwrap();
        assert_eq!(log.loaded_segment_count(), 1);
        assert_eq!(read_all(&log), concat(&written));
        assert_eq!(fs::read(&path).unwrap(), original, "{suffix}");
        for w in &written {
            assert_eq!(log.read(w.base + 1, 1).unwrap().records, w.bytes);
        }
        assert_eq!(log.offset_for_timestamp(450).unwrap(), Some((10, 500)));
    }
}

#[test]
fn active_segment_indexes_are_rebuilt_on_open() {
    let dir = TempDir::new().unwrap();
    let cfg = config(1 << 20, 1);
    let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
    let written = append_uniform(&mut log, 6, 2);
    let entries = log.segments().next().unwrap().index_entries();
    assert_eq!(entries, (5, 5));
    drop(log);
    fs::write(dir.path().join("00000000000000000000.index"), [0xFF; 13]).unwrap();
    fs::remove_file(dir.path().join("00000000000000000000.timeindex")).unwrap();
    let log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(log.segments().next().unwrap().index_entries(), entries);
    assert_eq!(read_all(&log), concat(&written));
}

fn records_at(timestamps: &[i64]) -> Vec<u8> {
    let records: Vec<TestRecord> = timestamps
        .iter()
        .map(|&ts| TestRecord::new(Some(b"k"), Some(b"value"), ts))
        .collect();
    build_batch(0, &records)
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let size = records_at(&[0, 0, 0]).len() as u64;
    for cfg in [
        config(1 << 20, 1),
        config(2 * size, 1),
        config(1 << 20, 1 << 20),
    ] {
        let dir = TempDir::new().unwrap();
        let mut log = Log::open(dir.path(), cfg).unwrap();
        assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
        append(&mut log, records_at(&[100, 101, 102])); // 0-2
        append(&mut log, records_at(&[90, 200, 150])); // 3-5
        append(&mut log, records_at(&[120, 130, 140])); // 6-8
        append(&mut log, records_at(&[300, 250, 400])); // 9-11
        let find = |ts| log.offset_for_timestamp(ts).unwrap();
        assert_eq!(find(i64::MIN), Some((0, 100)));
        assert_eq!(find(100), Some((0, 100)));
        assert_eq!(find(101), Some((1, 101)));
        assert_eq!(find(103), Some((4, 200)));
        assert_eq!(find(200), Some((4, 200)));
        assert_eq!(find(201), Some((9, 300)));
        assert_eq!(find(301), Some((11, 400)));
        assert_eq!(find(400), Some((11, 400)));
        assert_eq!(find(401), None);

        let mut stamped = records_at(&[1, 2]);
        log.append(&mut stamped, Some(1_000), 0).unwrap(); // 12-13
        let find = |ts| log.offset_for_timestamp(ts).unwrap();
        assert_eq!(find(401), Some((12, 1_000)));
        assert_eq!(find(1_000), Some((12, 1_000)));
        assert_eq!(find(1_001), None);
    }
}

#[test]
fn offset_of_max_timestamp_finds_the_first_record_with_the_largest_timestamp() {
    let size = records_at(&[0, 0, 0]).len() as u64;
    for cfg in [config(1 << 20, 1), config(2 * size, 1)] {
        let dir = TempDir::new().unwrap();
        let mut log = Log::open(dir.path(), cfg).unwrap();
        assert_eq!(log.offset_of_max_timestamp().unwrap(), None);
        append(&mut log, records_at(&[100, 400, 102])); // 0-2
        append(&mut log, records_at(&[90, 200, 150])); // 3-5
        append(&mut log, records_at(&[120, 400, 140])); // 6-8: a tie, later
        assert_eq!(log.offset_of_max_timestamp().unwrap(), Some((1, 400)));
        append(&mut log, records_at(&[300, 500, 500])); // 9-11
        assert_eq!(log.offset_of_max_timestamp().unwrap(), Some((10, 500)));
        // Records below the log start offset no longer count.
        log.delete_records_before(11).unwrap();
        assert_eq!(log.offset_of_max_timestamp().unwrap(), Some((11, 500)));
    }
}

#[test]
fn timestamp_lookups_find_the_exact_record_inside_compressed_batches() {
    use crate::cleaner::codec::{compressed_batch, Codec};
    for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
        let dir = TempDir::new().unwrap();
        let mut log = Log::open(dir.path(), config(1 << 20, 1)).unwrap();
        append(
            &mut log,
            compressed_batch(&records_at(&[100, 300, 200, 300]), codec).unwrap(),
        ); // 0-3
        append(
            &mut log,
            compressed_batch(&records_at(&[400, 500, 450]), codec).unwrap(),
        ); // 4-6
        let find = |ts| log.offset_for_timestamp(ts).unwrap();
        assert_eq!(find(150), Some((1, 300)), "{codec:?}");
        assert_eq!(find(301), Some((4, 400)), "{codec:?}");
        assert_eq!(find(460), Some((5, 500)), "{codec:?}");
        assert_eq!(find(501), None, "{codec:?}");
        assert_eq!(log.offset_of_max_timestamp().unwrap(), Some((5, 500)));
        // A lookup from inside a batch (the log start moved into it).
        log.delete_records_before(2).unwrap();
        let find = |ts| log.offset_for_timestamp(ts).unwrap();
        assert_eq!(find(0), Some((2, 200)), "{codec:?}");
        assert_eq!(find(250), Some((3, 300)), "{codec:?}");
    }
}

#[test]
fn partition_dir_names_round_trip() {
    assert_eq!(partition_dir_name("orders", 3), "orders-3");
    assert_eq!(
        crate::parse_partition_dir_name("my-topic-name-12"),
        Some(("my-topic-name".to_string(), 12))
    );
    // Topic names may end in '-' themselves.
    assert_eq!(
        crate::parse_partition_dir_name("orders--1"),
        Some(("orders-".to_string(), 1))
    );
    for bad in [
        "orders",
        "-1",
        "orders-",
        "orders-x",
        "orders-01",
        "orders-+1",
        "t-9999999999",
    ] {
        assert_eq!(crate::parse_partition_dir_name(bad), None, "{bad}");
    }
}

#[test]
fn scan_lists_partitions_and_finishes_deletes() {
    let root = TempDir::new().unwrap();
    let mut log = Log::open(&root.path().join("b-topic-1"), LogConfig::default()).unwrap();
    append_uniform(&mut log, 1, 1);
    Log::open(&root.path().join("a-0"), LogConfig::default()).unwrap();
    fs::create_dir(root.path().join("a-2.5f3e-delete")).unwrap();
    fs::create_dir(root.path().join("not a partition")).unwrap();
    fs::write(root.path().join("meta.properties"), "x").unwrap();
    let found = crate::scan_log_dir(root.path()).unwrap();
    assert_eq!(
        found,
        vec![
            ("a".to_string(), 0, root.path().join("a-0")),
            ("b-topic".to_string(), 1, root.path().join("b-topic-1")),
        ]
    );
    assert!(!root.path().join("a-2.5f3e-delete").exists());

    let held = log.read(0, 100).unwrap().records;
    log.delete().unwrap();
    assert_eq!(
        file_names(root.path()),
        vec!["a-0", "meta.properties", "not a partition"]
    );
    assert_eq!(validate_batch(&held).unwrap().base_offset, 0);
}

#[test]
fn open_cleans_leftovers() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let written = append_uniform(&mut log, 2, 2);
    log.close().unwrap();
    fs::write(dir.path().join(segment_file_name(50, "index")), [0; 8]).unwrap();
    fs::write(dir.path().join("00000000000000000000.log.deleted"), b"x").unwrap();
    fs::write(dir.path().join("leader-epoch-checkpoint"), b"0\n0\n").unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(
        file_names(dir.path()),
        vec![
            "00000000000000000000.index",
            "00000000000000000000.log",
            "00000000000000000000.timeindex",
            "leader-epoch-checkpoint"
        ]
    );
    assert_eq!(read_all(&log), concat(&written));
}

#[test]
fn log_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Log>();
    check::<ReadResult>();
}

#[derive(Debug, Clone)]
enum Damage {
    /// Cut the active `.log` at this fraction of its length.
    Truncate(prop::sample::Index),
    /// Flip bit `bit` of a CRC-checked byte (any byte but base offset and leader epoch).
    Flip(prop::sample::Index, u8),
}

fn damage_strategy() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Damage::Truncate),
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| Damage::Flip(i, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn recovery_keeps_exactly_the_longest_valid_prefix(
        shapes in proptest::collection::vec((1usize..5, 0usize..300), 1..15),
        segment_bytes in 300u64..3_000,
        damage in damage_strategy(),
    ) {
        let dir = TempDir::new().unwrap();
        let cfg = config(segment_bytes, 64);
        let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
        let written: Vec<Written> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(records, value))| append(&mut log, simple_batch(0, records, i as i64, value)))
            .collect();
        let active_base = *log.segment_base_offsets().last().unwrap();
        drop(log);

        let active: Vec<&Written> = written.iter().filter(|w| w.base >= active_base).collect();
        let mut starts = Vec::new();
        let mut at = 0usize;
        for w in &active {
            starts.push(at);
            at += w.bytes.len();
        }
        let active_len = at;
        let path = dir.path().join(segment_file_name(active_base, "log"));
        let mut bytes = fs::read(&path).unwrap();
        prop_assert_eq!(bytes.len(), active_len);
        // Index (into `active`) of the first batch that the damage invalidates.
        let first_bad = match &damage {
            Damage::Truncate(cut) => {
                let cut = cut.index(active_len + 1);
                bytes.truncate(cut);
                starts.iter().zip(&active).position(|(s, w)| s + w.bytes.len() > cut)
            }
            Damage::Flip(pick, bit) => {
                let checked: Vec<usize> = (0..active_len)
                    .filter(|&p| {
                        let batch = starts.iter().rposition(|&s| s <= p).unwrap();
                        let within = p - starts[batch];
                        !(within < 8 || (12..16).contains(&within))
                    })
                    .collect();
                let p = *pick.get(&checked);
                bytes[p] ^= 1 << bit;
                starts.iter().rposition(|&s| s <= p)
            }
        };
        fs::write(&path, &bytes).unwrap();

        let kept_active = first_bad.unwrap_or(active.len());
        let kept: Vec<Written> = written
            .iter()
            .filter(|w| w.base < active_base)
            .cloned()
            .chain(active[..kept_active].iter().map(|w| (*w).clone()))
            .collect();
        let mut log = Log::open(dir.path(), cfg).unwrap();
        let end = kept.last().map_or(active_base, |w| w.last + 1);
        prop_assert_eq!(log.log_end_offset(), end);
        prop_assert_eq!(read_all(&log), concat(&kept));
        let next = append(&mut log, simple_batch(0, 1, 0, 1));
        prop_assert_eq!(next.base, end);
    }
}

// ---- retention, DeleteRecords, segment.ms ----

/// A log in which every batch of `records` records gets a segment of its own (segment.bytes is one
/// batch), with `retention` applied on top and time read from `clock`.
fn one_batch_per_segment(
    dir: &Path,
    records: usize,
    retention: impl FnOnce(&mut LogConfig),
    clock: &Arc<ManualClock>,
) -> Log {
    let batch_bytes = simple_batch(0, records, 0, 50).len() as u64;
    let mut config = config(batch_bytes, 4096);
    retention(&mut config);
    Log::open_with_clock(dir, config, clock.clone()).unwrap()
}

/// Only segment files (and the log start and leader epoch checkpoints): nothing `.deleted` or
/// temporary.
fn assert_no_leftovers(dir: &Path, bases: &[i64]) {
    let mut expected: Vec<String> = bases
        .iter()
        .flat_map(|&b| ["index", "log", "timeindex"].map(|s| segment_file_name(b, s)))
        .collect();
    for checkpoint in [LOG_START_OFFSET_FILE, crate::LEADER_EPOCH_CHECKPOINT_FILE] {
        if dir.join(checkpoint).exists() {
            expected.push(checkpoint.to_string());
        }
    }
    expected.sort();
    assert_eq!(file_names(dir), expected);
}

#[test]
fn time_retention_deletes_exactly_the_expired_segments() {
    let dir = TempDir::new().unwrap();
    let clock = Arc::new(ManualClock::new(100_000));
    let mut log = one_batch_per_segment(dir.path(), 1, |c| c.retention_ms = 97_500, &clock);
    // Max timestamps 0, 1000, ..., 4000: those older than 97.5 s at 100 s are 0, 1000 and 2000.
    let written = append_uniform(&mut log, 5, 1);
    assert_eq!(log.segment_base_offsets(), vec![0, 1, 2, 3, 4]);
    let kept_read = log.read(0, usize::MAX).unwrap();
    let size_of_one = written[0].bytes.len() as u64;

    let deleted = log.delete_old_segments().unwrap();
    assert_eq!(
        deleted,
        DeletedSegments {
            segments: 3,
            bytes: 3 * size_of_one
        }
    );
    assert_eq!(log.segment_base_offsets(), vec![3, 4]);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (3, 5));
    assert!(matches!(
        log.read(2, usize::MAX),
        Err(Error::OffsetOutOfRange {
            offset: 2,
            log_start_offset: 3,
            log_end_offset: 5
        })
    ));
    assert_eq!(read_all(&log), concat(&written[3..]));
    // Bytes read before the deletion still hold the deleted segment's data.
    assert_eq!(&kept_read.records[..], &written[0].bytes[..]);
    assert_no_leftovers(dir.path(), &[3, 4]);

    // Nothing more is due until the clock moves; then 3000 (and only it) expires.
    assert_eq!(log.delete_old_segments().unwrap().segments, 0);
    clock.advance(1_000);
    assert_eq!(log.delete_old_segments().unwrap().segments, 1);
    assert_eq!(log.segment_base_offsets(), vec![4]);
    assert_no_leftovers(dir.path(), &[4]);

    // Infinite retention deletes nothing, however old.
    drop(log);
    let mut log = Log::open_with_clock(
        dir.path(),
        LogConfig {
            retention_ms: -1,
            ..LogConfig::default()
        },
        clock.clone(),
    )
    .unwrap();
    clock.advance(i64::from(i32::MAX));
    assert_eq!(log.delete_old_segments().unwrap().segments, 0);
    assert_eq!(log.log_start_offset(), 4);
}

#[test]
fn an_expired_active_segment_is_rolled_then_deleted() {
    let dir = TempDir::new().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let mut log = one_batch_per_segment(dir.path(), 2, |c| c.retention_ms = 1_000, &clock);
    append_uniform(&mut log, 3, 2);
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4]);

    let deleted = log.delete_old_segments().unwrap();
    assert_eq!(deleted.segments, 3);
    assert_eq!(log.segment_base_offsets(), vec![6]);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (6, 6));
    assert_eq!(log.size_bytes(), 0);
    assert_no_leftovers(dir.path(), &[6]);
    // The empty active segment stays, and appends carry on from the log end.
    assert_eq!(log.delete_old_segments().unwrap().segments, 0);
    let next = append(&mut log, simple_batch(0, 1, clock.now_ms(), 50));
    assert_eq!(next.base, 6);
    log.close().unwrap();
    let log = Log::open_with_clock(dir.path(), config(1 << 20, 4096), clock.clone()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (6, 7));
}

#[test]
fn size_retention_keeps_exactly_the_newest_segments_that_fit() {
    for (retention_bytes_in_segments, extra, kept) in [
        (2, 1, vec![2, 3, 4]),
        (2, 0, vec![3, 4]),
        (5, 0, vec![0, 1, 2, 3, 4]),
        (0, 0, vec![5]),
    ] {
        let dir = TempDir::new().unwrap();
        let clock = Arc::new(ManualClock::new(0));
        let size = simple_batch(0, 1, 0, 50).len() as i64;
        let mut log = one_batch_per_segment(
            dir.path(),
            1,
            |c| {
                c.retention_ms = -1;
                c.retention_bytes = retention_bytes_in_segments * size + extra;
            },
            &clock,
        );
        let written = append_uniform(&mut log, 5, 1);
        log.delete_old_segments().unwrap();
        assert_eq!(
            log.segment_base_offsets(),
            kept,
            "{retention_bytes_in_segments}"
        );
        assert_eq!(log.log_start_offset(), kept[0]);
        let first_kept = (kept[0] as usize).min(written.len());
        assert_eq!(read_all(&log), concat(&written[first_kept..]));
        assert_no_leftovers(dir.path(), &kept);
    }
}

#[test]
fn delete_records_moves_the_start_inside_a_segment_durably() {
    let dir = TempDir::new().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let mut log = one_batch_per_segment(dir.path(), 3, |c| c.retention_ms = -1, &clock);
    // Offsets 0-2, 3-5, 6-8, 9-11; timestamps 1000*i + record index.
    let written = append_uniform(&mut log, 4, 3);
    assert_eq!(log.segment_base_offsets(), vec![0, 3, 6, 9]);

    assert!(matches!(
        log.delete_records_before(13),
        Err(Error::OffsetOutOfRange { offset: 13, .. })
    ));
    assert_eq!(log.delete_records_before(7).unwrap(), 7);
    assert_eq!(log.segment_base_offsets(), vec![6, 9]);
    // Moving it backwards changes nothing.
    assert_eq!(log.delete_records_before(5).unwrap(), 7);

    let check = |log: &Log| {
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (7, 12));
        for below in [0, 5, 6] {
            assert!(matches!(
                log.read(below, usize::MAX),
                Err(Error::OffsetOutOfRange {
                    log_start_offset: 7,
                    ..
                })
            ));
        }
        // The batch containing the start offset comes back whole; the consumer skips offset 6.
        let read = log.read(7, 1).unwrap();
        assert_eq!(read.first_batch_offset, Some(6));
        assert_eq!(&read.records[..], &written[2].bytes[..]);
        // ListOffsets by time never answers below the start.
        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((7, 2_001)));
        assert_eq!(log.offset_for_timestamp(2_002).unwrap(), Some((8, 2_002)));
    };
    check(&log);
    drop(log);
    let mut log = Log::open_with_clock(dir.path(), config(1 << 20, 4096), clock.clone()).unwrap();
    check(&log);
    assert_eq!(log.segment_base_offsets(), vec![6, 9]);

    // Up to the log end: the active segment stays (empty reads at the end), the rest goes.
    assert_eq!(log.delete_records_before(12).unwrap(), 12);
    assert_eq!(log.segment_base_offsets(), vec![9]);
    assert!(log.read(12, usize::MAX).unwrap().records.is_empty());
    assert!(log.read(11, usize::MAX).is_err());
    assert_no_leftovers(dir.path(), &[9]);
    log.close().unwrap();
    let log = Log::open_with_clock(dir.path(), config(1 << 20, 4096), clock.clone()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (12, 12));
}

#[test]
fn segments_below_a_checkpointed_start_are_deleted_by_retention() {
    // A crash between writing the checkpoint and deleting the segments below it.
    let dir = TempDir::new().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let mut log = one_batch_per_segment(dir.path(), 1, |c| c.retention_ms = -1, &clock);
    append_uniform(&mut log, 4, 1);
    drop(log);
    fs::write(dir.path().join(LOG_START_OFFSET_FILE), "0\n2\n").unwrap();
    let mut log = one_batch_per_segment(dir.path(), 1, |c| c.retention_ms = -1, &clock);
    assert_eq!(log.log_start_offset(), 2);
    assert_eq!(log.segment_base_offsets(), vec![0, 1, 2, 3]);
    assert_eq!(log.delete_old_segments().unwrap().segments, 2);
    assert_eq!(log.segment_base_offsets(), vec![2, 3]);
    assert_eq!(log.log_start_offset(), 2);
}

#[test]
fn a_crash_partway_through_a_segment_delete_leaves_no_half_segment() {
    let dir = TempDir::new().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let mut log = one_batch_per_segment(dir.path(), 1, |c| c.retention_ms = -1, &clock);
    let written = append_uniform(&mut log, 3, 1);
    drop(log);
    // The `.log` of the first segment was renamed, its indexes not yet.
    let log_path = dir.path().join(segment_file_name(0, "log"));
    fs::rename(
        &log_path,
        dir.path()
            .join(format!("{}.deleted", segment_file_name(0, "log"))),
    )
    .unwrap();
    let log = one_batch_per_segment(dir.path(), 1, |c| c.retention_ms = -1, &clock);
    assert_eq!(log.segment_base_offsets(), vec![1, 2]);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (1, 3));
    assert_eq!(read_all(&log), concat(&written[1..]));
    assert_no_leftovers(dir.path(), &[1, 2]);
}

#[test]
fn segment_ms_rolls_by_record_timestamps() {
    let dir = TempDir::new().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let mut config = config(1 << 20, 4096);
    config.segment_ms = 10_000;
    let mut log = Log::open_with_clock(dir.path(), config, clock.clone()).unwrap();
    // The first batch's max timestamp is 1000; a batch reaching 11_000 is exactly 10 s later
    // (not more), one reaching 11_001 is past segment.ms. The clock plays no part.
    append(&mut log, simple_batch(0, 1, 1_000, 50));
    append(&mut log, simple_batch(0, 1, 11_000, 50));
    assert_eq!(log.segment_base_offsets(), vec![0]);
    clock.advance(1_000_000);
    append(&mut log, simple_batch(0, 1, 5_000, 50));
    assert_eq!(log.segment_base_offsets(), vec![0]);
    append(&mut log, simple_batch(0, 1, 11_001, 50));
    assert_eq!(log.segment_base_offsets(), vec![0, 3]);
    // The new segment is judged from its own first batch (11_001).
    append(&mut log, simple_batch(0, 1, 21_001, 50));
    assert_eq!(log.segment_base_offsets(), vec![0, 3]);
    append(&mut log, simple_batch(0, 1, 21_002, 50));
    assert_eq!(log.segment_base_offsets(), vec![0, 3, 5]);
    // After a reopen the first batch's timestamp is read back from the segment.
    drop(log);
    let mut log =
        Log::open_with_clock(dir.path(), config_with_segment_ms(10_000), clock.clone()).unwrap();
    append(&mut log, simple_batch(0, 1, 31_002, 50));
    assert_eq!(log.segment_base_offsets(), vec![0, 3, 5]);
    append(&mut log, simple_batch(0, 1, 31_003, 50));
    assert_eq!(log.segment_base_offsets(), vec![0, 3, 5, 7]);
}

fn config_with_segment_ms(segment_ms: i64) -> LogConfig {
    let mut config = config(1 << 20, 4096);
    config.segment_ms = segment_ms;
    config
}

#[test]
fn segment_ms_rolls_by_the_clock_without_timestamps() {
    let dir = TempDir::new().unwrap();
    let clock = Arc::new(ManualClock::new(50_000));
    let mut log =
        Log::open_with_clock(dir.path(), config_with_segment_ms(10_000), clock.clone()).unwrap();
    let no_timestamp = || simple_batch(0, 1, -1, 50);
    append(&mut log, no_timestamp());
    clock.advance(10_000);
    append(&mut log, no_timestamp());
    assert_eq!(log.segment_base_offsets(), vec![0]);
    clock.advance(1);
    append(&mut log, no_timestamp());
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);
}

// ---- flush policies, recovery points ----

fn config_with_flush(flush_messages: i64, flush_ms: i64) -> LogConfig {
    LogConfig {
        flush_messages,
        flush_ms,
        ..config(1 << 20, 4096)
    }
}

#[test]
fn flush_messages_flushes_exactly_at_n_unflushed_messages() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), config_with_flush(3, i64::MAX)).unwrap();
    assert_eq!(log.recovery_point(), 0);
    let mut recovery_points = Vec::new();
    for _ in 0..7 {
        append(&mut log, simple_batch(0, 1, 0, 10));
        recovery_points.push((log.log_end_offset(), log.recovery_point()));
    }
    assert_eq!(
        recovery_points,
        vec![(1, 0), (2, 0), (3, 3), (4, 3), (5, 3), (6, 6), (7, 6)]
    );
    assert_eq!(log.unflushed_messages(), 1);
    // A batch is counted by its offsets: 2 more unflushed make 3.
    append(&mut log, simple_batch(0, 2, 0, 10));
    assert_eq!((log.log_end_offset(), log.recovery_point()), (9, 9));

    // The default (Long.MAX) never flushes on append.
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), config(1 << 20, 4096)).unwrap();
    append_uniform(&mut log, 20, 5);
    assert_eq!((log.log_end_offset(), log.recovery_point()), (100, 0));
    log.flush().unwrap();
    assert_eq!(log.recovery_point(), 100);
}

#[test]
fn flush_ms_flushes_once_due_by_the_clock() {
    let dir = TempDir::new().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let mut log =
        Log::open_with_clock(dir.path(), config_with_flush(i64::MAX, 500), clock.clone()).unwrap();
    // Nothing unflushed: never due.
    clock.advance(10_000);
    assert!(!log.flush_if_due().unwrap());
    append(&mut log, simple_batch(0, 4, 0, 10));
    // Due at once: the last flush (open) was more than flush.ms ago.
    assert!(log.flush_if_due().unwrap());
    assert_eq!(log.recovery_point(), 4);
    append(&mut log, simple_batch(0, 1, 0, 10));
    clock.advance(499);
    assert!(!log.flush_if_due().unwrap());
    assert_eq!(log.recovery_point(), 4);
    clock.advance(1);
    assert!(log.flush_if_due().unwrap());
    assert_eq!(log.recovery_point(), 5);
    assert!(!log.flush_if_due().unwrap());
}

#[test]
fn a_completed_roll_flush_moves_the_recovery_point_to_the_new_segment() {
    let dir = TempDir::new().unwrap();
    let batch_bytes = simple_batch(0, 1, 0, 50).len() as u64;
    let mut log = Log::open(dir.path(), config(2 * batch_bytes, 4096)).unwrap();
    append_uniform(&mut log, 5, 1);
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4]);
    assert_eq!(log.recovery_point(), 0);
    log.flush_pending().unwrap();
    assert_eq!(log.recovery_point(), 4);
    assert_eq!(log.unflushed_messages(), 1);
}

/// 10 one-record batches, two per segment (bases 0, 2, 4, 6, 8), closed cleanly.
fn five_closed_segments(dir: &Path) -> (LogConfig, Vec<Written>) {
    let batch_bytes = simple_batch(0, 1, 0, 50).len() as u64;
    let cfg = config(2 * batch_bytes, 4096);
    let mut log = Log::open(dir, cfg.clone()).unwrap();
    let written: Vec<Written> = (0..10)
        .map(|i| append(&mut log, simple_batch(0, 1, 1_000 * i, 50)))
        .collect();
    assert!(written.iter().all(|w| w.bytes.len() as u64 == batch_bytes));
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4, 6, 8]);
    log.close().unwrap();
    (cfg, written)
}

#[test]
fn open_validates_only_the_segments_from_the_recovery_point_on() {
    let dir = TempDir::new().unwrap();
    let (cfg, written) = five_closed_segments(dir.path());
    // (recovery point, segments validated): every segment holding an offset at or past it.
    for (recovery_point, expected) in [
        (0, 5),
        (1, 5),
        (2, 4),
        (3, 4),
        (6, 2),
        (8, 1),
        (9, 1),
        (10, 0),
        (i64::MAX, 0),
    ] {
        let log = Log::open_with_recovery_point(dir.path(), cfg.clone(), recovery_point).unwrap();
        assert_eq!(
            log.recovered_segments(),
            expected,
            "recovery point {recovery_point}"
        );
        assert_eq!(log.log_end_offset(), 10);
        assert_eq!(log.recovery_point(), recovery_point.min(10));
        assert_eq!(read_all(&log), concat(&written));
        log.close().unwrap();
    }
    // `Log::open` validates the active segment only.
    let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
    assert_eq!(log.recovered_segments(), 1);
    assert_eq!(log.recovery_point(), 8);
    // A log opened without recovery appends, indexes and rolls as usual.
    let more = append(&mut log, simple_batch(0, 1, 20_000, 50));
    assert_eq!(more.base, 10);
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4, 6, 8, 10]);
    drop(log);
    let log = Log::open_with_recovery_point(dir.path(), cfg, i64::MAX).unwrap();
    let mut all = written.clone();
    all.push(more);
    assert_eq!(read_all(&log), concat(&all));
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x10;
    fs::write(path, bytes).unwrap();
}

#[test]
fn corruption_below_the_recovery_point_is_left_alone_and_above_it_is_cut() {
    let dir = TempDir::new().unwrap();
    let (cfg, written) = five_closed_segments(dir.path());
    let batch_bytes = written[0].bytes.len();
    // The last byte of the second batch of segment 2 (offsets 2 and 3): a record byte under the CRC.
    flip_byte(
        &dir.path().join(segment_file_name(2, "log")),
        2 * batch_bytes - 1,
    );
    let log = Log::open_with_recovery_point(dir.path(), cfg.clone(), 6).unwrap();
    assert_eq!(log.recovered_segments(), 2);
    assert_eq!(log.log_end_offset(), 10);
    let stored = log.read(3, usize::MAX).unwrap().records;
    assert_ne!(stored.as_ref(), written[3].bytes.as_slice());
    assert_eq!(stored.len(), batch_bytes);
    assert!(
        validate_batch(&stored).is_err(),
        "the damage is still there"
    );
    drop(stored);
    log.close().unwrap();

    // The same damage in segment 6, at the recovery point: cut there, and the segments after it go.
    flip_byte(
        &dir.path().join(segment_file_name(6, "log")),
        2 * batch_bytes - 1,
    );
    let mut log = Log::open_with_recovery_point(dir.path(), cfg.clone(), 6).unwrap();
    assert_eq!(log.recovered_segments(), 1);
    assert_eq!(log.log_end_offset(), 7);
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4, 6]);
    assert_eq!(log.recovery_point(), 6);
    assert_eq!(log.read(6, usize::MAX).unwrap().records, written[6].bytes);
    assert_no_leftovers(dir.path(), &[0, 2, 4, 6]);
    // The cut segment is the active one again: appends continue at the cut.
    let next = append(&mut log, simple_batch(0, 1, 0, 50));
    assert_eq!(next.base, 7);
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4, 6]);
    assert_eq!(log.read(7, usize::MAX).unwrap().records, next.bytes);
}

#[test]
fn after_a_crash_a_flushed_log_reopens_without_validation() {
    let dir = TempDir::new().unwrap();
    // Index entries every batch, so the untrimmed index a crash leaves has entries to keep.
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        index_interval_bytes: 1,
        segment_index_bytes: 4096,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
    let mut written = append_uniform(&mut log, 6, 2);
    log.flush().unwrap();
    let flushed = log.recovery_point();
    assert_eq!(flushed, 12);
    let entries = log.segments().next().unwrap().index_entries();
    assert_eq!(entries.0, 5);
    drop(log); // a crash: indexes not trimmed

    let mut log = Log::open_with_recovery_point(dir.path(), cfg.clone(), flushed).unwrap();
    assert_eq!(log.recovered_segments(), 0);
    assert_eq!(log.segments().next().unwrap().index_entries(), entries);
    assert_eq!(read_all(&log), concat(&written));
    // Appends go on indexing from where the index was.
    written.extend(append_uniform(&mut log, 3, 2));
    assert_eq!(log.segments().next().unwrap().index_entries().0, 8);
    drop(log);

    // Appended past the recovery point, then torn: validated and cut.
    let path = dir.path().join(segment_file_name(0, "log"));
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let log = Log::open_with_recovery_point(dir.path(), cfg, flushed).unwrap();
    assert_eq!(log.recovered_segments(), 1);
    assert_eq!(log.log_end_offset(), 16);
    assert_eq!(read_all(&log), concat(&written[..8]));
}

#[test]
fn flush_settings_are_validated() {
    let dir = TempDir::new().unwrap();
    assert!(Log::open(dir.path(), config_with_flush(0, 0)).is_err());
    assert!(Log::open(dir.path(), config_with_flush(1, -1)).is_err());
    assert!(Log::open(dir.path(), config_with_flush(1, 0)).is_ok());
}

#[test]
fn a_crashed_active_segment_trusted_up_to_the_recovery_point_keeps_its_max_timestamp() {
    let dir = TempDir::new().unwrap();
    // Sparse indexes: the time index lags behind the batches when the log is dropped.
    let cfg = config(1 << 20, 4096);
    let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
    let written = append_uniform(&mut log, 10, 1);
    log.flush().unwrap();
    drop(log);
    let log = Log::open_with_recovery_point(dir.path(), cfg, 10).unwrap();
    assert_eq!(log.recovered_segments(), 0);
    assert_eq!(read_all(&log), concat(&written));
    assert_eq!(log.offset_for_timestamp(9_000).unwrap(), Some((9, 9_000)));
    assert_eq!(log.offset_for_timestamp(9_001).unwrap(), None);
}

#[test]
fn sealed_segments_are_loaded_when_read_and_hold_no_descriptors() {
    let dir = TempDir::new().unwrap();
    let (cfg, written) = five_closed_segments(dir.path());
    let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
    // Only the active segment is open, and only its `.log` keeps a descriptor.
    assert_eq!(log.loaded_segment_count(), 1);
    let descriptors: Vec<bool> = log.segments().map(Segment::has_descriptor).collect();
    assert_eq!(descriptors, [false, false, false, false, true]);
    // Sizes are known without loading.
    assert_eq!(
        log.size_bytes(),
        written.iter().map(|w| w.bytes.len() as u64).sum::<u64>()
    );
    assert_eq!(log.loaded_segment_count(), 1);

    let fetched = log.read(2, 1).unwrap().records;
    assert_eq!(fetched, written[2].bytes);
    let loaded: Vec<bool> = log.segments().map(Segment::is_loaded).collect();
    assert_eq!(loaded, [false, true, false, false, true]);
    assert!(!log.segments().nth(1).unwrap().has_descriptor());

    // Unloading gives the maps back; fetched bytes keep theirs, and reads load again.
    assert_eq!(log.unload_sealed_segments(), 1);
    assert_eq!(log.loaded_segment_count(), 1);
    assert_eq!(fetched, written[2].bytes);
    assert_eq!(read_all(&log), concat(&written));
    assert_eq!(log.loaded_segment_count(), 5);
    // Idle unloading: segments read within the idle time stay loaded; with none, every sealed
    // one is unloaded, and a read loads just the one it needs.
    assert_eq!(
        log.unload_idle_segments(std::time::Duration::from_secs(3600)),
        0
    );
    assert_eq!(log.loaded_segment_count(), 5);
    assert_eq!(log.unload_idle_segments(std::time::Duration::ZERO), 4);
    assert_eq!(log.loaded_segment_count(), 1);
    assert!(log.reads_cold_segment(3));
    assert!(!log.reads_cold_segment(8));
    assert_eq!(log.read(2, 1).unwrap().records, written[2].bytes);
    assert!(!log.reads_cold_segment(3));
    assert_eq!(log.loaded_segment_count(), 2);

    // A roll seals the active segment and closes its descriptor; appends go on.
    let more = append(&mut log, simple_batch(0, 1, 20_000, 50));
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4, 6, 8, 10]);
    let descriptors: Vec<bool> = log.segments().map(Segment::has_descriptor).collect();
    assert_eq!(descriptors, [false, false, false, false, false, true]);
    assert_eq!(log.read(10, usize::MAX).unwrap().records, more.bytes);
    // Retention deletes unloaded segments without loading them.
    log.unload_sealed_segments();
    log.delete_records_before(4).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![4, 6, 8, 10]);
    assert_eq!(log.loaded_segment_count(), 1);
    assert_no_leftovers(dir.path(), &[4, 6, 8, 10]);
}

#[test]
fn updated_config_rolls_and_retains_by_the_new_settings() {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), config(1 << 20, 4096)).unwrap();
    append_uniform(&mut log, 4, 1);
    assert_eq!(log.segment_count(), 1);
    let batch_bytes = simple_batch(0, 1, 0, 50).len() as u64;
    // segment.bytes lowered below two batches: every later append rolls.
    log.update_config(config(batch_bytes + 1, 4096)).unwrap();
    append_uniform(&mut log, 2, 1);
    assert_eq!(log.segment_count(), 3);
    // retention.bytes lowered (time retention off: the batches are stamped in 1970): the oldest
    // segments go on the next pass.
    log.update_config(LogConfig {
        retention_ms: -1,
        retention_bytes: 1,
        ..config(batch_bytes + 1, 4096)
    })
    .unwrap();
    let deleted = log.delete_old_segments().unwrap();
    assert_eq!(deleted.segments, 2);
    assert_eq!(log.log_start_offset(), 5);
    // Settings storage cannot open are refused and the old ones stay.
    assert!(log.update_config(config(13, 4096)).is_err());
    assert_eq!(log.config().retention_bytes, 1);
}
