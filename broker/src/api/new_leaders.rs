//! KIP-951: a client sent to a broker that no longer leads a partition is told the current leader
//! in the refusal itself (Fetch v16+, Produce v10+), with that leader's endpoint, so it can move
//! without waiting for a metadata refresh. The lookups both responses share; each fills its own
//! message types.

use std::collections::BTreeSet;

use skald_controller::{MetadataImage, NO_LEADER};

/// `topic`-`partition`'s current leader and leader epoch, if it has one.
pub fn current_leader(image: &MetadataImage, topic: &str, partition: i32) -> Option<(i32, i32)> {
    image
        .topic(topic)
        .and_then(|known| known.partitions.get(&partition))
        .filter(|placement| placement.leader != NO_LEADER)
        .map(|placement| (placement.leader, placement.leader_epoch))
}

/// A leader's endpoint as KIP-951 responses carry it.
pub struct LeaderEndpoint {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// The endpoints of `leaders` (each registered broker's first listener), in id order.
pub fn endpoints(image: &MetadataImage, leaders: &BTreeSet<i32>) -> Vec<LeaderEndpoint> {
    leaders
        .iter()
        .filter_map(|&leader| {
            let registered = image.brokers.get(&leader)?;
            let endpoint = registered.endpoints.first()?;
            Some(LeaderEndpoint {
                node_id: leader,
                host: endpoint.host.clone(),
                port: i32::from(endpoint.port),
                rack: registered.rack.clone(),
            })
        })
        .collect()
}
