#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skald_storage::fuzzing::record_batch(data));
