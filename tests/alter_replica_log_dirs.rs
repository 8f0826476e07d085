//! AlterReplicaLogDirs against the real binary with two log dirs: a replica moves to the other
//! dir (its copy shown by DescribeLogDirs as a future replica while the move is throttled by
//! `replica.alter.log.dirs.io.max.bytes.per.second`), keeps serving and taking writes meanwhile,
//! ends up in the new dir with the same records, and stays there after a restart; refusals carry
//! Kafka's error codes.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::alter_replica_log_dirs_request::{
    AlterReplicaLogDir, AlterReplicaLogDirTopic,
};
use kafka_protocol::messages::{
    AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse,
};
use kafka_protocol::protocol::StrBytes;

use common::wire::{self, RawConn};
use common::{poll_until, TestServer};

const TOPIC: &str = "moving";
/// Kafka's error codes.
const REPLICA_NOT_AVAILABLE: i16 = 9;
const LOG_DIR_NOT_FOUND: i16 = 57;

/// Where each partition of `topic` is, per DescribeLogDirs v4: (log dir, partition,
/// is_future_key) sorted.
fn placement(conn: &mut RawConn, topic: &str) -> Vec<(String, i32, bool)> {
    let response: DescribeLogDirsResponse =
        conn.request(&DescribeLogDirsRequest::default().with_topics(None), 4);
    let mut found = Vec::new();
    for dir in &response.results {
        assert_eq!(dir.error_code, 0);
        for t in dir.topics.iter().filter(|t| t.name.as_str() == topic) {
            for p in &t.partitions {
                found.push((dir.log_dir.to_string(), p.partition_index, p.is_future_key));
            }
        }
    }
    found.sort();
    found
}

fn alter(conn: &mut RawConn, moves: &[(&str, &str, i32)]) -> Vec<(String, i32, i16)> {
    let dirs = moves
        .iter()
        .map(|(path, topic, partition)| {
            AlterReplicaLogDir::default()
                .with_path(StrBytes::from_string(path.to_string()))
                .with_topics(vec![AlterReplicaLogDirTopic::default()
                    .with_name(wire::topic_name(topic))
                    .with_partitions(vec![*partition])])
        })
        .collect();
    let response: AlterReplicaLogDirsResponse =
        conn.request(&AlterReplicaLogDirsRequest::default().with_dirs(dirs), 2);
    let mut answers: Vec<(String, i32, i16)> = response
        .results
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.topic_name.to_string(), p.partition_index, p.error_code))
        })
        .collect();
    answers.sort();
    answers
}

/// Every record batch of partition 0, fetched from the start.
fn all_batches(conn: &mut RawConn) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut offset = 0;
    loop {
        let (error, high_watermark, records) = conn.fetch_raw(TOPIC, 0, offset);
        assert_eq!(error, 0);
        if records.is_empty() {
            assert_eq!(offset, high_watermark);
            return bytes;
        }
        let mut at = 0;
        while at + 12 <= records.len() {
            let base = i64::from_be_bytes(records[at..at + 8].try_into().unwrap());
            let length = i32::from_be_bytes(records[at + 8..at + 12].try_into().unwrap()) as usize;
            let end = at + 12 + length;
            if end > records.len() {
                break;
            }
            let last_delta = i32::from_be_bytes(records[at + 23..at + 27].try_into().unwrap());
            bytes.extend_from_slice(&records[at..end]);
            offset = base + i64::from(last_delta) + 1;
            at = end;
        }
    }
}

fn batch(i: usize) -> Bytes {
    let value = format!("{i:06}").repeat(64 * 1024 / 6);
    wire::batch_v2(&[("k", value.as_str(), 1_700_000_000_000)])
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(TOPIC))
        .collect();
    names.sort();
    names
}

#[test]
fn a_replica_moves_to_another_log_dir_and_stays_there() {
    let dirs = tempfile::tempdir().unwrap();
    let (a, b): (PathBuf, PathBuf) = (dirs.path().join("a"), dirs.path().join("b"));
    let log_dirs = format!("{},{}", a.display(), b.display());
    let mut server = TestServer::start_with(&[
        ("log.dirs", log_dirs.as_str()),
        // 4 MiB at 1 MiB/s: a move long enough to be seen under way.
        ("replica.alter.log.dirs.io.max.bytes.per.second", "1048576"),
    ]);
    let mut conn = RawConn::connect(server.kafka_addr());
    wire::create_topics(&mut conn, &[(TOPIC, 2)]);
    for i in 0..64 {
        assert_eq!(conn.produce_raw(TOPIC, 0, batch(i)).0, 0);
    }
    let before = all_batches(&mut conn);
    let (a_name, b_name) = (a.display().to_string(), b.display().to_string());
    let start = placement(&mut conn, TOPIC);
    let (from, to) = if start.contains(&(a_name.clone(), 0, false)) {
        (a_name.clone(), b_name.clone())
    } else {
        (b_name.clone(), a_name.clone())
    };
    let one_here = start
        .iter()
        .find(|(_, p, _)| *p == 1)
        .map(|(dir, _, _)| dir.clone())
        .unwrap();

    assert_eq!(
        alter(
            &mut conn,
            &[
                (&to, TOPIC, 0),
                // Already there: nothing to do.
                (&one_here, TOPIC, 1),
                (&to, "ghost", 0),
                ("/not/a/log/dir", "ghost", 1),
            ]
        ),
        vec![
            ("ghost".to_string(), 0, REPLICA_NOT_AVAILABLE),
            ("ghost".to_string(), 1, LOG_DIR_NOT_FOUND),
            (TOPIC.to_string(), 0, 0),
            (TOPIC.to_string(), 1, 0),
        ]
    );
    // Under way: the copy shows in the destination as a future replica; the partition still
    // takes writes in the old dir.
    poll_until("the copy under way", Duration::from_secs(10), || {
        placement(&mut conn, TOPIC)
            .contains(&(to.clone(), 0, true))
            .then_some(())
    });
    for i in 64..68 {
        assert_eq!(conn.produce_raw(TOPIC, 0, batch(i)).0, 0);
    }
    // Asking again for the same destination carries on.
    assert_eq!(
        alter(&mut conn, &[(&to, TOPIC, 0)]),
        vec![(TOPIC.to_string(), 0, 0)]
    );
    let moved = poll_until("the move done", Duration::from_secs(60), || {
        let now = placement(&mut conn, TOPIC);
        now.contains(&(to.clone(), 0, false)).then_some(now)
    });
    assert_eq!(
        moved.iter().filter(|(_, p, _)| *p == 0).count(),
        1,
        "{moved:?}"
    );
    let after = all_batches(&mut conn);
    assert_eq!(after[..before.len()], before[..], "the same batches");
    assert!(after.len() > before.len(), "the writes during the move");
    let topic_dirs = |dir: &str| dir_names(Path::new(dir));
    poll_until("the old copy deleted", Duration::from_secs(10), || {
        (!topic_dirs(&from).contains(&format!("{TOPIC}-0"))).then_some(())
    });

    server.restart();
    let mut conn = RawConn::connect(server.kafka_addr());
    assert_eq!(placement(&mut conn, TOPIC), moved);
    assert_eq!(all_batches(&mut conn), after);
    let mut names = dir_names(&a);
    names.extend(dir_names(&b));
    names.sort();
    assert_eq!(names, vec![format!("{TOPIC}-0"), format!("{TOPIC}-1")]);
}
