//! Issue 16's snapshot benchmark: the metadata snapshot of 1,000,000 partitions (1,000 topics ×
//! 1,000 partitions, replication factor 3 over brokers 1..=6), about 176 MB of records, far over
//! the 64 MiB one frame holds. One run of each step a controller or broker takes with it, timed
//! once (each takes seconds, and the image takes longer to build than criterion's warm-up):
//! - bootstrap: a single voter replays the records, builds the snapshot and writes it
//!   (`__cluster_metadata-0/snapshot`, in bounded chunk frames) with its fsync;
//! - broker fetch: a [`MetadataFollower`] fetches the saved snapshot by position through the
//!   wire form of its updates (8 MiB asked per fetch) and replays it;
//! - restart: [`Quorum::open`] from that disk (read the file a piece at a time, check each frame,
//!   decode, replay);
//! - periodic snapshot: one commit that crosses `snapshot_after_entries`, so it builds, writes
//!   and fsyncs a new snapshot on the driver thread;
//! - raft transfer: the snapshot as a `MsgSnapshot`, through [`raft_wire::message_frames`] and a
//!   [`raft_wire::MessageDecoder`] (what the transport and the receiving listener do, less TCP).
//!
//! Prints each time, the sizes, and the process's resident memory (`VmRSS`, peak `VmHWM`).
//!
//! ```text
//! cargo bench -p skald-controller --bench snapshot_1m
//! ```

mod cluster;

use std::time::Instant;

use raft::eraftpb::{Message, MessageType};
use skald_controller::follower::{MetadataFollower, MetadataUpdate};
use skald_controller::raft_disk::{FileDisk, RaftDisk};
use skald_controller::raft_wire::{message_frames, MessageDecoder};
use skald_controller::{MetadataRecord, Quorum, QuorumConfig};

const TOPICS: usize = 1_000;
const PARTITIONS_PER_TOPIC: i32 = 1_000;
/// What a broker-only node asks for per fetch (`broker::metadata::follower`).
const FETCH_BYTES_MAX: usize = 8 * 1024 * 1024;

/// This process's `VmRSS` and `VmHWM` in MiB.
fn memory_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn report(step: &str, started: Instant) {
    let (rss, hwm) = memory_mib();
    println!(
        "{step}: {:.0} ms (RSS {rss} MiB, peak {hwm} MiB)",
        started.elapsed().as_secs_f64() * 1000.0
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = QuorumConfig::new(1, vec![1]);
    let batches = cluster::cluster_batches(TOPICS, PARTITIONS_PER_TOPIC);
    let (rss, _) = memory_mib();
    println!("records built: RSS {rss} MiB");

    let started = Instant::now();
    let disk = FileDisk::open(dir.path()).expect("open disk");
    let snapshot_path = disk.dir().join("snapshot");
    let quorum = Quorum::open(config.clone(), disk, batches).expect("bootstrap");
    report(
        "bootstrap: replay + build + write + fsync the snapshot",
        started,
    );
    let partitions = quorum.image().partition_count();
    assert_eq!(partitions, TOPICS * PARTITIONS_PER_TOPIC as usize);
    let file_bytes = std::fs::metadata(&snapshot_path)
        .expect("snapshot file")
        .len();
    println!(
        "snapshot file: {file_bytes} bytes for {partitions} partitions ({:.1} bytes per partition)",
        file_bytes as f64 / partitions as f64
    );

    let started = Instant::now();
    let mut follower = MetadataFollower::new();
    let mut fetches = 0;
    loop {
        let update = quorum.serve_fetch(follower.next_fetch(), FETCH_BYTES_MAX);
        if update == MetadataUpdate::UpToDate {
            break;
        }
        let wire = update.encode().expect("encode");
        follower.apply(MetadataUpdate::decode(&wire).expect("decode"));
        fetches += 1;
    }
    report(
        &format!("broker fetch of the snapshot ({fetches} fetches) + replay"),
        started,
    );
    assert_eq!(*follower.image(), *quorum.image());
    drop(follower);
    drop(quorum);

    let started = Instant::now();
    let quorum = Quorum::open(
        config.clone(),
        FileDisk::open(dir.path()).expect("open disk"),
        Vec::new(),
    )
    .expect("reopen");
    report("restart: Quorum::open from the snapshot on disk", started);
    assert_eq!(quorum.image().partition_count(), partitions);
    drop(quorum);

    let mut quorum = Quorum::open(
        QuorumConfig {
            snapshot_after_entries: 1,
            ..config
        },
        FileDisk::open(dir.path()).expect("open disk"),
        Vec::new(),
    )
    .expect("reopen");
    let before = quorum.status().snapshot_index;
    let started = Instant::now();
    quorum
        .propose(
            vec![MetadataRecord::ProducerIds {
                next_producer_id: 1000,
            }],
            1,
        )
        .expect("propose");
    let out = quorum.handle_ready().expect("ready");
    report(
        "periodic snapshot: one commit + build + write + fsync",
        started,
    );
    assert_eq!(out.completed, vec![(1, Ok(()))]);
    assert!(
        quorum.status().snapshot_index > before,
        "a snapshot was saved"
    );
    drop(quorum);

    let snapshot = FileDisk::open(dir.path())
        .expect("open disk")
        .load()
        .expect("load")
        .snapshot;
    let data_bytes = snapshot.data.len();
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgSnapshot);
    message.from = 1;
    message.to = 2;
    message.set_snapshot(snapshot);
    let started = Instant::now();
    let mut decoder = MessageDecoder::new();
    let mut frames = 0;
    let mut received = None;
    for frame in message_frames(&message).expect("frames") {
        let (decoded, used) = decoder.decode(&frame).expect("decode").expect("whole");
        assert_eq!(used, frame.len());
        frames += 1;
        received = decoded.or(received);
    }
    report(
        &format!("raft transfer: {data_bytes} bytes in {frames} frames, encoded and reassembled"),
        started,
    );
    assert_eq!(received.expect("a message"), message);
}
