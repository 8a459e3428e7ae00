//! The soak (issue 15, item 4): a day of wear compressed into churn, since the product has no
//! accelerated clock. (a) N pod create/delete cycles on one node (the bench's agent: a DaemonSet
//! created, its container running, the DaemonSet deleted, the container gone); (b) M rollouts of a
//! DaemonSet over 5 more agents (the image flipped v1 <-> v2, each rollout waited for to finish).
//! Full sizes 10 000 and 1 000, smoke 20 and 3; `DSA_SOAK_CYCLES` and `DSA_SOAK_ROLLOUTS` set
//! others (a mid-size run). `DSA_SOAK_MINUTES` bounds a run on a loaded machine: the cycles stop
//! at 60% of it, the rollouts at its end, and the report says how many were done.
//!
//! Sampled: the agent's and the server's RSS, open file descriptors (/proc/PID/fd), threads and
//! tokio's alive tasks (`tokio_runtime_alive_tasks` of the server's `/metrics` and of the agent's,
//! read through the server's `nodes/NODE/proxy/metrics`), and the store's size (the server's data
//! directory) and its objects (`apiserver_storage_objects`, events apart: they live an hour),
//! every minute and at every tenth of each
//! phase's work (so a short run still has at least 10 samples per phase). Verdict per series: the
//! mean of the last third of the samples against the first sample after warm-up (the first tenth
//! of the work), growth within 10%. A PNG of the series is written by Debian's python3-matplotlib
//! (`DSA_SOAK_PNG`, else `OUT.soak.png` beside the `--json OUT.json` report, else
//! `target/soak.png`).
use super::*;

const SAMPLE_EVERY: Duration = Duration::from_secs(60);
const GROWTH_LIMIT: f64 = 0.10;
const ROLLOUT_AGENTS: usize = 5;
/// Debian's interpreter, which python3-matplotlib installs for (not a pyenv one on PATH).
const PYTHON: &str = "/usr/bin/python3";

#[derive(Clone, Debug)]
struct Sample {
    phase: &'static str,
    /// Seconds since the soak started.
    t: f64,
    /// Work done in this phase (cycles or rollouts).
    done: usize,
    agent_rss_mib: f64,
    agent_fds: usize,
    agent_threads: usize,
    agent_tasks: f64,
    server_rss_mib: f64,
    server_fds: usize,
    server_threads: usize,
    server_tasks: f64,
    store_mib: f64,
    /// Stored objects other than events.
    store_objects: f64,
    events: f64,
}

/// The series a verdict is computed for: (name, value of a sample).
type Series = (&'static str, fn(&Sample) -> f64);
const SERIES: [Series; 10] = [
    ("agent RSS MiB", |s| s.agent_rss_mib),
    ("agent fds", |s| s.agent_fds as f64),
    ("agent threads", |s| s.agent_threads as f64),
    ("agent tokio tasks", |s| s.agent_tasks),
    ("server RSS MiB", |s| s.server_rss_mib),
    ("server fds", |s| s.server_fds as f64),
    ("server threads", |s| s.server_threads as f64),
    ("server tokio tasks", |s| s.server_tasks),
    ("store MiB", |s| s.store_mib),
    ("store objects (no events)", |s| s.store_objects),
];

/// (tokio's alive tasks, objects stored but events, events) from a `/metrics` text.
fn scrape(text: &str) -> (f64, f64, f64) {
    let value = |l: &str| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let (mut tasks, mut objects, mut events) = (0.0, 0.0, 0.0);
    for l in text.lines() {
        if l.starts_with("tokio_runtime_alive_tasks ") {
            tasks = value(l).unwrap_or(0.0);
        } else if let Some(rest) = l.strip_prefix("apiserver_storage_objects{") {
            let n = value(l).unwrap_or(0.0);
            if rest.starts_with("resource=\"events\"") {
                events += n;
            } else {
                objects += n;
            }
        }
    }
    (tasks, objects, events)
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

fn threads(pid: u32) -> usize {
    count_dir(&format!("/proc/{pid}/task"))
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => todo.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Growth of one series: the mean of the last third of `xs` against `xs[0]` (the first sample
/// after warm-up); None with fewer than 3 samples.
fn growth(xs: &[f64]) -> Option<f64> {
    if xs.len() < 3 || xs[0] <= 0.0 {
        return None;
    }
    let tail = &xs[xs.len() - xs.len() / 3..];
    Some(tail.iter().sum::<f64>() / tail.len() as f64 / xs[0] - 1.0)
}

/// Takes a sample when a tenth of the phase's work is done since the last, or a minute passed.
struct Sampler {
    t0: Instant,
    last: Instant,
    last_done: usize,
    step: usize,
    samples: Vec<Sample>,
}

impl Sampler {
    fn due(&self, done: usize) -> bool {
        done >= self.last_done + self.step || self.last.elapsed() >= SAMPLE_EVERY
    }
}

impl Bench {
    async fn soak_sample(&self, s: &mut Sampler, phase: &'static str, done: usize) {
        let (a, v) = (self.agent.pid(), self.server.pid());
        let metrics = |r: Result<(u16, String)>| match r {
            Ok((200, text)) => scrape(&text),
            _ => (0.0, 0.0, 0.0),
        };
        let (server_tasks, store_objects, events) = metrics(http_get(&self.wire, "/metrics").await);
        let agent_path = format!("/api/v1/nodes/{NODE}/proxy/metrics");
        let (agent_tasks, _, _) = metrics(http_get(&self.wire, &agent_path).await);
        s.samples.push(Sample {
            phase,
            t: s.t0.elapsed().as_secs_f64(),
            done,
            agent_rss_mib: rss_kib(a).unwrap_or(0) as f64 / 1024.0,
            agent_fds: count_dir(&format!("/proc/{a}/fd")),
            agent_threads: threads(a),
            agent_tasks,
            server_rss_mib: rss_kib(v).unwrap_or(0) as f64 / 1024.0,
            server_fds: count_dir(&format!("/proc/{v}/fd")),
            server_threads: threads(v),
            server_tasks,
            store_mib: dir_bytes(&self.o.dir.join("server")) as f64 / (1024.0 * 1024.0),
            store_objects,
            events,
        });
        s.last = Instant::now();
        s.last_done = done;
    }

    pub(super) async fn soak(&mut self) -> Result<()> {
        let size = |var: &str, smoke: usize, full: usize| -> Result<usize> {
            match std::env::var(var) {
                Ok(v) => v.parse().with_context(|| format!("{var}={v}")),
                Err(_) => Ok(if self.o.smoke { smoke } else { full }),
            }
        };
        let cycles = size("DSA_SOAK_CYCLES", 20, 10_000)?;
        let rollouts = size("DSA_SOAK_ROLLOUTS", 3, 1_000)?;
        let budget = match std::env::var("DSA_SOAK_MINUTES") {
            Ok(v) => Some(Duration::from_secs_f64(
                60.0 * v
                    .parse::<f64>()
                    .with_context(|| format!("DSA_SOAK_MINUTES={v}"))?,
            )),
            Err(_) => None,
        };
        let over =
            |s: &Sampler, share: f64| budget.is_some_and(|b| s.t0.elapsed() > b.mul_f64(share));
        let mut s = Sampler {
            t0: Instant::now(),
            last: Instant::now(),
            last_done: 0,
            step: cycles.div_ceil(10).max(1),
            samples: vec![],
        };
        eprintln!("[harness] soak: {cycles} pod create/delete cycles on one node");
        self.soak_sample(&mut s, "cycles", 0).await;
        let image = self.image_v1.clone();
        let mut cycles_done = 0;
        for k in 1..=cycles {
            if over(&s, 0.6) {
                eprintln!("[harness] soak: time budget: {cycles_done} of {cycles} cycles done");
                break;
            }
            cycles_done = k;
            let name = "soak-cycle".to_string();
            self.ds_running(&name, &image).await?;
            self.delete_all(std::slice::from_ref(&name)).await?;
            self.agent_empty(Duration::from_secs(60)).await?;
            if s.due(k) {
                self.soak_sample(&mut s, "cycles", k).await;
            }
        }
        if s.last_done != cycles_done {
            self.soak_sample(&mut s, "cycles", cycles_done).await;
        }

        eprintln!("[harness] soak: {rollouts} rollouts over {ROLLOUT_AGENTS} agents");
        let fleet = self.soak_fleet().await?;
        let api = self.api.clone();
        let ds = soak_ds(&self.image_v1)?;
        api.create(&PostParams::default(), &ds).await?;
        let roll = Duration::from_secs(300);
        self.rolled_out("soak-roll", ROLLOUT_AGENTS, 1, roll)
            .await?;
        s.step = rollouts.div_ceil(10).max(1);
        self.soak_sample(&mut s, "rollouts", 0).await;
        let mut rollouts_done = 0;
        for k in 1..=rollouts {
            if over(&s, 1.0) {
                eprintln!(
                    "[harness] soak: time budget: {rollouts_done} of {rollouts} rollouts done"
                );
                break;
            }
            rollouts_done = k;
            let image = if k % 2 == 1 {
                &self.image_v2
            } else {
                &self.image_v1
            };
            let patch = json!({"spec": {"template": {"spec": {"containers": [
                {"name": "c", "image": image}]}}}});
            api.patch(
                "soak-roll",
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await?;
            self.rolled_out("soak-roll", ROLLOUT_AGENTS, k as i64 + 1, roll)
                .await?;
            if s.due(k) {
                self.soak_sample(&mut s, "rollouts", k).await;
            }
        }
        if s.last_done != rollouts_done {
            self.soak_sample(&mut s, "rollouts", rollouts_done).await;
        }
        api.delete("soak-roll", &DeleteParams::default()).await?;
        // the agents remove their pods (CNI DEL included) before they stop
        self.pods_gone("soak-roll", Duration::from_secs(120))
            .await?;
        drop(fleet);
        self.soak_report(&s.samples, cycles_done, rollouts_done)
    }

    /// Five more agents, labelled for the rollout DaemonSet; stopped when dropped.
    async fn soak_fleet(&mut self) -> Result<Vec<Proc>> {
        let kubeconfig = self.o.dir.join("server/admin.kubeconfig");
        let mut agents = vec![];
        for i in 0..ROLLOUT_AGENTS {
            let node = format!("soak-{i}");
            let args: Vec<String> = vec![
                "agent".into(),
                "--node-name".into(),
                node.clone(),
                "--kubeconfig".into(),
                kubeconfig.to_string_lossy().into(),
                "--containerd-socket".into(),
                self.o.socket.to_string_lossy().into(),
                "--containerd-namespace".into(),
                format!("{}-soak-{i}", self.o.tag),
                "--state-dir".into(),
                self.o.dir.join(&node).to_string_lossy().into(),
                "--node-label".into(),
                "bench-soak=yes".into(),
            ];
            let log = self.o.dir.join(format!("agent-{node}.log"));
            agents.push(Proc::spawn(&self.o.bin, &args, &log, "soak agent")?);
        }
        Ok(agents)
    }

    fn soak_report(&mut self, samples: &[Sample], cycles: usize, rollouts: usize) -> Result<()> {
        let profile = if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        };
        let mut verdicts = serde_json::Map::new();
        for phase in ["cycles", "rollouts"] {
            let mine: Vec<&Sample> = samples.iter().filter(|s| s.phase == phase).collect();
            let total = mine.last().map(|s| s.done).unwrap_or(0);
            // warm-up: the first tenth of the phase's work
            let after: Vec<&Sample> = mine
                .iter()
                .copied()
                .filter(|s| s.done * 10 >= total && s.done > 0)
                .collect();
            for (name, f) in SERIES {
                let xs: Vec<f64> = after.iter().map(|s| f(s)).collect();
                let g = growth(&xs);
                let first = xs.first().copied().unwrap_or(0.0);
                let last = xs.last().copied().unwrap_or(0.0);
                let row = self.report.row(
                    &format!("soak {phase}: {name} growth after warm-up"),
                    g.map_or("-".into(), |g| format!("{:+.1}%", g * 100.0)),
                    format!("{first:.1} -> {last:.1} ({} samples)", xs.len()),
                    None,
                );
                if let Some(g) = g {
                    row.target("<= +10%", g <= GROWTH_LIMIT);
                }
                verdicts.insert(
                    format!("{phase}/{name}"),
                    json!({"growth": g, "first": first, "last": last, "samples": xs.len(),
                        "pass": g.map(|g| g <= GROWTH_LIMIT)}),
                );
            }
        }
        let rows: Vec<Value> = samples
            .iter()
            .map(|s| {
                json!({"phase": s.phase, "t": s.t, "done": s.done,
                "agent_rss_mib": s.agent_rss_mib, "agent_fds": s.agent_fds,
                "agent_threads": s.agent_threads, "agent_tasks": s.agent_tasks,
                "server_rss_mib": s.server_rss_mib, "server_fds": s.server_fds,
                "server_threads": s.server_threads, "server_tasks": s.server_tasks,
                "store_mib": s.store_mib, "store_objects": s.store_objects,
                "events": s.events})
            })
            .collect();
        let doc = json!({"cycles": cycles, "rollouts": rollouts, "profile": profile,
            "rollout_agents": ROLLOUT_AGENTS, "samples": rows, "verdicts": verdicts});
        // the run's directory is removed when it ends: the plot goes where it stays
        let png = match (std::env::var("DSA_SOAK_PNG"), &self.o.json) {
            (Ok(p), _) => PathBuf::from(p),
            (Err(_), Some(j)) => j.with_extension("soak.png"),
            (Err(_), None) => PathBuf::from("target/soak.png"),
        };
        let data = self.o.dir.join("soak.json");
        std::fs::write(&data, serde_json::to_vec_pretty(&doc)?)?;
        self.report.json.insert("soak".into(), doc);
        plot(&data, &png)?;
        eprintln!("[harness] soak: plot written to {}", png.display());
        Ok(())
    }
}

fn soak_ds(image: &str) -> Result<DaemonSet> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "soak-roll", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "soak-roll"}},
            "updateStrategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "100%"}},
            "template": {"metadata": {"labels": {"app": "soak-roll"}}, "spec": {
                "nodeSelector": {"bench-soak": "yes"},
                "terminationGracePeriodSeconds": GRACE,
                "containers": [{"name": "c", "image": image,
                    "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]}],
            }},
        },
    }))?)
}

/// The series of `data` (soak.json) plotted into `png`, one panel per quantity, by Debian's
/// matplotlib.
fn plot(data: &Path, png: &Path) -> Result<()> {
    const SCRIPT: &str = r#"
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
doc = json.load(open(sys.argv[1]))
s = doc["samples"]
panels = [("RSS (MiB)", ["agent_rss_mib", "server_rss_mib"]),
          ("open fds", ["agent_fds", "server_fds"]),
          ("threads", ["agent_threads", "server_threads"]),
          ("tokio tasks", ["agent_tasks", "server_tasks"]),
          ("store (MiB)", ["store_mib"]),
          ("stored objects", ["store_objects", "events"])]
fig, axes = plt.subplots(len(panels), 1, figsize=(9, 13), sharex=True)
for ax, (title, keys) in zip(axes, panels):
    for k in keys:
        for phase, style in (("cycles", "-"), ("rollouts", "--")):
            pts = [(x["t"] / 60, x[k]) for x in s if x["phase"] == phase]
            if pts:
                ax.plot(*zip(*pts), style, marker=".", label=f"{k.split('_')[0]} ({phase})")
    ax.set_ylabel(title)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
axes[-1].set_xlabel("minutes")
fig.suptitle(f"soak: {doc['cycles']} pod create/delete cycles on one node, then "
             f"{doc['rollouts']} rollouts over {doc['rollout_agents']} agents ({doc['profile']} profile)")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=80)
"#;
    let out = Command::new(PYTHON)
        .args(["-c", SCRIPT])
        .arg(data)
        .arg(png)
        .output()
        .with_context(|| format!("run {PYTHON} (python3-matplotlib: scripts/install-deps.sh)"))?;
    if !out.status.success() {
        bail!(
            "plot the soak with matplotlib: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
