//! A pod's probes: one task per probe of each running container, and the kills they decide.
use super::*;

/// The probe tasks of one container incarnation and their shared state. Dropping it stops them.
pub(super) struct ProbeRun {
    pub(super) id: String,
    pub(super) state: Arc<std::sync::Mutex<ContainerProbes>>,
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The kill for a failed liveness or startup probe was done.
    pub(super) killed: bool,
}

impl Drop for ProbeRun {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub(super) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One probe of one container incarnation, run on its period until aborted (prober.worker).
pub(super) struct ProbeTask {
    kind: Kind,
    handler: Result<probe::Handler, String>,
    timing: probe::Timing,
    target: Target,
    state: Arc<std::sync::Mutex<ContainerProbes>>,
    prober: Arc<dyn Prober>,
    changed: mpsc::UnboundedSender<()>,
    /// Startup succeeded: readiness runs at once instead of waiting for its tick.
    wake: Arc<tokio::sync::Notify>,
    /// A wait before the first run (see `Context::started`).
    jitter: Duration,
    clock: Clock,
    /// Failed probes are events (`Unhealthy`) about the container.
    events: Recorder,
    about: crate::core::events::Involved,
}

impl ProbeTask {
    pub(super) async fn run(self) {
        let period = Duration::from_millis(self.timing.period_ms.max(1) as u64);
        let timeout = Duration::from_millis(self.timing.timeout_ms.max(1) as u64);
        if !self.jitter.is_zero() {
            tokio::time::sleep(self.jitter).await;
        }
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut told_error = false;
        loop {
            let readiness = self.kind == Kind::Readiness;
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.wake.notified(), if readiness => {}
            }
            if !lock(&self.state).due(self.kind, self.clock.now_ms()) {
                continue;
            }
            let outcome = match &self.handler {
                Ok(h) => self.prober.probe(&self.target, h, timeout).await,
                Err(e) => Outcome::Error(e.clone()),
            };
            events::probe_outcome(&self.events, &self.about, self.kind.as_str(), &outcome);
            match &outcome {
                Outcome::Success | Outcome::Warning(_) => {}
                Outcome::Failure(m) => {
                    tracing::info!(output = m.as_str(), "probe failed")
                }
                Outcome::Error(m) if !told_error => {
                    told_error = true;
                    tracing::warn!(
                        error = m.as_str(),
                        "probe cannot run; its result is ignored"
                    )
                }
                Outcome::Error(_) => {}
            }
            let (changed, started_now) = {
                let mut st = lock(&self.state);
                let before = st.gates().started;
                let changed = st.record(self.kind, &outcome);
                (changed, !before && st.gates().started)
            };
            if started_now {
                self.wake.notify_one();
            }
            if changed {
                tracing::debug!(outcome = ?outcome, "probe result changed");
                if self.changed.send(()).is_err() {
                    return;
                }
            }
        }
    }
}

impl Worker {
    /// Starts the probes of containers newly seen running; stops those of containers gone.
    pub(super) fn sync_probes(&mut self, desired: &DesiredPod, observed: &[Observed]) {
        let newest = plan::newest(observed);
        self.probes.retain(|name, run| {
            newest
                .get(name)
                .is_some_and(|o| o.id == run.id && o.state == State::Running)
        });
        let host_network = desired.spec.host_network.unwrap_or(false);
        // app containers and sidecars have probes (validation refuses them on other init
        // containers)
        let sidecars = desired.spec.init_containers.iter().flatten();
        for c in desired
            .spec
            .containers
            .iter()
            .chain(sidecars.filter(|c| podactions::is_sidecar(c)))
        {
            let Some(o) = newest.get(&c.name) else {
                continue;
            };
            if o.state != State::Running || self.probes.contains_key(&c.name) {
                continue;
            }
            let Some(cp) = ContainerProbes::of(c, o.created_ms) else {
                continue;
            };
            // the pod's network namespace, as the runtime gave it; until it is known (a pod
            // adopted after a restart whose lookup failed) its network probes wait
            let netns = match (host_network, &self.sandbox) {
                (true, _) => None,
                (
                    false,
                    Some(SandboxInfo {
                        netns: Some(ns), ..
                    }),
                ) => Some(ns.clone()),
                (false, _) => continue,
            };
            let target = Target {
                container_id: o.id.clone(),
                netns,
            };
            let state = Arc::new(std::sync::Mutex::new(cp));
            let wake = Arc::new(tokio::sync::Notify::new());
            let mut tasks = Vec::new();
            for (kind, p) in [
                (Kind::Startup, &c.startup_probe),
                (Kind::Liveness, &c.liveness_probe),
                (Kind::Readiness, &c.readiness_probe),
            ] {
                let Some(p) = p else { continue };
                let timing = probe::Timing::of(p);
                let period = Duration::from_millis(timing.period_ms.max(0) as u64);
                let jitter = match self.ctx.started {
                    Some(s) if s.elapsed() < period => period.mul_f64(rand::random::<f64>()),
                    _ => Duration::ZERO,
                };
                let task = ProbeTask {
                    jitter,
                    clock: self.ctx.clock.clone(),
                    kind,
                    handler: probe::handler(p, c),
                    timing,
                    target: target.clone(),
                    state: state.clone(),
                    prober: self.ctx.prober.clone(),
                    changed: self.probe_tx.clone(),
                    wake: wake.clone(),
                    events: self.ctx.events.clone(),
                    about: about(desired, &c.name),
                };
                // under the pod's span (the current one: this runs in a sync)
                let span = tracing::info_span!(
                    "probe",
                    container = c.name.as_str(),
                    container_id = o.id.as_str(),
                    probe = kind.as_str()
                );
                tasks.push(tokio::spawn(task.run().instrument(span)));
            }
            tracing::debug!(container_id = o.id.as_str(), "probes started");
            self.probes.insert(
                c.name.clone(),
                ProbeRun {
                    id: o.id.clone(),
                    state,
                    tasks,
                    killed: false,
                },
            );
        }
    }

    /// A probe result changed: kill containers that failed liveness or startup (the next round
    /// restarts them, counted and backed off as any exit), and report the new status.
    pub(super) async fn on_probe(&mut self, reports: &mpsc::UnboundedSender<Report>) {
        let Some((desired, observed, requeue)) = self.last_report.clone() else {
            return;
        };
        let killed = self.kill_failed(&desired).await;
        // a sidecar whose startup probe passed lets the next init container start: a round
        let started = self.started_sidecars(&desired, &observed);
        let newly_started = started != self.started_seen;
        self.started_seen = started;
        self.send_status(
            &desired,
            &observed,
            requeue,
            killed || newly_started,
            reports,
        );
    }

    /// Stops the containers whose liveness or startup probe failed; true when it stopped any.
    /// A stop that fails is tried again on the next sync.
    pub(super) async fn kill_failed(&mut self, desired: &DesiredPod) -> bool {
        let mut kills = Vec::new();
        for (name, run) in self.probes.iter_mut().filter(|(_, r)| !r.killed) {
            if let Some(k) = lock(&run.state).kill() {
                run.killed = true;
                kills.push((name.clone(), run.id.clone(), k));
            }
        }
        for (name, id, k) in &kills {
            let Some(c) = podactions::container(&desired.spec, name) else {
                continue;
            };
            let grace =
                probe::kill_grace_seconds(c, k.kind, desired.spec.termination_grace_period_seconds);
            let grace = match self.hook_target(desired, c, id) {
                Some(t) => hooks::pre_stop(self.ctx.prober.as_ref(), &t, grace).await,
                None => grace,
            };
            tracing::info!(
                container = name.as_str(),
                container_id = id.as_str(),
                grace_secs = grace,
                "{}",
                k.message
            );
            self.ctx
                .events
                .normal(&about(desired, name), "Killing", k.message.clone());
            let g = Duration::from_secs(grace as u64);
            let stop = self.ctx.runtime.stop_container(id, g);
            if let Err(e) = bounded("stop", id, g + CALL_TIMEOUT, stop).await {
                tracing::warn!(container_id = id.as_str(), error = %crate::runtime::chain(&e), "stop after a failed probe failed; trying again");
                if let Some(run) = self.probes.get_mut(name) {
                    run.killed = false;
                }
            }
        }
        if !kills.is_empty() {
            self.acted_at = Some(tokio::time::Instant::now());
        }
        !kills.is_empty()
    }
}
