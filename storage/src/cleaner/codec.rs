//! The compression codecs of Kafka's attribute bits 0–2, all of which the cleaner rewrites:
//! gzip (1), snappy (2), lz4 (3) and zstd (4).
//!
//! A compressed v2 batch is the 61-byte header followed by the compressed records section. The
//! cleaner turns one into an uncompressed batch with the same header (codec bits cleared, length
//! adjusted; its CRC is stale and never checked), filters and rebuilds that with
//! [`skald_protocol::batch::rebuild_batch`], and compresses the result again with the same codec.
//!
//! The byte formats are the ones Kafka's clients read and write for magic 2:
//! - lz4 is the LZ4 *frame* format (Java's `KafkaLZ4BlockOutputStream`, librdkafka's
//!   `rd_kafka_lz4_compress`): independent 64 KiB blocks, no checksums, a correct header checksum
//!   (only magic 0 had the broken one). Frames with checksums or other block sizes are read too.
//! - snappy comes in two forms. The Java producer writes snappy-java's stream framing
//!   (`SnappyOutputStream`: the 8-byte magic `\x82SNAPPY\0`, version and compatible version as
//!   big-endian i32s, then blocks of a big-endian i32 length and raw snappy data of at most
//!   32 KiB uncompressed); librdkafka writes one raw snappy block. Both readers accept both (Java's
//!   `SnappyInputStream` falls back to raw when the magic is absent; librdkafka looks for the
//!   magic), and so does [`Codec::decompress`].

use std::io::{self, Read, Write};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};
use skald_protocol::batch::{COMPRESSION_CODEC_MASK, LOG_OVERHEAD, RECORD_BATCH_HEADER_BYTES};

/// Largest records section a batch may decompress to: a bound against decompression bombs. A
/// batch past it is copied untouched, like one that fails to decompress.
pub(crate) const DECOMPRESSED_BYTES_MAX: usize = 256 << 20;
/// Kafka's default `compression.zstd.level`.
const ZSTD_LEVEL: i32 = 3;

/// snappy-java's stream magic (`SnappyCodec.MAGIC_HEADER`).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// The magic, then the format version and the oldest compatible one (1 and 1 as snappy-java
/// writes them).
const XERIAL_HEADER_BYTES: usize = 16;
const XERIAL_VERSION: i32 = 1;
/// snappy-java's default block size, the one Kafka's `SnappyFactory` uses.
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

// Kafka's v2 batch layout (the protocol crate's positions are private to it).
const BATCH_LENGTH_POS: usize = 8;
const CRC_POS: usize = 17;
const ATTRIBUTES_POS: usize = 21;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    /// The codec of attribute value `id`, if there is one (0 is "none", 5–7 are unassigned).
    pub(crate) fn from_id(id: u8) -> Option<Codec> {
        match id {
            1 => Some(Codec::Gzip),
            2 => Some(Codec::Snappy),
            3 => Some(Codec::Lz4),
            4 => Some(Codec::Zstd),
            _ => None,
        }
    }

    pub(crate) fn id(self) -> u8 {
        match self {
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }

    /// The records section `data` decompressed; an error if it is not valid data of this codec
    /// or would decompress to more than [`DECOMPRESSED_BYTES_MAX`] bytes.
    pub(crate) fn decompress(self, data: &[u8]) -> io::Result<Vec<u8>> {
        self.decompress_capped(data, DECOMPRESSED_BYTES_MAX)
    }

    /// [`Codec::decompress`] with a cap of `bytes_max`, enforced while decompressing: never more
    /// than one byte past it is produced, and a snappy length claim past it is refused before
    /// anything is allocated.
    pub(crate) fn decompress_capped(self, data: &[u8], bytes_max: usize) -> io::Result<Vec<u8>> {
        let limit = bytes_max as u64 + 1;
        let mut out = Vec::new();
        match self {
            Codec::Gzip => MultiGzDecoder::new(data)
                .take(limit)
                .read_to_end(&mut out)?,
            // Buffers are bounded by the frame's block size (at most 8 MiB), never by its
            // claimed content size.
            Codec::Lz4 => FrameDecoder::new(data).take(limit).read_to_end(&mut out)?,
            Codec::Snappy => return snappy_decompress(data, bytes_max),
            Codec::Zstd => zstd::stream::read::Decoder::new(data)?
                .take(limit)
                .read_to_end(&mut out)?,
        };
        if out.len() > bytes_max {
            return Err(too_large(bytes_max));
        }
        Ok(out)
    }

    /// The records section `data` as a stream of decompressed bytes, for walking records
    /// without holding them all: gzip, lz4 and zstd decompress as they are read (never more
    /// than `bytes_max` bytes); snappy, whose raw form is one block, is inflated whole under
    /// the same cap first.
    pub(crate) fn reader<'a>(
        self,
        data: &'a [u8],
        bytes_max: usize,
    ) -> io::Result<Box<dyn Read + 'a>> {
        let limit = bytes_max as u64;
        Ok(match self {
            Codec::Gzip => Box::new(MultiGzDecoder::new(data).take(limit)),
            Codec::Lz4 => Box::new(FrameDecoder::new(data).take(limit)),
            Codec::Snappy => Box::new(io::Cursor::new(snappy_decompress(data, bytes_max)?)),
            Codec::Zstd => Box::new(zstd::stream::read::Decoder::new(data)?.take(limit)),
        })
    }

    pub(crate) fn compress(self, data: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Codec::Gzip => {
                let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
                encoder.write_all(data)?;
                encoder.finish()
            }
            Codec::Snappy => snappy_compress(data),
            Codec::Lz4 => {
                // Exactly what `KafkaLZ4BlockOutputStream` writes. Block independence is the one
                // choice that matters: Java's reader refuses linked blocks.
                let frame_info = FrameInfo::new()
                    .block_size(BlockSize::Max64KB)
                    .block_mode(BlockMode::Independent);
                let mut encoder = FrameEncoder::with_frame_info(frame_info, Vec::new());
                encoder.write_all(data)?;
                Ok(encoder.finish()?)
            }
            Codec::Zstd => zstd::stream::encode_all(data, ZSTD_LEVEL),
        }
    }
}

fn too_large(bytes_max: usize) -> io::Error {
    io::Error::other(format!("records decompress to more than {bytes_max} bytes"))
}

/// Snappy in either form Kafka clients write (see the module doc). A concatenation of
/// snappy-java streams is read as one, as `SnappyInputStream` does; unlike it and librdkafka, a
/// truncated trailing block length is an error rather than the end (the cleaner then keeps the
/// batch as it is).
fn snappy_decompress(data: &[u8], bytes_max: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    if !data.starts_with(XERIAL_MAGIC) {
        snappy_block(data, &mut out, bytes_max)?;
        return Ok(out);
    }
    let mut rest = data;
    while !rest.is_empty() {
        if rest.starts_with(XERIAL_MAGIC) {
            rest = rest
                .get(XERIAL_HEADER_BYTES..)
                .ok_or_else(|| io::Error::other("truncated snappy-java header"))?;
            continue;
        }
        let (length, after) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| io::Error::other("truncated snappy-java block length"))?;
        let length = u32::from_be_bytes(*length) as usize;
        let block = after
            .get(..length)
            .ok_or_else(|| io::Error::other("snappy-java block longer than the data"))?;
        snappy_block(block, &mut out, bytes_max)?;
        rest = &after[length..];
    }
    Ok(out)
}

/// Appends raw snappy `block` decompressed to `out`, checking its claimed length against
/// `bytes_max` before allocating.
fn snappy_block(block: &[u8], out: &mut Vec<u8>, bytes_max: usize) -> io::Result<()> {
    let length = snap::raw::decompress_len(block)?;
    if length > bytes_max.saturating_sub(out.len()) {
        return Err(too_large(bytes_max));
    }
    let start = out.len();
    out.resize(start + length, 0);
    let written = snap::raw::Decoder::new().decompress(block, &mut out[start..])?;
    if written != length {
        return Err(io::Error::other(
            "snappy block shorter than its header says",
        ));
    }
    Ok(())
}

/// snappy-java's stream framing, as the Java producer and Kafka's own log cleaner write it.
/// librdkafka writes one raw snappy block instead, and every reader takes both; but framing is
/// the form Kafka's brokers themselves produce, the raw form is only a fallback in snappy-java,
/// and a reader of framed data never needs more than one 32 KiB block in memory at a time.
fn snappy_compress(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(XERIAL_HEADER_BYTES + snap::raw::max_compress_len(data.len()));
    out.extend_from_slice(XERIAL_MAGIC);
    out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
    out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
    let mut encoder = snap::raw::Encoder::new();
    for chunk in data.chunks(XERIAL_BLOCK_BYTES) {
        let block = encoder.compress_vec(chunk)?;
        // A compressed 32 KiB block is far below i32::MAX.
        out.extend_from_slice(&(block.len() as u32).to_be_bytes());
        out.extend_from_slice(&block);
    }
    Ok(out)
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
