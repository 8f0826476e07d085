//! Request versions Kafka 3.9 still served that kafka-protocol 0.18 no longer decodes, served by
//! rewriting the body into the nearest version it does.
//!
//! One such version matters to clients still in use: OffsetCommit v1, which Sarama up to 1.x
//! sends for every commit unless `Consumer.Offsets.Retention` is set (Sarama 1.22 is Debian's,
//! and Burrow 1.2 is built on it); refused, such a consumer group never commits. v1 differs from
//! v2 only in where an offset's lifetime is given: a `commit_timestamp` per partition (v1)
//! against one `retention_time_ms` for the request (v2). Kafka since 2.1 keeps committed offsets
//! by the group's own expiry (KIP-211) and uses neither for a group with members; Skald keeps
//! offsets as for v2 with the broker's retention, and the commit time is the broker's clock. The
//! responses of v1 and v2 are the same bytes (the throttle time came with v3), so the v2 encoder
//! answers v1.

use kafka_protocol::messages::ApiKey;

use crate::precheck::Rejection;

/// The version whose kafka-protocol decoder and encoder serve `version` of `api_key`: itself,
/// except for the legacy versions this module rewrites.
pub fn codec_version(api_key: ApiKey, version: i16) -> i16 {
    match (api_key, version) {
        (ApiKey::OffsetCommit, 1) => 2,
        _ => version,
    }
}

/// The body of a legacy request rewritten as its [`codec_version`], or `None` when `version` of
/// `api_key` needs no rewriting. The body must have passed [`crate::precheck::check_body`] at its
/// own version (every length it declares fits in it).
pub fn rewrite_body(
    api_key: ApiKey,
    version: i16,
    body: &[u8],
) -> Option<Result<Vec<u8>, Rejection>> {
    match (api_key, version) {
        (ApiKey::OffsetCommit, 1) => Some(offset_commit_v1_as_v2(body)),
        _ => None,
    }
}

/// Kafka's "use the broker's offsets.retention.minutes" (`DEFAULT_RETENTION_TIME`).
const DEFAULT_RETENTION_TIME_MS: i64 = -1;

/// OffsetCommit v1 → v2: `retention_time_ms` -1 after the member id, each partition's
/// `commit_timestamp` dropped. Both versions are non-flexible: INT16-length strings and
/// INT32-count arrays.
fn offset_commit_v1_as_v2(body: &[u8]) -> Result<Vec<u8>, Rejection> {
    let mut reader = Reader { rest: body };
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(reader.string("group_id")?);
    out.extend_from_slice(reader.take("generation_id", 4)?);
    out.extend_from_slice(reader.string("member_id")?);
    out.extend_from_slice(&DEFAULT_RETENTION_TIME_MS.to_be_bytes());
    let (count_bytes, topics) = reader.count("topics")?;
    out.extend_from_slice(count_bytes);
    for _ in 0..topics {
        out.extend_from_slice(reader.string("name")?);
        let (count_bytes, partitions) = reader.count("partitions")?;
        out.extend_from_slice(count_bytes);
        for _ in 0..partitions {
            out.extend_from_slice(reader.take("partition_index", 4)?);
            out.extend_from_slice(reader.take("committed_offset", 8)?);
            reader.take("commit_timestamp", 8)?;
            out.extend_from_slice(reader.string("committed_metadata")?);
        }
    }
    out.extend_from_slice(reader.rest);
    Ok(out)
}

/// A cursor handing out the raw bytes of each field.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, len: usize) -> Result<&'a [u8], Rejection> {
        if self.rest.len() < len {
            return Err(Rejection::PastEnd {
                field,
                needed: len,
                remaining: self.rest.len(),
            });
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(head)
    }

    /// A nullable INT16-length string, prefix included.
    fn string(&mut self, field: &'static str) -> Result<&'a [u8], Rejection> {
        let start = self.rest;
        let prefix = self.take(field, 2)?;
        let length = i16::from_be_bytes([prefix[0], prefix[1]]);
        if length > 0 {
            self.take(field, length as usize)?;
        } else if length < -1 {
            return Err(Rejection::NegativeLength {
                field,
                length: i32::from(length),
            });
        }
        Ok(&start[..start.len() - self.rest.len()])
    }

    /// An INT32 array count (its bytes, and the count; null counts as empty).
    fn count(&mut self, field: &'static str) -> Result<(&'a [u8], usize), Rejection> {
        let prefix = self.take(field, 4)?;
        let count = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if count < -1 {
            return Err(Rejection::NegativeLength {
                field,
                length: count,
            });
        }
        let count = usize::try_from(count).unwrap_or(0);
        // Every element takes at least a byte (precheck has checked this already).
        if count > self.rest.len() {
            return Err(Rejection::TooManyElements {
                field,
                count,
                remaining: self.rest.len(),
            });
        }
        Ok((prefix, count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, value: &str) {
        out.extend_from_slice(&(value.len() as i16).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }

    /// An OffsetCommit body with two partitions of one topic, at v1 (`with_timestamps`) or v2.
    pub(crate) fn offset_commit_body(v1: bool) -> Vec<u8> {
        let mut out = Vec::new();
        string(&mut out, "billing");
        out.extend_from_slice(&7i32.to_be_bytes());
        string(&mut out, "member-1");
        if !v1 {
            out.extend_from_slice(&(-1i64).to_be_bytes());
        }
        out.extend_from_slice(&1i32.to_be_bytes());
        string(&mut out, "orders");
        out.extend_from_slice(&2i32.to_be_bytes());
        for (partition, offset, metadata) in [(0i32, 10i64, Some("m")), (1, 5, None)] {
            out.extend_from_slice(&partition.to_be_bytes());
            out.extend_from_slice(&offset.to_be_bytes());
            if v1 {
                out.extend_from_slice(&(-1i64).to_be_bytes());
            }
            match metadata {
                Some(metadata) => string(&mut out, metadata),
                None => out.extend_from_slice(&(-1i16).to_be_bytes()),
            }
        }
        out
    }

    #[test]
    fn offset_commit_v1_becomes_the_same_commit_at_v2() {
        assert_eq!(codec_version(ApiKey::OffsetCommit, 1), 2);
        assert_eq!(codec_version(ApiKey::OffsetCommit, 2), 2);
        assert_eq!(codec_version(ApiKey::Fetch, 4), 4);
        assert!(rewrite_body(ApiKey::OffsetCommit, 2, &[]).is_none());
        let rewritten = rewrite_body(ApiKey::OffsetCommit, 1, &offset_commit_body(true));
        assert_eq!(rewritten, Some(Ok(offset_commit_body(false))));
    }

    #[test]
    fn truncated_or_lying_v1_bodies_are_refused() {
        let body = offset_commit_body(true);
        for len in 0..body.len() {
            assert!(
                offset_commit_v1_as_v2(&body[..len]).is_err(),
                "{len} of {} bytes",
                body.len()
            );
        }
        let mut lying = offset_commit_body(true);
        // The topics count (after group id, generation and member id) claims 2^30 topics.
        let at = 2 + 7 + 4 + 2 + 8;
        lying[at..at + 4].copy_from_slice(&(1i32 << 30).to_be_bytes());
        assert!(matches!(
            offset_commit_v1_as_v2(&lying),
            Err(Rejection::TooManyElements { .. })
        ));
    }
}
