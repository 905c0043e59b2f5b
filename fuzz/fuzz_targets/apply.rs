#![no_main]
//! cargo-fuzz target: see `snapdump::fuzzing::apply` (a damaged increment
//! applied to a target at its base must leave it at one snapshot exactly).
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapdump::fuzzing::apply(data));
