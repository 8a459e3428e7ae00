//! The agent's clock, injected through the worker context: every wall-clock time the agent writes
//! or compares (RFC 3339 in Pod and Node status, the Lease's renewTime, back-off deadlines, probe
//! initial delays) comes from `Clock::now_ms`, and the deadlines its loops sleep to come from
//! `Clock::deadline`, on tokio's clock. The core stays clock-free: it gets these as arguments.
//!
//! Two sources. `system()` reads the wall clock itself: containerd stamps creation and exit times
//! with the wall clock, and the crash-loop back-off compares them with now, so the agent must see
//! a wall clock stepped by NTP (at boot, say) the moment containerd does. `starting_at(base)` is a
//! fixed base plus tokio's elapsed time: under `#[tokio::test(start_paused = true)]`,
//! `tokio::time::advance` (or the runtime's auto-advance) moves wall time and deadlines together,
//! so back-off, probes and requeue are tested without real sleeps.
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Clock {
    /// None: the system's wall clock. Some: wall time `base_ms` at tokio instant `origin`.
    fixed: Option<(i64, Instant)>,
}

impl Clock {
    /// The system's wall clock, as the agent runs.
    pub fn system() -> Clock {
        Clock { fixed: None }
    }

    /// Wall time `base_ms` now, advancing with tokio's clock (paused in tests).
    pub fn starting_at(base_ms: i64) -> Clock {
        Clock {
            fixed: Some((base_ms, Instant::now())),
        }
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> i64 {
        match self.fixed {
            None => chrono::Utc::now().timestamp_millis(),
            Some((base, origin)) => base + origin.elapsed().as_millis() as i64,
        }
    }

    /// How long until wall time `at_ms` (zero when it passed).
    pub fn until(&self, at_ms: i64) -> Duration {
        Duration::from_millis((at_ms - self.now_ms()).max(0) as u64)
    }

    /// The tokio instant at which wall time `at_ms` is reached.
    pub fn deadline(&self, at_ms: i64) -> Instant {
        Instant::now() + self.until(at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_fixed_clock_follows_paused_time() {
        let clock = Clock::starting_at(1_000_000);
        assert_eq!(clock.now_ms(), 1_000_000);
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(clock.now_ms(), 1_002_500);
        assert_eq!(clock.until(1_010_000), Duration::from_millis(7_500));
        assert_eq!(clock.until(1_000_000), Duration::ZERO, "a past time is now");
        let at = clock.deadline(1_003_000);
        tokio::time::sleep_until(at).await;
        assert_eq!(clock.now_ms(), 1_003_000);
    }

    #[test]
    fn the_system_clock_is_the_wall_clock() {
        let before = chrono::Utc::now().timestamp_millis();
        let now = Clock::system().now_ms();
        assert!(now >= before && now - before < 60_000, "{before} {now}");
    }
}
