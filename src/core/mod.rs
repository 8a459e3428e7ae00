//! The pure core: no I/O, no async, no clock reads (time is passed in).
//!
//! Everything here works on the Kubernetes API types of `k8s-openapi` and is tested table-driven.
pub mod eligibility;
pub mod hash;
pub mod labels;
pub mod names;
pub mod patch;
pub mod plan;
pub mod probe;
pub mod quantity;
pub mod reference;
pub mod status;
pub mod support;
pub mod validation;
