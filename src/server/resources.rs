//! The resources this server serves: the one table discovery, OpenAPI, routing and the store
//! agree on.

/// One REST resource (a plural under a group/version).
#[derive(Debug)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub has_status: bool,
    pub verbs: &'static [&'static str],
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub static DAEMONSETS: Resource = Resource {
    group: "apps",
    version: "v1",
    plural: "daemonsets",
    singular: "daemonset",
    kind: "DaemonSet",
    namespaced: true,
    short_names: &["ds"],
    categories: &["all"],
    has_status: true,
    verbs: ALL_VERBS,
};
pub static CONTROLLER_REVISIONS: Resource = Resource {
    group: "apps",
    version: "v1",
    plural: "controllerrevisions",
    singular: "controllerrevision",
    kind: "ControllerRevision",
    namespaced: true,
    short_names: &[],
    categories: &[],
    has_status: false,
    verbs: ALL_VERBS,
};
pub static NODES: Resource = Resource {
    group: "",
    version: "v1",
    plural: "nodes",
    singular: "node",
    kind: "Node",
    namespaced: false,
    short_names: &["no"],
    categories: &[],
    has_status: true,
    verbs: ALL_VERBS,
};
pub static PODS: Resource = Resource {
    group: "",
    version: "v1",
    plural: "pods",
    singular: "pod",
    kind: "Pod",
    namespaced: true,
    short_names: &["po"],
    categories: &["all"],
    has_status: true,
    verbs: ALL_VERBS,
};
pub static NAMESPACES: Resource = Resource {
    group: "",
    version: "v1",
    plural: "namespaces",
    singular: "namespace",
    kind: "Namespace",
    namespaced: false,
    short_names: &["ns"],
    categories: &[],
    has_status: false,
    verbs: &[
        "create", "delete", "get", "list", "patch", "update", "watch",
    ],
};
pub static LEASES: Resource = Resource {
    group: "coordination.k8s.io",
    version: "v1",
    plural: "leases",
    singular: "lease",
    kind: "Lease",
    namespaced: true,
    short_names: &[],
    categories: &[],
    has_status: false,
    verbs: ALL_VERBS,
};

pub static ALL: &[&Resource] = &[
    &DAEMONSETS,
    &CONTROLLER_REVISIONS,
    &NODES,
    &PODS,
    &NAMESPACES,
    &LEASES,
];

/// The group/versions served, in discovery order.
pub static GROUP_VERSIONS: &[(&str, &str)] = &[("apps", "v1"), ("coordination.k8s.io", "v1")];

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

#[cfg(test)]
mod tests {
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
    }
}
