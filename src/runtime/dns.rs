//! A pod's /etc/resolv.conf, /etc/hosts and /etc/hostname, as the kubelet computes them
//! (pkg/kubelet/network/dns: GetPodDNS; kubelet_pods.go: managedHostsFileContent and
//! nodeHostsFileContent) and containerd's CRI plugin writes them (parseDNSOptions). Pure: the
//! node's own files are arguments.
//!
//! This node has no cluster DNS: `ClusterFirst` (and `ClusterFirstWithHostNet`) fall back to
//! `Default`, the node's resolv.conf, as the kubelet does when it has no `clusterDNS` (it says so
//! in an event: "kubelet does not have ClusterDNS IP configured").
use k8s_openapi::api::core::v1::PodSpec;

/// The kubelet's limits (validation.MaxDNSNameservers, MaxDNSSearchPaths, MaxDNSSearchListChars).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;

/// What a resolv.conf says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// `name` or `name:value`, in order.
    pub options: Vec<String>,
}

/// The nameservers, search domains and options of a resolv.conf (the last `search` or `domain`
/// line wins, as in the resolver).
pub fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut c = DnsConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => c.nameservers.extend(words.next().map(str::to_string)),
            Some("search") | Some("domain") => c.searches = words.map(str::to_string).collect(),
            Some("options") => c.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    c
}

fn push_unique(into: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for i in items {
        if !into.contains(&i) {
            into.push(i);
        }
    }
}

/// The pod's DNS settings: the node's (every policy but `None`), then the pod's `dnsConfig`
/// appended (nameservers and searches without duplicates, options by name, the pod's winning),
/// cut to the kubelet's limits.
pub fn pod_dns(spec: &PodSpec, node_resolv_conf: &str) -> DnsConfig {
    let mut c = match spec.dns_policy.as_deref() {
        Some("None") => DnsConfig::default(),
        _ => parse_resolv_conf(node_resolv_conf),
    };
    if let Some(pc) = &spec.dns_config {
        push_unique(
            &mut c.nameservers,
            pc.nameservers.clone().unwrap_or_default(),
        );
        push_unique(&mut c.searches, pc.searches.clone().unwrap_or_default());
        for o in pc.options.iter().flatten() {
            let name = o.name.clone().unwrap_or_default();
            let opt = match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            };
            let same = |x: &String| x.split(':').next() == Some(name.as_str());
            match c.options.iter_mut().find(|x| same(x)) {
                Some(slot) => *slot = opt,
                None => c.options.push(opt),
            }
        }
    }
    c.nameservers.truncate(MAX_NAMESERVERS);
    c.searches.truncate(MAX_SEARCHES);
    while c.searches.iter().map(|s| s.len() + 1).sum::<usize>() > MAX_SEARCH_CHARS {
        c.searches.pop();
    }
    c
}

/// The resolv.conf containerd writes for these settings; the node's file verbatim when they are
/// empty (containerd copies the host's then).
pub fn resolv_conf(c: &DnsConfig, node_resolv_conf: &str) -> String {
    let mut out = String::new();
    if !c.searches.is_empty() {
        out.push_str(&format!("search {}\n", c.searches.join(" ")));
    }
    for ns in &c.nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !c.options.is_empty() {
        out.push_str(&format!("options {}\n", c.options.join(" ")));
    }
    if out.is_empty() {
        node_resolv_conf.to_string()
    } else {
        out
    }
}

fn host_aliases(spec: &PodSpec) -> String {
    let aliases = spec.host_aliases.as_deref().unwrap_or(&[]);
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        let names = a.hostnames.clone().unwrap_or_default().join("\t");
        out.push_str(&format!("{}\t{names}\n", a.ip));
    }
    out
}

/// The pod's /etc/hosts: the kubelet's managed file with the pod's IPs under its hostname, or
/// for a hostNetwork pod the node's own file; the host aliases after either.
pub fn hosts_file(spec: &PodSpec, pod_ips: &[String], hostname: &str, node_hosts: &str) -> String {
    if spec.host_network.unwrap_or(false) {
        return format!(
            "# Kubernetes-managed hosts file (host network).\n{node_hosts}{}",
            host_aliases(spec)
        );
    }
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    for ip in pod_ips {
        out.push_str(&format!("{ip}\t{hostname}\n"));
    }
    out.push_str(&host_aliases(spec));
    out
}

/// The pod's hostname: the node's with hostNetwork, else `spec.hostname` or the pod's name, cut
/// to 63 characters (GeneratePodHostNameAndDomain).
pub fn pod_hostname(spec: &PodSpec, pod_name: &str, node_hostname: &str) -> String {
    if spec.host_network.unwrap_or(false) {
        return node_hostname.to_string();
    }
    let name = spec
        .hostname
        .as_deref()
        .filter(|h| !h.is_empty())
        .unwrap_or(pod_name);
    let cut: String = name.chars().take(63).collect();
    cut.trim_end_matches(['-', '.']).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NODE: &str = "# generated\nnameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example lab.example\noptions edns0 ndots:2\n";

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn dns_files_follow_the_kubelet() {
        // every policy but None starts from the node's file
        for policy in [
            None,
            Some("Default"),
            Some("ClusterFirst"),
            Some("ClusterFirstWithHostNet"),
        ] {
            let s = spec(json!({"containers": [], "dnsPolicy": policy}));
            assert_eq!(
                resolv_conf(&pod_dns(&s, NODE), NODE),
                "search corp.example lab.example\nnameserver 192.0.2.53\nnameserver 192.0.2.54\noptions edns0 ndots:2\n",
                "{policy:?}"
            );
        }
        let s = spec(json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["203.0.113.1"], "searches": ["a.example"],
            "options": [{"name": "ndots", "value": "5"}, {"name": "rotate"}]}}));
        assert_eq!(
            resolv_conf(&pod_dns(&s, NODE), NODE),
            "search a.example\nnameserver 203.0.113.1\noptions ndots:5 rotate\n"
        );
        // appended to the node's: duplicates dropped, an option of the same name replaced
        let s = spec(json!({"containers": [], "dnsConfig": {
            "nameservers": ["192.0.2.53", "203.0.113.1", "203.0.113.2"], "searches": ["lab.example", "x.example"],
            "options": [{"name": "ndots", "value": "5"}]}}));
        let c = pod_dns(&s, NODE);
        assert_eq!(
            c.nameservers,
            ["192.0.2.53", "192.0.2.54", "203.0.113.1"],
            "three at most"
        );
        assert_eq!(c.searches, ["corp.example", "lab.example", "x.example"]);
        assert_eq!(c.options, ["edns0", "ndots:5"]);
        // an empty result: the node's file as it is
        let s = spec(json!({"containers": []}));
        assert_eq!(resolv_conf(&pod_dns(&s, ""), "# empty\n"), "# empty\n");

        // /etc/hosts
        let s = spec(json!({"containers": [], "hostAliases": [
            {"ip": "198.51.100.7", "hostnames": ["foo.local", "bar.local"]}]}));
        assert_eq!(
            hosts_file(&s, &["10.1.0.5".into()], "web-x", "127.0.0.1 node\n"),
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n\
             10.1.0.5\tweb-x\n\n# Entries added by HostAliases.\n198.51.100.7\tfoo.local\tbar.local\n"
        );
        let s = spec(json!({"containers": [], "hostNetwork": true}));
        assert_eq!(
            hosts_file(&s, &[], "node-1", "127.0.0.1 node-1\n"),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 node-1\n"
        );

        // hostname
        let s = spec(json!({"containers": [], "hostname": "custom"}));
        assert_eq!(pod_hostname(&s, "pod-abc", "node"), "custom");
        let s = spec(json!({"containers": []}));
        assert_eq!(pod_hostname(&s, "pod-abc", "node"), "pod-abc");
        let long = format!("{}-x", "a".repeat(62));
        assert_eq!(pod_hostname(&s, &long, "node"), "a".repeat(62));
        let s = spec(json!({"containers": [], "hostNetwork": true, "hostname": "custom"}));
        assert_eq!(pod_hostname(&s, "pod-abc", "node"), "node");
    }
}
