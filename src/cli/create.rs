//! `daemonset-agent create daemonset NAME --image=IMG`: the `kubectl create deployment` that
//! kubectl lacks for DaemonSets. The object is built as kubectl builds a Deployment (label
//! `app: NAME` on the object, its selector and its template; one container per image, named
//! after the image), then printed (`--dry-run=client`), sent with `dryRun=All`
//! (`--dry-run=server`) or created through the API with the admin kubeconfig.
use std::path::Path;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::PostParams;
use kube::Api;
use serde_json::json;

use crate::core::labels::{validate_label_key, validate_label_value};

/// `--dry-run`: kubectl's values (`none` creates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DryRun {
    None,
    Client,
    Server,
}

/// `-o`: kubectl's printers that make sense here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Yaml,
    Json,
    Name,
}

/// What the command builds the DaemonSet from.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub name: String,
    pub images: Vec<String>,
    /// `key=value` pairs of `--node-selector`.
    pub node_selector: Vec<String>,
    /// `--namespace`; None: the kubeconfig's (and none in a client dry run's output).
    pub namespace: Option<String>,
    /// `--port`: the first container's containerPort.
    pub port: Option<i32>,
    /// After `--`: the containers' command.
    pub command: Vec<String>,
}

/// kubectl's container name for an image: the last path component without tag or digest,
/// `_` and `.` turned into `-` (kubectl then adds a random suffix; this does not, so a run is
/// repeatable), and `-2`, `-3`, ... for a name already taken.
fn container_name(image: &str, taken: &[String]) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let base = last.split(['@', ':']).next().unwrap_or(last);
    let base = base.replace(['_', '.'], "-");
    let mut name = base.clone();
    let mut n = 1;
    while taken.contains(&name) {
        n += 1;
        name = format!("{base}-{n}");
    }
    name
}

/// The DaemonSet `create daemonset` makes.
pub fn build(spec: &Spec) -> anyhow::Result<DaemonSet> {
    anyhow::ensure!(!spec.images.is_empty(), "--image is required");
    let mut selector = serde_json::Map::new();
    for pair in &spec.node_selector {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--node-selector {pair:?}: use key=value"))?;
        validate_label_key(key).with_context(|| format!("--node-selector {pair:?}"))?;
        validate_label_value(value).with_context(|| format!("--node-selector {pair:?}"))?;
        selector.insert(key.to_string(), json!(value));
    }
    let mut names = Vec::new();
    let mut containers = Vec::new();
    for image in &spec.images {
        let name = container_name(image, &names);
        let mut c = json!({"name": name, "image": image});
        if !spec.command.is_empty() {
            c["command"] = json!(spec.command);
        }
        if containers.is_empty() {
            if let Some(port) = spec.port {
                c["ports"] = json!([{"containerPort": port}]);
            }
        }
        names.push(name);
        containers.push(c);
    }
    let labels = json!({"app": spec.name});
    let mut pod = json!({"containers": containers});
    if !selector.is_empty() {
        pod["nodeSelector"] = selector.into();
    }
    let mut meta = json!({"name": spec.name, "labels": labels});
    if let Some(ns) = &spec.namespace {
        meta["namespace"] = json!(ns);
    }
    let ds = json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    });
    Ok(serde_json::from_value(ds)?)
}

/// `create daemonset`: builds, then prints, dry-runs on the server or creates.
pub async fn run(
    spec: &Spec,
    dry_run: DryRun,
    output: Option<Output>,
    kubeconfig: &Path,
) -> anyhow::Result<()> {
    let ds = build(spec)?;
    let created = match dry_run {
        DryRun::Client => ds,
        DryRun::None | DryRun::Server => {
            let (client, _) = super::tokens::admin(kubeconfig).await?;
            let ns = spec
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string());
            let api: Api<DaemonSet> = Api::namespaced(client, &ns);
            let params = PostParams {
                dry_run: dry_run == DryRun::Server,
                field_manager: Some("daemonset-agent-create".into()),
            };
            api.create(&params, &ds)
                .await
                .map_err(super::api_error)
                .with_context(|| format!("create daemonset {ns}/{}", spec.name))?
        }
    };
    let suffix = match dry_run {
        DryRun::None => "",
        DryRun::Client => " (dry run)",
        DryRun::Server => " (server dry run)",
    };
    let name = created.metadata.name.as_deref().unwrap_or(&spec.name);
    match output {
        None => println!("daemonset.apps/{name} created{suffix}"),
        Some(Output::Name) => println!("daemonset.apps/{name}"),
        Some(Output::Json) => println!("{}", serde_json::to_string_pretty(&created)?),
        Some(Output::Yaml) => print!("{}", serde_yaml::to_string(&created)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_what_kubectl_builds_for_a_deployment() {
        let spec = Spec {
            name: "mon".into(),
            images: vec![
                "127.0.0.1:5000/team/node_exporter:v1.5".into(),
                "busybox@sha256:abc".into(),
                "other/node_exporter".into(),
            ],
            node_selector: vec![
                "node-role.kubernetes.io/worker=true".into(),
                "zone=a".into(),
            ],
            namespace: Some("ops".into()),
            port: Some(9100),
            command: vec![],
        };
        let got = serde_json::to_value(build(&spec).unwrap()).unwrap();
        assert_eq!(
            got,
            json!({
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "mon", "namespace": "ops", "labels": {"app": "mon"}},
                "spec": {
                    "selector": {"matchLabels": {"app": "mon"}},
                    "template": {
                        "metadata": {"labels": {"app": "mon"}},
                        "spec": {
                            "containers": [
                                {"name": "node-exporter", "image": "127.0.0.1:5000/team/node_exporter:v1.5",
                                 "ports": [{"containerPort": 9100}]},
                                {"name": "busybox", "image": "busybox@sha256:abc"},
                                {"name": "node-exporter-2", "image": "other/node_exporter"},
                            ],
                            "nodeSelector": {"node-role.kubernetes.io/worker": "true", "zone": "a"},
                        },
                    },
                },
            })
        );
    }

    #[test]
    fn refuses_what_the_server_would() {
        let base = Spec {
            name: "x".into(),
            images: vec!["i".into()],
            ..Default::default()
        };
        for (selector, why) in [
            ("zone", "use key=value"),
            ("bad key!=a", "--node-selector"),
            ("zone=not a value", "--node-selector"),
        ] {
            let spec = Spec {
                node_selector: vec![selector.into()],
                ..base.clone()
            };
            let err = format!("{:#}", build(&spec).unwrap_err());
            assert!(err.contains(why), "{selector}: {err}");
        }
        let no_image = Spec {
            images: vec![],
            ..base
        };
        assert!(build(&no_image).is_err());
    }
}
