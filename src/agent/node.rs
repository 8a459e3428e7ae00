//! The agent's Node: the well-known labels it detects, registration (create, or merge its labels
//! and taints into the existing object), status, and the heartbeat Lease in kube-node-lease.
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::agent::clock::Clock;
use crate::agent::config::Config;
use crate::core::status::time;

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const LEASE_SECONDS: i32 = 40;
/// The Lease is renewed this often, as the kubelet does.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
/// The Node's status is posted again every this many renewals (5 min).
pub const STATUS_EVERY_RENEWALS: u64 = 30;
pub const AGENT_VERSION: &str = concat!("daemonset-agent/", env!("CARGO_PKG_VERSION"));

/// Go's name for this architecture, as `kubernetes.io/arch` carries it.
pub use crate::runtime::pull::host_arch as go_arch;

/// The well-known labels plus the configured ones (configured win).
pub fn node_labels(cfg: &Config) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), cfg.node_name.clone()),
        (
            "kubernetes.io/os".to_string(),
            std::env::consts::OS.to_string(),
        ),
        ("kubernetes.io/arch".to_string(), go_arch().to_string()),
    ]);
    labels.extend(cfg.node_labels.clone());
    labels
}

/// The Node as this agent would register it (labels, taints; status filled by `node_status`).
pub fn desired_node(cfg: &Config) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            labels: Some(node_labels(cfg)),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!cfg.node_taints.is_empty()).then(|| cfg.node_taints.clone()),
            ..Default::default()
        }),
        status: None,
    }
}

fn meminfo_bytes() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: i64 = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

pub fn node_status(runtime_version: &str, now_ms: i64) -> NodeStatus {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut capacity = BTreeMap::from([
        ("cpu".to_string(), Quantity(cpus.to_string())),
        ("pods".to_string(), Quantity("110".into())),
    ]);
    if let Some(m) = meminfo_bytes() {
        capacity.insert("memory".into(), Quantity(format!("{}Ki", m / 1024)));
    }
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().to_string())
        .unwrap_or_default();
    let os_image = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into());
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().to_string())
        .unwrap_or_default();
    NodeStatus {
        capacity: Some(capacity.clone()),
        allocatable: Some(capacity),
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("AgentReady".into()),
            message: Some(format!("{AGENT_VERSION} is posting ready status")),
            last_heartbeat_time: Some(time(now_ms)),
            last_transition_time: Some(time(now_ms)),
        }]),
        addresses: Some(vec![k8s_openapi::api::core::v1::NodeAddress {
            type_: "Hostname".into(),
            address: hostname,
        }]),
        node_info: Some(NodeSystemInfo {
            architecture: go_arch().into(),
            operating_system: std::env::consts::OS.into(),
            kernel_version: kernel,
            os_image,
            container_runtime_version: runtime_version.into(),
            kubelet_version: format!("v1.33.0-dsa.{}", env!("CARGO_PKG_VERSION")),
            kube_proxy_version: String::new(),
            machine_id: std::fs::read_to_string("/etc/machine-id")
                .unwrap_or_default()
                .trim()
                .into(),
            system_uuid: String::new(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .unwrap_or_default()
                .trim()
                .into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates the Node, or merges this agent's labels and taints into the one that exists (labels
/// set through the API stay), then posts its status. Returns the Node as stored.
pub async fn register(api: &Api<Node>, cfg: &Config, status: NodeStatus) -> kube::Result<Node> {
    let want = desired_node(cfg);
    let node = match api.get_opt(&cfg.node_name).await? {
        None => match api.create(&PostParams::default(), &want).await {
            Ok(n) => n,
            Err(kube::Error::Api(e)) if e.code == 409 => api.get(&cfg.node_name).await?,
            Err(e) => return Err(e),
        },
        Some(existing) => existing,
    };
    let mut taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut changed = false;
    for t in &cfg.node_taints {
        if !taints
            .iter()
            .any(|x| x.key == t.key && x.effect == t.effect)
        {
            taints.push(t.clone());
            changed = true;
        }
    }
    let labels = node_labels(cfg);
    let have = node.metadata.labels.clone().unwrap_or_default();
    changed |= labels.iter().any(|(k, v)| have.get(k) != Some(v));
    if changed {
        let patch = serde_json::json!({
            "metadata": {"labels": labels},
            "spec": {"taints": taints},
        });
        api.patch(
            &cfg.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        &cfg.node_name,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
}

/// Renews (or creates) the node's Lease, as the kubelet does every 10 s.
pub async fn renew_lease(api: &Api<Lease>, node: &str, now_ms: i64) -> kube::Result<()> {
    let now = MicroTime(time(now_ms).0);
    let patch = serde_json::json!({
        "spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now}
    });
    match api
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.into()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.into()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Registers the Node (retrying with back-off until the API answers), then renews its Lease every
/// `RENEW_EVERY` and re-posts its status every 5 min; times come from `clock`.
pub async fn heartbeat(client: kube::Client, cfg: Config, runtime_version: String, clock: Clock) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let mut delay = Duration::from_millis(200);
    loop {
        let status = node_status(&runtime_version, clock.now_ms());
        match register(&nodes, &cfg, status).await {
            Ok(_) => {
                log::info!(node = cfg.node_name.as_str(); "node registered");
                break;
            }
            Err(e) => {
                log::warn!(node = cfg.node_name.as_str(), error = e.to_string(); "node registration failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    let mut tick = tokio::time::interval(RENEW_EVERY);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        if let Err(e) = renew_lease(&leases, &cfg.node_name, clock.now_ms()).await {
            log::debug!(error = e.to_string(); "lease renewal failed");
        }
        if n.is_multiple_of(STATUS_EVERY_RENEWALS) {
            let status = node_status(&runtime_version, clock.now_ms());
            if let Err(e) = register(&nodes, &cfg, status).await {
                log::debug!(error = e.to_string(); "node status update failed");
            }
        }
    }
}
