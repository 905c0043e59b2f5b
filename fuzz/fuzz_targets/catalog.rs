#![no_main]
//! cargo-fuzz target: see `snapdump::fuzzing::catalog`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapdump::fuzzing::catalog(data));
