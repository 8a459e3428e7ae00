//! metrics.k8s.io/v1beta1 NodeMetrics and PodMetrics (`kubectl top node|pod`), computed in the
//! server as metrics-server does, without an extra component: each node's `/metrics/resource`
//! (the node API, `proxy`) is scraped, the last two scrapes of a node give the CPU rate over
//! their window, and the working set is the latest one's. A scrape younger than
//! [`FRESH`] is reused; a node scraped once only is scraped again after [`MIN_WINDOW`] (the first
//! `kubectl top` after a start waits that long).
//!
//! Read-only and never stored: not in the registry of stored kinds; the router hands
//! `/apis/metrics.k8s.io/...` here. Authorization as for any read (admin, view; not nodes).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::Response;
use serde_json::{json, Value};

use crate::server::auth::authz::{self, Attributes, Decision};
use crate::server::auth::{forbidden, User};
use crate::server::body::{json_response, Body};
use crate::server::kinds::{NODES, PODS};
use crate::server::query::Filter;
use crate::server::router::RestRequest;
use crate::server::status::ApiError;
use crate::server::verbs::{Api, ObjectRef, Part};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
/// A scrape this young is used as it is.
pub const FRESH: Duration = Duration::from_secs(10);
/// The shortest window a CPU rate is computed over.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);

/// A container: namespace, pod, container name.
pub type ContainerKey = (String, String, String);
/// Cumulative CPU seconds and the working set in bytes, as far as a scrape had them.
pub type Usage = (Option<f64>, Option<f64>);

/// What one scrape of a node's `/metrics/resource` holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    pub at: DateTime<Utc>,
    pub node: Usage,
    pub containers: HashMap<ContainerKey, Usage>,
}

/// The labels of a sample line `name{a="x",b="y"} value [ts]`.
fn labels(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(k.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    out
}

/// Reads the kubelet's resource metrics text (pure).
pub fn parse(text: &str, at: DateTime<Utc>) -> Scrape {
    let mut s = Scrape {
        at,
        ..Default::default()
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => continue,
        };
        let (label_text, values) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => ("", rest),
        };
        let Some(value) = values
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let l = labels(label_text);
        let key = || {
            (
                l.get("namespace").cloned().unwrap_or_default(),
                l.get("pod").cloned().unwrap_or_default(),
                l.get("container").cloned().unwrap_or_default(),
            )
        };
        match name {
            "node_cpu_usage_seconds_total" => s.node.0 = Some(value),
            "node_memory_working_set_bytes" => s.node.1 = Some(value),
            "container_cpu_usage_seconds_total" => {
                s.containers.entry(key()).or_default().0 = Some(value)
            }
            "container_memory_working_set_bytes" => {
                s.containers.entry(key()).or_default().1 = Some(value)
            }
            _ => {}
        }
    }
    s
}

/// Cores used between two cumulative CPU readings (None: too close, or the counter reset).
pub fn rate(
    older: (DateTime<Utc>, Option<f64>),
    newer: (DateTime<Utc>, Option<f64>),
) -> Option<f64> {
    let secs = (newer.0 - older.0).num_milliseconds() as f64 / 1000.0;
    let (a, b) = (older.1?, newer.1?);
    (secs > 0.0 && b >= a).then(|| (b - a) / secs)
}

/// metrics-server's quantities: nanocores and KiB.
fn cpu_quantity(cores: f64) -> String {
    format!("{}n", (cores * 1e9).round() as u64)
}

fn memory_quantity(bytes: f64) -> String {
    format!("{}Ki", (bytes / 1024.0).round() as u64)
}

fn window(older: DateTime<Utc>, newer: DateTime<Utc>) -> String {
    format!("{:.3}s", (newer - older).num_milliseconds() as f64 / 1000.0)
}

/// The last two scrapes of each node.
#[derive(Debug, Default)]
pub struct Cache {
    scrapes: Mutex<HashMap<String, Vec<Scrape>>>,
}

impl Cache {
    fn pair(&self, node: &str) -> Option<(Scrape, Scrape)> {
        let s = self.scrapes.lock().ok()?;
        let v = s.get(node)?;
        (v.len() == 2).then(|| (v[0].clone(), v[1].clone()))
    }
    fn latest(&self, node: &str) -> Option<Scrape> {
        self.scrapes.lock().ok()?.get(node)?.last().cloned()
    }
    fn push(&self, node: &str, s: Scrape) {
        if let Ok(mut all) = self.scrapes.lock() {
            let v = all.entry(node.to_string()).or_default();
            v.push(s);
            if v.len() > 2 {
                v.remove(0);
            }
        }
    }
}

/// Two scrapes of `node` at least [`MIN_WINDOW`] apart, the newer one at most [`FRESH`] old.
async fn scrapes(api: &Api, node: &Value) -> Result<(Scrape, Scrape), ApiError> {
    let kubelet = crate::server::proxy::kubelet(api)?;
    let name = node
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let cache = &kubelet.metrics;
    let fresh = |s: &Scrape| (Utc::now() - s.at).to_std().unwrap_or_default() < FRESH;
    if let Some((a, b)) = cache.pair(name).filter(|(_, b)| fresh(b)) {
        return Ok((a, b));
    }
    let scrape = || async {
        let text = kubelet.get_text(node, "/metrics/resource").await?;
        Ok::<_, ApiError>(parse(&text, Utc::now()))
    };
    match cache.latest(name).filter(fresh) {
        Some(older) if (Utc::now() - older.at).to_std().unwrap_or_default() >= MIN_WINDOW => {}
        Some(older) => {
            let left =
                MIN_WINDOW.saturating_sub((Utc::now() - older.at).to_std().unwrap_or_default());
            tokio::time::sleep(left).await;
        }
        None => {
            cache.push(name, scrape().await?);
            tokio::time::sleep(MIN_WINDOW).await;
        }
    }
    cache.push(name, scrape().await?);
    cache
        .pair(name)
        .ok_or_else(|| ApiError::internal("the metrics cache lost a scrape"))
}

fn check(
    user: &User,
    verb: &str,
    resource: &str,
    ns: Option<&str>,
    name: Option<&str>,
) -> Result<(), ApiError> {
    let a = Attributes {
        verb,
        group: GROUP,
        resource,
        namespace: ns.unwrap_or(""),
        name: name.unwrap_or(""),
        ..Default::default()
    };
    match authz::decide(user, &a) {
        Decision::Allow => Ok(()),
        Decision::Deny(reason) => Err(forbidden(user, &a, &reason)),
    }
}

fn meta(obj: &Value, at: DateTime<Utc>) -> Value {
    let mut m = json!({
        "name": obj.pointer("/metadata/name"),
        "creationTimestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    if let Some(ns) = obj.pointer("/metadata/namespace") {
        m["namespace"] = ns.clone();
    }
    if let Some(l) = obj.pointer("/metadata/labels") {
        m["labels"] = l.clone();
    }
    m
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A NodeMetrics from a node's two scrapes (None: no usable figures).
pub fn node_metrics(node: &Value, older: &Scrape, newer: &Scrape) -> Option<Value> {
    let cpu = rate((older.at, older.node.0), (newer.at, newer.node.0))?;
    let memory = newer.node.1?;
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": meta(node, newer.at),
        "timestamp": stamp(newer.at),
        "window": window(older.at, newer.at),
        "usage": {"cpu": cpu_quantity(cpu), "memory": memory_quantity(memory)},
    }))
}

/// A PodMetrics from its node's two scrapes (None: no running container in them).
pub fn pod_metrics(pod: &Value, older: &Scrape, newer: &Scrape) -> Option<Value> {
    let ns = pod.pointer("/metadata/namespace")?.as_str()?;
    let name = pod.pointer("/metadata/name")?.as_str()?;
    let mut containers: Vec<Value> = newer
        .containers
        .iter()
        .filter(|((n, p, _), _)| n == ns && p == name)
        .filter_map(|((n, p, c), now)| {
            let before = older.containers.get(&(n.clone(), p.clone(), c.clone()))?;
            let cpu = rate((older.at, before.0), (newer.at, now.0))?;
            Some(json!({"name": c, "usage": {
                "cpu": cpu_quantity(cpu),
                "memory": memory_quantity(now.1.unwrap_or(0.0)),
            }}))
        })
        .collect();
    if containers.is_empty() {
        return None;
    }
    containers.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": meta(pod, newer.at),
        "timestamp": stamp(newer.at),
        "window": window(older.at, newer.at),
        "containers": containers,
    }))
}

/// `/apis/metrics.k8s.io` as discovery lists it in `/apis`.
pub fn group() -> Value {
    let gv = format!("{GROUP}/{VERSION}");
    json!({
        "name": GROUP,
        "versions": [{"groupVersion": gv, "version": VERSION}],
        "preferredVersion": {"groupVersion": gv, "version": VERSION},
    })
}

fn resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
        ],
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": format!("{kind}List"),
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {},
        "items": items,
    })
}

/// The nodes' scrapes, fetched at once; a node that cannot be scraped is left out (logged), as
/// metrics-server leaves it out.
async fn scrapes_of(api: &Api, nodes: &[Arc<Value>]) -> HashMap<String, (Scrape, Scrape)> {
    let all = futures::future::join_all(nodes.iter().map(|n| async move {
        let name = n
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        (name, scrapes(api, n).await)
    }))
    .await;
    all.into_iter()
        .filter_map(|(name, r)| match r {
            Ok(s) => Some((name, s)),
            Err(e) => {
                tracing::debug!(node = name.as_str(), error = %e.message, "no resource metrics from the node");
                None
            }
        })
        .collect()
}

/// Serves `/apis/metrics.k8s.io/REST...` (`rest`: the segments after the group).
pub async fn serve(
    api: Arc<Api>,
    rest: &[&str],
    req: RestRequest,
) -> Result<Response<Body>, ApiError> {
    if req.method != http::Method::GET {
        return Err(ApiError::method_not_allowed(req.method.as_str()));
    }
    let internal = User::internal("metrics");
    let user = &req.user;
    match rest {
        [] => {
            let mut g = group();
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            Ok(json_response(200, &g))
        }
        [VERSION] => Ok(json_response(200, &resource_list())),
        [VERSION, "nodes"] => {
            check(user, "list", "nodes", None, None)?;
            let filter = Filter::from_query(&req.query)?;
            let (nodes, _) = api.list(&internal, &NODES, None, &filter).await?;
            let scrapes = scrapes_of(&api, &nodes).await;
            let items = nodes
                .iter()
                .filter_map(|n| {
                    let name = n.pointer("/metadata/name")?.as_str()?;
                    let (a, b) = scrapes.get(name)?;
                    node_metrics(n, a, b)
                })
                .collect();
            Ok(json_response(200, &list("NodeMetrics", items)))
        }
        [VERSION, "nodes", name] => {
            check(user, "get", "nodes", None, Some(name))?;
            let node = api
                .get_part(&internal, ObjectRef::new(&NODES, None, name), Part::Main)
                .await?;
            let (a, b) = scrapes(&api, &node).await?;
            let m = node_metrics(&node, &a, &b)
                .ok_or_else(|| ApiError::not_found(GROUP, "nodes", name))?;
            Ok(json_response(200, &m))
        }
        [VERSION, "pods"] | [VERSION, "namespaces", _, "pods"] => {
            let ns = match rest {
                [_, "namespaces", ns, _] => Some(*ns),
                _ => None,
            };
            check(user, "list", "pods", ns, None)?;
            let filter = Filter::from_query(&req.query)?;
            let (pods, _) = api.list(&internal, &PODS, ns, &filter).await?;
            let (nodes, _) = api
                .list(&internal, &NODES, None, &Filter::default())
                .await?;
            let used: Vec<Arc<Value>> = nodes
                .into_iter()
                .filter(|n| {
                    let name = n.pointer("/metadata/name").and_then(Value::as_str);
                    pods.iter()
                        .any(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == name)
                })
                .collect();
            let scrapes = scrapes_of(&api, &used).await;
            let items = pods
                .iter()
                .filter_map(|p| {
                    let node = p.pointer("/spec/nodeName")?.as_str()?;
                    let (a, b) = scrapes.get(node)?;
                    pod_metrics(p, a, b)
                })
                .collect();
            Ok(json_response(200, &list("PodMetrics", items)))
        }
        [VERSION, "namespaces", ns, "pods", name] => {
            check(user, "get", "pods", Some(ns), Some(name))?;
            let pod = api
                .get_part(&internal, ObjectRef::new(&PODS, Some(ns), name), Part::Main)
                .await?;
            let node_name = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::not_found(GROUP, "pods", name))?;
            let node = api
                .get_part(
                    &internal,
                    ObjectRef::new(&NODES, None, node_name),
                    Part::Main,
                )
                .await?;
            let (a, b) = scrapes(&api, &node).await?;
            let m = pod_metrics(&pod, &a, &b)
                .ok_or_else(|| ApiError::not_found(GROUP, "pods", name))?;
            Ok(json_response(200, &m))
        }
        _ => Err(ApiError::path_not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const TEXT: &str = "# HELP container_cpu_usage_seconds_total [STABLE] x\n\
        # TYPE container_cpu_usage_seconds_total counter\n\
        container_cpu_usage_seconds_total{container=\"burn\",namespace=\"default\",pod=\"p\"} 10 1700000000000\n\
        container_memory_working_set_bytes{container=\"burn\",namespace=\"default\",pod=\"p\"} 2097152 1700000000000\n\
        node_cpu_usage_seconds_total 100 1700000000000\n\
        node_memory_working_set_bytes 1073741824 1700000000000\n\
        scrape_error 0\n";

    #[test]
    fn two_scrapes_make_a_rate() {
        let older = parse(TEXT, at("2026-11-26T10:00:00Z"));
        assert_eq!(older.node, (Some(100.0), Some(1073741824.0)));
        let key = ("default".to_string(), "p".to_string(), "burn".to_string());
        assert_eq!(older.containers[&key], (Some(10.0), Some(2097152.0)));
        let newer = parse(
            &TEXT
                .replace("} 10 ", "} 12 ")
                .replace("total 100 ", "total 104 "),
            at("2026-11-26T10:00:02Z"),
        );
        let pod = json!({"metadata": {"name": "p", "namespace": "default"}});
        let m = pod_metrics(&pod, &older, &newer).unwrap();
        assert_eq!(m["containers"][0]["usage"]["cpu"], "1000000000n");
        assert_eq!(m["containers"][0]["usage"]["memory"], "2048Ki");
        assert_eq!(m["window"], "2.000s");
        let node = json!({"metadata": {"name": "n1"}});
        let n = node_metrics(&node, &older, &newer).unwrap();
        assert_eq!(n["usage"]["cpu"], "2000000000n");
        assert_eq!(n["usage"]["memory"], "1048576Ki");
        // a reset counter gives no rate
        assert_eq!(rate((older.at, Some(5.0)), (newer.at, Some(1.0))), None);
        let other = json!({"metadata": {"name": "q", "namespace": "default"}});
        assert!(pod_metrics(&other, &older, &newer).is_none());
    }

    #[test]
    fn label_values_unescape() {
        let l = labels(r#"a="x\"y",b="z""#);
        assert_eq!(l["a"], "x\"y");
        assert_eq!(l["b"], "z");
    }
}
