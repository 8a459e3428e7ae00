//! The work queue of a controller, as client-go's rate-limited queue behaves: a key added several
//! times before it is worked on is worked on once, a key can be added for later (the earliest
//! time wins), and a key whose sync failed comes back after a per-key exponential back-off (5 ms
//! doubling to 1000 s, `ItemExponentialFailureRateLimiter`) until a sync of it succeeds.
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

/// A namespace and a name.
pub type Key = (String, String);

const FAILURE_BASE: Duration = Duration::from_millis(5);
const FAILURE_MAX: Duration = Duration::from_secs(1000);

#[derive(Debug, Default)]
pub struct Queue {
    ready: BTreeSet<Key>,
    later: HashMap<Key, Instant>,
    failures: HashMap<Key, u32>,
}

impl Queue {
    pub fn add(&mut self, key: Key) {
        self.later.remove(&key);
        self.ready.insert(key);
    }

    /// Adds `key` at `at`, unless it is due earlier already.
    pub fn add_at(&mut self, key: Key, at: Instant) {
        if self.ready.contains(&key) {
            return;
        }
        let e = self.later.entry(key).or_insert(at);
        *e = (*e).min(at);
    }

    /// When the earliest key added for later is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.later.values().min().copied()
    }

    /// The keys to work on now (those added for later included once due), in key order.
    pub fn take(&mut self, now: Instant) -> Vec<Key> {
        let due: Vec<Key> = self
            .later
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            self.later.remove(&k);
            self.ready.insert(k);
        }
        std::mem::take(&mut self.ready).into_iter().collect()
    }

    /// A sync of `key` failed: it comes back after its back-off.
    pub fn retry(&mut self, key: Key, now: Instant) {
        let n = self.failures.entry(key.clone()).or_insert(0);
        let delay = FAILURE_BASE
            .saturating_mul(2u32.saturating_pow(*n))
            .min(FAILURE_MAX);
        *n = n.saturating_add(1);
        self.add_at(key, now + delay);
    }

    /// A sync of `key` succeeded: its back-off starts over.
    pub fn forget(&mut self, key: &Key) {
        self.failures.remove(key);
    }

    /// Files the outcome of a sync of `key`: done (and back at the time it asked for, if any),
    /// or failed (back after its back-off).
    pub fn finish<E>(&mut self, key: Key, result: &Result<Option<Instant>, E>, now: Instant) {
        match result {
            Ok(again) => {
                self.forget(&key);
                if let Some(at) = again {
                    self.add_at(key, *at);
                }
            }
            Err(_) => self.retry(key, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: &str) -> Key {
        ("ns".into(), n.into())
    }

    #[tokio::test(start_paused = true)]
    async fn keys_coalesce_wait_and_back_off() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        q.add(k("b"));
        q.add(k("a"));
        q.add(k("b"));
        q.add_at(k("c"), t0 + Duration::from_secs(5));
        q.add_at(k("c"), t0 + Duration::from_secs(2));
        assert_eq!(q.take(t0), vec![k("a"), k("b")]);
        assert!(q.take(t0).is_empty());
        assert_eq!(q.next_due(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(q.take(t0 + Duration::from_secs(2)), vec![k("c")]);
        // failures: 5 ms, 10 ms, 20 ms ... then forgotten
        for want in [5, 10, 20] {
            q.retry(k("d"), t0);
            assert_eq!(q.next_due(), Some(t0 + Duration::from_millis(want)));
            q.take(t0 + Duration::from_secs(1));
        }
        q.forget(&k("d"));
        q.retry(k("d"), t0);
        assert_eq!(q.next_due(), Some(t0 + Duration::from_millis(5)));
        for _ in 0..40 {
            q.retry(k("e"), t0);
            q.take(t0 + FAILURE_MAX);
        }
        q.retry(k("e"), t0);
        assert!(q.later[&k("e")] <= t0 + FAILURE_MAX);
        // a key added now is not held back by an earlier add for later
        q.add_at(k("f"), t0 + Duration::from_secs(9));
        q.add(k("f"));
        assert!(q.take(t0).contains(&k("f")));
    }
}
