//! The REST layer: routing, verbs (create, get, list, watch, update, patch, delete), server-side
//! metadata, defaulting and validation through `core::validation`, field validation, tables.
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::discovery;
use super::resources::{self, Resource};
use super::status::ApiError;
use super::store::{object_rv, EventType, ObjectStore, StoreError, WatchEvent, WatchFrom};
use super::table;
use crate::core::labels::Selector;
use crate::core::patch;
use crate::core::names;
use crate::core::validation::{self, ErrorType, FieldError};

pub type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted (as kube-apiserver: 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;
/// How often a watch that asked for bookmarks gets one.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(15);
/// A watch without timeoutSeconds ends after this long (clients re-watch).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// The authenticated caller. Everyone is admitted for now (plain HTTP on loopback); bearer tokens
/// and node credentials slot in here.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

pub fn authenticate<B>(_req: &Request<B>) -> Result<User, ApiError> {
    Ok(User {
        name: "admin".into(),
        groups: vec!["system:masters".into()],
    })
}

/// The shared state of the REST layer.
pub struct Api {
    pub store: Arc<dyn ObjectStore>,
    /// What pod specs may hold (`--allow-privileged`, `--allow-host-path`).
    pub policy: validation::Policy,
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn bytes_response(content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

fn store_error(r: &Resource, e: StoreError) -> ApiError {
    match e {
        StoreError::AlreadyExists { name, .. } => {
            ApiError::already_exists(r.group, r.plural, &name)
        }
        StoreError::NotFound { name, .. } => ApiError::not_found(r.group, r.plural, &name),
        StoreError::Conflict { name, .. } => ApiError::conflict(r.group, r.plural, &name),
        StoreError::Expired { requested, oldest } => {
            ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
        }
        other => ApiError::internal(other.to_string()),
    }
}

/// Decoded query string.
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'+' {
            out.push(b' ');
        } else if b == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(v) => {
                    out.push(v);
                    i += 2;
                }
                None => out.push(b'%'),
            }
        } else {
            out.push(b);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let mut m = HashMap::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            m.insert(percent_decode(k), percent_decode(v));
        }
        Query(m)
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    fn from_query(q: &Query) -> Result<FieldValidation, ApiError> {
        match q.get("fieldValidation") {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn, Strict, not {other:?}"
            ))),
        }
    }
}

/// Options of one write.
#[derive(Debug, Clone, Copy)]
pub struct WriteOpts {
    pub dry_run: bool,
    pub validation: FieldValidation,
}

impl WriteOpts {
    pub const INTERNAL: WriteOpts = WriteOpts {
        dry_run: false,
        validation: FieldValidation::Ignore,
    };
    fn from_query(q: &Query) -> Result<WriteOpts, ApiError> {
        let dry_run = match q.get("dryRun") {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "unsupported dryRun value {other:?}: only All is supported"
                )))
            }
        };
        Ok(WriteOpts {
            dry_run,
            validation: FieldValidation::from_query(q)?,
        })
    }
}

/// Which part of an object a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

fn now_rfc3339() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn meta_mut(obj: &mut Value) -> Result<&mut serde_json::Map<String, Value>, ApiError> {
    let o = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body is not a JSON object"))?;
    let m = o.entry("metadata").or_insert_with(|| json!({}));
    if m.is_null() {
        *m = json!({});
    }
    m.as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Checks `apiVersion`/`kind` of a body against the URL's resource and fills them in if missing.
fn check_gvk(r: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    let o = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body is not a JSON object"))?;
    let want_av = r.api_version();
    match o.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            o.insert("apiVersion".into(), json!(want_av));
        }
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )))
        }
    }
    match o.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            o.insert("kind".into(), json!(r.kind));
        }
        Some(k) if k == r.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({}) of {}",
                r.kind,
                r.key()
            )))
        }
    }
    Ok(())
}

/// Fields of `input` that the typed round trip dropped: fields not in the schema.
fn unknown_fields(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    None => out.push(p),
                    Some(bv) => unknown_fields(v, bv, &p, out),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                unknown_fields(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn decode_error(r: &Resource, e: serde_json::Error) -> ApiError {
    ApiError::bad_request(format!(
        "{} in version \"{}\" cannot be handled as a {}: {e}",
        r.kind, r.version, r.kind
    ))
}

fn typed<T: serde::de::DeserializeOwned>(r: &Resource, v: &Value) -> Result<T, ApiError> {
    serde_json::from_value(v.clone()).map_err(|e| decode_error(r, e))
}

fn to_json<T: serde::Serialize>(t: &T) -> Result<Value, ApiError> {
    serde_json::to_value(t).map_err(|e| ApiError::internal(format!("encoding object: {e}")))
}

fn invalid(r: &Resource, name: &str, errors: &[FieldError]) -> ApiError {
    ApiError::invalid(r.kind, name, errors)
}

/// Decodes into the k8s-openapi type (the schema), reports fields it does not know, defaults and
/// validates. Returns the normalized object and the warnings for `Warn`.
fn normalize(
    r: &Resource,
    obj: &Value,
    old: Option<&Value>,
    validation_mode: FieldValidation,
    policy: Option<validation::Policy>,
) -> Result<(Value, Vec<String>), ApiError> {
    use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
    let name = meta_str(obj, "name").unwrap_or("").to_string();
    let mut warnings = Vec::new();
    // Strict decoding comes first, as in kube-apiserver: a typo is reported as such, not as the
    // missing field it leaves behind.
    let mut check_unknown = |plain: &Value| -> Result<(), ApiError> {
        if validation_mode == FieldValidation::Ignore {
            return Ok(());
        }
        let mut unknown = Vec::new();
        unknown_fields(obj, plain, "", &mut unknown);
        let list: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        if !list.is_empty() && validation_mode == FieldValidation::Strict {
            return Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                r.kind,
                r.version,
                r.kind,
                list.join(", ")
            )));
        }
        warnings = list;
        Ok(())
    };
    let out = match r.kind {
        "DaemonSet" => {
            let mut ds: DaemonSet = typed(r, obj)?;
            check_unknown(&to_json(&ds)?)?;
            validation::default_daemonset(&mut ds);
            let mut errors = match old {
                Some(old) => validation::validate_daemonset_update(&ds, &typed(r, old)?),
                None => validation::validate_daemonset(&ds),
            };
            if let (Some(p), Some(spec)) = (policy, &ds.spec) {
                errors.extend(validation::validate_policy(
                    spec.template.spec.as_ref(),
                    "spec.template.spec",
                    p,
                ));
            }
            if !errors.is_empty() {
                return Err(invalid(r, &name, &errors));
            }
            to_json(&ds)?
        }
        "Node" => {
            let node: Node = typed(r, obj)?;
            let v = to_json(&node)?;
            check_unknown(&v)?;
            let errors = validation::validate_node(&node);
            if !errors.is_empty() {
                return Err(invalid(r, &name, &errors));
            }
            v
        }
        "Pod" => {
            let pod: Pod = typed(r, obj)?;
            let v = to_json(&pod)?;
            check_unknown(&v)?;
            let mut errors = validation::validate_pod(&pod);
            if let Some(p) = policy {
                errors.extend(validation::validate_policy(pod.spec.as_ref(), "spec", p));
            }
            if !errors.is_empty() {
                return Err(invalid(r, &name, &errors));
            }
            v
        }
        kind => {
            let v = match kind {
                "Namespace" => to_json(&typed::<Namespace>(r, obj)?)?,
                "Lease" => to_json(&typed::<Lease>(r, obj)?)?,
                "ControllerRevision" => to_json(&typed::<ControllerRevision>(r, obj)?)?,
                _ => obj.clone(),
            };
            check_unknown(&v)?;
            let rule = if kind == "Namespace" {
                names::is_dns1123_label
            } else {
                names::is_dns1123_subdomain
            };
            let errors: Vec<FieldError> = rule(&name)
                .iter()
                .map(|m| FieldError::invalid("metadata.name", &validation::q(&name), m))
                .collect();
            if !errors.is_empty() {
                return Err(invalid(r, &name, &errors));
            }
            v
        }
    };
    Ok((out, warnings))
}

/// What a successful write returns.
pub struct Written {
    pub object: Arc<Value>,
    pub warnings: Vec<String>,
}

impl Api {
    async fn namespace_exists(&self, ns: &str) -> Result<bool, ApiError> {
        self.store
            .get(&resources::NAMESPACES.key(), "", ns)
            .await
            .map(|o| o.is_some())
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// Creates an object (POST). `ns` is the namespace of the URL (None for cluster-scoped).
    pub async fn create(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        mut obj: Value,
        opts: WriteOpts,
    ) -> Result<Written, ApiError> {
        check_gvk(r, &mut obj)?;
        let meta = meta_mut(&mut obj)?;
        if let Some(ns) = ns {
            match meta.get("namespace").and_then(Value::as_str) {
                None | Some("") => {
                    meta.insert("namespace".into(), json!(ns));
                }
                Some(x) if x == ns => {}
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
            }
        } else {
            meta.remove("namespace");
        }
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match meta.get("generateName").and_then(Value::as_str) {
                Some(g) if !g.is_empty() => {
                    let n = format!("{g}{}", random_suffix());
                    meta.insert("name".into(), json!(n));
                    n
                }
                _ => {
                    return Err(invalid(
                        r,
                        "",
                        &[FieldError {
                            kind: ErrorType::Required,
                            field: "metadata.name".into(),
                            message: "Required value: name or generateName is required".into(),
                        }],
                    ))
                }
            },
        };
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.remove("deletionTimestamp");
        meta.remove("managedFields");
        if r.kind == "DaemonSet" {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        if let Some(ns) = ns {
            if !self.namespace_exists(ns).await? {
                return Err(ApiError::not_found("", "namespaces", ns));
            }
        }
        match r.kind {
            "DaemonSet" => {
                obj["status"] = json!({"currentNumberScheduled": 0, "desiredNumberScheduled": 0,
                    "numberMisscheduled": 0, "numberReady": 0});
            }
            "Pod" => {
                obj["status"] = json!({"phase": "Pending"});
            }
            "Namespace" => {
                obj["status"] = json!({"phase": "Active"});
            }
            _ => {}
        }
        let (normalized, warnings) = normalize(r, &obj, None, opts.validation, Some(self.policy))?;
        if opts.dry_run {
            return Ok(Written {
                object: Arc::new(normalized),
                warnings,
            });
        }
        let object = self
            .store
            .create(&r.key(), ns.unwrap_or(""), &name, normalized)
            .await
            .map_err(|e| store_error(r, e))?;
        Ok(Written { object, warnings })
    }

    pub async fn get(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        self.store
            .get(&r.key(), ns.unwrap_or(""), name)
            .await
            .map_err(|e| store_error(r, e))?
            .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))
    }

    /// The object a write of `candidate` to `part` of `old` stores (server-owned metadata kept,
    /// status or spec preserved, generation bumped on spec changes).
    fn merge_write(
        &self,
        r: &'static Resource,
        part: Part,
        old: &Value,
        mut candidate: Value,
        validation_mode: FieldValidation,
    ) -> Result<(Value, Vec<String>), ApiError> {
        check_gvk(r, &mut candidate)?;
        let old_name = meta_str(old, "name").unwrap_or("").to_string();
        let old_ns = meta_str(old, "namespace").map(str::to_string);
        {
            let meta = meta_mut(&mut candidate)?;
            match meta.get("name").and_then(Value::as_str) {
                None | Some("") => {
                    meta.insert("name".into(), json!(old_name));
                }
                Some(n) if n == old_name => {}
                Some(n) => {
                    return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({old_name})"
                )))
                }
            }
            match (&old_ns, meta.get("namespace").and_then(Value::as_str)) {
                (_, None) | (_, Some("")) => {}
                (Some(o), Some(n)) if o == n => {}
                _ => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
            }
            if let Some(ns) = &old_ns {
                meta.insert("namespace".into(), json!(ns));
            }
        }
        let mut merged = match part {
            Part::Status => {
                let mut m = old.clone();
                m["status"] = candidate.get("status").cloned().unwrap_or(Value::Null);
                if m["status"].is_null() {
                    if let Some(o) = m.as_object_mut() {
                        o.remove("status");
                    }
                }
                m
            }
            Part::Main => {
                let mut m = candidate.clone();
                if r.has_status {
                    match old.get("status") {
                        Some(s) => m["status"] = s.clone(),
                        None => {
                            if let Some(o) = m.as_object_mut() {
                                o.remove("status");
                            }
                        }
                    }
                }
                let meta = meta_mut(&mut m)?;
                for key in [
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "deletionTimestamp",
                ] {
                    match old.get("metadata").and_then(|om| om.get(key)) {
                        Some(v) => {
                            meta.insert(key.into(), v.clone());
                        }
                        None => {
                            meta.remove(key);
                        }
                    }
                }
                meta.remove("managedFields");
                m
            }
        };
        if let Some(meta) = merged.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(object_rv(old).to_string()));
        }
        // Field validation looks at what the client sent for the part it writes.
        // the policy guards what pods run; status writes of existing objects stay possible
        let policy = (part == Part::Main).then_some(self.policy);
        let (mut normalized, warnings) = normalize(r, &merged, Some(old), validation_mode, policy)?;
        if part == Part::Main && r.kind == "DaemonSet" && normalized.get("spec") != old.get("spec")
        {
            let gen = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            normalized["metadata"]["generation"] = json!(gen + 1);
        }
        Ok((normalized, warnings))
    }

    /// Replaces `part` of an object with what `make` derives from the current object; retries on
    /// a concurrent write unless the candidate names a resourceVersion (a precondition).
    pub async fn write_with<F>(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        name: &str,
        part: Part,
        opts: WriteOpts,
        make: F,
    ) -> Result<Written, ApiError>
    where
        F: Fn(&Value) -> Result<Value, ApiError>,
    {
        let key = r.key();
        let ns_key = ns.unwrap_or("");
        for _ in 0..16 {
            let old = self.get(r, ns, name).await?;
            let old_rv = object_rv(&old);
            let candidate = make(&old)?;
            let precondition = candidate
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion {s:?}"))
                    })
                })
                .transpose()?;
            if precondition.is_some_and(|p| p != old_rv) {
                return Err(ApiError::conflict(r.group, r.plural, name));
            }
            let (merged, warnings) = self.merge_write(r, part, &old, candidate, opts.validation)?;
            if merged == *old || opts.dry_run {
                let object = if merged == *old {
                    old
                } else {
                    Arc::new(merged)
                };
                return Ok(Written { object, warnings });
            }
            match self
                .store
                .update(&key, ns_key, name, merged, Some(old_rv))
                .await
            {
                Ok(object) => return Ok(Written { object, warnings }),
                Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
                Err(e) => return Err(store_error(r, e)),
            }
        }
        Err(ApiError::conflict(r.group, r.plural, name))
    }

    pub async fn delete(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        name: &str,
        precondition_rv: Option<u64>,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        if dry_run {
            return self.get(r, ns, name).await;
        }
        let deleted = self
            .store
            .delete(&r.key(), ns.unwrap_or(""), name, precondition_rv)
            .await
            .map_err(|e| store_error(r, e))?;
        if r.kind == "Namespace" {
            // Deleted at once with its contents (no Terminating phase, no finalizers).
            for nr in resources::ALL.iter().filter(|x| x.namespaced) {
                let (items, _) = self
                    .store
                    .list(&nr.key(), Some(name))
                    .await
                    .map_err(|e| store_error(nr, e))?;
                for item in items {
                    if let Some(n) = meta_str(&item, "name") {
                        match self.store.delete(&nr.key(), name, n, None).await {
                            Ok(_) | Err(StoreError::NotFound { .. }) => {}
                            Err(e) => return Err(store_error(nr, e)),
                        }
                    }
                }
            }
        }
        Ok(deleted)
    }
}

/// The label and field selectors of a list or watch.
struct Filter {
    labels: Option<Selector>,
    fields: Option<Selector>,
}

fn field_value(obj: &Value, key: &str) -> Option<String> {
    let mut cur = obj;
    for part in key.split('.') {
        cur = cur.get(part)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl Filter {
    fn from_query(q: &Query) -> Result<Filter, ApiError> {
        let labels = match q.get("labelSelector").filter(|s| !s.is_empty()) {
            Some(s) => Some(Selector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?),
            None => None,
        };
        let fields = match q.get("fieldSelector").filter(|s| !s.is_empty()) {
            Some(s) => {
                Some(Selector::parse_fields(s).map_err(|e| ApiError::bad_request(e.to_string()))?)
            }
            None => None,
        };
        Ok(Filter { labels, fields })
    }
    fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }
    fn matches(&self, obj: &Value) -> bool {
        if let Some(sel) = &self.labels {
            let labels = obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            if !sel.matches(&labels) {
                return false;
            }
        }
        if let Some(sel) = &self.fields {
            let get = |k: &str| -> Option<String> {
                field_value(obj, k).or_else(|| (k == "metadata.namespace").then(String::new))
            };
            if !sel.matches_with(&get) {
                return false;
            }
        }
        true
    }
}

/// A parsed resource URL.
struct Target {
    r: &'static Resource,
    ns: Option<String>,
    name: Option<String>,
    part: Part,
}

fn parse_target(group: &str, version: &str, segs: &[&str]) -> Result<Target, ApiError> {
    let (ns, rest): (Option<String>, &[&str]) = if segs.len() >= 3
        && segs[0] == "namespaces"
        && resources::find(group, version, segs[2]).is_some_and(|r| r.namespaced)
    {
        (Some(segs[1].to_string()), &segs[2..])
    } else {
        (None, segs)
    };
    let r = rest
        .first()
        .and_then(|p| resources::find(group, version, p))
        .ok_or_else(ApiError::path_not_found)?;
    let name = rest.get(1).map(|s| s.to_string());
    let part = match rest.get(2) {
        None => Part::Main,
        Some(&"status") if r.has_status => Part::Status,
        Some(_) => return Err(ApiError::path_not_found()),
    };
    if rest.len() > 3 || name.as_deref() == Some("") {
        return Err(ApiError::path_not_found());
    }
    if r.namespaced && ns.is_none() && name.is_some() {
        return Err(ApiError::path_not_found());
    }
    Ok(Target { r, ns, name, part })
}

fn parse_body(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    if content_type.contains("application/vnd.kubernetes.protobuf") {
        return super::protobuf::decode(body).map_err(|e| match e {
            super::protobuf::ProtobufError::Malformed => ApiError::bad_request(e.to_string()),
            super::protobuf::ProtobufError::Unsupported(_) => {
                ApiError::unsupported_media(e.to_string())
            }
        });
    }
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return Err(ApiError::unsupported_media(format!(
            "the body of the request was in an unsupported format {content_type:?}: this server accepts application/json and application/yaml"
        )));
    }
    let v: Value = if content_type.contains("yaml") {
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))?
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

async fn read_body(body: Incoming, content_length: Option<u64>) -> Result<Bytes, ApiError> {
    if content_length.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::too_large(MAX_BODY));
    }
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(MAX_BODY)),
        Err(e) => Err(ApiError::bad_request(format!(
            "error reading the request body: {e}"
        ))),
    }
}

fn with_warnings(mut resp: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let v = format!("299 - {:?}", w);
        if let Ok(h) = HeaderValue::from_str(&v) {
            resp.headers_mut().append(header::WARNING, h);
        }
    }
    resp
}

fn list_kind(r: &Resource) -> String {
    format!("{}List", r.kind)
}

/// Entry point for every request; never fails (errors become `Status` responses).
pub async fn handle(api: Arc<Api>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = match route(api, req).await {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    };
    log::debug!(method = method.as_str(), path = path.as_str(), code = resp.status().as_u16(); "request");
    resp
}

async fn route(api: Arc<Api>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let _user = authenticate(&req)?;
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let is_get = req.method() == Method::GET || req.method() == Method::HEAD;
    let discovery = |v: Option<Value>| -> Result<Response<Body>, ApiError> {
        if !is_get {
            return Err(ApiError::method_not_allowed(req.method().as_str()));
        }
        v.map(|v| json_response(200, &v))
            .ok_or_else(ApiError::path_not_found)
    };
    match segs.as_slice() {
        ["healthz" | "livez" | "readyz", ..] => {
            if !is_get {
                return Err(ApiError::method_not_allowed(req.method().as_str()));
            }
            Ok(bytes_response("text/plain; charset=utf-8", b"ok".to_vec()))
        }
        ["version"] => discovery(Some(discovery::version())),
        ["api"] => discovery(Some(discovery::api_versions())),
        ["apis"] => discovery(Some(discovery::api_group_list())),
        ["apis", g] => discovery(discovery::api_group(g)),
        ["api", v] => discovery(discovery::api_resource_list("", v)),
        ["apis", g, v] => discovery(discovery::api_resource_list(g, v)),
        ["openapi", "v2"] => {
            if !is_get {
                return Err(ApiError::method_not_allowed(req.method().as_str()));
            }
            Ok(bytes_response(
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                discovery::openapi_v2_protobuf(),
            ))
        }
        ["openapi", "v3"] => discovery(Some(discovery::openapi_v3_root())),
        ["openapi", "v3", rest @ ..] => {
            if !is_get {
                return Err(ApiError::method_not_allowed(req.method().as_str()));
            }
            let doc =
                discovery::openapi_v3_gv(&rest.join("/")).ok_or_else(ApiError::path_not_found)?;
            Ok(bytes_response("application/json", doc.to_vec()))
        }
        ["api", v, rest @ ..] => {
            let t = parse_target("", v, rest)?;
            resource(api, t, req).await
        }
        ["apis", g, v, rest @ ..] => {
            let t = parse_target(g, v, rest)?;
            resource(api, t, req).await
        }
        _ => Err(ApiError::path_not_found()),
    }
}

async fn resource(
    api: Arc<Api>,
    t: Target,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let query = Query::parse(req.uri().query());
    let header_str = |name| req.headers().get(name).and_then(|h| h.to_str().ok());
    let accept = header_str(header::ACCEPT).unwrap_or("").to_string();
    let content_type = header_str(header::CONTENT_TYPE)
        .unwrap_or("application/json")
        .to_string();
    let content_length = header_str(header::CONTENT_LENGTH).and_then(|s| s.parse::<u64>().ok());
    let method = req.method().clone();
    let r = t.r;
    let ns = t.ns.as_deref();
    match (&method, t.name.as_deref()) {
        (&Method::GET, None) if query.flag("watch") => watch(api, r, ns, &query, &accept).await,
        (&Method::GET, None) => list(api, r, ns, &query, &accept).await,
        (&Method::GET, Some(name)) => {
            let obj = api.get(r, ns, name).await?;
            if table::wants_table(&accept) {
                let include = query.get("includeObject").unwrap_or("Metadata");
                Ok(json_response(
                    200,
                    &table::table(r, &[&obj], None, include, Utc::now()),
                ))
            } else {
                Ok(json_response(200, &obj))
            }
        }
        (&Method::POST, None) if r.namespaced && ns.is_none() => {
            Err(ApiError::method_not_allowed(method.as_str()))
        }
        (&Method::POST, None) => {
            let opts = WriteOpts::from_query(&query)?;
            let body = read_body(req.into_body(), content_length).await?;
            let obj = parse_body(&content_type, &body)?;
            let w = api.create(r, ns, obj, opts).await?;
            Ok(with_warnings(json_response(201, &w.object), &w.warnings))
        }
        (&Method::PUT, Some(name)) => {
            let opts = WriteOpts::from_query(&query)?;
            let body = read_body(req.into_body(), content_length).await?;
            let obj = parse_body(&content_type, &body)?;
            let w = api
                .write_with(r, ns, name, t.part, opts, |_| Ok(obj.clone()))
                .await?;
            Ok(with_warnings(json_response(200, &w.object), &w.warnings))
        }
        (&Method::PATCH, Some(name)) => {
            let opts = WriteOpts::from_query(&query)?;
            let ct = content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            if ct == "application/apply-patch+yaml" {
                return Err(ApiError::unsupported_media(
                    "server-side apply (application/apply-patch+yaml) is not supported by this server: use client-side kubectl apply",
                ));
            }
            let schema = match r.kind {
                "DaemonSet" => &patch::DAEMONSET,
                "Node" => &patch::NODE,
                "Pod" => &patch::POD,
                _ => &patch::UNKNOWN,
            };
            let body = read_body(req.into_body(), content_length).await?;
            let patch_doc: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let apply = |old: &Value| -> Result<Value, ApiError> {
                let res = match ct.as_str() {
                    "application/json-patch+json" => patch::json_patch(old, &patch_doc),
                    "application/merge-patch+json" => patch::merge_patch(old, &patch_doc),
                    "application/strategic-merge-patch+json" => {
                        patch::strategic_merge_patch(old, &patch_doc, schema)
                    }
                    other => {
                        return Err(ApiError::unsupported_media(format!(
                            "the body of the request was in an unknown format {other:?}: accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
                        )))
                    }
                };
                let mut patched = res.map_err(|e| match e {
                    patch::PatchError::Invalid(_) => ApiError::bad_request(e.to_string()),
                    patch::PatchError::Conflict(_) => ApiError::new(422, "Invalid", e.to_string()),
                })?;
                // A patch that does not name a resourceVersion applies to whatever is current
                // (retried on a concurrent write); one that does is a precondition.
                let explicit = patch_doc.pointer("/metadata/resourceVersion").is_some()
                    || patch_doc.as_array().is_some_and(|ops| {
                        ops.iter().any(|op| {
                            op.get("path").and_then(Value::as_str)
                                == Some("/metadata/resourceVersion")
                        })
                    });
                if !explicit {
                    if let Some(m) = patched.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                    }
                }
                Ok(patched)
            };
            let w = api.write_with(r, ns, name, t.part, opts, apply).await?;
            Ok(with_warnings(json_response(200, &w.object), &w.warnings))
        }
        (&Method::DELETE, Some(name)) if t.part == Part::Main => {
            let opts = WriteOpts::from_query(&query)?;
            let body = read_body(req.into_body(), content_length).await?;
            let mut precondition = None;
            if !body.is_empty() {
                let options = parse_body(&content_type, &body)?;
                if let Some(rv) = options
                    .pointer("/preconditions/resourceVersion")
                    .and_then(Value::as_str)
                {
                    precondition = Some(rv.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                    })?);
                }
                if let Some(uid) = options
                    .pointer("/preconditions/uid")
                    .and_then(Value::as_str)
                {
                    let cur = api.get(r, ns, name).await?;
                    if meta_str(&cur, "uid") != Some(uid) {
                        return Err(ApiError::conflict(r.group, r.plural, name));
                    }
                }
            }
            let obj = api.delete(r, ns, name, precondition, opts.dry_run).await?;
            Ok(json_response(200, &obj))
        }
        (&Method::DELETE, None) => {
            let opts = WriteOpts::from_query(&query)?;
            let filter = Filter::from_query(&query)?;
            let (items, _) = api
                .store
                .list(&r.key(), ns)
                .await
                .map_err(|e| store_error(r, e))?;
            let mut deleted = Vec::new();
            for item in items.iter().filter(|o| filter.matches(o)) {
                let (ins, iname) = (
                    meta_str(item, "namespace"),
                    meta_str(item, "name").unwrap_or(""),
                );
                match api.delete(r, ins, iname, None, opts.dry_run).await {
                    Ok(o) => deleted.push((*o).clone()),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(json_response(
                200,
                &json!({"kind": list_kind(r), "apiVersion": r.api_version(),
                    "metadata": {"resourceVersion": api.store.current_rv().to_string()}, "items": deleted}),
            ))
        }
        _ => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

async fn list(
    api: Arc<Api>,
    r: &'static Resource,
    ns: Option<&str>,
    query: &Query,
    accept: &str,
) -> Result<Response<Body>, ApiError> {
    let filter = Filter::from_query(query)?;
    let (items, rv) = api
        .store
        .list(&r.key(), ns)
        .await
        .map_err(|e| store_error(r, e))?;
    let selected: Vec<&Value> = items
        .iter()
        .map(|a| &**a)
        .filter(|o| filter.matches(o))
        .collect();
    if table::wants_table(accept) {
        let include = query.get("includeObject").unwrap_or("Metadata");
        return Ok(json_response(
            200,
            &table::table(r, &selected, Some(rv), include, Utc::now()),
        ));
    }
    Ok(json_response(
        200,
        &json!({
            "kind": list_kind(r),
            "apiVersion": r.api_version(),
            "metadata": {"resourceVersion": rv.to_string()},
            "items": selected,
        }),
    ))
}

/// How one watcher renders events.
struct WatchRender {
    r: &'static Resource,
    ns: Option<String>,
    filter: Filter,
    table: bool,
}

impl WatchRender {
    fn line(&self, event_type: &str, obj: &Value) -> Bytes {
        let object = if self.table {
            table::table(self.r, &[obj], None, "Metadata", Utc::now())
        } else {
            obj.clone()
        };
        let mut v =
            serde_json::to_vec(&json!({"type": event_type, "object": object})).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }

    /// The line this watcher sends for `ev`, if any.
    fn render(&self, ev: &WatchEvent) -> Option<Bytes> {
        if ev.resource != self.r.key() || self.ns.as_ref().is_some_and(|ns| *ns != ev.namespace) {
            return None;
        }
        if self.filter.is_empty() {
            if self.table {
                return Some(self.line(ev.event_type.as_str(), &ev.object));
            }
            return Some(ev.line.clone());
        }
        let now = self.filter.matches(&ev.object);
        let before = ev.prev.as_ref().is_some_and(|p| self.filter.matches(p));
        let ty = match (ev.event_type, before, now) {
            (EventType::Added, _, true) => "ADDED",
            (EventType::Deleted, _, true) => "DELETED",
            (EventType::Modified, true, true) => "MODIFIED",
            (EventType::Modified, false, true) => "ADDED",
            (EventType::Modified, true, false) => "DELETED",
            _ => return None,
        };
        if ty == ev.event_type.as_str() && !self.table {
            return Some(ev.line.clone());
        }
        Some(self.line(ty, &ev.object))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.r.kind, "apiVersion": self.r.api_version(), "metadata": meta});
        let mut v =
            serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }
}

fn error_line(e: &ApiError) -> Bytes {
    let mut v =
        serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_status()})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

struct WatchState {
    render: WatchRender,
    pending: VecDeque<Bytes>,
    rx: Option<broadcast::Receiver<Arc<WatchEvent>>>,
    deadline: tokio::time::Instant,
    bookmarks: Option<tokio::time::Interval>,
    last_rv: u64,
}

async fn next_line(mut st: WatchState) -> Option<(Result<Frame<Bytes>, Infallible>, WatchState)> {
    loop {
        if let Some(line) = st.pending.pop_front() {
            return Some((Ok(Frame::data(line)), st));
        }
        let rx = st.rx.as_mut()?;
        let tick = async {
            match st.bookmarks.as_mut() {
                Some(iv) => {
                    iv.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    st.last_rv = st.last_rv.max(ev.rv);
                    if let Some(line) = st.render.render(&ev) {
                        return Some((Ok(Frame::data(line)), st));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    log::warn!(resource = st.render.r.key().as_str(), missed = n; "watcher too slow, closing its watch");
                    st.pending.push_back(error_line(&ApiError::gone(
                        "the watch fell too far behind: relist and watch again",
                    )));
                    st.rx = None;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            _ = tokio::time::sleep_until(st.deadline) => return None,
            _ = tick => {
                let line = st.render.bookmark(st.last_rv, false);
                return Some((Ok(Frame::data(line)), st));
            }
        }
    }
}

async fn watch(
    api: Arc<Api>,
    r: &'static Resource,
    ns: Option<&str>,
    query: &Query,
    accept: &str,
) -> Result<Response<Body>, ApiError> {
    let filter = Filter::from_query(query)?;
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let allow_bookmarks = query.flag("allowWatchBookmarks");
    let send_initial = query.get("sendInitialEvents");
    let rv_param = query.get("resourceVersion").unwrap_or("");
    if send_initial == Some("true")
        && (!allow_bookmarks || query.get("resourceVersionMatch") != Some("NotOlderThan"))
    {
        return Err(ApiError::new(
            422,
            "Invalid",
            "sendInitialEvents requires allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan",
        ));
    }
    let from = match (rv_param, send_initial) {
        (_, Some("true")) => WatchFrom::Current { initial: true },
        ("" | "0", Some("false")) => WatchFrom::Current { initial: false },
        ("" | "0", _) => WatchFrom::Current { initial: true },
        (rv, _) => WatchFrom::After(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let render = WatchRender {
        r,
        ns: ns.map(str::to_string),
        filter,
        table: table::wants_table(accept),
    };
    let mut pending = VecDeque::new();
    let (rx, last_rv) = match api.store.watch(Some(&r.key()), ns, from).await {
        Ok(w) => {
            for ev in &w.initial {
                if let Some(line) = render.render(ev) {
                    pending.push_back(line);
                }
            }
            if send_initial == Some("true") {
                pending.push_back(render.bookmark(w.rv, true));
            }
            (Some(w.rx), w.rv)
        }
        Err(e @ StoreError::Expired { .. }) => {
            pending.push_back(error_line(&store_error(r, e)));
            (None, 0)
        }
        Err(e) => return Err(store_error(r, e)),
    };
    let bookmarks = allow_bookmarks.then(|| {
        let mut iv = tokio::time::interval_at(
            tokio::time::Instant::now() + BOOKMARK_INTERVAL,
            BOOKMARK_INTERVAL,
        );
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        iv
    });
    let state = WatchState {
        render,
        pending,
        rx,
        deadline: tokio::time::Instant::now() + timeout,
        bookmarks,
        last_rv,
    };
    let stream = futures::stream::unfold(state, next_line);
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let cases = [
            ("labelSelector=app%3Dx%2Cb", "labelSelector", "app=x,b"),
            (
                "fieldSelector=metadata.name%3Dds1&watch=1",
                "fieldSelector",
                "metadata.name=ds1",
            ),
            ("a=b+c", "a", "b c"),
            ("a=100%", "a", "100%"),
        ];
        for (q, k, want) in cases {
            assert_eq!(Query::parse(Some(q)).get(k), Some(want), "{q}");
        }
    }

    #[test]
    fn unknown_fields_are_found_by_round_trip() {
        let input =
            json!({"spec": {"foo": 1, "containers": [{"name": "c", "imagez": "x"}], "n": null}});
        let typed = json!({"spec": {"containers": [{"name": "c"}]}});
        let mut out = Vec::new();
        unknown_fields(&input, &typed, "", &mut out);
        assert_eq!(out, vec!["spec.foo", "spec.containers[0].imagez"]);
    }

    #[test]
    fn targets() {
        type Want<'a> = Option<(&'a str, Option<&'a str>, Option<&'a str>, Part)>;
        let cases: [(&str, &str, &str, Want); 7] = [
            (
                "apps",
                "v1",
                "namespaces/default/daemonsets",
                Some(("DaemonSet", Some("default"), None, Part::Main)),
            ),
            (
                "apps",
                "v1",
                "daemonsets",
                Some(("DaemonSet", None, None, Part::Main)),
            ),
            (
                "apps",
                "v1",
                "namespaces/d/daemonsets/x/status",
                Some(("DaemonSet", Some("d"), Some("x"), Part::Status)),
            ),
            (
                "",
                "v1",
                "namespaces/kube-system",
                Some(("Namespace", None, Some("kube-system"), Part::Main)),
            ),
            (
                "",
                "v1",
                "nodes/n1/status",
                Some(("Node", None, Some("n1"), Part::Status)),
            ),
            ("", "v1", "pods/x", None),
            ("apps", "v1", "namespaces/d/daemonsets/x/scale", None),
        ];
        for (g, v, path, want) in cases {
            let segs: Vec<&str> = path.split('/').collect();
            let got = parse_target(g, v, &segs)
                .ok()
                .map(|t| (t.r.kind, t.ns, t.name, t.part));
            let want = want.map(|(k, ns, n, p)| (k, ns.map(String::from), n.map(String::from), p));
            assert_eq!(got, want, "{path}");
        }
    }

    async fn watch_lines(
        api: &Arc<Api>,
        resp: Response<Body>,
        writes: Vec<(&str, Value)>,
    ) -> Vec<Value> {
        for (name, obj) in writes {
            match api.store.get("nodes", "", name).await.unwrap() {
                Some(_) => api
                    .store
                    .update("nodes", "", name, obj, None)
                    .await
                    .unwrap(),
                None => api.store.create("nodes", "", name, obj).await.unwrap(),
            };
        }
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(3), body.frame()).await
        {
            let Ok(data) = frame.unwrap().into_data() else {
                continue;
            };
            for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                out.push(serde_json::from_slice::<Value>(line).unwrap());
            }
        }
        out
    }

    fn node(name: &str, labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}})
    }

    fn test_api(dir: &tempfile::TempDir, ring: usize) -> Arc<Api> {
        let store = super::super::store::SqliteStore::open(&dir.path().join("s.db"), ring).unwrap();
        Arc::new(Api {
            store: Arc::new(store),
            policy: Default::default(),
        })
    }

    #[tokio::test]
    async fn label_selected_watch_sees_objects_enter_and_leave() {
        let dir = tempfile::tempdir().unwrap();
        let api = test_api(&dir, 100);
        let q = Query::parse(Some("watch=1&timeoutSeconds=1&labelSelector=a%3Db"));
        let resp = watch(api.clone(), &resources::NODES, None, &q, "")
            .await
            .unwrap();
        let lines = watch_lines(
            &api,
            resp,
            vec![
                ("n1", node("n1", json!({"a": "b"}))),
                ("n1", node("n1", json!({"a": "c"}))),
                ("n2", node("n2", json!({}))),
                ("n1", node("n1", json!({"a": "b", "x": "y"}))),
                ("n1", node("n1", json!({"a": "b"}))),
            ],
        )
        .await;
        let got: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| {
                (
                    l["type"].as_str().unwrap(),
                    l["object"]["metadata"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("ADDED", "n1"),
                ("DELETED", "n1"),
                ("ADDED", "n1"),
                ("MODIFIED", "n1")
            ]
        );
    }

    #[tokio::test]
    async fn initial_events_end_with_a_bookmark() {
        let dir = tempfile::tempdir().unwrap();
        let api = test_api(&dir, 100);
        api.store
            .create("nodes", "", "n1", node("n1", json!({})))
            .await
            .unwrap();
        let q = Query::parse(Some(
            "watch=1&timeoutSeconds=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan",
        ));
        let resp = watch(api.clone(), &resources::NODES, None, &q, "")
            .await
            .unwrap();
        let lines = watch_lines(&api, resp, vec![]).await;
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["type"], "ADDED");
        assert_eq!(lines[1]["type"], "BOOKMARK");
        assert_eq!(lines[1]["object"]["metadata"]["resourceVersion"], "1");
        assert_eq!(
            lines[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_dropped_with_410() {
        let dir = tempfile::tempdir().unwrap();
        // Ring of 4: the broadcast buffer holds 16 events.
        let api = test_api(&dir, 4);
        let q = Query::parse(Some("watch=1&resourceVersion=0"));
        let resp = watch(api.clone(), &resources::NODES, None, &q, "")
            .await
            .unwrap();
        let writes: Vec<(String, Value)> = (0..40)
            .map(|i| (format!("n{i}"), node(&format!("n{i}"), json!({}))))
            .collect();
        let lines = watch_lines(
            &api,
            resp,
            writes
                .iter()
                .map(|(n, v)| (n.as_str(), v.clone()))
                .collect(),
        )
        .await;
        let last = lines.last().unwrap();
        assert_eq!(last["type"], "ERROR");
        assert_eq!(last["object"]["code"], 410);
        assert!(lines.len() < 40);
    }

    #[tokio::test]
    async fn field_validation_modes() {
        let dir = tempfile::tempdir().unwrap();
        let api = test_api(&dir, 100);
        let with_typo = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "a", "labelz": {"x": "y"}}, "spec": {"foo": 1}});
        let opts = |validation| WriteOpts {
            dry_run: false,
            validation,
        };
        let strict = api
            .create(
                &resources::NAMESPACES,
                None,
                with_typo.clone(),
                opts(FieldValidation::Strict),
            )
            .await
            .err()
            .expect("strict refuses unknown fields");
        assert_eq!(strict.code, 400);
        assert!(
            strict
                .message
                .contains("unknown field \"metadata.labelz\", unknown field \"spec.foo\""),
            "{}",
            strict.message
        );
        let warned = api
            .create(
                &resources::NAMESPACES,
                None,
                with_typo.clone(),
                opts(FieldValidation::Warn),
            )
            .await
            .unwrap();
        assert_eq!(
            warned.warnings,
            [
                "unknown field \"metadata.labelz\"",
                "unknown field \"spec.foo\""
            ]
        );
        assert!(
            warned.object["metadata"].get("labelz").is_none(),
            "unknown fields are dropped"
        );
        let mut other = with_typo;
        other["metadata"]["name"] = json!("b");
        let ignored = api
            .create(
                &resources::NAMESPACES,
                None,
                other,
                opts(FieldValidation::Ignore),
            )
            .await
            .unwrap();
        assert!(ignored.warnings.is_empty());
    }
}
