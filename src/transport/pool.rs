//! One pool of logged-in sessions per endpoint, shared by every job on it: the only place that
//! opens and closes connections.
//!
//! - At most `max_connections` sessions are leased at once ([`Pool::get`] waits for a permit),
//!   whether one job or several use the endpoint, in one `ferry sync --all` or in the agent.
//! - A session goes back to the pool only when its holder says it is healthy
//!   ([`Lease::release`]); a lease dropped without that (an error, a cancelled transfer) closes
//!   its connection. Idle sessions are checked with NOOP before reuse once they have been idle
//!   longer than `check_after`, and closed after `idle_timeout`; a server that dropped an idle
//!   session (vsftpd's `idle_session_timeout`) so costs one reconnect, never an error.
//! - 421 (too many connections) at login, while other sessions of this pool are open, means
//!   the server allows fewer than the budget: the pool shrinks by one (the caller waits for a
//!   session to come back instead), and grows back by one after `regrow_after` without
//!   another 421. A 421 with no other session open is an error like any busy reply (the
//!   caller's retry decides).
//!
//! Ages are measured on tokio's clock, so tests drive them with paused time.
//!
//! What it does not do: retry (the executor does, with backoff), or know about jobs (a lease
//! is rooted at whatever directory the caller names).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::transport::{Connector, ErrorKind, Result, Transport, TransportError};

/// How long sessions may sit idle, and how the pool recovers from a 421.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// An idle session older than this is checked with NOOP before reuse.
    pub check_after: Duration,
    /// An idle session older than this is closed instead of reused.
    pub idle_timeout: Duration,
    /// After a 421 shrank the pool, grow back by one session this long after the last 421.
    pub regrow_after: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            check_after: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(120),
            regrow_after: Duration::from_secs(60),
        }
    }
}

struct Idle {
    session: Box<dyn Transport>,
    since: Instant,
}

struct Inner {
    name: String,
    connector: Arc<dyn Connector>,
    capacity: usize,
    settings: PoolSettings,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    /// Permits taken out of service after 421s.
    shrunk: AtomicUsize,
    last_shrink: Mutex<Option<Instant>>,
    /// Sessions open now, leased or idle.
    open: AtomicUsize,
    /// When a session last failed: idle sessions parked before then are checked with NOOP
    /// before reuse whatever their age, since a server that hung up on one (an idle timeout
    /// shorter than `check_after`, a restart) has most likely hung up on its elders too.
    distrust_before: Mutex<Option<Instant>>,
    /// Logins made since the pool was created.
    logins: AtomicU64,
}

/// A pool of sessions to one endpoint; cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Pool({}, {} of {} open)",
            self.inner.name,
            self.open_connections(),
            self.inner.capacity
        )
    }
}

/// One session out of the pool. Give it back with [`Lease::release`] when it is known to be in
/// a clean state; dropping it closes the connection.
pub struct Lease {
    session: Option<Box<dyn Transport>>,
    pool: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// The session, rooted where [`Pool::get`] was asked to root it.
    pub fn session(&mut self) -> &mut dyn Transport {
        // Invariant: `session` is Some until release or drop consumes the lease.
        match self.session.as_mut() {
            Some(s) => s.as_mut(),
            None => unreachable!("a lease holds its session until it is consumed"),
        }
    }

    /// Close the session politely and let its slot go to a new login: it is healthy but
    /// cannot serve again ([`Transport::needs_new_session`]). Not a failure.
    pub fn retire(mut self) {
        if let Some(mut session) = self.session.take() {
            self.pool.open.fetch_sub(1, Ordering::Relaxed);
            tokio::spawn(async move { session.quit().await });
        }
    }

    /// Give the session back for reuse (or close it when it cannot serve again).
    pub fn release(mut self) {
        if self.session.as_ref().is_some_and(|s| s.needs_new_session()) {
            return self.retire();
        }
        if let Some(session) = self.session.take()
            && let Ok(mut idle) = self.pool.idle.lock()
        {
            idle.push(Idle {
                session,
                since: Instant::now(),
            });
        }
        self.pool.maybe_regrow();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.session.take().is_some() {
            // Not released: the connection may be mid-transfer, or dead; it is closed, not
            // reused, and the idle sessions older than it are checked before their next use.
            self.pool.open.fetch_sub(1, Ordering::Relaxed);
            if let Ok(mut before) = self.pool.distrust_before.lock() {
                *before = Some(Instant::now());
            }
        }
    }
}

impl Inner {
    fn maybe_regrow(&self) {
        if self.shrunk.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Ok(mut last) = self.last_shrink.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() >= self.settings.regrow_after)
            && self
                .shrunk
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        {
            self.permits.add_permits(1);
            *last = Some(Instant::now());
            tracing::info!(endpoint = %self.name, "connection budget grows back by one");
        }
    }

    /// Whether a session parked at `since` is older than the last failure.
    fn distrusts(&self, since: Instant) -> bool {
        self.distrust_before
            .lock()
            .ok()
            .and_then(|before| *before)
            .is_some_and(|before| since < before)
    }

    fn take_idle(&self) -> Option<Idle> {
        self.idle.lock().ok().and_then(|mut idle| idle.pop())
    }
}

impl Pool {
    pub fn new(
        name: &str,
        connector: Arc<dyn Connector>,
        capacity: usize,
        settings: PoolSettings,
    ) -> Pool {
        let capacity = capacity.max(1);
        Pool {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                connector,
                capacity,
                settings,
                permits: Arc::new(Semaphore::new(capacity)),
                idle: Mutex::new(Vec::new()),
                shrunk: AtomicUsize::new(0),
                last_shrink: Mutex::new(None),
                open: AtomicUsize::new(0),
                distrust_before: Mutex::new(None),
                logins: AtomicU64::new(0),
            }),
        }
    }

    /// The connection budget (`max_connections`).
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Sessions open now, leased or idle.
    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// Logins made since the pool was created.
    pub fn logins(&self) -> u64 {
        self.inner.logins.load(Ordering::Relaxed)
    }

    /// How many sessions the pool allows now (the budget less what 421s took away).
    pub fn allowed(&self) -> usize {
        self.inner.capacity - self.inner.shrunk.load(Ordering::Relaxed)
    }

    /// A session rooted at `root`: an idle one when there is one that still answers, else a
    /// new login. Waits while the budget is in use.
    pub async fn get(&self, root: &str) -> Result<Lease> {
        let inner = &self.inner;
        loop {
            let permit = inner.permits.clone().acquire_owned().await.map_err(|_| {
                TransportError::new(ErrorKind::Cancelled, "connect", "the pool is closed")
            })?;
            while let Some(Idle { mut session, since }) = inner.take_idle() {
                let age = since.elapsed();
                let suspect = age >= inner.settings.check_after || inner.distrusts(since);
                let alive = age < inner.settings.idle_timeout
                    && !session.needs_new_session()
                    && (!suspect || session.noop().await.is_ok());
                if alive {
                    session.set_root(root);
                    return Ok(Lease {
                        session: Some(session),
                        pool: inner.clone(),
                        _permit: permit,
                    });
                }
                // Too old, or the server hung up meanwhile: close it and look further.
                inner.open.fetch_sub(1, Ordering::Relaxed);
                tokio::spawn(async move { session.quit().await });
            }
            match inner.connector.connect().await {
                Ok(mut session) => {
                    inner.logins.fetch_add(1, Ordering::Relaxed);
                    inner.open.fetch_add(1, Ordering::Relaxed);
                    session.set_root(root);
                    return Ok(Lease {
                        session: Some(session),
                        pool: inner.clone(),
                        _permit: permit,
                    });
                }
                Err(e) if e.kind == ErrorKind::Busy && inner.open.load(Ordering::Relaxed) > 0 => {
                    // The server allows as many sessions as are open now: take the other
                    // permits out of service (this one included) and wait for one of the open
                    // sessions to come back.
                    let open = inner.open.load(Ordering::Relaxed);
                    let excess = self.allowed().saturating_sub(open).max(1);
                    permit.forget();
                    let more = inner.permits.forget_permits(excess - 1);
                    inner.shrunk.fetch_add(1 + more, Ordering::Relaxed);
                    if let Ok(mut last) = inner.last_shrink.lock() {
                        *last = Some(Instant::now());
                    }
                    tracing::warn!(endpoint = %inner.name, error = %e, allowed = self.allowed(),
                        "the server refuses more connections; working with fewer");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Close every idle session politely (QUIT). Leased sessions are not affected.
    pub async fn close_idle(&self) {
        let idle: Vec<Idle> = self
            .inner
            .idle
            .lock()
            .map(|mut idle| std::mem::take(&mut *idle))
            .unwrap_or_default();
        for Idle { mut session, .. } in idle {
            self.inner.open.fetch_sub(1, Ordering::Relaxed);
            session.quit().await;
        }
    }
}

/// The pools of a process, one per endpoint name, created on first use.
#[derive(Default)]
pub struct Pools {
    pools: Mutex<BTreeMap<String, Pool>>,
}

impl Pools {
    pub fn new() -> Pools {
        Pools::default()
    }

    /// The pool for `endpoint`, made by `make` the first time it is asked for.
    pub fn get_or_try_insert<E>(
        &self,
        endpoint: &str,
        make: impl FnOnce() -> std::result::Result<Pool, E>,
    ) -> std::result::Result<Pool, E> {
        let mut pools = match self.pools.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(pool) = pools.get(endpoint) {
            return Ok(pool.clone());
        }
        let pool = make()?;
        pools.insert(endpoint.to_owned(), pool.clone());
        Ok(pool)
    }

    /// Forget the pool of `endpoint` (its configuration changed): the next job to ask gets a
    /// new one; holders of the old one keep it until they are done.
    pub fn remove(&self, endpoint: &str) -> Option<Pool> {
        match self.pools.lock() {
            Ok(mut p) => p.remove(endpoint),
            Err(poisoned) => poisoned.into_inner().remove(endpoint),
        }
    }

    /// Every pool now, by endpoint name.
    pub fn all(&self) -> Vec<(String, Pool)> {
        match self.pools.lock() {
            Ok(p) => p.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(poisoned) => poisoned
                .into_inner()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Close every pool's idle sessions.
    pub async fn close_all(&self) {
        let pools: Vec<Pool> = match self.pools.lock() {
            Ok(p) => p.values().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().values().cloned().collect(),
        };
        for pool in pools {
            pool.close_idle().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::RawEntry;
    use crate::path::RelPath;
    use crate::transport::{Capabilities, DirListing, Progress};
    use async_trait::async_trait;
    use tokio::io::{AsyncRead, AsyncWrite};

    /// A fake session: it only answers NOOP (or not), and counts.
    struct Fake {
        caps: Capabilities,
        noop_ok: bool,
        root: String,
    }

    #[async_trait]
    impl Transport for Fake {
        fn capabilities(&self) -> &Capabilities {
            &self.caps
        }
        fn set_root(&mut self, root: &str) {
            self.root = root.to_owned();
        }
        async fn noop(&mut self) -> Result<()> {
            if self.noop_ok {
                Ok(())
            } else {
                Err(TransportError::new(ErrorKind::Transient, "NOOP", "closed"))
            }
        }
        async fn list_dir(&mut self, _dir: &RelPath) -> Result<DirListing> {
            Ok(DirListing {
                entries: vec![RawEntry {
                    name: self.root.clone(),
                    entry: crate::listing::Entry::dir(),
                }],
                unparsed: Vec::new(),
            })
        }
        async fn make_dir(&mut self, _dir: &RelPath) -> Result<()> {
            Ok(())
        }
        async fn upload(
            &mut self,
            _p: &RelPath,
            _s: &mut (dyn AsyncRead + Unpin + Send),
            _g: Progress<'_>,
        ) -> Result<u64> {
            Ok(0)
        }
        async fn download(
            &mut self,
            _p: &RelPath,
            _d: &mut (dyn AsyncWrite + Unpin + Send),
            _g: Progress<'_>,
        ) -> Result<u64> {
            Ok(0)
        }
        async fn make_root(&mut self) -> Result<()> {
            Ok(())
        }
        async fn rename(&mut self, _f: &RelPath, _t: &RelPath) -> Result<()> {
            Ok(())
        }
        async fn delete_file(&mut self, _p: &RelPath) -> Result<()> {
            Ok(())
        }
        async fn remove_dir(&mut self, _p: &RelPath) -> Result<()> {
            Ok(())
        }
        async fn size(&mut self, _p: &RelPath) -> Result<Option<u64>> {
            Ok(None)
        }
        async fn server_hash(
            &mut self,
            _p: &RelPath,
        ) -> Result<Option<(crate::transport::HashAlgo, String)>> {
            Ok(None)
        }
        async fn quit(&mut self) {}
    }

    /// Logs in until `limit` sessions are open at once, then answers 421.
    struct Limited {
        limit: usize,
        live: Arc<AtomicUsize>,
        noop_ok: bool,
    }

    #[async_trait]
    impl Connector for Limited {
        async fn connect(&self) -> Result<Box<dyn Transport>> {
            if self.live.load(Ordering::Relaxed) >= self.limit {
                return Err(TransportError::new(
                    ErrorKind::Busy,
                    "login",
                    "421 There are too many connections from your internet address.",
                ));
            }
            self.live.fetch_add(1, Ordering::Relaxed);
            Ok(Box::new(Fake {
                caps: Capabilities::default(),
                noop_ok: self.noop_ok,
                root: String::new(),
            }))
        }
        fn describe(&self) -> String {
            "fake".into()
        }
    }

    fn pool(limit: usize, capacity: usize, noop_ok: bool) -> (Pool, Arc<AtomicUsize>) {
        let live = Arc::new(AtomicUsize::new(0));
        let connector = Arc::new(Limited {
            limit,
            live: live.clone(),
            noop_ok,
        });
        (
            Pool::new("fake", connector, capacity, PoolSettings::default()),
            live,
        )
    }

    #[tokio::test]
    async fn released_sessions_are_reused_and_dropped_ones_closed() {
        let (pool, _) = pool(10, 2, true);
        let mut a = pool.get("/a").await.expect("lease");
        let listed = a.session().list_dir(&RelPath::root()).await.expect("list");
        assert_eq!(listed.entries[0].name, "/a", "rooted as asked");
        a.release();
        let mut b = pool.get("/b").await.expect("lease");
        assert_eq!(pool.logins(), 1, "the released session was reused");
        let listed = b.session().list_dir(&RelPath::root()).await.expect("list");
        assert_eq!(listed.entries[0].name, "/b", "and rerooted");
        drop(b);
        assert_eq!(
            pool.open_connections(),
            0,
            "a dropped lease closes its session"
        );
        let _c = pool.get("/c").await.expect("lease");
        assert_eq!(pool.logins(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_is_a_hard_limit_and_waiting_ends_when_a_session_comes_back() {
        let (pool, _) = pool(10, 2, true);
        let a = pool.get("/").await.expect("lease");
        let _b = pool.get("/").await.expect("lease");
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get("/").await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "a third lease waits");
        a.release();
        waiting
            .await
            .expect("join")
            .expect("got the released session");
        assert_eq!(pool.logins(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_sessions_are_checked_and_replaced_when_dead() {
        let (pool, _) = pool(10, 1, false);
        pool.get("/").await.expect("lease").release();
        // Fresh: reused without a check.
        pool.get("/").await.expect("lease").release();
        assert_eq!(pool.logins(), 1);
        // Idle past check_after: NOOP fails (the server hung up), so a new login, no error.
        tokio::time::advance(PoolSettings::default().check_after + Duration::from_secs(1)).await;
        pool.get("/").await.expect("lease").release();
        assert_eq!(pool.logins(), 2);
        // Idle past idle_timeout: closed without even asking.
        tokio::time::advance(PoolSettings::default().idle_timeout + Duration::from_secs(1)).await;
        pool.get("/").await.expect("lease").release();
        assert_eq!(pool.logins(), 3);
        assert_eq!(pool.open_connections(), 1);
    }

    /// A server with an idle timeout shorter than `check_after` hangs up on every parked
    /// session: once one fails, the others are checked before use, so a retry gets a live one
    /// instead of the next dead one.
    #[tokio::test(start_paused = true)]
    async fn after_a_session_fails_the_older_idle_ones_are_checked_before_reuse() {
        let (pool, _) = pool(10, 3, false);
        let leases = [
            pool.get("/").await.expect("lease"),
            pool.get("/").await.expect("lease"),
            pool.get("/").await.expect("lease"),
        ];
        for lease in leases {
            lease.release();
        }
        assert_eq!(pool.logins(), 3);
        tokio::time::advance(Duration::from_secs(2)).await;
        // The first reuse is unchecked (young) and fails on its first command: dropped.
        drop(pool.get("/").await.expect("lease"));
        assert_eq!(pool.logins(), 3, "a young idle session is reused unchecked");
        // The next lease checks the two left (NOOP fails on both) and logs in anew.
        pool.get("/").await.expect("lease").release();
        assert_eq!(
            pool.logins(),
            4,
            "the dead idle sessions were checked, not handed out"
        );
        assert_eq!(pool.open_connections(), 1);
        // Parked after the failure: trusted again while young.
        pool.get("/").await.expect("lease").release();
        assert_eq!(pool.logins(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_421_shrinks_the_pool_to_what_the_server_allows_then_it_grows_back() {
        let (pool, live) = pool(2, 6, true);
        let a = pool.get("/").await.expect("first");
        let b = pool.get("/").await.expect("second");
        // The third login gets 421: the caller waits instead of failing.
        let third = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get("/").await.map(|l| l.release()) }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!third.is_finished());
        assert_eq!(
            pool.allowed(),
            2,
            "shrunk to the two the server allows, at once"
        );
        a.release();
        third
            .await
            .expect("join")
            .expect("served by the released session");
        assert_eq!(pool.logins(), 2, "no login beyond what the server allows");
        assert_eq!(live.load(Ordering::Relaxed), 2);
        // Long after the last 421, a release gives one permit back.
        tokio::time::advance(PoolSettings::default().regrow_after).await;
        b.release();
        assert_eq!(pool.allowed(), 3);
    }

    #[tokio::test]
    async fn a_421_with_nothing_else_open_is_the_callers_error() {
        let (pool, _) = pool(0, 2, true);
        let err = pool.get("/").await.map(|_| ()).expect_err("busy");
        assert_eq!(err.kind, ErrorKind::Busy);
    }
}
