//! Replication throttles (Kafka's KIP-73 `ReplicationQuotaManager`): one quota for what this
//! broker sends as a leader and one for what it fetches as a follower, each a bound in bytes per
//! second (`leader.replication.throttled.rate`, `follower.replication.throttled.rate`, dynamic
//! broker configs) on the traffic of throttled replicas (the topic configs
//! `leader.replication.throttled.replicas` / `follower.replication.throttled.replicas`).
//!
//! As in Kafka the quota only ever holds back catch-up traffic, and does it by leaving data out
//! rather than by delaying a response: a leader answers a follower outside the ISR with no
//! records for a throttled partition while the quota is exceeded, and a follower not yet caught
//! up leaves a throttled partition out of its fetch while its quota is exceeded. A replica in the
//! ISR is never held back, but its bytes of throttled partitions still count against the quota.
//! A response that goes out carries what it would have without a throttle (up to the fetch
//! limits): the rate is averaged over the sample window, so a burst is paid back by a pause.
//!
//! The rate is Kafka's `SimpleRate` over a `SampledTotal`: `replication.quota.window.num` samples
//! of `replication.quota.window.size.seconds` each; the rate is the samples' total over the time
//! from the oldest sample's start (at least one window), and the quota is exceeded when that
//! rate is above the bound. Time is passed in (`now_ms`), so tests drive the clock.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::{Gauge, IntCounter, Opts};
use skald_controller::topic_config::REPLICATION_THROTTLED_RATE_UNLIMITED;

use crate::config::ReplicationConfig;
use crate::dynamic_config::BrokerDefaults;

pub const LEADER_RATE_CONFIG: &str = "leader.replication.throttled.rate";
pub const FOLLOWER_RATE_CONFIG: &str = "follower.replication.throttled.rate";
pub const LEADER_REPLICAS_CONFIG: &str = "leader.replication.throttled.replicas";
pub const FOLLOWER_REPLICAS_CONFIG: &str = "follower.replication.throttled.replicas";
pub const ALTER_LOG_DIRS_RATE_CONFIG: &str = "replica.alter.log.dirs.io.max.bytes.per.second";

/// One sample of a [`SampledRate`]: the bytes recorded from `start_ms` on.
#[derive(Debug, Clone, Copy)]
struct Sample {
    start_ms: i64,
    bytes: f64,
}

/// Kafka's `SimpleRate` over a `SampledTotal`: bytes per second over the last `samples` windows.
#[derive(Debug)]
pub struct SampledRate {
    window_ms: i64,
    samples_max: usize,
    samples: Vec<Sample>,
    current: usize,
}

impl SampledRate {
    pub fn new(samples_max: usize, window_ms: i64) -> SampledRate {
        SampledRate {
            window_ms: window_ms.max(1),
            samples_max: samples_max.max(1),
            samples: Vec::new(),
            current: 0,
        }
    }

    /// Adds `bytes` at `now_ms`, in the current sample or a new one once the current sample's
    /// window has passed (the oldest sample is reused when all exist).
    pub fn record(&mut self, bytes: u64, now_ms: i64) {
        if self.samples.is_empty() {
            self.samples.push(Sample {
                start_ms: now_ms,
                bytes: 0.0,
            });
        }
        if now_ms - self.samples[self.current].start_ms >= self.window_ms {
            self.current = (self.current + 1) % self.samples_max;
            let fresh = Sample {
                start_ms: now_ms,
                bytes: 0.0,
            };
            match self.samples.get_mut(self.current) {
                Some(sample) => *sample = fresh,
                None => self.samples.push(fresh),
            }
        }
        self.samples[self.current].bytes += bytes as f64;
    }

    /// Bytes per second at `now_ms`: the retained samples' total over the time since the oldest
    /// began, never less than one window (so a first burst is not divided by almost nothing).
    pub fn rate(&mut self, now_ms: i64) -> f64 {
        self.purge_obsolete(now_ms);
        let total: f64 = self.samples.iter().map(|sample| sample.bytes).sum();
        let oldest = self
            .samples
            .iter()
            .map(|sample| sample.start_ms)
            .min()
            .unwrap_or(now_ms);
        let elapsed_ms = (now_ms - oldest).max(self.window_ms);
        total * 1000.0 / elapsed_ms as f64
    }

    /// Samples older than the whole window start over empty (Kafka's `purgeObsoleteSamples`).
    fn purge_obsolete(&mut self, now_ms: i64) {
        let expire_age_ms = self.window_ms.saturating_mul(self.samples_max as i64);
        for sample in &mut self.samples {
            if now_ms - sample.start_ms >= expire_age_ms {
                *sample = Sample {
                    start_ms: now_ms,
                    bytes: 0.0,
                };
            }
        }
    }
}

/// One direction's quota: the bound and the measured rate of throttled replicas' bytes.
#[derive(Debug)]
pub struct ReplicationQuota {
    rate: Mutex<SampledRate>,
    /// Bytes per second; [`REPLICATION_THROTTLED_RATE_UNLIMITED`] for none.
    bound: AtomicI64,
    /// Every byte recorded against the quota since start-up.
    recorded_bytes: AtomicU64,
}

impl ReplicationQuota {
    pub fn new(samples: usize, window_ms: i64) -> ReplicationQuota {
        ReplicationQuota {
            rate: Mutex::new(SampledRate::new(samples, window_ms)),
            bound: AtomicI64::new(REPLICATION_THROTTLED_RATE_UNLIMITED),
            recorded_bytes: AtomicU64::new(0),
        }
    }

    pub fn bound(&self) -> i64 {
        self.bound.load(Ordering::Relaxed)
    }

    /// Sets the bound; returns whether it changed.
    pub fn set_bound(&self, bytes_per_second: i64) -> bool {
        self.bound.swap(bytes_per_second, Ordering::Relaxed) != bytes_per_second
    }

    /// Whether the rate is above the bound now (Kafka's `isQuotaExceeded`).
    pub fn is_exceeded(&self, now_ms: i64) -> bool {
        let bound = self.bound();
        // Nothing can exceed Long.MAX_VALUE bytes per second: no lock on the unthrottled path.
        bound != REPLICATION_THROTTLED_RATE_UNLIMITED && self.lock().rate(now_ms) > bound as f64
    }

    /// Counts bytes of throttled replicas against the quota, whether or not it is exceeded.
    pub fn record(&self, bytes: u64, now_ms: i64) {
        if bytes == 0 {
            return;
        }
        self.recorded_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.lock().record(bytes, now_ms);
    }

    /// The measured rate (Kafka's `byte-rate` metric of the quota).
    pub fn byte_rate(&self, now_ms: i64) -> f64 {
        self.lock().rate(now_ms)
    }

    pub fn recorded_bytes(&self) -> u64 {
        self.recorded_bytes.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SampledRate> {
        self.rate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The leader's and the follower's quotas (Kafka's `ReplicationQuotaManager` pair), and the one
/// on copying replicas between this broker's log dirs (Kafka's `alterLogDirs` quota).
#[derive(Debug)]
pub struct ReplicationQuotas {
    pub leader: ReplicationQuota,
    pub follower: ReplicationQuota,
    pub alter_log_dirs: ReplicationQuota,
}

impl ReplicationQuotas {
    pub fn new(config: &ReplicationConfig) -> ReplicationQuotas {
        let window_ms = i64::try_from(config.quota_window_size_seconds.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        ReplicationQuotas {
            leader: ReplicationQuota::new(config.quota_window_num, window_ms),
            follower: ReplicationQuota::new(config.quota_window_num, window_ms),
            alter_log_dirs: ReplicationQuota::new(config.quota_window_num, window_ms),
        }
    }

    /// Takes the rates in force (this broker's dynamic value, the cluster-wide one, the static
    /// file, Kafka's unlimited default) after a metadata change.
    pub fn apply(&self, defaults: &BrokerDefaults<'_>) {
        let rate = |property: &str| {
            // The controller validated the dynamic values and start-up the static one.
            defaults
                .get(property)
                .trim()
                .parse::<i64>()
                .unwrap_or(REPLICATION_THROTTLED_RATE_UNLIMITED)
        };
        for (quota, property) in [
            (&self.leader, LEADER_RATE_CONFIG),
            (&self.follower, FOLLOWER_RATE_CONFIG),
            (&self.alter_log_dirs, ALTER_LOG_DIRS_RATE_CONFIG),
        ] {
            let bound = rate(property);
            if quota.set_bound(bound) {
                tracing::info!(
                    "{property} is now {}",
                    if bound == REPLICATION_THROTTLED_RATE_UNLIMITED {
                        "unlimited".to_string()
                    } else {
                        format!("{bound} bytes/s")
                    }
                );
            }
        }
    }
}

/// The quotas' metrics, read at scrape time: each direction's measured rate (Kafka's
/// `LeaderReplication` / `FollowerReplication` `byte-rate`) and the bytes counted against it.
pub struct QuotaCollector {
    quotas: Arc<ReplicationQuotas>,
    leader_byte_rate: Gauge,
    follower_byte_rate: Gauge,
    leader_throttled_bytes: IntCounter,
    follower_throttled_bytes: IntCounter,
}

impl QuotaCollector {
    pub fn new(quotas: Arc<ReplicationQuotas>) -> Result<QuotaCollector, prometheus::Error> {
        Ok(QuotaCollector {
            quotas,
            leader_byte_rate: Gauge::with_opts(Opts::new(
                "skald_leader_replication_byte_rate",
                "Bytes per second of throttled replicas sent to followers, as the leader \
                 quota measures it (Kafka's LeaderReplication byte-rate)",
            ))?,
            follower_byte_rate: Gauge::with_opts(Opts::new(
                "skald_follower_replication_byte_rate",
                "Bytes per second of throttled replicas fetched from leaders, as the follower \
                 quota measures it (Kafka's FollowerReplication byte-rate)",
            ))?,
            leader_throttled_bytes: IntCounter::with_opts(Opts::new(
                "skald_leader_replication_throttled_bytes_total",
                "Bytes of throttled replicas sent to followers (counted against \
                 leader.replication.throttled.rate)",
            ))?,
            follower_throttled_bytes: IntCounter::with_opts(Opts::new(
                "skald_follower_replication_throttled_bytes_total",
                "Bytes of throttled replicas fetched from leaders (counted against \
                 follower.replication.throttled.rate)",
            ))?,
        })
    }
}

impl prometheus::core::Collector for QuotaCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        [
            self.leader_byte_rate.desc(),
            self.follower_byte_rate.desc(),
            self.leader_throttled_bytes.desc(),
            self.follower_throttled_bytes.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let now_ms = super::now_ms();
        self.leader_byte_rate
            .set(self.quotas.leader.byte_rate(now_ms));
        self.follower_byte_rate
            .set(self.quotas.follower.byte_rate(now_ms));
        for (counter, quota) in [
            (&self.leader_throttled_bytes, &self.quotas.leader),
            (&self.follower_throttled_bytes, &self.quotas.follower),
        ] {
            counter.reset();
            counter.inc_by(quota.recorded_bytes());
        }
        [
            self.leader_byte_rate.collect(),
            self.follower_byte_rate.collect(),
            self.leader_throttled_bytes.collect(),
            self.follower_throttled_bytes.collect(),
        ]
        .concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_rate_is_the_total_over_the_retained_windows() {
        let mut rate = SampledRate::new(11, 1000);
        assert_eq!(rate.rate(0), 0.0);
        // A first burst is measured over one whole window, not the few ms it took.
        rate.record(MIB, 0);
        assert_eq!(rate.rate(10), MIB as f64);
        // 2 MiB over 2 s.
        rate.record(MIB, 1500);
        assert_eq!(rate.rate(2000), MIB as f64);
        // Silence: both samples stay within the 11 s the window spans, spread over the time
        // since the oldest began...
        assert_eq!(rate.rate(10_500), (2 * MIB) as f64 / 10.5);
        // ... until the first is 11 s old: it starts over empty, and the oldest is the second.
        assert_eq!(rate.rate(12_000), MIB as f64 / 10.5);
    }

    #[test]
    fn samples_older_than_the_window_stop_counting() {
        let mut rate = SampledRate::new(11, 1000);
        rate.record(10 * MIB, 0);
        // 11 windows later the sample is obsolete and starts over empty.
        assert_eq!(rate.rate(11_000), 0.0);
        rate.record(MIB, 11_000);
        assert_eq!(rate.rate(11_500), MIB as f64);
    }

    #[test]
    fn samples_are_reused_round_robin() {
        let mut rate = SampledRate::new(2, 1000);
        rate.record(MIB, 0);
        rate.record(MIB, 1000);
        // A third window overwrites the first sample: only the last two count.
        rate.record(MIB, 2000);
        assert_eq!(rate.samples.len(), 2);
        assert_eq!(rate.rate(2500), (2 * MIB) as f64 / 1.5);
    }

    #[test]
    fn the_quota_is_exceeded_only_above_its_bound() {
        let quota = ReplicationQuota::new(11, 1000);
        quota.record(10 * MIB, 0);
        // Unlimited by default, whatever was recorded.
        assert!(!quota.is_exceeded(0));
        assert!(quota.set_bound(MIB as i64));
        assert!(!quota.set_bound(MIB as i64));
        assert!(quota.is_exceeded(0));
        // 10 MiB at 1 MiB/s is paid back after 10 s: at exactly the bound it is not exceeded.
        assert!(quota.is_exceeded(9_999));
        assert!(!quota.is_exceeded(10_000));
        assert_eq!(quota.recorded_bytes(), 10 * MIB);
    }

    /// A follower that fetches whenever its quota allows moves, over a long run, the bound's
    /// bytes per second: the first window's burst is all it gains.
    #[test]
    fn fetching_whenever_allowed_averages_the_bound() {
        let quota = ReplicationQuota::new(11, 1000);
        let bound = 2 * MIB;
        quota.set_bound(bound as i64);
        let fetch = MIB / 2;
        let mut moved = 0;
        let mut now_ms = 0;
        while now_ms < 60_000 {
            if !quota.is_exceeded(now_ms) {
                quota.record(fetch, now_ms);
                moved += fetch;
            }
            now_ms += 10;
        }
        let seconds = 60;
        assert!(moved <= bound * seconds + 2 * fetch + bound, "{moved}");
        assert!(moved >= bound * seconds - 2 * fetch, "{moved}");
    }
}
