//! Raft messages between controllers, and raft log entries on disk, travel as the same frame:
//! `u32 length | u32 crc32c | protobuf bytes`, big-endian (Kafka's byte order).
//!
//! The length is checked against a cap before anything is allocated and the checksum before the
//! protobuf is parsed, so a peer (or a disk) sending garbage costs an error, never a panic or an
//! unbounded allocation; [`crate::protobuf_guard`] refuses what could overflow rust-protobuf 2's
//! stack (RUSTSEC-2024-0437) before it parses a message.

use protobuf::Message as _;
use raft::eraftpb::Message;

use crate::error::{Error, Result};
use crate::log::BATCH_BYTES_MAX;
use crate::protobuf_guard::{self, Schema};

/// Bytes of a frame's header: the payload length, then its CRC32C.
pub const FRAME_HEADER_BYTES: usize = 8;
/// The largest payload a frame may carry. A snapshot travels as one message, so this also bounds
/// the metadata image's size.
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
