//! Kubernetes `Status` objects: every error the server returns is one of these.
use serde_json::{json, Value};

use crate::core::validation::{q, FieldError};

/// An API error, rendered as a `Status` (kind Status, apiVersion v1, status Failure).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// name, group, kind (the resource name, as kube-apiserver fills `details.kind`).
    pub details: Option<Box<(String, String, String)>>,
    /// A complete `Status` body (the 422 of an invalid object, with its causes).
    pub body: Option<Box<Value>>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            body: None,
        }
    }
    fn with_details(mut self, name: &str, group: &str, kind: &str) -> ApiError {
        self.details = Some(Box::new((
            name.to_string(),
            group.to_string(),
            kind.to_string(),
        )));
        self
    }
    /// `resource` is the plural, qualified by group the way kube-apiserver prints it
    /// (`daemonsets.apps`).
    pub fn not_found(group: &str, plural: &str, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, plural)),
        )
        .with_details(name, group, plural)
    }
    pub fn already_exists(group: &str, plural: &str, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, plural)),
        )
        .with_details(name, group, plural)
    }
    pub fn conflict(group: &str, plural: &str, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(group, plural)
            ),
        )
        .with_details(name, group, plural)
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }
    pub fn method_not_allowed(method: &str) -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {method}"),
        )
    }
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is too large: limit is {limit} bytes"),
        )
    }
    /// A request body that did not arrive in time (a slow or stalled client).
    pub fn body_timeout(limit: std::time::Duration) -> ApiError {
        ApiError::new(
            408,
            "Timeout",
            format!(
                "the request body did not arrive within {} seconds",
                limit.as_secs()
            ),
        )
    }
    pub fn unsupported_media(message: impl Into<String>) -> ApiError {
        ApiError::new(415, "UnsupportedMediaType", message)
    }
    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }
    /// kube-apiserver's answer to a read or watch at a resourceVersion its cache has not reached
    /// after waiting for it (`storage.NewTooLargeResourceVersionError`): 504 Timeout, retry in 1 s.
    pub fn too_large_resource_version(requested: u64, current: u64) -> ApiError {
        let message =
            format!("Timeout: Too large resource version: {requested}, current: {current}");
        let details = json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        });
        ApiError::with_status_details(504, "Timeout", message, details)
    }
    pub fn path_not_found() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }
    /// kube-apiserver's answer to a request it cannot authenticate (no reason given away).
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }
    /// kube-apiserver's 403: `nodes "b" is forbidden: REASON` (`nodes is forbidden: ...` without
    /// a name), with the group-qualified resource as it prints it.
    pub fn forbidden(group: &str, plural: &str, name: &str, reason: &str) -> ApiError {
        let message = if name.is_empty() {
            format!("{} is forbidden: {reason}", qualified(group, plural))
        } else {
            format!(
                "{} \"{name}\" is forbidden: {reason}",
                qualified(group, plural)
            )
        };
        ApiError::new(403, "Forbidden", message).with_details(name, group, plural)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }
    /// The 422 Kubernetes returns for an invalid object: one cause per field error, the
    /// message listing them. `kind` may be qualified by group (`DaemonSet.apps`).
    pub fn invalid(kind: &str, name: &str, errors: &[FieldError]) -> ApiError {
        let (bare_kind, group) = kind.split_once('.').unwrap_or((kind, ""));
        let mut lines: Vec<String> = Vec::new();
        for e in errors {
            let line = e.to_string();
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        let mut message = format!("{kind} {} is invalid", q(name));
        match lines.as_slice() {
            [] => {}
            [one] => message = format!("{message}: {one}"),
            many => message = format!("{message}: [{}]", many.join(", ")),
        }
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.kind.reason(), "message": e.message, "field": e.field}))
            .collect();
        let mut details = serde_json::Map::new();
        details.insert("name".into(), json!(name));
        if !group.is_empty() {
            details.insert("group".into(), json!(group));
        }
        details.insert("kind".into(), json!(bare_kind));
        details.insert("causes".into(), Value::Array(causes));
        ApiError::with_status_details(422, "Invalid", message, Value::Object(details))
    }

    /// An error whose `Status` carries `details` beyond name, group and kind (causes, retry).
    fn with_status_details(
        code: u16,
        reason: &'static str,
        message: String,
        details: Value,
    ) -> ApiError {
        let body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code,
        });
        ApiError {
            body: Some(Box::new(body)),
            ..ApiError::new(code, reason, message)
        }
    }

    pub fn to_status(&self) -> Value {
        if let Some(body) = &self.body {
            return (**body).clone();
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            let (name, group, kind) = &**d;
            let mut details = serde_json::Map::new();
            details.insert("name".into(), json!(name));
            if !group.is_empty() {
                details.insert("group".into(), json!(group));
            }
            details.insert("kind".into(), json!(kind));
            status["details"] = Value::Object(details);
        }
        status
    }
}

fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_have_kubernetes_shape() {
        let cases = [
            (
                ApiError::not_found("apps", "daemonsets", "x"),
                404,
                "NotFound",
                "daemonsets.apps \"x\" not found",
            ),
            (
                ApiError::already_exists("", "nodes", "n1"),
                409,
                "AlreadyExists",
                "nodes \"n1\" already exists",
            ),
            (
                ApiError::too_large(10),
                413,
                "RequestEntityTooLarge",
                "the request body is too large: limit is 10 bytes",
            ),
            (ApiError::gone("too old"), 410, "Expired", "too old"),
        ];
        for (err, code, reason, message) in cases {
            let s = err.to_status();
            assert_eq!(s["kind"], "Status");
            assert_eq!(s["apiVersion"], "v1");
            assert_eq!(s["status"], "Failure");
            assert_eq!(s["code"], code);
            assert_eq!(s["reason"], reason);
            assert_eq!(s["message"], message);
        }
        let s = ApiError::not_found("apps", "daemonsets", "x").to_status();
        assert_eq!(
            s["details"],
            json!({"name": "x", "group": "apps", "kind": "daemonsets"})
        );
    }

    #[test]
    fn invalid_status_has_the_kubernetes_shape() {
        let one = vec![FieldError::required("spec.template.spec.containers", "")];
        let two = vec![
            FieldError::not_supported("spec.template.spec.restartPolicy", "Never", &["Always"]),
            FieldError::invalid("metadata.name", &q("A"), "bad"),
        ];
        let cases = vec![
            (
                "DaemonSet.apps",
                "ds",
                one,
                json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "DaemonSet.apps \"ds\" is invalid: spec.template.spec.containers: Required value",
                "reason": "Invalid",
                "details": {"name": "ds", "group": "apps", "kind": "DaemonSet", "causes": [
                    {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.template.spec.containers"}]},
                "code": 422}),
            ),
            (
                "Node",
                "n",
                two,
                json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Node \"n\" is invalid: [spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\", metadata.name: Invalid value: \"A\": bad]",
                "reason": "Invalid",
                "details": {"name": "n", "kind": "Node", "causes": [
                    {"reason": "FieldValueNotSupported", "message": "Unsupported value: \"Never\": supported values: \"Always\"", "field": "spec.template.spec.restartPolicy"},
                    {"reason": "FieldValueInvalid", "message": "Invalid value: \"A\": bad", "field": "metadata.name"}]},
                "code": 422}),
            ),
        ];
        for (kind, name, errs, want) in cases {
            let got = ApiError::invalid(kind, name, &errs).to_status();
            assert_eq!(got, want, "{kind}");
            assert_eq!(
                serde_json::to_string(&got).ok(),
                serde_json::to_string(&want).ok(),
                "{kind}: key order"
            );
        }
    }
}
