//! The rules that need the object (kube-apiserver's NodeRestriction admission plugin, and the
//! parts of the Node authorizer's graph this server answers from the object itself): a node
//! writes only its own Node, Lease and the pods bound to it, may not touch its labels under
//! `node-restriction.kubernetes.io/` nor remove or change a taint; nodes and bootstrappers read
//! only their own CSRs; and every CSR records who asked for it (the certificates strategy's
//! PrepareForCreate, which needs the user).
use serde_json::{json, Value};

use super::authz::Attributes;
use super::{forbidden, User, Verb};
use crate::server::kinds::{CERTIFICATE_SIGNING_REQUESTS, LEASES, NODES, PODS};
use crate::server::resources::Resource;
use crate::server::status::ApiError;
use crate::server::verbs::{ObjectRef, Part};

const RESTRICTED_LABELS: &str = "node-restriction.kubernetes.io";

fn is(r: &Resource, which: &Resource) -> bool {
    std::ptr::eq(r, which)
}

fn s<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// NodeRestriction's refusal: `pods "p" is forbidden: node "a" can only ...`.
fn refuse(r: &Resource, name: &str, reason: String) -> ApiError {
    ApiError::forbidden(r.group, r.plural, name, &reason)
}

/// A label the node may not set, change or remove.
fn restricted(key: &str) -> bool {
    key.split_once('/').is_some_and(|(prefix, _)| {
        prefix == RESTRICTED_LABELS || prefix.ends_with(&format!(".{RESTRICTED_LABELS}"))
    })
}

fn restricted_changes(new: &Value, old: Option<&Value>) -> Vec<String> {
    let labels = |o: Option<&Value>| {
        o.and_then(|o| o.pointer("/metadata/labels"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let (a, b) = (labels(Some(new)), labels(old));
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| restricted(k) && a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn taint_text(t: &Value) -> String {
    match t
        .get("value")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
    {
        Some(v) => format!("{}={v}:{}", s(t, "/key"), s(t, "/effect")),
        None => format!("{}:{}", s(t, "/key"), s(t, "/effect")),
    }
}

/// The taints of `old` that `new` lacks or changed (a node may add taints, never lift one the
/// server or an admin set: that would steer workloads to it).
fn removed_taints(new: &Value, old: &Value) -> Vec<String> {
    let taints = |o: &Value| {
        o.pointer("/spec/taints")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let kept = taints(new);
    let same = |a: &Value, b: &Value| {
        ["key", "value", "effect"].iter().all(|f| {
            a.get(*f).and_then(Value::as_str).unwrap_or("")
                == b.get(*f).and_then(Value::as_str).unwrap_or("")
        })
    };
    taints(old)
        .iter()
        .filter(|t| !kept.iter().any(|k| same(k, t)))
        .map(taint_text)
        .collect()
}

/// A create: records the requester of a CSR; keeps a node to its own Node, Lease and pods.
pub fn on_create(
    user: &User,
    r: &'static Resource,
    name: &str,
    obj: &mut Value,
) -> Result<(), ApiError> {
    if is(r, &CERTIFICATE_SIGNING_REQUESTS) {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("username".into(), json!(user.name));
            spec.insert("groups".into(), json!(user.groups));
            spec.remove("uid");
            spec.remove("extra");
        }
        return Ok(());
    }
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    if is(r, &NODES) {
        if name != node {
            return Err(refuse(
                r,
                name,
                format!("node \"{node}\" is not allowed to modify node \"{name}\""),
            ));
        }
        let labels = restricted_changes(obj, None);
        if !labels.is_empty() {
            return Err(refuse(
                r,
                name,
                format!(
                    "node \"{node}\" is not allowed to set the following labels: {}",
                    labels.join(", ")
                ),
            ));
        }
    } else if is(r, &LEASES) && name != node {
        return Err(refuse(
            r,
            name,
            "can only access node lease with the same name as the requesting node".into(),
        ));
    } else if is(r, &PODS) && s(obj, "/spec/nodeName") != node {
        return Err(refuse(
            r,
            name,
            format!("node \"{node}\" can only create pods with spec.nodeName set to itself"),
        ));
    }
    Ok(())
}

/// What the rule of a read of `at` by `user` needs of the object: None when it needs nothing.
fn read_rule(user: &User, r: &Resource) -> Option<ReadRule> {
    if is(r, &PODS) {
        user.node_name().map(|n| ReadRule::BoundTo(n.to_string()))
    } else if is(r, &CERTIFICATE_SIGNING_REQUESTS)
        && (user.node_name().is_some() || user.is_bootstrapper())
    {
        Some(ReadRule::RequestedBy(user.name.clone()))
    } else {
        None
    }
}

enum ReadRule {
    BoundTo(String),
    RequestedBy(String),
}

/// A get of one object (`obj`: None when it does not exist): a node reads only the pods bound to
/// it, a node or bootstrapper only its own CSRs. Refused with the authorizer's 403 either way, so
/// a refused reader learns nothing, not even whether the object exists.
pub fn on_read(user: &User, at: ObjectRef<'_>, obj: Option<&Value>) -> Result<(), ApiError> {
    let Some(rule) = read_rule(user, at.r) else {
        return Ok(());
    };
    let (ok, reason) = match &rule {
        ReadRule::BoundTo(node) => (
            obj.is_some_and(|o| s(o, "/spec/nodeName") == node),
            format!("no relationship found between node '{node}' and this object"),
        ),
        ReadRule::RequestedBy(name) => (
            obj.is_some_and(|o| s(o, "/spec/username") == name),
            "can only read its own certificate signing requests".to_string(),
        ),
    };
    if ok {
        return Ok(());
    }
    let a = Attributes {
        verb: Verb::Get.as_str(),
        group: at.r.group,
        resource: at.r.plural,
        namespace: at.ns.unwrap_or(""),
        name: at.name,
        ..Default::default()
    };
    Err(forbidden(user, &a, &reason))
}

/// An update or patch of `part` from `old` to `new`.
pub fn on_write(
    user: &User,
    at: ObjectRef<'_>,
    part: Part,
    old: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    let r = at.r;
    if is(r, &NODES) && part == Part::Main {
        let labels = restricted_changes(new, Some(old));
        if !labels.is_empty() {
            return Err(refuse(
                r,
                at.name,
                format!(
                    "node \"{node}\" is not allowed to modify labels: {}",
                    labels.join(", ")
                ),
            ));
        }
        let taints = removed_taints(new, old);
        if !taints.is_empty() {
            return Err(refuse(
                r,
                at.name,
                format!(
                    "node \"{node}\" is not allowed to remove or modify taints: {}",
                    taints.join(", ")
                ),
            ));
        }
    } else if is(r, &PODS) && s(old, "/spec/nodeName") != node {
        return Err(refuse(r, at.name, format!("node \"{node}\" can only update pod status for pods with spec.nodeName set to itself")));
    }
    Ok(())
}

/// A delete of `obj`: a node deletes only the pods bound to it.
pub fn on_delete(user: &User, at: ObjectRef<'_>, obj: &Value) -> Result<(), ApiError> {
    match user.node_name() {
        Some(node) if is(at.r, &PODS) && s(obj, "/spec/nodeName") != node => Err(refuse(
            at.r,
            at.name,
            format!("node \"{node}\" can only delete pods with spec.nodeName set to itself"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AUTHENTICATED, SYSTEM_MASTERS, SYSTEM_NODES};
    use super::*;

    fn node_a() -> User {
        User {
            name: "system:node:a".into(),
            groups: vec![SYSTEM_NODES.into(), AUTHENTICATED.into()],
        }
    }

    fn admin() -> User {
        User {
            name: "system:admin".into(),
            groups: vec![SYSTEM_MASTERS.into()],
        }
    }

    #[test]
    fn node_restriction_on_the_nodes_own_object() {
        let node = |labels: Value, taints: Value| json!({"metadata": {"name": "a", "labels": labels}, "spec": {"taints": taints}});
        let old = node(
            json!({"node-restriction.kubernetes.io/pool": "gpu", "zone": "1"}),
            json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]),
        );
        let at = ObjectRef::new(&NODES, None, "a");
        // (new, allowed, message part)
        let cases = [
            (node(json!({"node-restriction.kubernetes.io/pool": "gpu", "zone": "2"}), old["spec"]["taints"].clone()), Ok(())),
            (node(json!({"zone": "1"}), old["spec"]["taints"].clone()), Err("not allowed to modify labels: node-restriction.kubernetes.io/pool")),
            (node(json!({"node-restriction.kubernetes.io/pool": "cpu", "x.node-restriction.kubernetes.io/y": "1"}), old["spec"]["taints"].clone()), Err("modify labels: node-restriction.kubernetes.io/pool, x.node-restriction.kubernetes.io/y")),
            (node(old["metadata"]["labels"].clone(), json!([])), Err("not allowed to remove or modify taints: node.kubernetes.io/unreachable:NoExecute")),
            (node(old["metadata"]["labels"].clone(), json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}, {"key": "own", "value": "x", "effect": "NoSchedule"}])), Ok(())),
        ];
        for (new, want) in cases {
            let got = on_write(&node_a(), at, Part::Main, &old, &new).map_err(|e| e.message);
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err(m), Err(part)) => {
                    assert!(
                        m.starts_with("nodes \"a\" is forbidden: node \"a\" is not allowed"),
                        "{m}"
                    );
                    assert!(m.contains(part), "{m} lacks {part}");
                }
                (got, want) => panic!("{new}: {got:?}, want {want:?}"),
            }
            assert!(
                on_write(&admin(), at, Part::Main, &old, &new).is_ok(),
                "admins are not restricted"
            );
            assert!(
                on_write(&node_a(), at, Part::Status, &old, &new).is_ok(),
                "status writes keep labels and taints"
            );
        }
        let mut other = node(json!({}), json!([]));
        let e = on_create(&node_a(), &NODES, "b", &mut other).unwrap_err();
        assert_eq!(
            e.message,
            "nodes \"b\" is forbidden: node \"a\" is not allowed to modify node \"b\""
        );
        let mut labelled = node(
            json!({"node-restriction.kubernetes.io/pool": "gpu"}),
            json!([]),
        );
        assert_eq!(
            on_create(&node_a(), &NODES, "a", &mut labelled)
                .unwrap_err()
                .code,
            403
        );
    }

    #[test]
    fn nodes_touch_only_the_pods_bound_to_them() {
        let pod = |node: &str| json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"nodeName": node}});
        let at = ObjectRef::new(&PODS, Some("default"), "p");
        assert!(on_read(&node_a(), at, Some(&pod("a"))).is_ok());
        let e = on_read(&node_a(), at, Some(&pod("b"))).unwrap_err();
        assert_eq!(e.message, "pods \"p\" is forbidden: User \"system:node:a\" cannot get resource \"pods\" in API group \"\" in the namespace \"default\": no relationship found between node 'a' and this object");
        assert_eq!(
            on_read(&node_a(), at, None).unwrap_err().code,
            403,
            "not even whether it exists"
        );
        assert!(on_read(&admin(), at, None).is_ok());
        assert!(on_write(&node_a(), at, Part::Status, &pod("a"), &pod("a")).is_ok());
        assert_eq!(
            on_write(&node_a(), at, Part::Status, &pod("b"), &pod("a"))
                .unwrap_err()
                .code,
            403
        );
        assert!(on_delete(&node_a(), at, &pod("a")).is_ok());
        assert_eq!(on_delete(&node_a(), at, &pod("b")).unwrap_err().code, 403);
        assert!(on_create(&node_a(), &PODS, "p", &mut pod("a")).is_ok());
        assert_eq!(
            on_create(&node_a(), &PODS, "p", &mut pod("b"))
                .unwrap_err()
                .code,
            403
        );
    }

    #[test]
    fn a_csr_records_its_requester_whatever_it_claims() {
        let mut csr = json!({"spec": {"username": "system:admin", "groups": ["system:masters"], "extra": {"x": ["y"]}, "request": "..."}});
        on_create(&node_a(), &CERTIFICATE_SIGNING_REQUESTS, "c", &mut csr).unwrap();
        assert_eq!(csr["spec"]["username"], "system:node:a");
        assert_eq!(csr["spec"]["groups"], json!([SYSTEM_NODES, AUTHENTICATED]));
        assert!(csr["spec"].get("extra").is_none());
        let at = ObjectRef::new(&CERTIFICATE_SIGNING_REQUESTS, None, "c");
        assert!(on_read(&node_a(), at, Some(&csr)).is_ok());
        let mut theirs = csr.clone();
        theirs["spec"]["username"] = json!("system:node:b");
        assert_eq!(on_read(&node_a(), at, Some(&theirs)).unwrap_err().code, 403);
    }
}
