#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skald_broker::fuzzing::group_records(data));
