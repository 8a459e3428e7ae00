//! The HTTP layer: authenticates the request, routes its path (health, discovery, OpenAPI, a
//! resource, a subresource), reads the body and the query options, calls the verb and renders
//! the answer (objects, lists, Tables, `Status` errors, `Warning` headers).
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use http::{header, Method, Request, Response};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::apply;
use super::audit::{self, Client, Line};
use super::auth::{authenticate, authorize_selection, User, Verb};
use super::body::{
    bytes_response, error_response, json_response, parse_body, read_body, with_warnings, Body,
    BodyTimeout, BODY_READ_TIMEOUT,
};
use super::discovery;
use super::query::{self, Filter, ListOpts, Query};
use super::resources::{self, Resource};
use super::status::ApiError;
use super::subresource::Subresource;
use super::table;
use super::verbs::{Api, DeleteOptions, ObjectRef, Part, PatchType};
use super::watch;

/// A parsed resource URL.
struct Target {
    r: &'static Resource,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<&'static Subresource>,
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
    let sub = match rest.get(2) {
        None => None,
        Some(s) => Some(r.subresource(s).ok_or_else(ApiError::path_not_found)?),
    };
    // (a proxy subresource carries the path it proxies to after it)
    let proxied = sub.is_some_and(|s| s.name == "proxy");
    if (rest.len() > 3 && !proxied) || name.as_deref() == Some("") {
        return Err(ApiError::path_not_found());
    }
    if r.namespaced && ns.is_none() && name.is_some() {
        return Err(ApiError::path_not_found());
    }
    Ok(Target { r, ns, name, sub })
}

/// Bodies at least this big are decoded on a blocking thread.
const BLOCKING_PARSE: usize = 64 * 1024;

/// A request to a resource or subresource, with what the handlers need of it.
pub struct RestRequest {
    pub user: User,
    pub method: Method,
    pub query: Query,
    pub accept: String,
    pub content_type: String,
    /// The `User-Agent` (its prefix names the field manager of a write without `fieldManager`).
    pub user_agent: String,
    /// The URL's path and raw query (what a proxy subresource passes on).
    pub path: String,
    pub raw_query: Option<String>,
    /// The request's headers (an upgrade's are passed on to the node API).
    pub headers: http::HeaderMap,
    /// The connection, once the answer is a 101 (an HTTP/1.1 request asking for an upgrade).
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
    content_length: Option<u64>,
    body_timeout: std::time::Duration,
    body: Incoming,
}

impl RestRequest {
    fn new(user: User, req: Request<Incoming>) -> RestRequest {
        let (mut parts, body) = req.into_parts();
        let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let header_str = |name| parts.headers.get(name).and_then(|h| h.to_str().ok());
        RestRequest {
            accept: header_str(header::ACCEPT).unwrap_or("").to_string(),
            content_type: header_str(header::CONTENT_TYPE)
                .unwrap_or("application/json")
                .to_string(),
            user_agent: header_str(header::USER_AGENT).unwrap_or("").to_string(),
            content_length: header_str(header::CONTENT_LENGTH).and_then(|s| s.parse().ok()),
            body_timeout: parts
                .extensions
                .get::<BodyTimeout>()
                .map_or(BODY_READ_TIMEOUT, |t| t.0),
            query: Query::parse(parts.uri.query()),
            path: parts.uri.path().to_string(),
            raw_query: parts.uri.query().map(str::to_string),
            method: parts.method,
            headers: parts.headers,
            upgrade,
            user,
            body,
        }
    }
    /// The raw body (at most `MAX_BODY`).
    pub async fn bytes(self) -> Result<Bytes, ApiError> {
        read_body(self.body, self.content_length, self.body_timeout).await
    }
    /// The body as an object (JSON, YAML or protobuf).
    pub async fn object(self) -> Result<Value, ApiError> {
        let content_type = self.content_type.clone();
        let body = self.bytes().await?;
        if body.len() < BLOCKING_PARSE {
            return parse_body(&content_type, &body);
        }
        // a big body is decoded beside the runtime's two workers, so other requests go on
        tokio::task::spawn_blocking(move || parse_body(&content_type, &body))
            .await
            .map_err(|e| ApiError::internal(format!("decoding the request body: {e}")))?
    }
    /// The media type without parameters.
    fn media_type(&self) -> String {
        let ct = self.content_type.split(';').next().unwrap_or("");
        ct.trim().to_string()
    }
}

/// What the request log needs of a request, filled in as routing learns it.
#[derive(Default)]
struct Seen {
    user: Option<User>,
    resource: Option<&'static str>,
    subresource: Option<&'static str>,
    namespace: Option<String>,
    name: Option<String>,
    watch: bool,
    reason: Option<String>,
}

impl Seen {
    /// Notes the resource a request is for, and passes it on.
    fn target(&mut self, t: Target) -> Target {
        self.resource = Some(t.r.plural);
        self.subresource = t.sub.map(|s| s.name);
        self.namespace = t.ns.clone();
        self.name = t.name.clone();
        t
    }
    /// The request to a resource, noting whether it is a watch.
    fn request(&mut self, user: User, req: Request<Incoming>) -> RestRequest {
        let req = RestRequest::new(user, req);
        self.watch = req.query.flag("watch");
        req
    }
}

/// The Kubernetes verb of a request (what RBAC and the audit log call it).
fn verb(method: &Method, seen: &Seen) -> &'static str {
    let named = seen.name.is_some();
    match *method {
        Method::GET | Method::HEAD if seen.watch => "watch",
        Method::GET | Method::HEAD if named || seen.resource.is_none() => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "-",
    }
}

/// Entry point for every request; never fails (errors become `Status` responses). A refused or
/// failed request leaves a line in the request log, a write an audit line (see `audit`).
pub async fn handle(api: Arc<Api>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let client = req.extensions().get::<Client>().cloned();
    let mut seen = Seen::default();
    let started = std::time::Instant::now();
    let resp = match route(api, req, &mut seen).await {
        Ok(resp) => resp,
        Err(e) => {
            seen.reason = Some(format!("{}: {}", e.reason, e.message));
            error_response(&e)
        }
    };
    let status = resp.status().as_u16();
    let resource = seen.resource.unwrap_or("");
    let verb = super::metrics::metric_verb(verb(&method, &seen));
    let sub = seen.subresource.unwrap_or("");
    super::metrics::observe(
        verb,
        (resource, sub),
        status,
        started.elapsed().as_secs_f64(),
    );
    let resp = if seen.watch && status == 200 {
        resp.map(|b| super::metrics::watching(resource, b))
    } else {
        resp
    };
    tracing::debug!(
        method = method.as_str(),
        path = path.as_str(),
        code = status,
        "request"
    );
    if let Some(client) = client {
        log_request(&client, &method, path, status, seen);
    }
    resp
}

fn log_request(client: &Client, method: &Method, path: String, status: u16, seen: Seen) {
    let verb = verb(method, &seen);
    let user = audit::user_name(seen.user.as_ref()).to_string();
    let write = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if let (true, Some(resource)) = (write, seen.resource) {
        client.log.record(Line::Write {
            client: client.addr,
            user: user.clone(),
            verb,
            resource,
            namespace: seen.namespace.unwrap_or_default(),
            name: seen.name.clone().unwrap_or_default(),
            status,
        });
    }
    if status >= 400 {
        client.log.record(Line::Refused {
            client: client.addr,
            user,
            verb,
            path,
            status,
            reason: audit::short_reason(seen.reason.as_deref().unwrap_or("")),
        });
    }
}

async fn route(
    api: Arc<Api>,
    req: Request<Incoming>,
    seen: &mut Seen,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let is_get = req.method() == Method::GET || req.method() == Method::HEAD;
    let only_get = || {
        if is_get {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(req.method().as_str()))
        }
    };
    let discovery = |v: Option<Value>| -> Result<Response<Body>, ApiError> {
        only_get()?;
        v.map(|v| json_response(200, &v))
            .ok_or_else(ApiError::path_not_found)
    };
    // the health paths and /version answer everyone, as kube-apiserver's do; nothing else does
    match segs.as_slice() {
        ["healthz" | "livez" | "readyz", ..] => {
            only_get()?;
            return Ok(bytes_response("text/plain; charset=utf-8", b"ok".to_vec()));
        }
        ["version"] => return discovery(Some(discovery::version())),
        _ => {}
    }
    let user = authenticate(&*api.store, api.service_accounts.get().map(|i| &**i), &req).await?;
    seen.user = Some(user.clone());
    match segs.as_slice() {
        ["metrics"] => {
            only_get()?;
            let text = super::metrics::serve(&api, &user).await?;
            Ok(bytes_response(
                crate::metrics::CONTENT_TYPE,
                text.into_bytes(),
            ))
        }
        ["api"] => discovery(Some(discovery::api_versions())),
        ["apis"] => {
            let mut groups = discovery::api_group_list();
            if let Some(list) = groups["groups"].as_array_mut() {
                list.push(super::kinds::metrics::group());
            }
            discovery(Some(groups))
        }
        ["apis", super::kinds::metrics::GROUP, rest @ ..] => {
            let req = seen.request(user, req);
            super::kinds::metrics::serve(api, rest, req).await
        }
        ["apis", g] => discovery(discovery::api_group(g)),
        ["api", v] => discovery(discovery::api_resource_list("", v)),
        ["apis", g, v] => discovery(discovery::api_resource_list(g, v)),
        ["openapi", "v2"] => {
            only_get()?;
            Ok(bytes_response(
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                discovery::openapi_v2_protobuf(),
            ))
        }
        ["openapi", "v3"] => discovery(Some(discovery::openapi_v3_root())),
        ["openapi", "v3", rest @ ..] => {
            only_get()?;
            let doc =
                discovery::openapi_v3_gv(&rest.join("/")).ok_or_else(ApiError::path_not_found)?;
            Ok(bytes_response("application/json", doc.to_vec()))
        }
        ["api", v, rest @ ..] => {
            let t = parse_target("", v, rest)?;
            let req = seen.request(user, req);
            resource(api, seen.target(t), req).await
        }
        ["apis", g, v, rest @ ..] => {
            let t = parse_target(g, v, rest)?;
            let req = seen.request(user, req);
            resource(api, seen.target(t), req).await
        }
        _ => Err(ApiError::path_not_found()),
    }
}

async fn resource(api: Arc<Api>, t: Target, req: RestRequest) -> Result<Response<Body>, ApiError> {
    let r = t.r;
    let ns = t.ns.as_deref();
    if let (Some(sub), Some(name)) = (t.sub, t.name.as_deref()) {
        return sub.rest.serve(api, ObjectRef::new(r, ns, name), req).await;
    }
    if let Some(c) = r.strategy.conversion() {
        return super::converted::serve(api, r, c, ns, t.name.as_deref(), req).await;
    }
    let at = |name| ObjectRef::new(r, ns, name);
    let verb = match (&req.method, t.name.as_deref()) {
        (&Method::GET, None) if req.query.flag("watch") => Some(Verb::Watch),
        (&Method::GET, None) => Some(Verb::List),
        (&Method::GET, Some(_)) => Some(Verb::Get),
        (&Method::POST, None) => Some(Verb::Create),
        (&Method::PUT, Some(_)) => Some(Verb::Update),
        (&Method::PATCH, Some(_)) => Some(Verb::Patch),
        (&Method::DELETE, Some(_)) => Some(Verb::Delete),
        (&Method::DELETE, None) => Some(Verb::DeleteCollection),
        _ => None,
    };
    let mut req = req;
    if matches!(
        verb,
        Some(Verb::List | Verb::Watch | Verb::DeleteCollection)
    ) {
        super::converted::kind_field_labels(r, &mut req.query)?;
    }
    if let Some(v) = verb {
        // what the resource does not serve (a review's get, a namespace's deletecollection)
        if !r.verbs.contains(&v.as_str()) {
            return Err(ApiError::method_not_allowed(req.method.as_str()));
        }
        authorize_selection(&req.user, v, r, ns, &req.query)?;
    }
    match (&req.method, t.name.as_deref()) {
        (&Method::GET, None) if req.query.flag("watch") => {
            watch::watch(api, &req.user, r, ns, &req.query, &req.accept).await
        }
        (&Method::GET, None) => list(&api, r, ns, req).await,
        (&Method::GET, Some(name)) => get_object(&api, at(name), Part::Main, req).await,
        (&Method::POST, None) if r.namespaced && ns.is_none() => {
            Err(ApiError::method_not_allowed(req.method.as_str()))
        }
        (&Method::POST, None) => {
            let opts = apply::write_opts(&req, "CreateOptions")?;
            let user = req.user.clone();
            let obj = req.object().await?;
            let w = api.create(&user, r, ns, obj, opts).await?;
            Ok(with_warnings(json_response(201, &w.object), &w.warnings))
        }
        (&Method::PUT, Some(name)) => update_object(&api, at(name), Part::Main, req).await,
        (&Method::PATCH, Some(name)) => patch_object(&api, at(name), Part::Main, req).await,
        (&Method::DELETE, name) => delete_on(&api, r, ns, name, req).await,
        (method, _) => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

fn list_body<T: serde::Serialize>(r: &Resource, rv: u64, items: &[T]) -> Value {
    json!({
        "kind": format!("{}List", r.kind),
        "apiVersion": r.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })
}

/// The `includeObject` of a Table request.
fn include_object(query: &Query) -> &str {
    query.get("includeObject").unwrap_or("Metadata")
}

async fn list(
    api: &Api,
    r: &'static Resource,
    ns: Option<&str>,
    req: RestRequest,
) -> Result<Response<Body>, ApiError> {
    let filter = Filter::from_query(&req.query)?;
    let opts = ListOpts::from_query(&req.query)?;
    let page = api.list_page(&req.user, r, ns, &filter, &opts).await?;
    let items: Vec<&Value> = page.items.iter().map(|a| &**a).collect();
    let mut body = if table::wants_table(&req.accept) {
        table::table(
            r,
            &items,
            Some(page.rv),
            include_object(&req.query),
            Utc::now(),
        )
    } else {
        list_body(r, page.rv, &items)
    };
    if let Some(token) = page.continue_token {
        body["metadata"]["continue"] = json!(token);
    }
    if let Some(n) = page.remaining {
        body["metadata"]["remainingItemCount"] = json!(n);
    }
    Ok(json_response(200, &body))
}

/// A read at a resourceVersion the store has not reached waits for it a little, then gets
/// kube-apiserver's 504 "Too large resource version" (so the client retries or relists).
async fn wait_for_resource_version(api: &Api, query: &Query) -> Result<(), ApiError> {
    match query::resource_version(query)? {
        Some(rv) => query::fresh_enough(&*api.store, rv).await,
        None => Ok(()),
    }
}

/// GET of an object or its status, as JSON or as a Table.
pub async fn get_object(
    api: &Api,
    at: ObjectRef<'_>,
    part: Part,
    req: RestRequest,
) -> Result<Response<Body>, ApiError> {
    wait_for_resource_version(api, &req.query).await?;
    let obj = api.get_part(&req.user, at, part).await?;
    if table::wants_table(&req.accept) {
        let t = table::table(at.r, &[&obj], None, include_object(&req.query), Utc::now());
        return Ok(json_response(200, &t));
    }
    Ok(json_response(200, &obj))
}

/// PUT of an object or its status.
pub async fn update_object(
    api: &Api,
    at: ObjectRef<'_>,
    part: Part,
    req: RestRequest,
) -> Result<Response<Body>, ApiError> {
    let opts = apply::write_opts(&req, "UpdateOptions")?;
    let user = req.user.clone();
    let obj = req.object().await?;
    let w = api.update(&user, at, part, obj, opts).await?;
    Ok(with_warnings(json_response(200, &w.object), &w.warnings))
}

/// PATCH of an object or its status (JSON patch, merge patch, strategic merge patch, apply).
pub async fn patch_object(
    api: &Api,
    at: ObjectRef<'_>,
    part: Part,
    req: RestRequest,
) -> Result<Response<Body>, ApiError> {
    if req.media_type() == apply::APPLY_PATCH {
        return apply::patch(api, at, part, req).await;
    }
    if req.query.get("force").is_some() {
        return Err(ApiError::bad_request(
            "force: Forbidden: may not be specified for non-apply patch",
        ));
    }
    let opts = apply::write_opts(&req, "PatchOptions")?;
    let ty = PatchType::from_content_type(&req.media_type())?;
    let user = req.user.clone();
    let body = req.bytes().await?;
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let w = api.patch(&user, at, part, ty, &doc, opts).await?;
    Ok(with_warnings(json_response(200, &w.object), &w.warnings))
}

/// The `DeleteOptions` of a DELETE: its body, or its query.
async fn delete_options(mut req: RestRequest) -> Result<DeleteOptions, ApiError> {
    let query = std::mem::take(&mut req.query);
    let content_type = req.content_type.clone();
    let body = req.bytes().await?;
    let body = match body.is_empty() {
        true => None,
        false => Some(parse_body(&content_type, &body)?),
    };
    DeleteOptions::from_request(&query, body.as_ref())
}

/// DELETE of the object `name`, or of the collection (selected by the query) without one.
pub async fn delete_on(
    api: &Api,
    r: &'static Resource,
    ns: Option<&str>,
    name: Option<&str>,
    req: RestRequest,
) -> Result<Response<Body>, ApiError> {
    let user = req.user.clone();
    match name {
        Some(name) => {
            let opts = delete_options(req).await?;
            let obj = api
                .delete(&user, ObjectRef::new(r, ns, name), &opts)
                .await?;
            Ok(json_response(200, &obj))
        }
        None => {
            let filter = Filter::from_query(&req.query)?;
            let opts = delete_options(req).await?;
            let (deleted, rv) = api.delete_collection(&user, r, ns, &filter, &opts).await?;
            Ok(json_response(200, &list_body(r, rv, &deleted)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        type Want<'a> = Option<(&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>)>;
        let cases: [(&str, &str, &str, Want); 8] = [
            (
                "apps",
                "v1",
                "namespaces/default/daemonsets",
                Some(("DaemonSet", Some("default"), None, None)),
            ),
            (
                "apps",
                "v1",
                "daemonsets",
                Some(("DaemonSet", None, None, None)),
            ),
            (
                "apps",
                "v1",
                "namespaces/d/daemonsets/x/status",
                Some(("DaemonSet", Some("d"), Some("x"), Some("status"))),
            ),
            (
                "",
                "v1",
                "namespaces/kube-system",
                Some(("Namespace", None, Some("kube-system"), None)),
            ),
            (
                "",
                "v1",
                "nodes/n1/status",
                Some(("Node", None, Some("n1"), Some("status"))),
            ),
            ("", "v1", "pods/x", None),
            ("apps", "v1", "namespaces/d/daemonsets/x/scale", None),
            ("", "v1", "namespaces/x/status", None),
        ];
        for (g, v, path, want) in cases {
            let segs: Vec<&str> = path.split('/').collect();
            let got = parse_target(g, v, &segs)
                .ok()
                .map(|t| (t.r.kind, t.ns, t.name, t.sub.map(|s| s.name)));
            let want = want.map(|(k, ns, n, s)| (k, ns.map(String::from), n.map(String::from), s));
            assert_eq!(got, want, "{path}");
        }
    }
}
