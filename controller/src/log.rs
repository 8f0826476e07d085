//! The durable local metadata log: one line per committed record batch,
//! `<crc32c as 8 hex digits> <JSON array of versioned records>\n`, fsynced before a batch counts as
//! committed. A torn or corrupt tail (a crash mid-write) is truncated on open.
//!
//! A failed write is cut off again so the log stays usable. When that cut fails, or an fsync fails
//! (the batch may or may not be durable, and the page cache can no longer be trusted), the log stops
//! accepting batches until the process restarts and recovers it: Kafka halts on metadata-log I/O
//! errors; we refuse further metadata changes instead.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::record::{MetadataRecord, VersionedRecord, RECORD_VERSION};

/// Kafka's name for the metadata partition's directory.
pub const METADATA_DIR_NAME: &str = "__cluster_metadata-0";
/// The single-node metadata log, read only to seed a new quorum from it.
pub const LEGACY_METADATA_LOG: &str = "metadata.log";
const LOG_FILE_NAME: &str = LEGACY_METADATA_LOG;
/// The largest record batch written or read: room for ~100,000 partition records in one operation.
pub const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The file operations an append makes, behind a trait so tests can make them fail as a full disk
/// or a failing fsync does.
trait AppendFile: std::fmt::Debug + Send {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes and makes that durable.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

impl AppendFile for File {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(self, buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    // The file is opened in append mode, so the next write lands at the new end without a seek.
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)?;
        self.sync_all()
    }
}

/// An append-only file of committed metadata record batches.
#[derive(Debug)]
pub struct MetadataLog {
    path: PathBuf,
    file: Box<dyn AppendFile>,
    /// Bytes of whole batches in the file: where a failed write is cut back to.
    len: u64,
    /// Why the log stopped accepting batches, once it has.
    failed: Option<String>,
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
        let log = MetadataLog {
            path,
            file: Box::new(file),
            len: valid_bytes,
            failed: None,
        };
        Ok((log, batches))
    }

    /// Appends one batch and makes it durable. Only after this returns is the batch committed.
    ///
    /// A write error (a full disk) cuts the partial batch off again and returns [`Error::Io`]; the
    /// log stays usable. If that cut or the fsync fails, this and every later append return
    /// [`Error::Failed`] without writing.
    pub fn append(&mut self, records: &[MetadataRecord]) -> Result<()> {
        if let Some(reason) = &self.failed {
            return Err(Error::Failed {
                path: self.path.clone(),
                reason: reason.clone(),
            });
        }
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
        if let Err(source) = self.file.write_all(line.as_bytes()) {
            if let Err(cut) = self.file.truncate(self.len) {
                return Err(self.fail(format!(
                    "a write failed ({source}) and cutting the partial batch off failed too ({cut})"
                )));
            }
            return Err(Error::Io {
                path: self.path.clone(),
                source,
            });
        }
        if let Err(source) = self.file.sync_data() {
            return Err(self.fail(format!(
                "fsync failed ({source}), so the last batch may or may not be durable"
            )));
        }
        self.len += line.len() as u64;
        Ok(())
    }

    /// Stops the log accepting batches; returns the error that says so.
    fn fail(&mut self, reason: String) -> Error {
        tracing::error!(
            path = %self.path.display(),
            %reason,
            "the metadata log refuses further metadata changes until the server restarts"
        );
        self.failed = Some(reason.clone());
        Error::Failed {
            path: self.path.clone(),
            reason,
        }
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

    /// A file that fails as told: a write that stops part-way (a full disk), an fsync, a truncate.
    #[derive(Debug)]
    struct FaultyFile {
        inner: File,
        /// Write only this many bytes of each write, then fail.
        write_bytes_then_fail: Option<usize>,
        fail_sync: bool,
        fail_truncate: bool,
    }

    impl FaultyFile {
        /// A second handle on the log's file that fails nothing until told to.
        fn on(path: &Path) -> FaultyFile {
            FaultyFile {
                inner: OpenOptions::new().append(true).open(path).unwrap(),
                write_bytes_then_fail: None,
                fail_sync: false,
                fail_truncate: false,
            }
        }
    }

    impl AppendFile for FaultyFile {
        fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
            match self.write_bytes_then_fail {
                Some(written) => {
                    AppendFile::write_all(&mut self.inner, &buf[..written.min(buf.len())])?;
                    Err(io::Error::other("injected: no space left on device"))
                }
                None => AppendFile::write_all(&mut self.inner, buf),
            }
        }

        fn sync_data(&mut self) -> io::Result<()> {
            if self.fail_sync {
                return Err(io::Error::other("injected: fsync failed"));
            }
            AppendFile::sync_data(&mut self.inner)
        }

        fn truncate(&mut self, len: u64) -> io::Result<()> {
            if self.fail_truncate {
                return Err(io::Error::other("injected: truncate failed"));
            }
            AppendFile::truncate(&mut self.inner, len)
        }
    }

    fn failed_reason(result: Result<()>) -> String {
        match result {
            Err(Error::Failed { reason, .. }) => reason,
            other => panic!("expected Error::Failed, got {other:?}"),
        }
    }

    #[test]
    fn a_failed_write_is_cut_off_and_the_log_stays_usable() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = MetadataLog::open(dir.path()).unwrap();
        log.append(&[topic("a", 1)]).unwrap();
        let path = log.path().to_path_buf();
        let before = fs::read(&path).unwrap();
        log.file = Box::new(FaultyFile {
            write_bytes_then_fail: Some(10),
            ..FaultyFile::on(&path)
        });
        match log.append(&[topic("b", 2)]) {
            Err(Error::Io { source, .. }) => {
                assert_eq!(source.to_string(), "injected: no space left on device")
            }
            other => panic!("expected Error::Io, got {other:?}"),
        }
        assert_eq!(
            fs::read(&path).unwrap(),
            before,
            "the partial batch is cut off"
        );
        assert_eq!(log.failed, None);

        // The disk has room again: the next batch follows the last whole one.
        log.file = Box::new(FaultyFile::on(&path));
        log.append(&[topic("c", 3)]).unwrap();
        drop(log);
        let (_, batches) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(batches, vec![vec![topic("a", 1)], vec![topic("c", 3)]]);
    }

    #[test]
    fn a_failed_cut_after_a_failed_write_fails_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = MetadataLog::open(dir.path()).unwrap();
        log.append(&[topic("a", 1)]).unwrap();
        let path = log.path().to_path_buf();
        let before = fs::read(&path).unwrap();
        log.file = Box::new(FaultyFile {
            write_bytes_then_fail: Some(10),
            fail_truncate: true,
            ..FaultyFile::on(&path)
        });
        let reason = "a write failed (injected: no space left on device) and cutting the partial batch off failed too (injected: truncate failed)";
        assert_eq!(failed_reason(log.append(&[topic("b", 2)])), reason);
        let torn = fs::read(&path).unwrap();
        assert_eq!(torn.len(), before.len() + 10);

        // Even on a healthy disk, nothing more is written after the torn line.
        log.file = Box::new(FaultyFile::on(&path));
        assert_eq!(failed_reason(log.append(&[topic("c", 3)])), reason);
        assert_eq!(fs::read(&path).unwrap(), torn);
        drop(log);

        // A restart recovers: the torn line is the last, so it is cut off on open.
        let (_, batches) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(batches, vec![vec![topic("a", 1)]]);
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_failed_fsync_fails_the_log_and_later_appends_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = MetadataLog::open(dir.path()).unwrap();
        log.append(&[topic("a", 1)]).unwrap();
        let path = log.path().to_path_buf();
        log.file = Box::new(FaultyFile {
            fail_sync: true,
            ..FaultyFile::on(&path)
        });
        let reason =
            "fsync failed (injected: fsync failed), so the last batch may or may not be durable";
        assert_eq!(failed_reason(log.append(&[topic("b", 2)])), reason);
        let after = fs::read(&path).unwrap();

        log.file = Box::new(FaultyFile::on(&path));
        let err = log.append(&[topic("c", 3)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "metadata log {} refuses further metadata changes until the server restarts: {reason}",
                path.display()
            )
        );
        assert_eq!(fs::read(&path).unwrap(), after);
        drop(log);

        // The unsynced batch reached the file here; what a restart reads is the file, nothing more.
        let (_, batches) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(batches, vec![vec![topic("a", 1)], vec![topic("b", 2)]]);
    }

    #[test]
    fn broker_registrations_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = MetadataLog::open(dir.path()).unwrap();
        let record = MetadataRecord::RegisterBroker {
            broker_id: 1,
            incarnation_id: u64::MAX,
            broker_epoch: 3,
            endpoints: vec![crate::record::Endpoint {
                name: "PLAINTEXT".into(),
                host: "h".into(),
                port: 9092,
            }],
            rack: Some("r1".into()),
            fenced: true,
        };
        log.append(std::slice::from_ref(&record)).unwrap();
        drop(log);
        let (_, batches) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(batches, vec![vec![record]]);
    }

    #[test]
    fn registrations_written_before_fencing_existed_read_back_unfenced_with_epoch_zero() {
        let old = r#"{"version":1,"type":"RegisterBroker","broker_id":1,"incarnation_id":5,"endpoints":[],"rack":null}"#;
        let record: crate::record::VersionedRecord = serde_json::from_str(old).unwrap();
        assert_eq!(
            record.record,
            MetadataRecord::RegisterBroker {
                broker_id: 1,
                incarnation_id: 5,
                broker_epoch: 0,
                endpoints: Vec::new(),
                rack: None,
                fenced: false,
            }
        );
    }
}
