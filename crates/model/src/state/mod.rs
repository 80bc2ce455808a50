//! The replicated state and its deterministic `apply`.
//!
//! The state lives in memory on every node (reads are local). Its persisted form is
//! a list of key/value records ([`State::record_iter`], streamed into a snapshot and
//! read back by [`State::load`]). A store that keeps records between snapshots can
//! take the records each apply changed ([`State::take_changes`]); one that does not
//! turns that bookkeeping off ([`State::stop_tracking_changes`]).

mod accounts;
mod contacts;
mod invariants;
mod keys;
mod listed;
mod offline;
mod persistence;
mod subscriptions;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::names;
use crate::roster::Roster;
use crate::settings::{Override, Settings};
use crate::{Command, Credentials, Event, Outcome, Refusal, Reply};

use keys::Key;

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
    listed_by: listed::ListedBy,
    /// Records changed since the last `take_changes`.
    dirty: Dirty,
    /// Derived, not persisted: recent roster removals per user (see `roster_changes_since`).
    removals: BTreeMap<String, Removals>,
}

/// The keys of the records changed since they were last taken, unless tracking is off.
#[derive(Debug, Clone, Default)]
struct Dirty {
    keys: BTreeSet<Key>,
    off: bool,
}

impl Dirty {
    fn insert(&mut self, k: Key) {
        if !self.off {
            self.keys.insert(k);
        }
    }

    fn extend(&mut self, ks: impl IntoIterator<Item = Key>) {
        if !self.off {
            self.keys.extend(ks);
        }
    }
}

/// The last few roster removals of one user, and below which version they are no
/// longer all known.
#[derive(Debug, Clone, Default)]
struct Removals {
    /// (version of the removal, bare JID), oldest first.
    recent: std::collections::VecDeque<(u64, String)>,
    /// Removals at or below this version may have been forgotten.
    floor: u64,
}

/// Removals kept per user for `roster_changes_since`.
const REMOVALS_KEPT: usize = 64;

/// What changed in a roster after a version: items to push, JIDs removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterChanges {
    pub version: u64,
    pub changed: Vec<crate::RosterItem>,
    pub removed: Vec<(u64, String)>,
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

    /// The changes to `user`'s roster after version `since`, for a consumer that last
    /// delivered `since` and missed events. `None` when they cannot be told exactly
    /// (removals that old are no longer kept: since a restart, a snapshot install, or
    /// more than a few dozen removals ago); the consumer must then start over.
    pub fn roster_changes_since(&self, user: &str, since: u64) -> Option<RosterChanges> {
        let d = self.users.get(user)?;
        let version = d.roster.version;
        if since >= version {
            return Some(RosterChanges {
                version,
                changed: Vec::new(),
                removed: Vec::new(),
            });
        }
        let floor = self
            .removals
            .get(user)
            .map_or(d.roster.known_since, |r| r.floor.max(d.roster.known_since));
        if since < floor {
            return None;
        }
        let mut changed: Vec<crate::RosterItem> = d
            .roster
            .items
            .values()
            .filter(|i| i.ver > since)
            .cloned()
            .collect();
        changed.sort_by_key(|i| i.ver);
        let removed = self
            .removals
            .get(user)
            .map(|r| {
                r.recent
                    .iter()
                    .filter(|(v, j)| *v > since && !d.roster.items.contains_key(j))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Some(RosterChanges {
            version,
            changed,
            removed,
        })
    }

    pub(super) fn note_removal(&mut self, user: &str, version: u64, jid: &str) {
        let r = self.removals.entry(user.to_string()).or_default();
        r.recent.push_back((version, jid.to_string()));
        while r.recent.len() > REMOVALS_KEPT {
            if let Some((v, _)) = r.recent.pop_front() {
                r.floor = r.floor.max(v);
            }
        }
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
        self.listed_by.of(user)
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
                self.create_account(user, credentials, ev)
            }
            Command::DeleteAccount { user } => self.delete_account(user, ev),
            Command::SetCredentials { user, credentials } => {
                self.set_credentials(user, credentials, ev)
            }
            Command::SetPolicy { user, key, value } => self.set_policy(user, *key, *value, ev),
            Command::AddContacts { entries } => self.add_contacts(entries, ev),
            Command::UpdateItem {
                user,
                contact,
                name,
                groups,
            } => self.update_item(user, contact, name.as_deref(), groups, ev),
            Command::RemoveContact { user, contact } => self.remove_contact(user, contact, ev),
            Command::Subscribe { user, contact } => self.subscribe(user, contact, ev),
            Command::Approve { user, requester } => self.approve(user, requester, ev),
            Command::Unsubscribe { user, contact } => self.unsubscribe(user, contact, ev),
            Command::Revoke { user, watcher } => self.revoke(user, watcher, ev),
            Command::OfflineEnqueue { user, message } => self.offline_enqueue(user, message, ev),
            Command::OfflineAck { user, upto } => self.offline_ack(user, *upto, ev),
            Command::OfflineAckSeqs { user, seqs } => self.offline_ack_seqs(user, seqs, ev),
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
}
