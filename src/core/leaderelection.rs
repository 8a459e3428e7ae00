//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics
//! (`tools/leaderelection`), pure: the loop that reads and writes the Lease owns the I/O and the
//! clock and hands this module the Lease it read and the time as values.
//!
//! - **Acquire**: a candidate takes the Lease when nobody holds it, or when the holder's record
//!   has not changed for `leaseDurationSeconds` *as the candidate observed it* (its own clock,
//!   from the moment it first saw that record: clocks of different machines are never
//!   compared). Taking it from another holder increments `leaseTransitions` and sets
//!   `acquireTime`.
//! - **Renew**: the holder writes a new `renewTime` every retry period, keeping `acquireTime` and
//!   `leaseTransitions`.
//! - **Stop before it can be taken**: the holder stops acting once `renewDeadline` has passed
//!   since the start of its last successful renewal. Every observer saw that write no earlier
//!   than it started, so none can take the Lease before `leaseDuration` after it: with
//!   `renewDeadline < leaseDuration`, the old leader has stopped first.
//!
//! Writes are conditional on the Lease's resourceVersion (the loop's business), so two
//! candidates that both decide to take an expired Lease cannot both succeed.

/// kube-controller-manager's defaults: `--leader-elect-lease-duration` 15 s,
/// `--leader-elect-renew-deadline` 10 s, `--leader-elect-retry-period` 2 s.
pub const DEFAULT_LEASE_DURATION_MS: i64 = 15_000;
pub const DEFAULT_RENEW_DEADLINE_MS: i64 = 10_000;
pub const DEFAULT_RETRY_PERIOD_MS: i64 = 2_000;

/// client-go's JitterFactor: the acquire loop waits up to this factor of the retry period.
pub const JITTER_FACTOR: f64 = 1.2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("leaseDuration must be greater than renewDeadline")]
    LeaseNotAboveDeadline,
    #[error("renewDeadline must be greater than retryPeriod*JitterFactor")]
    DeadlineNotAboveRetry,
    #[error("{0} must be greater than zero")]
    NotPositive(&'static str),
    #[error("lease duration {0} ms is not a whole number of seconds (leaseDurationSeconds)")]
    NotWholeSeconds(i64),
}

/// The three durations, validated as client-go's `NewLeaderElector` validates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub lease_duration_ms: i64,
    pub renew_deadline_ms: i64,
    pub retry_period_ms: i64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            lease_duration_ms: DEFAULT_LEASE_DURATION_MS,
            renew_deadline_ms: DEFAULT_RENEW_DEADLINE_MS,
            retry_period_ms: DEFAULT_RETRY_PERIOD_MS,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, v) in [
            ("leaseDuration", self.lease_duration_ms),
            ("renewDeadline", self.renew_deadline_ms),
            ("retryPeriod", self.retry_period_ms),
        ] {
            if v <= 0 {
                return Err(ConfigError::NotPositive(name));
            }
        }
        if self.lease_duration_ms <= self.renew_deadline_ms {
            return Err(ConfigError::LeaseNotAboveDeadline);
        }
        if self.renew_deadline_ms as f64 <= JITTER_FACTOR * self.retry_period_ms as f64 {
            return Err(ConfigError::DeadlineNotAboveRetry);
        }
        if self.lease_duration_ms % 1000 != 0 {
            return Err(ConfigError::NotWholeSeconds(self.lease_duration_ms));
        }
        Ok(())
    }
}

/// The Lease's spec as client-go's `LeaderElectionRecord` reads it; times in milliseconds since
/// the epoch (the loop writes them as MicroTime).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub holder_identity: String,
    pub lease_duration_seconds: i64,
    pub acquire_time_ms: Option<i64>,
    pub renew_time_ms: Option<i64>,
    pub lease_transitions: i32,
}

/// What to do with the Lease after reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// There is none: create it with this record.
    Create(Record),
    /// Write this record (conditional on the resourceVersion read).
    Update(Record),
    /// Another holder's record is still valid by this candidate's observation: try again at
    /// `until_ms` at the latest (the Lease may change before).
    Held { holder: String, until_ms: i64 },
}

/// One candidate's view: what it observed last and when, and when its last renewal started.
#[derive(Debug, Clone)]
pub struct Elector {
    identity: String,
    config: Config,
    /// The record last seen (read or written) and the local time it was first seen.
    observed: Option<(Record, i64)>,
    /// Leading since a write that started at this time (the last successful renewal's start).
    renewed_at_ms: Option<i64>,
}

impl Elector {
    pub fn new(identity: &str, config: Config) -> Elector {
        Elector {
            identity: identity.to_string(),
            config,
            observed: None,
            renewed_at_ms: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn config(&self) -> Config {
        self.config
    }

    /// `tryAcquireOrRenew` up to the write: `current` is the Lease read at `now_ms` (None: none).
    /// `now_ms` is the candidate's monotonic clock, which every decision uses; `wall_ms` only
    /// stamps `acquireTime` and `renewTime` for people to read.
    pub fn attempt(&mut self, current: Option<&Record>, now_ms: i64, wall_ms: i64) -> Attempt {
        let fresh = Record {
            holder_identity: self.identity.clone(),
            lease_duration_seconds: self.config.lease_duration_ms / 1000,
            acquire_time_ms: Some(wall_ms),
            renew_time_ms: Some(wall_ms),
            lease_transitions: 0,
        };
        let Some(current) = current else {
            return Attempt::Create(fresh);
        };
        if self.observed.as_ref().map(|(r, _)| r) != Some(current) {
            self.observed = Some((current.clone(), now_ms));
        }
        let observed_at = self.observed.as_ref().map_or(now_ms, |(_, at)| *at);
        let valid_until = observed_at + current.lease_duration_seconds.max(0) * 1000;
        let mine = current.holder_identity == self.identity;
        if !current.holder_identity.is_empty() && !mine && valid_until > now_ms {
            return Attempt::Held {
                holder: current.holder_identity.clone(),
                until_ms: valid_until,
            };
        }
        Attempt::Update(if mine {
            Record {
                acquire_time_ms: current.acquire_time_ms,
                lease_transitions: current.lease_transitions,
                ..fresh
            }
        } else {
            Record {
                lease_transitions: current.lease_transitions + 1,
                ..fresh
            }
        })
    }

    /// The write of `record`, started at `started_ms`, succeeded at `now_ms`. A renewal extends
    /// leadership from its start (the others may count the lease from the record before it). An
    /// acquisition leads from when it was written, as client-go's observedTime: nobody could
    /// see the record before, and counting from its start would never lead once a write takes
    /// longer than the renew deadline (a server under write overload lost the lease and never
    /// won it back); the others still wait a whole lease duration from when they see it.
    pub fn written(&mut self, record: Record, started_ms: i64, now_ms: i64) {
        self.observed = Some((record, now_ms));
        let from = if self.renewed_at_ms.is_some() {
            started_ms
        } else {
            now_ms
        };
        self.renewed_at_ms = Some(from);
    }

    /// Whether it leads at `now_ms`: its last renewal started less than the renew deadline ago.
    pub fn leading(&self, now_ms: i64) -> bool {
        self.renewed_at_ms
            .is_some_and(|at| now_ms < at + self.config.renew_deadline_ms)
    }

    /// When leadership ends unless a renewal succeeds first.
    pub fn leading_until(&self) -> Option<i64> {
        self.renewed_at_ms
            .map(|at| at + self.config.renew_deadline_ms)
    }

    /// Leadership given up (the deadline passed): the next attempt starts as a candidate's.
    pub fn stop_leading(&mut self) {
        self.renewed_at_ms = None;
    }

    /// The holder this candidate last observed, if any.
    pub fn observed_holder(&self) -> Option<&str> {
        self.observed
            .as_ref()
            .map(|(r, _)| r.holder_identity.as_str())
            .filter(|h| !h.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "me";

    fn rec(holder: &str, renew: i64, transitions: i32) -> Record {
        Record {
            holder_identity: holder.into(),
            lease_duration_seconds: 15,
            acquire_time_ms: Some(0),
            renew_time_ms: Some(renew),
            lease_transitions: transitions,
        }
    }

    #[test]
    fn config_is_validated_as_client_go_does() {
        let ok = Config::default();
        assert_eq!(ok.validate(), Ok(()));
        let cases = [
            (
                15_000,
                15_000,
                2_000,
                Err(ConfigError::LeaseNotAboveDeadline),
            ),
            (
                15_000,
                2_400,
                2_000,
                Err(ConfigError::DeadlineNotAboveRetry),
            ),
            (15_000, 2_401, 2_000, Ok(())),
            (
                0,
                10_000,
                2_000,
                Err(ConfigError::NotPositive("leaseDuration")),
            ),
            (
                15_500,
                10_000,
                2_000,
                Err(ConfigError::NotWholeSeconds(15_500)),
            ),
        ];
        for (lease, deadline, retry, want) in cases {
            let c = Config {
                lease_duration_ms: lease,
                renew_deadline_ms: deadline,
                retry_period_ms: retry,
            };
            assert_eq!(c.validate(), want, "{c:?}");
        }
    }

    /// Each row: the Lease read (None: absent), the time, what the candidate does. The elector
    /// is fresh per row unless the row says it observed a record before.
    #[test]
    fn attempts() {
        struct Row {
            name: &'static str,
            seen_before: Option<(Record, i64)>,
            current: Option<Record>,
            now: i64,
            want: Attempt,
        }
        let mine = |acq: i64, now: i64, transitions: i32| Record {
            holder_identity: ME.into(),
            lease_duration_seconds: 15,
            acquire_time_ms: Some(acq),
            renew_time_ms: Some(now),
            lease_transitions: transitions,
        };
        let rows = [
            Row {
                name: "no lease: create it, 0 transitions",
                seen_before: None,
                current: None,
                now: 100,
                want: Attempt::Create(mine(100, 100, 0)),
            },
            Row {
                name: "held by another, just seen: wait a whole lease duration from now",
                seen_before: None,
                current: Some(rec("other", 0, 3)),
                now: 1_000_000,
                want: Attempt::Held {
                    holder: "other".into(),
                    until_ms: 1_015_000,
                },
            },
            Row {
                name: "held by another, unchanged for 14.999 s of my clock: still held",
                seen_before: Some((rec("other", 0, 3), 10_000)),
                current: Some(rec("other", 0, 3)),
                now: 24_999,
                want: Attempt::Held {
                    holder: "other".into(),
                    until_ms: 25_000,
                },
            },
            Row {
                name: "unchanged for the lease duration: take it, one more transition",
                seen_before: Some((rec("other", 0, 3), 10_000)),
                current: Some(rec("other", 0, 3)),
                now: 25_000,
                want: Attempt::Update(mine(25_000, 25_000, 4)),
            },
            Row {
                name: "renewed meanwhile (a new renewTime): observed afresh",
                seen_before: Some((rec("other", 0, 3), 10_000)),
                current: Some(rec("other", 20_000, 3)),
                now: 25_000,
                want: Attempt::Held {
                    holder: "other".into(),
                    until_ms: 40_000,
                },
            },
            Row {
                name: "a renewTime far in the past is not trusted: only my observation counts",
                seen_before: None,
                current: Some(rec("other", -1_000_000, 0)),
                now: 5,
                want: Attempt::Held {
                    holder: "other".into(),
                    until_ms: 15_005,
                },
            },
            Row {
                name: "released (empty holder): take it at once",
                seen_before: None,
                current: Some(rec("", 0, 2)),
                now: 7,
                want: Attempt::Update(mine(7, 7, 3)),
            },
            Row {
                name: "mine: renew, acquireTime and transitions kept",
                seen_before: None,
                current: Some(Record {
                    acquire_time_ms: Some(40),
                    ..rec(ME, 50, 5)
                }),
                now: 2_050,
                want: Attempt::Update(mine(40, 2_050, 5)),
            },
        ];
        for row in rows {
            let mut e = Elector::new(ME, Config::default());
            e.observed = row.seen_before.clone();
            assert_eq!(
                e.attempt(row.current.as_ref(), row.now, row.now),
                row.want,
                "{}",
                row.name
            );
        }
    }

    #[test]
    fn a_leader_stops_at_the_renew_deadline_before_anyone_may_take_over() {
        let c = Config::default();
        let mut leader = Elector::new("a", c);
        let mut other = Elector::new("b", c);
        let Attempt::Create(r) = leader.attempt(None, 0, 0) else {
            panic!("create")
        };
        leader.written(r.clone(), 0, 30);
        assert!(leader.leading(30));
        // the other sees the record at once (the earliest it can: the write started at 0)
        assert!(matches!(
            other.attempt(Some(&r), 0, 0),
            Attempt::Held { .. }
        ));
        // the leader's renewals all fail from now on: it leads from when it acquired (30)
        assert!(leader.leading(10_029));
        assert!(!leader.leading(10_030), "gives up at the renew deadline");
        assert_eq!(leader.leading_until(), Some(10_030));
        assert!(matches!(
            other.attempt(Some(&r), 14_999, 14_999),
            Attempt::Held { .. }
        ));
        let Attempt::Update(taken) = other.attempt(Some(&r), 15_000, 15_000) else {
            panic!("the other takes it once the lease duration passed")
        };
        assert_eq!(
            (taken.holder_identity.as_str(), taken.lease_transitions),
            ("b", 1)
        );
        leader.stop_leading();
        assert!(!leader.leading(10_001));
        // the old leader reads the new record: held by b
        assert!(matches!(
            leader.attempt(Some(&taken), 15_100, 15_100),
            Attempt::Held { .. }
        ));
    }

    /// Under write overload a write can take longer than the renew deadline: the acquisition
    /// still leads (from when it was written), and a slow renewal still counts from its start.
    #[test]
    fn a_slow_acquisition_leads_from_when_it_was_written() {
        let mut e = Elector::new(ME, Config::default());
        let Attempt::Create(r) = e.attempt(None, 0, 0) else {
            panic!()
        };
        e.written(r.clone(), 0, 12_000);
        assert!(
            e.leading(12_000),
            "the write took longer than the renew deadline"
        );
        assert_eq!(e.leading_until(), Some(22_000));
        let Attempt::Update(r2) = e.attempt(Some(&r), 14_000, 14_000) else {
            panic!()
        };
        e.written(r2, 14_000, 20_000);
        assert_eq!(
            e.leading_until(),
            Some(24_000),
            "a renewal counts from its start"
        );
    }

    #[test]
    fn a_renewal_extends_leadership_from_its_start() {
        let mut e = Elector::new(ME, Config::default());
        let Attempt::Create(r) = e.attempt(None, 0, 0) else {
            panic!()
        };
        e.written(r.clone(), 0, 10);
        let Attempt::Update(r2) = e.attempt(Some(&r), 2_000, 2_000) else {
            panic!()
        };
        assert_eq!(r2.acquire_time_ms, Some(0));
        e.written(r2, 2_000, 2_500);
        assert_eq!(e.leading_until(), Some(12_000));
        assert_eq!(e.observed_holder(), Some(ME));
    }
}
