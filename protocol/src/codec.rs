//! Request decoding and response encoding on whole frames (the size prefix already removed).
//!
//! The first eight bytes of every request header (api key, api version, correlation id) have the
//! same layout in every header version, so they are read before anything else: an unknown API or
//! version is recognised, and can be answered or refused, without decoding the rest.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::api_versions;
use crate::frame::patch_size_prefix;
use crate::precheck;

/// A decoded request: its header and its typed body, plus the key and version it was sent with.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// The fixed leading fields of any request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Why a request frame was not decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("request frame of {0} bytes is shorter than a request header")]
    Truncated(usize),
    #[error("unknown API key {}", .0.api_key)]
    UnknownApiKey(HeaderPrefix),
    #[error("unsupported version {} of API {}", .0.api_version, .0.api_key)]
    UnsupportedVersion(HeaderPrefix),
    #[error("malformed request (API {} v{}): {reason}", .prefix.api_key, .prefix.api_version)]
    Malformed {
        prefix: HeaderPrefix,
        reason: String,
    },
}

/// Why a response could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {api_key:?} v{api_version} response: {reason}")]
pub struct EncodeError {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub reason: String,
}

/// Reads the api key, api version and correlation id that start every request header.
pub fn header_prefix(frame: &[u8]) -> Option<HeaderPrefix> {
    let bytes: &[u8; 8] = frame.get(..8)?.try_into().ok()?;
    Some(HeaderPrefix {
        api_key: i16::from_be_bytes([bytes[0], bytes[1]]),
        api_version: i16::from_be_bytes([bytes[2], bytes[3]]),
        correlation_id: i32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
    })
}

/// Decodes one request frame, refusing APIs and versions that Skald does not advertise.
pub fn decode_request(mut frame: Bytes) -> Result<Request, DecodeError> {
    let prefix = header_prefix(&frame).ok_or(DecodeError::Truncated(frame.len()))?;
    let api_key =
        ApiKey::try_from(prefix.api_key).map_err(|_| DecodeError::UnknownApiKey(prefix))?;
    if api_versions::supported_api(prefix.api_key).is_none() {
        return Err(DecodeError::UnknownApiKey(prefix));
    }
    if !api_versions::is_supported(prefix.api_key, prefix.api_version) {
        return Err(DecodeError::UnsupportedVersion(prefix));
    }
    // kafka-protocol reports its decode failures as anyhow errors.
    let malformed = |err: anyhow::Error| DecodeError::Malformed {
        prefix,
        reason: err.to_string(),
    };
    let header_version = api_key.request_header_version(prefix.api_version);
    let header = RequestHeader::decode(&mut frame, header_version).map_err(malformed)?;
    // kafka-protocol sizes arrays from the wire before decoding them; a lying count would abort
    // the process on allocation failure, so the body's lengths are checked against the frame first.
    precheck::check_body(api_key, prefix.api_version, &frame).map_err(|rejection| {
        DecodeError::Malformed {
            prefix,
            reason: rejection.to_string(),
        }
    })?;
    let body = RequestKind::decode(api_key, &mut frame, prefix.api_version).map_err(malformed)?;
    Ok(Request {
        api_key,
        api_version: prefix.api_version,
        header,
        body,
    })
}

/// Encodes a response frame, size prefix included, for the request it answers.
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    api_version: i16,
    body: &ResponseKind,
) -> Result<BytesMut, EncodeError> {
    let error = |reason: String| EncodeError {
        api_key,
        api_version,
        reason,
    };
    let mut buf = BytesMut::with_capacity(capacity_hint(body));
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut buf, api_key.response_header_version(api_version))
        .map_err(|err| error(err.to_string()))?;
    body.encode(&mut buf, api_version)
        .map_err(|err| error(err.to_string()))?;
    patch_size_prefix(&mut buf, 0);
    Ok(buf)
}

/// Room for the response without regrowing: Fetch responses are dominated by their record bytes,
/// which are copied once into the frame.
fn capacity_hint(body: &ResponseKind) -> usize {
    const SMALL_RESPONSE_BYTES: usize = 256;
    const PER_PARTITION_BYTES: usize = 128;
    match body {
        ResponseKind::Fetch(fetch) => {
            fetch
                .responses
                .iter()
                .flat_map(|topic| &topic.partitions)
                .map(|partition| {
                    PER_PARTITION_BYTES
                        + partition
                            .records
                            .as_ref()
                            .map_or(0, |records| records.len())
                })
                .sum::<usize>()
                + SMALL_RESPONSE_BYTES
        }
        _ => SMALL_RESPONSE_BYTES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{
        ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;

    fn request_frame(
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        body: &RequestKind,
    ) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, api_key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn requests_round_trip_through_every_header_version() {
        // Metadata v0 uses header v1, v9+ the flexible header v2; ApiVersions v3 is flexible too.
        for version in [0, 4, 9, 12] {
            let body = RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("orders")))),
            ])));
            let request =
                decode_request(request_frame(ApiKey::Metadata, version, 7, &body)).unwrap();
            assert_eq!(request.api_key, ApiKey::Metadata);
            assert_eq!(request.api_version, version);
            assert_eq!(request.header.correlation_id, 7);
            assert_eq!(request.header.client_id.as_deref(), Some("test"));
            let RequestKind::Metadata(metadata) = request.body else {
                panic!("wrong kind")
            };
            let topics = metadata.topics.unwrap();
            assert_eq!(
                topics[0].name.as_ref().map(|name| name.as_str()),
                Some("orders")
            );
        }
        let body = RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("skald-test"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        );
        let request = decode_request(request_frame(ApiKey::ApiVersions, 3, 1, &body)).unwrap();
        let RequestKind::ApiVersions(api_versions) = request.body else {
            panic!("wrong kind")
        };
        assert_eq!(api_versions.client_software_name.as_str(), "skald-test");
    }

    #[test]
    fn unknown_keys_unsupported_versions_and_garbage_are_told_apart() {
        let mut frame = BytesMut::new();
        frame.put_i16(9999);
        frame.put_i16(0);
        frame.put_i32(42);
        let err = decode_request(frame.freeze()).unwrap_err();
        assert!(matches!(err, DecodeError::UnknownApiKey(prefix) if prefix.correlation_id == 42));

        let body = RequestKind::ApiVersions(ApiVersionsRequest::default());
        let mut frame = BytesMut::from(&request_frame(ApiKey::ApiVersions, 3, 5, &body)[..]);
        frame[2..4].copy_from_slice(&99i16.to_be_bytes());
        let err = decode_request(frame.freeze()).unwrap_err();
        assert!(
            matches!(err, DecodeError::UnsupportedVersion(p) if p.api_version == 99 && p.correlation_id == 5)
        );

        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 3, 0])),
            Err(DecodeError::Truncated(3))
        ));

        // A Metadata v12 header followed by a topic array claiming more bytes than the frame holds.
        let mut frame = BytesMut::new();
        frame.put_i16(ApiKey::Metadata as i16);
        frame.put_i16(12);
        frame.put_i32(8);
        frame.put_slice(&[0xff, 0xff, 0x00, 0x05, 0x7f]);
        assert!(matches!(
            decode_request(frame.freeze()),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn responses_carry_size_prefix_and_correlation_id() {
        let body =
            ResponseKind::ApiVersions(ApiVersionsResponse::default().with_throttle_time_ms(3));
        let frame = encode_response(77, ApiKey::ApiVersions, 3, &body).unwrap();
        let size = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(size, frame.len() - 4);
        let mut rest = frame.freeze().slice(4..);
        // ApiVersions responses always use header v0, even at flexible versions.
        let header = ResponseHeader::decode(&mut rest, 0).unwrap();
        assert_eq!(header.correlation_id, 77);
        let decoded = ApiVersionsResponse::decode(&mut rest, 3).unwrap();
        assert_eq!(decoded.throttle_time_ms, 3);
    }
}
