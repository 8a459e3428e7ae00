//! The agent's side of the kubelet's status manager: writes each pod's status to the API (the
//! `pods/status` subresource, the pod's uid a precondition, so a pod deleted and made again under
//! the same name never gets the old one's status) when it changes, and deletes a pod the API is
//! deleting once its containers are gone (`gracePeriodSeconds: 0`, uid precondition). It never
//! creates a pod: the API's controllers do. Writes coalesce per pod and are retried with back-off
//! while the API is unreachable; the containers never wait for the API.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::mpsc;

use crate::core::plan::{DesiredPod, PodKey};

#[derive(Debug)]
pub enum Update {
    /// A pod's status, as its worker computed it.
    Status(Box<DesiredPod>, Box<PodStatus>),
    /// The Ready condition's status of the API's copy of a pod, as the agent's watch has it now
    /// (None: no Ready condition). Once the watch brought back the agent's last written Ready, a
    /// Ready that differs is another writer's (the node-lifecycle controller marking the pod not
    /// ready while this agent was silent): the next status is written even if unchanged (the
    /// status manager's `needsReconcile`). Before that, it is the watch lagging behind the write.
    ApiReady {
        key: PodKey,
        uid: String,
        ready: Option<String>,
    },
    /// A pod's containers are gone; `delete`: the API is deleting it, delete it for good.
    Finished {
        key: PodKey,
        uid: String,
        delete: bool,
    },
}

#[derive(Debug, Clone)]
enum Want {
    Status(Box<PodStatus>),
    Delete,
}

/// A pod by name and API uid: a pod made again under the same name is another pod.
type Id = (PodKey, String);

/// What the API's Ready (`api`, as the watch has it) says of the agent's last written one
/// (`ours`), `echoed` when the watch brought that write back already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Echo {
    /// The API has our Ready: the write came back.
    Seen,
    /// The API had our Ready and now has another: another writer's, written again.
    Overwritten,
    /// Not back yet (or nothing of ours to compare): nothing to do.
    Pending,
}

fn echo(ours: Option<&str>, api: Option<&str>, echoed: bool) -> Echo {
    match ours {
        None => Echo::Pending,
        Some(o) if Some(o) == api => Echo::Seen,
        Some(_) if echoed => Echo::Overwritten,
        Some(_) => Echo::Pending,
    }
}

/// What podsync keeps of each pod between writes.
#[derive(Debug, Default)]
struct Book {
    /// The latest wish per pod, not written yet.
    wanted: BTreeMap<Id, Want>,
    /// The status last written per pod.
    sent: BTreeMap<Id, PodStatus>,
    /// The pods whose last written Ready the watch brought back.
    echoed: BTreeSet<Id>,
}

impl Book {
    fn take(&mut self, u: Update) {
        match u {
            Update::Status(d, s) => {
                let id = (d.key.clone(), d.api_uid.clone());
                if self.sent.get(&id) != Some(&s) {
                    self.wanted.insert(id, Want::Status(s));
                }
            }
            Update::ApiReady { key, uid, ready } => {
                let id = (key, uid);
                let ours = self.sent.get(&id).and_then(ready_of);
                match echo(ours, ready.as_deref(), self.echoed.contains(&id)) {
                    Echo::Seen => {
                        self.echoed.insert(id);
                    }
                    Echo::Overwritten => self.forget(&id),
                    Echo::Pending => {}
                }
            }
            Update::Finished { key, uid, delete } => {
                let id = (key, uid);
                self.forget(&id);
                if delete {
                    self.wanted.insert(id, Want::Delete);
                } else {
                    self.wanted.remove(&id);
                }
            }
        }
    }

    /// `s` was written: a new Ready awaits its echo, an unchanged one was seen already.
    fn written(&mut self, id: Id, s: PodStatus) {
        if self.sent.get(&id).and_then(ready_of) != ready_of(&s) {
            self.echoed.remove(&id);
        }
        self.sent.insert(id, s);
    }

    /// Nothing of `id` is known to be in the API: its next status is written.
    fn forget(&mut self, id: &Id) {
        self.sent.remove(id);
        self.echoed.remove(id);
    }
}

pub async fn run(client: kube::Client, mut rx: mpsc::UnboundedReceiver<Update>) {
    let mut book = Book::default();
    let mut delay = Duration::from_millis(200);
    loop {
        // Take everything queued, keeping only the latest wish per pod.
        let first = if book.wanted.is_empty() {
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
            book.take(u);
        }
        let mut failed = false;
        for ((key, uid), want) in std::mem::take(&mut book.wanted) {
            let api: Api<Pod> = Api::namespaced(client.clone(), &key.namespace);
            let result = match &want {
                Want::Delete => delete(&api, &key.name, &uid).await,
                Want::Status(s) => write_status(&api, &key.name, &uid, s).await,
            };
            match result {
                Ok(()) => {
                    if let Want::Status(s) = want {
                        tracing::debug!(pod = %key, ready = is_ready(&s), "pod status written");
                        book.written((key, uid), *s);
                    }
                }
                // gone, or another pod by now: nothing to write
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                    tracing::debug!(pod = %key, uid, code = e.code, "pod gone or replaced; not written");
                    book.forget(&(key, uid));
                }
                Err(e) => {
                    tracing::debug!(pod = %key, error = %crate::runtime::chain(&e), "pod sync failed; will retry");
                    failed = true;
                    book.wanted.entry((key, uid)).or_insert(want);
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

/// `status` says the pod is Ready.
fn is_ready(status: &PodStatus) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The status of `status`'s Ready condition (its status only: times may differ), if it has one.
pub fn ready_of(status: &PodStatus) -> Option<&str> {
    status
        .conditions
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str())
}

/// The status of the pod `name` of uid `uid` (a merge patch of `pods/status`).
async fn write_status(api: &Api<Pod>, name: &str, uid: &str, s: &PodStatus) -> kube::Result<()> {
    let patch = serde_json::json!({"metadata": {"uid": uid}, "status": s});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
}

/// The final delete of a pod whose containers are gone.
async fn delete(api: &Api<Pod>, name: &str, uid: &str) -> kube::Result<()> {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    api.delete(name, &params).await.map(drop)
}

/// Against the real API server of this crate, in-process (`agent::test_api`).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::test_api::{self, until};
    use kube::api::PostParams;
    use kube::runtime::wait::{conditions, Condition};
    use kube::ResourceExt;

    /// A pod bound to node-p, as the DaemonSet controller makes them.
    fn api_pod(name: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": "node-p", "terminationGracePeriodSeconds": 30,
                "containers": [{"name": "main", "image": "busybox:v1"}]}
        }))
        .unwrap()
    }

    /// The desired pod the agent makes of `pod`.
    fn desired(pod: &Pod) -> DesiredPod {
        DesiredPod::from_api(pod).unwrap()
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

    /// Statuses reach their pod and no other; a pod the API deletes is deleted once finished;
    /// nothing is ever created.
    #[tokio::test]
    async fn statuses_reach_their_pod_and_finished_pods_are_deleted() {
        let api = test_api::start().await;
        let pods: Api<Pod> = Api::namespaced(api.client.clone(), "default");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(api.client.clone(), rx));
        let p = pods
            .create(&PostParams::default(), &api_pod("mon-abcde"))
            .await
            .unwrap();
        let d = desired(&p);
        let send_status = |d: &DesiredPod, phase, message| {
            tx.send(Update::Status(Box::new(d.clone()), status(phase, message)))
                .unwrap()
        };
        send_status(&d, "Running", "");
        until(
            &pods,
            "mon-abcde",
            "Running",
            phase_and_message("Running", ""),
        )
        .await;

        // made again under the same name: the old pod's status does not reach the new one
        pods.delete("mon-abcde", &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
        let again = pods
            .create(&PostParams::default(), &api_pod("mon-abcde"))
            .await
            .unwrap();
        send_status(&d, "Running", "old");
        send_status(&desired(&again), "Running", "new");
        until(
            &pods,
            "mon-abcde",
            "the new pod's status",
            phase_and_message("Running", "new"),
        )
        .await;
        let now = pods.get("mon-abcde").await.unwrap();
        assert_eq!(now.uid(), again.uid());

        // a status for a pod that is not there creates nothing
        let mut ghost = api_pod("ghost-fghij");
        ghost.metadata.uid = Some("u-ghost".into());
        let ghost = desired(&ghost);
        send_status(&ghost, "Running", "");
        // the API deletes the pod: it is marked until the agent's final delete
        pods.delete("mon-abcde", &DeleteParams::default())
            .await
            .unwrap();
        let marked = pods.get("mon-abcde").await.unwrap();
        assert!(marked.metadata.deletion_timestamp.is_some());
        tx.send(Update::Finished {
            key: d.key.clone(),
            uid: d.api_uid.clone(),
            delete: true,
        })
        .unwrap();
        tx.send(Update::Finished {
            key: d.key.clone(),
            uid: again.uid().unwrap(),
            delete: true,
        })
        .unwrap();
        let uid = again.uid().unwrap();
        until(&pods, "mon-abcde", "deleted", conditions::is_deleted(&uid)).await;
        assert!(pods.get_opt("ghost-fghij").await.unwrap().is_none());
        api.server.shutdown().await;
    }

    /// Only a Ready of ours the watch brought back and then lost counts as another writer's: the
    /// watch still showing the Ready from before our write is the watch lagging (written again
    /// at every Ready change, before this).
    #[test]
    fn another_writer_is_told_from_a_lagging_watch() {
        let with_ready = |status: &str| -> PodStatus {
            serde_json::from_value(serde_json::json!({"phase": "Running",
                "conditions": [{"type": "Ready", "status": status}]}))
            .unwrap()
        };
        assert_eq!(ready_of(&with_ready("True")), Some("True"));
        assert_eq!(ready_of(&PodStatus::default()), None);
        #[rustfmt::skip]
        let cases = [
            ("the API has ours", Some("True"), Some("True"), false, Echo::Seen),
            ("the watch has not brought our write back", Some("True"), Some("False"), false, Echo::Pending),
            ("nor any Ready yet", Some("True"), None, false, Echo::Pending),
            ("it had ours, now another's", Some("True"), Some("False"), true, Echo::Overwritten),
            ("its Ready removed", Some("True"), None, true, Echo::Overwritten),
            ("nothing of ours to compare", None, Some("False"), true, Echo::Pending),
        ];
        for (what, ours, api, echoed, want) in cases {
            assert_eq!(echo(ours, api, echoed), want, "{what}");
        }
    }

    /// A Ready change is written once, though the watch still shows the old Ready when the
    /// next (unchanged) status comes; a Ready another writer changes after ours came back is
    /// written again.
    #[test]
    fn a_ready_change_is_written_once_and_an_overwritten_one_again() {
        let mut p = api_pod("echo-abcde");
        p.metadata.uid = Some("u-echo".into());
        let d = desired(&p);
        let id = (d.key.clone(), d.api_uid.clone());
        let ready = |r: &str| -> Box<PodStatus> {
            let mut s = status("Running", "");
            s.conditions = Some(vec![serde_json::from_value(
                serde_json::json!({"type": "Ready", "status": r}),
            )
            .unwrap()]);
            s
        };
        let api_ready = |r: Option<&str>| Update::ApiReady {
            key: d.key.clone(),
            uid: d.api_uid.clone(),
            ready: r.map(str::to_string),
        };
        let mut book = Book::default();
        // the first status is written
        book.take(Update::Status(Box::new(d.clone()), ready("True")));
        let Some(Want::Status(s)) = book.wanted.remove(&id) else {
            panic!("nothing to write: {book:?}");
        };
        book.written(id.clone(), *s);
        // the next report, the watch still at the pod before the write: nothing to write
        book.take(api_ready(Some("False")));
        book.take(Update::Status(Box::new(d.clone()), ready("True")));
        assert!(book.wanted.is_empty(), "written twice: {book:?}");
        // the watch brings it back, then another writer's Ready False: written again
        book.take(api_ready(Some("True")));
        book.take(api_ready(Some("False")));
        book.take(Update::Status(Box::new(d.clone()), ready("True")));
        assert!(
            matches!(book.wanted.get(&id), Some(Want::Status(_))),
            "{book:?}"
        );
    }

    /// A write made while the API is away is retried until it comes: the first attempt reaches a
    /// listener of the test's own on the API's port, which closes it; the server (with the pod in
    /// its store) then starts there.
    #[tokio::test]
    async fn writes_wait_for_an_api_that_comes_later() {
        let api = test_api::start().await;
        let pods: Api<Pod> = Api::namespaced(api.client.clone(), "default");
        let p = pods
            .create(&PostParams::default(), &api_pod("late-abcde"))
            .await
            .unwrap();
        let stand_in = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = stand_in.local_addr().unwrap();
        let mut cfg = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let bearer = format!("Bearer {}", test_api::TEST_TOKEN);
        cfg.headers
            .push((http::header::AUTHORIZATION, bearer.parse().unwrap()));
        let client = kube::Client::try_from(cfg).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(client, rx));
        tx.send(Update::Status(Box::new(desired(&p)), status("Running", "")))
            .unwrap();
        let (attempt, _) = tokio::time::timeout(Duration::from_secs(20), stand_in.accept())
            .await
            .expect("podsync tried the API")
            .unwrap();
        drop(attempt);
        drop(stand_in);
        let api = api.restart_insecure_on(addr).await;
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
