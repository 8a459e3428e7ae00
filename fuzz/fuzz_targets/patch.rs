//! The three patch types of `core::patch` as the server applies them to a stored object: the
//! input is a stream of two JSON values, the document and the patch (`{"kind":"Node",...} [...]`).
//! The document's `kind` chooses the strategic-merge-patch schema, as the URL does on the server.
#![no_main]

use daemonset_agent::core::patch;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let mut values = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let (Some(Ok(doc)), Some(Ok(p))) = (values.next(), values.next()) else {
        return;
    };
    let root = match doc.get("kind").and_then(Value::as_str) {
        Some("DaemonSet") => &patch::DAEMONSET,
        Some("Node") => &patch::NODE,
        Some("Pod") => &patch::POD,
        _ => &patch::UNKNOWN,
    };
    let _ = patch::json_patch(&doc, &p);
    let merged = patch::merge_patch(&doc, &p);
    if let Ok(merged) = &merged {
        // RFC 7386: applying the same merge patch again changes nothing
        let again = patch::merge_patch(merged, &p).expect("merge patch failed the second time");
        assert_eq!(&again, merged, "merge patch is not idempotent");
    }
    let _ = patch::strategic_merge_patch(&doc, &p, root);
});
