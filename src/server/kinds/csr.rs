//! certificates.k8s.io/v1 CertificateSigningRequests: how a node gets its client certificate, the
//! kubelet's way (TLS bootstrap). The request must be a PEM `CERTIFICATE REQUEST` whose signature
//! checks out; who asked is recorded by admission (`spec.username`, `spec.groups`); the spec is
//! immutable and only the status subresource (the server's signer, `server::signer`) sets the
//! conditions and the certificate. A CSR is also the server's record of the certificate issued
//! for it: deleting it (`kubectl delete csr NAME`) revokes that certificate.
use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use serde_json::{json, Value};

use crate::core::names;
use crate::core::validation::{validate_object_meta, FieldError};
use crate::pki::Csr;
use crate::server::resources::{Resource, ALL_VERBS};
use crate::server::strategy::{Column, Kind};
use crate::server::subresource::STATUS;
use crate::server::table::{age, human_duration, name, s};

pub static CERTIFICATE_SIGNING_REQUESTS: Resource = Resource {
    group: "certificates.k8s.io",
    version: "v1",
    plural: "certificatesigningrequests",
    singular: "certificatesigningrequest",
    kind: "CertificateSigningRequest",
    namespaced: false,
    short_names: &["csr"],
    categories: &[],
    verbs: ALL_VERBS,
    subresources: &[&STATUS],
    strategy: &CsrStrategy,
};

struct CsrStrategy;

/// kube-apiserver's shortest certificate a request may ask for.
pub const MIN_EXPIRATION_SECONDS: i32 = 600;

/// kubectl's CSR columns.
const COLUMNS: &[Column] = &[
    Column::NAME,
    Column::AGE,
    Column::string("SignerName", 0),
    Column::string("Requestor", 0),
    Column::string("RequestedDuration", 0),
    Column::string("Condition", 0),
];

/// The conditions column: `Approved,Issued`, `Denied`, `Pending`.
fn condition(obj: &Value) -> String {
    let mut out: Vec<&str> = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| s(c, "/status") == "True")
        .map(|c| s(c, "/type"))
        .collect();
    if obj
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty())
    {
        out.push("Issued");
    }
    if out.is_empty() {
        "Pending".into()
    } else {
        out.join(",")
    }
}

#[async_trait]
impl Kind for CsrStrategy {
    type Object = CertificateSigningRequest;

    fn validate(&self, csr: &CertificateSigningRequest) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&csr.metadata, false, names::is_dns1123_subdomain);
        if csr.spec.request.0.is_empty() {
            errs.push(FieldError::required("spec.request", ""));
        } else if let Err(e) = Csr::parse(&csr.spec.request.0) {
            errs.push(FieldError::invalid(
                "spec.request",
                "[]byte{...}",
                &e.to_string(),
            ));
        }
        if csr.spec.signer_name.is_empty() {
            errs.push(FieldError::required("spec.signerName", ""));
        }
        if csr.spec.usages.as_ref().is_none_or(|u| u.is_empty()) {
            errs.push(FieldError::required("spec.usages", ""));
        }
        if let Some(e) = csr
            .spec
            .expiration_seconds
            .filter(|e| *e < MIN_EXPIRATION_SECONDS)
        {
            errs.push(FieldError::invalid(
                "spec.expirationSeconds",
                &e.to_string(),
                &format!("may not specify a duration less than {MIN_EXPIRATION_SECONDS} seconds"),
            ));
        }
        errs
    }
    fn validate_update(
        &self,
        csr: &CertificateSigningRequest,
        old: &CertificateSigningRequest,
    ) -> Vec<FieldError> {
        let mut errs = self.validate(csr);
        if csr.spec != old.spec {
            errs.push(FieldError::forbidden("spec", "field is immutable"));
        }
        errs
    }
    fn initial_status(&self) -> Option<Value> {
        Some(json!({}))
    }
    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let duration = obj
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
            .map(human_duration)
            .unwrap_or_else(|| "<none>".into());
        vec![
            name(obj),
            json!(age(obj, now)),
            json!(s(obj, "/spec/signerName")),
            json!(s(obj, "/spec/username")),
            json!(duration),
            json!(condition(obj)),
        ]
    }
}

/// The certificate request of a CSR object, parsed and checked.
pub fn request(csr: &Value) -> Option<Csr> {
    let b64 = csr.pointer("/spec/request")?.as_str()?;
    let pem = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Csr::parse(&pem).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::query::FieldValidation;
    use crate::server::strategy::Prepare;

    fn csr(request: &str, expiration: Option<i32>) -> Value {
        let mut spec = json!({"signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"],
            "request": base64::engine::general_purpose::STANDARD.encode(request)});
        if let Some(e) = expiration {
            spec["expirationSeconds"] = json!(e);
        }
        json!({"metadata": {"name": "node-csr-1"}, "spec": spec})
    }

    #[test]
    fn requests_must_be_signed_requests_and_spec_stays() {
        let (_, pem) = crate::pki::client_request("system:node:n", "system:nodes").unwrap();
        let ctx = |old| Prepare {
            resource: &CERTIFICATE_SIGNING_REQUESTS,
            old,
            validation: FieldValidation::Strict,
            policy: None,
        };
        let prepare = |obj: &Value, old| {
            CERTIFICATE_SIGNING_REQUESTS
                .strategy
                .prepare(obj, ctx(old))
                .map(|p| p.object)
                .map_err(|e| e.message)
        };
        let ok = prepare(&csr(&pem, None), None).unwrap();
        assert_eq!(request(&ok).unwrap().common_name, "system:node:n");
        // (object, the field refused)
        let cases = [
            (csr("garbage", None), "spec.request"),
            (csr(&pem, Some(60)), "spec.expirationSeconds"),
        ];
        for (obj, field) in cases {
            let e = prepare(&obj, None).unwrap_err();
            assert!(e.contains(field), "{e}");
        }
        let mut changed = ok.clone();
        changed["spec"]["signerName"] = json!("example.com/other");
        assert!(prepare(&changed, Some(&ok))
            .unwrap_err()
            .contains("immutable"));
        let mut issued = ok.clone();
        assert_eq!(condition(&issued), "Pending");
        issued["status"] =
            json!({"conditions": [{"type": "Approved", "status": "True"}], "certificate": "Zm9v"});
        assert_eq!(condition(&issued), "Approved,Issued");
    }
}
