#![no_main]
//! cargo-fuzz target: see `snapdump::fuzzing::stream_sealed`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapdump::fuzzing::stream_sealed(data));
