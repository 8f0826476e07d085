//! DescribeLogDirs (v1–4): each of this broker's log dirs with the partitions it holds — size on
//! disk and offset lag (Kafka's: how far the log end is behind the high watermark, 0 for a
//! leader) — and (v4) the file system's total and usable bytes. An offline dir answers
//! KAFKA_STORAGE_ERROR; `topics: null` asks for every partition. What `kafka-log-dirs.sh
//! --describe` and Admin `describeLogDirs` read. A replica being moved by AlterReplicaLogDirs
//! also shows in its destination, as a future replica.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, body: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let wanted = |topic: &str, partition: i32| {
        body.topics.as_ref().is_none_or(|topics| {
            topics
                .iter()
                .any(|t| t.topic.as_str() == topic && t.partitions.contains(&partition))
        })
    };
    // Log dir → topic → partitions.
    let mut by_dir: BTreeMap<std::path::PathBuf, BTreeMap<String, Vec<DescribeLogDirsPartition>>> =
        BTreeMap::new();
    for partition in broker.replicas.all() {
        if !wanted(&partition.topic, partition.partition) {
            continue;
        }
        let Some(dir) = broker.replicas.log_dir_of(&partition.dir()) else {
            continue;
        };
        let Some(size) = partition.with_log(|log| log.size_bytes()) else {
            continue;
        };
        let lag = (partition.high_watermark() - partition.log_end_offset()).max(0);
        // A copy being made by AlterReplicaLogDirs shows in its destination as Kafka's future
        // replica, lagging the current log by what it has yet to copy.
        let future = partition
            .future
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .and_then(|future| Some((future.log_dir.clone(), future.progress()?)));
        if let Some((future_dir, (future_end, future_size))) = future {
            by_dir
                .entry(future_dir)
                .or_default()
                .entry(partition.topic.clone())
                .or_default()
                .push(
                    DescribeLogDirsPartition::default()
                        .with_partition_index(partition.partition)
                        .with_partition_size(i64::try_from(future_size).unwrap_or(i64::MAX))
                        .with_offset_lag((partition.log_end_offset() - future_end).max(0))
                        .with_is_future_key(true),
                );
        }
        by_dir
            .entry(dir)
            .or_default()
            .entry(partition.topic.clone())
            .or_default()
            .push(
                DescribeLogDirsPartition::default()
                    .with_partition_index(partition.partition)
                    .with_partition_size(i64::try_from(size).unwrap_or(i64::MAX))
                    .with_offset_lag(lag),
            );
    }
    let results = broker
        .replicas
        .log_dirs()
        .into_iter()
        .map(|(dir, online)| {
            let name = StrBytes::from_string(absolute(&dir));
            if !online {
                return DescribeLogDirsResult::default()
                    .with_log_dir(name)
                    .with_error_code(ResponseError::KafkaStorageError.code());
            }
            let topics = by_dir
                .remove(&dir)
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, mut partitions)| {
                    partitions.sort_by_key(|p| (p.partition_index, p.is_future_key));
                    DescribeLogDirsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic)))
                        .with_partitions(partitions)
                })
                .collect();
            let (total, usable) = space(&dir).unwrap_or((-1, -1));
            DescribeLogDirsResult::default()
                .with_log_dir(name)
                .with_topics(topics)
                .with_total_bytes(total)
                .with_usable_bytes(usable)
        })
        .collect();
    DescribeLogDirsResponse::default().with_results(results)
}

fn absolute(dir: &Path) -> String {
    std::path::absolute(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string()
}

/// The file system's total and usable (by an unprivileged writer) bytes under `dir`.
fn space(dir: &Path) -> Option<(i64, i64)> {
    let stats = rustix::fs::statvfs(dir).ok()?;
    let bytes = |blocks: u64| i64::try_from(blocks.saturating_mul(stats.f_frsize)).ok();
    Some((bytes(stats.f_blocks)?, bytes(stats.f_bavail)?))
}
