//! The compression codecs the cleaner rewrites (Kafka's attribute bits 0–2): gzip (1) and zstd
//! (4). Snappy (2) and lz4 (3) batches are copied untouched.
//!
//! A compressed v2 batch is the 61-byte header followed by the compressed records section. The
//! cleaner turns one into an uncompressed batch with the same header (codec bits cleared, length
//! adjusted; its CRC is stale and never checked), filters and rebuilds that with
//! [`skald_protocol::batch::rebuild_batch`], and compresses the result again with the same codec.

use std::io::{self, Read, Write};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use skald_protocol::batch::{COMPRESSION_CODEC_MASK, LOG_OVERHEAD, RECORD_BATCH_HEADER_BYTES};

/// Largest records section a batch may decompress to: a bound against decompression bombs. A
/// batch past it is copied untouched, like one of an unsupported codec.
pub(crate) const DECOMPRESSED_BYTES_MAX: usize = 256 << 20;
/// Kafka's default `compression.zstd.level`.
const ZSTD_LEVEL: i32 = 3;

// Kafka's v2 batch layout (the protocol crate's positions are private to it).
const BATCH_LENGTH_POS: usize = 8;
const CRC_POS: usize = 17;
const ATTRIBUTES_POS: usize = 21;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Gzip,
    Zstd,
}

impl Codec {
    /// The codec of attribute value `id`, if the cleaner can rewrite it.
    pub(crate) fn from_id(id: u8) -> Option<Codec> {
        match id {
            1 => Some(Codec::Gzip),
            4 => Some(Codec::Zstd),
            _ => None,
        }
    }

    fn id(self) -> u8 {
        match self {
            Codec::Gzip => 1,
            Codec::Zstd => 4,
        }
    }

    fn decompress(self, data: &[u8]) -> io::Result<Vec<u8>> {
        let limit = DECOMPRESSED_BYTES_MAX as u64 + 1;
        let mut out = Vec::new();
        match self {
            Codec::Gzip => MultiGzDecoder::new(data)
                .take(limit)
                .read_to_end(&mut out)?,
            Codec::Zstd => zstd::stream::read::Decoder::new(data)?
                .take(limit)
                .read_to_end(&mut out)?,
        };
        if out.len() > DECOMPRESSED_BYTES_MAX {
            return Err(io::Error::other(format!(
                "records decompress to more than {DECOMPRESSED_BYTES_MAX} bytes"
            )));
        }
        Ok(out)
    }

    fn compress(self, data: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Codec::Gzip => {
                let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
                encoder.write_all(data)?;
                encoder.finish()
            }
            Codec::Zstd => zstd::stream::encode_all(data, ZSTD_LEVEL),
        }
    }
}

/// The whole compressed batch `batch` as an uncompressed one: same header with the codec bits
/// cleared and the length adjusted, then the decompressed records. Its CRC is left stale: it is
/// only read by `record_views` and rebuilt by `rebuild_batch`, neither of which checks it.
pub(crate) fn decompressed_batch(batch: &[u8], codec: Codec) -> io::Result<Vec<u8>> {
    let header = batch
        .get(..RECORD_BATCH_HEADER_BYTES)
        .ok_or_else(|| io::Error::other("batch shorter than its header"))?;
    let records = codec.decompress(&batch[RECORD_BATCH_HEADER_BYTES..])?;
    let mut plain = Vec::with_capacity(RECORD_BATCH_HEADER_BYTES + records.len());
    plain.extend_from_slice(header);
    plain.extend_from_slice(&records);
    set_length(&mut plain)?;
    let attributes = attributes(&plain) & !COMPRESSION_CODEC_MASK;
    plain[ATTRIBUTES_POS..ATTRIBUTES_POS + 2].copy_from_slice(&attributes.to_be_bytes());
    Ok(plain)
}

/// The uncompressed batch `plain` with its records compressed by `codec`: codec bits set, length
/// and CRC32C recomputed. Every other header field is kept.
pub(crate) fn compressed_batch(plain: &[u8], codec: Codec) -> io::Result<Vec<u8>> {
    let header = plain
        .get(..RECORD_BATCH_HEADER_BYTES)
        .ok_or_else(|| io::Error::other("batch shorter than its header"))?;
    let records = codec.compress(&plain[RECORD_BATCH_HEADER_BYTES..])?;
    let mut batch = Vec::with_capacity(RECORD_BATCH_HEADER_BYTES + records.len());
    batch.extend_from_slice(header);
    batch.extend_from_slice(&records);
    set_length(&mut batch)?;
    let attributes = (attributes(&batch) & !COMPRESSION_CODEC_MASK) | i16::from(codec.id());
    batch[ATTRIBUTES_POS..ATTRIBUTES_POS + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_POS..]);
    batch[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(batch)
}

fn attributes(batch: &[u8]) -> i16 {
    i16::from_be_bytes([batch[ATTRIBUTES_POS], batch[ATTRIBUTES_POS + 1]])
}

fn set_length(batch: &mut [u8]) -> io::Result<()> {
    let length = i32::try_from(batch.len() - LOG_OVERHEAD)
        .map_err(|_| io::Error::other("batch larger than i32::MAX bytes"))?;
    batch[BATCH_LENGTH_POS..BATCH_LENGTH_POS + 4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}
