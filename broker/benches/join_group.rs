//! The group coordinator's work for JoinGroup in a group of 1,000 members, without the network:
//! the state machine ([`Group`]) alone, as the coordinator calls it under the group's lock.
//!
//! A group of 1,000 consumer members (KIP-394 two-step join, one protocol with 64 bytes of
//! metadata each) completes its first generation; one member leaves, 998 of the rest rejoin
//! (parked), and what is timed is either one parked rejoin (`join_group/parked_rejoin`) or the
//! rejoin that completes the round (`join_group/completing_rejoin`: the protocol choice over
//! every member, the next generation, and the answers to all 999, the leader's listing every
//! member's metadata).
//!
//! ```text
//! cargo bench -p skald-broker --bench join_group
//! ```

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use skald_broker::group::state::{JoinRequest, Reply};
use skald_broker::group::{Group, GroupConfig};

const MEMBERS: usize = 1_000;

fn join_request(member_id: &str, fresh: &str) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        group_instance_id: None,
        client_id: "consumer".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 45_000,
        rebalance_timeout_ms: 300_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from(vec![7u8; 64]))],
        require_known_member_id: true,
        fresh_member_id: fresh.to_string(),
    }
}

fn member_id(i: usize) -> String {
    format!("consumer-{i:04}-5c4d1f52-9a0b-4b8e-8f3c-2f6c1e1d0a{i:04}")
}

/// A group whose first generation of [`MEMBERS`] completed, then one member left and the first
/// `parked` of the others rejoined (waiting for the rest).
fn rebalancing_group(parked: usize) -> (Group, Vec<impl Sized>) {
    let config = GroupConfig {
        initial_rebalance_delay_ms: 100,
        ..GroupConfig::default()
    };
    let mut group = Group::new("bench", config);
    let mut waiting = Vec::new();
    for i in 0..MEMBERS {
        let id = member_id(i);
        let Reply::Now(first) = group.join(join_request("", &id), 0) else {
            panic!("MEMBER_ID_REQUIRED expected");
        };
        assert_eq!(first.member_id, id);
        waiting.push(group.join(join_request(&id, ""), 0));
    }
    group.tick(1_000);
    assert_eq!(group.generation_id(), 1);
    assert_eq!(group.leave(&member_id(MEMBERS - 1), None, 1_100), None);
    for i in 0..parked {
        waiting.push(group.join(join_request(&member_id(i), ""), 1_200));
    }
    (group, waiting)
}

fn bench(c: &mut Criterion) {
    let mut benches = c.benchmark_group("join_group");
    benches.sample_size(30);
    benches.bench_function("parked_rejoin", |b| {
        b.iter_batched(
            || rebalancing_group(MEMBERS / 2),
            |(mut group, waiting)| {
                let reply = group.join(join_request(&member_id(MEMBERS / 2), ""), 1_300);
                black_box((reply, waiting, group))
            },
            BatchSize::PerIteration,
        )
    });
    benches.bench_function("completing_rejoin", |b| {
        b.iter_batched(
            || rebalancing_group(MEMBERS - 2),
            |(mut group, waiting)| {
                let reply = group.join(join_request(&member_id(MEMBERS - 2), ""), 1_300);
                black_box((reply, waiting, group))
            },
            BatchSize::PerIteration,
        )
    });
    benches.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
