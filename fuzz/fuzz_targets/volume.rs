#![no_main]
//! cargo-fuzz target: see `snapdump::fuzzing::volume`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapdump::fuzzing::volume(data));
