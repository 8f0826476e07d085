//! Issue 16's controller benchmark: one controller holding 1,000,000 partitions (1,000 topics ×
//! 1,000 partitions, replication factor 3 over brokers 1..=6), and the latency of a small metadata
//! commit against it. A commit is what the driver does for one operation: plan it against the
//! applied image, propose the batch, and run raft's Ready until it is appended, fsynced,
//! committed and applied (a single voter on a [`FileDisk`], so no network). The previous applied
//! image stays referenced meanwhile, as the metadata publisher holds the image it last served.
//!
//! Two series: `AlterPartition` (the partition's leader shrinks its ISR, then expands it back) and
//! `CreateTopics` of a one-partition topic. Prints p50 / p99 / max per series (and of the
//! [`ImageDelta`] a broker's publisher computes for each commit), and the process's
//! resident memory before the image is built, with it, and at its peak (`VmHWM`). Run twice: on a
//! [`FileDisk`] (what a controller does) and on a [`MemDisk`] (no fsync: the commit's own CPU
//! work); the memory figures of the second run start from what the first left allocated.
//! The raft log's entries since the last snapshot (here the ~176 MB that built the cluster) are
//! part of the resident memory, as on a real controller until its next snapshot.
//!
//! Not a criterion bench: p99 over individual commits is the figure asked for, and building the
//! image takes longer than criterion's warm-up.
//!
//! ```text
//! cargo bench -p skald-controller --bench commit
//! ```

mod cluster;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{cluster_batches, topic_id, REPLICATION_FACTOR};
use skald_controller::raft_disk::{FileDisk, MemDisk, RaftDisk};
use skald_controller::{
    AlterPartitionRequest, Controller, ControllerConfig, CreateTopicSpec, ImageDelta, IsrChange,
    IsrMember, MetadataImage, MetadataRecord, Quorum, QuorumConfig,
};

const TOPICS: usize = 1_000;
const PARTITIONS_PER_TOPIC: i32 = 1_000;
/// Topics per proposal while the cluster is built (about 9 MB of records each).
const TOPICS_PER_SETUP_BATCH: usize = 50;
/// Commits per series, unless `SKALD_BENCH_COMMITS` says otherwise.
const COMMITS: usize = 1_000;

/// This process's `VmRSS` and `VmHWM` in MiB.
fn memory_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kib| kib / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A single voter and the image it last published.
struct Bench<D: RaftDisk> {
    quorum: Quorum<D>,
    controller: Controller,
    published: Arc<MetadataImage>,
    token: u64,
    /// How long `ImageDelta::between` the published image and each new one took: what every
    /// broker's publisher computes per commit before touching the partitions it names.
    deltas: Vec<Duration>,
}

impl<D: RaftDisk> Bench<D> {
    /// Commits one planned batch; returns once it is applied.
    fn commit(&mut self, records: Vec<MetadataRecord>) {
        self.token += 1;
        self.quorum
            .propose(records, self.token)
            .expect("the single voter accepts the proposal");
        loop {
            let out = self.quorum.handle_ready().expect("ready");
            if let Some(image) = out.image {
                // The publisher takes the new image; the one it served goes.
                let start = Instant::now();
                std::hint::black_box(ImageDelta::between(&self.published, &image));
                self.deltas.push(start.elapsed());
                self.published = image;
            }
            if out
                .completed
                .iter()
                .any(|(token, result)| *token == self.token && result.is_ok())
            {
                return;
            }
        }
    }

    /// The leader of partition 0 of `topic` shrinks its ISR to itself, or expands it back.
    fn alter_partition(&mut self, topic: usize) {
        let image = self.quorum.image();
        let partition = &image
            .topic_by_id(topic_id(topic))
            .expect("topic")
            .partitions[&0];
        let new_isr = if partition.isr.len() == partition.replicas.len() {
            vec![partition.leader]
        } else {
            partition.replicas.clone()
        };
        let leader = partition.leader;
        let request = AlterPartitionRequest {
            broker_id: leader,
            broker_epoch: image.brokers[&leader].broker_epoch,
            partitions: vec![IsrChange {
                topic_id: topic_id(topic),
                partition: 0,
                leader_epoch: partition.leader_epoch,
                partition_epoch: partition.partition_epoch,
                new_isr: new_isr
                    .iter()
                    .map(|&broker_id| IsrMember {
                        broker_id,
                        broker_epoch: image.brokers[&broker_id].broker_epoch,
                    })
                    .collect(),
                leader_recovery_state: 0,
            }],
        };
        let planned = self.controller.alter_partition(&image, &request);
        assert!(
            matches!(&planned.reply, Ok(outcomes) if outcomes.iter().all(Result::is_ok)),
            "{:?}",
            planned.reply
        );
        drop(image);
        self.commit(planned.records);
    }

    fn create_topic(&mut self, name: String) {
        let image = self.quorum.image();
        let planned = self.controller.create_topics(
            &image,
            &[CreateTopicSpec {
                name,
                num_partitions: 1,
                replication_factor: REPLICATION_FACTOR as i16,
                ..CreateTopicSpec::default()
            }],
            false,
        );
        assert!(
            planned.reply.iter().all(Result::is_ok),
            "{:?}",
            planned.reply
        );
        drop(image);
        self.commit(planned.records);
    }
}

fn percentiles(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "  {name}: {} samples, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        ms(at(0.50)),
        ms(at(0.99)),
        ms(samples[samples.len() - 1]),
    );
}

fn main() {
    let commits = std::env::var("SKALD_BENCH_COMMITS")
        .ok()
        .and_then(|value| value.parse::<usize>().ok())
        .unwrap_or(COMMITS)
        .max(1);
    let disk_dir = tempfile::tempdir().expect("temp dir");
    println!("raft log on disk (FileDisk: append + fsync per commit):");
    run(FileDisk::open(disk_dir.path()).expect("open disk"), commits);
    println!("raft log in memory (MemDisk: the commit's CPU work alone):");
    run(MemDisk::new(), commits);
}

fn run<D: RaftDisk>(disk: D, commits: usize) {
    let (rss_start, _) = memory_mib();
    let started = Instant::now();
    // The brokers seed the quorum; the topics are committed as proposals, as CreateTopics would
    // (a snapshot of 1,000,000 partitions is more than one raft.log frame holds).
    let mut batches = cluster_batches(TOPICS, PARTITIONS_PER_TOPIC).into_iter();
    let quorum = Quorum::open(
        QuorumConfig::new(1, vec![1]),
        disk,
        vec![batches.next().expect("the brokers")],
    )
    .expect("bootstrap the quorum");
    let published = quorum.image();
    let mut bench = Bench {
        quorum,
        controller: Controller::new(ControllerConfig {
            node_id: 1,
            num_partitions: 1,
            default_replication_factor: REPLICATION_FACTOR as i16,
        }),
        published,
        token: 0,
        deltas: Vec::new(),
    };
    let batches: Vec<Vec<MetadataRecord>> = batches.collect();
    for chunk in batches.chunks(TOPICS_PER_SETUP_BATCH) {
        bench.commit(chunk.concat());
    }
    assert_eq!(
        bench.published.partition_count(),
        TOPICS * PARTITIONS_PER_TOPIC as usize
    );
    let (rss_built, _) = memory_mib();
    println!(
        "  {} partitions committed in {:.1} s; RSS {rss_start} MiB before, {rss_built} MiB \
         with the image",
        bench.published.partition_count(),
        started.elapsed().as_secs_f64()
    );
    bench.deltas.clear();
    let mut samples = Vec::with_capacity(commits);
    for i in 0..commits {
        let start = Instant::now();
        bench.alter_partition(i % TOPICS);
        samples.push(start.elapsed());
    }
    percentiles("AlterPartition (one ISR change)", samples);

    let mut samples = Vec::with_capacity(commits);
    for i in 0..commits {
        let start = Instant::now();
        bench.create_topic(format!("new-{i:05}"));
        samples.push(start.elapsed());
    }
    percentiles("CreateTopics (one partition)", samples);
    percentiles(
        "ImageDelta::between the published and the new image (not in the commit times)",
        std::mem::take(&mut bench.deltas),
    );

    let (rss_end, hwm) = memory_mib();
    println!(
        "  RSS after the commits {rss_end} MiB, peak {hwm} MiB; image of {} partitions",
        bench.published.partition_count()
    );
}
