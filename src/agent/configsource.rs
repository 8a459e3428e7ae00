//! The API objects the agent's pods use, fetched for them as the kubelet's secret and configmap
//! managers do (a GET of each object a pod names, when a container starts and on each of the
//! pod's syncs, so a change reaches a mounted volume within the resync period), through the node's
//! own credential: the server's Node authorizer lets a node read only what its pods use. The
//! workers ask [`ObjectSource`]; [`Unavailable`] answers nothing (tests without an API).
use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret};
use kube::Api;

use crate::core::podrefs;
use crate::runtime::configvol::{ConfigMapData, PodObjects};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("get {kind} {namespace}/{name}")]
    Get {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// What a pod is: where its objects are, what it uses, who it is (for its tokens).
pub struct PodRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub spec: &'a PodSpec,
}

#[async_trait]
pub trait ObjectSource: Send + Sync {
    /// The objects `pod` uses as they are now (a missing one as None).
    async fn objects(&self, pod: &PodRef<'_>) -> Result<PodObjects, SourceError>;
}

/// No API: every object the pod names is reported missing.
pub struct Unavailable;

#[async_trait]
impl ObjectSource for Unavailable {
    async fn objects(&self, pod: &PodRef<'_>) -> Result<PodObjects, SourceError> {
        let refs = podrefs::references(pod.spec);
        Ok(PodObjects {
            config_maps: refs.config_maps.into_iter().map(|n| (n, None)).collect(),
            secrets: refs.secrets.into_iter().map(|n| (n, None)).collect(),
            ..PodObjects::default()
        })
    }
}

/// The objects, from the API server.
pub struct FromApi {
    pub client: kube::Client,
}

/// A ConfigMap's bags as the volumes and env read them.
pub fn config_map_data(cm: ConfigMap) -> ConfigMapData {
    ConfigMapData {
        data: cm.data.unwrap_or_default(),
        binary: cm
            .binary_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
    }
}

#[async_trait]
impl ObjectSource for FromApi {
    async fn objects(&self, pod: &PodRef<'_>) -> Result<PodObjects, SourceError> {
        let refs = podrefs::references(pod.spec);
        let ns = pod.namespace;
        let err = |kind, name: &str| {
            let (namespace, name) = (ns.to_string(), name.to_string());
            move |source| SourceError::Get {
                kind,
                namespace,
                name,
                source,
            }
        };
        let mut out = PodObjects::default();
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        for name in refs.config_maps {
            let got = cms.get_opt(&name).await.map_err(err("configmap", &name))?;
            out.config_maps.insert(name, got.map(config_map_data));
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        for name in refs.secrets {
            let got = secrets.get_opt(&name).await.map_err(err("secret", &name))?;
            let data = got.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect::<BTreeMap<_, _>>()
            });
            out.secrets.insert(name, data);
        }
        Ok(out)
    }
}
