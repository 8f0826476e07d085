//! Offsets and group metadata as records of `__consumer_offsets`, in Kafka's own binary format
//! (`OffsetCommitKey`/`Value` and `GroupMetadataKey`/`Value`, as `GroupMetadataManager` writes
//! them), so the partition reads like Kafka's to any tool:
//!
//! - key `OffsetCommitKey` v1: `version: i16 = 1, group: string, topic: string, partition: i32`
//! - value `OffsetCommitValue` v3: `version: i16 = 3, offset: i64, leader_epoch: i32,
//!   metadata: string, commit_timestamp: i64`; a null value (tombstone) deletes the offset.
//! - key `GroupMetadataKey` v2: `version: i16 = 2, group: string`
//! - value `GroupMetadataValue` v3: `version: i16 = 3, protocol_type: string, generation: i32,
//!   protocol: nullable string, leader: nullable string, current_state_timestamp: i64,
//!   members: [member_id: string, group_instance_id: nullable string, client_id: string,
//!   client_host: string, rebalance_timeout: i32, session_timeout: i32, subscription: bytes,
//!   assignment: bytes]`; a null value (tombstone) deletes the group.
//!
//! Strings are INT16 length (-1: null) + UTF-8, bytes INT32 length + data, arrays INT32 count.
//! Replay also reads offset values v0–v2 and group values v0–v2 (Kafka's older layouts), and
//! skips keys of any other version (the KIP-848 records of Kafka's new coordinator). Decoding is
//! bounded by the input: a length or count that the remaining bytes cannot hold, a negative
//! length where null is not allowed, invalid UTF-8 or trailing bytes are errors, never panics.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::state::CommittedOffset;

const OFFSET_KEY_VERSION: i16 = 1;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_KEY_VERSION: i16 = 2;
const GROUP_VALUE_VERSION: i16 = 3;

/// A record of `__consumer_offsets` that cannot be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record truncated: {0} needs more bytes than remain")]
    Truncated(&'static str),
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("{0} is null or negative where that is not allowed")]
    BadLength(&'static str),
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion { what: &'static str, version: i16 },
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    #[error("group {0}: members but no protocol")]
    MembersWithoutProtocol(String),
    #[error("{0} is too long to encode")]
    TooLong(&'static str),
    #[error("record batch: {0}")]
    Batch(String),
}

/// One group as Kafka's `GroupMetadataValue` stores it: the generation whose assignment was
/// completed (or the group's emptiness), with every member and its assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadataValue {
    /// Empty for a group that never had a protocol type.
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// When the group entered its current state (-1: unknown, as in values v0–v1).
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberMetadata>,
}

/// One member in a [`GroupMetadataValue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetadata {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// One replayed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// (group, topic, partition) → offset, or `None` for a tombstone.
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<CommittedOffset>,
    },
    /// group → its metadata, or `None` for a tombstone (the group was deleted).
    Group {
        group: String,
        value: Option<GroupMetadataValue>,
    },
}

/// What a record's key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group(String),
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut out = Vec::with_capacity(10 + group.len() + topic.len());
    out.extend_from_slice(&OFFSET_KEY_VERSION.to_be_bytes());
    put_string(&mut out, group);
    put_string(&mut out, topic);
    out.extend_from_slice(&partition.to_be_bytes());
    out.into()
}

pub fn offset_value(offset: &CommittedOffset) -> Bytes {
    let mut out = Vec::with_capacity(24 + offset.metadata.len());
    out.extend_from_slice(&OFFSET_VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&offset.offset.to_be_bytes());
    out.extend_from_slice(&offset.leader_epoch.to_be_bytes());
    put_string(&mut out, &offset.metadata);
    out.extend_from_slice(&offset.commit_timestamp_ms.to_be_bytes());
    out.into()
}

fn put_string(out: &mut Vec<u8>, value: &str) {
    // Group ids, topic names and metadata are bounded well below i16::MAX by the handlers.
    let len = i16::try_from(value.len()).unwrap_or(i16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&value.as_bytes()[..len as usize]);
}

/// Kafka's `GroupMetadataManager.groupMetadataKey`.
pub fn group_metadata_key(group: &str) -> Result<Bytes, RecordError> {
    let mut out = Vec::with_capacity(4 + group.len());
    out.extend_from_slice(&GROUP_KEY_VERSION.to_be_bytes());
    put_checked_string(&mut out, Some(group), "group id")?;
    Ok(out.into())
}

/// Kafka's `GroupMetadataManager.groupMetadataValue` at version 3. Strings that do not fit an
/// INT16 length are refused rather than cut (a cut could split a UTF-8 character and make the
/// record unreadable).
pub fn group_metadata_value(value: &GroupMetadataValue) -> Result<Bytes, RecordError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&GROUP_VALUE_VERSION.to_be_bytes());
    put_checked_string(&mut out, Some(&value.protocol_type), "protocol type")?;
    out.extend_from_slice(&value.generation.to_be_bytes());
    put_checked_string(&mut out, value.protocol.as_deref(), "protocol")?;
    put_checked_string(&mut out, value.leader.as_deref(), "leader")?;
    out.extend_from_slice(&value.current_state_timestamp_ms.to_be_bytes());
    let count = i32::try_from(value.members.len()).map_err(|_| RecordError::TooLong("members"))?;
    out.extend_from_slice(&count.to_be_bytes());
    for member in &value.members {
        put_checked_string(&mut out, Some(&member.member_id), "member id")?;
        put_checked_string(
            &mut out,
            member.group_instance_id.as_deref(),
            "group instance id",
        )?;
        put_checked_string(&mut out, Some(&member.client_id), "client id")?;
        put_checked_string(&mut out, Some(&member.client_host), "client host")?;
        out.extend_from_slice(&member.rebalance_timeout_ms.to_be_bytes());
        out.extend_from_slice(&member.session_timeout_ms.to_be_bytes());
        put_bytes(&mut out, &member.subscription, "subscription")?;
        put_bytes(&mut out, &member.assignment, "assignment")?;
    }
    Ok(out.into())
}

fn put_checked_string(
    out: &mut Vec<u8>,
    value: Option<&str>,
    what: &'static str,
) -> Result<(), RecordError> {
    match value {
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
        Some(value) => {
            let len = i16::try_from(value.len()).map_err(|_| RecordError::TooLong(what))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
    }
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, value: &[u8], what: &'static str) -> Result<(), RecordError> {
    let len = i32::try_from(value.len()).map_err(|_| RecordError::TooLong(what))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

/// One uncompressed v2 batch of (key, value) records; offsets are assigned by the log.
pub fn build_batch(records: &[(Bytes, Option<Bytes>)], now_ms: i64) -> Result<BytesMut, String> {
    build_batch_for(records, now_ms, None)
}

/// [`build_batch`] as a transactional batch of producer `(id, epoch)`, without a sequence:
/// TxnOffsetCommit's offsets, which that producer's transaction marker commits or aborts.
pub fn build_txn_batch(
    records: &[(Bytes, Option<Bytes>)],
    now_ms: i64,
    producer_id: i64,
    producer_epoch: i16,
) -> Result<BytesMut, String> {
    build_batch_for(records, now_ms, Some((producer_id, producer_epoch)))
}

fn build_batch_for(
    records: &[(Bytes, Option<Bytes>)],
    now_ms: i64,
    producer: Option<(i64, i16)>,
) -> Result<BytesMut, String> {
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol starts a new batch wherever `offset - sequence` changes; this keeps
            // one batch whose base sequence is -1 (not idempotent).
            sequence: i as i32 - 1,
            timestamp: now_ms,
            key: Some(key.clone()),
            value: value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|err| err.to_string())?;
    Ok(buf)
}

/// Decodes the offset and group changes in `batches` (whole batches as the log returns them), in
/// order. Records with another kind of key are skipped; an undecodable batch, or a key or value
/// of a known version that does not parse, is an error. Transactional records are held back
/// until their marker (see [`decode_batches_into`]).
pub fn decode_batches(batches: Bytes) -> Result<Vec<Change>, RecordError> {
    let mut decoded = Decoded::default();
    decode_batches_into(batches, &mut decoded)?;
    Ok(decoded.changes)
}

/// What a replay of `__consumer_offsets` decoded so far.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Changes in effect, in log order: plain records, and a transaction's once its COMMIT
    /// marker came.
    pub changes: Vec<Change>,
    /// Transactional changes whose marker has not come yet, by producer id.
    pub pending_txn: std::collections::HashMap<i64, Vec<Change>>,
}

/// [`decode_batches`], continuing `decoded`: a transactional record waits in `pending_txn` for
/// its producer's marker, which applies (COMMIT) or drops (ABORT) what waited.
pub fn decode_batches_into(batches: Bytes, decoded: &mut Decoded) -> Result<(), RecordError> {
    let mut buf = batches;
    let sets = RecordBatchDecoder::decode_all(&mut buf)
        .map_err(|err| RecordError::Batch(err.to_string()))?;
    for set in sets {
        for record in set.records {
            let Some(key) = record.key.as_deref() else {
                continue;
            };
            if record.control {
                let commit = key.len() >= 4 && i16::from_be_bytes([key[2], key[3]]) == 1;
                let waited = decoded.pending_txn.remove(&record.producer_id);
                if let (true, Some(waited)) = (commit, waited) {
                    decoded.changes.extend(waited);
                }
                continue;
            }
            let change = match parse_key(key)? {
                None => continue,
                Some(RecordKey::Offset {
                    group,
                    topic,
                    partition,
                }) => Change::Offset {
                    value: record
                        .value
                        .as_deref()
                        .map(parse_offset_value)
                        .transpose()?,
                    group,
                    topic,
                    partition,
                },
                Some(RecordKey::Group(group)) => {
                    let value = record
                        .value
                        .as_deref()
                        .map(parse_group_metadata_value)
                        .transpose()?;
                    if let Some(value) = &value {
                        if !value.members.is_empty() && value.protocol.is_none() {
                            return Err(RecordError::MembersWithoutProtocol(group));
                        }
                    }
                    Change::Group { group, value }
                }
            };
            if record.transactional {
                decoded
                    .pending_txn
                    .entry(record.producer_id)
                    .or_default()
                    .push(change);
            } else {
                decoded.changes.push(change);
            }
        }
    }
    Ok(())
}

/// Reads big-endian fields off a slice; every read checks what remains first.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], RecordError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(RecordError::Truncated(what))?;
        self.0 = rest;
        Ok(*head)
    }
    fn i16(&mut self, what: &'static str) -> Result<i16, RecordError> {
        self.take(what).map(i16::from_be_bytes)
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, RecordError> {
        self.take(what).map(i32::from_be_bytes)
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, RecordError> {
        self.take(what).map(i64::from_be_bytes)
    }
    fn slice(&mut self, len: usize, what: &'static str) -> Result<&[u8], RecordError> {
        if len > self.0.len() {
            return Err(RecordError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
    fn nullable_string(&mut self, what: &'static str) -> Result<Option<String>, RecordError> {
        let len = self.i16(what)?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| RecordError::BadLength(what))?;
        let bytes = self.slice(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| RecordError::NotUtf8(what))
    }
    fn string(&mut self, what: &'static str) -> Result<String, RecordError> {
        self.nullable_string(what)?
            .ok_or(RecordError::BadLength(what))
    }
    fn bytes(&mut self, what: &'static str) -> Result<Bytes, RecordError> {
        let len = usize::try_from(self.i32(what)?).map_err(|_| RecordError::BadLength(what))?;
        self.slice(len, what).map(Bytes::copy_from_slice)
    }
    fn finish(self) -> Result<(), RecordError> {
        match self.0.len() {
            0 => Ok(()),
            left => Err(RecordError::TrailingBytes(left)),
        }
    }
}

/// What a key names: offset keys are versions 0 and 1, group metadata keys version 2; `None`
/// for any other version (records this coordinator does not use).
pub fn parse_key(key: &[u8]) -> Result<Option<RecordKey>, RecordError> {
    let mut reader = Reader(key);
    let parsed = match reader.i16("key version")? {
        0 | 1 => RecordKey::Offset {
            group: reader.string("group id")?,
            topic: reader.string("topic")?,
            partition: reader.i32("partition")?,
        },
        2 => RecordKey::Group(reader.string("group id")?),
        _ => return Ok(None),
    };
    reader.finish()?;
    Ok(Some(parsed))
}

/// Kafka's `OffsetCommitValue` v0–v3.
pub fn parse_offset_value(value: &[u8]) -> Result<CommittedOffset, RecordError> {
    let mut reader = Reader(value);
    let version = reader.i16("offset value version")?;
    if !(0..=3).contains(&version) {
        return Err(RecordError::UnsupportedVersion {
            what: "offset value",
            version,
        });
    }
    let offset = reader.i64("offset")?;
    let leader_epoch = if version >= 3 {
        reader.i32("leader epoch")?
    } else {
        -1
    };
    let metadata = reader.string("offset metadata")?;
    let commit_timestamp_ms = reader.i64("commit timestamp")?;
    if version == 1 {
        reader.i64("expire timestamp")?;
    }
    reader.finish()?;
    Ok(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

/// Kafka's `GroupMetadataValue` v0–v3 (v0 has no rebalance timeout: the session timeout stands
/// in, as Kafka's `readGroupMessageValue` does; v0–v1 no state timestamp; v0–v2 no instance ids).
pub fn parse_group_metadata_value(value: &[u8]) -> Result<GroupMetadataValue, RecordError> {
    /// The fewest bytes a member takes (v0: four empty strings' lengths, the session timeout
    /// and two empty byte arrays' lengths): bounds the member count by the input.
    const MEMBER_BYTES_MIN: usize = 2 + 2 + 2 + 4 + 4 + 4;
    let mut reader = Reader(value);
    let version = reader.i16("group value version")?;
    if !(0..=3).contains(&version) {
        return Err(RecordError::UnsupportedVersion {
            what: "group metadata value",
            version,
        });
    }
    let protocol_type = reader.string("protocol type")?;
    let generation = reader.i32("generation")?;
    let protocol = reader.nullable_string("protocol")?;
    let leader = reader.nullable_string("leader")?;
    let current_state_timestamp_ms = if version >= 2 {
        reader.i64("current state timestamp")?
    } else {
        -1
    };
    let count = usize::try_from(reader.i32("member count")?)
        .map_err(|_| RecordError::BadLength("members"))?;
    if count > reader.0.len() / MEMBER_BYTES_MIN {
        return Err(RecordError::Truncated("members"));
    }
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let member_id = reader.string("member id")?;
        let group_instance_id = if version >= 3 {
            reader.nullable_string("group instance id")?
        } else {
            None
        };
        let client_id = reader.string("client id")?;
        let client_host = reader.string("client host")?;
        let rebalance_timeout_ms = if version >= 1 {
            Some(reader.i32("rebalance timeout")?)
        } else {
            None
        };
        let session_timeout_ms = reader.i32("session timeout")?;
        members.push(MemberMetadata {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: rebalance_timeout_ms.unwrap_or(session_timeout_ms),
            session_timeout_ms,
            subscription: reader.bytes("subscription")?,
            assignment: reader.bytes("assignment")?,
        });
    }
    reader.finish()?;
    Ok(GroupMetadataValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_group() -> GroupMetadataValue {
        GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation: 1,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp_ms: 5,
            members: vec![MemberMetadata {
                member_id: "m1".into(),
                group_instance_id: Some("i".into()),
                client_id: "c".into(),
                client_host: "/h".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 10_000,
                subscription: Bytes::from_static(&[1, 2]),
                assignment: Bytes::from_static(&[3]),
            }],
        }
    }

    /// `sample_group` as Kafka's GroupMetadataValue v3 lays it out, field by field.
    const SAMPLE_GROUP_V3: &[u8] = &[
        0, 3, // version
        0, 8, b'c', b'o', b'n', b's', b'u', b'm', b'e', b'r', // protocol_type
        0, 0, 0, 1, // generation
        0, 5, b'r', b'a', b'n', b'g', b'e', // protocol
        0, 2, b'm', b'1', // leader
        0, 0, 0, 0, 0, 0, 0, 5, // current_state_timestamp
        0, 0, 0, 1, // members: 1
        0, 2, b'm', b'1', // member_id
        0, 1, b'i', // group_instance_id
        0, 1, b'c', // client_id
        0, 2, b'/', b'h', // client_host
        0, 4, 0x93, 0xe0, // rebalance_timeout 300000
        0, 0, 0x27, 0x10, // session_timeout 10000
        0, 0, 0, 2, 1, 2, // subscription
        0, 0, 0, 1, 3, // assignment
    ];

    #[test]
    fn offsets_groups_and_tombstones_round_trip_through_a_batch() {
        let committed = CommittedOffset {
            offset: 42,
            leader_epoch: 3,
            metadata: "meta".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        let group = sample_group();
        let batch = build_batch(
            &[
                (offset_key("g", "orders", 5), Some(offset_value(&committed))),
                (offset_key("g", "orders", 6), None),
                (
                    group_metadata_key("g").unwrap(),
                    Some(group_metadata_value(&group).unwrap()),
                ),
                (group_metadata_key("h").unwrap(), None),
            ],
            1_700_000_000_000,
        )
        .unwrap();
        let header = skald_protocol::batch::validate_batch(&batch).unwrap();
        assert_eq!(
            (header.total_size(), header.records_count),
            (batch.len(), 4)
        );
        assert_eq!(header.base_sequence, -1);
        let changes = decode_batches(batch.freeze()).unwrap();
        assert_eq!(
            changes,
            vec![
                Change::Offset {
                    group: "g".into(),
                    topic: "orders".into(),
                    partition: 5,
                    value: Some(committed)
                },
                Change::Offset {
                    group: "g".into(),
                    topic: "orders".into(),
                    partition: 6,
                    value: None
                },
                Change::Group {
                    group: "g".into(),
                    value: Some(group)
                },
                Change::Group {
                    group: "h".into(),
                    value: None
                },
            ]
        );
    }

    #[test]
    fn the_offset_key_and_value_bytes_are_kafkas() {
        assert_eq!(
            &offset_key("g", "t", 1)[..],
            &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 1]
        );
        let value = offset_value(&CommittedOffset {
            offset: 7,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 9,
        });
        assert_eq!(
            &value[..],
            &[0, 3, 0, 0, 0, 0, 0, 0, 0, 7, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]
        );
        // Kafka's v1 value: offset, metadata, commit timestamp, expire timestamp.
        let v1 = [
            0, 1, 0, 0, 0, 0, 0, 0, 0, 8, 0, 1, b'm', 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0,
            6,
        ];
        assert_eq!(
            parse_offset_value(&v1),
            Ok(CommittedOffset {
                offset: 8,
                leader_epoch: -1,
                metadata: "m".into(),
                commit_timestamp_ms: 5
            })
        );
        assert_eq!(
            parse_key(&[0, 2, 0, 1, b'g']),
            Ok(Some(RecordKey::Group("g".into())))
        );
        // KIP-848 records (key versions 3+) are not this coordinator's.
        assert_eq!(parse_key(&[0, 3, 0, 1, b'g']), Ok(None));
    }

    #[test]
    fn the_group_metadata_key_and_value_bytes_are_kafkas() {
        assert_eq!(&group_metadata_key("g").unwrap()[..], &[0, 2, 0, 1, b'g']);
        assert_eq!(
            &group_metadata_value(&sample_group()).unwrap()[..],
            SAMPLE_GROUP_V3
        );
        assert_eq!(
            parse_group_metadata_value(SAMPLE_GROUP_V3),
            Ok(sample_group())
        );
        // An Empty group: no protocol, no leader (nulls), no members.
        let empty = GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation: 2,
            protocol: None,
            leader: None,
            current_state_timestamp_ms: 7,
            members: Vec::new(),
        };
        let bytes = group_metadata_value(&empty).unwrap();
        assert_eq!(
            &bytes[..],
            &[
                0, 3, 0, 8, b'c', b'o', b'n', b's', b'u', b'm', b'e', b'r', 0, 0, 0, 2, 255, 255,
                255, 255, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0
            ]
        );
        assert_eq!(parse_group_metadata_value(&bytes), Ok(empty));
    }

    #[test]
    fn older_group_metadata_values_are_read() {
        // v0: no state timestamp, no rebalance timeout (the session timeout stands in), no
        // instance id.
        let v0 = [
            &[
                0u8, 0, 0, 1, b'x', 0, 0, 0, 4, 0, 1, b'p', 0, 1, b'a', 0, 0, 0, 1,
            ][..],
            &[0, 1, b'a', 0, 1, b'c', 0, 1, b'h', 0, 0, 0x17, 0x70],
            &[0, 0, 0, 1, 9, 0, 0, 0, 0],
        ]
        .concat();
        assert_eq!(
            parse_group_metadata_value(&v0),
            Ok(GroupMetadataValue {
                protocol_type: "x".into(),
                generation: 4,
                protocol: Some("p".into()),
                leader: Some("a".into()),
                current_state_timestamp_ms: -1,
                members: vec![MemberMetadata {
                    member_id: "a".into(),
                    group_instance_id: None,
                    client_id: "c".into(),
                    client_host: "h".into(),
                    rebalance_timeout_ms: 6_000,
                    session_timeout_ms: 6_000,
                    subscription: Bytes::from_static(&[9]),
                    assignment: Bytes::new(),
                }],
            })
        );
        // v2: v3 without the instance id.
        let mut v2 = SAMPLE_GROUP_V3.to_vec();
        v2[1] = 2;
        let instance_id_at = SAMPLE_GROUP_V3.len() - 29;
        assert_eq!(&v2[instance_id_at..instance_id_at + 3], &[0, 1, b'i']);
        v2.drain(instance_id_at..instance_id_at + 3);
        let mut expected = sample_group();
        expected.members[0].group_instance_id = None;
        assert_eq!(parse_group_metadata_value(&v2), Ok(expected));
    }

    #[test]
    fn malformed_group_metadata_is_refused() {
        // Every cut of a valid value is an error, not a panic.
        for len in 0..SAMPLE_GROUP_V3.len() {
            assert!(
                parse_group_metadata_value(&SAMPLE_GROUP_V3[..len]).is_err(),
                "a value cut at {len} bytes parsed"
            );
        }
        let with = |at: usize, bytes: &[u8]| {
            let mut value = SAMPLE_GROUP_V3.to_vec();
            value[at..at + bytes.len()].copy_from_slice(bytes);
            parse_group_metadata_value(&value)
        };
        assert_eq!(
            with(0, &[0, 4]),
            Err(RecordError::UnsupportedVersion {
                what: "group metadata value",
                version: 4
            })
        );
        // A null protocol type; a member count no input could hold (refused before allocating).
        assert_eq!(
            with(2, &[255, 255]),
            Err(RecordError::BadLength("protocol type"))
        );
        assert_eq!(
            with(35, &[127, 255, 255, 255]),
            Err(RecordError::Truncated("members"))
        );
        assert_eq!(
            with(35, &[255, 255, 255, 255]),
            Err(RecordError::BadLength("members"))
        );
        // A negative (null) assignment; bytes that are not UTF-8 in a string.
        let assignment_at = SAMPLE_GROUP_V3.len() - 5;
        assert_eq!(
            with(assignment_at, &[255, 255, 255, 255]),
            Err(RecordError::BadLength("assignment"))
        );
        assert_eq!(with(4, &[0xff]), Err(RecordError::NotUtf8("protocol type")));
        let mut trailing = SAMPLE_GROUP_V3.to_vec();
        trailing.push(0);
        assert_eq!(
            parse_group_metadata_value(&trailing),
            Err(RecordError::TrailingBytes(1))
        );
        // Noise never panics (a fixed-seed xorshift, so a failure replays).
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 48) as usize;
            let mut noise: Vec<u8> = (0..len).map(|i| (seed >> (i % 8 * 8)) as u8).collect();
            if noise.len() >= 2 {
                noise[0] = 0;
                noise[1] = (seed % 4) as u8;
            }
            let _ = parse_group_metadata_value(&noise);
            let _ = parse_key(&noise);
            let _ = parse_offset_value(&noise);
        }
    }

    #[test]
    fn a_group_with_members_but_no_protocol_does_not_load() {
        let mut value = sample_group();
        value.protocol = None;
        let batch = build_batch(
            &[(
                group_metadata_key("g").unwrap(),
                Some(group_metadata_value(&value).unwrap()),
            )],
            0,
        )
        .unwrap();
        assert_eq!(
            decode_batches(batch.freeze()),
            Err(RecordError::MembersWithoutProtocol("g".into()))
        );
    }

    #[test]
    fn strings_too_long_for_an_int16_length_are_refused() {
        let mut value = sample_group();
        value.members[0].client_id = "x".repeat(40_000);
        assert_eq!(
            group_metadata_value(&value),
            Err(RecordError::TooLong("client id"))
        );
    }
}
