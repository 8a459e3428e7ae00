//! What the node and its pods use, as the kubelet reports it: `/stats/summary` (its
//! `statsapi.Summary`: CPU, memory and working set of the node, each pod and each running
//! container; the containers' log files as their `logs` filesystem use) and `/metrics/resource`
//! (Prometheus text with the kubelet's metric names, which the server's metrics.k8s.io scrapes
//! twice for a CPU rate, as metrics-server does).
//!
//! One [`Sample`] is taken per request (a few small cgroup and /proc files per container, on a
//! blocking thread) and rendered by pure functions; each container's `rootfs` (its writable
//! layer: the snapshotter's usage of the container's snapshot) is added from containerd after.
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::agent::localapi::PodsView;
use crate::metrics::{proc_field as meminfo_kib, Kind, Text};
use crate::runtime::cgroup;

/// One running container's usage.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSample {
    pub name: String,
    /// containerd's id (its snapshot's key).
    pub id: String,
    pub started: Option<DateTime<Utc>>,
    pub usage: cgroup::Usage,
    pub log_bytes: u64,
    /// The writable layer: (bytes, inodes).
    pub rootfs: Option<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodSample {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub started: Option<DateTime<Utc>>,
    pub containers: Vec<ContainerSample>,
}

/// The node's usage from /proc.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeSample {
    pub cpu_ns: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub working_set_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub node: String,
    pub at: DateTime<Utc>,
    pub usage: NodeSample,
    pub pods: Vec<PodSample>,
}

/// Busy CPU time of the machine (user, nice, system, irq, softirq, steal) in nanoseconds, from
/// the `cpu` line of /proc/stat in ticks of `hz`.
fn proc_stat_cpu_ns(text: &str, hz: u64) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| f.get(*i))
        .sum::<u64>();
    Some(busy.saturating_mul(1_000_000_000) / hz.max(1))
}

fn node_sample() -> NodeSample {
    // SAFETY: sysconf with a valid name has no side effects.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = meminfo_kib(&mem, "MemTotal").map(|k| k * 1024);
    let free = meminfo_kib(&mem, "MemFree").map(|k| k * 1024);
    let available = meminfo_kib(&mem, "MemAvailable").map(|k| k * 1024);
    NodeSample {
        cpu_ns: proc_stat_cpu_ns(&stat, hz),
        memory_bytes: total.zip(free).map(|(t, f)| t.saturating_sub(f)),
        working_set_bytes: total.zip(available).map(|(t, a)| t.saturating_sub(a)),
        available_bytes: available,
    }
}

fn time(s: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<DateTime<Utc>> {
    let t = s.as_ref()?.0;
    DateTime::from_timestamp(
        t.as_second(),
        u32::try_from(t.subsec_nanosecond()).unwrap_or(0),
    )
}

/// The node's and its running containers' usage now. Blocking.
pub fn sample(
    node: &str,
    containerd_namespace: &str,
    state_dir: &std::path::Path,
    pods: &PodsView,
) -> Sample {
    let reported: Vec<_> = pods
        .lock()
        .map(|p| p.values().cloned().collect())
        .unwrap_or_default();
    let pods = reported
        .into_iter()
        .map(|r| {
            let containers = r
                .status
                .container_statuses
                .iter()
                .flatten()
                .filter_map(|c| {
                    let running = c.state.as_ref()?.running.as_ref()?;
                    let id = c
                        .container_id
                        .as_deref()?
                        .trim_start_matches("containerd://");
                    let restarts = u32::try_from(c.restart_count).unwrap_or_default();
                    let log = crate::logdriver::log_path(
                        state_dir, &r.pod.key, &r.pod.uid, &c.name, restarts,
                    );
                    Some(ContainerSample {
                        name: c.name.clone(),
                        id: id.to_string(),
                        started: time(&running.started_at),
                        usage: cgroup::usage(containerd_namespace, id),
                        log_bytes: std::fs::metadata(log).map(|m| m.len()).unwrap_or(0),
                        rootfs: None,
                    })
                })
                .collect();
            PodSample {
                namespace: r.pod.key.namespace.clone(),
                name: r.pod.key.name.clone(),
                uid: r.pod.api_uid.clone(),
                started: time(&r.status.start_time),
                containers,
            }
        })
        .collect();
    Sample {
        node: node.to_string(),
        at: Utc::now(),
        usage: node_sample(),
        pods,
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn cpu_json(at: &str, ns: Option<u64>) -> Value {
    json!({"time": at, "usageCoreNanoSeconds": ns})
}

fn memory_json(at: &str, usage: Option<u64>, working_set: Option<u64>) -> Value {
    json!({"time": at, "usageBytes": usage, "workingSetBytes": working_set})
}

fn sum(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    values.fold(None, |acc, v| match (acc, v) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    })
}

/// The kubelet's `/stats/summary`.
pub fn summary(s: &Sample) -> Value {
    let at = rfc3339(s.at);
    let pods: Vec<Value> = s
        .pods
        .iter()
        .map(|p| {
            let containers: Vec<Value> = p
                .containers
                .iter()
                .map(|c| {
                    let mut v = json!({
                        "name": c.name,
                        "startTime": c.started.map(rfc3339),
                        "cpu": cpu_json(&at, c.usage.cpu_ns),
                        "memory": memory_json(&at, c.usage.memory_bytes, c.usage.working_set_bytes),
                        "logs": {"time": at, "usedBytes": c.log_bytes},
                    });
                    if let Some((bytes, inodes)) = c.rootfs {
                        v["rootfs"] = json!({"time": at, "usedBytes": bytes, "inodesUsed": inodes});
                    }
                    v
                })
                .collect();
            let cs = &p.containers;
            json!({
                "podRef": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
                "startTime": p.started.map(rfc3339),
                "containers": containers,
                "cpu": cpu_json(&at, sum(cs.iter().map(|c| c.usage.cpu_ns))),
                "memory": memory_json(
                    &at,
                    sum(cs.iter().map(|c| c.usage.memory_bytes)),
                    sum(cs.iter().map(|c| c.usage.working_set_bytes)),
                ),
            })
        })
        .collect();
    let n = &s.usage;
    let mut memory = memory_json(&at, n.memory_bytes, n.working_set_bytes);
    memory["availableBytes"] = json!(n.available_bytes);
    json!({
        "node": {"nodeName": s.node, "cpu": cpu_json(&at, n.cpu_ns), "memory": memory},
        "pods": pods,
    })
}

/// The kubelet's `/metrics/resource`.
pub fn resource_metrics(s: &Sample) -> String {
    let ts = s.at.timestamp_millis();
    let mut t = Text::new();
    let mut family = |name: &str, help: &str, kind: Kind, rows: Vec<(Vec<(&str, &str)>, f64)>| {
        t.family(name, &format!("[STABLE] {help}"), kind);
        for (labels, v) in rows {
            t.sample_at(name, &labels, v, ts);
        }
    };
    let secs = |ns: u64| ns as f64 / 1e9;
    let containers = || {
        s.pods.iter().flat_map(|p| {
            p.containers.iter().map(move |c| {
                let l = vec![
                    ("container", c.name.as_str()),
                    ("namespace", p.namespace.as_str()),
                    ("pod", p.name.as_str()),
                ];
                (l, c)
            })
        })
    };
    let pods = || {
        s.pods.iter().map(|p| {
            let l = vec![
                ("namespace", p.namespace.as_str()),
                ("pod", p.name.as_str()),
            ];
            (l, p)
        })
    };
    family(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        Kind::Counter,
        containers()
            .filter_map(|(l, c)| Some((l, secs(c.usage.cpu_ns?))))
            .collect(),
    );
    family(
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        Kind::Gauge,
        containers()
            .filter_map(|(l, c)| Some((l, c.usage.working_set_bytes? as f64)))
            .collect(),
    );
    family(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        Kind::Gauge,
        containers()
            .filter_map(|(l, c)| Some((l, c.started?.timestamp() as f64)))
            .collect(),
    );
    family(
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        Kind::Counter,
        s.usage
            .cpu_ns
            .map(|n| (vec![], secs(n)))
            .into_iter()
            .collect(),
    );
    family(
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        Kind::Gauge,
        s.usage
            .working_set_bytes
            .map(|n| (vec![], n as f64))
            .into_iter()
            .collect(),
    );
    family(
        "pod_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the pod in core-seconds",
        Kind::Counter,
        pods()
            .filter_map(|(l, p)| Some((l, secs(sum(p.containers.iter().map(|c| c.usage.cpu_ns))?))))
            .collect(),
    );
    family(
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        Kind::Gauge,
        pods()
            .filter_map(|(l, p)| {
                Some((
                    l,
                    sum(p.containers.iter().map(|c| c.usage.working_set_bytes))? as f64,
                ))
            })
            .collect(),
    );
    t.family(
        "scrape_error",
        "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise",
        Kind::Gauge,
    )
    .sample("scrape_error", &[], 0.0);
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample {
        Sample {
            node: "n1".into(),
            at: DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            usage: NodeSample {
                cpu_ns: Some(5_000_000_000),
                memory_bytes: Some(300),
                working_set_bytes: Some(200),
                available_bytes: Some(100),
            },
            pods: vec![PodSample {
                namespace: "default".into(),
                name: "p".into(),
                uid: "u".into(),
                started: None,
                containers: vec![
                    ContainerSample {
                        name: "a".into(),
                        id: "ida".into(),
                        started: None,
                        usage: cgroup::Usage {
                            cpu_ns: Some(1_500_000_000),
                            memory_bytes: Some(20),
                            working_set_bytes: Some(10),
                        },
                        log_bytes: 7,
                        rootfs: Some((4096, 3)),
                    },
                    ContainerSample {
                        name: "b".into(),
                        id: "idb".into(),
                        started: None,
                        usage: cgroup::Usage {
                            cpu_ns: Some(500_000_000),
                            memory_bytes: None,
                            working_set_bytes: Some(5),
                        },
                        log_bytes: 0,
                        rootfs: None,
                    },
                ],
            }],
        }
    }

    #[test]
    fn the_summary_adds_containers_up_per_pod() {
        let v = summary(&sample());
        assert_eq!(v["node"]["cpu"]["usageCoreNanoSeconds"], 5_000_000_000u64);
        assert_eq!(v["node"]["memory"]["availableBytes"], 100);
        let pod = &v["pods"][0];
        assert_eq!(pod["podRef"]["uid"], "u");
        assert_eq!(pod["cpu"]["usageCoreNanoSeconds"], 2_000_000_000u64);
        assert_eq!(pod["memory"]["workingSetBytes"], 15);
        assert_eq!(pod["memory"]["usageBytes"], 20);
        assert_eq!(pod["containers"][0]["logs"]["usedBytes"], 7);
        assert_eq!(pod["containers"][0]["rootfs"]["usedBytes"], 4096);
        assert_eq!(pod["containers"][0]["rootfs"]["inodesUsed"], 3);
        // not told: not there (the kubelet leaves out what it does not know)
        assert!(pod["containers"][1].get("rootfs").is_none());
    }

    #[test]
    fn resource_metrics_use_the_kubelets_names() {
        let text = resource_metrics(&sample());
        let ts = 1_795_687_200_000i64;
        for line in [
            format!("container_cpu_usage_seconds_total{{container=\"a\",namespace=\"default\",pod=\"p\"}} 1.5 {ts}"),
            format!("container_memory_working_set_bytes{{container=\"b\",namespace=\"default\",pod=\"p\"}} 5 {ts}"),
            format!("node_cpu_usage_seconds_total 5 {ts}"),
            format!("node_memory_working_set_bytes 200 {ts}"),
            format!("pod_cpu_usage_seconds_total{{namespace=\"default\",pod=\"p\"}} 2 {ts}"),
            format!("pod_memory_working_set_bytes{{namespace=\"default\",pod=\"p\"}} 15 {ts}"),
            "# TYPE container_cpu_usage_seconds_total counter".to_string(),
            "scrape_error 0".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn proc_files_read() {
        let stat = "cpu  100 20 30 1000 50 6 4 0 0 0\ncpu0 1 2 3\n";
        // busy = 100+20+30+6+4+0 = 160 ticks of 10 ms
        assert_eq!(proc_stat_cpu_ns(stat, 100), Some(1_600_000_000));
        let mem = "MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    600 kB\n";
        assert_eq!(meminfo_kib(mem, "MemTotal"), Some(1000));
        assert_eq!(meminfo_kib(mem, "MemAvailable"), Some(600));
    }
}
