//! Label and field selectors (`core::labels`) as the server parses them from `labelSelector=` and
//! `fieldSelector=`, and `LabelSelector` objects as DaemonSets carry them. The input is
//! `LABEL-SELECTOR \n FIELD-SELECTOR \n` then up to two JSON values: a `LabelSelector` and the
//! labels (`{"k":"v"}`) everything is matched against.
#![no_main]

use std::collections::BTreeMap;

use daemonset_agent::core::labels::{self, Selector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let label_text = lines.next().unwrap_or("");
    let field_text = lines.next().unwrap_or("");
    let mut values = serde_json::Deserializer::from_str(lines.next().unwrap_or(""))
        .into_iter::<Value>()
        .map_while(Result::ok);
    let label_selector: Option<LabelSelector> =
        values.next().and_then(|v| serde_json::from_value(v).ok());
    let labels: BTreeMap<String, String> = values
        .next()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let get = |k: &str| labels.get(k).cloned();

    if let Ok(sel) = Selector::parse(label_text) {
        let matched = sel.matches(&labels);
        assert_eq!(matched, sel.matches_with(&get));
        // What the parser accepted prints back to a selector that parses to the same requirements.
        let printed = sel.to_string();
        let reparsed = Selector::parse(&printed)
            .unwrap_or_else(|e| panic!("{label_text:?} printed as {printed:?}: {e}"));
        assert_eq!(sel, reparsed, "{label_text:?} printed as {printed:?}");
    }
    if let Ok(sel) = Selector::parse_fields(field_text) {
        sel.matches_with(&get);
    }
    if let Some(ls) = label_selector {
        let matched = labels::selector_matches(&ls, &labels);
        if let Ok(sel) = Selector::from_label_selector(&ls) {
            assert_eq!(matched, sel.matches(&labels));
        }
    }
});
