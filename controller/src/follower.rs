//! Brokers that are not controllers follow the metadata by asking a controller for what committed
//! since the index they have applied ([`crate::Quorum::committed_since`]) and replaying it with the
//! same [`MetadataImage::replay`] the controllers use. They are not raft members: they cannot vote,
//! slow no commit, and need no raft log of their own. A controller serves only committed data, so
//! a follower's image is always a prefix of the quorum's history.
//!
//! A follower whose index the controller has compacted away gets the whole image as a snapshot.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::image::MetadataImage;
use crate::log::BATCH_BYTES_MAX;
use crate::record::{MetadataRecord, VersionedRecord, RECORD_VERSION};

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
    /// The index was compacted away: the image as of `index`, as records to replay from empty.
    Snapshot {
        index: u64,
        records: Vec<MetadataRecord>,
    },
}

/// The wire form: records inside their versioned envelope.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind")]
enum WireUpdate {
    UpToDate,
    Entries {
        batches: Vec<(u64, Vec<VersionedRecord>)>,
    },
    Snapshot {
        index: u64,
        records: Vec<VersionedRecord>,
    },
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
            MetadataUpdate::Snapshot { index, records } => WireUpdate::Snapshot {
                index: *index,
                records: versioned(records),
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
            WireUpdate::Snapshot { index, records } => MetadataUpdate::Snapshot {
                index,
                records: unversioned(records)?,
            },
        })
    }
}

/// A broker's copy of the metadata, kept current from a controller's [`MetadataUpdate`]s.
#[derive(Debug, Clone, Default)]
pub struct MetadataFollower {
    image: Arc<MetadataImage>,
    applied_index: u64,
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

    /// Applies an update; returns whether the image changed. Batches already applied are
    /// skipped; a batch after a gap (an update meant for another index) stops the apply there.
    pub fn apply(&mut self, update: MetadataUpdate) -> bool {
        match update {
            MetadataUpdate::UpToDate => false,
            MetadataUpdate::Snapshot { index, records } => {
                if index <= self.applied_index {
                    return false;
                }
                let mut image = MetadataImage::default();
                image.replay_batch(&records);
                self.image = Arc::new(image);
                self.applied_index = index;
                true
            }
            MetadataUpdate::Entries { batches } => {
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
    fn updates_round_trip_through_their_wire_form() {
        for update in [
            MetadataUpdate::UpToDate,
            MetadataUpdate::Entries {
                batches: vec![(5, vec![topic("a", 1)]), (6, vec![])],
            },
            MetadataUpdate::Snapshot {
                index: 9,
                records: vec![topic("a", 1), topic("b", 2)],
            },
        ] {
            let bytes = update.encode().unwrap();
            assert_eq!(MetadataUpdate::decode(&bytes).unwrap(), update);
        }
        assert!(matches!(
            MetadataUpdate::decode(b"{\"kind\":\"Nope\"}"),
            Err(Error::Frame(_))
        ));
    }

    #[test]
    fn a_follower_applies_a_snapshot_then_entries_in_order_only() {
        let mut follower = MetadataFollower::new();
        assert!(!follower.apply(MetadataUpdate::UpToDate));
        assert!(follower.apply(MetadataUpdate::Snapshot {
            index: 4,
            records: vec![topic("a", 1)],
        }));
        assert_eq!(follower.applied_index(), 4);
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
        assert!(!follower.apply(MetadataUpdate::Snapshot {
            index: 5,
            records: vec![],
        }));
        assert_eq!(follower.image().topics.len(), 2);
    }
}
