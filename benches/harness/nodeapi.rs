//! The node API benchmark (issue 12, item 5): many concurrent `kubectl logs -f` of one pod on one
//! node, through the server (`pods/log?follow=true`), each its own HTTPS connection reading as
//! kubectl does. The agent's RSS and CPU are measured idle (no stream) and while the streams are
//! open and the container writes ten lines a second (100 streams; 20 in the smoke run).
use super::*;

impl Bench {
    pub(super) async fn nodeapi(&mut self) -> Result<()> {
        let n = if self.o.smoke { 20 } else { 100 };
        let name = "bench-logger";
        let mut ds = daemonset(name, &self.image_v1.clone(), None)?;
        if let Some(c) = ds
            .spec
            .as_mut()
            .and_then(|s| s.template.spec.as_mut())
            .and_then(|s| s.containers.first_mut())
        {
            c.command = Some(vec![
                "sh".into(),
                "-c".into(),
                "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done".into(),
            ]);
        }
        self.running(name, ds).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let pod = loop {
            let (code, body) = http_get(
                &self.wire,
                &format!("/api/v1/namespaces/default/pods?labelSelector=app%3D{name}"),
            )
            .await?;
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            let running = v["items"].as_array().and_then(|items| {
                items
                    .iter()
                    .find(|p| p["status"]["containerStatuses"][0]["state"]["running"].is_object())
            });
            if let (200, Some(p)) = (code, running) {
                break p["metadata"]["name"].as_str().unwrap_or("").to_string();
            }
            if Instant::now() > deadline {
                bail!("nodeapi: the logger pod is not reported running in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        tokio::time::sleep(self.sz.settle).await;
        let pid = self.agent.pid();
        eprintln!(
            "[harness] nodeapi: agent before, {:?}",
            self.sz.footprint_window
        );
        let (rss0, cpu0, _, _) = footprint(pid, self.sz.footprint_window).await?;

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicUsize::new(0));
        let path = format!("/api/v1/namespaces/default/pods/{pod}/log?follow=true&tailLines=1");
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (wire, path) = (self.wire.clone(), path.clone());
            let (stop, started, bytes) = (stop.clone(), started.clone(), bytes.clone());
            tasks.push(tokio::spawn(async move {
                let mut s = wire.connect().await?;
                s.write_all(wire.get(&path, "").as_bytes()).await?;
                let mut buf = vec![0u8; 16 * 1024];
                let mut first = true;
                while !stop.load(Ordering::Relaxed) {
                    let got = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
                    match got {
                        Ok(Ok(0)) => bail!("a log stream ended"),
                        Ok(Ok(k)) => {
                            if first {
                                started.fetch_add(1, Ordering::Relaxed);
                                first = false;
                            }
                            bytes.fetch_add(k, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => return Err(e.into()),
                        Err(_) => bail!("a log stream was silent for 5 s"),
                    }
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while started.load(Ordering::Relaxed) < n {
            if Instant::now() > deadline || tasks.iter().any(|t| t.is_finished()) {
                stop.store(true, Ordering::Relaxed);
                bail!(
                    "nodeapi: {} of {n} log streams started in 60 s",
                    started.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "[harness] nodeapi: agent with {n} logs -f, {:?}",
            self.sz.footprint_window
        );
        let b0 = bytes.load(Ordering::Relaxed);
        let (rss1, cpu1, _, _) = footprint(pid, self.sz.footprint_window).await?;
        let streamed = bytes.load(Ordering::Relaxed) - b0;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await??;
        }
        self.api.delete(name, &DeleteParams::default()).await?;
        let rate = streamed as f64 / self.sz.footprint_window.as_secs_f64() / 1024.0;
        let r = &mut self.report;
        r.row(
            "agent RSS MiB, no logs -f",
            format!("{rss0:.1}"),
            String::new(),
            None,
        );
        r.row(
            &format!("agent RSS MiB, {n} logs -f"),
            format!("{rss1:.1}"),
            format!("+{:.1}", rss1 - rss0),
            None,
        )
        .target("+<= 10", rss1 - rss0 <= 10.0);
        r.row(
            "agent CPU %, no logs -f",
            format!("{cpu0:.2}"),
            String::new(),
            None,
        );
        r.row(
            &format!("agent CPU %, {n} logs -f"),
            format!("{cpu1:.2}"),
            format!("{rate:.1} KiB/s out"),
            None,
        )
        .target("<= 10", cpu1 <= 10.0);
        r.json.insert(
            "nodeapi_logs_follow".into(),
            json!({"streams": n, "window_s": self.sz.footprint_window.as_secs(),
                "rss_mib_before": rss0, "rss_mib_during": rss1,
                "cpu_pct_before": cpu0, "cpu_pct_during": cpu1, "kib_per_s": rate}),
        );
        Ok(())
    }
}
