//! The three patch types of `core::patch` as the server applies them to a stored object: the
//! input is a stream of two JSON values, the document and the patch (`{"kind":"Node",...} [...]`).
//! The body is `daemonset_agent::fuzzing::patch`, which `cargo test` also runs on the seeds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| daemonset_agent::fuzzing::patch(data));
