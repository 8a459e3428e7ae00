//! authentication.k8s.io/v1 SelfSubjectReviews (`kubectl auth whoami`): never stored; a create is
//! answered with the caller's user name and groups as authentication found them.
use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, SelfSubjectReviewStatus, UserInfo};
use serde_json::Value;

use crate::core::validation::FieldError;
use crate::server::auth::User;
use crate::server::resources::Resource;
use crate::server::status::ApiError;
use crate::server::strategy::{decode, Kind, Review};
use crate::server::verbs::Api;

pub static SELF_SUBJECT_REVIEWS: Resource = Resource {
    group: "authentication.k8s.io",
    version: "v1",
    plural: "selfsubjectreviews",
    singular: "selfsubjectreview",
    kind: "SelfSubjectReview",
    namespaced: false,
    short_names: &[],
    categories: &[],
    verbs: &["create"],
    subresources: &[],
    strategy: &SelfSubjectReviewStrategy,
};

struct SelfSubjectReviewStrategy;

#[async_trait]
impl Kind for SelfSubjectReviewStrategy {
    type Object = SelfSubjectReview;

    fn validate(&self, _: &SelfSubjectReview) -> Vec<FieldError> {
        Vec::new()
    }
    fn review(&self) -> Option<&dyn Review> {
        Some(self)
    }
}

#[async_trait]
impl Review for SelfSubjectReviewStrategy {
    async fn answer(&self, _api: &Api, user: &User, obj: Value) -> Result<Value, ApiError> {
        let mut review: SelfSubjectReview = decode(&SELF_SUBJECT_REVIEWS, &obj)?;
        review.status = Some(SelfSubjectReviewStatus {
            user_info: Some(UserInfo {
                username: Some(user.name.clone()),
                groups: Some(user.groups.clone()),
                ..Default::default()
            }),
        });
        serde_json::to_value(&review)
            .map_err(|e| ApiError::internal(format!("encoding the review: {e}")))
    }
}
