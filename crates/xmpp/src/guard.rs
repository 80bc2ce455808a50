//! What keeps one client, or many, from exhausting the node: the connection caps (all
//! client connections, and unauthenticated ones per address), authentication
//! throttling (failures per address and per account), the bound on concurrent
//! password derivations, and the accept loop's back-off. Every refusal is counted in
//! `presenced_c2s_refused_total{reason}`; connections the node ends for a resource
//! reason in `presenced_c2s_closed_total{reason}`.
//!
//! Addresses are compared as IPv4 addresses or IPv6 /64 prefixes (one subscriber
//! usually holds a whole /64), IPv4-mapped IPv6 as IPv4.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Why a connection or an authentication attempt was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `max_connections` client connections are open.
    MaxConnections,
    /// This address has `max_unauthenticated_per_ip` connections still negotiating.
    PerIpUnauthenticated,
    /// This address failed `auth_failures_per_ip` times within the window.
    AuthIpBlocked,
    /// The account failed `auth_failures_per_account` times within the window, and this
    /// address is one of those that failed for it.
    AuthAccountThrottled,
    /// `auth_queue` password verifications are already waiting.
    AuthBusy,
}

impl Refused {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refused::MaxConnections => "max_connections",
            Refused::PerIpUnauthenticated => "per_ip_unauthenticated",
            Refused::AuthIpBlocked => "auth_ip_blocked",
            Refused::AuthAccountThrottled => "auth_account_throttled",
            Refused::AuthBusy => "auth_busy",
        }
    }

    pub(crate) fn count(self) {
        metrics::counter!("presenced_c2s_refused_total", "reason" => self.as_str()).increment(1);
    }
}

/// Count a connection the node ended for a resource reason.
pub(crate) fn closed(reason: &'static str) {
    metrics::counter!("presenced_c2s_closed_total", "reason" => reason).increment(1);
}

/// The limits, resolved (see `XmppConfig` for the meaning of each).
#[derive(Debug, Clone)]
pub(crate) struct GuardConfig {
    pub max_connections: usize,
    pub max_unauthenticated_per_ip: usize,
    pub auth_failures_per_ip: u32,
    pub auth_failures_per_account: u32,
    pub auth_failure_window: Duration,
    pub auth_block: Duration,
    pub auth_concurrency: usize,
    pub auth_queue: usize,
}

/// The open-file limit of this process (soft), if the system says.
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Descriptors kept for everything but client connections (Raft, peers, admin, HTTP,
/// storage, logs): a tenth of the limit, at least 128.
pub fn fd_reserve(limit: u64) -> u64 {
    (limit / 10).max(128)
}

/// The connection cap: `configured` (0 = as many as the open-file limit allows),
/// never more than the limit minus [`fd_reserve`]. Returns the cap and, when a
/// configured value had to be lowered, the limit that lowered it.
pub fn connection_cap(configured: usize, fd_limit: Option<u64>) -> (usize, Option<u64>) {
    let Some(limit) = fd_limit else {
        return (if configured == 0 { 10_000 } else { configured }, None);
    };
    let room = limit.saturating_sub(fd_reserve(limit)).max(1) as usize;
    match configured {
        0 => (room, None),
        n if n > room => (room, Some(limit)),
        n => (n, None),
    }
}

/// An address as the per-address limits see it.
pub(crate) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// At most this many addresses and accounts are remembered by the throttle (expired
/// records are swept when the table is full; beyond, new ones go untracked).
const MAX_TRACKED: usize = 100_000;
/// At most this many addresses remembered per throttled account.
const MAX_BAD_PER_ACCOUNT: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    since: Instant,
    blocked_until: Option<Instant>,
    /// Attempts being verified now (an address's budget counts them as failures to
    /// come, so parallel connections do not overrun it).
    in_flight: u32,
}

impl Record {
    fn new(now: Instant) -> Record {
        Record {
            failures: 0,
            since: now,
            blocked_until: None,
            in_flight: 0,
        }
    }

    fn blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|t| t > now)
    }

    fn expired(&self, now: Instant, window: Duration) -> bool {
        self.in_flight == 0 && !self.blocked(now) && now.duration_since(self.since) > window
    }

    /// Failures counted in the current window.
    fn recent(&self, now: Instant, window: Duration) -> u32 {
        if now.duration_since(self.since) > window {
            0
        } else {
            self.failures
        }
    }

    /// Count a failure; `true` when it starts (or extends) a block.
    fn fail(&mut self, now: Instant, limit: u32, window: Duration, block: Duration) -> bool {
        if now.duration_since(self.since) > window {
            self.failures = 0;
            self.since = now;
        }
        self.failures += 1;
        if self.failures >= limit {
            self.failures = 0;
            self.since = now;
            self.blocked_until = Some(now + block);
            return true;
        }
        false
    }
}

struct Account {
    rec: Record,
    /// Addresses that failed for this account since the record started: while the
    /// account is throttled, only these are refused, so its owner still logs in from
    /// anywhere else.
    bad: HashSet<IpAddr>,
}

#[derive(Default)]
struct Throttle {
    ips: HashMap<IpAddr, Record>,
    accounts: HashMap<String, Account>,
}

/// What a failure led to (for the log and the client's answer).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Blocks {
    pub ip: bool,
    pub account: bool,
}

pub(crate) struct Guard {
    cfg: GuardConfig,
    open: AtomicUsize,
    /// Unauthenticated connections per address (entries removed at zero).
    unauth: Mutex<HashMap<IpAddr, usize>>,
    throttle: Mutex<Throttle>,
    pool: Arc<Pool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Guard {
    pub(crate) fn new(cfg: GuardConfig) -> Arc<Guard> {
        metrics::gauge!("presenced_c2s_max_connections").set(cfg.max_connections as f64);
        Arc::new(Guard {
            pool: Arc::new(Pool {
                max: cfg.auth_concurrency.max(1),
                queue: cfg.auth_queue,
                st: Mutex::new(PoolState::default()),
            }),
            cfg,
            open: AtomicUsize::new(0),
            unauth: Mutex::new(HashMap::new()),
            throttle: Mutex::new(Throttle::default()),
        })
    }

    pub(crate) fn config(&self) -> &GuardConfig {
        &self.cfg
    }

    /// Admit a new connection from `ip`, or say why not. Cheap: called on the accept
    /// loop.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let prev = self.open.fetch_add(1, Ordering::AcqRel);
        if prev >= self.cfg.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::MaxConnections);
        }
        let key = ip_key(ip);
        {
            let mut m = lock(&self.unauth);
            let n = m.entry(key).or_insert(0);
            if *n >= self.cfg.max_unauthenticated_per_ip {
                if *n == 0 {
                    m.remove(&key);
                }
                drop(m);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refused::PerIpUnauthenticated);
            }
            *n += 1;
        }
        metrics::gauge!("presenced_c2s_unauthenticated").increment(1.0);
        Ok(Slot {
            guard: self.clone(),
            ip: key,
            unauth: true,
        })
    }

    fn release_unauth(&self, key: IpAddr) {
        let mut m = lock(&self.unauth);
        if let Some(n) = m.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&key);
            }
        }
        metrics::gauge!("presenced_c2s_unauthenticated").decrement(1.0);
    }

    /// May `ip` try to authenticate (as `account`, if known)? Cheap: no verification.
    pub(crate) fn check(&self, ip: IpAddr, account: Option<&str>) -> Result<(), Refused> {
        let (key, now) = (ip_key(ip), Instant::now());
        let t = lock(&self.throttle);
        self.allowed(&t, key, account, now)
    }

    fn allowed(
        &self,
        t: &Throttle,
        key: IpAddr,
        account: Option<&str>,
        now: Instant,
    ) -> Result<(), Refused> {
        if let Some(r) = t.ips.get(&key)
            && (r.blocked(now)
                || r.recent(now, self.cfg.auth_failure_window) + r.in_flight
                    >= self.cfg.auth_failures_per_ip)
        {
            return Err(Refused::AuthIpBlocked);
        }
        if let Some(a) = account.and_then(|a| t.accounts.get(a))
            && a.rec.blocked(now)
            && a.bad.contains(&key)
        {
            return Err(Refused::AuthAccountThrottled);
        }
        Ok(())
    }

    /// Start verifying an attempt from `ip` for `account`: refused as [`Guard::check`]
    /// does (the address's attempts in flight count against its budget), else the
    /// attempt holds its place until dropped.
    pub(crate) fn begin(self: &Arc<Self>, ip: IpAddr, account: &str) -> Result<Attempt, Refused> {
        let (key, now) = (ip_key(ip), Instant::now());
        let mut t = lock(&self.throttle);
        self.allowed(&t, key, Some(account), now)?;
        let window = self.cfg.auth_failure_window;
        let rec = tracked(&mut t.ips, key, now, Record::new, |r| {
            r.expired(now, window)
        });
        let clean = rec.as_ref().is_none_or(|r| r.recent(now, window) == 0);
        let counted = match rec {
            Some(r) => {
                r.in_flight += 1;
                true
            }
            None => false,
        };
        Ok(Attempt {
            guard: self.clone(),
            key,
            counted,
            clean,
        })
    }

    fn end_attempt(&self, key: IpAddr) {
        if let Some(r) = lock(&self.throttle).ips.get_mut(&key) {
            r.in_flight = r.in_flight.saturating_sub(1);
        }
    }

    /// Count a failed attempt (wrong password, unknown user, bad proof).
    pub(crate) fn failed(&self, ip: IpAddr, account: Option<&str>) -> Blocks {
        let (key, now) = (ip_key(ip), Instant::now());
        let c = &self.cfg;
        let mut t = lock(&self.throttle);
        let mut blocks = Blocks::default();
        if let Some(r) = tracked(&mut t.ips, key, now, Record::new, |r| {
            r.expired(now, c.auth_failure_window)
        }) {
            blocks.ip = r.fail(
                now,
                c.auth_failures_per_ip,
                c.auth_failure_window,
                c.auth_block,
            );
        }
        if let Some(name) = account {
            let new = |now| Account {
                rec: Record::new(now),
                bad: HashSet::new(),
            };
            if let Some(a) = tracked(&mut t.accounts, name.to_string(), now, new, |a| {
                a.rec.expired(now, c.auth_failure_window)
            }) {
                if a.rec.expired(now, c.auth_failure_window) {
                    a.bad.clear();
                }
                if a.bad.len() < MAX_BAD_PER_ACCOUNT {
                    a.bad.insert(key);
                }
                blocks.account = a.rec.fail(
                    now,
                    c.auth_failures_per_account,
                    c.auth_failure_window,
                    c.auth_block,
                );
            }
        }
        drop(t);
        let until = c.auth_block.as_secs();
        if blocks.ip {
            metrics::counter!("presenced_c2s_auth_blocks_total", "scope" => "ip").increment(1);
            tracing::warn!(ip = %key, block_secs = until, "authentication blocked for an address: too many failures");
        }
        if blocks.account {
            metrics::counter!("presenced_c2s_auth_blocks_total", "scope" => "account").increment(1);
            tracing::warn!(
                account = account.unwrap_or_default(),
                block_secs = until,
                "authentication throttled for an account: too many failures; addresses that failed for it are refused"
            );
        }
        blocks
    }

    /// A successful login of `account` from `ip`: that address is no longer suspect for
    /// the account (its per-address count stays: a valid account of one's own does not
    /// reset the guessing budget).
    pub(crate) fn succeeded(&self, ip: IpAddr, account: &str) {
        let key = ip_key(ip);
        if let Some(a) = lock(&self.throttle).accounts.get_mut(account) {
            a.bad.remove(&key);
        }
    }

    /// Run a password derivation off the async workers, at most `auth_concurrency` at
    /// once, with `auth_queue` waiting; past that it is refused (`AuthBusy`). Attempts
    /// from addresses without recent failures go first, and one arriving at a full
    /// queue takes the place of the newest suspect one: a guessing burst delays its
    /// own attempts, not the owner's. The work runs to its end even if the caller goes
    /// away, holding its slot.
    pub(crate) async fn verify<T, F>(&self, attempt: &Attempt, f: F) -> Result<T, Refused>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = self.pool.acquire(attempt.clean).await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .map_err(|_| Refused::AuthBusy)
    }
}

/// An authentication attempt being verified (see [`Guard::begin`]).
pub(crate) struct Attempt {
    guard: Arc<Guard>,
    key: IpAddr,
    counted: bool,
    /// No failures from this address in the window.
    clean: bool,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.counted {
            self.guard.end_attempt(self.key);
        }
    }
}

/// The derivation slots: a bounded pool with a two-class waiting line.
struct Pool {
    max: usize,
    queue: usize,
    st: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    running: usize,
    clean: VecDeque<oneshot::Sender<PoolPermit>>,
    suspect: VecDeque<oneshot::Sender<PoolPermit>>,
}

/// One running derivation; handed to the next waiter when dropped.
struct PoolPermit(Arc<Pool>);

impl Pool {
    async fn acquire(self: &Arc<Self>, clean: bool) -> Result<PoolPermit, Refused> {
        let rx = {
            let mut st = lock(&self.st);
            if st.running < self.max {
                st.running += 1;
                return Ok(PoolPermit(self.clone()));
            }
            if st.clean.len() + st.suspect.len() >= self.queue {
                // Full: a clean attempt displaces the newest suspect one (whose
                // waiter then sees its sender gone: busy).
                if !clean || st.suspect.pop_back().is_none() {
                    return Err(Refused::AuthBusy);
                }
            }
            let (tx, rx) = oneshot::channel();
            if clean {
                st.clean.push_back(tx);
            } else {
                st.suspect.push_back(tx);
            }
            rx
        };
        rx.await.map_err(|_| Refused::AuthBusy)
    }
}

impl Drop for PoolPermit {
    fn drop(&mut self) {
        let pool = &self.0;
        let next = {
            let mut st = lock(&pool.st);
            match st.clean.pop_front().or_else(|| st.suspect.pop_front()) {
                Some(tx) => tx,
                None => {
                    st.running -= 1;
                    return;
                }
            }
        };
        // A waiter that went away returns the permit, which is dropped in turn and
        // goes to the next one.
        let _ = next.send(PoolPermit(pool.clone()));
    }
}

/// The record of `k`, made if missing while the table has room (expired records are
/// swept when it is full); `None` when it is full of live records.
fn tracked<K: std::hash::Hash + Eq, V>(
    m: &mut HashMap<K, V>,
    k: K,
    now: Instant,
    new: impl FnOnce(Instant) -> V,
    expired: impl Fn(&V) -> bool,
) -> Option<&mut V> {
    if !m.contains_key(&k) && m.len() >= MAX_TRACKED {
        m.retain(|_, v| !expired(v));
        if m.len() >= MAX_TRACKED {
            metrics::counter!("presenced_c2s_auth_untracked_total").increment(1);
            return None;
        }
    }
    Some(m.entry(k).or_insert_with(|| new(now)))
}

/// A connection's hold on the caps, released when it is dropped (however the
/// connection ends, panics included).
pub(crate) struct Slot {
    guard: Arc<Guard>,
    ip: IpAddr,
    unauth: bool,
}

impl Slot {
    /// The client authenticated: it no longer counts against its address's cap of
    /// unauthenticated connections.
    pub(crate) fn authenticated(&mut self) {
        if std::mem::take(&mut self.unauth) {
            self.guard.release_unauth(self.ip);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.authenticated();
        self.guard.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The error class of a failed `accept` (the `kind` label).
fn accept_error_kind(e: &std::io::Error) -> &'static str {
    use rustix::io::Errno;
    match e.raw_os_error() {
        Some(n) if n == Errno::MFILE.raw_os_error() => "emfile",
        Some(n) if n == Errno::NFILE.raw_os_error() => "enfile",
        Some(n) if n == Errno::NOBUFS.raw_os_error() || n == Errno::NOMEM.raw_os_error() => {
            "enomem"
        }
        _ => "other",
    }
}

/// The first back-off after a failed accept; it doubles while accepts keep failing, up
/// to [`ACCEPT_BACKOFF_MAX`].
pub(crate) const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
pub(crate) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accept the next connection, backing off while accepting fails (out of file
/// descriptors and the like: the connection waits in the backlog, and retrying at
/// once would spin). Each failure is counted in `presenced_c2s_accept_errors_total`.
pub(crate) async fn accept_with_backoff<T, F, Fut>(mut accept: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::io::Result<T>>,
{
    let mut backoff = Duration::ZERO;
    loop {
        match accept().await {
            Ok(x) => {
                if !backoff.is_zero() {
                    tracing::info!("xmpp accept works again");
                }
                return x;
            }
            Err(e) => {
                let kind = accept_error_kind(&e);
                metrics::counter!("presenced_c2s_accept_errors_total", "kind" => kind).increment(1);
                if backoff.is_zero() {
                    tracing::warn!(kind, "xmpp accept failed: {e}; backing off");
                }
                backoff = (backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GuardConfig {
        GuardConfig {
            max_connections: 5,
            max_unauthenticated_per_ip: 2,
            auth_failures_per_ip: 3,
            auth_failures_per_account: 4,
            auth_failure_window: Duration::from_secs(60),
            auth_block: Duration::from_secs(60),
            auth_concurrency: 1,
            auth_queue: 2,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_caps_refuse_and_release() {
        let g = Guard::new(cfg());
        let a1 = g.admit(ip("10.0.0.1")).unwrap();
        let mut a2 = g.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(
            g.admit(ip("10.0.0.1")).err(),
            Some(Refused::PerIpUnauthenticated)
        );
        // Authenticated connections do not count against their address.
        a2.authenticated();
        let a3 = g.admit(ip("10.0.0.1")).unwrap();
        let b1 = g.admit(ip("10.0.0.2")).unwrap();
        let _b2 = g.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(g.admit(ip("10.0.0.3")).err(), Some(Refused::MaxConnections));
        drop(a1);
        drop(b1);
        let _c = g.admit(ip("10.0.0.3")).unwrap();
        drop(a3);
        drop(a2);
        assert_eq!(g.open.load(Ordering::Relaxed), 2);
        assert!(
            lock(&g.unauth).get(&ip("10.0.0.1")).is_none(),
            "entries go at zero"
        );
    }

    #[test]
    fn ipv6_addresses_count_per_64() {
        assert_eq!(ip_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(ip_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        let g = Guard::new(cfg());
        let _a = g.admit(ip("2001:db8:1:2::1")).unwrap();
        let _b = g.admit(ip("2001:db8:1:2::2")).unwrap();
        assert_eq!(
            g.admit(ip("2001:db8:1:2::3")).err(),
            Some(Refused::PerIpUnauthenticated)
        );
        assert!(g.admit(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn an_address_is_blocked_after_its_failures() {
        let g = Guard::new(cfg());
        let bad = ip("10.0.0.9");
        for user in ["a", "b"] {
            assert_eq!(g.check(bad, Some(user)), Ok(()));
            assert_eq!(g.failed(bad, Some(user)), Blocks::default());
        }
        assert!(g.failed(bad, Some("c")).ip);
        assert_eq!(g.check(bad, None), Err(Refused::AuthIpBlocked));
        assert_eq!(g.check(ip("10.0.0.10"), Some("a")), Ok(()));
    }

    #[test]
    fn a_throttled_account_refuses_only_the_addresses_that_failed_for_it() {
        let g = Guard::new(cfg());
        let attackers = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4"];
        let mut blocked = false;
        for a in attackers {
            blocked |= g.failed(ip(a), Some("alice")).account;
        }
        assert!(blocked, "the fourth failure throttles the account");
        for a in attackers {
            assert_eq!(
                g.check(ip(a), Some("alice")),
                Err(Refused::AuthAccountThrottled)
            );
            assert_eq!(
                g.check(ip(a), Some("bob")),
                Ok(()),
                "other accounts are not affected"
            );
        }
        // The owner, elsewhere, still tries (and logs in).
        assert_eq!(g.check(ip("10.9.9.9"), Some("alice")), Ok(()));
        g.succeeded(ip("10.1.0.1"), "alice");
        assert_eq!(g.check(ip("10.1.0.1"), Some("alice")), Ok(()));
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let mut r = Record::new(Instant::now());
        let w = Duration::from_millis(10);
        assert!(!r.fail(Instant::now(), 2, w, w));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!r.fail(Instant::now(), 2, w, w), "the window restarted");
        assert!(r.fail(Instant::now(), 2, w, w));
    }

    #[test]
    fn the_cap_stays_below_the_open_file_limit() {
        assert_eq!(connection_cap(0, Some(20_000)), (18_000, None));
        assert_eq!(connection_cap(5_000, Some(20_000)), (5_000, None));
        assert_eq!(connection_cap(50_000, Some(20_000)), (18_000, Some(20_000)));
        assert_eq!(connection_cap(0, Some(1024)), (896, None));
        assert_eq!(connection_cap(0, None), (10_000, None));
    }

    /// Run one verification per entry of `who` (true: from a clean address), started
    /// 5 ms apart, each taking 50 ms; the order they ran in (by index), and the refused.
    async fn run_verifications(g: &Arc<Guard>, who: &[bool]) -> (Vec<usize>, Vec<usize>) {
        let running = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, clean) in who.iter().enumerate() {
            let (g, running, order) = (g.clone(), running.clone(), order.clone());
            let attempt = Attempt {
                guard: g.clone(),
                key: ip("10.0.0.1"),
                counted: false,
                clean: *clean,
            };
            tasks.push(tokio::spawn(async move {
                g.verify(&attempt, move || {
                    assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "one at a time");
                    lock(&order).push(i);
                    std::thread::sleep(Duration::from_millis(50));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut busy = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(()) => {}
                Err(Refused::AuthBusy) => busy.push(i),
                Err(e) => panic!("{e:?}"),
            }
        }
        let order = lock(&order).clone();
        (order, busy)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verifications_are_bounded_and_the_excess_refused() {
        let g = Guard::new(cfg());
        // One runs, two wait, the other three are refused.
        let (order, busy) = run_verifications(&g, &[false; 6]).await;
        assert_eq!(order, vec![0, 1, 2]);
        assert_eq!(busy, vec![3, 4, 5]);
        assert_eq!(lock(&g.pool.st).running, 0, "every slot came back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clean_addresses_go_before_suspect_ones() {
        let g = Guard::new(cfg());
        // 0 runs; 1 and 2 (suspect) wait; 3 (clean) finds the line full and takes the
        // place of 2, then runs before 1.
        let (order, busy) = run_verifications(&g, &[false, false, false, true]).await;
        assert_eq!(order, vec![0, 3, 1]);
        assert_eq!(busy, vec![2]);
    }

    #[test]
    fn attempts_in_flight_count_against_the_address() {
        let g = Guard::new(cfg());
        let a = ip("10.2.0.1");
        let first = g.begin(a, "x").unwrap();
        assert!(first.clean);
        let second = g.begin(a, "y").unwrap();
        let third = g.begin(a, "z").unwrap();
        // Three in flight: the budget of three is taken until they end.
        assert_eq!(g.begin(a, "w").err(), Some(Refused::AuthIpBlocked));
        drop(first);
        let again = g.begin(a, "w").unwrap();
        g.failed(a, Some("w"));
        drop((again, second, third));
        let after = g.begin(a, "v").unwrap();
        assert!(!after.clean, "a failure makes the address suspect");
    }

    #[tokio::test]
    async fn a_failing_accept_backs_off_instead_of_spinning() {
        let mut calls = 0;
        let t0 = std::time::Instant::now();
        let v = accept_with_backoff(|| {
            calls += 1;
            let n = calls;
            async move {
                if n <= 5 {
                    Err(std::io::Error::from_raw_os_error(
                        rustix::io::Errno::MFILE.raw_os_error(),
                    ))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(v, 6);
        // 10 + 20 + 40 + 80 + 160 ms of back-off for five failures.
        assert!(
            t0.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t0.elapsed()
        );
    }
}
