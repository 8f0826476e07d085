//! The metadata snapshot of a large cluster: 1,000 topics × 100 partitions (100,000 partitions,
//! replication factor 3 over brokers 1..=6), built by replaying records as the quorum does.
//!
//! Measures the pieces of the quorum's snapshot path (`raft_store::build_snapshot` and
//! `image_from_snapshot`, whose encode/decode helpers are crate-private, so their few lines are
//! repeated here exactly: `serde_json` of `Vec<VersionedRecord>`), and a controller's whole
//! restart from disk ([`Quorum::open`] on a [`FileDisk`] whose snapshot holds the image). Prints
//! the sizes once. The 1,000,000-partition snapshot, with a broker's fetch of it and its raft
//! transfer in chunks, is `benches/snapshot_1m.rs`.
//!
//! ```text
//! cargo bench -p skald-controller --bench snapshot
//! ```

mod cluster;

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use skald_controller::raft_disk::FileDisk;
use skald_controller::record::VersionedRecord;
use skald_controller::{MetadataImage, MetadataRecord, Quorum, QuorumConfig};

const TOPICS: usize = 1_000;
const PARTITIONS_PER_TOPIC: i32 = 100;

/// The records a controller would have committed for the cluster, in order.
fn cluster_records() -> Vec<MetadataRecord> {
    cluster::cluster_batches(TOPICS, PARTITIONS_PER_TOPIC).concat()
}

/// `raft_store::encode_records`: the snapshot's (and every entry's) data.
fn encode_records(records: &[MetadataRecord]) -> Vec<u8> {
    let versioned: Vec<VersionedRecord> =
        records.iter().cloned().map(VersionedRecord::from).collect();
    serde_json::to_vec(&versioned).expect("encode records")
}

/// `raft_store::image_from_snapshot`, minus the version check (every record here is current).
fn image_from_data(data: &[u8]) -> MetadataImage {
    let versioned: Vec<VersionedRecord> = serde_json::from_slice(data).expect("decode records");
    let records: Vec<MetadataRecord> = versioned.into_iter().map(|r| r.record).collect();
    let mut image = MetadataImage::default();
    image.replay_batch(&records);
    image
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read metadata dir")
        .map(|entry| {
            entry
                .expect("dir entry")
                .metadata()
                .expect("metadata")
                .len()
        })
        .sum()
}

fn snapshot(c: &mut Criterion) {
    let mut image = MetadataImage::default();
    image.replay_batch(&cluster_records());
    assert_eq!(
        image.partition_count(),
        TOPICS * PARTITIONS_PER_TOPIC as usize
    );
    let records = image.to_records();
    let data = encode_records(&records);

    // A single-voter controller bootstrapped from these records writes them as its snapshot
    // (`__cluster_metadata-0/snapshot`); reopening it is a controller restart.
    let disk_dir = tempfile::tempdir().expect("temp dir");
    let quorum = Quorum::open(
        QuorumConfig::new(1, vec![1]),
        FileDisk::open(disk_dir.path()).expect("open disk"),
        vec![cluster_records()],
    )
    .expect("bootstrap the quorum");
    assert_eq!(*quorum.image(), image);
    drop(quorum);
    let metadata_dir = FileDisk::open(disk_dir.path())
        .expect("open disk")
        .dir()
        .to_path_buf();

    let partitions = image.partition_count();
    let per_partition = data.len() as f64 / partitions as f64;
    println!(
        "snapshot of {partitions} partitions in {TOPICS} topics: {} records, data {} bytes \
         ({per_partition:.1} bytes per partition); __cluster_metadata-0 after bootstrap {} bytes",
        records.len(),
        data.len(),
        dir_bytes(&metadata_dir),
    );

    let mut group = c.benchmark_group("snapshot_100k_partitions");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("image to_records", |b| {
        b.iter(|| black_box(image.to_records()))
    });
    // What `Arc::make_mut` on the applied image costs on every commit while the previous image
    // is still shared (published to the broker, or held by a reader): O(1) since the image's
    // maps are persistent.
    group.bench_function("image clone", |b| b.iter(|| black_box(image.clone())));
    group.bench_function("build: to_records + encode", |b| {
        b.iter(|| black_box(encode_records(&image.to_records())))
    });
    group.bench_function("decode", |b| {
        b.iter(|| black_box(serde_json::from_slice::<Vec<VersionedRecord>>(&data).expect("decode")))
    });
    group.bench_function("load: decode + replay", |b| {
        b.iter(|| black_box(image_from_data(&data)))
    });
    // What a controller's periodic snapshot costs its driver thread (`save_snapshot`: build,
    // write, fsync), plus the replay of the records into the image (the "load" case above less
    // its decode: about a sixth of this).
    group.bench_function("bootstrap: replay + build + write + fsync snapshot", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("temp dir");
                let disk = FileDisk::open(dir.path()).expect("open disk");
                (dir, disk, cluster_records())
            },
            |(dir, disk, records)| {
                let quorum = Quorum::open(QuorumConfig::new(1, vec![1]), disk, vec![records])
                    .expect("bootstrap the quorum");
                (dir, quorum)
            },
            BatchSize::PerIteration,
        )
    });
    // Each open of a single voter also campaigns and fsyncs one no-op entry: a few ms of the total.
    group.bench_function("controller restart: Quorum::open from disk", |b| {
        b.iter(|| {
            let quorum = Quorum::open(
                QuorumConfig::new(1, vec![1]),
                FileDisk::open(disk_dir.path()).expect("open disk"),
                Vec::new(),
            )
            .expect("reopen the quorum");
            assert_eq!(quorum.image().partition_count(), partitions);
            black_box(quorum)
        })
    });
    group.finish();
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
