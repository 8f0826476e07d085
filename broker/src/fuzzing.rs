//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, nightly) and for the stable tests that
//! run the same functions over the committed seed corpus. Not part of the supported API.
//!
//! [`group_records`]: what a coordinator replays from `__consumer_offsets` and
//! `__transaction_state` when it takes over a partition: whole batches, and each key and value
//! parser alone. A value that parses must write back to bytes that parse to it again.

use bytes::Bytes;

use crate::group::records::{
    self as group_records_codec, decode_batches, parse_group_metadata_value, parse_key,
    parse_offset_value, GroupMetadataValue, MemberMetadata,
};
use crate::group::state::CommittedOffset;
use crate::txn::records as txn_records;
use crate::txn::state::{TxnMetadata, TxnState};

/// The input is whole batches to replay; the same bytes split after the position the first byte
/// names are a (key, value) to parse with each parser, and a batch of that one record to replay.
pub fn group_records(data: &[u8]) {
    let _ = decode_batches(Bytes::copy_from_slice(data));
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (key, value) = rest.split_at(usize::from(split).min(rest.len()));
    let _ = parse_key(key);
    if let Ok(offset) = parse_offset_value(value) {
        let written = group_records_codec::offset_value(&offset);
        assert_eq!(parse_offset_value(&written), Ok(offset));
    }
    if let Ok(group) = parse_group_metadata_value(value) {
        if let Ok(written) = group_records_codec::group_metadata_value(&group) {
            assert_eq!(parse_group_metadata_value(&written), Ok(group));
        }
    }
    let _ = txn_records::parse_key(key);
    if let Ok(mut meta) = txn_records::parse_value(value) {
        if let Ok(written) = txn_records::value(&meta) {
            // Below transactions version 2 the value is written as v0, as Kafka writes it,
            // which has no client version and no previous or next producer id (v1's tagged
            // fields, which only transactions version 2 uses): those read back as 0 and -1.
            if meta.client_version < 2 {
                meta.client_version = 0;
                meta.previous_producer_id = -1;
                meta.next_producer_id = -1;
            }
            assert_eq!(txn_records::parse_value(&written), Ok(meta));
        }
    }
    let record = (
        Bytes::copy_from_slice(key),
        Some(Bytes::copy_from_slice(value)),
    );
    if let Ok(batch) = group_records_codec::build_batch(&[record], 1_700_000_000_000) {
        let _ = decode_batches(batch.freeze());
    }
}

/// The seeds: batches of offset commits, group metadata and transaction state as the
/// coordinators write them, and each key and value alone behind its split byte.
pub fn group_record_seeds() -> Vec<(String, Vec<u8>)> {
    let offset = CommittedOffset {
        offset: 42,
        leader_epoch: 3,
        metadata: "meta".into(),
        commit_timestamp_ms: 1_700_000_000_000,
    };
    let group = GroupMetadataValue {
        protocol_type: "consumer".into(),
        generation: 5,
        protocol: Some("range".into()),
        leader: Some("m-1".into()),
        current_state_timestamp_ms: 1_700_000_000_000,
        members: vec![MemberMetadata {
            member_id: "m-1".into(),
            group_instance_id: Some("i-1".into()),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: 30_000,
            session_timeout_ms: 10_000,
            subscription: Bytes::from_static(b"\0\x01\0\0\0\x01\0\x06orders"),
            assignment: Bytes::from_static(b"\0\x01\0\0\0\x01\0\x06orders\0\0\0\x01\0\0\0\0"),
        }],
    };
    let txn = |client_version: i16| TxnMetadata {
        producer_id: 1000,
        producer_epoch: 4,
        timeout_ms: 60_000,
        state: TxnState::Ongoing,
        partitions: [("orders".to_string(), 0), ("orders".to_string(), 1)].into(),
        last_update_ms: 1_700_000_000_000,
        start_ms: 1_699_999_999_000,
        previous_producer_id: -1,
        next_producer_id: -1,
        client_version,
    };
    let pairs: Vec<(&str, Bytes, Bytes)> = vec![
        (
            "offset",
            group_records_codec::offset_key("g", "orders", 0),
            group_records_codec::offset_value(&offset),
        ),
        (
            "group",
            group_records_codec::group_metadata_key("g").expect("encodes"),
            group_records_codec::group_metadata_value(&group).expect("encodes"),
        ),
        (
            "txn-v0",
            txn_records::key("t").expect("encodes"),
            txn_records::value(&txn(0)).expect("encodes"),
        ),
        (
            "txn-v1",
            txn_records::key("t").expect("encodes"),
            txn_records::value(&txn(2)).expect("encodes"),
        ),
    ];
    let mut seeds = Vec::new();
    for (name, key, value) in &pairs {
        let split = u8::try_from(key.len()).expect("short key");
        seeds.push((format!("{name}-pair"), [&[split][..], key, value].concat()));
    }
    let records: Vec<_> = pairs
        .iter()
        .map(|(_, key, value)| (key.clone(), Some(value.clone())))
        .chain([(pairs[0].1.clone(), None)])
        .collect();
    let batch = group_records_codec::build_batch(&records, 1_700_000_000_000).expect("builds");
    seeds.push(("batch".into(), batch.to_vec()));
    let txn_batch = group_records_codec::build_txn_batch(&records[..1], 1_700_000_000_000, 9, 0)
        .expect("builds");
    let marker = skald_protocol::batch::end_txn_marker_batch(9, 0, true, 1, 1_700_000_000_000);
    seeds.push((
        "txn-offsets-and-marker".into(),
        [&txn_batch[..], &marker].concat(),
    ));
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;
    use skald_protocol::fuzzing::{corpus_to_write, seed_corpus};

    /// A transaction value v1 whose tagged fields say previous producer id 2199023255551 under
    /// a client below transactions version 2: written back as v0 it loses them, as in Kafka,
    /// which the round trip allows (the fuzzer's input, kept).
    #[test]
    fn a_v1_transaction_value_below_version_2_writes_back_as_v0() {
        group_records(&[
            0x05, 0x00, 0x00, 0x00, 0xff, 0x92, 0x00, 0x01, 0x03, 0x00, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0x3f, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0xe8, 0x00, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x60, 0x72, 0x64, 0x65, 0x73, 0x03, 0x00,
            0x09, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x8e, 0x00, 0xfe, 0x00, 0x08, 0x00, 0x00,
            0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x05, 0x00,
        ]);
    }

    #[test]
    fn every_group_records_seed_runs_clean() {
        let seeds = group_record_seeds();
        if let Some(dir) = corpus_to_write("group_records") {
            for (name, bytes) in &seeds {
                std::fs::write(dir.join(name), bytes).expect("seed written");
            }
        }
        let committed = seed_corpus("group_records");
        for seed in &seeds {
            assert!(committed.contains(seed), "{} is not in the corpus", seed.0);
        }
        for (_, data) in committed {
            group_records(&data);
        }
    }

    #[test]
    fn group_records_mutations_run_clean() {
        skald_protocol::fuzzing::run_mutations(
            "group_records",
            skald_protocol::fuzzing::MUTATIONS_DEFAULT,
            group_records,
        );
    }
}
