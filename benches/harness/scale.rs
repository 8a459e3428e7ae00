//! The scale benchmark (issue 14): a server of its own (on SQLite; then two replicas on one
//! etcd) with N simulated nodes (`simnode`: 5000 and 20 DaemonSets; smoke 40 and 2), measuring
//! - the client-side latency of the nodes' mutating calls in steady state (Lease renewals) and
//!   during a rollout (status writes, final deletes, renewals): p99 <= 100 ms (Kubernetes' SLO
//!   for mutating calls is 1 s);
//! - the fan-out of a DaemonSet change (its image, with `maxSurge: 100%`): from the PATCH to each
//!   node seeing the new generation on its DaemonSet watch, and to each node seeing its new pod
//!   on its pod watch (p99 <= 2 s);
//! - the server's CPU (cores, /proc/PID/stat over each phase) and RSS (max of 1 s samples):
//!   <= 1 core in steady state, <= 1 GiB;
//! - the SQLite store over "one hour compressed": every node renews its Lease 360 times (an
//!   hour at 10 s) as fast as the period allows, bounded in count and time; the files' size
//!   (state.db + -wal) before and after, the largest WAL seen, the bytes the server wrote
//!   (/proc/PID/io write_bytes) per API write, and no "database is locked".
use std::sync::atomic::AtomicU64;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

use super::simnode::{Fleet, Seen, Shared, Tracker};
use super::*;

/// Sizes of the scale section.
struct ScaleSizes {
    nodes: usize,
    daemonsets: usize,
    /// The steady-state window.
    steady: Duration,
    /// Lease renewals per node in the compressed hour, and the time it may take at most.
    churn_renewals: u64,
    churn_cap: Duration,
}

/// The label every simulated node has and every scale DaemonSet selects.
const SCALE_LABEL: &str = "bench-scale";

/// One server process of the section and how to reach it.
struct Server {
    proc: Proc,
    config: kube::Config,
    data: PathBuf,
}

/// /proc/PID/io: (write_bytes, wchar).
fn io_bytes(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |k: &str| -> Option<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(k))?
            .trim()
            .parse()
            .ok()
    };
    Some((field("write_bytes:")?, field("wchar:")?))
}

fn file_mib(p: &Path) -> f64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0
}

/// Raises the open files limit (soft, and hard where the harness may) so that N nodes' three
/// connections each fit, in the harness and in the servers it starts (they inherit it); fails
/// when `need` cannot fit under the hard limit.
fn raise_nofile_to(want: u64, need: u64) -> Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    if r.rlim_cur >= want {
        return Ok(r.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: r.rlim_max.max(want),
    };
    // SAFETY: valid pointer to an rlimit
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(want);
    }
    // no CAP_SYS_RESOURCE (a container): up to the hard limit
    r.rlim_cur = r.rlim_max;
    // SAFETY: valid pointer to an rlimit
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        bail!("setrlimit: {}", std::io::Error::last_os_error());
    }
    if r.rlim_cur < need {
        bail!(
            "the open files limit is {} (hard) and cannot be raised: {need} are needed",
            r.rlim_cur
        );
    }
    Ok(r.rlim_cur)
}

/// The server's RSS (max) and CPU ticks, sampled every second by a task of its own.
struct Sampler {
    max_rss_kib: Arc<AtomicU64>,
    max_wal: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32, wal: Option<PathBuf>) -> Sampler {
        let max_rss_kib = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let max_wal = Arc::new(AtomicU64::new(0));
        let (rss, w) = (max_rss_kib.clone(), max_wal.clone());
        let task = tokio::spawn(async move {
            loop {
                rss.fetch_max(rss_kib(pid).unwrap_or(0), Ordering::Relaxed);
                if let Some(p) = &wal {
                    let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                    w.fetch_max(len, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Sampler {
            max_rss_kib,
            max_wal,
            task,
        }
    }

    fn rss_mib(&self) -> f64 {
        self.max_rss_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// CPU seconds of `pid` so far.
fn cpu_s(pid: u32) -> f64 {
    cpu_ticks(pid).unwrap_or(0) as f64 / clk_tck()
}

/// The harness's DaemonSet on the simulated nodes only, rolled with `maxSurge: 100%` (every
/// node's new pod at once, beside its old one), its pod asking for a little of each node.
fn scale_ds(name: &str, image: &str) -> Result<DaemonSet> {
    let ds = daemonset(name, image, Some(json!({SCALE_LABEL: "yes"})))?;
    let mut ds = serde_json::to_value(ds)?;
    ds["spec"]["updateStrategy"] = json!({"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}});
    ds["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "10m", "memory": "16Mi"}});
    Ok(serde_json::from_value(ds)?)
}

/// Cores each of `pids` used since `before` (CPU seconds), over `secs`.
fn cores_since(pids: &[u32], before: &[f64], secs: f64) -> Vec<f64> {
    pids.iter()
        .zip(before)
        .map(|(p, c)| (cpu_s(*p) - c) / secs)
        .collect()
}

impl Bench {
    pub(super) async fn scale(&mut self) -> Result<()> {
        let sz = if self.o.smoke {
            // CI's smoke: proves the section works in about a minute (figures: the full run)
            ScaleSizes {
                nodes: 40,
                daemonsets: 2,
                steady: Duration::from_secs(5),
                churn_renewals: 60,
                churn_cap: Duration::from_secs(5),
            }
        } else {
            ScaleSizes {
                nodes: 5000,
                daemonsets: 20,
                steady: Duration::from_secs(60),
                churn_renewals: 360,
                churn_cap: Duration::from_secs(600),
            }
        };
        // DSA_BENCH_SCALE_NODES / _DAEMONSETS: another size (a mid-size run, finding where it
        // breaks)
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
        let sz = ScaleSizes {
            nodes: env("DSA_BENCH_SCALE_NODES").unwrap_or(sz.nodes),
            daemonsets: env("DSA_BENCH_SCALE_DAEMONSETS").unwrap_or(sz.daemonsets),
            ..sz
        };
        let n = sz.nodes as u64;
        let limit = raise_nofile_to((n * 4 + 4096).max(65536), n * 3 + 1024)?;
        eprintln!("[harness] scale: open files limit {limit}");
        // DSA_BENCH_SCALE_STORES=sqlite (or etcd): one of the two runs only
        let stores = std::env::var("DSA_BENCH_SCALE_STORES").unwrap_or_default();
        if stores.is_empty() || stores.contains("sqlite") {
            self.scale_sqlite(&sz).await?;
        }
        if stores.is_empty() || stores.contains("etcd") {
            self.scale_etcd(&sz).await?;
        }
        Ok(())
    }

    /// Two replicas on one etcd (a member of its own, as tests/etcd.rs starts them), sharing
    /// the first one's CA, serving certificate and admin kubeconfig (copied: the `replicas`
    /// branch shares them through the store); node i talks to replica i % 2.
    async fn scale_etcd(&mut self, sz: &ScaleSizes) -> Result<()> {
        let dir = self.o.dir.join("scale-etcd");
        std::fs::create_dir_all(&dir)?;
        let free = || -> Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        };
        let (client, peer) = (free()?, free()?);
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(self.o.dir.join("scale-etcd.log"))?;
        let child = Command::new("etcd")
            .args(["--name", "m0", "--data-dir"])
            .arg(dir.join("m0.etcd"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("m0={peer_url}")])
            .args(["--initial-cluster-state", "new"])
            // room for a 5000-node fleet's history between the server's compactions
            .args(["--quota-backend-bytes", &(8u64 << 30).to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start etcd (Debian's etcd-server)")?;
        let mut etcd = Proc {
            child,
            name: "etcd",
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            etcd.check()?;
            let health = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={client_url}"))
                .args(["endpoint", "health"])
                .output()
                .context("run etcdctl (Debian's etcd-client)")?;
            if health.status.success() {
                break;
            }
            if Instant::now() > deadline {
                bail!("etcd did not become healthy in 30 s (log: scale-etcd.log)");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!(
            "[harness] scale: two replicas on etcd {client_url}, {} simulated nodes, {} DaemonSets",
            sz.nodes, sz.daemonsets
        );
        let extra = vec!["--datastore-endpoint".to_string(), client_url.clone()];
        let a_dir = dir.join("a");
        let a = self
            .scale_server(&a_dir, "scale-replica-a", &extra, sz.nodes)
            .await?;
        let b_dir = dir.join("b");
        std::fs::create_dir_all(b_dir.join("tls"))?;
        for e in std::fs::read_dir(a_dir.join("tls"))? {
            let e = e?;
            std::fs::copy(e.path(), b_dir.join("tls").join(e.file_name()))?;
        }
        std::fs::copy(
            a_dir.join("admin.kubeconfig"),
            b_dir.join("admin.kubeconfig"),
        )?;
        let b = self
            .scale_server(&b_dir, "scale-replica-b", &extra, sz.nodes)
            .await?;
        let servers = [a, b];
        let res = self.scale_run(sz, &servers, None, "scale_etcd").await;
        drop(servers);
        drop(etcd);
        res
    }

    /// Starts a server of the section: `dir` its data directory (kept if it exists: a replica
    /// sharing another's secrets), `extra` more flags.
    async fn scale_server(
        &self,
        dir: &Path,
        name: &'static str,
        extra: &[String],
        nodes: usize,
    ) -> Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut args: Vec<String> = vec![
            "server".into(),
            "--data-dir".into(),
            dir.to_string_lossy().into(),
            "--listen".into(),
            addr.clone(),
        ];
        args.extend(extra.iter().cloned());
        let log = self.o.dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        // each node holds one HTTP/2 connection (its watches and writes, as an agent), all from
        // 127.0.0.1 (a dropped one comes back while the old is closing): the per-client cap
        // (the hardening against one hostile address) and the total are raised above that
        let conns = (nodes * 4 + 1000).max(16384).to_string();
        let child = Command::new(&self.o.bin)
            .args(&args)
            .env("DSA_SERVER_MAX_CONNECTIONS_PER_CLIENT", &conns)
            .env("DSA_SERVER_MAX_CONNECTIONS", &conns)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawn {name}"))?;
        let mut proc = Proc { child, name };
        let kubeconfig = dir.join("admin.kubeconfig");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            proc.check()?;
            if kubeconfig.exists() {
                if let Ok(wire) = Wire::new(&addr, &kubeconfig, false) {
                    if matches!(http_get(&wire, "/readyz").await, Ok((200, _))) {
                        break;
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} did not answer /readyz in 60 s (log: {})",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // the admin kubeconfig names the server this replica serves on
        let text = std::fs::read_to_string(&kubeconfig)?;
        let mut kc: kube::config::Kubeconfig = serde_yaml::from_str(&text)?;
        for c in &mut kc.clusters {
            if let Some(cluster) = c.cluster.as_mut() {
                cluster.server = Some(format!("https://{addr}"));
            }
        }
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(Server {
            proc,
            config,
            data: dir.to_path_buf(),
        })
    }

    async fn scale_sqlite(&mut self, sz: &ScaleSizes) -> Result<()> {
        let dir = self.o.dir.join("scale-sqlite");
        eprintln!(
            "[harness] scale: a server on SQLite, {} simulated nodes, {} DaemonSets",
            sz.nodes, sz.daemonsets
        );
        let server = self
            .scale_server(&dir, "scale-server", &[], sz.nodes)
            .await?;
        let db = dir.join("state.db");
        let wal = dir.join("state.db-wal");
        let res = self
            .scale_run(
                sz,
                std::slice::from_ref(&server),
                Some((db.as_path(), wal.as_path())),
                "scale",
            )
            .await;
        let locked = std::fs::read_to_string(self.o.dir.join("scale-server.log"))
            .unwrap_or_default()
            .matches("database is locked")
            .count();
        res?;
        let row = self.report.row(
            "  \"database is locked\" in the log",
            locked.to_string(),
            String::new(),
            None,
        );
        row.target("0", locked == 0);
        self.report.json["scale"]["database_locked"] = json!(locked);
        drop(server);
        Ok(())
    }

    /// The section's phases against `servers` (node i talks to server i % len); `sqlite`: the
    /// store's files, for the compressed hour. Reports rows and `json[key]`.
    async fn scale_run(
        &mut self,
        sz: &ScaleSizes,
        servers: &[Server],
        sqlite: Option<(&Path, &Path)>,
        key: &str,
    ) -> Result<()> {
        let n = sz.nodes;
        let d = sz.daemonsets;
        let pids: Vec<u32> = servers.iter().map(|s| s.proc.pid()).collect();
        let samplers: Vec<Sampler> = pids
            .iter()
            .map(|p| Sampler::start(*p, sqlite.map(|(_, w)| w.to_path_buf())))
            .collect();
        let admin = kube::Client::try_from(servers[0].config.clone())?;
        let dss: Api<DaemonSet> = Api::namespaced(admin.clone(), "default");
        let names: Vec<String> = (0..d).map(|i| format!("scale-{i:02}")).collect();
        let v1 = "sim.invalid/pause:v1";
        let v2 = "sim.invalid/pause:v2";
        for nm in &names {
            dss.create(&PostParams::default(), &scale_ds(nm, v1)?)
                .await?;
        }
        let shared = Shared::new(Duration::from_secs(10));
        let configs: Vec<kube::Config> = servers.iter().map(|s| s.config.clone()).collect();
        let kubeconfig = servers[0].data.join("admin.kubeconfig");
        let t0 = Instant::now();
        let cpu0: Vec<f64> = pids.iter().map(|p| cpu_s(*p)).collect();
        let fleet = Fleet::start(
            &configs,
            &kubeconfig,
            "sim",
            n,
            &[format!("{SCALE_LABEL}=yes")],
            shared.clone(),
            Duration::from_secs(600),
        )
        .await?;
        let registered = t0.elapsed();
        eprintln!(
            "[harness] scale: {n} nodes registered in {:.1} s; waiting for {} pods ready",
            registered.as_secs_f64(),
            n * d
        );
        self.wait_pods(&shared, n * d, Duration::from_secs(1200), servers)
            .await
            .context("the fleet's pods")?;
        let up = t0.elapsed();
        let cpu_up = cores_since(&pids, &cpu0, up.as_secs_f64());

        // ---- steady state: Lease renewals only
        eprintln!("[harness] scale: steady state, {:?}", sz.steady);
        shared.record(true);
        let c0: Vec<f64> = pids.iter().map(|p| cpu_s(*p)).collect();
        let w0 = shared.writes.load(Ordering::SeqCst);
        let t_steady = Instant::now();
        tokio::time::sleep(sz.steady).await;
        let steady_s = t_steady.elapsed().as_secs_f64();
        let cpu_steady = cores_since(&pids, &c0, steady_s);
        let steady_writes = shared.writes.load(Ordering::SeqCst) - w0;
        let steady = shared.take();

        // ---- fan-out of a DaemonSet change: its image, maxSurge 100%
        eprintln!(
            "[harness] scale: image update of {} over {n} nodes",
            names[0]
        );
        shared.record(true);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let current = dss.get(&names[0]).await?;
        let generation = current.metadata.generation.unwrap_or(1) + 1;
        shared.track(Some(Tracker {
            ds: names[0].clone(),
            generation,
            image: v2.to_string(),
            tx,
        }));
        let c0: Vec<f64> = pids.iter().map(|p| cpu_s(*p)).collect();
        let t_patch = Instant::now();
        dss.patch(
            &names[0],
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": v2}]}}}})),
        )
        .await?;
        let (mut seen_ds, mut seen_pod) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let deadline = Instant::now() + Duration::from_secs(600);
        while seen_pod.len() < n || seen_ds.len() < n {
            match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                Ok(Some((Seen::DaemonSet, at))) => seen_ds.push(ms(at - t_patch)),
                Ok(Some((Seen::Pod, at))) => seen_pod.push(ms(at - t_patch)),
                _ => bail!(
                    "fan-out: {} of {n} nodes saw the new DaemonSet, {} their new pod in 600 s",
                    seen_ds.len(),
                    seen_pod.len()
                ),
            }
        }
        shared.track(None);
        // the rollout ends with the old pods deleted (finished by their nodes)
        self.wait_pods(&shared, n * d, Duration::from_secs(1200), servers)
            .await
            .context("the rollout's end")?;
        let rollout_s = t_patch.elapsed().as_secs_f64();
        let cpu_rollout = cores_since(&pids, &c0, rollout_s);
        let rollout = shared.take();
        shared.record(false);
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        let new = pods
            .list(&ListParams::default().labels(&format!("app={}", names[0])))
            .await?
            .items
            .iter()
            .filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.image.as_deref())
                    == Some(v2)
            })
            .count();
        if new != n {
            bail!(
                "after the rollout {new} of {n} pods of {} run {v2}",
                names[0]
            );
        }

        // ---- the compressed hour: Lease churn
        let churn = match sqlite {
            Some((db, wal)) => Some(
                self.churn(sz, &shared, pids[0], db, wal, &samplers[0])
                    .await?,
            ),
            None => None,
        };
        for (i, p) in pids.iter().enumerate() {
            if !Path::new(&format!("/proc/{p}")).exists() {
                bail!("scale server {i} died");
            }
        }
        let errors = shared.errors.load(Ordering::SeqCst);
        drop(fleet);

        // ---- report
        let r = &mut self.report;
        let per = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let lease = steady.get("lease").cloned().unwrap_or_default();
        let title = if servers.len() > 1 {
            format!("scale, {} replicas on etcd", servers.len())
        } else {
            "scale, SQLite".to_string()
        };
        r.row(
            &format!("{title}: {n} nodes, {d} DaemonSets: up s"),
            format!("{:.1}", up.as_secs_f64()),
            format!("registered {:.1}", registered.as_secs_f64()),
            None,
        );
        let p99 = pct(&lease, 99.0);
        r.row(
            "  steady: Lease renewal ms p50/p99",
            format!("{:.1}/{:.1}", pct(&lease, 50.0), p99),
            format!("{} writes", lease.len()),
            None,
        )
        .target("p99 <= 100", p99 <= 100.0);
        if servers.len() > 1 {
            for i in 0..servers.len() {
                let (l, a) = (
                    steady
                        .get(&format!("lease@{i}"))
                        .cloned()
                        .unwrap_or_default(),
                    rollout
                        .get(&format!("all@{i}"))
                        .cloned()
                        .unwrap_or_default(),
                );
                let p99 = pct(&l, 99.0).max(pct(&a, 99.0));
                r.row(
                    &format!("    replica {i}: steady / rollout p99 ms"),
                    format!("{:.1} / {:.1}", pct(&l, 99.0), pct(&a, 99.0)),
                    String::new(),
                    None,
                )
                .target("p99 <= 100", p99 <= 100.0);
            }
        }
        let all = rollout.get("all").cloned().unwrap_or_default();
        let status = rollout.get("status").cloned().unwrap_or_default();
        let p99 = pct(&all, 99.0);
        r.row(
            "  rollout: API writes ms p50/p99",
            format!("{:.1}/{:.1}", pct(&all, 50.0), p99),
            format!("status {:.0}/{:.0}", pct(&status, 50.0), pct(&status, 99.0)),
            None,
        )
        .target("p99 <= 100", p99 <= 100.0);
        r.row(
            "  fan-out: DaemonSet seen ms p50/p99",
            format!("{:.0}/{:.0}", pct(&seen_ds, 50.0), pct(&seen_ds, 99.0)),
            String::new(),
            None,
        );
        let p99 = pct(&seen_pod, 99.0);
        r.row(
            "  fan-out: new pod seen ms p50/p99",
            format!("{:.0}/{p99:.0}", pct(&seen_pod, 50.0)),
            format!("rollout done {rollout_s:.1} s"),
            None,
        )
        .target("p99 <= 2000", p99 <= 2000.0);
        let max_cpu = cpu_steady.iter().cloned().fold(0.0, f64::max);
        r.row(
            "  server CPU cores steady",
            per(&cpu_steady),
            format!("up {} rollout {}", per(&cpu_up), per(&cpu_rollout)),
            None,
        )
        .target("<= 1", max_cpu <= 1.0);
        let rss: Vec<f64> = samplers.iter().map(Sampler::rss_mib).collect();
        let max_rss = rss.iter().cloned().fold(0.0, f64::max);
        r.row("  server RSS MiB max", per(&rss), String::new(), None)
            .target("<= 1024", max_rss <= 1024.0);
        r.row(
            "  simulated nodes' API errors",
            errors.to_string(),
            shared.first_errors().first().cloned().unwrap_or_default(),
            None,
        )
        .target("0", errors == 0);
        let mut j = json!({"nodes": n, "daemonsets": d, "up_s": up.as_secs_f64(),
            "registered_s": registered.as_secs_f64(),
            "steady": {"window_s": steady_s, "writes": steady_writes, "lease_ms": lease,
                "cpu_cores": cpu_steady},
            "cpu_cores_up": cpu_up,
            "rollout": {"took_s": rollout_s, "daemonset_seen_ms": seen_ds, "pod_seen_ms": seen_pod,
                "writes_ms": all, "status_ms": status, "cpu_cores": cpu_rollout},
            "server_rss_mib_max": rss, "errors": errors, "first_errors": shared.first_errors()});
        if let Some(c) = churn {
            let grew = c.end_mib > c.start_mib * 2.0 + 64.0;
            r.row(
                "  compressed hour: Lease writes",
                format!("{}", c.writes),
                format!("{:.0}/s in {:.0} s", c.writes as f64 / c.took_s, c.took_s),
                None,
            );
            r.row(
                "    lease ms p50/p99",
                format!(
                    "{:.1}/{:.1}",
                    pct(&c.lease_ms, 50.0),
                    pct(&c.lease_ms, 99.0)
                ),
                String::new(),
                None,
            );
            r.row(
                "    db+wal MiB start -> end",
                format!("{:.1} -> {:.1}", c.start_mib, c.end_mib),
                format!("wal max {:.1}", c.wal_max_mib),
                None,
            )
            .target("bounded", !grew);
            r.row(
                "    server bytes written per write",
                format!("{:.0}", c.write_bytes_per_write),
                format!("wchar {:.0}", c.wchar_per_write),
                None,
            );
            // the hour's samples are too many to keep: their percentiles
            let lease_ms = json!({"n": c.lease_ms.len(), "p50": pct(&c.lease_ms, 50.0),
                "p90": pct(&c.lease_ms, 90.0), "p99": pct(&c.lease_ms, 99.0),
                "max": pct(&c.lease_ms, 100.0)});
            j["churn"] = json!({"writes": c.writes, "took_s": c.took_s, "lease_ms": lease_ms,
                "db_wal_mib_start": c.start_mib, "db_wal_mib_end": c.end_mib,
                "wal_mib_max": c.wal_max_mib, "write_bytes_per_write": c.write_bytes_per_write,
                "wchar_per_write": c.wchar_per_write});
        }
        r.json.insert(key.into(), j);
        // the DaemonSets go with the server (its data directory is the run's)
        Ok(())
    }

    /// Waits until the nodes know `want` pods, all reported ready; checks the servers live.
    async fn wait_pods(
        &self,
        shared: &Shared,
        want: usize,
        timeout: Duration,
        servers: &[Server],
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last_print = Instant::now();
        loop {
            let (live, ready) = (
                shared.live.load(Ordering::SeqCst),
                shared.ready.load(Ordering::SeqCst),
            );
            if live == want && ready == want {
                return Ok(());
            }
            for s in servers {
                if !Path::new(&format!("/proc/{}", s.proc.pid())).exists() {
                    bail!("{} died", s.proc.name);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{live} pods known, {ready} ready of {want} after {timeout:?} (errors: {:?})",
                    shared.first_errors()
                );
            }
            if last_print.elapsed() > Duration::from_secs(10) {
                eprintln!("[harness] scale: {live} pods known, {ready} ready of {want}");
                last_print = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The compressed hour: every node renews its Lease `churn_renewals` times as fast as the
    /// period allows (the hour's 360 renewals in `churn_cap`), stopped at that count or cap.
    async fn churn(
        &self,
        sz: &ScaleSizes,
        shared: &Shared,
        pid: u32,
        db: &Path,
        wal: &Path,
        sampler: &Sampler,
    ) -> Result<Churn> {
        let want = sz.nodes as u64 * sz.churn_renewals;
        let period = sz.churn_cap.div_f64(sz.churn_renewals as f64);
        eprintln!(
            "[harness] scale: compressed hour, {want} Lease renewals (every {period:?} per node, at most {:?})",
            sz.churn_cap
        );
        let start_mib = file_mib(db) + file_mib(wal);
        sampler.max_wal.store(0, Ordering::Relaxed);
        let (wb0, wc0) = io_bytes(pid).unwrap_or((0, 0));
        let w0 = shared.writes.load(Ordering::SeqCst);
        let r0 = shared.renewals.load(Ordering::SeqCst);
        shared.record(true);
        let t0 = Instant::now();
        shared.set_period(period);
        let deadline = t0 + sz.churn_cap;
        while shared.renewals.load(Ordering::SeqCst) - r0 < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shared.set_period(Duration::from_secs(10));
        let took_s = t0.elapsed().as_secs_f64();
        let writes = shared.writes.load(Ordering::SeqCst) - w0;
        let (wb1, wc1) = io_bytes(pid).unwrap_or((0, 0));
        let lease_ms = shared.take().remove("lease").unwrap_or_default();
        shared.record(false);
        let end_mib = file_mib(db) + file_mib(wal);
        let per = writes.max(1) as f64;
        Ok(Churn {
            writes,
            took_s,
            lease_ms,
            start_mib,
            end_mib,
            wal_max_mib: sampler.max_wal.load(Ordering::Relaxed) as f64 / 1048576.0,
            write_bytes_per_write: (wb1 - wb0) as f64 / per,
            wchar_per_write: (wc1 - wc0) as f64 / per,
        })
    }
}

/// What the compressed hour measured.
struct Churn {
    writes: u64,
    took_s: f64,
    lease_ms: Vec<f64>,
    start_mib: f64,
    end_mib: f64,
    wal_max_mib: f64,
    write_bytes_per_write: f64,
    wchar_per_write: f64,
}
