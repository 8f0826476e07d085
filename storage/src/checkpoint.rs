//! The per-log-dir files of Kafka's `LogManager`: the `recovery-point-offset-checkpoint` and the
//! `.kafka_cleanshutdown` marker.
//!
//! The checkpoint is Kafka's `OffsetCheckpointFile` format: a version line (`0`), an entry count,
//! then one `topic partition offset` line per partition. It is replaced atomically (temp file,
//! fsync, rename, fsync the directory), so a crash leaves the old checkpoint or the new one.
//! The marker is written after every log of the dir is closed and the checkpoint is written, and
//! removed as soon as the next start has seen it, so its presence means "nothing since the last
//! clean shutdown": recovery can be skipped.

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Kafka's recovery point checkpoint file, one per log dir.
pub const RECOVERY_POINT_CHECKPOINT_FILE: &str = "recovery-point-offset-checkpoint";
/// Kafka's clean shutdown marker, one per log dir.
pub const CLEAN_SHUTDOWN_FILE: &str = ".kafka_cleanshutdown";
/// The only version of the checkpoint format.
const CHECKPOINT_VERSION: &str = "0";

/// `(topic, partition) → offset`, as stored in an offset checkpoint file.
pub type OffsetCheckpoint = BTreeMap<(String, i32), i64>;

/// Reads an offset checkpoint file; `None` if there is none. A malformed file is an error (Kafka's
/// callers then fall back to recovering everything).
pub fn read_offset_checkpoint(path: &Path) -> Result<Option<OffsetCheckpoint>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).at(path),
    };
    let malformed = |why: String| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(ErrorKind::InvalidData, why),
    };
    let mut lines = text.lines();
    match lines.next() {
        Some(CHECKPOINT_VERSION) => {}
        other => return Err(malformed(format!("unknown checkpoint version {other:?}"))),
    }
    let count: usize = lines
        .next()
        .and_then(|line| line.trim().parse().ok())
        .ok_or_else(|| malformed("no entry count".into()))?;
    let mut entries = OffsetCheckpoint::new();
    for line in lines.by_ref().take(count) {
        let mut fields = line.split(' ');
        let (Some(topic), Some(partition), Some(offset), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed(format!("malformed line {line:?}")));
        };
        let (Ok(partition), Ok(offset)) = (partition.parse::<i32>(), offset.parse::<i64>()) else {
            return Err(malformed(format!("malformed line {line:?}")));
        };
        if topic.is_empty() || partition < 0 || offset < 0 {
            return Err(malformed(format!("malformed line {line:?}")));
        }
        entries.insert((topic.to_string(), partition), offset);
    }
    if entries.len() != count || lines.any(|line| !line.trim().is_empty()) {
        return Err(malformed(format!(
            "expected {count} entries, found {}",
            entries.len()
        )));
    }
    Ok(Some(entries))
}

/// Replaces the offset checkpoint file at `path` atomically.
pub fn write_offset_checkpoint(path: &Path, entries: &OffsetCheckpoint) -> Result<()> {
    let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", entries.len());
    for ((topic, partition), offset) in entries {
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    write_atomically(path, text.as_bytes())
}

/// Writes the clean shutdown marker in `log_dir` (durably: file and directory fsynced).
pub fn write_clean_shutdown_marker(log_dir: &Path) -> Result<()> {
    let path = log_dir.join(CLEAN_SHUTDOWN_FILE);
    fs::File::create(&path)
        .and_then(|file| file.sync_all())
        .at(&path)?;
    sync_dir(log_dir)
}

/// Removes the clean shutdown marker from `log_dir`, durably, and says whether it was there: a
/// crash from now on must not be mistaken for a clean shutdown.
pub fn take_clean_shutdown_marker(log_dir: &Path) -> Result<bool> {
    let path = log_dir.join(CLEAN_SHUTDOWN_FILE);
    match fs::remove_file(&path) {
        Ok(()) => {
            sync_dir(log_dir)?;
            Ok(true)
        }
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err).at(&path),
    }
}

/// Replaces the file at `path` with `bytes`: temp file (`<path>.tmp`), fsync, rename over, fsync the
/// directory, so a crash leaves the old contents or the new ones. Every checkpoint file uses it.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temp = path.as_os_str().to_os_string();
    temp.push(".tmp");
    let temp = std::path::PathBuf::from(temp);
    {
        let mut file = fs::File::create(&temp).at(&temp)?;
        file.write_all(bytes).at(&temp)?;
        file.sync_all().at(&temp)?;
    }
    fs::rename(&temp, path).at(path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_in_kafkas_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECOVERY_POINT_CHECKPOINT_FILE);
        assert_eq!(read_offset_checkpoint(&path).unwrap(), None);
        let entries = OffsetCheckpoint::from([
            (("orders".to_string(), 0), 42),
            (("orders".to_string(), 1), 0),
            (("my-topic.v2".to_string(), 10), 7),
        ]);
        write_offset_checkpoint(&path, &entries).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "0\n3\nmy-topic.v2 10 7\norders 0 42\norders 1 0\n"
        );
        assert_eq!(read_offset_checkpoint(&path).unwrap(), Some(entries));
        assert!(!dir
            .path()
            .join("recovery-point-offset-checkpoint.tmp")
            .exists());

        write_offset_checkpoint(&path, &OffsetCheckpoint::new()).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "0\n0\n");
        assert_eq!(
            read_offset_checkpoint(&path).unwrap(),
            Some(OffsetCheckpoint::new())
        );
    }

    #[test]
    fn malformed_checkpoints_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECOVERY_POINT_CHECKPOINT_FILE);
        for text in [
            "",
            "1\n0\n",
            "0\n",
            "0\n2\norders 0 1\n",
            "0\n1\norders 0\n",
            "0\n1\norders x 1\n",
            "0\n1\norders 0 -1\n",
            "0\n1\norders 0 1 2\n",
            "0\n1\norders 0 1\nextra 0 1\n",
        ] {
            fs::write(&path, text).unwrap();
            assert!(read_offset_checkpoint(&path).is_err(), "{text:?}");
        }
    }

    #[test]
    fn the_marker_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!take_clean_shutdown_marker(dir.path()).unwrap());
        write_clean_shutdown_marker(dir.path()).unwrap();
        assert!(dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
        assert!(take_clean_shutdown_marker(dir.path()).unwrap());
        assert!(!dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
        assert!(!take_clean_shutdown_marker(dir.path()).unwrap());
    }
}
