#![no_main]
//! cargo-fuzz target: see `snapdump::fuzzing::tape`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapdump::fuzzing::tape(data));
