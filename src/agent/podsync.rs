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
                    tracing::debug!(pod = %key, error = %crate::runtime::chain(&e), "pod sync failed; will retry");
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

/// Against the real API server of this crate, in-process (`agent::test_api`).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::test_api::{self, until};
    use k8s_openapi::api::core::v1::Container;
    use kube::runtime::wait::{conditions, Condition};
    use kube::ResourceExt;

    fn desired(name: &str) -> DesiredPod {
        let main = Container {
            name: "main".into(),
            image: Some("busybox:v1".into()),
            ..Default::default()
        };
        let mut pod = crate::core::plan::test_pod(name, main);
        pod.spec.node_name = Some("node-p".into());
        pod
    }

    fn status(phase: &str, message: &str) -> Box<PodStatus> {
        Box::new(PodStatus {
            phase: Some(phase.into()),
            message: (!message.is_empty()).then(|| message.into()),
            ..Default::default()
        })
    }

    fn phase_and_message(phase: &'static str, message: &'static str) -> impl Condition<Pod> {
        move |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
                s.phase.as_deref() == Some(phase)
                    && s.message.as_deref().unwrap_or_default() == message
            })
        }
    }

    #[tokio::test]
    async fn pods_are_mirrored_recreated_and_deleted() {
        let api = test_api::start().await;
        let pods: Api<Pod> = Api::namespaced(api.client.clone(), "default");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(api.client.clone(), rx));
        let d = desired("mon-abcde");
        let send_status = |phase, message| {
            tx.send(Update::Status(Box::new(d.clone()), status(phase, message)))
                .unwrap()
        };
        send_status("Pending", "");
        let p = until(
            &pods,
            "mon-abcde",
            "created",
            phase_and_message("Pending", ""),
        )
        .await;
        let p = p.unwrap();
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("DaemonSet", "ds")
        );
        assert_eq!(p.spec.unwrap().node_name.as_deref(), Some("node-p"));
        send_status("Running", "");
        until(
            &pods,
            "mon-abcde",
            "Running",
            phase_and_message("Running", ""),
        )
        .await;

        // deleted behind its back (kubectl delete pod): the next status creates it again
        pods.delete("mon-abcde", &DeleteParams::default())
            .await
            .unwrap();
        let uid = p.metadata.uid.unwrap();
        until(&pods, "mon-abcde", "deleted", conditions::is_deleted(&uid)).await;
        send_status("Running", "again");
        let again = until(
            &pods,
            "mon-abcde",
            "created again",
            phase_and_message("Running", "again"),
        )
        .await
        .unwrap();

        // the pod is gone from the node
        tx.send(Update::Gone(d.key.clone())).unwrap();
        let uid = again.uid().unwrap();
        until(&pods, "mon-abcde", "deleted", conditions::is_deleted(&uid)).await;

        // an orphan the controller found: deleted
        let orphan = pods
            .create(&PostParams::default(), &pod_object(&desired("left-fghij")))
            .await
            .unwrap();
        tx.send(Update::Orphans(vec![desired("left-fghij").key]))
            .unwrap();
        let uid = orphan.uid().unwrap();
        until(
            &pods,
            "left-fghij",
            "orphan deleted",
            conditions::is_deleted(&uid),
        )
        .await;
        api.server.shutdown().await;
    }

    /// A write made while the API is away is retried until it comes: the first attempt reaches a
    /// listener of the test's own on the API's port, which closes it; the server then starts there.
    #[tokio::test]
    async fn writes_wait_for_an_api_that_comes_later() {
        let stand_in = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = stand_in.local_addr().unwrap();
        let mut cfg = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let bearer = format!("Bearer {}", test_api::TEST_TOKEN);
        cfg.headers
            .push((http::header::AUTHORIZATION, bearer.parse().unwrap()));
        let client = kube::Client::try_from(cfg).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(client, rx));
        tx.send(Update::Status(
            Box::new(desired("late-abcde")),
            status("Running", ""),
        ))
        .unwrap();
        let (attempt, _) = tokio::time::timeout(Duration::from_secs(20), stand_in.accept())
            .await
            .expect("podsync tried the API")
            .unwrap();
        drop(attempt);
        drop(stand_in);
        let api = test_api::start_insecure_on(addr).await;
        let pods: Api<Pod> = Api::namespaced(api.client.clone(), "default");
        until(
            &pods,
            "late-abcde",
            "written once the API came",
            phase_and_message("Running", ""),
        )
        .await;
        api.server.shutdown().await;
    }
}
