//! Skald's own controller RPC, for what Kafka has no RPC for that fits (metadata operations
//! forwarded by brokers, broker-only nodes fetching the committed metadata, cluster status).
//!
//! It rides in ordinary Kafka frames on the controller listener under a private API key, so one
//! listener, one framing and one size limit serve everything: request = size, api key
//! [`CONTROL_API_KEY`], version 0, correlation id, null client id, then a JSON body; response =
//! size, correlation id, JSON body. Bodies are bounded by the frame limit like any request.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use skald_controller::{ControllerOp, ControllerReply};

use crate::metadata::ControlError;

/// Outside Kafka's key space (Kafka's keys are below 100), so no Kafka request is mistaken for it.
pub const CONTROL_API_KEY: i16 = 32_001;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlRequest {
    Operation(ControllerOp),
    /// Committed metadata after `after_index` (the first chunk of a snapshot when that is no
    /// longer in the log).
    FetchMetadata {
        after_index: u64,
        max_bytes: usize,
    },
    /// The rest of the snapshot at `index` from `position` (KIP-630's FetchSnapshot); the
    /// answer is a `FetchMetadata` response.
    FetchSnapshot {
        index: u64,
        position: u64,
        max_bytes: usize,
    },
    Status,
}

/// A [`ControlError`] as it crosses the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireError {
    NotController(Option<i32>),
    Timeout,
    StaleBrokerEpoch,
    Unavailable(String),
}

impl From<ControlError> for WireError {
    fn from(error: ControlError) -> Self {
        match error {
            ControlError::NotController(leader) => WireError::NotController(leader),
            ControlError::Timeout => WireError::Timeout,
            ControlError::StaleBrokerEpoch => WireError::StaleBrokerEpoch,
            ControlError::Unavailable(reason) => WireError::Unavailable(reason),
        }
    }
}

impl From<WireError> for ControlError {
    fn from(error: WireError) -> Self {
        match error {
            WireError::NotController(leader) => ControlError::NotController(leader),
            WireError::Timeout => ControlError::Timeout,
            WireError::StaleBrokerEpoch => ControlError::StaleBrokerEpoch,
            WireError::Unavailable(reason) => ControlError::Unavailable(reason),
        }
    }
}

/// One voter's replication progress, for `skald cluster info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterStatus {
    pub node_id: i32,
    /// The last log index known to be on that voter (leader's view; None elsewhere).
    pub matched_index: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    pub node_id: i32,
    pub leader: Option<i32>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub voters: Vec<VoterStatus>,
}

impl From<&skald_controller::QuorumStatus> for StatusReply {
    fn from(status: &skald_controller::QuorumStatus) -> Self {
        StatusReply {
            node_id: status.node_id,
            leader: status.leader,
            term: status.term,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            voters: status
                .voters
                .iter()
                .map(|voter| VoterStatus {
                    node_id: voter.node_id,
                    matched_index: voter.matched_index,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlResponse {
    /// `applied_index`: the controller's applied raft index once the operation committed, so the
    /// forwarding broker can wait until its own metadata has caught up before it replies.
    Operation {
        result: Result<ControllerReply, WireError>,
        applied_index: u64,
    },
    /// `update` is the JSON of a `skald_controller::follower::MetadataUpdate`.
    FetchMetadata {
        update: serde_json::Value,
        leader: Option<i32>,
    },
    Status(Option<StatusReply>),
}

/// A complete request frame (size prefix included).
pub fn encode_request(correlation_id: i32, request: &ControlRequest) -> serde_json::Result<Bytes> {
    let body = serde_json::to_vec(request)?;
    let mut frame = BytesMut::with_capacity(14 + body.len());
    frame.put_i32((10 + body.len()) as i32);
    frame.put_i16(CONTROL_API_KEY);
    frame.put_i16(0);
    frame.put_i32(correlation_id);
    frame.put_i16(-1);
    frame.put_slice(&body);
    Ok(frame.freeze())
}

/// Decodes a request frame (size prefix removed) whose api key is [`CONTROL_API_KEY`]: its
/// correlation id and body.
pub fn decode_request(frame: &[u8]) -> Result<(i32, ControlRequest), String> {
    if frame.len() < 10 {
        return Err("control request shorter than its header".into());
    }
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let client_id_len = i16::from_be_bytes([frame[8], frame[9]]);
    let body_start = 10 + usize::try_from(client_id_len.max(0)).unwrap_or(0);
    let body = frame
        .get(body_start..)
        .ok_or("control request client id runs past the frame")?;
    let request = serde_json::from_slice(body).map_err(|err| err.to_string())?;
    Ok((correlation_id, request))
}

/// A complete response frame.
pub fn encode_response(
    correlation_id: i32,
    response: &ControlResponse,
) -> serde_json::Result<Bytes> {
    let body = serde_json::to_vec(response)?;
    let mut frame = BytesMut::with_capacity(8 + body.len());
    frame.put_i32((4 + body.len()) as i32);
    frame.put_i32(correlation_id);
    frame.put_slice(&body);
    Ok(frame.freeze())
}

/// Decodes a response frame (size prefix removed).
pub fn decode_response(frame: &[u8]) -> Result<(i32, ControlResponse), String> {
    let Some((id, body)) = frame.split_first_chunk::<4>() else {
        return Err("control response shorter than its header".into());
    };
    let response = serde_json::from_slice(body).map_err(|err| err.to_string())?;
    Ok((i32::from_be_bytes(*id), response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip_and_garbage_is_an_error() {
        let request = ControlRequest::FetchMetadata {
            after_index: 42,
            max_bytes: 1 << 20,
        };
        let frame = encode_request(7, &request).unwrap();
        let (id, decoded) = decode_request(&frame[4..]).unwrap();
        assert_eq!(id, 7);
        assert!(matches!(
            decoded,
            ControlRequest::FetchMetadata {
                after_index: 42,
                max_bytes: 1048576
            }
        ));
        assert_eq!(i16::from_be_bytes([frame[4], frame[5]]), CONTROL_API_KEY);
        let response = ControlResponse::Operation {
            result: Err(WireError::NotController(Some(3))),
            applied_index: 5,
        };
        let frame = encode_response(9, &response).unwrap();
        let (id, decoded) = decode_response(&frame[4..]).unwrap();
        assert_eq!(id, 9);
        assert!(matches!(
            decoded,
            ControlResponse::Operation {
                result: Err(WireError::NotController(Some(3))),
                applied_index: 5
            }
        ));
        assert!(decode_request(&[0, 1, 2]).is_err());
        assert!(decode_request(&[0x7d, 0x01, 0, 0, 0, 0, 0, 1, 0x7f, 0xff]).is_err());
        assert!(decode_response(b"\0\0\0\x01{not json").is_err());
    }
}
