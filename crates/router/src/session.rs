//! Sessions: opening, replacing and ending them, and handing deliveries to them.

use super::*;

/// Longest endpoint name accepted (RFC 7622 allows 1023 bytes for a resource).
const MAX_ENDPOINT: usize = 1023;

impl Router {
    /// Open a session for an authenticated `user` (a local user name) on `endpoint`
    /// (already validated by the adapter's own syntax rules). Without one the server
    /// makes one up; a session already holding the endpoint, on any node, is replaced.
    pub fn open_session(
        &self,
        user: &str,
        endpoint: Option<&str>,
    ) -> Result<(Session, queue::Receiver<Delivery>), RouteError> {
        let resource = match endpoint.map(str::trim).filter(|r| !r.is_empty()) {
            Some(r) if r.len() > MAX_ENDPOINT => {
                return Err(RouteError::BadAddress(format!(
                    "endpoint longer than {MAX_ENDPOINT} bytes"
                )));
            }
            Some(r) => r.to_string(),
            None => format!("{:016x}", rand::random::<u64>()),
        };
        let sid = self.inner.next_sid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = queue::queue(self.inner.cfg.session_queue);
        let me = self.node_id();
        {
            let mut dir = self.inner.dir.lock();
            if let Some(old) = dir.remove(user, &resource) {
                self.session_gone(&mut dir, user, &resource, old, true);
            }
            dir.insert(
                user,
                &resource,
                Entry {
                    node: me,
                    sid,
                    avail: None,
                    local: Some(Box::new(Local::new(tx))),
                },
            );
        }
        self.inner.peers.broadcast(PeerEvent::Up {
            user: user.to_string(),
            resource: resource.clone(),
            sid,
        });
        metrics::gauge!("presenced_sessions_local").increment(1.0);
        let session = Session {
            router: self.clone(),
            user: user.to_string(),
            resource,
            sid,
        };
        tracing::debug!(user, resource = %session.resource, sid, "session opened");
        Ok((session, rx))
    }

    /// A session left the directory: tell its watchers (and for a local one, the
    /// recipients of its directed presence) that it is unavailable. `replaced`: a new
    /// session took its resource; the old client is told.
    pub(crate) fn session_gone(
        &self,
        dir: &mut Directory,
        user: &str,
        resource: &str,
        old: Entry,
        replaced: bool,
    ) {
        if let Some(local) = &old.local {
            if replaced {
                let _ = local.tx.try_send(Delivery::Replaced);
            }
            metrics::gauge!("presenced_sessions_local").decrement(1.0);
        }
        let directed = old.local.as_ref().is_some_and(|l| !l.directed.is_empty());
        if old.avail.is_some() || directed {
            let origin = old.local.is_some();
            self.inner.node.read(|state| {
                if old.avail.is_some() {
                    let gone = Presence::Unavailable { note: None };
                    self.fanout_presence(dir, state, user, resource, &gone, origin);
                }
                // RFC 6121 §4.6.3: those who got directed presence learn it ended.
                if let Some(local) = &old.local {
                    for to in &local.directed {
                        let gone = Presence::Unavailable { note: None };
                        self.deliver_directed(dir, state, user, resource, to, &gone);
                    }
                }
            });
        }
        if old.local.is_some() {
            self.inner.peers.broadcast(PeerEvent::Down {
                user: user.to_string(),
                resource: resource.to_string(),
                sid: old.sid,
            });
        }
    }

    pub(crate) fn end_session(&self, user: &str, resource: &str, sid: u64) {
        let mut dir = self.inner.dir.lock();
        let mine = dir
            .get(user, resource)
            .is_some_and(|e| e.sid == sid && e.local.is_some());
        if mine && let Some(old) = dir.remove(user, resource) {
            self.session_gone(&mut dir, user, resource, old, false);
            tracing::debug!(user, resource, sid, "session closed");
        }
    }

    /// Hand a delivery to one session, local or on a peer.
    pub(crate) fn send_to(&self, dir: &Directory, user: &str, resource: &str, d: Delivery) -> bool {
        let Some(e) = dir.get(user, resource) else {
            return false;
        };
        match (&e.local, d) {
            (Some(local), d) => self.send_local(user, resource, e.sid, local, d),
            // A message someone answers for is held until the peer answers too.
            (None, Delivery::Message(m))
                if m.receipt.is_some() && self.inner.peers.forwards(e.node) =>
            {
                self.forward(e.node, user, resource, e.sid, *m)
            }
            (None, mut d) => {
                // A peer of the previous release: no receipts; handed over is all
                // this node can know (its guarantee then).
                let receipt = match &mut d {
                    Delivery::Message(m) => m.take_receipt(),
                    _ => None,
                };
                let sent = self.inner.peers.send(
                    e.node,
                    PeerEvent::Deliver {
                        user: user.to_string(),
                        resource: resource.to_string(),
                        delivery: d,
                    },
                );
                if sent && let Some(r) = receipt {
                    r.done();
                }
                sent
            }
        }
    }

    pub(crate) fn send_local(
        &self,
        user: &str,
        resource: &str,
        sid: u64,
        local: &Local,
        mut d: Delivery,
    ) -> bool {
        if let Delivery::Message(m) = &mut d
            && m.uid != 0
            && !local
                .recent
                .lock()
                .get_or_insert_with(Default::default)
                .insert(m.uid)
        {
            // This session has it already: taken.
            metrics::counter!("presenced_messages_deduplicated_total").increment(1);
            if let Some(r) = m.take_receipt() {
                r.done();
            }
            return true;
        }
        match local.tx.try_send(d) {
            Ok(()) => true,
            Err(queue::TrySendError::Full) => {
                // A client that does not read its deliveries is disconnected rather
                // than holding memory for ever; its watchers see it go unavailable.
                metrics::counter!("presenced_sessions_overflowed_total").increment(1);
                tracing::warn!(
                    user,
                    resource,
                    "session queue full: disconnecting the client"
                );
                let r = self.clone();
                let (u, res) = (user.to_string(), resource.to_string());
                tokio::spawn(async move { r.end_session(&u, &res, sid) });
                false
            }
            Err(queue::TrySendError::Closed) => false,
        }
    }

    /// The resources of `user` a stanza addressed to `resource` (or the bare JID) goes to:
    /// the named one if connected, else every available resource (non-negative
    /// preference only when `prio_only`).
    pub(crate) fn resources_for(
        &self,
        dir: &Directory,
        user: &str,
        resource: Option<&str>,
        prio_only: bool,
    ) -> Vec<String> {
        let Some(all) = dir.sessions(user) else {
            return Vec::new();
        };
        if let Some(r) = resource
            && all.contains_key(r)
        {
            return vec![r.to_string()];
        }
        all.iter()
            .filter(|(_, e)| {
                e.avail
                    .as_ref()
                    .is_some_and(|a| !prio_only || a.preference >= 0)
            })
            .map(|(r, _)| r.clone())
            .collect()
    }
}

/// Where the directory of this node places one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub node: NodeId,
    /// The session sent initial presence and has not gone unavailable.
    pub available: bool,
}

impl Router {
    /// Which node holds `user`'s session on `endpoint`, as this node's (mirrored)
    /// directory knows it.
    pub fn locate(&self, user: &str, endpoint: &str) -> Option<Located> {
        self.inner.dir.lock().get(user, endpoint).map(|e| Located {
            node: e.node,
            available: e.avail.is_some(),
        })
    }

    /// Stop talking to peers: every link closes and none opens again, so the peers
    /// drop this node's sessions as they would for a dead node. For a node going
    /// away (and for tests that simulate its death in-process).
    pub fn halt(&self) {
        self.inner.peers.halt();
    }
}

impl Session {
    /// The client asked for its roster: it gets roster pushes from now on.
    pub fn roster_requested(&self) {
        let version = self
            .router
            .read(|s| s.user(&self.user).map_or(0, |d| d.roster.version));
        let mut dir = self.router.inner.dir.lock();
        if let Some(l) = dir.local_mut(&self.user, &self.resource, self.sid) {
            l.roster = true;
            l.roster_ver = l.roster_ver.max(version);
        }
    }
}
