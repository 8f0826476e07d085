//! Broker liveness as the active controller sees it: when each broker last heartbeated. This is
//! soft state, kept only on the leader and never in the log (KRaft's BrokerHeartbeatManager): a
//! new leader starts every broker with a full session, so a controller failover fences nobody.

use std::collections::HashMap;

use crate::image::MetadataImage;

#[derive(Debug)]
pub struct BrokerLiveness {
    session_timeout_ms: u64,
    last_contact_ms: HashMap<i32, u64>,
}

impl BrokerLiveness {
    /// `broker.session.timeout.ms`.
    pub fn new(session_timeout_ms: u64) -> BrokerLiveness {
        BrokerLiveness {
            session_timeout_ms,
            last_contact_ms: HashMap::new(),
        }
    }

    /// Starts every broker's session afresh (this controller has just become the leader).
    pub fn reset(&mut self, now_ms: u64) {
        for last in self.last_contact_ms.values_mut() {
            *last = now_ms;
        }
    }

    /// A heartbeat or registration from `broker_id`.
    pub fn touch(&mut self, broker_id: i32, now_ms: u64) {
        self.last_contact_ms.insert(broker_id, now_ms);
    }

    /// Unfenced brokers, with their epochs, that have been silent for longer than the session
    /// timeout. A broker in the image this controller has never heard from gets its session
    /// counted from now.
    pub fn expired(&mut self, image: &MetadataImage, now_ms: u64) -> Vec<(i32, i64)> {
        self.last_contact_ms
            .retain(|broker_id, _| image.brokers.contains_key(broker_id));
        image
            .brokers
            .values()
            .filter(|broker| !broker.fenced)
            .filter(|broker| {
                let last = *self
                    .last_contact_ms
                    .entry(broker.broker_id)
                    .or_insert(now_ms);
                now_ms.saturating_sub(last) > self.session_timeout_ms
            })
            .map(|broker| (broker.broker_id, broker.broker_epoch))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::BrokerImage;

    fn image(brokers: &[(i32, bool)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (id, fenced) in brokers {
            image.brokers.insert(
                *id,
                BrokerImage {
                    broker_id: *id,
                    incarnation_id: 1,
                    broker_epoch: i64::from(*id) * 10,
                    endpoints: Vec::new(),
                    rack: None,
                    fenced: *fenced,
                },
            );
        }
        image
    }

    #[test]
    fn silent_unfenced_brokers_expire_after_the_session_timeout() {
        let image = image(&[(1, false), (2, false), (3, true)]);
        let mut liveness = BrokerLiveness::new(9_000);
        liveness.touch(1, 1_000);
        liveness.touch(3, 1_000);
        // Broker 2 was never heard from: its session starts now.
        assert_eq!(liveness.expired(&image, 5_000), vec![]);
        liveness.touch(1, 9_000);
        assert_eq!(liveness.expired(&image, 14_000), vec![]);
        assert_eq!(liveness.expired(&image, 14_001), vec![(2, 20)]);
        // Fenced broker 3 never expires again; broker 1 does once silent long enough.
        assert_eq!(liveness.expired(&image, 18_001), vec![(1, 10), (2, 20)]);
        liveness.reset(18_001);
        assert_eq!(liveness.expired(&image, 27_001), vec![]);
    }
}
