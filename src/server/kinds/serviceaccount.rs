//! v1 ServiceAccounts: the identity pods run as. Every namespace has a `default` one, made by the
//! server's service-account controller (`controllers::serviceaccounts`), as
//! kube-controller-manager's does; its `imagePullSecrets` are the pulls of pods that name it and
//! its `automountServiceAccountToken` their token's default. Its `token` subresource is the
//! TokenRequest API (authentication.k8s.io/v1): a signed token for the ServiceAccount, bound to a
//! Pod, Secret or Node when asked (`auth::serviceaccount`).
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use http::{Method, Response};
use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::{json, Value};

use crate::core::names;
use crate::core::validation::{validate_object_meta, FieldError};
use crate::server::auth::serviceaccount::{Binding, Ref};
use crate::server::auth::{self, User, Verb};
use crate::server::body::{json_response, Body};
use crate::server::resources::{Resource, ALL_VERBS};
use crate::server::router::RestRequest;
use crate::server::status::ApiError;
use crate::server::strategy::{Column, Kind};
use crate::server::subresource::{Subresource, SubresourceRest};
use crate::server::table::{age, name};
use crate::server::verbs::{Api, ObjectRef};

pub static SERVICE_ACCOUNTS: Resource = Resource {
    group: "",
    version: "v1",
    plural: "serviceaccounts",
    singular: "serviceaccount",
    kind: "ServiceAccount",
    namespaced: true,
    short_names: &["sa"],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[&TOKEN],
    strategy: &ServiceAccountStrategy,
};

/// The ServiceAccount of a pod that names none, made in every namespace.
pub use crate::core::podrefs::DEFAULT_SERVICE_ACCOUNT;

struct ServiceAccountStrategy;

const COLUMNS: &[Column] = &[Column::NAME, Column::integer("Secrets", 0), Column::AGE];

#[async_trait]
impl Kind for ServiceAccountStrategy {
    type Object = ServiceAccount;

    fn validate(&self, sa: &ServiceAccount) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&sa.metadata, true, names::is_dns1123_subdomain);
        for (i, s) in sa.image_pull_secrets.iter().flatten().enumerate() {
            if s.name.is_empty() {
                errs.push(FieldError::required(
                    &format!("imagePullSecrets[{i}].name"),
                    "",
                ));
            }
        }
        errs
    }
    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let secrets = obj
            .get("secrets")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        vec![name(obj), json!(secrets), json!(age(obj, now))]
    }
}

/// `serviceaccounts/NAME/token`: a POSTed TokenRequest answered with a signed token
/// (kube-apiserver's TokenREST).
pub static TOKEN: Subresource = Subresource {
    name: "token",
    kind: Some("TokenRequest"),
    group_version: Some(("authentication.k8s.io", "v1")),
    verbs: &["create"],
    rest: &TokenRest,
};

/// A TokenRequest's `expirationSeconds` when it names none, and the least it may name.
pub const DEFAULT_TOKEN_SECONDS: i64 = 3600;
const MIN_TOKEN_SECONDS: i64 = 600;

struct TokenRest;

fn uid_of(obj: &Value) -> &str {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The TokenRequest's spec checked and defaulted: (audiences, expirationSeconds).
fn token_spec(req: &Value, default_audiences: &[String]) -> Result<(Vec<String>, i64), ApiError> {
    let spec = &req["spec"];
    let mut audiences: Vec<String> = spec["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences = default_audiences.to_vec();
    }
    let seconds = spec["expirationSeconds"]
        .as_i64()
        .unwrap_or(DEFAULT_TOKEN_SECONDS);
    let invalid = |why: &str| {
        ApiError::invalid(
            "TokenRequest",
            "",
            &[FieldError::invalid(
                "spec.expirationSeconds",
                &seconds.to_string(),
                why,
            )],
        )
    };
    if seconds < MIN_TOKEN_SECONDS {
        return Err(invalid("may not specify a duration less than 10 minutes"));
    }
    if seconds > 1 << 32 {
        return Err(invalid(
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    Ok((audiences, seconds))
}

#[async_trait]
impl SubresourceRest for TokenRest {
    async fn serve(
        &self,
        api: Arc<Api>,
        at: ObjectRef<'_>,
        req: RestRequest,
    ) -> Result<Response<Body>, ApiError> {
        if req.method != Method::POST {
            return Err(ApiError::method_not_allowed(req.method.as_str()));
        }
        let user = req.user.clone();
        let ns = at.ns.unwrap_or("");
        auth::authorize(
            &user,
            Verb::Create,
            &SERVICE_ACCOUNTS,
            Some("token"),
            at.ns,
            Some(at.name),
        )?;
        let issuer = api
            .service_accounts
            .get()
            .cloned()
            .ok_or_else(|| ApiError::internal("the server issues no service account tokens"))?;
        let mut tr = req.object().await?;
        let (audiences, mut seconds) = token_spec(&tr, &issuer.audiences)?;
        if let Some(max) = issuer.max_seconds.filter(|m| *m > 0) {
            seconds = seconds.min(max);
        }
        let internal = User::internal("tokenrequest");
        let sa = api.get(&internal, at).await?;
        let mut b = Binding {
            namespace: ns.to_string(),
            service_account: Ref {
                name: at.name.to_string(),
                uid: uid_of(&sa).to_string(),
            },
            ..Binding::default()
        };
        let bound = tr
            .pointer("/spec/boundObjectRef")
            .filter(|r| r.is_object())
            .cloned();
        let mut pod_node = None;
        if let Some(r) = &bound {
            let kind = r["kind"].as_str().unwrap_or("");
            let name = r["name"].as_str().unwrap_or("");
            let want_uid = r["uid"].as_str().unwrap_or("");
            let (res, obj_ns): (&'static Resource, Option<&str>) = match kind {
                "Pod" => (&super::PODS, Some(ns)),
                "Secret" => (&super::SECRETS, Some(ns)),
                "Node" => (&super::NODES, None),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token to object of type {other}"
                    )))
                }
            };
            let obj = api
                .get(&internal, ObjectRef::new(res, obj_ns, name))
                .await?;
            if !want_uid.is_empty() && want_uid != uid_of(&obj) {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!("Operation cannot be fulfilled on {kind} \"{name}\": the UID in the bound object reference ({want_uid}) does not match the UID in record. The object might have been deleted and then recreated"),
                ));
            }
            let r = Ref {
                name: name.to_string(),
                uid: uid_of(&obj).to_string(),
            };
            match kind {
                "Pod" => {
                    let pod_sa = obj
                        .pointer("/spec/serviceAccountName")
                        .and_then(Value::as_str)
                        .unwrap_or(DEFAULT_SERVICE_ACCOUNT);
                    if pod_sa != at.name {
                        return Err(ApiError::bad_request(format!(
                            "cannot bind token for serviceaccount \"{}\" to pod running with different serviceaccount name.",
                            at.name
                        )));
                    }
                    pod_node = obj
                        .pointer("/spec/nodeName")
                        .and_then(Value::as_str)
                        .filter(|n| !n.is_empty())
                        .map(str::to_string);
                    b.pod = Some(r);
                }
                "Secret" => b.secret = Some(r),
                _ => b.node = Some(r),
            }
        }
        // NodeRestriction: a node asks only for tokens of the pods bound to it
        if let Some(node) = user.node_name() {
            let why = match (&b.pod, &pod_node, &bound) {
                (None, _, _) => Some("node requested token not bound to a pod"),
                (Some(_), _, Some(r)) if r["uid"].as_str().unwrap_or("").is_empty() => {
                    Some("node requested token with a pod binding without a uid")
                }
                (Some(_), n, _) if n.as_deref() != Some(node) => {
                    Some("node requested token bound to a pod scheduled on a different node")
                }
                _ => None,
            };
            if let Some(why) = why {
                return Err(ApiError::forbidden("", "serviceaccounts", at.name, why));
            }
        }
        // a pod-bound token names the pod's node too
        if let (Some(node), None) = (&pod_node, &b.node) {
            if let Ok(n) = api
                .get(&internal, ObjectRef::new(&super::NODES, None, node))
                .await
            {
                b.node = Some(Ref {
                    name: node.clone(),
                    uid: uid_of(&n).to_string(),
                });
            }
        }
        let now = Utc::now();
        let token = issuer
            .issue(&b, &audiences, now, seconds)
            .map_err(|e| ApiError::internal(format!("signing the token: {e}")))?;
        let expires = now + chrono::Duration::seconds(seconds);
        tr["apiVersion"] = json!("authentication.k8s.io/v1");
        tr["kind"] = json!("TokenRequest");
        if !tr["metadata"].is_object() {
            tr["metadata"] = json!({});
        }
        tr["metadata"]["name"] = json!(at.name);
        tr["metadata"]["namespace"] = json!(ns);
        tr["metadata"]["creationTimestamp"] = Value::Null;
        tr["spec"]["audiences"] = json!(audiences);
        tr["spec"]["expirationSeconds"] = json!(seconds);
        if let (Some(r), Some(obj)) = (
            &bound,
            b.pod.as_ref().or(b.secret.as_ref()).or(b.node.as_ref()),
        ) {
            let mut r = r.clone();
            r["uid"] = json!(obj.uid);
            tr["spec"]["boundObjectRef"] = r;
        }
        tr["status"] = json!({
            "token": token,
            "expirationTimestamp": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        tracing::info!(
            serviceaccount = at.name,
            namespace = ns,
            user = user.name.as_str(),
            seconds,
            "issued a service account token"
        );
        Ok(json_response(201, &tr))
    }
}

/// The prefix of the token volume the admission adds (`kube-api-access-xxxxx`).
pub const API_ACCESS_VOLUME: &str = "kube-api-access";
/// The ConfigMap of the cluster CA in every namespace (kube-controller-manager's
/// root-ca-cert-publisher).
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
pub const ROOT_CA_KEY: &str = "ca.crt";
/// Where every container mounts the token volume.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The token volume's `expirationSeconds` (upstream's: a token that outlives an hour by 7 s, so
/// its issuer can tell an automounted token).
pub const AUTOMOUNT_TOKEN_SECONDS: i64 = 3607;
const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The projected volume upstream's admission adds: the token, the CA, the namespace.
fn api_access_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": AUTOMOUNT_TOKEN_SECONDS, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIG_MAP, "items": [{"key": ROOT_CA_KEY, "path": ROOT_CA_KEY}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
            "defaultMode": 0o644,
        },
    })
}

/// The ServiceAccount admission plugin on a new pod, given its ServiceAccount `sa` (pure):
/// the token volume mounted read-only at [`TOKEN_MOUNT_PATH`] in every (init) container that
/// has nothing mounted there, when the pod's (else the ServiceAccount's)
/// `automountServiceAccountToken` is not false; the ServiceAccount's `imagePullSecrets` when
/// the pod names none. `suffix` names a new volume.
pub fn admit_pod(pod: &mut Value, sa: &Value, suffix: &str) {
    let automount = pod
        .pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| sa["automountServiceAccountToken"].as_bool())
        .unwrap_or(true);
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if automount {
        let existing = spec
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
            .find(|n| n.starts_with(&format!("{API_ACCESS_VOLUME}-")))
            .map(str::to_string);
        let name = existing
            .clone()
            .unwrap_or_else(|| format!("{API_ACCESS_VOLUME}-{suffix}"));
        let mount = json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
        let mut needed = false;
        for list in ["initContainers", "containers"] {
            for c in spec
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let mounts = c
                    .as_object_mut()
                    .map(|c| c.entry("volumeMounts").or_insert_with(|| json!([])));
                let Some(mounts) = mounts.and_then(Value::as_array_mut) else {
                    continue;
                };
                if !mounts.iter().any(|m| m["mountPath"] == TOKEN_MOUNT_PATH) {
                    mounts.push(mount.clone());
                    needed = true;
                }
            }
        }
        if needed && existing.is_none() {
            let vols = spec.entry("volumes").or_insert_with(|| json!([]));
            if let Some(vols) = vols.as_array_mut() {
                vols.push(api_access_volume(&name));
            }
        }
    }
    let has_pull_secrets = spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let sa_pull: Vec<Value> = sa["imagePullSecrets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .map(|n| json!({"name": n}))
        .collect();
    if !has_pull_secrets && !sa_pull.is_empty() {
        spec.insert("imagePullSecrets".into(), Value::Array(sa_pull));
    }
}

/// How long a new pod's create waits for its ServiceAccount to appear (the `default` one of a
/// new namespace is made by a controller, just after the namespace).
const SA_LOOKUP_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The ServiceAccount admission of a pod being created in `ns`: `spec.serviceAccountName`
/// defaulted to `default`, which must exist (403 as upstream's otherwise), then [`admit_pod`].
/// Mirror pods are left alone; a server that issues no tokens (an `Api` without an issuer, as in
/// unit tests) runs without the plugin, as kube-apiserver can.
pub async fn admit_new_pod(api: &Api, ns: &str, pod: &mut Value) -> Result<(), ApiError> {
    if api.service_accounts.get().is_none() {
        return Ok(());
    }
    if pod
        .pointer(&format!(
            "/metadata/annotations/{}",
            MIRROR_POD_ANNOTATION.replace('/', "~1")
        ))
        .is_some()
    {
        return Ok(());
    }
    let named = |field: &str| {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    // (the deprecated `serviceAccount` names it when `serviceAccountName` does not)
    let sa_name = named("serviceAccountName")
        .or_else(|| named("serviceAccount"))
        .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_string());
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("serviceAccountName".into(), json!(sa_name));
        // the deprecated alias follows the name
        spec.insert("serviceAccount".into(), json!(sa_name));
    }
    let key = SERVICE_ACCOUNTS.key();
    let mut changes = api.store.changes();
    let deadline = tokio::time::Instant::now() + SA_LOOKUP_WAIT;
    let sa = loop {
        let found = api
            .store
            .get(&key, ns, &sa_name)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if let Some(sa) = found {
            break sa;
        }
        let changed = tokio::time::timeout_at(deadline, changes.changed()).await;
        if !matches!(changed, Ok(Ok(()))) {
            let name = pod
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(ApiError::forbidden(
                "",
                "pods",
                name,
                &format!("error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found"),
            ));
        }
    };
    admit_pod(pod, &sa, &crate::server::meta::random_suffix());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::query::FieldValidation;
    use crate::server::strategy::Prepare;

    #[test]
    fn automount_adds_the_api_access_volume_and_pull_secrets() {
        let pod = |spec: Value| json!({"metadata": {"name": "p"}, "spec": spec});
        let mount = json!({"name": "kube-api-access-abcde", "readOnly": true,
            "mountPath": TOKEN_MOUNT_PATH});
        let sa = json!({"imagePullSecrets": [{"name": "reg"}]});
        // a pod of two containers, one init container, one of which mounts the path itself
        let mut p = pod(json!({
            "initContainers": [{"name": "i"}],
            "containers": [{"name": "a"}, {"name": "b",
                "volumeMounts": [{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]}]}));
        admit_pod(&mut p, &sa, "abcde");
        assert_eq!(
            p["spec"]["initContainers"][0]["volumeMounts"],
            json!([mount])
        );
        assert_eq!(p["spec"]["containers"][0]["volumeMounts"], json!([mount]));
        assert_eq!(
            p["spec"]["containers"][1]["volumeMounts"],
            json!([{"name": "own", "mountPath": TOKEN_MOUNT_PATH}])
        );
        assert_eq!(
            p["spec"]["volumes"],
            json!([api_access_volume("kube-api-access-abcde")])
        );
        let sources = &p["spec"]["volumes"][0]["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(
            sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        assert_eq!(p["spec"]["imagePullSecrets"], json!([{"name": "reg"}]));
        // admitted twice (an update, a re-create of the same spec): the volume is not added again
        let again = p.clone();
        admit_pod(&mut p, &sa, "zzzzz");
        assert_eq!(p, again);
        // the pod's own false, or the ServiceAccount's false unless the pod says true
        let plain = json!({"containers": [{"name": "a"}]});
        let cases = [
            (json!(null), json!(null), true),
            (json!(false), json!(null), false),
            (json!(null), json!(false), false),
            (json!(true), json!(false), true),
        ];
        for (on_pod, on_sa, mounted) in cases {
            let mut spec = plain.clone();
            if !on_pod.is_null() {
                spec["automountServiceAccountToken"] = on_pod.clone();
            }
            let mut p = pod(spec);
            admit_pod(
                &mut p,
                &json!({"automountServiceAccountToken": on_sa}),
                "abcde",
            );
            assert_eq!(p["spec"]["volumes"].is_array(), mounted, "{on_pod} {on_sa}");
        }
        // the pod's own pull secrets win
        let mut p = pod(json!({"containers": [], "imagePullSecrets": [{"name": "mine"}]}));
        admit_pod(&mut p, &sa, "abcde");
        assert_eq!(p["spec"]["imagePullSecrets"], json!([{"name": "mine"}]));
    }

    #[test]
    fn token_requests_are_defaulted_and_bounded() {
        let aud = vec![crate::server::auth::serviceaccount::ISSUER.to_string()];
        let (a, s) = token_spec(&json!({"spec": {}}), &aud).unwrap();
        assert_eq!((a, s), (aud.clone(), 3600));
        let (a, s) = token_spec(
            &json!({"spec": {"audiences": ["vault"], "expirationSeconds": 600}}),
            &aud,
        )
        .unwrap();
        assert_eq!((a, s), (vec!["vault".to_string()], 600));
        let e = token_spec(&json!({"spec": {"expirationSeconds": 599}}), &aud).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.contains("less than 10 minutes"), "{}", e.message);
    }

    #[test]
    fn names_and_pull_secrets_are_validated() {
        let cases = [
            (
                json!({"metadata": {"name": "sa", "namespace": "d"}, "imagePullSecrets": [{"name": "r"}]}),
                true,
            ),
            (
                json!({"metadata": {"name": "Bad_Name", "namespace": "d"}}),
                false,
            ),
            (
                json!({"metadata": {"name": "sa", "namespace": "d"}, "imagePullSecrets": [{}]}),
                false,
            ),
        ];
        for (obj, ok) in cases {
            let got = SERVICE_ACCOUNTS.strategy.prepare(
                &obj,
                Prepare {
                    resource: &SERVICE_ACCOUNTS,
                    old: None,
                    validation: FieldValidation::Strict,
                    policy: None,
                },
            );
            assert_eq!(got.is_ok(), ok, "{obj}");
        }
    }
}
