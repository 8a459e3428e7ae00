//! Server-side apply and `metadata.managedFields` in the server, as kube-apiserver's
//! fieldmanager keeps them: every write is recorded as an Update by its manager (the
//! `fieldManager` query, else the User-Agent's prefix), and `PATCH` with
//! `application/apply-patch+yaml` is an Apply. The algorithm is `core::ssa`; this is the glue:
//! which manager, which part of the object, the 409 of a conflict, apply to a missing object.
use http::Response;
use serde_json::{json, Value};

use super::auth::{authorize, User, Verb};
use super::body::{json_response, with_warnings, Body};
use super::meta;
use super::query::WriteOpts;
use super::resources::Resource;
use super::router::RestRequest;
use super::status::ApiError;
use super::verbs::{Api, ObjectRef, Part, Written};
use crate::core::ssa::{self, Managed, Manager, Operation, Scope, Shape, SsaError};

/// The media type of an apply patch (its body is YAML or JSON).
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";
/// kube-apiserver's limit on a field manager's name.
const FIELD_MANAGER_MAX: usize = 128;

/// How a write's managedFields are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tracking {
    /// An Update by this manager: it takes what it changed.
    Update(String),
    /// An Apply: the object already carries the managedFields the apply computed.
    Applied,
}

impl Tracking {
    /// The Update of a write with `opts` by `user` (the server's own loops are named after
    /// their component).
    pub fn update(user: &User, opts: &WriteOpts) -> Tracking {
        let name = match opts.field_manager.as_deref() {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => user
                .name
                .strip_prefix("system:apiserver:")
                .unwrap_or(&user.name)
                .to_string(),
        };
        Tracking::Update(name)
    }
}

/// kube-apiserver's `prefixFromUserAgent`: what precedes the first `/`, printable characters
/// only, at most 128 bytes (`kubectl/v1.32.0 (linux/amd64) ...` -> `kubectl`).
pub fn prefix_from_user_agent(ua: &str) -> String {
    let mut out = String::new();
    for c in ua.split('/').next().unwrap_or("").chars() {
        if c.is_control() {
            continue;
        }
        if out.len() + c.len_utf8() > FIELD_MANAGER_MAX {
            break;
        }
        out.push(c);
    }
    out
}

/// The write options of a request, its manager defaulted from the User-Agent.
pub fn write_opts(req: &RestRequest, options_kind: &str) -> Result<WriteOpts, ApiError> {
    let mut opts = WriteOpts::from_query(&req.query)?;
    match opts.field_manager.as_deref() {
        Some(m) if !m.is_empty() => validate_manager(m, options_kind)?,
        _ => opts.field_manager = Some(prefix_from_user_agent(&req.user_agent)),
    }
    Ok(opts)
}

/// The 422 kube-apiserver gives a bad `CreateOptions`/`UpdateOptions`/`PatchOptions`.
fn invalid_options(options_kind: &str, field: &str, reason: &str, message: String) -> ApiError {
    let full = format!("{options_kind}.meta.k8s.io \"\" is invalid: {field}: {message}");
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": full, "reason": "Invalid",
        "details": {"group": "meta.k8s.io", "kind": options_kind,
            "causes": [{"reason": reason, "message": message, "field": field}]},
        "code": 422});
    ApiError {
        code: 422,
        reason: "Invalid",
        message: full,
        details: None,
        body: Some(Box::new(body)),
    }
}

fn validate_manager(m: &str, options_kind: &str) -> Result<(), ApiError> {
    if m.len() > FIELD_MANAGER_MAX {
        return Err(invalid_options(
            options_kind,
            "fieldManager",
            "FieldValueTooLong",
            format!("Too long: may not be more than {FIELD_MANAGER_MAX} bytes"),
        ));
    }
    if m.chars().any(char::is_control) {
        return Err(invalid_options(
            options_kind,
            "fieldManager",
            "FieldValueInvalid",
            format!("Invalid value: {m:?}: must only contain printable characters"),
        ));
    }
    Ok(())
}

/// The structure and scope a write to `part` of `r` is tracked with.
pub fn shape(r: &Resource, part: Part) -> Shape {
    let scope = match part {
        Part::Status => Scope::Status,
        Part::Main if r.has_status() => Scope::Main,
        Part::Main => Scope::Whole,
    };
    Shape {
        schema: r.strategy.patch_schema(),
        scope,
    }
}

fn manager(r: &Resource, part: Part, name: &str, operation: Operation) -> Manager {
    Manager {
        name: name.to_string(),
        operation,
        api_version: r.api_version(),
        subresource: part.subresource().unwrap_or("").to_string(),
    }
}

fn managed_fields(obj: &Value) -> Option<&Value> {
    obj.pointer("/metadata/managedFields")
}

fn set_managed_fields(obj: &mut Value, v: Option<Value>) {
    let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    match v {
        Some(v) if v.as_array().is_some_and(|a| !a.is_empty()) => {
            m.insert("managedFields".into(), v);
        }
        _ => {
            m.remove("managedFields");
        }
    }
}

/// Records a write in `new`'s managedFields: `old` is the live object (None for a create),
/// `sent` the managedFields the request's object carried. Never fails the write: managedFields
/// that cannot be computed are dropped, as kube-apiserver's `UpdateNoErrors` does.
pub fn track(
    r: &Resource,
    part: Part,
    old: Option<&Value>,
    new: &mut Value,
    sent: Option<Value>,
    tracking: &Tracking,
) {
    let name = match tracking {
        Tracking::Applied => return set_managed_fields(new, sent),
        Tracking::Update(name) => name,
    };
    let live_managed = || Managed::decode(old.and_then(managed_fields)).unwrap_or_default();
    let managed = if part == Part::Status {
        live_managed()
    } else if ssa::is_reset(sent.as_ref()) {
        Managed::default()
    } else {
        match Managed::decode(sent.as_ref()) {
            Ok(m) if !m.entries.is_empty() => m,
            _ => live_managed(),
        }
    };
    let empty = json!({});
    let who = manager(r, part, name, Operation::Update);
    let now = meta::now_rfc3339();
    match ssa::update(
        shape(r, part),
        old.unwrap_or(&empty),
        new,
        managed,
        &who,
        &now,
    ) {
        Ok(m) => set_managed_fields(new, Some(m.encode())),
        Err(e) => {
            tracing::warn!(resource = r.plural, error = %e, "managedFields dropped");
            set_managed_fields(new, None);
        }
    }
}

/// The Status of a refused apply or of an applied configuration that does not fit the schema.
fn apply_error(e: SsaError, r: &Resource, name: &str) -> ApiError {
    match e {
        SsaError::Conflicts(c) => {
            let message = c.to_string();
            let causes: Vec<Value> =
                c.0.iter()
                    .map(|x| {
                        json!({"reason": "FieldManagerConflict", "message": x.message(),
                        "field": x.path.to_string()})
                    })
                    .collect();
            let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": message, "reason": "Conflict",
                "details": {"causes": causes}, "code": 409});
            ApiError {
                code: 409,
                reason: "Conflict",
                message,
                details: None,
                body: Some(Box::new(body)),
            }
        }
        SsaError::Invalid { .. } => ApiError::bad_request(format!(
            "failed to create typed patch object ({}/{name}; {}, Kind={}): {e}",
            r.key(),
            r.api_version(),
            r.kind
        )),
        other => ApiError::internal(other.to_string()),
    }
}

/// `PATCH` with an apply patch: the request's half (options, body), then [`apply`].
pub async fn patch(
    api: &Api,
    at: ObjectRef<'_>,
    part: Part,
    req: RestRequest,
) -> Result<Response<Body>, ApiError> {
    let opts = WriteOpts::from_query(&req.query)?;
    let name = opts.field_manager.clone().unwrap_or_default();
    if name.is_empty() {
        return Err(invalid_options(
            "PatchOptions",
            "fieldManager",
            "FieldValueRequired",
            "Required value: is required for apply patch".into(),
        ));
    }
    validate_manager(&name, "PatchOptions")?;
    let force = match req.query.get("force") {
        None | Some("" | "false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid value for force: {other:?}"
            )))
        }
    };
    let user = req.user.clone();
    let body = req.bytes().await?;
    let config: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => serde_yaml::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
    };
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "the applied configuration must be an object",
        ));
    }
    let (w, created) = apply(api, &user, at, part, &config, opts, &name, force).await?;
    let code = if created { 201 } else { 200 };
    Ok(with_warnings(json_response(code, &w.object), &w.warnings))
}

/// Applies `config` as `name` to `part` of the object `at`, creating it when it does not exist;
/// true when it was created.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    api: &Api,
    user: &User,
    at: ObjectRef<'_>,
    part: Part,
    config: &Value,
    opts: WriteOpts,
    name: &str,
    force: bool,
) -> Result<(Written, bool), ApiError> {
    let r = at.r;
    authorize(
        user,
        Verb::Patch,
        r,
        part.subresource(),
        at.ns,
        Some(at.name),
    )?;
    match config.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() && n != at.name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({})",
                at.name
            )))
        }
        _ => {}
    }
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    let who = manager(r, part, name, Operation::Apply);
    let explicit_rv = config.pointer("/metadata/resourceVersion").is_some();
    let make = |old: &Value| -> Result<Value, ApiError> {
        let mut live = old.clone();
        set_managed_fields(&mut live, None);
        let managed = Managed::decode(managed_fields(old))
            .map_err(|e| ApiError::internal(format!("failed to decode managed fields: {e}")))?;
        let now = meta::now_rfc3339();
        let applied = ssa::apply(shape(r, part), &live, config, managed, &who, force, &now)
            .map_err(|e| apply_error(e, r, at.name))?;
        let mut obj = applied.object;
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        obj["metadata"]["name"] = json!(at.name);
        if !explicit_rv {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
        }
        obj["metadata"]["managedFields"] = applied.managed.encode();
        Ok(obj)
    };
    for _ in 0..4 {
        match api
            .write_tracked(
                at,
                part,
                opts.clone(),
                &Tracking::Applied,
                super::verbs::admitted(user, at, part, &make),
            )
            .await
        {
            Err(e) if e.code == 404 && part == Part::Main && e.details.is_some() => {}
            other => return other.map(|w| (w, false)),
        }
        authorize(user, Verb::Create, r, None, at.ns, None)?;
        let obj = make(&json!({}))?;
        match api
            .create_tracked(user, r, at.ns, obj, opts.clone(), &Tracking::Applied)
            .await
        {
            Err(e) if e.code == 409 && e.reason == "AlreadyExists" => continue,
            other => return other.map(|w| (w, true)),
        }
    }
    Err(ApiError::conflict(r.group, r.plural, at.name))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::kinds::{DAEMONSETS, NAMESPACES};
    use super::super::store::SqliteStore;
    use super::*;
    use crate::core::validation::Policy;

    fn opts(manager: Option<&str>) -> WriteOpts {
        WriteOpts {
            field_manager: manager.map(str::to_string),
            ..WriteOpts::INTERNAL
        }
    }

    /// (manager, operation, subresource) of each entry.
    fn entries(obj: &Value) -> Vec<(String, String, String)> {
        obj.pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|e| {
                        let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
                        (s("manager"), s("operation"), s("subresource"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn e(m: &str, op: &str, sub: &str) -> (String, String, String) {
        (m.into(), op.into(), sub.into())
    }

    #[test]
    fn managers_come_from_the_query_the_user_agent_or_the_component() {
        let cases = [
            ("kubectl/v1.32.0 (linux/amd64) kubernetes/abc", "kubectl"),
            ("OpenAPI-Generator/31.0.0/python", "OpenAPI-Generator"),
            ("", ""),
        ];
        for (ua, want) in cases {
            assert_eq!(prefix_from_user_agent(ua), want, "{ua}");
        }
        assert_eq!(prefix_from_user_agent(&"x".repeat(200)).len(), 128);
        let internal = User::internal("daemonset-controller");
        assert_eq!(
            Tracking::update(&internal, &opts(None)),
            Tracking::Update("daemonset-controller".into())
        );
        assert_eq!(
            Tracking::update(&internal, &opts(Some("kubectl-set"))),
            Tracking::Update("kubectl-set".into())
        );
        assert!(validate_manager(&"x".repeat(129), "PatchOptions").is_err());
        assert!(validate_manager("a\u{7}", "PatchOptions").is_err());
    }

    #[tokio::test]
    async fn every_write_keeps_managed_fields() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db"), 100).unwrap();
        let api = Api::new(Arc::new(store), Policy::default());
        let user = User::internal("test");
        api.create(
            &user,
            &NAMESPACES,
            None,
            json!({"metadata": {"name": "default"}}),
            WriteOpts::INTERNAL,
        )
        .await
        .unwrap();
        let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "d", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
        let at = ObjectRef::new(&DAEMONSETS, Some("default"), "d");
        let w = api
            .create(
                &user,
                &DAEMONSETS,
                Some("default"),
                ds.clone(),
                opts(Some("kubectl-create")),
            )
            .await
            .unwrap();
        assert_eq!(entries(&w.object), [e("kubectl-create", "Update", "")]);
        let f = &w.object["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"];
        assert!(
            f["f:revisionHistoryLimit"].is_object(),
            "defaulted fields belong to the creator: {f}"
        );

        let mut status = (*w.object).clone();
        status["status"]["numberReady"] = json!(1);
        let w = api
            .update(&user, at, Part::Status, status, opts(None))
            .await
            .unwrap();
        assert_eq!(
            entries(&w.object),
            [
                e("kubectl-create", "Update", ""),
                e("test", "Update", "status")
            ]
        );

        // An explicit list replaces them; `[]` clears them.
        let mut sent = (*w.object).clone();
        sent["metadata"]["managedFields"] = json!([{"manager": "mine", "operation": "Apply",
            "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"c\"}": {".": {}, "f:image": {}}}}}}}}]);
        let w = api
            .update(&user, at, Part::Main, sent, opts(Some("x")))
            .await
            .unwrap();
        assert_eq!(entries(&w.object), [e("mine", "Apply", "")]);
        let mut cleared = (*w.object).clone();
        cleared["metadata"]["managedFields"] = json!([]);
        let w = api
            .update(&user, at, Part::Main, cleared, opts(Some("x")))
            .await
            .unwrap();
        assert!(entries(&w.object).is_empty(), "{}", w.object);

        // The first apply to an object without managedFields meets what it held before.
        let config = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i:2"}]}}}});
        let err = apply(
            &api,
            &user,
            at,
            Part::Main,
            &config,
            opts(None),
            "mine",
            false,
        )
        .await
        .expect_err("before-first-apply owns the image");
        let mut with_fields = config.clone();
        with_fields["metadata"]["managedFields"] = json!([]);
        let refused = apply(
            &api,
            &user,
            at,
            Part::Main,
            &with_fields,
            opts(None),
            "mine",
            true,
        )
        .await
        .expect_err("an applied configuration may not carry managedFields");
        assert_eq!(refused.code, 400);
        assert!(
            err.message.contains("\"before-first-apply\" using apps/v1"),
            "{}",
            err.message
        );
        let (w, created) = apply(
            &api,
            &user,
            at,
            Part::Main,
            &config,
            opts(None),
            "mine",
            true,
        )
        .await
        .unwrap();
        assert!(!created);
        assert_eq!(
            w.object["spec"]["template"]["spec"]["containers"][0]["image"],
            "i:2"
        );
        let mut other = config.clone();
        other["spec"]["template"]["spec"]["containers"][0]["image"] = json!("i:3");
        let err = apply(
            &api,
            &user,
            at,
            Part::Main,
            &other,
            opts(None),
            "theirs",
            false,
        )
        .await
        .expect_err("conflict");
        assert_eq!(err.code, 409);
        let status = err.to_status();
        assert_eq!(status["reason"], "Conflict");
        assert_eq!(
            status["details"]["causes"][0],
            json!({"reason": "FieldManagerConflict", "message": "conflict with \"mine\"",
                "field": ".spec.template.spec.containers[name=\"c\"].image"})
        );
        let fresh = ObjectRef::new(&DAEMONSETS, Some("default"), "new");
        let mut new_config = config.clone();
        new_config["metadata"]["name"] = json!("new");
        new_config["spec"]["selector"] = json!({"matchLabels": {"a": "b"}});
        new_config["spec"]["template"]["metadata"] = json!({"labels": {"a": "b"}});
        let (w, created) = apply(
            &api,
            &user,
            fresh,
            Part::Main,
            &new_config,
            opts(None),
            "mine",
            false,
        )
        .await
        .unwrap();
        assert!(created, "apply to a missing object creates it");
        assert_eq!(entries(&w.object), [e("mine", "Apply", "")]);
        assert_eq!(w.object["metadata"]["generation"], 1);
    }
}
