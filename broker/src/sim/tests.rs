use super::{run, Bugs, Stats};

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let (a, b) = (run(5, Bugs::default()), run(5, Bugs::default()));
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    assert!(a.seen.acknowledged > 0, "{a:?}");
}

/// `SIM_REPLICATION_SEED=s` runs seed s alone; `SIM_REPLICATION_SEEDS=n
/// SIM_REPLICATION_START=s` runs n seeds from s (scripts/sim-replication); 200 seeds from 0
/// otherwise. A failing seed prints the command that replays it.
#[test]
fn replication_keeps_its_invariants_under_faults() {
    let seeds = match env("SIM_REPLICATION_SEED") {
        Some(seed) => seed..seed + 1,
        None => {
            let start = env("SIM_REPLICATION_START").unwrap_or(0);
            start..start + env("SIM_REPLICATION_SEEDS").unwrap_or(200)
        }
    };
    let count = seeds.end - seeds.start;
    let mut total = Totals::default();
    for seed in seeds {
        let stats =
            std::panic::catch_unwind(|| run(seed, Bugs::default())).unwrap_or_else(|panic| {
                eprintln!(
                    "seed {seed} failed; replay it with: SIM_REPLICATION_SEED={seed} cargo test \
                     -p skald-broker --lib sim::tests"
                );
                std::panic::resume_unwind(panic)
            });
        total.add(&stats);
    }
    eprintln!("{count} seeds: {total:?}");
}

/// Sums over seeds, for the statistics line.
#[derive(Debug, Default)]
struct Totals {
    sync_every_append_seeds: u64,
    acknowledged: u64,
    committed_batches: u64,
    leader_epochs: u64,
    produce_errors: u64,
    pauses: u64,
    kills: u64,
    power_offs: u64,
    fencings: u64,
    exposures: u64,
    committed_lost_to_exposure: u64,
    acknowledged_lost_to_exposure: u64,
    settle_ticks_max: u64,
}

impl Totals {
    fn add(&mut self, stats: &Stats) {
        self.sync_every_append_seeds += u64::from(stats.sync_every_append);
        self.acknowledged += stats.seen.acknowledged;
        self.committed_batches += stats.seen.committed_batches;
        self.leader_epochs += stats.seen.leader_epochs;
        self.produce_errors += stats.produce_errors;
        self.pauses += stats.pauses;
        self.kills += stats.kills;
        self.power_offs += stats.power_offs;
        self.fencings += stats.fencings;
        self.exposures += stats.seen.exposures;
        self.committed_lost_to_exposure += stats.seen.committed_lost_to_exposure;
        self.acknowledged_lost_to_exposure += stats.seen.acknowledged_lost_to_exposure;
        self.settle_ticks_max = self.settle_ticks_max.max(stats.settle_ticks);
    }
}

/// The first seed below `limit` whose run with `bugs` fails with a message containing
/// `expected`, and its message. (A bug may show first as another failure in some seeds.)
fn first_failure(bugs: Bugs, expected: &str, limit: u64) -> Option<(u64, String)> {
    (0..limit).find_map(|seed| {
        let outcome = std::panic::catch_unwind(|| run(seed, bugs)).err()?;
        let message = outcome
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| outcome.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        message.contains(expected).then_some((seed, message))
    })
}

/// Each invariant fails the run when the bug it is there for is injected (the bugs exist only
/// in the simulation, behind `Bugs`).
#[test]
fn each_invariant_catches_its_injected_bug() {
    let cases = [
        (
            Bugs {
                ack_before_replicated: true,
                ..Bugs::default()
            },
            "an acknowledged acks=all record was lost",
        ),
        (
            Bugs {
                no_divergence_check: true,
                ..Bugs::default()
            },
            "replicas disagree below the high watermark",
        ),
        (
            Bugs {
                shrink_before_commit: true,
                ..Bugs::default()
            },
            "an acknowledged acks=all record was lost",
        ),
        (
            Bugs {
                high_watermark_recomputed: true,
                ..Bugs::default()
            },
            "went backwards on its leader",
        ),
        (
            Bugs {
                election_keeps_leader_epoch: true,
                ..Bugs::default()
            },
            "two leaders of partition",
        ),
    ];
    for (bugs, expected) in cases {
        let (_, message) = first_failure(bugs, expected, 100)
            .unwrap_or_else(|| panic!("{bugs:?} went unnoticed in 100 seeds: {expected}"));
        eprintln!("{bugs:?}: {message}");
    }
}

/// Seeds that found a bug in Skald, beyond the 200 the run above covers: a leader dropped a
/// refused (already committed) ISR expansion and acknowledged records the new member lacked,
/// which the controller then elected (`ReplicaState::alter_partition_refused`).
#[test]
fn the_seeds_that_found_bugs_pass() {
    for seed in [1170, 10121] {
        let stats = run(seed, Bugs::default());
        assert_eq!(
            stats.seen.acknowledged_lost_to_exposure, 0,
            "seed {seed}: {stats:?}"
        );
    }
}
