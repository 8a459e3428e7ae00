//! The request log: one line per refused or failed request (client address, verb, path, status,
//! reason) and an audit line per write (user, verb, resource, namespace/name, status).
//!
//! Lines are written off the hot path: a request queues its line in a bounded channel that one
//! logging task drains. Under a flood the queue fills and further lines are dropped and counted
//! (the count is logged once the flood eases) instead of slowing the requests that caused them.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::auth::User;

/// Lines waiting for the logging task; beyond it lines are dropped and counted.
pub const QUEUE: usize = 4096;

/// Longest reason written: a hostile body must not make log lines big.
const MAX_REASON: usize = 256;

/// One line of the request log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A request answered with an error, or a connection refused or cut off (verb and path
    /// "-" when no request was read).
    Refused {
        client: SocketAddr,
        user: String,
        verb: &'static str,
        path: String,
        status: u16,
        reason: String,
    },
    /// A write (create, update, patch, delete, deletecollection), whatever its outcome.
    Write {
        client: SocketAddr,
        user: String,
        verb: &'static str,
        resource: &'static str,
        namespace: String,
        name: String,
        status: u16,
    },
}

/// The name logged for a request's user: "-" when the request carries none (not authenticated,
/// or refused before authentication).
pub fn user_name(user: Option<&User>) -> &str {
    user.map_or("-", |u| u.name.as_str())
}

/// `reason`, cut to [`MAX_REASON`] bytes at a character boundary.
pub fn short_reason(reason: &str) -> String {
    if reason.len() <= MAX_REASON {
        return reason.to_string();
    }
    let mut end = MAX_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &reason[..end])
}

/// The sending side of the request log, cloned into every connection.
#[derive(Debug, Clone)]
pub struct RequestLog {
    tx: mpsc::Sender<Line>,
    dropped: Arc<AtomicU64>,
}

impl RequestLog {
    /// The log and its writer task, which ends once every `RequestLog` is dropped.
    pub fn start() -> (RequestLog, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(write_lines(rx, dropped.clone()));
        (RequestLog { tx, dropped }, task)
    }

    /// Queues `line`; never waits (a full queue drops it and counts it).
    pub fn record(&self, line: Line) {
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Who is on the other end of a connection, and where its requests' lines go (a request
/// extension set by the connection).
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub log: RequestLog,
}

fn emit(line: &Line) {
    match line {
        Line::Refused {
            client,
            user,
            verb,
            path,
            status,
            reason,
        } => tracing::warn!(
            target: "daemonset_agent::server::request",
            client = %client,
            user = user.as_str(),
            verb = *verb,
            path = path.as_str(),
            status = *status,
            reason = reason.as_str(),
            "request refused"
        ),
        Line::Write {
            client,
            user,
            verb,
            resource,
            namespace,
            name,
            status,
        } => tracing::info!(
            target: "daemonset_agent::server::audit",
            client = %client,
            user = user.as_str(),
            verb = *verb,
            resource = *resource,
            namespace = namespace.as_str(),
            name = name.as_str(),
            status = *status,
            "write"
        ),
    }
}

async fn write_lines(mut rx: mpsc::Receiver<Line>, dropped: Arc<AtomicU64>) {
    let mut reported = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => emit(&line),
                None => break,
            },
            _ = tick.tick() => {}
        }
        let now = dropped.load(Ordering::Relaxed);
        if now != reported && rx.is_empty() {
            tracing::warn!(
                target: "daemonset_agent::server::request",
                dropped = now - reported,
                total = now,
                "request log lines dropped: the log queue was full"
            );
            reported = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(n: u16) -> Line {
        Line::Refused {
            client: "127.0.0.1:1".parse().unwrap(),
            user: "-".into(),
            verb: "get",
            path: "/api".into(),
            status: n,
            reason: "x".into(),
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, mut rx) = mpsc::channel(2);
        let log = RequestLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        for n in 0..5 {
            log.record(refused(n));
        }
        assert_eq!(log.dropped(), 3);
        assert_eq!(rx.recv().await, Some(refused(0)));
        assert_eq!(rx.recv().await, Some(refused(1)));
    }

    #[test]
    fn names_and_reasons() {
        assert_eq!(user_name(None), "-");
        let admin = User {
            name: "admin".into(),
            groups: vec![],
        };
        assert_eq!(user_name(Some(&admin)), "admin");
        assert_eq!(short_reason("short"), "short");
        let long = "é".repeat(300);
        let cut = short_reason(&long);
        assert!(cut.len() <= MAX_REASON + 3 && cut.ends_with("..."), "{cut}");
    }
}
