//! Roster items: adding, editing and removing contacts, and the limit checks that
//! guard them.

use crate::names;
use crate::roster::{RosterItem, Subscription};
use crate::settings::Limit;
use crate::{Event, NewContact, NoticeKind, Outcome, Refusal, RefusedContact, Reply};

use super::subscriptions::notice;
use super::{Key, State};

impl State {
    pub(super) fn add_contacts(&mut self, entries: &[NewContact], ev: &mut Vec<Event>) -> Outcome {
        self.require_domain()?;
        let mut added = Vec::new();
        let mut refused = Vec::new();
        for e in entries {
            match self.add_contact(e, ev) {
                Ok(()) => added.push((e.user.clone(), e.contact.clone())),
                Err(reason) => refused.push(RefusedContact {
                    user: e.user.clone(),
                    contact: e.contact.clone(),
                    reason,
                }),
            }
        }
        Ok(Reply::Contacts { added, refused })
    }

    pub(super) fn update_item(
        &mut self,
        user: &str,
        contact: &str,
        name: Option<&str>,
        groups: &[String],
        ev: &mut Vec<Event>,
    ) -> Outcome {
        self.require_domain()?;
        let (name, groups) = names::validate_item_labels(name, groups)?;
        self.check_new_contact(user, contact)?;
        let exists = self.users[user].roster.items.contains_key(contact);
        if !exists {
            self.check_room_to_add(user, contact)?;
        }
        self.edit_item(user, contact, ev, |item| {
            item.name = name;
            item.groups = groups;
        });
        Ok(Reply::Done)
    }

    pub(super) fn remove_contact(
        &mut self,
        user: &str,
        contact: &str,
        ev: &mut Vec<Event>,
    ) -> Outcome {
        self.existing(user)?;
        if !self.users[user].roster.items.contains_key(contact) {
            return Err(Refusal::NotInRoster(contact.to_string(), user.to_string()));
        }
        let me = self.jid_of(user);
        let item = self.users[user].roster.items[contact].clone();
        let pending_in = self.users[user].roster.pending_in.contains(contact);
        // RFC 6121 §2.5.2: the contact learns both directions ended.
        if item.subscription.sees_contact() || item.ask {
            notice(ev, contact, &me, NoticeKind::Unsubscribe);
        }
        if item.subscription.contact_watches() || pending_in {
            notice(ev, contact, &me, NoticeKind::Unsubscribed);
        }
        self.remove_item(user, contact, ev);
        self.remove_pending(user, contact);
        if let Some(c) = self.local_user(contact).map(str::to_string)
            && self.users.contains_key(&c)
        {
            self.remove_pending(&c, &me);
            self.drop_direction(&c, &me, ev, |s| s.without_from().without_to());
        }
        Ok(Reply::Done)
    }

    /// Validate a (user, contact) pair for adding: the user exists, the contact is a
    /// well-formed bare JID other than the user, and a local contact has an account.
    pub(super) fn check_new_contact(&self, user: &str, contact: &str) -> Result<(), Refusal> {
        if !self.users.contains_key(user) {
            return Err(Refusal::UnknownUser(user.to_string()));
        }
        names::validate_bare_jid(contact)?;
        if contact == self.jid_of(user) {
            return Err(Refusal::SelfContact);
        }
        if let Some(c) = self.local_user(contact)
            && !self.users.contains_key(c)
        {
            return Err(Refusal::UnknownContact(contact.to_string()));
        }
        Ok(())
    }

    /// The contact-list limit for a new item `contact` in `user`'s roster: the user must
    /// have room, and a local contact must have room for the reciprocal item (a user at
    /// the limit can add no one, and no one can add them).
    pub(super) fn check_room_to_add(&self, user: &str, contact: &str) -> Result<(), Refusal> {
        let limit = self.settings.max_contact_list_size;
        let me = self.jid_of(user);
        if !self.users[user].roster.items.contains_key(contact)
            && limit.reached_by(self.users[user].roster.items.len())
        {
            return Err(Refusal::ContactListFull(me, limit.to_string()));
        }
        if let Some(c) = self.local_user(contact) {
            let theirs = &self.users[c].roster;
            if !theirs.items.contains_key(&me) && limit.reached_by(theirs.items.len()) {
                return Err(Refusal::ContactListFull(
                    contact.to_string(),
                    limit.to_string(),
                ));
            }
        }
        Ok(())
    }

    /// The watcher limit for `watcher` starting to see local user `owner`.
    pub(super) fn check_room_to_watch(&self, owner: &str, watcher: &str) -> Result<(), Refusal> {
        let limit: Limit = self.settings.max_watchers;
        let r = &self.users[owner].roster;
        let already = r
            .items
            .get(watcher)
            .is_some_and(|i| i.subscription.contact_watches());
        if !already && limit.reached_by(r.watcher_count()) {
            return Err(Refusal::WatchersFull(self.jid_of(owner), limit.to_string()));
        }
        Ok(())
    }

    pub(super) fn add_contact(
        &mut self,
        e: &NewContact,
        ev: &mut Vec<Event>,
    ) -> Result<(), Refusal> {
        let (name, groups) = names::validate_item_labels(e.name.as_deref(), &e.groups)?;
        self.check_new_contact(&e.user, &e.contact)?;
        self.check_room_to_add(&e.user, &e.contact)?;
        let me = self.jid_of(&e.user);
        let local = self.local_user(&e.contact).map(str::to_string);
        if let Some(c) = &local {
            self.check_room_to_watch(c, &me)?;
        }
        let apply_labels = |i: &mut RosterItem| {
            if name.is_some() {
                i.name = name.clone();
            }
            if !groups.is_empty() {
                i.groups = groups.clone();
            }
        };
        match &local {
            Some(c) => {
                let saw = self.users[&e.user]
                    .roster
                    .items
                    .get(&e.contact)
                    .is_some_and(|i| i.subscription.sees_contact());
                if !saw {
                    notice(ev, &me, &e.contact, NoticeKind::Subscribed);
                }
                self.edit_item(&e.user, &e.contact, ev, |i| {
                    apply_labels(i);
                    i.subscription = i.subscription.with_to();
                    i.ask = false;
                });
                self.remove_pending(c, &me);
                self.edit_item(c, &me, ev, |i| i.subscription = i.subscription.with_from());
            }
            None => {
                // A contact in another domain must approve through federation: the
                // request stays pending out until it answers.
                if !self.users[&e.user]
                    .roster
                    .items
                    .get(&e.contact)
                    .is_some_and(|i| i.subscription.sees_contact())
                {
                    notice(ev, &e.contact, &me, NoticeKind::Subscribe);
                }
                self.edit_item(&e.user, &e.contact, ev, |i| {
                    apply_labels(i);
                    if !i.subscription.sees_contact() {
                        i.ask = true;
                    }
                });
            }
        }
        Ok(())
    }

    /// Weaken `user`'s item for `jid` with `f`; drop it when nothing the user chose is left.
    pub(super) fn drop_direction(
        &mut self,
        user: &str,
        jid: &str,
        ev: &mut Vec<Event>,
        f: impl Fn(Subscription) -> Subscription,
    ) {
        let Some(item) = self.users.get(user).and_then(|u| u.roster.items.get(jid)) else {
            return;
        };
        let mut next = item.clone();
        next.subscription = f(next.subscription);
        if next.is_bare() {
            self.remove_item(user, jid, ev);
        } else if next != *item {
            self.edit_item(user, jid, ev, |i| *i = next.clone());
        }
    }

    pub(super) fn remove_pending(&mut self, user: &str, jid: &str) {
        if let Some(u) = self.users.get_mut(user)
            && u.roster.pending_in.remove(jid)
        {
            self.dirty
                .insert(Key::PendingIn(user.to_string(), jid.to_string()));
        }
    }

    /// Create or modify `user`'s item for `jid`; bumps the roster version and emits an
    /// event only when something changed.
    pub(super) fn edit_item(
        &mut self,
        user: &str,
        jid: &str,
        ev: &mut Vec<Event>,
        f: impl FnOnce(&mut RosterItem),
    ) {
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        let before = u.roster.items.get(jid).cloned();
        let mut item = before.clone().unwrap_or_else(|| RosterItem::new(jid));
        f(&mut item);
        if before.as_ref() == Some(&item) {
            return;
        }
        u.roster.version = u.roster.version.saturating_add(1);
        let version = u.roster.version;
        item.ver = version;
        u.roster.items.insert(item.clone());
        if before.is_none()
            && let Some(c) = self.local_user(jid).map(str::to_string)
        {
            self.listed_by.insert(&c, user);
        }
        self.dirty
            .insert(Key::Item(user.to_string(), jid.to_string()));
        self.dirty.insert(Key::Version(user.to_string()));
        ev.push(Event::RosterItemChanged {
            user: user.to_string(),
            item,
            version,
        });
    }

    pub(super) fn remove_item(&mut self, user: &str, jid: &str, ev: &mut Vec<Event>) {
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        if u.roster.items.remove(jid).is_none() {
            return;
        }
        u.roster.version = u.roster.version.saturating_add(1);
        let version = u.roster.version;
        self.note_removal(user, version, jid);
        if let Some(c) = self.local_user(jid).map(str::to_string) {
            self.listed_by.remove(&c, user);
        }
        self.dirty
            .insert(Key::Item(user.to_string(), jid.to_string()));
        self.dirty.insert(Key::Version(user.to_string()));
        ev.push(Event::RosterItemRemoved {
            user: user.to_string(),
            jid: jid.to_string(),
            version,
        });
    }
}
