#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skald_controller::fuzzing::raft_message(data));
