//! Kafka's `LogValidator` checks on a batch a client sent, before a leader appends it: the header
//! must agree with the records it holds. Sequence numbers and offsets are assigned from the
//! header's `lastOffsetDelta` and `recordsCount`, so a header that lies (one record claiming a
//! last offset delta of 2^31) would move the log end and the producer's sequence by what it
//! claims. Followers and recovery never run this: they store what a leader already checked.
//!
//! Nothing is re-encoded. An uncompressed batch's records are walked in place; a compressed one
//! is decompressed as a stream and walked as it comes, reading each record's length, attributes,
//! timestamp delta and offset delta and skipping the rest, so memory stays bounded whatever the
//! batch inflates to (snappy, whose raw form is one block, is inflated whole under the cleaner's
//! cap).

use std::io::{self, Read};

use skald_protocol::batch::{self, RecordBatchHeader, RECORD_BATCH_HEADER_BYTES};

use crate::cleaner::codec::{Codec, DECOMPRESSED_BYTES_MAX};

/// Kafka's `RecordBatch.NO_PRODUCER_ID`: a batch from a producer that is not idempotent.
pub const NO_PRODUCER_ID: i64 = -1;

/// Why a client's batch was refused (Kafka's `InvalidRecordException`: INVALID_RECORD).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRecord(pub String);

/// Checks one whole v2 batch (`bytes`, whose header is `header`) as Kafka's `LogValidator` does
/// for a client's produce: a positive record count that matches both the offset range the header
/// claims and the records present, record offset deltas 0, 1, 2, …, nothing after the last
/// record, and a sequence number for every idempotent batch.
pub fn validate_client_batch(
    bytes: &[u8],
    header: &RecordBatchHeader,
) -> Result<(), InvalidRecord> {
    let count = header.records_count;
    if count <= 0 {
        return Err(InvalidRecord(format!(
            "Invalid reported count for record batch: {count}"
        )));
    }
    let count_from_offsets = i64::from(header.last_offset_delta) + 1;
    if count_from_offsets != i64::from(count) {
        return Err(InvalidRecord(format!(
            "Inconsistent batch offset range [0, {}] and record count {count}",
            header.last_offset_delta
        )));
    }
    if header.producer_id != NO_PRODUCER_ID && header.base_sequence < 0 {
        return Err(InvalidRecord(format!(
            "Invalid sequence number {} in record batch with producerId {}",
            header.base_sequence, header.producer_id
        )));
    }
    match header.compression() {
        0 => check_uncompressed(bytes),
        id => {
            let codec = Codec::from_id(id).ok_or_else(|| {
                InvalidRecord(format!(
                    "record batch has an unknown compression codec {id}"
                ))
            })?;
            let section = bytes
                .get(RECORD_BATCH_HEADER_BYTES..header.total_size())
                .ok_or_else(|| InvalidRecord("record batch shorter than its length".into()))?;
            check_compressed(codec, section, count)
                .map_err(|err| InvalidRecord(format!("compressed record batch: {err}")))
        }
    }
}

fn check_uncompressed(bytes: &[u8]) -> Result<(), InvalidRecord> {
    let records = batch::records(bytes).map_err(|err| InvalidRecord(err.to_string()))?;
    for (expected, record) in (0..).zip(records) {
        let record = record.map_err(|err| InvalidRecord(err.to_string()))?;
        check_offset_delta(record.offset_delta, expected)?;
    }
    Ok(())
}

fn check_offset_delta(offset_delta: i32, expected: i32) -> Result<(), InvalidRecord> {
    if offset_delta == expected {
        Ok(())
    } else {
        Err(InvalidRecord(format!(
            "Inner record has an invalid offset delta {offset_delta}, expected {expected}"
        )))
    }
}

/// Walks `count` records of a compressed records section as it decompresses.
fn check_compressed(codec: Codec, section: &[u8], count: i32) -> io::Result<()> {
    let mut expected = 0;
    walk_compressed(codec, section, count, |_, offset_delta| {
        check_offset_delta(offset_delta, expected).map_err(|err| io::Error::other(err.0))?;
        expected += 1;
        Ok(true)
    })?;
    Ok(())
}

/// Walks the `count` records of a compressed records section as it decompresses, handing each
/// record's timestamp delta and offset delta to `visit` until it answers `false`. Only those
/// fields are read; the key, value and headers are skipped, so memory stays bounded. Returns
/// whether every record was walked (then nothing may follow the last one).
pub(crate) fn walk_compressed(
    codec: Codec,
    section: &[u8],
    count: i32,
    mut visit: impl FnMut(i64, i32) -> io::Result<bool>,
) -> io::Result<bool> {
    let mut reader = codec.reader(section, DECOMPRESSED_BYTES_MAX)?;
    for index in 0..count {
        let length = read_varint(&mut reader)?
            .ok_or_else(|| io::Error::other(format!("{index} records, {count} claimed")))?;
        let length =
            u64::try_from(length).map_err(|_| io::Error::other("negative record length"))?;
        let mut record = (&mut reader).take(length);
        let mut attributes = [0u8; 1];
        record.read_exact(&mut attributes)?;
        let timestamp_delta =
            read_varlong(&mut record)?.ok_or_else(|| io::Error::other("bad timestamp delta"))?;
        let offset_delta =
            read_varint(&mut record)?.ok_or_else(|| io::Error::other("bad offset delta"))?;
        if !visit(timestamp_delta, offset_delta)? {
            return Ok(false);
        }
        // Skip what the record's length says is left.
        let left = record.limit();
        if io::copy(&mut record, &mut io::sink())? != left {
            return Err(io::Error::other("record extends past the batch"));
        }
    }
    let mut trailing = [0u8; 1];
    if reader.read(&mut trailing)? != 0 {
        return Err(io::Error::other("bytes remain after the last record"));
    }
    Ok(true)
}

/// A zigzag varint, or `None` at a clean end of input before its first byte.
fn read_varint(reader: &mut impl Read) -> io::Result<Option<i32>> {
    let Some(raw) = read_unsigned(reader, 5)? else {
        return Ok(None);
    };
    let raw = u32::try_from(raw).map_err(|_| io::Error::other("varint overflows 32 bits"))?;
    Ok(Some(((raw >> 1) as i32) ^ -((raw & 1) as i32)))
}

fn read_varlong(reader: &mut impl Read) -> io::Result<Option<i64>> {
    let Some(raw) = read_unsigned(reader, 10)? else {
        return Ok(None);
    };
    Ok(Some(((raw >> 1) as i64) ^ -((raw & 1) as i64)))
}

fn read_unsigned(reader: &mut impl Read, max_bytes: u32) -> io::Result<Option<u64>> {
    let mut value = 0u64;
    for i in 0..max_bytes {
        let mut byte = [0u8; 1];
        if reader.read(&mut byte)? == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        value |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Err(io::Error::other("varint too long"))
}

#[cfg(test)]
mod tests {
    use skald_protocol::batch::testing::{build_batch_with, BatchOptions, TestRecord};
    use skald_protocol::batch::RecordBatchHeader;

    use super::*;
    use crate::cleaner::codec::compressed_batch;

    const CODECS: [Option<Codec>; 5] = [
        None,
        Some(Codec::Gzip),
        Some(Codec::Snappy),
        Some(Codec::Lz4),
        Some(Codec::Zstd),
    ];

    fn records(n: usize) -> Vec<TestRecord> {
        (0..n)
            .map(|i| TestRecord::new(Some(b"k"), Some(format!("v{i}").as_bytes()), 1_000))
            .collect()
    }

    fn encode(plain: Vec<u8>, codec: Option<Codec>) -> Vec<u8> {
        match codec {
            None => plain,
            Some(codec) => compressed_batch(&plain, codec).unwrap(),
        }
    }

    fn check(bytes: &[u8]) -> Result<(), InvalidRecord> {
        let header = RecordBatchHeader::parse(bytes).unwrap();
        validate_client_batch(bytes, &header)
    }

    /// Rewrites bytes in place (the CRC is not checked here).
    fn patch(bytes: &mut [u8], position: usize, value: &[u8]) {
        bytes[position..position + value.len()].copy_from_slice(value);
    }

    #[test]
    fn honest_batches_pass_in_every_codec() {
        for codec in CODECS {
            let bytes = encode(
                build_batch_with(&BatchOptions::default(), &records(7)),
                codec,
            );
            assert_eq!(check(&bytes), Ok(()), "{codec:?}");
        }
    }

    #[test]
    fn a_last_offset_delta_past_the_records_is_refused() {
        for codec in CODECS {
            let mut bytes = encode(
                build_batch_with(&BatchOptions::default(), &records(1)),
                codec,
            );
            patch(&mut bytes, 23, &(1i32 << 30).to_be_bytes());
            assert_eq!(
                check(&bytes).unwrap_err().0,
                "Inconsistent batch offset range [0, 1073741824] and record count 1",
                "{codec:?}"
            );
        }
    }

    #[test]
    fn a_count_that_disagrees_with_the_records_is_refused() {
        for codec in CODECS {
            // The header claims 4 records (and a matching offset range); 3 are there.
            let mut plain = build_batch_with(&BatchOptions::default(), &records(3));
            patch(&mut plain, 23, &3i32.to_be_bytes());
            patch(&mut plain, 57, &4i32.to_be_bytes());
            assert!(check(&encode(plain, codec)).is_err(), "{codec:?}");
            // The header claims 2; 3 are there.
            let mut plain = build_batch_with(&BatchOptions::default(), &records(3));
            patch(&mut plain, 23, &1i32.to_be_bytes());
            patch(&mut plain, 57, &2i32.to_be_bytes());
            assert!(check(&encode(plain, codec)).is_err(), "{codec:?}");
        }
    }

    #[test]
    fn offset_deltas_must_count_up_from_zero() {
        for codec in CODECS {
            let mut plain = build_batch_with(&BatchOptions::default(), &records(2));
            // The second record: its length (one byte), attributes, timestamp delta (one byte,
            // 0), then its offset delta, zigzag 1 = 0x02; make it 2 (0x04).
            let first_length = usize::from(plain[RECORD_BATCH_HEADER_BYTES]) / 2;
            let second = RECORD_BATCH_HEADER_BYTES + 1 + first_length;
            assert_eq!(plain[second + 3], 0x02);
            plain[second + 3] = 0x04;
            let err = check(&encode(plain, codec)).unwrap_err();
            assert!(
                err.0.contains("invalid offset delta 2, expected 1"),
                "{codec:?}: {err}"
            );
        }
    }

    #[test]
    fn empty_batches_and_idempotent_batches_without_a_sequence_are_refused() {
        let bytes = build_batch_with(&BatchOptions::default(), &[]);
        assert_eq!(
            check(&bytes).unwrap_err().0,
            "Invalid reported count for record batch: 0"
        );
        let options = BatchOptions {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: -1,
            ..BatchOptions::default()
        };
        let bytes = build_batch_with(&options, &records(1));
        assert_eq!(
            check(&bytes).unwrap_err().0,
            "Invalid sequence number -1 in record batch with producerId 7"
        );
    }

    #[test]
    fn garbage_in_a_compressed_section_is_refused() {
        let mut bytes = encode(
            build_batch_with(&BatchOptions::default(), &records(3)),
            Some(Codec::Zstd),
        );
        // The zstd frame's magic number.
        patch(&mut bytes, RECORD_BATCH_HEADER_BYTES, b"\xff\xff\xff\xff");
        assert!(check(&bytes)
            .unwrap_err()
            .0
            .starts_with("compressed record batch: "));
    }
}
