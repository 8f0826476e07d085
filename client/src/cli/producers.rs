//! `skald producers describe TOPIC`: the producer state of every partition's leader (what
//! Kafka's `kafka-transactions.sh describe-producers` shows).

use crate::error::Result;
use crate::producers::ActiveProducer;

use super::{table, BrokerArgs};

#[derive(clap::Args, Debug)]
pub struct ProducersArgs {
    #[command(flatten)]
    pub brokers: BrokerArgs,
    #[command(subcommand)]
    pub command: ProducersCommand,
}

/// `skald producers ...`
#[derive(clap::Subcommand, Debug)]
pub enum ProducersCommand {
    /// One row per producer and partition: producer id and epoch, last sequence and
    /// timestamp, coordinator epoch, and where its open transaction starts.
    Describe {
        /// The topic whose partitions to describe.
        topic: String,
    },
}

pub async fn run(args: ProducersArgs) -> Result<()> {
    let mut client = args.brokers.connect().await?;
    match args.command {
        ProducersCommand::Describe { topic } => {
            let producers = client.describe_producers(&topic).await?;
            out_raw!("{}", producers_table(&producers));
            Ok(())
        }
    }
}

fn producers_table(producers: &[ActiveProducer]) -> String {
    let mut rows = vec![[
        "PARTITION",
        "PRODUCER-ID",
        "EPOCH",
        "LAST-SEQUENCE",
        "LAST-TIMESTAMP",
        "COORDINATOR-EPOCH",
        "TXN-START-OFFSET",
    ]
    .map(str::to_owned)
    .to_vec()];
    for p in producers {
        rows.push(vec![
            p.partition.to_string(),
            p.producer_id.to_string(),
            p.producer_epoch.to_string(),
            p.last_sequence.to_string(),
            p.last_timestamp.to_string(),
            p.coordinator_epoch.to_string(),
            p.current_txn_start_offset
                .map_or_else(|| "-".to_owned(), |offset| offset.to_string()),
        ]);
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producers_print_one_row_each() {
        let producers = [
            ActiveProducer {
                partition: 0,
                producer_id: 1000,
                producer_epoch: 0,
                last_sequence: 41,
                last_timestamp: 1_700_000_000_000,
                coordinator_epoch: -1,
                current_txn_start_offset: None,
            },
            ActiveProducer {
                partition: 1,
                producer_id: 7,
                producer_epoch: 3,
                last_sequence: 0,
                last_timestamp: 5,
                coordinator_epoch: 2,
                current_txn_start_offset: Some(12),
            },
        ];
        assert_eq!(
            producers_table(&producers),
            "PARTITION  PRODUCER-ID  EPOCH  LAST-SEQUENCE  LAST-TIMESTAMP  COORDINATOR-EPOCH  TXN-START-OFFSET\n\
             0          1000         0      41             1700000000000   -1                 -\n\
             1          7            3      0              5               2                  12\n"
        );
    }
}
