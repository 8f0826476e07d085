//! Transaction state as records of `__transaction_state`, in Kafka's own binary format
//! (`TransactionLogKey` / `TransactionLogValue`, as Kafka's `TransactionLog` writes them), so the
//! partition reads like Kafka's to any tool:
//!
//! - key v0: `version: i16 = 0, transactional_id: string`
//! - value v0: `version: i16 = 0, producer_id: i64, producer_epoch: i16, timeout_ms: i32,
//!   status: i8, partitions: nullable [topic: string, partition_ids: [i32]],
//!   last_update_timestamp_ms: i64, start_timestamp_ms: i64`; a null value (tombstone) deletes the
//!   transactional id.
//!
//! Value v1 (flexible: compact strings and arrays; tagged fields PreviousProducerId (tag 0),
//! NextProducerId (1) and ClientTransactionVersion (2)) is written for clients on transactions
//! version 2 and v0 for the others, as Kafka does; both are read. Decoding is bounded by the
//! input.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::state::{TxnMetadata, TxnState};
use crate::group::records::RecordError;

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

pub fn key(transactional_id: &str) -> Result<Bytes, RecordError> {
    let mut out = Vec::with_capacity(4 + transactional_id.len());
    out.extend_from_slice(&KEY_VERSION.to_be_bytes());
    put_string(&mut out, transactional_id, "transactional id")?;
    Ok(Bytes::from(out))
}

pub fn value(meta: &TxnMetadata) -> Result<Bytes, RecordError> {
    let flexible = meta.client_version >= 2;
    let mut out = Vec::with_capacity(64);
    let version: i16 = if flexible { 1 } else { VALUE_VERSION };
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&meta.producer_id.to_be_bytes());
    out.extend_from_slice(&meta.producer_epoch.to_be_bytes());
    out.extend_from_slice(&meta.timeout_ms.to_be_bytes());
    out.push(meta.state.id() as u8);
    // Kafka writes the partitions as null in the Empty and Complete states.
    if meta.partitions.is_empty() {
        if flexible {
            put_varint(&mut out, 0);
        } else {
            out.extend_from_slice(&(-1i32).to_be_bytes());
        }
    } else {
        let mut by_topic: Vec<(&str, Vec<i32>)> = Vec::new();
        for (topic, partition) in &meta.partitions {
            match by_topic.last_mut() {
                Some((last, ids)) if *last == topic.as_str() => ids.push(*partition),
                _ => by_topic.push((topic, vec![*partition])),
            }
        }
        put_array_len(&mut out, by_topic.len(), flexible)?;
        for (topic, ids) in by_topic {
            put_any_string(&mut out, topic, "topic", flexible)?;
            put_array_len(&mut out, ids.len(), flexible)?;
            for id in ids {
                out.extend_from_slice(&id.to_be_bytes());
            }
            if flexible {
                put_varint(&mut out, 0); // the entry's tagged fields: none
            }
        }
    }
    out.extend_from_slice(&meta.last_update_ms.to_be_bytes());
    out.extend_from_slice(&meta.start_ms.to_be_bytes());
    if flexible {
        // Tagged fields in tag order, each only when not its default.
        let mut tags: Vec<(u32, Vec<u8>)> = Vec::new();
        if meta.previous_producer_id != -1 {
            tags.push((0, meta.previous_producer_id.to_be_bytes().to_vec()));
        }
        if meta.next_producer_id != -1 {
            tags.push((1, meta.next_producer_id.to_be_bytes().to_vec()));
        }
        if meta.client_version != 0 {
            tags.push((2, meta.client_version.to_be_bytes().to_vec()));
        }
        put_varint(&mut out, tags.len() as u32);
        for (tag, bytes) in tags {
            put_varint(&mut out, tag);
            put_varint(&mut out, bytes.len() as u32);
            out.extend_from_slice(&bytes);
        }
    }
    Ok(Bytes::from(out))
}

fn put_varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_array_len(out: &mut Vec<u8>, len: usize, compact: bool) -> Result<(), RecordError> {
    if compact {
        let len = u32::try_from(len + 1).map_err(|_| RecordError::TooLong("array"))?;
        put_varint(out, len);
    } else {
        out.extend_from_slice(&len_i32(len)?.to_be_bytes());
    }
    Ok(())
}

fn put_any_string(
    out: &mut Vec<u8>,
    value: &str,
    what: &'static str,
    compact: bool,
) -> Result<(), RecordError> {
    if !compact {
        return put_string(out, value, what);
    }
    let len = u32::try_from(value.len() + 1).map_err(|_| RecordError::TooLong(what))?;
    put_varint(out, len);
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

/// The transactional id a key names; `None` for a key of another version.
pub fn parse_key(key: &[u8]) -> Result<Option<String>, RecordError> {
    let mut reader = Reader { rest: key };
    if reader.i16("key version")? != KEY_VERSION {
        return Ok(None);
    }
    let id = reader.string("transactional id", false)?;
    Ok(Some(id))
}

/// A value of version 0 or 1.
pub fn parse_value(value: &[u8]) -> Result<TxnMetadata, RecordError> {
    let mut reader = Reader { rest: value };
    let version = reader.i16("value version")?;
    if !(0..=1).contains(&version) {
        return Err(RecordError::UnsupportedVersion {
            what: "transaction log value",
            version,
        });
    }
    let flexible = version >= 1;
    let producer_id = reader.i64("producer id")?;
    let producer_epoch = reader.i16("producer epoch")?;
    let timeout_ms = reader.i32("timeout")?;
    let status = reader.i8("status")?;
    let state = TxnState::from_id(status).ok_or(RecordError::UnsupportedVersion {
        what: "transaction status",
        version: i16::from(status),
    })?;
    let mut partitions = BTreeSet::new();
    if let Some(topics) = reader.array_len("partitions", flexible)? {
        for _ in 0..topics {
            let topic = reader.string("topic", flexible)?;
            let ids = reader
                .array_len("partition ids", flexible)?
                .ok_or(RecordError::BadLength("partition ids"))?;
            for _ in 0..ids {
                partitions.insert((topic.clone(), reader.i32("partition id")?));
            }
            if flexible {
                reader.skip_tags()?;
            }
        }
    }
    let last_update_ms = reader.i64("last update")?;
    let start_ms = reader.i64("start")?;
    let (mut previous_producer_id, mut next_producer_id, mut client_version) = (-1, -1, 0);
    if flexible {
        let count = reader.varint("tagged fields")?;
        for _ in 0..count {
            let tag = reader.varint("tag")?;
            let size = reader.varint("tag size")? as usize;
            let mut field = Reader {
                rest: reader.slice(size, "tagged field")?,
            };
            match tag {
                0 => previous_producer_id = field.i64("previous producer id")?,
                1 => next_producer_id = field.i64("next producer id")?,
                2 => client_version = field.i16("client transaction version")?,
                _ => {} // a tag from a later version: skipped, as Kafka does
            }
        }
    }
    if !reader.rest.is_empty() {
        return Err(RecordError::TrailingBytes(reader.rest.len()));
    }
    Ok(TxnMetadata {
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms,
        start_ms,
        previous_producer_id,
        next_producer_id,
        client_version,
    })
}

fn len_i32(len: usize) -> Result<i32, RecordError> {
    i32::try_from(len).map_err(|_| RecordError::TooLong("array"))
}

fn put_string(out: &mut Vec<u8>, value: &str, what: &'static str) -> Result<(), RecordError> {
    let len = i16::try_from(value.len()).map_err(|_| RecordError::TooLong(what))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], RecordError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(RecordError::Truncated(what))?;
        self.rest = rest;
        Ok(*head)
    }
    fn i8(&mut self, what: &'static str) -> Result<i8, RecordError> {
        self.take::<1>(what).map(|b| b[0] as i8)
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
    fn varint(&mut self, what: &'static str) -> Result<u32, RecordError> {
        let mut value = 0u32;
        for shift in (0..35).step_by(7) {
            let byte = self.take::<1>(what)?[0];
            value |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RecordError::BadLength(what))
    }
    fn slice(&mut self, len: usize, what: &'static str) -> Result<&[u8], RecordError> {
        if len > self.rest.len() {
            return Err(RecordError::Truncated(what));
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(head)
    }
    fn string(&mut self, what: &'static str, compact: bool) -> Result<String, RecordError> {
        let len = if compact {
            (self.varint(what)? as usize)
                .checked_sub(1)
                .ok_or(RecordError::BadLength(what))?
        } else {
            usize::try_from(self.i16(what)?).map_err(|_| RecordError::BadLength(what))?
        };
        String::from_utf8(self.slice(len, what)?.to_vec()).map_err(|_| RecordError::NotUtf8(what))
    }
    /// An array's length, `None` for null; never more elements than bytes remain.
    fn array_len(
        &mut self,
        what: &'static str,
        compact: bool,
    ) -> Result<Option<usize>, RecordError> {
        let len = if compact {
            match self.varint(what)? {
                0 => return Ok(None),
                n => (n - 1) as usize,
            }
        } else {
            match self.i32(what)? {
                -1 => return Ok(None),
                n => usize::try_from(n).map_err(|_| RecordError::BadLength(what))?,
            }
        };
        if len > self.rest.len() {
            return Err(RecordError::Truncated(what));
        }
        Ok(Some(len))
    }
    fn skip_tags(&mut self) -> Result<(), RecordError> {
        let count = self.varint("tagged fields")?;
        for _ in 0..count {
            self.varint("tag")?;
            let size = self.varint("tag size")? as usize;
            self.slice(size, "tagged field")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> TxnMetadata {
        TxnMetadata {
            producer_id: 4242,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: [
                ("orders".to_string(), 0),
                ("orders".into(), 2),
                ("pay".into(), 1),
            ]
            .into_iter()
            .collect(),
            last_update_ms: 1_700_000_000_123,
            start_ms: 1_700_000_000_000,
            previous_producer_id: -1,
            next_producer_id: -1,
            client_version: 0,
        }
    }

    /// Transactions version 2 writes v1: compact arrays and strings, and the tagged fields that
    /// differ from their defaults (next producer id, tag 1; client version, tag 2).
    #[test]
    fn a_transactions_v2_state_is_written_as_v1_with_its_tagged_fields() {
        let v2 = TxnMetadata {
            next_producer_id: 5000,
            client_version: 2,
            ..meta()
        };
        let encoded = value(&v2).unwrap();
        assert_eq!(&encoded[..2], &[0, 1], "version 1");
        // pid 8, epoch 2, timeout 4, status 1, then the compact array length 2 + 1.
        assert_eq!(encoded[17], 3);
        // The tagged fields close the value: 2 fields, tag 1 (8 bytes), tag 2 (2 bytes).
        let tail = &encoded[encoded.len() - 15..];
        assert_eq!(tail[0], 2);
        assert_eq!(&tail[1..3], &[1, 8]);
        assert_eq!(&tail[3..11], &5000i64.to_be_bytes());
        assert_eq!(&tail[11..13], &[2, 2]);
        assert_eq!(&tail[13..15], &2i16.to_be_bytes());
        assert_eq!(parse_value(&encoded).unwrap(), v2);
        let done = TxnMetadata {
            state: TxnState::CompleteAbort,
            partitions: BTreeSet::new(),
            previous_producer_id: 4242,
            client_version: 2,
            ..meta()
        };
        assert_eq!(parse_value(&value(&done).unwrap()).unwrap(), done);
    }

    #[test]
    fn keys_and_values_round_trip_in_kafkas_layout() {
        let key = key("txn-1").unwrap();
        assert_eq!(&key[..], b"\x00\x00\x00\x05txn-1");
        assert_eq!(parse_key(&key).unwrap(), Some("txn-1".to_string()));
        let value = value(&meta()).unwrap();
        // version, pid, epoch, timeout, status 1 (Ongoing), 2 topics...
        assert_eq!(&value[..2], &[0, 0]);
        assert_eq!(value[16], 1);
        assert_eq!(&value[17..21], &2i32.to_be_bytes());
        assert_eq!(parse_value(&value).unwrap(), meta());
        let empty = TxnMetadata {
            state: TxnState::CompleteCommit,
            partitions: BTreeSet::new(),
            ..meta()
        };
        let encoded = super::value(&empty).unwrap();
        assert_eq!(&encoded[17..21], &(-1i32).to_be_bytes(), "null partitions");
        assert_eq!(parse_value(&encoded).unwrap(), empty);
    }

    #[test]
    fn damaged_values_are_errors_never_panics() {
        let value = value(&meta()).unwrap();
        for cut in 0..value.len() {
            assert!(parse_value(&value[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = value.to_vec();
        huge[17..21].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(parse_value(&huge).is_err());
        let mut status = value.to_vec();
        status[16] = 42;
        assert!(parse_value(&status).is_err());
    }
}
