//! The event correlator of client-go's recorder (`tools/record/events_cache.go`), pure: what
//! becomes of an event a component records, given what it recorded before and the time.
//!
//! 1. **Aggregation** (`EventAggregator`): events that differ only in their message are similar
//!    (same source, object, type, reason). Past [`Config::max_similar`] distinct messages within
//!    [`Config::similar_window_ms`], they are folded into one event whose message says
//!    `(combined from similar events): ...`.
//! 2. **Counting** (`eventLogger`): an event seen before (same key, message included) is the
//!    earlier event again: same name, `count + 1`, `firstTimestamp` kept, `lastTimestamp` now;
//!    the writer patches it instead of creating one.
//! 3. **Spam filter** (`EventSourceObjectSpamFilter`): a token bucket per source and object
//!    (burst [`Config::spam_burst`], one token per [`Config::spam_refill_ms`]); an event past it
//!    is not written (its count still grows, so the next one written carries it).
//!
//! Caches are bounded ([`Config::cache_size`], least recently seen out first).
use std::collections::{BTreeSet, HashMap};

/// What an event is about (`involvedObject`, a v1 ObjectReference).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Involved {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.containers{name}` for an event about one container.
    pub field_path: String,
}

/// Who records (`source`): the component and its host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    pub component: String,
    pub host: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Normal,
    Warning,
}

impl Type {
    pub fn as_str(self) -> &'static str {
        match self {
            Type::Normal => "Normal",
            Type::Warning => "Warning",
        }
    }
}

/// One event as a component records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub involved: Involved,
    pub type_: Type,
    pub reason: String,
    pub message: String,
}

/// What to write: a new event (`count` 1), or the update of one written before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The event's name (`<object>.<hex unix nanos>`, as client-go makes it).
    pub name: String,
    /// Where the event lives: its object's namespace, `default` for cluster-scoped objects.
    pub namespace: String,
    pub involved: Involved,
    pub source: Source,
    pub type_: Type,
    pub reason: String,
    pub message: String,
    pub count: u32,
    pub first_ms: i64,
    pub last_ms: i64,
    /// Written before under this name: patch `count`, `lastTimestamp` and `message`.
    pub update: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub max_similar: usize,
    pub similar_window_ms: i64,
    pub spam_burst: u32,
    pub spam_refill_ms: i64,
    pub cache_size: usize,
}

impl Default for Config {
    /// client-go's defaults.
    fn default() -> Config {
        Config {
            max_similar: 10,
            similar_window_ms: 600_000,
            spam_burst: 25,
            spam_refill_ms: 300_000,
            cache_size: 4096,
        }
    }
}

#[derive(Debug)]
struct Similar {
    messages: BTreeSet<String>,
    last_ms: i64,
}

#[derive(Debug)]
struct Seen {
    name: String,
    count: u32,
    first_ms: i64,
    last_ms: i64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// The correlator of one recording component.
#[derive(Debug)]
pub struct Correlator {
    cfg: Config,
    source: Source,
    similar: HashMap<String, Similar>,
    seen: HashMap<String, Seen>,
    spam: HashMap<String, Bucket>,
    /// Makes two names made in the same millisecond differ.
    seq: u64,
}

/// The message of an aggregated event.
pub const COMBINED_PREFIX: &str = "(combined from similar events): ";

/// Drops the least recently seen entries past `max`.
fn bound<V>(map: &mut HashMap<String, V>, max: usize, last: impl Fn(&V) -> i64) {
    while map.len() > max {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| last(v))
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        map.remove(&oldest);
    }
}

impl Correlator {
    pub fn new(source: Source, cfg: Config) -> Correlator {
        Correlator {
            cfg,
            source,
            similar: HashMap::new(),
            seen: HashMap::new(),
            spam: HashMap::new(),
            seq: 0,
        }
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    fn object_key(&self, ev: &Event) -> String {
        let i = &ev.involved;
        [
            self.source.component.as_str(),
            &self.source.host,
            &i.kind,
            &i.namespace,
            &i.name,
            &i.uid,
            &i.api_version,
            ev.type_.as_str(),
        ]
        .join("\u{0}")
    }

    /// What to write for `ev` recorded at `now_ms`; None: the spam filter holds it back.
    pub fn correlate(&mut self, ev: Event, now_ms: i64) -> Option<Record> {
        let object = self.object_key(&ev);
        let similar_key = format!("{object}\u{0}{}", ev.reason);
        let window = self.cfg.similar_window_ms;
        let group = self
            .similar
            .entry(similar_key.clone())
            .or_insert_with(|| Similar {
                messages: BTreeSet::new(),
                last_ms: now_ms,
            });
        if now_ms - group.last_ms > window {
            group.messages.clear();
        }
        group.messages.insert(ev.message.clone());
        group.last_ms = now_ms;
        let (key, message) = if group.messages.len() < self.cfg.max_similar {
            let key = format!(
                "{similar_key}\u{0}{}\u{0}{}",
                ev.involved.field_path, ev.message
            );
            (key, ev.message)
        } else {
            (similar_key, format!("{COMBINED_PREFIX}{}", ev.message))
        };
        bound(&mut self.similar, self.cfg.cache_size, |s| s.last_ms);

        let seq = self.seq;
        let seen = self.seen.entry(key).or_insert_with(|| Seen {
            name: format!(
                "{}.{:x}",
                ev.involved.name,
                (now_ms as u64).wrapping_mul(1_000_000).wrapping_add(seq)
            ),
            count: 0,
            first_ms: now_ms,
            last_ms: now_ms,
        });
        self.seq += 1;
        seen.count += 1;
        seen.last_ms = now_ms;
        let record = Record {
            name: seen.name.clone(),
            namespace: match ev.involved.namespace.as_str() {
                "" => "default".to_string(),
                ns => ns.to_string(),
            },
            involved: ev.involved,
            source: self.source.clone(),
            type_: ev.type_,
            reason: ev.reason,
            message,
            count: seen.count,
            first_ms: seen.first_ms,
            last_ms: now_ms,
            update: seen.count > 1,
        };
        bound(&mut self.seen, self.cfg.cache_size, |s| s.last_ms);

        let (burst, refill) = (f64::from(self.cfg.spam_burst), self.cfg.spam_refill_ms);
        let bucket = self.spam.entry(object).or_insert(Bucket {
            tokens: burst,
            at_ms: now_ms,
        });
        let earned = (now_ms - bucket.at_ms).max(0) as f64 / refill.max(1) as f64;
        bucket.tokens = (bucket.tokens + earned).min(burst);
        bucket.at_ms = now_ms;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        bound(&mut self.spam, self.cfg.cache_size, |b| b.at_ms);
        allowed.then_some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_event(reason: &str, message: &str) -> Event {
        Event {
            involved: Involved {
                api_version: "v1".into(),
                kind: "Pod".into(),
                namespace: "default".into(),
                name: "mon-abcde".into(),
                uid: "u1".into(),
                field_path: "spec.containers{c}".into(),
            },
            type_: Type::Warning,
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn correlator(cfg: Config) -> Correlator {
        let source = Source {
            component: "kubelet".into(),
            host: "n1".into(),
        };
        Correlator::new(source, cfg)
    }

    /// (reason, message, at ms) -> (count, update, message prefix ok), as client-go's
    /// TestEventCorrelator cases read.
    #[test]
    fn the_same_event_again_is_counted_on_the_first_record() {
        let mut c = correlator(Config::default());
        let first = c
            .correlate(pod_event("BackOff", "Back-off pulling image \"x\""), 1_000)
            .unwrap();
        assert_eq!(
            (first.count, first.update, first.first_ms),
            (1, false, 1_000)
        );
        let again = c
            .correlate(pod_event("BackOff", "Back-off pulling image \"x\""), 5_000)
            .unwrap();
        assert_eq!(again.name, first.name, "the same event, patched");
        assert_eq!(
            (again.count, again.update, again.first_ms, again.last_ms),
            (2, true, 1_000, 5_000)
        );
        let other = c
            .correlate(pod_event("Failed", "Error: ErrImagePull"), 6_000)
            .unwrap();
        assert_ne!(other.name, first.name);
        assert_eq!(other.count, 1);
        assert_eq!(first.namespace, "default");
    }

    #[test]
    fn similar_events_past_the_limit_are_combined() {
        let mut c = correlator(Config::default());
        let mut last = None;
        for i in 0..12 {
            last = c.correlate(
                pod_event("Unhealthy", &format!("probe failed: {i}")),
                1_000 + i,
            );
        }
        // 9 distinct messages pass as they are; from the 10th they fold into one event
        let last = last.unwrap();
        assert!(
            last.message.starts_with(COMBINED_PREFIX),
            "{}",
            last.message
        );
        assert_eq!(last.count, 3, "the 10th, 11th and 12th");
        // outside the window the group starts over
        let fresh = c
            .correlate(
                pod_event("Unhealthy", "probe failed: late"),
                1_000 + 600_001 + 20,
            )
            .unwrap();
        assert_eq!(fresh.message, "probe failed: late");
    }

    #[test]
    fn the_spam_filter_holds_a_burst_back_and_refills() {
        let cfg = Config {
            spam_burst: 3,
            spam_refill_ms: 1_000,
            ..Config::default()
        };
        let mut c = correlator(cfg);
        let got: Vec<Option<u32>> = (0..5)
            .map(|i| c.correlate(pod_event("BackOff", "b"), i).map(|r| r.count))
            .collect();
        assert_eq!(got, [Some(1), Some(2), Some(3), None, None]);
        let later = c.correlate(pod_event("BackOff", "b"), 1_010).unwrap();
        assert_eq!(later.count, 6, "the held-back ones are counted");
    }

    #[test]
    fn caches_are_bounded() {
        let cfg = Config {
            cache_size: 4,
            ..Config::default()
        };
        let mut c = correlator(cfg);
        for i in 0..10 {
            let mut ev = pod_event("Pulled", "m");
            ev.involved.name = format!("p{i}");
            c.correlate(ev, i);
        }
        assert!(c.seen.len() <= 4 && c.similar.len() <= 4 && c.spam.len() <= 4);
    }
}
