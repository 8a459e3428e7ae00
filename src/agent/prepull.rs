//! The pre-pull of a DaemonSet's next revision (design-pods.md, "Pre-pull"): for each pod bound
//! to this node whose DaemonSet's current revision (template hash) differs from the pod's
//! `controller-revision-hash`, once the controller named that revision in the pod's
//! `daemonset-agent.io/pull-next` annotation (the node is in the rollout's next wave; a pod
//! without the annotation does not wait), the node pulls the current template's images in the
//! background and reports the outcome on the OLD pod's status as the condition
//! `daemonset-agent.io/NextRevisionReady` (True/Pulled, or False/ErrImagePull with the error).
//! The server's rolling update deletes an available old pod only once that condition says its node
//! has the new images, so an image that cannot be pulled stops no running pod.
//!
//! Apart from the pod pipeline on purpose: pulls run on their own tasks, and nothing here waits
//! for or touches a pod's containers. The condition is written as a strategic merge patch of
//! `pods/status` (conditions merge by type) and written again whenever the pod's status in the API
//! lacks it (a worker's status write replaces the conditions).
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::watch::Store;
use crate::core::hash::template_hash;
use crate::core::plan::REVISION_HASH_LABEL;
use crate::core::rollout::{NextRevision, NEXT_REVISION_READY, PULL_NEXT};
use crate::runtime::Runtime;

/// How often the store's version is looked at (an atomic load; the pods are looked at again
/// only when it moved). The first wave of a rolling update waits for this look: at 500 ms it
/// cost every rollout 0.25 s on average (0.5 s at worst) before the pull even started. The
/// store's `changed` is a `notify_one` that the agent's reconcile loop consumes, so it cannot
/// wake this loop too without a change to `watch.rs`.
const TICK: Duration = Duration::from_millis(50);
/// A failed pull is tried again after this long (the image may be pushed later).
const RETRY: Duration = Duration::from_secs(20);

/// An old pod and the revision its node should pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    /// The DaemonSet's current revision.
    pub hash: String,
    /// Its template's images, init containers first.
    pub images: Vec<String>,
    /// The pod's `NextRevisionReady` condition as the API has it: (status, message).
    pub reported: Option<(String, String)>,
}

/// The old pods of `pods` (bound to this node, not being deleted) whose controlling DaemonSet in
/// `daemonsets` has another current revision, with what to pull for them.
pub fn wanted(pods: &[Arc<Pod>], daemonsets: &[Arc<DaemonSet>]) -> Vec<Want> {
    let mut out = Vec::new();
    for p in pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(owner) = p
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true) && o.kind == "DaemonSet")
        else {
            continue;
        };
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let Some(ds) = daemonsets.iter().find(|d| {
            d.metadata.uid.as_deref() == Some(owner.uid.as_str())
                && d.metadata.namespace.as_deref() == Some(ns.as_str())
        }) else {
            continue;
        };
        let Some(spec) = ds.spec.as_ref() else {
            continue;
        };
        let collision = ds.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&spec.template, collision);
        let running = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_HASH_LABEL));
        if running.is_none_or(|h| *h == hash) {
            continue;
        }
        // the controller names the revision when this node's wave is next (a pod without the
        // annotation, not made by our controller, pulls at once)
        let told = p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PULL_NEXT));
        if told.is_some_and(|h| *h != hash) {
            continue;
        }
        let images = spec
            .template
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
            .filter_map(|c| c.image.clone())
            .collect();
        let reported = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == NEXT_REVISION_READY))
            .map(|c| (c.status.clone(), c.message.clone().unwrap_or_default()));
        out.push(Want {
            namespace: ns,
            pod: p.metadata.name.clone().unwrap_or_default(),
            uid: p.metadata.uid.clone().unwrap_or_default(),
            hash,
            images,
            reported,
        });
    }
    out
}

/// A revision's pull on this node.
enum Pull {
    Running,
    Done(NextRevision),
}

/// Runs until the process ends: pulls next revisions, reports them on the old pods.
pub async fn run(client: kube::Client, store: Arc<Store>, runtime: Arc<dyn Runtime>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<NextRevision>();
    let mut pulls: HashMap<String, (Pull, Instant)> = HashMap::new();
    let mut seen_version = u64::MAX;
    loop {
        let version = store.version.load(Ordering::SeqCst);
        let now = Instant::now();
        let due = pulls
            .values()
            .any(|(p, at)| matches!(p, Pull::Done(n) if !n.pulled) && now >= *at);
        if version != seen_version || due {
            seen_version = version;
            for w in wanted(&store.pods(), &store.daemonsets()) {
                let retry = matches!(pulls.get(&w.hash), Some((Pull::Done(n), at)) if !n.pulled && now >= *at);
                match pulls.get(&w.hash) {
                    None => start(&mut pulls, &w, runtime.clone(), tx.clone()),
                    Some((Pull::Done(result), _)) => {
                        report(&client, &w, result).await;
                        if retry {
                            start(&mut pulls, &w, runtime.clone(), tx.clone());
                        }
                    }
                    Some((Pull::Running, _)) => {}
                }
            }
        }
        tokio::select! {
            Some(done) = rx.recv() => {
                let at = Instant::now() + RETRY;
                tracing::info!(revision = done.hash.as_str(), pulled = done.pulled, error = done.error.as_str(),
                    "pre-pull of the next revision finished");
                pulls.insert(done.hash.clone(), (Pull::Done(done), at));
                seen_version = u64::MAX;
            }
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Starts pulling `w`'s images on a task of its own.
fn start(
    pulls: &mut HashMap<String, (Pull, Instant)>,
    w: &Want,
    runtime: Arc<dyn Runtime>,
    tx: mpsc::UnboundedSender<NextRevision>,
) {
    pulls.insert(w.hash.clone(), (Pull::Running, Instant::now()));
    let (hash, images) = (w.hash.clone(), w.images.clone());
    tracing::info!(
        revision = hash.as_str(),
        ?images,
        "pre-pulling the next revision"
    );
    tokio::spawn(async move {
        let mut error = None;
        for image in &images {
            if let Err(e) = runtime.ensure_image(image).await {
                error = Some(crate::runtime::chain(&e));
                break;
            }
        }
        let _ = tx.send(NextRevision {
            hash,
            pulled: error.is_none(),
            error: error.unwrap_or_default(),
        });
    });
}

/// Writes `result` on `w`'s pod unless the API has it already.
async fn report(client: &kube::Client, w: &Want, result: &NextRevision) {
    let (status, reason, message) = result.condition();
    if w.reported.as_ref() == Some(&(status.to_string(), message.clone())) {
        return;
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &w.namespace);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = serde_json::json!({
        "metadata": {"uid": w.uid},
        "status": {"conditions": [{"type": NEXT_REVISION_READY, "status": status,
            "reason": reason, "message": message, "lastTransitionTime": now}]},
    });
    let written = api
        .patch_status(&w.pod, &PatchParams::default(), &Patch::Strategic(&patch))
        .await;
    if let Err(e) = written {
        // the next look (the pod's next change, or the tick) tries again
        tracing::debug!(pod = w.pod.as_str(), error = %crate::runtime::chain(&e), "cannot report the pre-pull");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds(image: &str) -> Arc<DaemonSet> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "mon", "namespace": "default", "uid": "ds-uid"},
                "spec": {"selector": {"matchLabels": {"app": "mon"}},
                    "template": {"metadata": {"labels": {"app": "mon"}},
                        "spec": {"initContainers": [{"name": "i", "image": "init:1"}],
                            "containers": [{"name": "c", "image": image}]}}}
            }))
            .unwrap(),
        )
    }

    fn pod(name: &str, hash: &str, deleting: bool) -> Arc<Pod> {
        told(name, hash, deleting, None)
    }

    /// A pod whose `PULL_NEXT` annotation is `pull_next` (None: without it).
    fn told(name: &str, hash: &str, deleting: bool, pull_next: Option<&str>) -> Arc<Pod> {
        let mut p = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid"),
            "labels": {"app": "mon", "controller-revision-hash": hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "mon",
                "uid": "ds-uid", "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "old:1"}]},
            "status": {"conditions": [{"type": NEXT_REVISION_READY, "status": "True",
                "message": "revision x: images pulled"}]}});
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2026-11-26T00:00:00Z");
        }
        if let Some(h) = pull_next {
            p["metadata"]["annotations"] = json!({PULL_NEXT: h});
        }
        Arc::new(serde_json::from_value(p).unwrap())
    }

    #[test]
    fn a_told_pod_pulls_the_revision_named_and_an_untold_one_waits() {
        let d = ds("new:2");
        let current = template_hash(&d.spec.as_ref().unwrap().template, None);
        let pods = vec![
            told("waits", "h-old", false, Some("")),
            told("stale", "h-old", false, Some("h-older")),
            told("next", "h-old", false, Some(&current)),
            told("legacy", "h-old", false, None),
        ];
        let w: Vec<String> = wanted(&pods, std::slice::from_ref(&d))
            .into_iter()
            .map(|w| w.pod)
            .collect();
        assert_eq!(w, ["next", "legacy"]);
    }

    #[test]
    fn only_old_pods_of_a_known_daemonset_want_the_next_revision() {
        let d = ds("new:2");
        let current = template_hash(&d.spec.as_ref().unwrap().template, None);
        let mut bare: Pod = (*pod("bare", "h", false)).clone();
        bare.metadata.owner_references = None;
        let pods = vec![
            pod("old", "h-old", false),
            pod("current", &current, false),
            pod("going", "h-old", true),
            Arc::new(bare),
        ];
        let w = wanted(&pods, std::slice::from_ref(&d));
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].pod, "old");
        assert_eq!(w[0].uid, "old-uid");
        assert_eq!(w[0].hash, current);
        assert_eq!(w[0].images, ["init:1", "new:2"]);
        assert_eq!(
            w[0].reported,
            Some(("True".into(), "revision x: images pulled".into()))
        );
        assert!(wanted(&pods, &[]).is_empty(), "the DaemonSet is not known");
    }
}
