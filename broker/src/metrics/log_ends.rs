//! The log end offsets consumer-group lag is measured against, for partitions led by other
//! brokers. A group's coordinator holds its committed offsets, but on a cluster most of the
//! partitions they name are led elsewhere, and only a partition's leader knows its high
//! watermark (a follower's lags behind it). So, as Kafka's own tooling does
//! (`kafka-consumer-groups.sh --describe`, and the exporters operators run beside Kafka:
//! kafka_exporter, Burrow, kafka-lag-exporter), the coordinator asks each leader with
//! ListOffsets(latest) — the high watermark, exactly what `skald group describe` shows — and
//! keeps the answers for the scrape. Like Burrow and kafka-lag-exporter it polls on an interval
//! rather than at scrape time, so a scrape never waits on another broker.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use skald_client::connection::Connection;
use tokio::sync::broadcast;

use crate::broker::Broker;

/// How often the leaders are asked: lag on a cluster is at most this much older than a scrape.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// One leader's answer (connect and ListOffsets); a dead leader delays the others by this much.
const LEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// ListOffsets' "latest" timestamp: the high watermark for a read_uncommitted reader.
const LATEST_TIMESTAMP: i64 = -1;

/// The last high watermark each leader reported, by partition.
#[derive(Debug, Default)]
pub struct LeaderLogEnds {
    ends: Mutex<BTreeMap<(String, i32), i64>>,
}

impl LeaderLogEnds {
    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.map().get(&(topic.to_owned(), partition)).copied()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, i32), i64>> {
        self.ends
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps only the partitions still `wanted`, with the new answers over the old (a leader
    /// that did not answer this round keeps its last figure).
    fn update(&self, wanted: &BTreeSet<(String, i32)>, answered: BTreeMap<(String, i32), i64>) {
        let mut ends = self.map();
        ends.retain(|key, _| wanted.contains(key));
        ends.extend(answered);
    }
}

/// Refreshes `ends` every [`REFRESH_INTERVAL`] until shutdown.
pub async fn run(
    broker: Arc<Broker>,
    ends: Arc<LeaderLogEnds>,
    mut shutdown: broadcast::Receiver<()>,
) {
    let mut ticks = tokio::time::interval(REFRESH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.recv() => return,
        }
        refresh(&broker, &ends).await;
    }
}

/// Asks the leader of every partition the groups coordinated here have offsets for, other
/// than this broker, for its high watermark.
async fn refresh(broker: &Broker, ends: &LeaderLogEnds) {
    let wanted: BTreeSet<(String, i32)> = broker
        .groups
        .all_groups()
        .iter()
        .flat_map(|shared| {
            crate::group::lock(shared)
                .offsets
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect();
    let image = broker.image();
    let mut by_leader: BTreeMap<i32, BTreeMap<&str, Vec<i32>>> = BTreeMap::new();
    for (topic, index) in &wanted {
        let Some(placement) = image.topic(topic).and_then(|t| t.partitions.get(index)) else {
            continue;
        };
        if placement.leader >= 0 && placement.leader != broker.config.node_id {
            by_leader
                .entry(placement.leader)
                .or_default()
                .entry(topic)
                .or_default()
                .push(*index);
        }
    }
    let mut answered = BTreeMap::new();
    for (leader, topics) in by_leader {
        let Some(endpoint) = image.brokers.get(&leader).and_then(|b| b.endpoints.first()) else {
            continue;
        };
        let address = format!("{}:{}", endpoint.host, endpoint.port);
        match tokio::time::timeout(LEADER_TIMEOUT, high_watermarks(&address, &topics)).await {
            Ok(Ok(found)) => answered.extend(found),
            Ok(Err(err)) => tracing::debug!(leader, "cannot read log ends for lag: {err}"),
            Err(_) => tracing::debug!(leader, "log ends for lag timed out"),
        }
    }
    ends.update(&wanted, answered);
}

/// One ListOffsets(latest) to the broker at `address`; the partitions it answered without error.
async fn high_watermarks(
    address: &str,
    topics: &BTreeMap<&str, Vec<i32>>,
) -> Result<BTreeMap<(String, i32), i64>, skald_client::Error> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(
            topics
                .iter()
                .map(|(topic, indexes)| {
                    ListOffsetsTopic::default()
                        .with_name(TopicName(StrBytes::from_string((*topic).to_owned())))
                        .with_partitions(
                            indexes
                                .iter()
                                .map(|&index| {
                                    ListOffsetsPartition::default()
                                        .with_partition_index(index)
                                        .with_timestamp(LATEST_TIMESTAMP)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let response = Connection::connect(address).await?.send(request).await?;
    Ok(response
        .topics
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .filter(|p| p.error_code == 0)
                .map(|p| ((topic.name.to_string(), p.partition_index), p.offset))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_keeps_unanswered_wanted_partitions_and_drops_the_rest() {
        let ends = LeaderLogEnds::default();
        let key = |p: i32| ("orders".to_owned(), p);
        ends.update(
            &BTreeSet::from([key(0), key(1), key(2)]),
            BTreeMap::from([(key(0), 10), (key(1), 11), (key(2), 12)]),
        );
        // Partition 1's leader did not answer; partition 2 is no longer committed to.
        ends.update(
            &BTreeSet::from([key(0), key(1)]),
            BTreeMap::from([(key(0), 20)]),
        );
        assert_eq!(ends.get("orders", 0), Some(20));
        assert_eq!(ends.get("orders", 1), Some(11));
        assert_eq!(ends.get("orders", 2), None);
    }
}
