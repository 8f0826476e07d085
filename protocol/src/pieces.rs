//! Fetch responses as pieces: the encoded fields, with each partition's record bytes left where
//! they are (a `Bytes` over a log segment's map) instead of copied into the frame. The connection
//! writes the pieces with one vectored write, so records go from the page cache to the socket
//! without passing through a response buffer — for every consumer and every follower.
//!
//! kafka-protocol encodes into one flat buffer, so the record fields are found by encoding the
//! response twice: once with every record field null and once with every one empty. The two
//! encodings have the same length and differ exactly in those fields' length prefixes (`-1`
//! against `0` as an INT32 before flexible versions, `0` against `1` as an unsigned varint
//! after), in partition order. The frame is then the empty-records encoding with each length
//! prefix rewritten for the real records and the records spliced in after it. Anything
//! unexpected (a count of differences that does not match) falls back to the flat encoding.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseKind};

use crate::codec::{encode_response, EncodeError};

/// A response frame, size prefix included, as consecutive pieces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FramePieces {
    pub pieces: Vec<Bytes>,
}

impl FramePieces {
    /// The frame's total length.
    pub fn len(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame as one buffer (tests, and callers that need it whole).
    pub fn concat(&self) -> Bytes {
        let mut flat = BytesMut::with_capacity(self.len());
        for piece in &self.pieces {
            flat.put_slice(piece);
        }
        flat.freeze()
    }
}

/// Record fields smaller than this are copied into the frame: a separate piece costs more than
/// the copy.
const SPLICE_MIN_BYTES: usize = 1024;

/// Encodes a response frame as pieces; a Fetch response's larger record fields are shared, not
/// copied. Other responses are one piece.
pub fn encode_response_pieces(
    correlation_id: i32,
    api_key: ApiKey,
    api_version: i16,
    body: &ResponseKind,
) -> Result<FramePieces, EncodeError> {
    let ResponseKind::Fetch(fetch) = body else {
        return flat(correlation_id, api_key, api_version, body);
    };
    let spliced: Vec<Bytes> = fetch
        .responses
        .iter()
        .flat_map(|topic| &topic.partitions)
        .filter_map(|partition| partition.records.clone())
        .filter(|records| records.len() >= SPLICE_MIN_BYTES)
        .collect();
    if spliced.is_empty() {
        return flat(correlation_id, api_key, api_version, body);
    }
    let with_records = |empty: bool| {
        let mut copy = fetch.clone();
        for partition in copy.responses.iter_mut().flat_map(|t| &mut t.partitions) {
            if partition
                .records
                .as_ref()
                .is_some_and(|records| records.len() >= SPLICE_MIN_BYTES)
            {
                partition.records = empty.then(Bytes::new);
            }
        }
        ResponseKind::Fetch(copy)
    };
    let empty = encode_response(correlation_id, api_key, api_version, &with_records(true))?;
    let null = encode_response(correlation_id, api_key, api_version, &with_records(false))?;
    let flexible = api_version >= FETCH_FLEXIBLE_SINCE;
    let field_len = if flexible { 1 } else { 4 };
    let Some(positions) = length_fields(&empty, &null, field_len) else {
        return flat(correlation_id, api_key, api_version, body);
    };
    if positions.len() != spliced.len() {
        return flat(correlation_id, api_key, api_version, body);
    }
    let mut empty = empty.freeze();
    let mut pieces = Vec::with_capacity(2 * spliced.len() + 1);
    let mut consumed = 0;
    for (position, records) in positions.into_iter().zip(spliced) {
        let mut head = BytesMut::from(&empty[..position - consumed]);
        if flexible {
            put_unsigned_varint(&mut head, records.len() as u64 + 1);
        } else {
            head.put_i32(i32::try_from(records.len()).map_err(|_| EncodeError {
                api_key,
                api_version,
                reason: format!("records of {} bytes", records.len()),
            })?);
        }
        let _ = empty.split_to(position - consumed + field_len);
        consumed = position + field_len;
        pieces.push(head.freeze());
        pieces.push(records);
    }
    pieces.push(empty);
    let frame_len = pieces.iter().map(Bytes::len).sum::<usize>() - 4;
    let size = i32::try_from(frame_len).map_err(|_| EncodeError {
        api_key,
        api_version,
        reason: format!("a frame of {frame_len} bytes"),
    })?;
    let mut first = BytesMut::from(&pieces[0][..]);
    first[..4].copy_from_slice(&size.to_be_bytes());
    pieces[0] = first.freeze();
    Ok(FramePieces { pieces })
}

/// Fetch's first flexible version (compact bytes for records).
const FETCH_FLEXIBLE_SINCE: i16 = 12;

fn flat(
    correlation_id: i32,
    api_key: ApiKey,
    api_version: i16,
    body: &ResponseKind,
) -> Result<FramePieces, EncodeError> {
    let frame = encode_response(correlation_id, api_key, api_version, body)?;
    Ok(FramePieces {
        pieces: vec![frame.freeze()],
    })
}

/// Where the two encodings differ, as the start of each `field_len`-byte length field; `None`
/// if they differ in length or in a way a length field does not explain.
fn length_fields(empty: &[u8], null: &[u8], field_len: usize) -> Option<Vec<usize>> {
    if empty.len() != null.len() {
        return None;
    }
    let mut positions = Vec::new();
    let mut at = 0;
    while at < empty.len() {
        if empty[at] == null[at] {
            at += 1;
            continue;
        }
        let field = at..at + field_len;
        let expected: (&[u8], &[u8]) = if field_len == 1 {
            (&[1], &[0])
        } else {
            (&[0, 0, 0, 0], &[0xff, 0xff, 0xff, 0xff])
        };
        if empty.get(field.clone())? != expected.0 || null.get(field)? != expected.1 {
            return None;
        }
        positions.push(at);
        at += field_len;
    }
    Some(positions)
}

fn put_unsigned_varint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, EpochEndOffset, FetchableTopicResponse, PartitionData,
    };
    use kafka_protocol::messages::{FetchResponse, ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn records(len: usize, seed: u8) -> Bytes {
        Bytes::from(
            (0..len)
                .map(|i| seed.wrapping_add(i as u8))
                .collect::<Vec<u8>>(),
        )
    }

    /// A response with records of `sizes` over two topics, and every other field the version
    /// carries set.
    fn sample(version: i16, sizes: &[Option<usize>]) -> FetchResponse {
        let partitions = |from: usize| {
            sizes
                .iter()
                .enumerate()
                .skip(from)
                .step_by(2)
                .map(|(i, size)| {
                    let mut partition = PartitionData::default()
                        .with_partition_index(i as i32)
                        .with_high_watermark(1_000 + i as i64)
                        .with_last_stable_offset(900)
                        .with_aborted_transactions(Some(vec![AbortedTransaction::default()
                            .with_producer_id(ProducerId(3))
                            .with_first_offset(5)]))
                        .with_records(size.map(|size| records(size, i as u8)));
                    if version >= 5 {
                        partition = partition.with_log_start_offset(7);
                    }
                    if version >= 12 && i == 1 {
                        partition = partition.with_diverging_epoch(
                            EpochEndOffset::default().with_epoch(4).with_end_offset(77),
                        );
                    }
                    partition
                })
                .collect()
        };
        FetchResponse::default()
            .with_session_id(0)
            .with_responses(vec![
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_static_str("orders")))
                    .with_topic_id("6ba7b810-9dad-11d1-80b4-00c04fd430c8".parse().unwrap())
                    .with_partitions(partitions(0)),
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_static_str("payments")))
                    .with_topic_id("6ba7b811-9dad-11d1-80b4-00c04fd430c8".parse().unwrap())
                    .with_partitions(partitions(1)),
            ])
    }

    #[test]
    fn pieces_make_the_same_frame_as_the_flat_encoding() {
        let shapes: [&[Option<usize>]; 5] = [
            &[
                Some(4_096),
                Some(200),
                None,
                Some(70_000),
                Some(0),
                Some(1_024),
            ],
            &[Some(2_000_000)],
            &[None, Some(10)],
            &[Some(1_023), Some(1_024), Some(1_025)],
            &[],
        ];
        for version in 4..=18 {
            for shape in shapes {
                let body = ResponseKind::Fetch(sample(version, shape));
                let flat = encode_response(41, ApiKey::Fetch, version, &body).unwrap();
                let pieces = encode_response_pieces(41, ApiKey::Fetch, version, &body).unwrap();
                assert_eq!(pieces.concat(), flat.freeze(), "v{version} {shape:?}");
                let shared = shape
                    .iter()
                    .filter(|size| size.is_some_and(|size| size >= SPLICE_MIN_BYTES))
                    .count();
                let expected = if shared == 0 { 1 } else { 2 * shared + 1 };
                assert_eq!(pieces.pieces.len(), expected, "v{version} {shape:?}");
            }
        }
    }

    #[test]
    fn record_pieces_share_the_fetched_bytes() {
        let body = sample(12, &[Some(8_192)]);
        let original = body.responses[0].partitions[0].records.clone().unwrap();
        let pieces =
            encode_response_pieces(1, ApiKey::Fetch, 12, &ResponseKind::Fetch(body)).unwrap();
        assert_eq!(pieces.pieces[1].as_ptr(), original.as_ptr(), "not copied");
        assert_eq!(pieces.pieces[1].len(), 8_192);
    }

    #[test]
    fn other_responses_are_one_piece() {
        let body = ResponseKind::ApiVersions(Default::default());
        let pieces = encode_response_pieces(9, ApiKey::ApiVersions, 3, &body).unwrap();
        let flat = encode_response(9, ApiKey::ApiVersions, 3, &body).unwrap();
        assert_eq!(pieces.pieces, vec![flat.freeze()]);
    }
}
