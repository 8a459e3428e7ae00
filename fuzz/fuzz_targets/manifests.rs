//! Manifests as the API server and `kubectl apply` send them: JSON, or YAML with several
//! documents, decoded into `serde_json::Value`, then into the typed DaemonSet, Pod and Node, then
//! defaulted and validated as the server does (`core::validation`), with the 422 `Status` built
//! from the errors (`server::status::ApiError::invalid`).
#![no_main]

use daemonset_agent::core::{hash, validation};
use daemonset_agent::server::status::ApiError;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const POLICY: validation::Policy = validation::Policy {
    allow_privileged: false,
    allow_host_path: false,
};

fn check(doc: &Value, previous: &mut Option<DaemonSet>) {
    if let Ok(mut ds) = serde_json::from_value::<DaemonSet>(doc.clone()) {
        validation::default_daemonset(&mut ds);
        let once = ds.clone();
        validation::default_daemonset(&mut ds);
        assert_eq!(once, ds, "defaulting a DaemonSet twice changed it");
        let mut errors = match previous.as_ref() {
            Some(old) => validation::validate_daemonset_update(&ds, old),
            None => validation::validate_daemonset(&ds),
        };
        if let Some(spec) = &ds.spec {
            errors.extend(validation::validate_policy(
                spec.template.spec.as_ref(),
                "spec.template.spec",
                POLICY,
            ));
            hash::template_hash(&spec.template, spec.template.spec.as_ref().map(|_| 1));
        }
        let name = ds.metadata.name.as_deref().unwrap_or("");
        ApiError::invalid("DaemonSet", name, &errors).to_status();
        *previous = Some(ds);
    }
    if let Ok(pod) = serde_json::from_value::<Pod>(doc.clone()) {
        let mut errors = validation::validate_pod(&pod);
        errors.extend(validation::validate_policy(
            pod.spec.as_ref(),
            "spec",
            POLICY,
        ));
        ApiError::invalid("Pod", "p", &errors).to_status();
        if let Some(mut spec) = pod.spec {
            validation::default_pod_spec(&mut spec);
        }
    }
    if let Ok(node) = serde_json::from_value::<Node>(doc.clone()) {
        let errors = validation::validate_node(&node);
        ApiError::invalid("Node", "n", &errors).to_status();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut previous = None;
    if let Ok(doc) = serde_json::from_slice::<Value>(data) {
        check(&doc, &mut previous);
    }
    // kubectl's YAML: several documents; each one as the server decodes application/yaml
    for document in serde_yaml::Deserializer::from_slice(data) {
        match <Value as serde::Deserialize>::deserialize(document) {
            Ok(doc) => check(&doc, &mut previous),
            Err(_) => break,
        }
    }
});
