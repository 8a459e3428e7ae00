//! Manifests as the API server and `kubectl apply` send them (JSON, or YAML with several
//! documents) into the typed DaemonSet, Pod and Node, defaulted and validated as the server does.
//! The body is `daemonset_agent::fuzzing::manifests`, which `cargo test` also runs on the seeds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| daemonset_agent::fuzzing::manifests(data));
