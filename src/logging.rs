//! Logging: structured records to journald (key-value pairs become journal fields: DAEMONSET,
//! POD, CONTAINER_ID, NODE; PRIORITY from the level) and readable lines on stderr unless stderr
//! is itself connected to the journal (under systemd). `DSA_LOG` sets the level (error, warn, info, debug).
use std::io::Write;

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};

struct Logger {
    journal: Option<systemd_journal_logger::JournalLog>,
    stderr: bool,
    level: LevelFilter,
}

struct Fields(String);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.level
            && (m.target().starts_with("daemonset_agent") || m.level() <= Level::Warn)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if let Some(j) = &self.journal {
            let _ = j.journal_send(record);
        }
        if self.stderr {
            let mut fields = Fields(String::new());
            let _ = record.key_values().visit(&mut fields);
            let now = chrono::Utc::now().format("%H:%M:%S%.3f");
            let _ = writeln!(
                std::io::stderr().lock(),
                "{now} {:<5} {}{}",
                record.level(),
                record.args(),
                fields.0
            );
        }
    }

    fn flush(&self) {}
}

/// Installs the logger once; `node` is added to every journal record as NODE when given.
pub fn init(identifier: &str, node: Option<&str>) {
    let level = std::env::var("DSA_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(LevelFilter::Info);
    let journal = if std::path::Path::new("/run/systemd/journal/socket").exists() {
        systemd_journal_logger::JournalLog::new().ok().map(|j| {
            let j = j.with_syslog_identifier(identifier.to_string());
            match node {
                Some(n) => j.add_extra_field("NODE", n),
                None => j,
            }
        })
    } else {
        None
    };
    // Under systemd stderr goes to the journal already: do not log twice.
    let stderr = journal.is_none() || !systemd_journal_logger::connected_to_journal();
    let logger = Logger {
        journal,
        stderr,
        level,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}
