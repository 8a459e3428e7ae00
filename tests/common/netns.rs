//! Several "hosts" on one machine: network namespaces made by the test (`ip netns add`), each with
//! a veth whose peer is on a bridge in a hub namespace, and an address of a private range used
//! only inside those namespaces. Nothing of it is on the host's own network; dropping the
//! [`Hosts`] removes every namespace it made (the veths and the bridge go with them), pass or fail.
use std::process::{Command, Stdio};

/// The network namespaces of one test.
#[must_use = "the namespaces are removed when this is dropped"]
pub struct Hosts {
    /// `hub`, then one per host.
    namespaces: Vec<String>,
    hosts: Vec<(String, String)>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Hosts {
    /// Makes one namespace per name in `names` (short: they prefix interface names), each with
    /// the address `10.RANGE.0.(i+1)/24` on a bridge in a hub namespace. `tag` (a few characters)
    /// keeps this test's names apart from any other's.
    pub fn new(tag: &str, names: &[&str]) -> Hosts {
        assert!(tag.len() <= 6, "interface names have 15 characters");
        let hub = format!("dsa-{tag}-hub");
        let mut hosts = Hosts {
            namespaces: vec![],
            hosts: vec![],
        };
        ip(&["netns", "add", &hub]);
        hosts.namespaces.push(hub.clone());
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        // a /24 of 10.0.0.0/8 picked by the process id: only ever routed inside these namespaces
        let range = 100 + std::process::id() % 150;
        for (i, name) in names.iter().enumerate() {
            let ns = format!("dsa-{tag}-{name}");
            let (outer, inner) = (format!("v{tag}{i}"), format!("e{tag}{i}"));
            ip(&["netns", "add", &ns]);
            hosts.namespaces.push(ns.clone());
            ip(&[
                "link", "add", &outer, "netns", &hub, "type", "veth", "peer", "name", &inner,
                "netns", &ns,
            ]);
            ip(&["-n", &hub, "link", "set", &outer, "master", "br0", "up"]);
            let addr = format!("10.{range}.0.{}", i + 1);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &inner,
            ]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            hosts.hosts.push((ns, addr));
        }
        hosts
    }

    /// The namespace and address of host `i`.
    pub fn host(&self, i: usize) -> (&str, &str) {
        let (ns, addr) = &self.hosts[i];
        (ns, addr)
    }

    /// A command run inside host `i`'s network namespace. nsenter, not `ip netns exec`: that
    /// one also gives a mount namespace of its own, where the network namespaces an agent makes
    /// for its pods (bind mounts) would be invisible to runc, which containerd runs outside.
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.hosts[i].0))
            .arg("--")
            .arg(program);
        c
    }

    /// The processes still in our namespaces (`ip netns pids`).
    fn pids(&self) -> Vec<i32> {
        self.namespaces
            .iter()
            .flat_map(|ns| {
                let out = Command::new("ip")
                    .args(["netns", "pids", ns])
                    .stderr(Stdio::null())
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                    .unwrap_or_default();
                out.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // what a test left running in them (its servers and agents, by their pids), then the
        // namespaces: their veths and the hub's bridge go with them
        let pids = self.pids();
        for pid in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for pid in pids {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            // a zombie's cmdline is empty: it has exited
            while std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        for ns in self.namespaces.iter().rev() {
            let out = Command::new("ip").args(["netns", "del", ns]).output();
            if !out.is_ok_and(|o| o.status.success()) {
                eprintln!("netns guard: could not remove {ns}");
            }
        }
    }
}
