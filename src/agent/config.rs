//! The agent's configuration: a TOML file plus flags that override it, validated in one pure
//! function before any socket is opened. A bad config names the key and exits with EX_USAGE.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Taint;
use serde::Deserialize;

use crate::core::credential::JoinToken;
use crate::core::names;

pub const DEFAULT_CONFIG: &str = "/etc/daemonset-agent/agent.toml";
pub const DEFAULT_NAMESPACE: &str = "daemonset-agent";
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/daemonset-agent";
pub const DEFAULT_KUBECONFIG: &str = "/etc/daemonset-agent/kubeconfig";
pub const DEFAULT_JOURNALD_SOCKET: &str = crate::logdriver::journal::DEFAULT_SOCKET;
/// The kubelet's default containerLogMaxSize (10Mi).
pub const DEFAULT_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// Where the CNI network configuration is read (the first file by name).
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// Where CNI plugins are looked for: Debian's containernetworking-plugins, then the usual
/// upstream directory.
pub const DEFAULT_CNI_BIN_DIR: &str = "/usr/lib/cni:/opt/cni/bin";
/// Where the kubelet-compatible node API listens (the kubelet's port).
pub const DEFAULT_NODE_API_LISTEN: &str = "0.0.0.0:10250";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

/// The file, as written by an operator. Keys are named like the flags.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub node_name: Option<String>,
    #[serde(default)]
    pub node_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub node_taints: Vec<String>,
    pub kubeconfig: Option<PathBuf>,
    /// The API server to join (`https://HOST:PORT`), with `token`; several (replicas of one
    /// control plane) as a list or a comma-separated string: the agent fails over between them.
    pub server: Option<ServerList>,
    /// The join token, `sha256:CA-HASH::ID.SECRET` (`daemonset-agent token create`).
    pub token: Option<String>,
    pub containerd_socket: Option<PathBuf>,
    pub containerd_namespace: Option<String>,
    pub state_dir: Option<PathBuf>,
    /// Seconds between full resyncs with containerd (events wake the loop earlier).
    pub resync_seconds: Option<u64>,
    /// The Node Lease's duration (the kubelet's nodeLeaseDurationSeconds, 40); the Lease is
    /// renewed every quarter of it. Keep it at or below the server's node monitor grace period.
    pub node_lease_duration_seconds: Option<u32>,
    /// Whether containers' output also goes to journald (default true; false: the log file only).
    pub container_logs_to_journald: Option<bool>,
    /// journald's native socket for containers' output.
    pub journald_socket: Option<PathBuf>,
    /// Size at which a container's log file is rotated, a quantity ("10Mi", the kubelet's
    /// containerLogMaxSize); "0": never.
    pub container_log_max_size: Option<String>,
    /// Log files kept per container, the current one included (the kubelet's
    /// containerLogMaxFiles, at least 2).
    pub container_log_max_files: Option<u32>,
    /// The log driver as containerd's shims see it (absolute); default: the agent's own
    /// executable. Set it when the agent runs in another mount namespace than containerd.
    pub log_driver_binary: Option<PathBuf>,
    /// The CNI network configuration directory (pods without hostNetwork).
    pub cni_conf_dir: Option<PathBuf>,
    /// The CNI plugin directories, `:`-separated.
    pub cni_bin_dir: Option<String>,
    /// A docker config.json whose `auths` hold the node's registry credentials.
    pub registry_credentials: Option<PathBuf>,
    /// Where Localhost seccomp profiles are read (default STATE_DIR/seccomp).
    pub seccomp_profile_root: Option<PathBuf>,
    /// Unsafe sysctls pods may set (`name` or `prefix*`), as kubelet's --allowed-unsafe-sysctls.
    #[serde(default)]
    pub allowed_unsafe_sysctls: Vec<String>,
    /// The address of the node API (`kubectl logs`/`exec`/`top` through the server), HOST:PORT.
    pub node_api_listen: Option<String>,
}

/// `server = "https://a:6443"`, `server = "https://a:6443,https://b:6443"` or
/// `server = ["https://a:6443", "https://b:6443"]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ServerList {
    One(String),
    Many(Vec<String>),
}

impl ServerList {
    /// The URLs, a comma-separated string split, blanks dropped.
    pub fn urls(&self) -> Vec<String> {
        let items: Vec<&str> = match self {
            ServerList::One(s) => s.split(',').collect(),
            ServerList::Many(v) => v.iter().flat_map(|s| s.split(',')).collect(),
        };
        items
            .into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }
}

/// What the command line said (None / empty: not given).
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub node_name: Option<String>,
    pub node_labels: Vec<String>,
    pub node_taints: Vec<String>,
    pub kubeconfig: Option<PathBuf>,
    pub server: Option<String>,
    pub token: Option<String>,
    pub containerd_socket: Option<PathBuf>,
    pub containerd_namespace: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub node_api_listen: Option<String>,
    pub streaming_connection_idle_timeout: Option<std::time::Duration>,
}

/// How the agent reaches the API server.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiAccess {
    /// A kubeconfig a person gave (on one machine: the local server's admin kubeconfig), used
    /// as it is.
    Kubeconfig(PathBuf),
    /// The node's own identity: joined once with the token (the server's CA checked against
    /// its pin), then the client certificate under the state directory, renewed before it
    /// expires. Several servers are replicas of one control plane (one CA): the agent uses one
    /// and fails over to the next (`agent::servers`).
    Join {
        servers: Vec<String>,
        token: JoinToken,
    },
}

/// The validated configuration the agent runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub node_name: String,
    /// Labels from the file and flags (the well-known ones are added at registration).
    pub node_labels: BTreeMap<String, String>,
    pub node_taints: Vec<Taint>,
    pub api: ApiAccess,
    pub containerd_socket: PathBuf,
    pub containerd_namespace: String,
    pub state_dir: PathBuf,
    pub resync_seconds: u64,
    pub node_lease_duration_seconds: u32,
    /// journald's socket for containers' output; None: their log files only.
    pub container_journal: Option<PathBuf>,
    /// Rotation of containers' log files: size in bytes (0: never) and files kept.
    pub container_log_max_size: u64,
    pub container_log_max_files: u32,
    /// None: the agent's own executable.
    pub log_driver_binary: Option<PathBuf>,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub registry_credentials: Option<PathBuf>,
    pub seccomp_profile_root: PathBuf,
    pub allowed_unsafe_sysctls: Vec<String>,
    /// The node API's address (`agent::nodeapi`); its port is the Node's kubelet endpoint.
    pub node_api_listen: std::net::SocketAddr,
    /// How long a node API stream session may pass no data (`nodeapi::idle`).
    pub streaming_connection_idle_timeout: std::time::Duration,
    /// The file it came from, for SIGHUP reloads.
    pub config_file: Option<PathBuf>,
}

/// Reads the file named by the flags (or the default path when it exists) and merges the flags.
pub fn load(flags: &Flags, hostname: &str) -> Result<Config, ConfigError> {
    let (path, required) = match &flags.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    let file = match &text {
        Some(t) => parse_file(t, &path)?,
        None => FileConfig::default(),
    };
    let mut cfg = merge(file, flags, hostname)?;
    cfg.config_file = text.map(|_| path);
    Ok(cfg)
}

pub fn parse_file(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim().replace('\n', " "),
    })
}

/// Merges file and flags (flags win; labels and taints add up, a flag label overriding the file's
/// value) and validates the result.
pub fn merge(file: FileConfig, flags: &Flags, hostname: &str) -> Result<Config, ConfigError> {
    let api = api_access(&file, flags)?;
    let node_name = flags
        .node_name
        .clone()
        .or(file.node_name)
        .unwrap_or_else(|| hostname.to_lowercase());
    if !is_dns1123_subdomain(&node_name) {
        return Err(invalid(
            "node-name",
            format!("{node_name:?} is not a valid node name (lowercase DNS-1123 subdomain)"),
        ));
    }
    let mut node_labels = file.node_labels;
    for l in &flags.node_labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| invalid("node-label", format!("{l:?} is not key=value")))?;
        node_labels.insert(k.to_string(), v.to_string());
    }
    for (k, v) in &node_labels {
        if !is_label_key(k) || !is_label_value(v) {
            return Err(invalid(
                "node-label",
                format!("{k}={v} is not a valid label"),
            ));
        }
    }
    let node_taints = file
        .node_taints
        .iter()
        .chain(&flags.node_taints)
        .map(|t| parse_taint(t).map_err(|m| invalid("node-taint", m)))
        .collect::<Result<Vec<_>, _>>()?;
    let containerd_namespace = flags
        .containerd_namespace
        .clone()
        .or(file.containerd_namespace)
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    if !is_dns1123_label(&containerd_namespace) {
        return Err(invalid(
            "containerd-namespace",
            format!("{containerd_namespace:?} is not a valid containerd namespace"),
        ));
    }
    let container_log_max_size = match file.container_log_max_size.as_deref() {
        None => DEFAULT_LOG_MAX_SIZE,
        Some(q) => crate::core::quantity::Quantity::parse(q)
            .ok()
            .map(|v| v.value())
            .filter(|v| *v >= 0)
            .ok_or_else(|| {
                invalid(
                    "container-log-max-size",
                    format!("{q:?} is not a size (a quantity such as \"10Mi\", or \"0\")"),
                )
            })? as u64,
    };
    let container_log_max_files = file.container_log_max_files.unwrap_or(5);
    if container_log_max_files < 2 {
        return Err(invalid(
            "container-log-max-files",
            "must be at least 2 (the current file and one rotated)".into(),
        ));
    }
    let log_driver_binary = file.log_driver_binary;
    if let Some(b) = &log_driver_binary {
        if !b.is_absolute() {
            return Err(invalid(
                "log-driver-binary",
                format!("{} is not an absolute path", b.display()),
            ));
        }
    }
    let absolute = |key: &str, p: Option<PathBuf>| -> Result<Option<PathBuf>, ConfigError> {
        match p {
            Some(p) if !p.is_absolute() => Err(invalid(
                key,
                format!("{} is not an absolute path", p.display()),
            )),
            other => Ok(other),
        }
    };
    let cni_conf_dir =
        absolute("cni-conf-dir", file.cni_conf_dir)?.unwrap_or_else(|| DEFAULT_CNI_CONF_DIR.into());
    let cni_bin_dirs: Vec<PathBuf> = file
        .cni_bin_dir
        .as_deref()
        .unwrap_or(DEFAULT_CNI_BIN_DIR)
        .split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect();
    if cni_bin_dirs.is_empty() || cni_bin_dirs.iter().any(|d| !d.is_absolute()) {
        return Err(invalid(
            "cni-bin-dir",
            "must be absolute directories separated by ':'".into(),
        ));
    }
    let registry_credentials = absolute("registry-credentials", file.registry_credentials)?;
    let seccomp_profile_root = absolute("seccomp-profile-root", file.seccomp_profile_root)?;
    for s in &file.allowed_unsafe_sysctls {
        let name = s.strip_suffix('*').unwrap_or(s);
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
        if !ok {
            return Err(invalid(
                "allowed-unsafe-sysctls",
                format!("{s:?} is not a sysctl name or prefix*"),
            ));
        }
    }
    let resync_seconds = file.resync_seconds.unwrap_or(10);
    if resync_seconds == 0 {
        return Err(invalid("resync-seconds", "must be at least 1".into()));
    }
    let node_lease_duration_seconds = file.node_lease_duration_seconds.unwrap_or(40);
    if node_lease_duration_seconds < 4 {
        return Err(invalid(
            "node-lease-duration-seconds",
            "must be at least 4".into(),
        ));
    }
    let node_api_listen = flags
        .node_api_listen
        .clone()
        .or(file.node_api_listen)
        .unwrap_or_else(|| DEFAULT_NODE_API_LISTEN.into());
    let node_api_listen = node_api_listen.parse().map_err(|_| {
        invalid(
            "node-api-listen",
            format!("{node_api_listen:?} is not an address HOST:PORT (an IP address)"),
        )
    })?;
    let state_dir: PathBuf = flags
        .state_dir
        .clone()
        .or(file.state_dir)
        .unwrap_or_else(|| DEFAULT_STATE_DIR.into());
    Ok(Config {
        seccomp_profile_root: seccomp_profile_root.unwrap_or_else(|| state_dir.join("seccomp")),
        cni_conf_dir,
        cni_bin_dirs,
        registry_credentials,
        allowed_unsafe_sysctls: file.allowed_unsafe_sysctls,
        node_name,
        node_labels,
        node_taints,
        api,
        containerd_socket: flags
            .containerd_socket
            .clone()
            .or(file.containerd_socket)
            .unwrap_or_else(|| DEFAULT_SOCKET.into()),
        containerd_namespace,
        state_dir,
        resync_seconds,
        node_lease_duration_seconds,
        container_journal: file.container_logs_to_journald.unwrap_or(true).then(|| {
            file.journald_socket
                .unwrap_or_else(|| DEFAULT_JOURNALD_SOCKET.into())
        }),
        container_log_max_size,
        container_log_max_files,
        log_driver_binary,
        node_api_listen,
        streaming_connection_idle_timeout: flags
            .streaming_connection_idle_timeout
            .unwrap_or(crate::agent::nodeapi::idle::DEFAULT),
        config_file: None,
    })
}

/// `kubeconfig`, or `server` with `token`: flags over the file, never both ways from one of them.
fn api_access(file: &FileConfig, flags: &Flags) -> Result<ApiAccess, ConfigError> {
    let layer = |kubeconfig: &Option<PathBuf>,
                 server: Option<ServerList>,
                 token: &Option<String>| {
        let join = server.is_some() || token.is_some();
        match (kubeconfig, join) {
            (Some(_), true) => Err(invalid(
                "kubeconfig",
                "kubeconfig and server/token are two ways to reach the API: give one".into(),
            )),
            (Some(k), false) => Ok(Some(ApiAccess::Kubeconfig(k.clone()))),
            (None, true) => {
                let servers = server.map(|s| s.urls()).unwrap_or_default();
                if servers.is_empty() {
                    return Err(invalid(
                        "server",
                        "the token needs the server's URL (https://HOST:PORT, or several separated by commas)".into(),
                    ));
                }
                let token = token.as_deref().ok_or_else(|| {
                    invalid("token", "the server needs a join token (`daemonset-agent token create` on the server prints one)".into())
                })?;
                for server in &servers {
                    let uri = server.parse::<http::Uri>();
                    if !server.starts_with("https://")
                        || !uri.is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()))
                    {
                        return Err(invalid(
                            "server",
                            format!("{server:?} is not an https:// URL"),
                        ));
                    }
                }
                let token = JoinToken::parse(token).map_err(|e| invalid("token", e.to_string()))?;
                Ok(Some(ApiAccess::Join { servers, token }))
            }
            (None, false) => Ok(None),
        }
    };
    let from_flags = layer(
        &flags.kubeconfig,
        flags.server.clone().map(ServerList::One),
        &flags.token,
    )?;
    let from_file = layer(&file.kubeconfig, file.server.clone(), &file.token)?;
    Ok(from_flags
        .or(from_file)
        .unwrap_or_else(|| ApiAccess::Kubeconfig(DEFAULT_KUBECONFIG.into())))
}

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message,
    }
}

/// `key=value:Effect` or `key:Effect`, as kubelet's --register-with-taints.
pub fn parse_taint(s: &str) -> Result<Taint, String> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not key=value:Effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!(
            "{s:?}: effect {effect:?} is not NoSchedule, PreferNoSchedule or NoExecute"
        ));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    if !is_label_key(key) || !value.as_deref().is_none_or(is_label_value) {
        return Err(format!("{s:?}: invalid taint key or value"));
    }
    Ok(Taint {
        key: key.into(),
        value,
        effect: effect.into(),
        time_added: None,
    })
}

fn is_dns1123_label(s: &str) -> bool {
    names::is_dns1123_label(s).is_empty()
}

fn is_dns1123_subdomain(s: &str) -> bool {
    names::is_dns1123_subdomain(s).is_empty()
}

fn is_label_value(v: &str) -> bool {
    names::is_valid_label_value(v).is_empty()
}

fn is_label_key(k: &str) -> bool {
    names::is_qualified_name(k).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[(&str, &str)]) -> Flags {
        let mut f = Flags::default();
        for (k, v) in args {
            match *k {
                "node-name" => f.node_name = Some(v.to_string()),
                "node-label" => f.node_labels.push(v.to_string()),
                "node-taint" => f.node_taints.push(v.to_string()),
                "ns" => f.containerd_namespace = Some(v.to_string()),
                "kubeconfig" => f.kubeconfig = Some(v.into()),
                "server" => f.server = Some(v.to_string()),
                "token" => f.token = Some(v.to_string()),
                _ => unreachable!(),
            }
        }
        f
    }

    #[test]
    fn file_and_flags_merge() {
        let file = parse_file(
            r#"
node-name = "from-file"
node-taints = ["dedicated=gpu:NoSchedule"]
state-dir = "/tmp/x"
[node-labels]
"node-role.kubernetes.io/worker" = "true"
zone = "a"
"#,
            Path::new("agent.toml"),
        )
        .unwrap();
        let cfg = merge(
            file,
            &flags(&[("node-name", "worker-1"), ("node-label", "zone=b")]),
            "Host",
        )
        .unwrap();
        assert_eq!(cfg.node_name, "worker-1");
        assert_eq!(cfg.node_labels["zone"], "b");
        assert_eq!(cfg.node_labels["node-role.kubernetes.io/worker"], "true");
        assert_eq!(cfg.node_taints.len(), 1);
        assert_eq!(cfg.node_taints[0].value.as_deref(), Some("gpu"));
        assert_eq!(cfg.state_dir, PathBuf::from("/tmp/x"));
        assert_eq!(cfg.containerd_namespace, DEFAULT_NAMESPACE);
        let defaults = merge(FileConfig::default(), &Flags::default(), "My-Host").unwrap();
        assert_eq!(defaults.node_name, "my-host");
        assert_eq!(
            defaults.container_journal,
            Some(PathBuf::from("/run/systemd/journal/socket"))
        );
        let file_only = parse_file(
            "container-logs-to-journald = false\njournald-socket = \"/x\"",
            Path::new("a.toml"),
        )
        .unwrap();
        let cfg = merge(file_only, &Flags::default(), "h").unwrap();
        assert_eq!(cfg.container_journal, None);
    }

    #[test]
    fn bad_configs_name_the_key() {
        #[rustfmt::skip]
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![("node-name", "Bad_Name")], "node-name"),
            (vec![("node-label", "novalue")], "node-label"),
            (vec![("node-label", "k=bad value")], "node-label"),
            (vec![("node-taint", "k=v:Sometimes")], "node-taint"),
            (vec![("node-taint", "k=v")], "node-taint"),
            (vec![("ns", "UPPER")], "containerd-namespace"),
            (vec![("server", "https://10.0.0.1:6443")], "token"),
            (vec![("token", JOIN)], "server"),
            (vec![("server", "http://10.0.0.1:6443"), ("token", JOIN)], "server"),
            (vec![("server", "https://10.0.0.1:6443"), ("token", "abcdef.0123456789abcdef")], "token"),
            (vec![("kubeconfig", "/k"), ("server", "https://10.0.0.1:6443"), ("token", JOIN)], "kubeconfig"),
        ];
        for (args, key) in cases {
            match merge(FileConfig::default(), &flags(&args), "h") {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{args:?}"),
                other => panic!("{args:?}: expected an error on {key}, got {other:?}"),
            }
        }
        let err = parse_file("nodename = 1", Path::new("a.toml")).unwrap_err();
        assert!(err.to_string().contains("nodename"), "{err}");
        for (text, key) in [
            ("container-log-max-size = \"10x\"", "container-log-max-size"),
            (
                "container-log-max-size = \"-1Mi\"",
                "container-log-max-size",
            ),
            ("container-log-max-files = 1", "container-log-max-files"),
            ("log-driver-binary = \"rel/path\"", "log-driver-binary"),
            (
                "node-lease-duration-seconds = 3",
                "node-lease-duration-seconds",
            ),
        ] {
            let file = parse_file(text, Path::new("a.toml")).unwrap();
            match merge(file, &Flags::default(), "h") {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: expected an error on {key}, got {other:?}"),
            }
        }
    }

    #[test]
    fn network_and_node_keys() {
        let d = merge(FileConfig::default(), &Flags::default(), "h").unwrap();
        assert_eq!(d.cni_conf_dir, PathBuf::from("/etc/cni/net.d"));
        assert_eq!(
            d.cni_bin_dirs,
            [PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")]
        );
        assert_eq!(d.registry_credentials, None);
        assert_eq!(
            d.seccomp_profile_root,
            PathBuf::from("/var/lib/daemonset-agent/seccomp")
        );
        let file = parse_file(
            r#"
cni-conf-dir = "/srv/cni/net.d"
cni-bin-dir = "/srv/cni/bin:/usr/lib/cni"
registry-credentials = "/etc/daemonset-agent/registries.json"
seccomp-profile-root = "/srv/seccomp"
allowed-unsafe-sysctls = ["net.core.*", "kernel.msgmax"]
"#,
            Path::new("a.toml"),
        )
        .unwrap();
        let c = merge(file, &Flags::default(), "h").unwrap();
        assert_eq!(c.cni_conf_dir, PathBuf::from("/srv/cni/net.d"));
        assert_eq!(c.cni_bin_dirs.len(), 2);
        assert_eq!(
            c.registry_credentials,
            Some(PathBuf::from("/etc/daemonset-agent/registries.json"))
        );
        assert_eq!(c.seccomp_profile_root, PathBuf::from("/srv/seccomp"));
        assert_eq!(c.allowed_unsafe_sysctls, ["net.core.*", "kernel.msgmax"]);
        for (text, key) in [
            ("cni-conf-dir = \"net.d\"", "cni-conf-dir"),
            ("cni-bin-dir = \"/a:b\"", "cni-bin-dir"),
            ("registry-credentials = \"c.json\"", "registry-credentials"),
            (
                "allowed-unsafe-sysctls = [\"a b\"]",
                "allowed-unsafe-sysctls",
            ),
        ] {
            let file = parse_file(text, Path::new("a.toml")).unwrap();
            match merge(file, &Flags::default(), "h") {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: expected an error on {key}, got {other:?}"),
            }
        }
    }

    #[test]
    fn container_log_rotation_as_the_kubelet_defaults_it() {
        let d = merge(FileConfig::default(), &Flags::default(), "h").unwrap();
        assert_eq!(
            (d.container_log_max_size, d.container_log_max_files),
            (10 * 1024 * 1024, 5)
        );
        for (text, want) in [
            (
                "container-log-max-size = \"1Mi\"\ncontainer-log-max-files = 2",
                (1 << 20, 2),
            ),
            ("container-log-max-size = \"500k\"", (500_000, 5)),
            ("container-log-max-size = \"0\"", (0, 5)),
        ] {
            let file = parse_file(text, Path::new("a.toml")).unwrap();
            let c = merge(file, &Flags::default(), "h").unwrap();
            assert_eq!(
                (c.container_log_max_size, c.container_log_max_files),
                want,
                "{text}"
            );
        }
    }

    const JOIN: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000::abcdef.0123456789abcdef";

    #[test]
    fn several_servers_as_a_list_or_separated_by_commas() {
        let two = ["https://10.0.0.1:6443", "https://10.0.0.2:6443"];
        for server in [
            "server = [\"https://10.0.0.1:6443\", \"https://10.0.0.2:6443\"]",
            "server = \"https://10.0.0.1:6443, https://10.0.0.2:6443\"",
            "server = \"https://10.0.0.1:6443,https://10.0.0.2:6443,\"",
        ] {
            let file = parse_file(
                &format!("{server}\ntoken = \"{JOIN}\""),
                Path::new("a.toml"),
            )
            .unwrap();
            let cfg = merge(file, &Flags::default(), "h").unwrap();
            assert!(
                matches!(&cfg.api, ApiAccess::Join { servers, .. } if servers == &two),
                "{server}: {:?}",
                cfg.api
            );
        }
        let cfg = merge(
            FileConfig::default(),
            &flags(&[("server", &two.join(",")), ("token", JOIN)]),
            "h",
        )
        .unwrap();
        assert!(matches!(&cfg.api, ApiAccess::Join { servers, .. } if servers == &two));
        for bad in ["https://a:1,http://b:2", "https://a:1,https://", " , "] {
            match merge(
                FileConfig::default(),
                &flags(&[("server", bad), ("token", JOIN)]),
                "h",
            ) {
                Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "server", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_api_is_reached_by_kubeconfig_or_by_joining() {
        let file = parse_file(
            &format!("server = \"https://10.0.0.1:6443\"\ntoken = \"{JOIN}\""),
            Path::new("a.toml"),
        )
        .unwrap();
        let joined = merge(file, &Flags::default(), "h").unwrap();
        match &joined.api {
            ApiAccess::Join { servers, token } => {
                assert_eq!(servers, &["https://10.0.0.1:6443"]);
                assert_eq!(token.token.id, "abcdef");
            }
            other => panic!("{other:?}"),
        }
        // flags win over the file, whichever way each goes
        let file = parse_file("kubeconfig = \"/etc/k\"", Path::new("a.toml")).unwrap();
        let cfg = merge(
            file,
            &flags(&[("server", "https://s:1"), ("token", JOIN)]),
            "h",
        )
        .unwrap();
        assert!(matches!(cfg.api, ApiAccess::Join { .. }));
        let file = parse_file(
            &format!("server = \"https://s:1\"\ntoken = \"{JOIN}\""),
            Path::new("a.toml"),
        )
        .unwrap();
        let cfg = merge(file, &flags(&[("kubeconfig", "/k")]), "h").unwrap();
        assert_eq!(cfg.api, ApiAccess::Kubeconfig("/k".into()));
        let cfg = merge(FileConfig::default(), &Flags::default(), "h").unwrap();
        assert_eq!(cfg.api, ApiAccess::Kubeconfig(DEFAULT_KUBECONFIG.into()));
        assert!(
            !format!("{:?}", joined.api).contains("0123456789abcdef"),
            "no secret in Debug"
        );
    }

    #[test]
    fn taints_parse() {
        let t = parse_taint("node-role.kubernetes.io/master:NoExecute").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value, t.effect.as_str()),
            ("node-role.kubernetes.io/master", None, "NoExecute")
        );
    }
}
