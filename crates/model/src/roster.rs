//! RFC 6121 roster items and the subscription states they carry.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// The `subscription` attribute of a roster item (RFC 6121 §2.1.2.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subscription {
    #[default]
    None,
    /// The user sees the contact's availability.
    To,
    /// The contact sees the user's availability (the contact is a watcher).
    From,
    Both,
}

impl Subscription {
    pub fn sees_contact(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    pub fn contact_watches(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    pub fn with_to(self) -> Self {
        match self {
            Subscription::None | Subscription::To => Subscription::To,
            Subscription::From | Subscription::Both => Subscription::Both,
        }
    }

    pub fn with_from(self) -> Self {
        match self {
            Subscription::None | Subscription::From => Subscription::From,
            Subscription::To | Subscription::Both => Subscription::Both,
        }
    }

    pub fn without_to(self) -> Self {
        match self {
            Subscription::None | Subscription::To => Subscription::None,
            Subscription::From | Subscription::Both => Subscription::From,
        }
    }

    pub fn without_from(self) -> Self {
        match self {
            Subscription::None | Subscription::From => Subscription::None,
            Subscription::To | Subscription::Both => Subscription::To,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }
}

impl fmt::Display for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One contact in a user's roster.
#[derive(Debug, Clone, Eq, Serialize, Deserialize)]
pub struct RosterItem {
    /// Bare JID of the contact.
    pub jid: String,
    pub name: Option<String>,
    pub groups: BTreeSet<String>,
    pub subscription: Subscription,
    /// Pending out: the user asked to see the contact and awaits approval.
    pub ask: bool,
    /// The roster version at which the item last changed (0: before this was kept).
    /// Lets a consumer that fell behind push exactly the items changed since the
    /// version it last delivered. Not part of an item's identity: equality ignores it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ver: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl PartialEq for RosterItem {
    fn eq(&self, o: &Self) -> bool {
        self.jid == o.jid
            && self.name == o.name
            && self.groups == o.groups
            && self.subscription == o.subscription
            && self.ask == o.ask
    }
}

impl RosterItem {
    pub fn new(jid: &str) -> Self {
        RosterItem {
            jid: jid.to_string(),
            name: None,
            groups: BTreeSet::new(),
            subscription: Subscription::None,
            ask: false,
            ver: 0,
        }
    }

    /// An item that carries nothing the user chose: safe to drop when its last
    /// subscription direction goes away.
    pub fn is_bare(&self) -> bool {
        self.subscription == Subscription::None
            && !self.ask
            && self.name.is_none()
            && self.groups.is_empty()
    }
}

/// A roster's items, by contact JID. The JID is stored once, in the item (a map keyed
/// by JID would hold it twice: at a million items that is tens of megabytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Items(BTreeSet<ByJid>);

/// An item ordered and looked up by its JID (the element type of [`Items`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByJid(RosterItem);

impl PartialOrd for ByJid {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for ByJid {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.jid.cmp(&o.0.jid)
    }
}

impl std::borrow::Borrow<str> for ByJid {
    fn borrow(&self) -> &str {
        &self.0.jid
    }
}

impl Items {
    pub fn get(&self, jid: &str) -> Option<&RosterItem> {
        self.0.get(jid).map(|b| &b.0)
    }

    pub fn contains_key(&self, jid: &str) -> bool {
        self.0.contains(jid)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Insert or replace the item for `item.jid`; the previous one is returned.
    pub fn insert(&mut self, item: RosterItem) -> Option<RosterItem> {
        self.0.replace(ByJid(item)).map(|b| b.0)
    }

    pub fn remove(&mut self, jid: &str) -> Option<RosterItem> {
        self.0.take(jid).map(|b| b.0)
    }

    /// Items in JID order.
    pub fn values(&self) -> impl Iterator<Item = &RosterItem> {
        self.0.iter().map(|b| &b.0)
    }

    /// JIDs in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|b| b.0.jid.as_str())
    }

    /// (JID, item) in JID order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RosterItem)> {
        self.0.iter().map(|b| (b.0.jid.as_str(), &b.0))
    }
}

impl<'a> IntoIterator for &'a Items {
    type Item = (&'a str, &'a RosterItem);
    type IntoIter = std::iter::Map<
        std::collections::btree_set::Iter<'a, ByJid>,
        fn(&'a ByJid) -> (&'a str, &'a RosterItem),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|b| (b.0.jid.as_str(), &b.0))
    }
}

impl std::ops::Index<&str> for Items {
    type Output = RosterItem;

    fn index(&self, jid: &str) -> &RosterItem {
        self.get(jid).expect("no roster item for this JID")
    }
}

impl Serialize for Items {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m: BTreeMap<String, RosterItem> = BTreeMap::deserialize(d)?;
        Ok(Items(m.into_values().map(ByJid).collect()))
    }
}

/// A user's roster: items, pending inbound requests and the XEP-0237 version.
#[derive(Debug, Clone, Default, Eq, Serialize, Deserialize)]
pub struct Roster {
    pub version: u64,
    pub items: Items,
    /// Pending in: bare JIDs that asked to see this user, not yet answered.
    pub pending_in: BTreeSet<String>,
    /// This replica knows every change after this version (it loaded the roster at
    /// this version rather than applying what led to it). Bookkeeping, not data:
    /// not stored, not compared.
    #[serde(skip)]
    pub known_since: u64,
}

impl PartialEq for Roster {
    fn eq(&self, o: &Self) -> bool {
        self.version == o.version && self.items == o.items && self.pending_in == o.pending_in
    }
}

impl Roster {
    /// Contacts that see this user's availability.
    pub fn watcher_count(&self) -> usize {
        self.items
            .values()
            .filter(|i| i.subscription.contact_watches())
            .count()
    }
}
