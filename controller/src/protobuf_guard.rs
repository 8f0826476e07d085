//! Every raft protobuf this node parses passes through here first: rust-protobuf 2.x (which
//! raft-rs 0.7 builds on with either codec) skips unknown group fields by recursion without a
//! limit, so a crafted message overflows the stack and aborts the process (RUSTSEC-2024-0437,
//! fixed only in rust-protobuf 3). raft's messages are proto3 and have no groups, and they nest
//! at most four deep (Message → Snapshot → SnapshotMetadata → ConfState), so a scan of the wire
//! format that knows which fields are nested messages can refuse anything the parser could
//! recurse on: a group tag at any level the parser reads as a message, an invalid wire type, a
//! length past its enclosing message. The scan is iterative and linear in the input, and what
//! passes is parsed by rust-protobuf as before.

use protobuf::Message as ProtobufMessage;

/// The raft message types parsed from bytes, with the fields that hold nested messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    Message,
    Entry,
    Snapshot,
    SnapshotMetadata,
    ConfState,
    HardState,
    ConfChange,
    ConfChangeV2,
    ConfChangeSingle,
}

/// Deeper than any raft message nests: a bound that holds even if the table below were wrong.
const DEPTH_MAX: usize = 8;

impl Schema {
    /// The message type of field `number` when it is a nested message (eraftpb.proto); `None`
    /// for scalars, bytes and packed repeated scalars, which the parser never reads as fields.
    fn nested(self, number: u64) -> Option<Schema> {
        match (self, number) {
            (Schema::Message, 7) => Some(Schema::Entry),
            (Schema::Message, 9) => Some(Schema::Snapshot),
            (Schema::Snapshot, 2) => Some(Schema::SnapshotMetadata),
            (Schema::SnapshotMetadata, 1) => Some(Schema::ConfState),
            (Schema::ConfChangeV2, 2) => Some(Schema::ConfChangeSingle),
            _ => None,
        }
    }
}

/// Refuses bytes rust-protobuf could recurse on when parsing them as `schema` (see the module
/// doc); `Ok` says nothing else about their validity.
pub fn check(bytes: &[u8], schema: Schema) -> Result<(), String> {
    // The messages being read, innermost last: (where it ends, its type).
    let mut open: Vec<(usize, Schema)> = vec![(bytes.len(), schema)];
    let mut at = 0usize;
    while let Some(&(end, schema)) = open.last() {
        if at == end {
            open.pop();
            continue;
        }
        let tag = varint(bytes, &mut at, end)?;
        let number = tag >> 3;
        if number == 0 {
            return Err(format!("field number 0 in a {schema:?} at byte {at}"));
        }
        match tag & 7 {
            0 => {
                varint(bytes, &mut at, end)?;
            }
            1 => skip(&mut at, 8, end)?,
            5 => skip(&mut at, 4, end)?,
            2 => {
                let len = varint(bytes, &mut at, end)?;
                let len = usize::try_from(len).map_err(|_| "a length past the message")?;
                match schema.nested(number) {
                    Some(inner) => {
                        if len > end - at {
                            return Err(format!("a length past its {schema:?} at byte {at}"));
                        }
                        if open.len() >= DEPTH_MAX {
                            return Err(format!("messages nested over {DEPTH_MAX} deep"));
                        }
                        open.push((at + len, inner));
                    }
                    None => skip(&mut at, len, end)?,
                }
            }
            3 | 4 => {
                return Err(format!(
                    "a group (field {number}) in a {schema:?}: raft's messages have none"
                ))
            }
            wire => return Err(format!("wire type {wire} in a {schema:?} at byte {at}")),
        }
    }
    Ok(())
}

/// [`check`]s `bytes`, then parses them as `M`.
pub fn parse<M: ProtobufMessage>(bytes: &[u8], schema: Schema) -> Result<M, String> {
    check(bytes, schema)?;
    M::parse_from_bytes(bytes).map_err(|err| err.to_string())
}

/// [`check`]s `bytes`, then merges them into `message`.
pub fn merge<M: ProtobufMessage>(
    message: &mut M,
    bytes: &[u8],
    schema: Schema,
) -> Result<(), String> {
    check(bytes, schema)?;
    message
        .merge_from_bytes(bytes)
        .map_err(|err| err.to_string())
}

fn skip(at: &mut usize, len: usize, end: usize) -> Result<(), String> {
    if len > end - *at {
        return Err(format!("a field runs past its message at byte {at}"));
    }
    *at += len;
    Ok(())
}

/// A base-128 varint of at most ten bytes ending before `end`.
fn varint(bytes: &[u8], at: &mut usize, end: usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        if *at >= end {
            return Err("a varint runs past its message".into());
        }
        let byte = bytes[*at];
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift.min(63);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a varint over ten bytes".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{
        ConfChangeSingle, ConfChangeV2, ConfState, Entry, Message, MessageType, Snapshot,
    };

    fn full_message() -> Message {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgSnapshot);
        message.term = 4;
        message.context = b"ctx".to_vec().into();
        message.set_entries(
            vec![Entry {
                index: 9,
                term: 4,
                // Entry data is opaque bytes: JSON begins with `[`, which read as a tag would
                // be a group of field 11.
                data: b"[{\"version\":1}]".to_vec().into(),
                ..Entry::default()
            }]
            .into(),
        );
        let mut snapshot = Snapshot {
            data: vec![0x0b; 64].into(),
            ..Snapshot::default()
        };
        snapshot.mut_metadata().index = 8;
        snapshot.mut_metadata().set_conf_state(ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            ..ConfState::default()
        });
        message.set_snapshot(snapshot);
        message
    }

    #[test]
    fn what_raft_writes_passes_and_parses_as_before() {
        let message = full_message();
        let bytes = message.write_to_bytes().unwrap();
        let parsed: Message = parse(&bytes, Schema::Message).unwrap();
        assert_eq!(parsed, message);

        let mut change = ConfChangeV2::default();
        change.set_changes(
            vec![ConfChangeSingle {
                node_id: 5,
                ..ConfChangeSingle::default()
            }]
            .into(),
        );
        let bytes = change.write_to_bytes().unwrap();
        let mut merged = ConfChangeV2::default();
        merge(&mut merged, &bytes, Schema::ConfChangeV2).unwrap();
        assert_eq!(merged, change);
        assert_eq!(check(&[], Schema::HardState), Ok(()));
    }

    #[test]
    fn groups_nested_deep_are_refused_before_the_parser_recurses() {
        // An unknown field 20 as a group holding itself 100,000 deep: rust-protobuf 2 skips it
        // by recursion and overflows the stack.
        let depth = 100_000;
        let group = [0xa3, 0x01]; // field 20, wire type 3
        let bytes: Vec<u8> = group.iter().copied().cycle().take(2 * depth).collect();
        assert_eq!(
            check(&bytes, Schema::Message),
            Err("a group (field 20) in a Message: raft's messages have none".into())
        );
        // Inside a nested message too: Message.snapshot (field 9) holding a group.
        let inner = [0xa3, 0x01, 0xa4, 0x01];
        let mut bytes = vec![(9 << 3) | 2, inner.len() as u8];
        bytes.extend(inner);
        assert_eq!(
            check(&bytes, Schema::Message),
            Err("a group (field 20) in a Snapshot: raft's messages have none".into())
        );
        // But not inside bytes, which the parser never reads as fields (Message.context).
        let mut bytes = vec![(12 << 3) | 2, inner.len() as u8];
        bytes.extend(inner);
        assert_eq!(check(&bytes, Schema::Message), Ok(()));
    }

    #[test]
    fn lengths_past_the_message_and_bad_wire_types_are_refused() {
        let refused = |bytes: &[u8]| check(bytes, Schema::Message).unwrap_err();
        // Message.snapshot announcing 5 bytes with 1 left.
        assert_eq!(
            refused(&[(9 << 3) | 2, 5, 0]),
            "a length past its Message at byte 2"
        );
        // Message.context announcing 5 bytes with 1 left.
        assert_eq!(
            refused(&[(12 << 3) | 2, 5, 0]),
            "a field runs past its message at byte 2"
        );
        assert_eq!(
            refused(&[(2 << 3) | 6]),
            "wire type 6 in a Message at byte 1"
        );
        assert_eq!(refused(&[0x00]), "field number 0 in a Message at byte 1");
        assert_eq!(refused(&[0x10, 0x80]), "a varint runs past its message");
        assert_eq!(
            refused(&[0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            "a varint over ten bytes"
        );
        // A nested message whose own field runs past it, though the outer bytes go on.
        assert_eq!(
            refused(&[(9 << 3) | 2, 2, (1 << 3) | 2, 3, 0, 0, 0]),
            "a field runs past its message at byte 4"
        );
    }
}
