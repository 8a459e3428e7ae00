//! A recording, in-memory runtime for fast tests of the workers and the loop. The proof that
//! the real adapter works is in tests/ against real containerd.
use super::*;
use std::sync::Mutex;

#[derive(Default)]
pub struct FakeRuntime {
    pub containers: Mutex<BTreeMap<String, ContainerStatus>>,
    pub calls: Mutex<Vec<String>>,
    /// Images whose pull fails.
    pub missing: Vec<String>,
    /// Stamps creation and exit times (None: the epoch, as a runtime that does not say).
    pub clock: Option<Clock>,
    /// Each container run, with the clock's unix ms then.
    pub runs: Mutex<Vec<(String, i64)>>,
    /// The exit subscription, once the controller took it.
    pub exits: Mutex<Option<mpsc::Sender<String>>>,
    /// How long a container's or a sandbox's removal takes, in ms (tokio time).
    pub removal_ms: std::sync::atomic::AtomicU64,
}

impl FakeRuntime {
    fn now_s(&self) -> i64 {
        self.clock.as_ref().map_or(0, |c| c.now_ms() / 1000)
    }

    /// The container's task exits with `code`, and the exit is published as containerd does.
    pub async fn exit(&self, id: &str, code: u32) {
        if let Some(c) = self.containers.lock().unwrap().get_mut(id) {
            c.state = TaskState::Stopped {
                exit_code: code,
                exited_at: Some(self.now_s()),
            };
        }
        let tx = self.exits.lock().unwrap().clone();
        if let Some(tx) = tx {
            let _ = tx.send(id.to_string()).await;
        }
    }

    /// The ids of the containers run so far, in order.
    pub fn run_ids(&self) -> Vec<String> {
        self.runs
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }
}

impl FakeRuntime {
    /// A removal's time (`removal_ms`).
    async fn removal(&self) {
        let ms = self.removal_ms.load(std::sync::atomic::Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    fn sandbox_of(pod: &PodSandbox) -> SandboxInfo {
        SandboxInfo {
            netns: (!pod.host_network).then(|| PathBuf::from("/fake/netns").join(&pod.uid)),
            pod_dir: PathBuf::from("/fake/pods").join(&pod.uid),
            ..Default::default()
        }
    }
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    async fn ensure_image(
        &self,
        reference: &str,
    ) -> crate::runtime::Result<crate::runtime::PulledImage> {
        self.calls.lock().unwrap().push(format!("pull {reference}"));
        if self.missing.iter().any(|m| m == reference) {
            return Err(RuntimeError::ImagePull {
                image: reference.into(),
                source: crate::runtime::pull::PullError::Registry {
                    op: "resolve",
                    what: reference.into(),
                    source: oci_client::errors::OciDistributionError::ImageManifestNotFoundError(
                        reference.into(),
                    ),
                },
            });
        }
        Ok(crate::runtime::PulledImage {
            info: crate::runtime::ImageInfo {
                reference: reference.into(),
                digest: "sha256:0".into(),
            },
            config: serde_json::Value::Null,
            chain_id: "sha256:1".into(),
        })
    }
    async fn create_sandbox(&self, pod: &PodSandbox) -> crate::runtime::Result<SandboxInfo> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("sandbox {}", pod.name));
        Ok(Self::sandbox_of(pod))
    }
    async fn sandbox(&self, pod: &PodSandbox) -> crate::runtime::Result<Option<SandboxInfo>> {
        Ok(Some(Self::sandbox_of(pod)))
    }
    async fn remove_sandbox(&self, uid: &str) -> crate::runtime::Result<()> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("remove-sandbox {uid}"));
        self.removal().await;
        Ok(())
    }
    async fn run_container(&self, req: &ContainerRequest) -> crate::runtime::Result<()> {
        self.calls.lock().unwrap().push(format!("run {}", req.id));
        let now_ms = self.clock.as_ref().map_or(0, Clock::now_ms);
        self.runs.lock().unwrap().push((req.id.clone(), now_ms));
        self.containers.lock().unwrap().insert(
            req.id.clone(),
            ContainerStatus {
                id: req.id.clone(),
                image: req.container.image.clone().unwrap_or_default(),
                labels: req.labels.clone(),
                state: TaskState::Running { pid: 1 },
                created_at: self.now_s(),
            },
        );
        Ok(())
    }
    async fn stop_container(&self, id: &str, _grace: Duration) -> crate::runtime::Result<()> {
        self.calls.lock().unwrap().push(format!("stop {id}"));
        if let Some(c) = self.containers.lock().unwrap().get_mut(id) {
            c.state = TaskState::Stopped {
                exit_code: 143,
                exited_at: Some(self.now_s()),
            };
        }
        Ok(())
    }
    async fn remove_container(&self, id: &str) -> crate::runtime::Result<()> {
        self.calls.lock().unwrap().push(format!("remove {id}"));
        self.removal().await;
        self.containers.lock().unwrap().remove(id);
        Ok(())
    }
    async fn list_containers(&self) -> crate::runtime::Result<Vec<ContainerStatus>> {
        Ok(self.containers.lock().unwrap().values().cloned().collect())
    }
    async fn subscribe_exits(&self) -> crate::runtime::Result<mpsc::Receiver<String>> {
        let (tx, rx) = mpsc::channel(16);
        *self.exits.lock().unwrap() = Some(tx);
        Ok(rx)
    }
}
