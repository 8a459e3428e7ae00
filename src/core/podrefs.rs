//! The API objects a pod uses: the Secrets, ConfigMaps and the ServiceAccount its volumes, env,
//! image pulls and identity name (the edges of kube-apiserver's Node authorizer graph,
//! plugin/pkg/auth/authorizer/node/graph_populator.go, and what the kubelet's secret and
//! configmap managers fetch for it). The server's Node authorizer and the agent both ask this.
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, PodSpec};

/// The ServiceAccount of a pod that names none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// The names (in the pod's namespace) a pod refers to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRefs {
    pub secrets: BTreeSet<String>,
    pub config_maps: BTreeSet<String>,
    pub service_account: String,
}

/// The pod's ServiceAccount: `serviceAccountName`, else the deprecated `serviceAccount`, else
/// `default` (as the ServiceAccount admission plugin sets it).
pub fn service_account(spec: &PodSpec) -> &str {
    spec.service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
        .or(spec.service_account.as_deref().filter(|s| !s.is_empty()))
        .unwrap_or(DEFAULT_SERVICE_ACCOUNT)
}

fn containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
}

/// Every Secret, ConfigMap and the ServiceAccount `spec` refers to.
pub fn references(spec: &PodSpec) -> PodRefs {
    let mut r = PodRefs {
        service_account: service_account(spec).to_string(),
        ..PodRefs::default()
    };
    for s in spec.image_pull_secrets.iter().flatten() {
        r.secrets.insert(s.name.clone());
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(n) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            r.secrets.insert(n);
        }
        if let Some(cm) = &v.config_map {
            r.config_maps.insert(cm.name.clone());
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(s) = &p.secret {
                r.secrets.insert(s.name.clone());
            }
            if let Some(cm) = &p.config_map {
                r.config_maps.insert(cm.name.clone());
            }
        }
    }
    for c in containers(spec) {
        for e in c.env_from.iter().flatten() {
            if let Some(s) = &e.secret_ref {
                r.secrets.insert(s.name.clone());
            }
            if let Some(cm) = &e.config_map_ref {
                r.config_maps.insert(cm.name.clone());
            }
        }
        for e in c.env.iter().flatten() {
            let Some(from) = &e.value_from else { continue };
            if let Some(s) = &from.secret_key_ref {
                r.secrets.insert(s.name.clone());
            }
            if let Some(cm) = &from.config_map_key_ref {
                r.config_maps.insert(cm.name.clone());
            }
        }
    }
    r.secrets.remove("");
    r.config_maps.remove("");
    r
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_edge_of_the_node_graph() {
        // (pod spec, secrets, config maps, service account)
        let cases = [
            (json!({"containers": []}), vec![], vec![], "default"),
            (
                json!({"serviceAccountName": "sa", "imagePullSecrets": [{"name": "pull"}],
                    "volumes": [
                        {"name": "a", "secret": {"secretName": "vol-s"}},
                        {"name": "b", "configMap": {"name": "vol-cm"}},
                        {"name": "c", "projected": {"sources": [
                            {"secret": {"name": "proj-s"}}, {"configMap": {"name": "proj-cm"}},
                            {"serviceAccountToken": {"path": "t"}}]}},
                        {"name": "d", "emptyDir": {}}],
                    "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-s"}}]}],
                    "containers": [{"name": "c",
                        "envFrom": [{"configMapRef": {"name": "from-cm"}}],
                        "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-s", "key": "k"}}},
                                {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                                {"name": "C", "value": "x"}]}]}),
                vec!["env-s", "init-s", "proj-s", "pull", "vol-s"],
                vec!["env-cm", "from-cm", "proj-cm", "vol-cm"],
                "sa",
            ),
            (
                json!({"serviceAccount": "old", "containers": []}),
                vec![],
                vec![],
                "old",
            ),
        ];
        for (spec, secrets, cms, sa) in cases {
            let spec: PodSpec = serde_json::from_value(spec.clone()).unwrap();
            let got = references(&spec);
            assert_eq!(got.secrets, set(&secrets), "{spec:?}");
            assert_eq!(got.config_maps, set(&cms));
            assert_eq!(got.service_account, sa);
        }
    }
}
