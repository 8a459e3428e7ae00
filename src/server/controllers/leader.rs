//! Leader election for the controllers that must run once per cluster, as
//! kube-controller-manager's `--leader-elect`: client-go's elector (`core::leaderelection`
//! decides) on the Lease `kube-system/daemonset-agent-controllers`, read and written through the
//! verbs under the server's internal identity. The work runs only while this server leads; it
//! is dropped (every controller future cancelled) the moment the renew deadline passes without a
//! successful renewal, which is before any other server may take the Lease.
//!
//! Decisions use a monotonic clock (tokio's, so paused time drives the tests); the wall clock
//! only stamps `acquireTime` and `renewTime` (MicroTime) for people to read.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::agent::clock::Clock;
use crate::core::leaderelection::{Attempt, Config, Elector, Record, JITTER_FACTOR};
use crate::server::auth::User;
use crate::server::kinds::LEASES;
use crate::server::query::WriteOpts;
use crate::server::status::ApiError;
use crate::server::verbs::{Api, ObjectRef, Part};

pub const LEASE_NAMESPACE: &str = "kube-system";
pub const LEASE_NAME: &str = "daemonset-agent-controllers";

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lease {LEASE_NAMESPACE}/{LEASE_NAME}: {source}")]
    Api {
        #[source]
        source: ApiError,
    },
    #[error("lease {LEASE_NAMESPACE}/{LEASE_NAME}: {0}")]
    Malformed(String),
}

impl From<ApiError> for LeaderError {
    fn from(source: ApiError) -> LeaderError {
        LeaderError::Api { source }
    }
}

/// `--leader-elect` and its durations.
#[derive(Debug, Clone)]
pub struct Options {
    /// false: the work runs at once and for ever (a single server that elects no one).
    pub enabled: bool,
    pub config: Config,
    /// This server's identity in `holderIdentity` (client-go: hostname + "_" + a uuid).
    pub identity: String,
}

impl Options {
    /// Elected with `config`, as `hostname_uuid`.
    pub fn elected(config: Config) -> Options {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "server".into());
        Options {
            enabled: true,
            config,
            identity: format!("{host}_{}", uuid::Uuid::new_v4()),
        }
    }
}

impl Options {
    /// Not elected: the controllers run at once and for ever.
    pub fn disabled() -> Options {
        Options {
            enabled: false,
            config: Config::default(),
            identity: String::new(),
        }
    }

    /// Elected with `config` (None: not elected), as the identity kept in
    /// `DATA_DIR/leader-identity` (made once: `hostname_uuid`). The same server restarted takes
    /// its own Lease back at once instead of waiting out its previous run's lease; servers
    /// sharing a store have data directories, so identities, of their own.
    pub fn for_data_dir(dir: &std::path::Path, config: Option<Config>) -> Options {
        let Some(config) = config else {
            return Options::disabled();
        };
        let path = dir.join("leader-identity");
        let kept = std::fs::read_to_string(&path)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let identity = kept.unwrap_or_else(|| {
            let id = Options::elected(config).identity;
            if let Err(e) = std::fs::write(&path, &id) {
                tracing::warn!(error = %e, path = %path.display(), "cannot keep the leader identity");
            }
            id
        });
        Options {
            enabled: true,
            config,
            identity,
        }
    }
}

/// client-go's `ReleaseOnCancel`: a leader that stops (the server shuts down) empties the Lease
/// (no holder, 1 s) so that another server takes it at once. Does nothing when it does not hold it.
pub async fn release(api: &Api, clock: Clock, opts: &Options) {
    if !opts.enabled {
        return;
    }
    let user = User::internal("leader-election");
    let at = ObjectRef::new(&LEASES, Some(LEASE_NAMESPACE), LEASE_NAME);
    let Ok(current) = api.get(&user, at).await else {
        return;
    };
    let Ok(record) = record_of(&current) else {
        return;
    };
    if record.holder_identity != opts.identity {
        return;
    }
    let now = clock.now_ms();
    let released = Record {
        holder_identity: String::new(),
        lease_duration_seconds: 1,
        acquire_time_ms: Some(now),
        renew_time_ms: Some(now),
        lease_transitions: record.lease_transitions,
    };
    let rv = current
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    match api
        .update(
            &user,
            at,
            Part::Main,
            lease_object(&released, rv),
            WriteOpts::INTERNAL,
        )
        .await
    {
        Ok(_) => tracing::info!(identity = opts.identity.as_str(), "leader lease released"),
        Err(e) => tracing::warn!(error = %e, "leader lease not released"),
    }
}

/// The elector's loop: a candidate until it acquires, then the work (made anew by `work` each
/// time it leads) beside the renewals, until leadership is lost; then a candidate again. Returns
/// when a round of work returns by itself.
pub async fn run<W, F>(api: Arc<Api>, clock: Clock, opts: Options, mut work: W)
where
    W: FnMut() -> F,
    F: Future<Output = ()> + Send + 'static,
{
    if !opts.enabled {
        return work().await;
    }
    let mut lease = LeaseLock::new(api, clock, opts.identity.clone(), opts.config);
    loop {
        lease.acquire().await;
        tracing::info!(
            identity = opts.identity.as_str(),
            "leading: controllers started"
        );
        // the work on a task of its own (aborted when this round ends): polled in this task,
        // a controller's long turn (a relist of every pod at 5000 nodes) held the renewals
        // past their deadline, leadership was lost, the controllers started again with
        // another relist, and so on every ~13 s
        let mut round = Round(tokio::spawn(work()));
        tokio::select! {
            // the renewals first: a leader woken past its renew deadline (a frozen process, a
            // suspended machine) drops the work before polling it again
            biased;
            _ = lease.renew() => {}
            _ = &mut round.0 => return,
        }
        drop(round);
        tracing::warn!(
            identity = opts.identity.as_str(),
            "leadership lost: controllers stopped"
        );
    }
}

/// A round of work, aborted when dropped (leadership lost, or the elector dropped).
struct Round(tokio::task::JoinHandle<()>);

impl Drop for Round {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One candidate's Lease: its elector, the monotonic clock's origin, the API.
pub struct LeaseLock {
    api: Arc<Api>,
    clock: Clock,
    user: User,
    elector: Elector,
    origin: Instant,
}

impl LeaseLock {
    pub fn new(api: Arc<Api>, clock: Clock, identity: String, config: Config) -> LeaseLock {
        LeaseLock {
            api,
            clock,
            user: User::internal("leader-election"),
            elector: Elector::new(&identity, config),
            origin: Instant::now(),
        }
    }

    fn mono_ms(&self) -> i64 {
        self.origin.elapsed().as_millis() as i64
    }

    fn at_mono(&self, ms: i64) -> Instant {
        self.origin + Duration::from_millis(ms.max(0) as u64)
    }

    /// Whether this candidate leads now.
    pub fn leading(&self) -> bool {
        self.elector.leading(self.mono_ms())
    }

    /// Tries until it leads: every retry period, jittered up to client-go's factor (so that
    /// candidates started together do not collide for ever).
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot read or write the lease")
                }
            }
            let retry = self.elector.config().retry_period_ms as f64;
            let jittered = retry * (1.0 + rand::random::<f64>() * (JITTER_FACTOR - 1.0));
            tokio::time::sleep(Duration::from_millis(jittered as u64)).await;
        }
    }

    /// Renews every retry period; returns when the renew deadline passed since the start of the
    /// last successful renewal (an attempt still in flight then is abandoned).
    pub async fn renew(&mut self) {
        let retry = self.elector.config().retry_period_ms;
        loop {
            let Some(until) = self.elector.leading_until() else {
                return;
            };
            let next = (self.mono_ms() + retry).min(until);
            tokio::time::sleep_until(self.at_mono(next)).await;
            if !self.leading() {
                self.elector.stop_leading();
                return;
            }
            let deadline = self.at_mono(until);
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => tracing::warn!("leader election: the lease is held by another"),
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election: renewal failed"),
                Err(_) => {}
            }
            if !self.leading() {
                self.elector.stop_leading();
                return;
            }
        }
    }

    /// client-go's `tryAcquireOrRenew`: read the Lease, let the elector decide, write
    /// conditionally on the resourceVersion read. true: leading after it.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderError> {
        let started = self.mono_ms();
        let at = ObjectRef::new(&LEASES, Some(LEASE_NAMESPACE), LEASE_NAME);
        let current = match self.api.get(&self.user, at).await {
            Ok(obj) => Some(obj),
            Err(e) if e.code == 404 => None,
            Err(e) => return Err(e.into()),
        };
        let record = current.as_deref().map(record_of).transpose()?;
        let attempt = self
            .elector
            .attempt(record.as_ref(), self.mono_ms(), self.clock.now_ms());
        let written = match attempt {
            Attempt::Held { .. } => return Ok(false),
            Attempt::Create(r) => {
                let obj = lease_object(&r, None);
                self.api
                    .create(
                        &self.user,
                        &LEASES,
                        Some(LEASE_NAMESPACE),
                        obj,
                        WriteOpts::INTERNAL,
                    )
                    .await
                    .map(|_| r)
            }
            Attempt::Update(r) => {
                let rv = current
                    .as_deref()
                    .and_then(|o| o.pointer("/metadata/resourceVersion"))
                    .and_then(Value::as_str);
                let obj = lease_object(&r, rv);
                self.api
                    .update(&self.user, at, Part::Main, obj, WriteOpts::INTERNAL)
                    .await
                    .map(|_| r)
            }
        };
        match written {
            Ok(r) => {
                let now = self.mono_ms();
                self.elector.written(r, started, now);
                Ok(self.elector.leading(now))
            }
            // another candidate wrote first: it leads, this one observes it next time
            Err(e) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// The Lease as client-go's LeaseLock reads it.
pub fn record_of(lease: &Value) -> Result<Record, LeaderError> {
    let spec = &lease["spec"];
    let time = |field: &str| -> Result<Option<i64>, LeaderError> {
        match spec.get(field).and_then(Value::as_str) {
            None => Ok(None),
            Some(t) => chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| Some(t.timestamp_millis()))
                .map_err(|e| LeaderError::Malformed(format!("spec.{field} {t:?}: {e}"))),
        }
    };
    Ok(Record {
        holder_identity: spec["holderIdentity"].as_str().unwrap_or("").to_string(),
        lease_duration_seconds: spec["leaseDurationSeconds"].as_i64().unwrap_or(0),
        acquire_time_ms: time("acquireTime")?,
        renew_time_ms: time("renewTime")?,
        lease_transitions: spec["leaseTransitions"].as_i64().unwrap_or(0) as i32,
    })
}

/// MicroTime: RFC 3339 with microseconds, UTC.
fn micro_time(ms: Option<i64>) -> Value {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
        .unwrap_or(Value::Null)
}

/// The Lease object of `r`, conditional on `rv` when given.
fn lease_object(r: &Record, rv: Option<&str>) -> Value {
    let mut metadata = json!({"name": LEASE_NAME, "namespace": LEASE_NAMESPACE});
    if let Some(rv) = rv {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": r.holder_identity,
            "leaseDurationSeconds": r.lease_duration_seconds,
            "acquireTime": micro_time(r.acquire_time_ms),
            "renewTime": micro_time(r.renew_time_ms),
            "leaseTransitions": r.lease_transitions,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::kinds::NAMESPACES;
    use crate::server::store::SqliteStore;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const T0: i64 = 1_800_000_000_000;

    struct Rig {
        api: Arc<Api>,
        user: User,
        _dir: tempfile::TempDir,
    }

    async fn rig() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db"), 1000).unwrap();
        let api = Arc::new(Api::new(Arc::new(store), Default::default()));
        let user = User::internal("test");
        let ns = json!({"metadata": {"name": LEASE_NAMESPACE}});
        api.create(&user, &NAMESPACES, None, ns, WriteOpts::INTERNAL)
            .await
            .unwrap();
        Rig {
            api,
            user,
            _dir: dir,
        }
    }

    impl Rig {
        async fn lease(&self) -> Value {
            let at = ObjectRef::new(&LEASES, Some(LEASE_NAMESPACE), LEASE_NAME);
            (*self.api.get(&self.user, at).await.unwrap()).clone()
        }
    }

    fn opts(identity: &str) -> Options {
        Options {
            enabled: true,
            config: Config::default(),
            identity: identity.into(),
        }
    }

    /// Work that counts how many rounds started and runs until dropped.
    fn counting(
        rounds: Arc<AtomicUsize>,
    ) -> impl FnMut() -> futures::future::BoxFuture<'static, ()> {
        move || {
            rounds.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn acquires_at_once_and_renews_every_retry_period() {
        let rig = rig().await;
        let rounds = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(run(
            rig.api.clone(),
            Clock::starting_at(T0),
            opts("a"),
            counting(rounds.clone()),
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 1, "leading at once");
        let first = rig.lease().await;
        assert_eq!(first["spec"]["holderIdentity"], "a");
        assert_eq!(first["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(first["spec"]["leaseTransitions"], 0);
        assert_eq!(first["spec"]["acquireTime"], "2027-01-15T08:00:00.000000Z");
        assert_eq!(first["spec"]["acquireTime"], first["spec"]["renewTime"]);
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        let renewed = rig.lease().await;
        assert_eq!(renewed["spec"]["renewTime"], "2027-01-15T08:00:02.000000Z");
        assert_eq!(renewed["spec"]["acquireTime"], first["spec"]["acquireTime"]);
        assert_eq!(renewed["spec"]["leaseTransitions"], 0);
        tokio::time::sleep(Duration::from_millis(60_000)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 1, "never lost");
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_held_by_another_keeps_the_work_idle_until_it_expires() {
        let rig = rig().await;
        let other = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": LEASE_NAME, "namespace": LEASE_NAMESPACE},
            "spec": {"holderIdentity": "other", "leaseDurationSeconds": 15,
                "acquireTime": "2027-01-15T07:00:00.000000Z",
                "renewTime": "2027-01-15T07:59:59.000000Z", "leaseTransitions": 4}});
        rig.api
            .create(
                &rig.user,
                &LEASES,
                Some(LEASE_NAMESPACE),
                other,
                WriteOpts::INTERNAL,
            )
            .await
            .unwrap();
        let rounds = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let task = tokio::spawn(run(
            rig.api.clone(),
            Clock::starting_at(T0),
            opts("a"),
            counting(rounds.clone()),
        ));
        // observed at 0: held until 15 s of this candidate's clock, whatever renewTime says
        tokio::time::sleep(Duration::from_millis(14_900)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 0, "idle while held");
        assert_eq!(rig.lease().await["spec"]["holderIdentity"], "other");
        let started = loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if rounds.load(Ordering::SeqCst) == 1 {
                break start.elapsed();
            }
        };
        // the first try at or after 15 s: within one jittered retry period of it
        assert!(
            started >= Duration::from_secs(15) && started <= Duration::from_millis(15_000 + 2_500),
            "{started:?}"
        );
        let taken = rig.lease().await;
        assert_eq!(taken["spec"]["holderIdentity"], "a");
        assert_eq!(taken["spec"]["leaseTransitions"], 5);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewing_holder_keeps_it_and_a_leader_that_cannot_renew_stops_in_time() {
        let rig = rig().await;
        let clock = Clock::starting_at(T0);
        // b leads
        let mut b = LeaseLock::new(
            rig.api.clone(),
            clock.clone(),
            "b".into(),
            Config::default(),
        );
        assert!(b.try_acquire_or_renew().await.unwrap());
        let rounds = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(run(
            rig.api.clone(),
            clock.clone(),
            opts("a"),
            counting(rounds.clone()),
        ));
        // b renews every 2 s for a minute: a never leads
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(2_000)).await;
            assert!(b.try_acquire_or_renew().await.unwrap());
            assert_eq!(rounds.load(Ordering::SeqCst), 0);
        }
        // b stops renewing (cut off): it stops leading at its renew deadline, 10 s after its
        // last renewal started, and a takes over only 15 s after a saw that renewal
        let last = Instant::now();
        tokio::time::sleep(Duration::from_millis(9_999)).await;
        assert!(b.leading());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!b.leading(), "b gave up at its renew deadline");
        assert_eq!(rounds.load(Ordering::SeqCst), 0, "a is still waiting");
        let taken = loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if rounds.load(Ordering::SeqCst) == 1 {
                break last.elapsed();
            }
        };
        assert!(taken >= Duration::from_secs(15), "{taken:?}");
        assert_eq!(rig.lease().await["spec"]["leaseTransitions"], 1);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_lost_drops_the_work() {
        let rig = rig().await;
        let rounds = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicUsize::new(0));
        let work = {
            let (rounds, alive) = (rounds.clone(), alive.clone());
            move || {
                rounds.fetch_add(1, Ordering::SeqCst);
                let alive = alive.clone();
                async move {
                    struct Alive(Arc<AtomicUsize>);
                    impl Drop for Alive {
                        fn drop(&mut self) {
                            self.0.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    alive.fetch_add(1, Ordering::SeqCst);
                    let _guard = Alive(alive);
                    std::future::pending::<()>().await
                }
            }
        };
        let task = tokio::spawn(run(
            rig.api.clone(),
            Clock::starting_at(T0),
            opts("a"),
            work,
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(alive.load(Ordering::SeqCst), 1);
        // someone else takes the Lease by force (an operator's edit): a's next renewal sees it
        // held, and a stops at its renew deadline
        let mut lease = rig.lease().await;
        lease["spec"]["holderIdentity"] = json!("intruder");
        let at = ObjectRef::new(&LEASES, Some(LEASE_NAMESPACE), LEASE_NAME);
        rig.api
            .update(&rig.user, at, Part::Main, lease, WriteOpts::INTERNAL)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(9_900)).await;
        assert_eq!(
            alive.load(Ordering::SeqCst),
            1,
            "still within the renew deadline"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(alive.load(Ordering::SeqCst), 0, "the work was dropped");
        assert_eq!(rounds.load(Ordering::SeqCst), 1);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_leader_releases_the_lease_for_the_next_at_once() {
        let rig = rig().await;
        let clock = Clock::starting_at(T0);
        let mut a = LeaseLock::new(
            rig.api.clone(),
            clock.clone(),
            "a".into(),
            Config::default(),
        );
        assert!(a.try_acquire_or_renew().await.unwrap());
        release(&rig.api, clock.clone(), &opts("a")).await;
        let lease = rig.lease().await;
        assert_eq!(lease["spec"]["holderIdentity"], "");
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 1);
        let mut b = LeaseLock::new(rig.api.clone(), clock, "b".into(), Config::default());
        assert!(b.try_acquire_or_renew().await.unwrap(), "taken at once");
        assert_eq!(rig.lease().await["spec"]["leaseTransitions"], 1);
        // releasing what another holds does nothing
        release(&rig.api, Clock::starting_at(T0), &opts("a")).await;
        assert_eq!(rig.lease().await["spec"]["holderIdentity"], "b");
    }

    #[test]
    fn the_identity_is_kept_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let first = Options::for_data_dir(dir.path(), Some(Config::default()));
        let again = Options::for_data_dir(dir.path(), Some(Config::default()));
        assert!(first.enabled);
        assert_eq!(first.identity, again.identity);
        assert!(first.identity.contains('_'), "{}", first.identity);
        assert!(!Options::for_data_dir(dir.path(), None).enabled);
    }

    #[test]
    fn the_lease_reads_back_as_written() {
        let r = Record {
            holder_identity: "x".into(),
            lease_duration_seconds: 15,
            acquire_time_ms: Some(T0 + 1),
            renew_time_ms: Some(T0 + 2_500),
            lease_transitions: 3,
        };
        let obj = lease_object(&r, Some("7"));
        assert_eq!(obj["spec"]["renewTime"], "2027-01-15T08:00:02.500000Z");
        assert_eq!(obj["metadata"]["resourceVersion"], "7");
        assert_eq!(record_of(&obj).unwrap(), r);
    }
}
