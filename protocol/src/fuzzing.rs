//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, nightly) and for the stable tests that
//! run the same functions over the committed seed corpus. Not part of the supported API.
//!
//! Each function takes arbitrary bytes, must never panic, and asserts what must hold for any input
//! (a failed assertion is a finding, like a panic).

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;

use crate::api_versions;
use crate::batch::{self, RecordBatches};
use crate::codec;
use crate::legacy;
use crate::precheck::{self, Rejection};

/// One request frame (the size prefix removed), as a connection hands it to the codec: decoded on
/// the client listener and on the CONTROLLER listener. Then the precheck's promise is checked
/// against kafka-protocol for the frame's API and version, when some listener serves them: a body
/// the walk accepts is read by the decoder to exactly where the walk ended, and a body the walk
/// refuses for any reason but a huge count (which the decoder could not be asked to read safely)
/// the decoder refuses too.
pub fn request(frame: &[u8]) {
    let on_client = codec::decode_request(Bytes::copy_from_slice(frame));
    let on_controller = codec::decode_controller_request(Bytes::copy_from_slice(frame));
    for request in [on_client, on_controller].into_iter().flatten() {
        let prefix = codec::header_prefix(frame).expect("a decoded frame has a header");
        assert_eq!(request.api_key as i16, prefix.api_key);
        assert_eq!(request.api_version, prefix.api_version);
        assert_eq!(request.header.correlation_id, prefix.correlation_id);
    }
    walk_agrees_with_decoder(frame);
}

fn walk_agrees_with_decoder(frame: &[u8]) {
    let Some(prefix) = codec::header_prefix(frame) else {
        return;
    };
    let Ok(api_key) = ApiKey::try_from(prefix.api_key) else {
        return;
    };
    if !api_versions::is_supported(prefix.api_key, prefix.api_version)
        && !api_versions::is_supported_on_controller(prefix.api_key, prefix.api_version)
    {
        return;
    }
    let mut rest = Bytes::copy_from_slice(frame);
    let header_version = api_key.request_header_version(prefix.api_version);
    if RequestHeader::decode(&mut rest, header_version).is_err() {
        return;
    }
    let walked = precheck::check_body(api_key, prefix.api_version, &rest);
    if matches!(walked, Err(Rejection::TooManyElements { .. })) {
        return;
    }
    let what = format!("{api_key:?} v{}", prefix.api_version);
    let legacy = legacy::codec_version(api_key, prefix.api_version) != prefix.api_version;
    let mut body = rest.clone();
    if let Some(rewritten) = legacy::rewrite_body(api_key, prefix.api_version, &rest) {
        match rewritten {
            Ok(rewritten) => body = Bytes::from(rewritten),
            Err(rejection) => {
                assert!(
                    walked.is_err(),
                    "{what}: walk passed, rewrite refused {rejection}"
                );
                return;
            }
        }
    }
    let before = body.len();
    let codec_version = legacy::codec_version(api_key, prefix.api_version);
    let decoded = RequestKind::decode(api_key, &mut body, codec_version);
    match (walked, decoded) {
        (Ok(read), Ok(_)) if !legacy => assert_eq!(
            read,
            before - body.len(),
            "{what}: the walk and the decoder end at different bytes"
        ),
        (Err(rejection), Ok(_)) => panic!("{what}: the walk refused ({rejection}) but it decodes"),
        _ => {}
    }
}

/// Concatenated record batches as they arrive in a Produce or a replica Fetch, walked the ways
/// the broker walks them. The first byte is not data: its low bit asks for the first batch's
/// length and CRC32C to be made right first, so that the fuzzer reaches the checks behind them.
pub fn record_batches(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut buf = rest.to_vec();
    if flags & 1 != 0 {
        fix_length_and_crc(&mut buf);
    }
    let valid = batch::valid_prefix_len(&buf);
    assert!(valid <= buf.len());
    // The valid prefix is whole batches: walking it alone finds no error and ends at its end.
    let mut batches = RecordBatches::new(&buf[..valid]);
    for item in batches.by_ref() {
        let (position, header) = item.expect("the valid prefix walks without an error");
        let one = &buf[position..position + header.total_size()];
        assert_eq!(batch::validate_batch(one), Ok(header));
        whole_batch(one, header);
    }
    assert_eq!(batches.position(), valid);
    for item in RecordBatches::headers_only(&buf) {
        let Ok((position, header)) = item else { break };
        assert!(position + header.total_size() <= buf.len());
    }
}

/// Checks on one batch whose length and CRC32C are right: the record walks, the patching the log
/// does on append (which must keep the CRC right), and the cleaner's rewrite.
fn whole_batch(one: &[u8], header: batch::RecordBatchHeader) {
    let _ = batch::end_txn_marker(one);
    let mut patched = one.to_vec();
    batch::set_base_offset(&mut patched, 1 << 40).expect("a valid batch takes a base offset");
    batch::set_partition_leader_epoch(&mut patched, 7).expect("and a leader epoch");
    batch::set_log_append_time(&mut patched, 1_700_000_000_000).expect("and a LogAppendTime");
    let patched_header = batch::validate_batch(&patched).expect("patching keeps the CRC right");
    // The log's way: the same header built beside the batch, the records written from `one`.
    let leader_header = batch::leader_header(one, 1 << 40, 7, Some(1_700_000_000_000))
        .expect("a valid batch takes a leader header");
    assert_eq!(
        leader_header[..],
        patched[..batch::RECORD_BATCH_HEADER_BYTES]
    );
    assert_eq!(patched_header.base_offset, 1 << 40);
    assert_eq!(patched_header.records_count, header.records_count);

    let Ok(views) = batch::record_views(one) else {
        return;
    };
    let mut kept = Vec::new();
    for view in views {
        match view {
            Ok(view) => kept.push(view),
            Err(_) => return,
        }
    }
    // A batch whose records all walk holds exactly the records its header counts.
    assert_eq!(Ok(kept.len()), usize::try_from(header.records_count));
    let deltas: Vec<_> = batch::records(one)
        .expect("walks as the views did")
        .map(|record| record.expect("walks as the views did").offset_delta)
        .collect();
    assert_eq!(
        deltas,
        kept.iter()
            .map(|view| view.offset_delta)
            .collect::<Vec<_>>()
    );
    // The cleaner keeping every other record yields a valid batch holding just those.
    let half: Vec<_> = kept.iter().step_by(2).copied().collect();
    if let Ok(rebuilt) = batch::rebuild_batch(one, &half) {
        let rebuilt_header = batch::validate_batch(&rebuilt).expect("a rebuilt batch is valid");
        assert_eq!(rebuilt_header.base_offset, header.base_offset);
        assert_eq!(rebuilt_header.last_offset_delta, header.last_offset_delta);
        let views: Vec<_> = batch::record_views(&rebuilt)
            .expect("a rebuilt batch walks")
            .map(|view| view.expect("a rebuilt batch's records walk").bytes)
            .collect();
        assert_eq!(
            views,
            half.iter().map(|view| view.bytes).collect::<Vec<_>>()
        );
    }
}

/// Sets the `batchLength` of the batch at the front of `buf` to cover the whole buffer and its
/// CRC32C to match, when the buffer is at least a header long.
pub fn fix_length_and_crc(buf: &mut [u8]) {
    if buf.len() < batch::RECORD_BATCH_HEADER_BYTES {
        return;
    }
    let length = i32::try_from(buf.len() - 12).unwrap_or(i32::MAX);
    buf[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&buf[21..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// The committed seed corpus of a fuzz target, `fuzz/corpus/<target>/`: every file's name and
/// bytes, in name order. The stable tests run each target's function over these.
pub fn seed_corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let name = path
                .file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(&path).unwrap_or_else(|err| panic!("{name}: {err}"));
            (name, bytes)
        })
        .collect();
    seeds.sort();
    seeds
}

/// Where the generator tests write seeds, when `SKALD_FUZZ_WRITE_CORPUS=1` asks them to
/// (`scripts/fuzz --seeds`); `None` otherwise.
pub fn corpus_to_write(target: &str) -> Option<std::path::PathBuf> {
    if std::env::var_os("SKALD_FUZZ_WRITE_CORPUS").is_none_or(|value| value != "1") {
        return None;
    }
    let dir = corpus_dir(target);
    // Regenerated from scratch, so a seed no generator makes any more goes.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
    Some(dir)
}

fn corpus_dir(target: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}
