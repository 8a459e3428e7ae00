//! The kinds this server serves, one file each: its [`Resource`] and its strategy (decoding,
//! defaulting, validation, status, generation, patch metadata, cleanup, Table). [`ALL`] is the
//! registry routing, discovery, OpenAPI and namespace cleanup read: serving a new kind is adding
//! its file, its `mod` line and its entry here.
pub mod configmap;
mod controllerrevision;
pub mod csr;
mod daemonset;
pub mod event;
mod lease;
pub mod metrics;
mod namespace;
mod node;
mod pod;
mod replicaset;
mod secret;
mod selfsubjectaccessreview;
mod selfsubjectreview;
pub mod serviceaccount;

pub use configmap::CONFIG_MAPS;
pub use controllerrevision::CONTROLLER_REVISIONS;
pub use csr::CERTIFICATE_SIGNING_REQUESTS;
pub use daemonset::DAEMONSETS;
pub use event::EVENTS;
pub use lease::LEASES;
pub use namespace::NAMESPACES;
pub use node::NODES;
pub use pod::PODS;
pub use replicaset::REPLICASETS;
pub use secret::SECRETS;
pub use selfsubjectaccessreview::SELF_SUBJECT_ACCESS_REVIEWS;
pub use selfsubjectreview::SELF_SUBJECT_REVIEWS;
pub use serviceaccount::SERVICE_ACCOUNTS;

use super::resources::Resource;

/// Every served resource, in discovery order.
pub static ALL: &[&Resource] = &[
    &DAEMONSETS,
    &REPLICASETS,
    &CONTROLLER_REVISIONS,
    &NODES,
    &PODS,
    &NAMESPACES,
    &LEASES,
    &SECRETS,
    &EVENTS,
    &CONFIG_MAPS,
    &SERVICE_ACCOUNTS,
    &CERTIFICATE_SIGNING_REQUESTS,
    &SELF_SUBJECT_ACCESS_REVIEWS,
    &SELF_SUBJECT_REVIEWS,
    &event::EVENTS_V1,
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, ReplicaSet};
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{
        ConfigMap, Event, Namespace, Node, Pod, Secret, ServiceAccount,
    };
    use serde_json::json;

    use super::*;

    fn meta<T: k8s_openapi::Resource>() -> (&'static str, &'static str, &'static str, &'static str)
    {
        (T::GROUP, T::VERSION, T::KIND, T::URL_PATH_SEGMENT)
    }

    #[test]
    fn every_resource_matches_its_api_type() {
        let cases = [
            (&DAEMONSETS, meta::<DaemonSet>()),
            (&REPLICASETS, meta::<ReplicaSet>()),
            (&CONTROLLER_REVISIONS, meta::<ControllerRevision>()),
            (&NODES, meta::<Node>()),
            (&PODS, meta::<Pod>()),
            (&NAMESPACES, meta::<Namespace>()),
            (&LEASES, meta::<Lease>()),
            (&SECRETS, meta::<Secret>()),
            (&EVENTS, meta::<Event>()),
            (&CONFIG_MAPS, meta::<ConfigMap>()),
            (&SERVICE_ACCOUNTS, meta::<ServiceAccount>()),
            (
                &CERTIFICATE_SIGNING_REQUESTS,
                meta::<CertificateSigningRequest>(),
            ),
            (
                &SELF_SUBJECT_ACCESS_REVIEWS,
                meta::<SelfSubjectAccessReview>(),
            ),
            (&SELF_SUBJECT_REVIEWS, meta::<SelfSubjectReview>()),
            (
                &event::EVENTS_V1,
                meta::<k8s_openapi::api::events::v1::Event>(),
            ),
        ];
        assert_eq!(cases.len(), ALL.len());
        for (r, (group, version, kind, plural)) in cases {
            assert_eq!(
                (r.group, r.version, r.kind, r.plural),
                (group, version, kind, plural)
            );
            assert!(
                ALL.iter().any(|x| std::ptr::eq(*x, r)),
                "{kind} not registered"
            );
        }
    }

    #[test]
    fn registry_entries_are_distinct_and_tables_are_rectangular() {
        let mut keys = HashSet::new();
        let mut short = HashSet::new();
        for r in ALL {
            assert!(keys.insert(r.key()), "{} twice", r.key());
            for s in r.short_names {
                assert!(short.insert(*s), "short name {s} twice");
            }
            let cells = r.strategy.cells(&json!({}), chrono::Utc::now());
            assert_eq!(cells.len(), r.strategy.columns().len(), "{}", r.kind);
            // the name column first, but for Events (upstream's printer has it last, wide)
            let name_at = r.strategy.columns().iter().position(|c| c.format == "name");
            let want = if r.kind == "Event" {
                r.strategy.columns().len() - 1
            } else {
                0
            };
            assert_eq!(name_at, Some(want), "{}", r.kind);
        }
    }
}
