//! A resource served over another's storage, converted on the way in and out (kube-apiserver
//! serves events.k8s.io/v1 Events over the core v1 Events this way: one stored object, two
//! versions of it). A kind opts in with [`Conversion`] (`Kind::conversion`); the verbs run on the
//! stored resource with the caller's identity, so authorization, admission, validation and the
//! watch history are the stored resource's; what goes in is converted to it, what comes out
//! converted back, field selectors renamed to the stored fields.
use std::sync::Arc;

use chrono::Utc;
use http::{Method, Response};
use serde_json::{json, Value};

use super::body::{json_response, Body};
use super::query::{Filter, ListOpts, Query};
use super::resources::Resource;
use super::router::RestRequest;
use super::status::ApiError;
use super::strategy::Prepare;
use super::verbs::{Api, ObjectRef, Part, PatchType};
use super::{apply, table, watch};
use crate::core::patch;

/// How a served resource maps onto the stored one.
pub struct Conversion {
    /// The resource whose objects are stored.
    pub stored: &'static Resource,
    /// An object of the served version as it is stored.
    pub to_stored: fn(&Value) -> Value,
    /// A stored object as the served version shows it.
    pub from_stored: fn(&Value) -> Value,
    /// A field selector's label as the stored objects have it; None: not selectable.
    pub field_label: fn(&str) -> Option<String>,
}

/// `sel` with each requirement's label renamed by `rename`; 400 for a label it refuses.
pub fn rename_selector(
    r: &Resource,
    sel: &str,
    rename: impl Fn(&str) -> Option<String>,
) -> Result<String, ApiError> {
    let mut out = Vec::new();
    for req in sel.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let at = req.find(['=', '!']).unwrap_or(req.len());
        let (label, rest) = req.split_at(at);
        let label = label.trim();
        let stored = rename(label).ok_or_else(|| {
            ApiError::bad_request(format!(
                "\"{label}\" is not a known field selector for {}",
                r.plural
            ))
        })?;
        out.push(format!("{stored}{rest}"));
    }
    Ok(out.join(","))
}

/// The request's query with its field selector's labels as `r`'s strategy stores them (a
/// kind's own names for fields, `Strategy::field_label`).
pub fn kind_field_labels(r: &Resource, q: &mut Query) -> Result<(), ApiError> {
    let Some(sel) = q.get("fieldSelector").map(str::to_string) else {
        return Ok(());
    };
    let rename = |l: &str| Some(r.strategy.field_label(l).unwrap_or(l).to_string());
    let renamed = rename_selector(r, &sel, rename)?;
    if renamed != sel {
        q.set("fieldSelector", &renamed);
    }
    Ok(())
}

/// `fieldSelector` of the served version as the stored objects have it.
fn renamed_selector(c: &Conversion, r: &Resource, sel: &str) -> Result<String, ApiError> {
    let stored = rename_selector(r, sel, c.field_label)?;
    rename_selector(c.stored, &stored, |l| {
        Some(c.stored.strategy.field_label(l).unwrap_or(l).to_string())
    })
}

/// The request's query with its field selector renamed.
fn stored_query(c: &Conversion, r: &Resource, q: &Query) -> Result<Query, ApiError> {
    let mut q = q.clone();
    if let Some(sel) = q.get("fieldSelector").map(str::to_string) {
        q.set("fieldSelector", &renamed_selector(c, r, &sel)?);
    }
    Ok(q)
}

fn list_body(r: &Resource, rv: u64, items: Vec<Value>) -> Value {
    json!({
        "kind": format!("{}List", r.kind),
        "apiVersion": r.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })
}

/// Serves a request to `r` (not a subresource) over `c.stored`.
pub async fn serve(
    api: Arc<Api>,
    r: &'static Resource,
    c: &'static Conversion,
    ns: Option<&str>,
    name: Option<&str>,
    mut req: RestRequest,
) -> Result<Response<Body>, ApiError> {
    let stored = c.stored;
    let user = req.user.clone();
    let out = |v: &Value| (c.from_stored)(v);
    let table = table::wants_table(&req.accept);
    match (&req.method, name) {
        (&Method::GET, None) if req.query.flag("watch") => {
            let q = stored_query(c, r, &req.query)?;
            let present = Some(c.from_stored);
            watch::watch_converted(api, &user, stored, r, present, ns, &q, &req.accept).await
        }
        (&Method::GET, None) => {
            let q = stored_query(c, r, &req.query)?;
            let filter = Filter::from_query(&q)?;
            let opts = ListOpts::from_query(&q)?;
            let page = api.list_page(&user, stored, ns, &filter, &opts).await?;
            let mut body = if table {
                let items: Vec<&Value> = page.items.iter().map(|a| &**a).collect();
                table::table(stored, &items, Some(page.rv), "Metadata", Utc::now())
            } else {
                list_body(r, page.rv, page.items.iter().map(|o| out(o)).collect())
            };
            if let Some(token) = page.continue_token {
                body["metadata"]["continue"] = json!(token);
            }
            Ok(json_response(200, &body))
        }
        (&Method::GET, Some(name)) => {
            let obj = api
                .get_part(&user, ObjectRef::new(stored, ns, name), Part::Main)
                .await?;
            if table {
                let t = table::table(stored, &[&obj], None, "Metadata", Utc::now());
                return Ok(json_response(200, &t));
            }
            Ok(json_response(200, &out(&obj)))
        }
        (&Method::POST, None) => {
            let opts = apply::write_opts(&req, "CreateOptions")?;
            let obj = req.object().await?;
            // the served version's own rules first (its decoding, defaults and validation)
            let ctx = Prepare {
                resource: r,
                old: None,
                validation: opts.validation,
                policy: None,
            };
            let obj = r.strategy.prepare(&obj, ctx)?.object;
            let w = api
                .create(&user, stored, ns, (c.to_stored)(&obj), opts)
                .await?;
            Ok(json_response(201, &out(&w.object)))
        }
        (&Method::PUT, Some(name)) => {
            let opts = apply::write_opts(&req, "UpdateOptions")?;
            let obj = req.object().await?;
            let at = ObjectRef::new(stored, ns, name);
            let w = api
                .update(&user, at, Part::Main, (c.to_stored)(&obj), opts)
                .await?;
            Ok(json_response(200, &out(&w.object)))
        }
        (&Method::PATCH, Some(name)) => {
            let media = req.content_type.split(';').next().unwrap_or("").trim();
            if media == apply::APPLY_PATCH {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "server-side apply is not served for {}: apply {} instead",
                        r.api_version(),
                        stored.api_version()
                    ),
                ));
            }
            let ty = PatchType::from_content_type(media)?;
            let opts = apply::write_opts(&req, "PatchOptions")?;
            let body = req.bytes().await?;
            let doc: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let at = ObjectRef::new(stored, ns, name);
            let explicit_rv = doc.pointer("/metadata/resourceVersion").is_some();
            let w = api
                .update_with(&user, at, Part::Main, opts, |cur| {
                    let shown = out(cur);
                    let patched = match ty {
                        PatchType::Json => patch::json_patch(&shown, &doc),
                        PatchType::Merge => patch::merge_patch(&shown, &doc),
                        PatchType::Strategic => patch::strategic_merge_patch(
                            &shown,
                            &doc,
                            stored.strategy.patch_schema(),
                        ),
                    }
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                    let mut new = (c.to_stored)(&patched);
                    if !explicit_rv {
                        if let Some(m) = new["metadata"].as_object_mut() {
                            m.remove("resourceVersion");
                        }
                    }
                    Ok(new)
                })
                .await?;
            Ok(json_response(200, &out(&w.object)))
        }
        (&Method::DELETE, _) => {
            // the same object either way: the stored resource's delete answers
            let q = stored_query(c, r, &std::mem::take(&mut req.query))?;
            req.query = q;
            super::router::delete_on(&api, stored, ns, name, req).await
        }
        (method, _) => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_selectors_are_renamed_to_the_stored_fields() {
        let c = &crate::server::kinds::event::V1_CONVERSION;
        let r = &crate::server::kinds::event::EVENTS_V1;
        // (selector, the stored one; None: refused)
        let cases = [
            (
                "regarding.name=p,reason!=Pulled",
                Some("involvedObject.name=p,reason!=Pulled"),
            ),
            (
                "reportingController==kubelet",
                Some("reportingComponent==kubelet"),
            ),
            ("", Some("")),
            ("note=x", None),
        ];
        let core = &crate::server::kinds::EVENTS;
        let mut q = Query::parse(Some("fieldSelector=source%3Dkubelet,reason%3DPulled"));
        kind_field_labels(core, &mut q).unwrap();
        assert_eq!(
            q.get("fieldSelector"),
            Some("source.component=kubelet,reason=Pulled")
        );
        for (sel, want) in cases {
            let got = renamed_selector(c, r, sel).ok();
            assert_eq!(got.as_deref(), want, "{sel}");
        }
    }
}
