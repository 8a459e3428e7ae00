//! The API server's request front end in process: each input is a few HTTP requests (method,
//! path and query, headers, body) sent over an in-memory connection to the server's own handler
//! (`server::router::handle`, behind hyper's HTTP/1 + HTTP/2 server as `server::start` serves it)
//! over a fresh in-memory SQLite store holding the `default` namespace. This reaches routing, the
//! query string, body decoding (JSON, YAML, protobuf), defaulting, validation, the patch types,
//! selectors, tables and watches.
//!
//! Input format, requests separated by a line `%%%%`:
//!
//! ```text
//! PATCH /apis/apps/v1/namespaces/default/daemonsets/x?fieldValidation=Strict
//! Content-Type: application/merge-patch+json
//!
//! {"spec":{"revisionHistoryLimit":3}}
//! %%%%
//! GET /apis/apps/v1/daemonsets?watch=1&labelSelector=a%3Db
//! ```
//!
//! Time is paused (tokio's test clock): watch timeouts and bookmarks pass without waiting. Each
//! response body is read up to a bound (a watch never ends by itself).
#![no_main]

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use daemonset_agent::server::router;
use daemonset_agent::server::store::SqliteStore;
use daemonset_agent::server::verbs::Api;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use libfuzzer_sys::fuzz_target;
use tokio::task::JoinSet;

const SEPARATOR: &[u8] = b"\n%%%%\n";
const MAX_REQUESTS: usize = 8;
/// Frames and bytes read of one response body.
const MAX_FRAMES: usize = 64;
const MAX_BYTES: usize = 1 << 20;
const FRAME_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

/// `FUZZ_SERVER_DEBUG=1`: print each request's status and body start (to check the seeds).
static DEBUG: LazyLock<bool> = LazyLock::new(|| std::env::var_os("FUZZ_SERVER_DEBUG").is_some());

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("tokio runtime")
});

struct Req<'a> {
    method: &'a [u8],
    target: &'a [u8],
    headers: Vec<(&'a [u8], &'a [u8])>,
    body: &'a [u8],
}

fn split<'a>(data: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(sep.len()).position(|w| w == sep) {
        out.push(&rest[..i]);
        rest = &rest[i + sep.len()..];
    }
    out.push(rest);
    out
}

fn parse_request(raw: &[u8]) -> Option<Req<'_>> {
    let (head, body) = match raw.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&raw[..i], &raw[i + 2..]),
        None => (raw, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let first = lines.next()?;
    let space = first.iter().position(|&b| b == b' ')?;
    let headers = lines
        .filter_map(|l| {
            let colon = l.iter().position(|&b| b == b':')?;
            Some((&l[..colon], l[colon + 1..].trim_ascii()))
        })
        .collect();
    Some(Req {
        method: &first[..space],
        target: &first[space + 1..],
        headers,
        body,
    })
}

fn build(req: &Req) -> Option<http::Request<Full<Bytes>>> {
    let mut b = http::Request::builder()
        .method(http::Method::from_bytes(req.method).ok()?)
        .uri(http::Uri::try_from(req.target).ok()?);
    for (name, value) in &req.headers {
        let name = http::HeaderName::from_bytes(name).ok()?;
        // hyper frames the body itself
        if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
            continue;
        }
        b = b.header(name, http::HeaderValue::from_bytes(value).ok()?);
    }
    b.body(Full::new(Bytes::copy_from_slice(req.body))).ok()
}

fn api() -> Arc<Api> {
    let store = SqliteStore::open(Path::new(":memory:"), 64).expect("in-memory store");
    // the server's defaults (`--allow-privileged`, `--allow-host-path`); the manifests target
    // checks the refusals
    let policy = daemonset_agent::core::validation::Policy {
        allow_privileged: true,
        allow_host_path: true,
    };
    Arc::new(Api::new(Arc::new(store), policy))
}

/// `default`, as the server creates it at start (through the handler: only `handle` and `Api`
/// of the server's internals are used here).
fn default_namespace() -> http::Request<Full<Bytes>> {
    let ns = br#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"default"}}"#;
    http::Request::post("/api/v1/namespaces")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(ns)))
        .expect("namespace request")
}

/// Sends one request over a new in-memory connection and reads the response within bounds.
async fn exchange(api: Arc<Api>, req: http::Request<Full<Bytes>>, tasks: &mut JoinSet<()>) {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    tasks.spawn(async move {
        let service = service_fn(move |req| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(router::handle(api, req).await) }
        });
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let _ = builder
            .serve_connection(TokioIo::new(server_io), service)
            .await;
    });
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::handshake(TokioIo::new(client_io)).await
    else {
        return;
    };
    tasks.spawn(async move {
        let _ = conn.await;
    });
    let line = format!("{} {}", req.method(), req.uri());
    let Ok(resp) = sender.send_request(req).await else {
        return;
    };
    let status = resp.status();
    let mut body = resp.into_body();
    let (mut frames, mut bytes) = (0, Vec::new());
    while frames < MAX_FRAMES && bytes.len() < MAX_BYTES {
        // an hour of paused time per frame: a watch far in the future would otherwise step
        // tokio's timer wheel (about two years a step) there
        match tokio::time::timeout(FRAME_WAIT, body.frame())
            .await
            .ok()
            .flatten()
        {
            Some(Ok(frame)) => {
                frames += 1;
                bytes.extend_from_slice(frame.data_ref().map_or(&[][..], |b| &b[..]));
            }
            _ => break,
        }
    }
    if *DEBUG {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
        eprintln!("{line} -> {status} ({frames} frames) {text}");
    }
}

fuzz_target!(|data: &[u8]| {
    let requests: Vec<_> = split(data, SEPARATOR)
        .into_iter()
        .take(MAX_REQUESTS)
        .filter_map(parse_request)
        .filter_map(|r| build(&r))
        .collect();
    if requests.is_empty() {
        return;
    }
    RUNTIME.block_on(async move {
        let api = api();
        let mut tasks = JoinSet::new();
        for req in std::iter::once(default_namespace()).chain(requests) {
            exchange(api.clone(), req, &mut tasks).await;
        }
        tasks.shutdown().await;
    });
});
