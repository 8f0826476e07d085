//! A seeded simulation of replication (tests only): three brokers own the replicas of one topic's
//! partitions, each replica a real [`skald_storage::Log`] in a temporary directory driven by the
//! real [`crate::replication::state::ReplicaState`] (roles, high watermark, ISR rules), the real
//! leader-side divergence check ([`crate::replication::diverging_epoch`]) and the real follower
//! truncation ([`crate::replication::fetcher::truncate_diverged`]); a controller that decides
//! registrations, fencing, elections and AlterPartition with the real
//! [`skald_controller::Controller`] planning over a [`skald_controller::MetadataImage`]; and a
//! client producing with acks=all. Everything travels through one seeded network that drops,
//! delays and reorders, with links cut (both ways or one way) and healed.
//!
//! Faults: brokers paused (they neither run nor read; their messages wait), killed (the process
//! goes; the page cache keeps what it wrote), powered off (the unflushed tail of every log is lost:
//! Kafka does not fsync each write, so only what the periodic flush synced survives) and
//! restarted as a new incarnation that recovers its logs and registers again; the controller
//! fencing a live broker (as for a missed session), which moves its leaderships away while it
//! still runs. Half the seeds sync every append (nothing is lost at power-off), half flush once
//! a second.
//!
//! Checked every tick, failing the run on the spot ([`check`]):
//! - **replicas agree below the high watermark**: every batch below any replica's high
//!   watermark is the batch committed at those offsets;
//! - **no acknowledged acks=all record is lost**: an acknowledged batch was committed, is never
//!   replaced, and after healing every replica holds it;
//! - **a leader's high watermark never goes backwards** during its leadership, nor past its log
//!   end;
//! - **at most one leader per partition epoch**, across every broker's replica state.
//!
//! A replica that loses records at power-off breaks the premise of Kafka's replication (a
//! replica has what it reported having, so every ISR member has everything below the high
//! watermark): what is lost through such an *exposure* is counted apart, not failed (see
//! [`check`]). Seeds that sync every append never have one.
//!
//! The controller is one process that never fails: the controller quorum's own faults are
//! `skald_controller`'s simulation's business; here its decisions reach the brokers late, out of
//! step with each other, or not at all.

mod broker;
mod check;
mod cluster;
mod net;
#[cfg(test)]
mod tests;

pub(crate) use cluster::{run, Bugs, Stats};

/// How much time one tick stands for.
const TICK_MS: i64 = 50;
/// The controller's node id; brokers are 1..=BROKERS.
const CONTROLLER: i32 = 0;
const BROKERS: i32 = 3;
const CLIENT: i32 = 1000;
const TOPIC: &str = "sim";
const PARTITIONS: i32 = 2;
const MIN_INSYNC_REPLICAS: usize = 2;
const SESSION_MS: i64 = 1_500;
const HEARTBEAT_MS: i64 = 250;
/// `replica.lag.time.max.ms`.
const LAG_TIME_MAX_MS: i64 = 1_000;
/// How long a broker or the client waits for an answer before asking again.
const ANSWER_WAIT_MS: i64 = 1_000;
/// `replica.fetch.backoff.ms`.
const FETCH_BACKOFF_MS: i64 = 100;
/// How long an acks=all produce waits for replication (Kafka's `timeout.ms`).
const PRODUCE_TIMEOUT_MS: i64 = 3_000;
/// How often a log is synced when not every append is (`flush.ms`), and the high watermark
/// checkpointed (`replica.high.watermark.checkpoint.interval.ms`).
const FLUSH_MS: i64 = 1_000;
/// Bytes a replica fetch returns at most.
const FETCH_MAX_BYTES: usize = 4_096;

/// With `SIM_REPLICATION_TRACE` set, the run's events (commits, faults, exposures) go to
/// stderr: enough to follow a failing seed's replay.
fn tracing_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SIM_REPLICATION_TRACE").is_some())
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::sim::tracing_on() {
            eprintln!($($arg)*);
        }
    };
}
pub(crate) use trace;

/// xorshift64*: tiny, seedable, good enough to pick faults (as `skald_controller`'s simulation).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn chance_per_mille(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}
