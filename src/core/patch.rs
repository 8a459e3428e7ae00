//! The three patch types the Kubernetes API accepts (JSON patch, JSON merge patch, strategic merge
//! patch), applied to objects as JSON. STUB: signatures agreed; bodies filled in by the owner.
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("invalid patch: {0}")]
    Invalid(String),
    #[error("patch cannot be applied: {0}")]
    Conflict(String),
}

/// The API kind whose patch merge keys a strategic merge patch uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    DaemonSet,
    Node,
    Pod,
    /// Any other kind: lists are replaced (as for CRDs).
    Other,
}

/// RFC 6902 (`application/json-patch+json`).
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let _ = (doc, patch);
    unimplemented!("stub")
}
/// RFC 7386 (`application/merge-patch+json`).
pub fn merge_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let _ = (doc, patch);
    unimplemented!("stub")
}
/// Kubernetes strategic merge patch (`application/strategic-merge-patch+json`), with the
/// `$patch`, `$setElementOrder`, `$retainKeys`, `$deleteFromPrimitiveList` directives.
pub fn strategic_merge_patch(
    doc: &Value,
    patch: &Value,
    kind: PatchKind,
) -> Result<Value, PatchError> {
    let _ = (doc, patch, kind);
    unimplemented!("stub")
}
