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

/// How many mutated inputs [`run_mutations`] tries per target unless `SKALD_FUZZ_MUTATIONS` says
/// otherwise (CI's brief run; libFuzzer, through `scripts/fuzz`, runs for real).
pub const MUTATIONS_DEFAULT: usize = 2_000;

/// A brief mutation run on stable, without libFuzzer: `count` inputs (`SKALD_FUZZ_MUTATIONS`
/// when set, else `default_count`) made from the target's committed seed corpus by a seeded mutator (bit flips,
/// bytes set to boundary values, cuts, inserted and repeated runs, splices of two seeds), each
/// handed to `target`. The same `SKALD_FUZZ_SEED` (default 1) makes the same inputs; an input
/// that panics is printed in hex with a line that replays the run.
pub fn run_mutations(target_name: &str, default_count: usize, target: impl Fn(&[u8])) {
    let seeds = seed_corpus(target_name);
    assert!(!seeds.is_empty(), "{target_name}: no seeds");
    let count = std::env::var("SKALD_FUZZ_MUTATIONS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default_count);
    let run_seed = std::env::var("SKALD_FUZZ_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1u64);
    let mut mutator = Mutator::new(run_seed ^ fnv1a(target_name.as_bytes()));
    for run in 0..count {
        let first = &seeds[mutator.below(seeds.len())].1;
        let second = &seeds[mutator.below(seeds.len())].1;
        let input = mutator.mutate(first, second);
        let _report = ReportOnPanic {
            target_name,
            run,
            run_seed,
            input: &input,
        };
        target(&input);
    }
}

/// Prints the input a target panicked on, when dropped while panicking.
struct ReportOnPanic<'a> {
    target_name: &'a str,
    run: usize,
    run_seed: u64,
    input: &'a [u8],
}

impl Drop for ReportOnPanic<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let hex: String = self.input.iter().map(|b| format!("{b:02x}")).collect();
        eprintln!(
            "{} failed on mutation {} of seed {}: input {hex}\nreplay: SKALD_FUZZ_SEED={} SKALD_FUZZ_MUTATIONS={} cargo nextest run --workspace -E 'test(fuzz)'",
            self.target_name,
            self.run,
            self.run_seed,
            self.run_seed,
            self.run + 1
        );
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Seeded structure-blind mutations, a few per input (libFuzzer's basic ones).
struct Mutator(u64);

impl Mutator {
    const INPUT_MAX: usize = 1 << 20;

    fn new(seed: u64) -> Mutator {
        Mutator(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// xorshift64*.
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    fn below(&mut self, bound: usize) -> usize {
        if bound == 0 {
            0
        } else {
            (self.next() % bound as u64) as usize
        }
    }

    fn mutate(&mut self, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut data = input.to_vec();
        for _ in 0..=self.below(4) {
            self.mutate_once(&mut data, other);
        }
        data.truncate(Self::INPUT_MAX);
        data
    }

    fn mutate_once(&mut self, data: &mut Vec<u8>, other: &[u8]) {
        const BOUNDARIES: [u8; 8] = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, 0x40, 0x10];
        let at = self.below(data.len() + 1);
        match self.below(7) {
            0 if !data.is_empty() => {
                let i = self.below(data.len());
                data[i] ^= 1 << self.below(8);
            }
            1 if !data.is_empty() => {
                let i = self.below(data.len());
                data[i] = BOUNDARIES[self.below(BOUNDARIES.len())];
            }
            2 => data.truncate(at),
            3 => {
                let len = self.below(16) + 1;
                let bytes: Vec<u8> = (0..len).map(|_| self.next() as u8).collect();
                data.splice(at..at, bytes);
            }
            4 if at < data.len() => {
                // A run of the input repeated where it starts: lengths and counts meet their
                // own bytes again, as in a nested or repeated field.
                let len = self.below((data.len() - at).min(64)) + 1;
                let run = data[at..at + len].to_vec();
                data.splice(at..at, run);
            }
            5 if !other.is_empty() => {
                // A splice: this input up to `at`, the other from somewhere on.
                let from = self.below(other.len());
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            _ if data.len() >= 4 => {
                // A four-byte big-endian length or count set to a boundary.
                let i = self.below(data.len() - 3);
                let value: i32 = [0, 1, -1, i32::MAX, i32::MIN, 0x7fff, 0x1_0000][self.below(7)];
                data[i..i + 4].copy_from_slice(&value.to_be_bytes());
            }
            _ => data.push(self.next() as u8),
        }
    }
}

#[cfg(test)]
mod mutator_tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_inputs_and_other_seeds_differ() {
        let make = |seed| {
            let mut mutator = Mutator::new(seed);
            (0..50)
                .map(|_| mutator.mutate(b"0123456789abcdef", b"zyxwvu"))
                .collect::<Vec<_>>()
        };
        assert_eq!(make(7), make(7));
        assert_ne!(make(7), make(8));
        let changed = make(7)
            .iter()
            .filter(|input| input.as_slice() != b"0123456789abcdef")
            .count();
        assert!(changed >= 45, "only {changed} of 50 inputs were mutated");
    }
}
