//! kube-controller-manager's serviceaccounts controller: every namespace has a ServiceAccount
//! named `default`, made when the namespace appears and made again when it is deleted. Beside it
//! its root-ca-cert-publisher: every namespace has the ConfigMap `kube-root-ca.crt` whose
//! `ca.crt` is the cluster CA (what the pods' token volumes mount), made again when deleted and
//! put back when changed.
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::s;
use crate::server::auth::User;
use crate::server::kinds::serviceaccount::{
    DEFAULT_SERVICE_ACCOUNT, ROOT_CA_CONFIG_MAP, ROOT_CA_KEY,
};
use crate::server::kinds::{CONFIG_MAPS, NAMESPACES, SERVICE_ACCOUNTS};
use crate::server::query::{Filter, WriteOpts};
use crate::server::store::EventType;
use crate::server::verbs::{Api, ObjectRef, Part};

/// Makes the `default` ServiceAccount of `ns` unless it is there (or the namespace is going).
pub async fn ensure_default(api: &Api, user: &User, ns: &str) {
    let at = ObjectRef::new(&SERVICE_ACCOUNTS, Some(ns), DEFAULT_SERVICE_ACCOUNT);
    if api.get(user, at).await.is_ok() {
        return;
    }
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": ns}});
    match api
        .create(user, &SERVICE_ACCOUNTS, Some(ns), sa, WriteOpts::INTERNAL)
        .await
    {
        Ok(_) => tracing::info!(namespace = ns, "default service account created"),
        // 409: made meanwhile; 404: the namespace went meanwhile
        Err(e) if e.code == 409 || e.code == 404 => {}
        Err(e) => {
            tracing::warn!(namespace = ns, error = %e, "cannot create the default service account")
        }
    }
}

const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Makes or puts back the `kube-root-ca.crt` ConfigMap of `ns` holding `ca`.
pub async fn ensure_root_ca(api: &Api, user: &User, ns: &str, ca: &str) {
    let at = ObjectRef::new(&CONFIG_MAPS, Some(ns), ROOT_CA_CONFIG_MAP);
    let result = match api.get(user, at).await {
        Ok(cm)
            if cm
                .pointer(&format!("/data/{ROOT_CA_KEY}"))
                .and_then(|v| v.as_str())
                == Some(ca) =>
        {
            return
        }
        Ok(_) => api
            .update_with(user, at, Part::Main, WriteOpts::INTERNAL, |cur| {
                let mut new = cur.clone();
                new["data"] = json!({ROOT_CA_KEY: ca});
                if let Some(m) = new.get_mut("binaryData") {
                    *m = json!({});
                }
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                Ok(new)
            })
            .await
            .map(|_| ()),
        Err(_) => {
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": ROOT_CA_CONFIG_MAP, "namespace": ns,
                    "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
                "data": {ROOT_CA_KEY: ca}});
            api.create(user, &CONFIG_MAPS, Some(ns), cm, WriteOpts::INTERNAL)
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => tracing::info!(namespace = ns, "published the root CA"),
        Err(e) if e.code == 409 || e.code == 404 => {}
        Err(e) => tracing::warn!(namespace = ns, error = %e, "cannot publish the root CA"),
    }
}

/// What a namespace needs: its `default` ServiceAccount and (when the server has a CA) its
/// `kube-root-ca.crt`.
async fn ensure(api: &Api, user: &User, ns: &str) {
    ensure_default(api, user, ns).await;
    if let Some(issuer) = api.service_accounts.get() {
        ensure_root_ca(api, user, ns, &issuer.root_ca).await;
    }
}

/// Every namespace's `default` ServiceAccount and root CA, then each new namespace's, until the
/// store closes.
pub async fn run(api: &Arc<Api>) {
    let user = User::internal("serviceaccounts-controller");
    loop {
        let resources = [&NAMESPACES, &SERVICE_ACCOUNTS, &CONFIG_MAPS];
        let mut feed = match super::Feed::new(api.clone(), &user, &resources) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "the service account controller cannot watch the store");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Ok((namespaces, _)) = api.list(&user, &NAMESPACES, None, &Filter::default()).await {
            for ns in namespaces {
                ensure(api, &user, s(&ns, "/metadata/name")).await;
            }
        }
        loop {
            let d = feed.recv(super::DRAIN_MAX).await;
            for ev in &d.events {
                let ns = if ev.resource == NAMESPACES.key() && ev.event_type == EventType::Added {
                    ev.name.as_str()
                } else if (ev.resource == SERVICE_ACCOUNTS.key()
                    && ev.event_type == EventType::Deleted
                    && ev.name == DEFAULT_SERVICE_ACCOUNT)
                    || (ev.resource == CONFIG_MAPS.key()
                        && ev.event_type != EventType::Added
                        && ev.name == ROOT_CA_CONFIG_MAP)
                {
                    ev.namespace.as_str()
                } else {
                    continue;
                };
                ensure(api, &user, ns).await;
            }
            if d.closed {
                return;
            }
            if d.lagged {
                // every namespace again (above)
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::server::store::SqliteStore;
    use crate::server::verbs::DeleteOptions;

    #[tokio::test]
    async fn every_namespace_gets_a_default_service_account_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("s.db"), 100).unwrap());
        let api = Arc::new(Api::new(store, Default::default()));
        let user = User::internal("test");
        let ns = |n: &str| json!({"metadata": {"name": n}});
        api.create(&user, &NAMESPACES, None, ns("a"), WriteOpts::INTERNAL)
            .await
            .unwrap();
        let task = tokio::spawn({
            let api = api.clone();
            async move { run(&api).await }
        });
        let sa =
            |n: &'static str| ObjectRef::new(&SERVICE_ACCOUNTS, Some(n), DEFAULT_SERVICE_ACCOUNT);
        let mut changes = api.store.changes();
        let wait_for = |n: &'static str, present: bool| {
            let api = api.clone();
            let user = user.clone();
            let mut changes = changes.clone();
            async move {
                loop {
                    if api.get(&user, sa(n)).await.is_ok() == present {
                        return;
                    }
                    changes.changed().await.unwrap();
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait_for("a", true))
            .await
            .unwrap();
        api.create(&user, &NAMESPACES, None, ns("b"), WriteOpts::INTERNAL)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), wait_for("b", true))
            .await
            .unwrap();
        let rv = api.store.current_rv();
        api.delete(&user, sa("b"), &DeleteOptions::default())
            .await
            .unwrap();
        // made again: a later write than the delete
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Ok(o) = api.get(&user, sa("b")).await {
                    if crate::server::store::object_rv(&o) > rv + 1 {
                        return;
                    }
                }
                changes.changed().await.unwrap();
            }
        })
        .await
        .unwrap();
        task.abort();
    }
}
