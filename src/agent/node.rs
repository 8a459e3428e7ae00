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
                tracing::info!(node = cfg.node_name.as_str(), "node registered");
                break;
            }
            Err(e) => {
                tracing::warn!(node = cfg.node_name.as_str(), error = %crate::runtime::chain(&e), "node registration failed; retrying");
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
            tracing::debug!(error = %crate::runtime::chain(&e), "lease renewal failed");
        }
        if n.is_multiple_of(STATUS_EVERY_RENEWALS) {
            let status = node_status(&runtime_version, clock.now_ms());
            if let Err(e) = register(&nodes, &cfg, status).await {
                tracing::debug!(error = %crate::runtime::chain(&e), "node status update failed");
            }
        }
    }
}

/// Against the real API server of this crate, in-process (`agent::test_api`).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::{self, FileConfig, Flags};
    use crate::agent::test_api;

    /// 2001-09-09T01:46:40Z: no test machine's clock shows it, so a time carrying it came from the
    /// injected clock.
    const LONG_AGO_MS: i64 = 1_000_000_000_000;

    fn cfg(labels: &[&str], taints: &[&str]) -> Config {
        let flags = Flags {
            node_name: Some("node-t".into()),
            node_labels: labels.iter().map(|s| s.to_string()).collect(),
            node_taints: taints.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        config::merge(FileConfig::default(), &flags, "host").unwrap()
    }

    fn taint_keys(n: &Node) -> Vec<String> {
        let mut keys: Vec<String> = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.key)
            .collect();
        keys.sort();
        keys
    }

    #[tokio::test]
    async fn register_creates_the_node_then_merges_into_it() {
        let api = test_api::start().await;
        let nodes: Api<Node> = Api::all(api.client.clone());
        let first = cfg(&["role=worker"], &["dedicated=infra:NoSchedule"]);
        let n = register(&nodes, &first, node_status("containerd://1.6", LONG_AGO_MS))
            .await
            .unwrap();
        let labels = n.metadata.labels.clone().unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "node-t");
        assert_eq!(labels["kubernetes.io/arch"], go_arch());
        assert_eq!(labels["role"], "worker");
        assert_eq!(taint_keys(&n), ["dedicated"]);
        let ready = &n.status.as_ref().unwrap().conditions.as_ref().unwrap()[0];
        assert_eq!(ready.type_, "Ready");
        assert_eq!(
            ready
                .last_heartbeat_time
                .as_ref()
                .unwrap()
                .0
                .as_millisecond(),
            LONG_AGO_MS
        );

        // a label set through the API stays; what the configuration adds is merged, once
        let extra = serde_json::json!({"metadata": {"labels": {"extra": "yes"}}});
        nodes
            .patch("node-t", &PatchParams::default(), &Patch::Merge(&extra))
            .await
            .unwrap();
        let second = cfg(
            &["role=worker", "zone=a"],
            &["dedicated=infra:NoSchedule", "gpu=true:NoExecute"],
        );
        register(
            &nodes,
            &second,
            node_status("containerd://1.6", LONG_AGO_MS),
        )
        .await
        .unwrap();
        let n = nodes.get("node-t").await.unwrap();
        let labels = n.metadata.labels.clone().unwrap();
        assert_eq!(
            (labels["extra"].as_str(), labels["zone"].as_str()),
            ("yes", "a")
        );
        assert_eq!(taint_keys(&n), ["dedicated", "gpu"]);
    }

    /// The heartbeat registers the Node and creates its Lease at once, both stamped by the
    /// injected clock.
    #[tokio::test]
    async fn the_heartbeat_registers_and_renews_the_lease_on_the_clock() {
        let api = test_api::start().await;
        let clock = Clock::starting_at(LONG_AGO_MS);
        let task = tokio::spawn(heartbeat(
            api.client.clone(),
            cfg(&[], &[]),
            "containerd://1.6".into(),
            clock,
        ));
        let leases: Api<Lease> = Api::namespaced(api.client.clone(), LEASE_NAMESPACE);
        let lease = test_api::until(&leases, "node-t", "the lease", |l: Option<&Lease>| {
            l.is_some()
        })
        .await
        .unwrap();
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("node-t"));
        assert_eq!(spec.lease_duration_seconds, Some(LEASE_SECONDS));
        let renewed = spec.renew_time.unwrap().0.as_millisecond();
        assert!(
            (LONG_AGO_MS..LONG_AGO_MS + 20_000).contains(&renewed),
            "{renewed}"
        );
        let nodes: Api<Node> = Api::all(api.client.clone());
        let n = nodes.get("node-t").await.unwrap();
        let ready = &n.status.unwrap().conditions.unwrap()[0];
        let beat = ready
            .last_heartbeat_time
            .as_ref()
            .unwrap()
            .0
            .as_millisecond();
        assert!((LONG_AGO_MS..=renewed).contains(&beat), "{beat}");
        task.abort();
        api.server.shutdown().await;
    }
}
