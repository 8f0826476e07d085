//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, nightly) and for the stable tests that
//! run the same functions over the committed seed corpus. Not part of the supported API.
//!
//! - [`record_batch`]: a client's batch down the produce path (the header walk, Kafka's
//!   `LogValidator`, the CRC), and the cleaner's decompression of what passes.
//! - [`log_recovery`]: a partition directory damaged as a crash or a failing disk damages one
//!   (truncated or bit-flipped `.log`, `.index`, `.timeindex`, producer snapshots, the leader
//!   epoch checkpoint and the log dir's recovery point checkpoint), then opened as the broker opens
//!   it. The log must open or fail cleanly, never panic; and when recovery was due to validate
//!   the damaged segment, what it serves must be the longest valid prefix of what was written.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use skald_protocol::batch::testing::{build_batch_with, BatchOptions, TestRecord};
use skald_protocol::batch::{self, RecordBatches};

use crate::cleaner::codec::{compressed_batch, decompressed_batch, Codec};
use crate::log_validator::validate_client_batch;
use crate::{
    read_offset_checkpoint, Log, LogConfig, LogOpenOptions, ManualClock,
    RECOVERY_POINT_CHECKPOINT_FILE,
};

/// Bytes in a record batch's header before the fields its CRC32C covers that recovery cannot
/// check: base offset, length, partition leader epoch (the first two are checked otherwise).
const UNCHECKED_HEADER_BYTES: usize = 16;

/// A client's batch as the produce handler takes it: the first byte asks for the length and CRC
/// to be made right (see [`skald_protocol::fuzzing::record_batches`], which runs first).
pub fn record_batch(data: &[u8]) {
    skald_protocol::fuzzing::record_batches(data);
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut buf = rest.to_vec();
    if flags & 1 != 0 {
        skald_protocol::fuzzing::fix_length_and_crc(&mut buf);
    }
    // The produce handler: exactly one batch, not a control batch, then LogValidator.
    let mut headers = RecordBatches::headers_only(&buf);
    let Some(Ok((_, header))) = headers.next() else {
        return;
    };
    if headers.next().is_some() || header.is_control() {
        return;
    }
    if validate_client_batch(&buf, &header).is_err() || batch::validate_batch(&buf).is_err() {
        return;
    }
    // Accepted and appended; the cleaner later reads its records.
    match Codec::from_id(header.compression()) {
        None => {
            let mut walked = 0;
            for record in batch::records(&buf).expect("LogValidator walked this batch") {
                record.expect("LogValidator walked every record");
                walked += 1;
            }
            assert_eq!(Ok(walked), usize::try_from(header.records_count));
        }
        Some(codec) => {
            if let Ok(plain) = decompressed_batch(&buf, codec) {
                if let Ok(views) = batch::record_views(&plain) {
                    views.take_while(Result::is_ok).for_each(drop);
                }
            }
        }
    }
}

/// The record batch seeds: valid batches in every codec, idempotent, transactional and control
/// ones, each with the flag byte both ways.
pub fn record_batch_seeds() -> Vec<(String, Vec<u8>)> {
    let records: Vec<TestRecord> = (0..4)
        .map(|i| {
            let mut record = TestRecord::new(
                Some(format!("key-{i}").as_bytes()),
                (i != 2).then_some(format!("value {i}").as_bytes()),
                1_700_000_000_000 + i,
            );
            if i == 1 {
                record.headers = vec![(b"h".to_vec(), Some(b"v".to_vec()))];
            }
            record
        })
        .collect();
    let plain = build_batch_with(&BatchOptions::default(), &records);
    let idempotent = build_batch_with(
        &BatchOptions {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: 5,
            ..BatchOptions::default()
        },
        &records,
    );
    let transactional = build_batch_with(
        &BatchOptions {
            producer_id: 9,
            producer_epoch: 2,
            base_sequence: 0,
            attributes: 0x10,
            ..BatchOptions::default()
        },
        &records[..1],
    );
    let marker = batch::end_txn_marker_batch(9, 2, true, 4, 1_700_000_000_000);
    let mut seeds = vec![
        ("plain".to_string(), plain.clone()),
        ("idempotent".to_string(), idempotent),
        ("transactional".to_string(), transactional),
        ("commit-marker".to_string(), marker),
        ("two-batches".to_string(), [&plain[..], &plain[..]].concat()),
    ];
    for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
        let compressed = compressed_batch(&plain, codec).expect("compresses");
        seeds.push((format!("{codec:?}").to_lowercase(), compressed));
    }
    let mut flagged = Vec::new();
    for (name, bytes) in seeds {
        flagged.push((format!("{name}-as-is"), [&[0u8][..], &bytes].concat()));
        flagged.push((format!("{name}-fixed"), [&[1u8][..], &bytes].concat()));
    }
    flagged
}

/// A partition directory as a broker left it: several segments (sparse indexes, time indexes),
/// plain, idempotent and transactional batches over two leader epochs, producer snapshots at
/// every roll and at close, the aborted transaction index, the leader epoch checkpoint.
struct Fixture {
    /// Every file of the partition directory, by name, as closed.
    files: Vec<(String, Vec<u8>)>,
    /// The batches in offset order, as stored.
    batches: Vec<StoredBatch>,
    /// Segment base offsets, ascending.
    segment_bases: Vec<i64>,
    log_end_offset: i64,
}

struct StoredBatch {
    segment_base: i64,
    /// Byte range in its segment's `.log`.
    position: usize,
    bytes: Vec<u8>,
    base_offset: i64,
    last_offset: i64,
    producer_id: i64,
    last_sequence: i32,
}

const TOPIC: &str = "fuzz";
const NOW_MS: i64 = 1_700_000_000_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1500,
        index_interval_bytes: 200,
        segment_index_bytes: 4096,
        ..LogConfig::default()
    }
}

fn open_options(recovery_point: Option<i64>) -> LogOpenOptions {
    LogOpenOptions {
        clock: Arc::new(ManualClock::new(NOW_MS)),
        recovery_point,
        faults: None,
    }
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(build_fixture);

fn build_fixture() -> Fixture {
    let scratch = Scratch::new();
    let dir = scratch.partition_dir();
    let mut log = Log::open_with_options(&dir, config(), open_options(Some(0))).expect("opens");
    let record = |i: i64| {
        TestRecord::new(
            Some(format!("key-{i}").as_bytes()),
            Some(format!("value {i} {}", "x".repeat(20)).as_bytes()),
            NOW_MS + i,
        )
    };
    let mut sequence = 0;
    let mut txn_sequence = 0;
    for i in 0..30i64 {
        let epoch = if i < 12 { 1 } else { 3 };
        let records: Vec<_> = (0..3).map(|r| record(i * 3 + r)).collect();
        let options = match i % 3 {
            // Plain.
            0 => BatchOptions::default(),
            // Idempotent producer 7.
            1 => {
                sequence += 3;
                BatchOptions {
                    producer_id: 7,
                    producer_epoch: 0,
                    base_sequence: sequence - 3,
                    ..BatchOptions::default()
                }
            }
            // Transactional producer 9, one transaction per batch, committed or aborted.
            _ => {
                txn_sequence += 3;
                BatchOptions {
                    producer_id: 9,
                    producer_epoch: 0,
                    base_sequence: txn_sequence - 3,
                    attributes: 0x10,
                    ..BatchOptions::default()
                }
            }
        };
        let mut bytes = build_batch_with(&options, &records);
        log.append(&mut bytes, None, epoch).expect("appends");
        if i % 3 == 2 {
            log.append_txn_marker(9, 0, i % 2 == 0, 5, epoch)
                .expect("marker appends");
        }
    }
    let log_end_offset = log.log_end_offset();
    log.close().expect("closes");

    let mut files = Vec::new();
    for entry in fs::read_dir(&dir).expect("reads dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        files.push((name, fs::read(&path).expect("reads file")));
    }
    files.sort();
    let mut segment_bases = Vec::new();
    let mut batches = Vec::new();
    for (name, bytes) in &files {
        let Some(stem) = name.strip_suffix(".log") else {
            continue;
        };
        let segment_base: i64 = stem.parse().expect("a segment name");
        segment_bases.push(segment_base);
        for item in RecordBatches::new(bytes) {
            let (position, header) = item.expect("a closed log is valid");
            batches.push(StoredBatch {
                segment_base,
                position,
                bytes: bytes[position..position + header.total_size()].to_vec(),
                base_offset: header.base_offset,
                last_offset: header.last_offset(),
                producer_id: header.producer_id,
                last_sequence: crate::producer_state::last_sequence(&header),
            });
        }
    }
    assert!(segment_bases.len() >= 4, "{segment_bases:?}");
    Fixture {
        files,
        batches,
        segment_bases,
        log_end_offset,
    }
}

/// One piece of damage: which file (the partition directory's, then the log dir's recovery
/// point checkpoint), what (truncate there, flip a bit, overwrite a byte, delete the file),
/// where.
struct Damage {
    file: usize,
    kind: u8,
    position: usize,
    value: u8,
}

const DAMAGE_BYTES: usize = 5;
const DAMAGES_MAX: usize = 8;

/// The input: a flags byte (bit 0: the log dir has its clean shutdown marker; bit 1: the recovery
/// point checkpoint says the log end offset rather than 0; bit 2: it says the end of the
/// second segment), then up to eight 5-byte damages.
pub fn log_recovery(data: &[u8]) {
    let fixture = &*FIXTURE;
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let file_count = fixture.files.len() + 1;
    let damages: Vec<Damage> = rest
        .chunks_exact(DAMAGE_BYTES)
        .take(DAMAGES_MAX)
        .map(|d| Damage {
            file: usize::from(d[0]) % file_count,
            kind: d[1] % 4,
            position: usize::from(u16::from_le_bytes([d[2], d[3]])),
            value: d[4],
        })
        .collect();
    let checkpointed = if flags & 2 != 0 {
        fixture.log_end_offset
    } else if flags & 4 != 0 {
        fixture.segment_bases[2]
    } else {
        0
    };
    let clean_shutdown = flags & 1 != 0;

    // The damaged files.
    let mut files: Vec<(String, Option<Vec<u8>>)> = fixture
        .files
        .iter()
        .map(|(name, bytes)| (name.clone(), Some(bytes.clone())))
        .collect();
    let checkpoint_text = format!("0\n1\n{TOPIC} 0 {checkpointed}\n");
    files.push((
        RECOVERY_POINT_CHECKPOINT_FILE.to_string(),
        Some(checkpoint_text.into_bytes()),
    ));
    for damage in &damages {
        let (name, contents) = &mut files[damage.file];
        // Losing a whole segment is not a crash's doing: Kafka cannot tell it from retention.
        if damage.kind == 3 && name.ends_with(".log") {
            continue;
        }
        let Some(bytes) = contents else { continue };
        let position = damage.position % (bytes.len() + 1);
        match damage.kind {
            0 => bytes.truncate(position),
            1 if position < bytes.len() => bytes[position] ^= 1 << (damage.value % 8),
            2 if position < bytes.len() => bytes[position] = damage.value,
            3 => *contents = None,
            _ => {}
        }
    }

    let scratch = Scratch::new();
    let dir = scratch.partition_dir();
    fs::create_dir_all(&dir).expect("creates the partition dir");
    let (checkpoint, partition_files) = files.split_last().expect("the checkpoint is last");
    for (name, contents) in partition_files {
        if let Some(bytes) = contents {
            fs::write(dir.join(name), bytes).expect("writes a file");
        }
    }
    let checkpoint_path = scratch.root.join(RECOVERY_POINT_CHECKPOINT_FILE);
    if let Some(bytes) = &checkpoint.1 {
        fs::write(&checkpoint_path, bytes).expect("writes the checkpoint");
    }

    // The recovery point as the broker finds it (replica_manager's LogDirRecovery).
    let recovery_point = if clean_shutdown {
        i64::MAX
    } else {
        match read_offset_checkpoint(&checkpoint_path) {
            Ok(points) => points
                .and_then(|points| points.get(&(TOPIC.to_string(), 0)).copied())
                .unwrap_or(0),
            Err(_) => 0,
        }
    };
    let Ok(mut log) = Log::open_with_options(&dir, config(), open_options(Some(recovery_point)))
    else {
        return;
    };

    // The first damaged batch of the `.log` files, in offset order.
    let first_damaged = fixture.batches.iter().position(|stored| {
        let name = crate::segment_file_name(stored.segment_base, "log");
        let damaged = files
            .iter()
            .find(|(file, _)| *file == name)
            .and_then(|(_, contents)| contents.as_deref())
            .expect("segments are never deleted");
        damaged.get(stored.position..stored.position + stored.bytes.len())
            != Some(&stored.bytes[..])
    });
    let first_damaged = first_damaged.unwrap_or(fixture.batches.len());
    // Recovery validates a segment holding offsets at or past the recovery point; below it the
    // segment is trusted, as in Kafka, and nothing can be said of what it serves.
    let damaged_segment_validated = fixture.batches.get(first_damaged).is_none_or(|stored| {
        let segment_end = fixture
            .segment_bases
            .iter()
            .find(|&&base| base > stored.segment_base)
            .copied()
            .unwrap_or(fixture.log_end_offset);
        segment_end > recovery_point
    });
    // A sealed segment cut exactly between two batches (to nothing, say) looks whole: recovery
    // cuts nothing, so it keeps the segments after it, and the log has a gap there. Kafka's
    // recovery is the same (it deletes later segments only when it truncated bytes), and a
    // compacted segment may end early for real; nothing on disk tells the two apart.
    let cut_between_batches = fixture.batches.iter().any(|stored| {
        let name = crate::segment_file_name(stored.segment_base, "log");
        let original = &fixture
            .files
            .iter()
            .find(|(file, _)| *file == name)
            .expect("a segment")
            .1;
        let damaged = files
            .iter()
            .find(|(file, _)| *file == name)
            .and_then(|f| f.1.as_deref());
        damaged == Some(&original[..stored.position])
    });
    let served = serve_everything(&log, damaged_segment_validated, cut_between_batches);
    if !damaged_segment_validated {
        return;
    }
    let served = served.unwrap_or_else(|err| panic!("a recovered log fails a read: {err}"));
    assert!(
        served.len() >= first_damaged,
        "recovery kept {} batches, but the first {first_damaged} were intact",
        served.len()
    );
    let mut originals = fixture.batches.iter().enumerate();
    for (i, served) in served.iter().enumerate() {
        if i < first_damaged {
            let (_, stored) = originals.next().expect("as many written");
            assert_eq!(served, &stored.bytes, "batch {i} changed");
            continue;
        }
        // Past the damage only fields outside the CRC may differ; the read checked the CRC.
        // After a cut between batches, later batches may follow a gap.
        let same = |stored: &StoredBatch| {
            served[UNCHECKED_HEADER_BYTES..] == stored.bytes[UNCHECKED_HEADER_BYTES..]
        };
        let found = if cut_between_batches {
            originals.find(|(_, stored)| same(stored))
        } else {
            originals.next().filter(|(_, stored)| same(stored))
        };
        assert!(found.is_some(), "batch {i} served corrupt or invented");
    }
    // Every offset a kept batch holds is found in it.
    for stored in &fixture.batches[..first_damaged] {
        for offset in [stored.base_offset, stored.last_offset] {
            let read = log.read(offset, 1).expect("reads a kept offset");
            let first = RecordBatches::new(&read.records)
                .next()
                .expect("a batch")
                .expect("a valid batch")
                .1;
            assert!(
                first.base_offset <= offset && offset <= first.last_offset(),
                "read at {offset} served {}..={}",
                first.base_offset,
                first.last_offset()
            );
        }
    }
    // The idempotent producer's state is that of the batches kept.
    // (After a gap a snapshot may remember batches the gap lost, as Kafka's would.)
    if first_damaged == served.len() && !cut_between_batches {
        let expected = fixture.batches[..first_damaged]
            .iter()
            .rev()
            .find(|stored| stored.producer_id == 7)
            .map(|stored| stored.last_sequence);
        let recovered = log.producer_state().entry(7).map(|entry| entry.last_seq());
        assert_eq!(recovered, expected, "producer 7's last sequence");
    }
    let end = log.log_end_offset();
    for entry in log.leader_epoch_entries() {
        assert!(
            entry.start_offset <= end,
            "{entry:?} past the log end {end}"
        );
    }
    // The recovered log takes appends where it ends, and serves them.
    let mut batch = build_batch_with(
        &BatchOptions::default(),
        &[TestRecord::new(Some(b"after"), Some(b"recovery"), NOW_MS)],
    );
    let appended = log
        .append(&mut batch, None, 9)
        .expect("a recovered log appends");
    assert_eq!(appended.first_offset, end);
    let read = log.read(end, 1 << 20).expect("reads the append");
    assert_eq!(&read.records[..], &batch[..]);
}

/// Reads the whole log from its start; returns the batches. Where recovery vouches for the data
/// (`strict`), every batch must pass its CRC and offsets must go up, and a read below the log
/// end must return something unless the log may have `gaps`; elsewhere the reads need only end.
fn serve_everything(log: &Log, strict: bool, gaps: bool) -> crate::Result<Vec<Vec<u8>>> {
    let mut served = Vec::new();
    let mut offset = log.log_start_offset();
    let mut previous_last = -1;
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20)?;
        if read.next_offset <= offset {
            // A gap that runs to the log end reads as nothing, in Kafka too.
            assert!(
                !strict || gaps,
                "a read at {offset} below the log end {} returned nothing",
                log.log_end_offset()
            );
            break;
        }
        for item in RecordBatches::new(&read.records) {
            let (position, header) = match item {
                Ok(batch) => batch,
                Err(err) if strict => panic!("served a corrupt batch: {err}"),
                Err(_) => break,
            };
            assert!(
                !strict || header.base_offset > previous_last,
                "offsets go back"
            );
            previous_last = header.last_offset();
            served.push(read.records[position..position + header.total_size()].to_vec());
        }
        offset = read.next_offset;
    }
    Ok(served)
}

/// The recovery seeds: no damage under each flag, then damage of each kind to each kind of file.
pub fn log_recovery_seeds() -> Vec<(String, Vec<u8>)> {
    let fixture = &*FIXTURE;
    let mut seeds = Vec::new();
    for flags in [0u8, 1, 2, 4] {
        seeds.push((format!("intact-flags{flags}"), vec![flags]));
    }
    for (file, (name, bytes)) in fixture.files.iter().enumerate() {
        let middle = u16::try_from(bytes.len() / 2)
            .unwrap_or(u16::MAX)
            .to_le_bytes();
        let file = u8::try_from(file).expect("few files");
        for (kind, what) in [(0u8, "truncated"), (1, "flipped")] {
            let damage = [file, kind, middle[0], middle[1], 3];
            seeds.push((format!("{name}-{what}"), [&[0u8][..], &damage].concat()));
        }
    }
    let checkpoint = u8::try_from(fixture.files.len()).expect("few files");
    seeds.push(("checkpoint-flipped".into(), vec![2, checkpoint, 1, 8, 0, 0]));
    seeds
}

/// A directory under the system's temporary directory (`TMPDIR`), removed on drop.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let root = std::env::temp_dir().join(format!(
            "skald-fuzz-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("creates a scratch dir");
        Scratch { root }
    }

    fn partition_dir(&self) -> PathBuf {
        self.root.join(format!("{TOPIC}-0"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skald_protocol::fuzzing::{corpus_to_write, run_mutations, seed_corpus, MUTATIONS_DEFAULT};

    fn write_and_check(target: &str, seeds: &[(String, Vec<u8>)]) {
        if let Some(dir) = corpus_to_write(target) {
            for (name, bytes) in seeds {
                fs::write(dir.join(name), bytes).expect("seed written");
            }
        }
        let committed = seed_corpus(target);
        for seed in seeds {
            assert!(committed.contains(seed), "{} is not in the corpus", seed.0);
        }
    }

    #[test]
    fn every_record_batch_seed_runs_clean() {
        write_and_check("record_batch", &record_batch_seeds());
        for (_, data) in seed_corpus("record_batch") {
            record_batch(&data);
        }
    }

    /// Inputs the fuzzer found failing, fixed since; each names its fix.
    #[test]
    fn log_recovery_regressions() {
        // One bit flipped in a sealed segment's `.index` (a position), clean shutdown: the
        // index passed its sanity checks, the read at offset 18 started mid-batch, found no
        // batch and served 23..=25 from the next segment. Fixed: `Loaded::scan_start` checks
        // the entry against the batch at its position.
        log_recovery(&[3, 0, 0x15, 0, 0x16, 0]);
        // The fourth segment's `.log` cut to nothing: recovery keeps the later segments (as
        // Kafka's does: it cut no bytes), so offsets 69..=89 are missing in the middle. Not
        // fixed (see `cut_between_batches`); the target allows the gap but nothing invented.
        log_recovery(&[0, 12, 0, 0, 0, 6]);
        // One bit of the third segment's last batch's base offset (outside the CRC) flipped
        // upwards: the batch still followed its predecessor, so recovery kept it, and the next
        // segment's offsets went back below it. Fixed: a sealed segment's batches must end
        // below the next segment's base offset (`Loaded::recover`).
        log_recovery(&[0, 8, 1, 0xd3, 0x71, 3]);
        // A flip in a leader epoch (outside the CRC), then a later segment cut to nothing: the
        // gap of the second must be allowed though the first damage came earlier.
        log_recovery(&hex(b"0032010e000008000000e9e00003"));
        // The first segment cut to nothing and the second to one byte: offsets 0..23 hold
        // nothing, and a read at 0 returns nothing, as in Kafka (a consumer there waits).
        log_recovery(&hex(
            b"00150000040401000000000000000100bcbcbcbcbcbcbc0100000000",
        ));
    }

    fn hex(text: &[u8]) -> Vec<u8> {
        text.chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn every_log_recovery_seed_runs_clean() {
        write_and_check("log_recovery", &log_recovery_seeds());
        for (_, data) in seed_corpus("log_recovery") {
            log_recovery(&data);
        }
    }

    #[test]
    fn record_batch_mutations_run_clean() {
        run_mutations("record_batch", MUTATIONS_DEFAULT, record_batch);
    }

    /// Each input builds and recovers a partition directory on disk: fewer than the others.
    #[test]
    fn log_recovery_mutations_run_clean() {
        run_mutations("log_recovery", MUTATIONS_DEFAULT / 20, log_recovery);
    }
}
