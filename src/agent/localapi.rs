//! The agent's local gRPC API (proto/agent.proto) on a unix socket under the state directory,
//! for `daemonset-agent status` and `daemonset-agent logs`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;
use k8s_openapi::api::core::v1::PodStatus;
use tonic::{Request, Response, Status};

use crate::agent::controller::Progress;
use crate::agent::nodeapi::logs::{self, LogError};
use crate::core::plan::{DesiredPod, PodKey};

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
        let to_status = |e: LogError| match e {
            LogError::NotFound(m) => Status::not_found(m),
            LogError::BadRequest(m) => Status::invalid_argument(m),
            e @ LogError::Io { .. } => Status::internal(crate::runtime::chain(&e)),
        };
        let (path, running) = logs::locate(
            &self.state_dir,
            &self.pods,
            &namespace,
            &r.pod,
            &r.container,
            false,
        )
        .map_err(to_status)?;
        let opts = logs::LogOptions {
            follow: r.follow,
            tail_lines: (r.tail_lines > 0).then_some(u64::from(r.tail_lines)),
            timestamps: r.timestamps,
            ..Default::default()
        };
        let rx = logs::stream(&path, opts, Box::new(move || running))
            .await
            .map_err(to_status)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let stream = futures::StreamExt::map(stream, move |chunk| {
            chunk
                .map(|data| pb::LogChunk {
                    data: data.to_vec(),
                })
                .map_err(to_status)
        });
        Ok(Response::new(Box::pin(stream)))
    }
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
