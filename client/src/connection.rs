//! One TCP connection to one broker: framing, ApiVersions negotiation, correlation ids.
//!
//! Requests may be pipelined: [`Connection::send_request`] writes a request and returns a
//! [`Pending`] token; [`Connection::receive`] reads the response for it. Kafka answers the
//! requests on a connection in the order they were sent, so tokens are received in order too.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{
    encode_request_header_into_buffer, Decodable, HeaderVersion, Request, StrBytes, VersionRange,
};
use skald_protocol::frame::{patch_size_prefix, take_frame, SOCKET_REQUEST_MAX_BYTES_DEFAULT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result, UNSUPPORTED_VERSION};

/// The largest response this client accepts unless configured otherwise (Kafka's request limit).
pub const RESPONSE_MAX_BYTES_DEFAULT: usize = SOCKET_REQUEST_MAX_BYTES_DEFAULT;
/// Requests that may be outstanding on one connection at once.
pub const IN_FLIGHT_MAX: usize = 32;
/// The ApiVersions version tried first; older brokers make us fall back.
const API_VERSIONS_VERSION_MAX: i16 = 3;

/// The newest version of each API whose fields this client fills in correctly.
///
/// Produce v13 and Fetch v13+ name topics by id only, and this client names them by name.
/// APIs not listed here are sent in any version both `kafka-protocol` and the broker support.
pub const CLIENT_VERSION_MAX: &[(ApiKey, i16)] = &[
    (ApiKey::Produce, 12),
    (ApiKey::Fetch, 12),
    (ApiKey::ListOffsets, 7),
    (ApiKey::Metadata, 12),
    (ApiKey::ApiVersions, API_VERSIONS_VERSION_MAX),
    (ApiKey::CreateTopics, 7),
    (ApiKey::DeleteTopics, 5),
    (ApiKey::DescribeConfigs, 4),
    (ApiKey::FindCoordinator, 4),
    // v10 names topics by id only.
    (ApiKey::OffsetCommit, 9),
    (ApiKey::OffsetFetch, 9),
    (ApiKey::DescribeGroups, 5),
    (ApiKey::ListGroups, 5),
    (ApiKey::DeleteGroups, 2),
];

/// Settings for one connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Sent in every request header; brokers log it.
    pub client_id: String,
    /// How long to wait for the TCP connection.
    pub connect_timeout: Duration,
    /// How long to wait for each response.
    pub request_timeout: Duration,
    /// Responses larger than this close the connection.
    pub response_max_bytes: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            client_id: "skald".to_owned(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            response_max_bytes: RESPONSE_MAX_BYTES_DEFAULT,
        }
    }
}

/// A request that was written and whose response has not been read yet.
#[must_use = "a pending response must be received before later ones"]
pub struct Pending<R> {
    correlation_id: i32,
    version: i16,
    _request: PhantomData<fn() -> R>,
}

impl<R> Pending<R> {
    /// The version the request was sent in.
    pub fn version(&self) -> i16 {
        self.version
    }
}

/// One connection to one broker.
pub struct Connection {
    addr: String,
    stream: TcpStream,
    read_buf: BytesMut,
    write_buf: BytesMut,
    config: ConnectionConfig,
    client_id: StrBytes,
    next_correlation_id: i32,
    in_flight: VecDeque<i32>,
    broker_versions: HashMap<i16, VersionRange>,
    /// Set after a failure that leaves the byte stream in an unknown state.
    broken: bool,
}

impl Connection {
    /// Connects with default settings and negotiates API versions.
    pub async fn connect(addr: &str) -> Result<Self> {
        Self::connect_with(addr, &ConnectionConfig::default()).await
    }

    /// Connects and negotiates API versions.
    pub async fn connect_with(addr: &str, config: &ConnectionConfig) -> Result<Self> {
        let connect = TcpStream::connect(addr);
        let stream = match tokio::time::timeout(config.connect_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(Error::Connect {
                    addr: addr.to_owned(),
                    source,
                })
            }
            Err(_) => {
                return Err(Error::Connect {
                    addr: addr.to_owned(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("timed out after {:?}", config.connect_timeout),
                    ),
                })
            }
        };
        // Small requests (metadata, acks) must not wait for Nagle.
        stream.set_nodelay(true).map_err(|source| Error::Connect {
            addr: addr.to_owned(),
            source,
        })?;
        let mut connection = Connection {
            addr: addr.to_owned(),
            stream,
            read_buf: BytesMut::with_capacity(64 * 1024),
            write_buf: BytesMut::with_capacity(64 * 1024),
            config: config.clone(),
            client_id: StrBytes::from_string(config.client_id.clone()),
            next_correlation_id: 0,
            in_flight: VecDeque::new(),
            broker_versions: HashMap::new(),
            broken: false,
        };
        connection.negotiate_versions().await?;
        Ok(connection)
    }

    /// The address this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether an earlier failure made this connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Requests written whose responses have not been received.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The versions of an API the broker advertised, if it supports it at all.
    pub fn broker_versions(&self, api_key: ApiKey) -> Option<VersionRange> {
        self.broker_versions.get(&(api_key as i16)).copied()
    }

    /// The version `R` will be sent in: the highest both sides support.
    pub fn version_for<R: Request>(&self) -> Result<i16> {
        let api = api_name(R::KEY);
        let Some(broker) = self.broker_versions.get(&R::KEY) else {
            return Err(Error::UnsupportedVersion {
                api,
                addr: self.addr.clone(),
                detail: "the broker does not advertise it".to_owned(),
            });
        };
        negotiate_version(R::KEY, R::VERSIONS, *broker).ok_or_else(|| Error::UnsupportedVersion {
            api,
            addr: self.addr.clone(),
            detail: format!(
                "broker supports {broker}, client supports {}",
                client_versions(R::KEY, R::VERSIONS)
            ),
        })
    }

    /// Sends a request and waits for its response.
    pub async fn send<R: Request>(&mut self, request: R) -> Result<R::Response> {
        let pending = self.send_request(&request).await?;
        self.receive(pending).await
    }

    /// Writes a request without waiting for its response; receive it later with [`Connection::receive`].
    pub async fn send_request<R: Request>(&mut self, request: &R) -> Result<Pending<R>> {
        if self.in_flight.len() >= IN_FLIGHT_MAX {
            return Err(Error::InvalidArgument(format!(
                "more than {IN_FLIGHT_MAX} requests in flight to {}",
                self.addr
            )));
        }
        let version = self.version_for::<R>()?;
        let correlation_id = self.write_request(request, version).await?;
        self.in_flight.push_back(correlation_id);
        Ok(Pending {
            correlation_id,
            version,
            _request: PhantomData,
        })
    }

    /// Writes a request the broker will not answer (Produce with `acks=0`).
    pub async fn send_without_response<R: Request>(&mut self, request: &R) -> Result<()> {
        let version = self.version_for::<R>()?;
        self.write_request(request, version).await.map(drop)
    }

    /// Reads the response to an earlier [`Connection::send_request`]; tokens must come back in order.
    pub async fn receive<R: Request>(&mut self, pending: Pending<R>) -> Result<R::Response> {
        if self.in_flight.front() != Some(&pending.correlation_id) {
            return Err(Error::InvalidArgument(format!(
                "responses from {} must be received in the order the requests were sent",
                self.addr
            )));
        }
        self.in_flight.pop_front();
        let mut frame = self
            .read_response_frame(
                R::KEY,
                pending.correlation_id,
                R::Response::header_version,
                pending.version,
            )
            .await?;
        let response = R::Response::decode(&mut frame, pending.version);
        response.map_err(|err| {
            self.protocol_error(format!(
                "{} v{}: {err:#}",
                api_name(R::KEY),
                pending.version
            ))
        })
    }

    async fn negotiate_versions(&mut self) -> Result<()> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("skald-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut version = API_VERSIONS_VERSION_MAX;
        loop {
            let correlation_id = self.write_request(&request, version).await?;
            let mut frame = self
                .read_response_frame(
                    ApiKey::ApiVersions as i16,
                    correlation_id,
                    ApiVersionsResponse::header_version,
                    version,
                )
                .await?;
            let error_code = frame.get(..2).map(|b| i16::from_be_bytes([b[0], b[1]]));
            if error_code == Some(UNSUPPORTED_VERSION) && version > 0 {
                // The broker answered in v0 and listed the ApiVersions versions it does speak.
                let retry = ApiVersionsResponse::decode(&mut frame, 0)
                    .ok()
                    .and_then(|response| {
                        let key = ApiKey::ApiVersions as i16;
                        response
                            .api_keys
                            .iter()
                            .find(|k| k.api_key == key)
                            .map(|k| k.max_version)
                    })
                    .map(|max| max.min(version - 1))
                    .unwrap_or(0);
                tracing::debug!(addr = %self.addr, version, retry, "ApiVersions unsupported, retrying");
                version = retry.max(0);
                continue;
            }
            let response = ApiVersionsResponse::decode(&mut frame, version)
                .map_err(|err| self.protocol_error(format!("ApiVersions v{version}: {err:#}")))?;
            crate::error::check(
                response.error_code,
                || format!("ApiVersions to {}", self.addr),
                None,
            )?;
            self.broker_versions = response
                .api_keys
                .iter()
                .map(|k| {
                    let range = VersionRange {
                        min: k.min_version,
                        max: k.max_version,
                    };
                    (k.api_key, range)
                })
                .collect();
            return Ok(());
        }
    }

    async fn write_request<R: Request>(&mut self, request: &R, version: i16) -> Result<i32> {
        self.check_usable()?;
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        self.write_buf.clear();
        encode_request(
            &mut self.write_buf,
            request,
            version,
            correlation_id,
            &self.client_id,
        )?;
        if let Err(source) = self.stream.write_all(&self.write_buf).await {
            self.broken = true;
            return Err(Error::Io {
                addr: self.addr.clone(),
                source,
            });
        }
        Ok(correlation_id)
    }

    async fn read_response_frame(
        &mut self,
        api_key: i16,
        correlation_id: i32,
        header_version: impl Fn(i16) -> i16,
        version: i16,
    ) -> Result<Bytes> {
        let timeout = self.config.request_timeout;
        let frame = match tokio::time::timeout(timeout, self.read_frame()).await {
            Ok(frame) => frame,
            Err(_) => {
                self.broken = true;
                return Err(Error::Timeout {
                    api: api_name(api_key),
                    addr: self.addr.clone(),
                    timeout,
                });
            }
        };
        let mut frame = frame.inspect_err(|_| self.broken = true)?;
        let header = ResponseHeader::decode(&mut frame, header_version(version))
            .map_err(|err| self.protocol_error(format!("response header: {err:#}")))?;
        if header.correlation_id != correlation_id {
            return Err(self.protocol_error(format!(
                "expected correlation id {correlation_id}, got {}",
                header.correlation_id
            )));
        }
        Ok(frame)
    }

    async fn read_frame(&mut self) -> Result<Bytes> {
        loop {
            match take_frame(&mut self.read_buf, self.config.response_max_bytes) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(err) => return Err(self.protocol_error(err.to_string())),
            }
            match self.stream.read_buf(&mut self.read_buf).await {
                Ok(0) => {
                    return Err(Error::Disconnected {
                        addr: self.addr.clone(),
                    })
                }
                Ok(_) => {}
                Err(source) => {
                    return Err(Error::Io {
                        addr: self.addr.clone(),
                        source,
                    })
                }
            }
        }
    }

    fn check_usable(&self) -> Result<()> {
        if self.broken {
            return Err(Error::Disconnected {
                addr: self.addr.clone(),
            });
        }
        Ok(())
    }

    fn protocol_error(&mut self, detail: String) -> Error {
        self.broken = true;
        Error::Protocol {
            addr: self.addr.clone(),
            detail,
        }
    }
}

/// Encodes one whole request frame (size prefix, header, body) onto `buf`.
pub fn encode_request<R: Request>(
    buf: &mut BytesMut,
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
) -> Result<()> {
    let start = buf.len();
    buf.put_i32(0);
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()));
    let encode_error = |err: anyhow::Error| Error::Encode {
        api: api_name(R::KEY),
        version,
        detail: format!("{err:#}"),
    };
    encode_request_header_into_buffer(buf, &header).map_err(encode_error)?;
    request.encode(buf, version).map_err(encode_error)?;
    patch_size_prefix(buf, start);
    Ok(())
}

/// The highest version of `api_key` in the intersection of the client's and the broker's ranges.
pub fn negotiate_version(api_key: i16, message: VersionRange, broker: VersionRange) -> Option<i16> {
    let both = client_versions(api_key, message).intersect(&broker);
    (!both.is_empty()).then_some(both.max)
}

fn client_versions(api_key: i16, message: VersionRange) -> VersionRange {
    let cap = CLIENT_VERSION_MAX
        .iter()
        .find(|(key, _)| *key as i16 == api_key)
        .map_or(message.max, |(_, max)| *max);
    VersionRange {
        min: message.min,
        max: message.max.min(cap),
    }
}

/// `Produce`, `Fetch`, ... for messages; the number for keys `kafka-protocol` does not know.
pub fn api_name(api_key: i16) -> String {
    match ApiKey::try_from(api_key) {
        Ok(key) => format!("{key:?}"),
        Err(()) => format!("API {api_key}"),
    }
}
