//! `daemonset-agent convert -f FILE`: Deployments and ReplicaSets (apps/v1) turned into
//! DaemonSets, one note per change on stderr. A List, or a YAML stream of several documents, is
//! converted item by item; other kinds pass through unchanged.
//!
//! What changes, and why (DaemonSetSpec has no replicas, strategy, paused or progress deadline):
//! - `spec.replicas`: dropped (one pod per eligible node).
//! - `spec.strategy`: RollingUpdate becomes `spec.updateStrategy` with the same maxUnavailable
//!   (the Deployment's default 25% when unset); maxSurge is kept only when maxUnavailable is 0,
//!   as a DaemonSet allows exactly one of the two to be non-zero. Recreate becomes RollingUpdate
//!   with maxUnavailable 1 (a DaemonSet has no Recreate).
//! - `spec.progressDeadlineSeconds`, `spec.paused`: dropped.
//! - `spec.selector`, `spec.template`, `spec.minReadySeconds`, `spec.revisionHistoryLimit`: kept.
//! - `status`, and the metadata the server sets (uid, resourceVersion, creationTimestamp,
//!   managedFields, generation, selfLink, the `deployment.kubernetes.io/revision` annotation):
//!   removed.
//!
//! The result is defaulted and validated as the server validates a DaemonSet
//! (`core::validation`), so what it prints is what the server accepts.
use std::io::Read as _;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Map, Value};

use crate::core::validation::{self, int_or_percent};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("document {index} is not YAML or JSON")]
    Parse {
        index: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{what}: the result is not a DaemonSet")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: the result is not a valid DaemonSet: {errors}")]
    Invalid { what: String, errors: String },
    #[error("write the result")]
    Encode(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("no object in the input")]
    Empty,
}

/// `-o yaml` (the default) or `-o json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

/// What a conversion made: the objects, in order, and one note per change.
#[derive(Debug, Default, PartialEq)]
pub struct Converted {
    pub objects: Vec<Value>,
    pub notes: Vec<String>,
}

/// The annotation a Deployment's controller sets on it and its ReplicaSets.
const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// Metadata only the server sets.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "managedFields",
    "generation",
    "selfLink",
];
/// A Deployment's default maxUnavailable and maxSurge.
const DEPLOYMENT_DEFAULT: &str = "25%";

/// Reads `path` (`-` for stdin), converts it and writes the result to stdout, the notes to
/// stderr.
pub fn run(path: &str, format: Format) -> Result<(), ConvertError> {
    let read_err = |source| ConvertError::Read {
        path: path.to_string(),
        source,
    };
    let text = if path == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(read_err)?;
        s
    } else {
        std::fs::read_to_string(path).map_err(read_err)?
    };
    let converted = convert_text(&text)?;
    for note in &converted.notes {
        eprintln!("note: {note}");
    }
    print!("{}", render(&converted.objects, format)?);
    Ok(())
}

/// Converts every document of a YAML stream (JSON is YAML).
pub fn convert_text(text: &str) -> Result<Converted, ConvertError> {
    let mut out = Converted::default();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value: Value =
            serde::Deserialize::deserialize(document).map_err(|source| ConvertError::Parse {
                index: i + 1,
                source,
            })?;
        if value.is_null() {
            continue;
        }
        let object = convert_value(value, &mut out.notes)?;
        out.objects.push(object);
    }
    if out.objects.is_empty() {
        return Err(ConvertError::Empty);
    }
    Ok(out)
}

/// The objects as YAML documents, or JSON (several in a `List`, as kubectl prints them).
pub fn render(objects: &[Value], format: Format) -> Result<String, ConvertError> {
    let encode = |e| ConvertError::Encode(Box::new(e));
    match (format, objects) {
        (Format::Json, [one]) => Ok(serde_json::to_string_pretty(one).map_err(encode)? + "\n"),
        (Format::Json, many) => {
            let list = json!({"apiVersion": "v1", "kind": "List", "items": many});
            Ok(serde_json::to_string_pretty(&list).map_err(encode)? + "\n")
        }
        (Format::Yaml, objects) => {
            let docs: Result<Vec<String>, _> = objects
                .iter()
                .map(|o| serde_yaml::to_string(o).map_err(|e| ConvertError::Encode(Box::new(e))))
                .collect();
            Ok(docs?.join("---\n"))
        }
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// One object: a List's items, a Deployment or ReplicaSet converted, anything else unchanged.
fn convert_value(value: Value, notes: &mut Vec<String>) -> Result<Value, ConvertError> {
    let kind = str_of(&value, "kind").to_string();
    let api_version = str_of(&value, "apiVersion").to_string();
    if kind.ends_with("List") && value.get("items").is_some_and(Value::is_array) {
        let mut value = value;
        let items = value["items"].take();
        let items = items
            .as_array()
            .into_iter()
            .flatten()
            .cloned()
            .map(|item| convert_value(item, notes))
            .collect::<Result<Vec<_>, _>>()?;
        value["items"] = Value::Array(items);
        return Ok(value);
    }
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let what = format!("{kind} {name}");
    match (api_version.as_str(), kind.as_str()) {
        ("apps/v1", "Deployment" | "ReplicaSet") => {
            let Value::Object(object) = value else {
                unreachable!("an object has a kind")
            };
            let converted = convert_object(object, &what, notes);
            check(&converted, &what)?;
            Ok(converted)
        }
        (_, "Deployment" | "ReplicaSet") => {
            notes.push(format!(
                "{what}: apiVersion {api_version} is not apps/v1: left unchanged"
            ));
            Ok(value)
        }
        _ => {
            notes.push(format!(
                "{what}: not a Deployment or ReplicaSet: left unchanged"
            ));
            Ok(value)
        }
    }
}

/// Defaults and validates the DaemonSet as the server would.
fn check(object: &Value, what: &str) -> Result<(), ConvertError> {
    let mut ds: DaemonSet =
        serde_json::from_value(object.clone()).map_err(|source| ConvertError::Decode {
            what: what.to_string(),
            source,
        })?;
    validation::default_daemonset(&mut ds);
    let errors = validation::validate_daemonset(&ds);
    if errors.is_empty() {
        return Ok(());
    }
    Err(ConvertError::Invalid {
        what: what.to_string(),
        errors: errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    })
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn int_or_string(v: &Value) -> Option<IntOrString> {
    serde_json::from_value(v.clone()).ok()
}

fn is_zero(v: &Value) -> bool {
    int_or_string(v).and_then(|v| int_or_percent(&v)) == Some(0)
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn convert_object(mut object: Map<String, Value>, what: &str, notes: &mut Vec<String>) -> Value {
    let mut note = |text: String| notes.push(format!("{what}: {text}"));
    let kind = str_of(&Value::Object(object.clone()), "kind").to_string();
    object.insert("apiVersion".into(), json!("apps/v1"));
    object.insert("kind".into(), json!("DaemonSet"));
    note(format!("kind {kind} -> DaemonSet"));

    if let Some(Value::Object(meta)) = object.get_mut("metadata") {
        for key in SERVER_METADATA {
            match meta.remove(*key) {
                Some(Value::Null) | None => {}
                Some(_) => note(format!("metadata.{key} removed (the server sets it)")),
            }
        }
        if let Some(Value::Object(annotations)) = meta.get_mut("annotations") {
            if annotations.remove(REVISION_ANNOTATION).is_some() {
                note(format!(
                    "annotation {REVISION_ANNOTATION} removed (the Deployment controller's)"
                ));
            }
            if annotations.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    if let Some(status) = object.remove("status") {
        if !is_empty(&status) {
            note("status removed (the server writes it)".to_string());
        }
    }

    let mut spec = match object.remove("spec") {
        Some(Value::Object(spec)) => spec,
        _ => Map::new(),
    };
    if let Some(replicas) = spec.remove("replicas") {
        note(format!(
            "spec.replicas {} dropped: a DaemonSet runs one pod on each node it selects",
            shown(&replicas)
        ));
    }
    for key in ["progressDeadlineSeconds", "paused"] {
        if let Some(v) = spec.remove(key) {
            note(format!(
                "spec.{key} {} dropped: a DaemonSet has no such field",
                shown(&v)
            ));
        }
    }
    if let Some(strategy) = spec.remove("strategy") {
        if let Some(update) = update_strategy(&strategy, &mut note) {
            spec.insert("updateStrategy".into(), update);
        }
    }
    let known = [
        "selector",
        "template",
        "minReadySeconds",
        "revisionHistoryLimit",
        "updateStrategy",
    ];
    let unknown: Vec<String> = spec
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .cloned()
        .collect();
    for key in unknown {
        spec.remove(&key);
        note(format!("spec.{key} dropped: a DaemonSet has no such field"));
    }
    if let Some(Value::Object(template_meta)) =
        spec.get_mut("template").and_then(|t| t.get_mut("metadata"))
    {
        if template_meta.get("creationTimestamp") == Some(&Value::Null) {
            template_meta.remove("creationTimestamp");
        }
    }
    object.insert("spec".into(), Value::Object(spec));
    Value::Object(order(object))
}

/// A Deployment's `strategy` as a DaemonSet's `updateStrategy` (None: the DaemonSet's default).
fn update_strategy(strategy: &Value, note: &mut impl FnMut(String)) -> Option<Value> {
    if is_empty(strategy) {
        note("spec.strategy {} dropped: the DaemonSet default is RollingUpdate with maxUnavailable 1".to_string());
        return None;
    }
    let kind = str_of(strategy, "type");
    if kind == "Recreate" {
        note("spec.strategy Recreate -> updateStrategy RollingUpdate with maxUnavailable 1 (a DaemonSet replaces its pods node by node; it has no Recreate)".to_string());
        return Some(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}));
    }
    let rolling = strategy.get("rollingUpdate");
    let given = |key: &str| rolling.and_then(|r| r.get(key)).filter(|v| !v.is_null());
    let default = json!(DEPLOYMENT_DEFAULT);
    let unavailable = given("maxUnavailable").unwrap_or(&default).clone();
    let surge = given("maxSurge").unwrap_or(&default).clone();
    let rolling_update = match (is_zero(&unavailable), is_zero(&surge)) {
        (false, surge_zero) => {
            if given("maxUnavailable").is_none() {
                note(format!("spec.strategy maxUnavailable unset: the Deployment's default {DEPLOYMENT_DEFAULT} kept as updateStrategy maxUnavailable"));
            }
            if !surge_zero {
                note(format!(
                    "spec.strategy maxSurge {} dropped: a DaemonSet allows maxSurge only with maxUnavailable 0",
                    shown(&surge)
                ));
            }
            json!({"maxUnavailable": unavailable})
        }
        (true, false) => json!({"maxUnavailable": 0, "maxSurge": surge}),
        (true, true) => {
            note("spec.strategy maxUnavailable and maxSurge are both 0: updateStrategy maxUnavailable 1".to_string());
            json!({"maxUnavailable": 1})
        }
    };
    note(format!(
        "spec.strategy -> spec.updateStrategy RollingUpdate {rolling_update}"
    ));
    Some(json!({"type": "RollingUpdate", "rollingUpdate": rolling_update}))
}

/// apiVersion, kind, metadata, spec first, as kubectl prints objects.
fn order(mut object: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for key in ["apiVersion", "kind", "metadata", "spec"] {
        if let Some(v) = object.remove(key) {
            out.insert(key.to_string(), v);
        }
    }
    out.extend(object);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kubectl create deployment example --image=nginx --dry-run=client -o yaml` (1.27 .. 1.33).
    const KUBECTL_DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  creationTimestamp: null
  labels:
    app: example
  name: example
spec:
  replicas: 1
  selector:
    matchLabels:
      app: example
  strategy: {}
  template:
    metadata:
      creationTimestamp: null
      labels:
        app: example
    spec:
      containers:
      - image: nginx
        name: nginx
        resources: {}
status: {}
";

    #[test]
    fn kubectls_deployment_becomes_a_daemonset() {
        let got = convert_text(KUBECTL_DEPLOYMENT).unwrap();
        assert_eq!(
            got.objects,
            vec![json!({
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"labels": {"app": "example"}, "name": "example"},
                "spec": {
                    "selector": {"matchLabels": {"app": "example"}},
                    "template": {
                        "metadata": {"labels": {"app": "example"}},
                        "spec": {"containers": [{"image": "nginx", "name": "nginx", "resources": {}}]},
                    },
                },
            })]
        );
        assert_eq!(
            got.notes,
            vec![
                "Deployment example: kind Deployment -> DaemonSet",
                "Deployment example: spec.replicas 1 dropped: a DaemonSet runs one pod on each node it selects",
                "Deployment example: spec.strategy {} dropped: the DaemonSet default is RollingUpdate with maxUnavailable 1",
            ]
        );
    }

    fn deployment(strategy: Value) -> String {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {
                "selector": {"matchLabels": {"app": "d"}},
                "strategy": strategy,
                "template": {"metadata": {"labels": {"app": "d"}},
                             "spec": {"containers": [{"name": "c", "image": "i"}]}},
            },
        })
        .to_string()
    }

    #[test]
    fn strategies_map_to_an_update_strategy_a_daemonset_allows() {
        // (case, Deployment strategy, DaemonSet updateStrategy)
        let table = [
            (
                "Recreate",
                json!({"type": "Recreate"}),
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}),
            ),
            (
                "both set: maxUnavailable wins",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2, "maxSurge": "50%"}}),
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}),
            ),
            (
                "surge only",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "50%"}}),
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "50%"}}),
            ),
            (
                "surge only as 0%",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "0%", "maxSurge": 1}}),
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}),
            ),
            (
                "defaults: 25%",
                json!({"type": "RollingUpdate"}),
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%"}}),
            ),
            (
                "both 0",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}),
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}),
            ),
        ];
        for (name, strategy, want) in table {
            let got = convert_text(&deployment(strategy)).unwrap();
            assert_eq!(got.objects[0]["spec"]["updateStrategy"], want, "{name}");
            assert!(got.objects[0]["spec"].get("strategy").is_none(), "{name}");
        }
    }

    #[test]
    fn server_state_and_deployment_only_fields_go_with_one_note_each() {
        let input = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "prod", "uid": "u-1", "resourceVersion": "42",
                         "generation": 3, "creationTimestamp": "2026-11-26T00:00:00Z",
                         "managedFields": [{"manager": "kubectl"}],
                         "annotations": {"deployment.kubernetes.io/revision": "3", "team": "a"}},
            "spec": {"replicas": 3, "paused": false, "progressDeadlineSeconds": 600,
                     "minReadySeconds": 5, "revisionHistoryLimit": 4,
                     "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "status": {"replicas": 3},
        });
        let got = convert_text(&input.to_string()).unwrap();
        let ds = &got.objects[0];
        assert_eq!(
            ds["metadata"],
            json!({"name": "web", "namespace": "prod", "annotations": {"team": "a"}})
        );
        assert_eq!(ds["spec"]["minReadySeconds"], 5);
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 4);
        assert!(ds.get("status").is_none());
        let notes = got.notes.join("\n");
        for change in [
            "metadata.uid removed",
            "metadata.resourceVersion removed",
            "metadata.creationTimestamp removed",
            "metadata.managedFields removed",
            "metadata.generation removed",
            "annotation deployment.kubernetes.io/revision removed",
            "status removed",
            "spec.replicas 3 dropped",
            "spec.paused false dropped",
            "spec.progressDeadlineSeconds 600 dropped",
        ] {
            assert_eq!(notes.matches(change).count(), 1, "{change} in\n{notes}");
        }
        assert_eq!(got.notes.len(), 11, "{notes}");
    }

    #[test]
    fn lists_and_streams_convert_item_by_item_and_pass_other_kinds() {
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "r"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [rs, cm]});
        let got = convert_text(&list.to_string()).unwrap();
        assert_eq!(got.objects.len(), 1);
        assert_eq!(got.objects[0]["items"][0]["kind"], "DaemonSet");
        assert!(got.objects[0]["items"][0]["spec"].get("replicas").is_none());
        assert_eq!(got.objects[0]["items"][1], cm);

        let stream = format!(
            "---\n{KUBECTL_DEPLOYMENT}---\n{}\n",
            serde_yaml::to_string(&cm).unwrap()
        );
        let got = convert_text(&stream).unwrap();
        assert_eq!(got.objects.len(), 2);
        assert_eq!(got.objects[0]["kind"], "DaemonSet");
        assert_eq!(got.objects[1], cm);
        assert!(got
            .notes
            .iter()
            .any(|n| n == "ConfigMap c: not a Deployment or ReplicaSet: left unchanged"));
        let yaml = render(&got.objects, Format::Yaml).unwrap();
        assert_eq!(yaml.matches("---\n").count(), 1);
        let json: Value =
            serde_json::from_str(&render(&got.objects, Format::Json).unwrap()).unwrap();
        assert_eq!(json["kind"], "List");
        assert_eq!(json["items"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn an_invalid_result_is_refused_with_the_servers_message() {
        // a template whose labels the selector does not match
        let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "x"}},
                     "template": {"metadata": {"labels": {"app": "y"}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let err = convert_text(&bad.to_string()).unwrap_err();
        assert!(matches!(err, ConvertError::Invalid { .. }), "{err}");
        assert!(matches!(convert_text("---\n"), Err(ConvertError::Empty)));
    }
}
