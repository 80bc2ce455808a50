//! Resynchronising with the replicated state after missing applied-log events.
//!
//! The router learns of durable changes from the cluster's event stream. If it falls
//! behind (the stream is bounded) or the whole state is replaced by a snapshot, the
//! events in between are gone; instead of guessing, the router recomputes from the
//! state what every session on this node must see and pushes the difference:
//! - roster pushes for exactly the items changed or removed after the version each
//!   session was last given (`State::roster_changes_since`); a session whose missed
//!   removals can no longer be told exactly is closed with a clear reason, and its
//!   client logs in again and fetches the roster whole;
//! - presence: what each available session may see is re-decided (as when sharing
//!   flips), and directed presence with it;
//! - pending subscription requests are shown again to available sessions (a repeat
//!   is harmless; a loss is not);
//! - offline messages that arrived meanwhile are delivered;
//! - sessions of accounts removed meanwhile are closed.
//!
//! `presenced_router_resyncs_total{reason}` counts resyncs.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::{Delivery, Router, SubscriptionKind};

impl Router {
    pub(crate) fn resync(&self, reason: &'static str) {
        let t = Instant::now();
        metrics::counter!("presenced_router_resyncs_total", "reason" => reason).increment(1);
        let sessions = self.inner.dir.lock().local_sessions();
        let mut by_user: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        for (u, r, sid) in sessions {
            by_user.entry(u).or_default().push((r, sid));
        }
        let (mut pushes, mut closed) = (0usize, 0usize);
        for (user, resources) in &by_user {
            let (p, c) = self.resync_user(user, resources);
            pushes += p;
            closed += c;
        }
        self.refresh_visibility(None);
        for user in by_user.keys() {
            self.resend_pending(user);
            if self.read(|s| s.user(user).is_some_and(|d| !d.offline.messages.is_empty())) {
                self.offline_arrived(user.clone());
            }
        }
        tracing::info!(
            reason,
            sessions = by_user.values().map(Vec::len).sum::<usize>(),
            roster_pushes = pushes,
            closed,
            ms = t.elapsed().as_millis() as u64,
            "resynchronised with the replicated state"
        );
    }

    /// Roster pushes (and closes) for one user's local sessions.
    fn resync_user(&self, user: &str, resources: &[(String, u64)]) -> (usize, usize) {
        let (mut pushes, mut closed) = (0, 0);
        let mut dir = self.inner.dir.lock();
        self.inner.node.read(|state| {
            let exists = state.user(user).is_some();
            for (r, sid) in resources {
                let Some(l) = dir.local_mut(user, r, *sid) else {
                    continue;
                };
                if !exists {
                    let d = Delivery::Close {
                        reason: "the account was removed".into(),
                    };
                    self.send_local(user, r, *sid, l, d);
                    closed += 1;
                    continue;
                }
                if !l.roster {
                    continue;
                }
                let Some(c) = state.roster_changes_since(user, l.roster_ver) else {
                    let d = Delivery::Close {
                        reason: "the roster changed while this server was catching up; \
                                 please reconnect"
                            .into(),
                    };
                    self.send_local(user, r, *sid, l, d);
                    closed += 1;
                    continue;
                };
                // In version order, each push with the version of its own change.
                let mut ds: Vec<(u64, Delivery)> = c
                    .removed
                    .into_iter()
                    .map(|(v, jid)| {
                        let d = Delivery::RosterPush {
                            jid,
                            item: None,
                            version: v,
                        };
                        (v, d)
                    })
                    .collect();
                ds.extend(c.changed.into_iter().map(|i| {
                    let v = i.ver;
                    let d = Delivery::RosterPush {
                        jid: i.jid.clone(),
                        item: Some(Box::new(i)),
                        version: v,
                    };
                    (v, d)
                }));
                ds.sort_by_key(|(v, _)| *v);
                l.roster_ver = c.version;
                let l = &*l;
                for (_, d) in ds {
                    pushes += 1;
                    if !self.send_local(user, r, *sid, l, d) {
                        break;
                    }
                }
            }
        });
        (pushes, closed)
    }

    /// Show `user`'s available local sessions their pending subscription requests.
    fn resend_pending(&self, user: &str) {
        let pending: Vec<String> = self.read(|s| {
            s.user(user)
                .map(|d| d.roster.pending_in.iter().cloned().collect())
                .unwrap_or_default()
        });
        for from in pending {
            self.notify(user, &from, SubscriptionKind::Subscribe);
        }
    }
}
