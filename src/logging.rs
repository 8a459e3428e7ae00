//! Logging: `tracing` spans and events, to journald and to a readable stderr.
//!
//! journald gets one entry per event with MESSAGE, PRIORITY (from the level: error 3, warn 4,
//! info 6, debug and trace 7), TARGET, CODE_FILE, CODE_LINE, SYSLOG_IDENTIFIER, the fields of the
//! event and of every span it happened in, uppercased (`pod` -> POD, `container_id` ->
//! CONTAINER_ID), and the process's fixed fields (NODE for the agent). Each name is written once:
//! the event's own field wins over a span's, an inner span's over an outer one's, so an event in
//! a pod span carries exactly one POD, DAEMONSET and NODE. (The `tracing-journald` crate writes a
//! span field as often as spans nest it, and only to the system socket; this layer is small and
//! reuses the log driver's encoding and non-blocking socket.)
//!
//! stderr gets `HH:MM:SS.mmm LEVEL span{fields}: message fields` lines, coloured on a terminal,
//! unless stderr is itself the journal stream (under systemd: not twice); always when journald
//! cannot be reached. `DSA_LOG` filters: a plain level (`debug`) applies to this program, other
//! crates stay at warn; anything else is taken as an `EnvFilter` directive list
//! (`daemonset_agent::agent=debug,kube=info`).
use std::fmt::{self, Write as _};
use std::path::Path;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::logdriver::journal::{self, Journal};

/// The environment variable that sets what is logged.
pub const ENV: &str = "DSA_LOG";
/// This crate's target prefix (module paths of the library and the binary alike).
const OWN_TARGET: &str = "daemonset_agent";

/// Installs the global subscriber once; `node` is added to every journal entry as NODE when
/// given. A second call does nothing.
pub fn init(identifier: &str, node: Option<&str>) {
    let (filter, bad_filter) = filter(std::env::var(ENV).ok().as_deref());
    let mut fixed = vec![("SYSLOG_IDENTIFIER", identifier)];
    fixed.extend(node.map(|n| ("NODE", n)));
    let journald = JournaldLayer::connect(Path::new(journal::DEFAULT_SOCKET), &fixed).ok();
    // Under systemd stderr goes to the journal already: do not log twice.
    let stderr = journald.is_none() || !stderr_is_journal();
    let fmt = stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .with_timer(ClockTime)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(fmt)
        .try_init();
    if let Some(e) = bad_filter {
        tracing::warn!(error = %e, "{ENV} is not a level nor a filter; logging at info");
    }
}

/// The filter for a `DSA_LOG` value, and the parse error when the value was unusable (the
/// default is used then).
pub fn filter(value: Option<&str>) -> (EnvFilter, Option<String>) {
    let by_level = |level: LevelFilter| {
        // other crates: warnings and errors only, unless even those are asked to be quiet
        let others = level.min(LevelFilter::WARN);
        EnvFilter::new(format!("{others},{OWN_TARGET}={level}"))
    };
    let value = value.map(str::trim).filter(|v| !v.is_empty());
    let Some(value) = value else {
        return (by_level(LevelFilter::INFO), None);
    };
    if let Ok(level) = value.parse::<LevelFilter>() {
        return (by_level(level), None);
    }
    match EnvFilter::builder().parse(value) {
        Ok(f) => (f, None),
        Err(e) => (by_level(LevelFilter::INFO), Some(e.to_string())),
    }
}

/// systemd sets JOURNAL_STREAM=DEV:INODE when stdout/stderr of the service is the journal.
fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    stream == format!("{}:{}", st.st_dev, st.st_ino)
}

/// The stderr lines' time of day, as the agent always printed it.
struct ClockTime;

impl tracing_subscriber::fmt::time::FormatTime for ClockTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> fmt::Result {
        write!(w, "{}", chrono::Utc::now().format("%H:%M:%S%.3f"))
    }
}

/// journald's field name for a tracing field name: uppercased, `.` as `_`, other characters
/// journald refuses left out; None when nothing valid remains.
pub fn field_name(name: &str) -> Option<String> {
    let mut out: String = name
        .chars()
        .map(|c| if c == '.' { '_' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let skip = out
        .bytes()
        .take_while(|b| *b == b'_' || b.is_ascii_digit())
        .count();
    out.drain(..skip);
    out.truncate(64);
    journal::valid_field_name(&out).then_some(out)
}

fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// The fields of a span or an event as (journald name, value), in the order recorded.
#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        let Some(name) = field_name(field.name()) else {
            return;
        };
        // a field recorded again (Span::record) replaces its value
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, crate::runtime::chain(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.put(field, s);
    }
}

/// Sends every event to journald's native socket (see the module's doc for the fields).
pub struct JournaldLayer {
    journal: Mutex<Journal>,
    /// Encoded once: SYSLOG_IDENTIFIER, NODE, ...
    fixed: Vec<u8>,
    fixed_names: Vec<String>,
}

impl JournaldLayer {
    /// A layer writing to the journald socket at `socket`, with `fixed` (name, value) fields on
    /// every entry. Fails when nothing listens there.
    pub fn connect(socket: &Path, fixed: &[(&str, &str)]) -> std::io::Result<JournaldLayer> {
        let journal = Journal::new(socket)?;
        // an empty datagram reaches journald, which ignores it: the socket is there and open
        journal.probe()?;
        let mut encoded = Vec::new();
        let mut fixed_names = Vec::new();
        for (name, value) in fixed {
            if journal::valid_field_name(name) {
                journal::append_field(&mut encoded, name, value.as_bytes());
                fixed_names.push(name.to_string());
            }
        }
        Ok(JournaldLayer {
            journal: Mutex::new(journal),
            fixed: encoded,
            fixed_names,
        })
    }

    /// Entries that could not be delivered (journald gone, stalled or refusing).
    pub fn dropped(&self) -> u64 {
        self.journal.lock().map(|j| j.dropped).unwrap_or_default()
    }
}

impl<S> tracing_subscriber::Layer<S> for JournaldLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(fields) = ext.get_mut::<Fields>() {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut buf = Vec::with_capacity(256);
        let meta = event.metadata();
        let message = fields
            .0
            .iter()
            .position(|(n, _)| n == "MESSAGE")
            .map(|i| fields.0.remove(i).1)
            .unwrap_or_default();
        journal::append_field(&mut buf, "MESSAGE", message.as_bytes());
        journal::append_field(&mut buf, "PRIORITY", &[b'0' + priority(meta.level())]);
        journal::append_field(&mut buf, "TARGET", meta.target().as_bytes());
        if let Some(file) = meta.file() {
            journal::append_field(&mut buf, "CODE_FILE", file.as_bytes());
        }
        if let Some(line) = meta.line() {
            journal::append_field(&mut buf, "CODE_LINE", line.to_string().as_bytes());
        }
        let mut written: Vec<String> = self.fixed_names.clone();
        written
            .extend(["MESSAGE", "PRIORITY", "TARGET", "CODE_FILE", "CODE_LINE"].map(String::from));
        let mut put = |buf: &mut Vec<u8>, (name, value): &(String, String)| {
            if !written.contains(name) {
                journal::append_field(buf, name, value.as_bytes());
                written.push(name.clone());
            }
        };
        for f in &fields.0 {
            put(&mut buf, f);
        }
        // the innermost span first: its value of a name nested spans share wins
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(fields) = span.extensions().get::<Fields>() {
                    for f in &fields.0 {
                        put(&mut buf, f);
                    }
                }
            }
        }
        buf.extend_from_slice(&self.fixed);
        if let Ok(mut j) = self.journal.lock() {
            j.send(&buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::agent::worker::pod_span;
    use crate::core::plan::PodKey;

    #[test]
    fn plain_levels_keep_other_crates_at_warn_and_directives_pass_through() {
        let shown = |v: Option<&str>| {
            let (f, bad) = filter(v);
            (f.to_string(), bad.is_some())
        };
        let same = |directives: &str| (EnvFilter::new(directives).to_string(), false);
        assert_eq!(shown(None), same("warn,daemonset_agent=info"));
        assert_eq!(shown(Some(" ")), same("warn,daemonset_agent=info"));
        assert_eq!(shown(Some("debug")), same("warn,daemonset_agent=debug"));
        assert_eq!(shown(Some("ERROR")), same("error,daemonset_agent=error"));
        assert_eq!(
            shown(Some("daemonset_agent::agent=trace,kube=info")),
            same("daemonset_agent::agent=trace,kube=info")
        );
        assert_eq!(
            shown(Some("daemonset_agent=[{")),
            (
                EnvFilter::new("warn,daemonset_agent=info").to_string(),
                true
            )
        );
    }

    #[test]
    fn field_names_become_journald_names() {
        assert_eq!(field_name("container_id").as_deref(), Some("CONTAINER_ID"));
        assert_eq!(
            field_name("error.sources").as_deref(),
            Some("ERROR_SOURCES")
        );
        assert_eq!(field_name("_9pod-x").as_deref(), Some("PODX"));
        assert_eq!(field_name("__"), None);
        assert_eq!(field_name(&"a".repeat(80)).map(|n| n.len()), Some(64));
    }

    /// The layer over a datagram socket standing in for journald: what one event inside a pod
    /// span sends, decoded.
    #[test]
    fn an_event_in_a_pod_span_carries_each_field_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let journald = UnixDatagram::bind(&path).unwrap();
        let layer = JournaldLayer::connect(
            &path,
            &[("SYSLOG_IDENTIFIER", "dsa-test"), ("NODE", "node-1")],
        )
        .unwrap();
        assert_eq!(
            journald.recv(&mut [0; 16]).unwrap(),
            0,
            "the connect probe is empty"
        );
        let key = PodKey {
            namespace: "kube-system".into(),
            name: "agent-x".into(),
        };
        let err = crate::runtime::RuntimeError::Io {
            op: "stop",
            path: "/run/x".into(),
            source: std::io::Error::other("disk on fire"),
        };
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let round = tracing::info_span!("round", round = 7u64, node = "node-1");
            let _r = round.enter();
            let pod = pod_span(&key, Some("agents"), "node-1");
            let _p = pod.enter();
            tracing::warn!(
                container_id = "c1",
                error = &err as &dyn std::error::Error,
                "stop\nfailed"
            );
        });
        let mut buf = vec![0; 65536];
        let n = journald.recv(&mut buf).unwrap();
        let fields = journal::decode(&buf[..n]).unwrap();
        let get = |name: &str| -> Vec<String> {
            fields
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect()
        };
        assert_eq!(get("MESSAGE"), ["stop\nfailed"]);
        assert_eq!(get("PRIORITY"), ["4"]);
        assert_eq!(get("POD"), ["kube-system/agent-x"]);
        assert_eq!(get("DAEMONSET"), ["agents"]);
        assert_eq!(
            get("NODE"),
            ["node-1"],
            "in both spans and fixed, written once"
        );
        assert_eq!(get("ROUND"), ["7"]);
        assert_eq!(get("CONTAINER_ID"), ["c1"]);
        assert_eq!(get("SYSLOG_IDENTIFIER"), ["dsa-test"]);
        assert_eq!(get("TARGET"), ["daemonset_agent::logging::tests"]);
        assert_eq!(
            get("ERROR"),
            ["stop /run/x: disk on fire"],
            "the error with its cause"
        );
        let mut names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a name twice: {names:?}");
    }
}
