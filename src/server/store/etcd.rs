//! The etcd v3 backend, laid out as kube-apiserver lays its objects out: one key per object,
//! `PREFIX/RESOURCE/NAMESPACE/NAME` (cluster-scoped: `PREFIX/RESOURCE/NAME`), the value its JSON
//! through the encryption transform, without `metadata.resourceVersion`: an object's
//! resourceVersion is its key's `mod_revision`, filled in on every read.
//!
//! Writes are transactions: a create compares the key's version with 0, an update or a delete
//! its `mod_revision` with the expected resourceVersion (or that it exists); a failed compare
//! reads the key in the same transaction, for the error. The cache is fed by one watch of the
//! whole prefix per server (`prev_kv`, `progress_notify`) from the revision it listed at, so the
//! writes of every server replica reach this one's watchers. A watch that answers "compacted"
//! relists: the cache replaces its objects and its watchers from before are told 410.
//!
//! A request that fails is sent again as etcd's clientv3 retry interceptor would, bounded
//! ([`RETRY_ATTEMPTS`] within [`RETRY_BUDGET`], jittered back-off): any one that provably never
//! reached etcd (no connection to a dead member; refused before its proposal); a read, and a
//! write whose compare refuses its own duplicate, whose outcome is unknown too (a write finding
//! its own bytes at the key takes them as its answer); never a delete whose outcome is unknown.
//!
//! Compaction is the servers' job, as kube-apiserver's (`compact.go`): every interval, to the
//! revision seen one interval before, agreed between replicas through the version of one key
//! (`compact_rev_key`), so that one of them compacts per interval.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType as EtcdEvent,
    GetOptions, Identity, KeyValue, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde_json::Value;
use tokio::sync::mpsc;

use super::cache::Store;
use super::*;

/// kube-apiserver's `--etcd-prefix`.
pub const DEFAULT_PREFIX: &str = "/registry";

/// kube-apiserver's `--etcd-compaction-interval`.
pub const DEFAULT_COMPACTION_INTERVAL: Duration = Duration::from_secs(300);

/// The key whose version the replicas compare to take turns compacting (kube-apiserver's).
const COMPACT_REV_KEY: &str = "compact_rev_key";

/// How many objects one request of a relist reads.
const LIST_PAGE: i64 = 500;

/// How often, at most, the high-water mark is written (`EtcdOptions::high_water`).
const NOTE_EVERY: Duration = Duration::from_secs(1);

/// How long a broken watch waits before it watches again.
const REWATCH_DELAY: Duration = Duration::from_millis(500);

/// How many times, at most, one request is sent ([`retrying`]): with one member of three down,
/// the client's balancer picks the dead one about a third of the time, so that eight attempts
/// all fail on it about once in 6500 requests.
const RETRY_ATTEMPTS: u32 = 8;

/// How long one request may take over its attempts, back-off included: room for one attempt
/// that etcd answers `request timed out` (its 5 s plus two election timeouts: a member's leader
/// killed under it) and one more, well within kube-apiserver's 60 s request timeout, as
/// clientv3's retries stay within the request's context.
const RETRY_BUDGET: Duration = Duration::from_secs(15);

/// The back-off before the second attempt, doubled before each next one up to [`RETRY_CAP`],
/// jittered by +-50%.
const RETRY_BASE: Duration = Duration::from_millis(25);
const RETRY_CAP: Duration = Duration::from_secs(1);

/// Where the objects are, and how to reach them (`--datastore-*`, `--etcd-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// `http://h1:2379`, `https://h2:2379`, ...
    pub endpoints: Vec<String>,
    /// The CA that signed the members' certificates (`--datastore-cafile`).
    pub ca_file: Option<PathBuf>,
    /// The client certificate and key (`--datastore-certfile`, `--datastore-keyfile`).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// `--etcd-prefix`.
    pub prefix: String,
    /// `--etcd-compaction-interval`; zero: this server never compacts.
    pub compaction_interval: Duration,
    /// Where this server notes the highest revision it has seen (in its data directory, so that
    /// an etcd restored from a snapshot, whose revision went back, is noticed at start); None:
    /// nowhere.
    pub high_water: Option<PathBuf>,
}

impl EtcdOptions {
    /// The options for `endpoints` (comma separated, as `--datastore-endpoint` takes them).
    pub fn new(endpoints: &str) -> EtcdOptions {
        EtcdOptions {
            endpoints: endpoints
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            prefix: DEFAULT_PREFIX.to_string(),
            compaction_interval: DEFAULT_COMPACTION_INTERVAL,
            high_water: None,
        }
    }
}

/// The key layout under a prefix.
#[derive(Debug, Clone)]
pub struct Layout {
    /// With its trailing `/`.
    prefix: String,
}

impl Layout {
    pub fn new(prefix: &str) -> Layout {
        Layout {
            prefix: format!("{}/", prefix.trim_end_matches('/')),
        }
    }

    /// The etcd key of `key`.
    pub fn key(&self, key: &Key) -> String {
        if key.namespace.is_empty() {
            format!("{}{}/{}", self.prefix, key.resource, key.name)
        } else {
            format!(
                "{}{}/{}/{}",
                self.prefix, key.resource, key.namespace, key.name
            )
        }
    }

    /// Every key of `resource` (in `namespace`, when given and not ""): a prefix.
    pub fn range(&self, resource: &str, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if !ns.is_empty() => format!("{}{resource}/{ns}/", self.prefix),
            _ => format!("{}{resource}/", self.prefix),
        }
    }

    /// The key of the cluster's shared secrets (`bootstrap`): beside the prefix, not under it,
    /// as k3s keeps its bootstrap data at `/bootstrap/...`: no resource maps to it, so the API
    /// never serves it and the prefix watch never sees it.
    pub fn bootstrap_key(&self) -> String {
        format!("/bootstrap{}", self.prefix.trim_end_matches('/'))
    }

    /// The object an etcd key is the key of; None for a key that is not one.
    pub fn parse(&self, key: &[u8]) -> Option<Key> {
        let rest = std::str::from_utf8(key).ok()?.strip_prefix(&self.prefix)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let (resource, namespace, name) = match parts[..] {
            [r, name] => (r, "", name),
            [r, ns, name] if !ns.is_empty() => (r, ns, name),
            _ => return None,
        };
        if resource.is_empty() || name.is_empty() {
            return None;
        }
        Some(Key {
            resource: resource.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

/// The etcd backend of a [`Store`].
pub struct EtcdBackend {
    client: Client,
    layout: Layout,
    transform: Arc<dyn Transformer>,
    high_water: Option<PathBuf>,
}

/// The revision noted in `path` (0: none).
fn read_high_water(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn note_high_water(path: &std::path::Path, rv: u64) {
    if let Err(e) = crate::pki::write_private(path, rv.to_string().as_bytes()) {
        tracing::warn!(path = %path.display(), error = %e, "cannot note the store's high-water mark");
    }
}

/// A revision as a resourceVersion (etcd's are positive).
fn rv_of(revision: i64) -> u64 {
    revision.max(0) as u64
}

fn etcd_error(e: etcd_client::Error) -> StoreError {
    StoreError::Etcd(Box::new(e))
}

/// etcd's answer for a revision compacted away, as kube-apiserver's `interpretListError` reads it.
fn is_compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == tonic::Code::OutOfRange || s.message().contains("compacted"))
}

/// How a request to etcd failed, for its retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// It provably never reached etcd's state machine: no connection to the member could be made
    /// (the member is down), or the member refused it before proposing it (no leader, too many
    /// requests). Safe to send again, whatever it is.
    NotSent,
    /// It was sent and its outcome is unknown: the connection broke under it, or the member gave
    /// up waiting for it (`request timed out`, `leader changed`): it may have been applied.
    Unknown,
    /// An answer; sending it again gets the same.
    Final,
}

/// The class of `e`, as etcd's clientv3 retry interceptor draws the line (`isSafeRetry`): a
/// status etcd sent has no local source; one tonic made from a local error keeps the error as
/// its source, a connection that could not be made as a [`tonic::ConnectError`] in its chain.
fn failure(e: &etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    let status = match e {
        E::GRpcStatus(s) => s,
        // the channel could not be made at all
        E::TransportError(_) => return Failure::NotSent,
        E::IoError(_) => return Failure::Unknown,
        _ => return Failure::Final,
    };
    let mut source = std::error::Error::source(status);
    let local = source.is_some();
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return Failure::NotSent;
        }
        source = err.source();
    }
    if local {
        // a reset, a closed connection, a keep-alive that timed out, a client deadline
        return Failure::Unknown;
    }
    match (status.code(), status.message()) {
        // refused before the proposal (etcd's ErrGRPCNoLeader, ErrGRPCTooManyRequests)
        (tonic::Code::Unavailable, "etcdserver: no leader")
        | (tonic::Code::ResourceExhausted, "etcdserver: too many requests") => Failure::NotSent,
        // proposed, or maybe: ErrGRPCTimeout, ErrGRPCLeaderChanged, a stopping member
        (tonic::Code::Unavailable, _) => Failure::Unknown,
        _ => Failure::Final,
    }
}

/// Which failed requests may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// A read: any that did not answer (clientv3's `repeatable`).
    Read,
    /// A write whose compare refuses its own duplicate (create-if-absent on version 0, an update
    /// on `mod_revision`) and whose failed compare reads the key: after an unknown outcome, the
    /// key holding exactly its bytes is its own earlier attempt, applied.
    Guarded,
    /// Any other write (a delete: one whose answer was lost finds the key gone and cannot tell
    /// its delete from another's): only one never sent (clientv3's `nonRepeatable`).
    Unguarded,
}

impl Retry {
    fn allows(self, f: Failure) -> bool {
        match f {
            Failure::NotSent => true,
            Failure::Unknown => self != Retry::Unguarded,
            Failure::Final => false,
        }
    }
}

/// The back-off before attempt `n + 1` (`n` from 1), `jitter` in [0, 1).
fn backoff(n: u32, jitter: f64) -> Duration {
    let base = RETRY_BASE
        .saturating_mul(1 << (n - 1).min(16))
        .min(RETRY_CAP);
    base.mul_f64(0.5 + jitter)
}

/// Sends `attempt` until it answers, or fails in a way `mode` does not retry, or
/// [`RETRY_ATTEMPTS`] or [`RETRY_BUDGET`] run out; the answer and whether an attempt before it
/// had an unknown outcome (`attempt` is told that too).
async fn retrying<T, F, Fut>(
    what: &str,
    mode: Retry,
    mut attempt: F,
) -> Result<(T, bool), etcd_client::Error>
where
    F: FnMut(bool) -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let start = tokio::time::Instant::now();
    let mut unknown = false;
    let mut n = 0;
    loop {
        n += 1;
        let e = match attempt(unknown).await {
            Ok(answer) => return Ok((answer, unknown)),
            Err(e) => e,
        };
        let class = failure(&e);
        let wait = backoff(n, rand::random::<f64>());
        if !mode.allows(class) || n >= RETRY_ATTEMPTS || start.elapsed() + wait > RETRY_BUDGET {
            if class != Failure::Final {
                tracing::warn!(what, attempts = n, error = %e, "etcd request failed: not retried");
            }
            return Err(e);
        }
        tracing::debug!(what, attempt = n, ?class, error = %e, "etcd request failed: retrying");
        unknown |= class == Failure::Unknown;
        tokio::time::sleep(wait).await;
    }
}

impl EtcdBackend {
    /// Connects to the members (no request is made yet).
    pub async fn connect(
        opts: &EtcdOptions,
        transform: Arc<dyn Transformer>,
    ) -> Result<EtcdBackend, StoreError> {
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            // a member cut off from the leader ends its watches instead of keeping them silent
            .with_require_leader(true);
        if opts.ca_file.is_some() || opts.cert_file.is_some() {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| StoreError::Config(format!("{}: {e}", p.display())))
            };
            let mut tls = TlsOptions::new();
            if let Some(ca) = &opts.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&opts.cert_file, &opts.key_file) {
                (Some(c), Some(k)) => tls = tls.identity(Identity::from_pem(read(c)?, read(k)?)),
                (None, None) => {}
                _ => {
                    return Err(StoreError::Config(
                        "--datastore-certfile and --datastore-keyfile go together".into(),
                    ))
                }
            }
            connect = connect.with_tls(tls);
        }
        let client = Client::connect(&opts.endpoints, Some(connect))
            .await
            .map_err(etcd_error)?;
        Ok(EtcdBackend {
            client,
            layout: Layout::new(&opts.prefix),
            transform,
            high_water: opts.high_water.clone(),
        })
    }

    /// The object of `kv`, at its `mod_revision`.
    fn object(&self, key: &Key, kv: &KeyValue) -> Result<Value, StoreError> {
        let text = String::from_utf8_lossy(kv.value()).into_owned();
        let mut value = decode(&*self.transform, key, text)?;
        set_rv(&mut value, rv_of(kv.mod_revision()));
        Ok(value)
    }

    /// Every object under `range` at `revision` (0: now), paged; and the revision read at.
    async fn read(
        &self,
        range: &str,
        revision: i64,
    ) -> Result<(Vec<(Key, Value)>, u64), StoreError> {
        let end = {
            let mut e = range.as_bytes().to_vec();
            // the end of a prefix range: its last byte plus one ('/' + 1)
            if let Some(last) = e.last_mut() {
                *last += 1;
            }
            e
        };
        let mut from = range.as_bytes().to_vec();
        let mut at = revision;
        let mut out = Vec::new();
        loop {
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE)
                .with_revision(at);
            let get = || {
                let mut kv = self.client.kv_client();
                let (from, opts) = (from.clone(), opts.clone());
                async move { kv.get(from, Some(opts)).await }
            };
            let resp = retrying("range", Retry::Read, |_| get())
                .await
                .map(|(r, _)| r)
                .map_err(|e| {
                    if is_compacted(&e) {
                        StoreError::Expired {
                            requested: rv_of(revision),
                            oldest: 0,
                        }
                    } else {
                        etcd_error(e)
                    }
                })?;
            if at == 0 {
                at = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            for kv in resp.kvs() {
                if let Some(key) = self.layout.parse(kv.key()) {
                    let value = self.object(&key, kv)?;
                    out.push((key, value));
                }
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok((out, rv_of(at)))
    }

    /// Everything under the prefix, now.
    pub async fn load(&self) -> Result<(Vec<(Key, Value)>, u64), StoreError> {
        self.read(&self.layout.prefix, 0).await
    }

    /// One compare-and-write: `op` when `compare` holds, else a read of the key for the error;
    /// the revision written at and the answers of the ops. `ours`: the bytes `op` puts, which
    /// makes it a [`Retry::Guarded`] write (a put whose answer was lost is sent again; when the
    /// key then holds these bytes, that earlier put is the answer); None: [`Retry::Unguarded`].
    async fn txn(
        &self,
        key: &Key,
        expect: Expect,
        op: TxnOp,
        ours: Option<&str>,
    ) -> Result<(u64, Vec<TxnOpResponse>), StoreError> {
        let k = self.layout.key(key);
        let compare = match expect {
            Expect::Absent => Compare::version(k.clone(), CompareOp::Equal, 0),
            Expect::Present(None) => Compare::version(k.clone(), CompareOp::Greater, 0),
            Expect::Present(Some(rv)) => {
                Compare::mod_revision(k.clone(), CompareOp::Equal, rv as i64)
            }
        };
        let attempt = |after_unknown: bool| {
            let mut when = vec![compare.clone()];
            if let (true, Expect::Present(None), Some(v)) = (after_unknown, expect, ours) {
                // "any version" would take the duplicate: the key holding our bytes refuses it
                // (on a key that is there: etcd fails a value compare on an absent one)
                when.push(Compare::value(k.clone(), CompareOp::NotEqual, v));
            }
            let txn = Txn::new()
                .when(when)
                .and_then([op.clone()])
                .or_else([TxnOp::get(k.clone(), None)]);
            let mut kv = self.client.kv_client();
            async move { kv.txn(txn).await }
        };
        let mode = match ours {
            Some(_) => Retry::Guarded,
            None => Retry::Unguarded,
        };
        let (resp, after_unknown) = retrying("txn", mode, attempt).await.map_err(etcd_error)?;
        if resp.succeeded() {
            let rv = rv_of(resp.header().map(|h| h.revision()).unwrap_or(0));
            return Ok((rv, resp.op_responses()));
        }
        let found = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Get(g) => Some(
                    g.kvs()
                        .first()
                        .map(|kv| (kv.mod_revision(), kv.value().to_vec())),
                ),
                _ => None,
            })
            .flatten();
        if let (true, Some((at, value)), Some(ours)) = (after_unknown, &found, ours) {
            if value.as_slice() == ours.as_bytes() {
                tracing::info!(key = %k, revision = at, "an etcd write whose answer was lost had been applied");
                return Ok((rv_of(*at), Vec::new()));
            }
        }
        let current = found.map(|(at, _)| rv_of(at));
        expect.check(key, current)?;
        // the compare failed and the read says it held: the key changed between them
        Err(StoreError::Conflict {
            resource: key.resource.clone(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            current: current.unwrap_or(0),
            expected: match expect {
                Expect::Present(Some(rv)) => rv,
                _ => 0,
            },
        })
    }

    /// Stores `value` at the cluster's bootstrap key ([`Layout::bootstrap_key`]) unless a value
    /// is there already (one transaction: compare its version with 0); the value there after,
    /// and whether it is this one. Replicas starting together all end with the one value.
    pub async fn create_bootstrap(&self, value: String) -> Result<(String, bool), StoreError> {
        let k = self.layout.bootstrap_key();
        let txn = Txn::new()
            .when([Compare::version(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k.clone(), value.clone(), None)])
            .or_else([TxnOp::get(k, None)]);
        // create-if-absent: a duplicate is refused by the compare, and one that finds our value
        // is our earlier attempt, which the comparison below takes as ours
        let attempt = |_| {
            let (mut kv, txn) = (self.client.kv_client(), txn.clone());
            async move { kv.txn(txn).await }
        };
        let (resp, _) = retrying("bootstrap", Retry::Guarded, attempt)
            .await
            .map_err(etcd_error)?;
        if resp.succeeded() {
            return Ok((value, true));
        }
        let theirs = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            _ => None,
        });
        // the compare failed on a key that is there: it cannot be gone without a delete
        theirs
            .map(|v| {
                let mine = v == value;
                (v, mine)
            })
            .ok_or_else(|| {
                StoreError::Worker("the bootstrap key vanished during its create".into())
            })
    }

    /// Notes `rv` as the high-water mark when it passed the last one noted, at most every
    /// [`NOTE_EVERY`].
    fn note(&self, rv: u64, noted: &mut (std::time::Instant, u64)) {
        let Some(path) = &self.high_water else {
            return;
        };
        if rv > noted.1 && noted.0.elapsed() >= NOTE_EVERY {
            note_high_water(path, rv);
            *noted = (std::time::Instant::now(), rv);
        }
    }

    fn change(&self, ev: &etcd_client::Event) -> Option<Change> {
        let kv = ev.kv()?;
        let key = self.layout.parse(kv.key())?;
        match ev.event_type() {
            EtcdEvent::Put => match self.object(&key, kv) {
                Ok(value) => Some(Change::Put { key, value }),
                Err(e) => {
                    tracing::error!(key = %String::from_utf8_lossy(kv.key()), error = %e, "an object in etcd cannot be read: skipped");
                    None
                }
            },
            EtcdEvent::Delete => {
                let prev = ev.prev_kv().and_then(|p| self.object(&key, p).ok());
                Some(Change::Delete {
                    key,
                    rv: rv_of(kv.mod_revision()),
                    prev,
                })
            }
        }
    }

    /// Follows the prefix from after `rv` into `out` until `out` is dropped: watches again after
    /// a broken stream, relists after a compacted one.
    async fn follow(self: Arc<EtcdBackend>, mut rv: u64, out: mpsc::Sender<Change>) {
        // never below a mark noted before (a store that went back keeps it until passed)
        let mark = self.high_water.as_deref().map(read_high_water).unwrap_or(0);
        let mut noted = (std::time::Instant::now(), rv.max(mark));
        loop {
            match self.watch_from(&mut rv, &out, &mut noted).await {
                Ok(Followed::Closed) => return,
                Ok(relist) => {
                    match relist {
                        Followed::WentBack(at) => tracing::warn!(
                            rv,
                            revision = at,
                            "etcd is behind the revision the cache has (restored from a snapshot?): relisting, watches from before are told 410"
                        ),
                        _ => tracing::warn!(
                            rv,
                            "the etcd watch was compacted past what the cache has: relisting"
                        ),
                    }
                    loop {
                        match self.load().await {
                            Ok((objects, now)) => {
                                rv = now;
                                if out.send(Change::Replace { objects, rv }).await.is_err() {
                                    return;
                                }
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "relisting etcd");
                                tokio::time::sleep(REWATCH_DELAY).await;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(rv, error = %e, "the etcd watch broke: watching again");
                    tokio::time::sleep(REWATCH_DELAY).await;
                }
            }
        }
    }

    async fn watch_from(
        &self,
        rv: &mut u64,
        out: &mpsc::Sender<Change>,
        noted: &mut (std::time::Instant, u64),
    ) -> Result<Followed, etcd_client::Error> {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(*rv as i64 + 1)
            .with_prev_key()
            .with_progress_notify();
        let mut stream = self
            .client
            .watch_client()
            .watch(self.layout.prefix.clone(), Some(opts))
            .await?;
        loop {
            self.note(*rv, noted);
            // a revision not noted yet is noted after a quiet [`NOTE_EVERY`] too
            let next = if *rv > noted.1 && self.high_water.is_some() {
                match tokio::time::timeout(NOTE_EVERY, stream.message()).await {
                    Ok(next) => next?,
                    Err(_) => continue,
                }
            } else {
                stream.message().await?
            };
            let Some(resp) = next else {
                return Err(etcd_client::Error::WatchError(
                    "the watch stream ended".into(),
                ));
            };
            if resp.compact_revision() > 0 {
                return Ok(Followed::Compacted);
            }
            let at = resp.header().map(|h| rv_of(h.revision())).unwrap_or(0);
            if resp.created() && at < *rv {
                // a watch from the future is legal in etcd: it would wait for revisions that
                // will mean other writes than the ones the cache saw
                return Ok(Followed::WentBack(at));
            }
            if resp.canceled() {
                return Err(etcd_client::Error::WatchError(format!(
                    "the watch was canceled: {}",
                    resp.cancel_reason()
                )));
            }
            if resp.events().is_empty() {
                if !resp.created() {
                    if let Some(h) = resp.header() {
                        let at = rv_of(h.revision());
                        if at > *rv {
                            *rv = at;
                            if out.send(Change::Progress(at)).await.is_err() {
                                return Ok(Followed::Closed);
                            }
                        }
                    }
                }
                continue;
            }
            for ev in resp.events() {
                if let Some(kv) = ev.kv() {
                    *rv = (*rv).max(rv_of(kv.mod_revision()));
                }
                if let Some(change) = self.change(ev) {
                    if out.send(change).await.is_err() {
                        return Ok(Followed::Closed);
                    }
                }
            }
        }
    }

    /// kube-apiserver's compactor: every `interval`, take this interval's turn through the
    /// version of [`COMPACT_REV_KEY`]; the one whose compare succeeds compacts to the revision
    /// it saw at its previous turn (none at the first).
    pub async fn compact_every(self: Arc<EtcdBackend>, interval: Duration) {
        let (mut time, mut rev) = (0i64, 0i64);
        loop {
            tokio::time::sleep(interval).await;
            match self.compact_turn(time, rev).await {
                Ok((t, r)) => (time, rev) = (t, r),
                Err(e) => tracing::warn!(error = %e, "etcd compaction"),
            }
        }
    }

    /// One turn: the compact time and revision seen.
    async fn compact_turn(&self, time: i64, rev: i64) -> Result<(i64, i64), etcd_client::Error> {
        let mut kv = self.client.kv_client();
        let txn = Txn::new()
            .when([Compare::version(COMPACT_REV_KEY, CompareOp::Equal, time)])
            .and_then([TxnOp::put(COMPACT_REV_KEY, rev.to_string(), None)])
            .or_else([TxnOp::get(COMPACT_REV_KEY, None)]);
        let resp = kv.txn(txn).await?;
        let now = resp.header().map(|h| h.revision()).unwrap_or(0);
        if !resp.succeeded() {
            let theirs = resp.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.version()),
                _ => None,
            });
            return Ok((theirs.unwrap_or(time), now));
        }
        if rev > 0 {
            kv.compact(rev, None).await?;
            tracing::info!(revision = rev, "etcd compacted");
        }
        Ok((time + 1, now))
    }
}

enum Followed {
    /// The cache is gone.
    Closed,
    /// The watch's start was compacted away.
    Compacted,
    /// etcd is at this revision, behind the cache: restored from a snapshot.
    WentBack(u64),
}

#[async_trait::async_trait]
impl Backend for Arc<EtcdBackend> {
    async fn put(&self, key: &Key, mut value: Value, expect: Expect) -> Result<Value, StoreError> {
        // as kube-apiserver's versioner: the resourceVersion is the revision, never the value's
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        let text = encode(&*self.transform, key, &value)?;
        let op = TxnOp::put(self.layout.key(key), text.clone(), None);
        let (rv, _) = self.txn(key, expect, op, Some(&text)).await?;
        set_rv(&mut value, rv);
        Ok(value)
    }

    async fn delete(
        &self,
        key: &Key,
        expected_rv: Option<u64>,
    ) -> Result<(u64, Option<Value>), StoreError> {
        let op = TxnOp::delete(
            self.layout.key(key),
            Some(DeleteOptions::new().with_prev_key()),
        );
        let (rv, answers) = self
            .txn(key, Expect::Present(expected_rv), op, None)
            .await?;
        let prev = answers.into_iter().find_map(|r| match r {
            TxnOpResponse::Delete(d) => d.prev_kvs().first().map(|kv| self.object(key, kv)),
            _ => None,
        });
        Ok((rv, prev.transpose()?))
    }

    async fn list_at(
        &self,
        resource: &str,
        namespace: Option<&str>,
        rv: u64,
    ) -> Option<Result<Vec<Value>, StoreError>> {
        let range = self.layout.range(resource, namespace);
        Some(self.read(&range, rv as i64).await.map(|(mut items, _)| {
            items.retain(|(k, _)| {
                k.resource == resource && namespace.is_none_or(|ns| ns == k.namespace)
            });
            items.sort_by(|(a, _), (b, _)| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            items.into_iter().map(|(_, v)| v).collect()
        }))
    }

    fn feed(&self, rv: u64) -> Option<mpsc::Receiver<Change>> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(self.clone().follow(rv, tx));
        Some(rx)
    }
}

impl Store {
    /// A store on etcd: everything under the prefix is read now, then followed; with a
    /// compaction interval, this server takes its turns compacting. The tasks end with the
    /// store.
    pub async fn connect_etcd(
        opts: &EtcdOptions,
        max_events: usize,
        max_bytes: usize,
        transform: Arc<dyn Transformer>,
    ) -> Result<Store, StoreError> {
        let backend = Arc::new(EtcdBackend::connect(opts, transform).await?);
        let (objects, rv) = backend.load().await?;
        let mark = opts.high_water.as_deref().map(read_high_water).unwrap_or(0);
        let compactor = (!opts.compaction_interval.is_zero()).then(|| {
            tokio::spawn(backend.clone().compact_every(opts.compaction_interval)).abort_handle()
        });
        let mut store = Store::new(Arc::new(backend), objects, rv, max_events, max_bytes);
        store.also_stop(compactor);
        if mark > rv {
            tracing::warn!(
                revision = rv,
                high_water = mark,
                "etcd is behind the revisions this server saw (restored from a snapshot?): watches from before are told 410"
            );
            store.went_back();
        } else if let Some(path) = &opts.high_water {
            note_high_water(path, rv);
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(resource: &str, namespace: &str, name: &str) -> Key {
        Key {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    #[test]
    fn keys_are_laid_out_as_kube_apiservers() {
        let cases = [
            (
                "/registry",
                key("pods", "default", "p"),
                "/registry/pods/default/p",
            ),
            ("/registry", key("nodes", "", "n1"), "/registry/nodes/n1"),
            (
                "/registry/",
                key("daemonsets.apps", "kube-system", "d"),
                "/registry/daemonsets.apps/kube-system/d",
            ),
            (
                "/other",
                key("leases.coordination.k8s.io", "kube-node-lease", "n1"),
                "/other/leases.coordination.k8s.io/kube-node-lease/n1",
            ),
        ];
        for (prefix, k, etcd_key) in cases {
            let layout = Layout::new(prefix);
            assert_eq!(layout.key(&k), etcd_key, "{k:?}");
            assert_eq!(layout.parse(etcd_key.as_bytes()), Some(k), "{etcd_key}");
        }
    }

    #[test]
    fn keys_that_are_no_object_are_not_parsed() {
        let layout = Layout::new("/registry");
        for etcd_key in [
            "/registry/pods",
            "/registry/pods/",
            "/registry/pods/ns/p/extra",
            "/registry//p",
            "/registry/pods//p",
            "compact_rev_key",
            "/registryx/pods/p",
            "/other/pods/ns/p",
            "/bootstrap/registry",
        ] {
            assert_eq!(layout.parse(etcd_key.as_bytes()), None, "{etcd_key}");
        }
    }

    #[test]
    fn the_bootstrap_key_is_beside_the_prefix_not_under_it() {
        for (prefix, want) in [
            ("/registry", "/bootstrap/registry"),
            ("/registry/", "/bootstrap/registry"),
            ("/other", "/bootstrap/other"),
        ] {
            let layout = Layout::new(prefix);
            let k = layout.bootstrap_key();
            assert_eq!(k, want);
            assert!(!k.starts_with(&layout.prefix), "{k} under {prefix}");
            assert_eq!(layout.parse(k.as_bytes()), None);
        }
    }

    #[test]
    fn ranges_end_with_a_slash_so_that_no_other_resource_matches() {
        let layout = Layout::new("/registry");
        let cases = [
            ("pods", None, "/registry/pods/"),
            ("pods", Some("ns"), "/registry/pods/ns/"),
            ("nodes", Some(""), "/registry/nodes/"),
        ];
        for (resource, ns, range) in cases {
            assert_eq!(layout.range(resource, ns), range);
            assert!(!"/registry/podsecuritypolicies/x".starts_with(&layout.range(resource, ns)));
        }
    }

    fn status(s: tonic::Status) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(s)
    }

    fn local(e: Box<dyn std::error::Error + Send + Sync>) -> etcd_client::Error {
        status(tonic::Status::from_error(e))
    }

    #[test]
    fn failures_are_told_apart_as_clientv3_does() {
        use std::io::{Error as Io, ErrorKind};
        let refused = || Box::new(Io::from(ErrorKind::ConnectionRefused));
        let cases = [
            // the member is down: no connection, nothing sent
            (
                local(Box::new(tonic::ConnectError(refused()))),
                Failure::NotSent,
            ),
            (
                status(tonic::Status::unavailable("etcdserver: no leader")),
                Failure::NotSent,
            ),
            (
                status(tonic::Status::resource_exhausted(
                    "etcdserver: too many requests",
                )),
                Failure::NotSent,
            ),
            // sent, outcome unknown
            (
                local(Box::new(Io::from(ErrorKind::ConnectionReset))),
                Failure::Unknown,
            ),
            (
                status(tonic::Status::unavailable("etcdserver: request timed out")),
                Failure::Unknown,
            ),
            (
                status(tonic::Status::unavailable("etcdserver: leader changed")),
                Failure::Unknown,
            ),
            (
                etcd_client::Error::IoError(Io::from(ErrorKind::BrokenPipe)),
                Failure::Unknown,
            ),
            // answers
            (
                status(tonic::Status::out_of_range(
                    "etcdserver: mvcc: required revision has been compacted",
                )),
                Failure::Final,
            ),
            (
                status(tonic::Status::invalid_argument(
                    "etcdserver: key is not provided",
                )),
                Failure::Final,
            ),
            (etcd_client::Error::WatchError("x".into()), Failure::Final),
        ];
        for (e, want) in cases {
            assert_eq!(failure(&e), want, "{e}");
        }
    }

    #[test]
    fn only_reads_and_guarded_writes_are_sent_again_after_an_unknown_outcome() {
        for (mode, not_sent, unknown) in [
            (Retry::Read, true, true),
            (Retry::Guarded, true, true),
            (Retry::Unguarded, true, false),
        ] {
            assert_eq!(mode.allows(Failure::NotSent), not_sent, "{mode:?}");
            assert_eq!(mode.allows(Failure::Unknown), unknown, "{mode:?}");
            assert!(!mode.allows(Failure::Final), "{mode:?}");
        }
    }

    #[test]
    fn back_off_doubles_jittered_up_to_its_cap() {
        assert_eq!(backoff(1, 0.0), RETRY_BASE / 2);
        assert_eq!(backoff(2, 0.5), RETRY_BASE * 2);
        assert!(backoff(3, 0.999) < RETRY_BASE * 6);
        assert_eq!(backoff(40, 0.5), RETRY_CAP);
        // the longest the attempts can wait in all, within the budget
        let most: Duration = (1..RETRY_ATTEMPTS).map(|n| backoff(n, 0.999)).sum();
        assert!(most < RETRY_BUDGET, "{most:?}");
    }

    /// Runs `retrying` over `results` (one per attempt, None: the answer; past their end, the
    /// last again): whether an outcome was unknown or the failure, and how many attempts were
    /// made.
    async fn retry_over(
        mode: Retry,
        results: Vec<Option<Failure>>,
    ) -> (Result<bool, Failure>, usize) {
        let made = std::sync::atomic::AtomicUsize::new(0);
        let out = retrying("test", mode, |_| {
            let n = made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let result = results.get(n).or(results.last()).copied().flatten();
            async move {
                match result {
                    None => Ok(()),
                    Some(Failure::NotSent) => Err(local(Box::new(tonic::ConnectError(Box::new(
                        std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                    ))))),
                    Some(Failure::Unknown) => Err(status(tonic::Status::unavailable(
                        "etcdserver: request timed out",
                    ))),
                    Some(Failure::Final) => Err(status(tonic::Status::invalid_argument("no"))),
                }
            }
        })
        .await;
        let made = made.into_inner();
        (
            out.map(|(_, unknown)| unknown).map_err(|e| failure(&e)),
            made,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_retried_as_their_kind_allows_within_bounds() {
        use Failure::*;
        // never sent, twice, then the answer
        let r = retry_over(Retry::Unguarded, vec![Some(NotSent), Some(NotSent), None]).await;
        assert_eq!(r, (Ok(false), 3));
        // a write whose outcome is unknown: a guarded one is sent again and told so
        let r = retry_over(Retry::Guarded, vec![Some(Unknown), None]).await;
        assert_eq!(r, (Ok(true), 2));
        let r = retry_over(Retry::Unguarded, vec![Some(Unknown), None]).await;
        assert_eq!(r, (Err(Unknown), 1));
        // an answer is not asked again
        assert_eq!(
            retry_over(Retry::Read, vec![Some(Final), None]).await,
            (Err(Final), 1)
        );
        // a member that never answers: the attempts are bounded in number and time
        let start = tokio::time::Instant::now();
        let r = retry_over(Retry::Read, vec![Some(NotSent)]).await;
        assert_eq!(r, (Err(NotSent), RETRY_ATTEMPTS as usize));
        assert!(start.elapsed() <= RETRY_BUDGET);
    }

    #[test]
    fn revisions_are_resource_versions() {
        for (revision, rv) in [(0i64, 0u64), (1, 1), (4711, 4711), (-1, 0)] {
            assert_eq!(rv_of(revision), rv);
        }
    }
}
