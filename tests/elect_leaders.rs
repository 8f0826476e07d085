//! ElectLeaders (what `kafka-leader-election.sh` sends) against real broker processes: after a
//! failover, a preferred election gives leadership back to the first replica once it is in sync,
//! and a second one has nothing to do.

mod common;

use common::cluster::TestCluster;
use common::replica::{wait_for_partition, PartitionView};
use common::wire::RawConn;
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, CreateTopicsResponse, ElectLeadersRequest, ElectLeadersResponse,
};

/// Kafka's error codes.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const ELECTION_NOT_NEEDED: i16 = 84;
const PREFERRED: i8 = 0;

/// (topic, partition, error code) of every partition result.
fn outcomes(response: &ElectLeadersResponse) -> Vec<(String, i32, i16)> {
    response
        .replica_election_results
        .iter()
        .flat_map(|topic| {
            topic
                .partition_result
                .iter()
                .map(|p| (topic.topic.0.to_string(), p.partition_id, p.error_code))
        })
        .collect()
}

fn elect_preferred(conn: &mut RawConn, topic: &str, partitions: Vec<i32>) -> ElectLeadersResponse {
    conn.request(
        &ElectLeadersRequest::default()
            .with_election_type(PREFERRED)
            .with_topic_partitions(Some(vec![TopicPartitions::default()
                .with_topic(common::wire::topic_name(topic))
                .with_partitions(partitions)]))
            .with_timeout_ms(10_000),
        2,
    )
}

#[test]
fn a_preferred_election_moves_leadership_back_to_the_first_replica() {
    let mut cluster = TestCluster::start(1, 2, &[("auto.leader.rebalance.enable", "false")]);
    // Broker 3 is not the controller (node 1): its ElectLeaders is forwarded.
    let mut conn = RawConn::connect(cluster.node(3).kafka_addr());
    let created: CreateTopicsResponse = conn.request(
        &CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(common::wire::topic_name("elected"))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_assignments(vec![CreatableReplicaAssignment::default()
                    .with_partition_index(0)
                    .with_broker_ids(vec![BrokerId(2), BrokerId(3)])])]),
        7,
    );
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");
    wait_for_partition(
        &cluster,
        3,
        "elected",
        "both replicas in sync",
        |v: &PartitionView| v.leader == 2 && v.isr == vec![2, 3],
    );

    cluster.stop(2);
    wait_for_partition(
        &cluster,
        3,
        "elected",
        "broker 3 leading",
        |v: &PartitionView| v.leader == 3,
    );
    cluster.restart(2);
    let before = wait_for_partition(
        &cluster,
        3,
        "elected",
        "broker 2 back in the ISR",
        |v: &PartitionView| v.leader == 3 && v.isr == vec![2, 3],
    );

    let mut conn = RawConn::connect(cluster.node(3).kafka_addr());
    let elected = elect_preferred(&mut conn, "elected", vec![0]);
    assert_eq!(elected.error_code, 0, "{elected:?}");
    assert_eq!(outcomes(&elected), vec![("elected".into(), 0, 0)]);
    // The broker answers once it serves the change itself.
    let after = common::replica::view_on(&cluster, 3, "elected").expect("partition 0");
    assert_eq!(after.leader, 2);
    assert_eq!(after.leader_epoch, before.leader_epoch + 1);
    wait_for_partition(
        &cluster,
        2,
        "elected",
        "broker 2 leading on broker 2",
        |v: &PartitionView| v.leader == 2 && v.isr == vec![2, 3],
    );

    let again = elect_preferred(&mut conn, "elected", vec![0, 5]);
    assert_eq!(again.error_code, 0, "{again:?}");
    assert_eq!(
        outcomes(&again),
        vec![
            ("elected".into(), 0, ELECTION_NOT_NEEDED),
            ("elected".into(), 5, UNKNOWN_TOPIC_OR_PARTITION),
        ]
    );
    let unchanged = common::replica::view_on(&cluster, 3, "elected").expect("partition 0");
    assert_eq!(
        (unchanged.leader, unchanged.leader_epoch),
        (2, after.leader_epoch)
    );
}
