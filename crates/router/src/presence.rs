//! Presence: broadcast fan-out, directed presence, probes and the views a session is
//! shown (at login, on change, on re-evaluation). Viewers and owners come from the
//! policy's candidate lists, and each verdict is `policy::visibility`'s.

use super::*;

/// Why a viewer is being shown an owner's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// At login: only what is really available (or unknown) is worth sending.
    Initial,
    /// The owner's presence changed: only viewers who see the real availability learn
    /// of it (for the others nothing changed, and "unavailable" from a resource that
    /// just came online would tell them it did).
    Change,
    /// Visibility was re-evaluated (a setting or a subscription changed) or a probe
    /// asked: available, or "unavailable" when not shared.
    Refresh,
    /// The viewer just lost the subscription: "unavailable" unless still entitled.
    Retract,
}

/// What a viewer is handed of one session, given the visibility decision (`None`:
/// nothing). The decision itself is [`presenced_policy::visibility`]'s alone; the
/// note of an unavailable presence is the owner's availability too.
pub(crate) fn shown(seen: Seen, real: &Presence, view: View) -> Option<PresenceState> {
    match (seen, real, view) {
        (Seen::Available, Presence::Available(a), _) => Some(PresenceState::Available(a.clone())),
        (Seen::Available, Presence::Unavailable { .. }, View::Initial) => None,
        (Seen::Available, Presence::Unavailable { note }, _) => {
            Some(PresenceState::Unavailable { note: note.clone() })
        }
        (Seen::Unknown | Seen::Unavailable, _, View::Change) => None,
        (Seen::Unknown, _, _) => Some(PresenceState::Unknown),
        (Seen::Nothing, _, View::Retract) => Some(PresenceState::Unavailable { note: None }),
        (Seen::Nothing, _, _) | (Seen::Unavailable, _, View::Initial) => None,
        (Seen::Unavailable, _, _) => Some(PresenceState::Unavailable { note: None }),
    }
}

fn current(e: &Entry) -> Presence {
    match &e.avail {
        Some(a) => Presence::Available(a.clone()),
        None => Presence::Unavailable { note: None },
    }
}

impl Router {
    /// Deliver the presence `real` of `owner/resource` to everyone entitled to it
    /// (RFC 6121 §4.2.2, §4.4.2, §4.5.2): every available resource of the owner
    /// (including the one that sent it, while it is connected) and the available
    /// sessions of every watcher on this node, each as `policy` decides. `origin`: this
    /// node owns the session, so it also hands the presence to watchers in other
    /// domains (through `route_remote`).
    pub(crate) fn fanout_presence(
        &self,
        dir: &Directory,
        state: &State,
        owner: &str,
        resource: &str,
        real: &Presence,
        origin: bool,
    ) {
        let from = Address::endpoint(owner, resource);
        let mut n = 0u64;
        for (viewer, seen) in watchers_of(state, owner, &()) {
            let Some(vu) = state.local_user(&viewer) else {
                if origin {
                    self.presence_out(state, Some(owner), &viewer, real, seen);
                }
                continue;
            };
            let Some(vs) = dir.sessions(vu) else {
                continue;
            };
            let Some(shown) = shown(seen, real, View::Change) else {
                continue;
            };
            for (r, e, l) in vs.local() {
                // The sender itself gets its own presence back, even unavailable.
                let sender = vu == owner && r == resource;
                if e.avail.is_none() && !sender {
                    continue;
                }
                let d = Delivery::Presence {
                    from: from.clone(),
                    state: shown.clone(),
                };
                n += self.send_local(vu, r, e.sid, l, d) as u64;
            }
        }
        metrics::counter!("presenced_presence_delivered_total").increment(n);
    }

    /// Directed presence from `owner/resource` to `to` (RFC 6121 §4.6).
    pub(crate) fn deliver_directed(
        &self,
        dir: &Directory,
        state: &State,
        owner: &str,
        resource: &str,
        to: &Address,
        real: &Presence,
    ) {
        let ctx = Context {
            directed: true,
            ..Context::default()
        };
        let target = match to {
            Address::Local(l) => l,
            Address::Remote(_) => {
                if let Ok(jid) = self.jid_of_addr(&to.bare()) {
                    let seen = visibility(state, owner, &jid, ctx);
                    self.presence_out(state, Some(owner), &jid, real, seen);
                }
                return;
            }
            Address::Server | Address::Room { .. } => return,
        };
        let seen = visibility(state, owner, &self.jid(&target.user), ctx);
        let Some(shown) = shown(seen, real, View::Refresh) else {
            return;
        };
        let from = Address::endpoint(owner, resource);
        // §4.6.2 / §8.5.2.2.2: to a bare JID, every available resource; to a full JID
        // that is not connected, nothing.
        let to_res = target.endpoint.as_deref();
        for r in self.resources_for(dir, &target.user, to_res, false) {
            if to_res.is_some_and(|t| t != r) {
                continue;
            }
            self.send_to(
                dir,
                &target.user,
                &r,
                Delivery::Presence {
                    from: from.clone(),
                    state: shown.clone(),
                },
            );
        }
    }

    /// Presence of every session of `owner` as seen with `seen`, delivered to the
    /// viewer's local session `vres` (at login, for probes, when visibility changes).
    /// Sessions that never sent initial presence are not shown.
    pub(crate) fn show_owner_to(
        &self,
        dir: &Directory,
        owner: &str,
        seen: Seen,
        viewer_user: &str,
        vres: &str,
        view: View,
    ) -> usize {
        let Some(own) = dir.sessions(owner) else {
            return 0;
        };
        let Some(ve) = dir.get(viewer_user, vres) else {
            return 0;
        };
        let Some(local) = &ve.local else {
            return 0;
        };
        let mut n = 0;
        for (r, e) in own.iter() {
            if owner == viewer_user && r == vres {
                continue;
            }
            if e.avail.is_none() {
                continue;
            }
            let Some(shown) = shown(seen, &current(e), view) else {
                continue;
            };
            let d = Delivery::Presence {
                from: Address::endpoint(owner, r),
                state: shown,
            };
            n += self.send_local(viewer_user, vres, ve.sid, local, d) as usize;
        }
        n
    }

    /// Re-deliver what each local available viewer may now see of `owner` (every owner
    /// when `None`): used when availability sharing or a roster changes.
    pub(crate) fn refresh_visibility(&self, owner: Option<&str>) {
        let dir = self.inner.dir.lock();
        let me = self.node_id();
        self.inner.node.read(|state| {
            let viewers: Vec<(String, String)> = dir.local_available(me);
            for (vu, vr) in &viewers {
                for (o, seen) in visible_to(state, vu, &()) {
                    if owner.is_none_or(|x| x == o) {
                        self.show_owner_to(&dir, &o, seen, vu, vr, View::Refresh);
                    }
                }
            }
            // Directed presence this node's sessions sent is re-decided here too, on
            // the owner's node (the only one that knows it): a recipient must not keep
            // an availability that is no longer shared.
            for (ou, or) in &viewers {
                if owner.is_some_and(|x| x != ou) {
                    continue;
                }
                let Some(e) = dir.get(ou, or) else { continue };
                let (Some(l), Some(a)) = (&e.local, &e.avail) else {
                    continue;
                };
                let real = Presence::Available(a.clone());
                for to in &l.directed {
                    self.deliver_directed(&dir, state, ou, or, to, &real);
                }
            }
        });
    }
}

impl Session {
    /// Broadcast presence. The first available presence is the initial one: the
    /// session then gets its contacts' presence, pending subscription requests and
    /// offline messages.
    pub fn set_presence(&self, p: Presence) {
        let r = &self.router;
        let avail = p.availability().cloned();
        let (initial, prio) = {
            let mut dir = r.inner.dir.lock();
            let Some(e) = dir.get_mut(&self.user, &self.resource) else {
                return;
            };
            if e.sid != self.sid {
                return;
            }
            let was_available = e.avail.is_some();
            let initial = !was_available && avail.is_some();
            e.avail = avail.clone();
            let directed: Vec<Address> = match (&avail, e.local.as_mut()) {
                (None, Some(l)) => std::mem::take(&mut l.directed).into_iter().collect(),
                _ => Vec::new(),
            };
            r.inner.node.read(|state| {
                if was_available || avail.is_some() {
                    r.fanout_presence(&dir, state, &self.user, &self.resource, &p, true);
                }
                for to in &directed {
                    r.deliver_directed(&dir, state, &self.user, &self.resource, to, &p);
                }
                if initial {
                    self.initial_view(&dir, state);
                }
            });
            (initial, avail.as_ref().map_or(-1, |a| a.preference))
        };
        let note = match &p {
            Presence::Unavailable { note } => note.clone(),
            Presence::Available(_) => None,
        };
        r.inner.peers.broadcast(PeerEvent::Presence {
            user: self.user.clone(),
            resource: self.resource.clone(),
            avail,
            note,
        });
        if initial && prio >= 0 {
            let r = r.clone();
            let (u, res) = (self.user.clone(), self.resource.clone());
            tokio::spawn(async move { r.flush_offline(&u, &res).await });
        }
    }

    /// What a session is shown when it becomes available (RFC 6121 §4.2.2–§4.2.4):
    /// the presence of everyone it may see (its own other resources first), and the
    /// subscription requests waiting for it.
    fn initial_view(&self, dir: &Directory, state: &State) {
        let r = &self.router;
        for (owner, seen) in visible_to(state, &self.user, &()) {
            r.show_owner_to(dir, &owner, seen, &self.user, &self.resource, View::Initial);
        }
        let Some(data) = state.user(&self.user) else {
            return;
        };
        if let Some(e) = dir.get(&self.user, &self.resource)
            && let Some(l) = &e.local
        {
            for from in &data.roster.pending_in {
                let d = Delivery::Subscription {
                    from: r.addr_of_jid(from),
                    kind: SubscriptionKind::Subscribe,
                };
                r.send_local(&self.user, &self.resource, e.sid, l, d);
            }
        }
    }

    /// Directed presence to one address (RFC 6121 §4.6).
    pub fn directed_presence(&self, to: &Address, p: Presence) -> Result<(), RouteError> {
        let r = &self.router;
        match to {
            Address::Local(l) if l.user == self.user && l.endpoint.is_none() => {
                // To one's own bare JID: that is broadcast presence.
                self.set_presence(p);
                return Ok(());
            }
            Address::Local(_) | Address::Remote(_) => {}
            Address::Server | Address::Room { .. } => return Ok(()),
        }
        let mut dir = r.inner.dir.lock();
        if let Some(l) = dir.local_mut(&self.user, &self.resource, self.sid) {
            if p.availability().is_some() {
                l.directed.insert(to.clone());
            } else {
                l.directed.remove(to);
            }
        }
        r.inner.node.read(|state| {
            r.deliver_directed(&dir, state, &self.user, &self.resource, to, &p);
        });
        Ok(())
    }

    /// A presence probe (RFC 6121 §4.3): the current presence of `to`'s sessions, as
    /// this user may see it. An owner the user may not see answers `unsubscribed`
    /// (§4.3.2); one with no available session answers "unavailable".
    pub fn probe(&self, to: &Address) -> Result<(), RouteError> {
        let r = &self.router;
        let owner = match to {
            Address::Local(l) => l.user.clone(),
            Address::Remote(_) => return r.probe_out(&self.user, to),
            Address::Server | Address::Room { .. } => return Ok(()),
        };
        let dir = r.inner.dir.lock();
        let Some(e) = dir.get(&self.user, &self.resource) else {
            return Ok(());
        };
        let Some(local) = &e.local else {
            return Ok(());
        };
        r.inner.node.read(|state| {
            if state.user(&owner).is_none() {
                return;
            }
            let seen = visibility(state, &owner, &r.jid(&self.user), Context::default());
            let shown = r.show_owner_to(
                &dir,
                &owner,
                seen,
                &self.user,
                &self.resource,
                View::Refresh,
            );
            let answer = match seen {
                Seen::Nothing => Some(Delivery::Subscription {
                    from: Address::user(&owner),
                    kind: SubscriptionKind::Unsubscribed,
                }),
                _ if shown == 0 && owner != self.user => Some(Delivery::Presence {
                    from: Address::user(&owner),
                    state: PresenceState::Unavailable { note: None },
                }),
                _ => None,
            };
            if let Some(d) = answer {
                r.send_local(&self.user, &self.resource, e.sid, local, d);
            }
        });
        Ok(())
    }
}
