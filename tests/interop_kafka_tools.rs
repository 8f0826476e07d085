//! Interop with Apache Kafka's own command-line tools, from the same release as the Java client
//! (tests/clients/java/tools/pom.xml): each `kafka-*.sh` script is `java -cp` over the
//! kafka-tools jars with the tool's main class, which is what this test runs, and what it prints
//! is compared exactly (as whitespace-separated cells where the tool pads columns).
//!
//! kafka-topics (create with a topic config, create again, alter partitions, list, describe),
//! kafka-configs (describe; alter with --add-config and --delete-config for a topic, a broker and
//! the cluster-wide broker default; a refused value and a refused static broker config),
//! kafka-console-producer (keys and headers, once per compression codec),
//! kafka-console-consumer (in a group, twice: the second resumes at offsets reset by
//! kafka-consumer-groups), kafka-consumer-groups (list, describe, reset-offsets, delete),
//! kafka-get-offsets (latest, earliest), kafka-delete-records, kafka-metadata-quorum
//! (describe --status) and kafka-leader-election (preferred).
//!
//! `kafka-get-offsets --time -4`/`-5` (local and tiered offsets, ListOffsets v8/v9) too;
//! `kafka-topics --describe` goes through DescribeTopicPartitions.
//!
//! Left out: `kafka-get-offsets --time -3` (max timestamp: the console producer's timestamps are
//! the wall clock's, so which record has the largest is not known here; the Java client's check
//! covers it); and transactions.

mod common;

use std::time::Duration;

use common::clients::{java, java_classpath};
use common::{cells, row, run_with_timeout, TestServer};

const TOPIC: &str = "tools-orders";
const GROUP: &str = "tools-billing";
const PARTITIONS: usize = 3;
const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
const PER_CODEC: usize = 4;
const RECORDS: usize = CODECS.len() * PER_CODEC;
/// Where kafka-consumer-groups resets the group before the second console consumer.
const RESET_TO: usize = 2;

/// Runs one tool's main class (`org.apache.kafka.tools.` + `class`) against `server`, with the
/// whitespace-separated `args`.
fn tool(server: &TestServer, class: &str, args: &str, stdin: &str) -> (bool, String, String) {
    let mut command = java();
    command
        .arg("-cp")
        .arg(java_classpath("tools"))
        .arg(format!("org.apache.kafka.tools.{class}"))
        .arg("--bootstrap-server")
        .arg(server.bootstrap())
        .args(args.split_whitespace());
    let (status, stdout, stderr) =
        run_with_timeout(command, stdin.as_bytes(), Duration::from_secs(90));
    (status.success(), stdout, stderr)
}

/// A tool run that must succeed; its stdout.
fn ok(server: &TestServer, class: &str, args: &str, stdin: &str) -> String {
    let (success, stdout, stderr) = tool(server, class, args, stdin);
    assert!(
        success,
        "{class} {args} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

/// Kafka's murmur2 (`Utils.murmur2`), which the default partitioner applies to a record's key.
fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, byte) in rest.iter().enumerate() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java producer's default partitioner picks for `key`.
fn partition_of(key: &str) -> usize {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) as usize % PARTITIONS
}

/// Every record as the console consumer prints it (partition, offset, headers, key, value),
/// in production order: offsets count up per partition.
fn records() -> Vec<(usize, usize, String)> {
    let mut next_offset = [0; PARTITIONS];
    (0..RECORDS)
        .map(|i| {
            let key = format!("key-{i}");
            let partition = partition_of(&key);
            let offset = next_offset[partition];
            next_offset[partition] += 1;
            let codec = CODECS[i / PER_CODEC];
            let line = format!(
                "Partition:{partition}\tOffset:{offset}\tcodec:{codec},seq:{i}\t{key}\tvalue-{i}"
            );
            (partition, offset, line)
        })
        .collect()
}

fn end_offsets() -> [usize; PARTITIONS] {
    let mut end = [0; PARTITIONS];
    for (partition, _, _) in records() {
        end[partition] += 1;
    }
    end
}

/// The console consumer's output lines, sorted (partitions interleave in any order).
fn consume(server: &TestServer, count: usize) -> Vec<String> {
    let stdout = ok(
        server,
        "consumer.ConsoleConsumer",
        &format!(
            "--topic {TOPIC} --group {GROUP} --from-beginning --max-messages {count} \
             --timeout-ms 30000 --formatter-property print.partition=true \
             --formatter-property print.offset=true --formatter-property print.headers=true \
             --formatter-property print.key=true"
        ),
        "",
    );
    let mut lines: Vec<String> = stdout.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

fn expected_lines(from_offset: usize) -> Vec<String> {
    let mut lines: Vec<String> = records()
        .into_iter()
        .filter(|(_, offset, _)| *offset >= from_offset)
        .map(|(_, _, line)| line)
        .collect();
    lines.sort();
    lines
}

/// kafka-consumer-groups --describe --offsets: one row per partition, no active member.
fn group_offsets_rows(committed: [usize; PARTITIONS]) -> Vec<Vec<String>> {
    let end = end_offsets();
    let header =
        "GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID";
    let partitions = (0..PARTITIONS).map(|p| {
        let (current, lag) = (committed[p], end[p] - committed[p]);
        format!("{GROUP} {TOPIC} {p} {current} {} {lag} - - -", end[p])
    });
    let rows: Vec<String> = std::iter::once(header.to_string())
        .chain(partitions)
        .collect();
    cells(&rows.join("\n"))
}

#[test]
fn murmur2_matches_kafkas_partitioner() {
    // Where the Java producer put these keys in a 3-partition topic.
    assert_eq!(["k1", "k2", "k3"].map(partition_of), [2, 0, 1]);
    // Kafka's own test vectors (UtilsTest.testMurmur2).
    assert_eq!(murmur2(b"21"), -973932308);
    assert_eq!(murmur2(b"foobar"), -790332482);
    assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
    assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
    assert_eq!(
        murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
        -58897971
    );
    assert_eq!(murmur2(b"abc"), 479470107);
}

#[test]
fn kafka_tools_topics_console_groups_offsets_quorum() {
    let server = TestServer::start();
    let topics = |args: &str| ok(&server, "TopicCommand", args, "");

    // kafka-topics
    assert_eq!(
        topics(&format!(
            "--create --topic {TOPIC} --partitions 2 --replication-factor 1 \
             --config retention.ms=86400000"
        )),
        format!("Created topic {TOPIC}.\n")
    );
    let again = format!("--create --topic {TOPIC} --partitions 2");
    let (success, stdout, stderr) = tool(&server, "TopicCommand", &again, "");
    assert!(!success, "creating {TOPIC} again succeeded: {stdout}");
    assert_eq!(
        stdout,
        format!("Error while executing topic command : Topic '{TOPIC}' already exists.\n"),
        "stderr: {stderr}"
    );
    assert_eq!(
        topics(&format!(
            "--alter --topic {TOPIC} --partitions {PARTITIONS}"
        )),
        ""
    );
    assert_eq!(topics("--list --exclude-internal"), format!("{TOPIC}\n"));
    let mut described = cells(&topics(&format!("--describe --topic {TOPIC}")));
    // The first row names the topic id, which is new every run.
    assert_eq!(described[0][2], "TopicId:");
    described[0].remove(3);
    let header = format!(
        "Topic: {TOPIC} TopicId: PartitionCount: 3 ReplicationFactor: 1 \
         Configs: retention.ms=86400000"
    );
    let mut expected = cells(&header);
    for p in 0..PARTITIONS {
        let partition = format!("Topic: {TOPIC} Partition: {p} Leader: 1 Replicas: 1 Isr: 1");
        // kafka-topics describes through DescribeTopicPartitions, whose (empty) eligible leader
        // replicas it prints as Kafka 4's brokers have them with ELR off: nothing.
        expected.push(cells(&format!("{partition} Elr: LastKnownElr:")).remove(0));
    }
    assert_eq!(described, expected);

    // kafka-configs shows the topic's own config and the broker default it overrides.
    let configs = format!("--describe --entity-type topics --entity-name {TOPIC}");
    assert_eq!(
        ok(&server, "ConfigCommand", &configs, ""),
        format!(
            "Dynamic configs for topic {TOPIC} are:\n  retention.ms=86400000 sensitive=false \
             synonyms={{DYNAMIC_TOPIC_CONFIG:retention.ms=86400000, \
             DEFAULT_CONFIG:log.retention.ms=604800000}}\n"
        )
    );

    // kafka-console-producer: one run per codec, keys and headers parsed from each line.
    for (c, codec) in CODECS.iter().enumerate() {
        let input: String = (c * PER_CODEC..(c + 1) * PER_CODEC)
            .map(|i| format!("codec:{codec},seq:{i}\tkey-{i}\tvalue-{i}\n"))
            .collect();
        let args = format!(
            "--topic {TOPIC} --compression-codec {codec} \
             --reader-property parse.key=true --reader-property parse.headers=true"
        );
        let produced = ok(&server, "ConsoleProducer", &args, &input);
        assert_eq!(produced, "", "console producer ({codec}) printed something");
    }
    let end = end_offsets();
    assert!(
        end.iter().all(|&n| n > RESET_TO),
        "every partition needs more than {RESET_TO} records: {end:?}"
    );

    // kafka-console-consumer in a group reads everything and commits (auto-commit at close).
    assert_eq!(consume(&server, RECORDS), expected_lines(0));

    let groups = |args: &str| ok(&server, "consumer.group.ConsumerGroupCommand", args, "");
    let describe_offsets = format!("--describe --group {GROUP} --offsets");
    assert_eq!(groups("--list"), format!("{GROUP}\n"));
    assert_eq!(cells(&groups(&describe_offsets)), group_offsets_rows(end));
    assert_eq!(
        cells(&groups(&format!("--describe --group {GROUP} --state"))),
        cells(&format!(
            "GROUP COORDINATOR (ID) ASSIGNMENT-STRATEGY STATE #MEMBERS\n\
             {GROUP} {} (1) - Empty 0",
            server.bootstrap()
        ))
    );

    // Reset the group, first as a dry run (nothing changes), then for real.
    let reset = format!("--reset-offsets --group {GROUP} --topic {TOPIC} --to-offset {RESET_TO}");
    let mut expected = vec![row(&["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"])];
    for p in 0..PARTITIONS {
        expected.push(row(&[GROUP, TOPIC, &p.to_string(), &RESET_TO.to_string()]));
    }
    let mut planned = cells(&groups(&reset));
    planned[1..].sort();
    assert_eq!(planned, expected);
    assert_eq!(cells(&groups(&describe_offsets)), group_offsets_rows(end));
    let mut executed = cells(&groups(&format!("{reset} --execute")));
    executed[1..].sort();
    assert_eq!(executed, expected);
    assert_eq!(
        cells(&groups(&describe_offsets)),
        group_offsets_rows([RESET_TO; PARTITIONS])
    );

    // A console consumer in the group resumes exactly at the reset offsets.
    assert_eq!(
        consume(&server, RECORDS - PARTITIONS * RESET_TO),
        expected_lines(RESET_TO)
    );
    assert_eq!(cells(&groups(&describe_offsets)), group_offsets_rows(end));

    // kafka-get-offsets and kafka-delete-records
    let offsets = |time: &str| {
        let args = format!("--topic {TOPIC} --time {time}");
        ok(&server, "GetOffsetShell", &args, "")
    };
    let offset_lines = |values: [usize; PARTITIONS]| -> String {
        (0..PARTITIONS)
            .map(|p| format!("{TOPIC}:{p}:{}\n", values[p]))
            .collect()
    };
    assert_eq!(offsets("-1"), offset_lines(end));
    assert_eq!(offsets("-2"), offset_lines([0; PARTITIONS]));
    let plan = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        plan.path(),
        format!(r#"{{"partitions":[{{"topic":"{TOPIC}","partition":0,"offset":1}}],"version":1}}"#),
    )
    .expect("write offset json");
    let delete = format!("--offset-json-file {}", plan.path().display());
    assert_eq!(
        ok(&server, "DeleteRecordsCommand", &delete, ""),
        format!(
            "Executing records delete operation\nRecords delete operation completed:\n\
             partition: {TOPIC}-0\tlow_watermark: 1\n"
        )
    );
    assert_eq!(offsets("-2"), offset_lines([1, 0, 0]));
    // ListOffsets v8/v9: without tiered storage the local log starts at the log start offset,
    // and nothing is tiered: offset -1, which the tool leaves out.
    assert_eq!(offsets("-4"), offset_lines([1, 0, 0]));
    assert_eq!(offsets("-5"), "");

    // kafka-metadata-quorum: a single combined node is the only voter and the leader.
    let status = ok(&server, "MetadataQuorumCommand", "describe --status", "");
    let fields: Vec<(String, String)> = status
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap_or_else(|| panic!("line {l:?}"));
            (k.to_string(), v.trim().to_string())
        })
        .collect();
    let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names.join(" "),
        "ClusterId LeaderId LeaderEpoch HighWatermark MaxFollowerLag MaxFollowerLagTimeMs \
         CurrentVoters CurrentObservers"
    );
    let field = |name: &str| &fields.iter().find(|(k, _)| k == name).expect("field").1;
    assert_eq!(field("LeaderId"), "1");
    assert_eq!(field("MaxFollowerLag"), "0");
    assert_eq!(field("CurrentVoters"), r#"[{"id": 1}]"#);
    assert_eq!(field("CurrentObservers"), "[]");

    // kafka-leader-election: the only replica already leads.
    let elect = format!("--election-type preferred --topic {TOPIC} --partition 0");
    assert_eq!(
        ok(&server, "LeaderElectionCommand", &elect, ""),
        format!("Valid replica already elected for partitions {TOPIC}-0\n")
    );

    // kafka-consumer-groups --delete
    assert_eq!(
        groups(&format!("--delete --group {GROUP}")),
        format!("Deletion of requested consumer groups ('{GROUP}') was successful.\n")
    );
    assert_eq!(groups("--list"), "");
}

#[test]
fn kafka_configs_alters_topic_and_broker_configs_online() {
    const TOPIC: &str = "tools-configs";
    let server = TestServer::start();
    assert_eq!(
        ok(
            &server,
            "TopicCommand",
            &format!("--create --topic {TOPIC} --partitions 1 --replication-factor 1"),
            ""
        ),
        format!("Created topic {TOPIC}.\n")
    );
    let entity = format!("--entity-type topics --entity-name {TOPIC}");
    let alter = |args: &str| {
        ok(
            &server,
            "ConfigCommand",
            &format!("--alter {entity} {args}"),
            "",
        )
    };
    let describe = || {
        ok(
            &server,
            "ConfigCommand",
            &format!("--describe {entity}"),
            "",
        )
    };
    let completed = format!("Completed updating config for topic {TOPIC}.\n");

    assert_eq!(
        alter("--add-config retention.ms=1000,cleanup.policy=[delete,compact]"),
        completed
    );
    assert_eq!(
        describe(),
        format!(
            "Dynamic configs for topic {TOPIC} are:\n  cleanup.policy=delete,compact \
             sensitive=false synonyms={{DYNAMIC_TOPIC_CONFIG:cleanup.policy=delete,compact, \
             DEFAULT_CONFIG:log.cleanup.policy=delete}}\n  retention.ms=1000 sensitive=false \
             synonyms={{DYNAMIC_TOPIC_CONFIG:retention.ms=1000, \
             DEFAULT_CONFIG:log.retention.ms=604800000}}\n"
        )
    );

    assert_eq!(alter("--delete-config retention.ms"), completed);
    let only_cleanup_policy = format!(
        "Dynamic configs for topic {TOPIC} are:\n  cleanup.policy=delete,compact \
         sensitive=false synonyms={{DYNAMIC_TOPIC_CONFIG:cleanup.policy=delete,compact, \
         DEFAULT_CONFIG:log.cleanup.policy=delete}}\n"
    );
    assert_eq!(describe(), only_cleanup_policy);

    // A bad value is refused with the broker's INVALID_CONFIG message and changes nothing.
    let (success, stdout, stderr) = tool(
        &server,
        "ConfigCommand",
        &format!("--alter {entity} --add-config retention.ms=soon"),
        "",
    );
    assert!(!success, "a bad value was accepted: {stdout}");
    let refusal = "InvalidConfigurationException: Invalid value soon for configuration \
                   retention.ms: Not a number of type LONG";
    assert!(
        stdout.contains(refusal) || stderr.contains(refusal),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(describe(), only_cleanup_policy);

    // Broker configs: the cluster-wide default, then this broker's own.
    let brokers = |args: &str| {
        ok(
            &server,
            "ConfigCommand",
            &format!("--entity-type brokers {args}"),
            "",
        )
    };
    assert_eq!(
        brokers("--alter --entity-default --add-config log.retention.ms=3600000"),
        "Completed updating default config for brokers in the cluster.\n"
    );
    assert_eq!(
        brokers("--describe --entity-default"),
        "Default configs for brokers in the cluster are:\n  log.retention.ms=3600000 \
         sensitive=false synonyms={DYNAMIC_DEFAULT_BROKER_CONFIG:log.retention.ms=3600000}\n"
    );
    assert_eq!(
        brokers("--alter --entity-name 1 --add-config message.max.bytes=2048"),
        "Completed updating config for broker 1.\n"
    );
    assert_eq!(
        brokers("--describe --entity-name 1"),
        "Dynamic configs for broker 1 are:\n  message.max.bytes=2048 sensitive=false \
         synonyms={DYNAMIC_BROKER_CONFIG:message.max.bytes=2048, \
         DEFAULT_CONFIG:message.max.bytes=1048588}\n"
    );
    // A static broker config is refused with Kafka's message.
    let (success, stdout, stderr) = tool(
        &server,
        "ConfigCommand",
        "--entity-type brokers --alter --entity-default --add-config log.dirs=/tmp",
        "",
    );
    assert!(!success, "a static broker config was accepted: {stdout}");
    let refusal = "InvalidRequestException: Cannot update these configs dynamically: Set(log.dirs)";
    assert!(
        stdout.contains(refusal) || stderr.contains(refusal),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(
        brokers("--alter --entity-default --delete-config log.retention.ms"),
        "Completed updating default config for brokers in the cluster.\n"
    );
    assert_eq!(
        brokers("--describe --entity-default"),
        "Default configs for brokers in the cluster are:\n"
    );
}
