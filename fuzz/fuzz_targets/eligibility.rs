//! Node affinity, node selectors, taints and tolerations (`core::eligibility`): a Node and a
//! DaemonSet from a stream of two JSON values (`{node} {daemonset}`).
//! The body is `daemonset_agent::fuzzing::eligibility`, which `cargo test` also runs on the seeds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| daemonset_agent::fuzzing::eligibility(data));
