//! daemonset-agent: Kubernetes DaemonSets on plain Linux machines.
//!
//! `core` is pure (no I/O, no tokio); `runtime` (containerd), `server` (the API endpoint) and
//! `agent` (the node daemon) sit around it and use it. See ARCHITECTURE.md.
pub mod agent;
pub mod cli;
pub mod core;
/// The fuzz targets' bodies (fuzz/), replayed on the seeds by `cargo test`.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod logdriver;
pub mod logging;
/// Prometheus' text format for both daemons' `/metrics`, and what a process says of itself.
pub mod metrics;
pub mod pki;
pub mod runtime;
pub mod server;
