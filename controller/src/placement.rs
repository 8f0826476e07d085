//! Replica placement for new partitions: striped round-robin over the unfenced brokers, spreading
//! each partition's replicas over as many racks as there are (Kafka's rack-aware assignment).
//!
//! Fenced brokers are left out, so a broker that has just joined (and been unfenced) takes new
//! partitions at once, and a dead one takes none; so are decommissioned ones, which hold no
//! replica and are stopping for good (between the flag and their fencing a new partition could
//! otherwise land there and lose a replica at once). The stripe starts at an offset the caller picks
//! (the topic id, which is random), so many one-partition topics do not all land on one broker.

use std::collections::{BTreeMap, HashSet};

use crate::error::TopicError;
use crate::image::MetadataImage;

/// Replicas for partitions `first_partition .. first_partition + count`, leader first.
pub fn place_replicas(
    image: &MetadataImage,
    start: u64,
    first_partition: i32,
    count: i32,
    replication_factor: i16,
) -> Result<Vec<Vec<i32>>, TopicError> {
    let brokers = rack_alternating_brokers(image);
    let replication_factor = replication_factor as usize;
    if brokers.is_empty() || replication_factor > brokers.len() {
        return Err(TopicError::InvalidReplicationFactor(format!(
            "Unable to replicate the partition {replication_factor} time(s): The target replication factor of {replication_factor} cannot be reached because only {} broker(s) are registered.",
            brokers.len()
        )));
    }
    let rack_count = brokers
        .iter()
        .map(|(_, rack)| rack)
        .collect::<HashSet<_>>()
        .len();
    let n = brokers.len();
    let start = (start % n as u64) as usize;
    Ok((first_partition..first_partition + count)
        .map(|partition| {
            let first = (start + partition as usize) % n;
            // Later partitions also shift where their followers start, as Kafka does, so the
            // followers of one broker's leaderships are spread over the others.
            let shift = 1 + (partition as usize / n) % (n - 1).max(1);
            let mut replicas = vec![brokers[first].0];
            let mut racks_used = HashSet::from([&brokers[first].1]);
            let mut candidate = first;
            while replicas.len() < replication_factor {
                candidate = (candidate + shift) % n;
                let (broker, rack) = &brokers[candidate];
                if replicas.contains(broker) {
                    // A full cycle under this shift: take the next broker not yet used.
                    if let Some((broker, rack)) = (1..n)
                        .map(|step| &brokers[(candidate + step) % n])
                        .find(|(b, _)| !replicas.contains(b))
                    {
                        racks_used.insert(rack);
                        replicas.push(*broker);
                    }
                    continue;
                }
                // Prefer a rack not yet used while there is one.
                if racks_used.len() < rack_count && racks_used.contains(rack) {
                    continue;
                }
                racks_used.insert(rack);
                replicas.push(*broker);
            }
            replicas
        })
        .collect())
}

/// The unfenced brokers not decommissioned, ordered so consecutive brokers sit on different
/// racks where possible:
/// racks `a: [1, 4]`, `b: [2]`, `c: [3, 5]` give `1, 2, 3, 4, 5`. Brokers without a rack form
/// one rack of their own.
fn rack_alternating_brokers(image: &MetadataImage) -> Vec<(i32, Option<String>)> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    let placeable = |broker: &&crate::image::BrokerImage| {
        !broker.fenced && !crate::topic_config::is_decommissioned(image, broker.broker_id)
    };
    for broker in image.brokers.values().filter(placeable) {
        by_rack
            .entry(broker.rack.as_deref())
            .or_default()
            .push(broker.broker_id);
    }
    let longest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| {
            by_rack
                .iter()
                .filter_map(move |(rack, ids)| ids.get(i).map(|id| (*id, rack.map(String::from))))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::BrokerImage;

    fn image(brokers: &[(i32, Option<&str>, bool)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (id, rack, fenced) in brokers {
            image.brokers.insert(
                *id,
                BrokerImage {
                    broker_id: *id,
                    incarnation_id: 1,
                    broker_epoch: 1,
                    endpoints: Vec::new(),
                    rack: rack.map(String::from),
                    fenced: *fenced,
                },
            );
        }
        image
    }

    #[test]
    fn replicas_stripe_over_unfenced_brokers_only() {
        let image = image(&[
            (1, None, false),
            (2, None, true),
            (3, None, false),
            (4, None, false),
        ]);
        let placed = place_replicas(&image, 0, 0, 3, 2).unwrap();
        assert_eq!(placed, vec![vec![1, 3], vec![3, 4], vec![4, 1]]);
        let leaders: Vec<i32> = place_replicas(&image, 0, 0, 6, 1)
            .unwrap()
            .into_iter()
            .map(|r| r[0])
            .collect();
        assert_eq!(leaders, vec![1, 3, 4, 1, 3, 4]);
        // The start offset moves the first leader.
        assert_eq!(place_replicas(&image, 1, 0, 1, 1).unwrap(), vec![vec![3]]);
        assert!(matches!(
            place_replicas(&image, 0, 0, 1, 4),
            Err(TopicError::InvalidReplicationFactor(_))
        ));
    }

    #[test]
    fn a_decommissioned_broker_gets_no_new_replica() {
        let mut image = image(&[(1, None, false), (2, None, false), (3, None, false)]);
        image.replay(&crate::record::MetadataRecord::Config {
            resource: crate::record::ConfigResource::Broker(2),
            name: crate::topic_config::BROKER_DECOMMISSIONED.into(),
            value: Some("true".into()),
        });
        let placed = place_replicas(&image, 0, 0, 4, 2).unwrap();
        assert_eq!(placed, vec![vec![1, 3], vec![3, 1], vec![1, 3], vec![3, 1]]);
        assert!(matches!(
            place_replicas(&image, 0, 0, 1, 3),
            Err(TopicError::InvalidReplicationFactor(_))
        ));
    }

    #[test]
    fn every_partition_spans_as_many_racks_as_it_can() {
        let image = image(&[
            (1, Some("a"), false),
            (2, Some("a"), false),
            (3, Some("b"), false),
            (4, Some("b"), false),
            (5, Some("c"), false),
            (6, Some("c"), false),
        ]);
        let rack_of = |id: i32| image.brokers[&id].rack.clone().unwrap();
        for start in 0..6 {
            let placed = place_replicas(&image, start, 0, 12, 3).unwrap();
            for replicas in &placed {
                let distinct: HashSet<i32> = replicas.iter().copied().collect();
                assert_eq!(distinct.len(), 3, "{replicas:?}");
                let racks: HashSet<String> = replicas.iter().map(|id| rack_of(*id)).collect();
                assert_eq!(racks.len(), 3, "{replicas:?}");
            }
            // Leadership is spread evenly.
            let mut leaders = BTreeMap::new();
            for replicas in &placed {
                *leaders.entry(replicas[0]).or_insert(0) += 1;
            }
            assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2; 6]);
        }
        // Two racks, RF 3: both racks are used and no broker repeats.
        let two_racks = image_two_racks();
        for replicas in place_replicas(&two_racks, 0, 0, 8, 3).unwrap() {
            let distinct: HashSet<i32> = replicas.iter().copied().collect();
            assert_eq!(distinct.len(), 3, "{replicas:?}");
            let racks: HashSet<_> = replicas
                .iter()
                .map(|id| two_racks.brokers[id].rack.clone())
                .collect();
            assert_eq!(racks.len(), 2, "{replicas:?}");
        }
    }

    fn image_two_racks() -> MetadataImage {
        image(&[
            (1, Some("a"), false),
            (2, Some("a"), false),
            (3, Some("b"), false),
            (4, Some("b"), false),
        ])
    }
}
