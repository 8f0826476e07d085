//! `skald cluster info`: the controller quorum, the brokers and how partitions spread over them.
//! `skald cluster rebalance`: the moves that even them out (skald-balancer), started as partition
//! reassignments; `--dry-run` only prints them, `--status` shows those in progress.
//! `skald cluster decommission BROKER`: every replica moved off a broker before it goes.
//! `skald cluster unregister BROKER`: forget a broker that left for good.

use std::collections::BTreeMap;

use crate::client::{Client, TopicMetadata};
use crate::cluster::{ClusterDescription, QuorumDescription};
use crate::error::{Error, Result};
use crate::reassignments::MoveThrottles;

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
    /// Even out replicas, preferred leaders and bytes across the unfenced brokers: plan the
    /// replica moves (keeping each partition's racks spread, leaving under-replicated
    /// partitions alone) and start them as partition reassignments.
    ///
    /// Prints each partition's replicas and target replicas (the first is the preferred
    /// leader), the bytes new replicas would copy, and every broker's load before and after.
    Rebalance {
        /// Only print the plan.
        #[arg(long, conflicts_with = "status")]
        dry_run: bool,
        /// Show the reassignments in progress instead of planning.
        #[arg(long)]
        status: bool,
        /// Wait until the moves are done, then move leadership to each moved partition's
        /// preferred replica.
        #[arg(long, conflicts_with_all = ["dry_run", "status"])]
        wait: bool,
        /// Throttle the copying to this many bytes per second per broker (Kafka's replication
        /// throttles, removed once the moves are done; needs --wait).
        #[arg(long, value_name = "BYTES_PER_SEC", requires = "wait")]
        throttle: Option<u64>,
    },
    /// Take a broker out of the cluster: move every replica off it (partition reassignments,
    /// waited for; leaderships go to each moved partition's preferred replica), then tell it to
    /// shut down (`broker.decommissioned=true`: a controlled shutdown, then its process exits),
    /// wait until it has stopped, and unregister it.
    ///
    /// A controller voter's broker is refused: its process is also the quorum's.
    Decommission {
        /// The broker's id.
        broker: i32,
        /// Throttle the copying to this many bytes per second per broker (Kafka's replication
        /// throttles, removed once the moves are done).
        #[arg(long, value_name = "BYTES_PER_SEC")]
        throttle: Option<u64>,
    },
    /// Unregister a broker that left the cluster for good (stop it first: a running broker
    /// registers again). Its replicas stay listed until the partitions are reassigned.
    Unregister {
        /// The broker's id.
        broker: i32,
    },
}

pub async fn run(args: ClusterArgs) -> Result<()> {
    let mut client = args.brokers.connect().await?;
    match args.command {
        ClusterCommand::Info => info(&mut client).await,
        ClusterCommand::Unregister { broker } => {
            client.unregister_broker(broker).await?;
            out!("unregistered broker {broker}");
            Ok(())
        }
        ClusterCommand::Rebalance {
            dry_run,
            status,
            wait,
            throttle,
        } => rebalance(&mut client, dry_run, status, wait.then_some(throttle)).await,
        ClusterCommand::Decommission { broker, throttle } => {
            decommission(&mut client, broker, throttle).await
        }
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

/// How often `rebalance --wait` asks whether the moves are done.
const REASSIGNMENT_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// `wait`: `Some(throttle)` to wait for the moves (throttled or not), `None` not to.
async fn rebalance(
    client: &mut Client,
    dry_run: bool,
    status: bool,
    wait: Option<Option<u64>>,
) -> Result<()> {
    if status {
        out_raw!("{}", reassignment_status(client).await?);
        return Ok(());
    }
    if !dry_run {
        refuse_while_moving(client).await?;
    }
    let plan = rebalance_plan(client, &skald_balancer::Options::default()).await?;
    out_raw!("{}", plan_text(&plan));
    if dry_run || plan.moves.is_empty() {
        return Ok(());
    }
    carry_out(client, &plan, wait).await?;
    Ok(())
}

/// `skald cluster decommission BROKER`: a plan that drains the broker, carried out and waited
/// for. Refused when some replica cannot leave (fewer other brokers than replicas, or an
/// under-replicated partition).
async fn decommission(client: &mut Client, broker: i32, throttle: Option<u64>) -> Result<()> {
    refuse_while_moving(client).await?;
    if client
        .describe_quorum()
        .await?
        .voters
        .iter()
        .any(|voter| voter.replica_id == broker)
    {
        return Err(Error::InvalidArgument(format!(
            "node {broker} is a controller voter: decommission takes out broker-only nodes \
             (a voter's process is also the quorum's)"
        )));
    }
    let options = skald_balancer::Options {
        drain: [broker].into(),
    };
    let plan = rebalance_plan(client, &options).await?;
    if !plan.before.contains_key(&broker) {
        return Err(Error::InvalidArgument(format!(
            "broker {broker} is not an unfenced broker of this cluster"
        )));
    }
    if !plan.stuck.is_empty() {
        let stuck: Vec<String> = plan
            .stuck
            .iter()
            .map(|(topic, partition, _)| format!("{topic}-{partition}"))
            .collect();
        return Err(Error::InvalidArgument(format!(
            "cannot move every replica off broker {broker} (too few other brokers, or not all \
             in sync): {}",
            stuck.join(", ")
        )));
    }
    out_raw!("{}", plan_text(&plan));
    if !plan.moves.is_empty() && carry_out(client, &plan, Some(throttle)).await? > 0 {
        return Err(Error::InvalidArgument(format!(
            "some replicas could not leave broker {broker}: see above"
        )));
    }
    out!("broker {broker} holds no replicas");
    let address = client
        .describe_cluster(true)
        .await?
        .brokers
        .into_iter()
        .find(|b| b.broker_id == broker)
        .map(|b| {
            if b.host.contains(':') {
                format!("[{}]:{}", b.host, b.port)
            } else {
                format!("{}:{}", b.host, b.port)
            }
        });
    client.decommission_broker(broker).await?;
    // Its controlled shutdown fences it first; then its process exits and its listener closes.
    let deadline = tokio::time::Instant::now() + DECOMMISSION_WAIT;
    loop {
        let cluster = client.describe_cluster(true).await?;
        if cluster
            .brokers
            .iter()
            .all(|b| b.broker_id != broker || b.fenced)
        {
            break;
        }
        wait_until(deadline, || format!("broker {broker} to be fenced")).await?;
    }
    if let Some(address) = address {
        while tokio::net::TcpStream::connect(&address).await.is_ok() {
            wait_until(deadline, || {
                format!("broker {broker}'s listener {address} to close")
            })
            .await?;
        }
    }
    out!("broker {broker} shut down");
    client.unregister_broker(broker).await?;
    out!("unregistered broker {broker}");
    Ok(())
}

/// How long `decommission` waits for the broker to shut down once told to (its controlled
/// shutdown takes a few seconds at most).
const DECOMMISSION_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits a poll interval before the next look, or errs (naming `what` was waited for) once
/// `deadline` has passed.
async fn wait_until(deadline: tokio::time::Instant, what: impl FnOnce() -> String) -> Result<()> {
    if tokio::time::Instant::now() >= deadline {
        return Err(Error::InvalidArgument(format!(
            "waited {DECOMMISSION_WAIT:?} for {}",
            what()
        )));
    }
    tokio::time::sleep(REASSIGNMENT_POLL).await;
    Ok(())
}

/// Starts a plan's moves; with `wait`, waits for them (throttled at the rate it names, the
/// throttles removed after) and elects each moved partition's preferred leader. Returns how
/// many moves the controller refused (each printed).
async fn carry_out(
    client: &mut Client,
    plan: &skald_balancer::Plan,
    wait: Option<Option<u64>>,
) -> Result<usize> {
    let moves: Vec<(String, i32, Option<Vec<i32>>)> = plan
        .moves
        .iter()
        .map(|m| (m.topic.clone(), m.partition, Some(m.target.clone())))
        .collect();
    let throttles = MoveThrottles::of(
        &plan
            .moves
            .iter()
            .map(|m| {
                (
                    m.topic.clone(),
                    m.partition,
                    m.replicas.clone(),
                    m.target.clone(),
                )
            })
            .collect::<Vec<_>>(),
    );
    let throttle = wait.flatten();
    if let Some(rate) = throttle {
        client.set_move_throttles(&throttles, Some(rate)).await?;
        out!("throttled at {rate} bytes/s");
    }
    let (mut started, mut refused) = (Vec::new(), 0);
    for (topic, partition, outcome) in client.alter_partition_reassignments(&moves).await? {
        match outcome {
            Ok(()) => started.push((topic, partition)),
            Err(err) => {
                out!("not started: {err}");
                refused += 1;
            }
        }
    }
    out!("started {} reassignments", started.len());
    if wait.is_none() {
        return Ok(refused);
    }
    loop {
        let ongoing = client.list_partition_reassignments().await?;
        if !ongoing
            .iter()
            .any(|o| started.contains(&(o.topic.clone(), o.partition)))
        {
            break;
        }
        tokio::time::sleep(REASSIGNMENT_POLL).await;
    }
    if throttle.is_some() {
        client.set_move_throttles(&throttles, None).await?;
        out!("throttles removed");
    }
    if started.is_empty() {
        return Ok(refused);
    }
    client.elect_preferred_leaders(&started).await?;
    out!(
        "done: {} partitions moved, each led by its preferred replica",
        started.len()
    );
    Ok(refused)
}

/// Errs while any reassignment is in progress: a plan must start from settled replicas.
async fn refuse_while_moving(client: &mut Client) -> Result<()> {
    if client.list_partition_reassignments().await?.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidArgument(
        "reassignments are in progress: see `skald cluster rebalance --status`".into(),
    ))
}

/// How long `rebalance --status` watches the copying to tell its rate.
const RATE_SAMPLE: std::time::Duration = std::time::Duration::from_secs(1);

/// `rebalance --status`: the reassignments in progress, with the bytes their new replicas have
/// copied (sampled twice, [`RATE_SAMPLE`] apart, for the rate and the time left).
async fn reassignment_status(client: &mut Client) -> Result<String> {
    let ongoing = client.list_partition_reassignments().await?;
    if ongoing.is_empty() {
        return Ok(ongoing_text(&ongoing, &[], None));
    }
    let first = copy_progress(client, &ongoing).await?;
    let started = std::time::Instant::now();
    tokio::time::sleep(RATE_SAMPLE).await;
    let second = copy_progress(client, &ongoing).await?;
    let copied = |progress: &[(u64, u64)]| progress.iter().map(|(c, _)| c).sum::<u64>();
    let rate =
        copied(&second).saturating_sub(copied(&first)) as f64 / started.elapsed().as_secs_f64();
    Ok(ongoing_text(&ongoing, &second, Some(rate)))
}

/// Per reassignment: (bytes copied, bytes to copy) — what its adding replicas hold of the
/// largest copy among the others, once per adding replica (DescribeLogDirs of each broker).
async fn copy_progress(
    client: &mut Client,
    ongoing: &[crate::reassignments::OngoingReassignment],
) -> Result<Vec<(u64, u64)>> {
    let mut sizes: BTreeMap<i32, BTreeMap<(String, i32), u64>> = BTreeMap::new();
    for broker in ongoing.iter().flat_map(|o| &o.replicas) {
        if !sizes.contains_key(broker) {
            let on_broker = client.replica_sizes(*broker).await.unwrap_or_default();
            sizes.insert(*broker, on_broker);
        }
    }
    Ok(ongoing
        .iter()
        .map(|o| {
            let key = (o.topic.clone(), o.partition);
            let size = |broker: &i32| sizes.get(broker).and_then(|s| s.get(&key)).copied();
            let source = o
                .replicas
                .iter()
                .filter(|b| !o.adding.contains(b))
                .filter_map(size)
                .max()
                .unwrap_or(0);
            let copied = o
                .adding
                .iter()
                .map(|b| size(b).unwrap_or(0).min(source))
                .sum();
            (copied, source * o.adding.len() as u64)
        })
        .collect())
}

/// The reassignments in progress as a table with each one's copying (or a line saying there
/// are none), then the totals, the rate and the time left when a `rate` was measured.
fn ongoing_text(
    ongoing: &[crate::reassignments::OngoingReassignment],
    progress: &[(u64, u64)],
    rate: Option<f64>,
) -> String {
    if ongoing.is_empty() {
        return "no reassignments in progress\n".to_owned();
    }
    let mut rows = vec![[
        "TOPIC",
        "PARTITION",
        "REPLICAS",
        "ADDING",
        "REMOVING",
        "COPIED",
    ]
    .map(str::to_owned)
    .to_vec()];
    for (index, o) in ongoing.iter().enumerate() {
        let copied = progress
            .get(index)
            .map_or_else(|| "-".to_owned(), |(c, t)| format!("{c}/{t}"));
        rows.push(vec![
            o.topic.clone(),
            o.partition.to_string(),
            joined(&o.replicas),
            joined(&o.adding),
            joined(&o.removing),
            copied,
        ]);
    }
    let mut text = table(&rows);
    let (copied, total) = progress
        .iter()
        .fold((0u64, 0u64), |(c, t), (pc, pt)| (c + pc, t + pt));
    if let Some(rate) = rate {
        let left = total.saturating_sub(copied);
        let eta = if left == 0 {
            "none left".to_owned()
        } else if rate >= 1.0 {
            format!("about {:.0} s left", left as f64 / rate)
        } else {
            "no progress in the last second".to_owned()
        };
        text.push_str(&format!(
            "{} reassignments; copied {copied} of {total} bytes at {rate:.0} bytes/s; {eta}\n",
            ongoing.len()
        ));
    }
    text
}

/// Broker ids as `1,2,3` (`-` for none).
fn joined(ids: &[i32]) -> String {
    if ids.is_empty() {
        return "-".to_owned();
    }
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// Plans a rebalance of the cluster as it is now: unfenced brokers, every topic's partitions,
/// sizes from each broker's log dirs.
async fn rebalance_plan(
    client: &mut Client,
    options: &skald_balancer::Options,
) -> Result<skald_balancer::Plan> {
    let cluster = client.describe_cluster(false).await?;
    let topics = client.list_topic_metadata().await?;
    let mut sizes: BTreeMap<(String, i32), u64> = BTreeMap::new();
    for broker in cluster.brokers.iter().filter(|b| !b.fenced) {
        for (partition, size) in client.replica_sizes(broker.broker_id).await? {
            let largest = sizes.entry(partition).or_default();
            *largest = (*largest).max(size);
        }
    }
    let brokers: Vec<skald_balancer::Broker> = cluster
        .brokers
        .iter()
        .filter(|b| !b.fenced)
        .map(|b| skald_balancer::Broker {
            id: b.broker_id,
            rack: b.rack.clone(),
        })
        .collect();
    let partitions: Vec<skald_balancer::Partition> = topics
        .iter()
        .flat_map(|topic| {
            let sizes = &sizes;
            topic
                .partitions
                .iter()
                .map(move |p| skald_balancer::Partition {
                    topic: topic.name.clone(),
                    partition: p.partition,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    size_bytes: sizes
                        .get(&(topic.name.clone(), p.partition))
                        .copied()
                        .unwrap_or(0),
                })
        })
        .collect();
    Ok(skald_balancer::plan(&brokers, &partitions, options))
}

/// A plan as text: a summary line, the moves, then every broker's load before → after.
fn plan_text(plan: &skald_balancer::Plan) -> String {
    let mut text = format!(
        "{} partitions to change: {} replicas to add ({} bytes), {} only reordered\n",
        plan.moves.len(),
        plan.replicas_added(),
        plan.bytes(),
        plan.moves.len() - plan.moves.iter().filter(|m| adds_replicas(m)).count(),
    );
    if !plan.moves.is_empty() {
        let mut rows = vec![["TOPIC", "PARTITION", "REPLICAS", "TARGET", "BYTES"]
            .map(str::to_owned)
            .to_vec()];
        for m in &plan.moves {
            rows.push(vec![
                m.topic.clone(),
                m.partition.to_string(),
                joined(&m.replicas),
                joined(&m.target),
                m.bytes.to_string(),
            ]);
        }
        text.push('\n');
        text.push_str(&table(&rows));
    }
    let mut rows = vec![["BROKER", "REPLICAS", "LEADERS", "BYTES"]
        .map(str::to_owned)
        .to_vec()];
    for (broker, after) in &plan.after {
        let before = plan.before.get(broker).copied().unwrap_or_default();
        rows.push(vec![
            broker.to_string(),
            format!("{} -> {}", before.replicas, after.replicas),
            format!("{} -> {}", before.leaders, after.leaders),
            format!("{} -> {}", before.bytes, after.bytes),
        ]);
    }
    text.push('\n');
    text.push_str(&table(&rows));
    for (topic, partition) in &plan.under_replicated {
        text.push_str(&format!(
            "left alone (under-replicated): {topic}-{partition}\n"
        ));
    }
    text
}

/// Whether a move puts a replica on a broker that has none of the partition yet.
fn adds_replicas(m: &skald_balancer::Move) -> bool {
    m.target.iter().any(|b| !m.replicas.contains(b))
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

    #[test]
    fn a_plan_as_text() {
        let partition = |index: i32, replicas: &[i32], size_bytes: u64| skald_balancer::Partition {
            topic: "t".to_owned(),
            partition: index,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            size_bytes,
        };
        let brokers: Vec<skald_balancer::Broker> = [1, 2, 3]
            .map(|id| skald_balancer::Broker { id, rack: None })
            .to_vec();
        // Broker 3 is new; partition 2 has a replica out of sync, so it stays (and keeps its
        // preferred leader 1, which the leader count includes). Followers move first.
        let mut partitions = vec![
            partition(0, &[1, 2], 100),
            partition(1, &[2, 1], 300),
            partition(2, &[1, 2], 50),
        ];
        partitions[2].isr = vec![1];
        let plan = skald_balancer::plan(&brokers, &partitions, &Default::default());
        assert_eq!(
            plan_text(&plan),
            "2 partitions to change: 2 replicas to add (400 bytes), 0 only reordered\n\
             \n\
             TOPIC  PARTITION  REPLICAS  TARGET  BYTES\n\
             t      0          1,2       3,1     100\n\
             t      1          2,1       2,3     300\n\
             \n\
             BROKER  REPLICAS  LEADERS  BYTES\n\
             1       3 -> 2    2 -> 1   450 -> 150\n\
             2       3 -> 2    1 -> 1   450 -> 350\n\
             3       0 -> 2    0 -> 1   0 -> 400\n\
             left alone (under-replicated): t-2\n"
        );
    }

    #[test]
    fn reassignments_in_progress_with_their_copying() {
        use crate::reassignments::OngoingReassignment;
        assert_eq!(
            ongoing_text(&[], &[], None),
            "no reassignments in progress\n"
        );
        let ongoing = vec![
            OngoingReassignment {
                topic: "t".into(),
                partition: 0,
                replicas: vec![4, 2, 1],
                adding: vec![4],
                removing: vec![1],
            },
            OngoingReassignment {
                topic: "t".into(),
                partition: 3,
                replicas: vec![3, 4],
                adding: vec![3, 4],
                removing: vec![],
            },
        ];
        assert_eq!(
            ongoing_text(&ongoing, &[(100, 400), (0, 0)], Some(50.0)),
            "TOPIC  PARTITION  REPLICAS  ADDING  REMOVING  COPIED\n\
             t      0          4,2,1     4       1         100/400\n\
             t      3          3,4       3,4     -         0/0\n\
             2 reassignments; copied 100 of 400 bytes at 50 bytes/s; about 6 s left\n"
        );
        assert!(ongoing_text(&ongoing, &[(100, 400), (0, 0)], Some(0.0))
            .ends_with("at 0 bytes/s; no progress in the last second\n"));
    }
}
