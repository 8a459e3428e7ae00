//! The API objects the agent's pods use, fetched for them as the kubelet's secret and configmap
//! managers do (a GET of each object a pod names, when a container starts and on each of the
//! pod's syncs, so a change reaches a mounted volume within the resync period), through the node's
//! own credential: the server's Node authorizer lets a node read only what its pods use. The
//! workers ask [`ObjectSource`]; [`Unavailable`] answers nothing (tests without an API).
//!
//! The service account tokens of `serviceAccountToken` projections come from the kubelet's token
//! manager ([`TokenManager`]): a TokenRequest bound to the pod (name and uid) for the pod's
//! ServiceAccount, the audience and `expirationSeconds` of the projection, kept and handed out
//! again until 80% of its lifetime (or 24 hours) has passed, then requested anew, so the volume
//! written on the pod's next sync holds a fresh token.
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret, ServiceAccount};
use kube::api::PostParams;
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
    #[error("request a token of service account {namespace}/{service_account} for pod {pod}")]
    Token {
        namespace: String,
        service_account: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("the token of service account {namespace}/{service_account} has no expiration")]
    NoExpiration {
        namespace: String,
        service_account: String,
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

    /// The pod of API uid `uid` is gone from this node: whatever is kept for it goes too.
    fn forget(&self, _uid: &str) {}
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
    pub tokens: TokenManager,
    /// The last objects each pod got, if kept (see [`Remembered`]).
    remembered: Option<Remembered>,
}

impl FromApi {
    pub fn new(client: kube::Client) -> FromApi {
        FromApi {
            client,
            tokens: TokenManager::default(),
            remembered: None,
        }
    }

    /// The same, keeping each pod's last objects in `dir` for when the API does not answer.
    pub fn remembering(client: kube::Client, remembered: Remembered) -> FromApi {
        FromApi {
            remembered: Some(remembered),
            ..FromApi::new(client)
        }
    }
}

/// The last objects each pod got from the API, kept on disk (`DIR/UID.json`, mode 0600: they
/// hold Secrets and tokens) so that a container still (re)starts while the API is down, also
/// after the agent itself restarted, as the kubelet starts containers from the volumes it has
/// already set up. Every pod has such objects since the ServiceAccount admission gives it the
/// `kube-root-ca.crt` ConfigMap and a token.
pub struct Remembered {
    dir: std::path::PathBuf,
    /// What is on disk, by pod uid: a write only when a pod's objects changed.
    written: Mutex<HashMap<String, PodObjects>>,
}

impl Remembered {
    /// Opens `dir`, dropping what it holds for pods not in `keep` (by uid).
    pub fn open(dir: std::path::PathBuf, keep: &std::collections::BTreeSet<String>) -> Remembered {
        let _ = std::fs::create_dir_all(&dir);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let uid = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if !keep.contains(uid) {
                let _ = std::fs::remove_file(&path);
            }
        }
        Remembered {
            dir,
            written: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, uid: &str) -> std::path::PathBuf {
        self.dir.join(format!("{uid}.json"))
    }

    fn keep(&self, uid: &str, objects: &PodObjects) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if written.get(uid) == Some(objects) {
            return;
        }
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let tmp = self.dir.join(format!(".{uid}.tmp"));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&serde_json::to_vec(objects)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.path(uid))
        };
        match write() {
            Ok(()) => {
                written.insert(uid.to_string(), objects.clone());
            }
            Err(e) => tracing::warn!(pod_uid = uid, error = %e, "could not keep the pod's objects"),
        }
    }

    /// Drops what is kept for a pod that is gone (on disk and in memory).
    fn forget(&self, uid: &str) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.remove(uid);
        if written.is_empty() {
            // a HashMap keeps its table at its largest: after a wave of pods, give it back
            written.shrink_to_fit();
        }
        drop(written);
        match std::fs::remove_file(self.path(uid)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(pod_uid = uid, error = %e, "could not remove the pod's kept objects")
            }
        }
    }

    fn recall(&self, uid: &str) -> Option<PodObjects> {
        let text = std::fs::read(self.path(uid)).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// A projection's `expirationSeconds` when it names none (the API's default).
const DEFAULT_TOKEN_SECONDS: i64 = 3600;
/// The kubelet's longest use of a token, whatever its expiry.
const MAX_TOKEN_AGE_SECONDS: i64 = 24 * 3600;

/// Whether a token issued at `issued` expiring at `expires` (Unix seconds) must be requested
/// again at `now`: the kubelet's `requiresRefresh` (80% of its lifetime passed, or 24 hours).
pub fn needs_refresh(issued: i64, expires: i64, now: i64) -> bool {
    let lifetime = expires - issued;
    now >= expires || now - issued >= MAX_TOKEN_AGE_SECONDS || (now - issued) * 5 >= lifetime * 4
}

/// What a token is for: the pod (by uid), its ServiceAccount, the audience and the lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    namespace: String,
    pod_uid: String,
    service_account: String,
    audience: String,
    seconds: i64,
}

#[derive(Debug, Clone)]
struct Issued {
    token: String,
    issued: i64,
    expires: i64,
}

/// The kubelet's token manager: tokens by what they are for, requested when missing or due.
#[derive(Default)]
pub struct TokenManager {
    cache: Mutex<HashMap<TokenKey, Issued>>,
}

impl TokenManager {
    /// How many tokens are held (for tests).
    pub fn len(&self) -> usize {
        self.cache.lock().map_or(0, |c| c.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the tokens of the pod of uid `uid` (gone from this node).
    fn forget(&self, uid: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|k, _| k.pod_uid != uid);
        if cache.is_empty() {
            cache.shrink_to_fit();
        }
    }

    /// The token `key` asks for: the one held while it is fresh, else a new one from the API.
    async fn get(
        &self,
        client: &kube::Client,
        pod: &PodRef<'_>,
        key: TokenKey,
        now: DateTime<Utc>,
    ) -> Result<String, SourceError> {
        let held = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            // tokens of gone pods expire and go
            cache.retain(|_, t| t.expires > now.timestamp());
            cache.get(&key).cloned()
        };
        if let Some(t) = held.filter(|t| !needs_refresh(t.issued, t.expires, now.timestamp())) {
            return Ok(t.token);
        }
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &key.namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: if key.audience.is_empty() {
                    Vec::new()
                } else {
                    vec![key.audience.clone()]
                },
                expiration_seconds: Some(key.seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod.name.to_string()),
                    uid: Some(pod.uid.to_string()),
                }),
            },
            ..TokenRequest::default()
        };
        let answer = sas
            .create_token_request(&key.service_account, &PostParams::default(), &request)
            .await
            .map_err(|source| SourceError::Token {
                namespace: key.namespace.clone(),
                service_account: key.service_account.clone(),
                pod: pod.name.to_string(),
                source,
            })?;
        let Some(status) = answer.status else {
            return Err(SourceError::NoExpiration {
                namespace: key.namespace.clone(),
                service_account: key.service_account.clone(),
            });
        };
        let expires = status.expiration_timestamp.0.as_second();
        let issued = Issued {
            token: status.token,
            issued: now.timestamp(),
            expires,
        };
        tracing::info!(
            pod = pod.name,
            service_account = key.service_account.as_str(),
            expires,
            "service account token issued"
        );
        let token = issued.token.clone();
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, issued);
        Ok(token)
    }
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
        let got = self.objects_at(pod, Utc::now()).await;
        let Some(remembered) = &self.remembered else {
            return got;
        };
        match got {
            Ok(objects) => {
                remembered.keep(pod.uid, &objects);
                Ok(objects)
            }
            Err(e) => match remembered.recall(pod.uid) {
                Some(objects) => {
                    tracing::warn!(
                        pod = pod.name,
                        error = %crate::runtime::chain(&e),
                        "the API did not give the pod's objects: using those it gave last"
                    );
                    Ok(objects)
                }
                None => Err(e),
            },
        }
    }

    fn forget(&self, uid: &str) {
        self.tokens.forget(uid);
        if let Some(remembered) = &self.remembered {
            remembered.forget(uid);
        }
    }
}

impl FromApi {
    /// The objects of `pod`, its tokens as the token manager has them at `now`.
    pub async fn objects_at(
        &self,
        pod: &PodRef<'_>,
        now: DateTime<Utc>,
    ) -> Result<PodObjects, SourceError> {
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
        let sa = pod
            .spec
            .service_account_name
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(podrefs::DEFAULT_SERVICE_ACCOUNT);
        for (audience, seconds) in token_projections(pod.spec) {
            let key = TokenKey {
                namespace: ns.to_string(),
                pod_uid: pod.uid.to_string(),
                service_account: sa.to_string(),
                audience: audience.clone(),
                seconds,
            };
            let token = self.tokens.get(&self.client, pod, key, now).await?;
            out.tokens.insert(audience, token);
        }
        Ok(out)
    }
}

/// The (audience, expirationSeconds) of each `serviceAccountToken` projection of the pod.
fn token_projections(spec: &PodSpec) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref())
        .map(|t| {
            (
                t.audience.clone().unwrap_or_default(),
                t.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS),
            )
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_refreshed_at_eighty_percent_or_a_day() {
        // (issued, expires, now, refresh)
        let hour = 3600;
        let cases = [
            (0, hour, 0, false),
            (0, hour, 2879, false),
            (0, hour, 2880, true),
            (0, hour, hour, true),
            (0, 365 * 24 * hour, 24 * hour - 1, false),
            (0, 365 * 24 * hour, 24 * hour, true),
            (100, 100 + 600, 579, false),
            (100, 100 + 600, 580, true),
        ];
        for (issued, expires, now, want) in cases {
            assert_eq!(
                needs_refresh(issued, expires, now),
                want,
                "{issued} {expires} {now}"
            );
        }
    }

    /// Against the real server: the token is bound to the pod, authenticates as its
    /// ServiceAccount, is handed out again while fresh, requested anew at 80% of its life, and
    /// stops authenticating once the pod is gone.
    #[tokio::test]
    async fn tokens_come_from_token_requests_bound_to_the_pod() {
        use k8s_openapi::api::authentication::v1::SelfSubjectReview;
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::{DeleteParams, PostParams};
        let api = crate::agent::test_api::start().await;
        let pods: Api<Pod> = Api::namespaced(api.client.clone(), "default");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}}))
        .unwrap();
        let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
        let spec = pod.spec.clone().unwrap();
        // the ServiceAccount admission gave it the token volume
        let vol = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name.starts_with("kube-api-access-"));
        assert!(vol.is_some(), "{spec:?}");
        let uid = pod.metadata.uid.clone().unwrap();
        let source = FromApi::new(api.client.clone());
        let at = |s: i64| DateTime::<Utc>::from_timestamp(Utc::now().timestamp() + s, 0).unwrap();
        let pref = PodRef {
            namespace: "default",
            name: "p",
            uid: &uid,
            spec: &spec,
        };
        // the root CA is published in every namespace
        let cms: Api<ConfigMap> = Api::namespaced(api.client.clone(), "default");
        crate::agent::test_api::until(
            &cms,
            "kube-root-ca.crt",
            "the root CA",
            |o: Option<&ConfigMap>| o.is_some(),
        )
        .await;
        let first = source.objects_at(&pref, at(0)).await.unwrap();
        let token = first.tokens[""].clone();
        let ca = first.config_maps["kube-root-ca.crt"].clone().unwrap();
        assert!(
            ca.data["ca.crt"].starts_with("-----BEGIN CERTIFICATE-----"),
            "{ca:?}"
        );
        // who the token is
        let as_sa = {
            let kc = kube::config::Kubeconfig::read_from(&api.server.kubeconfig).unwrap();
            let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap();
            cfg.auth_info.token = Some(token.clone().into());
            kube::Client::try_from(cfg).unwrap()
        };
        let reviews: Api<SelfSubjectReview> = Api::all(as_sa.clone());
        let review = reviews
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .unwrap();
        let info = review.status.unwrap().user_info.unwrap();
        assert_eq!(
            info.username.as_deref(),
            Some("system:serviceaccount:default:default")
        );
        assert_eq!(
            info.groups.unwrap(),
            [
                "system:serviceaccounts",
                "system:serviceaccounts:default",
                "system:authenticated"
            ]
        );
        // an SA may do nothing but ask about itself
        let denied = Api::<Pod>::namespaced(as_sa.clone(), "default")
            .list(&Default::default())
            .await;
        assert!(
            matches!(&denied, Err(kube::Error::Api(s)) if s.code == 403),
            "{denied:?}"
        );
        // fresh until 80% of 3607 s
        let again = source.objects_at(&pref, at(2880)).await.unwrap();
        assert_eq!(again.tokens[""], token);
        let renewed = source.objects_at(&pref, at(2890)).await.unwrap();
        assert_ne!(renewed.tokens[""], token);
        assert_eq!(source.tokens.len(), 1);
        // the pod gone, its tokens stop working
        pods.delete("p", &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
        let gone = reviews
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await;
        assert!(
            matches!(&gone, Err(kube::Error::Api(s)) if s.code == 401),
            "{gone:?}"
        );
        // and the agent holds them no longer
        source.forget(&uid);
        assert!(source.tokens.is_empty());
    }

    /// A gone pod's kept objects go, from disk and memory; the other pods' stay.
    #[test]
    fn a_gone_pods_objects_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let kept = Remembered::open(dir.path().join("objs"), &Default::default());
        let objects = PodObjects {
            tokens: [("".to_string(), "t".to_string())].into(),
            ..PodObjects::default()
        };
        kept.keep("u1", &objects);
        kept.keep("u2", &objects);
        assert_eq!(kept.recall("u1"), Some(objects.clone()));
        kept.forget("u1");
        assert_eq!(kept.recall("u1"), None);
        assert!(!kept.path("u1").exists());
        assert_eq!(kept.recall("u2"), Some(objects.clone()));
        let written = kept.written.lock().unwrap();
        assert_eq!(written.keys().collect::<Vec<_>>(), ["u2"]);
    }

    #[test]
    fn each_projection_asks_for_one_token() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [],
            "volumes": [
                {"name": "a", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                    {"serviceAccountToken": {"path": "t2", "audience": "vault"}}]}},
                {"name": "b", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}},
                {"name": "c", "configMap": {"name": "x"}}]}))
        .unwrap();
        assert_eq!(
            token_projections(&spec),
            [("".to_string(), 3607), ("vault".to_string(), 3600)]
        );
    }
}
