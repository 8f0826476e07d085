//! Record batches (magic v2): building them for Produce and reading them out of Fetch responses.
//!
//! Encoding and record decoding are `kafka-protocol`'s; this module only frames batches out of a
//! fetched byte range (which may end in a partial batch), checks what this client can read, and
//! skips what a consumer must not see.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};

use crate::error::{Error, Result};

/// Bytes of a v2 batch header before its first record.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes a record adds beyond its key, value and headers, at most (length, attributes, deltas).
const RECORD_OVERHEAD_BYTES_MAX: usize = 21;

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Create time in ms since the epoch; `None` means now.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A record with just a value.
    pub fn value(value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            value: Some(value.into()),
            ..Default::default()
        }
    }

    /// A record with a key and a value.
    pub fn keyed(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            key: Some(key.into()),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    /// An upper bound of the bytes this record takes in a batch.
    pub fn encoded_bytes_max(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len) + 10)
            .sum();
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + headers
            + RECORD_OVERHEAD_BYTES_MAX
    }
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub partition: i32,
    pub offset: i64,
    /// Create time, or log-append time if the topic uses `LogAppendTime`.
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Collects records for one partition's next batch.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    records: Vec<Record>,
    bytes: usize,
}

impl BatchBuilder {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// An upper bound of the encoded batch size so far.
    pub fn bytes(&self) -> usize {
        BATCH_HEADER_BYTES + self.bytes
    }

    pub fn push(&mut self, record: ProducerRecord, now_ms: i64) {
        self.bytes += record.encoded_bytes_max();
        let offset = self.records.len() as i64;
        let headers: IndexMap<StrBytes, Option<Bytes>> = record
            .headers
            .into_iter()
            .map(|(k, v)| (StrBytes::from_string(k), v))
            .collect();
        self.records.push(Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset,
            // kafka-protocol starts a new batch wherever `offset - sequence` changes, and derives the
            // batch's base sequence from the first record: this keeps one batch with base sequence -1.
            sequence: (offset as i32).wrapping_sub(1),
            timestamp: record.timestamp_ms.unwrap_or(now_ms),
            key: record.key,
            value: record.value,
            headers,
        });
    }

    /// Encodes the records as one uncompressed v2 batch with base offset 0, and empties the builder.
    pub fn finish(&mut self) -> Result<Bytes> {
        let mut buf = BytesMut::with_capacity(self.bytes());
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, self.records.iter(), &options).map_err(|err| {
            Error::InvalidArgument(format!("cannot encode a record batch: {err:#}"))
        })?;
        self.records.clear();
        self.bytes = 0;
        Ok(buf.freeze())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads the records at or after `fetch_offset` out of one partition's fetched bytes.
///
/// Appends them to `out` and returns the offset to fetch next: past the last whole batch, even
/// when that batch held only skipped records (control batches, records before `fetch_offset`).
/// A partial batch at the end (the broker cuts at `max_bytes`) is left for the next fetch.
pub fn decode_fetched(
    topic: &str,
    partition: i32,
    mut data: Bytes,
    fetch_offset: i64,
    out: &mut Vec<ConsumerRecord>,
) -> Result<i64> {
    let mut next_offset = fetch_offset;
    while data.len() >= 12 {
        let base_offset = be_i64(&data[0..8]);
        let batch_length = be_i32(&data[8..12]);
        let corrupt = |detail: String| Error::CorruptRecords {
            topic: topic.to_owned(),
            partition,
            offset: base_offset,
            detail,
        };
        let Ok(batch_length) = usize::try_from(batch_length) else {
            return Err(corrupt(format!("negative batch length {batch_length}")));
        };
        let total = 12 + batch_length;
        if data.len() < total {
            break;
        }
        let mut batch = data.split_to(total);
        let magic = batch.get(16).copied().map(|m| m as i8);
        if magic != Some(2) {
            return Err(Error::UnsupportedRecords {
                topic: topic.to_owned(),
                partition,
                offset: base_offset,
                detail: format!(
                    "message format v{} (this client reads v2 only)",
                    magic.unwrap_or(-1)
                ),
            });
        }
        if batch.len() < BATCH_HEADER_BYTES {
            return Err(corrupt(format!(
                "batch of {} bytes is shorter than its header",
                batch.len()
            )));
        }
        let attributes = be_i16(&batch[21..23]);
        let last_offset_delta = be_i32(&batch[23..27]);
        let max_timestamp = be_i64(&batch[35..43]);
        let batch_next = base_offset + i64::from(last_offset_delta) + 1;
        let control = attributes & 0x20 != 0;
        let log_append_time = attributes & 0x08 != 0;
        if batch_next <= fetch_offset || control {
            next_offset = next_offset.max(batch_next);
            continue;
        }
        let compression = attributes & 0x07;
        if compression != 0 {
            let codec = match compression {
                1 => "gzip",
                2 => "snappy",
                3 => "lz4",
                4 => "zstd",
                _ => "an unknown codec",
            };
            return Err(Error::UnsupportedRecords {
                topic: topic.to_owned(),
                partition,
                offset: base_offset,
                detail: format!(
                    "batch compressed with {codec} (this client reads uncompressed batches only)"
                ),
            });
        }
        let set =
            RecordBatchDecoder::decode(&mut batch).map_err(|err| corrupt(format!("{err:#}")))?;
        for record in set.records {
            if record.offset < fetch_offset {
                continue;
            }
            out.push(ConsumerRecord {
                partition,
                offset: record.offset,
                timestamp_ms: if log_append_time {
                    max_timestamp
                } else {
                    record.timestamp
                },
                key: record.key,
                value: record.value,
                headers: record
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            });
        }
        next_offset = next_offset.max(batch_next);
    }
    Ok(next_offset)
}

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_at(base_offset: i64, records: &[(&str, &str)]) -> Bytes {
        let mut builder = BatchBuilder::default();
        for (key, value) in records {
            builder.push(
                ProducerRecord::keyed(key.as_bytes().to_vec(), value.as_bytes().to_vec()),
                1_700_000_000_000,
            );
        }
        let mut batch = BytesMut::from(&builder.finish().unwrap()[..]);
        // What the broker does on append: patch the base offset (the CRC does not cover it).
        batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
        batch.freeze()
    }

    #[test]
    fn built_batch_is_one_v2_batch_with_no_producer_state() {
        let mut builder = BatchBuilder::default();
        builder.push(ProducerRecord::keyed("k1", "v1"), 1000);
        builder.push(
            ProducerRecord {
                value: Some(Bytes::from_static(b"v2")),
                headers: vec![("h".into(), Some(Bytes::from_static(b"x")))],
                timestamp_ms: Some(1005),
                ..Default::default()
            },
            1000,
        );
        let bound = builder.bytes();
        let batch = builder.finish().unwrap();
        assert!(builder.is_empty());
        assert!(batch.len() <= bound, "{} > {bound}", batch.len());
        assert_eq!(be_i64(&batch[0..8]), 0, "base offset");
        assert_eq!(
            be_i32(&batch[8..12]) as usize,
            batch.len() - 12,
            "batch length"
        );
        assert_eq!(batch[16], 2, "magic");
        assert_eq!(
            be_i16(&batch[21..23]),
            0,
            "attributes: no compression, create time"
        );
        assert_eq!(be_i32(&batch[23..27]), 1, "last offset delta");
        assert_eq!(be_i64(&batch[27..35]), 1000, "base timestamp");
        assert_eq!(be_i64(&batch[35..43]), 1005, "max timestamp");
        assert_eq!(be_i64(&batch[43..51]), -1, "producer id");
        assert_eq!(be_i16(&batch[51..53]), -1, "producer epoch");
        assert_eq!(be_i32(&batch[53..57]), -1, "base sequence");
        assert_eq!(be_i32(&batch[57..61]), 2, "record count");
        let info = RecordBatchDecoder::decode_batch_info(&mut batch.clone()).unwrap();
        assert_eq!(info.len(), 1);
    }

    #[test]
    fn fetched_batches_decode_skipping_records_before_the_fetch_offset() {
        let mut data = BytesMut::new();
        data.extend_from_slice(&batch_at(10, &[("a", "1"), ("b", "2"), ("c", "3")]));
        data.extend_from_slice(&batch_at(13, &[("d", "4")]));
        let mut out = Vec::new();
        let next = decode_fetched("t", 3, data.freeze(), 11, &mut out).unwrap();
        assert_eq!(next, 14);
        let got: Vec<(i64, &[u8], &[u8])> = out
            .iter()
            .map(|r| {
                (
                    r.offset,
                    &r.key.as_ref().unwrap()[..],
                    &r.value.as_ref().unwrap()[..],
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (11, &b"b"[..], &b"2"[..]),
                (12, b"c", b"3"),
                (13, b"d", b"4")
            ]
        );
        assert!(out
            .iter()
            .all(|r| r.partition == 3 && r.timestamp_ms == 1_700_000_000_000));
    }

    #[test]
    fn a_partial_trailing_batch_waits_for_the_next_fetch() {
        let whole = batch_at(0, &[("a", "1")]);
        let partial = batch_at(1, &[("b", "2")]);
        let mut data = BytesMut::from(&whole[..]);
        data.extend_from_slice(&partial[..partial.len() - 5]);
        let mut out = Vec::new();
        assert_eq!(
            decode_fetched("t", 0, data.freeze(), 0, &mut out).unwrap(),
            1
        );
        assert_eq!(out.len(), 1);
        let mut out = Vec::new();
        assert_eq!(
            decode_fetched("t", 0, Bytes::from_static(&[0; 7]), 5, &mut out).unwrap(),
            5
        );
        assert!(out.is_empty());
    }

    #[test]
    fn compressed_and_old_format_batches_are_clear_errors() {
        let mut batch = BytesMut::from(&batch_at(7, &[("a", "1")])[..]);
        batch[22] |= 1; // gzip
        let err =
            decode_fetched("orders", 2, batch.clone().freeze(), 0, &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported record batch in orders-2 at offset 7: batch compressed with gzip (this client reads uncompressed batches only)"
        );
        batch[22] &= !7;
        batch[16] = 1;
        let err = decode_fetched("orders", 2, batch.freeze(), 0, &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported record batch in orders-2 at offset 7: message format v1 (this client reads v2 only)"
        );
    }

    #[test]
    fn control_batches_are_skipped_but_advance_the_position() {
        let mut batch = BytesMut::from(&batch_at(20, &[("a", "1"), ("b", "2")])[..]);
        batch[22] |= 0x20;
        let mut out = Vec::new();
        assert_eq!(
            decode_fetched("t", 0, batch.freeze(), 20, &mut out).unwrap(),
            22
        );
        assert!(out.is_empty());
    }
}
