//! The garbage-collection side of a delete, as kube-apiserver's generic store does it
//! (`deletionFinalizersForGarbageCollection`): the delete's `propagationPolicy` becomes a
//! finalizer the garbage collector (`controllers::gc`) acts on.
//!
//! - `Orphan`: the `orphan` finalizer: the collector takes the owner reference off every
//!   dependent, then the finalizer; the object goes with it.
//! - `Foreground`: the `foregroundDeletion` finalizer: the object stays (with its
//!   `deletionTimestamp`) while the collector deletes its dependents, and goes when none of those
//!   that block their owner's deletion is left.
//! - `Background` (the default of every kind served here, as of apps/v1 and core/v1): no
//!   finalizer; the object goes at once and the collector deletes the dependents it left.
//!
//! A delete without a policy keeps a policy finalizer the object already has.
use serde_json::{json, Value};

pub(super) use super::verbs::finalizers;
use super::verbs::Propagation;

pub const ORPHAN: &str = "orphan";
pub const FOREGROUND: &str = "foregroundDeletion";

/// `obj` with the finalizers a delete with `policy` asks for, or None when they stay as they are.
pub fn with_policy_finalizers(obj: &Value, policy: Option<Propagation>) -> Option<Value> {
    let current = finalizers(obj);
    let policy = policy.or_else(|| {
        current.iter().find_map(|f| match *f {
            ORPHAN => Some(Propagation::Orphan),
            FOREGROUND => Some(Propagation::Foreground),
            _ => None,
        })
    });
    let mut wanted: Vec<&str> = current
        .iter()
        .copied()
        .filter(|f| *f != ORPHAN && *f != FOREGROUND)
        .collect();
    match policy {
        Some(Propagation::Orphan) => wanted.push(ORPHAN),
        Some(Propagation::Foreground) => wanted.push(FOREGROUND),
        Some(Propagation::Background) | None => {}
    }
    let same = {
        let mut a = current.clone();
        let mut b = wanted.clone();
        a.sort_unstable();
        b.sort_unstable();
        a == b
    };
    if same {
        return None;
    }
    let mut out = obj.clone();
    out["metadata"]["finalizers"] = json!(wanted);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_becomes_a_finalizer() {
        let obj = |f: Value| json!({"metadata": {"name": "d", "finalizers": f}});
        // (finalizers before, policy, finalizers after; None: unchanged)
        let cases = [
            (json!([]), None, None),
            (json!([]), Some(Propagation::Background), None),
            (
                json!([]),
                Some(Propagation::Orphan),
                Some(json!(["orphan"])),
            ),
            (
                json!(["x/y"]),
                Some(Propagation::Foreground),
                Some(json!(["x/y", "foregroundDeletion"])),
            ),
            (
                json!(["foregroundDeletion"]),
                Some(Propagation::Orphan),
                Some(json!(["orphan"])),
            ),
            (json!(["orphan"]), None, None),
            (
                json!(["orphan", "x/y"]),
                Some(Propagation::Background),
                Some(json!(["x/y"])),
            ),
        ];
        for (before, policy, after) in cases {
            let got = with_policy_finalizers(&obj(before.clone()), policy)
                .map(|o| o["metadata"]["finalizers"].clone());
            assert_eq!(got, after, "{before} {policy:?}");
        }
    }
}
