//! Request decoding and response encoding on whole frames (the size prefix already removed).
//!
//! The first eight bytes of every request header (api key, api version, correlation id) have the
//! same layout in every header version, so they are read before anything else: an unknown API or
//! version is recognised, and can be answered or refused, without decoding the rest. Which APIs are
//! known depends on the listener: [`decode_request`] serves the client listener,
//! [`decode_controller_request`] the CONTROLLER listener.
//!
//! The mirror image, [`encode_request_frame`] and [`decode_response`], is for the requests Skald
//! itself sends: a broker registering and heartbeating with the active controller, and a partition
//! leader asking it to change an ISR (AlterPartition).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use crate::api_versions::{self, SupportedApi};
use crate::frame::patch_size_prefix;
use crate::legacy;
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

impl HeaderPrefix {
    /// The API's name for log lines: Kafka's ("Fetch"), or "unknown API" for a key Kafka does not
    /// define.
    pub fn api_name(&self) -> &'static str {
        ApiKey::try_from(self.api_key).map_or("unknown API", api_versions::api_name)
    }
}

/// Why a request frame was not decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("request frame of {0} bytes is shorter than a request header")]
    Truncated(usize),
    #[error("{} (API key {}) is not served on this listener", .0.api_name(), .0.api_key)]
    UnknownApiKey(HeaderPrefix),
    #[error("unsupported version {} of {}", .0.api_version, .0.api_name())]
    UnsupportedVersion(HeaderPrefix),
    #[error("malformed {} v{} request: {reason}", .prefix.api_name(), .prefix.api_version)]
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

/// Why a response frame was not decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed {api_key:?} v{api_version} response: {reason}")]
pub struct ResponseDecodeError {
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

/// Decodes one request frame from the client listener, refusing APIs and versions it does not
/// advertise ([`api_versions::SUPPORTED_APIS`]); the controller-only APIs are unknown keys here.
pub fn decode_request(frame: Bytes) -> Result<Request, DecodeError> {
    decode_request_served_by(frame, api_versions::SUPPORTED_APIS)
}

/// Decodes one request frame from the CONTROLLER listener, refusing APIs and versions it does not
/// advertise ([`api_versions::CONTROLLER_APIS`]).
pub fn decode_controller_request(frame: Bytes) -> Result<Request, DecodeError> {
    decode_request_served_by(frame, api_versions::CONTROLLER_APIS)
}

fn decode_request_served_by(
    mut frame: Bytes,
    apis: &'static [SupportedApi],
) -> Result<Request, DecodeError> {
    let prefix = header_prefix(&frame).ok_or(DecodeError::Truncated(frame.len()))?;
    let api_key =
        ApiKey::try_from(prefix.api_key).map_err(|_| DecodeError::UnknownApiKey(prefix))?;
    if api_versions::find(apis, prefix.api_key).is_none() {
        return Err(DecodeError::UnknownApiKey(prefix));
    }
    if !api_versions::serves(apis, prefix.api_key, prefix.api_version) {
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
    // A legacy version kafka-protocol no longer decodes is rewritten into one it does.
    if let Some(rewritten) = legacy::rewrite_body(api_key, prefix.api_version, &frame) {
        frame = Bytes::from(rewritten.map_err(|rejection| DecodeError::Malformed {
            prefix,
            reason: rejection.to_string(),
        })?);
    }
    let codec_version = legacy::codec_version(api_key, prefix.api_version);
    let body = RequestKind::decode(api_key, &mut frame, codec_version).map_err(malformed)?;
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
    body.encode(&mut buf, legacy::codec_version(api_key, api_version))
        .map_err(|err| error(err.to_string()))?;
    patch_size_prefix(&mut buf, 0);
    Ok(buf)
}

/// Encodes a request frame, size prefix included, as a client sends it.
///
/// `api_key` must be the key of `R`, and `api_version` one the peer advertised; the request header
/// version (v1 before the API's flexible versions, v2 from them) follows from both.
pub fn encode_request_frame<R: Encodable + HeaderVersion>(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    client_id: &str,
    body: &R,
) -> Result<Bytes, EncodeError> {
    let error = |err: anyhow::Error| EncodeError {
        api_key,
        api_version,
        reason: err.to_string(),
    };
    let header_version = R::header_version(api_version);
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(api_version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_owned())));
    let size = header.compute_size(header_version).map_err(error)?
        + body.compute_size(api_version).map_err(error)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(0);
    header.encode(&mut buf, header_version).map_err(error)?;
    body.encode(&mut buf, api_version).map_err(error)?;
    patch_size_prefix(&mut buf, 0);
    Ok(buf.freeze())
}

/// Decodes a response frame (the size prefix already removed) to a request sent as `api_key` at
/// `api_version`, returning its correlation id for the caller to match against what it sent.
///
/// Unlike requests, responses get no [`precheck`] walk: kafka-protocol sizes any arrays in `R`
/// from the wire, so this trusts the peer as much as the process itself. That holds for the
/// controller quorum, the only peer Skald sends requests to (BrokerRegistration and
/// BrokerHeartbeat responses carry no arrays; AlterPartition responses do).
pub fn decode_response<R: Decodable>(
    mut frame: Bytes,
    api_key: ApiKey,
    api_version: i16,
) -> Result<(i32, R), ResponseDecodeError> {
    let error = |err: anyhow::Error| ResponseDecodeError {
        api_key,
        api_version,
        reason: err.to_string(),
    };
    let header_version = api_key.response_header_version(api_version);
    let header = ResponseHeader::decode(&mut frame, header_version).map_err(error)?;
    let body = R::decode(&mut frame, api_version).map_err(error)?;
    Ok((header.correlation_id, body))
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
    use crate::api_versions::supported_controller_api;
    use crate::frame::{take_frame, SOCKET_REQUEST_MAX_BYTES_DEFAULT};
    use kafka_protocol::messages::alter_partition_request::{
        BrokerState, PartitionData, TopicData,
    };
    use kafka_protocol::messages::alter_partition_response::{
        PartitionData as PartitionResult, TopicData as TopicResult,
    };
    use kafka_protocol::messages::broker_registration_request::{Feature, Listener};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
    use kafka_protocol::messages::{
        AlterPartitionRequest, AlterPartitionResponse, ApiVersionsRequest, ApiVersionsResponse,
        BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerId, BrokerRegistrationRequest,
        BrokerRegistrationResponse, MetadataRequest, MetadataResponse, TopicName,
    };

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
    fn the_controller_listener_refuses_client_apis_and_unserved_versions() {
        let header = |api_key: i16, api_version: i16| {
            let mut frame = BytesMut::new();
            frame.put_i16(api_key);
            frame.put_i16(api_version);
            frame.put_i32(11);
            frame.freeze()
        };
        for key in [ApiKey::Produce, ApiKey::Fetch, ApiKey::JoinGroup] {
            let err = decode_controller_request(header(key as i16, 5)).unwrap_err();
            assert!(
                matches!(err, DecodeError::UnknownApiKey(p) if p.api_key == key as i16 && p.correlation_id == 11),
                "{key:?}: {err:?}"
            );
        }
        let err = decode_controller_request(header(62, 5)).unwrap_err();
        assert!(
            matches!(err, DecodeError::UnsupportedVersion(p) if p.api_key == 62 && p.api_version == 5),
            "{err:?}"
        );
        let err = decode_controller_request(header(63, -1)).unwrap_err();
        assert!(
            matches!(err, DecodeError::UnsupportedVersion(p) if p.api_key == 63 && p.api_version == -1),
            "{err:?}"
        );
        assert!(matches!(
            decode_controller_request(Bytes::from_static(&[0, 62, 0])),
            Err(DecodeError::Truncated(3))
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

    /// Takes the size prefix off as the peer's reader does, checking it covers exactly the frame.
    fn unframe(frame: &[u8]) -> Bytes {
        let mut buf = BytesMut::from(frame);
        let body = take_frame(&mut buf, SOCKET_REQUEST_MAX_BYTES_DEFAULT)
            .expect("a valid size prefix")
            .expect("a whole frame");
        assert!(buf.is_empty(), "{} bytes after the frame", buf.len());
        body
    }

    fn versions_on_controller(api_key: ApiKey) -> std::ops::RangeInclusive<i16> {
        let api = supported_controller_api(api_key as i16).expect("served on the controller");
        api.min_version..=api.max_version
    }

    #[test]
    fn broker_registration_round_trips_at_every_controller_version() {
        let versions = versions_on_controller(ApiKey::BrokerRegistration);
        assert_eq!(versions, 0..=1);
        for version in versions {
            let correlation_id = 100 + i32::from(version);
            let mut registration = BrokerRegistrationRequest::default()
                .with_broker_id(BrokerId(3))
                .with_cluster_id(StrBytes::from_static_str("MkU3OEVBNTcwNTJENDM2Qg"))
                .with_incarnation_id("6ba7b812-9dad-11d1-80b4-00c04fd430c8".parse().unwrap())
                .with_listeners(vec![Listener::default()
                    .with_name(StrBytes::from_static_str("PLAINTEXT"))
                    .with_host(StrBytes::from_static_str("broker-3.example"))
                    .with_port(9092)])
                .with_features(vec![Feature::default()
                    .with_name(StrBytes::from_static_str("metadata.version"))
                    .with_min_supported_version(7)
                    .with_max_supported_version(21)])
                .with_rack(Some(StrBytes::from_static_str("rack-a")));
            if version >= 2 {
                registration =
                    registration.with_log_dirs(vec!["6ba7b813-9dad-11d1-80b4-00c04fd430c8"
                        .parse()
                        .unwrap()]);
            }
            if version >= 3 {
                registration = registration.with_previous_broker_epoch(40);
            }
            let frame = unframe(
                &encode_request_frame(
                    ApiKey::BrokerRegistration,
                    version,
                    correlation_id,
                    "skald-broker-3",
                    &registration,
                )
                .unwrap(),
            );

            // Never on the client listener, whatever the version.
            let refused = decode_request(frame.clone()).unwrap_err();
            assert!(
                matches!(refused, DecodeError::UnknownApiKey(p) if p.api_key == 62 && p.correlation_id == correlation_id),
                "v{version}: {refused:?}"
            );
            let request = decode_controller_request(frame).unwrap();
            assert_eq!(request.api_key, ApiKey::BrokerRegistration);
            assert_eq!(request.api_version, version);
            assert_eq!(request.header.request_api_key, 62);
            assert_eq!(request.header.request_api_version, version);
            assert_eq!(request.header.correlation_id, correlation_id);
            assert_eq!(request.header.client_id.as_deref(), Some("skald-broker-3"));
            assert_eq!(
                request.body,
                RequestKind::BrokerRegistration(registration),
                "v{version}"
            );

            let response = BrokerRegistrationResponse::default()
                .with_throttle_time_ms(5)
                .with_broker_epoch(41 + i64::from(version));
            let frame = encode_response(
                correlation_id,
                ApiKey::BrokerRegistration,
                version,
                &ResponseKind::BrokerRegistration(response.clone()),
            )
            .unwrap();
            let decoded = decode_response::<BrokerRegistrationResponse>(
                unframe(&frame),
                ApiKey::BrokerRegistration,
                version,
            )
            .unwrap();
            assert_eq!(decoded, (correlation_id, response), "v{version}");
        }
    }

    #[test]
    fn broker_heartbeat_round_trips_at_every_controller_version() {
        let versions = versions_on_controller(ApiKey::BrokerHeartbeat);
        assert_eq!(versions, 0..=0);
        for version in versions {
            let correlation_id = 200 + i32::from(version);
            let mut heartbeat = BrokerHeartbeatRequest::default()
                .with_broker_id(BrokerId(3))
                .with_broker_epoch(41)
                .with_current_metadata_offset(1_234)
                .with_want_fence(false)
                .with_want_shut_down(true);
            if version >= 1 {
                heartbeat =
                    heartbeat.with_offline_log_dirs(vec!["6ba7b813-9dad-11d1-80b4-00c04fd430c8"
                        .parse()
                        .unwrap()]);
            }
            let frame = unframe(
                &encode_request_frame(
                    ApiKey::BrokerHeartbeat,
                    version,
                    correlation_id,
                    "",
                    &heartbeat,
                )
                .unwrap(),
            );

            let refused = decode_request(frame.clone()).unwrap_err();
            assert!(
                matches!(refused, DecodeError::UnknownApiKey(p) if p.api_key == 63 && p.correlation_id == correlation_id),
                "v{version}: {refused:?}"
            );
            let request = decode_controller_request(frame).unwrap();
            assert_eq!(request.api_key, ApiKey::BrokerHeartbeat);
            assert_eq!(request.api_version, version);
            assert_eq!(request.header.correlation_id, correlation_id);
            // Kafka's clients send an empty client id rather than a null one.
            assert_eq!(request.header.client_id.as_deref(), Some(""));
            assert_eq!(
                request.body,
                RequestKind::BrokerHeartbeat(heartbeat),
                "v{version}"
            );

            let response = BrokerHeartbeatResponse::default()
                .with_is_caught_up(true)
                .with_is_fenced(false)
                .with_should_shut_down(true);
            let frame = encode_response(
                correlation_id,
                ApiKey::BrokerHeartbeat,
                version,
                &ResponseKind::BrokerHeartbeat(response.clone()),
            )
            .unwrap();
            let decoded = decode_response::<BrokerHeartbeatResponse>(
                unframe(&frame),
                ApiKey::BrokerHeartbeat,
                version,
            )
            .unwrap();
            assert_eq!(decoded, (correlation_id, response), "v{version}");
        }
    }

    #[test]
    fn alter_partition_round_trips_at_every_controller_version() {
        let versions = versions_on_controller(ApiKey::AlterPartition);
        assert_eq!(versions, 2..=3);
        for version in versions {
            let correlation_id = 300 + i32::from(version);
            let mut partition = PartitionData::default()
                .with_partition_index(4)
                .with_leader_epoch(7)
                .with_partition_epoch(19);
            partition = if version >= 3 {
                partition.with_new_isr_with_epochs(vec![
                    BrokerState::default()
                        .with_broker_id(BrokerId(1))
                        .with_broker_epoch(40),
                    BrokerState::default()
                        .with_broker_id(BrokerId(3))
                        .with_broker_epoch(-1),
                ])
            } else {
                partition.with_new_isr(vec![BrokerId(1), BrokerId(3)])
            };
            let request = AlterPartitionRequest::default()
                .with_broker_id(BrokerId(1))
                .with_broker_epoch(40)
                .with_topics(vec![TopicData::default()
                    .with_topic_id("6ba7b810-9dad-11d1-80b4-00c04fd430c8".parse().unwrap())
                    .with_partitions(vec![partition])]);
            let frame = unframe(
                &encode_request_frame(
                    ApiKey::AlterPartition,
                    version,
                    correlation_id,
                    "skald-broker-1",
                    &request,
                )
                .unwrap(),
            );
            let refused = decode_request(frame.clone()).unwrap_err();
            assert!(
                matches!(refused, DecodeError::UnknownApiKey(p) if p.api_key == 56 && p.correlation_id == correlation_id),
                "v{version}: {refused:?}"
            );
            let decoded = decode_controller_request(frame).unwrap();
            assert_eq!(decoded.api_key, ApiKey::AlterPartition);
            assert_eq!(decoded.api_version, version);
            assert_eq!(decoded.header.correlation_id, correlation_id);
            assert_eq!(
                decoded.body,
                RequestKind::AlterPartition(request),
                "v{version}"
            );

            let response =
                AlterPartitionResponse::default().with_topics(vec![TopicResult::default()
                    .with_topic_id("6ba7b810-9dad-11d1-80b4-00c04fd430c8".parse().unwrap())
                    .with_partitions(vec![
                        PartitionResult::default()
                            .with_partition_index(4)
                            .with_leader_id(BrokerId(1))
                            .with_leader_epoch(7)
                            .with_isr(vec![BrokerId(1), BrokerId(3)])
                            .with_partition_epoch(20),
                        PartitionResult::default()
                            .with_partition_index(5)
                            .with_error_code(95),
                    ])]);
            let frame = encode_response(
                correlation_id,
                ApiKey::AlterPartition,
                version,
                &ResponseKind::AlterPartition(response.clone()),
            )
            .unwrap();
            let decoded = decode_response::<AlterPartitionResponse>(
                unframe(&frame),
                ApiKey::AlterPartition,
                version,
            )
            .unwrap();
            assert_eq!(decoded, (correlation_id, response), "v{version}");
        }
    }

    #[test]
    fn client_frames_use_the_header_versions_of_each_api() {
        // Metadata v0: request header v1, response header v0.
        let metadata = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("orders"))))]));
        let frame = encode_request_frame(ApiKey::Metadata, 0, 9, "c", &metadata).unwrap();
        let request = decode_request(unframe(&frame)).unwrap();
        assert_eq!(request.header.client_id.as_deref(), Some("c"));
        assert_eq!(request.body, RequestKind::Metadata(metadata));
        let response =
            MetadataResponse::default().with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(1))
                .with_host(StrBytes::from_static_str("broker-1"))
                .with_port(9092)]);
        let frame = encode_response(
            9,
            ApiKey::Metadata,
            0,
            &ResponseKind::Metadata(response.clone()),
        )
        .unwrap();
        assert_eq!(
            decode_response::<MetadataResponse>(unframe(&frame), ApiKey::Metadata, 0).unwrap(),
            (9, response)
        );

        // ApiVersions v3: a flexible request header (v2), yet response header v0; on either listener.
        let api_versions = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("skald"))
            .with_client_software_version(StrBytes::from_static_str("0.1.0"));
        let frame =
            unframe(&encode_request_frame(ApiKey::ApiVersions, 3, 10, "c", &api_versions).unwrap());
        for request in [
            decode_request(frame.clone()).unwrap(),
            decode_controller_request(frame).unwrap(),
        ] {
            assert_eq!(request.header.correlation_id, 10);
            assert_eq!(request.body, RequestKind::ApiVersions(api_versions.clone()));
        }
        let response = ApiVersionsResponse::default().with_throttle_time_ms(3);
        let frame = encode_response(
            10,
            ApiKey::ApiVersions,
            3,
            &ResponseKind::ApiVersions(response.clone()),
        )
        .unwrap();
        assert_eq!(
            decode_response::<ApiVersionsResponse>(unframe(&frame), ApiKey::ApiVersions, 3)
                .unwrap(),
            (10, response)
        );
    }

    #[test]
    fn client_side_failures_name_the_api_and_version() {
        let heartbeat = BrokerHeartbeatRequest::default();
        let err = encode_request_frame(ApiKey::BrokerHeartbeat, 2, 1, "", &heartbeat).unwrap_err();
        assert_eq!(
            (err.api_key, err.api_version, err.reason.as_str()),
            (
                ApiKey::BrokerHeartbeat,
                2,
                "specified version not supported by this message type"
            )
        );
        // A v1 field set on a v0 request is refused rather than silently dropped.
        let registration = BrokerRegistrationRequest::default().with_is_migrating_zk_broker(true);
        let err =
            encode_request_frame(ApiKey::BrokerRegistration, 0, 1, "", &registration).unwrap_err();
        assert_eq!(
            err.reason,
            "A field is set that is not available on the selected protocol version"
        );

        let response = BrokerHeartbeatResponse::default().with_is_caught_up(true);
        let frame = encode_response(
            4,
            ApiKey::BrokerHeartbeat,
            1,
            &ResponseKind::BrokerHeartbeat(response),
        )
        .unwrap();
        let whole = unframe(&frame);
        // Cut inside the body: the header decodes, the body runs out.
        let err = decode_response::<BrokerHeartbeatResponse>(
            whole.slice(..whole.len() - 2),
            ApiKey::BrokerHeartbeat,
            1,
        )
        .unwrap_err();
        assert_eq!((err.api_key, err.api_version), (ApiKey::BrokerHeartbeat, 1));
        let err =
            decode_response::<BrokerHeartbeatResponse>(Bytes::new(), ApiKey::BrokerHeartbeat, 1)
                .unwrap_err();
        assert_eq!((err.api_key, err.api_version), (ApiKey::BrokerHeartbeat, 1));
    }
}
