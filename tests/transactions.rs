//! Transactions end to end with librdkafka against the real binary: a transactional producer
//! commits and aborts, a read_committed consumer (librdkafka's default) sees exactly the
//! committed records, a consume-transform-produce loop commits its input offsets with
//! `send_offsets_to_transaction` (visible only once the transaction commits, untouched by an
//! abort), a second producer with the same transactional id fences the first, and the
//! coordinator's state survives a kill -9.

mod common;

use std::time::{Duration, Instant};

use common::{rdk, TestServer};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

fn transactional_producer(bootstrap: &str, id: &str) -> ThreadedProducer<DefaultProducerContext> {
    rdk::base_config(bootstrap)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", "60000")
        .set("linger.ms", "1")
        .create()
        .expect("create transactional producer")
}

fn send(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, value: &str) {
    producer
        .send(BaseRecord::<(), str>::to(topic).partition(0).payload(value))
        .unwrap_or_else(|(e, _)| panic!("enqueue {value}: {e}"));
}

/// Every data record of partition 0 of `topic` at the consumer's isolation level, as (offset,
/// value), reading until `expected` came (then a short quiet poll for extras).
fn read(bootstrap: &str, topic: &str, isolation: &str, expected: usize) -> Vec<(i64, String)> {
    let consumer: BaseConsumer = rdk::base_config(bootstrap)
        .set("group.id", "transactions-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation)
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("create consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while seen.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            seen.push((
                m.offset(),
                String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap(),
            ));
        }
    }
    let quiet = Instant::now() + Duration::from_millis(500);
    while Instant::now() < quiet {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            seen.push((m.offset(), format!("unexpected at {}", m.offset())));
        }
    }
    seen
}

fn committed(bootstrap: &str, group: &str, topic: &str) -> Option<i64> {
    let consumer: BaseConsumer = rdk::base_config(bootstrap)
        .set("group.id", group)
        .create()
        .expect("create consumer");
    let mut asked = TopicPartitionList::new();
    asked.add_partition(topic, 0);
    let offsets = consumer
        .committed_offsets(asked, TIMEOUT)
        .expect("committed offsets");
    match offsets.elements()[0].offset() {
        Offset::Offset(offset) => Some(offset),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_aborts_offsets_and_fencing() {
    let mut server = TestServer::start();
    let boot = server.bootstrap();
    rdk::create_topic(&boot, "input", 1).await;
    rdk::create_topic(&boot, "output", 1).await;

    // Commit three, abort two.
    let producer = transactional_producer(&boot, "txn-a");
    producer
        .init_transactions(TIMEOUT)
        .expect("init_transactions");
    producer.begin_transaction().unwrap();
    for value in ["c0", "c1", "c2"] {
        send(&producer, "output", value);
    }
    producer.commit_transaction(TIMEOUT).expect("commit");
    producer.begin_transaction().unwrap();
    for value in ["a0", "a1"] {
        send(&producer, "output", value);
    }
    producer.flush(TIMEOUT).unwrap();
    producer.abort_transaction(TIMEOUT).expect("abort");
    // Offsets: 0-2 committed, 3 COMMIT marker, 4-5 aborted, 6 ABORT marker.
    assert_eq!(
        read(&boot, "output", "read_committed", 3),
        vec![(0, "c0".into()), (1, "c1".into()), (2, "c2".into())]
    );
    assert_eq!(
        read(&boot, "output", "read_uncommitted", 5)
            .into_iter()
            .map(|(o, _)| o)
            .collect::<Vec<_>>(),
        vec![0, 1, 2, 4, 5]
    );

    // Consume-transform-produce: ten inputs, their offsets committed in the transaction.
    let plain = rdk::producer(&boot);
    for i in 0..10 {
        plain
            .send(
                rdkafka::producer::FutureRecord::<(), str>::to("input")
                    .partition(0)
                    .payload(&format!("in-{i}")),
                TIMEOUT,
            )
            .await
            .expect("produce input");
    }
    let consumer: BaseConsumer = rdk::base_config(&boot)
        .set("group.id", "etl")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("create consumer");
    consumer.subscribe(&["input"]).unwrap();
    let mut inputs = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while inputs.len() < 10 && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            inputs.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    assert_eq!(inputs.len(), 10, "{inputs:?}");
    let mut positions = TopicPartitionList::new();
    positions
        .add_partition_offset("input", 0, Offset::Offset(10))
        .unwrap();
    // First an aborted attempt: the offsets must not move.
    producer.begin_transaction().unwrap();
    send(&producer, "output", "lost");
    producer
        .send_offsets_to_transaction(&positions, &consumer.group_metadata().unwrap(), TIMEOUT)
        .expect("send offsets");
    producer.abort_transaction(TIMEOUT).expect("abort");
    assert_eq!(committed(&boot, "etl", "input"), None);
    producer.begin_transaction().unwrap();
    for input in &inputs {
        send(&producer, "output", &input.to_uppercase());
    }
    producer
        .send_offsets_to_transaction(&positions, &consumer.group_metadata().unwrap(), TIMEOUT)
        .expect("send offsets");
    producer.commit_transaction(TIMEOUT).expect("commit");
    assert_eq!(committed(&boot, "etl", "input"), Some(10));
    let output = read(&boot, "output", "read_committed", 13);
    let values: Vec<&str> = output.iter().map(|(_, v)| v.as_str()).collect();
    let mut expected = vec!["c0", "c1", "c2"];
    let upper: Vec<String> = (0..10).map(|i| format!("IN-{i}")).collect();
    expected.extend(upper.iter().map(String::as_str));
    assert_eq!(values, expected);

    // The tool shows the id at its coordinator (this broker, node 1): completed, nothing open.
    let tool = |args: &[&str]| {
        let output = std::process::Command::new(common::skald_bin())
            .args(args)
            .args(["-b", &boot])
            .output()
            .expect("run skald");
        assert!(output.status.success(), "{output:?}");
        common::cells(&String::from_utf8_lossy(&output.stdout))
    };
    assert_eq!(
        tool(&["transactions", "list"]),
        vec![
            common::row(&["TRANSACTIONAL-ID", "COORDINATOR", "PRODUCER-ID", "STATE"]),
            common::row(&["txn-a", "1", "0", "CompleteCommit"]),
        ]
    );
    let described = tool(&["transactions", "describe", "txn-a"]);
    assert_eq!(
        described[1],
        common::row(&["txn-a", "1", "CompleteCommit", "0", "0", "60000", "-1", "-"])
    );

    // A new producer with the same transactional id fences the old one.
    let successor = transactional_producer(&boot, "txn-a");
    successor
        .init_transactions(TIMEOUT)
        .expect("successor init");
    producer.begin_transaction().unwrap();
    send(&producer, "output", "zombie");
    let fenced = producer.commit_transaction(TIMEOUT);
    assert!(
        matches!(&fenced, Err(KafkaError::Transaction(e)) if e.is_fatal()),
        "the fenced producer's commit fails fatally: {fenced:?}"
    );
    drop(producer);

    // The coordinator's state survives a crash: the successor goes on.
    server.kill9();
    server.restart();
    let boot = server.bootstrap();
    successor.begin_transaction().unwrap();
    send(&successor, "output", "after-crash");
    successor
        .commit_transaction(TIMEOUT)
        .expect("commit after crash");
    let output = read(&boot, "output", "read_committed", 14);
    assert_eq!(
        output.last().map(|(_, v)| v.as_str()),
        Some("after-crash"),
        "{output:?}"
    );
    assert!(!output
        .iter()
        .any(|(_, v)| ["zombie", "lost", "a0", "a1"].contains(&v.as_str())));
}

/// The coordinator's protocol at the wire, step by step: ids and epochs, Kafka's error codes for
/// a wrong producer id or epoch and an unknown transactional id, and offsets committed in a
/// transaction invisible (UNSTABLE_OFFSET_COMMIT to a reader asking for stable offsets) until
/// EndTxn commits them.
#[test]
fn the_coordinator_protocol_with_kafkas_codes() {
    use common::wire::{self, RawConn};
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, EndTxnRequest, EndTxnResponse,
        FindCoordinatorRequest, FindCoordinatorResponse, GroupId, InitProducerIdRequest,
        InitProducerIdResponse, OffsetFetchRequest, OffsetFetchResponse, ProducerId,
        TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
    };
    use kafka_protocol::protocol::StrBytes;

    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    wire::create_topics(&mut conn, &[("offsets-in", 1)]);
    let id = || TransactionalId(StrBytes::from_static_str("wire-txn"));
    let found: FindCoordinatorResponse = conn.request(
        &FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_key(StrBytes::from_static_str("wire-txn")),
        2,
    );
    assert_eq!((found.error_code, found.node_id.0), (0, 1));
    let init = |conn: &mut RawConn, timeout_ms: i32| -> InitProducerIdResponse {
        conn.request(
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(id()))
                .with_transaction_timeout_ms(timeout_ms)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
            4,
        )
    };
    // INVALID_TRANSACTION_TIMEOUT past transaction.max.timeout.ms.
    assert_eq!(init(&mut conn, 900_001).error_code, 50);
    let first = init(&mut conn, 60_000);
    let second = init(&mut conn, 60_000);
    assert_eq!(
        (first.error_code, first.producer_epoch, second.error_code),
        (0, 0, 0)
    );
    assert_eq!(
        (second.producer_id, second.producer_epoch),
        (first.producer_id, 1),
        "the same id's producer id, its epoch bumped"
    );
    let pid = second.producer_id;
    let add_offsets = |conn: &mut RawConn, pid: ProducerId, epoch: i16| -> i16 {
        let response: AddOffsetsToTxnResponse = conn.request(
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(id())
                .with_producer_id(pid)
                .with_producer_epoch(epoch)
                .with_group_id(GroupId(StrBytes::from_static_str("wire-group"))),
            3,
        );
        response.error_code
    };
    assert_eq!(
        add_offsets(&mut conn, pid, 0),
        90,
        "PRODUCER_FENCED: the old epoch"
    );
    assert_eq!(
        add_offsets(&mut conn, ProducerId(pid.0 + 1), 1),
        49,
        "INVALID_PRODUCER_ID_MAPPING"
    );
    assert_eq!(add_offsets(&mut conn, pid, 1), 0);
    let commit: TxnOffsetCommitResponse = conn.request(
        &TxnOffsetCommitRequest::default()
            .with_transactional_id(id())
            .with_group_id(GroupId(StrBytes::from_static_str("wire-group")))
            .with_producer_id(pid)
            .with_producer_epoch(1)
            .with_generation_id(-1)
            .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                .with_name(wire::topic_name("offsets-in"))
                .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(42)
                    .with_committed_leader_epoch(-1)])]),
        3,
    );
    assert_eq!(commit.topics[0].partitions[0].error_code, 0);
    let fetch = |conn: &mut RawConn, require_stable: bool| -> (i16, i64) {
        let response: OffsetFetchResponse = conn.request(
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("wire-group")))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(wire::topic_name("offsets-in"))
                    .with_partition_indexes(vec![0])]))
                .with_require_stable(require_stable),
            7,
        );
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.committed_offset)
    };
    assert_eq!(fetch(&mut conn, true), (88, -1), "UNSTABLE_OFFSET_COMMIT");
    assert_eq!(fetch(&mut conn, false), (0, -1), "not visible yet");
    let end = |conn: &mut RawConn, id: TransactionalId, commit: bool| -> i16 {
        let response: EndTxnResponse = conn.request(
            &EndTxnRequest::default()
                .with_transactional_id(id)
                .with_producer_id(pid)
                .with_producer_epoch(1)
                .with_committed(commit),
            3,
        );
        response.error_code
    };
    assert_eq!(
        end(
            &mut conn,
            TransactionalId(StrBytes::from_static_str("never-initialised")),
            true
        ),
        49,
        "INVALID_PRODUCER_ID_MAPPING for an unknown transactional id"
    );
    assert_eq!(end(&mut conn, id(), true), 0);
    assert_eq!(fetch(&mut conn, true), (0, 42));
    // A retried EndTxn of what completed is answered alike; the opposite outcome is refused.
    assert_eq!(end(&mut conn, id(), true), 0);
    assert_eq!(end(&mut conn, id(), false), 48, "INVALID_TXN_STATE");

    // KIP-360: a producer naming its id and epoch gets them bumped; a retry of that bump whose
    // answer was lost gets the same answer; an older pair is fenced.
    let bump = |conn: &mut RawConn, epoch: i16| -> (i16, i64, i16) {
        let response: InitProducerIdResponse = conn.request(
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(id()))
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(pid)
                .with_producer_epoch(epoch),
            4,
        );
        (
            response.error_code,
            response.producer_id.0,
            response.producer_epoch,
        )
    };
    assert_eq!(bump(&mut conn, 1), (0, pid.0, 2));
    assert_eq!(bump(&mut conn, 1), (0, pid.0, 2), "a retried bump");
    assert_eq!(bump(&mut conn, 0).0, 90, "PRODUCER_FENCED");
}

/// KIP-890 on the partition leader: a transactional batch that would begin its producer's
/// transaction in a partition is appended only once the coordinator confirms the partition is in
/// the open transaction. A producer that skipped AddPartitionsToTxn, or writes after its
/// transaction ended, gets INVALID_TXN_STATE and the log is unchanged; an id the coordinator
/// never initialised gets INVALID_PRODUCER_ID_MAPPING.
#[test]
fn a_transactions_first_batch_in_a_partition_is_verified_with_the_coordinator() {
    use common::wire::{self, RawConn};
    use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};
    use txn_wire::id;

    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    wire::create_topics(&mut conn, &[("verified", 1)]);
    let (pid, epoch) = txn_wire::init(&mut conn, "verify-txn", 60_000);
    let produce = |conn: &mut RawConn, txn: &str, pid: i64, seq: i32| -> (i16, i64) {
        txn_wire::produce(conn, txn, (pid, epoch), seq, ("verified", &["v"]), 9)
    };
    let log_end = |conn: &mut RawConn| conn.fetch_raw("verified", 0, 0).1;

    assert_eq!(
        produce(&mut conn, "verify-txn", pid, 0),
        (48, -1),
        "INVALID_TXN_STATE: the partition was never added"
    );
    assert_eq!(log_end(&mut conn), 0, "nothing appended");
    // A transactional batch in a request naming no transactional id cannot be verified.
    assert_eq!(
        conn.produce_raw(
            "verified",
            0,
            wire::producer_batch(pid, epoch, 0, &["v"], true, 1_000)
        ),
        (48, -1),
        "INVALID_TXN_STATE without a transactional id"
    );
    assert_eq!(
        produce(&mut conn, "never-initialised", pid + 1, 0),
        (49, -1),
        "INVALID_PRODUCER_ID_MAPPING"
    );
    assert_eq!(
        txn_wire::add_partition(&mut conn, "verify-txn", (pid, epoch), "verified"),
        0
    );
    assert_eq!(produce(&mut conn, "verify-txn", pid, 0), (0, 0));
    assert_eq!(
        produce(&mut conn, "verify-txn", pid, 1),
        (0, 1),
        "open here: no question asked"
    );
    let end: EndTxnResponse = conn.request(
        &EndTxnRequest::default()
            .with_transactional_id(id("verify-txn"))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(true),
        3,
    );
    assert_eq!(end.error_code, 0);
    assert_eq!(log_end(&mut conn), 3, "two records and the COMMIT marker");
    assert_eq!(
        produce(&mut conn, "verify-txn", pid, 2),
        (48, -1),
        "INVALID_TXN_STATE: the transaction ended, no new one added the partition"
    );
    assert_eq!(log_end(&mut conn), 3, "nothing appended");
}

/// `transactional.id.expiration.ms`: an id idle with no transaction open is forgotten — gone
/// from ListTransactions and DescribeTransactions (TRANSACTIONAL_ID_NOT_FOUND), across a
/// restart too (a tombstone in `__transaction_state`) — while an id with a transaction open
/// stays however long it has been idle (its transaction's timeout decides). A later
/// InitProducerId with the expired id starts it afresh under a new producer id.
#[test]
fn idle_transactional_ids_expire() {
    use common::wire::{self, RawConn};
    use kafka_protocol::messages::{DescribeTransactionsRequest, DescribeTransactionsResponse};
    use txn_wire::{id, listed};

    let mut server = TestServer::start_with(&[
        ("transactional.id.expiration.ms", "1000"),
        (
            "transaction.remove.expired.transaction.cleanup.interval.ms",
            "200",
        ),
    ]);
    let mut conn = RawConn::connect(server.kafka_addr());
    wire::create_topics(&mut conn, &[("expiry", 1)]);
    let init = |conn: &mut RawConn, name: &str| txn_wire::init(conn, name, 600_000);
    let (idle_pid, _) = init(&mut conn, "idle");
    let busy = init(&mut conn, "busy");
    assert_eq!(
        txn_wire::add_partition(&mut conn, "busy", busy, "expiry"),
        0
    );
    let only_busy = vec![("busy".to_string(), "Ongoing".to_string())];
    common::poll_until("the idle id expired", TIMEOUT, || {
        (listed(&mut conn) == only_busy).then_some(())
    });
    let described: DescribeTransactionsResponse = conn.request(
        &DescribeTransactionsRequest::default().with_transactional_ids(vec![id("idle")]),
        0,
    );
    assert_eq!(
        described.transaction_states[0].error_code, 105,
        "TRANSACTIONAL_ID_NOT_FOUND"
    );

    server.restart();
    let mut conn = RawConn::connect(server.kafka_addr());
    let after_restart = common::poll_until("the coordinator reloaded", TIMEOUT, || {
        let listed = listed(&mut conn);
        (!listed.is_empty()).then_some(listed)
    });
    assert_eq!(
        after_restart, only_busy,
        "the tombstone holds across a restart"
    );
    let (again_pid, again_epoch) = init(&mut conn, "idle");
    assert_ne!(again_pid, idle_pid, "a new producer id");
    assert_eq!(again_epoch, 0);
}

/// A transaction open past its `transaction.timeout.ms` is aborted by the coordinator's
/// periodic pass under a bumped epoch: its records are never visible to read_committed, the
/// partition's last stable offset moves past the ABORT marker, and the producer's own EndTxn is
/// then PRODUCER_FENCED. Several expire together; another transaction, within its timeout,
/// stays open.
#[test]
fn transactions_open_past_their_timeout_are_aborted_and_their_producers_fenced() {
    use common::wire::{self, RawConn};
    use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};
    use txn_wire::id;

    let server = TestServer::start_with(&[(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "200",
    )]);
    let mut conn = RawConn::connect(server.kafka_addr());
    wire::create_topics(&mut conn, &[("timeouts", 1)]);
    // Opens a transaction of `name` with `timeout_ms` holding one record; (pid, epoch).
    let open = |conn: &mut RawConn, name: &str, timeout_ms: i32| -> (i64, i16) {
        let producer = txn_wire::init(conn, name, timeout_ms);
        assert_eq!(txn_wire::add_partition(conn, name, producer, "timeouts"), 0);
        let produced = txn_wire::produce(conn, name, producer, 0, ("timeouts", &[name]), 9);
        assert_eq!(produced.0, 0);
        producer
    };
    let slow: Vec<(i64, i16)> = (0..3)
        .map(|i| open(&mut conn, &format!("slow-{i}"), 1_000))
        .collect();
    // Opened last, at offset 3: the last stable offset stops there once the others abort.
    open(&mut conn, "patient", 600_000);
    let expected: Vec<(String, String)> = [
        ("patient", "Ongoing"),
        ("slow-0", "CompleteAbort"),
        ("slow-1", "CompleteAbort"),
        ("slow-2", "CompleteAbort"),
    ]
    .iter()
    .map(|(id, state)| (id.to_string(), state.to_string()))
    .collect();
    common::poll_until("the timed-out transactions aborted", TIMEOUT, || {
        (txn_wire::listed(&mut conn) == expected).then_some(())
    });
    for (i, (pid, epoch)) in slow.iter().enumerate() {
        let end: EndTxnResponse = conn.request(
            &EndTxnRequest::default()
                .with_transactional_id(id(&format!("slow-{i}")))
                .with_producer_id(ProducerId(*pid))
                .with_producer_epoch(*epoch)
                .with_committed(true),
            3,
        );
        assert_eq!(
            end.error_code, 90,
            "PRODUCER_FENCED: the abort bumped the epoch"
        );
    }
    // Three records, the fourth (patient's) open: the LSO is at it, past the three ABORT
    // markers (offsets 4, 5 and 6 follow it in the log).
    let read = read_committed_offsets(&mut conn, "timeouts");
    assert_eq!(read, (3, 7), "(last stable offset, log end)");
}

/// A read_committed ListOffsets (latest) of `topic`-0 and its log end offset.
fn read_committed_offsets(conn: &mut common::wire::RawConn, topic: &str) -> (i64, i64) {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
    let ask = |conn: &mut common::wire::RawConn, isolation: i8| -> i64 {
        let response: ListOffsetsResponse = conn.request(
            &ListOffsetsRequest::default()
                .with_isolation_level(isolation)
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(common::wire::topic_name(topic))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1)])]),
            5,
        );
        let p = &response.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        p.offset
    };
    (ask(conn, 1), ask(conn, 0))
}

/// Transactions version 2 on the wire (KIP-890): Produce v12 adds its partition to the
/// transaction through the leader, EndTxn v5 bumps the epoch at every ending and answers with it;
/// a retried EndTxn gets the same answer, the other outcome INVALID_TXN_STATE; aborting with
/// nothing open still bumps; the old epoch is fenced.
#[test]
fn transactions_version_2_bumps_the_epoch_at_every_end() {
    use common::wire::{self, RawConn};
    use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    wire::create_topics(&mut conn, &[("tv2", 1)]);
    let id = || txn_wire::id("tv2-txn");
    let (pid, first_epoch) = txn_wire::init(&mut conn, "tv2-txn", 60_000);
    assert_eq!(first_epoch, 0);
    let produce = |conn: &mut RawConn, epoch: i16, seq: i32| -> (i16, i64) {
        txn_wire::produce(conn, "tv2-txn", (pid, epoch), seq, ("tv2", &["v"]), 12)
    };
    let end = |conn: &mut RawConn, epoch: i16, commit: bool| -> (i16, i64, i16) {
        let response: EndTxnResponse = conn.request(
            &EndTxnRequest::default()
                .with_transactional_id(id())
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_committed(commit),
            5,
        );
        (
            response.error_code,
            response.producer_id.0,
            response.producer_epoch,
        )
    };
    assert_eq!(produce(&mut conn, 0, 0), (0, 0), "added by the leader");
    assert_eq!(end(&mut conn, 0, true), (0, pid, 1));
    assert_eq!(end(&mut conn, 0, true), (0, pid, 1), "a retried commit");
    assert_eq!(end(&mut conn, 0, false).0, 48, "INVALID_TXN_STATE");
    assert_eq!(
        end(&mut conn, 1, false),
        (0, pid, 2),
        "an empty abort bumps too"
    );
    assert_eq!(produce(&mut conn, 1, 0), (47, -1), "INVALID_PRODUCER_EPOCH");
    assert_eq!(
        produce(&mut conn, 2, 0),
        (0, 2),
        "after the COMMIT marker at 1"
    );
    assert_eq!(end(&mut conn, 2, true), (0, pid, 3));
    assert_eq!(end(&mut conn, 0, true).0, 90, "PRODUCER_FENCED");
    assert_eq!(
        read_committed_offsets(&mut conn, "tv2"),
        (4, 4),
        "two records and two markers, all stable"
    );
}

/// ListTransactions v2 (KIP-1152): the transactional id pattern must match the whole id, as
/// Kafka's; one that does not compile is INVALID_REGULAR_EXPRESSION.
#[test]
fn list_transactions_v2_filters_by_a_whole_id_pattern() {
    use common::wire::RawConn;
    use kafka_protocol::messages::{ListTransactionsRequest, ListTransactionsResponse};
    use kafka_protocol::protocol::StrBytes;

    let server = TestServer::start();
    let mut conn = RawConn::connect(server.kafka_addr());
    for name in ["etl-1", "etl-2", "other-etl"] {
        txn_wire::init(&mut conn, name, 60_000);
    }
    let list = |conn: &mut RawConn, pattern: Option<&'static str>| -> (i16, Vec<String>) {
        let response: ListTransactionsResponse = conn.request(
            &ListTransactionsRequest::default()
                .with_transactional_id_pattern(pattern.map(StrBytes::from_static_str)),
            2,
        );
        let mut ids: Vec<String> = response
            .transaction_states
            .iter()
            .map(|t| t.transactional_id.to_string())
            .collect();
        ids.sort();
        (response.error_code, ids)
    };
    let all = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        list(&mut conn, None),
        (0, all(&["etl-1", "etl-2", "other-etl"]))
    );
    assert_eq!(
        list(&mut conn, Some("")),
        (0, all(&["etl-1", "etl-2", "other-etl"]))
    );
    assert_eq!(
        list(&mut conn, Some("etl-.*")),
        (0, all(&["etl-1", "etl-2"]))
    );
    assert_eq!(
        list(&mut conn, Some("etl")),
        (0, all(&[])),
        "the whole id must match"
    );
    assert_eq!(
        list(&mut conn, Some("(")).0,
        128,
        "INVALID_REGULAR_EXPRESSION"
    );
}

/// Raw-wire steps of a transactional producer, shared by the protocol tests above.
mod txn_wire {
    use super::TIMEOUT;
    use crate::common::{self, wire, wire::RawConn};
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, FindCoordinatorRequest,
        FindCoordinatorResponse, InitProducerIdRequest, InitProducerIdResponse,
        ListTransactionsRequest, ListTransactionsResponse, ProduceRequest, ProduceResponse,
        ProducerId, TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;

    pub fn id(name: &str) -> TransactionalId {
        TransactionalId(StrBytes::from_string(name.to_owned()))
    }

    /// FindCoordinator for `name` (which creates `__transaction_state`), then InitProducerId
    /// with `timeout_ms` once the coordinator has loaded; the producer id and epoch.
    pub fn init(conn: &mut RawConn, name: &str, timeout_ms: i32) -> (i64, i16) {
        let found: FindCoordinatorResponse = conn.request(
            &FindCoordinatorRequest::default()
                .with_key_type(1)
                .with_key(StrBytes::from_string(name.to_owned())),
            2,
        );
        assert_eq!(found.error_code, 0);
        common::poll_until("an initialised producer", TIMEOUT, || {
            let init: InitProducerIdResponse = conn.request(
                &InitProducerIdRequest::default()
                    .with_transactional_id(Some(id(name)))
                    .with_transaction_timeout_ms(timeout_ms)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
                4,
            );
            match init.error_code {
                16 => None, // NOT_COORDINATOR while __transaction_state loads
                0 => Some((init.producer_id.0, init.producer_epoch)),
                code => panic!("InitProducerId: error {code}"),
            }
        })
    }

    /// AddPartitionsToTxn (v3) of `topic`-0; its error code.
    pub fn add_partition(
        conn: &mut RawConn,
        name: &str,
        (pid, epoch): (i64, i16),
        topic: &str,
    ) -> i16 {
        let added: AddPartitionsToTxnResponse = conn.request(
            &AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(id(name))
                .with_v3_and_below_producer_id(ProducerId(pid))
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(wire::topic_name(topic))
                    .with_partitions(vec![0])]),
            3,
        );
        added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
    }

    /// A Produce (at `version`, naming transactional id `name`) of one transactional batch of
    /// `values` from `pid`/`epoch` at sequence `seq` to `topic`-0; (error code, base offset).
    pub fn produce(
        conn: &mut RawConn,
        name: &str,
        (pid, epoch): (i64, i16),
        seq: i32,
        (topic, values): (&str, &[&str]),
        version: i16,
    ) -> (i16, i64) {
        let response: ProduceResponse = conn.request(
            &ProduceRequest::default()
                .with_transactional_id(Some(id(name)))
                .with_acks(-1)
                .with_timeout_ms(10_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(wire::topic_name(topic))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(wire::producer_batch(
                            pid, epoch, seq, values, true, 1_000,
                        )))])]),
            version,
        );
        let p = &response.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    /// ListTransactions (v0): every (transactional id, state), sorted.
    pub fn listed(conn: &mut RawConn) -> Vec<(String, String)> {
        let response: ListTransactionsResponse =
            conn.request(&ListTransactionsRequest::default(), 0);
        let mut listed: Vec<(String, String)> = response
            .transaction_states
            .iter()
            .map(|t| {
                (
                    t.transactional_id.to_string(),
                    t.transaction_state.to_string(),
                )
            })
            .collect();
        listed.sort();
        listed
    }
}
