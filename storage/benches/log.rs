//! Append and read throughput of one partition log, with 1 KiB records in 16 KiB batches.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use skald_protocol::batch::testing::simple_batch;
use skald_storage::{Log, LogConfig, TxnVerification};
use tempfile::TempDir;

const RECORD_BYTES: usize = 1024;
const RECORDS_PER_BATCH: usize = 16;
const BATCHES_PER_APPEND: usize = 4;

fn batch() -> Vec<u8> {
    simple_batch(0, RECORDS_PER_BATCH, 1_700_000_000_000, RECORD_BYTES)
}

/// A log with 64 MiB segments, so appending benchmarks also pay for rolls (and do not fill the
/// disk).
fn log_with_small_segments(dir: &TempDir) -> Log {
    let config = LogConfig {
        segment_bytes: 64 * 1024 * 1024,
        ..LogConfig::default()
    };
    Log::open(dir.path(), config).unwrap()
}

fn append(c: &mut Criterion) {
    let one = batch();
    let many: Vec<u8> = one.repeat(BATCHES_PER_APPEND);
    let mut group = c.benchmark_group("append");
    for (name, template) in [("16KiB batch", &one), ("4x16KiB batches", &many)] {
        let dir = TempDir::new().unwrap();
        let mut log = log_with_small_segments(&dir);
        group.throughput(Throughput::Bytes(template.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || template.clone(),
                |buf| log.append(buf, None, 1).unwrap(),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("{name} log-append-time"), |b| {
            b.iter_batched_ref(
                || template.clone(),
                |buf| log.append(buf, Some(1_700_000_000_000), 1).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// The produce path: `Log::append_client` writes the request's bytes as they are (the stored
/// header is built beside them), so nothing is cloned per iteration; librdkafka's common batch
/// sizes.
fn append_client(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_client");
    for (name, records) in [("16KiB", 16), ("256KiB", 256), ("1MiB", 1024)] {
        let template = simple_batch(0, records, 1_700_000_000_000, RECORD_BYTES);
        let dir = TempDir::new().unwrap();
        let mut log = log_with_small_segments(&dir);
        group.throughput(Throughput::Bytes(template.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                log.append_client(black_box(&template), None, 1, TxnVerification::Off)
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let dir = TempDir::new().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let template = batch();
    for _ in 0..4096 {
        log.append(&mut template.clone(), None, 1).unwrap();
    }
    let end = log.log_end_offset();
    let mut group = c.benchmark_group("read");
    // A consumer's fetch: 1 MiB from a random offset (index lookup + header scan + zero-copy slice).
    group.throughput(Throughput::Bytes(1024 * 1024));
    let mut offset = 0i64;
    group.bench_function("1MiB fetch", |b| {
        b.iter(|| {
            offset = (offset + 7_919) % end;
            let read = log.read(black_box(offset), 1024 * 1024).unwrap();
            black_box(read.records.len())
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("index lookup (one batch)", |b| {
        b.iter(|| {
            offset = (offset + 7_919) % end;
            black_box(log.read(black_box(offset), 1).unwrap().first_batch_offset)
        })
    });
    group.bench_function("offset_for_timestamp", |b| {
        b.iter(|| {
            black_box(
                log.offset_for_timestamp(black_box(1_700_000_000_010))
                    .unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, append, append_client, read);
criterion_main!(benches);
