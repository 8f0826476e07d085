//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, nightly) and for the stable tests that
//! run the same functions over the committed seed corpus. Not part of the supported API.
//!
//! - [`metadata_records`]: a raft entry's data (a JSON array of versioned metadata records) and a
//!   controller's metadata update to a broker, decoded and replayed as the quorum and the brokers
//!   do.
//! - [`raft_message`]: a raft message frame as a peer controller sends it (a stream of frames,
//!   chunked snapshots reassembled), the same bytes as the protobuf payload of a frame whose
//!   checksum holds, and as a `snapshot` file.

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState, Message, MessageType, Snapshot};

use crate::image::MetadataImage;
use crate::raft_store::{decode_records, encode_records};
use crate::raft_wire::{decode_message, encode_message, frame, message_frames, MessageDecoder};
use crate::record::{ConfigResource, Endpoint, MetadataRecord, TopicId};
use crate::snapshot_chunks::{ChunkedFrames, SnapshotReader};
use crate::{MetadataFollower, MetadataUpdate};

/// Decodes `data` as entry data and as a metadata update; whatever decodes is replayed, and the
/// image it gives must survive its own snapshot: replaying `to_records` from empty gives it back.
pub fn metadata_records(data: &[u8]) {
    if let Ok(records) = decode_records(data) {
        let mut image = MetadataImage::default();
        image.replay_batch(&records);
        let mut from_snapshot = MetadataImage::default();
        from_snapshot.replay_batch(&image.to_records());
        // By design a snapshot keeps only registered brokers' epochs (see the field's doc).
        assert!(from_snapshot.last_broker_epoch <= image.last_broker_epoch);
        from_snapshot.last_broker_epoch = image.last_broker_epoch;
        assert_eq!(
            from_snapshot, image,
            "the image does not survive its snapshot"
        );
    }
    if let Ok(update) = MetadataUpdate::decode(data) {
        let mut follower = MetadataFollower::new();
        follower.apply(update);
    }
}

/// Feeds `data` to a peer's stream decoder as it arrives; every message it completes encodes
/// back to frames that decode to it again.
fn raft_stream(data: &[u8]) {
    let mut decoder = MessageDecoder::new();
    let mut at = 0;
    while let Ok(Some((message, used))) = decoder.decode(&data[at..]) {
        assert!(used > 0 && at + used <= data.len());
        at += used;
        let Some(message) = message else {
            continue;
        };
        let mut again = MessageDecoder::new();
        let mut decoded = None;
        for frame in message_frames(&message).expect("a decoded message encodes") {
            let (complete, used) = again
                .decode(&frame)
                .expect("an encoded frame decodes")
                .expect("whole");
            assert_eq!(used, frame.len());
            decoded = complete;
        }
        let decoded = decoded.expect("the last frame completes the message");
        assert_eq!(format!("{decoded:?}"), format!("{message:?}"));
    }
}

/// Decodes `data` as a frame off the wire, then as the payload of an intact frame; a message
/// that decodes encodes back to a frame that decodes to it again. The same payload is read as
/// the raft files' other contents: an entry, a hard state, a snapshot.
pub fn raft_message(data: &[u8]) {
    let _ = decode_message(data);
    raft_stream(data);
    if let Ok(snapshot) = SnapshotReader::read_from(data) {
        let again = ChunkedFrames::of_snapshot(&snapshot)
            .expect("a snapshot read encodes")
            .concat();
        assert_eq!(
            SnapshotReader::read_from(&again[..]).expect("an encoded snapshot reads"),
            snapshot
        );
    }
    let Ok(framed) = frame(data) else {
        return;
    };
    if let Ok(Some((message, used))) = decode_message(&framed) {
        assert_eq!(used, framed.len());
        // Known fields survive the round trip. (Unknown ones are kept in a hash map whose order
        // is not stable, so the messages themselves may compare unequal.)
        let again = encode_message(&message).expect("a decoded message encodes");
        let (decoded, _) = decode_message(&again)
            .expect("an encoded message decodes")
            .expect("whole");
        assert_eq!(format!("{decoded:?}"), format!("{message:?}"));
    }
    use crate::protobuf_guard::{parse, Schema};
    let _ = parse::<Entry>(data, Schema::Entry);
    let _ = parse::<HardState>(data, Schema::HardState);
    let _ = parse::<Snapshot>(data, Schema::Snapshot);
}

/// The metadata seeds: entry data holding every record type, one record a seed, and the
/// updates a controller sends (up to date, entries, a snapshot).
pub fn metadata_record_seeds() -> Vec<(String, Vec<u8>)> {
    let topic_id = TopicId(0x5ca1_ab1e);
    let records = vec![
        MetadataRecord::RegisterBroker {
            broker_id: 1,
            incarnation_id: 77,
            broker_epoch: 3,
            endpoints: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: "localhost".into(),
                port: 9092,
            }],
            rack: Some("r1".into()),
            fenced: true,
        },
        MetadataRecord::UnfenceBroker {
            broker_id: 1,
            broker_epoch: 3,
        },
        MetadataRecord::Topic {
            name: "orders".into(),
            topic_id,
        },
        MetadataRecord::Partition {
            topic_id,
            partition: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            removing_replicas: vec![2],
            adding_replicas: vec![3],
        },
        MetadataRecord::PartitionChange {
            topic_id,
            partition: 0,
            leader: Some(2),
            isr: Some(vec![2]),
            replicas: None,
            removing_replicas: Some(Vec::new()),
            adding_replicas: Some(Vec::new()),
        },
        MetadataRecord::Config {
            resource: ConfigResource::Topic("orders".into()),
            name: "retention.ms".into(),
            value: Some("1000".into()),
        },
        MetadataRecord::Config {
            resource: ConfigResource::Broker(1),
            name: "log.retention.ms".into(),
            value: None,
        },
        MetadataRecord::Config {
            resource: ConfigResource::BrokerDefault,
            name: "log.retention.ms".into(),
            value: Some("5".into()),
        },
        MetadataRecord::AllocateProducerIds {
            broker_id: 1,
            broker_epoch: 3,
            request_id: 1,
        },
        MetadataRecord::ProducerIds {
            next_producer_id: 2000,
        },
        MetadataRecord::ProducerIdBlock {
            broker_id: 1,
            request_id: 1,
            first_producer_id: 1000,
        },
        MetadataRecord::FenceBroker {
            broker_id: 1,
            broker_epoch: 3,
        },
        MetadataRecord::RemoveTopic { topic_id },
        MetadataRecord::UnregisterBroker {
            broker_id: 1,
            broker_epoch: 3,
        },
    ];
    let mut seeds = vec![(
        "batch-of-every-type".to_string(),
        encode_records(&records).expect("encodes"),
    )];
    for (i, record) in records.iter().enumerate() {
        seeds.push((
            format!("record-{i:02}"),
            encode_records(std::slice::from_ref(record)).expect("encodes"),
        ));
    }
    let updates = [
        ("update-up-to-date", MetadataUpdate::UpToDate),
        (
            "update-entries",
            MetadataUpdate::Entries {
                batches: vec![(1, records[..5].to_vec()), (2, Vec::new())],
            },
        ),
        (
            "update-snapshot-chunk",
            MetadataUpdate::SnapshotChunk {
                index: 9,
                position: 0,
                total_bytes: 0,
                bytes: Vec::new(),
            },
        ),
    ];
    for (name, update) in updates {
        seeds.push((name.to_string(), update.encode().expect("encodes")));
    }
    // A whole snapshot in one chunk, as a broker fetches it.
    let mut snapshot = Snapshot {
        data: encode_records(&records[..6]).expect("encodes").into(),
        ..Snapshot::default()
    };
    snapshot.mut_metadata().index = 9;
    snapshot.mut_metadata().term = 2;
    snapshot.mut_metadata().mut_conf_state().voters = vec![1];
    let bytes = ChunkedFrames::of_snapshot(&snapshot)
        .expect("frames")
        .concat();
    let update = MetadataUpdate::SnapshotChunk {
        index: 9,
        position: 0,
        total_bytes: bytes.len() as u64,
        bytes,
    };
    seeds.push((
        "update-snapshot-whole".to_string(),
        update.encode().expect("encodes"),
    ));
    seeds
}

/// The raft seeds: protobuf payloads of the messages a quorum sends (votes, appends with entries,
/// heartbeats, a snapshot), and the same messages framed as on the wire.
pub fn raft_message_seeds() -> Vec<(String, Vec<u8>)> {
    let data = encode_records(&[MetadataRecord::ProducerIds {
        next_producer_id: 1,
    }])
    .expect("encodes");
    let entry = Entry {
        index: 7,
        term: 3,
        data: data.clone().into(),
        ..Entry::default()
    };
    let message = |msg_type: MessageType| {
        let mut message = Message::default();
        message.set_msg_type(msg_type);
        message.from = 1;
        message.to = 2;
        message.term = 3;
        message.log_term = 3;
        message.index = 6;
        message.commit = 6;
        message
    };
    let mut append = message(MessageType::MsgAppend);
    append.set_entries(vec![entry.clone(), entry].into());
    let mut snapshot = message(MessageType::MsgSnapshot);
    let mut contents = Snapshot {
        data: data.into(),
        ..Snapshot::default()
    };
    contents.mut_metadata().index = 5;
    contents.mut_metadata().term = 2;
    contents.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    snapshot.set_snapshot(contents.clone());
    let messages = [
        ("vote", message(MessageType::MsgRequestVote)),
        (
            "vote-response",
            message(MessageType::MsgRequestVoteResponse),
        ),
        ("append", append),
        ("append-response", message(MessageType::MsgAppendResponse)),
        ("heartbeat", message(MessageType::MsgHeartbeat)),
        ("snapshot", snapshot),
    ];
    let mut seeds = Vec::new();
    for (name, message) in messages {
        let payload = message.write_to_bytes().expect("encodes");
        seeds.push((format!("{name}-framed"), frame(&payload).expect("frames")));
        seeds.push((name.to_string(), payload));
        let stream: Vec<u8> = message_frames(&message)
            .expect("frames")
            .flatten()
            .collect();
        seeds.push((format!("{name}-stream"), stream));
    }
    seeds.push((
        "snapshot-file".to_string(),
        ChunkedFrames::of_snapshot(&contents)
            .expect("frames")
            .concat(),
    ));
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;
    use skald_protocol::fuzzing::{corpus_to_write, seed_corpus};

    fn write_and_check(target: &str, seeds: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
        if let Some(dir) = corpus_to_write(target) {
            for (name, bytes) in seeds {
                std::fs::write(dir.join(name), bytes).expect("seed written");
            }
        }
        let committed = seed_corpus(target);
        for seed in seeds {
            assert!(committed.contains(seed), "{} is not in the corpus", seed.0);
        }
        committed
    }

    #[test]
    fn every_metadata_records_seed_runs_clean() {
        for (_, data) in write_and_check("metadata_records", &metadata_record_seeds()) {
            metadata_records(&data);
        }
    }

    #[test]
    fn every_raft_message_seed_runs_clean() {
        for (_, data) in write_and_check("raft_message", &raft_message_seeds()) {
            raft_message(&data);
        }
    }

    #[test]
    fn metadata_records_mutations_run_clean() {
        skald_protocol::fuzzing::run_mutations(
            "metadata_records",
            skald_protocol::fuzzing::MUTATIONS_DEFAULT,
            metadata_records,
        );
    }

    #[test]
    fn raft_message_mutations_run_clean() {
        skald_protocol::fuzzing::run_mutations(
            "raft_message",
            skald_protocol::fuzzing::MUTATIONS_DEFAULT,
            raft_message,
        );
    }
}
