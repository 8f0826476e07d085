//! A raft snapshot as a sequence of bounded frames, in the `snapshot` file and on the wire.
//!
//! A snapshot is the image's records: about 176 bytes per partition, 176 MB for 1,000,000
//! partitions, more than one frame may hold ([`FRAME_PAYLOAD_BYTES_MAX`]) and more than a reader
//! should take in before it can check any of it. So, as Kafka reads its snapshots and fetches
//! them (KIP-630: by position, a bounded number of bytes at a time), a snapshot is written as
//! ordinary frames (`u32 len | u32 crc32c | payload`, [`crate::raft_wire`]), each checked alone:
//! - one header frame: [`HEADER_MARKER`], the format version, the length of the snapshot's data
//!   (u64, big-endian), then the protobuf of what carries the snapshot (a `Snapshot` in the
//!   `snapshot` file, a raft `Message` on the wire) with the data left out;
//! - chunk frames: [`CHUNK_MARKER`], then at most [`SNAPSHOT_CHUNK_BYTES_MAX`] bytes of the data,
//!   in order, until the length the header announced.
//!
//! Neither marker can begin a protobuf message (0xff and 0xfe are tags of wire types 7 and 6,
//! which do not exist), so readers tell them from the single-frame form of earlier versions (the
//! whole `Snapshot` or `Message` in one frame), which they still read. The data is bounded by
//! [`SNAPSHOT_BYTES_MAX`]; a reader holds the data once (reserved up front from the header) plus
//! at most one frame.

use std::io;

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::Snapshot;

use crate::error::{Error, Result};
use crate::protobuf_guard::{self, Schema};
use crate::raft_wire::{frame, unframe, Unframed, FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX};

/// The most snapshot data one chunk frame carries.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 4 * 1024 * 1024;
/// The largest snapshot written, sent or read: about 24,000,000 partitions of records.
pub const SNAPSHOT_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;
/// The largest snapshot file ([`SNAPSHOT_BYTES_MAX`] of data in frames), for readers that are
/// told a file's length before they read it.
pub const SNAPSHOT_FILE_BYTES_MAX: u64 = SNAPSHOT_BYTES_MAX
    + (SNAPSHOT_BYTES_MAX / SNAPSHOT_CHUNK_BYTES_MAX as u64 + 1) * (FRAME_HEADER_BYTES as u64 + 1)
    + HEADER_FRAME_BYTES_MAX as u64;

const HEADER_MARKER: [u8; 4] = [0xff, b'S', b'N', b'P'];
const FORMAT_VERSION: u8 = 1;
/// Marker, version and data length.
const HEADER_PREFIX_BYTES: usize = HEADER_MARKER.len() + 1 + 8;
/// A header's protobuf is metadata only (index, term, voters): far below this.
const HEADER_FRAME_BYTES_MAX: usize = 1024 * 1024;
const CHUNK_MARKER: u8 = 0xfe;

/// The frames of one snapshot, made one at a time so that a writer holds one chunk's frame
/// besides the data (which it shares, not copies).
#[derive(Debug)]
pub struct ChunkedFrames {
    header: Option<Vec<u8>>,
    data: Bytes,
    offset: usize,
}

impl ChunkedFrames {
    /// `header_protobuf` is what carries the snapshot, encoded without its data; `data` follows
    /// it in chunks.
    pub(crate) fn new(header_protobuf: &[u8], data: Bytes) -> Result<ChunkedFrames> {
        if data.len() as u64 > SNAPSHOT_BYTES_MAX {
            return Err(Error::BatchTooLarge {
                size: data.len(),
                max: SNAPSHOT_BYTES_MAX as usize,
            });
        }
        if header_protobuf.len() + HEADER_PREFIX_BYTES > HEADER_FRAME_BYTES_MAX {
            return Err(Error::BatchTooLarge {
                size: header_protobuf.len(),
                max: HEADER_FRAME_BYTES_MAX - HEADER_PREFIX_BYTES,
            });
        }
        let mut payload = Vec::with_capacity(HEADER_PREFIX_BYTES + header_protobuf.len());
        payload.extend_from_slice(&HEADER_MARKER);
        payload.push(FORMAT_VERSION);
        payload.extend_from_slice(&(data.len() as u64).to_be_bytes());
        payload.extend_from_slice(header_protobuf);
        Ok(ChunkedFrames {
            header: Some(frame(&payload)?),
            data,
            offset: 0,
        })
    }

    /// A snapshot in the form of the `snapshot` file.
    pub fn of_snapshot(snapshot: &Snapshot) -> Result<ChunkedFrames> {
        let header = Snapshot {
            metadata: snapshot.metadata.clone(),
            ..Snapshot::default()
        };
        let protobuf = header
            .write_to_bytes()
            .map_err(|err| Error::Frame(format!("cannot encode snapshot metadata: {err}")))?;
        ChunkedFrames::new(&protobuf, snapshot.data.clone())
    }

    /// Every frame, concatenated (the file's bytes).
    pub fn concat(self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for frame in self {
            bytes.extend_from_slice(&frame);
        }
        bytes
    }
}

impl Iterator for ChunkedFrames {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if let Some(header) = self.header.take() {
            return Some(header);
        }
        if self.offset >= self.data.len() {
            return None;
        }
        let end = (self.offset + SNAPSHOT_CHUNK_BYTES_MAX).min(self.data.len());
        let chunk = &self.data[self.offset..end];
        self.offset = end;
        let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + 1 + chunk.len());
        out.extend_from_slice(&(chunk.len() as u32 + 1).to_be_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&[CHUNK_MARKER]), chunk);
        out.extend_from_slice(&crc.to_be_bytes());
        out.push(CHUNK_MARKER);
        out.extend_from_slice(chunk);
        Some(out)
    }
}

/// What one frame's payload is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    /// A chunked snapshot begins: its data's length and the protobuf that carries it.
    Header { data_bytes: u64, protobuf: &'a [u8] },
    /// The next bytes of the data.
    Chunk(&'a [u8]),
    /// A protobuf message in one frame (every raft message but a snapshot, or an old snapshot).
    Whole(&'a [u8]),
}

pub(crate) fn classify(payload: &[u8]) -> Result<Kind<'_>, String> {
    match payload.first() {
        Some(&CHUNK_MARKER) if payload.len() == 1 => Err("an empty snapshot chunk".into()),
        Some(&CHUNK_MARKER) => Ok(Kind::Chunk(&payload[1..])),
        Some(&0xff) => {
            if payload.len() < HEADER_PREFIX_BYTES || payload[..4] != HEADER_MARKER {
                return Err("an invalid snapshot header".into());
            }
            if payload[4] != FORMAT_VERSION {
                return Err(format!(
                    "snapshot format version {} is not {FORMAT_VERSION}",
                    payload[4]
                ));
            }
            let mut len = [0u8; 8];
            len.copy_from_slice(&payload[5..HEADER_PREFIX_BYTES]);
            let data_bytes = u64::from_be_bytes(len);
            if data_bytes > SNAPSHOT_BYTES_MAX {
                return Err(format!(
                    "a snapshot of {data_bytes} bytes exceeds the limit of {SNAPSHOT_BYTES_MAX} bytes"
                ));
            }
            Ok(Kind::Header {
                data_bytes,
                protobuf: &payload[HEADER_PREFIX_BYTES..],
            })
        }
        _ => Ok(Kind::Whole(payload)),
    }
}

/// The data of one chunked snapshot, gathered chunk by chunk.
#[derive(Debug)]
pub(crate) struct ChunkAssembler {
    protobuf: Vec<u8>,
    data_bytes: usize,
    data: Vec<u8>,
}

impl ChunkAssembler {
    pub(crate) fn new(data_bytes: u64, protobuf: &[u8]) -> ChunkAssembler {
        // `classify` bounded the length (4 GiB), but the header is the sender's word: reserve
        // a few chunks' worth up front and grow as chunks arrive, so a header alone costs
        // little memory.
        let data_bytes = data_bytes as usize;
        ChunkAssembler {
            protobuf: protobuf.to_vec(),
            data_bytes,
            data: Vec::with_capacity(data_bytes.min(16 * SNAPSHOT_CHUNK_BYTES_MAX)),
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<(), String> {
        if chunk.len() > self.data_bytes - self.data.len() {
            return Err(format!(
                "snapshot chunks exceed the {} bytes their header announced",
                self.data_bytes
            ));
        }
        self.data.extend_from_slice(chunk);
        Ok(())
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.data.len() == self.data_bytes
    }

    /// The header's protobuf and the data.
    pub(crate) fn into_parts(self) -> (Vec<u8>, Vec<u8>) {
        (self.protobuf, self.data)
    }
}

#[derive(Debug)]
enum ReadState {
    Start,
    /// A snapshot written in one frame by an earlier version.
    Whole(Snapshot),
    Chunked(ChunkAssembler),
    Failed,
}

/// Reads the `snapshot` file's bytes as they come (read from disk, or fetched from a
/// controller by position) and checks every frame as soon as it is whole.
#[derive(Debug)]
pub struct SnapshotReader {
    /// The bytes of a frame not yet whole.
    pending: Vec<u8>,
    /// Bytes consumed as whole frames.
    position: u64,
    state: ReadState,
}

impl Default for SnapshotReader {
    fn default() -> Self {
        SnapshotReader::new()
    }
}

impl SnapshotReader {
    pub fn new() -> SnapshotReader {
        SnapshotReader {
            pending: Vec::new(),
            position: 0,
            state: ReadState::Start,
        }
    }

    /// Where the frame being read starts: the position of an error.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Takes the next bytes of the file. An error is final.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), String> {
        if matches!(self.state, ReadState::Failed) {
            return Err("the snapshot already failed to read".into());
        }
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        let result = loop {
            let rest = &self.pending[at..];
            if rest.len() < FRAME_HEADER_BYTES {
                break Ok(());
            }
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let len_max = match self.state {
                // An old snapshot is one frame of up to the old limit.
                ReadState::Start => FRAME_PAYLOAD_BYTES_MAX,
                _ => SNAPSHOT_CHUNK_BYTES_MAX + 1,
            };
            if len > len_max {
                break Err(format!(
                    "a frame of {len} bytes exceeds the limit of {len_max} bytes"
                ));
            }
            let (payload, used) = match unframe(rest) {
                Unframed::Incomplete => break Ok(()),
                Unframed::Invalid(reason) => break Err(reason),
                Unframed::Frame(payload, used) => (payload, used),
            };
            if let Err(reason) = take_frame(&mut self.state, payload) {
                break Err(reason);
            }
            at += used;
            self.position += used as u64;
        };
        self.pending.drain(..at);
        if result.is_err() {
            self.state = ReadState::Failed;
            self.pending = Vec::new();
        }
        result
    }

    /// The snapshot, once every byte was pushed.
    pub fn finish(self) -> Result<Snapshot, String> {
        if !self.pending.is_empty() {
            return Err(format!(
                "the snapshot ends inside a frame ({} bytes of it)",
                self.pending.len()
            ));
        }
        match self.state {
            ReadState::Start => Err("no snapshot frame".into()),
            ReadState::Whole(snapshot) => Ok(snapshot),
            ReadState::Chunked(assembler) if !assembler.is_complete() => Err(format!(
                "the snapshot ends after {} of its {} bytes of data",
                assembler.data.len(),
                assembler.data_bytes
            )),
            ReadState::Chunked(assembler) => {
                let (protobuf, data) = assembler.into_parts();
                let mut snapshot: Snapshot = protobuf_guard::parse(&protobuf, Schema::Snapshot)?;
                if !snapshot.data.is_empty() {
                    return Err("a chunked snapshot's header carries data".into());
                }
                snapshot.data = Bytes::from(data);
                Ok(snapshot)
            }
            ReadState::Failed => Err("the snapshot failed to read".into()),
        }
    }

    /// Reads a whole snapshot from `source`, a piece at a time.
    pub fn read_from(mut source: impl io::Read) -> Result<Snapshot, ReadError> {
        let mut reader = SnapshotReader::new();
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let read = match source.read(&mut buf) {
                Ok(0) => break,
                Ok(read) => read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(ReadError::Io(err)),
            };
            reader
                .push(&buf[..read])
                .map_err(|reason| ReadError::Invalid(reader.position(), reason))?;
        }
        let position = reader.position();
        reader
            .finish()
            .map_err(|reason| ReadError::Invalid(position, reason))
    }
}

/// Why [`SnapshotReader::read_from`] failed.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    /// The bytes are not a snapshot: the position of the frame at fault, and why.
    Invalid(u64, String),
}

fn take_frame(state: &mut ReadState, payload: &[u8]) -> Result<(), String> {
    match (&mut *state, classify(payload)?) {
        (
            ReadState::Start,
            Kind::Header {
                data_bytes,
                protobuf,
            },
        ) => {
            *state = ReadState::Chunked(ChunkAssembler::new(data_bytes, protobuf));
        }
        (ReadState::Start, Kind::Whole(protobuf)) => {
            *state = ReadState::Whole(protobuf_guard::parse(protobuf, Schema::Snapshot)?);
        }
        (ReadState::Start, Kind::Chunk(_)) => {
            return Err("a snapshot chunk before the snapshot's header".into())
        }
        (ReadState::Chunked(assembler), Kind::Chunk(chunk)) => assembler.push(chunk)?,
        (ReadState::Chunked(_), _) => {
            return Err("a frame that is not a chunk in a snapshot".into())
        }
        (ReadState::Whole(_), _) => return Err("bytes after a single-frame snapshot".into()),
        (ReadState::Failed, _) => return Err("the snapshot already failed to read".into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(data_bytes: usize) -> Snapshot {
        let mut snapshot = Snapshot {
            data: (0..data_bytes)
                .map(|i| (i * 7 % 251) as u8)
                .collect::<Vec<u8>>()
                .into(),
            ..Snapshot::default()
        };
        snapshot.mut_metadata().index = 42;
        snapshot.mut_metadata().term = 3;
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        snapshot
    }

    fn read(bytes: &[u8], piece: usize) -> Result<Snapshot, String> {
        let mut reader = SnapshotReader::new();
        for part in bytes.chunks(piece.max(1)) {
            reader.push(part)?;
        }
        reader.finish()
    }

    #[test]
    fn a_snapshot_reads_back_equal_in_pieces_of_any_size() {
        let data_bytes = 2 * SNAPSHOT_CHUNK_BYTES_MAX + 5;
        let original = snapshot(data_bytes);
        let frames: Vec<Vec<u8>> = ChunkedFrames::of_snapshot(&original).unwrap().collect();
        assert_eq!(frames.len(), 4, "a header and three chunks");
        assert!(frames
            .iter()
            .all(|f| f.len() <= FRAME_HEADER_BYTES + 1 + SNAPSHOT_CHUNK_BYTES_MAX));
        let bytes = frames.concat();
        for piece in [1 << 20, 4096, SNAPSHOT_CHUNK_BYTES_MAX + 17, bytes.len()] {
            assert_eq!(read(&bytes, piece).unwrap(), original, "pieces of {piece}");
        }
        let empty = snapshot(0);
        let bytes = ChunkedFrames::of_snapshot(&empty).unwrap().concat();
        assert_eq!(read(&bytes, 3).unwrap(), empty);
    }

    #[test]
    fn a_single_frame_snapshot_of_earlier_versions_still_reads() {
        let original = snapshot(1000);
        let bytes = frame(&original.write_to_bytes().unwrap()).unwrap();
        assert_eq!(read(&bytes, 7).unwrap(), original);
    }

    #[test]
    fn truncation_and_corruption_are_errors_at_every_byte() {
        let original = snapshot(3 * 1024);
        let bytes = ChunkedFrames::new(
            &Snapshot {
                metadata: original.metadata.clone(),
                ..Snapshot::default()
            }
            .write_to_bytes()
            .unwrap(),
            original.data.clone(),
        )
        .unwrap()
        .concat();
        for cut in 0..bytes.len() {
            assert!(read(&bytes[..cut], 512).is_err(), "cut at {cut}");
        }
        for position in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[position] ^= 0x10;
            assert!(read(&flipped, 512).is_err(), "flip at {position}");
        }
        // Data past the announced length, a stray chunk, a second header.
        let mut longer = bytes.clone();
        longer.extend(
            ChunkedFrames::of_snapshot(&snapshot(1))
                .unwrap()
                .nth(1)
                .unwrap(),
        );
        assert!(read(&longer, 512).unwrap_err().contains("exceed"));
        let chunk_first: Vec<u8> = ChunkedFrames::of_snapshot(&original)
            .unwrap()
            .skip(1)
            .flatten()
            .collect();
        assert!(read(&chunk_first, 512).unwrap_err().contains("before"));
        let mut twice = bytes.clone();
        twice.extend(&bytes);
        assert!(read(&twice, 512).is_err());
    }

    #[test]
    fn an_oversized_announcement_is_refused_before_any_allocation() {
        let mut payload = HEADER_MARKER.to_vec();
        payload.push(FORMAT_VERSION);
        payload.extend_from_slice(&(SNAPSHOT_BYTES_MAX + 1).to_be_bytes());
        let err = read(&frame(&payload).unwrap(), 64).unwrap_err();
        assert!(err.contains("exceeds the limit"), "{err}");
        let mut big_frame = (SNAPSHOT_CHUNK_BYTES_MAX as u32 + 2).to_be_bytes().to_vec();
        big_frame.extend([0; 4]);
        let header = ChunkedFrames::of_snapshot(&snapshot(10))
            .unwrap()
            .next()
            .unwrap();
        let mut bytes = header;
        bytes.extend(big_frame);
        assert!(read(&bytes, 64).unwrap_err().contains("exceeds the limit"));
    }
}
