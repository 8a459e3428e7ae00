//! `meta.k8s.io/v1` Tables for `kubectl get`: the Table around the rows, and the formatting
//! helpers kube-apiserver's printers share. Each kind's columns and cells are in its strategy
//! (`kinds/`).
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::resources::Resource;

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// The string at `ptr`, or "".
pub fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}
/// The integer at `ptr`, or 0.
pub fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}
/// `<none>` for an empty cell.
pub fn none_if_empty(x: String) -> String {
    if x.is_empty() {
        "<none>".into()
    } else {
        x
    }
}

/// `k=v,k2=v2` of a string map, as `labels.FormatLabels`.
pub fn format_labels(v: Option<&Value>) -> String {
    let items: Vec<String> = v
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    none_if_empty(items.join(","))
}

/// A LabelSelector as `metav1.FormatLabelSelector` prints it.
pub fn format_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        let mut kv: Vec<_> = m.iter().collect();
        kv.sort_by(|a, b| a.0.cmp(b.0));
        parts.extend(
            kv.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))),
        );
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = s(e, "/key");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            parts.push(match s(e, "/operator") {
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" => key.to_string(),
                "DoesNotExist" => format!("!{key}"),
                op => format!("{key} {op} ({})", values.join(",")),
            });
        }
    }
    none_if_empty(parts.join(","))
}

/// Kubernetes' duration.HumanDuration.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The Age column: time since `metadata.creationTimestamp`.
pub fn age(obj: &Value, now: DateTime<Utc>) -> String {
    match DateTime::parse_from_rfc3339(s(obj, "/metadata/creationTimestamp")) {
        Ok(t) => human_duration((now - t.with_timezone(&Utc)).num_seconds()),
        Err(_) => "<unknown>".into(),
    }
}

/// The name cell (`metadata.name`).
pub fn name(obj: &Value) -> Value {
    json!(s(obj, "/metadata/name"))
}

/// The Containers and Images cells of a pod spec.
pub fn containers_images(spec: Option<&Value>) -> (String, String) {
    let cs = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// The row's object as kube-apiserver's `AsPartialObjectMetadata` makes it: the whole
/// metadata, managedFields included (kubectl hides them itself).
fn partial_metadata(obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
}

/// A Table of `objects`; `include_object` is the `includeObject` query parameter
/// (None, Metadata (default) or Object).
pub fn table(
    r: &Resource,
    objects: &[&Value],
    rv: Option<u64>,
    include_object: &str,
    now: DateTime<Utc>,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": r.strategy.cells(o, now)});
            match include_object {
                "None" => {}
                "Object" => row["object"] = (*o).clone(),
                _ => row["object"] = partial_metadata(o),
            }
            row
        })
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = rv {
        metadata["resourceVersion"] = json!(rv.to_string());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": r.strategy.columns().iter().map(|c| c.definition()).collect::<Vec<_>>(),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::super::kinds::NAMESPACES;
    use super::*;

    #[test]
    fn human_durations_match_kubernetes() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (10 * 3600, "10h"),
            (3 * 86400 + 3600, "3d1h"),
            (30 * 86400, "30d"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn tables_carry_the_strategys_columns_and_cells() {
        let now = Utc::now();
        let ns = json!({"metadata": {"name": "team", "creationTimestamp": now.to_rfc3339(),
            "labels": {"a": "b"}, "managedFields": [{"manager": "m"}]}});
        let t = table(&NAMESPACES, &[&ns], Some(7), "Metadata", now);
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Status", "Age"]);
        assert_eq!(t["rows"][0]["cells"], json!(["team", "Active", "0s"]));
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["labels"]["a"], "b");
        assert_eq!(
            t["rows"][0]["object"]["metadata"]["managedFields"],
            ns["metadata"]["managedFields"]
        );
        let t = table(&NAMESPACES, &[&ns], None, "None", now);
        assert!(t["rows"][0].get("object").is_none());
        assert!(t["metadata"].get("resourceVersion").is_none());
        let t = table(&NAMESPACES, &[&ns], None, "Object", now);
        assert_eq!(t["rows"][0]["object"], ns);
    }

    #[test]
    fn selectors_and_labels_print_as_kubectl_does() {
        let cases = [
            (json!({"matchLabels": {"b": "2", "a": "1"}}), "a=1,b=2"),
            (
                json!({"matchExpressions": [{"key": "k", "operator": "In", "values": ["x", "y"]},
                    {"key": "e", "operator": "DoesNotExist"}]}),
                "k in (x,y),!e",
            ),
            (json!({}), "<none>"),
        ];
        for (sel, want) in cases {
            assert_eq!(format_selector(Some(&sel)), want, "{sel}");
        }
        assert_eq!(format_selector(None), "<none>");
        assert_eq!(format_labels(Some(&json!({"w": "true"}))), "w=true");
        assert_eq!(format_labels(None), "<none>");
    }
}
