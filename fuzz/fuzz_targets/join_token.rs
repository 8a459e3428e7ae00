//! Join tokens `sha256:HASH::ID.SECRET` and their parts (`core::credential`), printed back.
//! The body is `daemonset_agent::fuzzing::join_token`, which `cargo test` also runs on the seeds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| daemonset_agent::fuzzing::join_token(data));
