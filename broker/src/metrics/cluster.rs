//! The cluster as the metadata says, exported by the active controller alone (Kafka's controller
//! metrics: `OfflinePartitionsCount`, `GlobalTopicCount`, `GlobalPartitionCount`,
//! `FencedBrokerCount` / `ActiveBrokerCount`, and the partitions being reassigned). Every node serves the same metadata, so if each
//! exported these a sum over the cluster would count every partition once per node; only the
//! node that is the active controller at scrape time reports them, and the others report no
//! sample at all, so `sum()` over the cluster is the cluster's figure.

use std::sync::Weak;

use prometheus::core::Collector;
use prometheus::{IntGauge, IntGaugeVec, Opts};

use crate::broker::Broker;

pub struct ClusterCollector {
    broker: Weak<Broker>,
    leaderless: IntGauge,
    under_min_isr: IntGauge,
    topics: IntGauge,
    partitions: IntGauge,
    reassigning: IntGauge,
    brokers: IntGaugeVec,
}

impl ClusterCollector {
    pub fn new(broker: Weak<Broker>) -> Result<ClusterCollector, prometheus::Error> {
        Ok(ClusterCollector {
            broker,
            leaderless: IntGauge::new(
                "skald_leaderless_partitions",
                "Partitions of the cluster without a leader (active controller only)",
            )?,
            under_min_isr: IntGauge::new(
                "skald_cluster_under_min_isr_partitions",
                "Partitions of the cluster whose ISR is smaller than min.insync.replicas \
                 (active controller only)",
            )?,
            topics: IntGauge::new(
                "skald_cluster_topics",
                "Topics in the cluster (active controller only)",
            )?,
            partitions: IntGauge::new(
                "skald_cluster_partitions",
                "Partitions in the cluster (active controller only)",
            )?,
            reassigning: IntGauge::new(
                "skald_cluster_reassigning_partitions",
                "Partitions with a reassignment in progress (active controller only)",
            )?,
            brokers: IntGaugeVec::new(
                Opts::new(
                    "skald_brokers",
                    "Registered brokers, by state: fenced, unfenced (active controller only)",
                ),
                &["state"],
            )?,
        })
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for ClusterCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        [
            self.leaderless.desc(),
            self.under_min_isr.desc(),
            self.topics.desc(),
            self.partitions.desc(),
            self.reassigning.desc(),
            self.brokers.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let Some(broker) = self.broker.upgrade() else {
            return Vec::new();
        };
        if broker.metrics.controller_active.get() != 1 {
            return Vec::new();
        }
        let image = broker.image();
        let (mut partitions, mut leaderless, mut under_min_isr, mut reassigning) = (0, 0, 0, 0);
        for topic in image.topics.values() {
            let min_isr: usize = crate::dynamic_config::BrokerDefaults::new(&broker.config, &image)
                .topic_config(&topic.configs, "min.insync.replicas")
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(1);
            for partition in topic.partitions.values() {
                partitions += 1;
                if partition.leader < 0 {
                    leaderless += 1;
                }
                if partition.isr.len() < min_isr {
                    under_min_isr += 1;
                }
                if !partition.adding_replicas.is_empty() || !partition.removing_replicas.is_empty()
                {
                    reassigning += 1;
                }
            }
        }
        self.leaderless.set(leaderless);
        self.under_min_isr.set(under_min_isr);
        self.topics.set(count(image.topics.len()));
        self.partitions.set(partitions);
        self.reassigning.set(reassigning);
        let fenced = image.brokers.values().filter(|b| b.fenced).count();
        self.brokers
            .with_label_values(&["fenced"])
            .set(count(fenced));
        self.brokers
            .with_label_values(&["unfenced"])
            .set(count(image.brokers.len() - fenced));
        [
            self.leaderless.collect(),
            self.under_min_isr.collect(),
            self.topics.collect(),
            self.partitions.collect(),
            self.reassigning.collect(),
            self.brokers.collect(),
        ]
        .concat()
    }
}
