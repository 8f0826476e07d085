//! Partition directory names (`<topic>-<partition>`) and the scan of a `log.dirs` entry.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// Suffix of a partition directory being deleted (see [`crate::Log::delete`]).
pub const DELETE_DIR_SUFFIX: &str = "-delete";
/// Suffix of a replica's copy being made in another log dir (Kafka's future log, made by
/// AlterReplicaLogDirs): `<topic>-<partition>.<unique>-future`.
pub const FUTURE_DIR_SUFFIX: &str = "-future";

/// `orders-3` for topic `orders`, partition 3.
pub fn partition_dir_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

/// The inverse of [`partition_dir_name`]. Topics may contain `-`, so the split is at the last one;
/// the partition must be written canonically (no sign, no leading zeros).
pub fn parse_partition_dir_name(name: &str) -> Option<(String, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    let parsed: i32 = partition.parse().ok()?;
    if topic.is_empty() || parsed < 0 || parsed.to_string() != partition {
        return None;
    }
    Some((topic.to_string(), parsed))
}

/// Lists the partition directories under `path` as `(topic, partition, dir)`, sorted, creating
/// `path` if missing. Directories left by an interrupted delete (`…-delete`) are removed, and so
/// are copies a replica move left unfinished (`…-future`): the move is abandoned, the replica
/// stays where it was.
pub fn scan_log_dir(path: &Path) -> Result<Vec<(String, i32, PathBuf)>> {
    fs::create_dir_all(path).at(path)?;
    let mut partitions = Vec::new();
    for entry in fs::read_dir(path).at(path)? {
        let entry = entry.at(path)?;
        let dir = entry.path();
        if !entry.file_type().at(&dir)?.is_dir() {
            continue;
        }
        let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(DELETE_DIR_SUFFIX) {
            tracing::info!(dir = %dir.display(), "finishing the delete of a partition directory");
            fs::remove_dir_all(&dir).at(&dir)?;
            continue;
        }
        if name.ends_with(FUTURE_DIR_SUFFIX) {
            tracing::info!(dir = %dir.display(), "removing the copy of an unfinished replica move");
            fs::remove_dir_all(&dir).at(&dir)?;
            continue;
        }
        if let Some((topic, partition)) = parse_partition_dir_name(name) {
            partitions.push((topic, partition, dir));
        }
    }
    partitions.sort();
    Ok(partitions)
}
