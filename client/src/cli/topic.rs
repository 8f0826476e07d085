//! `skald topic create|list|describe|delete`.

use crate::admin::NewTopic;
use crate::error::{Error, Result, TOPIC_ALREADY_EXISTS};

use super::{table, BrokerArgs};

#[derive(clap::Args, Debug)]
pub struct TopicArgs {
    #[command(flatten)]
    pub brokers: BrokerArgs,
    #[command(subcommand)]
    pub command: TopicCommand,
}

/// `skald topic ...`
#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Partitions (default: the broker's num.partitions).
        #[arg(short, long)]
        partitions: Option<i32>,
        /// Replicas per partition (default: the broker's default.replication.factor).
        #[arg(short, long)]
        replication_factor: Option<i16>,
        /// A topic config, e.g. `retention.ms=60000`. Repeatable.
        #[arg(short, long = "config", value_name = "KEY=VALUE", value_parser = parse_config)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    List {
        /// Also list internal topics such as __consumer_offsets.
        #[arg(short = 'i', long)]
        internal: bool,
    },
    /// Show a topic's partitions (leader, replicas, ISR) and configs.
    Describe { name: String },
    /// Delete a topic.
    Delete { name: String },
}

fn parse_config(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

pub async fn run(args: TopicArgs) -> Result<()> {
    let mut client = args.brokers.connect().await?;
    match args.command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let topic = NewTopic {
                name: name.clone(),
                partitions: partitions.unwrap_or(-1),
                replication_factor: replication_factor.unwrap_or(-1),
                configs,
            };
            match client.create_topic(topic).await {
                Ok(()) => {
                    out!("created topic {name}");
                    Ok(())
                }
                Err(err) if err.kafka_code() == Some(TOPIC_ALREADY_EXISTS) => Err(
                    Error::InvalidArgument(format!("topic {name} already exists")),
                ),
                Err(err) => Err(err),
            }
        }
        TopicCommand::List { internal } => {
            let mut rows = vec![vec![
                "NAME".to_owned(),
                "PARTITIONS".to_owned(),
                "REPLICAS".to_owned(),
            ]];
            for topic in client.list_topics().await? {
                if topic.internal && !internal {
                    continue;
                }
                rows.push(vec![
                    topic.name,
                    topic.partitions.to_string(),
                    topic.replication_factor.to_string(),
                ]);
            }
            out_raw!("{}", table(&rows));
            Ok(())
        }
        TopicCommand::Describe { name } => {
            let topic = client.describe_topic(&name).await?;
            let replicas = topic.partitions.first().map_or(0, |p| p.replicas.len());
            let mut summary = vec![
                vec!["NAME".to_owned(), topic.name.clone()],
                vec!["PARTITIONS".to_owned(), topic.partitions.len().to_string()],
                vec!["REPLICAS".to_owned(), replicas.to_string()],
            ];
            if !topic.topic_id.is_empty() {
                summary.insert(1, vec!["ID".to_owned(), topic.topic_id.clone()]);
            }
            if topic.internal {
                summary.push(vec!["INTERNAL".to_owned(), "true".to_owned()]);
            }
            out_raw!("{}", table(&summary));
            out!();
            let mut rows = vec![
                ["PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "OFFLINE"]
                    .map(str::to_owned)
                    .to_vec(),
            ];
            for p in &topic.partitions {
                rows.push(vec![
                    p.partition.to_string(),
                    if p.leader < 0 {
                        "none".to_owned()
                    } else {
                        p.leader.to_string()
                    },
                    p.leader_epoch.to_string(),
                    ids(&p.replicas),
                    ids(&p.isr),
                    ids(&p.offline_replicas),
                ]);
            }
            out_raw!("{}", table(&rows));
            if !topic.configs.is_empty() {
                out!();
                let mut rows = vec![["CONFIG", "VALUE", "SOURCE"].map(str::to_owned).to_vec()];
                for c in &topic.configs {
                    let value = match (&c.value, c.sensitive) {
                        (_, true) => "(sensitive)".to_owned(),
                        (Some(v), false) => v.clone(),
                        (None, false) => "(none)".to_owned(),
                    };
                    let source = if c.is_default { "default" } else { "set" };
                    rows.push(vec![c.name.clone(), value, source.to_owned()]);
                }
                out_raw!("{}", table(&rows));
            }
            Ok(())
        }
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await?;
            out!("deleted topic {name}");
            Ok(())
        }
    }
}

fn ids(ids: &[i32]) -> String {
    let list: Vec<String> = ids.iter().map(i32::to_string).collect();
    format!("[{}]", list.join(","))
}
