//! Commands a person types: `status` and `logs` on a node, through the agent's local API;
//! `token`/`node` (tokens), and the authoring tools kubectl lacks: `create daemonset` (create),
//! `convert` (Deployments and ReplicaSets to DaemonSets), `why` (eligibility, rule by rule).
use std::io::Write;
use std::path::Path;

use anyhow::Context as _;

use crate::agent::localapi::{self, pb, socket_path};

pub mod convert;
pub mod create;
pub mod tokens;
pub mod why;

/// A kube client error as kubectl prints a refusal (`Error from server (NotFound): ...`), not
/// the whole `Status` debug dump; other errors as they are.
pub(crate) fn api_error(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(s) => anyhow::anyhow!("Error from server ({}): {}", s.reason, s.message),
        other => other.into(),
    }
}

async fn client(
    state_dir: &Path,
) -> anyhow::Result<pb::agent_client::AgentClient<tonic::transport::Channel>> {
    localapi::client(state_dir).await.with_context(|| {
        format!(
            "connect to the agent at {} (is it running?)",
            socket_path(state_dir).display()
        )
    })
}

/// Prints the node's pods as a table.
pub async fn status(state_dir: &Path) -> anyhow::Result<()> {
    let mut c = client(state_dir).await?;
    let r = c.list_pods(pb::ListPodsRequest {}).await?.into_inner();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "node {} (API {}; {} rounds)",
        r.node,
        if r.api_synced {
            "in sync"
        } else {
            "not reached: running from the cached desired state"
        },
        r.rounds
    )?;
    writeln!(
        out,
        "{:<40} {:<20} {:<8} {:<6} {:<9} CONTAINERS",
        "POD", "DAEMONSET", "PHASE", "READY", "RESTARTS"
    )?;
    for p in r.pods {
        let restarts: i32 = p.containers.iter().map(|c| c.restart_count).sum();
        let containers: Vec<String> = p
            .containers
            .iter()
            .map(|c| {
                if c.reason.is_empty() {
                    format!("{}={}", c.name, c.state)
                } else {
                    format!("{}={}({})", c.name, c.state, c.reason)
                }
            })
            .collect();
        writeln!(
            out,
            "{:<40} {:<20} {:<8} {:<6} {:<9} {}",
            format!("{}/{}", p.namespace, p.name),
            p.daemonset,
            p.phase,
            p.ready,
            restarts,
            containers.join(" ")
        )?;
    }
    if !r.daemonsets.is_empty() {
        writeln!(out, "\n{:<40} {:<10} RUNS HERE", "DAEMONSET", "GENERATION")?;
    }
    for d in r.daemonsets {
        writeln!(
            out,
            "{:<40} {:<10} {}",
            format!("{}/{}", d.namespace, d.name),
            d.generation,
            if d.runs_here { "yes" } else { "no" }
        )?;
    }
    Ok(())
}

/// Copies a container's output to stdout.
pub async fn logs(
    state_dir: &Path,
    namespace: &str,
    pod: &str,
    container: &str,
    follow: bool,
    tail: u32,
    timestamps: bool,
) -> anyhow::Result<()> {
    let mut c = client(state_dir).await?;
    let mut stream = c
        .logs(pb::LogsRequest {
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.into(),
            follow,
            tail_lines: tail,
            timestamps,
        })
        .await?
        .into_inner();
    let mut out = std::io::stdout();
    while let Some(chunk) = stream.message().await? {
        out.write_all(&chunk.data)?;
        out.flush()?;
    }
    Ok(())
}
