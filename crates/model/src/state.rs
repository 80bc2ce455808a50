//! The replicated state and its deterministic `apply`.
//!
//! The state lives in memory on every node (reads are local) and is persisted as
//! key/value records: after each apply the storage layer takes the changed records
//! ([`State::take_changes`]) and writes them together with the last-applied marker in
//! one atomic batch. A snapshot is the full list of records ([`State::records`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::names;
use crate::roster::{Roster, RosterItem, Subscription};
use crate::settings::{Limit, Override, PolicyKey, Settings};
use crate::{
    Command, Credentials, Event, NewContact, NoticeKind, Outcome, Refusal, RefusedContact, Reply,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub credentials: Credentials,
    pub availability_sharing: Override,
    pub view_without_approval: Override,
}

/// A message stored for a user who was offline when it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineMessage {
    /// Full JID of the sender, as stamped by the server.
    pub from: String,
    /// When the server received it (milliseconds since the Unix epoch, set by the proposer).
    pub stamp_ms: u64,
    /// The message in the router's neutral form; opaque here.
    pub payload: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineQueue {
    pub next_seq: u64,
    pub messages: BTreeMap<u64, OfflineMessage>,
}

/// Everything stored for one local account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserData {
    pub account: Account,
    pub roster: Roster,
    pub offline: OfflineQueue,
}

/// A persisted record's identity. Encoded as bytes with a one-letter prefix and NUL
/// separators (user names and JIDs never contain NUL).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Meta,
    Settings,
    Account(String),
    Version(String),
    Item(String, String),
    PendingIn(String, String),
    OfflineNext(String),
    Offline(String, u64),
}

impl Key {
    fn encode(&self) -> Vec<u8> {
        let join = |p: &str, a: &str, b: &[u8]| {
            let mut v = Vec::with_capacity(p.len() + a.len() + b.len() + 1);
            v.extend_from_slice(p.as_bytes());
            v.extend_from_slice(a.as_bytes());
            if !b.is_empty() {
                v.push(0);
                v.extend_from_slice(b);
            }
            v
        };
        match self {
            Key::Meta => b"m".to_vec(),
            Key::Settings => b"s".to_vec(),
            Key::Account(u) => join("a", u, b""),
            Key::Version(u) => join("v", u, b""),
            Key::Item(u, j) => join("r", u, j.as_bytes()),
            Key::PendingIn(u, j) => join("p", u, j.as_bytes()),
            Key::OfflineNext(u) => join("n", u, b""),
            Key::Offline(u, s) => join("o", u, &s.to_be_bytes()),
        }
    }

    fn decode(b: &[u8]) -> Option<Key> {
        let (&p, rest) = b.split_first()?;
        let two = || -> Option<(String, &[u8])> {
            let at = rest.iter().position(|&c| c == 0)?;
            Some((
                String::from_utf8(rest[..at].to_vec()).ok()?,
                &rest[at + 1..],
            ))
        };
        let one = || String::from_utf8(rest.to_vec()).ok();
        Some(match p {
            b'm' => Key::Meta,
            b's' => Key::Settings,
            b'a' => Key::Account(one()?),
            b'v' => Key::Version(one()?),
            b'n' => Key::OfflineNext(one()?),
            b'r' => {
                let (u, j) = two()?;
                Key::Item(u, String::from_utf8(j.to_vec()).ok()?)
            }
            b'p' => {
                let (u, j) = two()?;
                Key::PendingIn(u, String::from_utf8(j.to_vec()).ok()?)
            }
            b'o' => {
                let (u, s) = two()?;
                Key::Offline(u, u64::from_be_bytes(s.try_into().ok()?))
            }
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    domain: Option<String>,
}

/// The whole durable state of the cluster.
#[derive(Debug, Clone, Default)]
pub struct State {
    meta: Meta,
    settings: Settings,
    users: BTreeMap<String, UserData>,
    /// Derived, not persisted: for each local user, the local users whose roster holds them.
    listed_by: BTreeMap<String, BTreeSet<String>>,
    /// Records changed since the last `take_changes`.
    dirty: BTreeSet<Key>,
}

impl PartialEq for State {
    /// Two states are equal when their persisted records are; `dirty` is bookkeeping.
    fn eq(&self, other: &Self) -> bool {
        self.meta == other.meta
            && self.settings == other.settings
            && self.users == other.users
            && self.listed_by == other.listed_by
    }
}

/// An error while loading persisted records.
#[derive(Debug, thiserror::Error)]
#[error("corrupt state record {key:?}: {reason}")]
pub struct LoadError {
    pub key: String,
    pub reason: String,
}

impl State {
    // ---------------------------------------------------------------- reads

    pub fn domain(&self) -> Option<&str> {
        self.meta.domain.as_deref()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn user(&self, user: &str) -> Option<&UserData> {
        self.users.get(user)
    }

    pub fn users(&self) -> impl Iterator<Item = (&String, &UserData)> {
        self.users.iter()
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Effective availability sharing for `user` (cluster setting unless overridden).
    pub fn sharing_for(&self, user: &str) -> bool {
        let cluster = self.settings.availability_sharing;
        self.users
            .get(user)
            .map_or(cluster, |u| u.account.availability_sharing.resolve(cluster))
    }

    /// Effective approval-free viewing for `user`.
    pub fn view_without_approval_for(&self, user: &str) -> bool {
        let cluster = self.settings.view_without_approval;
        self.users.get(user).map_or(cluster, |u| {
            u.account.view_without_approval.resolve(cluster)
        })
    }

    /// The local user name a bare JID names, if it is in this cluster's domain.
    pub fn local_user<'a>(&self, jid: &'a str) -> Option<&'a str> {
        let (node, domain) = jid.split_once('@')?;
        (Some(domain) == self.meta.domain.as_deref()).then_some(node)
    }

    /// The local users whose roster lists `user` (the reverse of the rosters).
    pub fn listed_by(&self, user: &str) -> impl Iterator<Item = &str> {
        self.listed_by
            .get(user)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// The bare JID of a local user.
    pub fn jid_of(&self, user: &str) -> String {
        format!("{user}@{}", self.meta.domain.as_deref().unwrap_or_default())
    }

    // ---------------------------------------------------------------- apply

    /// Apply one command. Deterministic; never panics on any input. On refusal the
    /// state is unchanged.
    pub fn apply(&mut self, cmd: &Command) -> (Outcome, Vec<Event>) {
        let mut ev = Vec::new();
        let out = self.apply_inner(cmd, &mut ev);
        if out.is_err() {
            debug_assert!(ev.is_empty(), "a refused command must not emit events");
        }
        (out, ev)
    }

    fn apply_inner(&mut self, cmd: &Command, ev: &mut Vec<Event>) -> Outcome {
        match cmd {
            Command::Batch { commands } => {
                let mut outcomes = Vec::with_capacity(commands.len());
                for c in commands {
                    outcomes.push(match c {
                        Command::Batch { .. } => {
                            Err(Refusal::BadValue("batches do not nest".into()))
                        }
                        c => {
                            let mut own = Vec::new();
                            let out = self.apply_inner(c, &mut own);
                            debug_assert!(
                                out.is_ok() || own.is_empty(),
                                "a refused command must not emit events"
                            );
                            ev.extend(own);
                            out
                        }
                    });
                }
                Ok(Reply::Batch { outcomes })
            }
            Command::Init { domain } => {
                names::validate_domain(domain)?;
                match &self.meta.domain {
                    Some(d) if d == domain => Ok(Reply::Done),
                    Some(d) => Err(Refusal::DomainMismatch(d.clone(), domain.clone())),
                    None => {
                        self.meta.domain = Some(domain.clone());
                        self.dirty.insert(Key::Meta);
                        ev.push(Event::Initialized {
                            domain: domain.clone(),
                        });
                        Ok(Reply::Done)
                    }
                }
            }
            Command::SetSetting { key, value } => {
                let (key, value) = self.settings.set(key, value)?;
                self.setting_changed(key, value.to_string(), ev)
            }
            Command::ResetSetting { key } => {
                let (key, value) = self.settings.reset(key)?;
                self.setting_changed(key, value.to_string(), ev)
            }
            Command::CreateAccount { user, credentials } => {
                self.require_domain()?;
                names::validate_user(user)?;
                if self.users.contains_key(user) {
                    return Err(Refusal::UserExists(user.clone()));
                }
                let account = Account {
                    credentials: credentials.clone(),
                    availability_sharing: Override::Inherit,
                    view_without_approval: Override::Inherit,
                };
                self.users.insert(
                    user.clone(),
                    UserData {
                        account,
                        roster: Roster::default(),
                        offline: OfflineQueue::default(),
                    },
                );
                self.dirty.extend([
                    Key::Account(user.clone()),
                    Key::Version(user.clone()),
                    Key::OfflineNext(user.clone()),
                ]);
                ev.push(Event::AccountCreated { user: user.clone() });
                Ok(Reply::Done)
            }
            Command::DeleteAccount { user } => self.delete_account(user, ev),
            Command::SetCredentials { user, credentials } => {
                self.existing(user)?.account.credentials = credentials.clone();
                self.dirty.insert(Key::Account(user.clone()));
                ev.push(Event::CredentialsChanged { user: user.clone() });
                Ok(Reply::Done)
            }
            Command::SetPolicy { user, key, value } => {
                let acct = &mut self.existing(user)?.account;
                match key {
                    PolicyKey::AvailabilitySharing => acct.availability_sharing = *value,
                    PolicyKey::ViewWithoutApproval => acct.view_without_approval = *value,
                }
                self.dirty.insert(Key::Account(user.clone()));
                ev.push(Event::PolicyChanged {
                    user: user.clone(),
                    key: *key,
                    value: *value,
                });
                Ok(Reply::Done)
            }
            Command::AddContacts { entries } => {
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
            Command::UpdateItem {
                user,
                contact,
                name,
                groups,
            } => {
                self.require_domain()?;
                let (name, groups) = names::validate_item_labels(name.as_deref(), groups)?;
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
            Command::RemoveContact { user, contact } => {
                self.existing(user)?;
                if !self.users[user].roster.items.contains_key(contact) {
                    return Err(Refusal::NotInRoster(contact.clone(), user.clone()));
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
            Command::Subscribe { user, contact } => self.subscribe(user, contact, ev),
            Command::Approve { user, requester } => {
                self.require_domain()?;
                self.existing(user)?;
                if !self.users[user].roster.pending_in.contains(requester) {
                    return Err(Refusal::NoPendingRequest(user.clone(), requester.clone()));
                }
                self.grant(user, requester, ev)?;
                Ok(Reply::Subscription { approved: true })
            }
            Command::Unsubscribe { user, contact } => {
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
            Command::Revoke { user, watcher } => {
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
            Command::OfflineEnqueue { user, message } => {
                if self.settings.suppress_offline_im {
                    return Err(Refusal::OfflineSuppressed);
                }
                let cap = self.settings.offline_queue_max_per_user;
                let q = &mut self.existing(user)?.offline;
                if q.messages.len() >= cap as usize {
                    return Err(Refusal::OfflineQueueFull(user.clone(), cap));
                }
                let seq = q.next_seq;
                q.next_seq = q.next_seq.saturating_add(1);
                q.messages.insert(seq, message.clone());
                self.dirty.insert(Key::Offline(user.clone(), seq));
                self.dirty.insert(Key::OfflineNext(user.clone()));
                ev.push(Event::OfflineQueued {
                    user: user.clone(),
                    seq,
                });
                Ok(Reply::Queued { seq })
            }
            Command::OfflineAck { user, upto } => {
                let q = &mut self.existing(user)?.offline;
                let gone: Vec<u64> = q.messages.range(..=upto).map(|(s, _)| *s).collect();
                for s in &gone {
                    q.messages.remove(s);
                }
                self.dirty
                    .extend(gone.iter().map(|s| Key::Offline(user.clone(), *s)));
                if !gone.is_empty() {
                    ev.push(Event::OfflineAcked {
                        user: user.clone(),
                        upto: *upto,
                    });
                }
                Ok(Reply::Done)
            }
            Command::OfflineAckSeqs { user, seqs } => {
                let q = &mut self.existing(user)?.offline;
                let gone: Vec<u64> = seqs
                    .iter()
                    .copied()
                    .filter(|s| q.messages.remove(s).is_some())
                    .collect();
                self.dirty
                    .extend(gone.iter().map(|s| Key::Offline(user.clone(), *s)));
                if let Some(&upto) = gone.iter().max() {
                    ev.push(Event::OfflineAcked {
                        user: user.clone(),
                        upto,
                    });
                }
                Ok(Reply::Done)
            }
        }
    }

    fn setting_changed(&mut self, key: &str, value: String, ev: &mut Vec<Event>) -> Outcome {
        self.dirty.insert(Key::Settings);
        ev.push(Event::SettingChanged {
            key: key.to_string(),
            value: value.clone(),
        });
        Ok(Reply::Setting {
            key: key.to_string(),
            value,
        })
    }

    fn require_domain(&self) -> Result<&str, Refusal> {
        self.meta.domain.as_deref().ok_or(Refusal::NotInitialized)
    }

    fn existing(&mut self, user: &str) -> Result<&mut UserData, Refusal> {
        self.users
            .get_mut(user)
            .ok_or_else(|| Refusal::UnknownUser(user.to_string()))
    }

    /// Validate a (user, contact) pair for adding: the user exists, the contact is a
    /// well-formed bare JID other than the user, and a local contact has an account.
    fn check_new_contact(&self, user: &str, contact: &str) -> Result<(), Refusal> {
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
    fn check_room_to_add(&self, user: &str, contact: &str) -> Result<(), Refusal> {
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
    fn check_room_to_watch(&self, owner: &str, watcher: &str) -> Result<(), Refusal> {
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

    fn add_contact(&mut self, e: &NewContact, ev: &mut Vec<Event>) -> Result<(), Refusal> {
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

    fn subscribe(&mut self, user: &str, contact: &str, ev: &mut Vec<Event>) -> Outcome {
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

    /// `owner` lets `watcher` see them: `from` on the owner's item, `to` on a local
    /// watcher's item; the pending request, if any, is answered.
    fn grant(&mut self, owner: &str, watcher: &str, ev: &mut Vec<Event>) -> Result<(), Refusal> {
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

    /// Weaken `user`'s item for `jid` with `f`; drop it when nothing the user chose is left.
    fn drop_direction(
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

    fn remove_pending(&mut self, user: &str, jid: &str) {
        if let Some(u) = self.users.get_mut(user)
            && u.roster.pending_in.remove(jid)
        {
            self.dirty
                .insert(Key::PendingIn(user.to_string(), jid.to_string()));
        }
    }

    /// Create or modify `user`'s item for `jid`; bumps the roster version and emits an
    /// event only when something changed.
    fn edit_item(
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
        u.roster.items.insert(jid.to_string(), item.clone());
        if before.is_none()
            && let Some(c) = self.local_user(jid).map(str::to_string)
        {
            self.listed_by
                .entry(c)
                .or_default()
                .insert(user.to_string());
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

    fn remove_item(&mut self, user: &str, jid: &str, ev: &mut Vec<Event>) {
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        if u.roster.items.remove(jid).is_none() {
            return;
        }
        u.roster.version = u.roster.version.saturating_add(1);
        let version = u.roster.version;
        if let Some(c) = self.local_user(jid).map(str::to_string)
            && let Some(set) = self.listed_by.get_mut(&c)
        {
            set.remove(user);
            if set.is_empty() {
                self.listed_by.remove(&c);
            }
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

    fn delete_account(&mut self, user: &str, ev: &mut Vec<Event>) -> Outcome {
        self.existing(user)?;
        let me = self.jid_of(user);
        // Out of every roster that lists the user, and their requests out of others' inboxes.
        let owners: Vec<String> = self
            .listed_by
            .get(user)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for o in owners {
            self.remove_item(&o, &me, ev);
        }
        let contacts: Vec<String> = self.users[user].roster.items.keys().cloned().collect();
        for c in &contacts {
            if let Some(c) = self.local_user(c).map(str::to_string) {
                self.remove_pending(&c, &me);
            }
            self.remove_item(user, c, ev);
        }
        let data = self.users.remove(user).expect("checked above");
        for j in data.roster.pending_in {
            self.dirty.insert(Key::PendingIn(user.to_string(), j));
        }
        for s in data.offline.messages.keys() {
            self.dirty.insert(Key::Offline(user.to_string(), *s));
        }
        for k in [
            Key::Account(user.into()),
            Key::Version(user.into()),
            Key::OfflineNext(user.into()),
        ] {
            self.dirty.insert(k);
        }
        self.listed_by.remove(user);
        ev.push(Event::AccountDeleted {
            user: user.to_string(),
        });
        Ok(Reply::Done)
    }

    // ---------------------------------------------------------------- persistence

    fn value_of(&self, key: &Key) -> Option<Vec<u8>> {
        match key {
            Key::Meta => Some(json(&self.meta)),
            Key::Settings => Some(json(&self.settings)),
            Key::Account(u) => self.users.get(u).map(|d| json(&d.account)),
            Key::Version(u) => self.users.get(u).map(|d| json(&d.roster.version)),
            Key::Item(u, j) => self
                .users
                .get(u)
                .and_then(|d| d.roster.items.get(j))
                .map(json),
            Key::PendingIn(u, j) => self
                .users
                .get(u)
                .filter(|d| d.roster.pending_in.contains(j))
                .map(|_| b"1".to_vec()),
            Key::OfflineNext(u) => self.users.get(u).map(|d| json(&d.offline.next_seq)),
            Key::Offline(u, s) => self
                .users
                .get(u)
                .and_then(|d| d.offline.messages.get(s))
                .map(json),
        }
    }

    /// The records changed since the last call: `(key, Some(value))` to write,
    /// `(key, None)` to delete.
    pub fn take_changes(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .map(|k| (k.encode(), self.value_of(&k)))
            .collect()
    }

    /// Every record of the state, in key order: the snapshot format.
    pub fn records(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut keys = vec![Key::Meta, Key::Settings];
        for (u, d) in &self.users {
            keys.push(Key::Account(u.clone()));
            keys.push(Key::Version(u.clone()));
            keys.extend(
                d.roster
                    .items
                    .keys()
                    .map(|j| Key::Item(u.clone(), j.clone())),
            );
            keys.extend(
                d.roster
                    .pending_in
                    .iter()
                    .map(|j| Key::PendingIn(u.clone(), j.clone())),
            );
            keys.push(Key::OfflineNext(u.clone()));
            keys.extend(
                d.offline
                    .messages
                    .keys()
                    .map(|s| Key::Offline(u.clone(), *s)),
            );
        }
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = keys
            .iter()
            .filter_map(|k| self.value_of(k).map(|v| (k.encode(), v)))
            .collect();
        out.sort();
        out
    }

    /// Rebuild a state from records (as written by `take_changes` or `records`).
    pub fn load<I: IntoIterator<Item = (Vec<u8>, Vec<u8>)>>(
        records: I,
    ) -> Result<State, LoadError> {
        let mut s = State::default();
        let mut accounts = BTreeMap::new();
        let mut rest = Vec::new();
        for (k, v) in records {
            let bad = |reason: String| LoadError {
                key: String::from_utf8_lossy(&k).into_owned(),
                reason,
            };
            let key = Key::decode(&k).ok_or_else(|| bad("unknown key".into()))?;
            let de = |reason: serde_json::Error| bad(reason.to_string());
            match key {
                Key::Meta => s.meta = record(&v).map_err(de)?,
                Key::Settings => s.settings = record(&v).map_err(de)?,
                Key::Account(u) => {
                    accounts.insert(u, record::<Account>(&v).map_err(de)?);
                }
                other => rest.push((other, v, String::from_utf8_lossy(&k).into_owned())),
            }
        }
        for (u, account) in accounts {
            s.users.insert(
                u,
                UserData {
                    account,
                    roster: Roster::default(),
                    offline: OfflineQueue::default(),
                },
            );
        }
        for (key, v, raw) in rest {
            let bad = |reason: String| LoadError {
                key: raw.clone(),
                reason,
            };
            let orphan = || bad("record of an unknown account".into());
            let de = |e: serde_json::Error| bad(e.to_string());
            match key {
                Key::Version(u) => {
                    s.users.get_mut(&u).ok_or_else(orphan)?.roster.version =
                        record(&v).map_err(de)?
                }
                Key::Item(u, j) => {
                    let item: RosterItem = record(&v).map_err(de)?;
                    s.users
                        .get_mut(&u)
                        .ok_or_else(orphan)?
                        .roster
                        .items
                        .insert(j, item);
                }
                Key::PendingIn(u, j) => {
                    s.users
                        .get_mut(&u)
                        .ok_or_else(orphan)?
                        .roster
                        .pending_in
                        .insert(j);
                }
                Key::OfflineNext(u) => {
                    s.users.get_mut(&u).ok_or_else(orphan)?.offline.next_seq =
                        record(&v).map_err(de)?
                }
                Key::Offline(u, seq) => {
                    let m: OfflineMessage = record(&v).map_err(de)?;
                    s.users
                        .get_mut(&u)
                        .ok_or_else(orphan)?
                        .offline
                        .messages
                        .insert(seq, m);
                }
                Key::Meta | Key::Settings | Key::Account(_) => {}
            }
        }
        s.rebuild_index();
        Ok(s)
    }

    fn rebuild_index(&mut self) {
        let mut idx: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (owner, d) in &self.users {
            for jid in d.roster.items.keys() {
                if let Some(c) = self.local_user(jid) {
                    idx.entry(c.to_string()).or_default().insert(owner.clone());
                }
            }
        }
        self.listed_by = idx;
    }

    /// Check the invariants that `apply` must keep. Used by tests and after loading.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (u, d) in &self.users {
            for (j, item) in &d.roster.items {
                if item.jid != *j {
                    return Err(format!("{u}: item key {j} holds {}", item.jid));
                }
                if let Some(c) = self.local_user(j)
                    && !self.users.contains_key(c)
                {
                    return Err(format!("{u}: lists deleted account {j}"));
                }
            }
        }
        let mut copy = self.clone();
        copy.rebuild_index();
        if copy.listed_by != self.listed_by {
            return Err("reverse index out of date".into());
        }
        Ok(())
    }
}

/// A record's value: serializing these plain data types cannot fail.
/// The format tag this release writes in front of every state record. Records of
/// the first release have none (they start with JSON's own first byte, never 2).
pub const RECORD_FORMAT: u8 = 2;

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![RECORD_FORMAT];
    serde_json::to_writer(&mut out, v).expect("serializable");
    out
}

/// Decode a state record of this release or the previous one. New optional fields
/// of a record carry `#[serde(default)]`; unknown fields are ignored.
fn record<'a, T: Deserialize<'a>>(v: &'a [u8]) -> Result<T, serde_json::Error> {
    match v.first() {
        Some(&RECORD_FORMAT) => serde_json::from_slice(&v[1..]),
        Some(&f) if f < b' ' => Err(serde::de::Error::custom(format!(
            "record format {f} is newer than this node reads"
        ))),
        _ => serde_json::from_slice(v),
    }
}

fn notice(ev: &mut Vec<Event>, to: &str, from: &str, kind: NoticeKind) {
    ev.push(Event::Notice {
        to: to.to_string(),
        from: from.to_string(),
        kind,
    });
}
