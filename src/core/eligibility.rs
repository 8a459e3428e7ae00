//! Which nodes a DaemonSet's pod runs on: Kubernetes' NodeShouldRunDaemonPod, pure.
//! STUB: signatures agreed; bodies filled in by the core owner.
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, PodSpec};

/// The verdict for one (node, DaemonSet) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eligibility {
    /// A pod should be created on the node.
    pub should_run: bool,
    /// A pod already on the node may keep running (false: remove it promptly).
    pub should_continue_running: bool,
    /// Why not, in words a person reads (empty when it runs).
    pub reasons: Vec<String>,
}

/// Kubernetes' NodeShouldRunDaemonPod for `ds` on `node`, the automatic DaemonSet tolerations
/// included.
pub fn node_should_run(node: &Node, ds: &DaemonSet) -> Eligibility {
    let _ = (node, ds);
    unimplemented!("stub")
}

/// The same verdict for a bare pod spec (already carrying its tolerations).
pub fn pod_fits_node(node: &Node, spec: &PodSpec) -> Eligibility {
    let _ = (node, spec);
    unimplemented!("stub")
}

/// Adds the tolerations Kubernetes' DaemonSet controller adds to every daemon pod
/// (util.AddOrUpdateDaemonPodTolerations).
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let _ = spec;
    unimplemented!("stub")
}
