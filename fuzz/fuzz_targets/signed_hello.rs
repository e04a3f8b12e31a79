#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| herd_proto::fuzzing::signed_hello(data));
