//! Resource quantities (`core::quantity`): the parse, the rounded values, the cgroup CPU figures.
//! The body is `daemonset_agent::fuzzing::quantity`, which `cargo test` also runs on the seeds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| daemonset_agent::fuzzing::quantity(data));
