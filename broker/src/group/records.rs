//! Committed offsets as records of `__consumer_offsets`, in Kafka's own binary format, so the
//! partition reads like Kafka's to any tool:
//!
//! - key `OffsetCommitKey` v1: `version: i16 = 1, group: string, topic: string, partition: i32`
//! - value `OffsetCommitValue` v3: `version: i16 = 3, offset: i64, leader_epoch: i32,
//!   metadata: string, commit_timestamp: i64`; a null value (tombstone) deletes the offset.
//!
//! Strings are INT16 length + UTF-8. Replay also reads values v0–v2 (Kafka's older layouts) and
//! skips group-metadata records (key version 2), which Skald does not write: membership lives
//! only in memory and is rebuilt by the members rejoining, as after any coordinator move.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::state::CommittedOffset;

const OFFSET_KEY_VERSION: i16 = 1;
const OFFSET_VALUE_VERSION: i16 = 3;

/// One replayed change: (group, topic, partition) → offset, or `None` for a tombstone.
pub type OffsetChange = (String, String, i32, Option<CommittedOffset>);

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

/// One uncompressed v2 batch of (key, value) records; offsets are assigned by the log.
pub fn build_batch(records: &[(Bytes, Option<Bytes>)], now_ms: i64) -> Result<BytesMut, String> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
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

/// Decodes the offset changes in `batches` (whole batches as the log returns them), in order.
/// Records that are not offset commits are skipped; an undecodable batch is an error.
pub fn decode_batches(batches: Bytes) -> Result<Vec<OffsetChange>, String> {
    let mut buf = batches;
    let sets = RecordBatchDecoder::decode_all(&mut buf).map_err(|err| err.to_string())?;
    let mut changes = Vec::new();
    for set in sets {
        for record in set.records {
            if record.control {
                continue;
            }
            let Some(key) = record.key.as_deref() else {
                continue;
            };
            let Some((group, topic, partition)) = parse_offset_key(key) else {
                continue;
            };
            let value = match record.value.as_deref() {
                None => None,
                Some(value) => Some(
                    parse_offset_value(value)
                        .ok_or_else(|| format!("bad offset value for group {group}"))?,
                ),
            };
            changes.push((group, topic, partition, value));
        }
    }
    Ok(changes)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        let bytes = self.0.get(..len)?;
        self.0 = &self.0[len..];
        String::from_utf8(bytes.to_vec()).ok()
    }
}

/// Key versions 0 and 1 are offset commits; anything else (group metadata, v2) is not.
pub fn parse_offset_key(key: &[u8]) -> Option<(String, String, i32)> {
    let mut reader = Reader(key);
    match reader.i16()? {
        0 | 1 => Some((reader.string()?, reader.string()?, reader.i32()?)),
        _ => None,
    }
}

pub fn parse_offset_value(value: &[u8]) -> Option<CommittedOffset> {
    let mut reader = Reader(value);
    let version = reader.i16()?;
    let offset = reader.i64()?;
    let leader_epoch = if version >= 3 { reader.i32()? } else { -1 };
    let metadata = reader.string()?;
    let commit_timestamp_ms = match version {
        0..=3 => reader.i64()?,
        _ => return None,
    };
    Some(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_tombstones_round_trip_through_a_batch() {
        let committed = CommittedOffset {
            offset: 42,
            leader_epoch: 3,
            metadata: "meta".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        let batch = build_batch(
            &[
                (offset_key("g", "orders", 5), Some(offset_value(&committed))),
                (offset_key("g", "orders", 6), None),
            ],
            1_700_000_000_000,
        )
        .unwrap();
        let header = skald_protocol::batch::validate_batch(&batch).unwrap();
        assert_eq!(
            (header.total_size(), header.records_count),
            (batch.len(), 2)
        );
        assert_eq!(header.base_sequence, -1);
        let changes = decode_batches(batch.freeze()).unwrap();
        assert_eq!(
            changes,
            vec![
                ("g".into(), "orders".into(), 5, Some(committed)),
                ("g".into(), "orders".into(), 6, None),
            ]
        );
    }

    #[test]
    fn the_key_and_value_bytes_are_kafkas() {
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
            Some(CommittedOffset {
                offset: 8,
                leader_epoch: -1,
                metadata: "m".into(),
                commit_timestamp_ms: 5
            })
        );
        // Group metadata keys (version 2) are not offsets.
        assert_eq!(parse_offset_key(&[0, 2, 0, 1, b'g']), None);
    }
}
