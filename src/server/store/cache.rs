//! The in-memory side of the store: the objects, the bounded history of recent events.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use super::{StoreError, WatchEvent};

pub(super) type ObjectMap = HashMap<String, BTreeMap<(String, String), Arc<Value>>>;


/// Recent events, bounded in number and in bytes.
pub(super) struct History {
    pub(super) events: VecDeque<Arc<WatchEvent>>,
    /// The sum of the events' [`WatchEvent::size`].
    pub(super) bytes: usize,
    max_events: usize,
    max_bytes: usize,
    /// Every event with rv > complete_after is in `events`.
    pub(super) complete_after: u64,
}

impl History {
    pub(super) fn new(rv: u64, max_events: usize, max_bytes: usize) -> History {
        History {
            events: VecDeque::new(),
            bytes: 0,
            max_events: max_events.max(1),
            max_bytes,
            complete_after: rv,
        }
    }

    /// Appends `event`, dropping the oldest past either bound (the newest is always kept).
    pub(super) fn push(&mut self, event: Arc<WatchEvent>) {
        self.bytes += event.size();
        self.events.push_back(event);
        while self.events.len() > self.max_events
            || (self.bytes > self.max_bytes && self.events.len() > 1)
        {
            let Some(old) = self.events.pop_front() else {
                break;
            };
            self.bytes -= old.size();
            self.complete_after = old.rv;
        }
    }

    pub(super) fn check(&self, rv: u64) -> Result<(), StoreError> {
        if rv < self.complete_after {
            return Err(StoreError::Expired {
                requested: rv,
                oldest: self.complete_after,
            });
        }
        Ok(())
    }

    /// The index of the first event after `rv`.
    pub(super) fn first_after(&self, rv: u64) -> usize {
        self.events.partition_point(|e| e.rv <= rv)
    }
}

/// Locks `m`. A panic while holding one of the store's locks cannot leave half-written state
/// (SQLite rolls back an uncommitted transaction; the maps are updated after the commit), so a
/// poisoned lock is still usable.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
