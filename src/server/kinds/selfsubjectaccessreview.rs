//! authorization.k8s.io/v1 SelfSubjectAccessReviews (`kubectl auth can-i`): never stored; a create
//! is answered with whether the caller may do what the review describes, decided by the same
//! rules as its requests (`auth`): the attributes, the field selector of a list or watch, and the
//! object the rule needs (the pod a node asks about, the CSR a bootstrapper asks about).
use async_trait::async_trait;
use k8s_openapi::api::authorization::v1::{
    SelfSubjectAccessReview, SelfSubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use serde_json::Value;

use crate::core::validation::FieldError;
use crate::server::auth::authz::{self, Attributes, Decision};
use crate::server::auth::{self, admission, User, Verb};
use crate::server::resources::Resource;
use crate::server::status::ApiError;
use crate::server::strategy::{decode, Kind, Review};
use crate::server::verbs::{Api, ObjectRef, Part};

pub static SELF_SUBJECT_ACCESS_REVIEWS: Resource = Resource {
    group: "authorization.k8s.io",
    version: "v1",
    plural: "selfsubjectaccessreviews",
    singular: "selfsubjectaccessreview",
    kind: "SelfSubjectAccessReview",
    namespaced: false,
    short_names: &[],
    categories: &[],
    verbs: &["create"],
    subresources: &[],
    strategy: &SelfSubjectAccessReviewStrategy,
};

struct SelfSubjectAccessReviewStrategy;

#[async_trait]
impl Kind for SelfSubjectAccessReviewStrategy {
    type Object = SelfSubjectAccessReview;

    fn validate(&self, _: &SelfSubjectAccessReview) -> Vec<FieldError> {
        Vec::new()
    }
    fn review(&self) -> Option<&dyn Review> {
        Some(self)
    }
}

#[async_trait]
impl Review for SelfSubjectAccessReviewStrategy {
    async fn answer(&self, api: &Api, user: &User, obj: Value) -> Result<Value, ApiError> {
        let mut review: SelfSubjectAccessReview = decode(&SELF_SUBJECT_ACCESS_REVIEWS, &obj)?;
        let (allowed, reason) = evaluate(api, user, &review.spec).await?;
        review.status = Some(SubjectAccessReviewStatus {
            allowed,
            reason: (!reason.is_empty()).then_some(reason),
            ..Default::default()
        });
        serde_json::to_value(&review)
            .map_err(|e| ApiError::internal(format!("encoding the review: {e}")))
    }
}

fn verb_of(verb: &str) -> Option<Verb> {
    [
        Verb::Get,
        Verb::List,
        Verb::Watch,
        Verb::Create,
        Verb::Update,
        Verb::Patch,
        Verb::Delete,
        Verb::DeleteCollection,
    ]
    .into_iter()
    .find(|v| v.as_str() == verb)
}

/// Whether `user` may do what `spec` describes, and why not.
async fn evaluate(
    api: &Api,
    user: &User,
    spec: &SelfSubjectAccessReviewSpec,
) -> Result<(bool, String), ApiError> {
    if let Some(n) = &spec.non_resource_attributes {
        let a = Attributes {
            verb: n.verb.as_deref().unwrap_or(""),
            path: Some(n.path.as_deref().unwrap_or("")),
            ..Default::default()
        };
        return Ok(match authz::decide(user, &a) {
            Decision::Allow => (true, String::new()),
            Decision::Deny(reason) => (false, reason),
        });
    }
    let Some(ra) = &spec.resource_attributes else {
        return Err(ApiError::invalid(
            "SelfSubjectAccessReview.authorization.k8s.io",
            "",
            &[FieldError::invalid(
                "spec.resourceAttributes",
                "null",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )],
        ));
    };
    let text = |o: &Option<String>| o.as_deref().unwrap_or("").to_string();
    let (verb, group, resource, sub, ns, name) = (
        text(&ra.verb),
        text(&ra.group),
        text(&ra.resource),
        text(&ra.subresource),
        text(&ra.namespace),
        text(&ra.name),
    );
    let a = Attributes {
        verb: &verb,
        group: &group,
        resource: &resource,
        subresource: &sub,
        namespace: &ns,
        name: &name,
        path: None,
    };
    if let Decision::Deny(reason) = authz::decide(user, &a) {
        return Ok((false, reason));
    }
    let served = crate::server::kinds::ALL
        .iter()
        .copied()
        .find(|r| r.group == group && r.plural == resource);
    let (Some(r), Some(v)) = (served, verb_of(&verb)) else {
        return Ok((true, String::new()));
    };
    let selector = ra
        .field_selector
        .as_ref()
        .and_then(|f| f.raw_selector.clone())
        .unwrap_or_default();
    if let Err(reason) = auth::selection(user, v, r, &selector) {
        return Ok((false, reason));
    }
    if name.is_empty() {
        return Ok((true, String::new()));
    }
    let at = ObjectRef::new(r, (!ns.is_empty()).then_some(ns.as_str()), &name);
    let obj = api
        .store
        .get(&r.key(), &ns, &name)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let part = if sub == "status" {
        Part::Status
    } else {
        Part::Main
    };
    let checked = match (v, obj.as_deref()) {
        (Verb::Get, o) => admission::on_read(user, at, o),
        (Verb::Delete, Some(o)) => admission::on_delete(user, at, o),
        (Verb::Update | Verb::Patch, Some(o)) => admission::on_write(user, at, part, o, o),
        _ => Ok(()),
    };
    Ok(match checked {
        Ok(()) => (true, String::new()),
        Err(e) => (false, e.message),
    })
}
