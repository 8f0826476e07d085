//! The controller: validates operations against the current image, produces the records that carry
//! them out, commits those records (durably, as one batch) and only then replays them and replies.
//! An operation never changes state itself; `MetadataImage::replay` does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::error::{Result, TopicError};
use crate::image::MetadataImage;
use crate::log::MetadataLog;
use crate::names::{is_internal, validate_topic_name};
use crate::record::{ConfigResource, Endpoint, MetadataRecord, TopicId};
use crate::topic_config::validate_topic_config;

/// The most partitions one CreateTopics/CreatePartitions request may add, and the most any topic
/// may have (CreatePartitions refuses to grow a topic past it).
pub const PARTITIONS_PER_REQUEST_MAX: i64 = 100_000;

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
#[derive(Debug, Clone, Default)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTopic {
    pub topic_id: TopicId,
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// One topic of a CreatePartitions request: grow `name` to `count` partitions.
#[derive(Debug, Clone)]
pub struct CreatePartitionsSpec {
    pub name: String,
    pub count: i32,
    /// Replicas for each new partition, or None for automatic placement.
    pub assignments: Option<Vec<Vec<i32>>>,
}

/// A topic named in a DeleteTopics request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicRef {
    Name(String),
    Id(TopicId),
}

/// The single writer of cluster metadata.
pub struct Controller {
    config: ControllerConfig,
    log: MetadataLog,
    image: Arc<MetadataImage>,
    new_topic_id: Box<dyn FnMut() -> u128 + Send>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("config", &self.config)
            .field("log", &self.log)
            .field("applied_batches", &self.image.applied_batches)
            .finish()
    }
}

impl Controller {
    /// Opens the metadata log under `metadata_dir` and replays it into the image.
    pub fn open(metadata_dir: &Path, config: ControllerConfig) -> Result<Controller> {
        let (log, batches) = MetadataLog::open(metadata_dir)?;
        let mut image = MetadataImage::default();
        for batch in &batches {
            image.replay_batch(batch);
        }
        tracing::info!(
            batches = batches.len(),
            topics = image.topics.len(),
            partitions = image.partition_count(),
            "metadata log replayed"
        );
        Ok(Controller {
            config,
            log,
            image: Arc::new(image),
            new_topic_id: Box::new(random_topic_id),
        })
    }

    /// Replaces the source of new topic ids (tests use a counter).
    pub fn with_topic_id_source(mut self, source: impl FnMut() -> u128 + Send + 'static) -> Self {
        self.new_topic_id = Box::new(source);
        self
    }

    /// The image as of the last committed batch; cheap to clone and safe to keep.
    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.image)
    }

    /// Commits records as one batch: durable first, then replayed. Nothing changes if the write fails.
    fn commit(&mut self, records: Vec<MetadataRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.log.append(&records)?;
        Arc::make_mut(&mut self.image).replay_batch(&records);
        Ok(())
    }

    /// Registers this node's broker, writing a record only when its registration changed.
    pub fn register_broker(
        &mut self,
        broker_id: i32,
        endpoints: Vec<Endpoint>,
        rack: Option<String>,
    ) -> Result<()> {
        if let Some(existing) = self.image.brokers.get(&broker_id) {
            if existing.endpoints == endpoints && existing.rack == rack {
                return Ok(());
            }
        }
        let incarnation_id = random_topic_id() as u64;
        self.commit(vec![MetadataRecord::RegisterBroker {
            broker_id,
            incarnation_id,
            endpoints,
            rack,
        }])
    }

    /// Creates topics for a client's CreateTopics. Each topic succeeds or fails on its own; the
    /// successful ones commit together. Internal topics are refused: only the broker creates them.
    pub fn create_topics(
        &mut self,
        specs: &[CreateTopicSpec],
        validate_only: bool,
    ) -> Result<Vec<Result<CreatedTopic, TopicError>>> {
        self.create_topics_with(specs, validate_only, false)
    }

    /// Creates topics on the broker's own behalf (`__consumer_offsets` when the group coordinator
    /// first needs it): as [`Controller::create_topics`], but internal topics may be created.
    /// Never for a client's request.
    pub fn create_internal_topics(
        &mut self,
        specs: &[CreateTopicSpec],
    ) -> Result<Vec<Result<CreatedTopic, TopicError>>> {
        self.create_topics_with(specs, false, true)
    }

    fn create_topics_with(
        &mut self,
        specs: &[CreateTopicSpec],
        validate_only: bool,
        allow_internal: bool,
    ) -> Result<Vec<Result<CreatedTopic, TopicError>>> {
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
            let result = self.plan_topic(spec, allow_internal, &mut partitions_in_request);
            results.push(result.map(|(created, topic_records)| {
                records.extend(topic_records);
                created
            }));
        }
        if !validate_only {
            self.commit(records)?;
        }
        Ok(results)
    }

    fn plan_topic(
        &mut self,
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
        if self.image.topic(&spec.name).is_some() {
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
            self.place_replicas(0, num_partitions, replication_factor)?
        } else {
            if spec.num_partitions != -1 || spec.replication_factor != -1 {
                return Err(TopicError::InvalidRequest(
                    "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
                ));
            }
            let assignments = assignments_by_partition(&spec.assignments)?;
            self.check_partition_budget(assignments.len() as i64, partitions_in_request)?;
            self.validate_assignments(&assignments)?;
            assignments
        };
        let replication_factor = assignments
            .first()
            .map_or(0, |replicas| replicas.len() as i16);
        let topic_id = TopicId((self.new_topic_id)());
        let mut records = vec![MetadataRecord::Topic {
            name: spec.name.clone(),
            topic_id,
        }];
        records.extend(partition_records(topic_id, 0, assignments.iter()));
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

    /// Round-robin placement over registered brokers, as Kafka's StripedReplicaPlacer does without racks.
    fn place_replicas(
        &self,
        first_partition: i32,
        count: i32,
        replication_factor: i16,
    ) -> Result<Vec<Vec<i32>>, TopicError> {
        let brokers: Vec<i32> = self.image.brokers.keys().copied().collect();
        if brokers.is_empty() || replication_factor as usize > brokers.len() {
            return Err(TopicError::InvalidReplicationFactor(format!(
                "Unable to replicate the partition {replication_factor} time(s): The target replication factor of {replication_factor} cannot be reached because only {} broker(s) are registered.",
                brokers.len()
            )));
        }
        Ok((first_partition..first_partition + count)
            .map(|partition| {
                (0..replication_factor as usize)
                    .map(|replica| brokers[(partition as usize + replica) % brokers.len()])
                    .collect()
            })
            .collect())
    }

    fn validate_assignments(&self, assignments: &[Vec<i32>]) -> Result<(), TopicError> {
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
            if let Some(unknown) = replicas
                .iter()
                .find(|id| !self.image.brokers.contains_key(id))
            {
                return Err(TopicError::InvalidReplicaAssignment(format!(
                    "The manual partition assignment includes broker {unknown}, but no such broker is registered."
                )));
            }
        }
        Ok(())
    }

    /// Deletes topics by name or id. Internal topics cannot be deleted. A topic named more than
    /// once (twice by name, twice by id, or by name and by id) is refused at every mention and
    /// not deleted, as Kafka does.
    pub fn delete_topics(
        &mut self,
        topics: &[TopicRef],
    ) -> Result<Vec<Result<(String, TopicId), TopicError>>> {
        let found: Vec<Result<(String, TopicId), TopicError>> = topics
            .iter()
            .map(|topic| {
                let found = match topic {
                    TopicRef::Name(name) => self
                        .image
                        .topic(name)
                        .ok_or(TopicError::UnknownTopicOrPartition),
                    TopicRef::Id(id) => self
                        .image
                        .topic_by_id(*id)
                        .ok_or(TopicError::UnknownTopicId),
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
        self.commit(records)?;
        Ok(results)
    }

    /// Adds partitions to existing topics. A topic named more than once is refused at every
    /// mention and not grown, as Kafka does.
    pub fn create_partitions(
        &mut self,
        specs: &[CreatePartitionsSpec],
        validate_only: bool,
    ) -> Result<Vec<Result<(), TopicError>>> {
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
            let result =
                self.plan_partitions(spec, &mut partitions_in_request)
                    .map(|new_records| {
                        records.extend(new_records);
                    });
            results.push(result);
        }
        if !validate_only {
            self.commit(records)?;
        }
        Ok(results)
    }

    fn plan_partitions(
        &self,
        spec: &CreatePartitionsSpec,
        partitions_in_request: &mut i64,
    ) -> Result<Vec<MetadataRecord>, TopicError> {
        let topic = self
            .image
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
            .map_or(1, |p| p.replicas.len() as i16);
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
                self.validate_assignments(assignments)?;
                assignments.clone()
            }
            None => self.place_replicas(current, added, replication_factor)?,
        };
        Ok(partition_records(topic.topic_id, current, assignments.iter()).collect())
    }
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

fn partition_records<'a>(
    topic_id: TopicId,
    first_partition: i32,
    assignments: impl Iterator<Item = &'a Vec<i32>> + 'a,
) -> impl Iterator<Item = MetadataRecord> + 'a {
    assignments
        .enumerate()
        .map(move |(index, replicas)| MetadataRecord::Partition {
            topic_id,
            partition: first_partition + index as i32,
            replicas: replicas.clone(),
            isr: replicas.clone(),
            leader: replicas.first().copied().unwrap_or(-1),
            leader_epoch: 0,
            partition_epoch: 0,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Controller {
        let mut next_id = 0u128;
        let mut controller = Controller::open(
            dir,
            ControllerConfig {
                node_id: 1,
                num_partitions: 2,
                default_replication_factor: 1,
            },
        )
        .unwrap()
        .with_topic_id_source(move || {
            next_id += 1;
            next_id
        });
        let endpoint = Endpoint {
            name: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
            port: 9092,
        };
        controller.register_broker(1, vec![endpoint], None).unwrap();
        controller
    }

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
        let dir = tempfile::tempdir().unwrap();
        let mut controller = open(dir.path());
        let mut with_config = spec("compacted", 1);
        with_config.configs = vec![("cleanup.policy".into(), Some("compact".into()))];
        let mut bad_config = spec("badconfig", 1);
        bad_config.configs = vec![("retention.ms".into(), Some("soon".into()))];
        let mut too_many_replicas = spec("replicated", 1);
        too_many_replicas.replication_factor = 3;
        let results = controller
            .create_topics(
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
            .unwrap();
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

        let again = controller
            .create_topics(&[spec("orders", 1)], false)
            .unwrap();
        assert_eq!(
            again,
            vec![Err(TopicError::TopicAlreadyExists("orders".into()))]
        );

        let image = controller.image();
        assert_eq!(
            image.topics.keys().collect::<Vec<_>>(),
            vec!["compacted", "defaulted", "orders"]
        );
        let orders = image.topic("orders").unwrap();
        assert_eq!(orders.partitions.len(), 3);
        assert_eq!(orders.partitions[&2].replicas, vec![1]);
        assert_eq!(orders.partitions[&2].leader, 1);
    }

    fn register(controller: &mut Controller, broker_id: i32) {
        let endpoint = Endpoint {
            name: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
            port: 9092 + broker_id as u16,
        };
        controller
            .register_broker(broker_id, vec![endpoint], None)
            .unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let mut controller = open(dir.path());
        let results = controller
            .create_topics(
                &[
                    spec("__consumer_offsets", 1),
                    spec("__transaction_state", 1),
                    spec("__cluster_metadata", 1),
                    spec("__foo", 1),
                ],
                false,
            )
            .unwrap();
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
            controller
                .delete_topics(&[TopicRef::Name("__foo".into())])
                .unwrap(),
            vec![Ok(("__foo".to_string(), TopicId(1)))]
        );

        let results = controller
            .create_internal_topics(&[spec("__consumer_offsets", 3), spec("__cluster_metadata", 1)])
            .unwrap();
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
            controller
                .delete_topics(&[TopicRef::Name("__consumer_offsets".into())])
                .unwrap(),
            vec![Err(TopicError::InvalidRequest(
                "Topic __consumer_offsets is internal and cannot be deleted.".into()
            ))]
        );
        let image = controller.image();
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
        let dir = tempfile::tempdir().unwrap();
        let mut controller = open(dir.path());
        register(&mut controller, 2);
        let manual = |name: &str, assignments: Vec<(i32, Vec<i32>)>| CreateTopicSpec {
            name: name.into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments,
            configs: Vec::new(),
        };
        let results = controller
            .create_topics(
                &[
                    manual("repeated", vec![(0, vec![1]), (0, vec![2])]),
                    manual("gap", vec![(0, vec![1]), (2, vec![2])]),
                    manual("unordered", vec![(1, vec![2]), (0, vec![1])]),
                ],
                false,
            )
            .unwrap();
        assert_eq!(
            results,
            vec![
                Err(TopicError::InvalidReplicaAssignment(
                    "Found multiple manual partition assignments for partition 0".into()
                )),
                Err(TopicError::InvalidReplicaAssignment(
                    "partitions should be a consecutive 0-based integer sequence".into()
                )),
                created(1, 2),
            ]
        );
        let image = controller.image();
        assert_eq!(image.topics.keys().collect::<Vec<_>>(), vec!["unordered"]);
        let unordered = image.topic("unordered").unwrap();
        assert_eq!(unordered.partitions[&0].replicas, vec![1]);
        assert_eq!(unordered.partitions[&1].replicas, vec![2]);
    }

    #[test]
    fn create_partitions_refuses_every_mention_of_a_repeated_topic() {
        let dir = tempfile::tempdir().unwrap();
        let mut controller = open(dir.path());
        controller
            .create_topics(&[spec("orders", 1), spec("audit", 1)], false)
            .unwrap();
        let results = controller
            .create_partitions(
                &[
                    grow("orders", 2, None),
                    grow("audit", 2, None),
                    grow("orders", 3, None),
                ],
                false,
            )
            .unwrap();
        let duplicate = || {
            Err(TopicError::InvalidRequest(
                "Duplicate topic in request.".into(),
            ))
        };
        assert_eq!(results, vec![duplicate(), Ok(()), duplicate()]);
        let image = controller.image();
        assert_eq!(image.topic("orders").unwrap().partitions.len(), 1);
        assert_eq!(image.topic("audit").unwrap().partitions.len(), 2);
    }

    #[test]
    fn create_partitions_refuses_assignments_of_another_replication_factor() {
        let dir = tempfile::tempdir().unwrap();
        let mut controller = open(dir.path());
        register(&mut controller, 2);
        let mut replicated = spec("orders", 1);
        replicated.replication_factor = 2;
        controller.create_topics(&[replicated], false).unwrap();
        let results = controller
            .create_partitions(&[grow("orders", 3, Some(vec![vec![1], vec![2]]))], false)
            .unwrap();
        assert_eq!(
            results,
            vec![Err(TopicError::InvalidReplicaAssignment(
                "Inconsistent replication factor between partitions, partition 0 has 2 while partitions [1, 2] have replication factors [1, 1], respectively.".into()
            ))]
        );
        let results = controller
            .create_partitions(
                &[grow("orders", 3, Some(vec![vec![2, 1], vec![1, 2, 3]]))],
                false,
            )
            .unwrap();
        assert_eq!(
            results,
            vec![Err(TopicError::InvalidReplicaAssignment(
                "Inconsistent replication factor between partitions, partition 0 has 2 while partitions [2] have replication factors [3], respectively.".into()
            ))]
        );
        assert_eq!(
            controller.image().topic("orders").unwrap().partitions.len(),
            1
        );

        let results = controller
            .create_partitions(
                &[grow("orders", 3, Some(vec![vec![2, 1], vec![1, 2]]))],
                false,
            )
            .unwrap();
        assert_eq!(results, vec![Ok(())]);
        let image = controller.image();
        let orders = image.topic("orders").unwrap();
        assert_eq!(orders.partitions[&1].replicas, vec![2, 1]);
        assert_eq!(orders.partitions[&2].replicas, vec![1, 2]);
    }

    #[test]
    fn a_topic_may_not_grow_past_the_partition_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut controller = open(dir.path());
        controller
            .create_topics(&[spec("orders", 1)], false)
            .unwrap();
        let limit = PARTITIONS_PER_REQUEST_MAX as i32;
        assert_eq!(
            controller
                .create_partitions(&[grow("orders", limit + 1, None)], false)
                .unwrap(),
            vec![Err(TopicError::InvalidPartitions(
                "A topic may have at most 100000 partitions.".into()
            ))]
        );
        assert_eq!(
            controller
                .create_partitions(&[grow("orders", limit, None)], true)
                .unwrap(),
            vec![Ok(())]
        );
        assert_eq!(
            controller.image().topic("orders").unwrap().partitions.len(),
            1
        );
    }

    #[test]
    fn delete_topics_refuses_every_mention_of_a_repeated_topic() {
        let dir = tempfile::tempdir().unwrap();
        let mut controller = open(dir.path());
        controller
            .create_topics(
                &[
                    spec("orders", 1),
                    spec("audit", 1),
                    spec("keep", 1),
                    spec("gone", 1),
                ],
                false,
            )
            .unwrap();
        let results = controller
            .delete_topics(&[
                TopicRef::Name("orders".into()),
                TopicRef::Name("orders".into()),
                TopicRef::Name("audit".into()),
                TopicRef::Id(TopicId(2)),
                TopicRef::Id(TopicId(3)),
                TopicRef::Id(TopicId(3)),
                TopicRef::Name("missing".into()),
                TopicRef::Name("missing".into()),
                TopicRef::Name("gone".into()),
            ])
            .unwrap();
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
            controller.image().topics.keys().collect::<Vec<_>>(),
            vec!["audit", "keep", "orders"]
        );
    }

    #[test]
    fn validate_only_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut controller = open(dir.path());
        let before = controller.image();
        let results = controller
            .create_topics(&[spec("orders", 3)], true)
            .unwrap();
        assert_eq!(results[0].as_ref().map(|c| c.num_partitions), Ok(3));
        assert!(Arc::ptr_eq(&before, &controller.image()));
        let grow = controller
            .create_partitions(
                &[CreatePartitionsSpec {
                    name: "orders".into(),
                    count: 4,
                    assignments: None,
                }],
                true,
            )
            .unwrap();
        assert_eq!(grow, vec![Err(TopicError::UnknownTopicOrPartition)]);
    }

    #[test]
    fn partitions_grow_only_and_deleted_topics_are_gone_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut controller = open(dir.path());
        controller
            .create_topics(&[spec("orders", 2), spec("audit", 1)], false)
            .unwrap();
        let grow = |count| CreatePartitionsSpec {
            name: "orders".into(),
            count,
            assignments: None,
        };
        assert_eq!(
            controller.create_partitions(&[grow(5)], false).unwrap(),
            vec![Ok(())]
        );
        assert!(matches!(
            controller.create_partitions(&[grow(3)], false).unwrap()[0],
            Err(TopicError::InvalidPartitions(_))
        ));
        assert!(matches!(
            controller.create_partitions(&[grow(5)], false).unwrap()[0],
            Err(TopicError::InvalidPartitions(_))
        ));
        let deleted = controller
            .delete_topics(&[
                TopicRef::Name("audit".into()),
                TopicRef::Name("missing".into()),
                TopicRef::Id(TopicId(99)),
            ])
            .unwrap();
        assert_eq!(
            deleted,
            vec![
                Ok(("audit".to_string(), TopicId(2))),
                Err(TopicError::UnknownTopicOrPartition),
                Err(TopicError::UnknownTopicId)
            ]
        );
        let image = controller.image();
        drop(controller);

        let reopened = open(dir.path());
        assert_eq!(*reopened.image(), *image);
        assert_eq!(
            reopened.image().topic("orders").unwrap().partitions.len(),
            5
        );
        assert!(reopened.image().topic("audit").is_none());
    }
}
