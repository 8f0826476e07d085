//! What the group API handlers' unit tests run on instead of a broker: a coordinator on a manual
//! clock, an in-memory `__consumer_offsets` ([`MemoryOffsetsLog`]) whose leadership, appends and
//! replication a test sets, and a metadata image with the topics offsets are committed for.

use std::sync::{Arc, Mutex};

use kafka_protocol::error::ResponseError;
use skald_controller::{MetadataImage, MetadataRecord, TopicId};
use skald_storage::clock::{Clock, ManualClock};

use super::offsets_log::{AppendWait, OffsetsLog, OffsetsRecord};
use super::records::{self, Change};
use super::{CoordinatorConfig, GroupConfig, GroupCoordinator, GroupsHandle};

/// Where the manual clock starts.
pub const START_MS: i64 = 1_000_000;

/// `__consumer_offsets` in memory: every partition led here unless `leadership` says otherwise;
/// appends kept (decoded) unless `append_error` is set; their replication answered with
/// `replication`.
#[derive(Debug)]
pub struct MemoryOffsetsLog {
    pub leadership: Mutex<Result<(), ResponseError>>,
    pub append_error: Mutex<Option<ResponseError>>,
    pub replication: Mutex<Result<(), ResponseError>>,
    /// Every batch appended: (partition, its records decoded).
    pub appended: Mutex<Vec<(i32, Vec<Change>)>>,
}

impl Default for MemoryOffsetsLog {
    fn default() -> Self {
        MemoryOffsetsLog {
            leadership: Mutex::new(Ok(())),
            append_error: Mutex::new(None),
            replication: Mutex::new(Ok(())),
            appended: Mutex::new(Vec::new()),
        }
    }
}

impl MemoryOffsetsLog {
    pub fn set_leadership(&self, result: Result<(), ResponseError>) {
        *self.leadership.lock().unwrap() = result;
    }

    pub fn fail_appends(&self, error: ResponseError) {
        *self.append_error.lock().unwrap() = Some(error);
    }

    pub fn set_replication(&self, result: Result<(), ResponseError>) {
        *self.replication.lock().unwrap() = result;
    }

    /// The batches appended so far, taken.
    pub fn take_appended(&self) -> Vec<(i32, Vec<Change>)> {
        std::mem::take(&mut *self.appended.lock().unwrap())
    }
}

impl OffsetsLog for MemoryOffsetsLog {
    fn check_leader(&self, _partition: i32) -> Result<(), ResponseError> {
        *self.leadership.lock().unwrap()
    }

    fn append(
        &self,
        partition: i32,
        records: &[OffsetsRecord],
        now_ms: i64,
    ) -> Result<AppendWait, ResponseError> {
        self.check_leader(partition)?;
        if let Some(error) = *self.append_error.lock().unwrap() {
            return Err(error);
        }
        // Through the real encoding, so a test sees what a replaying coordinator would.
        let batch = records::build_batch(records, now_ms).expect("records encode");
        let changes = records::decode_batches(batch.freeze()).expect("records decode");
        self.appended.lock().unwrap().push((partition, changes));
        Ok(AppendWait::ready(*self.replication.lock().unwrap()))
    }
}

/// A coordinator, its clock and log, and an image with topic `orders` (partitions 0 and 1).
pub struct Fixture {
    pub clock: Arc<ManualClock>,
    pub coordinator: Arc<GroupCoordinator>,
    pub log: MemoryOffsetsLog,
    pub image: MetadataImage,
}

impl Fixture {
    /// One offsets partition (every group maps to partition 0), no initial rebalance delay, a
    /// 5 s commit timeout.
    pub fn new() -> Fixture {
        let clock = Arc::new(ManualClock::new(START_MS));
        let config = CoordinatorConfig {
            offsets_topic_partitions: 1,
            offsets_topic_replication_factor: 1,
            offsets_retention_ms: 7 * 24 * 3_600_000,
            offsets_retention_check_interval_ms: 600_000,
            offsets_commit_timeout_ms: 5_000,
            group: GroupConfig {
                initial_rebalance_delay_ms: 0,
                ..GroupConfig::default()
            },
        };
        let coordinator = Arc::new(GroupCoordinator::with_clock(
            config,
            Arc::clone(&clock) as Arc<dyn Clock>,
        ));
        let mut image = MetadataImage::default();
        image.replay_batch(&[
            MetadataRecord::Topic {
                name: "orders".into(),
                topic_id: TopicId(7),
            },
            partition(7, 0),
            partition(7, 1),
        ]);
        Fixture {
            clock,
            coordinator,
            log: MemoryOffsetsLog::default(),
            image,
        }
    }

    pub fn handle(&self) -> GroupsHandle<'_> {
        GroupsHandle {
            coordinator: &self.coordinator,
            offsets_log: &self.log,
            image: &self.image,
        }
    }

    /// One pass of the coordinator's timers (what completes a rebalance).
    pub fn tick(&self) {
        for (group, waits) in self.coordinator.tick(&self.log) {
            assert!(
                waits.is_empty(),
                "group {} has awaited stores after a tick",
                super::lock(&group).id
            );
        }
    }
}

fn partition(topic: u128, index: i32) -> MetadataRecord {
    MetadataRecord::Partition {
        topic_id: TopicId(topic),
        partition: index,
        replicas: vec![1],
        isr: vec![1],
        leader: 1,
        leader_epoch: 0,
        partition_epoch: 0,
        removing_replicas: Vec::new(),
        adding_replicas: Vec::new(),
    }
}
