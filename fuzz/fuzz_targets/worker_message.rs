#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| herd_proto::fuzzing::worker_message(data));
