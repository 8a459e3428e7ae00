//! Per-kind behaviour, as kube-apiserver's registry strategies hold it (RESTCreateStrategy,
//! RESTUpdateStrategy, the status strategy, the table convertor): the generic verbs ask the
//! [`Strategy`] of the resource and never look at the kind's name.
//!
//! A kind implements the typed [`Kind`] trait in its own file under `kinds/`; the blanket
//! implementation turns it into the object-safe [`Strategy`] the verbs use, doing the steps every
//! kind shares once: typed decoding, unknown-field detection, defaulting, validation, admission,
//! encoding.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::auth::User;
use super::converted::Conversion;
use super::query::FieldValidation;
use super::resources::Resource;
use super::status::ApiError;
use super::table;
use super::verbs::Api;
use crate::core::patch::{self, Schema};
use crate::core::validation::{FieldError, Policy};

/// One column of a kind's Table (`meta.k8s.io/v1` TableColumnDefinition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// `string`, `integer`, ...
    pub ty: &'static str,
    /// `name` for the name column, else empty.
    pub format: &'static str,
    /// 0: always shown; 1: with `-o wide`.
    pub priority: i32,
}

impl Column {
    pub const NAME: Column = Column {
        name: "Name",
        ty: "string",
        format: "name",
        priority: 0,
    };
    pub const AGE: Column = Column::string("Age", 0);

    pub const fn string(name: &'static str, priority: i32) -> Column {
        Column {
            name,
            ty: "string",
            format: "",
            priority,
        }
    }
    pub const fn integer(name: &'static str, priority: i32) -> Column {
        Column {
            name,
            ty: "integer",
            format: "",
            priority,
        }
    }
    pub fn definition(&self) -> Value {
        json!({"name": self.name, "type": self.ty, "format": self.format, "description": "",
            "priority": self.priority})
    }
}

/// What a write is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Prepare<'a> {
    pub resource: &'a Resource,
    /// The stored object, on updates.
    pub old: Option<&'a Value>,
    pub validation: FieldValidation,
    /// The operator's pod policy, on the writes admission control sees (creates and writes of
    /// the main resource; a status write of an existing object stays possible).
    pub policy: Option<Policy>,
}

/// An object ready to store, and the warnings for the client.
#[derive(Debug)]
pub struct Prepared {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// A kind that is never stored (kube-apiserver's reviews: SelfSubjectAccessReview,
/// SelfSubjectReview): a create is answered with the object and its status, and nothing else is
/// served.
#[async_trait]
pub trait Review: Send + Sync {
    /// The answer to `obj`, asked by `user`.
    async fn answer(&self, api: &Api, user: &User, obj: Value) -> Result<Value, ApiError>;
}

/// The behaviour of one served kind, as the verbs see it.
#[async_trait]
pub trait Strategy: Send + Sync {
    /// Some for a kind that is answered instead of stored.
    fn review(&self) -> Option<&dyn Review>;
    /// Decodes `obj` into the kind's type (the schema), reports the fields it does not know
    /// (refused under `Strict`, warned under `Warn`), defaults, validates (create, or update
    /// against `ctx.old`), admits, and encodes the result.
    fn prepare(&self, obj: &Value, ctx: Prepare<'_>) -> Result<Prepared, ApiError>;
    /// The status a created object starts with (None: what the client sent).
    fn initial_status(&self) -> Option<Value>;
    /// The top-level fields whose change bumps `metadata.generation`; empty: the kind has no
    /// generation.
    fn generation_fields(&self) -> &'static [&'static str];
    /// The top-level fields a status write may change (and a main write keeps).
    fn status_fields(&self) -> &'static [&'static str];
    /// The patch metadata strategic merge patches use.
    fn patch_schema(&self) -> &'static Schema;
    /// Cleanup after an object was deleted (a namespace's contents).
    async fn after_delete(&self, api: &Api, obj: &Value) -> Result<(), ApiError>;
    /// The grace period a delete of `obj` waits (RESTGracefulDeleteStrategy's
    /// CheckGracefulDelete), given the grace period the request asked for; None for a kind
    /// deleted at once.
    fn grace_period(&self, obj: &Value, requested: Option<i64>) -> Option<i64>;
    /// Table columns and one object's cells, in the same order.
    fn columns(&self) -> &'static [Column];
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value>;
    /// Adds the kind's schema (and those it refers to) to an OpenAPI document.
    fn openapi_schema(&self, gen: &mut schemars::SchemaGenerator);
    /// Some for a resource served over another's storage (`converted`).
    fn conversion(&self) -> Option<&'static Conversion>;
    /// A field selector's label as the stored object has it, when the kind names a field
    /// otherwise (upstream's field set: a core Event's `source` is `source.component`).
    fn field_label(&self, label: &str) -> Option<&'static str>;
}

/// A kind, typed. Only `validate` is required; the defaults are those of a plain kind without
/// status subresource, generation, defaulting or patch metadata.
#[async_trait]
pub trait Kind: Send + Sync + 'static {
    /// The k8s-openapi type: the schema objects are decoded into.
    type Object: DeserializeOwned + Serialize + schemars::JsonSchema + Send + Sync;

    /// SetDefaults.
    fn default(&self, _obj: &mut Self::Object) {}
    /// Validation of a new object.
    fn validate(&self, obj: &Self::Object) -> Vec<FieldError>;
    /// Validation of an update (immutable fields on top of `validate`).
    fn validate_update(&self, obj: &Self::Object, _old: &Self::Object) -> Vec<FieldError> {
        self.validate(obj)
    }
    /// Mutating admission with the operator's policy (DefaultTolerationSeconds), on the writes
    /// admission control sees, after the defaults.
    fn mutate(&self, _obj: &mut Self::Object, _policy: Policy) {}
    /// The operator's policy on what the object may ask for (privileged pods, host paths).
    fn admit(&self, _obj: &Self::Object, _policy: Policy) -> Vec<FieldError> {
        Vec::new()
    }
    /// WarningsOnCreate / WarningsOnUpdate.
    fn warnings(&self, _obj: &Self::Object, _old: Option<&Self::Object>) -> Vec<String> {
        Vec::new()
    }
    fn initial_status(&self) -> Option<Value> {
        None
    }
    fn review(&self) -> Option<&dyn Review> {
        None
    }
    fn conversion(&self) -> Option<&'static Conversion> {
        None
    }
    fn field_label(&self, _label: &str) -> Option<&'static str> {
        None
    }
    fn generation_fields(&self) -> &'static [&'static str] {
        &[]
    }
    fn status_fields(&self) -> &'static [&'static str] {
        &["status"]
    }
    fn patch_schema(&self) -> &'static Schema {
        &patch::UNKNOWN
    }
    async fn after_delete(&self, _api: &Api, _obj: &Value) -> Result<(), ApiError> {
        Ok(())
    }
    /// Graceful deletion: a kind opts in by returning the grace period (see [`Strategy`]).
    fn grace_period(&self, _obj: &Value, _requested: Option<i64>) -> Option<i64> {
        None
    }
    fn columns(&self) -> &'static [Column] {
        &[Column::NAME, Column::AGE]
    }
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        vec![table::name(obj), json!(table::age(obj, now))]
    }
}

#[async_trait]
impl<K: Kind> Strategy for K {
    fn prepare(&self, obj: &Value, ctx: Prepare<'_>) -> Result<Prepared, ApiError> {
        let r = ctx.resource;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut typed: K::Object = decode(r, obj)?;
        // Strict decoding comes first, as in kube-apiserver: a typo is reported as such, not as
        // the missing field it leaves behind.
        let mut warnings = unknown_field_warnings(r, obj, &encode(&typed)?, ctx.validation)?;
        self.default(&mut typed);
        if let Some(policy) = ctx.policy {
            self.mutate(&mut typed, policy);
        }
        let old: Option<K::Object> = ctx.old.map(|o| decode(r, o)).transpose()?;
        let mut errors = match &old {
            Some(old) => self.validate_update(&typed, old),
            None => self.validate(&typed),
        };
        if let Some(policy) = ctx.policy {
            errors.extend(self.admit(&typed, policy));
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(r.kind, name, &errors));
        }
        warnings.extend(self.warnings(&typed, old.as_ref()));
        Ok(Prepared {
            object: encode(&typed)?,
            warnings,
        })
    }
    fn initial_status(&self) -> Option<Value> {
        Kind::initial_status(self)
    }
    fn review(&self) -> Option<&dyn Review> {
        Kind::review(self)
    }
    fn generation_fields(&self) -> &'static [&'static str] {
        Kind::generation_fields(self)
    }
    fn status_fields(&self) -> &'static [&'static str] {
        Kind::status_fields(self)
    }
    fn patch_schema(&self) -> &'static Schema {
        Kind::patch_schema(self)
    }
    async fn after_delete(&self, api: &Api, obj: &Value) -> Result<(), ApiError> {
        Kind::after_delete(self, api, obj).await
    }
    fn grace_period(&self, obj: &Value, requested: Option<i64>) -> Option<i64> {
        Kind::grace_period(self, obj, requested)
    }
    fn columns(&self) -> &'static [Column] {
        Kind::columns(self)
    }
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        Kind::cells(self, obj, now)
    }
    fn openapi_schema(&self, gen: &mut schemars::SchemaGenerator) {
        gen.subschema_for::<K::Object>();
    }
    fn conversion(&self) -> Option<&'static Conversion> {
        Kind::conversion(self)
    }
    fn field_label(&self, label: &str) -> Option<&'static str> {
        Kind::field_label(self, label)
    }
}

/// The kind's typed value of `v`, or kube-apiserver's 400 for a body it cannot handle.
pub fn decode<T: DeserializeOwned>(r: &Resource, v: &Value) -> Result<T, ApiError> {
    serde_json::from_value(v.clone()).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            r.kind, r.version, r.kind
        ))
    })
}

fn encode<T: Serialize>(t: &T) -> Result<Value, ApiError> {
    serde_json::to_value(t).map_err(|e| ApiError::internal(format!("encoding object: {e}")))
}

/// The fields of `input` that its typed round trip `typed` dropped, as `unknown field "..."`:
/// refused under `Strict`, returned as warnings under `Warn`, not looked for under `Ignore`.
fn unknown_field_warnings(
    r: &Resource,
    input: &Value,
    typed: &Value,
    mode: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    if mode == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    let mut unknown = Vec::new();
    unknown_fields(input, typed, "", &mut unknown);
    let list: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if !list.is_empty() && mode == FieldValidation::Strict {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            r.kind,
            r.version,
            r.kind,
            list.join(", ")
        )));
    }
    Ok(list)
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

#[cfg(test)]
mod tests {
    use super::super::kinds::{self, DAEMONSETS, NAMESPACES, NODES};
    use super::*;
    use crate::core::validation::Policy;

    #[test]
    fn unknown_fields_are_found_by_round_trip() {
        let input =
            json!({"spec": {"foo": 1, "containers": [{"name": "c", "imagez": "x"}], "n": null}});
        let typed = json!({"spec": {"containers": [{"name": "c"}]}});
        let mut out = Vec::new();
        unknown_fields(&input, &typed, "", &mut out);
        assert_eq!(out, vec!["spec.foo", "spec.containers[0].imagez"]);
    }

    fn ctx(r: &'static Resource, mode: FieldValidation) -> Prepare<'static> {
        Prepare {
            resource: r,
            old: None,
            validation: mode,
            policy: None,
        }
    }

    #[test]
    fn field_validation_modes_decide_what_unknown_fields_do() {
        let obj =
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "labelz": {}}});
        let cases = [
            (FieldValidation::Ignore, Ok(0)),
            (FieldValidation::Warn, Ok(1)),
            (FieldValidation::Strict, Err(400)),
        ];
        for (mode, want) in cases {
            let got = NODES
                .strategy
                .prepare(&obj, ctx(&NODES, mode))
                .map(|p| p.warnings.len())
                .map_err(|e| e.code);
            assert_eq!(got, want, "{mode:?}");
        }
    }

    #[test]
    fn every_kind_decodes_validates_and_reports_the_field() {
        // (resource, object, the fields of the 422's causes; empty: accepted)
        let cases: Vec<(&'static Resource, Value, Vec<&str>)> = vec![
            (&NAMESPACES, json!({"metadata": {"name": "team-a"}}), vec![]),
            (
                &NAMESPACES,
                json!({"metadata": {"name": "team.a"}}),
                vec!["metadata.name"],
            ),
            (
                &NAMESPACES,
                json!({"metadata": {"name": "a", "labels": {"bad key": "x"}}}),
                vec!["metadata.labels"],
            ),
            (
                &kinds::LEASES,
                json!({"metadata": {"name": "node-1.example", "namespace": "kube-node-lease"}}),
                vec![],
            ),
            (
                &kinds::LEASES,
                json!({"metadata": {"name": "Node_1", "namespace": "kube-node-lease"}}),
                vec!["metadata.name"],
            ),
            (
                &kinds::CONTROLLER_REVISIONS,
                json!({"metadata": {"name": "d-1", "namespace": "x"}, "revision": 1}),
                vec![],
            ),
            (
                &kinds::CONTROLLER_REVISIONS,
                json!({"metadata": {"name": "d-", "namespace": "x"}, "revision": 1}),
                vec!["metadata.name"],
            ),
            (
                &NODES,
                json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k", "effect": "Sometimes"}]}}),
                vec!["spec.taints[0].effect"],
            ),
            (
                &kinds::PODS,
                json!({"metadata": {"name": "p", "namespace": "x"}, "spec": {"containers": []}}),
                vec!["spec.containers"],
            ),
            (
                &DAEMONSETS,
                json!({"metadata": {"name": "d", "namespace": "x"}, "spec": {
                    "selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "c"}},
                        "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
                vec!["spec.template.metadata.labels"],
            ),
        ];
        for (r, obj, want) in cases {
            let got = match r.strategy.prepare(&obj, ctx(r, FieldValidation::Strict)) {
                Ok(_) => vec![],
                Err(e) => {
                    assert_eq!(e.code, 422, "{}: {}", r.kind, e.message);
                    e.to_status()["details"]["causes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c["field"].as_str().unwrap().to_string())
                        .collect()
                }
            };
            assert_eq!(got, want, "{} {}", r.kind, obj);
        }
    }

    #[test]
    fn admission_runs_only_when_a_policy_is_given() {
        let pod = json!({"metadata": {"name": "p", "namespace": "x"}, "spec": {"containers": [
            {"name": "c", "image": "i", "securityContext": {"privileged": true}}]}});
        let strict = Policy {
            allow_privileged: false,
            allow_host_path: true,
            ..Policy::default()
        };
        let mut c = ctx(&kinds::PODS, FieldValidation::Strict);
        assert!(kinds::PODS.strategy.prepare(&pod, c).is_ok());
        c.policy = Some(strict);
        let e = kinds::PODS.strategy.prepare(&pod, c).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message.contains("disallowed by cluster policy"),
            "{}",
            e.message
        );
    }

    #[test]
    fn daemonsets_are_defaulted_and_their_selector_is_immutable() {
        let ds = |app: &str| {
            json!({"metadata": {"name": "d", "namespace": "x"}, "spec": {
                "selector": {"matchLabels": {"app": app}},
                "template": {"metadata": {"labels": {"app": app}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
        };
        let created = DAEMONSETS
            .strategy
            .prepare(&ds("a"), ctx(&DAEMONSETS, FieldValidation::Strict))
            .unwrap()
            .object;
        assert_eq!(created["spec"]["updateStrategy"]["type"], "RollingUpdate");
        assert_eq!(created["spec"]["revisionHistoryLimit"], 10);
        let mut update = ctx(&DAEMONSETS, FieldValidation::Strict);
        update.old = Some(&created);
        let e = DAEMONSETS.strategy.prepare(&ds("b"), update).unwrap_err();
        assert!(e.message.contains("spec.selector"), "{}", e.message);
    }
}
