//! Who may do what, from the request's attributes alone (kube-apiserver's authorizers: RBAC's
//! default roles and the Node authorizer). What needs the object itself (a pod bound to the node,
//! the node's own Node, its labels and taints, the requester of a CSR) is `admission`'s.
//!
//! | identity | may |
//! |---|---|
//! | `system:masters` (the admin token) | everything |
//! | `daemonset-agent:viewers` (a view token) | get, list, watch everything but Secrets |
//! | `system:nodes` / `system:node:NAME` (a node's certificate) | get the Secrets, ConfigMaps and ServiceAccounts its pods use (`graph`), and tokens of those ServiceAccounts; read DaemonSets, ControllerRevisions, Nodes, Namespaces; create its Node and update or patch it and its status; its own Lease in `kube-node-lease`; pods bound to it (get; list and watch with `spec.nodeName=NAME`; status; delete); create CSRs and get its own |
//! | `system:bootstrappers` (a join token) | create CSRs and get its own |
//! | every authenticated user | discovery, OpenAPI, `/version`, the health paths, and its own reviews (`auth can-i`, `auth whoami`) |
use super::User;

/// kube-apiserver's request attributes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    /// The plural (`pods`); empty for a non-resource request.
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// A non-resource request's path (`/apis`).
    pub path: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused, with the authorizer's reason (often none).
    Deny(String),
}

impl Decision {
    fn deny() -> Decision {
        Decision::Deny(String::new())
    }
}

pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

fn reads(verb: &str) -> bool {
    matches!(verb, "get" | "list" | "watch")
}

/// The paths every authenticated user may GET (kube-apiserver's `system:discovery`,
/// `system:public-info-viewer`).
fn public_path(path: &str) -> bool {
    [
        "/api", "/apis", "/openapi", "/version", "/healthz", "/livez", "/readyz",
    ]
    .iter()
    .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

pub fn decide(user: &User, a: &Attributes<'_>) -> Decision {
    if user.is_admin() {
        return Decision::Allow;
    }
    if let Some(path) = a.path {
        return if a.verb == "get" && public_path(path) {
            Decision::Allow
        } else {
            Decision::deny()
        };
    }
    // kube-apiserver's system:basic-user: every user may ask about itself
    if a.verb == "create"
        && matches!(
            (a.group, a.resource),
            ("authorization.k8s.io", "selfsubjectaccessreviews")
                | ("authentication.k8s.io", "selfsubjectreviews")
        )
    {
        return Decision::Allow;
    }
    // (the view role reads pods/log, not nodes/proxy: that reaches every pod of a node)
    let proxy = (a.resource, a.subresource) == ("nodes", "proxy");
    if user.is_viewer()
        && reads(a.verb)
        && !(a.group.is_empty() && a.resource == "secrets")
        && !proxy
    {
        return Decision::Allow;
    }
    if let Some(node) = user.node_name() {
        return node_rules(node, a);
    }
    if user.is_bootstrapper() {
        return csr_rules(a);
    }
    Decision::deny()
}

/// Creating CSRs and reading one's own (admission checks the requester on get).
fn csr_rules(a: &Attributes<'_>) -> Decision {
    if (a.group, a.resource, a.subresource)
        == ("certificates.k8s.io", "certificatesigningrequests", "")
        && matches!(a.verb, "create" | "get")
    {
        return Decision::Allow;
    }
    Decision::deny()
}

/// The Node authorizer, shaped by NodeRestriction's needs.
fn node_rules(node: &str, a: &Attributes<'_>) -> Decision {
    match (a.group, a.resource) {
        ("apps", "daemonsets" | "controllerrevisions") | ("", "namespaces")
            if reads(a.verb) && a.subresource.is_empty() =>
        {
            Decision::Allow
        }
        ("", "nodes") => match (a.subresource, a.verb) {
            ("", v) if reads(v) => Decision::Allow,
            // the name is the new object's: admission checks it
            ("", "create") => Decision::Allow,
            ("" | "status", "update" | "patch") if a.name == node => Decision::Allow,
            _ => Decision::deny(),
        },
        ("coordination.k8s.io", "leases") => {
            if !matches!(a.verb, "get" | "create" | "update" | "patch" | "delete") {
                return Decision::Deny(
                    "can only get, create, update, patch, or delete a node lease".into(),
                );
            }
            if a.namespace != NODE_LEASE_NAMESPACE {
                return Decision::Deny(format!(
                    "can only access leases in the \"{NODE_LEASE_NAMESPACE}\" system namespace"
                ));
            }
            if a.verb != "create" && a.name != node {
                return Decision::Deny(
                    "can only access node lease with the same name as the requesting node".into(),
                );
            }
            Decision::Allow
        }
        ("", "pods") => match (a.subresource, a.verb) {
            // get and delete: admission checks the pod is bound to the node; list and watch:
            // the selector is checked with the request (`pods_selection`)
            ("", "get" | "list" | "watch" | "delete") => Decision::Allow,
            // no create: the server's DaemonSet controller makes the pods; an agent writes their
            // status and does the final delete of its own (kubelet's status manager)
            ("status", "update" | "patch") => Decision::Allow,
            _ => Decision::deny(),
        },
        // the graph (`super::graph`) decides which: those the node's pods use
        ("", "secrets" | "configmaps" | "serviceaccounts")
            if a.verb == "get" && a.subresource.is_empty() =>
        {
            Decision::Allow
        }
        ("", "serviceaccounts") if a.verb == "create" && a.subresource == "token" => {
            Decision::Allow
        }
        ("certificates.k8s.io", "certificatesigningrequests") => csr_rules(a),
        // the kubelet's events (system:node's rule)
        ("", "events") if matches!(a.verb, "create" | "update" | "patch") => Decision::Allow,
        _ => Decision::deny(),
    }
}

/// The Node authorizer with selectors: a node lists and watches only the pods bound to it, named
/// by the request's field selector (`spec.nodeName=NAME`).
pub fn pods_selection(node: &str, field_selector: &str) -> Decision {
    let bound = field_selector.split(',').any(|req| {
        let req = req.trim();
        let (k, v) = req
            .split_once("==")
            .or_else(|| req.split_once('='))
            .unwrap_or(("", ""));
        k.trim() == "spec.nodeName" && !v.starts_with('=') && v.trim() == node
    });
    if bound {
        Decision::Allow
    } else {
        Decision::Deny("can only list/watch pods with spec.nodeName field selector".into())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AUTHENTICATED, BOOTSTRAPPERS, SYSTEM_MASTERS, SYSTEM_NODES, VIEWERS};
    use super::*;

    fn user(name: &str, group: &str) -> User {
        User {
            name: name.into(),
            groups: vec![group.into(), AUTHENTICATED.into()],
        }
    }

    fn res<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        ns: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            group,
            resource,
            namespace: ns,
            name,
            ..Default::default()
        }
    }

    #[test]
    fn each_identity_gets_its_rules() {
        let admin = user("system:admin", SYSTEM_MASTERS);
        let view = user("view:abcdef", VIEWERS);
        let node = user("system:node:a", SYSTEM_NODES);
        let boot = user("system:bootstrap:abcdef", BOOTSTRAPPERS);
        let nobody = user("someone", "some-group");
        let status = |verb, name| Attributes {
            subresource: "status",
            ..res(verb, "", "nodes", "", name)
        };
        let pod_status = Attributes {
            subresource: "status",
            ..res("patch", "", "pods", "default", "p")
        };
        let csr = "certificatesigningrequests";
        let certs = "certificates.k8s.io";
        // (user, attributes, allowed)
        let cases: Vec<(&User, Attributes, bool)> = vec![
            (
                &admin,
                res("delete", "", "secrets", "kube-system", "x"),
                true,
            ),
            (&view, res("list", "apps", "daemonsets", "", ""), true),
            (&view, res("watch", "", "pods", "default", ""), true),
            (&view, res("get", "", "secrets", "kube-system", "x"), false),
            (
                &view,
                res("create", "apps", "daemonsets", "default", ""),
                false,
            ),
            (&view, res("patch", "", "nodes", "", "a"), false),
            (&node, res("list", "apps", "daemonsets", "", ""), true),
            (
                &node,
                res("watch", "apps", "controllerrevisions", "", ""),
                true,
            ),
            (&node, res("get", "", "namespaces", "", "default"), true),
            (
                &node,
                res("create", "apps", "daemonsets", "default", ""),
                false,
            ),
            (
                &node,
                res("delete", "apps", "daemonsets", "default", "d"),
                false,
            ),
            (&node, res("patch", "", "nodes", "", "a"), true),
            (&node, res("patch", "", "nodes", "", "b"), false),
            (&node, status("update", "a"), true),
            (&node, status("patch", "b"), false),
            (&node, res("delete", "", "nodes", "", "a"), false),
            (
                &node,
                res(
                    "update",
                    "coordination.k8s.io",
                    "leases",
                    "kube-node-lease",
                    "a",
                ),
                true,
            ),
            (
                &node,
                res(
                    "update",
                    "coordination.k8s.io",
                    "leases",
                    "kube-node-lease",
                    "b",
                ),
                false,
            ),
            (
                &node,
                res("get", "coordination.k8s.io", "leases", "default", "a"),
                false,
            ),
            (
                &node,
                res(
                    "list",
                    "coordination.k8s.io",
                    "leases",
                    "kube-node-lease",
                    "",
                ),
                false,
            ),
            // the graph decides which (auth::graph)
            (&node, res("get", "", "secrets", "default", "s"), true),
            (&node, res("list", "", "secrets", "default", ""), false),
            (
                &node,
                res("update", "", "configmaps", "default", "c"),
                false,
            ),
            (&node, res("update", "", "pods", "default", "p"), false),
            (&node, res("create", "", "pods", "default", "p"), false),
            (&node, res("delete", "", "pods", "default", "p"), true),
            (
                &node,
                res("create", "apps", "daemonsets", "default", "d"),
                false,
            ),
            (
                &node,
                res("delete", "apps", "daemonsets", "default", "d"),
                false,
            ),
            (&node, pod_status, true),
            (&node, res("create", certs, csr, "", ""), true),
            (&node, res("list", certs, csr, "", ""), false),
            (&boot, res("create", certs, csr, "", ""), true),
            (&boot, res("get", certs, csr, "", "x"), true),
            (&boot, res("list", "", "nodes", "", ""), false),
            (&nobody, res("get", "", "pods", "default", "p"), false),
            (
                &nobody,
                res(
                    "create",
                    "authorization.k8s.io",
                    "selfsubjectaccessreviews",
                    "",
                    "",
                ),
                true,
            ),
        ];
        for (u, a, want) in cases {
            assert_eq!(decide(u, &a) == Decision::Allow, want, "{} {a:?}", u.name);
        }
        let path = |p| Attributes {
            verb: "get",
            path: Some(p),
            ..Default::default()
        };
        assert_eq!(decide(&nobody, &path("/apis/apps/v1")), Decision::Allow);
        assert_eq!(decide(&nobody, &path("/metrics")), Decision::deny());
        assert_eq!(decide(&admin, &path("/metrics")), Decision::Allow);
    }

    #[test]
    fn nodes_list_pods_only_with_their_own_field_selector() {
        // (selector, allowed)
        let cases = [
            ("spec.nodeName=a", true),
            ("spec.nodeName==a", true),
            ("status.phase=Running, spec.nodeName=a", true),
            ("spec.nodeName=b", false),
            ("spec.nodeName!=a", false),
            ("spec.nodeName=a2", false),
            ("", false),
        ];
        for (sel, want) in cases {
            assert_eq!(pods_selection("a", sel) == Decision::Allow, want, "{sel:?}");
        }
    }
}
