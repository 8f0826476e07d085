//! Brokers that are not controllers follow the metadata by asking a controller for what committed
//! since the index they have applied ([`crate::Quorum::committed_since`]) and replaying it with the
//! same [`MetadataImage::replay`] the controllers use. They are not raft members: they cannot vote,
//! slow no commit, and need no raft log of their own. A controller serves only committed data, so
//! a follower's image is always a prefix of the quorum's history.
//!
//! A follower whose index the controller has compacted away fetches the controller's snapshot
//! instead, as Kafka's FetchSnapshot does (KIP-630): the bytes of the controller's `snapshot`
//! file, a bounded chunk per request by position, each frame checked as soon as it is whole,
//! then replayed into a fresh image. A snapshot replaced on the controller meanwhile is started
//! again from its first byte.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::image::MetadataImage;
use crate::log::BATCH_BYTES_MAX;
use crate::raft_store::image_from_snapshot;
use crate::record::{MetadataRecord, VersionedRecord, RECORD_VERSION};
use crate::snapshot_chunks::{SnapshotReader, SNAPSHOT_FILE_BYTES_MAX};

/// The most snapshot bytes one update carries: the chunk travels hex-encoded in a JSON body, so
/// an 8 MiB update.
pub const SNAPSHOT_FETCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// What a controller answers a follower that has applied up to some index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataUpdate {
    /// Nothing committed after that index (as far as this controller has applied).
    UpToDate,
    /// The committed batches right after that index, in order and without gaps. A batch with no
    /// records (a new leader's no-op) only advances the index.
    Entries {
        batches: Vec<(u64, Vec<MetadataRecord>)>,
    },
    /// The index was compacted away (or the follower asked for it): bytes of the controller's
    /// snapshot at `index` in its file form, from `position`, of `total_bytes` in all.
    SnapshotChunk {
        index: u64,
        position: u64,
        total_bytes: u64,
        bytes: Vec<u8>,
    },
}

/// What a follower asks a controller for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataFetch {
    /// Committed batches after this index.
    After(u64),
    /// The rest of the snapshot at `index`, from `position`.
    Snapshot { index: u64, position: u64 },
}

/// The wire form: records inside their versioned envelope.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind")]
enum WireUpdate {
    UpToDate,
    Entries {
        batches: Vec<(u64, Vec<VersionedRecord>)>,
    },
    SnapshotChunk {
        index: u64,
        position: u64,
        total_bytes: u64,
        /// Hex: JSON has no bytes.
        bytes: String,
    },
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 15)]);
    }
    // Only ASCII digits were pushed.
    String::from_utf8(out).unwrap_or_default()
}

fn from_hex(hex: &str) -> Result<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(Error::Frame("invalid hex in a snapshot chunk".into())),
    };
    let hex = hex.as_bytes();
    if !hex.len().is_multiple_of(2) {
        return Err(Error::Frame("odd hex length in a snapshot chunk".into()));
    }
    hex.chunks_exact(2)
        .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

fn versioned(records: &[MetadataRecord]) -> Vec<VersionedRecord> {
    records.iter().cloned().map(VersionedRecord::from).collect()
}

fn unversioned(records: Vec<VersionedRecord>) -> Result<Vec<MetadataRecord>> {
    records
        .into_iter()
        .map(|record| {
            if record.version > RECORD_VERSION {
                return Err(Error::Frame(format!(
                    "record version {} is newer than this Skald's {RECORD_VERSION}",
                    record.version
                )));
            }
            Ok(record.record)
        })
        .collect()
}

impl MetadataUpdate {
    /// Encodes the update for the wire (JSON; at most [`BATCH_BYTES_MAX`] bytes).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let wire = match self {
            MetadataUpdate::UpToDate => WireUpdate::UpToDate,
            MetadataUpdate::Entries { batches } => WireUpdate::Entries {
                batches: batches
                    .iter()
                    .map(|(index, records)| (*index, versioned(records)))
                    .collect(),
            },
            MetadataUpdate::SnapshotChunk {
                index,
                position,
                total_bytes,
                bytes,
            } => WireUpdate::SnapshotChunk {
                index: *index,
                position: *position,
                total_bytes: *total_bytes,
                bytes: to_hex(bytes),
            },
        };
        let bytes = serde_json::to_vec(&wire)?;
        if bytes.len() > BATCH_BYTES_MAX {
            return Err(Error::BatchTooLarge {
                size: bytes.len(),
                max: BATCH_BYTES_MAX,
            });
        }
        Ok(bytes)
    }

    pub fn decode(bytes: &[u8]) -> Result<MetadataUpdate> {
        if bytes.len() > BATCH_BYTES_MAX {
            return Err(Error::BatchTooLarge {
                size: bytes.len(),
                max: BATCH_BYTES_MAX,
            });
        }
        let wire: WireUpdate = serde_json::from_slice(bytes)
            .map_err(|err| Error::Frame(format!("invalid metadata update: {err}")))?;
        Ok(match wire {
            WireUpdate::UpToDate => MetadataUpdate::UpToDate,
            WireUpdate::Entries { batches } => MetadataUpdate::Entries {
                batches: batches
                    .into_iter()
                    .map(|(index, records)| Ok((index, unversioned(records)?)))
                    .collect::<Result<_>>()?,
            },
            WireUpdate::SnapshotChunk {
                index,
                position,
                total_bytes,
                bytes,
            } => MetadataUpdate::SnapshotChunk {
                index,
                position,
                total_bytes,
                bytes: from_hex(&bytes)?,
            },
        })
    }
}

/// A broker's copy of the metadata, kept current from a controller's [`MetadataUpdate`]s.
#[derive(Debug, Default)]
pub struct MetadataFollower {
    image: Arc<MetadataImage>,
    applied_index: u64,
    /// A snapshot being fetched.
    snapshot: Option<SnapshotFetch>,
}

#[derive(Debug)]
struct SnapshotFetch {
    index: u64,
    total_bytes: u64,
    /// Bytes read so far.
    position: u64,
    reader: SnapshotReader,
}

impl MetadataFollower {
    /// A follower that has applied nothing: its first update is a snapshot.
    pub fn new() -> MetadataFollower {
        MetadataFollower::default()
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.clone()
    }

    /// The index to ask for updates after (Kafka's `current_metadata_offset`).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// What to ask a controller for next.
    pub fn next_fetch(&self) -> MetadataFetch {
        match &self.snapshot {
            Some(fetch) => MetadataFetch::Snapshot {
                index: fetch.index,
                position: fetch.position,
            },
            None => MetadataFetch::After(self.applied_index),
        }
    }

    /// Applies an update; returns whether the image changed. Batches already applied are
    /// skipped; a batch after a gap (an update meant for another index) stops the apply there.
    /// A snapshot chunk that does not continue the snapshot being fetched starts it again (or
    /// is dropped, if it is not a first chunk); a snapshot that fails its checks is dropped
    /// with a log line, and the next fetch starts over.
    pub fn apply(&mut self, update: MetadataUpdate) -> bool {
        match update {
            MetadataUpdate::UpToDate => false,
            MetadataUpdate::SnapshotChunk {
                index,
                position,
                total_bytes,
                bytes,
            } => match self.apply_chunk(index, position, total_bytes, &bytes) {
                Ok(changed) => changed,
                Err(reason) => {
                    tracing::warn!(index, position, "dropping a metadata snapshot: {reason}");
                    self.snapshot = None;
                    false
                }
            },
            MetadataUpdate::Entries { batches } => {
                self.snapshot = None;
                let mut changed = false;
                for (index, records) in batches {
                    if index <= self.applied_index {
                        continue;
                    }
                    if index != self.applied_index + 1 {
                        tracing::warn!(
                            index,
                            applied_index = self.applied_index,
                            "metadata update skips ahead; ignoring the rest of it"
                        );
                        break;
                    }
                    if !records.is_empty() {
                        Arc::make_mut(&mut self.image).replay_batch(&records);
                        changed = true;
                    }
                    self.applied_index = index;
                }
                changed
            }
        }
    }

    fn apply_chunk(
        &mut self,
        index: u64,
        position: u64,
        total_bytes: u64,
        bytes: &[u8],
    ) -> Result<bool, String> {
        if index <= self.applied_index {
            self.snapshot = None;
            return Ok(false);
        }
        if position == 0 {
            if total_bytes > SNAPSHOT_FILE_BYTES_MAX {
                return Err(format!(
                    "{total_bytes} bytes exceed the limit of {SNAPSHOT_FILE_BYTES_MAX}"
                ));
            }
            self.snapshot = Some(SnapshotFetch {
                index,
                total_bytes,
                position: 0,
                reader: SnapshotReader::new(),
            });
        }
        let Some(fetch) = self.snapshot.as_mut() else {
            return Err("a chunk of a snapshot not being fetched".into());
        };
        if (fetch.index, fetch.position, fetch.total_bytes) != (index, position, total_bytes) {
            return Err(format!(
                "a chunk at {position} of {total_bytes} bytes of snapshot {index} continues \
                 nothing (fetching {} at {} of {})",
                fetch.index, fetch.position, fetch.total_bytes
            ));
        }
        let end = position + bytes.len() as u64;
        if end > total_bytes || (bytes.is_empty() && end < total_bytes) {
            return Err(format!("a chunk of {} bytes at {position}", bytes.len()));
        }
        fetch.reader.push(bytes)?;
        fetch.position = end;
        if end < total_bytes {
            return Ok(false);
        }
        let Some(fetch) = self.snapshot.take() else {
            return Ok(false);
        };
        let snapshot = fetch.reader.finish()?;
        if snapshot.get_metadata().index != index {
            return Err(format!(
                "the snapshot's own index is {}",
                snapshot.get_metadata().index
            ));
        }
        let image = image_from_snapshot(&snapshot).map_err(|err| err.to_string())?;
        self.image = Arc::new(image);
        self.applied_index = index;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft_store::encode_records;
    use crate::record::TopicId;
    use crate::snapshot_chunks::ChunkedFrames;
    use raft::eraftpb::Snapshot;

    fn topic(name: &str, id: u128) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.into(),
            topic_id: TopicId(id),
        }
    }

    /// The `snapshot` file a controller would serve for an image of `records` at `index`.
    fn snapshot_file(index: u64, records: &[MetadataRecord]) -> Vec<u8> {
        let mut snapshot = Snapshot {
            data: encode_records(records).unwrap().into(),
            ..Snapshot::default()
        };
        snapshot.mut_metadata().index = index;
        snapshot.mut_metadata().term = 1;
        ChunkedFrames::of_snapshot(&snapshot).unwrap().concat()
    }

    /// Applies the first `upto` bytes of `file` in chunks of `chunk` bytes, as fetched one by
    /// one; the result of the last.
    fn fetch_upto(
        follower: &mut MetadataFollower,
        index: u64,
        file: &[u8],
        upto: usize,
        chunk: usize,
    ) -> bool {
        let mut changed = false;
        for (i, bytes) in file[..upto].chunks(chunk).enumerate() {
            changed = follower.apply(MetadataUpdate::SnapshotChunk {
                index,
                position: (i * chunk) as u64,
                total_bytes: file.len() as u64,
                bytes: bytes.to_vec(),
            });
        }
        changed
    }

    fn fetch_in_chunks(
        follower: &mut MetadataFollower,
        index: u64,
        file: &[u8],
        chunk: usize,
    ) -> bool {
        fetch_upto(follower, index, file, file.len(), chunk)
    }

    #[test]
    fn updates_round_trip_through_their_wire_form() {
        for update in [
            MetadataUpdate::UpToDate,
            MetadataUpdate::Entries {
                batches: vec![(5, vec![topic("a", 1)]), (6, vec![])],
            },
            MetadataUpdate::SnapshotChunk {
                index: 9,
                position: 3,
                total_bytes: 300,
                bytes: (0..=255).collect(),
            },
        ] {
            let bytes = update.encode().unwrap();
            assert_eq!(MetadataUpdate::decode(&bytes).unwrap(), update);
        }
        assert!(matches!(
            MetadataUpdate::decode(b"{\"kind\":\"Nope\"}"),
            Err(Error::Frame(_))
        ));
        for hex in ["0", "0g", "AB"] {
            let json = format!(
                r#"{{"kind":"SnapshotChunk","index":1,"position":0,"total_bytes":1,"bytes":"{hex}"}}"#
            );
            assert!(matches!(
                MetadataUpdate::decode(json.as_bytes()),
                Err(Error::Frame(_))
            ));
        }
    }

    #[test]
    fn a_follower_applies_a_snapshot_then_entries_in_order_only() {
        let mut follower = MetadataFollower::new();
        assert!(!follower.apply(MetadataUpdate::UpToDate));
        let file = snapshot_file(4, &[topic("a", 1)]);
        assert!(!fetch_upto(&mut follower, 4, &file, 20, 10));
        assert_eq!(
            follower.next_fetch(),
            MetadataFetch::Snapshot {
                index: 4,
                position: 20
            }
        );
        assert!(follower.apply(MetadataUpdate::SnapshotChunk {
            index: 4,
            position: 20,
            total_bytes: file.len() as u64,
            bytes: file[20..].to_vec(),
        }));
        assert_eq!(follower.applied_index(), 4);
        assert_eq!(follower.next_fetch(), MetadataFetch::After(4));
        // 3 and 4 are old, 5 and 6 apply, 8 is after a gap.
        assert!(follower.apply(MetadataUpdate::Entries {
            batches: vec![
                (3, vec![topic("old", 9)]),
                (5, vec![topic("b", 2)]),
                (6, vec![]),
                (8, vec![topic("c", 3)]),
            ],
        }));
        assert_eq!(follower.applied_index(), 6);
        let image = follower.image();
        let names: Vec<&String> = image.topics.keys().collect();
        assert_eq!(names, vec!["a", "b"]);
        // An older snapshot changes nothing.
        assert!(!fetch_in_chunks(
            &mut follower,
            5,
            &snapshot_file(5, &[]),
            1 << 20
        ));
        assert_eq!(follower.image().topics.len(), 2);
    }

    #[test]
    fn a_corrupt_truncated_or_mismatched_snapshot_is_dropped_and_fetched_again() {
        let records = [topic("a", 1), topic("b", 2)];
        let file = snapshot_file(7, &records);
        let chunk = |position: usize, bytes: &[u8], total: usize| MetadataUpdate::SnapshotChunk {
            index: 7,
            position: position as u64,
            total_bytes: total as u64,
            bytes: bytes.to_vec(),
        };
        for flip in [0, 5, 30, file.len() - 1] {
            let mut follower = MetadataFollower::new();
            let mut bad = file.clone();
            bad[flip] ^= 0x04;
            assert!(
                !fetch_in_chunks(&mut follower, 7, &bad, 16),
                "flip at {flip}"
            );
            assert_eq!(follower.applied_index(), 0);
            assert_eq!(
                follower.next_fetch(),
                MetadataFetch::After(0),
                "starts over"
            );
        }
        // Announced longer than it is: it never completes; cut short: it fails at its end.
        let mut follower = MetadataFollower::new();
        assert!(!follower.apply(chunk(0, &file, file.len() + 1)));
        assert_eq!(
            follower.next_fetch(),
            MetadataFetch::Snapshot {
                index: 7,
                position: file.len() as u64
            }
        );
        assert!(!follower.apply(chunk(file.len(), &[], file.len() + 1)));
        assert_eq!(follower.next_fetch(), MetadataFetch::After(0));
        assert!(!follower.apply(chunk(0, &file[..file.len() - 3], file.len() - 3)));
        assert_eq!(follower.next_fetch(), MetadataFetch::After(0));
        // A chunk that continues nothing, or runs past the end.
        assert!(!follower.apply(chunk(16, &file[16..], file.len())));
        assert!(!follower.apply(chunk(0, &file[..16], 10)));
        assert_eq!(follower.next_fetch(), MetadataFetch::After(0));
        // A restart from the first byte (the controller saved a new snapshot) wins.
        assert!(!follower.apply(chunk(0, &file[..16], file.len())));
        assert!(follower.apply(chunk(0, &file, file.len())));
        assert_eq!(follower.applied_index(), 7);
        assert_eq!(follower.image().topics.len(), 2);
        // Over the size limit before a byte is kept.
        let mut follower = MetadataFollower::new();
        assert!(!follower.apply(chunk(0, &file[..1], SNAPSHOT_FILE_BYTES_MAX as usize + 1)));
        assert_eq!(follower.next_fetch(), MetadataFetch::After(0));
    }
}
