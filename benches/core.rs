//! Benchmarks of the pure core: eligibility of many DaemonSets against one node, quantity
//! parsing, template hashing, the reconcile plan of a node with 100 pods, the DaemonSet
//! controller's decisions over 1000 nodes. `cargo bench --bench core -- --test` runs each once (smoke mode).
use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use daemonset_agent::core::eligibility::node_should_run;
use daemonset_agent::core::hash::template_hash;
use daemonset_agent::core::plan::{self, DesiredPod, Observed, State};
use daemonset_agent::core::quantity::Quantity;
use daemonset_agent::core::rollout::{self, DaemonPod, FailedBackoff, NodeFit, Phase};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, PodTemplateSpec};
use serde_json::{json, Value};

/// A worker node with 20 labels and 2 taints.
fn node() -> Node {
    let mut labels = serde_json::Map::new();
    for (k, v) in [
        ("kubernetes.io/hostname", "worker-17"),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("node-role.kubernetes.io/worker", "true"),
        ("topology.kubernetes.io/region", "eu-west"),
        ("topology.kubernetes.io/zone", "eu-west-1b"),
        ("node.kubernetes.io/instance-type", "m5.2xlarge"),
        ("cpus", "8"),
        ("memory-gib", "32"),
        ("disk", "ssd"),
        ("gpu", "none"),
        ("rack", "r12"),
        ("team", "platform"),
        ("env", "prod"),
        ("tier", "general"),
        ("kernel", "6-1"),
        ("distro", "debian"),
        ("monitoring", "enabled"),
        ("logging", "enabled"),
        ("generation", "3"),
    ] {
        labels.insert(k.to_string(), Value::String(v.to_string()));
    }
    serde_json::from_value(json!({
        "metadata": {"name": "worker-17", "labels": labels},
        "spec": {"taints": [
            {"key": "dedicated", "value": "infra", "effect": "NoSchedule"},
            {"key": "maintenance", "effect": "NoExecute"},
        ]},
    }))
    .expect("valid node")
}

fn expr(key: &str, op: &str, values: &[&str]) -> Value {
    json!({"key": key, "operator": op, "values": values})
}

/// The `i`-th DaemonSet of a mix: node selectors, affinity of every operator, tolerations.
fn daemonset(i: usize) -> DaemonSet {
    let mut spec =
        json!({"containers": [{"name": "c", "image": format!("registry.local/agent-{i}:1.0")}]});
    match i % 5 {
        0 => {
            spec["nodeSelector"] =
                json!({"kubernetes.io/os": "linux", "node-role.kubernetes.io/worker": "true"})
        }
        1 => {
            spec["nodeSelector"] = json!({"disk": if i.is_multiple_of(2) { "ssd" } else { "hdd" }})
        }
        2 => {
            spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [expr("gpu", "In", &["a100", "h100"])]},
                {"matchExpressions": [
                    expr("node-role.kubernetes.io/worker", "In", &["true"]),
                    expr("cpus", "Gt", &["4"]),
                    expr("team", "NotIn", &["ml", "data"]),
                ]},
            ]}}})
        }
        3 => {
            spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [expr("edge", "DoesNotExist", &[]), expr("memory-gib", "Lt", &["64"])],
                 "matchFields": [expr("metadata.name", "NotIn", &["worker-3"])]},
            ]}}})
        }
        _ => {}
    }
    match i % 3 {
        0 => spec["tolerations"] = json!([{"operator": "Exists"}]),
        1 => {
            spec["tolerations"] = json!([
                {"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"},
                {"key": "maintenance", "operator": "Exists"},
            ])
        }
        _ => spec["tolerations"] = json!([{"key": "dedicated", "operator": "Exists"}]),
    }
    serde_json::from_value(json!({
        "metadata": {"name": format!("ds-{i}"), "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": format!("ds-{i}")}},
            "template": {"metadata": {"labels": {"app": format!("ds-{i}")}}, "spec": spec},
        },
    }))
    .expect("valid daemonset")
}

fn template() -> PodTemplateSpec {
    serde_json::from_value(json!({
        "metadata": {"labels": {"app": "node-exporter", "team": "platform"},
                     "annotations": {"prometheus.io/scrape": "true"}},
        "spec": {
            "hostNetwork": true,
            "hostPID": true,
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "node-exporter",
                "image": "quay.io/prometheus/node-exporter:v1.8.2",
                "args": ["--path.procfs=/host/proc", "--path.sysfs=/host/sys", "--path.rootfs=/host/root"],
                "ports": [{"name": "metrics", "containerPort": 9100, "hostPort": 9100}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                              "limits": {"cpu": "250m", "memory": "180Mi"}},
                "securityContext": {"readOnlyRootFilesystem": true, "runAsUser": 65534},
                "volumeMounts": [
                    {"name": "proc", "mountPath": "/host/proc", "readOnly": true},
                    {"name": "sys", "mountPath": "/host/sys", "readOnly": true},
                    {"name": "root", "mountPath": "/host/root", "readOnly": true},
                ],
                "livenessProbe": {"httpGet": {"path": "/", "port": 9100}, "periodSeconds": 10},
            }],
            "volumes": [
                {"name": "proc", "hostPath": {"path": "/proc"}},
                {"name": "sys", "hostPath": {"path": "/sys"}},
                {"name": "root", "hostPath": {"path": "/"}},
            ],
        },
    }))
    .expect("valid template")
}

const QUANTITIES: &[&str] = &[
    "100m",
    "250m",
    "1",
    "1.5",
    "2",
    "64Mi",
    "180Mi",
    "1Gi",
    "1.5Gi",
    "512Ki",
    "1e3",
    "2k",
    "500M",
    "0.1",
    "10G",
    "100.035Ki",
    "3Ei",
    "1E-3",
    "12345678901234567890",
    "0.000000001",
];

fn benches(c: &mut Criterion) {
    let node = node();
    let daemonsets: Vec<DaemonSet> = (0..1000).map(daemonset).collect();
    let running = daemonsets
        .iter()
        .filter(|ds| node_should_run(&node, ds).should_run)
        .count();
    assert!(
        0 < running && running < daemonsets.len(),
        "the mix should both run and not run ({running})"
    );
    c.bench_function("eligibility/1000 daemonsets x 1 node", |b| {
        b.iter(|| {
            daemonsets
                .iter()
                .filter(|ds| node_should_run(black_box(&node), ds).should_run)
                .count()
        })
    });

    c.bench_function("quantity/parse 20 mixed", |b| {
        b.iter(|| {
            QUANTITIES
                .iter()
                .map(|s| {
                    Quantity::parse(black_box(s))
                        .map(|q| q.milli_value())
                        .unwrap_or(0)
                })
                .fold(0i64, i64::wrapping_add)
        })
    });

    let template = template();
    c.bench_function("hash/template_hash node-exporter", |b| {
        b.iter(|| template_hash(black_box(&template), black_box(Some(1))))
    });
}

/// The agent's round on a node with 100 pods: the desired pods of the 100 Pods bound to it (the
/// pods of 100 eligible DaemonSets), then each pod's plan against what containerd reported
/// (steady state: 90 running; 5 exited, to be restarted; 5 not created yet).
fn plan_benches(c: &mut Criterion) {
    let node = node();
    let pods: Vec<Pod> = (0..1000)
        .map(daemonset)
        .filter(|ds| node_should_run(&node, ds).should_run)
        .take(100)
        .enumerate()
        .map(|(i, ds)| {
            let template = ds.spec.unwrap().template;
            serde_json::from_value(json!({
                "metadata": {"name": format!("agent-{i}-x7k2p"), "namespace": "default",
                    "uid": format!("00000000-0000-0000-0000-{i:012}"),
                    "labels": template.metadata.and_then(|m| m.labels),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                        "name": format!("agent-{i}"), "uid": format!("ds-{i}"), "controller": true}]},
                "spec": template.spec,
            }))
            .unwrap()
        })
        .collect();
    assert_eq!(pods.len(), 100, "100 eligible DaemonSets");
    let now = 1_700_000_000_000;
    let observed: Vec<Vec<Observed>> = (0..100)
        .map(|i| match i % 20 {
            0 => vec![],
            1 => vec![Observed {
                id: format!("c{i}"),
                name: "c".into(),
                restart_count: 2,
                state: State::Exited {
                    code: 1,
                    at_ms: Some(now - 60_000),
                },
                created_ms: now - 120_000,
            }],
            _ => vec![Observed {
                id: format!("c{i}"),
                name: "c".into(),
                restart_count: 0,
                state: State::Running,
                created_ms: now - 600_000,
            }],
        })
        .collect();
    let backoff = BTreeMap::new();
    c.bench_function("plan/bound pods + pod plans, 100 pods", |b| {
        b.iter(|| {
            pods.iter()
                .filter_map(|p| DesiredPod::from_api(black_box(p)))
                .zip(&observed)
                .map(|(d, o)| plan::plan_pod(d.want(now), o, &backoff, now).actions.len())
                .sum::<usize>()
        })
    });
}

/// The DaemonSet controller's decisions for one DaemonSet over 1000 nodes, mid-rollout: half
/// the pods of the old revision, a few nodes without a pod.
fn rollout_benches(c: &mut Criterion) {
    let now = 1_700_000_000_000;
    let nodes: Vec<NodeFit> = (0..1000)
        .map(|i| NodeFit {
            name: format!("node-{i:04}"),
            should_run: i % 10 != 9,
            should_continue_running: i % 10 != 9,
            ready: true,
        })
        .collect();
    let pods: Vec<DaemonPod> = (0..1000)
        .filter(|i| i % 50 != 0)
        .map(|i| DaemonPod {
            name: format!("mon-{i:05}"),
            node: format!("node-{i:04}"),
            hash: if i % 2 == 0 { "new" } else { "old" }.into(),
            created_ms: now - 3_600_000 + i,
            phase: Phase::Running,
            deleting: false,
            ready: true,
            ready_since_ms: Some(now - 60_000),
            next: Some(rollout::NextRevision {
                hash: "new".into(),
                pulled: true,
                error: String::new(),
            }),
            problem: None,
            pull_next: Some("new".into()),
        })
        .collect();
    let strategy = serde_json::from_value(
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}),
    )
    .unwrap();
    c.bench_function("rollout/manage + rolling update, 1000 nodes", |b| {
        b.iter(|| {
            let m = rollout::manage(
                black_box(&nodes),
                &pods,
                &FailedBackoff::default(),
                now,
                None,
            );
            let d = rollout::rolling_update(Some(&strategy), 0, &nodes, &pods, "new", now);
            m.create_on.len() + m.delete.len() + d.delete.len()
        })
    });
}

criterion_group!(core_benches, benches, plan_benches, rollout_benches);
criterion_main!(core_benches);
