//! `skald transactions list|describe`: transactional ids and their state at their coordinators
//! (what Kafka's `kafka-transactions.sh list` / `describe` show).

use crate::error::Result;
use crate::transactions::{TransactionDescription, TransactionListing};

use super::{table, BrokerArgs};

#[derive(clap::Args, Debug)]
pub struct TransactionsArgs {
    #[command(flatten)]
    pub brokers: BrokerArgs,
    #[command(subcommand)]
    pub command: TransactionsCommand,
}

/// `skald transactions ...`
#[derive(clap::Subcommand, Debug)]
pub enum TransactionsCommand {
    /// Every transactional id: its coordinator, producer id and state.
    List,
    /// One transactional id: state, producer id and epoch, timeout, start, open partitions.
    Describe {
        /// The transactional id.
        transactional_id: String,
    },
}

pub async fn run(args: TransactionsArgs) -> Result<()> {
    let mut client = args.brokers.connect().await?;
    match args.command {
        TransactionsCommand::List => {
            out_raw!("{}", list_table(&client.list_transactions().await?));
        }
        TransactionsCommand::Describe { transactional_id } => {
            let described = client.describe_transaction(&transactional_id).await?;
            out_raw!("{}", describe_table(&described));
        }
    }
    Ok(())
}

fn list_table(listed: &[TransactionListing]) -> String {
    let mut rows = vec![["TRANSACTIONAL-ID", "COORDINATOR", "PRODUCER-ID", "STATE"]
        .map(str::to_owned)
        .to_vec()];
    for t in listed {
        rows.push(vec![
            t.transactional_id.clone(),
            t.coordinator.to_string(),
            t.producer_id.to_string(),
            t.state.clone(),
        ]);
    }
    table(&rows)
}

fn describe_table(t: &TransactionDescription) -> String {
    let partitions = if t.partitions.is_empty() {
        "-".to_owned()
    } else {
        t.partitions
            .iter()
            .map(|(topic, partition)| format!("{topic}-{partition}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let rows = vec![
        [
            "TRANSACTIONAL-ID",
            "COORDINATOR",
            "STATE",
            "PRODUCER-ID",
            "EPOCH",
            "TIMEOUT-MS",
            "START-TIME-MS",
            "PARTITIONS",
        ]
        .map(str::to_owned)
        .to_vec(),
        vec![
            t.transactional_id.clone(),
            t.coordinator.to_string(),
            t.state.clone(),
            t.producer_id.to_string(),
            t.producer_epoch.to_string(),
            t.timeout_ms.to_string(),
            t.start_time_ms.to_string(),
            partitions,
        ],
    ];
    table(&rows)
}
