//! The server-owned metadata of every object, as kube-apiserver's `rest.BeforeCreate` and
//! `BeforeUpdate` keep it: apiVersion/kind checked against the URL, namespace and name (or
//! generateName) settled, uid, creationTimestamp and generation set on create and kept on
//! update. managedFields are the field manager's (`server::apply`).
use chrono::Utc;
use serde_json::{json, Value};

use super::resources::Resource;
use super::status::ApiError;
use crate::core::validation::FieldError;

pub fn now_rfc3339() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
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

/// Removes a top-level field of an object.
fn remove_field(obj: &mut Value, field: &str) {
    if let Some(o) = obj.as_object_mut() {
        o.remove(field);
    }
}

/// Sets `field` of `obj` to `from`'s (removed when `from` has none or null).
pub fn copy_field(obj: &mut Value, from: &Value, field: &str) {
    match from.get(field).filter(|v| !v.is_null()) {
        Some(v) => obj[field] = v.clone(),
        None => remove_field(obj, field),
    }
}

pub(crate) fn random_suffix() -> String {
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

/// Settles the metadata of an object to create in `ns` (the URL's namespace; None for
/// cluster-scoped resources) and returns its name.
pub fn before_create(r: &Resource, ns: Option<&str>, obj: &mut Value) -> Result<String, ApiError> {
    check_gvk(r, obj)?;
    let meta = meta_mut(obj)?;
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
                return Err(ApiError::invalid(
                    r.kind,
                    "",
                    &[FieldError::required(
                        "metadata.name",
                        "name or generateName is required",
                    )],
                ))
            }
        },
    };
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    if r.strategy.generation_fields().is_empty() {
        meta.remove("generation");
    } else {
        meta.insert("generation".into(), json!(1));
    }
    Ok(name)
}

/// Checks a write of `candidate` over `old`: the same kind, name and namespace (filled in when
/// the body leaves them out).
pub fn before_update(r: &Resource, old: &Value, candidate: &mut Value) -> Result<(), ApiError> {
    check_gvk(r, candidate)?;
    let old_name = meta_str(old, "name").unwrap_or("").to_string();
    let old_ns = meta_str(old, "namespace").map(str::to_string);
    let meta = meta_mut(candidate)?;
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
        _ => return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
    }
    if let Some(ns) = &old_ns {
        meta.insert("namespace".into(), json!(ns));
    }
    Ok(())
}

/// Keeps `old`'s uid, creationTimestamp, generation, deletionTimestamp and
/// deletionGracePeriodSeconds in a main write (only a delete marks an object).
pub fn keep_server_fields(obj: &mut Value, old: &Value) -> Result<(), ApiError> {
    let meta = meta_mut(obj)?;
    for key in [
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::kinds::{DAEMONSETS, NODES};
    use super::*;

    #[test]
    fn create_settles_server_owned_metadata() {
        /// (resource, URL namespace, body, Ok(name) or the error code)
        type Case = (
            &'static Resource,
            Option<&'static str>,
            Value,
            Result<&'static str, u16>,
        );
        let cases: Vec<Case> = vec![
            (
                &NODES,
                None,
                json!({"metadata": {"name": "n", "namespace": "x"}}),
                Ok("n"),
            ),
            (
                &DAEMONSETS,
                Some("d"),
                json!({"metadata": {"name": "a"}}),
                Ok("a"),
            ),
            (
                &DAEMONSETS,
                Some("d"),
                json!({"metadata": {"name": "a", "namespace": "e"}}),
                Err(400),
            ),
            (
                &NODES,
                None,
                json!({"metadata": {"name": "n", "resourceVersion": "3"}}),
                Err(400),
            ),
            (&NODES, None, json!({"metadata": {}}), Err(422)),
            (
                &NODES,
                None,
                json!({"kind": "Pod", "metadata": {"name": "n"}}),
                Err(400),
            ),
            (
                &NODES,
                None,
                json!({"apiVersion": "apps/v1", "metadata": {"name": "n"}}),
                Err(400),
            ),
        ];
        for (r, ns, mut obj, want) in cases {
            let got = before_create(r, ns, &mut obj);
            assert_eq!(got.as_deref().map_err(|e| e.code), want, "{obj}");
            if got.is_ok() {
                assert_eq!(obj["kind"], r.kind);
                assert_eq!(obj["metadata"].get("namespace").and_then(Value::as_str), ns);
                assert!(obj["metadata"]["uid"].is_string());
                let generation = obj["metadata"].get("generation");
                assert_eq!(
                    generation.is_some(),
                    !r.strategy.generation_fields().is_empty()
                );
            }
        }
        let mut generated = json!({"metadata": {"generateName": "web-"}});
        let name = before_create(&NODES, None, &mut generated).unwrap();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    }

    #[test]
    fn updates_keep_the_identity_and_server_fields() {
        let old = json!({"metadata": {"name": "a", "namespace": "d", "uid": "u", "generation": 3,
            "creationTimestamp": "2026-01-01T00:00:00Z"}});
        let mut same = json!({"metadata": {"uid": "forged"}});
        before_update(&DAEMONSETS, &old, &mut same).unwrap();
        keep_server_fields(&mut same, &old).unwrap();
        assert_eq!(
            same["metadata"],
            json!({"name": "a", "namespace": "d", "uid": "u", "generation": 3,
                "creationTimestamp": "2026-01-01T00:00:00Z"})
        );
        for other in [
            json!({"metadata": {"name": "b"}}),
            json!({"metadata": {"namespace": "e"}}),
        ] {
            let mut c = other.clone();
            let e = before_update(&DAEMONSETS, &old, &mut c).unwrap_err();
            assert_eq!(e.code, 400, "{other}");
        }
    }
}
