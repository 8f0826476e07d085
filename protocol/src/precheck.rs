//! A cheap structural walk over a request body that runs before kafka-protocol decodes it.
//!
//! kafka-protocol 0.18 decodes an array by reading its element count off the wire and calling
//! `Vec::with_capacity(count)` before it decodes a single element. A frame of a dozen bytes that
//! declares 50 million topics thus asks the allocator for gigabytes, and when the allocation fails
//! the process aborts: not a panic anyone can catch, an `abort()`. The bug is known upstream (fixes
//! are proposed, none released), and we neither vendor nor fork the crate.
//!
//! So [`check_body`] first walks the body the way the generated `Decodable` impls will, from a small
//! description of each request's wire layout, and refuses any length that cannot fit in what is left
//! of the frame: an array declaring more elements than bytes remain (every element takes at least a
//! byte), or a string, bytes or tagged field running past the end. The walk reads exactly the fields
//! the decoder reads, version by version, and is never stricter: UTF-8, nullability and trailing
//! bytes are left to the decoder, which checks them without large allocations. The request header
//! needs no walk: it has no arrays, only a string and tagged fields that kafka-protocol slices out
//! of the frame after a bounds check.
//!
//! Each layout states the versions it was transcribed for, and a body at any other version is
//! refused, so widening an API's range in either table of [`crate::api_versions`] forces a look at
//! its layout here.
//! Adding an API is adding one [`RequestLayout`] to [`REQUESTS`], read off kafka-protocol's
//! `src/messages/<name>_request.rs` `impl Decodable` blocks.

use kafka_protocol::messages::ApiKey;

/// Why a request body was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no wire layout is known for API {api_key:?} v{api_version}")]
    UnknownLayout { api_key: ApiKey, api_version: i16 },
    #[error("{field} needs {needed} bytes but only {remaining} remain")]
    PastEnd {
        field: &'static str,
        needed: usize,
        remaining: usize,
    },
    #[error("{field} declares {count} elements but only {remaining} bytes remain")]
    TooManyElements {
        field: &'static str,
        count: usize,
        remaining: usize,
    },
    #[error("{field} has negative length {length}")]
    NegativeLength { field: &'static str, length: i32 },
    #[error("tagged field {tag} ({field}) is not valid at this version")]
    MisplacedTag { tag: u32, field: &'static str },
}

/// Checks that `body` (the frame after the request header) can be decoded by kafka-protocol as
/// `api_key` at `api_version` without any allocation larger than the frame itself warrants.
///
/// Returns how many bytes of `body` the decoder will read; it ignores any that follow, as does this.
pub fn check_body(api_key: ApiKey, api_version: i16, body: &[u8]) -> Result<usize, Rejection> {
    let layout = REQUESTS
        .iter()
        .find(|layout| layout.api_key == api_key)
        .filter(|layout| (layout.min_version..=layout.max_version).contains(&api_version))
        .ok_or(Rejection::UnknownLayout {
            api_key,
            api_version,
        })?;
    let mut walker = Walker {
        rest: body,
        version: api_version,
        flexible: api_version >= layout.flexible_since,
    };
    walker.structure(layout.body)?;
    Ok(body.len() - walker.rest.len())
}

/// One API's request body, over the versions it was transcribed for.
pub struct RequestLayout {
    pub api_key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
    /// From this version on, lengths are compact varints and every struct ends in tagged fields.
    flexible_since: i16,
    body: &'static Layout,
}

/// A struct: its fields in wire order, then (in flexible versions) the tagged fields the decoder
/// knows by tag. Unknown tags are skipped by their declared size.
struct Layout {
    fields: &'static [Field],
    tagged: &'static [(u32, Field)],
}

#[derive(Clone, Copy)]
struct Field {
    name: &'static str,
    kind: Kind,
    since: i16,
    until: i16,
}

/// A wire type. Nullable and non-nullable forms share a kind: null is always accepted.
#[derive(Clone, Copy)]
enum Kind {
    Int8,
    Int16,
    Int32,
    Int64,
    Uuid,
    Bool,
    /// INT16 length (or compact varint length + 1), then UTF-8.
    String,
    /// INT32 length (or compact varint length + 1), then bytes; also `records`.
    Bytes,
    Struct(&'static Layout),
    /// INT8 presence (1: a struct follows, anything else: null), then the struct.
    NullableStruct(&'static Layout),
    /// INT32 count (or compact varint count + 1), then the elements.
    Array(&'static Kind),
}

const fn field(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        since: 0,
        until: i16::MAX,
    }
}

impl Field {
    const fn since(self, version: i16) -> Field {
        Field {
            since: version,
            ..self
        }
    }

    const fn until(self, version: i16) -> Field {
        Field {
            until: version,
            ..self
        }
    }

    fn present_in(&self, version: i16) -> bool {
        (self.since..=self.until).contains(&version)
    }
}

/// A cursor over the body that reads lengths exactly as kafka-protocol does and skips the rest.
struct Walker<'a> {
    rest: &'a [u8],
    version: i16,
    flexible: bool,
}

impl Walker<'_> {
    fn structure(&mut self, layout: &Layout) -> Result<(), Rejection> {
        for field in layout.fields {
            if field.present_in(self.version) {
                self.value(field.name, &field.kind)?;
            }
        }
        if self.flexible {
            self.tagged_fields(layout.tagged)?;
        }
        Ok(())
    }

    fn value(&mut self, name: &'static str, kind: &Kind) -> Result<(), Rejection> {
        match kind {
            Kind::String => self.blob(name, LegacyLength::Int16),
            Kind::Bytes => self.blob(name, LegacyLength::Int32),
            Kind::Struct(layout) => self.structure(layout),
            Kind::NullableStruct(layout) => match self.take::<1>(name)? {
                [1] => self.structure(layout),
                _ => Ok(()),
            },
            Kind::Array(element) => self.array(name, element),
            Kind::Int8 | Kind::Bool => self.skip(name, 1),
            Kind::Int16 => self.skip(name, 2),
            Kind::Int32 => self.skip(name, 4),
            Kind::Int64 => self.skip(name, 8),
            Kind::Uuid => self.skip(name, 16),
        }
    }

    fn blob(&mut self, name: &'static str, legacy: LegacyLength) -> Result<(), Rejection> {
        match self.length(name, legacy)? {
            Some(len) => self.skip(name, len),
            None => Ok(()),
        }
    }

    fn array(&mut self, name: &'static str, element: &Kind) -> Result<(), Rejection> {
        let Some(count) = self.length(name, LegacyLength::Int32)? else {
            return Ok(());
        };
        let remaining = self.rest.len();
        if count > remaining {
            return Err(Rejection::TooManyElements {
                field: name,
                count,
                remaining,
            });
        }
        (0..count).try_for_each(|_| self.value(name, element))
    }

    /// Tagged fields the decoder knows are read by their type, ignoring the declared size (as the
    /// generated code does), so the walk stays where the decoder will be.
    fn tagged_fields(&mut self, known: &[(u32, Field)]) -> Result<(), Rejection> {
        let count = self.unsigned_varint("tagged field count")?;
        for _ in 0..count {
            let tag = self.unsigned_varint("tag")?;
            let size = self.unsigned_varint("tagged field size")?;
            match known.iter().find(|(known_tag, _)| *known_tag == tag) {
                Some((_, field)) if field.present_in(self.version) => {
                    self.value(field.name, &field.kind)?
                }
                Some((_, field)) => {
                    return Err(Rejection::MisplacedTag {
                        tag,
                        field: field.name,
                    })
                }
                None => self.skip("tagged field", size as usize)?,
            }
        }
        Ok(())
    }

    /// A length or count: `None` for null. Flexible versions use an unsigned varint holding
    /// length + 1; older ones a signed big-endian integer where -1 is null.
    fn length(
        &mut self,
        name: &'static str,
        legacy: LegacyLength,
    ) -> Result<Option<usize>, Rejection> {
        if self.flexible {
            return Ok(self
                .unsigned_varint(name)?
                .checked_sub(1)
                .map(|n| n as usize));
        }
        let length = match legacy {
            LegacyLength::Int16 => i32::from(i16::from_be_bytes(self.take(name)?)),
            LegacyLength::Int32 => i32::from_be_bytes(self.take(name)?),
        };
        match length {
            -1 => Ok(None),
            length if length < 0 => Err(Rejection::NegativeLength {
                field: name,
                length,
            }),
            length => Ok(Some(length as usize)),
        }
    }

    /// kafka-protocol's reader exactly: at most five bytes, bits past the 32nd dropped.
    fn unsigned_varint(&mut self, name: &'static str) -> Result<u32, Rejection> {
        let mut value = 0u32;
        for i in 0..5 {
            let [byte] = self.take(name)?;
            value |= u32::from(byte & 0x7f) << (i * 7);
            if byte < 0x80 {
                break;
            }
        }
        Ok(value)
    }

    fn take<const N: usize>(&mut self, name: &'static str) -> Result<[u8; N], Rejection> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| self.past_end(name, N))?;
        self.rest = rest;
        Ok(*head)
    }

    fn skip(&mut self, name: &'static str, len: usize) -> Result<(), Rejection> {
        self.rest = self
            .rest
            .get(len..)
            .ok_or_else(|| self.past_end(name, len))?;
        Ok(())
    }

    fn past_end(&self, field: &'static str, needed: usize) -> Rejection {
        Rejection::PastEnd {
            field,
            needed,
            remaining: self.rest.len(),
        }
    }
}

#[derive(Clone, Copy)]
enum LegacyLength {
    Int16,
    Int32,
}

/// Every request body Skald decodes on either listener, transcribed from kafka-protocol 0.18's
/// generated decoders.
/// Struct names are kafka-protocol's; fields outside the transcribed version range are left out.
pub const REQUESTS: &[RequestLayout] = &[
    layouts::PRODUCE,
    layouts::FETCH,
    layouts::LIST_OFFSETS,
    layouts::METADATA,
    layouts::API_VERSIONS,
    layouts::CREATE_TOPICS,
    layouts::DELETE_TOPICS,
    layouts::DELETE_RECORDS,
    layouts::OFFSET_FOR_LEADER_EPOCH,
    layouts::WRITE_TXN_MARKERS,
    layouts::DESCRIBE_CONFIGS,
    layouts::ALTER_CONFIGS,
    layouts::ALTER_REPLICA_LOG_DIRS,
    layouts::DESCRIBE_LOG_DIRS,
    layouts::INCREMENTAL_ALTER_CONFIGS,
    layouts::ALTER_PARTITION_REASSIGNMENTS,
    layouts::LIST_PARTITION_REASSIGNMENTS,
    layouts::CREATE_PARTITIONS,
    layouts::OFFSET_COMMIT,
    layouts::OFFSET_FETCH,
    layouts::FIND_COORDINATOR,
    layouts::JOIN_GROUP,
    layouts::HEARTBEAT,
    layouts::LEAVE_GROUP,
    layouts::SYNC_GROUP,
    layouts::DESCRIBE_GROUPS,
    layouts::LIST_GROUPS,
    layouts::DELETE_GROUPS,
    layouts::ELECT_LEADERS,
    layouts::INIT_PRODUCER_ID,
    layouts::ADD_PARTITIONS_TO_TXN,
    layouts::ADD_OFFSETS_TO_TXN,
    layouts::END_TXN,
    layouts::TXN_OFFSET_COMMIT,
    layouts::OFFSET_DELETE,
    layouts::DESCRIBE_QUORUM,
    layouts::DESCRIBE_CLUSTER,
    layouts::DESCRIBE_PRODUCERS,
    layouts::UNREGISTER_BROKER,
    layouts::DESCRIBE_TRANSACTIONS,
    layouts::LIST_TRANSACTIONS,
    layouts::ALTER_PARTITION,
    layouts::BROKER_REGISTRATION,
    layouts::BROKER_HEARTBEAT,
    layouts::GET_TELEMETRY_SUBSCRIPTIONS,
    layouts::PUSH_TELEMETRY,
    layouts::DESCRIBE_TOPIC_PARTITIONS,
];

mod layouts {
    use super::Kind::{
        Array, Bool, Bytes, Int16, Int32, Int64, Int8, NullableStruct, String, Struct, Uuid,
    };
    use super::{field, Layout, RequestLayout};
    use kafka_protocol::messages::ApiKey;

    const fn fields(fields: &'static [super::Field]) -> Layout {
        Layout {
            fields,
            tagged: &[],
        }
    }

    pub(super) const PRODUCE: RequestLayout = RequestLayout {
        api_key: ApiKey::Produce,
        min_version: 3,
        max_version: 13,
        flexible_since: 9,
        body: &PRODUCE_REQUEST,
    };
    const PRODUCE_REQUEST: Layout = fields(&[
        field("transactional_id", String),
        field("acks", Int16),
        field("timeout_ms", Int32),
        field("topic_data", Array(&Struct(&TOPIC_PRODUCE_DATA))),
    ]);
    const TOPIC_PRODUCE_DATA: Layout = fields(&[
        field("name", String).until(12),
        field("topic_id", Uuid).since(13),
        field("partition_data", Array(&Struct(&PARTITION_PRODUCE_DATA))),
    ]);
    const PARTITION_PRODUCE_DATA: Layout =
        fields(&[field("index", Int32), field("records", Bytes)]);

    pub(super) const FETCH: RequestLayout = RequestLayout {
        api_key: ApiKey::Fetch,
        min_version: 4,
        max_version: 18,
        flexible_since: 12,
        body: &FETCH_REQUEST,
    };
    const FETCH_REQUEST: Layout = Layout {
        fields: &[
            field("replica_id", Int32).until(14),
            field("max_wait_ms", Int32),
            field("min_bytes", Int32),
            field("max_bytes", Int32),
            field("isolation_level", Int8),
            field("session_id", Int32).since(7),
            field("session_epoch", Int32).since(7),
            field("topics", Array(&Struct(&FETCH_TOPIC))),
            field("forgotten_topics_data", Array(&Struct(&FORGOTTEN_TOPIC))).since(7),
            field("rack_id", String).since(11),
        ],
        tagged: &[
            (0, field("cluster_id", String)),
            (1, field("replica_state", Struct(&REPLICA_STATE)).since(15)),
        ],
    };
    const REPLICA_STATE: Layout = fields(&[
        field("replica_id", Int32).since(15),
        field("replica_epoch", Int64).since(15),
    ]);
    const FETCH_TOPIC: Layout = fields(&[
        field("topic", String).until(12),
        field("topic_id", Uuid).since(13),
        field("partitions", Array(&Struct(&FETCH_PARTITION))),
    ]);
    const FETCH_PARTITION: Layout = Layout {
        fields: &[
            field("partition", Int32),
            field("current_leader_epoch", Int32).since(9),
            field("fetch_offset", Int64),
            field("last_fetched_epoch", Int32).since(12),
            field("log_start_offset", Int64).since(5),
            field("partition_max_bytes", Int32),
        ],
        tagged: &[
            (0, field("replica_directory_id", Uuid).since(17)),
            (1, field("high_watermark", Int64).since(18)),
        ],
    };
    const FORGOTTEN_TOPIC: Layout = fields(&[
        field("topic", String).until(12),
        field("topic_id", Uuid).since(13),
        field("partitions", Array(&Int32)),
    ]);

    pub(super) const LIST_OFFSETS: RequestLayout = RequestLayout {
        api_key: ApiKey::ListOffsets,
        min_version: 1,
        max_version: 10,
        flexible_since: 6,
        body: &LIST_OFFSETS_REQUEST,
    };
    const LIST_OFFSETS_REQUEST: Layout = fields(&[
        field("replica_id", Int32),
        field("isolation_level", Int8).since(2),
        field("topics", Array(&Struct(&LIST_OFFSETS_TOPIC))),
        field("timeout_ms", Int32).since(10),
    ]);
    const LIST_OFFSETS_TOPIC: Layout = fields(&[
        field("name", String),
        field("partitions", Array(&Struct(&LIST_OFFSETS_PARTITION))),
    ]);
    const LIST_OFFSETS_PARTITION: Layout = fields(&[
        field("partition_index", Int32),
        field("current_leader_epoch", Int32).since(4),
        field("timestamp", Int64),
    ]);

    pub(super) const METADATA: RequestLayout = RequestLayout {
        api_key: ApiKey::Metadata,
        min_version: 0,
        max_version: 13,
        flexible_since: 9,
        body: &METADATA_REQUEST,
    };
    const METADATA_REQUEST: Layout = fields(&[
        field("topics", Array(&Struct(&METADATA_REQUEST_TOPIC))),
        field("allow_auto_topic_creation", Bool).since(4),
        field("include_cluster_authorized_operations", Bool)
            .since(8)
            .until(10),
        field("include_topic_authorized_operations", Bool).since(8),
    ]);
    const METADATA_REQUEST_TOPIC: Layout =
        fields(&[field("topic_id", Uuid).since(10), field("name", String)]);

    pub(super) const API_VERSIONS: RequestLayout = RequestLayout {
        api_key: ApiKey::ApiVersions,
        min_version: 0,
        max_version: 4,
        flexible_since: 3,
        body: &API_VERSIONS_REQUEST,
    };
    const API_VERSIONS_REQUEST: Layout = fields(&[
        field("client_software_name", String).since(3),
        field("client_software_version", String).since(3),
    ]);

    pub(super) const CREATE_TOPICS: RequestLayout = RequestLayout {
        api_key: ApiKey::CreateTopics,
        min_version: 2,
        max_version: 7,
        flexible_since: 5,
        body: &CREATE_TOPICS_REQUEST,
    };
    const CREATE_TOPICS_REQUEST: Layout = fields(&[
        field("topics", Array(&Struct(&CREATABLE_TOPIC))),
        field("timeout_ms", Int32),
        field("validate_only", Bool),
    ]);
    const CREATABLE_TOPIC: Layout = fields(&[
        field("name", String),
        field("num_partitions", Int32),
        field("replication_factor", Int16),
        field("assignments", Array(&Struct(&CREATABLE_REPLICA_ASSIGNMENT))),
        field("configs", Array(&Struct(&CREATABLE_TOPIC_CONFIG))),
    ]);
    const CREATABLE_REPLICA_ASSIGNMENT: Layout = fields(&[
        field("partition_index", Int32),
        field("broker_ids", Array(&Int32)),
    ]);
    const CREATABLE_TOPIC_CONFIG: Layout = fields(&[field("name", String), field("value", String)]);

    pub(super) const DELETE_TOPICS: RequestLayout = RequestLayout {
        api_key: ApiKey::DeleteTopics,
        min_version: 1,
        max_version: 6,
        flexible_since: 4,
        body: &DELETE_TOPICS_REQUEST,
    };
    const DELETE_TOPICS_REQUEST: Layout = fields(&[
        field("topics", Array(&Struct(&DELETE_TOPIC_STATE))).since(6),
        field("topic_names", Array(&String)).until(5),
        field("timeout_ms", Int32),
    ]);
    const DELETE_TOPIC_STATE: Layout = fields(&[field("name", String), field("topic_id", Uuid)]);

    pub(super) const DELETE_RECORDS: RequestLayout = RequestLayout {
        api_key: ApiKey::DeleteRecords,
        min_version: 0,
        max_version: 2,
        flexible_since: 2,
        body: &DELETE_RECORDS_REQUEST,
    };
    const DELETE_RECORDS_REQUEST: Layout = fields(&[
        field("topics", Array(&Struct(&DELETE_RECORDS_TOPIC))),
        field("timeout_ms", Int32),
    ]);
    const DELETE_RECORDS_TOPIC: Layout = fields(&[
        field("name", String),
        field("partitions", Array(&Struct(&DELETE_RECORDS_PARTITION))),
    ]);
    const DELETE_RECORDS_PARTITION: Layout =
        fields(&[field("partition_index", Int32), field("offset", Int64)]);

    pub(super) const OFFSET_FOR_LEADER_EPOCH: RequestLayout = RequestLayout {
        api_key: ApiKey::OffsetForLeaderEpoch,
        min_version: 2,
        max_version: 4,
        flexible_since: 4,
        body: &OFFSET_FOR_LEADER_EPOCH_REQUEST,
    };
    const OFFSET_FOR_LEADER_EPOCH_REQUEST: Layout = fields(&[
        field("replica_id", Int32).since(3),
        field("topics", Array(&Struct(&OFFSET_FOR_LEADER_TOPIC))),
    ]);
    const OFFSET_FOR_LEADER_TOPIC: Layout = fields(&[
        field("topic", String),
        field("partitions", Array(&Struct(&OFFSET_FOR_LEADER_PARTITION))),
    ]);
    const OFFSET_FOR_LEADER_PARTITION: Layout = fields(&[
        field("partition", Int32),
        field("current_leader_epoch", Int32),
        field("leader_epoch", Int32),
    ]);

    pub(super) const DESCRIBE_CONFIGS: RequestLayout = RequestLayout {
        api_key: ApiKey::DescribeConfigs,
        min_version: 1,
        max_version: 4,
        flexible_since: 4,
        body: &DESCRIBE_CONFIGS_REQUEST,
    };
    const DESCRIBE_CONFIGS_REQUEST: Layout = fields(&[
        field("resources", Array(&Struct(&DESCRIBE_CONFIGS_RESOURCE))),
        field("include_synonyms", Bool),
        field("include_documentation", Bool).since(3),
    ]);
    const DESCRIBE_CONFIGS_RESOURCE: Layout = fields(&[
        field("resource_type", Int8),
        field("resource_name", String),
        field("configuration_keys", Array(&String)),
    ]);

    pub(super) const ALTER_CONFIGS: RequestLayout = RequestLayout {
        api_key: ApiKey::AlterConfigs,
        min_version: 0,
        max_version: 2,
        flexible_since: 2,
        body: &ALTER_CONFIGS_REQUEST,
    };
    const ALTER_CONFIGS_REQUEST: Layout = fields(&[
        field("resources", Array(&Struct(&ALTER_CONFIGS_RESOURCE))),
        field("validate_only", Bool),
    ]);
    const ALTER_CONFIGS_RESOURCE: Layout = fields(&[
        field("resource_type", Int8),
        field("resource_name", String),
        field("configs", Array(&Struct(&ALTERABLE_CONFIG))),
    ]);
    const ALTERABLE_CONFIG: Layout = fields(&[field("name", String), field("value", String)]);

    pub(super) const INCREMENTAL_ALTER_CONFIGS: RequestLayout = RequestLayout {
        api_key: ApiKey::IncrementalAlterConfigs,
        min_version: 0,
        max_version: 1,
        flexible_since: 1,
        body: &INCREMENTAL_ALTER_CONFIGS_REQUEST,
    };
    const INCREMENTAL_ALTER_CONFIGS_REQUEST: Layout = fields(&[
        field(
            "resources",
            Array(&Struct(&INCREMENTAL_ALTER_CONFIGS_RESOURCE)),
        ),
        field("validate_only", Bool),
    ]);
    const INCREMENTAL_ALTER_CONFIGS_RESOURCE: Layout = fields(&[
        field("resource_type", Int8),
        field("resource_name", String),
        field("configs", Array(&Struct(&INCREMENTAL_ALTERABLE_CONFIG))),
    ]);
    const INCREMENTAL_ALTERABLE_CONFIG: Layout = fields(&[
        field("name", String),
        field("config_operation", Int8),
        field("value", String),
    ]);

    pub(super) const ALTER_PARTITION_REASSIGNMENTS: RequestLayout = RequestLayout {
        api_key: ApiKey::AlterPartitionReassignments,
        min_version: 0,
        max_version: 1,
        flexible_since: 0,
        body: &ALTER_PARTITION_REASSIGNMENTS_REQUEST,
    };
    const ALTER_PARTITION_REASSIGNMENTS_REQUEST: Layout = fields(&[
        field("timeout_ms", Int32),
        field("allow_replication_factor_change", Bool).since(1),
        field("topics", Array(&Struct(&REASSIGNABLE_TOPIC))),
    ]);
    const REASSIGNABLE_TOPIC: Layout = fields(&[
        field("name", String),
        field("partitions", Array(&Struct(&REASSIGNABLE_PARTITION))),
    ]);
    const REASSIGNABLE_PARTITION: Layout = fields(&[
        field("partition_index", Int32),
        field("replicas", Array(&Int32)),
    ]);

    pub(super) const LIST_PARTITION_REASSIGNMENTS: RequestLayout = RequestLayout {
        api_key: ApiKey::ListPartitionReassignments,
        min_version: 0,
        max_version: 0,
        flexible_since: 0,
        body: &LIST_PARTITION_REASSIGNMENTS_REQUEST,
    };
    const LIST_PARTITION_REASSIGNMENTS_REQUEST: Layout = fields(&[
        field("timeout_ms", Int32),
        field(
            "topics",
            Array(&Struct(&LIST_PARTITION_REASSIGNMENTS_TOPICS)),
        ),
    ]);
    const LIST_PARTITION_REASSIGNMENTS_TOPICS: Layout = fields(&[
        field("name", String),
        field("partition_indexes", Array(&Int32)),
    ]);

    pub(super) const CREATE_PARTITIONS: RequestLayout = RequestLayout {
        api_key: ApiKey::CreatePartitions,
        min_version: 0,
        max_version: 3,
        flexible_since: 2,
        body: &CREATE_PARTITIONS_REQUEST,
    };
    const CREATE_PARTITIONS_REQUEST: Layout = fields(&[
        field("topics", Array(&Struct(&CREATE_PARTITIONS_TOPIC))),
        field("timeout_ms", Int32),
        field("validate_only", Bool),
    ]);
    const CREATE_PARTITIONS_TOPIC: Layout = fields(&[
        field("name", String),
        field("count", Int32),
        field("assignments", Array(&Struct(&CREATE_PARTITIONS_ASSIGNMENT))),
    ]);
    const CREATE_PARTITIONS_ASSIGNMENT: Layout = fields(&[field("broker_ids", Array(&Int32))]);

    pub(super) const OFFSET_COMMIT: RequestLayout = RequestLayout {
        api_key: ApiKey::OffsetCommit,
        min_version: 1,
        max_version: 9,
        flexible_since: 8,
        body: &OFFSET_COMMIT_REQUEST,
    };
    const OFFSET_COMMIT_REQUEST: Layout = fields(&[
        field("group_id", String),
        field("generation_id_or_member_epoch", Int32),
        field("member_id", String),
        field("group_instance_id", String).since(7),
        field("retention_time_ms", Int64).since(2).until(4),
        field("topics", Array(&Struct(&OFFSET_COMMIT_REQUEST_TOPIC))),
    ]);
    const OFFSET_COMMIT_REQUEST_TOPIC: Layout = fields(&[
        field("name", String),
        field(
            "partitions",
            Array(&Struct(&OFFSET_COMMIT_REQUEST_PARTITION)),
        ),
    ]);
    const OFFSET_COMMIT_REQUEST_PARTITION: Layout = fields(&[
        field("partition_index", Int32),
        field("committed_offset", Int64),
        field("committed_leader_epoch", Int32).since(6),
        // v1 only (see crate::legacy), which kafka-protocol no longer decodes.
        field("commit_timestamp", Int64).until(1),
        field("committed_metadata", String),
    ]);

    pub(super) const OFFSET_FETCH: RequestLayout = RequestLayout {
        api_key: ApiKey::OffsetFetch,
        min_version: 1,
        max_version: 9,
        flexible_since: 6,
        body: &OFFSET_FETCH_REQUEST,
    };
    const OFFSET_FETCH_REQUEST: Layout = fields(&[
        field("group_id", String).until(7),
        field("topics", Array(&Struct(&OFFSET_FETCH_REQUEST_TOPIC))).until(7),
        field("groups", Array(&Struct(&OFFSET_FETCH_REQUEST_GROUP))).since(8),
        field("require_stable", Bool).since(7),
    ]);
    const OFFSET_FETCH_REQUEST_TOPIC: Layout = fields(&[
        field("name", String),
        field("partition_indexes", Array(&Int32)),
    ]);
    const OFFSET_FETCH_REQUEST_GROUP: Layout = fields(&[
        field("group_id", String),
        field("member_id", String).since(9),
        field("member_epoch", Int32).since(9),
        field("topics", Array(&Struct(&OFFSET_FETCH_REQUEST_TOPIC))),
    ]);

    pub(super) const FIND_COORDINATOR: RequestLayout = RequestLayout {
        api_key: ApiKey::FindCoordinator,
        min_version: 0,
        max_version: 6,
        flexible_since: 3,
        body: &FIND_COORDINATOR_REQUEST,
    };
    const FIND_COORDINATOR_REQUEST: Layout = fields(&[
        field("key", String).until(3),
        field("key_type", Int8).since(1),
        field("coordinator_keys", Array(&String)).since(4),
    ]);

    pub(super) const JOIN_GROUP: RequestLayout = RequestLayout {
        api_key: ApiKey::JoinGroup,
        min_version: 0,
        max_version: 9,
        flexible_since: 6,
        body: &JOIN_GROUP_REQUEST,
    };
    const JOIN_GROUP_REQUEST: Layout = fields(&[
        field("group_id", String),
        field("session_timeout_ms", Int32),
        field("rebalance_timeout_ms", Int32).since(1),
        field("member_id", String),
        field("group_instance_id", String).since(5),
        field("protocol_type", String),
        field("protocols", Array(&Struct(&JOIN_GROUP_REQUEST_PROTOCOL))),
        field("reason", String).since(8),
    ]);
    const JOIN_GROUP_REQUEST_PROTOCOL: Layout =
        fields(&[field("name", String), field("metadata", Bytes)]);

    pub(super) const HEARTBEAT: RequestLayout = RequestLayout {
        api_key: ApiKey::Heartbeat,
        min_version: 0,
        max_version: 4,
        flexible_since: 4,
        body: &HEARTBEAT_REQUEST,
    };
    const HEARTBEAT_REQUEST: Layout = fields(&[
        field("group_id", String),
        field("generation_id", Int32),
        field("member_id", String),
        field("group_instance_id", String).since(3),
    ]);

    pub(super) const LEAVE_GROUP: RequestLayout = RequestLayout {
        api_key: ApiKey::LeaveGroup,
        min_version: 0,
        max_version: 5,
        flexible_since: 4,
        body: &LEAVE_GROUP_REQUEST,
    };
    const LEAVE_GROUP_REQUEST: Layout = fields(&[
        field("group_id", String),
        field("member_id", String).until(2),
        field("members", Array(&Struct(&MEMBER_IDENTITY))).since(3),
    ]);
    const MEMBER_IDENTITY: Layout = fields(&[
        field("member_id", String),
        field("group_instance_id", String),
        field("reason", String).since(5),
    ]);

    pub(super) const SYNC_GROUP: RequestLayout = RequestLayout {
        api_key: ApiKey::SyncGroup,
        min_version: 0,
        max_version: 5,
        flexible_since: 4,
        body: &SYNC_GROUP_REQUEST,
    };
    const SYNC_GROUP_REQUEST: Layout = fields(&[
        field("group_id", String),
        field("generation_id", Int32),
        field("member_id", String),
        field("group_instance_id", String).since(3),
        field("protocol_type", String).since(5),
        field("protocol_name", String).since(5),
        field(
            "assignments",
            Array(&Struct(&SYNC_GROUP_REQUEST_ASSIGNMENT)),
        ),
    ]);
    const SYNC_GROUP_REQUEST_ASSIGNMENT: Layout =
        fields(&[field("member_id", String), field("assignment", Bytes)]);

    pub(super) const DESCRIBE_GROUPS: RequestLayout = RequestLayout {
        api_key: ApiKey::DescribeGroups,
        min_version: 0,
        max_version: 6,
        flexible_since: 5,
        body: &DESCRIBE_GROUPS_REQUEST,
    };
    const DESCRIBE_GROUPS_REQUEST: Layout = fields(&[
        field("groups", Array(&String)),
        field("include_authorized_operations", Bool).since(3),
    ]);

    pub(super) const LIST_GROUPS: RequestLayout = RequestLayout {
        api_key: ApiKey::ListGroups,
        min_version: 0,
        max_version: 5,
        flexible_since: 3,
        body: &LIST_GROUPS_REQUEST,
    };
    const LIST_GROUPS_REQUEST: Layout = fields(&[
        field("states_filter", Array(&String)).since(4),
        field("types_filter", Array(&String)).since(5),
    ]);

    pub(super) const DELETE_GROUPS: RequestLayout = RequestLayout {
        api_key: ApiKey::DeleteGroups,
        min_version: 0,
        max_version: 2,
        flexible_since: 2,
        body: &DELETE_GROUPS_REQUEST,
    };
    const DELETE_GROUPS_REQUEST: Layout = fields(&[field("groups_names", Array(&String))]);

    pub(super) const INIT_PRODUCER_ID: RequestLayout = RequestLayout {
        api_key: ApiKey::InitProducerId,
        min_version: 0,
        max_version: 5,
        flexible_since: 2,
        body: &INIT_PRODUCER_ID_REQUEST,
    };
    // No arrays: only the transactional id and the tagged fields carry a length.
    const INIT_PRODUCER_ID_REQUEST: Layout = fields(&[
        field("transactional_id", String),
        field("transaction_timeout_ms", Int32),
        field("producer_id", Int64).since(3),
        field("producer_epoch", Int16).since(3),
    ]);

    pub(super) const ADD_PARTITIONS_TO_TXN: RequestLayout = RequestLayout {
        api_key: ApiKey::AddPartitionsToTxn,
        min_version: 0,
        max_version: 5,
        flexible_since: 3,
        body: &ADD_PARTITIONS_TO_TXN_REQUEST,
    };
    const ADD_PARTITIONS_TO_TXN_REQUEST: Layout = fields(&[
        field(
            "transactions",
            Array(&Struct(&ADD_PARTITIONS_TO_TXN_TRANSACTION)),
        )
        .since(4),
        field("v3_and_below_transactional_id", String).until(3),
        field("v3_and_below_producer_id", Int64).until(3),
        field("v3_and_below_producer_epoch", Int16).until(3),
        field(
            "v3_and_below_topics",
            Array(&Struct(&ADD_PARTITIONS_TO_TXN_TOPIC)),
        )
        .until(3),
    ]);
    const ADD_PARTITIONS_TO_TXN_TRANSACTION: Layout = fields(&[
        field("transactional_id", String),
        field("producer_id", Int64),
        field("producer_epoch", Int16),
        field("verify_only", Bool),
        field("topics", Array(&Struct(&ADD_PARTITIONS_TO_TXN_TOPIC))),
    ]);
    const ADD_PARTITIONS_TO_TXN_TOPIC: Layout =
        fields(&[field("name", String), field("partitions", Array(&Int32))]);

    pub(super) const ADD_OFFSETS_TO_TXN: RequestLayout = RequestLayout {
        api_key: ApiKey::AddOffsetsToTxn,
        min_version: 0,
        max_version: 4,
        flexible_since: 3,
        body: &ADD_OFFSETS_TO_TXN_REQUEST,
    };
    const ADD_OFFSETS_TO_TXN_REQUEST: Layout = fields(&[
        field("transactional_id", String),
        field("producer_id", Int64),
        field("producer_epoch", Int16),
        field("group_id", String),
    ]);

    pub(super) const END_TXN: RequestLayout = RequestLayout {
        api_key: ApiKey::EndTxn,
        min_version: 0,
        max_version: 5,
        flexible_since: 3,
        body: &END_TXN_REQUEST,
    };
    const END_TXN_REQUEST: Layout = fields(&[
        field("transactional_id", String),
        field("producer_id", Int64),
        field("producer_epoch", Int16),
        field("committed", Bool),
    ]);

    pub(super) const TXN_OFFSET_COMMIT: RequestLayout = RequestLayout {
        api_key: ApiKey::TxnOffsetCommit,
        min_version: 0,
        max_version: 5,
        flexible_since: 3,
        body: &TXN_OFFSET_COMMIT_REQUEST,
    };
    const TXN_OFFSET_COMMIT_REQUEST: Layout = fields(&[
        field("transactional_id", String),
        field("group_id", String),
        field("producer_id", Int64),
        field("producer_epoch", Int16),
        field("generation_id", Int32).since(3),
        field("member_id", String).since(3),
        field("group_instance_id", String).since(3),
        field("topics", Array(&Struct(&TXN_OFFSET_COMMIT_REQUEST_TOPIC))),
    ]);
    const TXN_OFFSET_COMMIT_REQUEST_TOPIC: Layout = fields(&[
        field("name", String),
        field(
            "partitions",
            Array(&Struct(&TXN_OFFSET_COMMIT_REQUEST_PARTITION)),
        ),
    ]);
    const TXN_OFFSET_COMMIT_REQUEST_PARTITION: Layout = fields(&[
        field("partition_index", Int32),
        field("committed_offset", Int64),
        field("committed_leader_epoch", Int32).since(2),
        field("committed_metadata", String),
    ]);

    pub(super) const WRITE_TXN_MARKERS: RequestLayout = RequestLayout {
        api_key: ApiKey::WriteTxnMarkers,
        min_version: 1,
        max_version: 1,
        flexible_since: 1,
        body: &WRITE_TXN_MARKERS_REQUEST,
    };
    const WRITE_TXN_MARKERS_REQUEST: Layout =
        fields(&[field("markers", Array(&Struct(&WRITABLE_TXN_MARKER)))]);
    const WRITABLE_TXN_MARKER: Layout = fields(&[
        field("producer_id", Int64),
        field("producer_epoch", Int16),
        field("transaction_result", Bool),
        field("topics", Array(&Struct(&WRITABLE_TXN_MARKER_TOPIC))),
        field("coordinator_epoch", Int32),
    ]);
    const WRITABLE_TXN_MARKER_TOPIC: Layout = fields(&[
        field("name", String),
        field("partition_indexes", Array(&Int32)),
    ]);

    pub(super) const OFFSET_DELETE: RequestLayout = RequestLayout {
        api_key: ApiKey::OffsetDelete,
        min_version: 0,
        max_version: 0,
        flexible_since: i16::MAX,
        body: &OFFSET_DELETE_REQUEST,
    };
    const OFFSET_DELETE_REQUEST: Layout = fields(&[
        field("group_id", String),
        field("topics", Array(&Struct(&OFFSET_DELETE_REQUEST_TOPIC))),
    ]);
    const OFFSET_DELETE_REQUEST_TOPIC: Layout = fields(&[
        field("name", String),
        field(
            "partitions",
            Array(&Struct(&OFFSET_DELETE_REQUEST_PARTITION)),
        ),
    ]);
    const OFFSET_DELETE_REQUEST_PARTITION: Layout = fields(&[field("partition_index", Int32)]);

    pub(super) const DESCRIBE_QUORUM: RequestLayout = RequestLayout {
        api_key: ApiKey::DescribeQuorum,
        min_version: 0,
        max_version: 2,
        flexible_since: 0,
        body: &DESCRIBE_QUORUM_REQUEST,
    };
    const DESCRIBE_QUORUM_REQUEST: Layout =
        fields(&[field("topics", Array(&Struct(&DESCRIBE_QUORUM_TOPIC_DATA)))]);
    const DESCRIBE_QUORUM_TOPIC_DATA: Layout = fields(&[
        field("topic_name", String),
        field(
            "partitions",
            Array(&Struct(&DESCRIBE_QUORUM_PARTITION_DATA)),
        ),
    ]);
    const DESCRIBE_QUORUM_PARTITION_DATA: Layout = fields(&[field("partition_index", Int32)]);

    pub(super) const ELECT_LEADERS: RequestLayout = RequestLayout {
        api_key: ApiKey::ElectLeaders,
        min_version: 0,
        max_version: 2,
        flexible_since: 2,
        body: &ELECT_LEADERS_REQUEST,
    };
    const ELECT_LEADERS_REQUEST: Layout = fields(&[
        field("election_type", Int8).since(1),
        field("topic_partitions", Array(&Struct(&TOPIC_PARTITIONS))),
        field("timeout_ms", Int32),
    ]);
    const TOPIC_PARTITIONS: Layout =
        fields(&[field("topic", String), field("partitions", Array(&Int32))]);

    pub(super) const DESCRIBE_PRODUCERS: RequestLayout = RequestLayout {
        api_key: ApiKey::DescribeProducers,
        min_version: 0,
        max_version: 0,
        flexible_since: 0,
        body: &DESCRIBE_PRODUCERS_REQUEST,
    };
    const DESCRIBE_PRODUCERS_REQUEST: Layout =
        fields(&[field("topics", Array(&Struct(&TOPIC_REQUEST)))]);
    const TOPIC_REQUEST: Layout = fields(&[
        field("name", String),
        field("partition_indexes", Array(&Int32)),
    ]);

    pub(super) const UNREGISTER_BROKER: RequestLayout = RequestLayout {
        api_key: ApiKey::UnregisterBroker,
        min_version: 0,
        max_version: 0,
        flexible_since: 0,
        body: &UNREGISTER_BROKER_REQUEST,
    };
    // No arrays: only the tagged fields carry a length.
    const UNREGISTER_BROKER_REQUEST: Layout = fields(&[field("broker_id", Int32)]);

    pub(super) const DESCRIBE_TRANSACTIONS: RequestLayout = RequestLayout {
        api_key: ApiKey::DescribeTransactions,
        min_version: 0,
        max_version: 0,
        flexible_since: 0,
        body: &DESCRIBE_TRANSACTIONS_REQUEST,
    };
    const DESCRIBE_TRANSACTIONS_REQUEST: Layout =
        fields(&[field("transactional_ids", Array(&String))]);

    pub(super) const LIST_TRANSACTIONS: RequestLayout = RequestLayout {
        api_key: ApiKey::ListTransactions,
        min_version: 0,
        max_version: 2,
        flexible_since: 0,
        body: &LIST_TRANSACTIONS_REQUEST,
    };
    const LIST_TRANSACTIONS_REQUEST: Layout = fields(&[
        field("state_filters", Array(&String)),
        field("producer_id_filters", Array(&Int64)),
        field("duration_filter", Int64).since(1),
        field("transactional_id_pattern", String).since(2),
    ]);

    pub(super) const DESCRIBE_CLUSTER: RequestLayout = RequestLayout {
        api_key: ApiKey::DescribeCluster,
        min_version: 0,
        max_version: 2,
        flexible_since: 0,
        body: &DESCRIBE_CLUSTER_REQUEST,
    };
    // No arrays: only the tagged fields carry a length.
    const DESCRIBE_CLUSTER_REQUEST: Layout = fields(&[
        field("include_cluster_authorized_operations", Bool),
        field("endpoint_type", Int8).since(1),
        field("include_fenced_brokers", Bool).since(2),
    ]);

    pub(super) const ALTER_REPLICA_LOG_DIRS: RequestLayout = RequestLayout {
        api_key: ApiKey::AlterReplicaLogDirs,
        min_version: 1,
        max_version: 2,
        flexible_since: 2,
        body: &ALTER_REPLICA_LOG_DIRS_REQUEST,
    };
    const ALTER_REPLICA_LOG_DIRS_REQUEST: Layout =
        fields(&[field("dirs", Array(&Struct(&ALTER_REPLICA_LOG_DIR)))]);
    const ALTER_REPLICA_LOG_DIR: Layout = fields(&[
        field("path", String),
        field("topics", Array(&Struct(&ALTER_REPLICA_LOG_DIR_TOPIC))),
    ]);
    const ALTER_REPLICA_LOG_DIR_TOPIC: Layout =
        fields(&[field("name", String), field("partitions", Array(&Int32))]);

    pub(super) const DESCRIBE_LOG_DIRS: RequestLayout = RequestLayout {
        api_key: ApiKey::DescribeLogDirs,
        min_version: 1,
        max_version: 4,
        flexible_since: 2,
        body: &DESCRIBE_LOG_DIRS_REQUEST,
    };
    const DESCRIBE_LOG_DIRS_REQUEST: Layout = fields(&[field(
        "topics",
        Array(&Struct(&DESCRIBE_LOG_DIRS_REQUEST_TOPIC)),
    )]);
    const DESCRIBE_LOG_DIRS_REQUEST_TOPIC: Layout =
        fields(&[field("topic", String), field("partitions", Array(&Int32))]);

    pub(super) const ALTER_PARTITION: RequestLayout = RequestLayout {
        api_key: ApiKey::AlterPartition,
        min_version: 2,
        max_version: 3,
        flexible_since: 0,
        body: &ALTER_PARTITION_REQUEST,
    };
    const ALTER_PARTITION_REQUEST: Layout = fields(&[
        field("broker_id", Int32),
        field("broker_epoch", Int64),
        field("topics", Array(&Struct(&ALTER_PARTITION_TOPIC_DATA))),
    ]);
    const ALTER_PARTITION_TOPIC_DATA: Layout = fields(&[
        field("topic_id", Uuid),
        field(
            "partitions",
            Array(&Struct(&ALTER_PARTITION_PARTITION_DATA)),
        ),
    ]);
    const ALTER_PARTITION_PARTITION_DATA: Layout = fields(&[
        field("partition_index", Int32),
        field("leader_epoch", Int32),
        field("new_isr", Array(&Int32)).until(2),
        field("new_isr_with_epochs", Array(&Struct(&BROKER_STATE))).since(3),
        field("leader_recovery_state", Int8),
        field("partition_epoch", Int32),
    ]);
    const BROKER_STATE: Layout = fields(&[field("broker_id", Int32), field("broker_epoch", Int64)]);

    pub(super) const BROKER_REGISTRATION: RequestLayout = RequestLayout {
        api_key: ApiKey::BrokerRegistration,
        min_version: 0,
        max_version: 4,
        flexible_since: 0,
        body: &BROKER_REGISTRATION_REQUEST,
    };
    const BROKER_REGISTRATION_REQUEST: Layout = fields(&[
        field("broker_id", Int32),
        field("cluster_id", String),
        field("incarnation_id", Uuid),
        field("listeners", Array(&Struct(&LISTENER))),
        field("features", Array(&Struct(&FEATURE))),
        field("rack", String),
        field("is_migrating_zk_broker", Bool).since(1),
        field("log_dirs", Array(&Uuid)).since(2),
        field("previous_broker_epoch", Int64).since(3),
    ]);
    // `port` is an unsigned 16-bit integer; only its width matters here.
    const LISTENER: Layout = fields(&[
        field("name", String),
        field("host", String),
        field("port", Int16),
        field("security_protocol", Int16),
    ]);
    const FEATURE: Layout = fields(&[
        field("name", String),
        field("min_supported_version", Int16),
        field("max_supported_version", Int16),
    ]);

    pub(super) const BROKER_HEARTBEAT: RequestLayout = RequestLayout {
        api_key: ApiKey::BrokerHeartbeat,
        min_version: 0,
        max_version: 1,
        flexible_since: 0,
        body: &BROKER_HEARTBEAT_REQUEST,
    };
    const BROKER_HEARTBEAT_REQUEST: Layout = Layout {
        fields: &[
            field("broker_id", Int32),
            field("broker_epoch", Int64),
            field("current_metadata_offset", Int64),
            field("want_fence", Bool),
            field("want_shut_down", Bool),
        ],
        tagged: &[(0, field("offline_log_dirs", Array(&Uuid)).since(1))],
    };

    pub(super) const GET_TELEMETRY_SUBSCRIPTIONS: RequestLayout = RequestLayout {
        api_key: ApiKey::GetTelemetrySubscriptions,
        min_version: 0,
        max_version: 0,
        flexible_since: 0,
        body: &GET_TELEMETRY_SUBSCRIPTIONS_REQUEST,
    };
    const GET_TELEMETRY_SUBSCRIPTIONS_REQUEST: Layout =
        fields(&[field("client_instance_id", Uuid)]);

    pub(super) const PUSH_TELEMETRY: RequestLayout = RequestLayout {
        api_key: ApiKey::PushTelemetry,
        min_version: 0,
        max_version: 0,
        flexible_since: 0,
        body: &PUSH_TELEMETRY_REQUEST,
    };
    const PUSH_TELEMETRY_REQUEST: Layout = fields(&[
        field("client_instance_id", Uuid),
        field("subscription_id", Int32),
        field("terminating", Bool),
        field("compression_type", Int8),
        field("metrics", Bytes),
    ]);

    pub(super) const DESCRIBE_TOPIC_PARTITIONS: RequestLayout = RequestLayout {
        api_key: ApiKey::DescribeTopicPartitions,
        min_version: 0,
        max_version: 0,
        flexible_since: 0,
        body: &DESCRIBE_TOPIC_PARTITIONS_REQUEST,
    };
    const DESCRIBE_TOPIC_PARTITIONS_REQUEST: Layout = fields(&[
        field("topics", Array(&Struct(&DESCRIBED_TOPIC_REQUEST))),
        field("response_partition_limit", Int32),
        field("cursor", NullableStruct(&CURSOR)),
    ]);
    const DESCRIBED_TOPIC_REQUEST: Layout = fields(&[field("name", String)]);
    const CURSOR: Layout = fields(&[field("topic_name", String), field("partition_index", Int32)]);
}

#[cfg(test)]
mod tests;
