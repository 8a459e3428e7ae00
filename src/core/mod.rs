//! The pure core: no I/O, no async, no clock reads (time is passed in).
//!
//! Everything here works on the Kubernetes API types of `k8s-openapi` and is tested table-driven.
pub mod credential;
pub mod eligibility;
pub mod events;
pub mod fieldpath;
pub mod hash;
pub mod labels;
pub mod leaderelection;
pub mod names;
pub mod nodehealth;
pub mod patch;
pub mod plan;
pub mod podactions;
pub mod podprinter;
pub mod podrefs;
pub mod probe;
pub mod quantity;
pub mod reference;
pub mod rollout;
pub mod scheduler;
pub mod ssa;
pub mod status;
pub mod support;
pub mod validation;
