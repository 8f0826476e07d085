//! The active controller plans each metadata operation against what is already proposed, not
//! only what is committed: an operation whose proposal timed out (its caller answered
//! REQUEST_TIMED_OUT) may still commit, so the next one waits for it. Reproducer: with both
//! followers paused, CreateTopics `x` (1 partition) times out; a second CreateTopics `x`
//! (3 partitions) follows; once the followers resume, the first commits and the second must be
//! refused (TOPIC_ALREADY_EXISTS), not commit too and redefine the topic.

mod common;

use std::time::Duration;

use common::cluster::TestCluster;
use common::poll_until;
use common::wire::{self, RawConn};

const SETTLE: Duration = Duration::from_secs(60);
const BROKER: i32 = 4;

#[test]
fn an_operation_that_timed_out_is_planned_before_the_next() {
    let cluster = TestCluster::start(
        3,
        1,
        &[
            // Proposals time out fast; leadership does not move while the followers are away.
            ("controller.quorum.request.timeout.ms", "1000"),
            ("controller.quorum.election.timeout.ms", "10000"),
        ],
    );
    let active = cluster.active_controller(SETTLE);
    let mut conn = RawConn::connect(cluster.node(BROKER).kafka_addr());
    wire::create_topics(&mut conn, &[("before", 1)]);
    let followers: Vec<i32> = cluster
        .controllers()
        .map(|node| node.node_id)
        .filter(|id| *id != active)
        .collect();
    for follower in &followers {
        cluster.pause(*follower);
    }
    let first = wire::create_topics_codes(&mut conn, &[("x", 1)]);
    assert_ne!(
        first[0].1, 0,
        "no quorum: the first create cannot be acknowledged"
    );
    // Again, a few times: at least one reaches the controller after it gave up waiting for
    // the first (which is still proposed).
    for _ in 0..3 {
        let second = wire::create_topics_codes(&mut conn, &[("x", 3)]);
        assert_ne!(second[0].1, 0, "no quorum yet for the second either");
    }
    for follower in &followers {
        cluster.resume(*follower);
    }
    // Operations run in order: once `after` is created, both creates of `x` were decided.
    poll_until("a create after the quorum is back", SETTLE, || {
        (wire::create_topics_codes(&mut conn, &[("after", 1)])[0].1 == 0).then_some(())
    });
    let metadata = poll_until("the broker sees `after`", SETTLE, || {
        let metadata = conn.metadata(Some(&["x", "after"]), false);
        metadata
            .topics
            .iter()
            .all(|t| t.error_code == 0)
            .then_some(metadata)
    });
    let x = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "x"))
        .expect("x in the metadata");
    assert_eq!(
        x.partitions.len(),
        1,
        "the first create of x committed; the second was planned after it and refused"
    );
}
