//! End-to-end throughput through this client: produce N records, or consume N records.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::client::Client;
use crate::consumer::{Consumer, ConsumerConfig, StartOffset};
use crate::error::{Error, Result};
use crate::producer::{Delivery, Producer, ProducerConfig};
use crate::records::ProducerRecord;

/// How long a consume benchmark waits without a single new record before it gives up.
pub const CONSUME_IDLE_MAX: Duration = Duration::from_secs(10);

/// What to produce.
#[derive(Debug, Clone)]
pub struct ProduceBench {
    pub topic: String,
    pub records: u64,
    pub record_bytes: usize,
    /// Spread records over partitions `0..n` (`None`: all partitions).
    pub partitions_used: Option<usize>,
    pub producer: ProducerConfig,
}

/// What a produce benchmark measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ProduceReport {
    pub records: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub batches: usize,
    pub batch_latency_p50: Duration,
    pub batch_latency_p99: Duration,
}

/// What a consume benchmark measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumeReport {
    pub records: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Produces `bench.records` records of `bench.record_bytes` bytes and waits for every acknowledgement.
pub async fn produce(client: Client, bench: &ProduceBench) -> Result<ProduceReport> {
    let mut producer = Producer::new(client, bench.producer.clone());
    let partitions = producer.partition_count(&bench.topic).await?;
    let used = bench.partitions_used.unwrap_or(partitions);
    if used == 0 || used > partitions {
        return Err(Error::InvalidArgument(format!(
            "--partitions-used must be between 1 and {partitions} (the partitions of {})",
            bench.topic
        )));
    }
    // One shared value: building batches copies it, nothing else allocates per record.
    let value = Bytes::from(
        (0..bench.record_bytes)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    let mut latencies = Vec::new();
    let start = Instant::now();
    for i in 0..bench.records {
        let partition = (i % used as u64) as i32;
        let record = ProducerRecord {
            value: Some(value.clone()),
            ..Default::default()
        };
        producer.send(&bench.topic, Some(partition), record).await?;
        if i % 4096 == 0 {
            collect(producer.take_deliveries(), &mut latencies)?;
        }
    }
    collect(producer.flush().await?, &mut latencies)?;
    let elapsed = start.elapsed();
    latencies.sort();
    Ok(ProduceReport {
        records: bench.records,
        bytes: bench.records * bench.record_bytes as u64,
        elapsed,
        batches: latencies.len(),
        batch_latency_p50: percentile(&latencies, 50.0),
        batch_latency_p99: percentile(&latencies, 99.0),
    })
}

fn collect(deliveries: Vec<Delivery>, latencies: &mut Vec<Duration>) -> Result<()> {
    for delivery in deliveries {
        delivery.result?;
        latencies.push(delivery.latency);
    }
    Ok(())
}

/// Reads `records` records from the start of every partition of `topic`.
pub async fn consume(client: Client, topic: &str, records: u64) -> Result<ConsumeReport> {
    let mut consumer = Consumer::assign(
        client,
        ConsumerConfig::default(),
        topic,
        None,
        StartOffset::Earliest,
    )
    .await?;
    let mut count = 0u64;
    let mut bytes = 0u64;
    let start = Instant::now();
    let mut last_progress = Instant::now();
    while count < records {
        let batch = consumer.poll().await?;
        if batch.is_empty() {
            if last_progress.elapsed() > CONSUME_IDLE_MAX {
                return Err(Error::InvalidArgument(format!(
                    "only {count} of {records} records in {topic} after waiting {CONSUME_IDLE_MAX:?}"
                )));
            }
            continue;
        }
        last_progress = Instant::now();
        for record in batch {
            if count == records {
                break;
            }
            count += 1;
            bytes += record.value.as_ref().map_or(0, |v| v.len() as u64)
                + record.key.as_ref().map_or(0, |k| k.len() as u64);
        }
    }
    Ok(ConsumeReport {
        records: count,
        bytes,
        elapsed: start.elapsed(),
    })
}

/// The `p`th percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn rates(records: u64, bytes: u64, elapsed: Duration) -> (f64, f64) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    (
        records as f64 / secs,
        bytes as f64 / secs / (1024.0 * 1024.0),
    )
}

impl fmt::Display for ProduceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (records_per_s, mib_per_s) = rates(self.records, self.bytes, self.elapsed);
        write!(
            f,
            "produced {} records ({} bytes) in {:.3}s: {:.0} records/s, {:.2} MB/s; {} batches, latency p50 {:.2}ms p99 {:.2}ms",
            self.records,
            self.bytes,
            self.elapsed.as_secs_f64(),
            records_per_s,
            mib_per_s,
            self.batches,
            self.batch_latency_p50.as_secs_f64() * 1e3,
            self.batch_latency_p99.as_secs_f64() * 1e3,
        )
    }
}

impl fmt::Display for ConsumeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (records_per_s, mib_per_s) = rates(self.records, self.bytes, self.elapsed);
        write!(
            f,
            "consumed {} records ({} bytes) in {:.3}s: {:.0} records/s, {:.2} MB/s",
            self.records,
            self.bytes,
            self.elapsed.as_secs_f64(),
            records_per_s,
            mib_per_s,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let ms = |n| Duration::from_millis(n);
        let values: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&values, 50.0), ms(50));
        assert_eq!(percentile(&values, 99.0), ms(99));
        assert_eq!(percentile(&values, 100.0), ms(100));
        assert_eq!(percentile(&[ms(7)], 99.0), ms(7));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn reports_show_rates() {
        let report = ConsumeReport {
            records: 1000,
            bytes: 2 * 1024 * 1024,
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(
            report.to_string(),
            "consumed 1000 records (2097152 bytes) in 2.000s: 500 records/s, 1.00 MB/s"
        );
    }
}
