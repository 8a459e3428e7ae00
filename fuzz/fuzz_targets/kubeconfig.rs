//! Kubeconfig files as the agent reads them (`agent::client`), files and plugins dropped first.
//! The body is `daemonset_agent::fuzzing::kubeconfig`, which `cargo test` also runs on the seeds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| daemonset_agent::fuzzing::kubeconfig(data));
