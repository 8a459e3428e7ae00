//! Hashes naming revisions: the pod template hash (`controller-revision-hash`, ControllerRevision
//! `<ds>-<hash>`). STUB: signatures agreed; bodies filled in by the core owner.
use k8s_openapi::api::core::v1::PodTemplateSpec;

/// FNV-32a over the template's canonical JSON (and the collision count when set), rendered with
/// Kubernetes' SafeEncodeString alphabet, as ComputeHash does.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let _ = (template, collision_count);
    unimplemented!("stub")
}
