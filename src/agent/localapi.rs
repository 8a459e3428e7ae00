//! The agent's local gRPC API (proto/agent.proto) on a unix socket under the state directory,
//! for `daemonset-agent status` and `daemonset-agent logs`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use k8s_openapi::api::core::v1::PodStatus;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tonic::{Request, Response, Status};

use crate::agent::controller::Progress;
use crate::core::plan::{DesiredPod, PodKey};
use crate::logdriver::cri::Decoder;

pub mod pb {
    tonic::include_proto!("daemonset_agent.v1");
}

/// A pod as its worker last reported it.
#[derive(Debug, Clone)]
pub struct Reported {
    pub pod: DesiredPod,
    pub status: PodStatus,
    /// The controller round the report was made from.
    pub round: u64,
}

/// What the controller last knew of each pod.
pub type PodsView = Arc<Mutex<BTreeMap<PodKey, Reported>>>;

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("agent.sock")
}

/// A client of the agent's local API on its socket under `state_dir`.
pub async fn client(
    state_dir: &Path,
) -> Result<pb::agent_client::AgentClient<tonic::transport::Channel>, tonic::transport::Error> {
    // containerd-client's connector is a plain tonic-over-unix-socket dialer; it fits any socket.
    let channel = containerd_client::connect(socket_path(state_dir)).await?;
    Ok(pb::agent_client::AgentClient::new(channel))
}

pub struct LocalApi {
    pub node: String,
    pub state_dir: PathBuf,
    pub pods: PodsView,
    pub progress: tokio::sync::watch::Receiver<Progress>,
    pub synced: Arc<dyn Fn() -> bool + Send + Sync>,
}

fn info(r: &Reported) -> pb::PodInfo {
    let (d, s) = (&r.pod, &r.status);
    let containers = s
        .container_statuses
        .iter()
        .flatten()
        .map(|c| {
            let st = c.state.clone().unwrap_or_default();
            let (state, reason) = if st.running.is_some() {
                ("running", String::new())
            } else if let Some(t) = st.terminated {
                ("terminated", t.reason.unwrap_or_default())
            } else {
                (
                    "waiting",
                    st.waiting.and_then(|w| w.reason).unwrap_or_default(),
                )
            };
            pb::ContainerInfo {
                name: c.name.clone(),
                id: c
                    .container_id
                    .clone()
                    .unwrap_or_default()
                    .trim_start_matches("containerd://")
                    .into(),
                image: c.image.clone(),
                state: state.into(),
                reason,
                restart_count: c.restart_count,
            }
        })
        .collect();
    pb::PodInfo {
        namespace: d.key.namespace.clone(),
        name: d.key.name.clone(),
        daemonset: d.owner.as_ref().map(|o| o.name.clone()).unwrap_or_default(),
        template_hash: d.template_hash.clone(),
        phase: s.phase.clone().unwrap_or_default(),
        ready: s
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        containers,
        round: r.round,
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_server::Agent for LocalApi {
    async fn list_pods(
        &self,
        _req: Request<pb::ListPodsRequest>,
    ) -> Result<Response<pb::ListPodsResponse>, Status> {
        let pods = self
            .pods
            .lock()
            .map_err(|_| Status::internal("pod view poisoned"))?
            .values()
            .map(info)
            .collect();
        let progress = self.progress.borrow().clone();
        Ok(Response::new(pb::ListPodsResponse {
            node: self.node.clone(),
            api_synced: (self.synced)(),
            pods,
            rounds: progress.rounds,
            daemonsets: progress
                .daemonsets
                .into_iter()
                .map(|d| pb::DaemonSetRef {
                    namespace: d.namespace,
                    name: d.name,
                    generation: d.generation,
                    runs_here: d.runs_here,
                })
                .collect(),
        }))
    }

    type LogsStream = LogStream;

    async fn logs(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let r = req.into_inner();
        let namespace = if r.namespace.is_empty() {
            "default".to_string()
        } else {
            r.namespace
        };
        let Reported {
            pod: d, status: s, ..
        } = self
            .pods
            .lock()
            .map_err(|_| Status::internal("pod view poisoned"))?
            .iter()
            .find(|(k, _)| k.namespace == namespace && k.name == r.pod)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                Status::not_found(format!("pod {namespace}/{} is not on this node", r.pod))
            })?;
        let statuses = s.container_statuses.unwrap_or_default();
        let c = match (r.container.as_str(), statuses.len()) {
            ("", 1) => statuses[0].clone(),
            ("", _) => {
                return Err(Status::invalid_argument(format!(
                    "pod {} has several containers: name one of {:?}",
                    r.pod,
                    statuses.iter().map(|c| c.name.as_str()).collect::<Vec<_>>()
                )))
            }
            (name, _) => statuses
                .iter()
                .find(|c| c.name == name)
                .cloned()
                .ok_or_else(|| {
                    Status::not_found(format!("container {name} not in pod {}", r.pod))
                })?,
        };
        let restarts = u32::try_from(c.restart_count).unwrap_or_default();
        let path = crate::logdriver::log_path(&self.state_dir, &d.key, &d.uid, &c.name, restarts);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Status::not_found(format!("log {}: {e}", path.display())))?;
        let mut stored = Vec::new();
        file.read_to_end(&mut stored)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        // CRI records (the log driver's) become the container's lines again; raw files of
        // containers started before the driver existed pass through
        let mut decoder = Decoder::new(r.timestamps);
        let mut start = Vec::with_capacity(stored.len());
        decoder.push(&stored, &mut start);
        drop(stored);
        if !r.follow {
            decoder.finish(&mut start);
        }
        if r.tail_lines > 0 {
            start.drain(..tail_start(&start, r.tail_lines));
        }
        let stream = async_stream(file, start, r.follow.then_some(decoder));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Where the last `n` lines of `out` start (a last line without newline counts).
fn tail_start(out: &[u8], n: u32) -> usize {
    let mut seen = 0;
    for (i, b) in out.iter().enumerate().rev().skip(1) {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

/// Sends `first`, then, when following, what the file gains, decoded.
fn async_stream(
    mut file: tokio::fs::File,
    first: Vec<u8>,
    follow: Option<Decoder>,
) -> impl Stream<Item = Result<pb::LogChunk, Status>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(Ok(pb::LogChunk { data: first })).await.is_err() {
            return;
        }
        let Some(mut decoder) = follow else {
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match file.read(&mut buf).await {
                Ok(0) => {
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    // a truncated file starts over
                    if let (Ok(pos), Ok(meta)) =
                        (file.stream_position().await, file.metadata().await)
                    {
                        if meta.len() < pos {
                            let _ = file.seek(std::io::SeekFrom::Start(0)).await;
                        }
                    }
                }
                Ok(n) => {
                    let mut data = Vec::with_capacity(n);
                    decoder.push(&buf[..n], &mut data);
                    if !data.is_empty() && tx.send(Ok(pb::LogChunk { data })).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                    return;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Serves the local API until the process ends.
pub async fn serve(api: LocalApi) -> std::io::Result<()> {
    let path = socket_path(&api.state_dir);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(pb::agent_server::AgentServer::new(api))
        .serve_with_incoming(incoming)
        .await
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tail_counts_lines_from_the_end() {
        let out = b"a\nb\nc\n";
        assert_eq!(&out[super::tail_start(out, 2)..], b"b\nc\n");
        assert_eq!(&out[super::tail_start(out, 9)..], out);
        let open = b"a\nb\nc";
        assert_eq!(&open[super::tail_start(open, 1)..], b"c");
    }
}
