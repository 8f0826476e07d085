//! The controller: validates operations against the current image, produces the records that carry
//! them out, commits those records (durably, as one batch) and only then replays them and replies.
//! An operation never changes state itself; `MetadataImage::replay` does.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::election::{is_live, unclean_leader_election_enabled, ElectionConfig};
use crate::error::{Result, TopicError};
use crate::image::{MetadataImage, TopicImage};
use crate::names::{is_internal, validate_topic_name};
use crate::placement::place_replicas;
use crate::record::{ConfigResource, Endpoint, MetadataRecord, TopicId};
use crate::topic_config::validate_topic_config;

/// The most partitions one CreateTopics/CreatePartitions request may add, and the most any topic
/// may have (CreatePartitions refuses to grow a topic past it).
pub const PARTITIONS_PER_REQUEST_MAX: i64 = 100_000;

/// A partition's leader when no replica can lead it (Kafka's -1): it is offline.
pub const NO_LEADER: i32 = -1;

/// Controller settings taken from the server configuration.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub node_id: i32,
    /// `num.partitions`: used when a request asks for the default (-1).
    pub num_partitions: i32,
    /// `default.replication.factor`: used when a request asks for the default (-1).
    pub default_replication_factor: i16,
}

/// One topic of a CreateTopics request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreateTopicSpec {
    pub name: String,
    /// -1 for `num.partitions`.
    pub num_partitions: i32,
    /// -1 for `default.replication.factor`.
    pub replication_factor: i16,
    /// Manual assignment as the request lists it: (partition, replicas). Empty for automatic
    /// placement. A list, not a map, so a partition listed twice is refused rather than merged.
    pub assignments: Vec<(i32, Vec<i32>)>,
    pub configs: Vec<(String, Option<String>)>,
}

/// What a successful (or validated) topic creation produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedTopic {
    pub topic_id: TopicId,
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// One topic of a CreatePartitions request: grow `name` to `count` partitions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreatePartitionsSpec {
    pub name: String,
    pub count: i32,
    /// Replicas for each new partition, or None for automatic placement.
    pub assignments: Option<Vec<Vec<i32>>>,
}

/// A topic named in a DeleteTopics request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TopicRef {
    Name(String),
    Id(TopicId),
}

/// What an operation decided: the records that carry it out (committed together, as one batch)
/// and the reply to send once they have committed. An operation never changes the image itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned<T> {
    pub records: Vec<MetadataRecord>,
    pub reply: T,
}

impl<T> Planned<T> {
    fn new(records: Vec<MetadataRecord>, reply: T) -> Planned<T> {
        Planned { records, reply }
    }
}

/// A broker's request to join the cluster (Kafka's BrokerRegistration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub broker_id: i32,
    pub incarnation_id: u64,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
}

/// The controller's operations: each validates a request against the committed image and plans
/// the records that carry it out (KRaft's QuorumController model). Committing them (through the
/// quorum) and replaying them is the caller's job, so the same planning serves every node.
pub struct Controller {
    config: ControllerConfig,
    elections: ElectionConfig,
    new_topic_id: Box<dyn FnMut() -> u128 + Send>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("config", &self.config)
            .field("elections", &self.elections)
            .finish()
    }
}

impl Controller {
    pub fn new(config: ControllerConfig) -> Controller {
        Controller {
            config,
            elections: ElectionConfig::default(),
            new_topic_id: Box::new(random_topic_id),
        }
    }

    /// Replaces the election settings (Kafka's defaults until then).
    pub fn with_election_config(mut self, elections: ElectionConfig) -> Self {
        self.elections = elections;
        self
    }

    pub fn election_config(&self) -> &ElectionConfig {
        &self.elections
    }

    /// Whether `topic` allows unclean leader elections: its config, else the broker default.
    pub fn unclean_leader_election_enabled(&self, topic: &TopicImage) -> bool {
        unclean_leader_election_enabled(topic, self.elections.unclean_leader_election_enable)
    }

    /// Replaces the source of new topic ids (tests use a counter).
    pub fn with_topic_id_source(mut self, source: impl FnMut() -> u128 + Send + 'static) -> Self {
        self.new_topic_id = Box::new(source);
        self
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// Registers a broker (BrokerRegistration). A new incarnation gets a new broker epoch and starts
    /// fenced, as in KRaft: it is unfenced once its heartbeats show it has caught up with the
    /// metadata. A repeated registration of the same incarnation changes nothing and keeps its epoch.
    pub fn register_broker(
        &mut self,
        image: &MetadataImage,
        registration: BrokerRegistration,
    ) -> Planned<i64> {
        if let Some(existing) = image.brokers.get(&registration.broker_id) {
            if existing.incarnation_id == registration.incarnation_id
                && existing.endpoints == registration.endpoints
                && existing.rack == registration.rack
            {
                return Planned::new(Vec::new(), existing.broker_epoch);
            }
        }
        // A new incarnation of a live broker: the old one is gone (it restarted faster than its
        // session), so its leaderships move as if it had been fenced.
        let mut records = match image.brokers.get(&registration.broker_id) {
            Some(old) => {
                self.fence_broker(image, old.broker_id, old.broker_epoch)
                    .records
            }
            None => Vec::new(),
        };
        let broker_epoch = image.last_broker_epoch + 1;
        let record = MetadataRecord::RegisterBroker {
            broker_id: registration.broker_id,
            incarnation_id: registration.incarnation_id,
            broker_epoch,
            endpoints: registration.endpoints,
            rack: registration.rack,
            fenced: true,
        };
        records.push(record);
        Planned::new(records, broker_epoch)
    }

    /// Fences a broker whose session expired or that is shutting down: it leaves every ISR it is
    /// in (unless it is the last member, so it can lead again when it returns), and the partitions
    /// it led get the next unfenced ISR member as leader. With no such member, a topic that allows
    /// unclean elections gets its first live replica as leader with an ISR of just that replica;
    /// any other goes offline. Nothing happens for a stale epoch or an already fenced broker.
    pub fn fence_broker(
        &self,
        image: &MetadataImage,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Planned<()> {
        let Some(broker) = image.brokers.get(&broker_id) else {
            return Planned::new(Vec::new(), ());
        };
        if broker.broker_epoch != broker_epoch || broker.fenced {
            return Planned::new(Vec::new(), ());
        }
        let mut records = vec![MetadataRecord::FenceBroker {
            broker_id,
            broker_epoch,
        }];
        let usable = |id: i32| id != broker_id && is_live(image, id);
        for topic in image.topics.values() {
            for (partition, state) in &topic.partitions {
                if !state.isr.contains(&broker_id) && state.leader != broker_id {
                    continue;
                }
                let mut isr: Vec<i32> = state
                    .isr
                    .iter()
                    .copied()
                    .filter(|id| *id != broker_id)
                    .collect();
                if isr.is_empty() {
                    isr = state.isr.clone();
                }
                let mut leader = if state.leader == broker_id {
                    state
                        .replicas
                        .iter()
                        .copied()
                        .find(|id| isr.contains(id) && usable(*id))
                        .unwrap_or(NO_LEADER)
                } else {
                    state.leader
                };
                if leader == NO_LEADER && self.unclean_leader_election_enabled(topic) {
                    if let Some(id) = state.replicas.iter().copied().find(|id| usable(*id)) {
                        tracing::warn!(
                            topic = topic.name,
                            partition,
                            leader = id,
                            "unclean leader election: no in-sync replica is live"
                        );
                        leader = id;
                        isr = vec![id];
                    }
                }
                records.push(MetadataRecord::PartitionChange {
                    topic_id: topic.topic_id,
                    partition: *partition,
                    leader: (leader != state.leader).then_some(leader),
                    isr: (isr != state.isr).then_some(isr),
                    replicas: None,
                    removing_replicas: None,
                    adding_replicas: None,
                });
            }
        }
        Planned::new(records, ())
    }

    /// Unregisters a broker (Kafka's UnregisterBroker, for a broker that left for good): fenced
    /// first if it is not, as [`Controller::fence_broker`] does (it leaves every ISR and its
    /// leaderships move), then its registration is removed. Replica lists that name it keep it,
    /// as with Kafka, until the partitions are reassigned. A broker still running registers
    /// again with its next heartbeat.
    pub fn unregister_broker(
        &self,
        image: &MetadataImage,
        broker_id: i32,
    ) -> Planned<Result<(), crate::ops::UnregisterBrokerError>> {
        let Some(broker) = image.brokers.get(&broker_id) else {
            return Planned::new(
                Vec::new(),
                Err(crate::ops::UnregisterBrokerError::NotRegistered(broker_id)),
            );
        };
        let broker_epoch = broker.broker_epoch;
        let mut records = self.fence_broker(image, broker_id, broker_epoch).records;
        records.push(MetadataRecord::UnregisterBroker {
            broker_id,
            broker_epoch,
        });
        // A decommissioned broker has left for good: a new broker under its id starts afresh.
        if crate::topic_config::is_decommissioned(image, broker_id) {
            records.push(MetadataRecord::Config {
                resource: crate::record::ConfigResource::Broker(broker_id),
                name: crate::topic_config::BROKER_DECOMMISSIONED.into(),
                value: None,
            });
        }
        Planned::new(records, Ok(()))
    }

    /// Unfences a broker that has caught up with the metadata: offline partitions whose ISR holds
    /// it get it back as leader; offline partitions that merely list it as a replica elect it with
    /// an ISR of just itself when their topic allows unclean elections. Nothing happens for a
    /// stale epoch or an unfenced broker.
    pub fn unfence_broker(
        &self,
        image: &MetadataImage,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Planned<()> {
        let Some(broker) = image.brokers.get(&broker_id) else {
            return Planned::new(Vec::new(), ());
        };
        if broker.broker_epoch != broker_epoch || !broker.fenced {
            return Planned::new(Vec::new(), ());
        }
        let mut records = vec![MetadataRecord::UnfenceBroker {
            broker_id,
            broker_epoch,
        }];
        for topic in image.topics.values() {
            for (partition, state) in &topic.partitions {
                if state.leader != NO_LEADER || !state.replicas.contains(&broker_id) {
                    continue;
                }
                let isr = if state.isr.contains(&broker_id) {
                    None
                } else if self.unclean_leader_election_enabled(topic) {
                    tracing::warn!(
                        topic = topic.name,
                        partition,
                        leader = broker_id,
                        "unclean leader election: no in-sync replica is live"
                    );
                    Some(vec![broker_id])
                } else {
                    continue;
                };
                records.push(MetadataRecord::PartitionChange {
                    topic_id: topic.topic_id,
                    partition: *partition,
                    leader: Some(broker_id),
                    isr,
                    replicas: None,
                    removing_replicas: None,
                    adding_replicas: None,
                });
            }
        }
        Planned::new(records, ())
    }

    /// Creates topics for a client's CreateTopics. Each topic succeeds or fails on its own; the
    /// successful ones commit together. Internal topics are refused: only the broker creates them.
    pub fn create_topics(
        &mut self,
        image: &MetadataImage,
        specs: &[CreateTopicSpec],
        validate_only: bool,
    ) -> Planned<Vec<Result<CreatedTopic, TopicError>>> {
        self.create_topics_with(image, specs, validate_only, false)
    }

    /// Creates topics on the broker's own behalf (`__consumer_offsets` when the group coordinator
    /// first needs it): as [`Controller::create_topics`], but internal topics may be created.
    /// Never for a client's request.
    pub fn create_internal_topics(
        &mut self,
        image: &MetadataImage,
        specs: &[CreateTopicSpec],
    ) -> Planned<Vec<Result<CreatedTopic, TopicError>>> {
        self.create_topics_with(image, specs, false, true)
    }

    fn create_topics_with(
        &mut self,
        image: &MetadataImage,
        specs: &[CreateTopicSpec],
        validate_only: bool,
        allow_internal: bool,
    ) -> Planned<Vec<Result<CreatedTopic, TopicError>>> {
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(specs.len());
        let mut names_in_request = HashSet::new();
        let mut partitions_in_request = 0i64;
        for spec in specs {
            if !names_in_request.insert(spec.name.as_str()) {
                results.push(Err(TopicError::InvalidRequest(format!(
                    "Create topics request from client contains duplicate topic name {}",
                    spec.name
                ))));
                continue;
            }
            let result = self.plan_topic(image, spec, allow_internal, &mut partitions_in_request);
            results.push(result.map(|(created, topic_records)| {
                records.extend(topic_records);
                created
            }));
        }
        if validate_only {
            records.clear();
        }
        Planned::new(records, results)
    }

    fn plan_topic(
        &mut self,
        image: &MetadataImage,
        spec: &CreateTopicSpec,
        allow_internal: bool,
        partitions_in_request: &mut i64,
    ) -> Result<(CreatedTopic, Vec<MetadataRecord>), TopicError> {
        validate_topic_name(&spec.name).map_err(TopicError::InvalidTopic)?;
        if is_internal(&spec.name) && !allow_internal {
            return Err(TopicError::InvalidRequest(format!(
                "Creation of internal topic {} is prohibited.",
                spec.name
            )));
        }
        if image.topic(&spec.name).is_some() {
            return Err(TopicError::TopicAlreadyExists(spec.name.clone()));
        }
        let mut configs = BTreeMap::new();
        for (name, value) in &spec.configs {
            let Some(value) = value else {
                return Err(TopicError::InvalidConfig(format!(
                    "Null value not supported for topic configs: {name}"
                )));
            };
            validate_topic_config(name, value).map_err(TopicError::InvalidConfig)?;
            configs.insert(name.clone(), value.clone());
        }
        let topic_id = TopicId((self.new_topic_id)());
        let assignments: Vec<Vec<i32>> = if spec.assignments.is_empty() {
            let num_partitions = match spec.num_partitions {
                -1 => self.config.num_partitions,
                n if n <= 0 => {
                    return Err(TopicError::InvalidPartitions(
                        "Number of partitions must be larger than 0.".into(),
                    ))
                }
                n => n,
            };
            let replication_factor = match spec.replication_factor {
                -1 => self.config.default_replication_factor,
                n if n <= 0 => {
                    return Err(TopicError::InvalidReplicationFactor(
                        "Replication factor must be larger than 0.".into(),
                    ))
                }
                n => n,
            };
            self.check_partition_budget(i64::from(num_partitions), partitions_in_request)?;
            place_replicas(
                image,
                topic_id.0 as u64,
                0,
                num_partitions,
                replication_factor,
            )?
        } else {
            if spec.num_partitions != -1 || spec.replication_factor != -1 {
                return Err(TopicError::InvalidRequest(
                    "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
                ));
            }
            let assignments = assignments_by_partition(&spec.assignments)?;
            self.check_partition_budget(assignments.len() as i64, partitions_in_request)?;
            validate_assignments(image, &assignments)?;
            assignments
        };
        let replication_factor = assignments
            .first()
            .map_or(0, |replicas| replicas.len() as i16);
        let mut records = vec![MetadataRecord::Topic {
            name: spec.name.clone(),
            topic_id,
        }];
        records.extend(partition_records(image, topic_id, 0, assignments.iter()));
        records.extend(configs.iter().map(|(name, value)| MetadataRecord::Config {
            resource: ConfigResource::Topic(spec.name.clone()),
            name: name.clone(),
            value: Some(value.clone()),
        }));
        let created = CreatedTopic {
            topic_id,
            num_partitions: assignments.len() as i32,
            replication_factor,
            configs,
        };
        Ok((created, records))
    }

    fn check_partition_budget(
        &self,
        count: i64,
        partitions_in_request: &mut i64,
    ) -> Result<(), TopicError> {
        *partitions_in_request += count;
        if *partitions_in_request > PARTITIONS_PER_REQUEST_MAX {
            return Err(TopicError::InvalidPartitions(format!(
                "A single request may create at most {PARTITIONS_PER_REQUEST_MAX} partitions."
            )));
        }
        Ok(())
    }

    /// Deletes topics by name or id. Internal topics cannot be deleted. A topic named more than
    /// once (twice by name, twice by id, or by name and by id) is refused at every mention and
    /// not deleted, as Kafka does.
    pub fn delete_topics(
        &mut self,
        image: &MetadataImage,
        topics: &[TopicRef],
    ) -> Planned<Vec<Result<(String, TopicId), TopicError>>> {
        let found: Vec<Result<(String, TopicId), TopicError>> = topics
            .iter()
            .map(|topic| {
                let found = match topic {
                    TopicRef::Name(name) => {
                        image.topic(name).ok_or(TopicError::UnknownTopicOrPartition)
                    }
                    TopicRef::Id(id) => image.topic_by_id(*id).ok_or(TopicError::UnknownTopicId),
                };
                found.map(|topic| (topic.name.clone(), topic.topic_id))
            })
            .collect();
        let mut mentions: HashMap<&TopicRef, usize> = HashMap::new();
        let mut mentions_by_id: HashMap<TopicId, usize> = HashMap::new();
        for (topic, found) in topics.iter().zip(&found) {
            *mentions.entry(topic).or_default() += 1;
            if let Ok((_, topic_id)) = found {
                *mentions_by_id.entry(*topic_id).or_default() += 1;
            }
        }
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(topics.len());
        for (topic, found) in topics.iter().zip(found) {
            let duplicate = mentions[topic] > 1
                || found
                    .as_ref()
                    .is_ok_and(|(_, topic_id)| mentions_by_id[topic_id] > 1);
            if duplicate {
                results.push(Err(TopicError::InvalidRequest(
                    match topic {
                        TopicRef::Name(_) => "Duplicate topic name.",
                        TopicRef::Id(_) => "Duplicate topic id.",
                    }
                    .into(),
                )));
                continue;
            }
            let result = found.and_then(|(name, topic_id)| {
                if is_internal(&name) {
                    return Err(TopicError::InvalidRequest(format!(
                        "Topic {name} is internal and cannot be deleted."
                    )));
                }
                records.push(MetadataRecord::RemoveTopic { topic_id });
                Ok((name, topic_id))
            });
            results.push(result);
        }
        Planned::new(records, results)
    }

    /// Adds partitions to existing topics. A topic named more than once is refused at every
    /// mention and not grown, as Kafka does.
    pub fn create_partitions(
        &mut self,
        image: &MetadataImage,
        specs: &[CreatePartitionsSpec],
        validate_only: bool,
    ) -> Planned<Vec<Result<(), TopicError>>> {
        let mut mentions: HashMap<&str, usize> = HashMap::new();
        for spec in specs {
            *mentions.entry(spec.name.as_str()).or_default() += 1;
        }
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(specs.len());
        let mut partitions_in_request = 0i64;
        for spec in specs {
            if mentions[spec.name.as_str()] > 1 {
                results.push(Err(TopicError::InvalidRequest(
                    "Duplicate topic in request.".into(),
                )));
                continue;
            }
            let result = self
                .plan_partitions(image, spec, &mut partitions_in_request)
                .map(|new_records| {
                    records.extend(new_records);
                });
            results.push(result);
        }
        if validate_only {
            records.clear();
        }
        Planned::new(records, results)
    }

    fn plan_partitions(
        &self,
        image: &MetadataImage,
        spec: &CreatePartitionsSpec,
        partitions_in_request: &mut i64,
    ) -> Result<Vec<MetadataRecord>, TopicError> {
        let topic = image
            .topic(&spec.name)
            .ok_or(TopicError::UnknownTopicOrPartition)?;
        let current = topic.partitions.len() as i32;
        if spec.count < current {
            return Err(TopicError::InvalidPartitions(format!(
                "Topic currently has {current} partitions, which is higher than the requested {}.",
                spec.count
            )));
        }
        if spec.count == current {
            return Err(TopicError::InvalidPartitions(format!(
                "Topic already has {current} partitions."
            )));
        }
        if i64::from(spec.count) > PARTITIONS_PER_REQUEST_MAX {
            return Err(TopicError::InvalidPartitions(format!(
                "A topic may have at most {PARTITIONS_PER_REQUEST_MAX} partitions."
            )));
        }
        let added = spec.count - current;
        self.check_partition_budget(i64::from(added), partitions_in_request)?;
        let replication_factor = topic
            .partitions
            .values()
            .next()
            .map_or(1, |p| p.target_replicas().len() as i16);
        let assignments = match &spec.assignments {
            Some(assignments) => {
                if assignments.len() != added as usize {
                    return Err(TopicError::InvalidReplicaAssignment(format!(
                        "Increasing the number of partitions by {added} but {} assignments provided.",
                        assignments.len()
                    )));
                }
                let (partitions, factors): (Vec<i32>, Vec<usize>) = assignments
                    .iter()
                    .zip(current..)
                    .filter(|(replicas, _)| replicas.len() != replication_factor as usize)
                    .map(|(replicas, partition)| (partition, replicas.len()))
                    .unzip();
                if !partitions.is_empty() {
                    return Err(TopicError::InvalidReplicaAssignment(format!(
                        "Inconsistent replication factor between partitions, partition 0 has {replication_factor} while partitions {partitions:?} have replication factors {factors:?}, respectively."
                    )));
                }
                validate_assignments(image, assignments)?;
                assignments.clone()
            }
            None => place_replicas(
                image,
                topic.topic_id.0 as u64,
                current,
                added,
                replication_factor,
            )?,
        };
        Ok(partition_records(image, topic.topic_id, current, assignments.iter()).collect())
    }
}

/// Round-robin placement over registered brokers, as Kafka's StripedReplicaPlacer does without racks.
fn validate_assignments(image: &MetadataImage, assignments: &[Vec<i32>]) -> Result<(), TopicError> {
    let replication_factor = assignments.first().map_or(0, Vec::len);
    for replicas in assignments {
        if replicas.is_empty() || replicas.len() != replication_factor {
            return Err(TopicError::InvalidReplicaAssignment(
                "All partitions must have the same, non-zero number of replicas.".into(),
            ));
        }
        let distinct: HashSet<_> = replicas.iter().collect();
        if distinct.len() != replicas.len() {
            return Err(TopicError::InvalidReplicaAssignment(format!(
                "Duplicate brokers not allowed in replica assignment: {replicas:?}"
            )));
        }
        if let Some(unknown) = replicas.iter().find(|id| !image.brokers.contains_key(id)) {
            return Err(TopicError::InvalidReplicaAssignment(format!(
                "The manual partition assignment includes broker {unknown}, but no such broker is registered."
            )));
        }
        if replicas.iter().all(|id| image.brokers[id].fenced) {
            return Err(TopicError::InvalidReplicaAssignment(format!(
                "All brokers specified in the manual partition assignment {replicas:?} are fenced."
            )));
        }
    }
    Ok(())
}

/// Orders a CreateTopics manual assignment by partition, refusing a partition listed twice or a
/// gap in the numbering with Kafka's messages.
fn assignments_by_partition(assignments: &[(i32, Vec<i32>)]) -> Result<Vec<Vec<i32>>, TopicError> {
    let mut by_partition = BTreeMap::new();
    for (partition, replicas) in assignments {
        if by_partition.insert(*partition, replicas).is_some() {
            return Err(TopicError::InvalidReplicaAssignment(format!(
                "Found multiple manual partition assignments for partition {partition}"
            )));
        }
    }
    if by_partition
        .keys()
        .copied()
        .ne(0..by_partition.len() as i32)
    {
        return Err(TopicError::InvalidReplicaAssignment(
            "partitions should be a consecutive 0-based integer sequence".into(),
        ));
    }
    Ok(by_partition.into_values().cloned().collect())
}

/// New partitions: the ISR is the replicas that are unfenced, and the first of them leads.
fn partition_records<'a>(
    image: &'a MetadataImage,
    topic_id: TopicId,
    first_partition: i32,
    assignments: impl Iterator<Item = &'a Vec<i32>> + 'a,
) -> impl Iterator<Item = MetadataRecord> + 'a {
    assignments.enumerate().map(move |(index, replicas)| {
        let isr: Vec<i32> = replicas
            .iter()
            .copied()
            .filter(|id| image.brokers.get(id).is_some_and(|b| !b.fenced))
            .collect();
        MetadataRecord::Partition {
            topic_id,
            partition: first_partition + index as i32,
            replicas: replicas.clone(),
            leader: isr.first().copied().unwrap_or(NO_LEADER),
            isr,
            leader_epoch: 0,
            partition_epoch: 0,
            removing_replicas: Vec::new(),
            adding_replicas: Vec::new(),
        }
    })
}

/// 128 random bits (for topic ids, incarnation ids, cluster ids) from the OS-seeded hasher keys std uses for HashMap, with a nonzero high part so
/// an id never collides with Kafka's reserved zero UUID.
pub fn random_topic_id() -> u128 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let half = || {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.finish()
    };
    (u128::from(half() | 1) << 64) | u128::from(half())
}

/// A controller and the image its planned records commit into, for the planners' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A controller and the image its planned records commit into, as the quorum would.
    pub(crate) struct Harness {
        pub(crate) controller: Controller,
        pub(crate) image: MetadataImage,
    }

    impl Harness {
        /// Broker 1 registered and unfenced, Kafka's election defaults, topic ids 1, 2, ...
        pub(crate) fn new() -> Harness {
            Harness::with_elections(ElectionConfig::default())
        }

        pub(crate) fn with_elections(elections: ElectionConfig) -> Harness {
            let mut next_id = 0u128;
            let controller = Controller::new(ControllerConfig {
                node_id: 1,
                num_partitions: 2,
                default_replication_factor: 1,
            })
            .with_election_config(elections)
            .with_topic_id_source(move || {
                next_id += 1;
                next_id
            });
            let mut h = Harness {
                controller,
                image: MetadataImage::default(),
            };
            h.register(1);
            h
        }

        pub(crate) fn run<T>(
            &mut self,
            operation: impl FnOnce(&mut Controller, &MetadataImage) -> Planned<T>,
        ) -> T {
            let planned = operation(&mut self.controller, &self.image);
            self.image.replay_batch(&planned.records);
            planned.reply
        }

        /// Registers and unfences a broker.
        pub(crate) fn register(&mut self, broker_id: i32) {
            let registration = BrokerRegistration {
                broker_id,
                incarnation_id: 7,
                endpoints: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port: 9092 + broker_id as u16,
                }],
                rack: None,
            };
            let epoch = self.run(|c, i| c.register_broker(i, registration));
            self.run(|c, i| c.unfence_broker(i, broker_id, epoch));
        }

        /// Commits records as if some other operation had planned them.
        pub(crate) fn replay(&mut self, records: &[MetadataRecord]) {
            self.image.replay_batch(records);
        }

        /// Commits a `PartitionChange` (an ISR change the leader would have asked for).
        pub(crate) fn change(
            &mut self,
            topic_id: TopicId,
            partition: i32,
            leader: Option<i32>,
            isr: Option<Vec<i32>>,
        ) {
            self.replay(&[MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                isr,
                replicas: None,
                removing_replicas: None,
                adding_replicas: None,
            }]);
        }

        pub(crate) fn image(&self) -> &MetadataImage {
            &self.image
        }
    }

    /// A topic with a manual assignment: (partition, replicas).
    pub(crate) fn manual(name: &str, assignments: Vec<(i32, Vec<i32>)>) -> CreateTopicSpec {
        CreateTopicSpec {
            name: name.into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments,
            configs: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Harness;
    use super::*;

    fn spec(name: &str, partitions: i32) -> CreateTopicSpec {
        CreateTopicSpec {
            name: name.into(),
            num_partitions: partitions,
            replication_factor: -1,
            ..Default::default()
        }
    }

    #[test]
    fn create_topics_commits_valid_topics_and_refuses_the_rest_with_kafka_errors() {
        let mut h = Harness::new();
        let mut with_config = spec("compacted", 1);
        with_config.configs = vec![("cleanup.policy".into(), Some("compact".into()))];
        let mut bad_config = spec("badconfig", 1);
        bad_config.configs = vec![("retention.ms".into(), Some("soon".into()))];
        let mut too_many_replicas = spec("replicated", 1);
        too_many_replicas.replication_factor = 3;
        let results = h.run(|c, i| {
            c.create_topics(
                i,
                &[
                    spec("orders", 3),
                    spec("defaulted", -1),
                    spec("bad/name", 1),
                    spec("zero", 0),
                    with_config,
                    bad_config,
                    too_many_replicas,
                    spec("orders", 1),
                ],
                false,
            )
        });
        assert_eq!(
            results[0],
            Ok(CreatedTopic {
                topic_id: TopicId(1),
                num_partitions: 3,
                replication_factor: 1,
                configs: BTreeMap::new()
            })
        );
        assert_eq!(
            results[1].as_ref().map(|created| created.num_partitions),
            Ok(2)
        );
        assert!(matches!(results[2], Err(TopicError::InvalidTopic(_))));
        assert!(matches!(results[3], Err(TopicError::InvalidPartitions(_))));
        assert_eq!(
            results[4]
                .as_ref()
                .map(|c| c.configs.get("cleanup.policy").cloned()),
            Ok(Some("compact".into()))
        );
        assert!(matches!(results[5], Err(TopicError::InvalidConfig(_))));
        assert!(matches!(
            results[6],
            Err(TopicError::InvalidReplicationFactor(_))
        ));
        assert!(matches!(results[7], Err(TopicError::InvalidRequest(_))));

        let again = h.run(|c, i| c.create_topics(i, &[spec("orders", 1)], false));
        assert_eq!(
            again,
            vec![Err(TopicError::TopicAlreadyExists("orders".into()))]
        );

        let image = h.image();
        assert_eq!(
            image.topics.keys().collect::<Vec<_>>(),
            vec!["compacted", "defaulted", "orders"]
        );
        let orders = image.topic("orders").unwrap();
        assert_eq!(orders.partitions.len(), 3);
        assert_eq!(orders.partitions[&2].replicas, vec![1]);
        assert_eq!(orders.partitions[&2].leader, 1);
    }

    fn grow(name: &str, count: i32, assignments: Option<Vec<Vec<i32>>>) -> CreatePartitionsSpec {
        CreatePartitionsSpec {
            name: name.into(),
            count,
            assignments,
        }
    }

    fn created(topic_id: u128, num_partitions: i32) -> Result<CreatedTopic, TopicError> {
        Ok(CreatedTopic {
            topic_id: TopicId(topic_id),
            num_partitions,
            replication_factor: 1,
            configs: BTreeMap::new(),
        })
    }

    #[test]
    fn clients_may_not_create_internal_topics_or_the_metadata_topic_but_the_broker_may() {
        let mut h = Harness::new();
        let results = h.run(|c, i| {
            c.create_topics(
                i,
                &[
                    spec("__consumer_offsets", 1),
                    spec("__transaction_state", 1),
                    spec("__cluster_metadata", 1),
                    spec("__foo", 1),
                ],
                false,
            )
        });
        assert_eq!(
            results,
            vec![
                Err(TopicError::InvalidRequest(
                    "Creation of internal topic __consumer_offsets is prohibited.".into()
                )),
                Err(TopicError::InvalidRequest(
                    "Creation of internal topic __transaction_state is prohibited.".into()
                )),
                Err(TopicError::InvalidTopic(
                    "Topic name \"__cluster_metadata\" is reserved for the cluster metadata log"
                        .into()
                )),
                created(1, 1),
            ]
        );
        // `__foo` is an ordinary topic, so its creator can delete it again.
        assert_eq!(
            h.run(|c, i| c.delete_topics(i, &[TopicRef::Name("__foo".into())])),
            vec![Ok(("__foo".to_string(), TopicId(1)))]
        );

        let results = h.run(|c, i| {
            c.create_internal_topics(
                i,
                &[spec("__consumer_offsets", 3), spec("__cluster_metadata", 1)],
            )
        });
        assert_eq!(
            results,
            vec![
                created(2, 3),
                Err(TopicError::InvalidTopic(
                    "Topic name \"__cluster_metadata\" is reserved for the cluster metadata log"
                        .into()
                )),
            ]
        );
        assert_eq!(
            h.run(|c, i| c.delete_topics(i, &[TopicRef::Name("__consumer_offsets".into())])),
            vec![Err(TopicError::InvalidRequest(
                "Topic __consumer_offsets is internal and cannot be deleted.".into()
            ))]
        );
        let image = h.image();
        assert_eq!(
            image.topics.keys().collect::<Vec<_>>(),
            vec!["__consumer_offsets"]
        );
        assert_eq!(
            image.topic("__consumer_offsets").unwrap().partitions.len(),
            3
        );
    }

    #[test]
    fn manual_assignments_with_a_repeated_or_missing_partition_are_refused() {
        let mut h = Harness::new();
        h.register(2);
        let manual = |name: &str, assignments: Vec<(i32, Vec<i32>)>| CreateTopicSpec {
            name: name.into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments,
            configs: Vec::new(),
        };
        let results = h.run(|c, i| {
            c.create_topics(
                i,
                &[
                    manual("repeated", vec![(0, vec![1]), (0, vec![2])]),
                    manual("gap", vec![(0, vec![1]), (2, vec![2])]),
                    manual("unordered", vec![(1, vec![2]), (0, vec![1])]),
                ],
                false,
            )
        });
        assert_eq!(
            results,
            vec![
                Err(TopicError::InvalidReplicaAssignment(
                    "Found multiple manual partition assignments for partition 0".into()
                )),
                Err(TopicError::InvalidReplicaAssignment(
                    "partitions should be a consecutive 0-based integer sequence".into()
                )),
                created(3, 2),
            ]
        );
        let image = h.image();
        assert_eq!(image.topics.keys().collect::<Vec<_>>(), vec!["unordered"]);
        let unordered = image.topic("unordered").unwrap();
        assert_eq!(unordered.partitions[&0].replicas, vec![1]);
        assert_eq!(unordered.partitions[&1].replicas, vec![2]);
    }

    #[test]
    fn create_partitions_refuses_every_mention_of_a_repeated_topic() {
        let mut h = Harness::new();
        h.run(|c, i| c.create_topics(i, &[spec("orders", 1), spec("audit", 1)], false));
        let results = h.run(|c, i| {
            c.create_partitions(
                i,
                &[
                    grow("orders", 2, None),
                    grow("audit", 2, None),
                    grow("orders", 3, None),
                ],
                false,
            )
        });
        let duplicate = || {
            Err(TopicError::InvalidRequest(
                "Duplicate topic in request.".into(),
            ))
        };
        assert_eq!(results, vec![duplicate(), Ok(()), duplicate()]);
        let image = h.image();
        assert_eq!(image.topic("orders").unwrap().partitions.len(), 1);
        assert_eq!(image.topic("audit").unwrap().partitions.len(), 2);
    }

    #[test]
    fn create_partitions_refuses_assignments_of_another_replication_factor() {
        let mut h = Harness::new();
        h.register(2);
        let mut replicated = spec("orders", 1);
        replicated.replication_factor = 2;
        h.run(|c, i| c.create_topics(i, &[replicated], false));
        let results = h.run(|c, i| {
            c.create_partitions(i, &[grow("orders", 3, Some(vec![vec![1], vec![2]]))], false)
        });
        assert_eq!(
            results,
            vec![Err(TopicError::InvalidReplicaAssignment(
                "Inconsistent replication factor between partitions, partition 0 has 2 while partitions [1, 2] have replication factors [1, 1], respectively.".into()
            ))]
        );
        let results = h.run(|c, i| {
            c.create_partitions(
                i,
                &[grow("orders", 3, Some(vec![vec![2, 1], vec![1, 2, 3]]))],
                false,
            )
        });
        assert_eq!(
            results,
            vec![Err(TopicError::InvalidReplicaAssignment(
                "Inconsistent replication factor between partitions, partition 0 has 2 while partitions [2] have replication factors [3], respectively.".into()
            ))]
        );
        assert_eq!(h.image().topic("orders").unwrap().partitions.len(), 1);

        let results = h.run(|c, i| {
            c.create_partitions(
                i,
                &[grow("orders", 3, Some(vec![vec![2, 1], vec![1, 2]]))],
                false,
            )
        });
        assert_eq!(results, vec![Ok(())]);
        let image = h.image();
        let orders = image.topic("orders").unwrap();
        assert_eq!(orders.partitions[&1].replicas, vec![2, 1]);
        assert_eq!(orders.partitions[&2].replicas, vec![1, 2]);
    }

    #[test]
    fn a_topic_may_not_grow_past_the_partition_limit() {
        let mut h = Harness::new();
        h.run(|c, i| c.create_topics(i, &[spec("orders", 1)], false));
        let limit = PARTITIONS_PER_REQUEST_MAX as i32;
        assert_eq!(
            h.run(|c, i| c.create_partitions(i, &[grow("orders", limit + 1, None)], false)),
            vec![Err(TopicError::InvalidPartitions(
                "A topic may have at most 100000 partitions.".into()
            ))]
        );
        assert_eq!(
            h.run(|c, i| c.create_partitions(i, &[grow("orders", limit, None)], true)),
            vec![Ok(())]
        );
        assert_eq!(h.image().topic("orders").unwrap().partitions.len(), 1);
    }

    #[test]
    fn delete_topics_refuses_every_mention_of_a_repeated_topic() {
        let mut h = Harness::new();
        h.run(|c, i| {
            c.create_topics(
                i,
                &[
                    spec("orders", 1),
                    spec("audit", 1),
                    spec("keep", 1),
                    spec("gone", 1),
                ],
                false,
            )
        });
        let results = h.run(|c, i| {
            c.delete_topics(
                i,
                &[
                    TopicRef::Name("orders".into()),
                    TopicRef::Name("orders".into()),
                    TopicRef::Name("audit".into()),
                    TopicRef::Id(TopicId(2)),
                    TopicRef::Id(TopicId(3)),
                    TopicRef::Id(TopicId(3)),
                    TopicRef::Name("missing".into()),
                    TopicRef::Name("missing".into()),
                    TopicRef::Name("gone".into()),
                ],
            )
        });
        let name = || Err(TopicError::InvalidRequest("Duplicate topic name.".into()));
        let id = || Err(TopicError::InvalidRequest("Duplicate topic id.".into()));
        assert_eq!(
            results,
            vec![
                name(),
                name(),
                name(),
                id(),
                id(),
                id(),
                name(),
                name(),
                Ok(("gone".to_string(), TopicId(4))),
            ]
        );
        assert_eq!(
            h.image().topics.keys().collect::<Vec<_>>(),
            vec!["audit", "keep", "orders"]
        );
    }

    #[test]
    fn validate_only_changes_nothing() {
        let mut h = Harness::new();
        let before = h.image().clone();
        let planned = h
            .controller
            .create_topics(&h.image, &[spec("orders", 3)], true);
        assert!(planned.records.is_empty());
        assert_eq!(planned.reply[0].as_ref().map(|c| c.num_partitions), Ok(3));
        assert_eq!(before, *h.image());
        let grow = h.run(|c, i| {
            c.create_partitions(
                i,
                &[CreatePartitionsSpec {
                    name: "orders".into(),
                    count: 4,
                    assignments: None,
                }],
                true,
            )
        });
        assert_eq!(grow, vec![Err(TopicError::UnknownTopicOrPartition)]);
    }

    #[test]
    fn partitions_grow_only_and_deleted_topics_are_gone_after_reopen() {
        let mut h = Harness::new();
        h.run(|c, i| c.create_topics(i, &[spec("orders", 2), spec("audit", 1)], false));
        let grow = |count| CreatePartitionsSpec {
            name: "orders".into(),
            count,
            assignments: None,
        };
        assert_eq!(
            h.run(|c, i| c.create_partitions(i, &[grow(5)], false)),
            vec![Ok(())]
        );
        assert!(matches!(
            h.run(|c, i| c.create_partitions(i, &[grow(3)], false))[0],
            Err(TopicError::InvalidPartitions(_))
        ));
        assert!(matches!(
            h.run(|c, i| c.create_partitions(i, &[grow(5)], false))[0],
            Err(TopicError::InvalidPartitions(_))
        ));
        let deleted = h.run(|c, i| {
            c.delete_topics(
                i,
                &[
                    TopicRef::Name("audit".into()),
                    TopicRef::Name("missing".into()),
                    TopicRef::Id(TopicId(99)),
                ],
            )
        });
        assert_eq!(
            deleted,
            vec![
                Ok(("audit".to_string(), TopicId(2))),
                Err(TopicError::UnknownTopicOrPartition),
                Err(TopicError::UnknownTopicId)
            ]
        );
        assert_eq!(h.image().topic("orders").unwrap().partitions.len(), 5);
        assert!(h.image().topic("audit").is_none());

        // A snapshot's records replay into the same image.
        let mut restored = MetadataImage::default();
        restored.replay_batch(&h.image().to_records());
        assert_eq!(restored, *h.image());
    }

    fn leaders(image: &MetadataImage, topic: &str) -> Vec<(i32, Vec<i32>, i32)> {
        image
            .topic(topic)
            .unwrap()
            .partitions
            .values()
            .map(|p| (p.leader, p.isr.clone(), p.leader_epoch))
            .collect()
    }

    #[test]
    fn fencing_moves_leadership_to_the_isr_and_unfencing_brings_offline_partitions_back() {
        let mut h = Harness::new();
        h.register(2);
        h.register(3);
        let manual = CreateTopicSpec {
            name: "replicated".into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: vec![(0, vec![2, 1, 3]), (1, vec![1, 2, 3])],
            configs: Vec::new(),
        };
        let single = CreateTopicSpec {
            name: "single".into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: vec![(0, vec![2]), (1, vec![3])],
            configs: Vec::new(),
        };
        h.run(|c, i| c.create_topics(i, &[manual, single], false));
        let epoch_2 = h.image().brokers[&2].broker_epoch;

        // A stale epoch changes nothing.
        assert!(h
            .controller
            .fence_broker(&h.image, 2, epoch_2 - 1)
            .records
            .is_empty());
        h.run(|c, i| c.fence_broker(i, 2, epoch_2));
        assert!(h.image().brokers[&2].fenced);
        assert_eq!(
            leaders(h.image(), "replicated"),
            vec![(1, vec![1, 3], 1), (1, vec![1, 3], 0)]
        );
        // The only replica is fenced: offline, but it stays in the ISR to lead again.
        assert_eq!(
            leaders(h.image(), "single"),
            vec![(NO_LEADER, vec![2], 1), (3, vec![3], 0)]
        );
        // New partitions avoid the fenced broker.
        h.run(|c, i| c.create_topics(i, &[spec("later", 4)], false));
        assert!(h
            .image()
            .topic("later")
            .unwrap()
            .partitions
            .values()
            .all(|p| p.replicas != vec![2]));

        h.run(|c, i| c.unfence_broker(i, 2, epoch_2));
        assert!(!h.image().brokers[&2].fenced);
        assert_eq!(
            leaders(h.image(), "single"),
            vec![(2, vec![2], 2), (3, vec![3], 0)]
        );
        // ISR membership comes back only through replication (AlterPartition), not unfencing.
        assert_eq!(leaders(h.image(), "replicated")[0], (1, vec![1, 3], 1));
    }

    #[test]
    fn a_new_incarnation_starts_fenced_with_a_new_epoch_and_gives_up_the_old_leaderships() {
        let mut h = Harness::new();
        h.run(|c, i| c.create_topics(i, &[spec("orders", 1)], false));
        let old_epoch = h.image().brokers[&1].broker_epoch;
        let same = BrokerRegistration {
            broker_id: 1,
            incarnation_id: 7,
            endpoints: h.image().brokers[&1].endpoints.clone(),
            rack: None,
        };
        // The same incarnation registering again keeps its epoch and changes nothing.
        let planned = h.controller.register_broker(&h.image, same.clone());
        assert_eq!((planned.records.len(), planned.reply), (0, old_epoch));

        let restarted = BrokerRegistration {
            incarnation_id: 8,
            ..same
        };
        let new_epoch = h.run(|c, i| c.register_broker(i, restarted));
        assert!(new_epoch > old_epoch);
        assert!(h.image().brokers[&1].fenced);
        assert_eq!(leaders(h.image(), "orders"), vec![(NO_LEADER, vec![1], 1)]);
        h.run(|c, i| c.unfence_broker(i, 1, new_epoch));
        assert_eq!(leaders(h.image(), "orders"), vec![(1, vec![1], 2)]);
    }

    #[test]
    fn unregistering_fences_first_then_removes_the_registration() {
        let mut h = Harness::new();
        h.register(2);
        h.register(3);
        let manual = CreateTopicSpec {
            name: "replicated".into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: vec![(0, vec![2, 1, 3]), (1, vec![1, 2, 3])],
            configs: Vec::new(),
        };
        h.run(|c, i| c.create_topics(i, &[manual], false));

        assert_eq!(h.run(|c, i| c.unregister_broker(i, 2)), Ok(()));
        assert!(!h.image().brokers.contains_key(&2));
        // It left every ISR and its leadership moved, as a fencing does; replica lists keep it.
        assert_eq!(
            leaders(h.image(), "replicated"),
            vec![(1, vec![1, 3], 1), (1, vec![1, 3], 0)]
        );
        assert!(h
            .image()
            .topic("replicated")
            .unwrap()
            .partitions
            .values()
            .all(|p| p.replicas.contains(&2)));

        // Unknown, or already gone: BROKER_ID_NOT_REGISTERED, and nothing is written.
        for broker in [2, 9] {
            let planned = h.controller.unregister_broker(&h.image, broker);
            assert!(planned.records.is_empty());
            assert_eq!(
                planned.reply,
                Err(crate::ops::UnregisterBrokerError::NotRegistered(broker))
            );
        }
        // A snapshot's records replay into the same image.
        let mut restored = MetadataImage::default();
        restored.replay_batch(&h.image().to_records());
        assert_eq!(restored, *h.image());

        // A decommissioned broker's flag goes with its registration.
        let decommissioned = MetadataRecord::Config {
            resource: crate::record::ConfigResource::Broker(3),
            name: crate::topic_config::BROKER_DECOMMISSIONED.into(),
            value: Some("true".into()),
        };
        h.image.replay(&decommissioned);
        assert!(crate::topic_config::is_decommissioned(&h.image, 3));
        assert_eq!(h.run(|c, i| c.unregister_broker(i, 3)), Ok(()));
        assert!(!h.image().brokers.contains_key(&3));
        assert!(!crate::topic_config::is_decommissioned(h.image(), 3));
        assert!(!h.image().broker_configs.contains_key(&3));
    }
}
