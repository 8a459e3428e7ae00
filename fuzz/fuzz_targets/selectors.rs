//! Label and field selectors (`core::labels`). The input is `LABEL-SELECTOR \n FIELD-SELECTOR \n`
//! then up to two JSON values: a `LabelSelector` and the labels everything is matched against.
//! The body is `daemonset_agent::fuzzing::selectors`, which `cargo test` also runs on the seeds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| daemonset_agent::fuzzing::selectors(data));
