#![no_main]
//! cargo-fuzz target: see `snapdump::fuzzing::records`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapdump::fuzzing::records(data));
