//! `skald bench produce|consume TOPIC`.

use std::time::Duration;

use crate::bench::{self, ProduceBench};
use crate::error::Result;
use crate::producer::{Acks, ProducerConfig};

use super::produce::parse_acks;
use super::BrokerArgs;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub brokers: BrokerArgs,
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Produce N records and report records/s, MB/s and batch latency.
    Produce {
        topic: String,
        #[arg(short = 'n', long, default_value_t = 100_000)]
        records: u64,
        #[arg(short = 's', long, default_value_t = 1024)]
        record_size: usize,
        /// Use partitions 0..N only (default: all).
        #[arg(long, value_name = "N")]
        partitions_used: Option<usize>,
        #[arg(short, long, default_value = "1", value_parser = parse_acks)]
        acks: Acks,
        /// batch.size in bytes.
        #[arg(long, default_value_t = 256 * 1024)]
        batch_bytes: usize,
        /// linger.ms
        #[arg(long, default_value_t = 5)]
        linger_ms: u64,
        /// Produce requests in flight per broker.
        #[arg(long, default_value_t = 5)]
        in_flight: usize,
    },
    /// Consume N records from the beginning and report records/s and MB/s.
    Consume {
        topic: String,
        #[arg(short = 'n', long, default_value_t = 100_000)]
        records: u64,
    },
}

pub async fn run(args: BenchArgs) -> Result<()> {
    let client = args.brokers.connect().await?;
    match args.command {
        BenchCommand::Produce {
            topic,
            records,
            record_size,
            partitions_used,
            acks,
            batch_bytes,
            linger_ms,
            in_flight,
        } => {
            let bench = ProduceBench {
                topic,
                records,
                record_bytes: record_size,
                partitions_used,
                producer: ProducerConfig {
                    acks,
                    batch_bytes_max: batch_bytes.max(1),
                    linger: Duration::from_millis(linger_ms),
                    in_flight_max: in_flight.clamp(1, crate::connection::IN_FLIGHT_MAX),
                    ..ProducerConfig::default()
                },
            };
            out!("{}", bench::produce(client, &bench).await?);
        }
        BenchCommand::Consume { topic, records } => {
            out!("{}", bench::consume(client, &topic, records).await?);
        }
    }
    Ok(())
}
