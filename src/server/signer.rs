//! The CSR approver and signer (kube-controller-manager's `csrapproving` and `csrsigning` for the
//! `kubernetes.io/kube-apiserver-client-kubelet` signer), one task inside the server:
//!
//! - a request for `CN=system:node:NAME, O=system:nodes` (nothing else in it, client auth usages)
//!   is approved and signed when its requester was a join token (`system:bootstrappers`: a node
//!   joining) and NAME has no live certificate yet, or when the requester is `system:node:NAME`
//!   itself (a renewal); otherwise it is denied with the reason. Requests to other signers are
//!   left pending.
//! - the certificate is signed by the server's CA for `spec.expirationSeconds` (a year by
//!   default, never past the CA), and names its CSR as its record (`pki::RECORD_URI`):
//!   authentication refuses it once that CSR is deleted.
//! - `kubernetes.io/kubelet-serving` (the node API's serving certificate, `agent::nodeapi`): a
//!   request for `CN=system:node:NAME, O=system:nodes` with DNS names and IP addresses only and
//!   server auth usages is approved, as k3s does, for the requesting node's own name only
//!   (requester `system:node:NAME`), or when an admin (`system:masters`, e.g. an agent on the
//!   admin kubeconfig) sends it, who could approve it anyway; signed by the CA without a record.
//! - CSRs whose certificate expired, denied ones after an hour and pending ones after a day are
//!   deleted, as kube-controller-manager's `csrcleaner` does.
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::auth::{issued_certificate, User, BOOTSTRAPPERS, NODE_USER_PREFIX, SYSTEM_NODES};
use super::kinds::csr::request;
use super::kinds::CERTIFICATE_SIGNING_REQUESTS as CSRS;
use super::query::{Filter, WriteOpts};
use super::status::ApiError;
use super::store::{EventType, WatchFrom};
use super::verbs::{Api, DeleteOptions, ObjectRef, Part};
use crate::core::names;
use crate::pki::{Ca, CertInfo};

pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// A node certificate's life when the request does not say (kube-controller-manager's
/// `--cluster-signing-duration`).
pub const DEFAULT_SECONDS: i64 = 365 * 86_400;
const CLEANUP_EVERY: Duration = Duration::from_secs(600);

/// What the approver decides about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Sign it for the node of this name.
    Approve(String),
    Deny(String),
    /// Not ours to decide (another signer, or decided already).
    Ignore,
}

fn strs(v: &Value, pointer: &str) -> Vec<String> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn decided(csr: &Value) -> bool {
    csr.pointer("/status/certificate")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty())
        || csr
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty())
}

/// The approver's decision on `csr`, given the live node certificates (node name, record name).
pub fn verdict(csr: &Value, live: &[(String, String)]) -> Verdict {
    if decided(csr) {
        return Verdict::Ignore;
    }
    match csr.pointer("/spec/signerName").and_then(Value::as_str) {
        Some(KUBELET_CLIENT_SIGNER) => {}
        Some(KUBELET_SERVING_SIGNER) => return serving_verdict(csr),
        _ => return Verdict::Ignore,
    }
    let Some(req) = request(csr) else {
        return Verdict::Deny("the request is not a signed certificate request".into());
    };
    let Some(node) = req
        .common_name
        .strip_prefix(NODE_USER_PREFIX)
        .map(str::to_string)
    else {
        return Verdict::Deny(format!(
            "subject CN {:?} is not system:node:NAME",
            req.common_name
        ));
    };
    if !names::is_dns1123_subdomain(&node).is_empty() {
        return Verdict::Deny(format!("{node:?} is not a valid node name"));
    }
    if !req.subject_is(&req.common_name, SYSTEM_NODES) || req.has_extensions {
        return Verdict::Deny(format!(
            "a node's request holds CN=system:node:NAME and O={SYSTEM_NODES} and nothing else"
        ));
    }
    let usages = strs(csr, "/spec/usages");
    let allowed = ["digital signature", "key encipherment", "client auth"];
    if !usages.iter().any(|u| u == "client auth")
        || usages.iter().any(|u| !allowed.contains(&u.as_str()))
    {
        return Verdict::Deny(format!(
            "usages must be client auth (with digital signature, key encipherment), not {usages:?}"
        ));
    }
    let requester = csr
        .pointer("/spec/username")
        .and_then(Value::as_str)
        .unwrap_or("");
    let groups = strs(csr, "/spec/groups");
    if requester == req.common_name {
        return Verdict::Approve(node);
    }
    if groups.iter().any(|g| g == BOOTSTRAPPERS) {
        let own = csr
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Some((_, record)) = live.iter().find(|(n, r)| *n == node && r != own) {
            return Verdict::Deny(format!(
                "node {node:?} already has a certificate (record {record}): a join token cannot take it over; revoke it first with `daemonset-agent node revoke {node}` or `kubectl delete csr {record}`"
            ));
        }
        return Verdict::Approve(node);
    }
    Verdict::Deny(format!("only node {node:?} itself or a join token may request system:node:{node}; {requester:?} may not"))
}

/// The approver of `kubernetes.io/kubelet-serving`: a node's own serving certificate.
fn serving_verdict(csr: &Value) -> Verdict {
    let Some(req) = request(csr) else {
        return Verdict::Deny("the request is not a signed certificate request".into());
    };
    let Some(node) = req.common_name.strip_prefix(NODE_USER_PREFIX) else {
        return Verdict::Deny(format!(
            "subject CN {:?} is not system:node:NAME",
            req.common_name
        ));
    };
    if !names::is_dns1123_subdomain(node).is_empty()
        || !req.subject_is(&req.common_name, SYSTEM_NODES)
        || req.other_names
        || req.names.is_empty()
    {
        return Verdict::Deny(format!(
            "a serving request holds CN=system:node:NAME, O={SYSTEM_NODES} and DNS names or IP addresses only"
        ));
    }
    let usages = strs(csr, "/spec/usages");
    let allowed = ["digital signature", "key encipherment", "server auth"];
    if !usages.iter().any(|u| u == "server auth")
        || usages.iter().any(|u| !allowed.contains(&u.as_str()))
    {
        return Verdict::Deny(format!(
            "usages must be server auth (with digital signature, key encipherment), not {usages:?}"
        ));
    }
    let requester = csr
        .pointer("/spec/username")
        .and_then(Value::as_str)
        .unwrap_or("");
    let admin = strs(csr, "/spec/groups")
        .iter()
        .any(|g| g == super::auth::SYSTEM_MASTERS);
    if requester == req.common_name || admin {
        return Verdict::Approve(node.to_string());
    }
    Verdict::Deny(format!(
        "only node {node:?} itself may request a serving certificate for system:node:{node}; {requester:?} may not"
    ))
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The node client certificates whose records are there and which have not expired.
fn live_certificates(csrs: &[Arc<Value>], now: i64) -> Vec<(String, String)> {
    csrs.iter()
        .filter(|c| {
            c.pointer("/spec/signerName").and_then(Value::as_str) == Some(KUBELET_CLIENT_SIGNER)
        })
        .filter_map(|c| {
            let der = issued_certificate(c)?;
            let info = CertInfo::parse(&der).ok()?;
            let node = info.common_name.strip_prefix(NODE_USER_PREFIX)?.to_string();
            let record = c.pointer("/metadata/name")?.as_str()?.to_string();
            (info.not_after > now).then_some((node, record))
        })
        .collect()
}

/// The signer: approves and signs pending requests, cleans up old ones, until `stop`.
pub struct Signer {
    api: Arc<Api>,
    ca: Arc<Ca>,
    user: User,
}

impl Signer {
    pub fn new(api: Arc<Api>, ca: Arc<Ca>) -> Signer {
        Signer {
            api,
            ca,
            user: User::internal("csr-signer"),
        }
    }

    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut cleanup = tokio::time::interval(CLEANUP_EVERY);
        'relist: loop {
            let watch = match self
                .api
                .watch(
                    &self.user,
                    &CSRS,
                    None,
                    WatchFrom::Current { initial: false },
                )
                .await
            {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %e, "the CSR signer cannot watch");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut rx = watch.rx;
            self.sign_pending().await;
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = cleanup.tick() => self.clean_up(Utc::now()).await,
                    ev = rx.recv() => match ev {
                        Ok(ev) if ev.resource == CSRS.key() && ev.event_type != EventType::Deleted => {
                            self.process(&ev.object).await;
                        }
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => continue 'relist,
                        Err(RecvError::Closed) => return,
                    },
                }
            }
        }
    }

    async fn list(&self) -> Vec<Arc<Value>> {
        match self
            .api
            .list(&self.user, &CSRS, None, &Filter::default())
            .await
        {
            Ok((items, _)) => items,
            Err(e) => {
                tracing::error!(error = %e, "the CSR signer cannot list");
                Vec::new()
            }
        }
    }

    /// Every request still waiting (at start, and after a lagged watch).
    pub async fn sign_pending(&self) {
        for csr in self.list().await {
            self.process(&csr).await;
        }
    }

    async fn process(&self, csr: &Value) {
        let name = csr
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let now = Utc::now();
        let live = live_certificates(&self.list().await, now.timestamp());
        let verdict = verdict(csr, &live);
        let status = match &verdict {
            Verdict::Ignore => return,
            Verdict::Deny(reason) => {
                tracing::warn!(
                    csr = name.as_str(),
                    reason = reason.as_str(),
                    "denied a certificate signing request"
                );
                json!({"conditions": [{"type": "Denied", "status": "True", "reason": "NotAllowed",
                    "message": reason, "lastUpdateTime": timestamp(now), "lastTransitionTime": timestamp(now)}]})
            }
            Verdict::Approve(node) => match self.sign(csr, &name, now) {
                Ok(pem) => {
                    tracing::info!(
                        csr = name.as_str(),
                        node = node.as_str(),
                        "issued a node client certificate"
                    );
                    json!({"conditions": [{"type": "Approved", "status": "True", "reason": "AutoApproved",
                        "message": format!("auto-approved a certificate of node {node}"),
                        "lastUpdateTime": timestamp(now), "lastTransitionTime": timestamp(now)}],
                        "certificate": base64::engine::general_purpose::STANDARD.encode(pem)})
                }
                Err(e) => {
                    tracing::error!(csr = name.as_str(), error = %e, "signing failed");
                    json!({"conditions": [{"type": "Failed", "status": "True", "reason": "SignerError",
                        "message": e.to_string(), "lastUpdateTime": timestamp(now), "lastTransitionTime": timestamp(now)}]})
                }
            },
        };
        let uid = csr.pointer("/metadata/uid").cloned();
        let at = ObjectRef::new(&CSRS, None, &name);
        let write = self
            .api
            .update_with(&self.user, at, Part::Status, WriteOpts::INTERNAL, |old| {
                // the same request, still undecided (a second event of it is a no-op)
                if old.pointer("/metadata/uid").cloned() != uid || decided(old) {
                    return Err(ApiError::conflict(CSRS.group, CSRS.plural, &name));
                }
                let mut new = old.clone();
                new["status"] = status.clone();
                Ok(new)
            })
            .await;
        if let Err(e) = write {
            if e.code != 409 && e.code != 404 {
                tracing::error!(csr = name.as_str(), error = %e, "recording the decision failed");
            }
        }
    }

    fn sign(&self, csr: &Value, name: &str, now: DateTime<Utc>) -> Result<String, String> {
        let req = request(csr).ok_or("the request does not parse")?;
        let seconds = csr
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_SECONDS);
        let ca_end = CertInfo::parse(&self.ca.cert_der)
            .map(|i| i.not_after)
            .map_err(|e| e.to_string())?;
        let start = now.timestamp();
        // (a minute back, as kube-controller-manager's signer, for clocks a little behind)
        let (from, to) = (start - 60, (start + seconds).min(ca_end));
        if csr.pointer("/spec/signerName").and_then(Value::as_str) == Some(KUBELET_SERVING_SIGNER) {
            return self
                .ca
                .sign_serving(&req, from, to)
                .map_err(|e| e.to_string());
        }
        self.ca
            .sign_client(&req, name, from, to)
            .map_err(|e| e.to_string())
    }

    /// kube-controller-manager's csrcleaner, with certificates kept while they are valid.
    pub async fn clean_up(&self, now: DateTime<Utc>) {
        for csr in self.list().await {
            let created = csr
                .pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| now.signed_duration_since(t).num_seconds())
                .unwrap_or(0);
            let denied = csr
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|c| {
                    c.iter().any(|c| {
                        matches!(
                            c.get("type").and_then(Value::as_str),
                            Some("Denied" | "Failed")
                        )
                    })
                });
            let gone = match issued_certificate(&csr).and_then(|d| CertInfo::parse(&d).ok()) {
                Some(info) => info.not_after <= now.timestamp(),
                None if denied => created > 3600,
                None => !decided(&csr) && created > 86_400,
            };
            if !gone {
                continue;
            }
            let name = csr
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let at = ObjectRef::new(&CSRS, None, name);
            match self
                .api
                .delete(&self.user, at, &DeleteOptions::default())
                .await
            {
                Ok(_) => tracing::info!(
                    csr = name,
                    "deleted an expired or settled certificate signing request"
                ),
                Err(e) if e.code == 404 => {}
                Err(e) => {
                    tracing::warn!(csr = name, error = %e, "cleaning up a certificate signing request failed")
                }
            }
        }
    }
}

#[cfg(test)]
impl Signer {
    /// `csr` with a certificate of a throwaway CA in its status.
    fn sign_for_test(csr: &Value) -> Value {
        let ca = Ca::generate(Utc::now().timestamp(), 1).unwrap();
        let req = request(csr).unwrap();
        let now = Utc::now().timestamp();
        let pem = ca.sign_serving(&req, now - 60, now + 3600).unwrap();
        let mut signed = csr.clone();
        signed["status"]["certificate"] =
            json!(base64::engine::general_purpose::STANDARD.encode(pem));
        signed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(cn: &str, group: &str, requester: &str, groups: &[&str], usages: &[&str]) -> Value {
        let (_, pem) = crate::pki::client_request(cn, group).unwrap();
        json!({"metadata": {"name": "mine"}, "spec": {
            "signerName": KUBELET_CLIENT_SIGNER,
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "usages": usages, "username": requester, "groups": groups}, "status": {}})
    }

    #[test]
    fn joins_and_renewals_are_approved_everything_else_denied() {
        let client = ["digital signature", "client auth"];
        let boot = ["system:bootstrappers", "system:authenticated"];
        let node_a = ["system:nodes", "system:authenticated"];
        let none: Vec<(String, String)> = vec![];
        let a_has = vec![("a".to_string(), "earlier".to_string())];
        // (request, live certificates, verdict: Some(node) approved, None denied)
        type Case<'a> = (Value, &'a Vec<(String, String)>, Option<&'a str>);
        let cases: Vec<Case> = vec![
            (
                csr(
                    "system:node:a",
                    "system:nodes",
                    "system:bootstrap:abcdef",
                    &boot,
                    &client,
                ),
                &none,
                Some("a"),
            ),
            (
                csr(
                    "system:node:a",
                    "system:nodes",
                    "system:node:a",
                    &node_a,
                    &client,
                ),
                &a_has,
                Some("a"),
            ),
            (
                csr(
                    "system:node:a",
                    "system:nodes",
                    "system:bootstrap:abcdef",
                    &boot,
                    &client,
                ),
                &a_has,
                None,
            ),
            (
                csr(
                    "system:node:b",
                    "system:nodes",
                    "system:node:a",
                    &node_a,
                    &client,
                ),
                &none,
                None,
            ),
            (
                csr(
                    "system:node:a",
                    "system:masters",
                    "system:bootstrap:abcdef",
                    &boot,
                    &client,
                ),
                &none,
                None,
            ),
            (
                csr(
                    "admin",
                    "system:nodes",
                    "system:bootstrap:abcdef",
                    &boot,
                    &client,
                ),
                &none,
                None,
            ),
            (
                csr(
                    "system:node:a",
                    "system:nodes",
                    "system:bootstrap:abcdef",
                    &boot,
                    &["server auth"],
                ),
                &none,
                None,
            ),
            (
                csr(
                    "system:node:a",
                    "system:nodes",
                    "view:abcdef",
                    &["daemonset-agent:viewers"],
                    &client,
                ),
                &none,
                None,
            ),
        ];
        for (i, (c, live, want)) in cases.into_iter().enumerate() {
            let got = verdict(&c, live);
            match (want, &got) {
                (Some(n), Verdict::Approve(m)) => assert_eq!(n, m, "case {i}"),
                (None, Verdict::Deny(_)) => {}
                _ => panic!("case {i}: {got:?}, want {want:?}"),
            }
        }
        let mut other = csr(
            "system:node:a",
            "system:nodes",
            "system:node:a",
            &node_a,
            &client,
        );
        other["spec"]["signerName"] = json!("example.com/signer");
        assert_eq!(verdict(&other, &none), Verdict::Ignore);
        let mut done = csr(
            "system:node:a",
            "system:nodes",
            "system:node:a",
            &node_a,
            &client,
        );
        done["status"] = json!({"conditions": [{"type": "Denied", "status": "True"}]});
        assert_eq!(verdict(&done, &none), Verdict::Ignore, "decided once");
    }

    fn serving(cn: &str, names: &[&str], requester: &str, groups: &[&str]) -> Value {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let (_, pem) = crate::pki::serving_request(cn, "system:nodes", &names).unwrap();
        json!({"metadata": {"name": "serving"}, "spec": {
            "signerName": KUBELET_SERVING_SIGNER,
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "usages": ["digital signature", "key encipherment", "server auth"],
            "username": requester, "groups": groups}, "status": {}})
    }

    #[test]
    fn serving_certificates_only_for_the_requesting_node_or_an_admin() {
        let node_a = ["system:nodes", "system:authenticated"];
        let admin = ["system:masters", "system:authenticated"];
        let none: Vec<(String, String)> = vec![];
        let own = serving(
            "system:node:a",
            &["a", "10.0.0.1"],
            "system:node:a",
            &node_a,
        );
        assert_eq!(verdict(&own, &none), Verdict::Approve("a".into()));
        let by_admin = serving("system:node:a", &["127.0.0.1"], "admin", &admin);
        assert_eq!(verdict(&by_admin, &none), Verdict::Approve("a".into()));
        let other = serving("system:node:b", &["b"], "system:node:a", &node_a);
        assert!(matches!(verdict(&other, &none), Verdict::Deny(r) if r.contains("only node")));
        let nameless = serving("system:node:a", &[], "system:node:a", &node_a);
        assert!(matches!(verdict(&nameless, &none), Verdict::Deny(_)));
        let mut client_usage = own.clone();
        client_usage["spec"]["usages"] = json!(["client auth"]);
        assert!(matches!(verdict(&client_usage, &none), Verdict::Deny(_)));
        // a serving certificate is not a node's client certificate: joins are not blocked by it
        let signed = Signer::sign_for_test(&own);
        let live = live_certificates(&[Arc::new(signed)], chrono::Utc::now().timestamp());
        assert!(live.is_empty(), "{live:?}");
    }
}
