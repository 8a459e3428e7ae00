//! Processes run inside a container (probes, hooks, `kubectl exec`): their spec and their run.
use super::*;

impl ContainerdRuntime {
    /// The process spec of an exec in container `id`: the container's own process (user, env,
    /// cwd, capabilities, rlimits) with `cmd` as its args, under a terminal or not.
    pub(super) async fn exec_process_spec(
        &self,
        id: &str,
        cmd: &[String],
        terminal: Option<Option<(u32, u32)>>,
    ) -> Result<Vec<u8>> {
        use containerd_client::services::v1::GetContainerRequest;
        let container = self
            .ctd
            .containers()
            .get(self.ctd.req(GetContainerRequest { id: id.to_string() }))
            .await
            .map_err(|s| ctd_err("get container", id, s))?
            .into_inner()
            .container
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let unreadable = |e| RuntimeError::InvalidSpec {
            id: id.to_string(),
            source: SpecError::Unreadable(e),
        };
        let spec: serde_json::Value = match &container.spec {
            Some(any) => serde_json::from_slice(&any.value).map_err(|e| unreadable(Some(e)))?,
            None => return Err(unreadable(None)),
        };
        let mut process = spec
            .get("process")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        process["args"] = serde_json::json!(cmd);
        process["terminal"] = serde_json::json!(terminal.is_some());
        if let Some(Some((width, height))) = terminal {
            // the size from the start: a command that asks at once sees it
            process["consoleSize"] = serde_json::json!({"width": width, "height": height});
        }
        if terminal.is_some() {
            // as containerd's CRI does for a TTY exec
            if let Some(env) = process.get_mut("env").and_then(|e| e.as_array_mut()) {
                if !env
                    .iter()
                    .any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM=")))
                {
                    env.push(serde_json::json!("TERM=xterm"));
                }
            }
        }
        serde_json::to_vec(&process).map_err(|e| RuntimeError::InvalidSpec {
            id: id.to_string(),
            source: SpecError::Encode(e),
        })
    }

    /// Tasks.Exec, Start, Wait (killing the process at `timeout`) and DeleteProcess of one
    /// process of container `id` with stdout and stderr appended to `out`.
    pub(super) async fn exec_process(
        &self,
        id: &str,
        exec_id: &str,
        process: Vec<u8>,
        out: &Path,
        timeout: Duration,
    ) -> Result<ExecExit> {
        use containerd_client::services::v1::ExecProcessRequest;
        let stdout = out.to_string_lossy().to_string();
        // a second spelling of the path: the shim opens it twice (see start_task)
        let stderr = match (out.parent(), out.file_name()) {
            (Some(dir), Some(file)) => dir.join(".").join(file).to_string_lossy().to_string(),
            _ => stdout.clone(),
        };
        self.ctd
            .tasks()
            .exec(self.ctd.req(ExecProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                stdout,
                stderr,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE_URL.to_string(),
                    value: process,
                }),
                ..Default::default()
            }))
            .await
            .map_err(|s| ctd_err("exec", id, s))?;
        let started = self
            .ctd
            .tasks()
            .start(self.ctd.req(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(|s| ctd_err("start exec", id, s));
        let result = match started {
            Err(e) => Err(e),
            Ok(_) => {
                let mut tasks = self.ctd.tasks();
                let wait = tasks.wait(self.ctd.req(WaitRequest {
                    container_id: id.to_string(),
                    exec_id: exec_id.to_string(),
                }));
                match tokio::time::timeout(timeout, wait).await {
                    Ok(Ok(r)) => Ok(ExecExit::Exited(r.into_inner().exit_status)),
                    Ok(Err(s)) => Err(ctd_err("wait exec", id, s)),
                    Err(_) => {
                        crate::runtime::exec::kill(&self.ctd, id, exec_id).await;
                        let mut tasks = self.ctd.tasks();
                        let wait = tasks.wait(self.ctd.req(WaitRequest {
                            container_id: id.to_string(),
                            exec_id: exec_id.to_string(),
                        }));
                        let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
                        Ok(ExecExit::TimedOut)
                    }
                }
            }
        };
        crate::runtime::exec::delete(&self.ctd, id, exec_id).await;
        result
    }
}
