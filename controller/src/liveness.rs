//! Broker liveness as the active controller sees it: when each broker last heartbeated. This is
//! soft state, kept only on the leader and never in the log (KRaft's BrokerHeartbeatManager).
//!
//! Silence is evidence against a broker only while this controller was leading and running the
//! whole time, so sessions start afresh
//! - when this node starts leading (a new leader term): a broker heartbeats to whoever it thinks
//!   leads, and it can take a while to learn of the new one, so every broker gets a full session
//!   from the election;
//! - when the controller itself was not running for a while (a stalled process, a paused VM, a
//!   long fsync): heartbeats could not reach it meanwhile, and a leader that has just woken up may
//!   not even know yet that it was deposed. Fencing on what it saw before would fence healthy
//!   brokers, so it starts every session again instead.
//!
//! Acting on less than a session's silence (the driver's probe of an unresponsive broker) needs a
//! tighter guarantee: that this controller ran, without a gap of even a second, from the moment
//! a broker's silence began to the moment it acts ([`BrokerLiveness::ran_throughout`]).
//!
//! Time comes in as `now_ms` (any monotonic millisecond clock), so tests drive it.

use std::collections::HashMap;

use crate::image::MetadataImage;

#[derive(Debug)]
pub struct BrokerLiveness {
    session_timeout_ms: u64,
    /// How often the checks are meant to run (the controller's tick).
    check_interval_ms: u64,
    /// The leader term the sessions were started in; `None` when this node does not lead.
    term: Option<u64>,
    /// When [`BrokerLiveness::expired`] last ran.
    last_check_ms: Option<u64>,
    /// When this node started leading in `term`.
    term_start_ms: u64,
    /// When, in this term, a check last came more than [`BrokerLiveness::late_check_ms`] after
    /// the one before it.
    late_check_at_ms: Option<u64>,
    last_contact_ms: HashMap<i32, u64>,
}

impl BrokerLiveness {
    /// `broker.session.timeout.ms`, and how often [`BrokerLiveness::expired`] is meant to run.
    pub fn new(session_timeout_ms: u64, check_interval_ms: u64) -> BrokerLiveness {
        BrokerLiveness {
            session_timeout_ms,
            check_interval_ms,
            term: None,
            last_check_ms: None,
            term_start_ms: 0,
            late_check_at_ms: None,
            last_contact_ms: HashMap::new(),
        }
    }

    /// The longest gap between checks that still counts as running throughout, for
    /// [`BrokerLiveness::ran_throughout`]: three check intervals, never under a second. Far
    /// tighter than the stall threshold, since what relies on it acts long before a session.
    pub fn late_check_ms(&self) -> u64 {
        self.check_interval_ms.saturating_mul(3).max(1_000)
    }

    /// Whether this node led, in one term, and kept checking with no gap longer than
    /// [`BrokerLiveness::late_check_ms`] from `since_ms` up to `now_ms` (the gap since the last
    /// check included: a controller just waking up has not checked yet). Only then is silence it
    /// saw over that span the broker's, not its own.
    pub fn ran_throughout(&self, since_ms: u64, now_ms: u64) -> bool {
        let late_ms = self.late_check_ms();
        self.term.is_some()
            && self.term_start_ms <= since_ms
            && self
                .last_check_ms
                .is_some_and(|last| now_ms.saturating_sub(last) <= late_ms)
            && self.late_check_at_ms.is_none_or(|at| at < since_ms)
    }

    /// When this controller last heard from `broker_id` in its term (a session restart counts).
    pub fn last_contact_ms(&self, broker_id: i32) -> Option<u64> {
        self.term?;
        self.last_contact_ms.get(&broker_id).copied()
    }

    /// How long the checks may pause before the controller counts itself as having stalled. A
    /// quarter of the session: a stall shorter than that leaves a broker that heartbeats every
    /// interval well inside its session; a longer one may have swallowed its heartbeats. Never
    /// less than three check intervals, or a slow tick (a long election timeout) beside a short
    /// session would count every check as a stall, and no silent broker would ever be fenced.
    pub fn stall_threshold_ms(&self) -> u64 {
        (self.session_timeout_ms / 4)
            .max(self.check_interval_ms.saturating_mul(3))
            .max(1)
    }

    /// This node leads in `term` as of `now_ms`. A new term starts every session afresh.
    pub fn lead(&mut self, term: u64, now_ms: u64) {
        if self.term != Some(term) {
            self.term = Some(term);
            self.last_check_ms = Some(now_ms);
            self.term_start_ms = now_ms;
            self.late_check_at_ms = None;
            self.restart_sessions(now_ms);
        }
    }

    /// This node no longer leads: what it knew of brokers' sessions is void.
    pub fn resign(&mut self) {
        self.term = None;
        self.last_check_ms = None;
        self.last_contact_ms.clear();
    }

    /// A heartbeat or registration from `broker_id`, received while leading in `term`.
    pub fn touch(&mut self, broker_id: i32, term: u64, now_ms: u64) {
        self.lead(term, now_ms);
        self.last_contact_ms.insert(broker_id, now_ms);
    }

    /// Whether `broker_id` has been silent since `since_ms`: heard from in this term, but not
    /// after `since_ms`. A broker this controller has not heard from in its term is not known to
    /// be silent (its heartbeats may have gone to the previous controller), so `false`.
    pub fn silent_since(&self, broker_id: i32, since_ms: u64) -> bool {
        self.term.is_some()
            && self
                .last_contact_ms
                .get(&broker_id)
                .is_some_and(|last| *last <= since_ms)
    }

    /// Unfenced brokers, with their epochs, this controller has not heard from for more than
    /// `silence_ms` in its term (counted from the term's start for those it never heard from):
    /// worth a look at whether their process is still there, long before their session ends.
    pub fn silent_longer_than(
        &self,
        image: &MetadataImage,
        now_ms: u64,
        silence_ms: u64,
    ) -> Vec<(i32, i64)> {
        if self.term.is_none() {
            return Vec::new();
        }
        image
            .brokers
            .values()
            .filter(|broker| !broker.fenced)
            .filter(|broker| {
                self.last_contact_ms
                    .get(&broker.broker_id)
                    .is_some_and(|last| now_ms.saturating_sub(*last) > silence_ms)
            })
            .map(|broker| (broker.broker_id, broker.broker_epoch))
            .collect()
    }

    fn restart_sessions(&mut self, now_ms: u64) {
        for last in self.last_contact_ms.values_mut() {
            *last = now_ms;
        }
    }

    /// Unfenced brokers, with their epochs, that have been silent for longer than the session
    /// timeout while this node led in `term` and kept checking. A broker in the image this
    /// controller has never heard from gets its session counted from now. Called on every tick of
    /// the leader.
    pub fn expired(&mut self, image: &MetadataImage, term: u64, now_ms: u64) -> Expired {
        self.lead(term, now_ms);
        let last_check_ms = self.last_check_ms.replace(now_ms).unwrap_or(now_ms);
        let stalled_ms = now_ms.saturating_sub(last_check_ms);
        if stalled_ms > self.late_check_ms() {
            self.late_check_at_ms = Some(now_ms);
        }
        if stalled_ms > self.stall_threshold_ms() {
            self.restart_sessions(now_ms);
            return Expired::Stalled { stalled_ms };
        }
        self.last_contact_ms
            .retain(|broker_id, _| image.brokers.contains_key(broker_id));
        let brokers = image
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
            .collect();
        Expired::Brokers(brokers)
    }
}

/// What a liveness check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expired {
    /// These brokers' (id, epoch) sessions expired: fence them.
    Brokers(Vec<(i32, i64)>),
    /// The checks had stopped for `stalled_ms` (this controller was not running): every session
    /// starts again and nobody is fenced.
    Stalled { stalled_ms: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stall_threshold_is_a_quarter_session_but_never_under_three_checks() {
        assert_eq!(BrokerLiveness::new(9_000, 100).stall_threshold_ms(), 2_250);
        // A 1 s tick (a 10 s election timeout) beside a 1.5 s session: a regular check is no
        // stall.
        assert_eq!(
            BrokerLiveness::new(1_500, 1_000).stall_threshold_ms(),
            3_000
        );
    }
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

    /// Checks every `step_ms` from `from_ms` up to `to_ms` (as the leader's ticks do) and returns
    /// the first expiry, with when it happened.
    fn check_until(
        liveness: &mut BrokerLiveness,
        image: &MetadataImage,
        term: u64,
        from_ms: u64,
        to_ms: u64,
    ) -> Option<(u64, Vec<(i32, i64)>)> {
        (from_ms..=to_ms)
            .step_by(100)
            .find_map(|now| match liveness.expired(image, term, now) {
                Expired::Brokers(brokers) if !brokers.is_empty() => Some((now, brokers)),
                _ => None,
            })
    }

    #[test]
    fn silent_unfenced_brokers_expire_after_the_session_timeout() {
        let image = image(&[(1, false), (2, false), (3, true)]);
        let mut liveness = BrokerLiveness::new(9_000, 100);
        liveness.touch(1, 7, 1_000);
        liveness.touch(3, 7, 1_000);
        // Broker 2 was never heard from: its session starts at the first check.
        assert_eq!(liveness.expired(&image, 7, 1_000), Expired::Brokers(vec![]));
        assert_eq!(check_until(&mut liveness, &image, 7, 1_100, 9_000), None);
        liveness.touch(1, 7, 9_000);
        // Broker 2: silent for more than 9 s after 10,000; fenced broker 3 never expires.
        assert_eq!(
            check_until(&mut liveness, &image, 7, 9_100, 20_000),
            Some((10_100, vec![(2, 20)]))
        );
        // Still expired until it is fenced; broker 1 follows 9 s after its last heartbeat.
        for now in (10_200..=18_000).step_by(100) {
            assert_eq!(
                liveness.expired(&image, 7, now),
                Expired::Brokers(vec![(2, 20)])
            );
        }
        assert_eq!(
            liveness.expired(&image, 7, 18_100),
            Expired::Brokers(vec![(1, 10), (2, 20)])
        );
    }

    #[test]
    fn a_broker_is_silent_since_a_moment_only_if_heard_from_before_and_not_after() {
        let mut liveness = BrokerLiveness::new(9_000, 100);
        // Not leading: nobody is known to be silent.
        assert!(!liveness.silent_since(1, 5_000));
        liveness.touch(1, 4, 1_000);
        liveness.lead(4, 1_000);
        assert!(liveness.silent_since(1, 1_000));
        assert!(liveness.silent_since(1, 5_000));
        // A heartbeat after the moment (a reconnect) clears it.
        liveness.touch(1, 4, 1_200);
        assert!(!liveness.silent_since(1, 1_100));
        // Never heard from in this term: not known to be silent.
        assert!(!liveness.silent_since(2, 5_000));
        // A new term forgets who was heard from when: everyone gets a fresh start.
        liveness.resign();
        assert!(!liveness.silent_since(1, 5_000));
    }

    #[test]
    fn brokers_silent_longer_than_a_bound_are_listed_unless_fenced() {
        let image = image(&[(1, false), (2, false), (3, true)]);
        let mut liveness = BrokerLiveness::new(9_000, 100);
        assert_eq!(liveness.silent_longer_than(&image, 5_000, 1_000), vec![]);
        liveness.touch(1, 4, 1_000);
        liveness.touch(3, 4, 1_000);
        // The first check counts broker 2's silence from then.
        assert_eq!(liveness.expired(&image, 4, 1_000), Expired::Brokers(vec![]));
        liveness.touch(1, 4, 4_000);
        assert_eq!(liveness.silent_longer_than(&image, 5_000, 4_000), vec![]);
        assert_eq!(
            liveness.silent_longer_than(&image, 5_001, 4_000),
            vec![(2, 20)]
        );
        assert_eq!(
            liveness.silent_longer_than(&image, 8_001, 4_000),
            vec![(1, 10), (2, 20)]
        );
    }

    #[test]
    fn a_new_leader_term_gives_every_broker_a_full_session() {
        let image = image(&[(1, false), (2, false)]);
        let mut liveness = BrokerLiveness::new(9_000, 100);
        // Leading in term 3, this node heard from both brokers long ago, then lost leadership.
        liveness.touch(1, 3, 1_000);
        liveness.touch(2, 3, 1_000);
        assert_eq!(check_until(&mut liveness, &image, 3, 1_000, 5_000), None);
        liveness.resign();
        // Leading again in term 5 at 60 s: the first check must not act on what term 3 saw, and
        // a heartbeat arriving before it starts the term too.
        liveness.touch(2, 5, 60_000);
        assert_eq!(
            liveness.expired(&image, 5, 60_050),
            Expired::Brokers(vec![])
        );
        // Broker 1 says nothing more: a full session from the election.
        assert_eq!(
            check_until(&mut liveness, &image, 5, 60_100, 80_000),
            Some((69_100, vec![(1, 10), (2, 20)]))
        );
    }

    #[test]
    fn the_first_check_of_a_term_starts_sessions_even_without_a_resign() {
        // The driver may see itself leading (and check) before it notices the term changed.
        let image = image(&[(1, false)]);
        let mut liveness = BrokerLiveness::new(9_000, 100);
        liveness.touch(1, 3, 1_000);
        assert_eq!(
            liveness.expired(&image, 4, 50_000),
            Expired::Brokers(vec![])
        );
        assert_eq!(
            check_until(&mut liveness, &image, 4, 50_100, 60_000),
            Some((59_100, vec![(1, 10)]))
        );
    }

    #[test]
    fn a_controller_that_stalled_restarts_sessions_instead_of_fencing() {
        let image = image(&[(1, false), (2, false)]);
        let mut liveness = BrokerLiveness::new(8_000, 100);
        assert_eq!(liveness.stall_threshold_ms(), 2_000);
        liveness.touch(1, 2, 0);
        liveness.touch(2, 2, 0);
        assert_eq!(check_until(&mut liveness, &image, 2, 0, 1_000), None);
        // Paused for 15 s: on waking, everyone looks silent, but it was this controller that was
        // gone. Nobody is fenced; sessions start again.
        assert_eq!(
            liveness.expired(&image, 2, 16_000),
            Expired::Stalled { stalled_ms: 15_000 }
        );
        liveness.touch(1, 2, 16_500);
        assert_eq!(
            check_until(&mut liveness, &image, 2, 16_100, 30_000),
            Some((24_100, vec![(2, 20)]))
        );
        // A pause up to the threshold is an ordinary delay: silence before it still counts.
        let mut liveness = BrokerLiveness::new(8_000, 100);
        liveness.touch(1, 2, 0);
        assert_eq!(check_until(&mut liveness, &image, 2, 0, 6_500), None);
        assert_eq!(
            liveness.expired(&image, 2, 8_500),
            Expired::Brokers(vec![(1, 10), (2, 20)])
        );
    }

    #[test]
    fn running_throughout_needs_one_term_and_no_late_check_since() {
        let image = image(&[(1, false)]);
        let mut liveness = BrokerLiveness::new(120_000, 50);
        assert_eq!(liveness.late_check_ms(), 1_000);
        assert!(!liveness.ran_throughout(0, 0), "not leading");
        liveness.touch(1, 3, 1_000);
        assert_eq!(liveness.last_contact_ms(1), Some(1_000));
        for now in (1_000..=5_000).step_by(50) {
            liveness.expired(&image, 3, now);
        }
        assert!(liveness.ran_throughout(1_000, 5_000));
        // Not since before the term began.
        assert!(!liveness.ran_throughout(999, 5_000));
        // Checks late right now (a controller just resumed, not yet checking): not throughout.
        assert!(liveness.ran_throughout(1_000, 6_000));
        assert!(!liveness.ran_throughout(1_000, 6_001));
        // A gap of 1.5 s (far below a quarter of the session, so no stall) spoils every span
        // it falls in, and none after it.
        liveness.expired(&image, 3, 6_500);
        assert!(!liveness.ran_throughout(1_000, 6_500));
        assert!(!liveness.ran_throughout(6_500, 6_500));
        assert!(liveness.ran_throughout(6_501, 6_600));
        // A new term starts clean, but only from its start.
        liveness.resign();
        assert_eq!(liveness.last_contact_ms(1), None);
        liveness.lead(4, 10_000);
        assert!(liveness.ran_throughout(10_000, 10_500));
        assert!(!liveness.ran_throughout(9_000, 10_500));
    }
}
