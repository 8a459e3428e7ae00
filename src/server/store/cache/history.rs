//! The bounded history of recent events and the cursors that read it.
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::server::store::{trigger_values, EventsAfter, StoreError, WatchEvent};

/// Recent events, bounded in number and in bytes.
pub(in crate::server::store) struct History {
    pub(in crate::server::store) events: VecDeque<Arc<WatchEvent>>,
    /// The sum of the events' [`WatchEvent::size`].
    pub(in crate::server::store) bytes: usize,
    pub(super) max_events: usize,
    pub(super) max_bytes: usize,
    /// Every event with rv > complete_after is in `events`.
    pub(in crate::server::store) complete_after: u64,
    /// Per resource, the rv of its newest event the bounds dropped: a watch of that resource
    /// resumes from any rv at or after it, whatever other resources' events were dropped since
    /// (kube-apiserver keeps a watch cache per resource: Lease churn never expires a pod watch).
    pub(super) dropped: HashMap<String, u64>,
    /// Per indexed value ([`super::trigger_field`]: a node's name), the events of `events` that
    /// concern it, oldest first: what a node's watch of its own pods reads.
    pub(super) triggered: HashMap<String, VecDeque<Arc<WatchEvent>>>,
    /// Per indexed value, the rv of its newest event the bounds dropped.
    pub(super) dropped_triggered: HashMap<String, u64>,
    /// Nothing at or before this rv was kept for any resource (opened or relisted there).
    pub(super) forgot_all_at: u64,
    /// The backend went back in time (restored from a backup): a resourceVersion beyond the
    /// store's is one given out before, which names nothing the store has.
    pub(in crate::server::store) went_back: bool,
}

impl History {
    pub(in crate::server::store) fn new(rv: u64, max_events: usize, max_bytes: usize) -> History {
        History {
            events: VecDeque::new(),
            bytes: 0,
            max_events: max_events.max(1),
            max_bytes,
            complete_after: rv,
            dropped: HashMap::new(),
            triggered: HashMap::new(),
            dropped_triggered: HashMap::new(),
            forgot_all_at: rv,
            went_back: false,
        }
    }

    /// Appends `event`, dropping the oldest past either bound (the newest is always kept).
    pub(super) fn push(&mut self, event: Arc<WatchEvent>) {
        self.bytes += event.size();
        for value in trigger_values(&event) {
            match self.triggered.get_mut(value) {
                Some(q) => q.push_back(event.clone()),
                None => {
                    self.triggered
                        .insert(value.to_string(), VecDeque::from([event.clone()]));
                }
            }
        }
        self.events.push_back(event);
        while self.events.len() > self.max_events
            || (self.bytes > self.max_bytes && self.events.len() > 1)
        {
            let Some(old) = self.events.pop_front() else {
                break;
            };
            self.bytes -= old.size();
            self.complete_after = old.rv;
            match self.dropped.get_mut(&old.resource) {
                Some(at) => *at = old.rv,
                None => {
                    self.dropped.insert(old.resource.clone(), old.rv);
                }
            }
            for value in trigger_values(&old) {
                // the oldest of the history is the oldest of each of its values
                if let Some(q) = self.triggered.get_mut(value) {
                    q.pop_front();
                    if q.is_empty() {
                        self.triggered.remove(value);
                    }
                }
                match self.dropped_triggered.get_mut(value) {
                    Some(at) => *at = old.rv,
                    None => {
                        self.dropped_triggered.insert(value.to_string(), old.rv);
                    }
                }
            }
        }
    }

    /// Forgets every event: nothing before `rv` can be resumed from any more.
    pub(super) fn reset(&mut self, rv: u64) {
        self.events.clear();
        self.bytes = 0;
        self.complete_after = rv;
        self.dropped.clear();
        self.triggered.clear();
        self.dropped_triggered.clear();
        self.forgot_all_at = rv;
    }

    /// The events after `rv` of objects whose indexed field is or was `value` (at most `limit`),
    /// in `namespace` when given; the cursor passes every other event up to the newest.
    /// `Expired` when such an event after `rv` left the history.
    pub(super) fn triggered_after(
        &self,
        rv: u64,
        value: &str,
        namespace: Option<&str>,
        limit: usize,
    ) -> Result<EventsAfter, StoreError> {
        self.resumable(rv, self.dropped_triggered.get(value))?;
        let newest = self.events.back().map_or(rv, |e| e.rv.max(rv));
        let mut found = EventsAfter {
            events: Vec::new(),
            through: newest,
        };
        let Some(q) = self.triggered.get(value) else {
            return Ok(found);
        };
        let first = q.partition_point(|e| e.rv <= rv);
        for (i, e) in q.range(first..).enumerate() {
            if i == limit {
                // the rest on the next call: read through the last one taken
                found.through = match i {
                    0 => rv,
                    _ => q[first + i - 1].rv,
                };
                break;
            }
            if namespace.is_none_or(|ns| ns == e.namespace) {
                found.events.push(e.clone());
            }
        }
        Ok(found)
    }

    pub(in crate::server::store) fn check(&self, rv: u64) -> Result<(), StoreError> {
        if rv < self.complete_after {
            return Err(StoreError::Expired {
                requested: rv,
                oldest: self.complete_after,
            });
        }
        Ok(())
    }

    /// [`History::check`] for a watch of `resource` only: `Expired` when events of that resource
    /// after `rv` left the history.
    pub(in crate::server::store) fn check_resource(
        &self,
        rv: u64,
        resource: &str,
    ) -> Result<(), StoreError> {
        self.resumable(rv, self.dropped.get(resource))
    }

    /// `Expired` when a watch from `rv` misses events: its newest one the bounds `dropped`, or
    /// anything the history forgot all of.
    pub(super) fn resumable(&self, rv: u64, dropped: Option<&u64>) -> Result<(), StoreError> {
        let oldest = dropped.copied().unwrap_or(0).max(self.forgot_all_at);
        if rv < oldest {
            return Err(StoreError::Expired {
                requested: rv,
                oldest,
            });
        }
        Ok(())
    }

    /// [`History::check`], and [`History::went_back_past`].
    pub(in crate::server::store) fn check_at(
        &self,
        rv: u64,
        current: u64,
    ) -> Result<(), StoreError> {
        self.check(rv)?;
        self.went_back_past(rv, current)
    }

    /// For a store that went back in time, a resourceVersion beyond `current` (given out before
    /// it went back) is 410 too, not a wait.
    pub(in crate::server::store) fn went_back_past(
        &self,
        rv: u64,
        current: u64,
    ) -> Result<(), StoreError> {
        if self.went_back && rv > current {
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
