//! The storage engine's heavy paths: recovery scan, index lookups, compaction.
//!
//! ```sh
//! cargo bench -p skald-storage --bench engine
//! ```
//!
//! - `recovery/full scan 1GiB`: opening a log whose one 1 GiB segment lies past the recovery point
//!   (recovery point 0, as after a crash with no checkpoint): every batch's CRC32C is checked and
//!   both indexes are rebuilt. Page cache warm.
//! - `index/*`: one lookup through the public read paths in a segment of 500,000 one-record
//!   batches with an index entry for every batch (500,000 offset and time index entries): the
//!   bisection plus one batch header (offset) or one batch's records (time).
//! - `compaction/256MiB, 10% unique keys`: one cleaner pass over 256 MiB of sealed segments whose
//!   1,000,000 records carry 100,000 keys drawn at random (each about 10 times); fsyncs of the cleaned
//!   segments included (the cleaner makes them durable before the swap). The `zstd batches`
//!   variant writes the same records as zstd-compressed batches (256 MiB before compression):
//!   the cleaner decompresses, filters and recompresses them.

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use skald_protocol::batch::testing::{build_batch, simple_batch, TestRecord};
use skald_protocol::batch::{LOG_OVERHEAD, RECORD_BATCH_HEADER_BYTES};
use skald_storage::{CompactionOptions, Log, LogConfig};
use tempfile::TempDir;

fn recovery(c: &mut Criterion) {
    let dir = TempDir::new().unwrap();
    let config = LogConfig {
        segment_bytes: i32::MAX as u64,
        ..LogConfig::default()
    };
    let batch = simple_batch(0, 1000, 1_700_000_000_000, 1000);
    let batches = (1u64 << 30) / batch.len() as u64;
    {
        let mut log = Log::open(dir.path(), config.clone()).unwrap();
        let mut buf = batch.clone();
        for _ in 0..batches {
            log.append(&mut buf, None, 0).unwrap();
        }
        assert_eq!(log.segment_count(), 1);
        log.close().unwrap();
    }
    let bytes = batches * batch.len() as u64;
    let mut group = c.benchmark_group("recovery");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("full scan 1GiB", |b| {
        b.iter(|| {
            let log = Log::open_with_recovery_point(dir.path(), config.clone(), 0).unwrap();
            assert_eq!(log.recovered_segments(), 1);
            black_box(log.log_end_offset())
        })
    });
    group.finish();
}

const INDEXED_BATCHES: i64 = 500_000;
const TIMESTAMP_STEP_MS: i64 = 10;

fn index(c: &mut Criterion) {
    let dir = TempDir::new().unwrap();
    let config = LogConfig {
        index_interval_bytes: 1,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    for i in 0..INDEXED_BATCHES {
        let mut batch = simple_batch(0, 1, 1_700_000_000_000 + i * TIMESTAMP_STEP_MS, 16);
        log.append(&mut batch, None, 0).unwrap();
    }
    assert_eq!(log.segment_count(), 1);
    let mut group = c.benchmark_group("index");
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    // A cheap pseudo-random walk over the offsets, so lookups do not hit the same cache lines.
    let mut x = 1u64;
    let mut next = move |n: i64| {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        ((x >> 33) % n as u64) as i64
    };
    group.bench_function("offset lookup (read one batch, 500k entries)", |b| {
        b.iter(|| {
            let offset = next(INDEXED_BATCHES);
            black_box(log.read(black_box(offset), 1).unwrap().first_batch_offset)
        })
    });
    group.bench_function("time lookup (offset_for_timestamp, 500k entries)", |b| {
        b.iter(|| {
            let timestamp = 1_700_000_000_000 + next(INDEXED_BATCHES) * TIMESTAMP_STEP_MS;
            black_box(log.offset_for_timestamp(black_box(timestamp)).unwrap())
        })
    });
    group.finish();
}

const COMPACTION_RECORDS: usize = 1_000_000;
const COMPACTION_KEYS: usize = 100_000;
const RECORDS_PER_KEYED_BATCH: usize = 100;
const KEYED_VALUE_BYTES: usize = 240;

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `batch` with its records compressed by zstd (Kafka's default level 3): codec bits set,
/// length and CRC32C recomputed (positions of Kafka's v2 layout).
fn zstd_batch(batch: &[u8]) -> Vec<u8> {
    let header = RECORD_BATCH_HEADER_BYTES;
    let mut out = batch[..header].to_vec();
    out.extend(zstd::stream::encode_all(&batch[header..], 3).unwrap());
    let length = (out.len() - LOG_OVERHEAD) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let attributes = i16::from_be_bytes([out[21], out[22]]) | 4;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

fn compaction(c: &mut Criterion) {
    compaction_of("256MiB, 10% unique keys", false, c);
    compaction_of("256MiB, 10% unique keys, zstd batches", true, c);
}

fn compaction_of(name: &str, zstd: bool, c: &mut Criterion) {
    let root = TempDir::new().unwrap();
    let template = root.path().join("template");
    let config = LogConfig {
        segment_bytes: 32 << 20,
        ..LogConfig::default()
    };
    {
        let mut log = Log::open(&template, config.clone()).unwrap();
        // Half noise, half a repeated byte: zstd shrinks a batch to about half.
        let value = |i: usize| -> Vec<u8> {
            let mut x = i as u64 | 1;
            (0..KEYED_VALUE_BYTES)
                .map(|j| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if j % 2 == 0 {
                        x as u8
                    } else {
                        b'v'
                    }
                })
                .collect()
        };
        for first in (0..COMPACTION_RECORDS).step_by(RECORDS_PER_KEYED_BATCH) {
            let records: Vec<TestRecord> = (first..first + RECORDS_PER_KEYED_BATCH)
                .map(|i| {
                    // Keys drawn at random: each about 10 times, its latest anywhere in the log, so
                    // most batches lose some records and keep others.
                    let key = format!("key-{:08}", splitmix64(i as u64) % COMPACTION_KEYS as u64);
                    TestRecord::new(Some(key.as_bytes()), Some(&value(i)), i as i64)
                })
                .collect();
            let mut batch = build_batch(0, &records);
            if zstd {
                batch = zstd_batch(&batch);
            }
            log.append(&mut batch, None, 0).unwrap();
        }
        log.close().unwrap();
    }
    let options = CompactionOptions {
        min_cleanable_dirty_ratio: 0.0,
        ..CompactionOptions::default()
    };
    let mut run = 0usize;
    let mut fresh_copy = || {
        run += 1;
        let dir = root.path().join(format!("run-{run}"));
        copy_dir(&template, &dir);
        (Log::open(&dir, config.clone()).unwrap(), dir)
    };
    // One pass outside the measurement, for the bytes it reads (the throughput's unit).
    let (mut log, dir) = fresh_copy();
    let stats = log.compact(1_000_000, &options).unwrap();
    assert!(stats.cleaned);
    println!(
        "{name}: {} segments, {} bytes read, {} written, {} records removed, {} batches recompressed",
        stats.segments_read,
        stats.bytes_read,
        stats.bytes_written,
        stats.records_removed,
        stats.compressed_batches_rewritten
    );
    drop(log);
    fs::remove_dir_all(dir).unwrap();

    let mut group = c.benchmark_group("compaction");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(stats.bytes_read));
    group.bench_function(name, |b| {
        b.iter_batched(
            &mut fresh_copy,
            |(mut log, dir)| {
                let pass = log.compact(1_000_000, &options).unwrap();
                assert_eq!(pass.bytes_read, stats.bytes_read);
                (log, dir)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
    // The copies are removed with `root`.
}

criterion_group!(benches, recovery, index, compaction);
criterion_main!(benches);
