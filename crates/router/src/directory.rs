//! The session directory: every session in the cluster this node knows of, by user
//! and resource. Entries of this node carry the channel to the client; the others
//! are mirrored from the peer that owns them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use presenced_cluster::NodeId;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{Availability, Delivery};

pub(crate) struct Local {
    pub tx: mpsc::Sender<Delivery>,
    /// The client asked for its roster (it gets roster pushes).
    pub roster: bool,
    /// JIDs this session sent directed available presence to.
    pub directed: BTreeSet<String>,
}

impl Local {
    pub fn new(tx: mpsc::Sender<Delivery>) -> Self {
        Local {
            tx,
            roster: false,
            directed: BTreeSet::new(),
        }
    }
}

pub(crate) struct Entry {
    pub node: NodeId,
    /// Unique per session on its node (tells a replaced session from its successor).
    pub sid: u64,
    /// `None` until the client sends initial presence, and after it goes unavailable.
    pub avail: Option<Availability>,
    pub local: Option<Local>,
}

/// A session as a peer announces it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionInfo {
    pub user: String,
    pub resource: String,
    pub sid: u64,
    pub avail: Option<Availability>,
}

#[derive(Default)]
pub(crate) struct Directory {
    users: HashMap<String, BTreeMap<String, Entry>>,
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
            .and_then(|e| e.local.as_mut())
    }

    pub fn sessions(&self, user: &str) -> Option<&BTreeMap<String, Entry>> {
        self.users.get(user)
    }

    pub fn insert(&mut self, user: &str, resource: &str, e: Entry) {
        self.users
            .entry(user.to_string())
            .or_default()
            .insert(resource.to_string(), e);
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

    pub fn local_count(&self, me: NodeId) -> usize {
        self.users
            .values()
            .flat_map(|m| m.values())
            .filter(|e| e.node == me)
            .count()
    }

    pub fn total_count(&self) -> usize {
        self.users.values().map(|m| m.len()).sum()
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
