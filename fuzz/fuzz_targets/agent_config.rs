//! The agent's configuration file (`agent::config`): TOML parsed, merged and validated.
//! The body is `daemonset_agent::fuzzing::agent_config`, which `cargo test` also runs on the seeds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| daemonset_agent::fuzzing::agent_config(data));
