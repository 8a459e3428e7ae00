//! What the node's files say: its capacity, a dead container's termination message.
use super::*;

/// The node's capacity: its CPUs, its memory (MemTotal) and the file system of the state
/// directory.
pub(super) fn node_capacity(state_dir: &Path) -> crate::runtime::downward::NodeCapacity {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
        })
        .map_or(0, |kib| kib * 1024);
    let storage = nix::sys::statvfs::statvfs(state_dir)
        .map(|s| (s.blocks() as i64).saturating_mul(s.fragment_size() as i64))
        .unwrap_or(0);
    crate::runtime::downward::NodeCapacity {
        cpu_milli: cpus * 1000,
        memory_bytes: memory,
        ephemeral_storage_bytes: storage,
    }
}

/// The kubelet's termination message: the last 4 KiB of the container's message file, or when
/// that is empty and `log` is given (FallbackToLogsOnError after a failure) the last 80 lines,
/// at most 2 KiB, of its log.
pub(super) fn termination_message(file: &Path, log: Option<&Path>) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let tail = |path: &Path, max: u64| -> Option<Vec<u8>> {
        let mut f = std::fs::File::open(path).ok()?;
        let len = f.metadata().ok()?.len();
        let start = len.saturating_sub(max);
        f.seek(SeekFrom::Start(start)).ok()?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).ok()?;
        Some(buf)
    };
    let message = tail(file, 4096).unwrap_or_default();
    if !message.is_empty() {
        return Some(String::from_utf8_lossy(&message).to_string());
    }
    let raw = tail(log?, 64 * 1024)?;
    // from the first whole line on, decoded as `logs` decodes the file
    let from = if raw.len() as u64 >= 64 * 1024 {
        raw.iter()
            .position(|b| *b == b'\n')
            .map_or(raw.len(), |i| i + 1)
    } else {
        0
    };
    let mut decoder = crate::logdriver::cri::Decoder::new(false);
    let mut text = Vec::new();
    decoder.push(&raw[from..], &mut text);
    decoder.finish(&mut text);
    let text = String::from_utf8_lossy(&text).to_string();
    // the last 80 lines with their newlines, as the kubelet's ReadLogs writes them
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let last = lines[lines.len().saturating_sub(80)..].concat();
    let cut = last.len().saturating_sub(2048);
    let start = (cut..=last.len())
        .find(|i| last.is_char_boundary(*i))
        .unwrap_or(last.len());
    let out = last[start..].to_string();
    (!out.is_empty()).then_some(out)
}
