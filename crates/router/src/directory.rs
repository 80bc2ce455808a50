//! The session directory: every session in the cluster this node knows of, by user
//! and resource. Entries of this node carry the channel to the client; the others
//! are mirrored from the peer that owns them.

use std::collections::{BTreeSet, HashMap};

use presenced_cluster::NodeId;
use serde::{Deserialize, Serialize};

use crate::{Availability, Delivery};

pub(crate) struct Local {
    pub tx: crate::queue::Sender<Delivery>,
    /// The client asked for its roster (it gets roster pushes).
    pub roster: bool,
    /// The roster version this session was last given (fetch or push): a resync
    /// pushes what changed after it.
    pub roster_ver: u64,
    /// Addresses this session sent directed available presence to.
    pub directed: BTreeSet<crate::Address>,
    /// The highest offline-queue sequence number handed to this session: a flush
    /// whose acknowledgement did not commit (a leader lost mid-write) leaves the
    /// messages queued, and the next flush must not hand them to this session again.
    pub offline_sent: Option<u64>,
    /// The uids of the last messages handed to this session (allocated at the first):
    /// a message routed again after its receipt was lost (a partition, a node that
    /// died) is not handed to the same session twice.
    pub recent: parking_lot::Mutex<Option<Box<Recent>>>,
}

/// Uids remembered per session.
const RECENT: usize = 64;

pub(crate) struct Recent {
    uids: [u64; RECENT],
    next: usize,
}

impl Default for Recent {
    fn default() -> Recent {
        Recent {
            uids: [0; RECENT],
            next: 0,
        }
    }
}

impl Recent {
    /// Remember `uid`; `false` if it was there already.
    pub fn insert(&mut self, uid: u64) -> bool {
        if self.uids.contains(&uid) {
            return false;
        }
        self.uids[self.next] = uid;
        self.next = (self.next + 1) % RECENT;
        true
    }
}

impl Local {
    pub fn new(tx: crate::queue::Sender<Delivery>) -> Self {
        Local {
            tx,
            roster: false,
            roster_ver: 0,
            directed: BTreeSet::new(),
            offline_sent: None,
            recent: parking_lot::Mutex::new(None),
        }
    }
}

pub(crate) struct Entry {
    pub node: NodeId,
    /// Unique per session on its node (tells a replaced session from its successor).
    pub sid: u64,
    /// `None` until the client sends initial presence, and after it goes unavailable.
    pub avail: Option<Availability>,
    /// Boxed: most entries are mirrors of a peer's sessions (two of every three in a
    /// three-node cluster), and they should not carry room for a local session's state.
    pub local: Option<Box<Local>>,
}

/// A session as a peer announces it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionInfo {
    pub user: String,
    pub resource: String,
    pub sid: u64,
    pub avail: Option<Availability>,
}

/// The sessions of one user, by resource. Users have one to a few sessions: a small
/// vector costs far less per user than a tree or hash map (a B-tree leaf alone is
/// over 1.5 KiB).
#[derive(Default)]
pub(crate) struct Resources(Vec<(String, Entry)>);

impl Resources {
    pub fn get(&self, r: &str) -> Option<&Entry> {
        self.0.iter().find(|(k, _)| k == r).map(|(_, e)| e)
    }

    fn get_mut(&mut self, r: &str) -> Option<&mut Entry> {
        self.0.iter_mut().find(|(k, _)| k == r).map(|(_, e)| e)
    }

    pub fn contains_key(&self, r: &str) -> bool {
        self.get(r).is_some()
    }

    fn insert(&mut self, r: &str, e: Entry) {
        match self.get_mut(r) {
            Some(slot) => *slot = e,
            None => {
                // Exactly one more slot: `push` would make room for four (~0.7 KiB),
                // and most users have one session.
                self.0.reserve_exact(1);
                self.0.push((r.to_string(), e))
            }
        }
    }

    fn remove(&mut self, r: &str) -> Option<Entry> {
        let i = self.0.iter().position(|(k, _)| k == r)?;
        let (_, e) = self.0.swap_remove(i);
        if self.0.capacity() > 4 && self.0.len() * 4 < self.0.capacity() {
            self.0.shrink_to_fit();
        }
        Some(e)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.0.iter().map(|(k, e)| (k, e))
    }

    /// This node's sessions of the user that sent initial presence.
    pub fn local_available(&self) -> impl Iterator<Item = (&String, &Entry, &Local)> {
        self.local().filter(|(_, e, _)| e.avail.is_some())
    }

    /// This node's sessions of the user.
    pub fn local(&self) -> impl Iterator<Item = (&String, &Entry, &Local)> {
        self.0
            .iter()
            .filter_map(|(r, e)| e.local.as_deref().map(|l| (r, e, l)))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Resources {
    type Item = (&'a String, &'a Entry);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Entry)>,
        fn(&'a (String, Entry)) -> (&'a String, &'a Entry),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, e)| (k, e))
    }
}

#[derive(Default)]
pub(crate) struct Directory {
    users: HashMap<String, Resources>,
    /// The epoch of the live inbound link of each peer.
    epochs: HashMap<NodeId, u64>,
}

impl Directory {
    pub fn get(&self, user: &str, resource: &str) -> Option<&Entry> {
        self.users.get(user)?.get(resource)
    }

    pub fn get_mut(&mut self, user: &str, resource: &str) -> Option<&mut Entry> {
        self.users.get_mut(user)?.get_mut(resource)
    }

    pub fn local_mut(&mut self, user: &str, resource: &str, sid: u64) -> Option<&mut Local> {
        self.get_mut(user, resource)
            .filter(|e| e.sid == sid)
            .and_then(|e| e.local.as_deref_mut())
    }

    pub fn sessions(&self, user: &str) -> Option<&Resources> {
        self.users.get(user)
    }

    pub fn insert(&mut self, user: &str, resource: &str, e: Entry) {
        self.users
            .entry(user.to_string())
            .or_default()
            .insert(resource, e);
    }

    pub fn remove(&mut self, user: &str, resource: &str) -> Option<Entry> {
        let m = self.users.get_mut(user)?;
        let e = m.remove(resource);
        if m.is_empty() {
            self.users.remove(user);
        }
        e
    }

    /// (user, resource) of every session owned by `node`.
    pub fn of_node(&self, node: NodeId) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (u, m) in &self.users {
            for (r, e) in m {
                if e.node == node {
                    out.push((u.clone(), r.clone()));
                }
            }
        }
        out
    }

    /// Local sessions that sent initial presence.
    pub fn local_available(&self, me: NodeId) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (u, m) in &self.users {
            for (r, e) in m {
                if e.node == me && e.local.is_some() && e.avail.is_some() {
                    out.push((u.clone(), r.clone()));
                }
            }
        }
        out
    }

    /// (user, resource, sid) of every local session.
    pub fn local_sessions(&self) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        for (u, m) in &self.users {
            for (r, e) in m {
                if e.local.is_some() {
                    out.push((u.clone(), r.clone(), e.sid));
                }
            }
        }
        out
    }

    pub fn snapshot(&self, me: NodeId) -> Vec<SessionInfo> {
        let mut out = Vec::new();
        for (u, m) in &self.users {
            for (r, e) in m {
                if e.node == me {
                    out.push(SessionInfo {
                        user: u.clone(),
                        resource: r.clone(),
                        sid: e.sid,
                        avail: e.avail.clone(),
                    });
                }
            }
        }
        out
    }

    pub fn epoch(&self, node: NodeId) -> Option<u64> {
        self.epochs.get(&node).copied()
    }

    pub fn set_epoch(&mut self, node: NodeId, epoch: u64) {
        self.epochs.insert(node, epoch);
    }

    pub fn clear_epoch(&mut self, node: NodeId) {
        self.epochs.remove(&node);
    }
}
