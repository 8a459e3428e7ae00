//! The subresources the server proxies to a node's API (`agent::nodeapi`, the kubelet's port), as
//! kube-apiserver does to kubelets: `pods/log` (`kubectl logs`), `pods/exec` and `pods/attach`
//! (upgraded connections: `kubectl exec`, `attach`) and `nodes/proxy`.
//!
//! The caller is authorized for the subresource first (`auth::authz`: an admin may; a viewer may
//! read `pods/log` but not `nodes/proxy`; a node may do neither, not even for its own pods), then
//! the server dials the node's `InternalIP` (else its first address) at
//! `status.daemonEndpoints.kubeletEndpoint.Port` over TLS, verifying the node's serving
//! certificate against the cluster CA and presenting its own kubelet client certificate
//! (`kube-apiserver-kubelet-client`, O `system:masters`, issued at start and kept in memory).
//! Responses stream through frame by frame, never buffered whole. An upgrade (WebSocket, SPDY)
//! is asked of the node with the client's upgrade headers; when the node switches protocols the
//! server answers 101 with the node's headers and then copies bytes both ways between the two
//! upgraded connections. A node that cannot be reached is a 503 `Status` naming the node and the
//! cause.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, Method, Request, Response, Uri};
use http_body_util::{BodyExt as _, Empty, StreamBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::auth::{authorize, User, Verb};
use super::body::Body;
use super::kinds::NODES;
use super::router::RestRequest;
use super::status::ApiError;
use super::subresource::{Subresource, SubresourceRest};
use super::verbs::{Api, ObjectRef, Part};
use crate::pki::{Ca, PkiError};

/// The kubelet client identity kubeadm gives kube-apiserver.
pub const KUBELET_CLIENT_CN: &str = "kube-apiserver-kubelet-client";
/// The kubelet's port, when a Node does not say.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;
/// A node must accept the connection within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// And answer with headers within this.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// The kubelet client certificate's life (a new one at every start).
const CLIENT_CERT_DAYS: i64 = 365;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the kubelet client certificate")]
    Pki(#[source] PkiError),
    #[error("the kubelet client's TLS configuration")]
    Tls(#[source] rustls::Error),
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The server's client of node APIs.
pub struct KubeletClient {
    client: Client<Connector, Empty<Bytes>>,
    /// The nodes' last resource metrics scrapes (`kinds::metrics`).
    pub metrics: super::kinds::metrics::Cache,
}

impl std::fmt::Debug for KubeletClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletClient").finish_non_exhaustive()
    }
}

impl KubeletClient {
    /// A client trusting `ca` for nodes' serving certificates, with a new kubelet client
    /// certificate issued by `ca` (valid from `now`).
    pub fn new(ca: &Ca, now: i64) -> Result<KubeletClient, ProxyError> {
        use rustls::pki_types::pem::PemObject as _;
        let issued = ca
            .issue_client(
                KUBELET_CLIENT_CN,
                super::auth::SYSTEM_MASTERS,
                now - 60,
                now + CLIENT_CERT_DAYS * 86_400,
            )
            .map_err(ProxyError::Pki)?;
        let chain =
            crate::pki::certs_from_pem(issued.cert_pem.as_bytes()).map_err(ProxyError::Pki)?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
            .map_err(|source| {
                ProxyError::Pki(PkiError::Pem {
                    what: "the kubelet client key",
                    source,
                })
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der.clone()).map_err(ProxyError::Tls)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(ProxyError::Tls)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(ProxyError::Tls)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Ok(KubeletClient {
            client: Client::builder(TokioExecutor::new()).build(https),
            metrics: Default::default(),
        })
    }

    /// GETs `path_and_query` of `node`'s API: the response, headers read, body still streaming.
    async fn get(
        &self,
        node: &Value,
        path_and_query: &str,
    ) -> Result<Response<Incoming>, ApiError> {
        self.send(node, &Method::GET, path_and_query, &[]).await
    }

    /// Sends a body-less `method` request for `path_and_query` to `node`'s API with the
    /// headers `passed`.
    async fn send(
        &self,
        node: &Value,
        method: &Method,
        path_and_query: &str,
        passed: &[(header::HeaderName, header::HeaderValue)],
    ) -> Result<Response<Incoming>, ApiError> {
        let name = node
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let (host, port) = endpoint(node).ok_or_else(|| {
            unavailable(name, "it reports no address (is its agent running?)".into())
        })?;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let uri: Uri = format!("https://{host}:{port}{path_and_query}")
            .parse()
            .map_err(|e| ApiError::bad_request(format!("the node API's URL: {e}")))?;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(uri.clone())
            .body(Empty::new())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        for (k, v) in passed {
            req.headers_mut().append(k, v.clone());
        }
        match tokio::time::timeout(RESPONSE_TIMEOUT, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(unavailable(name, format!("{method} {uri}: {}", chain(&e)))),
            Err(_) => Err(unavailable(
                name,
                format!("{method} {uri}: no answer within {RESPONSE_TIMEOUT:?}"),
            )),
        }
    }

    /// GETs a small text (at most [`MAX_TEXT`] bytes) of `node`'s API; a status other than 200
    /// is an error.
    pub async fn get_text(&self, node: &Value, path: &str) -> Result<String, ApiError> {
        let resp = self.get(node, path).await?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_TEXT);
        let bytes = tokio::time::timeout(RESPONSE_TIMEOUT, body.collect())
            .await
            .map_err(|_| {
                ApiError::new(
                    503,
                    "ServiceUnavailable",
                    format!("{path}: the node's answer took too long"),
                )
            })?
            .map_err(|e| ApiError::new(503, "ServiceUnavailable", format!("{path}: {e}")))?
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if status != http::StatusCode::OK {
            return Err(ApiError::new(
                503,
                "ServiceUnavailable",
                format!("{path}: {status}: {text}"),
            ));
        }
        Ok(text)
    }
}

/// The largest answer [`KubeletClient::get_text`] reads.
const MAX_TEXT: usize = 8 * 1024 * 1024;

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn unavailable(node: &str, why: String) -> ApiError {
    ApiError::new(
        503,
        "ServiceUnavailable",
        format!("the node API of node {node:?} is not reachable: {why}"),
    )
}

/// Where a Node's API listens: its InternalIP (else its first address) and its kubelet port.
pub fn endpoint(node: &Value) -> Option<(String, u16)> {
    let addresses = node.pointer("/status/addresses")?.as_array()?;
    let of = |t: &str| {
        addresses
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(t))
    };
    let address = of("InternalIP")
        .or_else(|| of("ExternalIP"))
        .or_else(|| addresses.first())?
        .get("address")?
        .as_str()?
        .to_string();
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Some((address, port))
}

/// The server's kubelet client, or a 503 when it has none.
pub fn kubelet(api: &Api) -> Result<&KubeletClient, ApiError> {
    api.kubelet.get().map(|k| &**k).ok_or_else(|| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            "this server has no kubelet client",
        )
    })
}

/// The node API's answer as the server's: status and content type kept, the body streamed.
fn relay(resp: Response<Incoming>) -> Response<Body> {
    use tokio_stream::StreamExt as _;
    let (parts, body) = resp.into_parts();
    // an error mid-body (the node went away) ends the body: what came through stays
    let frames = http_body_util::BodyStream::new(body)
        .map_while(|f| f.ok())
        .map(Ok::<_, std::convert::Infallible>);
    let mut out = Response::new(StreamBody::new(frames).boxed());
    *out.status_mut() = parts.status;
    for h in [header::CONTENT_TYPE, header::CONTENT_LENGTH] {
        if let Some(v) = parts.headers.get(&h) {
            out.headers_mut().insert(h, v.clone());
        }
    }
    out
}

/// Looks up an object as the server (the caller was authorized for the subresource already).
async fn lookup(api: &Api, at: ObjectRef<'_>) -> Result<Arc<Value>, ApiError> {
    api.get_part(&User::internal("kubelet-proxy"), at, Part::Main)
        .await
}

/// `pods/log`.
pub static POD_LOG: Subresource = Subresource {
    name: "log",
    kind: Some("Pod"),
    verbs: &["get"],
    group_version: None,
    rest: &PodLog,
};

struct PodLog;

/// The query options of `pods/log` the node API takes.
const LOG_OPTIONS: &[&str] = &[
    "follow",
    "previous",
    "sinceSeconds",
    "sinceTime",
    "timestamps",
    "tailLines",
    "limitBytes",
];

/// The container a log request is for: the one named, else the pod's only one, else its
/// `kubectl.kubernetes.io/default-container`; kube-apiserver's messages otherwise.
pub fn log_container(pod: &Value, asked: Option<&str>) -> Result<String, ApiError> {
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let names: Vec<&str> = ["/spec/containers", "/spec/initContainers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let containers: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let default = pod
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
        .and_then(Value::as_str);
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {pod_name}"
        ))),
        None if containers.len() == 1 => Ok(containers[0].to_string()),
        None => match default.filter(|d| names.contains(d)) {
            Some(d) => Ok(d.to_string()),
            None => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                containers.join(" ")
            ))),
        },
    }
}

#[async_trait]
impl SubresourceRest for PodLog {
    async fn serve(
        &self,
        api: Arc<Api>,
        at: ObjectRef<'_>,
        req: RestRequest,
    ) -> Result<Response<Body>, ApiError> {
        if req.method != Method::GET {
            return Err(ApiError::method_not_allowed(req.method.as_str()));
        }
        authorize(
            &req.user,
            Verb::Get,
            at.r,
            Some("log"),
            at.ns,
            Some(at.name),
        )?;
        let pod = lookup(&api, at).await?;
        let container = log_container(&pod, req.query.get("container"))?;
        let node_name = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "pod {} is not bound to a node: it has no logs yet",
                    at.name
                ))
            })?;
        let node = lookup(&api, ObjectRef::new(&NODES, None, node_name)).await?;
        let mut query = url_query(&req, LOG_OPTIONS);
        if !query.is_empty() {
            query.insert(0, '?');
        }
        let path = format!(
            "/containerLogs/{}/{}/{container}{query}",
            at.ns.unwrap_or("default"),
            at.name
        );
        Ok(relay(kubelet(&api)?.get(&node, &path).await?))
    }
}

/// The request's query parameters among `keep`, encoded again.
fn url_query(req: &RestRequest, keep: &[&str]) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    keep.iter()
        .filter_map(|k| req.query.get(k).map(|v| (k, v)))
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The headers of an upgrade request the node API needs.
const UPGRADE_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];
/// And those of its answer the client needs.
const UPGRADED_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// `pods/exec`.
pub static POD_EXEC: Subresource = Subresource {
    name: "exec",
    kind: Some("PodExecOptions"),
    verbs: &["create", "get"],
    group_version: None,
    rest: &PodStream {
        name: "exec",
        node_path: "exec",
    },
};

/// `pods/attach`.
pub static POD_ATTACH: Subresource = Subresource {
    name: "attach",
    kind: Some("PodAttachOptions"),
    verbs: &["create", "get"],
    group_version: None,
    rest: &PodStream {
        name: "attach",
        node_path: "attach",
    },
};

/// `pods/portforward`.
pub static POD_PORTFORWARD: Subresource = Subresource {
    name: "portforward",
    kind: Some("PodPortForwardOptions"),
    verbs: &["create", "get"],
    group_version: None,
    rest: &PodStream {
        name: "portforward",
        node_path: "portForward",
    },
};

/// A subresource of a Pod streamed over an upgraded connection by the node API's
/// `/NODE_PATH/NS/POD/CONTAINER` (port forwarding: `/portForward/NS/POD`).
struct PodStream {
    name: &'static str,
    node_path: &'static str,
}

/// The query options of `pods/exec`, `attach` and `portforward` the node API takes.
const STREAM_OPTIONS: &[&str] = &["stdin", "stdout", "stderr", "tty", "ports"];

#[async_trait]
impl SubresourceRest for PodStream {
    async fn serve(
        &self,
        api: Arc<Api>,
        at: ObjectRef<'_>,
        mut req: RestRequest,
    ) -> Result<Response<Body>, ApiError> {
        if !matches!(req.method, Method::GET | Method::POST) {
            return Err(ApiError::method_not_allowed(req.method.as_str()));
        }
        // `create` whatever the method: a WebSocket's GET must not pass as a read
        authorize(
            &req.user,
            Verb::Create,
            at.r,
            Some(self.name),
            at.ns,
            Some(at.name),
        )?;
        let pod = lookup(&api, at).await?;
        let node_name = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request(format!("pod {} is not bound to a node", at.name))
            })?;
        let node = lookup(&api, ObjectRef::new(&NODES, None, node_name)).await?;
        let mut query = url_query(&req, STREAM_OPTIONS);
        // the command's words as they came (still encoded, in order)
        let words = req.raw_query.as_deref().unwrap_or("").split('&');
        for word in words.filter(|p| p.starts_with("command=")) {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(word);
        }
        let mut path = format!(
            "/{}/{}/{}",
            self.node_path,
            at.ns.unwrap_or("default"),
            at.name
        );
        if self.name != "portforward" {
            path.push('/');
            path.push_str(&log_container(&pod, req.query.get("container"))?);
        }
        if !query.is_empty() {
            path = format!("{path}?{query}");
        }
        let passed: Vec<_> = UPGRADE_HEADERS
            .iter()
            .flat_map(|h| {
                req.headers
                    .get_all(*h)
                    .iter()
                    .map(|v| (header::HeaderName::from_static(h), v.clone()))
            })
            .collect();
        let mut resp = kubelet(&api)?
            .send(&node, &req.method, &path, &passed)
            .await?;
        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            return Ok(relay(resp));
        }
        let Some(client) = req.upgrade.take() else {
            return Err(ApiError::bad_request(format!(
                "pods/{} needs a connection upgrade (WebSocket or SPDY) over HTTP/1.1",
                self.name
            )));
        };
        let mut out = Response::new(Empty::new().map_err(|e| match e {}).boxed());
        *out.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        for h in UPGRADED_HEADERS {
            for v in resp.headers().get_all(*h) {
                out.headers_mut().append(*h, v.clone());
            }
        }
        let node_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(splice(client, node_side));
        Ok(out)
    }
}

/// Copies bytes both ways between the client's upgraded connection and the node's, as they
/// come, until either ends.
async fn splice(client: hyper::upgrade::OnUpgrade, node: hyper::upgrade::OnUpgrade) {
    use hyper_util::rt::TokioIo;
    let (client, node) = match tokio::join!(client, node) {
        (Ok(c), Ok(n)) => (c, n),
        (c, n) => {
            tracing::debug!(client = ?c.err(), node = ?n.err(), "an upgraded stream did not start");
            return;
        }
    };
    let (mut client, mut node) = (TokioIo::new(client), TokioIo::new(node));
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut node).await {
        tracing::debug!(error = %e, "an upgraded stream ended");
    }
}

/// `nodes/proxy`: `GET /api/v1/nodes/NAME/proxy/PATH` is `GET PATH` of the node's API.
pub static NODE_PROXY: Subresource = Subresource {
    name: "proxy",
    kind: Some("NodeProxyOptions"),
    verbs: &["get"],
    group_version: None,
    rest: &NodeProxy,
};

struct NodeProxy;

#[async_trait]
impl SubresourceRest for NodeProxy {
    async fn serve(
        &self,
        api: Arc<Api>,
        at: ObjectRef<'_>,
        req: RestRequest,
    ) -> Result<Response<Body>, ApiError> {
        if req.method != Method::GET {
            return Err(ApiError::method_not_allowed(req.method.as_str()));
        }
        authorize(
            &req.user,
            Verb::Get,
            at.r,
            Some("proxy"),
            None,
            Some(at.name),
        )?;
        let node = lookup(&api, at).await?;
        let prefix = format!("/api/v1/nodes/{}/proxy", at.name);
        let rest = req.path.strip_prefix(&prefix).unwrap_or("");
        let mut path = if rest.is_empty() { "/" } else { rest }.to_string();
        if let Some(q) = req.raw_query.as_deref().filter(|q| !q.is_empty()) {
            path = format!("{path}?{q}");
        }
        Ok(relay(kubelet(&api)?.get(&node, &path).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_node_endpoint_is_its_internal_ip_and_kubelet_port() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "h"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10251}}}});
        assert_eq!(endpoint(&node), Some(("10.0.0.5".into(), 10251)));
        let bare = json!({"status": {"addresses": [{"type": "Hostname", "address": "h"}]}});
        assert_eq!(endpoint(&bare), Some(("h".into(), DEFAULT_KUBELET_PORT)));
        assert_eq!(endpoint(&json!({})), None);
    }

    #[test]
    fn the_log_container_is_named_single_or_the_default() {
        let pod = |annotations: Value, containers: &[&str]| {
            json!({"metadata": {"name": "p", "annotations": annotations},
                "spec": {"containers": containers.iter().map(|c| json!({"name": c})).collect::<Vec<_>>()}})
        };
        let one = pod(json!({}), &["main"]);
        assert_eq!(log_container(&one, None).unwrap(), "main");
        assert_eq!(log_container(&one, Some("main")).unwrap(), "main");
        let e = log_container(&one, Some("other")).unwrap_err();
        assert_eq!(e.message, "container other is not valid for pod p");
        let two = pod(json!({}), &["a", "b"]);
        let e = log_container(&two, None).unwrap_err();
        assert_eq!(
            e.message,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        let chosen = pod(
            json!({"kubectl.kubernetes.io/default-container": "b"}),
            &["a", "b"],
        );
        assert_eq!(log_container(&chosen, None).unwrap(), "b");
    }
}
