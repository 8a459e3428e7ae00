//! Pod networking through CNI plugins, invoked as the CNI specification says (and libcni does):
//! the network configuration list is the first `.conflist` / `.conf` / `.json` file of the
//! configuration directory by name; each plugin binary, found in the plugin directories, runs
//! with `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS` and `CNI_PATH` in
//! its environment and its configuration (with `name`, `cniVersion`, the previous plugin's
//! result as `prevResult` and the `portMappings` capability as `runtimeConfig`) on stdin. ADD
//! runs the list in order, DEL in reverse, CHECK in order against the cached result.
//!
//! What an ADD was given and gave is cached (`STATE_DIR/cni/UID.json`, written before the plugins
//! run): DEL and CHECK use the configuration the pod was attached with, even when the directory
//! changed since, and a DEL after an agent that died in the middle of an ADD still releases what
//! the plugins reserved. A plugin given up (its ADD cut off, or timed out) is killed with its
//! process group, so that no IPAM plugin it started reserves an address after that DEL.
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::PortMapping;

/// The interface name of the pod's network in its namespace.
pub const IFNAME: &str = "eth0";
/// How long one plugin may run.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// What went wrong with the pod network, naming the plugin and the command.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("no network configuration (.conflist, .conf or .json) in {}", .0.display())]
    NoConfig(PathBuf),
    #[error("network configuration {}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("network configuration {}: {problem}", path.display())]
    Malformed { path: PathBuf, problem: String },
    #[error("CNI plugin {plugin} not found in {dirs}")]
    NotFound { plugin: String, dirs: String },
    #[error("run CNI plugin {plugin} ({command})")]
    Exec {
        plugin: String,
        command: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} ({command}) failed: {message}")]
    Plugin {
        plugin: String,
        command: &'static str,
        message: String,
    },
    #[error("CNI plugin {plugin} ({command}) did not finish in {}s", PLUGIN_TIMEOUT.as_secs())]
    Timeout {
        plugin: String,
        command: &'static str,
    },
    #[error("CNI result cache {}", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI result cache {}", path.display())]
    CacheFormat {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("CHECK of pod {0}: no cached result of its ADD")]
    NoResult(String),
}

type Result<T> = std::result::Result<T, CniError>;

/// Where the configuration, the plugins and the cache are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cni {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    pub cache_dir: PathBuf,
}

/// One pod's attachment to the network.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// CNI_CONTAINERID: the pod's uid.
    pub id: String,
    pub netns: PathBuf,
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
}

impl Attachment {
    fn args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.namespace, self.name, self.id, self.id
        )
    }
}

/// What an ADD was given, and what it gave once it finished.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Cached {
    attachment: Attachment,
    /// The network configuration list.
    config: Value,
    result: Option<Value>,
}

/// The pod IPs in a CNI result (any version), IPv4 first, without their prefix length.
pub fn result_ips(result: &Value) -> Vec<String> {
    let mut ips: Vec<String> = result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .chain(
            ["ip4", "ip6"]
                .iter()
                .filter_map(|k| result[*k]["ip"].as_str()),
        )
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
        .collect();
    ips.sort_by_key(|ip| ip.contains(':'));
    ips.dedup();
    ips
}

/// A version `a.b.c` as numbers, for comparisons.
fn version(v: &str) -> (u32, u32, u32) {
    let mut n = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
    )
}

/// A configuration list from a `.conflist`, or from a single `.conf` / `.json` plugin.
pub fn parse_config(path: &Path, text: &str) -> Result<Value> {
    let v: Value = serde_json::from_str(text).map_err(|source| CniError::Config {
        path: path.to_path_buf(),
        source,
    })?;
    let malformed = |problem: &str| CniError::Malformed {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    };
    let list = if v.get("plugins").is_some() {
        v
    } else {
        if v["type"].as_str().is_none() {
            return Err(malformed("neither a list of plugins nor a plugin"));
        }
        json!({"cniVersion": v["cniVersion"], "name": v["name"], "plugins": [v]})
    };
    if list["name"].as_str().is_none_or(str::is_empty) {
        return Err(malformed("no network name"));
    }
    let plugins = list["plugins"].as_array().map_or(0, Vec::len);
    if plugins == 0
        || list["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["type"].as_str().is_none())
    {
        return Err(malformed("a plugin without a type"));
    }
    Ok(list)
}

/// The configuration of one plugin of `list` for one command.
fn plugin_config(list: &Value, plugin: &Value, prev: Option<&Value>, a: &Attachment) -> Value {
    let mut conf = plugin.clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    if plugin["capabilities"]["portMappings"] == json!(true) && !a.port_mappings.is_empty() {
        conf["runtimeConfig"]["portMappings"] = json!(a.port_mappings);
    }
    conf
}

/// The process group of a running plugin (the plugin and what it runs: bridge delegates to its
/// IPAM plugin in a child process), killed when the plugin is given up (cut off, timed out): a
/// plugin killed alone leaves its IPAM plugin running, which then reserves an address after the
/// DEL that was to free it. An agent killed itself leaves the group running (nothing of it runs
/// any more): the next agent's DEL comes after it.
struct PluginGroup(Option<u32>);

impl Drop for PluginGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // dropped right as the plugin is given up: the group is still the plugin's (not
            // reaped yet, or what it ran still in it)
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Cni {
    /// The network configuration list in use: the first file by name.
    pub fn load(&self) -> Result<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.conf_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "conflist" || x == "conf" || x == "json")
            })
            .collect();
        files.sort();
        let path = files
            .into_iter()
            .next()
            .ok_or_else(|| CniError::NoConfig(self.conf_dir.clone()))?;
        let text = std::fs::read_to_string(&path).map_err(|source| CniError::Cache {
            path: path.clone(),
            source,
        })?;
        parse_config(&path, &text)
    }

    fn cache_path(&self, id: &str) -> PathBuf {
        self.cache_dir.join(format!("{id}.json"))
    }

    fn read_cache(&self, id: &str) -> Result<Option<Cached>> {
        let path = self.cache_path(id);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| CniError::CacheFormat { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CniError::Cache { path, source }),
        }
    }

    fn write_cache(&self, c: &Cached) -> Result<()> {
        let path = self.cache_path(&c.attachment.id);
        let io = |source| CniError::Cache {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.cache_dir).map_err(io)?;
        let text = serde_json::to_vec_pretty(c).map_err(|source| CniError::CacheFormat {
            path: path.clone(),
            source,
        })?;
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// The IPs the pod's ADD gave, from the cache; None when it never finished.
    pub fn cached_ips(&self, id: &str) -> Result<Option<Vec<String>>> {
        Ok(self
            .read_cache(id)?
            .and_then(|c| c.result)
            .map(|r| result_ips(&r)))
    }

    /// Whether an ADD of `id` was started (its cache exists).
    pub fn attached(&self, id: &str) -> bool {
        self.cache_path(id).exists()
    }

    fn find(&self, plugin: &str) -> Result<PathBuf> {
        self.bin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| CniError::NotFound {
                plugin: plugin.to_string(),
                dirs: self
                    .bin_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
            })
    }

    /// Runs one plugin; its stdout (the result of an ADD).
    async fn exec(&self, command: &'static str, conf: &Value, a: &Attachment) -> Result<Value> {
        use tokio::io::AsyncWriteExt;
        let plugin = conf["type"].as_str().unwrap_or_default().to_string();
        let path = self.find(&plugin)?;
        let exec_err = |source| CniError::Exec {
            plugin: plugin.clone(),
            command,
            source,
        };
        let cni_path = std::env::join_paths(&self.bin_dirs).unwrap_or_default();
        let mut child = tokio::process::Command::new(&path)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &a.id)
            .env("CNI_NETNS", &a.netns)
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_ARGS", a.args())
            .env("CNI_PATH", cni_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(exec_err)?;
        let mut group = PluginGroup(child.id());
        let input = serde_json::to_vec(conf).unwrap_or_default();
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&input).await.map_err(exec_err)?;
        }
        let out = match tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output()).await {
            Ok(out) => out.map_err(exec_err)?,
            Err(_) => return Err(CniError::Timeout { plugin, command }),
        };
        // it ended on its own: its group may be gone, its id reused
        group.0 = None;
        if !out.status.success() {
            // the plugin's error: {"code": N, "msg": "...", "details": "..."} on stdout
            let err: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let mut message = match err["msg"].as_str() {
                Some(m) => m.to_string(),
                None => String::from_utf8_lossy(&out.stderr).trim().to_string(),
            };
            if let Some(d) = err["details"].as_str().filter(|d| !d.is_empty()) {
                message = format!("{message}: {d}");
            }
            if message.is_empty() {
                message = format!("exit status {}", out.status);
            }
            return Err(CniError::Plugin {
                plugin,
                command,
                message,
            });
        }
        if command != "ADD" {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out.stdout).map_err(|source| CniError::Config {
            path: path.clone(),
            source,
        })
    }

    /// Attaches the pod's network namespace; the pod's IPs. On failure what was added is
    /// deleted again.
    pub async fn add(&self, a: &Attachment) -> Result<Vec<String>> {
        let list = self.load()?;
        let mut cached = Cached {
            attachment: a.clone(),
            config: list.clone(),
            result: None,
        };
        self.write_cache(&cached)?;
        let mut prev: Option<Value> = None;
        for plugin in list["plugins"].as_array().into_iter().flatten() {
            let conf = plugin_config(&list, plugin, prev.as_ref(), a);
            match self.exec("ADD", &conf, a).await {
                Ok(r) => prev = Some(r),
                Err(e) => {
                    if let Err(undo) = self.del(&a.id, Some(a)).await {
                        tracing::warn!(pod_uid = a.id.as_str(), error = %super::chain(&undo), "CNI DEL after a failed ADD");
                    }
                    return Err(e);
                }
            }
        }
        let result = prev.unwrap_or(Value::Null);
        let ips = result_ips(&result);
        cached.result = Some(result);
        self.write_cache(&cached)?;
        tracing::debug!(pod_uid = a.id.as_str(), ips = ?ips, "pod network attached");
        Ok(ips)
    }

    /// Detaches the pod (its cached configuration, else the current one with `fallback`), and
    /// forgets it. Ok when it was never attached and nothing is given to detach.
    pub async fn del(&self, id: &str, fallback: Option<&Attachment>) -> Result<()> {
        let (list, a, result) = match self.read_cache(id)? {
            Some(c) => (c.config, c.attachment, c.result),
            None => match fallback {
                Some(a) => (self.load()?, a.clone(), None),
                None => return Ok(()),
            },
        };
        let prev =
            result.filter(|_| version(list["cniVersion"].as_str().unwrap_or("")) >= (0, 4, 0));
        let plugins: Vec<&Value> = list["plugins"].as_array().into_iter().flatten().collect();
        for plugin in plugins.into_iter().rev() {
            let conf = plugin_config(&list, plugin, prev.as_ref(), &a);
            self.exec("DEL", &conf, &a).await?;
        }
        let path = self.cache_path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CniError::Cache { path, source }),
        }
    }

    /// CHECKs the pod's attachment against its cached result (CNI 0.4.0 and later; earlier
    /// versions have no CHECK and pass).
    pub async fn check(&self, id: &str) -> Result<()> {
        let Some(c) = self.read_cache(id)? else {
            return Err(CniError::NoResult(id.to_string()));
        };
        let Some(result) = c.result else {
            return Err(CniError::NoResult(id.to_string()));
        };
        if version(c.config["cniVersion"].as_str().unwrap_or("")) < (0, 4, 0) {
            return Ok(());
        }
        for plugin in c.config["plugins"].as_array().into_iter().flatten() {
            let conf = plugin_config(&c.config, plugin, Some(&result), &c.attachment);
            self.exec("CHECK", &conf, &c.attachment).await?;
        }
        Ok(())
    }
}

/// The node's own IP: the source address of its default route (IPv4), as the kubelet picks
/// one without --node-ip. A UDP socket's connect() only looks the route up; nothing is sent.
/// None when there is no default route.
pub fn host_ip() -> Option<String> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let has_default = routes.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"00000000") && f.get(7) == Some(&"00000000")
    });
    if !has_default {
        return None;
    }
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // an address of TEST-NET-3: routed by the default route, never answered
    sock.connect("203.0.113.1:9").ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then(|| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_and_results_parse() {
        let p = Path::new("/etc/cni/net.d/10-x.conflist");
        let list = parse_config(p, r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge"}, {"type": "portmap", "capabilities": {"portMappings": true}}]}"#).unwrap();
        assert_eq!(list["plugins"].as_array().unwrap().len(), 2);
        let single = parse_config(
            p,
            r#"{"cniVersion": "0.4.0", "name": "n", "type": "bridge"}"#,
        )
        .unwrap();
        assert_eq!(single["plugins"][0]["type"], "bridge");
        assert_eq!(single["cniVersion"], "0.4.0");
        for bad in [
            r#"{"name": "n"}"#,
            r#"{"plugins": [{"type": "x"}]}"#,
            r#"{"name": "n", "plugins": [{}]}"#,
            "nope",
        ] {
            assert!(parse_config(p, bad).is_err(), "{bad}");
        }
        let r = json!({"cniVersion": "1.0.0", "ips": [{"address": "fd00::5/64"}, {"address": "10.1.0.5/24", "gateway": "10.1.0.1"}]});
        assert_eq!(result_ips(&r), ["10.1.0.5", "fd00::5"]);
        assert_eq!(
            result_ips(&json!({"ip4": {"ip": "10.2.0.3/16"}})),
            ["10.2.0.3"]
        );
        assert!(result_ips(&Value::Null).is_empty());
        assert!(version("1.0.0") >= (0, 4, 0) && version("0.3.1") < (0, 4, 0));
    }

    #[test]
    fn port_mappings_of_host_ports() {
        let spec: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(json!({"containers": [
            {"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81},
                {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"}]}]}))
        .unwrap();
        let pm = PortMapping::of(&spec);
        assert_eq!(
            pm,
            [
                PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: String::new()
                },
                PortMapping {
                    host_port: 5353,
                    container_port: 53,
                    protocol: "udp".into(),
                    host_ip: "127.0.0.1".into()
                },
            ]
        );
        let a = Attachment {
            id: "u1".into(),
            netns: "/ns".into(),
            namespace: "default".into(),
            name: "web".into(),
            port_mappings: pm,
        };
        let list = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge"}, {"type": "portmap", "capabilities": {"portMappings": true}}]});
        let conf = plugin_config(&list, &list["plugins"][1], Some(&json!({"ips": []})), &a);
        assert_eq!(
            conf["runtimeConfig"]["portMappings"][0],
            json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp"})
        );
        assert_eq!(
            conf["runtimeConfig"]["portMappings"][1]["hostIP"],
            "127.0.0.1"
        );
        assert_eq!(
            (conf["name"].as_str(), conf["cniVersion"].as_str()),
            (Some("n"), Some("1.0.0"))
        );
        assert!(conf.get("prevResult").is_some());
        let bridge = plugin_config(&list, &list["plugins"][0], None, &a);
        assert!(bridge.get("runtimeConfig").is_none() && bridge.get("prevResult").is_none());
        assert_eq!(a.args(), "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=u1;K8S_POD_UID=u1");
        // hostNetwork pods map nothing: their ports are the node's
        let mut host = spec.clone();
        host.host_network = Some(true);
        assert!(PortMapping::of(&host).is_empty());
    }
}
