//! The durable local metadata log: one line per committed record batch,
//! `<crc32c as 8 hex digits> <JSON array of versioned records>\n`, fsynced before a batch counts as
//! committed. A torn or corrupt tail (a crash mid-write) is truncated on open.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::record::{MetadataRecord, VersionedRecord, RECORD_VERSION};

/// Kafka's name for the metadata partition's directory.
pub const METADATA_DIR_NAME: &str = "__cluster_metadata-0";
const LOG_FILE_NAME: &str = "metadata.log";
/// The largest record batch written or read: room for ~100,000 partition records in one operation.
pub const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// An append-only file of committed metadata record batches.
#[derive(Debug)]
pub struct MetadataLog {
    path: PathBuf,
    file: File,
}

impl MetadataLog {
    /// Opens (or creates) the log under `metadata_dir`, returning it with every valid batch in order.
    pub fn open(metadata_dir: &Path) -> Result<(MetadataLog, Vec<Vec<MetadataRecord>>)> {
        let dir = metadata_dir.join(METADATA_DIR_NAME);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(LOG_FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io(&path))?;
        let (batches, valid_bytes) = read_batches(&file, &path)?;
        let file_bytes = file.metadata().map_err(io(&path))?.len();
        if valid_bytes < file_bytes {
            tracing::warn!(
                path = %path.display(),
                valid_bytes,
                file_bytes,
                "truncating an invalid tail of the metadata log (a write torn by a crash)"
            );
            file.set_len(valid_bytes).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        file.seek(SeekFrom::End(0)).map_err(io(&path))?;
        Ok((MetadataLog { path, file }, batches))
    }

    /// Appends one batch and makes it durable. Only after this returns is the batch committed.
    pub fn append(&mut self, records: &[MetadataRecord]) -> Result<()> {
        let versioned: Vec<VersionedRecord> =
            records.iter().cloned().map(VersionedRecord::from).collect();
        let json = serde_json::to_string(&versioned)?;
        if json.len() > BATCH_BYTES_MAX {
            return Err(Error::BatchTooLarge {
                size: json.len(),
                max: BATCH_BYTES_MAX,
            });
        }
        let line = format!("{:08x} {json}\n", crc32c::crc32c(json.as_bytes()));
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads every batch; returns them and the length of the valid prefix. Only the last line may be
/// invalid (a write torn by a crash); an invalid line with more data after it, or a line whose
/// checksum holds but whose records cannot be read, is corruption and an error.
fn read_batches(file: &File, path: &Path) -> Result<(Vec<Vec<MetadataRecord>>, u64)> {
    let mut reader = BufReader::new(file);
    let mut batches = Vec::new();
    let mut valid_bytes = 0u64;
    let mut line = Vec::new();
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    loop {
        line.clear();
        let read = (&mut reader)
            .take(BATCH_BYTES_MAX as u64 + 16)
            .read_until(b'\n', &mut line)
            .map_err(io)?;
        if read == 0 {
            break;
        }
        match parse_line(&line) {
            Ok(batch) => {
                batches.push(batch);
                valid_bytes += read as u64;
            }
            Err(LineError::Torn) if reader.fill_buf().map_err(io)?.is_empty() => break,
            Err(LineError::Torn) => {
                return Err(Error::Corrupt {
                    position: valid_bytes,
                    path: path.to_path_buf(),
                    reason: "a record batch fails its checksum but is not the last".into(),
                })
            }
            Err(LineError::Unreadable(reason)) => {
                return Err(Error::Corrupt {
                    position: valid_bytes,
                    path: path.to_path_buf(),
                    reason,
                })
            }
        }
    }
    Ok((batches, valid_bytes))
}

enum LineError {
    /// Incomplete or failing its checksum: what a crash mid-write leaves.
    Torn,
    /// Intact but not understood: never silently dropped.
    Unreadable(String),
}

fn parse_line(line: &[u8]) -> Result<Vec<MetadataRecord>, LineError> {
    let line = line.strip_suffix(b"\n").ok_or(LineError::Torn)?;
    let (Some(crc_hex), Some(b' '), Some(json)) = (line.get(..8), line.get(8), line.get(9..))
    else {
        return Err(LineError::Torn);
    };
    let crc = std::str::from_utf8(crc_hex)
        .ok()
        .and_then(|hex| u32::from_str_radix(hex, 16).ok());
    if crc != Some(crc32c::crc32c(json)) {
        return Err(LineError::Torn);
    }
    let versioned: Vec<VersionedRecord> =
        serde_json::from_slice(json).map_err(|err| LineError::Unreadable(err.to_string()))?;
    if let Some(newer) = versioned
        .iter()
        .find(|record| record.version > RECORD_VERSION)
    {
        return Err(LineError::Unreadable(format!(
            "record version {} is newer than this Skald's {RECORD_VERSION}",
            newer.version
        )));
    }
    Ok(versioned.into_iter().map(|record| record.record).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::TopicId;

    fn topic(name: &str, id: u128) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.into(),
            topic_id: TopicId(id),
        }
    }

    #[test]
    fn batches_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, batches) = MetadataLog::open(dir.path()).unwrap();
        assert!(batches.is_empty());
        log.append(&[topic("a", 1), topic("b", 2)]).unwrap();
        log.append(&[topic("c", 3)]).unwrap();
        drop(log);
        let (_, batches) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(
            batches,
            vec![vec![topic("a", 1), topic("b", 2)], vec![topic("c", 3)]]
        );
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_truncated_at_every_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = MetadataLog::open(dir.path()).unwrap();
        log.append(&[topic("a", 1)]).unwrap();
        let path = log.path().to_path_buf();
        drop(log);
        let first_len = fs::metadata(&path).unwrap().len();
        let (mut log, _) = MetadataLog::open(dir.path()).unwrap();
        log.append(&[topic("b", 2)]).unwrap();
        drop(log);
        let full = fs::read(&path).unwrap();
        for cut in first_len as usize..full.len() {
            fs::write(&path, &full[..cut]).unwrap();
            let (mut log, batches) = MetadataLog::open(dir.path()).unwrap();
            assert_eq!(batches, vec![vec![topic("a", 1)]], "cut at {cut}");
            assert_eq!(fs::metadata(&path).unwrap().len(), first_len);
            // Appending after recovery continues from the valid prefix.
            log.append(&[topic("c", 3)]).unwrap();
            drop(log);
            let (_, batches) = MetadataLog::open(dir.path()).unwrap();
            assert_eq!(batches, vec![vec![topic("a", 1)], vec![topic("c", 3)]]);
        }
        let mut corrupt = full.clone();
        corrupt[first_len as usize + 12] ^= 0x01;
        fs::write(&path, &corrupt).unwrap();
        let (_, batches) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(batches, vec![vec![topic("a", 1)]]);
    }

    #[test]
    fn corruption_before_the_tail_or_unreadable_records_refuse_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = MetadataLog::open(dir.path()).unwrap();
        log.append(&[topic("a", 1)]).unwrap();
        log.append(&[topic("b", 2)]).unwrap();
        let path = log.path().to_path_buf();
        drop(log);
        let full = fs::read(&path).unwrap();
        let mut corrupt = full.clone();
        corrupt[12] ^= 0x01;
        fs::write(&path, &corrupt).unwrap();
        let err = MetadataLog::open(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { position: 0, .. }), "{err}");
        assert_eq!(
            fs::read(&path).unwrap(),
            corrupt,
            "nothing may be truncated"
        );

        let json = r#"[{"version":1,"type":"NoSuchRecord"}]"#;
        fs::write(
            &path,
            format!("{:08x} {json}\n", crc32c::crc32c(json.as_bytes())),
        )
        .unwrap();
        assert!(matches!(
            MetadataLog::open(dir.path()),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn broker_registrations_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = MetadataLog::open(dir.path()).unwrap();
        let record = MetadataRecord::RegisterBroker {
            broker_id: 1,
            incarnation_id: u64::MAX,
            endpoints: vec![crate::record::Endpoint {
                name: "PLAINTEXT".into(),
                host: "h".into(),
                port: 9092,
            }],
            rack: Some("r1".into()),
        };
        log.append(std::slice::from_ref(&record)).unwrap();
        drop(log);
        let (_, batches) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(batches, vec![vec![record]]);
    }
}
