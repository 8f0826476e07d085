//! The policy alone, on a single-voter quorum (it commits in one Ready round) and a fake clock:
//! each test asserts the exact actions.

use super::*;
use crate::controller::{ControllerConfig, CreateTopicSpec};
use crate::election::ElectionConfig;
use crate::error::TopicError;
use crate::quorum::QuorumConfig;
use crate::raft_disk::MemDisk;
use crate::record::Endpoint;

struct Ids;

impl Tickets for Ids {
    type Operation = u32;
    type Register = u32;
    type AlterPartition = u32;
}

/// The actions, comparable.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Replied(u32, ControllerReply),
    Registered(u32, i64),
    Altered(u32, usize),
    Failed(u32, LoopError),
    Probe(ProbeRequest),
    Fencing(i32, FenceReason),
}

fn seen(actions: Vec<Action<Ids>>) -> Vec<Seen> {
    actions
        .into_iter()
        .map(|action| match action {
            Action::Complete(Waiter::Operation(reply, t)) => Seen::Replied(t, reply),
            Action::Complete(Waiter::Register(epoch, t)) => Seen::Registered(t, epoch),
            Action::Complete(Waiter::AlterPartition(outcomes, t)) => {
                Seen::Altered(t, outcomes.len())
            }
            Action::Fail(
                Ticket::Operation(t) | Ticket::Register(t) | Ticket::AlterPartition(t),
                error,
            ) => Seen::Failed(t, error),
            Action::Probe(probe) => Seen::Probe(probe),
            Action::Fencing { broker_id, reason } => Seen::Fencing(broker_id, reason),
        })
        .collect()
}

fn config() -> LoopConfig {
    LoopConfig {
        session_timeout_ms: 9_000,
        tick_ms: 500,
        fast_fencing: false,
        unresponsive_fencing: false,
        probe_silence_ms: 4_000,
        probes: false,
        request_timeout_ms: 30_000,
        auto_balance: false,
    }
}

fn no_rebalance() -> ElectionConfig {
    ElectionConfig {
        auto_leader_rebalance_enable: false,
        ..ElectionConfig::default()
    }
}

/// A single voter (leading at once) running the policy, at `now_ms`.
struct Solo {
    quorum: Quorum<MemDisk>,
    policy: ControllerLoop<Ids>,
    now_ms: u64,
}

impl Solo {
    fn new(config: LoopConfig, elections: ElectionConfig) -> Solo {
        let quorum =
            Quorum::open(QuorumConfig::new(0, vec![0]), MemDisk::new(), Vec::new()).unwrap();
        let controller = Controller::new(ControllerConfig {
            node_id: 0,
            num_partitions: 1,
            default_replication_factor: 1,
        })
        .with_election_config(elections);
        let mut solo = Solo {
            quorum,
            policy: ControllerLoop::new(config, controller),
            now_ms: 0,
        };
        assert_eq!(solo.step(), vec![]);
        solo
    }

    /// Plans, proposes and commits what is queued, as the driver's loop does; what was done.
    fn step(&mut self) -> Vec<Seen> {
        self.policy.start_next(&mut self.quorum, self.now_ms);
        let output = self.quorum.handle_ready().unwrap();
        self.policy.observe_role(&self.quorum, self.now_ms);
        for (token, result) in output.completed {
            self.policy
                .completed(token, result, self.quorum.applied_index());
        }
        seen(self.policy.take_actions())
    }

    /// One tick at `at_ms`, then a step.
    fn tick_at(&mut self, at_ms: u64) -> Vec<Seen> {
        self.now_ms = at_ms;
        self.quorum.tick();
        self.policy.tick(&self.quorum, at_ms);
        self.step()
    }

    /// Ticks every `tick_ms` up to `until_ms`, calling `between` before each; what was done.
    fn tick_until(&mut self, until_ms: u64, mut between: impl FnMut(&mut Solo)) -> Vec<Seen> {
        let mut all = Vec::new();
        while self.now_ms + 500 <= until_ms {
            self.now_ms += 500;
            between(self);
            all.extend(self.tick_at(self.now_ms));
        }
        all
    }

    /// Registers `broker_id` and unfences it with a caught-up heartbeat; its epoch.
    fn join(&mut self, broker_id: i32) -> i64 {
        let registration = BrokerRegistration {
            broker_id,
            incarnation_id: broker_id as u64,
            endpoints: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: format!("b{broker_id}"),
                port: 9092,
            }],
            rack: None,
        };
        self.policy.submit(
            &self.quorum,
            Request::Register(registration, 1),
            self.now_ms,
        );
        let epoch = match self.step().as_slice() {
            [Seen::Registered(1, epoch)] => *epoch,
            other => panic!("registration: {other:?}"),
        };
        let reply = self.heartbeat(broker_id, epoch).unwrap();
        assert_eq!(
            reply,
            HeartbeatReply {
                is_caught_up: true,
                is_fenced: true,
                should_shut_down: false
            }
        );
        assert_eq!(self.step(), vec![]);
        assert!(!self.quorum.image().brokers[&broker_id].fenced);
        epoch
    }

    fn heartbeat(&mut self, broker_id: i32, epoch: i64) -> Result<HeartbeatReply, LoopError> {
        let heartbeat = Heartbeat {
            broker_id,
            broker_epoch: epoch,
            current_metadata_offset: self.quorum.applied_index() as i64,
            want_fence: false,
            want_shut_down: false,
        };
        self.policy.heartbeat(&self.quorum, &heartbeat, self.now_ms)
    }

    fn fenced(&self, broker_id: i32) -> bool {
        self.quorum.image().brokers[&broker_id].fenced
    }
}

fn create(name: &str) -> ControllerOp {
    ControllerOp::CreateTopics {
        topics: vec![CreateTopicSpec {
            name: name.into(),
            num_partitions: 1,
            replication_factor: 1,
            ..CreateTopicSpec::default()
        }],
        validate_only: false,
        allow_internal: false,
    }
}

#[test]
fn a_silent_broker_is_fenced_on_the_first_tick_past_its_session() {
    let mut solo = Solo::new(config(), no_rebalance());
    let epoch = solo.join(1);
    assert_eq!(epoch, 1);
    // Last heard from at 0: 9,000 ms of silence is not more than the session.
    assert_eq!(solo.tick_until(9_000, |_| {}), vec![]);
    assert!(!solo.fenced(1));
    assert_eq!(
        solo.tick_at(9_500),
        vec![Seen::Fencing(1, FenceReason::SessionExpired)]
    );
    assert!(solo.fenced(1));
    // Fenced once, not again at later ticks.
    assert_eq!(solo.tick_until(12_000, |_| {}), vec![]);
}

#[test]
fn a_broker_that_heartbeats_is_never_fenced() {
    let mut solo = Solo::new(config(), no_rebalance());
    let epoch = solo.join(1);
    let done = solo.tick_until(60_000, |solo| {
        if solo.now_ms.is_multiple_of(2_000) {
            solo.heartbeat(1, epoch).unwrap();
        }
    });
    assert_eq!(done, vec![]);
    assert!(!solo.fenced(1));
}

#[test]
fn a_controller_that_stalled_restarts_sessions_instead_of_fencing() {
    let mut solo = Solo::new(config(), no_rebalance());
    solo.join(1);
    // No tick from 0 to 5,000 (over a quarter of the session): the broker's silence meanwhile
    // is not evidence, its session starts again at 5,000.
    assert_eq!(solo.tick_at(5_000), vec![]);
    assert_eq!(solo.tick_until(14_000, |_| {}), vec![]);
    assert!(!solo.fenced(1));
    assert_eq!(
        solo.tick_at(14_500),
        vec![Seen::Fencing(1, FenceReason::SessionExpired)]
    );
}

#[test]
fn a_timed_out_proposal_blocks_planning_until_it_commits() {
    let mut solo = Solo::new(config(), no_rebalance());
    solo.join(1);
    solo.policy
        .submit(&solo.quorum, Request::Operation(create("orders"), 1), 0);
    // Proposed, not yet committed (no Ready round).
    solo.policy.start_next(&mut solo.quorum, 0);
    assert!(solo.policy.has_in_flight());
    solo.policy.tick(&solo.quorum, 29_500);
    assert_eq!(seen(solo.policy.take_actions()), vec![]);
    solo.policy.tick(&solo.quorum, 30_000);
    assert_eq!(
        seen(solo.policy.take_actions()),
        vec![Seen::Failed(1, LoopError::Timeout)]
    );
    // The same topic again: not planned while the first one's outcome is unknown.
    solo.policy.submit(
        &solo.quorum,
        Request::Operation(create("orders"), 2),
        30_000,
    );
    solo.policy.start_next(&mut solo.quorum, 30_000);
    assert_eq!(solo.policy.queued(), 1);
    assert!(solo.policy.has_in_flight());
    // The first commits (its caller already has its timeout); the second is planned against an
    // image that holds it.
    solo.now_ms = 30_000;
    let output = solo.quorum.handle_ready().unwrap();
    for (token, result) in output.completed {
        solo.policy
            .completed(token, result, solo.quorum.applied_index());
    }
    assert_eq!(seen(solo.policy.take_actions()), vec![]);
    assert_eq!(
        solo.step(),
        vec![Seen::Replied(
            2,
            ControllerReply::CreateTopics(vec![Err(TopicError::TopicAlreadyExists(
                "orders".into()
            ))])
        )]
    );
    assert!(!solo.policy.has_in_flight());
}

#[test]
fn a_node_that_does_not_lead_refuses_at_once() {
    let quorum = Quorum::open(
        QuorumConfig::new(1, vec![1, 2, 3]),
        MemDisk::new(),
        Vec::new(),
    )
    .unwrap();
    let controller = Controller::new(ControllerConfig {
        node_id: 1,
        num_partitions: 1,
        default_replication_factor: 1,
    });
    let mut policy: ControllerLoop<Ids> = ControllerLoop::new(config(), controller);
    policy.submit(&quorum, Request::Operation(create("a"), 7), 0);
    assert_eq!(
        seen(policy.take_actions()),
        vec![Seen::Failed(7, LoopError::NotController(None))]
    );
    let heartbeat = Heartbeat {
        broker_id: 1,
        broker_epoch: 1,
        current_metadata_offset: 0,
        want_fence: false,
        want_shut_down: false,
    };
    assert_eq!(
        policy.heartbeat(&quorum, &heartbeat, 0),
        Err(LoopError::NotController(None))
    );
}

#[test]
fn preferred_elections_run_every_check_interval_from_the_election() {
    let elections = ElectionConfig {
        auto_leader_rebalance_enable: true,
        leader_imbalance_check_interval_ms: 3_000,
        ..ElectionConfig::default()
    };
    let mut solo = Solo::new(config(), elections);
    assert_eq!(solo.policy.next_preferred_elections_ms, Some(3_000));
    solo.tick_until(2_500, |_| {});
    assert_eq!(solo.policy.next_preferred_elections_ms, Some(3_000));
    solo.now_ms = 3_000;
    solo.policy.tick(&solo.quorum, 3_000);
    assert_eq!(solo.policy.queued(), 1);
    assert_eq!(solo.policy.next_preferred_elections_ms, Some(6_000));
    // Nothing to move: the pass plans no records and nobody waits.
    assert_eq!(solo.step(), vec![]);
    assert_eq!(solo.policy.queued(), 0);
}

fn probing() -> LoopConfig {
    LoopConfig {
        fast_fencing: true,
        unresponsive_fencing: true,
        probes: true,
        ..config()
    }
}

#[test]
fn a_silent_broker_is_probed_once_per_silence_bound_and_fenced_if_unresponsive() {
    let mut solo = Solo::new(probing(), no_rebalance());
    let one = solo.join(1);
    let two = solo.join(2);
    assert_eq!(two, 2);
    let heartbeat_two = |solo: &mut Solo| {
        solo.heartbeat(2, two).unwrap();
    };
    assert_eq!(solo.tick_until(4_000, heartbeat_two), vec![]);
    let probe = ProbeRequest {
        broker_id: 1,
        broker_epoch: one,
        address: "b1:9092".into(),
        since_ms: 4_500,
    };
    assert_eq!(
        solo.tick_until(4_500, heartbeat_two),
        vec![Seen::Probe(probe.clone())]
    );
    assert_eq!(solo.tick_until(8_000, heartbeat_two), vec![]);
    // The probe went unanswered and the broker stayed silent since it was asked for.
    solo.policy.unresponsive(&solo.quorum, 1, one, 4_500, 8_000);
    assert_eq!(
        solo.step(),
        vec![Seen::Fencing(1, FenceReason::Unresponsive)]
    );
    assert!(solo.fenced(1));
    assert!(!solo.fenced(2));
}

#[test]
fn an_unanswered_probe_does_not_fence_a_broker_heard_from_since() {
    let mut solo = Solo::new(probing(), no_rebalance());
    let one = solo.join(1);
    let two = solo.join(2);
    let heartbeat_two = |solo: &mut Solo| {
        solo.heartbeat(2, two).unwrap();
    };
    solo.tick_until(4_500, heartbeat_two);
    solo.now_ms = 4_600;
    solo.heartbeat(1, one).unwrap();
    solo.policy.unresponsive(&solo.quorum, 1, one, 4_500, 4_600);
    assert_eq!(solo.step(), vec![]);
    assert!(!solo.fenced(1));
    assert_eq!(
        solo.policy
            .unresponsive_verdict(&solo.quorum, 1, one, 4_500, 4_600),
        Err("heard from since the probe was asked for")
    );
}

#[test]
fn an_unanswered_probe_does_not_fence_when_every_broker_is_silent() {
    let mut solo = Solo::new(probing(), no_rebalance());
    let one = solo.join(1);
    solo.join(2);
    let probes = solo.tick_until(4_500, |_| {});
    assert_eq!(probes.len(), 2);
    assert_eq!(
        solo.policy
            .unresponsive_verdict(&solo.quorum, 1, one, 4_500, 5_000),
        Err("other brokers are silent too")
    );
}
