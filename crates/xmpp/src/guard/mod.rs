//! What keeps one client, or many, from exhausting the node: the connection caps (all
//! client connections, and unauthenticated ones per address), authentication
//! throttling (failures per address and per account), the bound on concurrent
//! password derivations, and the accept loop's back-off. Every refusal is counted in
//! `presenced_c2s_refused_total{reason}`; connections the node ends for a resource
//! reason in `presenced_c2s_closed_total{reason}`.
//!
//! Addresses are compared as IPv4 addresses or IPv6 /64 prefixes (one subscriber
//! usually holds a whole /64), IPv4-mapped IPv6 as IPv4.

mod limits;
mod pool;
#[cfg(test)]
mod tests;
mod throttle;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

pub(crate) use limits::accept_with_backoff;
pub(crate) use limits::ip_key;
pub use limits::{connection_cap, fd_reserve, open_file_limit};
use pool::{Class, Pool, PoolState};
pub(crate) use throttle::Blocks;
use throttle::{Account, MAX_BAD_PER_ACCOUNT, Record, Throttle, tracked};

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
                || r.spent(now, self.cfg.auth_failure_window) >= self.cfg.auth_failures_per_ip)
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

    /// Start an attempt from `ip` for `account`: refused when the address or the
    /// account is blocked or its budget is spent ([`Guard::check`]). Nothing is counted
    /// yet: many logins from one address (a NAT after a restart) may be under way at
    /// once; the budget is enforced where each is decided ([`Guard::decide`]).
    pub(crate) fn begin(self: &Arc<Self>, ip: IpAddr, account: &str) -> Result<Attempt, Refused> {
        let (key, now) = (ip_key(ip), Instant::now());
        let mut t = lock(&self.throttle);
        self.allowed(&t, key, Some(account), now)?;
        let window = self.cfg.auth_failure_window;
        let rec = tracked(&mut t.ips, key, now, Record::new, |r| {
            r.expired(now, window)
        });
        let class = match &rec {
            Some(r) if r.trusted(now, window) => Class::Trusted,
            Some(r) if r.recent(now, window) > 0 => Class::Suspect,
            _ => Class::Clean,
        };
        Ok(Attempt {
            guard: self.clone(),
            key,
            account: account.to_string(),
            counted: false,
            class,
        })
    }

    /// The attempt is about to be decided (the SCRAM proof checked, a PLAIN password
    /// derived): refused if its address or account ran out of budget since it began,
    /// else it counts against the address's budget as a failure to come until its
    /// outcome is recorded and it is dropped. An address thus gets at most
    /// `auth_failures_per_ip` verified failures per window however many connections
    /// it opens at once.
    pub(crate) fn decide(&self, attempt: &mut Attempt) -> Result<(), Refused> {
        if attempt.counted {
            return Ok(());
        }
        let now = Instant::now();
        let mut t = lock(&self.throttle);
        self.allowed(&t, attempt.key, Some(&attempt.account), now)?;
        if let Some(r) = t.ips.get_mut(&attempt.key) {
            r.deciding += 1;
            attempt.counted = true;
        }
        Ok(())
    }

    fn end_attempt(&self, key: IpAddr) {
        if let Some(r) = lock(&self.throttle).ips.get_mut(&key) {
            r.deciding = r.deciding.saturating_sub(1);
        }
    }

    /// Count a failed attempt (wrong password, unknown user, bad proof). The attempt,
    /// if given, stops counting as one being decided in the same step.
    pub(crate) fn failed(
        &self,
        ip: IpAddr,
        account: Option<&str>,
        attempt: Option<Attempt>,
    ) -> Blocks {
        let (key, now) = (ip_key(ip), Instant::now());
        let c = &self.cfg;
        let mut t = lock(&self.throttle);
        settle(&mut t, attempt);
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
    pub(crate) fn succeeded(&self, ip: IpAddr, account: &str, attempt: Option<Attempt>) {
        let (key, now) = (ip_key(ip), Instant::now());
        let window = self.cfg.auth_failure_window;
        let mut t = lock(&self.throttle);
        settle(&mut t, attempt);
        if let Some(a) = t.accounts.get_mut(account) {
            a.bad.remove(&key);
        }
        // Its next attempts go first (a burst from fresh addresses, each clean until it
        // fails, must not crowd out those that just logged in).
        if let Some(r) = tracked(&mut t.ips, key, now, Record::new, |r| {
            r.expired(now, window)
        }) {
            r.last_success = Some(now);
        }
    }

    /// Run a password derivation off the async workers, at most `auth_concurrency` at
    /// once, with `auth_queue` waiting; past that it is refused (`AuthBusy`). Attempts
    /// from addresses that logged in lately go first, then those without recent
    /// failures (see [`pool`]), and one arriving at a full
    /// queue takes the place of the newest suspect one: a guessing burst delays its
    /// own attempts, not the owner's. The work runs to its end even if the caller goes
    /// away, holding its slot.
    pub(crate) async fn verify<T, F>(&self, attempt: &mut Attempt, f: F) -> Result<T, Refused>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = self.pool.acquire(attempt.class).await?;
        // Decided only now: failures recorded while it waited count.
        self.decide(attempt)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .map_err(|_| Refused::AuthBusy)
    }
}

/// The attempt's outcome is being recorded under the same lock: it no longer counts
/// as being decided (and its drop takes no lock).
fn settle(t: &mut Throttle, attempt: Option<Attempt>) {
    if let Some(mut a) = attempt
        && std::mem::take(&mut a.counted)
        && let Some(r) = t.ips.get_mut(&a.key)
    {
        r.deciding = r.deciding.saturating_sub(1);
    }
}

/// An authentication attempt being verified (see [`Guard::begin`]).
pub(crate) struct Attempt {
    guard: Arc<Guard>,
    key: IpAddr,
    account: String,
    /// Counted in its address's `deciding` (see [`Guard::decide`]).
    counted: bool,
    /// How far its address is trusted (the order it is served in).
    class: Class,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.counted {
            self.guard.end_attempt(self.key);
        }
    }
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
