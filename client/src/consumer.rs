//! The consumer: finds start offsets with ListOffsets, then fetches from partition leaders.
//!
//! Partitions are assigned by the caller (no consumer group yet); positions live in memory.

use std::collections::{BTreeMap, VecDeque};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::client::{is_connection_error, is_stale_metadata, Client};
use crate::connection::Pending;
use crate::error::{check, Error, Result};
use crate::records::{decode_fetched, ConsumerRecord};

/// ListOffsets' timestamp for the log start offset.
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// ListOffsets' timestamp for the log end offset (the high watermark for consumers).
pub const LATEST_TIMESTAMP: i64 = -1;

/// Where reading starts in each assigned partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The log start offset.
    Earliest,
    /// The end: only records produced from now on.
    Latest,
    /// This offset, in every assigned partition.
    Offset(i64),
}

/// Consumer settings (Kafka's names in the comments).
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `fetch.max.wait.ms`
    pub max_wait_ms: i32,
    /// `fetch.min.bytes`
    pub min_bytes: i32,
    /// `fetch.max.bytes`
    pub max_bytes: i32,
    /// `max.partition.fetch.bytes`
    pub partition_max_bytes: i32,
    /// Consecutive fetch rounds that may fail on stale metadata before giving up.
    pub retries_max: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            retries_max: 10,
        }
    }
}

/// Reads records from assigned partitions of one topic.
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    topic: String,
    /// The next offset to fetch, by partition.
    positions: BTreeMap<i32, i64>,
    buffered: VecDeque<ConsumerRecord>,
    failed_rounds: usize,
}

impl Consumer {
    /// Assigns `partitions` of `topic` (`None`: all) and positions them at `start`.
    pub async fn assign(
        mut client: Client,
        config: ConsumerConfig,
        topic: &str,
        partitions: Option<Vec<i32>>,
        start: StartOffset,
    ) -> Result<Self> {
        let metadata = client.topic(topic).await?;
        let all: Vec<i32> = metadata.partitions.iter().map(|p| p.partition).collect();
        let partitions = match partitions {
            None => all,
            Some(wanted) => {
                if let Some(bad) = wanted.iter().find(|p| !all.contains(p)) {
                    return Err(Error::UnknownPartition {
                        topic: topic.to_owned(),
                        partition: *bad,
                        partitions: all.len(),
                    });
                }
                wanted
            }
        };
        let positions = match start {
            StartOffset::Offset(offset) if offset < 0 => {
                return Err(Error::InvalidArgument(format!(
                    "offset must not be negative, got {offset}"
                )))
            }
            StartOffset::Offset(offset) => partitions.iter().map(|p| (*p, offset)).collect(),
            StartOffset::Earliest => {
                list_offsets(&mut client, topic, &partitions, EARLIEST_TIMESTAMP).await?
            }
            StartOffset::Latest => {
                list_offsets(&mut client, topic, &partitions, LATEST_TIMESTAMP).await?
            }
        };
        Ok(Consumer {
            client,
            config,
            topic: topic.to_owned(),
            positions,
            buffered: VecDeque::new(),
            failed_rounds: 0,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next offset to be returned, by partition.
    pub fn positions(&self) -> &BTreeMap<i32, i64> {
        &self.positions
    }

    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The next record, fetching as needed (waits for new records at the end of the log).
    pub async fn next_record(&mut self) -> Result<ConsumerRecord> {
        loop {
            if let Some(record) = self.buffered.pop_front() {
                return Ok(record);
            }
            let records = self.poll().await?;
            self.buffered.extend(records);
        }
    }

    /// One fetch round over all assigned partitions; empty if nothing arrived within `max_wait_ms`.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>> {
        if !self.buffered.is_empty() {
            return Ok(self.buffered.drain(..).collect());
        }
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &partition in self.positions.keys() {
            let leader = self.client.leader(&self.topic, partition).await?;
            by_leader.entry(leader).or_default().push(partition);
        }
        // Every leader gets its request before any response is awaited, so they wait in parallel.
        let mut pending: Vec<(i32, Pending<FetchRequest>)> = Vec::new();
        let mut stale = false;
        for (leader, partitions) in &by_leader {
            let request = self.fetch_request(partitions);
            let sent = match self.client.broker_connection(*leader).await {
                Ok(connection) => connection.send_request(&request).await,
                Err(err) => Err(err),
            };
            match sent {
                Ok(p) => pending.push((*leader, p)),
                Err(err) if is_connection_error(&err) || matches!(err, Error::Connect { .. }) => {
                    tracing::debug!("fetch from broker {leader}: {err}");
                    self.client.disconnect(*leader);
                    stale = true;
                }
                Err(err) => return Err(err),
            }
        }
        let mut records = Vec::new();
        let mut first_error = None;
        for (leader, p) in pending {
            let received = match self.client.broker_connection(leader).await {
                Ok(connection) => connection.receive(p).await,
                Err(err) => Err(err),
            };
            match received {
                Ok(response) => match self.absorb(&response, &mut records) {
                    Ok(was_stale) => stale |= was_stale,
                    Err(err) => {
                        first_error.get_or_insert(err);
                    }
                },
                Err(err) if is_connection_error(&err) => {
                    tracing::debug!("fetch from broker {leader}: {err}");
                    self.client.disconnect(leader);
                    stale = true;
                }
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_error {
            return Err(err);
        }
        if stale {
            self.failed_rounds += 1;
            self.client.invalidate_topic(&self.topic);
            if self.failed_rounds > self.config.retries_max {
                return Err(Error::kafka(
                    crate::error::NOT_LEADER_OR_FOLLOWER,
                    format!(
                        "fetch from topic {} after {} retries",
                        self.topic, self.config.retries_max
                    ),
                    None,
                ));
            }
            tokio::time::sleep(self.client.config().retry_backoff).await;
        } else {
            self.failed_rounds = 0;
        }
        Ok(records)
    }

    fn fetch_request(&self, partitions: &[i32]) -> FetchRequest {
        let partitions = partitions
            .iter()
            .map(|p| {
                FetchPartition::default()
                    .with_partition(*p)
                    .with_current_leader_epoch(-1)
                    .with_fetch_offset(self.positions.get(p).copied().unwrap_or(0))
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(self.config.partition_max_bytes)
            })
            .collect();
        FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(self.config.max_wait_ms)
            .with_min_bytes(self.config.min_bytes)
            .with_max_bytes(self.config.max_bytes)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(self.topic.clone())))
                .with_partitions(partitions)])
    }

    /// Decodes a fetch response into `records`, advancing positions; `Ok(true)` if metadata is stale.
    fn absorb(
        &mut self,
        response: &FetchResponse,
        records: &mut Vec<ConsumerRecord>,
    ) -> Result<bool> {
        check(
            response.error_code,
            || format!("fetch from topic {}", self.topic),
            None,
        )?;
        let mut stale = false;
        for topic in &response.responses {
            if topic.topic.0.as_str() != self.topic {
                continue;
            }
            for partition in &topic.partitions {
                let index = partition.partition_index;
                let Some(position) = self.positions.get(&index).copied() else {
                    continue;
                };
                if is_stale_metadata(partition.error_code) {
                    stale = true;
                    continue;
                }
                check(
                    partition.error_code,
                    || format!("fetch {}-{index} at offset {position}", self.topic),
                    None,
                )?;
                let Some(data) = partition.records.clone() else {
                    continue;
                };
                let next = decode_fetched(&self.topic, index, data, position, records)?;
                self.positions.insert(index, next);
            }
        }
        Ok(stale)
    }
}

/// The offsets for `timestamp` (or [`EARLIEST_TIMESTAMP`] / [`LATEST_TIMESTAMP`]) per partition,
/// asking each partition's leader and retrying (bounded) after leader moves.
pub async fn list_offsets(
    client: &mut Client,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>> {
    let mut offsets = BTreeMap::new();
    let mut remaining: Vec<i32> = partitions.to_vec();
    let mut attempt = 0;
    while !remaining.is_empty() {
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &partition in &remaining {
            by_leader
                .entry(client.leader(topic, partition).await?)
                .or_default()
                .push(partition);
        }
        let mut retry = Vec::new();
        let mut last_error = None;
        for (leader, partitions) in by_leader {
            let request = ListOffsetsRequest::default()
                .with_replica_id((-1).into())
                .with_isolation_level(0)
                .with_timeout_ms(30_000)
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|p| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(*p)
                                    .with_current_leader_epoch(-1)
                                    .with_timestamp(timestamp)
                            })
                            .collect(),
                    )]);
            let response = match client.broker_connection(leader).await {
                Ok(connection) => connection.send(request).await,
                Err(err) => Err(err),
            };
            let response = match response {
                Ok(response) => response,
                Err(err) if is_connection_error(&err) || matches!(err, Error::Connect { .. }) => {
                    client.disconnect(leader);
                    retry.extend(partitions);
                    last_error = Some(err);
                    continue;
                }
                Err(err) => return Err(err),
            };
            for partition in partitions {
                let result = response
                    .topics
                    .iter()
                    .filter(|t| t.name.0.as_str() == topic)
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.partition_index == partition);
                let Some(result) = result else {
                    return Err(Error::Protocol {
                        addr: format!("broker {leader}"),
                        detail: format!(
                            "ListOffsets response has no result for {topic}-{partition}"
                        ),
                    });
                };
                let err = check(
                    result.error_code,
                    || format!("list offsets of {topic}-{partition}"),
                    None,
                );
                match err {
                    Ok(()) => {
                        offsets.insert(partition, result.offset);
                    }
                    Err(err) if is_stale_metadata(result.error_code) => {
                        retry.push(partition);
                        last_error = Some(err);
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        if !retry.is_empty() {
            attempt += 1;
            if attempt > client.config().retries_max {
                return Err(last_error
                    .unwrap_or_else(|| Error::InvalidArgument("list offsets failed".into())));
            }
            client.invalidate_topic(topic);
            tokio::time::sleep(client.config().retry_backoff).await;
        }
        remaining = retry;
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::{Decodable, Encodable};

    #[test]
    fn list_offsets_request_round_trips_in_every_version_we_send() {
        let request = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(3)
                    .with_timestamp(EARLIEST_TIMESTAMP)])]);
        for version in 1..=7 {
            let mut buf = bytes::BytesMut::new();
            request.encode(&mut buf, version).unwrap();
            let decoded = ListOffsetsRequest::decode(&mut buf.freeze(), version).unwrap();
            assert_eq!(decoded.replica_id.0, -1, "v{version}");
            assert_eq!(decoded.topics[0].partitions[0].partition_index, 3);
            assert_eq!(decoded.topics[0].partitions[0].timestamp, -2);
        }
    }
}
