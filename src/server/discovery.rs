//! Discovery documents (`/version`, `/api`, `/apis`, `/api/v1`, `/apis/G/V`) and OpenAPI
//! (`/openapi/v3`, per group-version documents generated from k8s-openapi's JSON schemas, and a
//! minimal `/openapi/v2`).
use std::sync::OnceLock;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::kinds::ALL;
use super::resources::{self, Resource};

pub const GIT_VERSION: &str = "v1.33.0";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": GIT_VERSION,
        "gitCommit": "daemonset-agent",
        "gitTreeState": "clean",
        "buildDate": "2026-11-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": format!("linux/{}", go_arch()),
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "apiVersion": "v1",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

pub fn api_group_list() -> Value {
    let groups: Vec<Value> = resources::group_versions()
        .into_iter()
        .map(|(g, v)| {
            let gv = format!("{g}/{v}");
            json!({
                "name": g,
                "versions": [{"groupVersion": gv, "version": v}],
                "preferredVersion": {"groupVersion": gv, "version": v},
            })
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/GROUP` (APIGroup).
pub fn api_group(group: &str) -> Option<Value> {
    let (g, v) = resources::group_versions()
        .into_iter()
        .find(|(g, _)| *g == group)?;
    let gv = format!("{g}/{v}");
    Some(json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": g,
        "versions": [{"groupVersion": gv, "version": v}],
        "preferredVersion": {"groupVersion": gv, "version": v},
    }))
}

/// APIResourceList of one group/version, or None when it is not served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let served = resources::in_group_version(group, version);
    if served.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for r in &served {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        list.push(entry);
        for sub in r.subresources {
            let mut entry = json!({
                "name": format!("{}/{}", r.plural, sub.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": sub.kind.unwrap_or(r.kind),
                "verbs": sub.verbs,
            });
            if let Some((group, version)) = sub.group_version {
                entry["group"] = json!(group);
                entry["version"] = json!(version);
            }
            list.push(entry);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": list,
    }))
}

/// The OpenAPI v3 document of one group/version and its hash.
struct GvDoc {
    path: String,
    body: Vec<u8>,
    hash: String,
}

fn gv_docs() -> &'static Vec<GvDoc> {
    static DOCS: OnceLock<Vec<GvDoc>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut all: Vec<(&str, &str)> = vec![("", "v1")];
        all.extend(resources::group_versions());
        all.into_iter()
            .map(|(g, v)| {
                let doc = openapi_v3_document(g, v);
                let body = serde_json::to_vec(&doc).unwrap_or_default();
                let hash = hex::encode_upper(&Sha256::digest(&body)[..16]);
                let path = if g.is_empty() {
                    format!("api/{v}")
                } else {
                    format!("apis/{g}/{v}")
                };
                GvDoc { path, body, hash }
            })
            .collect()
    })
}

/// `/openapi/v3`: the index of the per group-version documents.
pub fn openapi_v3_root() -> Value {
    let mut paths = Map::new();
    for d in gv_docs() {
        paths.insert(
            d.path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{}?hash={}", d.path, d.hash)}),
        );
    }
    json!({ "paths": paths })
}

/// `/openapi/v3/<path>` (path like `apis/apps/v1`).
pub fn openapi_v3_gv(path: &str) -> Option<&'static [u8]> {
    gv_docs()
        .iter()
        .find(|d| d.path == path)
        .map(|d| d.body.as_slice())
}

/// A minimal `/openapi/v2` in protobuf (gnostic openapi_v2.Document: swagger "2.0" and info):
/// kubectl downloads it before validating, but relies on the `fieldValidation` parameter
/// advertised in OpenAPI v3 (server-side validation) for the kinds served here.
pub fn openapi_v2_protobuf() -> Vec<u8> {
    fn field(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
        out.push(tag);
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(0x0a, b"Kubernetes", &mut info);
    field(0x12, GIT_VERSION.as_bytes(), &mut info);
    let mut doc = Vec::new();
    field(0x0a, b"2.0", &mut doc);
    field(0x12, &info, &mut doc);
    doc
}

fn schema_definitions() -> Map<String, Value> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, Status};
    let mut gen = schemars::generate::SchemaSettings::openapi3().into_generator();
    for r in ALL {
        r.strategy.openapi_schema(&mut gen);
    }
    gen.subschema_for::<Status>();
    gen.subschema_for::<DeleteOptions>();
    gen.take_definitions(true)
}

/// The definition name k8s-openapi gives a kind: `io.k8s.api.PKG.VERSION.KIND`, where PKG is
/// `core` for the legacy group, else the group's first label (`coordination.k8s.io`:
/// `coordination`).
fn schema_name(r: &Resource) -> String {
    let pkg = match r.group {
        "" => "core",
        group => group.split('.').next().unwrap_or(group),
    };
    format!("io.k8s.api.{pkg}.{}.{}", r.version, r.kind)
}

fn query_param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn openapi_v3_document(group: &str, version: &str) -> Value {
    let mut defs = schema_definitions();
    let served = resources::in_group_version(group, version);
    let mut paths = Map::new();
    for r in &served {
        let name = schema_name(r);
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        if let Some(def) = defs.get_mut(&name).and_then(Value::as_object_mut) {
            def.insert("x-kubernetes-group-version-kind".into(), json!([gvk]));
        }
        let obj_ref = json!({"$ref": format!("#/components/schemas/{name}")});
        let ok = |schema: &Value| json!({"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}});
        let write_params = json!([
            query_param("dryRun"),
            query_param("fieldManager"),
            query_param("fieldValidation"),
        ]);
        let body = json!({"content": {"application/json": {"schema": obj_ref}}, "required": true});
        let patch_body = json!({"content": {
            "application/json-patch+json": {"schema": {"type": "object"}},
            "application/merge-patch+json": {"schema": {"type": "object"}},
        }, "required": true});
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let scope = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{prefix}/{}", r.plural)
        };
        let op = |verb: &str, extra: Value| {
            let mut o = json!({
                "operationId": format!("{verb}{}", r.kind),
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
                "responses": ok(&obj_ref),
            });
            if let (Some(o), Some(extra)) = (o.as_object_mut(), extra.as_object()) {
                for (k, v) in extra {
                    o.insert(k.clone(), v.clone());
                }
            }
            o
        };
        paths.insert(
            scope.clone(),
            json!({
                "get": op("list", json!({})),
                "post": op("post", json!({"parameters": write_params, "requestBody": body})),
            }),
        );
        let item = json!({
            "get": op("get", json!({})),
            "put": op("put", json!({"parameters": write_params, "requestBody": body})),
            "patch": op("patch", json!({"parameters": write_params, "requestBody": patch_body})),
            "delete": op("delete", json!({})),
        });
        paths.insert(format!("{scope}/{{name}}"), item.clone());
        for sub in r.subresources {
            let mut ops = Map::new();
            let methods = [
                ("get", "get"),
                ("update", "put"),
                ("patch", "patch"),
                ("delete", "delete"),
            ];
            for (verb, method) in methods {
                if let (true, Some(op)) = (sub.verbs.contains(&verb), item.get(method)) {
                    ops.insert(method.to_string(), op.clone());
                }
            }
            paths.insert(format!("{scope}/{{name}}/{}", sub.name), Value::Object(ops));
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
        "components": {"schemas": defs},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists_name_status_subresources_and_short_names() {
        let apps = api_resource_list("apps", "v1").unwrap();
        let names: Vec<&str> = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "daemonsets",
                "daemonsets/status",
                "replicasets",
                "replicasets/status",
                "replicasets/scale",
                "controllerrevisions"
            ]
        );
        // kubectl scale finds the Scale's own group and version here
        let scale = &apps["resources"][4];
        assert_eq!(
            (&scale["group"], &scale["version"], &scale["kind"]),
            (&json!("autoscaling"), &json!("v1"), &json!("Scale"))
        );
        assert_eq!(apps["resources"][0]["shortNames"], json!(["ds"]));
        assert_eq!(apps["resources"][0]["categories"], json!(["all"]));
        assert!(api_resource_list("apps", "v2").is_none());
    }

    #[test]
    fn openapi_v3_advertises_field_validation_per_kind() {
        let root = openapi_v3_root();
        let url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="));
        let doc: Value = serde_json::from_slice(openapi_v3_gv("apis/apps/v1").unwrap()).unwrap();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "DaemonSet"
        );
        assert!(patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
        let ds = &doc["components"]["schemas"]["io.k8s.api.apps.v1.DaemonSet"];
        assert_eq!(ds["x-kubernetes-group-version-kind"][0]["group"], "apps");
        let status = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}/status"];
        let methods: Vec<&String> = status.as_object().unwrap().keys().collect();
        assert_eq!(methods, ["get", "put", "patch"]);
        let doc: Value =
            serde_json::from_slice(openapi_v3_gv("apis/coordination.k8s.io/v1").unwrap()).unwrap();
        let lease = &doc["components"]["schemas"]["io.k8s.api.coordination.v1.Lease"];
        assert_eq!(lease["x-kubernetes-group-version-kind"][0]["kind"], "Lease");
    }
}
