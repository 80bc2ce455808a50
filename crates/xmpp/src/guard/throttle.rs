//! Authentication throttling records: failures per address and per account.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// At most this many addresses and accounts are remembered by the throttle (expired
/// records are swept when the table is full; beyond, new ones go untracked).
pub(super) const MAX_TRACKED: usize = 100_000;
/// At most this many addresses remembered per throttled account.
pub(super) const MAX_BAD_PER_ACCOUNT: usize = 1024;

#[derive(Debug, Clone, Copy)]
pub(super) struct Record {
    pub(super) failures: u32,
    pub(super) since: Instant,
    pub(super) blocked_until: Option<Instant>,
    /// Attempts past their decisive check ([`super::Guard::decide`]) whose outcome is
    /// not recorded yet: the budget counts them as failures to come, so parallel
    /// connections cannot overrun it. Only the final step of an exchange counts (the
    /// SCRAM proof, a PLAIN password's derivation), so a burst of logins from one
    /// address is not refused for merely being under way.
    pub(super) deciding: u32,
    /// The last successful login from this address.
    pub(super) last_success: Option<Instant>,
}

impl Record {
    pub(super) fn new(now: Instant) -> Record {
        Record {
            failures: 0,
            since: now,
            blocked_until: None,
            deciding: 0,
            last_success: None,
        }
    }

    pub(super) fn blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|t| t > now)
    }

    pub(super) fn expired(&self, now: Instant, window: Duration) -> bool {
        self.deciding == 0
            && !self.blocked(now)
            && now.duration_since(self.since) > window
            && !self.trusted(now, window)
    }

    /// How much of the address's failure budget is taken: its recent failures, plus
    /// the attempts being decided, so parallel connections cannot overrun it. An
    /// address that logged in within the window and has not failed since is the
    /// exception: its attempts being decided do not count (a NAT's login storm after a
    /// restart is many users at once, and `max_unauthenticated_per_ip` still bounds
    /// them); its first failure makes them count again.
    pub(super) fn spent(&self, now: Instant, window: Duration) -> u32 {
        let recent = self.recent(now, window);
        if recent == 0 && self.trusted(now, window) {
            0
        } else {
            recent + self.deciding
        }
    }

    /// A login from this address succeeded within the window.
    pub(super) fn trusted(&self, now: Instant, window: Duration) -> bool {
        self.last_success
            .is_some_and(|t| now.duration_since(t) <= window)
    }

    /// Failures counted in the current window.
    pub(super) fn recent(&self, now: Instant, window: Duration) -> u32 {
        if now.duration_since(self.since) > window {
            0
        } else {
            self.failures
        }
    }

    /// Count a failure; `true` when it starts (or extends) a block.
    pub(super) fn fail(
        &mut self,
        now: Instant,
        limit: u32,
        window: Duration,
        block: Duration,
    ) -> bool {
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

pub(super) struct Account {
    pub(super) rec: Record,
    /// Addresses that failed for this account since the record started: while the
    /// account is throttled, only these are refused, so its owner still logs in from
    /// anywhere else.
    pub(super) bad: HashSet<IpAddr>,
}

#[derive(Default)]
pub(super) struct Throttle {
    pub(super) ips: HashMap<IpAddr, Record>,
    pub(super) accounts: HashMap<String, Account>,
}

/// What a failure led to (for the log and the client's answer).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Blocks {
    pub ip: bool,
    pub account: bool,
}

/// The record of `k`, made if missing while the table has room (expired records are
/// swept when it is full); `None` when it is full of live records.
pub(super) fn tracked<K: std::hash::Hash + Eq, V>(
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
