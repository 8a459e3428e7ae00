//! The agent's configuration file (`agent::config`): TOML parsed into `FileConfig`, then merged
//! with (empty) flags and validated into the `Config` the agent runs with: node name, labels,
//! taints, log rotation quantities.
#![no_main]

use std::path::Path;

use daemonset_agent::agent::config::{self, Flags};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = config::parse_file(text, Path::new("/etc/daemonset-agent/agent.toml")) else {
        return;
    };
    for taint in &file.node_taints {
        let _ = config::parse_taint(taint);
    }
    let _ = config::merge(file, &Flags::default(), "fuzz-host");
});
