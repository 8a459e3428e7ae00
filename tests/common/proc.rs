//! The daemonset-agent binary as a child process of a test (server or agent), its output in a
//! log file; killed and reaped on drop, pass or fail.
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// What [`Proc::agent`] starts an agent with.
pub struct AgentArgs<'a> {
    pub config: &'a Path,
    pub node: &'a str,
    pub kubeconfig: &'a Path,
    pub socket: &'a Path,
    pub namespace: &'a str,
    pub state_dir: &'a Path,
}

pub struct Proc {
    pub child: Child,
    pub log_path: PathBuf,
}

impl Proc {
    /// `daemonset-agent ARGS...` with debug logging into `log_path`.
    pub fn spawn(args: &[&str], log_path: PathBuf) -> Proc {
        Proc::spawn_env(args, log_path, &[])
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub fn spawn_env(args: &[&str], log_path: PathBuf, env: &[(String, String)]) -> Proc {
        let out = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_daemonset-agent"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("DSA_LOG", "debug")
            // an agent's node API on loopback, on a port of its own (the Node reports it)
            .env("DSA_NODE_API_LISTEN", "127.0.0.1:0")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn daemonset-agent");
        Proc { child, log_path }
    }

    /// `daemonset-agent agent` with the flags every test's agent gets: its configuration file,
    /// node name, kubeconfig, containerd socket and namespace, state directory.
    pub fn agent(a: &AgentArgs<'_>, log_path: PathBuf) -> Proc {
        Proc::agent_env(a, log_path, &[])
    }

    /// [`Proc::agent`] with extra environment variables (libfaketime's, say).
    pub fn agent_env(a: &AgentArgs<'_>, log_path: PathBuf, env: &[(String, String)]) -> Proc {
        let path = |p: &Path| p.to_str().unwrap().to_string();
        let args = [
            "agent".to_string(),
            "--config".into(),
            path(a.config),
            "--node-name".into(),
            a.node.into(),
            "--kubeconfig".into(),
            path(a.kubeconfig),
            "--containerd-socket".into(),
            path(a.socket),
            "--containerd-namespace".into(),
            a.namespace.into(),
            "--state-dir".into(),
            path(a.state_dir),
        ];
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::spawn_env(&argv, log_path, env)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with plain integers, to a child of this process.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGTERM, as systemd stops it, and wait.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// kill -9 (a frozen, SIGSTOPped process dies of it too), and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
