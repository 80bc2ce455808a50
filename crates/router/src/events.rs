//! Reacting to the applied Raft log: every node turns the durable changes into what
//! its own sessions must see (roster pushes, subscription requests, presence that
//! became visible or invisible, offline messages that arrived while a login raced).

use presenced_model::{Event, NoticeKind, PolicyKey};
use tokio::sync::broadcast::error::RecvError;

use crate::directory::{Entry, Local};
use presenced_policy::{Context, Seen, visibility};

use crate::{Delivery, Router, SubscriptionKind, View};

pub(crate) fn spawn(router: Router) {
    let mut rx = router.inner.node.subscribe();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(ev) => router.on_cluster_event(ev),
                Err(RecvError::Lagged(n)) => {
                    // Missed events: recompute from the replicated state what the
                    // sessions here must see, and push the difference.
                    tracing::warn!(
                        missed = n,
                        "router fell behind the cluster events: resynchronising"
                    );
                    router.resync("lagged");
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}

impl Router {
    pub(crate) fn on_cluster_event(&self, ev: Event) {
        match ev {
            Event::SettingChanged { key, .. } if key == "presence.availability_sharing" => {
                self.refresh_visibility(None)
            }
            Event::PolicyChanged {
                user,
                key: PolicyKey::AvailabilitySharing,
                ..
            } => self.refresh_visibility(Some(&user)),
            Event::StateReplaced => self.resync("state_replaced"),
            Event::RosterItemChanged {
                user,
                item,
                version,
            } => {
                let jid = item.jid.clone();
                // A pending request never showed the contact: nothing to take back.
                let pending = !item.subscription.sees_contact() && item.ask;
                self.roster_push(&user, &jid, Some(Box::new(item)), version);
                if !pending {
                    self.contact_view_changed(&user, &jid);
                }
            }
            Event::RosterItemRemoved { user, jid, version } => {
                self.roster_push(&user, &jid, None, version);
                self.contact_view_changed(&user, &jid);
            }
            Event::SubscriptionRequested { user, from } => {
                self.notify(&user, &from, SubscriptionKind::Subscribe);
            }
            Event::Notice { to, from, kind } => {
                let kind = match kind {
                    NoticeKind::Subscribe => SubscriptionKind::Subscribe,
                    NoticeKind::Subscribed => SubscriptionKind::Subscribed,
                    NoticeKind::Unsubscribe => SubscriptionKind::Unsubscribe,
                    NoticeKind::Unsubscribed => SubscriptionKind::Unsubscribed,
                };
                match self.read(|s| s.local_user(&to).map(str::to_string)) {
                    Some(user) => self.notify(&user, &from, kind),
                    // Every node applies the log; the leader alone hands a notice to
                    // another domain, so it leaves once.
                    None if self.inner.node.is_leader() => self.notice_out(&from, &to),
                    None => {}
                }
            }
            Event::OfflineQueued { user, .. } => self.offline_arrived(user),
            Event::AccountDeleted { user } => {
                self.to_local(
                    &user,
                    |_, _| true,
                    || Delivery::Close {
                        reason: "the account was removed".into(),
                    },
                );
            }
            _ => {}
        }
    }

    /// Offline messages wait for `user` (stored while a login of the user raced them):
    /// the node holding the user's first available session (in a cluster-wide order)
    /// delivers them.
    pub(crate) fn offline_arrived(&self, user: String) {
        {
            {
                let target = {
                    let dir = self.inner.dir.lock();
                    dir.sessions(&user).and_then(|m| {
                        m.iter()
                            .filter(|(_, e)| e.avail.as_ref().is_some_and(|a| a.preference >= 0))
                            .min_by_key(|(r, e)| (e.node, (*r).clone()))
                            .filter(|(_, e)| e.local.is_some())
                            .map(|(r, _)| r.clone())
                    })
                };
                if let Some(res) = target {
                    let r = self.clone();
                    tokio::spawn(async move { r.flush_offline(&user, &res).await });
                }
            }
        }
    }

    /// Push a roster change to `user`'s local sessions that asked for the roster, and
    /// note the version each was given.
    pub(crate) fn roster_push(
        &self,
        user: &str,
        jid: &str,
        item: Option<Box<presenced_model::RosterItem>>,
        version: u64,
    ) {
        let mut dir = self.inner.dir.lock();
        let Some(m) = dir.sessions(user) else { return };
        let targets: Vec<(String, u64)> = m
            .local()
            .filter(|(_, _, l)| l.roster && l.roster_ver < version)
            .map(|(r, e, _)| (r.clone(), e.sid))
            .collect();
        for (r, sid) in targets {
            if let Some(l) = dir.local_mut(user, &r, sid) {
                l.roster_ver = version;
                let d = Delivery::RosterPush {
                    jid: jid.to_string(),
                    item: item.clone(),
                    version,
                };
                let l = &*l;
                self.send_local(user, &r, sid, l, d);
            }
        }
    }

    /// Hand a delivery to each of `user`'s sessions on this node that `pick` selects.
    pub(crate) fn to_local(
        &self,
        user: &str,
        pick: impl Fn(&Entry, &Local) -> bool,
        make: impl Fn() -> Delivery,
    ) {
        let dir = self.inner.dir.lock();
        for (r, e, l) in dir.sessions(user).into_iter().flat_map(|m| m.local()) {
            if pick(e, l) {
                self.send_local(user, r, e.sid, l, make());
            }
        }
    }

    /// A subscription notice for `user`'s available sessions here (RFC 6121 §3:
    /// inbound subscription stanzas go to every available resource).
    pub(crate) fn notify(&self, user: &str, from: &str, kind: SubscriptionKind) {
        let from = self.addr_of_jid(from);
        self.to_local(
            user,
            |e, _| e.avail.is_some(),
            || Delivery::Subscription {
                from: from.clone(),
                kind,
            },
        );
    }

    /// `user`'s item for `jid` changed: show the contact's sessions to the user's
    /// local available sessions as policy now decides, or take them back.
    pub(crate) fn contact_view_changed(&self, user: &str, jid: &str) {
        let Some(contact) = self.read(|s| s.local_user(jid).map(str::to_string)) else {
            return;
        };
        let dir = self.inner.dir.lock();
        let Some(mine) = dir.sessions(user) else {
            return;
        };
        self.inner.node.read(|state| {
            let seen = visibility(state, &contact, &state.jid_of(user), Context::default());
            let view = if seen == Seen::Nothing {
                View::Retract
            } else {
                View::Initial
            };
            for (vr, _, _) in mine.local_available() {
                self.show_owner_to(&dir, &contact, seen, user, vr, view);
            }
        });
    }
}
