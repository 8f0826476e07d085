//! The producer: records are batched per partition and sent to partition leaders, several
//! Produce requests in flight per broker; each batch ends in one [`Delivery`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::client::{is_connection_error, is_stale_metadata, Client};
use crate::connection::Pending;
use crate::error::{Error, Result};
use crate::partitioner::{partition_for_key, RoundRobin};
use crate::records::{now_ms, BatchBuilder, ProducerRecord};

/// How many replicas must have a batch before the leader acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Fire and forget: the broker sends no response, offsets are unknown.
    None,
    /// The leader wrote it.
    Leader,
    /// Every in-sync replica has it (`acks=all`, `-1`).
    All,
}

impl Acks {
    pub fn as_i16(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl FromStr for Acks {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(Error::InvalidArgument(format!(
                "acks must be all, -1, 1 or 0, not {other:?}"
            ))),
        }
    }
}

/// Producer settings (Kafka's names in the comments).
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// `acks`
    pub acks: Acks,
    /// `batch.size`: a partition's batch is sent once it reaches this many bytes.
    pub batch_bytes_max: usize,
    /// `max.request.size`: batches for one broker share a request up to this size.
    pub request_bytes_max: usize,
    /// `linger.ms`: a partition's batch is sent at the latest this long after its first record.
    pub linger: Duration,
    /// `max.in.flight.requests.per.connection`
    pub in_flight_max: usize,
    /// `request.timeout.ms`, also sent as the Produce timeout.
    pub request_timeout: Duration,
    /// `retries`: attempts per batch after the first, on retriable errors.
    pub retries_max: usize,
    /// Records buffered (not yet sent) across all partitions before `send` waits for the network.
    pub buffered_bytes_max: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            batch_bytes_max: 256 * 1024,
            request_bytes_max: 1024 * 1024,
            linger: Duration::from_millis(5),
            in_flight_max: 5,
            request_timeout: Duration::from_secs(30),
            retries_max: 5,
            buffered_bytes_max: 32 * 1024 * 1024,
        }
    }
}

/// The outcome of one batch.
#[derive(Debug)]
pub struct Delivery {
    pub topic: String,
    pub partition: i32,
    pub record_count: usize,
    /// From the first send of the batch to its acknowledgement.
    pub latency: Duration,
    /// The offset of the batch's first record (`-1` with `acks=0`), or why it failed.
    pub result: Result<i64>,
}

struct ReadyBatch {
    topic: String,
    partition: i32,
    data: Bytes,
    record_count: usize,
    attempts: usize,
    first_sent: Option<Instant>,
}

struct OpenBatch {
    builder: BatchBuilder,
    opened: Instant,
}

struct InFlight {
    pending: Pending<ProduceRequest>,
    batches: Vec<ReadyBatch>,
}

struct TopicState {
    partitions: usize,
    round_robin: RoundRobin,
}

/// Sends records to a cluster in batches.
pub struct Producer {
    client: Client,
    config: ProducerConfig,
    topics: HashMap<String, TopicState>,
    open: BTreeMap<(String, i32), OpenBatch>,
    open_bytes: usize,
    ready: VecDeque<ReadyBatch>,
    in_flight: BTreeMap<i32, VecDeque<InFlight>>,
    deliveries: Vec<Delivery>,
}

impl Producer {
    pub fn new(client: Client, config: ProducerConfig) -> Self {
        Producer {
            client,
            config,
            topics: HashMap::new(),
            open: BTreeMap::new(),
            open_bytes: 0,
            ready: VecDeque::new(),
            in_flight: BTreeMap::new(),
            deliveries: Vec::new(),
        }
    }

    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    pub fn into_client(self) -> Client {
        self.client
    }

    /// The number of partitions of `topic`, from metadata on first use.
    pub async fn partition_count(&mut self, topic: &str) -> Result<usize> {
        if let Some(state) = self.topics.get(topic) {
            return Ok(state.partitions);
        }
        let partitions = self.client.topic(topic).await?.partitions.len();
        if partitions == 0 {
            return Err(Error::UnknownTopic {
                topic: topic.to_owned(),
            });
        }
        self.topics.insert(
            topic.to_owned(),
            TopicState {
                partitions,
                round_robin: RoundRobin::default(),
            },
        );
        Ok(partitions)
    }

    /// Adds a record to its partition's batch and returns the partition.
    ///
    /// `partition: None` picks one: Kafka's murmur2 of the key, or round robin without a key.
    /// Full and lingered batches are sent before this returns; it waits for acknowledgements only
    /// when `in_flight_max` requests are outstanding or `buffered_bytes_max` is reached.
    pub async fn send(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        record: ProducerRecord,
    ) -> Result<i32> {
        let partitions = self.partition_count(topic).await?;
        let partition = match (partition, &record.key) {
            (Some(p), _) if p < 0 || p as usize >= partitions => {
                return Err(Error::UnknownPartition {
                    topic: topic.to_owned(),
                    partition: p,
                    partitions,
                })
            }
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => match self.topics.get_mut(topic) {
                Some(state) => state.round_robin.next_partition(partitions),
                None => 0,
            },
        };
        let key = (topic.to_owned(), partition);
        let now = Instant::now();
        let open = self.open.entry(key).or_insert_with(|| OpenBatch {
            builder: BatchBuilder::default(),
            opened: now,
        });
        let before = open.builder.bytes();
        open.builder.push(record, now_ms());
        let after = open.builder.bytes();
        self.open_bytes += after - before;
        if after >= self.config.batch_bytes_max {
            self.close_batch(topic.to_owned(), partition)?;
        }
        self.close_lingered(now)?;
        if !self.ready.is_empty() {
            self.dispatch().await?;
        }
        while self.open_bytes >= self.config.buffered_bytes_max && self.has_in_flight() {
            self.complete_one().await?;
        }
        Ok(partition)
    }

    /// Sends batches whose linger has expired; call this when no records arrive for a while.
    pub async fn poll(&mut self) -> Result<()> {
        self.close_lingered(Instant::now())?;
        self.dispatch().await
    }

    /// Sends everything buffered, waits for every acknowledgement, and returns all deliveries
    /// since the last call (also those completed during `send`).
    pub async fn flush(&mut self) -> Result<Vec<Delivery>> {
        let keys: Vec<(String, i32)> = self.open.keys().cloned().collect();
        for (topic, partition) in keys {
            self.close_batch(topic, partition)?;
        }
        while !self.ready.is_empty() || self.has_in_flight() {
            self.dispatch().await?;
            while self.has_in_flight() {
                self.complete_one().await?;
            }
        }
        Ok(self.take_deliveries())
    }

    /// Deliveries completed so far and not yet taken.
    pub fn take_deliveries(&mut self) -> Vec<Delivery> {
        std::mem::take(&mut self.deliveries)
    }

    fn has_in_flight(&self) -> bool {
        self.in_flight.values().any(|q| !q.is_empty())
    }

    fn close_lingered(&mut self, now: Instant) -> Result<()> {
        let linger = self.config.linger;
        let due: Vec<(String, i32)> = self
            .open
            .iter()
            .filter(|(_, batch)| now.duration_since(batch.opened) >= linger)
            .map(|(key, _)| key.clone())
            .collect();
        for (topic, partition) in due {
            self.close_batch(topic, partition)?;
        }
        Ok(())
    }

    fn close_batch(&mut self, topic: String, partition: i32) -> Result<()> {
        let Some(mut open) = self.open.remove(&(topic.clone(), partition)) else {
            return Ok(());
        };
        self.open_bytes = self.open_bytes.saturating_sub(open.builder.bytes());
        if open.builder.is_empty() {
            return Ok(());
        }
        let record_count = open.builder.len();
        let data = open.builder.finish()?;
        self.ready.push_back(ReadyBatch {
            topic,
            partition,
            data,
            record_count,
            attempts: 0,
            first_sent: None,
        });
        Ok(())
    }

    /// Sends every ready batch to its leader, grouped into requests per broker.
    async fn dispatch(&mut self) -> Result<()> {
        let batches: Vec<ReadyBatch> = self.ready.drain(..).collect();
        if batches.iter().any(|b| b.attempts > 0) {
            tokio::time::sleep(self.client.config().retry_backoff).await;
        }
        let mut by_leader: BTreeMap<i32, Vec<ReadyBatch>> = BTreeMap::new();
        for batch in batches {
            match self.client.leader(&batch.topic, batch.partition).await {
                Ok(leader) => by_leader.entry(leader).or_default().push(batch),
                Err(err) => self.retry_or_fail(batch, err),
            }
        }
        for (leader, batches) in by_leader {
            let mut request: Vec<ReadyBatch> = Vec::new();
            let mut request_bytes = 0;
            for batch in batches {
                if !request.is_empty()
                    && request_bytes + batch.data.len() > self.config.request_bytes_max
                {
                    self.send_request(leader, std::mem::take(&mut request))
                        .await?;
                    request_bytes = 0;
                }
                request_bytes += batch.data.len();
                request.push(batch);
            }
            if !request.is_empty() {
                self.send_request(leader, request).await?;
            }
        }
        Ok(())
    }

    async fn send_request(&mut self, leader: i32, mut batches: Vec<ReadyBatch>) -> Result<()> {
        while self
            .in_flight
            .get(&leader)
            .is_some_and(|q| q.len() >= self.config.in_flight_max)
        {
            self.complete_oldest(leader).await?;
        }
        let now = Instant::now();
        for batch in &mut batches {
            batch.first_sent.get_or_insert(now);
        }
        let request = produce_request(&batches, self.config.acks, self.config.request_timeout);
        let connection = match self.client.broker_connection(leader).await {
            Ok(connection) => connection,
            Err(err) => {
                self.fail_all(batches, &err);
                return Ok(());
            }
        };
        if self.config.acks == Acks::None {
            match connection.send_without_response(&request).await {
                Ok(()) => {
                    for batch in batches {
                        self.deliver(batch, Ok(-1));
                    }
                }
                Err(err) => {
                    self.client.disconnect(leader);
                    self.fail_all(batches, &err);
                }
            }
            return Ok(());
        }
        match connection.send_request(&request).await {
            Ok(pending) => {
                self.in_flight
                    .entry(leader)
                    .or_default()
                    .push_back(InFlight { pending, batches });
            }
            Err(err) => {
                self.client.disconnect(leader);
                self.fail_all(batches, &err);
            }
        }
        Ok(())
    }

    /// Waits for the oldest outstanding request to any broker.
    async fn complete_one(&mut self) -> Result<()> {
        let leader = self
            .in_flight
            .iter()
            .find(|(_, q)| !q.is_empty())
            .map(|(leader, _)| *leader);
        match leader {
            Some(leader) => self.complete_oldest(leader).await,
            None => Ok(()),
        }
    }

    async fn complete_oldest(&mut self, leader: i32) -> Result<()> {
        let Some(in_flight) = self
            .in_flight
            .get_mut(&leader)
            .and_then(VecDeque::pop_front)
        else {
            return Ok(());
        };
        let received = match self.client.broker_connection(leader).await {
            Ok(connection) => connection.receive(in_flight.pending).await,
            Err(err) => Err(err),
        };
        match received {
            Ok(response) => self.handle_response(&response, in_flight.batches),
            Err(err) => {
                // Whatever else was in flight on that connection is lost with it.
                self.client.disconnect(leader);
                let mut lost = in_flight.batches;
                if let Some(rest) = self.in_flight.remove(&leader) {
                    lost.extend(rest.into_iter().flat_map(|f| f.batches));
                }
                self.fail_all(lost, &err);
            }
        }
        Ok(())
    }

    fn handle_response(&mut self, response: &ProduceResponse, batches: Vec<ReadyBatch>) {
        for batch in batches {
            let partition = response
                .responses
                .iter()
                .filter(|t| t.name.0.as_str() == batch.topic)
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == batch.partition);
            let Some(partition) = partition else {
                let err = Error::Protocol {
                    addr: "producer".to_owned(),
                    detail: format!(
                        "Produce response has no result for {}-{}",
                        batch.topic, batch.partition
                    ),
                };
                self.deliver(batch, Err(err));
                continue;
            };
            if partition.error_code == 0 {
                let offset = partition.base_offset;
                self.deliver(batch, Ok(offset));
                continue;
            }
            let message = partition.error_message.as_ref().map(|m| m.to_string());
            let context = format!("produce to {}-{}", batch.topic, batch.partition);
            let err = Error::kafka(partition.error_code, context, message);
            if is_stale_metadata(partition.error_code) {
                self.client.invalidate_topic(&batch.topic);
            }
            self.retry_or_fail(batch, err);
        }
    }

    fn fail_all(&mut self, batches: Vec<ReadyBatch>, err: &Error) {
        for batch in batches {
            let err = if is_connection_error(err) || err.is_retriable() {
                // Each batch gets its own copy of the cause.
                Error::Io {
                    addr: format!("leader of {}-{}", batch.topic, batch.partition),
                    source: std::io::Error::other(err.to_string()),
                }
            } else {
                Error::InvalidArgument(err.to_string())
            };
            self.client.invalidate_topic(&batch.topic);
            self.retry_or_fail(batch, err);
        }
    }

    fn retry_or_fail(&mut self, mut batch: ReadyBatch, err: Error) {
        if err.is_retriable() && batch.attempts < self.config.retries_max {
            tracing::debug!("retrying {}-{}: {err}", batch.topic, batch.partition);
            batch.attempts += 1;
            self.ready.push_back(batch);
        } else {
            self.deliver(batch, Err(err));
        }
    }

    fn deliver(&mut self, batch: ReadyBatch, result: Result<i64>) {
        let latency = batch.first_sent.map_or(Duration::ZERO, |t| t.elapsed());
        self.deliveries.push(Delivery {
            topic: batch.topic,
            partition: batch.partition,
            record_count: batch.record_count,
            latency,
            result,
        });
    }
}

/// One Produce request carrying `batches`, grouped by topic.
fn produce_request(batches: &[ReadyBatch], acks: Acks, timeout: Duration) -> ProduceRequest {
    let mut topics: Vec<TopicProduceData> = Vec::new();
    for batch in batches {
        let data = PartitionProduceData::default()
            .with_index(batch.partition)
            .with_records(Some(batch.data.clone()));
        match topics.iter_mut().find(|t| t.name.0.as_str() == batch.topic) {
            Some(topic) => topic.partition_data.push(data),
            None => topics.push(
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(batch.topic.clone())))
                    .with_partition_data(vec![data]),
            ),
        }
    }
    ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(acks.as_i16())
        .with_timeout_ms(i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX))
        .with_topic_data(topics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::{Decodable, Encodable};

    #[test]
    fn acks_parse_like_kafka() {
        assert_eq!("all".parse::<Acks>().unwrap(), Acks::All);
        assert_eq!("-1".parse::<Acks>().unwrap().as_i16(), -1);
        assert_eq!("1".parse::<Acks>().unwrap().as_i16(), 1);
        assert_eq!("0".parse::<Acks>().unwrap().as_i16(), 0);
        assert_eq!(
            "2".parse::<Acks>().unwrap_err().to_string(),
            "acks must be all, -1, 1 or 0, not \"2\""
        );
    }

    #[test]
    fn produce_request_groups_partitions_by_topic_and_round_trips() {
        let mut builder = BatchBuilder::default();
        builder.push(ProducerRecord::value("x"), 1);
        let data = builder.finish().unwrap();
        let batch = |topic: &str, partition| ReadyBatch {
            topic: topic.to_owned(),
            partition,
            data: data.clone(),
            record_count: 1,
            attempts: 0,
            first_sent: None,
        };
        let batches = vec![batch("a", 0), batch("b", 1), batch("a", 2)];
        let request = produce_request(&batches, Acks::Leader, Duration::from_secs(3));
        for version in [3, 9, 12] {
            let mut buf = bytes::BytesMut::new();
            request.encode(&mut buf, version).unwrap();
            let decoded = ProduceRequest::decode(&mut buf.freeze(), version).unwrap();
            assert_eq!(decoded, request, "v{version}");
        }
        assert_eq!(request.acks, 1);
        assert_eq!(request.timeout_ms, 3000);
        let layout: Vec<(&str, Vec<i32>)> = request
            .topic_data
            .iter()
            .map(|t| {
                (
                    t.name.0.as_str(),
                    t.partition_data.iter().map(|p| p.index).collect(),
                )
            })
            .collect();
        assert_eq!(layout, vec![("a", vec![0, 2]), ("b", vec![1])]);
        assert_eq!(
            request.topic_data[0].partition_data[0].records.as_ref(),
            Some(&data)
        );
    }
}
