//! The agent's own log lines in a real journald (a namespace instance of the test's own): an
//! event inside a pod worker's span lands with POD, DAEMONSET, NODE and the event's
//! CONTAINER_ID as journal fields, each once, so `journalctl POD=... DAEMONSET=...` finds it.
mod common;

use std::time::Duration;

use common::{wait_for, Journald};
use daemonset_agent::agent::worker::pod_span;
use daemonset_agent::core::plan::PodKey;
use daemonset_agent::logging::JournaldLayer;
use tracing_subscriber::layer::SubscriberExt as _;

#[test]
fn an_event_in_a_pod_span_lands_in_journald_with_pod_and_daemonset() {
    let journald = Journald::start();
    let layer = JournaldLayer::connect(
        &journald.socket,
        &[
            ("SYSLOG_IDENTIFIER", "dsa-logging-test"),
            ("NODE", "node-7"),
        ],
    )
    .expect("journald's socket answers");
    let key = PodKey {
        namespace: "kube-system".into(),
        name: "exporter-node-7".into(),
    };
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let span = pod_span(&key, Some("exporter"), "node-7");
        let _in = span.enter();
        tracing::info!(
            container_id = "exporter-c1",
            restart_count = 2u32,
            "container started"
        );
    });
    let entry = wait_for("the entry in the journal", Duration::from_secs(20), || {
        journald
            .entries_where("POD", "kube-system/exporter-node-7")
            .into_iter()
            .next()
    });
    for (name, want) in [
        ("MESSAGE", "container started"),
        ("DAEMONSET", "exporter"),
        ("NODE", "node-7"),
        ("CONTAINER_ID", "exporter-c1"),
        ("RESTART_COUNT", "2"),
        ("PRIORITY", "6"),
        ("SYSLOG_IDENTIFIER", "dsa-logging-test"),
    ] {
        // a string, not an array: journalctl prints a field given twice as a list of values
        assert_eq!(entry[name], want, "{name} in {entry}");
    }
}
