//! Image references (`core::reference`): parsed, normalized, parsed back.
//! The body is `daemonset_agent::fuzzing::reference`, which `cargo test` also runs on the seeds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| daemonset_agent::fuzzing::reference(data));
