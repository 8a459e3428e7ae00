//! Node affinity, node selectors, taints and tolerations (`core::eligibility`): a Node and a
//! DaemonSet from a stream of two JSON values (`{node} {daemonset}`), judged as the agent judges
//! whether this node runs the DaemonSet's pod.
#![no_main]

use daemonset_agent::core::eligibility;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let mut values = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let (Some(Ok(node)), Some(Ok(ds))) = (values.next(), values.next()) else {
        return;
    };
    let (Ok(node), Ok(ds)) = (
        serde_json::from_value::<Node>(node),
        serde_json::from_value::<DaemonSet>(ds),
    ) else {
        return;
    };
    let verdict = eligibility::node_should_run(&node, &ds);
    if let Some(mut spec) = ds.spec.and_then(|s| s.template.spec) {
        eligibility::add_daemon_tolerations(&mut spec);
        // the daemon tolerations added by hand give the same verdict
        assert_eq!(verdict, eligibility::pod_fits_node(&node, &spec));
        for taint in node.spec.iter().flat_map(|s| s.taints.iter().flatten()) {
            eligibility::taint_to_string(taint);
            for t in spec.tolerations.iter().flatten() {
                eligibility::tolerates_taint(t, taint);
            }
        }
    }
});
