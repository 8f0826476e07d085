//! The simulated network: packets that are dropped, delayed (and so reordered), and lost on cut
//! links, which are cut one way or both.

use std::collections::BTreeSet;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use skald_controller::{AlterPartitionReply, AlterPartitionRequest, MetadataImage};

use super::Rng;

/// What the brokers, the client and the controller tell each other.
#[derive(Debug)]
pub(super) enum Wire {
    Register {
        incarnation: u64,
    },
    Registered {
        incarnation: u64,
        broker_epoch: i64,
        /// The metadata version that holds the registration.
        version: u64,
    },
    Heartbeat {
        broker_epoch: i64,
        /// The metadata version the broker has applied: it is unfenced once it has its own
        /// registration.
        metadata_version: u64,
    },
    /// A heartbeat's answer, and the client's metadata: the image as of `version`.
    Metadata {
        version: u64,
        image: MetadataImage,
    },
    /// The heartbeat's broker epoch is not the registered one.
    StaleBrokerEpoch,
    MetadataRequest,
    AlterPartition(AlterPartitionRequest),
    AlterPartitionAnswer {
        request: AlterPartitionRequest,
        reply: AlterPartitionReply,
    },
    Fetch(FetchAsk),
    FetchAnswer {
        ask: FetchAsk,
        answer: FetchAnswer,
    },
    Produce {
        request: u64,
        partition: i32,
        batch_id: i64,
        records: usize,
    },
    ProduceAnswer {
        request: u64,
        partition: i32,
        /// The batch's base offset.
        result: Result<i64, ResponseError>,
    },
}

/// One partition of a follower's fetch.
#[derive(Debug, Clone, Copy)]
pub(super) struct FetchAsk {
    pub(super) partition: i32,
    pub(super) current_leader_epoch: i32,
    pub(super) fetch_offset: i64,
    pub(super) last_fetched_epoch: i32,
}

#[derive(Debug)]
pub(super) struct FetchAnswer {
    pub(super) error: Option<ResponseError>,
    pub(super) diverging: Option<(i32, i64)>,
    pub(super) high_watermark: i64,
    pub(super) log_start_offset: i64,
    pub(super) records: Bytes,
}

pub(super) struct Packet {
    pub(super) deliver_at: u64,
    pub(super) seq: u64,
    pub(super) from: i32,
    pub(super) to: i32,
    pub(super) wire: Wire,
}

#[derive(Default)]
pub(super) struct Network {
    pub(super) packets: Vec<Packet>,
    seq: u64,
    pub(super) drop_per_mille: u64,
    pub(super) delay_ticks_max: u64,
    /// Cut directions, as (from, to).
    cuts: BTreeSet<(i32, i32)>,
}

impl Network {
    pub(super) fn send(&mut self, rng: &mut Rng, now: u64, from: i32, to: i32, wire: Wire) {
        self.seq += 1;
        if rng.chance_per_mille(self.drop_per_mille) {
            return;
        }
        let deliver_at = now + 1 + rng.below(self.delay_ticks_max + 1);
        self.packets.push(Packet {
            deliver_at,
            seq: self.seq,
            from,
            to,
            wire,
        });
    }

    pub(super) fn cut(&mut self, from: i32, to: i32) {
        self.cuts.insert((from, to));
    }

    pub(super) fn heal(&mut self) {
        self.cuts.clear();
    }

    pub(super) fn is_cut(&self, from: i32, to: i32) -> bool {
        self.cuts.contains(&(from, to))
    }

    /// The packets due by `now` whose receiver `can_receive` (a paused process reads nothing:
    /// its packets wait), in delivery order.
    pub(super) fn due(&mut self, now: u64, can_receive: impl Fn(i32) -> bool) -> Vec<Packet> {
        let mut due = Vec::new();
        let mut waiting = Vec::with_capacity(self.packets.len());
        for packet in std::mem::take(&mut self.packets) {
            if packet.deliver_at <= now && can_receive(packet.to) {
                due.push(packet);
            } else {
                waiting.push(packet);
            }
        }
        self.packets = waiting;
        due.sort_by_key(|p| (p.deliver_at, p.seq));
        due
    }
}
