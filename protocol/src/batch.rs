//! A zero-copy view over Kafka RecordBatch v2 (magic 2) headers.
//!
//! Batches stay bytes: this module reads the 61-byte header in place, checks the CRC32C, patches the
//! fields the broker owns (base offset, partition leader epoch, LogAppendTime) in place, and can walk
//! the records of an *uncompressed* batch just far enough to find a record's offset and timestamp.
//! The produce and fetch paths never decode values or re-encode records; only the log cleaner reads
//! keys and values ([`record_views`]) and rewrites a batch without some records ([`rebuild_batch`]).
//!
//! Layout (big-endian), as in Kafka's `DefaultRecordBatch`:
//!
//! | field | type | position |
//! |---|---|---|
//! | baseOffset | i64 | 0 |
//! | batchLength | i32 | 8 (bytes after this field) |
//! | partitionLeaderEpoch | i32 | 12 |
//! | magic | i8 | 16 |
//! | crc | u32 | 17 (CRC32C of bytes 21..end) |
//! | attributes | i16 | 21 |
//! | lastOffsetDelta | i32 | 23 |
//! | baseTimestamp | i64 | 27 |
//! | maxTimestamp | i64 | 35 |
//! | producerId | i64 | 43 |
//! | producerEpoch | i16 | 51 |
//! | baseSequence | i32 | 53 |
//! | recordsCount | i32 | 57 |
//! | records | … | 61 |

/// Size of a v2 batch header: everything before the first record.
pub const RECORD_BATCH_HEADER_BYTES: usize = 61;
/// Bytes before a batch's `batchLength` counts: the base offset (8) and the length itself (4).
pub const LOG_OVERHEAD: usize = 12;
/// The only batch format Skald stores.
pub const MAGIC_V2: i8 = 2;
/// Smallest legal `batchLength`: a header with no records.
pub const BATCH_LENGTH_MIN: i32 = (RECORD_BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32;
/// `attributes` bits 0-2: the compression codec (0 = none).
pub const COMPRESSION_CODEC_MASK: i16 = 0x07;
/// `attributes` bit 3: timestamps are LogAppendTime (set by the broker) rather than CreateTime.
pub const TIMESTAMP_TYPE_MASK: i16 = 0x08;
/// `attributes` bit 4: the batch belongs to a transaction.
pub const TRANSACTIONAL_FLAG_MASK: i16 = 0x10;
/// `attributes` bit 5: the batch is a control batch (transaction markers).
pub const CONTROL_FLAG_MASK: i16 = 0x20;
/// Kafka's `RecordBatch.NO_TIMESTAMP`.
pub const NO_TIMESTAMP: i64 = -1;

const BASE_OFFSET_POS: usize = 0;
const BATCH_LENGTH_POS: usize = 8;
const PARTITION_LEADER_EPOCH_POS: usize = 12;
const MAGIC_POS: usize = 16;
const CRC_POS: usize = 17;
const ATTRIBUTES_POS: usize = 21;
const LAST_OFFSET_DELTA_POS: usize = 23;
const BASE_TIMESTAMP_POS: usize = 27;
const MAX_TIMESTAMP_POS: usize = 35;
const PRODUCER_ID_POS: usize = 43;
const PRODUCER_EPOCH_POS: usize = 51;
const BASE_SEQUENCE_POS: usize = 53;
const RECORDS_COUNT_POS: usize = 57;

/// Why bytes are not a valid v2 record batch (or sequence of them).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    /// The buffer ends before the header or the batch its length announces.
    #[error("record batch truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    /// `batchLength` is smaller than a v2 header.
    #[error("record batch length {0} is smaller than a v2 header ({BATCH_LENGTH_MIN})")]
    BatchLengthTooSmall(i32),
    /// The batch is larger than the caller's limit.
    #[error("record batch of {size} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge { size: usize, max: usize },
    /// A single batch was expected but bytes follow it.
    #[error("{trailing} bytes follow the record batch")]
    TrailingBytes { trailing: usize },
    /// Magic 0 or 1 (old message sets) or garbage; the broker answers UNSUPPORTED_FOR_MESSAGE_FORMAT.
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// The stored CRC32C does not match the bytes it covers.
    #[error("record batch CRC32C mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("record batch has a negative records count {0}")]
    InvalidRecordsCount(i32),
    #[error("record batch has a negative last offset delta {0}")]
    InvalidLastOffsetDelta(i32),
    /// Records cannot be scanned without decompressing them.
    #[error("record batch is compressed (codec {0}); its records cannot be scanned")]
    Compressed(u8),
    /// A record inside an uncompressed batch is malformed.
    #[error("malformed record at byte {position} of the records section: {reason}")]
    MalformedRecord {
        position: usize,
        reason: &'static str,
    },
}

/// The fixed 61-byte header of a v2 record batch, copied out of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordBatchHeader {
    /// Offset of the first record; assigned by the broker on append.
    pub base_offset: i64,
    /// Bytes after the `batchLength` field (the whole batch is [`Self::total_size`]).
    pub batch_length: i32,
    /// Leader epoch of the leader that appended the batch; set by the broker.
    pub partition_leader_epoch: i32,
    /// Always [`MAGIC_V2`] in a parsed header.
    pub magic: i8,
    /// CRC32C over bytes `attributes..end`.
    pub crc: u32,
    pub attributes: i16,
    /// `last offset - base offset`; `records_count - 1` unless compaction removed records.
    pub last_offset_delta: i32,
    /// Timestamp of the first record (CreateTime).
    pub base_timestamp: i64,
    /// Largest record timestamp, or the LogAppendTime when that timestamp type is set.
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl RecordBatchHeader {
    /// Parses the header at the front of `buf` without checking the CRC or that the whole batch is
    /// present.
    ///
    /// The magic byte is checked first (once 17 bytes are present), so an old message set yields
    /// [`BatchError::UnsupportedMagic`] even if it is shorter than a v2 header.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() <= MAGIC_POS {
            return Err(BatchError::Truncated {
                needed: RECORD_BATCH_HEADER_BYTES,
                available: buf.len(),
            });
        }
        let magic = buf[MAGIC_POS] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        let batch_length = read_i32(buf, BATCH_LENGTH_POS);
        if batch_length < BATCH_LENGTH_MIN {
            return Err(BatchError::BatchLengthTooSmall(batch_length));
        }
        let Some(header) = buf.get(..RECORD_BATCH_HEADER_BYTES) else {
            return Err(BatchError::Truncated {
                needed: RECORD_BATCH_HEADER_BYTES,
                available: buf.len(),
            });
        };
        let header = Self {
            base_offset: read_i64(header, BASE_OFFSET_POS),
            batch_length,
            partition_leader_epoch: read_i32(header, PARTITION_LEADER_EPOCH_POS),
            magic,
            crc: read_i32(header, CRC_POS) as u32,
            attributes: read_i16(header, ATTRIBUTES_POS),
            last_offset_delta: read_i32(header, LAST_OFFSET_DELTA_POS),
            base_timestamp: read_i64(header, BASE_TIMESTAMP_POS),
            max_timestamp: read_i64(header, MAX_TIMESTAMP_POS),
            producer_id: read_i64(header, PRODUCER_ID_POS),
            producer_epoch: read_i16(header, PRODUCER_EPOCH_POS),
            base_sequence: read_i32(header, BASE_SEQUENCE_POS),
            records_count: read_i32(header, RECORDS_COUNT_POS),
        };
        if header.records_count < 0 {
            return Err(BatchError::InvalidRecordsCount(header.records_count));
        }
        if header.last_offset_delta < 0 {
            return Err(BatchError::InvalidLastOffsetDelta(header.last_offset_delta));
        }
        Ok(header)
    }

    /// Size of the whole batch including [`LOG_OVERHEAD`].
    pub fn total_size(&self) -> usize {
        // `batch_length >= BATCH_LENGTH_MIN > 0` in a parsed header.
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Offset of the last record (saturating, so a hostile base offset cannot overflow).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    /// Compression codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_CODEC_MASK) as u8
    }

    pub fn timestamp_type_is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_MASK != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG_MASK != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG_MASK != 0
    }
}

/// Checks that `buf` is exactly one whole v2 batch with a correct CRC32C, and returns its header.
pub fn validate_batch(buf: &[u8]) -> Result<RecordBatchHeader, BatchError> {
    let header = check_batch_at_front(buf, usize::MAX)?;
    let total = header.total_size();
    if buf.len() > total {
        return Err(BatchError::TrailingBytes {
            trailing: buf.len() - total,
        });
    }
    Ok(header)
}

/// Validates the batch at the front of `buf` (header, length, CRC); bytes after it are ignored.
fn check_batch_at_front(
    buf: &[u8],
    max_batch_bytes: usize,
) -> Result<RecordBatchHeader, BatchError> {
    let header = check_extent(buf, max_batch_bytes)?;
    let actual = crc32c::crc32c(&buf[ATTRIBUTES_POS..header.total_size()]);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch {
            expected: header.crc,
            actual,
        });
    }
    Ok(header)
}

/// Parses the header at the front of `buf` and checks the whole batch is present and within the limit.
fn check_extent(buf: &[u8], max_batch_bytes: usize) -> Result<RecordBatchHeader, BatchError> {
    let header = RecordBatchHeader::parse(buf)?;
    let total = header.total_size();
    if total > max_batch_bytes {
        return Err(BatchError::BatchTooLarge {
            size: total,
            max: max_batch_bytes,
        });
    }
    if buf.len() < total {
        return Err(BatchError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    Ok(header)
}

/// Iterates the batches of a buffer of concatenated batches, yielding `(position, header)`.
///
/// Stops at the first invalid batch: that error is yielded once, then the iterator returns `None`.
/// By default each batch's CRC32C is checked; [`RecordBatches::headers_only`] skips that for callers
/// that walk data they have already validated (e.g. a segment's readable range).
#[derive(Debug, Clone)]
pub struct RecordBatches<'a> {
    buf: &'a [u8],
    position: usize,
    check_crc: bool,
    max_batch_bytes: usize,
    done: bool,
}

impl<'a> RecordBatches<'a> {
    /// Validating iterator: length, magic and CRC32C of every batch.
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            position: 0,
            check_crc: true,
            max_batch_bytes: usize::MAX,
            done: false,
        }
    }

    /// Iterator that checks headers and lengths but not CRCs.
    pub fn headers_only(buf: &'a [u8]) -> Self {
        Self {
            check_crc: false,
            ..Self::new(buf)
        }
    }

    /// Rejects any batch larger than `max_batch_bytes` (Kafka's `message.max.bytes`).
    pub fn with_max_batch_bytes(mut self, max_batch_bytes: usize) -> Self {
        self.max_batch_bytes = max_batch_bytes;
        self
    }

    /// Position of the next batch: after the iterator stops with `None`, the length of the valid prefix.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl Iterator for RecordBatches<'_> {
    type Item = Result<(usize, RecordBatchHeader), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.buf.get(self.position..).unwrap_or_default();
        if rest.is_empty() {
            self.done = true;
            return None;
        }
        let checked = if self.check_crc {
            check_batch_at_front(rest, self.max_batch_bytes)
        } else {
            check_extent(rest, self.max_batch_bytes)
        };
        match checked {
            Ok(header) => {
                let position = self.position;
                self.position += header.total_size();
                Some(Ok((position, header)))
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }
}

/// Length of the longest prefix of `buf` made of whole, valid (CRC-checked) batches.
pub fn valid_prefix_len(buf: &[u8]) -> usize {
    let mut batches = RecordBatches::new(buf);
    for item in batches.by_ref() {
        if item.is_err() {
            break;
        }
    }
    batches.position()
}

/// Sets the base offset of the batch at the front of `buf`. The field is outside the CRC.
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) -> Result<(), BatchError> {
    write_header_field(buf, BASE_OFFSET_POS, &base_offset.to_be_bytes())
}

/// Sets the partition leader epoch of the batch at the front of `buf`. The field is outside the CRC.
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: i32) -> Result<(), BatchError> {
    write_header_field(buf, PARTITION_LEADER_EPOCH_POS, &epoch.to_be_bytes())
}

/// Marks the batch at the front of `buf` as LogAppendTime with `timestamp_ms` as its max timestamp
/// and recomputes the CRC32C, which covers both fields. Records are untouched: readers take every
/// record's timestamp from the batch's max timestamp when this type is set.
pub fn set_log_append_time(buf: &mut [u8], timestamp_ms: i64) -> Result<(), BatchError> {
    let header = check_extent(buf, usize::MAX)?;
    let attributes = header.attributes | TIMESTAMP_TYPE_MASK;
    buf[ATTRIBUTES_POS..ATTRIBUTES_POS + 2].copy_from_slice(&attributes.to_be_bytes());
    buf[MAX_TIMESTAMP_POS..MAX_TIMESTAMP_POS + 8].copy_from_slice(&timestamp_ms.to_be_bytes());
    let crc = crc32c::crc32c(&buf[ATTRIBUTES_POS..header.total_size()]);
    buf[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// The header a leader stores for the valid batch at the front of `batch`, built beside it
/// rather than in it: `base_offset` and `leader_epoch` set (both outside the CRC), and with
/// `log_append_time_ms` the timestamp type and max timestamp set and the CRC32C recomputed over
/// the new header fields and the untouched records. The log writes this header followed by
/// `batch[RECORD_BATCH_HEADER_BYTES..]`, so a produce request's bytes reach the file without
/// being copied or changed; the result equals what the `set_*` functions make of a copy.
pub fn leader_header(
    batch: &[u8],
    base_offset: i64,
    leader_epoch: i32,
    log_append_time_ms: Option<i64>,
) -> Result<[u8; RECORD_BATCH_HEADER_BYTES], BatchError> {
    let parsed = check_extent(batch, usize::MAX)?;
    let mut header = [0u8; RECORD_BATCH_HEADER_BYTES];
    header.copy_from_slice(&batch[..RECORD_BATCH_HEADER_BYTES]);
    header[BASE_OFFSET_POS..BASE_OFFSET_POS + 8].copy_from_slice(&base_offset.to_be_bytes());
    header[PARTITION_LEADER_EPOCH_POS..PARTITION_LEADER_EPOCH_POS + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
    if let Some(timestamp_ms) = log_append_time_ms {
        let attributes = parsed.attributes | TIMESTAMP_TYPE_MASK;
        header[ATTRIBUTES_POS..ATTRIBUTES_POS + 2].copy_from_slice(&attributes.to_be_bytes());
        header[MAX_TIMESTAMP_POS..MAX_TIMESTAMP_POS + 8]
            .copy_from_slice(&timestamp_ms.to_be_bytes());
        // The CRC covers attributes to the batch's end: the new header fields, then the records.
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&header[ATTRIBUTES_POS..]),
            &batch[RECORD_BATCH_HEADER_BYTES..parsed.total_size()],
        );
        header[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    }
    Ok(header)
}

/// Sets a batch's max timestamp (e.g. on a batch emptied of its records, which keeps the time
/// its producer last wrote) and rewrites its CRC.
pub fn set_max_timestamp(buf: &mut [u8], timestamp_ms: i64) -> Result<(), BatchError> {
    let header = check_extent(buf, usize::MAX)?;
    buf[MAX_TIMESTAMP_POS..MAX_TIMESTAMP_POS + 8].copy_from_slice(&timestamp_ms.to_be_bytes());
    let crc = crc32c::crc32c(&buf[ATTRIBUTES_POS..header.total_size()]);
    buf[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

fn write_header_field(buf: &mut [u8], position: usize, bytes: &[u8]) -> Result<(), BatchError> {
    let available = buf.len();
    if available < RECORD_BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated {
            needed: RECORD_BATCH_HEADER_BYTES,
            available,
        });
    }
    buf[position..position + bytes.len()].copy_from_slice(bytes);
    Ok(())
}

/// What [`Records`] reports about one record of an uncompressed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
}

/// Walks the records of an uncompressed batch, yielding each record's deltas; never copies keys or
/// values. Yields exactly `records_count` records, then fails if bytes remain in the batch (as Kafka
/// does). Stops after the first error.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    section: &'a [u8],
    position: usize,
    remaining: i32,
    done: bool,
}

/// Walks the records of the uncompressed batch at the front of `batch` (the CRC is not checked).
pub fn records(batch: &[u8]) -> Result<Records<'_>, BatchError> {
    let header = check_extent(batch, usize::MAX)?;
    if header.compression() != 0 {
        return Err(BatchError::Compressed(header.compression()));
    }
    Ok(Records {
        section: &batch[RECORD_BATCH_HEADER_BYTES..header.total_size()],
        position: 0,
        remaining: header.records_count,
        done: false,
    })
}

impl Iterator for Records<'_> {
    type Item = Result<RecordInfo, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.advance().map(|item| {
            item.map(|view| RecordInfo {
                offset_delta: view.offset_delta,
                timestamp_delta: view.timestamp_delta,
            })
        })
    }
}

impl<'a> Records<'a> {
    fn advance(&mut self) -> Option<Result<RecordView<'a>, BatchError>> {
        if self.done {
            return None;
        }
        if self.remaining == 0 {
            self.done = true;
            if self.position != self.section.len() {
                return Some(Err(self.malformed("bytes remain after the last record")));
            }
            return None;
        }
        match self.next_record() {
            Ok(view) => {
                self.remaining -= 1;
                Some(Ok(view))
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }

    fn malformed(&self, reason: &'static str) -> BatchError {
        BatchError::MalformedRecord {
            position: self.position,
            reason,
        }
    }

    fn next_record(&mut self) -> Result<RecordView<'a>, BatchError> {
        let mut cursor = Cursor {
            buf: self.section,
            position: self.position,
        };
        let length = cursor
            .varint()
            .ok_or_else(|| self.malformed("bad record length"))?;
        if length < 0 {
            return Err(self.malformed("negative record length"));
        }
        let start = cursor.position;
        let end = start
            .checked_add(length as usize)
            .filter(|&end| end <= self.section.len())
            .ok_or_else(|| self.malformed("record extends past the batch"))?;
        let mut body = Cursor {
            buf: &self.section[..end],
            position: start,
        };
        let fail = |reason| BatchError::MalformedRecord {
            position: start,
            reason,
        };
        body.skip(1).ok_or_else(|| fail("missing attributes"))?;
        let timestamp_delta = body.varlong().ok_or_else(|| fail("bad timestamp delta"))?;
        let offset_delta = body.varint().ok_or_else(|| fail("bad offset delta"))?;
        let key = body.nullable_bytes().ok_or_else(|| fail("bad key"))?;
        let value = body.nullable_bytes().ok_or_else(|| fail("bad value"))?;
        let headers = body.varint().ok_or_else(|| fail("bad header count"))?;
        if headers < 0 {
            return Err(fail("negative header count"));
        }
        for _ in 0..headers {
            let key_len = body.varint().ok_or_else(|| fail("bad header key length"))?;
            if key_len < 0 {
                return Err(fail("null header key"));
            }
            body.skip(key_len as usize)
                .ok_or_else(|| fail("bad header key"))?;
            body.skip_nullable_bytes()
                .ok_or_else(|| fail("bad header value"))?;
        }
        if body.position != end {
            return Err(fail("record length does not match its fields"));
        }
        let record_start = self.position;
        self.position = end;
        Ok(RecordView {
            offset_delta,
            timestamp_delta,
            key,
            value,
            bytes: &self.section[record_start..end],
        })
    }
}

/// One record of an uncompressed batch, borrowed from the batch: what log compaction reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    /// `None` for a null key (invalid on compacted topics; Kafka refuses it at produce time).
    pub key: Option<&'a [u8]>,
    /// `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// The whole record as stored, its length prefix included. Its deltas are relative to the
    /// batch's base offset and base timestamp, so it can be copied into any batch with the same two.
    pub bytes: &'a [u8],
}

/// Like [`Records`], yielding each record's key, value and bytes (see [`record_views`]).
#[derive(Debug, Clone)]
pub struct RecordViews<'a>(Records<'a>);

/// Walks the records of the uncompressed batch at the front of `batch` (the CRC is not checked),
/// borrowing each record's key and value; same checks and stopping rules as [`records`].
pub fn record_views(batch: &[u8]) -> Result<RecordViews<'_>, BatchError> {
    records(batch).map(RecordViews)
}

impl<'a> Iterator for RecordViews<'a> {
    type Item = Result<RecordView<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.advance()
    }
}

/// The log cleaner's rewrite of one uncompressed batch (Kafka's `MemoryRecords.filterTo`): the
/// header of the batch at the front of `original` — base offset, last offset delta (so the batch
/// still ends where it did), base timestamp, attributes, producer fields, leader epoch — with only
/// `kept` (records of that batch, in order) as its records. The records count, length and CRC32C
/// are recomputed, and so is the max timestamp unless the batch is LogAppendTime. Not for the
/// produce or fetch path: those never re-encode.
pub fn rebuild_batch(original: &[u8], kept: &[RecordView<'_>]) -> Result<Vec<u8>, BatchError> {
    let header = check_extent(original, usize::MAX)?;
    if header.compression() != 0 {
        return Err(BatchError::Compressed(header.compression()));
    }
    let records_len: usize = kept.iter().map(|r| r.bytes.len()).sum();
    let batch_length = i32::try_from(RECORD_BATCH_HEADER_BYTES - LOG_OVERHEAD + records_len)
        .map_err(|_| BatchError::BatchTooLarge {
            size: RECORD_BATCH_HEADER_BYTES + records_len,
            max: i32::MAX as usize,
        })?;
    let mut batch = Vec::with_capacity(RECORD_BATCH_HEADER_BYTES + records_len);
    batch.extend_from_slice(&original[..RECORD_BATCH_HEADER_BYTES]);
    for record in kept {
        batch.extend_from_slice(record.bytes);
    }
    batch[BATCH_LENGTH_POS..BATCH_LENGTH_POS + 4].copy_from_slice(&batch_length.to_be_bytes());
    // `kept` is never longer than the original's records, whose count fits an i32.
    let count = i32::try_from(kept.len()).unwrap_or(i32::MAX);
    batch[RECORDS_COUNT_POS..RECORDS_COUNT_POS + 4].copy_from_slice(&count.to_be_bytes());
    if !header.timestamp_type_is_log_append_time() {
        let max_timestamp = kept
            .iter()
            .map(|r| header.base_timestamp.saturating_add(r.timestamp_delta))
            .max()
            .unwrap_or(NO_TIMESTAMP);
        batch[MAX_TIMESTAMP_POS..MAX_TIMESTAMP_POS + 8]
            .copy_from_slice(&max_timestamp.to_be_bytes());
    }
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_POS..]);
    batch[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(batch)
}

/// A bounds-checked reader over Kafka's zigzag varints; every method returns `None` past the end.
struct Cursor<'a> {
    buf: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.position.checked_add(n)?;
        if end > self.buf.len() {
            return None;
        }
        self.position = end;
        Some(())
    }

    fn unsigned(&mut self, max_bytes: u32) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let byte = *self.buf.get(self.position)?;
            self.position += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn varint(&mut self) -> Option<i32> {
        let raw = u32::try_from(self.unsigned(5)?).ok()?;
        Some(((raw >> 1) as i32) ^ -((raw & 1) as i32))
    }

    fn varlong(&mut self) -> Option<i64> {
        let raw = self.unsigned(10)?;
        Some(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    /// Reads a varint length (-1 = null) and that many bytes.
    fn nullable_bytes(&mut self) -> Option<Option<&'a [u8]>> {
        match self.varint()? {
            -1 => Some(None),
            len if len < -1 => None,
            len => {
                let start = self.position;
                self.skip(len as usize)?;
                Some(Some(&self.buf[start..self.position]))
            }
        }
    }

    /// Skips a varint length (-1 = null) and that many bytes.
    fn skip_nullable_bytes(&mut self) -> Option<()> {
        match self.varint()? {
            -1 => Some(()),
            len if len < -1 => None,
            len => self.skip(len as usize),
        }
    }
}

/// The absolute offset of the first record in `batch` whose timestamp is `>= target_ts`.
///
/// See [`first_record_with_timestamp_at_least`], which also returns the record's timestamp.
pub fn first_offset_with_timestamp_at_least(
    batch: &[u8],
    target_ts: i64,
) -> Result<Option<i64>, BatchError> {
    Ok(first_record_with_timestamp_at_least(batch, target_ts)?.map(|(offset, _)| offset))
}

/// `(offset, timestamp)` of the first record in the batch at the front of `batch` whose timestamp is
/// `>= target_ts` (Kafka's ListOffsets-by-time within one batch).
///
/// With LogAppendTime every record's timestamp is the batch's max timestamp. A compressed batch cannot
/// be scanned without decompressing it, so it answers `(base_offset, max_timestamp)` when its max
/// timestamp qualifies: the consumer then skips the earlier records of that batch itself.
pub fn first_record_with_timestamp_at_least(
    batch: &[u8],
    target_ts: i64,
) -> Result<Option<(i64, i64)>, BatchError> {
    let header = check_extent(batch, usize::MAX)?;
    if header.max_timestamp < target_ts || header.records_count == 0 {
        return Ok(None);
    }
    if header.compression() != 0 {
        return Ok(Some((header.base_offset, header.max_timestamp)));
    }
    for record in records(batch)? {
        let record = record?;
        let timestamp = if header.timestamp_type_is_log_append_time() {
            header.max_timestamp
        } else {
            header.base_timestamp.saturating_add(record.timestamp_delta)
        };
        if timestamp >= target_ts {
            let offset = header
                .base_offset
                .saturating_add(i64::from(record.offset_delta));
            return Ok(Some((offset, timestamp)));
        }
    }
    Ok(None)
}

fn read_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn read_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(bytes)
}

/// Kafka's control record types: the `type` in the key of a control batch's one record.
pub const CONTROL_TYPE_ABORT: i16 = 0;
pub const CONTROL_TYPE_COMMIT: i16 = 1;

/// A transaction marker read from a control batch: its control record type and the coordinator
/// epoch in its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndTxnMarker {
    pub control_type: i16,
    pub coordinator_epoch: i32,
}

/// The marker of the control batch at the front of `batch` (its first record's key is
/// `version: i16, type: i16`, its value `version: i16, coordinator_epoch: i32`), or `None` if it
/// is not an uncompressed control batch with such a key. A value too short for the coordinator
/// epoch reads as epoch -1.
pub fn end_txn_marker(batch: &[u8]) -> Option<EndTxnMarker> {
    let header = RecordBatchHeader::parse(batch).ok()?;
    if !header.is_control() {
        return None;
    }
    let first = record_views(batch).ok()?.next()?.ok()?;
    let key = first.key?;
    if key.len() < 4 {
        return None;
    }
    let coordinator_epoch = first
        .value
        .filter(|value| value.len() >= 6)
        .map_or(-1, |v| i32::from_be_bytes([v[2], v[3], v[4], v[5]]));
    Some(EndTxnMarker {
        control_type: i16::from_be_bytes([key[2], key[3]]),
        coordinator_epoch,
    })
}

/// A transaction marker as a transaction coordinator asks a leader to write it (Kafka's
/// `EndTransactionMarker`): one control batch of one record, transactional, from the producer
/// whose transaction it ends. Offsets and the leader epoch are the log's to assign.
pub fn end_txn_marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Vec<u8> {
    let control_type = if commit {
        CONTROL_TYPE_COMMIT
    } else {
        CONTROL_TYPE_ABORT
    };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes()); // control record key version
    key.extend_from_slice(&control_type.to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes()); // marker value version
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    // The record: attributes, timestamp delta 0, offset delta 0, key, value, no headers; the
    // varints of these small values are single bytes (zigzag doubles them).
    let mut record = vec![0u8, 0, 0];
    record.push((key.len() as u8) << 1);
    record.extend_from_slice(&key);
    record.push((value.len() as u8) << 1);
    record.extend_from_slice(&value);
    record.push(0);
    let mut batch = Vec::with_capacity(RECORD_BATCH_HEADER_BYTES + 1 + record.len());
    batch.extend_from_slice(&0i64.to_be_bytes());
    let batch_length = (RECORD_BATCH_HEADER_BYTES - LOG_OVERHEAD + 1 + record.len()) as i32;
    batch.extend_from_slice(&batch_length.to_be_bytes());
    batch.extend_from_slice(&(-1i32).to_be_bytes());
    batch.push(MAGIC_V2 as u8);
    batch.extend_from_slice(&[0; 4]);
    batch.extend_from_slice(&(TRANSACTIONAL_FLAG_MASK | CONTROL_FLAG_MASK).to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    batch.extend_from_slice(&timestamp.to_be_bytes());
    batch.extend_from_slice(&timestamp.to_be_bytes());
    batch.extend_from_slice(&producer_id.to_be_bytes());
    batch.extend_from_slice(&producer_epoch.to_be_bytes());
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // no sequence
    batch.extend_from_slice(&1i32.to_be_bytes());
    batch.push((record.len() as u8) << 1);
    batch.extend_from_slice(&record);
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_POS..]);
    batch[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// Builders for valid batches, for tests in this and other crates. Not part of the supported API.
#[doc(hidden)]
pub mod testing {
    use super::*;

    /// One record to put in a test batch.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct TestRecord {
        pub key: Option<Vec<u8>>,
        pub value: Option<Vec<u8>>,
        /// Absolute CreateTime timestamp.
        pub timestamp: i64,
        pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    }

    impl TestRecord {
        pub fn new(key: Option<&[u8]>, value: Option<&[u8]>, timestamp: i64) -> Self {
            Self {
                key: key.map(<[u8]>::to_vec),
                value: value.map(<[u8]>::to_vec),
                timestamp,
                headers: Vec::new(),
            }
        }
    }

    /// Header fields of a test batch that callers may want to vary.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct BatchOptions {
        pub base_offset: i64,
        pub partition_leader_epoch: i32,
        /// Compression bits are set as given but the records are written uncompressed.
        pub attributes: i16,
        pub producer_id: i64,
        pub producer_epoch: i16,
        pub base_sequence: i32,
    }

    impl Default for BatchOptions {
        fn default() -> Self {
            Self {
                base_offset: 0,
                partition_leader_epoch: -1,
                attributes: 0,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
            }
        }
    }

    /// A valid, uncompressed, CreateTime batch with offset deltas `0..records.len()`; its base
    /// timestamp is the first record's and its max timestamp the largest.
    pub fn build_batch(base_offset: i64, records: &[TestRecord]) -> Vec<u8> {
        build_batch_with(
            &BatchOptions {
                base_offset,
                ..BatchOptions::default()
            },
            records,
        )
    }

    /// `count` records with timestamps `base_timestamp + i`, key `k{i}`, and `value_bytes` of value.
    pub fn simple_batch(
        base_offset: i64,
        count: usize,
        base_timestamp: i64,
        value_bytes: usize,
    ) -> Vec<u8> {
        let records: Vec<TestRecord> = (0..count)
            .map(|i| TestRecord {
                key: Some(format!("k{i}").into_bytes()),
                value: Some(vec![(i % 251) as u8; value_bytes]),
                timestamp: base_timestamp + i as i64,
                headers: Vec::new(),
            })
            .collect();
        build_batch(base_offset, &records)
    }

    pub fn build_batch_with(options: &BatchOptions, records: &[TestRecord]) -> Vec<u8> {
        let base_timestamp = records.first().map_or(NO_TIMESTAMP, |r| r.timestamp);
        let max_timestamp = records
            .iter()
            .map(|r| r.timestamp)
            .max()
            .unwrap_or(NO_TIMESTAMP);
        let mut body = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let mut encoded = vec![0u8]; // attributes
            put_varlong(&mut encoded, record.timestamp - base_timestamp);
            put_varint(&mut encoded, i as i32);
            put_nullable(&mut encoded, record.key.as_deref());
            put_nullable(&mut encoded, record.value.as_deref());
            put_varint(&mut encoded, record.headers.len() as i32);
            for (key, value) in &record.headers {
                put_nullable(&mut encoded, Some(key));
                put_nullable(&mut encoded, value.as_deref());
            }
            put_varint(&mut body, encoded.len() as i32);
            body.extend_from_slice(&encoded);
        }
        let mut batch = Vec::with_capacity(RECORD_BATCH_HEADER_BYTES + body.len());
        batch.extend_from_slice(&options.base_offset.to_be_bytes());
        let batch_length = (RECORD_BATCH_HEADER_BYTES - LOG_OVERHEAD + body.len()) as i32;
        batch.extend_from_slice(&batch_length.to_be_bytes());
        batch.extend_from_slice(&options.partition_leader_epoch.to_be_bytes());
        batch.push(MAGIC_V2 as u8);
        batch.extend_from_slice(&[0; 4]); // crc, filled below
        batch.extend_from_slice(&options.attributes.to_be_bytes());
        let last_offset_delta = records.len().saturating_sub(1) as i32;
        batch.extend_from_slice(&last_offset_delta.to_be_bytes());
        batch.extend_from_slice(&base_timestamp.to_be_bytes());
        batch.extend_from_slice(&max_timestamp.to_be_bytes());
        batch.extend_from_slice(&options.producer_id.to_be_bytes());
        batch.extend_from_slice(&options.producer_epoch.to_be_bytes());
        batch.extend_from_slice(&options.base_sequence.to_be_bytes());
        batch.extend_from_slice(&(records.len() as i32).to_be_bytes());
        batch.extend_from_slice(&body);
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_POS..]);
        batch[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    pub fn put_varint(out: &mut Vec<u8>, value: i32) {
        put_unsigned(out, ((value << 1) ^ (value >> 31)) as u32 as u64);
    }

    pub fn put_varlong(out: &mut Vec<u8>, value: i64) {
        put_unsigned(out, ((value << 1) ^ (value >> 63)) as u64);
    }

    fn put_unsigned(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
        match bytes {
            None => put_varint(out, -1),
            Some(bytes) => {
                put_varint(out, bytes.len() as i32);
                out.extend_from_slice(bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use proptest::prelude::*;

    fn three_records() -> Vec<TestRecord> {
        let mut with_header = TestRecord::new(Some(b"k2"), None, 1_000_030);
        with_header
            .headers
            .push((b"h".to_vec(), Some(b"v".to_vec())));
        with_header.headers.push((b"n".to_vec(), None));
        vec![
            TestRecord::new(Some(b"k0"), Some(b"v0"), 1_000_000),
            TestRecord::new(None, Some(b"value one"), 1_000_050),
            with_header,
        ]
    }

    #[test]
    fn built_batch_parses_to_the_fields_it_was_built_with() {
        let options = BatchOptions {
            base_offset: 42,
            partition_leader_epoch: 7,
            attributes: TRANSACTIONAL_FLAG_MASK,
            producer_id: 1234,
            producer_epoch: 3,
            base_sequence: 99,
        };
        let batch = build_batch_with(&options, &three_records());
        let header = validate_batch(&batch).unwrap();
        assert_eq!(header, RecordBatchHeader::parse(&batch).unwrap());
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.total_size(), batch.len());
        assert_eq!(header.batch_length as usize, batch.len() - LOG_OVERHEAD);
        assert_eq!(header.partition_leader_epoch, 7);
        assert_eq!(header.magic, 2);
        assert_eq!(header.attributes, TRANSACTIONAL_FLAG_MASK);
        assert!(header.is_transactional());
        assert!(!header.is_control());
        assert!(!header.timestamp_type_is_log_append_time());
        assert_eq!(header.compression(), 0);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.last_offset(), 44);
        assert_eq!(header.next_offset(), 45);
        assert_eq!(header.base_timestamp, 1_000_000);
        assert_eq!(header.max_timestamp, 1_000_050);
        assert_eq!(header.producer_id, 1234);
        assert_eq!(header.producer_epoch, 3);
        assert_eq!(header.base_sequence, 99);
        assert_eq!(header.records_count, 3);
    }

    #[test]
    fn records_yield_each_delta() {
        let batch = build_batch(0, &three_records());
        let got: Vec<_> = records(&batch).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got,
            vec![
                RecordInfo {
                    offset_delta: 0,
                    timestamp_delta: 0
                },
                RecordInfo {
                    offset_delta: 1,
                    timestamp_delta: 50
                },
                RecordInfo {
                    offset_delta: 2,
                    timestamp_delta: 30
                },
            ]
        );
    }

    #[test]
    fn record_views_borrow_keys_values_and_bytes() {
        let batch = build_batch(7, &three_records());
        let views: Vec<_> = record_views(&batch)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let got: Vec<_> = views
            .iter()
            .map(|v| (v.offset_delta, v.timestamp_delta, v.key, v.value))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 0, Some(&b"k0"[..]), Some(&b"v0"[..])),
                (1, 50, None, Some(&b"value one"[..])),
                (2, 30, Some(&b"k2"[..]), None),
            ]
        );
        let all: Vec<u8> = views.iter().flat_map(|v| v.bytes.iter().copied()).collect();
        assert_eq!(all, batch[RECORD_BATCH_HEADER_BYTES..]);
    }

    #[test]
    fn rebuilt_batch_keeps_offsets_and_producer_fields() {
        let options = BatchOptions {
            base_offset: 100,
            partition_leader_epoch: 4,
            attributes: TRANSACTIONAL_FLAG_MASK,
            producer_id: 77,
            producer_epoch: 2,
            base_sequence: 10,
        };
        let batch = build_batch_with(&options, &three_records());
        let views: Vec<_> = record_views(&batch)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let kept = [views[0], views[2]];
        let rebuilt = rebuild_batch(&batch, &kept).unwrap();
        let header = validate_batch(&rebuilt).unwrap();
        let original = validate_batch(&batch).unwrap();
        assert_eq!(header.base_offset, 100);
        assert_eq!(header.last_offset(), 102);
        assert_eq!(header.records_count, 2);
        assert_eq!(header.base_timestamp, 1_000_000);
        assert_eq!(header.max_timestamp, 1_000_030);
        assert_eq!(
            (
                header.partition_leader_epoch,
                header.attributes,
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (4, TRANSACTIONAL_FLAG_MASK, 77, 2, 10)
        );
        assert_ne!(header.crc, original.crc);
        let again: Vec<_> = record_views(&rebuilt)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(again, kept.to_vec());
        // LogAppendTime keeps the batch's max timestamp; an empty rebuild is still a valid batch.
        let mut appended = batch.clone();
        set_log_append_time(&mut appended, 9_000_000).unwrap();
        let empty = rebuild_batch(&appended, &[]).unwrap();
        let header = validate_batch(&empty).unwrap();
        assert_eq!((header.records_count, header.last_offset()), (0, 102));
        assert_eq!(header.max_timestamp, 9_000_000);
        let compressed = build_batch_with(
            &BatchOptions {
                attributes: 1,
                ..options
            },
            &three_records(),
        );
        assert_eq!(
            rebuild_batch(&compressed, &[]),
            Err(BatchError::Compressed(1))
        );
    }

    #[test]
    fn patching_keeps_the_batch_valid() {
        let mut batch = build_batch(0, &three_records());
        set_base_offset(&mut batch, 1_000).unwrap();
        set_partition_leader_epoch(&mut batch, 12).unwrap();
        let header = validate_batch(&batch).unwrap();
        assert_eq!(
            (header.base_offset, header.partition_leader_epoch),
            (1_000, 12)
        );
        assert_eq!(header.last_offset(), 1_002);

        set_log_append_time(&mut batch, 5_000_000).unwrap();
        let patched = validate_batch(&batch).unwrap();
        assert!(patched.timestamp_type_is_log_append_time());
        assert_eq!(patched.max_timestamp, 5_000_000);
        assert_eq!(patched.base_timestamp, 1_000_000);
        assert_ne!(patched.crc, header.crc);
        assert_eq!(patched.records_count, 3);
        // Every record now carries the append time.
        assert_eq!(
            first_record_with_timestamp_at_least(&batch, 4_000_000).unwrap(),
            Some((1_000, 5_000_000))
        );
        assert_eq!(
            first_offset_with_timestamp_at_least(&batch, 5_000_001).unwrap(),
            None
        );
    }

    #[test]
    fn a_leader_header_is_the_in_place_patch_of_the_header() {
        let batch = build_batch(0, &three_records());
        let header = leader_header(&batch, 1_000, 12, None).unwrap();
        // Base offset and leader epoch lie outside the CRC: only those 12 bytes change.
        let mut expected = batch[..RECORD_BATCH_HEADER_BYTES].to_vec();
        expected[..8].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0x03, 0xe8]);
        expected[12..16].copy_from_slice(&[0, 0, 0, 12]);
        assert_eq!(header.to_vec(), expected);
        let mut in_place = batch.clone();
        set_base_offset(&mut in_place, 1_000).unwrap();
        set_partition_leader_epoch(&mut in_place, 12).unwrap();
        assert_eq!(header[..], in_place[..RECORD_BATCH_HEADER_BYTES]);
        assert_eq!(
            in_place[RECORD_BATCH_HEADER_BYTES..],
            batch[RECORD_BATCH_HEADER_BYTES..]
        );

        // LogAppendTime: the timestamp type bit, the max timestamp and the CRC change too.
        let stamped = leader_header(&batch, 1_000, 12, Some(5_000_000)).unwrap();
        set_log_append_time(&mut in_place, 5_000_000).unwrap();
        assert_eq!(stamped[..], in_place[..RECORD_BATCH_HEADER_BYTES]);
        assert_eq!(stamped[21..23], [0, 0x08]);
        assert_eq!(stamped[35..43], 5_000_000i64.to_be_bytes());
        let crc = crc32c::crc32c(&in_place[21..]);
        assert_eq!(stamped[17..21], crc.to_be_bytes());
        let mut stored = stamped.to_vec();
        stored.extend_from_slice(&batch[RECORD_BATCH_HEADER_BYTES..]);
        let header = validate_batch(&stored).unwrap();
        assert_eq!(
            (
                header.base_offset,
                header.partition_leader_epoch,
                header.max_timestamp
            ),
            (1_000, 12, 5_000_000)
        );
        assert!(header.timestamp_type_is_log_append_time());
        // The batch it was built from is untouched.
        assert_eq!(validate_batch(&batch).unwrap().base_offset, 0);
    }

    #[test]
    fn a_leader_header_needs_the_whole_batch() {
        let batch = build_batch(0, &three_records());
        assert!(matches!(
            leader_header(&batch[..batch.len() - 1], 1, 1, None),
            Err(BatchError::Truncated { .. })
        ));
        assert!(leader_header(&batch[..20], 1, 1, Some(1)).is_err());
    }

    #[test]
    fn patching_a_short_buffer_fails() {
        let mut short = vec![0u8; 20];
        assert!(matches!(
            set_base_offset(&mut short, 1),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            set_partition_leader_epoch(&mut short, 1),
            Err(BatchError::Truncated { .. })
        ));
        assert!(set_log_append_time(&mut short, 1).is_err());
    }

    #[test]
    fn first_offset_by_timestamp_scans_records() {
        let batch = build_batch(100, &three_records());
        let first = |ts| first_offset_with_timestamp_at_least(&batch, ts).unwrap();
        assert_eq!(first(0), Some(100));
        assert_eq!(first(1_000_000), Some(100));
        assert_eq!(first(1_000_001), Some(101));
        assert_eq!(first(1_000_030), Some(101)); // record 1 (ts 50) comes before record 2 (ts 30)
        assert_eq!(first(1_000_050), Some(101));
        assert_eq!(first(1_000_051), None);
        assert_eq!(
            first_record_with_timestamp_at_least(&batch, 1_000_020).unwrap(),
            Some((101, 1_000_050))
        );
    }

    #[test]
    fn compressed_batches_answer_with_their_base_offset() {
        let options = BatchOptions {
            base_offset: 10,
            attributes: 4, // zstd
            ..BatchOptions::default()
        };
        let batch = build_batch_with(&options, &three_records());
        assert_eq!(validate_batch(&batch).unwrap().compression(), 4);
        assert_eq!(
            first_offset_with_timestamp_at_least(&batch, 1_000_040).unwrap(),
            Some(10)
        );
        assert_eq!(
            first_offset_with_timestamp_at_least(&batch, 1_000_051).unwrap(),
            None
        );
        assert_eq!(records(&batch).unwrap_err(), BatchError::Compressed(4));
    }

    #[test]
    fn old_magic_is_reported_before_length_checks() {
        let mut v1 = vec![0u8; 17];
        v1[16] = 1;
        assert_eq!(
            RecordBatchHeader::parse(&v1),
            Err(BatchError::UnsupportedMagic(1))
        );
        v1[16] = 0;
        assert_eq!(validate_batch(&v1), Err(BatchError::UnsupportedMagic(0)));
        assert!(matches!(
            RecordBatchHeader::parse(&v1[..16]),
            Err(BatchError::Truncated { .. })
        ));
    }

    #[test]
    fn header_field_checks() {
        let batch = build_batch(0, &three_records());
        let mut small = batch.clone();
        small[8..12].copy_from_slice(&48i32.to_be_bytes());
        assert_eq!(
            RecordBatchHeader::parse(&small),
            Err(BatchError::BatchLengthTooSmall(48))
        );
        let mut negative_count = batch.clone();
        negative_count[57..61].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            RecordBatchHeader::parse(&negative_count),
            Err(BatchError::InvalidRecordsCount(-1))
        );
        let mut negative_delta = batch.clone();
        negative_delta[23..27].copy_from_slice(&(-2i32).to_be_bytes());
        assert_eq!(
            RecordBatchHeader::parse(&negative_delta),
            Err(BatchError::InvalidLastOffsetDelta(-2))
        );
        // A delta that disagrees with the count (compacted batch) is fine at the header level.
        let mut compacted = batch.clone();
        compacted[23..27].copy_from_slice(&10i32.to_be_bytes());
        assert_eq!(
            RecordBatchHeader::parse(&compacted).unwrap().last_offset(),
            10
        );

        let mut long = batch.clone();
        long.push(0);
        assert_eq!(
            validate_batch(&long),
            Err(BatchError::TrailingBytes { trailing: 1 })
        );
        assert_eq!(
            RecordBatches::new(&batch)
                .with_max_batch_bytes(batch.len() - 1)
                .next(),
            Some(Err(BatchError::BatchTooLarge {
                size: batch.len(),
                max: batch.len() - 1
            }))
        );
    }

    #[test]
    fn iterator_yields_positions_then_stops_at_the_first_error() {
        let a = simple_batch(0, 2, 10, 5);
        let b = simple_batch(2, 3, 20, 5);
        let mut buf = [a.clone(), b.clone()].concat();
        let got: Vec<_> = RecordBatches::new(&buf)
            .map(|r| r.map(|(p, h)| (p, h.base_offset)))
            .collect();
        assert_eq!(got, vec![Ok((0, 0)), Ok((a.len(), 2))]);
        assert_eq!(valid_prefix_len(&buf), buf.len());

        buf.extend_from_slice(&a[..30]);
        let mut batches = RecordBatches::new(&buf);
        assert!(batches.next().unwrap().is_ok());
        assert!(batches.next().unwrap().is_ok());
        assert!(matches!(
            batches.next(),
            Some(Err(BatchError::Truncated { .. }))
        ));
        assert_eq!(batches.next(), None);
        assert_eq!(batches.position(), a.len() + b.len());
        assert_eq!(valid_prefix_len(&buf), a.len() + b.len());

        let last = buf.len() - 31;
        buf[last] ^= 1; // inside b's records
        assert_eq!(valid_prefix_len(&buf), a.len());
        assert_eq!(
            RecordBatches::headers_only(&buf)
                .filter(Result::is_ok)
                .count(),
            2
        );
    }

    #[test]
    fn malformed_records_are_errors() {
        let batch = build_batch(0, &three_records());
        let header_end = RECORD_BATCH_HEADER_BYTES;
        // Corrupt each records-section byte (the scan does not check the CRC): it must never panic.
        for i in header_end..batch.len() {
            for bit in 0..8 {
                let mut bad = batch.clone();
                bad[i] ^= 1 << bit;
                let _ = records(&bad).map(|r| r.count());
                let _ = first_offset_with_timestamp_at_least(&bad, 1_000_040);
            }
        }
        // Fewer records than the count announces.
        let mut short = batch.clone();
        short[57..61].copy_from_slice(&4i32.to_be_bytes());
        assert!(records(&short).unwrap().any(|r| r.is_err()));
        // More bytes than records.
        let mut extra = batch.clone();
        extra[57..61].copy_from_slice(&2i32.to_be_bytes());
        assert_eq!(
            records(&extra).unwrap().last(),
            Some(Err(BatchError::MalformedRecord {
                position: extra.len() - header_end - records_len_of_last(&batch),
                reason: "bytes remain after the last record"
            }))
        );
    }

    /// Size of the last record (length prefix included) of a batch built from `three_records`.
    fn records_len_of_last(batch: &[u8]) -> usize {
        let mut positions = Vec::new();
        let mut it = records(batch).unwrap();
        positions.push(it.position);
        while let Some(Ok(_)) = it.next() {
            positions.push(it.position);
        }
        positions[positions.len() - 1] - positions[positions.len() - 2]
    }

    /// Bytes whose corruption `validate_batch` must detect: all but base offset and leader epoch.
    fn checked_bytes(len: usize) -> impl Iterator<Item = usize> {
        (BATCH_LENGTH_POS..PARTITION_LEADER_EPOCH_POS).chain(MAGIC_POS..len)
    }

    #[test]
    fn every_single_bit_flip_of_checked_bytes_is_rejected() {
        let batch = build_batch(5, &three_records());
        for i in checked_bytes(batch.len()) {
            for bit in 0..8 {
                let mut bad = batch.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    validate_batch(&bad).is_err(),
                    "flip of byte {i} bit {bit} accepted"
                );
                assert_eq!(valid_prefix_len(&bad), 0);
            }
        }
        // Flips outside the CRC only change those fields.
        for i in (BASE_OFFSET_POS..BATCH_LENGTH_POS).chain(PARTITION_LEADER_EPOCH_POS..MAGIC_POS) {
            let mut flipped = batch.clone();
            flipped[i] ^= 0x80;
            assert!(validate_batch(&flipped).is_ok());
        }
    }

    #[test]
    fn every_truncation_is_rejected() {
        let batch = build_batch(5, &three_records());
        for len in 0..batch.len() {
            assert!(
                validate_batch(&batch[..len]).is_err(),
                "truncation to {len} accepted"
            );
            assert_eq!(valid_prefix_len(&batch[..len]), 0);
        }
    }

    fn arb_record() -> impl Strategy<Value = TestRecord> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            -1_000i64..1_000_000,
            proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 0..8),
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
                ),
                0..3,
            ),
        )
            .prop_map(|(key, value, timestamp, headers)| TestRecord {
                key,
                value,
                timestamp,
                headers,
            })
    }

    proptest! {
        #[test]
        fn random_batches_round_trip_and_reject_damage(
            base_offset in 0i64..1 << 40,
            records_in in proptest::collection::vec(arb_record(), 0..8),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
            target in -2_000i64..1_000_100,
        ) {
            let batch = build_batch(base_offset, &records_in);
            let header = validate_batch(&batch).unwrap();
            prop_assert_eq!(header.records_count as usize, records_in.len());
            prop_assert_eq!(header.base_offset, base_offset);
            let infos: Vec<_> = records(&batch).unwrap().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(infos.len(), records_in.len());

            let expected = records_in.iter().enumerate()
                .find(|(_, r)| r.timestamp >= target)
                .map(|(i, r)| (base_offset + i as i64, r.timestamp));
            prop_assert_eq!(first_record_with_timestamp_at_least(&batch, target).unwrap(), expected);

            let len = cut.index(batch.len());
            prop_assert!(validate_batch(&batch[..len]).is_err());

            let checked: Vec<usize> = checked_bytes(batch.len()).collect();
            let mut bad = batch.clone();
            bad[*flip.get(&checked)] ^= 1 << bit;
            prop_assert!(validate_batch(&bad).is_err());
        }
    }

    #[test]
    fn end_txn_markers_are_valid_control_batches_of_their_type() {
        for (commit, control_type) in [(true, CONTROL_TYPE_COMMIT), (false, CONTROL_TYPE_ABORT)] {
            let marker = end_txn_marker_batch(42, 3, commit, 7, 1_000);
            let header = validate_batch(&marker).unwrap();
            assert!(header.is_control() && header.is_transactional());
            assert_eq!(
                (
                    header.producer_id,
                    header.producer_epoch,
                    header.records_count
                ),
                (42, 3, 1)
            );
            assert_eq!((header.base_sequence, header.max_timestamp), (-1, 1_000));
            assert_eq!(
                end_txn_marker(&marker),
                Some(EndTxnMarker {
                    control_type,
                    coordinator_epoch: 7
                })
            );
        }
        assert_eq!(end_txn_marker(&testing::simple_batch(0, 1, 0, 3)), None);
    }
}
