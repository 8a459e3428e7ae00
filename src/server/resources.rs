//! What a served resource is (plural, kind, scope, short names, verbs, subresources and the
//! strategy that holds its behaviour), and the lookups routing, discovery and OpenAPI make over
//! the registry of kinds ([`super::kinds::ALL`]).
use std::fmt;

use super::kinds::ALL;
use super::strategy::Strategy;
use super::subresource::Subresource;

/// One REST resource (a plural under a group/version).
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// `status`, and later `scale`, `binding`, `eviction`, `log`.
    pub subresources: &'static [&'static Subresource],
    /// Everything kind-specific: decoding, defaulting, validation, status, tables.
    pub strategy: &'static dyn Strategy,
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resource")
            .field("group", &self.group)
            .field("version", &self.version)
            .field("plural", &self.plural)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Every verb: what most resources serve.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl Resource {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// The store key of the resource: `daemonsets.apps`, `pods`.
    pub fn key(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    /// The subresource served under `name` (`status`).
    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().copied().find(|s| s.name == name)
    }
    /// Whether status is a subresource: then main writes keep the stored status and status
    /// writes change nothing else.
    pub fn has_status(&self) -> bool {
        self.subresource("status").is_some()
    }
}

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    ALL.iter()
        .copied()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

pub fn in_group_version(group: &str, version: &str) -> Vec<&'static Resource> {
    ALL.iter()
        .copied()
        .filter(|r| r.group == group && r.version == version)
        .collect()
}

/// The named groups' group/versions, in discovery order (the order of the registry).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in ALL.iter().filter(|r| !r.group.is_empty()) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::kinds::{DAEMONSETS, PODS};
    use super::*;

    #[test]
    fn lookup() {
        let cases = [
            ("apps", "v1", "daemonsets", Some("DaemonSet")),
            ("", "v1", "pods", Some("Pod")),
            ("", "v1", "daemonsets", None),
            ("coordination.k8s.io", "v1", "leases", Some("Lease")),
        ];
        for (g, v, p, kind) in cases {
            assert_eq!(find(g, v, p).map(|r| r.kind), kind, "{g}/{v}/{p}");
        }
        assert_eq!(DAEMONSETS.key(), "daemonsets.apps");
        assert_eq!(PODS.api_version(), "v1");
        assert!(DAEMONSETS.has_status());
        assert_eq!(
            group_versions(),
            [
                ("apps", "v1"),
                ("coordination.k8s.io", "v1"),
                ("certificates.k8s.io", "v1"),
                ("authorization.k8s.io", "v1"),
                ("authentication.k8s.io", "v1"),
                ("events.k8s.io", "v1")
            ]
        );
    }
}
