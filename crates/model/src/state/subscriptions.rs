//! Subscriptions: requests, approvals, unsubscribing and revoking (RFC 6121 §3).

use crate::{Event, NoticeKind, Outcome, Refusal, Reply};

use super::{Key, State};

impl State {
    pub(super) fn subscribe(&mut self, user: &str, contact: &str, ev: &mut Vec<Event>) -> Outcome {
        self.require_domain()?;
        self.check_new_contact(user, contact)?;
        if self.users[user]
            .roster
            .items
            .get(contact)
            .is_some_and(|i| i.subscription.sees_contact())
        {
            // RFC 6121 §3.1.3: already approved; the contact's server says so again.
            notice(ev, &self.jid_of(user), contact, NoticeKind::Subscribed);
            return Ok(Reply::Subscription { approved: true });
        }
        self.check_room_to_add(user, contact)?;
        let me = self.jid_of(user);
        let Some(c) = self.local_user(contact).map(str::to_string) else {
            notice(ev, contact, &me, NoticeKind::Subscribe);
            self.edit_item(user, contact, ev, |i| i.ask = true);
            return Ok(Reply::Subscription { approved: false });
        };
        self.check_room_to_watch(&c, &me)?;
        if self.view_without_approval_for(&c) {
            self.edit_item(user, contact, ev, |_| {});
            self.grant(&c, &me, ev)?;
            return Ok(Reply::Subscription { approved: true });
        }
        self.edit_item(user, contact, ev, |i| i.ask = true);
        let theirs = &mut self.users.get_mut(&c).expect("checked above").roster;
        if theirs.pending_in.insert(me.clone()) {
            self.dirty.insert(Key::PendingIn(c.clone(), me.clone()));
            ev.push(Event::SubscriptionRequested { user: c, from: me });
        }
        Ok(Reply::Subscription { approved: false })
    }

    pub(super) fn approve(&mut self, user: &str, requester: &str, ev: &mut Vec<Event>) -> Outcome {
        self.require_domain()?;
        self.existing(user)?;
        if !self.users[user].roster.pending_in.contains(requester) {
            return Err(Refusal::NoPendingRequest(
                user.to_string(),
                requester.to_string(),
            ));
        }
        self.grant(user, requester, ev)?;
        Ok(Reply::Subscription { approved: true })
    }

    pub(super) fn unsubscribe(
        &mut self,
        user: &str,
        contact: &str,
        ev: &mut Vec<Event>,
    ) -> Outcome {
        self.require_domain()?;
        self.existing(user)?;
        let me = self.jid_of(user);
        if let Some(i) = self.users[user].roster.items.get(contact)
            && (i.subscription.sees_contact() || i.ask)
        {
            notice(ev, contact, &me, NoticeKind::Unsubscribe);
        }
        if self.users[user].roster.items.contains_key(contact) {
            self.edit_item(user, contact, ev, |i| {
                i.subscription = i.subscription.without_to();
                i.ask = false;
            });
        }
        if let Some(c) = self.local_user(contact).map(str::to_string)
            && self.users.contains_key(&c)
        {
            self.remove_pending(&c, &me);
            self.drop_direction(&c, &me, ev, |s| s.without_from());
        }
        Ok(Reply::Done)
    }

    pub(super) fn revoke(&mut self, user: &str, watcher: &str, ev: &mut Vec<Event>) -> Outcome {
        self.require_domain()?;
        self.existing(user)?;
        let me = self.jid_of(user);
        let watched = self.users[user]
            .roster
            .items
            .get(watcher)
            .is_some_and(|i| i.subscription.contact_watches());
        if watched || self.users[user].roster.pending_in.contains(watcher) {
            notice(ev, watcher, &me, NoticeKind::Unsubscribed);
        }
        self.remove_pending(user, watcher);
        if self.users[user].roster.items.contains_key(watcher) {
            self.edit_item(user, watcher, ev, |i| {
                i.subscription = i.subscription.without_from()
            });
        }
        if let Some(w) = self.local_user(watcher).map(str::to_string)
            && self
                .users
                .get(&w)
                .is_some_and(|d| d.roster.items.contains_key(&me))
        {
            self.edit_item(&w, &me, ev, |i| {
                i.subscription = i.subscription.without_to();
                i.ask = false;
            });
        }
        Ok(Reply::Done)
    }

    /// `owner` lets `watcher` see them: `from` on the owner's item, `to` on a local
    /// watcher's item; the pending request, if any, is answered.
    pub(super) fn grant(
        &mut self,
        owner: &str,
        watcher: &str,
        ev: &mut Vec<Event>,
    ) -> Result<(), Refusal> {
        let me = self.jid_of(owner);
        let exists = self.users[owner].roster.items.contains_key(watcher);
        let limit = self.settings.max_contact_list_size;
        if !exists && limit.reached_by(self.users[owner].roster.items.len()) {
            return Err(Refusal::ContactListFull(me, limit.to_string()));
        }
        self.check_room_to_watch(owner, watcher)?;
        let watched = self.users[owner]
            .roster
            .items
            .get(watcher)
            .is_some_and(|i| i.subscription.contact_watches());
        if !watched {
            notice(ev, watcher, &me, NoticeKind::Subscribed);
        }
        self.remove_pending(owner, watcher);
        self.edit_item(owner, watcher, ev, |i| {
            i.subscription = i.subscription.with_from()
        });
        if let Some(w) = self.local_user(watcher).map(str::to_string)
            && self.users.contains_key(&w)
        {
            self.edit_item(&w, &me, ev, |i| {
                i.subscription = i.subscription.with_to();
                i.ask = false;
            });
        }
        Ok(())
    }
}

pub(super) fn notice(ev: &mut Vec<Event>, to: &str, from: &str, kind: NoticeKind) {
    ev.push(Event::Notice {
        to: to.to_string(),
        from: from.to_string(),
        kind,
    });
}
