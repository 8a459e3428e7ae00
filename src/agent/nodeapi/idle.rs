//! The idle timeout of stream sessions (exec, attach, port-forward): the kubelet's
//! `--streaming-connection-idle-timeout` (4h by default, the agent's flag of the same name). A
//! session in which no data went either way for that long ends as if its client had gone (an
//! exec's process is killed, a forwarded connection closed). Only data counts: the pings
//! kubectl sends every few seconds keep nothing open, as with the kubelet.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// The kubelet's default.
pub const DEFAULT: Duration = Duration::from_secs(4 * 3600);

/// The data seen in one session, shared by its readers and writers.
#[derive(Debug, Clone)]
pub struct Activity {
    seen: Arc<Notify>,
    timeout: Duration,
}

impl Activity {
    pub fn new(timeout: Duration) -> Activity {
        Activity {
            seen: Arc::new(Notify::new()),
            timeout,
        }
    }

    /// Data went one way or the other.
    pub fn seen(&self) {
        self.seen.notify_one();
    }

    /// Returns once `timeout` passed without data.
    pub async fn expired(&self) {
        while tokio::time::timeout(self.timeout, self.seen.notified())
            .await
            .is_ok()
        {}
        tracing::info!(
            timeout_seconds = self.timeout.as_secs(),
            "a stream session was idle for the streaming connection idle timeout: ended"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_session_without_data_ends_after_the_timeout() {
        let a = Activity::new(Duration::from_secs(10));
        let start = Instant::now();
        a.expired().await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn data_puts_the_end_off() {
        let a = Activity::new(Duration::from_secs(10));
        let b = a.clone();
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(6)).await;
                b.seen();
            }
        });
        let start = Instant::now();
        a.expired().await;
        // the last data at 18s, then 10s of nothing
        assert_eq!(start.elapsed(), Duration::from_secs(28));
    }
}
