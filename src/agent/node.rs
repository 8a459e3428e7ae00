//! The agent's Node: the well-known labels it detects, registration (create, or merge its labels
//! and taints into the existing object), status, and the heartbeat Lease in kube-node-lease.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::agent::clock::Clock;
use crate::agent::config::Config;
use crate::agent::servers::Servers;
use crate::core::status::time;

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The Node's status is posted again this often even when nothing changed (the kubelet's
/// nodeStatusReportFrequency).
pub const STATUS_EVERY: Duration = Duration::from_secs(300);

/// The Lease is renewed every quarter of its duration, as the kubelet does (10 s of 40 s).
pub fn renew_every(cfg: &Config) -> Duration {
    Duration::from_millis(u64::from(cfg.node_lease_duration_seconds) * 250)
}
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
    let patch = serde_json::json!({ "status": with_node_api(status, cfg) });
    api.patch_status(
        &cfg.node_name,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
}

/// Where the server dials the node API (`agent::nodeapi`): `status.daemonEndpoints
/// .kubeletEndpoint.Port`, and an `InternalIP` address first in `status.addresses` (the listen
/// address, or the host's address when it listens on all of them).
fn with_node_api(mut status: NodeStatus, cfg: &Config) -> NodeStatus {
    use k8s_openapi::api::core::v1::{DaemonEndpoint, NodeAddress, NodeDaemonEndpoints};
    let listen = cfg.node_api_listen;
    let ip = if listen.ip().is_unspecified() {
        crate::runtime::cni::host_ip()
    } else {
        Some(listen.ip().to_string())
    };
    let mut addresses: Vec<NodeAddress> = ip
        .map(|address| NodeAddress {
            type_: "InternalIP".into(),
            address,
        })
        .into_iter()
        .collect();
    addresses.extend(status.addresses.take().unwrap_or_default());
    status.addresses = Some(addresses);
    status.daemon_endpoints = Some(NodeDaemonEndpoints {
        kubelet_endpoint: Some(DaemonEndpoint {
            port: i32::from(listen.port()),
        }),
    });
    status
}

/// Renews (or creates) the node's Lease, as the kubelet does every quarter of its duration.
pub async fn renew_lease(
    api: &Api<Lease>,
    node: &str,
    duration_seconds: u32,
    now_ms: i64,
) -> kube::Result<()> {
    let now = MicroTime(time(now_ms).0);
    let seconds = i32::try_from(duration_seconds).unwrap_or(i32::MAX);
    let patch = serde_json::json!({
        "spec": {"holderIdentity": node, "leaseDurationSeconds": seconds, "renewTime": now}
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
                    lease_duration_seconds: Some(seconds),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// The Node's Ready condition is not the one this agent posts (True, `AgentReady`): the
/// node-lifecycle controller marked it Unknown while the agent was silent, or someone else wrote
/// it. The kubelet posts its status at once when the API's differs from its own; so does the agent.
pub fn status_differs(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    !ready.is_some_and(|c| c.status == "True" && c.reason.as_deref() == Some("AgentReady"))
}

/// Registers the Node (creating it, or merging this agent's labels and taints), retrying with
/// back-off until the API answers.
async fn register_until_done(
    nodes: &Api<Node>,
    cfg: &Config,
    runtime_version: &str,
    clock: &Clock,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        let status = node_status(runtime_version, clock.now_ms());
        match register(nodes, cfg, status).await {
            Ok(_) => {
                tracing::info!(node = cfg.node_name.as_str(), "node registered");
                return;
            }
            Err(e) => {
                tracing::warn!(node = cfg.node_name.as_str(), error = %crate::runtime::chain(&e), "node registration failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Registers the Node, then renews its Lease every quarter of its duration and re-posts its
/// status every 5 min; times come from `clock`. It also watches its own Node: deleted (`kubectl
/// delete node`), the Node is registered again at once (labels and taints from the
/// configuration; the pods keep running, nothing restarts); a Ready condition not the agent's
/// (Unknown after a silence) gets the agent's status posted at once. The Lease duration is the
/// one the agent started with (a SIGHUP reload does not change it).
///
/// With several `servers`, a renewal that does not answer within the renewal period, or fails
/// in transport or with a 5xx, gives the server up: the agent fails over to the next one within
/// a heartbeat period, also from a server that went silent without resetting its connections.
pub async fn heartbeat(
    client: kube::Client,
    servers: Option<Arc<Servers>>,
    cfg: Config,
    runtime_version: String,
    clock: Clock,
) {
    use futures::StreamExt as _;
    use kube::runtime::watcher::{self, Event};
    use kube::runtime::WatchStreamExt as _;

    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    register_until_done(&nodes, &cfg, &runtime_version, &clock).await;
    let by_name = format!("metadata.name={}", cfg.node_name);
    let own = watcher::watcher(nodes.clone(), watcher::Config::default().fields(&by_name))
        .default_backoff();
    let mut own = std::pin::pin!(own);
    // a relist that no longer holds the Node: it was deleted while the watch was away
    let mut listed_it = false;
    let mut watching = true;
    let mut tick = tokio::time::interval(renew_every(&cfg));
    let status_every = (STATUS_EVERY.as_millis() / renew_every(&cfg).as_millis()).max(1) as u64;
    // a frozen agent (SIGSTOP) renews once when it thaws, not once per missed period
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        let post_status = tokio::select! {
            _ = tick.tick() => {
                n += 1;
                let duration = cfg.node_lease_duration_seconds;
                let used = servers.as_ref().map(|s| (s, s.current()));
                let renewal = renew_lease(&leases, &cfg.node_name, duration, clock.now_ms());
                let failed = match tokio::time::timeout(renew_every(&cfg), renewal).await {
                    Ok(Ok(())) => false,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %crate::runtime::chain(&e), "lease renewal failed");
                        super::servers::server_failed(&e)
                    }
                    Err(_) => {
                        tracing::warn!(node = cfg.node_name.as_str(), "lease renewal timed out");
                        true
                    }
                };
                if let (true, Some((servers, i))) = (failed, used) {
                    servers.give_up(i);
                }
                n.is_multiple_of(status_every)
            }
            ev = own.next(), if watching => match ev {
                Some(Ok(Event::Delete(_))) => {
                    tracing::warn!(node = cfg.node_name.as_str(), "node deleted from the API; registering it again");
                    register_until_done(&nodes, &cfg, &runtime_version, &clock).await;
                    false
                }
                Some(Ok(Event::Init)) => {
                    listed_it = false;
                    false
                }
                Some(Ok(Event::InitApply(node))) => {
                    listed_it = true;
                    status_differs(&node)
                }
                Some(Ok(Event::InitDone)) if !listed_it => {
                    tracing::warn!(node = cfg.node_name.as_str(), "node missing from the API; registering it again");
                    register_until_done(&nodes, &cfg, &runtime_version, &clock).await;
                    false
                }
                Some(Ok(Event::Apply(node))) => status_differs(&node),
                Some(Ok(Event::InitDone)) => false,
                Some(Err(e)) => {
                    tracing::debug!(error = %crate::runtime::chain(&e), "watch of the own node failed; retrying");
                    false
                }
                None => {
                    watching = false;
                    false
                }
            },
        };
        if post_status {
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
            None,
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
        assert_eq!(renew_every(&cfg(&[], &[])), Duration::from_secs(10));
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("node-t"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
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

    /// A Node deleted through the API while the agent runs is registered again at once, with
    /// the configured labels and taints; a Ready condition the node-lifecycle controller set to
    /// Unknown gets the agent's status posted at once.
    #[tokio::test]
    async fn a_deleted_node_is_registered_again_and_unknown_is_corrected() {
        let api = test_api::start().await;
        let task = tokio::spawn(heartbeat(
            api.client.clone(),
            None,
            cfg(&["role=worker"], &["dedicated=infra:NoSchedule"]),
            "containerd://1.6".into(),
            Clock::system(),
        ));
        let nodes: Api<Node> = Api::all(api.client.clone());
        let first = test_api::until(&nodes, "node-t", "registered", |n: Option<&Node>| {
            n.is_some_and(|n| !status_differs(n))
        })
        .await
        .unwrap();
        let started = std::time::Instant::now();
        nodes
            .delete("node-t", &kube::api::DeleteParams::default())
            .await
            .unwrap();
        let again = test_api::until(&nodes, "node-t", "registered again", |n: Option<&Node>| {
            n.is_some_and(|n| n.metadata.uid != first.metadata.uid && !status_differs(n))
        })
        .await
        .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(again.metadata.labels.as_ref().unwrap()["role"], "worker");
        assert_eq!(taint_keys(&again), ["dedicated"]);

        let unknown = serde_json::json!({"status": {"conditions": [{"type": "Ready",
            "status": "Unknown", "reason": "NodeStatusUnknown"}]}});
        nodes
            .patch_status("node-t", &PatchParams::default(), &Patch::Merge(&unknown))
            .await
            .unwrap();
        test_api::until(
            &nodes,
            "node-t",
            "Ready posted again",
            |n: Option<&Node>| n.is_some_and(|n| !status_differs(n)),
        )
        .await;
        task.abort();
        api.server.shutdown().await;
    }
}
