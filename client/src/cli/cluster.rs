//! `skald cluster info`: the controller quorum, the brokers and how partitions spread over them.

use std::collections::BTreeMap;

use crate::client::{Client, TopicMetadata};
use crate::cluster::{ClusterDescription, QuorumDescription};
use crate::error::Result;

use super::{table, BrokerArgs};

#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub brokers: BrokerArgs,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// `skald cluster ...`
#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show the controllers, the brokers and the partitions on each broker.
    ///
    /// Controllers: role, term, metadata log end offset and lag behind the high watermark.
    /// Brokers: fenced or not, endpoint, rack. Partitions: per broker, how many partition
    /// replicas it hosts and how many partitions it leads.
    Info,
}

pub async fn run(args: ClusterArgs) -> Result<()> {
    let mut client = args.brokers.connect().await?;
    match args.command {
        ClusterCommand::Info => info(&mut client).await,
    }
}

async fn info(client: &mut Client) -> Result<()> {
    let quorum = client.describe_quorum().await?;
    let cluster = client.describe_cluster(true).await?;
    let topics = client.list_topic_metadata().await?;
    out_raw!("{}", controllers_table(&quorum));
    out!();
    out_raw!("{}", brokers_table(&cluster));
    out!();
    out_raw!("{}", partitions_table(&cluster, &topics));
    Ok(())
}

fn controllers_table(quorum: &QuorumDescription) -> String {
    let mut rows = vec![["CONTROLLER", "ROLE", "TERM", "LOG-END-OFFSET", "LAG"]
        .map(str::to_owned)
        .to_vec()];
    for voter in &quorum.voters {
        let role = if voter.replica_id == quorum.leader_id {
            "LEADER"
        } else {
            "FOLLOWER"
        };
        rows.push(vec![
            voter.replica_id.to_string(),
            role.to_owned(),
            quorum.leader_epoch.to_string(),
            number_or_dash(voter.log_end_offset),
            number_or_dash(voter.lag(quorum.high_watermark)),
        ]);
    }
    table(&rows)
}

fn brokers_table(cluster: &ClusterDescription) -> String {
    let mut rows = vec![["BROKER", "STATE", "ENDPOINT", "RACK"]
        .map(str::to_owned)
        .to_vec()];
    for broker in &cluster.brokers {
        rows.push(vec![
            broker.broker_id.to_string(),
            if broker.fenced { "FENCED" } else { "UNFENCED" }.to_owned(),
            format!("{}:{}", broker.host, broker.port),
            broker.rack.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    table(&rows)
}

/// Per broker: partition replicas it hosts and partitions it leads, over every topic. Brokers
/// the cluster lists come first (with zeros), then any other id a replica list names.
fn partitions_table(cluster: &ClusterDescription, topics: &[TopicMetadata]) -> String {
    let mut counts: BTreeMap<i32, (usize, usize)> = cluster
        .brokers
        .iter()
        .map(|broker| (broker.broker_id, (0, 0)))
        .collect();
    for partition in topics.iter().flat_map(|topic| &topic.partitions) {
        for replica in &partition.replicas {
            counts.entry(*replica).or_default().0 += 1;
        }
        if partition.leader >= 0 {
            counts.entry(partition.leader).or_default().1 += 1;
        }
    }
    let mut rows = vec![["BROKER", "REPLICAS", "LEADERS"]
        .map(str::to_owned)
        .to_vec()];
    for (broker, (replicas, leaders)) in counts {
        rows.push(vec![
            broker.to_string(),
            replicas.to_string(),
            leaders.to_string(),
        ]);
    }
    table(&rows)
}

fn number_or_dash(value: Option<i64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::PartitionMetadata;
    use crate::cluster::{ClusterBroker, QuorumReplica};

    fn broker(id: i32, fenced: bool, rack: Option<&str>) -> ClusterBroker {
        ClusterBroker {
            broker_id: id,
            host: "127.0.0.1".to_owned(),
            port: 9000 + id,
            rack: rack.map(str::to_owned),
            fenced,
        }
    }

    fn partition(index: i32, leader: i32, replicas: &[i32]) -> PartitionMetadata {
        PartitionMetadata {
            partition: index,
            leader,
            leader_epoch: 0,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            offline_replicas: Vec::new(),
            error_code: 0,
        }
    }

    #[test]
    fn three_tables() {
        let quorum = QuorumDescription {
            leader_id: 2,
            leader_epoch: 4,
            high_watermark: 30,
            voters: [(1, Some(30)), (2, Some(31)), (3, None)]
                .map(|(id, offset)| QuorumReplica {
                    replica_id: id,
                    log_end_offset: offset,
                })
                .to_vec(),
            observers: Vec::new(),
        };
        assert_eq!(
            controllers_table(&quorum),
            "CONTROLLER  ROLE      TERM  LOG-END-OFFSET  LAG\n\
             1           FOLLOWER  4     30              0\n\
             2           LEADER    4     31              0\n\
             3           FOLLOWER  4     -               -\n"
        );
        let cluster = ClusterDescription {
            cluster_id: "c".to_owned(),
            controller_id: 4,
            brokers: vec![broker(4, false, Some("r1")), broker(5, true, None)],
        };
        assert_eq!(
            brokers_table(&cluster),
            "BROKER  STATE     ENDPOINT        RACK\n\
             4       UNFENCED  127.0.0.1:9004  r1\n\
             5       FENCED    127.0.0.1:9005  -\n"
        );
        let topics = vec![TopicMetadata {
            name: "t".to_owned(),
            topic_id: String::new(),
            internal: false,
            partitions: vec![
                partition(0, 4, &[4, 5]),
                partition(1, -1, &[5, 7]),
                partition(2, 4, &[4]),
            ],
        }];
        assert_eq!(
            partitions_table(&cluster, &topics),
            "BROKER  REPLICAS  LEADERS\n\
             4       2         2\n\
             5       2         0\n\
             7       1         0\n"
        );
    }
}
