//! The mirrored directory: applying what peers tell us about their sessions.

use super::*;

impl Router {
    pub(crate) fn on_peer_event(&self, from: NodeId, ev: PeerEvent) {
        match ev {
            PeerEvent::Hello { sessions } => {
                let mut dir = self.inner.dir.lock();
                let keep: std::collections::HashSet<(String, String)> = sessions
                    .iter()
                    .map(|s| (s.user.clone(), s.resource.clone()))
                    .collect();
                for (u, r) in dir.of_node(from) {
                    if !keep.contains(&(u.clone(), r.clone()))
                        && let Some(old) = dir.remove(&u, &r)
                    {
                        self.session_gone(&mut dir, &u, &r, old, false);
                    }
                }
                for s in sessions {
                    self.remote_up(&mut dir, from, &s.user, &s.resource, s.sid);
                    self.remote_presence(&mut dir, from, &s.user, &s.resource, s.avail, None);
                }
            }
            PeerEvent::Up {
                user,
                resource,
                sid,
            } => {
                let mut dir = self.inner.dir.lock();
                self.remote_up(&mut dir, from, &user, &resource, sid);
            }
            PeerEvent::Presence {
                user,
                resource,
                avail,
                note,
            } => {
                let mut dir = self.inner.dir.lock();
                self.remote_presence(&mut dir, from, &user, &resource, avail, note);
            }
            PeerEvent::Down {
                user,
                resource,
                sid,
            } => {
                let mut dir = self.inner.dir.lock();
                let theirs = dir
                    .get(&user, &resource)
                    .is_some_and(|e| e.node == from && e.sid == sid);
                if theirs && let Some(old) = dir.remove(&user, &resource) {
                    self.session_gone(&mut dir, &user, &resource, old, false);
                }
            }
            PeerEvent::Deliver {
                user,
                resource,
                delivery,
            } => {
                let dir = self.inner.dir.lock();
                let Some(e) = dir.get(&user, &resource) else {
                    metrics::counter!("presenced_deliveries_lost_total").increment(1);
                    return;
                };
                let Some(local) = &e.local else {
                    return;
                };
                if let Delivery::Message(m) = &delivery {
                    self.note_reply(&user, m);
                }
                self.send_local(&user, &resource, e.sid, local, delivery);
            }
            PeerEvent::Forward {
                user,
                resource,
                sid,
                id,
                message,
            } => self.on_forward(
                from,
                &user,
                &resource,
                sid,
                id,
                std::sync::Arc::unwrap_or_clone(message),
            ),
            PeerEvent::Receipt { id, done } => self.on_receipt(from, id, done),
            PeerEvent::Heartbeat => {}
        }
    }

    pub(crate) fn remote_up(
        &self,
        dir: &mut Directory,
        from: NodeId,
        user: &str,
        resource: &str,
        sid: u64,
    ) {
        if let Some(e) = dir.get(user, resource) {
            if e.node == from && e.sid == sid {
                return;
            }
            // The resource moved: whoever held it before (here or elsewhere) is replaced.
            if let Some(old) = dir.remove(user, resource) {
                let local = old.local.is_some();
                self.session_gone(dir, user, resource, old, local);
            }
        }
        dir.insert(
            user,
            resource,
            Entry {
                node: from,
                sid,
                avail: None,
                local: None,
            },
        );
    }

    pub(crate) fn remote_presence(
        &self,
        dir: &mut Directory,
        from: NodeId,
        user: &str,
        resource: &str,
        avail: Option<Availability>,
        note: Option<String>,
    ) {
        let Some(e) = dir.get_mut(user, resource) else {
            return;
        };
        if e.node != from || (e.avail.is_none() && avail.is_none()) {
            return;
        }
        e.avail = avail.clone();
        let real = match avail {
            Some(a) => Presence::Available(a),
            None => Presence::Unavailable { note },
        };
        self.inner.node.read(|state| {
            self.fanout_presence(dir, state, user, resource, &real, false);
        });
    }

    /// A peer's link ended (it died, was cut off or shut down): drop its sessions.
    pub(crate) fn peer_lost(&self, node: NodeId, epoch: u64) {
        let mut dir = self.inner.dir.lock();
        if dir.epoch(node) != Some(epoch) {
            return;
        }
        dir.clear_epoch(node);
        let gone = dir.of_node(node);
        tracing::info!(
            peer = node,
            sessions = gone.len(),
            "peer lost: dropping its sessions"
        );
        for (u, r) in gone {
            if let Some(old) = dir.remove(&u, &r) {
                self.session_gone(&mut dir, &u, &r, old, false);
            }
        }
    }

    pub(crate) fn peer_linked(&self, node: NodeId, epoch: u64) {
        let mut dir = self.inner.dir.lock();
        if dir.epoch(node) != Some(epoch) {
            dir.set_epoch(node, epoch);
            tracing::info!(peer = node, "peer linked");
        }
    }

    pub(crate) fn hello(&self) -> PeerEvent {
        let dir = self.inner.dir.lock();
        PeerEvent::Hello {
            sessions: dir.snapshot(self.node_id()),
        }
    }
}
