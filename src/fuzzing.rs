//! The bodies of the fuzz targets (fuzz/fuzz_targets/*.rs): one plain function per target, each
//! taking the fuzzer's bytes. libFuzzer calls them through `fuzz_target!` (the fuzz crate enables
//! the `fuzzing` feature); the `replay` tests below call them on every checked-in seed of
//! fuzz/corpus/ in an ordinary `cargo test`, without instrumentation. A panic is a finding; where
//! a target has an oracle (a round trip, idempotence, an agreement) it asserts it.
//!
//! Compiled for tests and with the `fuzzing` feature only: nothing here is part of the binary.
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;
use tokio::task::JoinSet;

use crate::agent::config::{self as agent_config_mod, Flags};
use crate::core::credential::{CaHash, JoinToken, Token};
use crate::core::labels::{self, Selector};
use crate::core::quantity::{self, Quantity};
use crate::core::validation;
use crate::core::{eligibility as elig, hash, patch as patch_mod, reference as reference_mod};
use crate::server::router;
use crate::server::status::ApiError;
use crate::server::store::SqliteStore;
use crate::server::verbs::Api;

/// A target's body: the fuzzer's bytes in, a panic for a finding.
pub type Body = fn(&[u8]);

/// The targets, by the name of their binary and of their corpus directory.
pub const TARGETS: &[(&str, Body)] = &[
    ("manifests", manifests),
    ("patch", patch),
    ("quantity", quantity),
    ("selectors", selectors),
    ("eligibility", eligibility),
    ("reference", reference),
    ("server", server),
    ("agent_config", agent_config),
    ("kubeconfig", kubeconfig),
    ("join_token", join_token),
];

// --- manifests -----------------------------------------------------------------------------

const POLICY: validation::Policy = validation::Policy {
    allow_privileged: false,
    allow_host_path: false,
    default_not_ready_toleration_seconds: crate::core::nodehealth::DEFAULT_TOLERATION_SECONDS,
    default_unreachable_toleration_seconds: crate::core::nodehealth::DEFAULT_TOLERATION_SECONDS,
};

fn check_manifest(doc: &Value, previous: &mut Option<DaemonSet>) {
    if let Ok(mut ds) = serde_json::from_value::<DaemonSet>(doc.clone()) {
        validation::default_daemonset(&mut ds);
        let once = ds.clone();
        validation::default_daemonset(&mut ds);
        assert_eq!(once, ds, "defaulting a DaemonSet twice changed it");
        let mut errors = match previous.as_ref() {
            Some(old) => validation::validate_daemonset_update(&ds, old),
            None => validation::validate_daemonset(&ds),
        };
        if let Some(spec) = &ds.spec {
            errors.extend(validation::validate_policy(
                spec.template.spec.as_ref(),
                "spec.template.spec",
                POLICY,
            ));
            hash::template_hash(&spec.template, spec.template.spec.as_ref().map(|_| 1));
        }
        let name = ds.metadata.name.as_deref().unwrap_or("");
        ApiError::invalid("DaemonSet", name, &errors).to_status();
        *previous = Some(ds);
    }
    if let Ok(pod) = serde_json::from_value::<Pod>(doc.clone()) {
        let mut errors = validation::validate_pod(&pod);
        errors.extend(validation::validate_policy(
            pod.spec.as_ref(),
            "spec",
            POLICY,
        ));
        ApiError::invalid("Pod", "p", &errors).to_status();
        if let Some(mut spec) = pod.spec {
            validation::default_pod_spec(&mut spec);
        }
    }
    if let Ok(node) = serde_json::from_value::<Node>(doc.clone()) {
        let errors = validation::validate_node(&node);
        ApiError::invalid("Node", "n", &errors).to_status();
    }
}

/// Manifests as the API server and `kubectl apply` send them: JSON, or YAML with several
/// documents, decoded into `serde_json::Value`, then into the typed DaemonSet, Pod and Node, then
/// defaulted and validated as the server does (`core::validation`), with the 422 `Status` built
/// from the errors (`server::status::ApiError::invalid`). Oracle: defaulting is idempotent.
pub fn manifests(data: &[u8]) {
    let mut previous = None;
    if let Ok(doc) = serde_json::from_slice::<Value>(data) {
        check_manifest(&doc, &mut previous);
    }
    // kubectl's YAML: several documents; each one as the server decodes application/yaml
    for document in serde_yaml::Deserializer::from_slice(data) {
        match <Value as serde::Deserialize>::deserialize(document) {
            Ok(doc) => check_manifest(&doc, &mut previous),
            Err(_) => break,
        }
    }
}

// --- patch ---------------------------------------------------------------------------------

/// The three patch types of `core::patch` as the server applies them to a stored object: the
/// input is a stream of two JSON values, the document and the patch. The document's `kind`
/// chooses the strategic-merge-patch schema, as the URL does on the server. Oracle: a merge patch
/// applied twice changes nothing more (RFC 7386).
pub fn patch(data: &[u8]) {
    let mut values = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let (Some(Ok(doc)), Some(Ok(p))) = (values.next(), values.next()) else {
        return;
    };
    let root = match doc.get("kind").and_then(Value::as_str) {
        Some("DaemonSet") => &patch_mod::DAEMONSET,
        Some("Node") => &patch_mod::NODE,
        Some("Pod") => &patch_mod::POD,
        _ => &patch_mod::UNKNOWN,
    };
    let _ = patch_mod::json_patch(&doc, &p);
    let merged = patch_mod::merge_patch(&doc, &p);
    if let Ok(merged) = &merged {
        let again = patch_mod::merge_patch(merged, &p).expect("merge patch failed the second time");
        assert_eq!(&again, merged, "merge patch is not idempotent");
    }
    let _ = patch_mod::strategic_merge_patch(&doc, &p, root);
}

// --- quantity ------------------------------------------------------------------------------

/// Resource quantities (`core::quantity`) as they come in pod specs and the agent's config: the
/// parse, the rounded values, and the cgroup CPU figures the runtime derives from them. Oracle:
/// zero agrees across the values; quota and shares stay in cgroup's ranges.
pub fn quantity(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(q) = Quantity::parse(s) else {
        return;
    };
    let milli = q.milli_value();
    let units = q.value();
    assert_eq!(
        q.is_zero(),
        milli == 0,
        "{s:?}: is_zero disagrees with milli_value"
    );
    assert_eq!(
        q.is_zero(),
        units == 0,
        "{s:?}: is_zero disagrees with value"
    );
    let quota = quantity::cpu_quota_us(milli);
    assert!(
        quota == 0 || quota >= quantity::MIN_QUOTA_US,
        "{s:?}: quota {quota}"
    );
    let shares = quantity::cpu_shares(milli);
    assert!(
        (quantity::MIN_SHARES..=quantity::MAX_SHARES).contains(&shares),
        "{s:?}: shares {shares}"
    );
}

// --- selectors -----------------------------------------------------------------------------

/// Label and field selectors (`core::labels`) as the server parses them from `labelSelector=` and
/// `fieldSelector=`, and `LabelSelector` objects as DaemonSets carry them. The input is
/// `LABEL-SELECTOR \n FIELD-SELECTOR \n` then up to two JSON values: a `LabelSelector` and the
/// labels (`{"k":"v"}`) everything is matched against. Oracle: a parsed selector prints back to
/// itself; the two ways of matching agree.
pub fn selectors(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let label_text = lines.next().unwrap_or("");
    let field_text = lines.next().unwrap_or("");
    let mut values = serde_json::Deserializer::from_str(lines.next().unwrap_or(""))
        .into_iter::<Value>()
        .map_while(Result::ok);
    let label_selector: Option<LabelSelector> =
        values.next().and_then(|v| serde_json::from_value(v).ok());
    let labels: BTreeMap<String, String> = values
        .next()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let get = |k: &str| labels.get(k).cloned();

    if let Ok(sel) = Selector::parse(label_text) {
        let matched = sel.matches(&labels);
        assert_eq!(matched, sel.matches_with(&get));
        let printed = sel.to_string();
        let reparsed = Selector::parse(&printed)
            .unwrap_or_else(|e| panic!("{label_text:?} printed as {printed:?}: {e}"));
        assert_eq!(sel, reparsed, "{label_text:?} printed as {printed:?}");
    }
    if let Ok(sel) = Selector::parse_fields(field_text) {
        sel.matches_with(&get);
    }
    if let Some(ls) = label_selector {
        let matched = labels::selector_matches(&ls, &labels);
        if let Ok(sel) = Selector::from_label_selector(&ls) {
            assert_eq!(matched, sel.matches(&labels));
        }
    }
}

// --- eligibility ---------------------------------------------------------------------------

/// Node affinity, node selectors, taints and tolerations (`core::eligibility`): a Node and a
/// DaemonSet from a stream of two JSON values (`{node} {daemonset}`). Oracle: the daemon
/// tolerations added by hand give the same verdict; `explain` gives the verdict and its reasons
/// are exactly its failing checks.
pub fn eligibility(data: &[u8]) {
    let mut values = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let (Some(Ok(node)), Some(Ok(ds))) = (values.next(), values.next()) else {
        return;
    };
    let (Ok(node), Ok(ds)) = (
        serde_json::from_value::<Node>(node),
        serde_json::from_value::<DaemonSet>(ds),
    ) else {
        return;
    };
    let verdict = elig::node_should_run(&node, &ds);
    let explained = elig::explain(&node, &ds);
    assert_eq!(verdict, explained.eligibility);
    let failing = explained
        .checks
        .iter()
        .filter(|c| matches!(c.outcome, elig::Outcome::Blocks | elig::Outcome::Evicts))
        .count();
    assert_eq!(failing, verdict.reasons.len());
    if let Some(mut spec) = ds.spec.and_then(|s| s.template.spec) {
        elig::add_daemon_tolerations(&mut spec);
        assert_eq!(verdict, elig::pod_fits_node(&node, &spec));
        for taint in node.spec.iter().flat_map(|s| s.taints.iter().flatten()) {
            elig::taint_to_string(taint);
            for t in spec.tolerations.iter().flatten() {
                elig::tolerates_taint(t, taint);
                elig::toleration_to_string(t);
            }
        }
    }
}

// --- reference -----------------------------------------------------------------------------

/// Image references (`core::reference`) as pod specs carry them. Oracle: the normalized form
/// parses back to itself (it is what the agent pulls and records).
pub fn reference(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = reference_mod::parse(s) {
        let normalized = r.to_string();
        let again = reference_mod::parse(&normalized)
            .unwrap_or_else(|e| panic!("{s:?} normalized to {normalized:?}, which fails: {e}"));
        assert_eq!(r, again, "{s:?} normalized to {normalized:?}");
    }
}

// --- agent_config --------------------------------------------------------------------------

/// The agent's configuration file (`agent::config`): TOML parsed into `FileConfig`, then merged
/// with (empty) flags and validated into the `Config` the agent runs with.
pub fn agent_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = agent_config_mod::parse_file(text, Path::new("/etc/daemonset-agent/agent.toml"))
    else {
        return;
    };
    for taint in &file.node_taints {
        let _ = agent_config_mod::parse_taint(taint);
    }
    let _ = agent_config_mod::merge(file, &Flags::default(), "fuzz-host");
}

// --- join_token ----------------------------------------------------------------------------

/// Join tokens (`core::credential`): `sha256:HASH::ID.SECRET` as an agent's `--token` or
/// `agent.toml` gives it, and its parts. Oracle: what parses prints back to the same token.
pub fn join_token(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(j) = JoinToken::parse(s) {
        let printed = j.to_string();
        assert_eq!(
            JoinToken::parse(&printed).as_ref(),
            Ok(&j),
            "{s:?} printed as {printed:?}"
        );
        assert_eq!(printed.len(), "sha256:".len() + 64 + 2 + 6 + 1 + 16);
    }
    if let Ok(t) = Token::parse(s) {
        assert_eq!(t.to_string(), s, "a bearer token prints as it was given");
        assert_eq!(t.secret_hash().len(), 64);
    }
    if let Ok(ca) = CaHash::parse(s) {
        assert_eq!(CaHash::parse(&ca.to_string()), Ok(ca));
    }
}

// --- kubeconfig ----------------------------------------------------------------------------

/// The kubeconfig target's runtime (the client spawns a task).
static KUBECONFIG_RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
});

fn without_files_or_plugins(mut kc: Kubeconfig) -> Kubeconfig {
    for cluster in kc.clusters.iter_mut().filter_map(|c| c.cluster.as_mut()) {
        cluster.certificate_authority = None;
        cluster.proxy_url = None;
    }
    for user in kc
        .auth_infos
        .iter_mut()
        .filter_map(|u| u.auth_info.as_mut())
    {
        user.client_certificate = None;
        user.client_key = None;
        user.token_file = None;
        user.exec = None;
        user.auth_provider = None;
    }
    kc
}

/// Kubeconfig files as the agent reads them (`agent::client`): `Kubeconfig::from_yaml`, then
/// `kube::Config::from_custom_kubeconfig` and the client built from it, which decode the CA
/// bundle and the client certificate and key. Paths to files and exec/auth-provider plugins are
/// dropped first: the fuzzer must not read files or run programs.
pub fn kubeconfig(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(kc) = Kubeconfig::from_yaml(text) else {
        return;
    };
    let kc = without_files_or_plugins(kc);
    KUBECONFIG_RUNTIME.block_on(async move {
        if let Ok(cfg) =
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await
        {
            drop(kube::Client::try_from(cfg));
            // The client spawned its request buffer's task; let it see the client gone and end,
            // or every input would leave one behind.
            tokio::task::yield_now().await;
        }
    });
}

// --- server --------------------------------------------------------------------------------

const SEPARATOR: &[u8] = b"\n%%%%\n";
const MAX_REQUESTS: usize = 8;
/// Frames and bytes read of one response body.
const MAX_FRAMES: usize = 64;
const MAX_BYTES: usize = 1 << 20;
const FRAME_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

/// The server target's runtime, with tokio's paused clock: a fuzzed watch's timeout and
/// bookmarks pass without waiting.
static SERVER_RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("tokio runtime")
});

/// `FUZZ_SERVER_DEBUG=1`: print each request's status and body start (to check the seeds).
static DEBUG: LazyLock<bool> = LazyLock::new(|| std::env::var_os("FUZZ_SERVER_DEBUG").is_some());

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

/// The request, with the admin's bearer token unless it carries an `Authorization` of its own
/// (so the authenticator is fuzzed too, and everything behind it is reached).
fn build(req: &Req, admin: &str) -> Option<http::Request<Full<Bytes>>> {
    let mut b = http::Request::builder()
        .method(http::Method::from_bytes(req.method).ok()?)
        .uri(http::Uri::try_from(req.target).ok()?);
    let mut authorized = false;
    for (name, value) in &req.headers {
        let name = http::HeaderName::from_bytes(name).ok()?;
        // hyper frames the body itself
        if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
            continue;
        }
        authorized |= name == http::header::AUTHORIZATION;
        b = b.header(name, http::HeaderValue::from_bytes(value).ok()?);
    }
    if !authorized {
        b = b.header(http::header::AUTHORIZATION, format!("Bearer {admin}"));
    }
    b.body(Full::new(Bytes::copy_from_slice(req.body))).ok()
}

fn api() -> Arc<Api> {
    let store = SqliteStore::open(Path::new(":memory:"), 64).expect("in-memory store");
    // the server's defaults (`--allow-privileged`, `--allow-host-path`); the manifests target
    // checks the refusals
    let policy = validation::Policy::default();
    Arc::new(Api::new(Arc::new(store), policy))
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

/// The API server's request front end in process: each input is a few HTTP requests (method,
/// path and query, headers, body) sent over an in-memory connection to the server's own handler
/// (`server::router::handle`, behind hyper's HTTP/1 + HTTP/2 server as `server::start` serves
/// it) over a fresh in-memory SQLite store with the initial namespaces, as the admin (a request
/// with an `Authorization` header of its own keeps it). This reaches authentication, routing,
/// the query string, body decoding (JSON, YAML, protobuf), defaulting, validation, the patch
/// types, selectors, tables and watches. The input format is in fuzz/fuzz_targets/server.rs.
/// Time is paused: watch timeouts and bookmarks pass without waiting. Each response body is read
/// up to a bound (a watch never ends by itself).
pub fn server(data: &[u8]) {
    let requests: Vec<Req> = split(data, SEPARATOR)
        .into_iter()
        .take(MAX_REQUESTS)
        .filter_map(parse_request)
        .collect();
    if requests.is_empty() {
        return;
    }
    SERVER_RUNTIME.block_on(async move {
        let api = api();
        // what `server::start` does first: the initial namespaces, the admin's token
        crate::server::ensure_namespaces(&api)
            .await
            .expect("the initial namespaces");
        let admin = crate::server::auth::tokens::ensure_admin(&api, None)
            .await
            .expect("the admin token")
            .to_string();
        let mut tasks = JoinSet::new();
        for req in requests.iter().filter_map(|r| build(r, &admin)) {
            exchange(api.clone(), req, &mut tasks).await;
        }
        tasks.shutdown().await;
    });
}

/// Every seed of fuzz/corpus/, through the same functions, as an ordinary test: no
/// instrumentation, so CI runs it on every change (libFuzzer itself runs on demand,
/// scripts/fuzz.sh).
#[cfg(test)]
mod replay {
    use super::*;
    use std::path::PathBuf;

    fn corpus() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
    }

    fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = corpus().join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} has no seeds", dir.display());
        files
            .into_iter()
            .map(|p| {
                let data = std::fs::read(&p).unwrap();
                (p, data)
            })
            .collect()
    }

    /// Each seed, then each seed cut in half (a truncated input must not panic either).
    fn replay(target: &str) {
        let (_, body) = TARGETS
            .iter()
            .find(|(name, _)| *name == target)
            .expect("a target of that name");
        for (path, data) in seeds(target) {
            eprintln!("{target}: {}", path.display());
            body(&data);
            body(&data[..data.len() / 2]);
        }
    }

    #[test]
    fn every_corpus_directory_is_a_target_and_every_target_has_seeds() {
        let mut dirs: Vec<String> = std::fs::read_dir(corpus())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        dirs.sort();
        let mut targets: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
        targets.sort();
        assert_eq!(dirs, targets);
        // fuzz/Cargo.toml has a [[bin]] for each, and scripts/fuzz.sh lists it
        let manifest = std::fs::read_to_string(corpus().join("../Cargo.toml")).unwrap();
        let script = std::fs::read_to_string(corpus().join("../../scripts/fuzz.sh")).unwrap();
        for t in &targets {
            assert!(
                manifest.contains(&format!("path = \"fuzz_targets/{t}.rs\"")),
                "fuzz/Cargo.toml: no [[bin]] for {t}"
            );
            let listed = script
                .lines()
                .find_map(|l| l.strip_prefix("TARGETS=("))
                .and_then(|l| l.strip_suffix(')'))
                .expect("scripts/fuzz.sh has TARGETS=(...)");
            assert!(
                listed.split_whitespace().any(|n| n == t),
                "scripts/fuzz.sh: {t} not in TARGETS"
            );
        }
    }

    #[test]
    fn manifests_seeds() {
        replay("manifests");
    }

    #[test]
    fn patch_seeds() {
        replay("patch");
    }

    #[test]
    fn quantity_seeds() {
        replay("quantity");
    }

    #[test]
    fn selectors_seeds() {
        replay("selectors");
    }

    #[test]
    fn eligibility_seeds() {
        replay("eligibility");
    }

    #[test]
    fn reference_seeds() {
        replay("reference");
    }

    #[test]
    fn server_seeds() {
        replay("server");
    }

    #[test]
    fn agent_config_seeds() {
        replay("agent_config");
    }

    #[test]
    fn kubeconfig_seeds() {
        replay("kubeconfig");
    }

    #[test]
    fn join_token_seeds() {
        replay("join_token");
    }

    #[test]
    fn a_good_join_token_round_trips_and_garbage_is_ignored() {
        // a join token that parses prints back to itself: the assertion holds for a good one
        let good = format!("sha256:{}::abcdef.0123456789abcdef", "0".repeat(64));
        join_token(good.as_bytes());
        assert!(JoinToken::parse(&good).is_ok());
        // and the targets ignore what is not their input, without panicking
        for (_, body) in TARGETS {
            body(b"");
            body(&[0xff, 0xfe, b'\n']);
        }
    }
}
