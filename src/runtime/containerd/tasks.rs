//! A container's life in containerd: the leased create, the task's start, kill, wait and delete.
use super::*;

impl ContainerdRuntime {
    /// The raw containerd sequence: Prepare snapshot -> Containers.Create -> Tasks.Create ->
    /// Tasks.Start, under a lease until the container holds the snapshot. On failure everything
    /// created is removed again. Returns the task's pid.
    pub async fn create_and_start(&self, c: &RawContainer<'_>) -> Result<u32> {
        let id = c.id;
        let lease = self
            .ctd
            .create_lease(RUN_LEASE.trim_end_matches('-'), 1)
            .await
            .map_err(|s| ctd_err("create lease", id, s))?;
        let res = self.create_leased(c, &lease).await;
        self.ctd.delete_lease(&lease).await;
        let (mounts, created) = match res {
            Ok(m) => m,
            Err((e, created)) => {
                self.cleanup(id, created).await;
                return Err(e);
            }
        };
        let res = self.start_task(c, mounts).await;
        if res.is_err() {
            self.cleanup(id, created).await;
        }
        res
    }

    /// Prepare + Containers.Create; on error returns how far it got (1 = snapshot, 2 = container).
    pub(super) async fn create_leased(
        &self,
        c: &RawContainer<'_>,
        lease: &str,
    ) -> std::result::Result<(Vec<Mount>, u8), (RuntimeError, u8)> {
        let id = c.id;
        let prepare = PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: id.to_string(),
            parent: c.chain_id.to_string(),
            labels: HashMap::new(),
        };
        let mounts = match self
            .ctd
            .snapshots()
            .prepare(self.ctd.req_leased(prepare.clone(), Some(lease)))
            .await
        {
            Ok(r) => r.into_inner().mounts,
            Err(s) if s.code() == Code::AlreadyExists => {
                // left by a crash between Prepare and a cleanup; no container owns it (else the
                // id would be taken): remove it and prepare afresh
                if self.container_exists(id).await {
                    return Err((
                        RuntimeError::Incomplete {
                            op: "create container",
                            id: id.to_string(),
                            what: "a container with this id exists",
                        },
                        0,
                    ));
                }
                self.remove_snapshot(id).await.map_err(|e| (e, 0))?;
                self.ctd
                    .snapshots()
                    .prepare(self.ctd.req_leased(prepare, Some(lease)))
                    .await
                    .map_err(|s| (ctd_err("prepare snapshot", id, s), 0))?
                    .into_inner()
                    .mounts
            }
            Err(s) => return Err((ctd_err("prepare snapshot", id, s), 0)),
        };
        let spec = serde_json::to_vec(c.spec).map_err(|e| {
            (
                RuntimeError::InvalidSpec {
                    id: id.to_string(),
                    source: SpecError::Encode(e),
                },
                1,
            )
        })?;
        let container = Container {
            id: id.to_string(),
            labels: c.labels.clone(),
            image: c.image.to_string(),
            runtime: Some(ContainerRuntime {
                name: RUNC_V2.to_string(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.to_string(),
                value: spec,
            }),
            snapshotter: SNAPSHOTTER.to_string(),
            snapshot_key: id.to_string(),
            ..Default::default()
        };
        match self
            .ctd
            .containers()
            .create(self.ctd.req_leased(
                CreateContainerRequest {
                    container: Some(container),
                },
                Some(lease),
            ))
            .await
        {
            Ok(_) => Ok((mounts, 2)),
            // not ours to clean up: the container (and its snapshot) belong to someone else
            Err(s) if s.code() == Code::AlreadyExists => {
                Err((ctd_err("create container", id, s), 0))
            }
            Err(s) => Err((ctd_err("create container", id, s), 1)),
        }
    }

    pub(super) async fn start_task(&self, c: &RawContainer<'_>, mounts: Vec<Mount>) -> Result<u32> {
        let id = c.id;
        let (stdout, stderr) = match (&c.log_uri, c.log_path) {
            // the shim reads stdout's URI only and hands both pipes to the driver
            (Some(uri), _) => (uri.clone(), uri.clone()),
            (None, Some(p)) => {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|source| RuntimeError::Io {
                        op: "create log directory",
                        path: parent.to_path_buf(),
                        source,
                    })?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|source| RuntimeError::Io {
                        op: "create log file",
                        path: p.to_path_buf(),
                        source,
                    })?;
                // The shim (pkg/process/io.go copyPipes, 1.6) shares one writer when stdout and
                // stderr are the same string but lets the stdout copier close it: stderr written
                // after stdout's EOF is lost. A second spelling of the same path makes it open
                // the file twice with O_APPEND instead, and both streams land in it.
                let stderr = match (p.parent(), p.file_name()) {
                    (Some(dir), Some(file)) => dir.join(".").join(file),
                    _ => p.to_path_buf(),
                };
                (
                    p.to_string_lossy().to_string(),
                    stderr.to_string_lossy().to_string(),
                )
            }
            (None, None) => (String::new(), String::new()),
        };
        let streams = stdio::prepare(&self.state_dir, id, c.stdio, c.log_uri.as_deref())?;
        let (stdout, stderr) = streams.outputs.unwrap_or((stdout, stderr));
        // the driver reads the FIFOs from before the shim opens them (it waits for a reader)
        if let Some(fds) = streams.driver {
            stdio::start_driver(&self.state_dir, id, self.namespace(), fds)?;
        }
        self.ctd
            .tasks()
            .create(self.ctd.req(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: mounts,
                stdin: streams.stdin,
                stdout,
                stderr,
                terminal: c.stdio.terminal,
                ..Default::default()
            }))
            .await
            .map_err(|s| ctd_err("create task", id, s))?;
        let pid = self
            .ctd
            .tasks()
            .start(self.ctd.req(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| ctd_err("start task", id, s))?
            .into_inner()
            .pid;
        Ok(pid)
    }

    /// Removes what a failed create left: task, container (if `created` >= 2), snapshot (>= 1).
    pub(super) async fn cleanup(&self, id: &str, created: u8) {
        if created >= 2 {
            let _ = self.kill(id, 9, true).await;
            let _ = self.delete_task(id).await;
            let _ = self
                .ctd
                .containers()
                .delete(self.ctd.req(DeleteContainerRequest { id: id.to_string() }))
                .await;
        }
        if created >= 1 {
            let _ = self.remove_snapshot(id).await;
        }
    }

    pub(super) async fn container_exists(&self, id: &str) -> bool {
        use containerd_client::services::v1::GetContainerRequest;
        self.ctd
            .containers()
            .get(self.ctd.req(GetContainerRequest { id: id.to_string() }))
            .await
            .is_ok()
    }

    pub(super) async fn remove_snapshot(&self, id: &str) -> Result<()> {
        match self
            .ctd
            .snapshots()
            .remove(self.ctd.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: id.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(ctd_err("remove snapshot", id, s)),
        }
    }

    /// Sends `signal`; Ok(false) when there is no task or it already exited.
    pub(super) async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<bool> {
        match self
            .ctd
            .tasks()
            .kill(self.ctd.req(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all,
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(false),
            Err(s) => Err(ctd_err("kill task", id, s)),
        }
    }

    /// Waits up to `timeout` for the task to exit; true if it did (or there is no task).
    pub(super) async fn wait_exit(&self, id: &str, timeout: Duration) -> Result<bool> {
        let mut tasks = self.ctd.tasks();
        let wait = tasks.wait(self.ctd.req(WaitRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }));
        match tokio::time::timeout(timeout, wait).await {
            Err(_) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(s)) if s.code() == Code::NotFound => Ok(true),
            Ok(Err(s)) => Err(ctd_err("wait task", id, s)),
        }
    }

    pub(super) async fn delete_task(&self, id: &str) -> Result<()> {
        match self
            .ctd
            .tasks()
            .delete(self.ctd.req(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(ctd_err("delete task", id, s)),
        }
    }

    pub(super) async fn task_state(&self, id: &str) -> Result<Option<TaskState>> {
        match self
            .ctd
            .tasks()
            .get(self.ctd.req(GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().process.map(|p| state_of(&p))),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(ctd_err("get task", id, s)),
        }
    }
}

pub(super) fn state_of(p: &containerd_client::types::v1::Process) -> TaskState {
    match ProcStatus::try_from(p.status).unwrap_or(ProcStatus::Unknown) {
        ProcStatus::Running | ProcStatus::Paused | ProcStatus::Pausing => {
            TaskState::Running { pid: p.pid }
        }
        ProcStatus::Stopped => TaskState::Stopped {
            exit_code: p.exit_status,
            // Go's zero time (year 1) when unknown
            exited_at: p.exited_at.as_ref().map(|t| t.seconds).filter(|s| *s > 0),
        },
        ProcStatus::Created | ProcStatus::Unknown => TaskState::Created,
    }
}
