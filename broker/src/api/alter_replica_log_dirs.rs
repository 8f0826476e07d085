//! AlterReplicaLogDirs (v1–2): moves replicas hosted here to another of this broker's log dirs
//! (`replication::alter_log_dirs`), what Admin `alterReplicaLogDirs` and the `log_dirs` of a
//! `kafka-reassign-partitions.sh` plan send. Per partition, Kafka's `alterReplicaLogDirs`
//! answers: LOG_DIR_NOT_FOUND for a path that is not one of `log.dirs` (compared as absolute
//! paths), KAFKA_STORAGE_ERROR for an offline destination or partition (or, for a new move, any
//! offline dir), REPLICA_NOT_AVAILABLE for a partition not hosted here, INVALID_TOPIC_EXCEPTION
//! when the copy's directory name would pass 255 bytes, and NONE once the move is under way — or
//! at once when the replica is already in that dir. A move to another dir under way is cancelled
//! first (a request for the dir the replica is in cancels it outright). Unlike Kafka, a
//! destination is not remembered for a partition not yet hosted here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::{AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse};

use crate::broker::Broker;
use crate::replication::alter_log_dirs;

/// The longest file name Kafka lets a future log directory have.
const DIR_NAME_BYTES_MAX: usize = 255;

pub fn handle(
    broker: &Arc<Broker>,
    request: AlterReplicaLogDirsRequest,
) -> AlterReplicaLogDirsResponse {
    // One destination per partition; a partition named under two dirs goes to the last (Kafka
    // builds a map from the request).
    let mut wanted: BTreeMap<(String, i32), String> = BTreeMap::new();
    for dir in &request.dirs {
        for topic in &dir.topics {
            for partition in &topic.partitions {
                wanted.insert((topic.name.to_string(), *partition), dir.path.to_string());
            }
        }
    }
    // (as configured, absolute, online)
    let log_dirs: Vec<(PathBuf, PathBuf, bool)> = broker
        .replicas
        .log_dirs()
        .into_iter()
        .map(|(dir, online)| {
            let absolute = absolute(&dir);
            (dir, absolute, online)
        })
        .collect();
    let mut results: BTreeMap<String, Vec<AlterReplicaLogDirPartitionResult>> = BTreeMap::new();
    for ((topic, index), path) in wanted {
        let error = alter(broker, &log_dirs, &topic, index, &path)
            .err()
            .map_or(0, |error| error.code());
        results.entry(topic).or_default().push(
            AlterReplicaLogDirPartitionResult::default()
                .with_partition_index(index)
                .with_error_code(error),
        );
    }
    AlterReplicaLogDirsResponse::default().with_results(
        results
            .into_iter()
            .map(|(topic, partitions)| {
                AlterReplicaLogDirTopicResult::default()
                    .with_topic_name(super::topic_name(&topic))
                    .with_partitions(partitions)
            })
            .collect(),
    )
}

/// One partition's move, in Kafka's order of checks.
fn alter(
    broker: &Arc<Broker>,
    log_dirs: &[(PathBuf, PathBuf, bool)],
    topic: &str,
    index: i32,
    path: &str,
) -> Result<(), ResponseError> {
    let name = skald_storage::partition_dir_name(topic, index);
    if alter_log_dirs::future_dir_name_len(&name) > DIR_NAME_BYTES_MAX {
        return Err(ResponseError::InvalidTopicException);
    }
    let destination = absolute(Path::new(path));
    let (log_dir, absolute_dir, online) = log_dirs
        .iter()
        .find(|(_, dir, _)| *dir == destination)
        .ok_or(ResponseError::LogDirNotFound)?;
    if !online {
        return Err(ResponseError::KafkaStorageError);
    }
    let partition = broker
        .replicas
        .get(topic, index)
        .ok_or(ResponseError::ReplicaNotAvailable)?;
    if broker.replicas.is_offline(&partition) {
        return Err(ResponseError::KafkaStorageError);
    }
    // Kafka's `futureReplicaDirChanged`: a move elsewhere stops; one to this dir carries on.
    let cancelled = {
        let mut future = partition
            .future
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if future
            .as_ref()
            .is_some_and(|future| future.log_dir == *log_dir)
        {
            return Ok(());
        }
        future.take()
    };
    if let Some(future) = cancelled {
        tracing::info!(
            topic,
            partition = index,
            "the replica's move to {} is cancelled",
            future.log_dir.display()
        );
        future.discard();
    }
    if absolute(&partition.dir()).starts_with(absolute_dir) {
        return Ok(());
    }
    // Kafka makes no copy while a log dir is offline, so a partition never gets copies in two.
    if log_dirs.iter().any(|(_, _, online)| !online) {
        return Err(ResponseError::KafkaStorageError);
    }
    alter_log_dirs::start(broker, &partition, log_dir).map_err(|err| {
        tracing::error!(
            topic,
            partition = index,
            "cannot start a copy of the replica in {}: {err}",
            log_dir.display()
        );
        ResponseError::KafkaStorageError
    })
}

fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}
