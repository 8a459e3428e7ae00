//! The gRPC connection to containerd: one tonic channel over the unix socket, service clients with
//! the decoding limit raised to containerd's 16 MiB, and requests carrying the namespace header
//! (and a lease header where one is held).
use std::collections::HashMap;
use std::path::Path;

use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    events_client::EventsClient, images_client::ImagesClient, leases_client::LeasesClient,
    snapshots::snapshots_client::SnapshotsClient, tasks_client::TasksClient,
    version_client::VersionClient,
};
use containerd_client::services::v1::{
    CreateRequest as LeaseCreateRequest, DeleteRequest as LeaseDeleteRequest,
    ListRequest as LeaseListRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};

use super::{Result, RuntimeError};

/// containerd sends messages up to 16 MiB; tonic decodes 4 MiB by default.
pub const MAX_MESSAGE: usize = 16 << 20;
pub const SNAPSHOTTER: &str = "overlayfs";

/// A containerd connection bound to one namespace. Cheap to clone.
#[derive(Clone)]
pub struct Ctd {
    channel: Channel,
    pub namespace: String,
}

impl Ctd {
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Ctd> {
        let channel =
            containerd_client::connect(socket)
                .await
                .map_err(|source| RuntimeError::Connect {
                    socket: socket.to_path_buf(),
                    source,
                })?;
        Ok(Ctd {
            channel,
            namespace: namespace.to_string(),
        })
    }

    /// `msg` with the `containerd-namespace` header.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        self.req_leased(msg, None)
    }

    /// `msg` with the namespace header and, when given, the `containerd-lease` header.
    pub fn req_leased<T>(&self, msg: T, lease: Option<&str>) -> Request<T> {
        let mut req = Request::new(msg);
        let md = req.metadata_mut();
        if let Ok(v) = self.namespace.parse() {
            md.insert("containerd-namespace", v);
        }
        if let Some(Ok(v)) = lease.map(|l| l.parse()) {
            md.insert("containerd-lease", v);
        }
        req
    }

    pub fn version(&self) -> VersionClient<Channel> {
        VersionClient::new(self.channel.clone())
    }
    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn events(&self) -> EventsClient<Channel> {
        EventsClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }

    /// A lease that expires by itself after `hours` (so a crash leaks nothing for long).
    pub async fn create_lease(
        &self,
        prefix: &str,
        hours: i64,
    ) -> std::result::Result<String, Status> {
        let id = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
        let expire = (chrono::Utc::now() + chrono::Duration::hours(hours))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let labels = HashMap::from([("containerd.io/gc.expire".to_string(), expire)]);
        self.leases()
            .create(self.req(LeaseCreateRequest {
                id: id.clone(),
                labels,
            }))
            .await?;
        Ok(id)
    }

    /// Deletes lease `id`. When containerd cannot (it is down or restarting: a pull it died in
    /// the middle of fails, and its lease would hold what it wrote until it expires, a day for a
    /// pull), the delete is retried on a task of its own, 1 s doubling to 30 s, for at most 200
    /// tries (about 1.6 h).
    pub async fn delete_lease(&self, id: &str) {
        let Err(e) = self.try_delete_lease(id).await else {
            return;
        };
        tracing::warn!(lease = id, error = e.message(), "delete lease; retrying");
        let (ctd, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            let mut delay = std::time::Duration::from_secs(1);
            for _ in 0..200 {
                tokio::time::sleep(delay).await;
                if ctd.try_delete_lease(&id).await.is_ok() {
                    tracing::info!(lease = id.as_str(), "lease deleted");
                    return;
                }
                delay = (delay * 2).min(std::time::Duration::from_secs(30));
            }
            tracing::warn!(
                lease = id.as_str(),
                "lease not deleted: it expires by itself"
            );
        });
    }

    async fn try_delete_lease(&self, id: &str) -> std::result::Result<(), Status> {
        let r = self
            .leases()
            .delete(self.req(LeaseDeleteRequest {
                id: id.to_string(),
                sync: false,
            }))
            .await;
        match r {
            Err(e) if e.code() != Code::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl Ctd {
    /// Deletes the namespace's leases whose id starts with `prefix`, waiting for the garbage
    /// collection of what only they held; how many there were. For the leases an earlier agent
    /// of the namespace held when it was stopped (one agent owns a namespace).
    pub async fn delete_leases(&self, prefix: &str) -> std::result::Result<usize, Status> {
        let leases = self
            .leases()
            .list(self.req(LeaseListRequest { filters: vec![] }))
            .await?
            .into_inner()
            .leases;
        let mut deleted = 0;
        for lease in leases.iter().filter(|l| l.id.starts_with(prefix)) {
            let r = self
                .leases()
                .delete(self.req(LeaseDeleteRequest {
                    id: lease.id.clone(),
                    sync: true,
                }))
                .await;
            match r {
                Ok(_) => deleted += 1,
                Err(e) if e.code() == Code::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }
}

/// A containerd error as a `RuntimeError::Containerd`, the status kept as its cause.
pub fn ctd_err(op: &'static str, id: &str, source: Status) -> RuntimeError {
    RuntimeError::Containerd {
        op,
        id: id.to_string(),
        source,
    }
}
