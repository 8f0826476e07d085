//! Raft messages between controllers, and raft log entries on disk, travel as the same frame:
//! `u32 length | u32 crc32c | protobuf bytes`, big-endian (Kafka's byte order). A snapshot
//! message travels as a header frame and bounded chunk frames ([`crate::snapshot_chunks`]),
//! reassembled by the receiver's [`MessageDecoder`] before raft sees it: raft-rs knows nothing
//! of chunks.
//!
//! The length is checked against a cap before anything is allocated and the checksum before the
//! protobuf is parsed, so a peer (or a disk) sending garbage costs an error, never a panic or an
//! unbounded allocation; [`crate::protobuf_guard`] refuses what could overflow rust-protobuf 2's
//! stack (RUSTSEC-2024-0437) before it parses a message.

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};

use crate::error::{Error, Result};
use crate::log::BATCH_BYTES_MAX;
use crate::protobuf_guard::{self, Schema};
use crate::snapshot_chunks::{classify, ChunkAssembler, ChunkedFrames, Kind};

/// Bytes of a frame's header: the payload length, then its CRC32C.
pub const FRAME_HEADER_BYTES: usize = 8;
/// The largest payload a frame may carry (a raft entry, or a message that is not a snapshot).
pub const FRAME_PAYLOAD_BYTES_MAX: usize = BATCH_BYTES_MAX;

/// Frames `payload`. Fails only if it exceeds [`FRAME_PAYLOAD_BYTES_MAX`].
pub(crate) fn frame(payload: &[u8]) -> Result<Vec<u8>> {
    if payload.len() > FRAME_PAYLOAD_BYTES_MAX {
        return Err(Error::BatchTooLarge {
            size: payload.len(),
            max: FRAME_PAYLOAD_BYTES_MAX,
        });
    }
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// What the start of a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unframed<'a> {
    /// A whole, intact frame: its payload and the bytes it took.
    Frame(&'a [u8], usize),
    /// Not enough bytes yet for the frame the header announces.
    Incomplete,
    /// A length over the cap or a failing checksum.
    Invalid(String),
}

pub(crate) fn unframe(buf: &[u8]) -> Unframed<'_> {
    let Some(header) = buf.get(..FRAME_HEADER_BYTES) else {
        return Unframed::Incomplete;
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if len > FRAME_PAYLOAD_BYTES_MAX {
        return Unframed::Invalid(format!(
            "frame of {len} bytes exceeds the limit of {FRAME_PAYLOAD_BYTES_MAX} bytes"
        ));
    }
    let Some(payload) = buf.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len) else {
        return Unframed::Incomplete;
    };
    if crc32c::crc32c(payload) != crc {
        return Unframed::Invalid("frame fails its checksum".into());
    }
    Unframed::Frame(payload, FRAME_HEADER_BYTES + len)
}

/// Encodes one raft message as a frame.
pub fn encode_message(message: &Message) -> Result<Vec<u8>> {
    let payload = message
        .write_to_bytes()
        .map_err(|err| Error::Frame(format!("cannot encode raft message: {err}")))?;
    frame(&payload)
}

/// The frames that carry `message`: one, or for a snapshot a header and its chunks, made as
/// they are sent (the data is shared with the message, not copied).
pub fn message_frames(message: &Message) -> Result<MessageFrames> {
    if message.get_msg_type() != MessageType::MsgSnapshot {
        return Ok(MessageFrames::Whole(Some(encode_message(message)?)));
    }
    let data = message.get_snapshot().data.clone();
    let mut header = message.clone();
    header.mut_snapshot().data = Bytes::new();
    let protobuf = header
        .write_to_bytes()
        .map_err(|err| Error::Frame(format!("cannot encode raft message: {err}")))?;
    Ok(MessageFrames::Chunked(ChunkedFrames::new(&protobuf, data)?))
}

/// See [`message_frames`].
#[derive(Debug)]
pub enum MessageFrames {
    Whole(Option<Vec<u8>>),
    Chunked(ChunkedFrames),
}

impl Iterator for MessageFrames {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        match self {
            MessageFrames::Whole(frame) => frame.take(),
            MessageFrames::Chunked(frames) => frames.next(),
        }
    }
}

/// Decodes one peer's stream of frames into messages, reassembling chunked snapshots. A stream
/// that breaks off inside a snapshot loses it (the sender reports the snapshot failed, and
/// raft sends it again).
#[derive(Debug, Default)]
pub struct MessageDecoder {
    snapshot: Option<ChunkAssembler>,
}

impl MessageDecoder {
    pub fn new() -> MessageDecoder {
        MessageDecoder::default()
    }

    /// Decodes the frame at the start of `buf`: `Ok(None)` if `buf` does not hold a whole
    /// frame yet, otherwise the bytes it took and the message it completed, if any. An error
    /// means the stream cannot be trusted any further and must be closed.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Option<Message>, usize)>> {
        let (payload, used) = match unframe(buf) {
            Unframed::Incomplete => return Ok(None),
            Unframed::Invalid(reason) => return Err(Error::Frame(reason)),
            Unframed::Frame(payload, used) => (payload, used),
        };
        let kind = classify(payload).map_err(Error::Frame)?;
        match kind {
            Kind::Whole(protobuf) if self.snapshot.is_none() => {
                return Ok(Some((Some(parse(protobuf)?), used)))
            }
            Kind::Header {
                data_bytes,
                protobuf,
            } if self.snapshot.is_none() => {
                self.snapshot = Some(ChunkAssembler::new(data_bytes, protobuf));
            }
            Kind::Chunk(chunk) => match self.snapshot.as_mut() {
                Some(assembler) => assembler.push(chunk).map_err(Error::Frame)?,
                None => return Err(Error::Frame("a snapshot chunk without its header".into())),
            },
            Kind::Whole(_) | Kind::Header { .. } => {
                return Err(Error::Frame("a message inside a chunked snapshot".into()))
            }
        }
        let Some(assembler) = self.snapshot.take_if(|assembler| assembler.is_complete()) else {
            return Ok(Some((None, used)));
        };
        let (protobuf, data) = assembler.into_parts();
        let mut message = parse(&protobuf)?;
        if message.get_msg_type() != MessageType::MsgSnapshot
            || !message.get_snapshot().data.is_empty()
        {
            return Err(Error::Frame(
                "a chunked snapshot's header is not a snapshot message without data".into(),
            ));
        }
        message.mut_snapshot().data = Bytes::from(data);
        Ok(Some((Some(message), used)))
    }
}

/// Sends `message` through its frames and a fresh decoder, as a peer's stream carries it.
#[cfg(test)]
pub(crate) fn through_frames(message: &Message) -> Result<Message> {
    let mut stream = Vec::new();
    for frame in message_frames(message)? {
        stream.extend_from_slice(&frame);
    }
    let mut decoder = MessageDecoder::new();
    let mut at = 0;
    while let Some((decoded, used)) = decoder.decode(&stream[at..])? {
        at += used;
        if let Some(decoded) = decoded {
            if at != stream.len() {
                return Err(Error::Frame("bytes after the message".into()));
            }
            return Ok(decoded);
        }
    }
    Err(Error::Frame("the stream ended inside a message".into()))
}

fn parse(protobuf: &[u8]) -> Result<Message> {
    protobuf_guard::parse(protobuf, Schema::Message)
        .map_err(|err| Error::Frame(format!("cannot decode raft message: {err}")))
}

/// Decodes the frame at the start of `buf`: `Ok(None)` if `buf` does not hold a whole frame yet,
/// otherwise the message and the bytes it took. An invalid frame is an error; the stream it came
/// from cannot be resynchronised and must be closed.
pub fn decode_message(buf: &[u8]) -> Result<Option<(Message, usize)>> {
    match unframe(buf) {
        Unframed::Incomplete => Ok(None),
        Unframed::Invalid(reason) => Err(Error::Frame(reason)),
        Unframed::Frame(payload, used) => {
            let message: Message = protobuf_guard::parse(payload, Schema::Message)
                .map_err(|err| Error::Frame(format!("cannot decode raft message: {err}")))?;
            Ok(Some((message, used)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{Entry, MessageType, Snapshot};

    fn sample() -> Message {
        let entry = Entry {
            index: 7,
            term: 3,
            data: b"[{\"version\":1}]".to_vec().into(),
            ..Entry::default()
        };
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgAppend);
        message.to = 2;
        message.from = 1;
        message.term = 3;
        message.log_term = 3;
        message.index = 6;
        message.commit = 6;
        message.set_entries(vec![entry].into());
        message
    }

    #[test]
    fn messages_round_trip_and_report_the_bytes_they_took() {
        let mut snapshot_message = Message::default();
        snapshot_message.set_msg_type(MessageType::MsgSnapshot);
        let mut snapshot = Snapshot {
            data: vec![1u8; 1000].into(),
            ..Snapshot::default()
        };
        snapshot.mut_metadata().index = 40;
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        snapshot_message.set_snapshot(snapshot);

        let mut stream = encode_message(&sample()).unwrap();
        let first_len = stream.len();
        stream.extend(encode_message(&snapshot_message).unwrap());
        let (first, used) = decode_message(&stream).unwrap().unwrap();
        assert_eq!((first, used), (sample(), first_len));
        let (second, used) = decode_message(&stream[first_len..]).unwrap().unwrap();
        assert_eq!(second, snapshot_message);
        assert_eq!(first_len + used, stream.len());
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_bit_flip_an_error_or_a_valid_message() {
        let bytes = encode_message(&sample()).unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(decode_message(&bytes[..cut]).unwrap(), None, "cut at {cut}");
        }
        for position in FRAME_HEADER_BYTES..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[position] ^= 1 << bit;
                assert!(
                    matches!(decode_message(&flipped), Err(Error::Frame(_))),
                    "flip at {position}.{bit} must fail the checksum"
                );
            }
        }
    }

    #[test]
    fn an_oversized_length_is_refused_before_reading_the_payload() {
        let mut header = Vec::new();
        header.extend_from_slice(&(FRAME_PAYLOAD_BYTES_MAX as u32 + 1).to_be_bytes());
        header.extend_from_slice(&0u32.to_be_bytes());
        match decode_message(&header) {
            Err(Error::Frame(reason)) => assert!(reason.contains("exceeds the limit"), "{reason}"),
            other => panic!("expected a frame error, got {other:?}"),
        }
    }

    fn snapshot_message(data_bytes: usize) -> Message {
        let mut message = sample();
        message.set_msg_type(MessageType::MsgSnapshot);
        message.clear_entries();
        let mut snapshot = Snapshot {
            data: (0..data_bytes)
                .map(|i| (i % 253) as u8)
                .collect::<Vec<u8>>()
                .into(),
            ..Snapshot::default()
        };
        snapshot.mut_metadata().index = 40;
        snapshot.mut_metadata().term = 3;
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        message.set_snapshot(snapshot);
        message
    }

    /// Decodes a stream: the messages it completed, or the first error.
    fn decode_stream(stream: &[u8]) -> Result<Vec<Message>> {
        let mut decoder = MessageDecoder::new();
        let mut messages = Vec::new();
        let mut at = 0;
        while let Some((message, used)) = decoder.decode(&stream[at..])? {
            at += used;
            messages.extend(message);
        }
        Ok(messages)
    }

    #[test]
    fn a_snapshot_message_travels_in_bounded_chunks_between_other_messages() {
        use crate::snapshot_chunks::SNAPSHOT_CHUNK_BYTES_MAX;
        let big = snapshot_message(2 * SNAPSHOT_CHUNK_BYTES_MAX + 1);
        let frames: Vec<Vec<u8>> = message_frames(&big).unwrap().collect();
        assert_eq!(frames.len(), 4, "a header and three chunks");
        assert!(frames
            .iter()
            .all(|f| f.len() <= FRAME_HEADER_BYTES + 1 + SNAPSHOT_CHUNK_BYTES_MAX));
        let mut stream = encode_message(&sample()).unwrap();
        stream.extend(frames.concat());
        stream.extend(message_frames(&snapshot_message(0)).unwrap().flatten());
        stream.extend(message_frames(&sample()).unwrap().flatten());
        assert_eq!(
            decode_stream(&stream).unwrap(),
            vec![sample(), big.clone(), snapshot_message(0), sample()]
        );
        assert_eq!(through_frames(&big).unwrap(), big);
    }

    #[test]
    fn a_cut_corrupt_or_out_of_place_chunk_is_an_error_or_nothing_never_a_message() {
        let message = snapshot_message(3000);
        let stream: Vec<u8> = message_frames(&message).unwrap().flatten().collect();
        for cut in 0..stream.len() {
            assert_eq!(
                decode_stream(&stream[..cut]).unwrap(),
                vec![],
                "cut at {cut}"
            );
        }
        for position in FRAME_HEADER_BYTES..stream.len() {
            let mut flipped = stream.clone();
            flipped[position] ^= 0x01;
            // A longer length waits for more bytes; anything else fails a check.
            match decode_stream(&flipped) {
                Err(_) => {}
                Ok(messages) => assert_eq!(messages, vec![], "flip at {position}"),
            }
        }
        let frames: Vec<Vec<u8>> = message_frames(&message).unwrap().collect();
        let chunk_alone = frames[1].clone();
        assert!(decode_stream(&chunk_alone).is_err());
        let mut interleaved = frames[0].clone();
        interleaved.extend(encode_message(&sample()).unwrap());
        assert!(decode_stream(&interleaved).is_err());
        let mut too_long = frames.concat();
        too_long.extend(&chunk_alone);
        assert!(decode_stream(&too_long).is_err());
    }

    #[test]
    fn random_garbage_never_panics() {
        // A tiny xorshift: the same bytes on every run.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = encode_message(&sample()).unwrap();
        for round in 0..5000 {
            let len = (next() % 96) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                // A plausible header with a correct checksum over random protobuf bytes.
                let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                buf = frame(&payload).unwrap();
            } else if round % 3 == 0 {
                buf = valid.clone();
                let position = (next() as usize) % buf.len();
                buf[position] = next() as u8;
                buf.truncate(((next() as usize) % (buf.len() + 1)).max(position));
            }
            // Any outcome but a panic is acceptable; an Ok frame must say how much it used.
            if let Ok(Some((_, used))) = decode_message(&buf) {
                assert!(used <= buf.len());
            }
        }
    }
}
