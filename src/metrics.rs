//! Prometheus' text exposition format (version 0.0.4), written in one place for both daemons'
//! `/metrics` (the agent's node API and the server): families with their `# HELP` and `# TYPE`,
//! label values escaped, histograms as cumulative `_bucket`s up to `+Inf` with `_sum` and
//! `_count`. Also the families every process of ours reports about itself: the standard
//! `process_*` ones (from /proc/self) and the tokio runtime's stable metrics.
use std::fmt::Write as _;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Prometheus' label value escaping: backslash, double quote and newline.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One exposition being written: a family's header, then its samples.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

/// `{a="x",b="y"}`, or nothing without labels.
fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl Text {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) -> &mut Self {
        let _ = writeln!(
            self.out,
            "# HELP {name} {}\n# TYPE {name} {}",
            help.replace('\\', "\\\\").replace('\n', "\\n"),
            kind.as_str()
        );
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, pairs: &[(&str, &str)], value: f64) -> &mut Self {
        let _ = writeln!(self.out, "{name}{} {value}", labels(pairs));
        self
    }

    /// One sample with its timestamp (milliseconds since the epoch), as the kubelet's
    /// `/metrics/resource` writes them.
    pub fn sample_at(
        &mut self,
        name: &str,
        pairs: &[(&str, &str)],
        value: f64,
        ms: i64,
    ) -> &mut Self {
        let _ = writeln!(self.out, "{name}{} {value} {ms}", labels(pairs));
        self
    }

    /// One histogram series of the current family: `counts[i]` observations fell at or below
    /// `bounds[i]` and above the bound before (not cumulative: written cumulatively here), and
    /// `count - sum(counts)` above the last bound.
    pub fn histogram(
        &mut self,
        name: &str,
        pairs: &[(&str, &str)],
        h: &HistogramSnapshot<'_>,
    ) -> &mut Self {
        let mut cumulative = 0;
        for (bound, n) in h.bounds.iter().zip(h.counts) {
            cumulative += n;
            let le = bound.to_string();
            let mut with = pairs.to_vec();
            with.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &with, cumulative as f64);
        }
        let mut with = pairs.to_vec();
        with.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &with, h.count as f64);
        self.sample(&format!("{name}_sum"), pairs, h.sum);
        self.sample(&format!("{name}_count"), pairs, h.count as f64)
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A histogram's state at one moment, for [`Text::histogram`].
#[derive(Debug, Clone, Copy)]
pub struct HistogramSnapshot<'a> {
    /// The upper bounds, ascending (without `+Inf`).
    pub bounds: &'a [f64],
    /// Observations per bucket (not cumulative), one per bound.
    pub counts: &'a [u64],
    pub sum: f64,
    /// Every observation, those above the last bound included.
    pub count: u64,
}

/// This process, from /proc/self.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Process {
    /// User and system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    /// Seconds since the epoch.
    pub start_time: Option<f64>,
    pub open_fds: Option<usize>,
    pub threads: Option<usize>,
}

/// A `Key:   value kB` line of a /proc status-like file, in its unit.
pub fn proc_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl Process {
    /// Reads /proc/self (stat, status, fd) and /proc/stat's boot time.
    pub fn sample() -> Self {
        // SAFETY: sysconf with a valid name has no side effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // the fields after the command's ")": utime and stime are 12 and 13, starttime 20
        // (ticks since boot)
        let f: Vec<&str> = stat
            .rfind(')')
            .map(|i| stat[i + 1..].split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        Process {
            cpu_seconds: ticks(11).zip(ticks(12)).map(|(u, s)| (u + s) / hz),
            resident_bytes: proc_field(&status, "VmRSS").map(|k| k * 1024),
            start_time: boot.zip(ticks(19)).map(|(b, t)| b + t / hz),
            open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count()),
            threads: proc_field(&status, "Threads").map(|n| n as usize),
        }
    }

    /// The standard `process_*` families (those known).
    pub fn write(&self, t: &mut Text) {
        let rows = [
            (
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                Kind::Counter,
                self.cpu_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                Kind::Gauge,
                self.resident_bytes.map(|r| r as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                Kind::Gauge,
                self.start_time,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                Kind::Gauge,
                self.open_fds.map(|n| n as f64),
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                Kind::Gauge,
                self.threads.map(|n| n as f64),
            ),
        ];
        for (name, help, kind, value) in rows {
            if let Some(v) = value {
                t.family(name, help, kind).sample(name, &[], v);
            }
        }
    }
}

/// The tokio runtime the caller runs on (its stable metrics: workers, alive tasks, the global
/// queue's depth); nothing outside a runtime.
pub fn write_tokio(t: &mut Text) {
    let Ok(h) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let m = h.metrics();
    let rows = [
        (
            "tokio_runtime_workers",
            "Number of worker threads of the tokio runtime.",
            m.num_workers(),
        ),
        (
            "tokio_runtime_alive_tasks",
            "Number of tasks alive in the tokio runtime (spawned, not yet finished).",
            m.num_alive_tasks(),
        ),
        (
            "tokio_runtime_global_queue_depth",
            "Number of tasks waiting in the tokio runtime's global queue.",
            m.global_queue_depth(),
        ),
    ];
    for (name, help, v) in rows {
        t.family(name, help, Kind::Gauge)
            .sample(name, &[], v as f64);
    }
}

/// What both daemons report about themselves: the process and its runtime.
pub fn write_self(t: &mut Text) {
    Process::sample().write(t);
    write_tokio(t);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_help_and_type_and_escaped_labels() {
        let mut t = Text::new();
        t.family("x_total", "Some\nthing.", Kind::Counter)
            .sample("x_total", &[("verb", "GET"), ("path", "a\"b\\c\nd")], 3.0)
            .sample("x_total", &[], 1.5);
        let text = t.finish();
        assert_eq!(
            text,
            "# HELP x_total Some\\nthing.\n# TYPE x_total counter\n\
             x_total{verb=\"GET\",path=\"a\\\"b\\\\c\\nd\"} 3\nx_total 1.5\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_up_to_inf() {
        let mut t = Text::new();
        t.family("d_seconds", "Durations.", Kind::Histogram)
            .histogram(
                "d_seconds",
                &[("verb", "LIST")],
                &HistogramSnapshot {
                    bounds: &[0.1, 1.0],
                    counts: &[2, 3],
                    sum: 4.25,
                    count: 6,
                },
            );
        let lines: Vec<String> = t.finish().lines().map(String::from).collect();
        assert_eq!(
            lines,
            [
                "# HELP d_seconds Durations.",
                "# TYPE d_seconds histogram",
                "d_seconds_bucket{verb=\"LIST\",le=\"0.1\"} 2",
                "d_seconds_bucket{verb=\"LIST\",le=\"1\"} 5",
                "d_seconds_bucket{verb=\"LIST\",le=\"+Inf\"} 6",
                "d_seconds_sum{verb=\"LIST\"} 4.25",
                "d_seconds_count{verb=\"LIST\"} 6",
            ]
        );
    }

    #[test]
    fn timestamps_follow_the_value() {
        let mut t = Text::new();
        t.sample_at("n", &[("pod", "p")], 2.0, 1000);
        assert_eq!(t.finish(), "n{pod=\"p\"} 2 1000\n");
    }

    #[test]
    fn process_families_only_when_known() {
        let mut t = Text::new();
        Process {
            cpu_seconds: Some(1.5),
            resident_bytes: Some(4096),
            ..Process::default()
        }
        .write(&mut t);
        let text = t.finish();
        assert!(text.contains("\nprocess_cpu_seconds_total 1.5\n"), "{text}");
        assert!(
            text.contains("\nprocess_resident_memory_bytes 4096\n"),
            "{text}"
        );
        assert!(!text.contains("process_start_time_seconds"), "{text}");
        assert!(!text.contains("process_open_fds"), "{text}");
        let me = Process::sample();
        assert!(me.cpu_seconds.is_some() && me.start_time.is_some());
        assert!(me.resident_bytes.is_some_and(|r| r > 0));
        assert!(me.open_fds.is_some_and(|n| n > 0) && me.threads.is_some_and(|n| n > 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_runtime_reports_its_workers_and_tasks() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let held = tokio::spawn(async move {
            let _ = rx.await;
        });
        let mut t = Text::new();
        write_tokio(&mut t);
        let text = t.finish();
        assert!(text.contains("\ntokio_runtime_workers 2\n"), "{text}");
        let alive: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("tokio_runtime_alive_tasks "))
            .and_then(|v| v.parse().ok())
            .expect("alive tasks");
        assert!(alive >= 1.0, "{text}");
        tx.send(()).unwrap();
        held.await.unwrap();
    }
}
