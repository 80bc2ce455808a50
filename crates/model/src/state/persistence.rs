//! Persistence: the changed records after an apply, the full record list of a
//! snapshot, loading from records, and the record value encoding.

use serde::{Deserialize, Serialize};

use crate::roster::{Roster, RosterItem};

use super::{Account, Key, LoadError, OfflineMessage, OfflineQueue, State, UserData};

impl State {
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
        let dirty = std::mem::take(&mut self.dirty.keys);
        dirty
            .into_iter()
            .map(|k| (k.encode(), self.value_of(&k)))
            .collect()
    }

    /// Stop recording which records change (for a store that persists the state only
    /// in snapshots): `take_changes` then returns nothing.
    pub fn stop_tracking_changes(&mut self) {
        self.dirty.keys.clear();
        self.dirty.off = true;
    }

    /// Every record of the state, in key order: the snapshot format.
    pub fn records(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.record_iter().collect()
    }

    /// Every record of the state in key order, produced one at a time (a snapshot of
    /// millions of records is written without a second copy of them in memory).
    /// Keys start with their kind's letter (`keys.rs`), so the order is: accounts,
    /// meta, offline counters, offline messages, pending requests, roster items,
    /// settings, roster versions; within a kind, users in name order (a shorter name
    /// sorts first, as its key's 0 separator sorts below any name byte).
    pub fn record_iter(&self) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
        let users = || self.users.iter();
        let accounts = users().map(|(u, _)| Key::Account(u.clone()));
        let counters = users().map(|(u, _)| Key::OfflineNext(u.clone()));
        let offline = users().flat_map(|(u, d)| {
            d.offline
                .messages
                .keys()
                .map(move |s| Key::Offline(u.clone(), *s))
        });
        let pending = users().flat_map(|(u, d)| {
            d.roster
                .pending_in
                .iter()
                .map(move |j| Key::PendingIn(u.clone(), j.clone()))
        });
        let items = users().flat_map(|(u, d)| {
            d.roster
                .items
                .keys()
                .map(move |j| Key::Item(u.clone(), j.to_string()))
        });
        let versions = users().map(|(u, _)| Key::Version(u.clone()));
        accounts
            .chain(std::iter::once(Key::Meta))
            .chain(counters)
            .chain(offline)
            .chain(pending)
            .chain(items)
            .chain(std::iter::once(Key::Settings))
            .chain(versions)
            .filter_map(|k| self.value_of(&k).map(|v| (k.encode(), v)))
    }

    /// Rebuild a state from records (as written by `take_changes` or `records`).
    /// Streams: in key order (as a store or a snapshot yields them) every account
    /// comes before its other records, which are placed at once; records met before
    /// their account wait until the end.
    pub fn load<I: IntoIterator<Item = (Vec<u8>, Vec<u8>)>>(
        records: I,
    ) -> Result<State, LoadError> {
        let mut s = State::default();
        let mut early = Vec::new();
        for (k, v) in records {
            let raw = || String::from_utf8_lossy(&k).into_owned();
            let key = Key::decode(&k).ok_or_else(|| LoadError {
                key: raw(),
                reason: "unknown key".into(),
            })?;
            let de = |e: serde_json::Error| LoadError {
                key: raw(),
                reason: e.to_string(),
            };
            match key {
                Key::Meta => s.meta = record(&v).map_err(de)?,
                Key::Settings => s.settings = record(&v).map_err(de)?,
                Key::Account(u) => {
                    let account: Account = record(&v).map_err(de)?;
                    match s.users.get_mut(&u) {
                        Some(d) => d.account = account,
                        None => {
                            s.users.insert(
                                u,
                                UserData {
                                    account,
                                    roster: Roster::default(),
                                    offline: OfflineQueue::default(),
                                },
                            );
                        }
                    }
                }
                other if s.users.contains_key(other.user().unwrap_or_default()) => {
                    s.place(other, &v, raw)?;
                }
                other => early.push((other, v, raw())),
            }
        }
        for (key, v, raw) in early {
            let raw = || raw.clone();
            s.place(key, &v, raw)?;
        }
        for d in s.users.values_mut() {
            d.roster.known_since = d.roster.version;
        }
        s.rebuild_index();
        Ok(s)
    }

    /// Put one per-user record (not an account) into its user's data.
    fn place(&mut self, key: Key, v: &[u8], raw: impl Fn() -> String) -> Result<(), LoadError> {
        let bad = |reason: String| LoadError { key: raw(), reason };
        let orphan = || bad("record of an unknown account".into());
        let de = |e: serde_json::Error| bad(e.to_string());
        let user = key.user().unwrap_or_default().to_string();
        let d = self.users.get_mut(&user).ok_or_else(orphan)?;
        match key {
            Key::Version(_) => d.roster.version = record(v).map_err(de)?,
            Key::Item(_, j) => {
                let mut item: RosterItem = record(v).map_err(de)?;
                item.jid = j;
                d.roster.items.insert(item);
            }
            Key::PendingIn(_, j) => {
                d.roster.pending_in.insert(j);
            }
            Key::OfflineNext(_) => d.offline.next_seq = record(v).map_err(de)?,
            Key::Offline(_, seq) => {
                let m: OfflineMessage = record(v).map_err(de)?;
                d.offline.messages.insert(seq, m);
            }
            Key::Meta | Key::Settings | Key::Account(_) => {}
        }
        Ok(())
    }

    pub(super) fn rebuild_index(&mut self) {
        let mut idx = super::listed::ListedBy::default();
        for (owner, d) in &self.users {
            for jid in d.roster.items.keys() {
                if let Some(c) = self.local_user(jid) {
                    idx.insert(c, owner);
                }
            }
        }
        self.listed_by = idx;
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
