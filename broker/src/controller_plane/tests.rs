//! The controller plane on one node, without a broker: a one-voter quorum with its driver and
//! publisher, the controller listener on a loopback port, and brokers' requests reaching it
//! in-process ([`ControllerChannel`] with the driver) and over TCP ([`RemoteControllers`], and raw
//! Kafka frames).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::alter_partition_request::{PartitionData, TopicData};
use kafka_protocol::messages::{
    AlterPartitionRequest as WireRequest, AlterPartitionResponse, ApiKey, BrokerId,
};
use raft::eraftpb::Message;
use skald_controller::controller::CreateTopicSpec;
use skald_controller::quorum::QuorumConfig;
use skald_controller::{
    AlterPartitionError, AlterPartitionRequest, BrokerRegistration, Controller, ControllerConfig,
    ControllerOp, ControllerReply, ElectionConfig, FileDisk, IsrChange, IsrMember, MetadataImage,
    PartitionState, Quorum, TopicId,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

use super::client::RemoteControllers;
use super::server::{self, ControllerListenerContext};
use crate::config::Voter;
use crate::metadata::channel::{AlterPartitionOutcome, PartitionAltered};
use crate::metadata::driver::{self, DriverConfig, DriverHandle, Heartbeat, RaftSender};
use crate::metadata::publisher::Publisher;
use crate::metadata::{ControlError, ControllerChannel};
use crate::metrics::Metrics;

const CLUSTER_ID: &str = "controller-plane-test";
const TIMEOUT: Duration = Duration::from_secs(5);

/// A single voter has nobody to send raft messages to.
struct NoPeers;

impl RaftSender for NoPeers {
    fn send(&self, _to: i32, _message: Message) {}
}

struct Node {
    driver: DriverHandle,
    /// The image and index the publisher last applied: what a broker on this node serves.
    published: Arc<Mutex<(Arc<MetadataImage>, u64)>>,
    address: SocketAddr,
    _dir: tempfile::TempDir,
    _stop: broadcast::Sender<()>,
}

impl Node {
    async fn start(elections: ElectionConfig) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let quorum = Quorum::open(
            QuorumConfig::new(1, vec![1]),
            FileDisk::open(dir.path()).unwrap(),
            Vec::new(),
        )
        .unwrap();
        let published = Arc::new(Mutex::new((quorum.image(), quorum.applied_index())));
        let publisher = {
            let published = Arc::clone(&published);
            Publisher::start(Box::new(move |image, index| {
                *published.lock().unwrap() = (image, index);
            }))
            .unwrap()
        };
        let controller = Controller::new(ControllerConfig {
            node_id: 1,
            num_partitions: 1,
            default_replication_factor: 1,
        })
        .with_election_config(elections);
        let driver = driver::start(
            DriverConfig {
                node_id: 1,
                metrics: Metrics::new().unwrap(),
                tick: Duration::from_millis(5),
                session_timeout_ms: 60_000,
                fast_fencing: true,
                unresponsive_fencing: true,
                probe_silence_ms: 60_000,
                silent_brokers: None,
                request_timeout: TIMEOUT,
                auto_balance: false,
            },
            quorum,
            controller,
            publisher,
            Box::new(NoPeers),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let context = Arc::new(ControllerListenerContext {
            driver: driver.clone(),
            cluster_id: CLUSTER_ID.into(),
            frame_bytes_max: 1 << 20,
        });
        let (stop, _) = broadcast::channel(1);
        let accepting = stop.clone();
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                tokio::spawn(server::serve(
                    Arc::clone(&context),
                    stream,
                    peer,
                    accepting.subscribe(),
                ));
            }
        });
        let node = Node {
            driver,
            published,
            address,
            _dir: dir,
            _stop: stop,
        };
        node.wait_until("the quorum elects this node", |_| node.driver.is_leader())
            .await;
        node
    }

    fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.published.lock().unwrap().0)
    }

    async fn wait_until(&self, what: &str, done: impl Fn(&MetadataImage) -> bool) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while !done(&self.image()) {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Registers a broker and heartbeats until it is unfenced; returns its epoch.
    async fn join(&self, broker_id: i32) -> i64 {
        let epoch = self
            .driver
            .register(BrokerRegistration {
                broker_id,
                incarnation_id: 100 + broker_id as u64,
                endpoints: Vec::new(),
                rack: None,
            })
            .await
            .unwrap();
        self.heartbeat(broker_id, epoch, false).await;
        self.wait_until("the broker is unfenced", |image| {
            image.brokers.get(&broker_id).is_some_and(|b| !b.fenced)
        })
        .await;
        epoch
    }

    async fn heartbeat(&self, broker_id: i32, broker_epoch: i64, want_fence: bool) {
        self.driver
            .heartbeat(Heartbeat {
                broker_id,
                broker_epoch,
                current_metadata_offset: i64::MAX,
                want_fence,
                want_shut_down: false,
            })
            .await
            .unwrap();
    }

    async fn create(&self, name: &str, assignments: Vec<(i32, Vec<i32>)>) -> TopicId {
        let reply = self
            .driver
            .operation(ControllerOp::CreateTopics {
                topics: vec![CreateTopicSpec {
                    name: name.into(),
                    num_partitions: -1,
                    replication_factor: -1,
                    assignments,
                    configs: Vec::new(),
                }],
                validate_only: false,
                allow_internal: false,
            })
            .await
            .unwrap();
        let ControllerReply::CreateTopics(results) = reply else {
            panic!("unexpected reply {reply:?}")
        };
        results[0].as_ref().unwrap().topic_id
    }

    fn remote(&self) -> ControllerChannel {
        let voter = Voter {
            node_id: 1,
            host: self.address.ip().to_string(),
            port: self.address.port(),
        };
        let remote = RemoteControllers::new(CLUSTER_ID.into(), vec![voter], TIMEOUT, 1 << 20);
        ControllerChannel::new(None, Some(remote), TIMEOUT)
    }

    fn local(&self) -> ControllerChannel {
        ControllerChannel::new(Some(self.driver.clone()), None, TIMEOUT)
    }

    /// (leader, leader epoch, ISR, partition epoch) of a partition as published.
    fn partition(&self, topic: &str, partition: i32) -> PartitionState {
        PartitionState::from(&self.image().topic(topic).unwrap().partitions[&partition])
    }
}

fn change(
    topic_id: TopicId,
    partition: i32,
    partition_epoch: i32,
    isr: &[(i32, i64)],
) -> IsrChange {
    IsrChange {
        topic_id,
        partition,
        leader_epoch: 0,
        partition_epoch,
        new_isr: isr
            .iter()
            .map(|&(broker_id, broker_epoch)| IsrMember {
                broker_id,
                broker_epoch,
            })
            .collect(),
        leader_recovery_state: 0,
    }
}

fn state(leader: i32, leader_epoch: i32, isr: Vec<i32>, partition_epoch: i32) -> PartitionState {
    PartitionState {
        leader,
        leader_epoch,
        isr,
        partition_epoch,
    }
}

fn altered(
    topic_id: TopicId,
    partition: i32,
    result: Result<PartitionState, AlterPartitionError>,
) -> PartitionAltered {
    PartitionAltered {
        topic_id,
        partition,
        result,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_partition_reaches_the_controller_in_process_and_over_the_wire() {
    let node = Node::start(ElectionConfig::default()).await;
    let epochs = [node.join(1).await, node.join(2).await, node.join(3).await];
    let orders = node
        .create("orders", vec![(0, vec![1, 2, 3]), (1, vec![2, 3, 1])])
        .await;
    let ids = |members: &[i32]| -> Vec<(i32, i64)> {
        members
            .iter()
            .map(|&id| (id, epochs[id as usize - 1]))
            .collect()
    };

    // Over the wire, from broker 1: shrink partition 0; partition 1 is not its to change; an
    // unknown topic; partition 0 again from the old state.
    let request = AlterPartitionRequest {
        broker_id: 1,
        broker_epoch: epochs[0],
        partitions: vec![
            change(orders, 0, 0, &ids(&[1, 2])),
            change(orders, 1, 0, &ids(&[2, 3])),
            change(TopicId(0xdead), 0, 0, &ids(&[1])),
            change(orders, 0, 0, &ids(&[1])),
        ],
    };
    let outcome = node.remote().alter_partition(request).await.unwrap();
    assert_eq!(
        outcome,
        AlterPartitionOutcome {
            partitions: vec![
                altered(orders, 0, Ok(state(1, 0, vec![1, 2], 1))),
                altered(orders, 1, Err(AlterPartitionError::InvalidRequest)),
                altered(TopicId(0xdead), 0, Err(AlterPartitionError::UnknownTopicId)),
                altered(orders, 0, Err(AlterPartitionError::InvalidUpdateVersion)),
            ]
        }
    );
    node.wait_until("the shrink is published", |image| {
        outcome.is_applied_in(image)
    })
    .await;
    assert_eq!(node.partition("orders", 0), state(1, 0, vec![1, 2], 1));

    // In-process: the reply comes once this node serves the change.
    let request = AlterPartitionRequest {
        broker_id: 1,
        broker_epoch: epochs[0],
        partitions: vec![change(orders, 0, 1, &ids(&[1, 2, 3]))],
    };
    let outcome = node.local().alter_partition(request).await.unwrap();
    assert_eq!(
        outcome.partitions,
        vec![altered(orders, 0, Ok(state(1, 0, vec![1, 2, 3], 2)))]
    );
    assert!(outcome.is_applied_in(&node.image()));

    // The same ISR again: nothing to commit, the current state back.
    let unchanged = AlterPartitionRequest {
        broker_id: 1,
        broker_epoch: epochs[0],
        partitions: vec![change(orders, 0, 2, &ids(&[1, 2, 3]))],
    };
    let outcome = node
        .remote()
        .alter_partition(unchanged.clone())
        .await
        .unwrap();
    assert_eq!(
        outcome.partitions,
        vec![altered(orders, 0, Ok(state(1, 0, vec![1, 2, 3], 2)))]
    );

    // A stale broker epoch refuses the whole request, either way.
    let stale = AlterPartitionRequest {
        broker_epoch: epochs[0] - 1,
        ..unchanged
    };
    assert_eq!(
        node.remote().alter_partition(stale.clone()).await,
        Err(ControlError::StaleBrokerEpoch)
    );
    assert_eq!(
        node.local().alter_partition(stale).await,
        Err(ControlError::StaleBrokerEpoch)
    );
    assert_eq!(node.partition("orders", 0), state(1, 0, vec![1, 2, 3], 2));
    node.driver.shutdown(Duration::from_secs(1)).await;
}

/// Sends one Kafka frame on a fresh connection and returns the response frame's body.
async fn round_trip(address: SocketAddr, frame: Bytes) -> Bytes {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(&frame).await.unwrap();
    let size = stream.read_i32().await.unwrap();
    let mut body = BytesMut::zeroed(usize::try_from(size).unwrap());
    stream.read_exact(&mut body).await.unwrap();
    body.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_alter_partition_names_its_isr_by_id_only() {
    let node = Node::start(ElectionConfig::default()).await;
    let epoch_1 = node.join(1).await;
    node.join(2).await;
    let orders = node.create("orders", vec![(0, vec![1, 2])]).await;
    let topic = |partitions: Vec<PartitionData>| {
        TopicData::default()
            .with_topic_id(uuid::Uuid::from_u128(orders.0))
            .with_partitions(partitions)
    };
    let request = WireRequest::default()
        .with_broker_id(BrokerId(1))
        .with_broker_epoch(epoch_1)
        .with_topics(vec![
            topic(vec![PartitionData::default()
                .with_partition_index(0)
                .with_leader_epoch(0)
                .with_partition_epoch(0)
                .with_new_isr(vec![BrokerId(1)])]),
            topic(vec![PartitionData::default()
                .with_partition_index(3)
                .with_new_isr(vec![BrokerId(1)])]),
        ]);
    let frame =
        skald_protocol::codec::encode_request_frame(ApiKey::AlterPartition, 2, 9, "test", &request)
            .unwrap();
    let body = round_trip(node.address, frame).await;
    let (correlation_id, response) =
        skald_protocol::codec::decode_response::<AlterPartitionResponse>(
            body,
            ApiKey::AlterPartition,
            2,
        )
        .unwrap();
    assert_eq!(correlation_id, 9);
    assert_eq!(response.error_code, 0);
    let answers: Vec<(i32, i16, i32, i32, Vec<BrokerId>, i32)> = response
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| {
            (
                p.partition_index,
                p.error_code,
                p.leader_id.0,
                p.leader_epoch,
                p.isr.clone(),
                p.partition_epoch,
            )
        })
        .collect();
    assert_eq!(
        answers,
        vec![(0, 0, 1, 0, vec![BrokerId(1)], 1), (3, 3, 0, 0, vec![], 0)]
    );
    assert_eq!(
        node.image().topic("orders").unwrap().partitions[&0].isr,
        vec![1]
    );

    // A requester that is not registered: the top-level error alone.
    let stranger = request.clone().with_broker_id(BrokerId(7));
    let frame = skald_protocol::codec::encode_request_frame(
        ApiKey::AlterPartition,
        2,
        10,
        "test",
        &stranger,
    )
    .unwrap();
    let (_, response) = skald_protocol::codec::decode_response::<AlterPartitionResponse>(
        round_trip(node.address, frame).await,
        ApiKey::AlterPartition,
        2,
    )
    .unwrap();
    assert_eq!((response.error_code, response.topics.len()), (77, 0));
    node.driver.shutdown(Duration::from_secs(1)).await;
}

/// Broker 1, the preferred replica of "orders"-0, is fenced and comes back; once the leader
/// (broker 2) takes it back into the ISR, the next pass gives it its leadership back.
async fn fence_and_return_preferred_replica(node: &Node) -> (TopicId, [i64; 3]) {
    let epochs = [node.join(1).await, node.join(2).await, node.join(3).await];
    let orders = node.create("orders", vec![(0, vec![1, 2, 3])]).await;
    node.heartbeat(1, epochs[0], true).await;
    node.wait_until("broker 1 is fenced", |image| image.brokers[&1].fenced)
        .await;
    assert_eq!(node.partition("orders", 0), state(2, 1, vec![2, 3], 1));
    node.heartbeat(1, epochs[0], false).await;
    node.wait_until("broker 1 is back", |image| !image.brokers[&1].fenced)
        .await;
    let rejoin = AlterPartitionRequest {
        broker_id: 2,
        broker_epoch: epochs[1],
        partitions: vec![IsrChange {
            leader_epoch: 1,
            ..change(
                orders,
                0,
                1,
                &[(2, epochs[1]), (3, epochs[2]), (1, epochs[0])],
            )
        }],
    };
    let outcome = node.local().alter_partition(rejoin).await.unwrap();
    assert_eq!(
        outcome.partitions,
        vec![altered(orders, 0, Ok(state(2, 1, vec![2, 3, 1], 2)))]
    );
    (orders, epochs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_controller_moves_leadership_back_to_the_preferred_replica() {
    let node = Node::start(ElectionConfig {
        leader_imbalance_check_interval_ms: 50,
        ..ElectionConfig::default()
    })
    .await;
    fence_and_return_preferred_replica(&node).await;
    node.wait_until("broker 1 leads again", |image| {
        image.topic("orders").unwrap().partitions[&0].leader == 1
    })
    .await;
    assert_eq!(node.partition("orders", 0), state(1, 2, vec![2, 3, 1], 3));
    node.driver.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_rebalance_leadership_stays_where_it_is() {
    let node = Node::start(ElectionConfig {
        auto_leader_rebalance_enable: false,
        leader_imbalance_check_interval_ms: 20,
        ..ElectionConfig::default()
    })
    .await;
    fence_and_return_preferred_replica(&node).await;
    // Ten intervals' worth: had a pass run, broker 1 would lead.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(node.partition("orders", 0), state(2, 1, vec![2, 3, 1], 2));
    node.driver.shutdown(Duration::from_secs(1)).await;
}

/// A voter that takes connections and requests and never answers (a paused process, a host
/// behind a dropping firewall).
async fn silent_voter(node_id: i32) -> Voter {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    Voter {
        node_id,
        host: address.ip().to_string(),
        port: address.port(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_leaves_a_silent_controller_for_the_next_voter_within_its_timeout() {
    const ATTEMPT: Duration = Duration::from_secs(1);
    let node = Node::start(ElectionConfig::default()).await;
    let epoch = node.join(1).await;
    let live = Voter {
        node_id: 1,
        host: node.address.ip().to_string(),
        port: node.address.port(),
    };
    let remote = RemoteControllers::new(
        CLUSTER_ID.into(),
        vec![silent_voter(2).await, live],
        TIMEOUT,
        1 << 20,
    );
    // The broker still takes the silent voter for the leader, as after a controller stalls.
    remote.learn_leader(Some(2));
    let channel =
        ControllerChannel::new(None, Some(remote), TIMEOUT).with_heartbeat_timeout(ATTEMPT);
    let heartbeat = Heartbeat {
        broker_id: 1,
        broker_epoch: epoch,
        current_metadata_offset: i64::MAX,
        want_fence: false,
        want_shut_down: false,
    };

    let started = tokio::time::Instant::now();
    let reply = channel.heartbeat(heartbeat.clone()).await.unwrap();
    let took = started.elapsed();
    assert_eq!((reply.is_caught_up, reply.is_fenced), (true, false));
    // One attempt's timeout at the silent voter, then the live one answers.
    assert!(took >= ATTEMPT && took < ATTEMPT * 2, "{took:?}");

    // The silent voter is passed over now: the next heartbeat is answered at once.
    let started = tokio::time::Instant::now();
    let reply = channel.heartbeat(heartbeat).await.unwrap();
    assert_eq!((reply.is_caught_up, reply.is_fenced), (true, false));
    assert!(started.elapsed() < ATTEMPT, "{:?}", started.elapsed());
}
