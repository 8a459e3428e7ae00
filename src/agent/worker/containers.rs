//! Starting and stopping one pod's containers: pulls, hooks, termination messages, removal.
use super::*;

/// Stops a container (SIGTERM, SIGKILL after `grace_seconds`; at once when 0) and removes it.
pub(super) async fn remove(ctx: &Context, id: &str, grace_seconds: i64) {
    stop(ctx, id, grace_seconds).await;
    remove_stopped(ctx, id).await;
}

/// Stops a container: SIGTERM, SIGKILL after `grace_seconds`; nothing when 0 (its removal
/// kills it).
async fn stop(ctx: &Context, id: &str, grace_seconds: i64) {
    if grace_seconds > 0 {
        let grace = Duration::from_secs(grace_seconds as u64);
        let stop = ctx.runtime.stop_container(id, grace);
        if let Err(e) = bounded("stop", id, grace + CALL_TIMEOUT, stop).await {
            tracing::warn!(container_id = id, error = %crate::runtime::chain(&e), "stop failed");
        }
    }
}

/// Removes a container (its task killed first if it still runs), its record and snapshot.
pub(super) async fn remove_stopped(ctx: &Context, id: &str) {
    match bounded("remove", id, CALL_TIMEOUT, ctx.runtime.remove_container(id)).await {
        Ok(()) => tracing::info!(container_id = id, "container removed"),
        Err(e) => {
            tracing::warn!(container_id = id, error = %crate::runtime::chain(&e), "remove failed")
        }
    }
}

/// Stops a container as `stop` does, its preStop hook (if `hook` has one) run first within the
/// grace period, which the hook's time is taken out of.
pub(super) async fn stop_with_hook(
    ctx: &Context,
    id: &str,
    grace_seconds: i64,
    hook: Option<HookTarget>,
) {
    let grace = match &hook {
        Some(t) => hooks::pre_stop(ctx.prober.as_ref(), t, grace_seconds).await,
        None => grace_seconds,
    };
    stop(ctx, id, grace).await
}

impl Worker {
    /// What a dead container left as its termination message, read once per incarnation
    /// (FallbackToLogsOnError: its log's end when it failed and left none).
    pub(super) async fn termination_message(
        &self,
        desired: Option<&DesiredPod>,
        found: &[ContainerStatus],
        o: &Observed,
        code: u32,
    ) -> Option<String> {
        if let Some(t) = self
            .last_termination
            .get(&o.name)
            .filter(|t| t.started_ms == o.created_ms)
        {
            return t.message.clone();
        }
        let pod = desired.or(self.last.as_ref())?;
        let policy = podactions::container(&pod.spec, &o.name)
            .and_then(|c| c.termination_message_policy.as_deref());
        let log = match (policy, self.uid(found)) {
            (Some("FallbackToLogsOnError"), Some(uid)) if code != 0 => {
                Some(crate::logdriver::log_path(
                    &self.ctx.state_dir,
                    &self.key,
                    &uid,
                    &o.name,
                    o.restart_count,
                ))
            }
            _ => None,
        };
        self.ctx
            .runtime
            .termination_message(&o.id, log.as_deref())
            .await
    }

    /// The uid of the pod's sandbox: the pod's on this node, else its containers' label.
    pub(super) fn uid(&self, found: &[ContainerStatus]) -> Option<String> {
        self.last.as_ref().map(|d| d.uid.clone()).or_else(|| {
            found
                .iter()
                .find_map(|c| c.labels.get(labels::POD_UID).cloned())
        })
    }

    /// Starts incarnation `restart_count` of container `name`; what the runtime runs then when
    /// it started (its task running), so that the status sent after this sync says so at once
    /// instead of one round later.
    pub(super) async fn start(
        &mut self,
        d: &DesiredPod,
        name: &str,
        restart_count: u32,
        now: i64,
    ) -> Option<Observed> {
        let container = podactions::container(&d.spec, name)?;
        let start = self.try_start(d, container, restart_count);
        let result = match bounded("start", name, START_TIMEOUT, start).await {
            // the postStart hook runs before the container counts as started
            Ok((id, created_ms)) => match self.post_start(d, container, &id).await {
                Ok(()) => Ok((id, created_ms)),
                Err(message) => {
                    let about = about(d, name);
                    let msg = format!("PostStartHook failed: {message}");
                    self.ctx.events.warning(&about, "FailedPostStartHook", msg);
                    Err(("PostStartHookError", message))
                }
            },
            // what failed and why, causes included (the registry's answer, containerd's
            // status), as the kubelet's messages read
            Err(e) => {
                events::start_failed(&self.ctx.events, &about(d, name), &e);
                Err((e.reason(), crate::runtime::chain(&e)))
            }
        };
        if restart_count > 0 || result.is_err() {
            let b = plan::after_restart(self.backoff.get(name), now);
            self.backoff.insert(name.to_string(), b);
        }
        match result {
            Ok((id, created_ms)) => {
                self.waiting.remove(name);
                let (rec, about) = (&self.ctx.events, about(d, name));
                rec.normal(&about, "Created", format!("Created container {name}"));
                rec.normal(&about, "Started", format!("Started container {name}"));
                tracing::info!(
                    container_id = id.as_str(),
                    restart_count,
                    "container started"
                );
                Some(Observed {
                    id,
                    name: name.to_string(),
                    restart_count,
                    state: State::Running,
                    created_ms,
                })
            }
            Err((reason, message)) => {
                tracing::warn!(
                    container = name,
                    reason,
                    error = message.as_str(),
                    "container failed to start; backing off"
                );
                self.waiting.insert(
                    name.to_string(),
                    Waiting {
                        reason: reason.into(),
                        message,
                    },
                );
                None
            }
        }
    }

    /// Runs the postStart hook of a container just started; a failure kills the container
    /// (after its preStop hook, within the pod's grace period, as the kubelet's killContainer
    /// with reason FailedPostStartHook), which the next round restarts with back-off.
    pub(super) async fn post_start(
        &self,
        d: &DesiredPod,
        c: &k8s_openapi::api::core::v1::Container,
        id: &str,
    ) -> Result<(), String> {
        let Some(t) = self.hook_target(d, c, id) else {
            return Ok(());
        };
        let Err(message) = hooks::post_start(self.ctx.prober.as_ref(), &t).await else {
            return Ok(());
        };
        tracing::warn!(
            container_id = id,
            reason = "FailedPostStartHook",
            message = message.as_str(),
            "postStart hook failed; killing the container"
        );
        let grace = hooks::pre_stop(self.ctx.prober.as_ref(), &t, d.grace_seconds()).await;
        let g = Duration::from_secs(grace.max(0) as u64);
        let stop = self.ctx.runtime.stop_container(id, g);
        if let Err(e) = bounded("stop", id, g + CALL_TIMEOUT, stop).await {
            tracing::warn!(container_id = id, error = %crate::runtime::chain(&e), "stop after a failed postStart hook failed");
        }
        Err(message)
    }

    /// Where the hooks of container `c` (incarnation `id`) run, when it has any.
    pub(super) fn hook_target(
        &self,
        d: &DesiredPod,
        c: &k8s_openapi::api::core::v1::Container,
        id: &str,
    ) -> Option<HookTarget> {
        let l = c.lifecycle.as_ref()?;
        if l.post_start.is_none() && l.pre_stop.is_none() {
            return None;
        }
        let host_network = d.spec.host_network.unwrap_or(false);
        let sandbox = self.sandbox.as_ref();
        Some(HookTarget {
            pod: d.key.clone(),
            container: c.clone(),
            target: Target {
                container_id: id.to_string(),
                netns: sandbox
                    .and_then(|s| s.netns.clone())
                    .filter(|_| !host_network),
            },
            pod_ip: if host_network {
                self.ctx.host_ip.clone()
            } else {
                sandbox.and_then(|s| s.ips.first().cloned())
            },
        })
    }

    /// The hook target of the observed container `id` of pod `d`.
    pub(super) fn hook_target_of(
        &self,
        d: &DesiredPod,
        observed: &[Observed],
        id: &str,
    ) -> Option<HookTarget> {
        let o = observed
            .iter()
            .find(|o| o.id == id && o.state == State::Running)?;
        let c = podactions::container(&d.spec, &o.name)?;
        self.hook_target(d, c, id)
    }

    /// The sidecars of `d` whose running incarnation is started (its startup probe passed).
    pub(super) fn started_sidecars(
        &self,
        d: &DesiredPod,
        observed: &[Observed],
    ) -> std::collections::BTreeSet<String> {
        let newest = plan::newest(observed);
        d.spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| podactions::is_sidecar(c))
            .filter(|c| {
                let Some(o) = newest.get(&c.name).filter(|o| o.state == State::Running) else {
                    return false;
                };
                match self.probes.get(&c.name).filter(|r| r.id == o.id) {
                    Some(run) => lock(&run.state).gates().started,
                    None => probe::initial_gates(c).started,
                }
            })
            .map(|c| c.name.clone())
            .collect()
    }

    /// Pulls, makes the sandbox if need be and runs the container: its id and its creation
    /// time as the runtime records it (whole seconds).
    pub(super) async fn try_start(
        &mut self,
        d: &DesiredPod,
        container: &k8s_openapi::api::core::v1::Container,
        restart_count: u32,
    ) -> Result<(String, i64), RuntimeError> {
        let rt = &self.ctx.runtime;
        let image = container.image.clone().unwrap_or_default();
        // the runtime serializes pulls (as the kubelet does by default) after a lock-free check;
        // what it resolved is handed to run_container, which does not resolve it again
        let about = about(d, &container.name);
        let id = container_id(&d.key, &container.name, restart_count);
        let objects = pod_objects(&self.ctx, d, &id).await?;
        let pull_secrets: Vec<String> = (d.spec.image_pull_secrets.iter().flatten())
            .map(|s| s.name.clone())
            .collect();
        let (auth, problems) = crate::runtime::configvol::pull_credentials(&pull_secrets, &objects);
        for p in problems {
            tracing::warn!(reason = "FailedToRetrieveImagePullSecret", "{p}");
        }
        let policy = PullPolicy::of(container);
        let pulled =
            events::ensure_image(&self.ctx.events, &**rt, &about, &image, policy, &auth).await?;
        self.images
            .insert(container.name.clone(), (image, pulled.info.digest.clone()));
        let host_network = d.spec.host_network.unwrap_or(false);
        let sandbox = match &self.sandbox {
            Some(s) => s.clone(),
            None => {
                let s = rt.create_sandbox(&pod_sandbox(d)).await?;
                self.sandbox = Some(s.clone());
                s
            }
        };
        if let Ok((_, warnings)) =
            crate::runtime::configvol::resolve_env(container, &d.key.namespace, &objects)
        {
            for w in warnings {
                tracing::warn!(
                    container = container.name.as_str(),
                    reason = "InvalidEnvironmentVariableNames",
                    "{w}"
                );
            }
        }
        let mut container_labels = pod_labels(d);
        container_labels.insert(labels::CONTAINER_NAME.into(), container.name.clone());
        container_labels.insert(labels::RESTART_COUNT.into(), restart_count.to_string());
        let log_path = crate::logdriver::log_path(
            &self.ctx.state_dir,
            &d.key,
            &d.uid,
            &container.name,
            restart_count,
        );
        let req = ContainerRequest {
            id: id.clone(),
            labels: container_labels,
            pod_spec: d.spec.clone(),
            container: container.clone(),
            image: pulled,
            sandbox,
            hostname: if host_network {
                nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().to_string())
                    .unwrap_or_default()
            } else {
                d.key.name.clone()
            },
            log_path,
            pod: PodMeta {
                name: d.key.name.clone(),
                namespace: d.key.namespace.clone(),
                uid: d.api_uid.clone(),
                labels: d.labels.clone(),
                annotations: d.annotations.clone(),
                host_ips: self.ctx.host_ip.clone().into_iter().collect(),
                objects,
            },
        };
        // containerd stamps the container's record (whole seconds) as run_container makes it:
        // the same second as now but for a call that crosses into the next, which the next
        // round's listing then corrects
        let created_ms = self.ctx.clock.now_ms().div_euclid(1000) * 1000;
        rt.run_container(&req).await?;
        Ok((id, created_ms))
    }
}
