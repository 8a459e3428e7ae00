//! Mirrors the node's pods into the API as v1 Pods bound to the node (like the kubelet's status
//! manager): creates the Pod when a worker first reports it, writes its status when it changes,
//! deletes it when the pod is gone. Writes coalesce per pod and are retried with back-off while
//! the API is unreachable; the containers never wait for the API.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

use crate::core::plan::{DesiredPod, PodKey};

#[derive(Debug)]
pub enum Update {
    Status(Box<DesiredPod>, Box<PodStatus>),
    Gone(PodKey),
    /// Pods the API lists on this node that no pod of ours accounts for.
    Orphans(Vec<PodKey>),
}

#[derive(Debug, Clone)]
enum Want {
    Status(Box<DesiredPod>, Box<PodStatus>),
    Gone,
}

/// The API Pod for a desired pod (without status).
pub fn pod_object(d: &DesiredPod) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(d.key.name.clone()),
            namespace: Some(d.key.namespace.clone()),
            labels: Some(d.labels.clone()),
            annotations: (!d.annotations.is_empty()).then(|| d.annotations.clone()),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "DaemonSet".into(),
                name: d.owner.name.clone(),
                uid: d.owner.uid.clone(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(d.spec.clone()),
        status: None,
    }
}

pub async fn run(client: kube::Client, mut rx: mpsc::UnboundedReceiver<Update>) {
    let mut wanted: BTreeMap<PodKey, Want> = BTreeMap::new();
    let mut sent: BTreeMap<PodKey, PodStatus> = BTreeMap::new();
    let mut created: BTreeSet<PodKey> = BTreeSet::new();
    let mut delay = Duration::from_millis(200);
    loop {
        // Take everything queued, keeping only the latest wish per pod.
        let first = if wanted.is_empty() {
            match rx.recv().await {
                Some(u) => Some(u),
                None => return,
            }
        } else {
            None
        };
        for u in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            match u {
                Update::Status(d, s) => {
                    if sent.get(&d.key) != Some(&s) {
                        wanted.insert(d.key.clone(), Want::Status(d, s));
                    }
                }
                Update::Gone(k) => {
                    wanted.insert(k, Want::Gone);
                }
                Update::Orphans(keys) => {
                    for k in keys {
                        wanted.entry(k).or_insert(Want::Gone);
                    }
                }
            }
        }
        let mut failed = false;
        for (key, want) in std::mem::take(&mut wanted) {
            let api: Api<Pod> = Api::namespaced(client.clone(), &key.namespace);
            let result = match &want {
                Want::Gone => {
                    sent.remove(&key);
                    created.remove(&key);
                    match api.delete(&key.name, &DeleteParams::default()).await {
                        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                        r => r.map(|_| ()),
                    }
                }
                Want::Status(d, s) => sync_status(&api, d, s, &mut created).await,
            };
            match result {
                Ok(()) => {
                    if let Want::Status(d, s) = want {
                        sent.insert(d.key.clone(), *s);
                    }
                }
                Err(e) => {
                    log::debug!(pod = key.to_string(), error = e.to_string(); "pod sync failed; will retry");
                    failed = true;
                    wanted.entry(key).or_insert(want);
                }
            }
        }
        if failed {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        } else {
            delay = Duration::from_millis(200);
        }
    }
}

async fn sync_status(
    api: &Api<Pod>,
    d: &DesiredPod,
    s: &PodStatus,
    created: &mut BTreeSet<PodKey>,
) -> kube::Result<()> {
    if !created.contains(&d.key) {
        match api.create(&PostParams::default(), &pod_object(d)).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
        created.insert(d.key.clone());
    }
    let patch = serde_json::json!({ "status": s });
    match api
        .patch_status(&d.key.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            // deleted behind our back (kubectl delete pod): create it again next round
            created.remove(&d.key);
            Err(kube::Error::Api(e))
        }
        Err(e) => Err(e),
    }
}
