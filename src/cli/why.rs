//! `daemonset-agent why DS --node NODE`: whether the DaemonSet runs on the node and why, rule by
//! rule, from the DaemonSet and the Node as the API has them and the same pure code the
//! DaemonSet controller decides with (`core::eligibility::explain`).
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::core::eligibility::{explain, Explanation, Outcome};

/// The report `why` prints for `ds` (`namespace/name`) on `node`.
pub fn render(ds: &str, node: &str, e: &Explanation) -> String {
    let verdict = match (
        e.eligibility.should_run,
        e.eligibility.should_continue_running,
    ) {
        (true, _) => "runs there",
        (false, true) => "does not run there (a pod already there keeps running)",
        (false, false) => "does not run there",
    };
    let mut out = format!("daemonset {ds} on node {node}: {verdict}\n");
    for c in &e.checks {
        let mark = match c.outcome {
            Outcome::Pass => "ok",
            Outcome::Blocks | Outcome::Evicts => "FAIL",
            Outcome::Note => "note",
        };
        let _ = writeln!(out, "  {mark:<5} {:<14} {}", c.rule.as_str(), c.detail);
    }
    out
}

/// Reads both objects, prints the report; Ok(true) when the DaemonSet runs on the node.
pub async fn run(
    ds_name: &str,
    node_name: &str,
    namespace: Option<&str>,
    kubeconfig: &Path,
) -> anyhow::Result<bool> {
    let (client, _) = super::tokens::admin(kubeconfig).await?;
    let ns = namespace
        .map(str::to_string)
        .unwrap_or_else(|| client.default_namespace().to_string());
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let nodes: Api<Node> = Api::all(client);
    let ds = daemonsets
        .get(ds_name)
        .await
        .map_err(super::api_error)
        .with_context(|| format!("get daemonset {ns}/{ds_name}"))?;
    let node = nodes
        .get(node_name)
        .await
        .map_err(super::api_error)
        .with_context(|| format!("get node {node_name}"))?;
    let e = explain(&node, &ds);
    print!("{}", render(&format!("{ns}/{ds_name}"), node_name, &e));
    Ok(e.eligibility.should_run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prints_each_rule_with_its_mark() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]},
        }))
        .unwrap();
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}},
                                  "spec": {"nodeSelector": {"zone": "a"},
                                           "containers": [{"name": "c", "image": "i"}]}}},
        }))
        .unwrap();
        let text = render("default/d", "n1", &explain(&node, &ds));
        assert_eq!(
            text,
            "daemonset default/d on node n1: does not run there (a pod already there keeps running)\n\
             \x20 ok    nodeName       spec.nodeName is not set\n\
             \x20 ok    nodeSelector   node selector: label zone is \"a\"\n\
             \x20 ok    nodeAffinity   node affinity: no required node affinity\n\
             \x20 FAIL  taint          taint gpu:NoSchedule is not tolerated\n\
             \x20 note  ready          the node has not reported a Ready condition yet: the pod runs once its agent does\n"
        );
    }
}
