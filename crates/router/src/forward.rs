//! Acknowledged forwarding: a message for a session on another node is held by the
//! sending node until that node says what became of it.
//!
//! - The sender gives each forwarded message an id (unique per process: a random
//!   base) and keeps it, with its [`Receipt`], in a table per peer.
//! - The receiver hands it to the session it was meant for (user, resource and
//!   session id) under a receipt of its own; once that session's client has it, it
//!   answers `Receipt { id, done: true }`. If the session is gone, or ends before
//!   its client had the message, it answers `done: false` and the sender routes the
//!   message again (the recipient's other sessions, or the offline queue).
//! - A link that breaks loses what was on it. The sender sends every message still
//!   held again on the next link to that peer; the receiver remembers the ids it has
//!   seen (a bounded window per sender), delivers each once and answers again for one
//!   it already delivered.
//! - A peer that dies or stays cut off: once this node's directory no longer holds
//!   the session a message was for (the peer was declared lost), the sweeper routes
//!   the message again.
//!
//! Only the sending node routes a forwarded message again, so a message is never
//! routed twice by two nodes. What stays open is the instant between a client
//! getting a message and its node's receipt reaching the sender: if the receiving
//! node dies then, the message is routed again and arrives twice.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use presenced_cluster::NodeId;

use crate::peer::PeerEvent;
use crate::receipt::Waiter;
use crate::{Delivery, Message, Receipt, Router};

/// Messages held per peer at most; past it a message is not forwarded (the caller
/// stores it offline instead).
const MAX_HELD: usize = 100_000;
/// Ids remembered per sending node, to deliver a message sent again only once.
const SEEN_WINDOW: usize = 65_536;
/// How often held messages are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

struct Held {
    user: String,
    resource: String,
    sid: u64,
    /// The message as sent (shared with the event on the link), to send it again.
    msg: Arc<Message>,
    /// Its receipt (the only copy holding it): done when the peer's client has it,
    /// dropped (the message routed again) when the peer could not deliver it.
    receipt: Option<Receipt>,
    sent: Instant,
}

/// Forwarding ids are hashes or random-based counters, sent by an authenticated peer:
/// a fast hash suffices (SipHash on every lookup was most of this table's cost).
type IdHash = foldhash::fast::FixedState;

#[derive(Default)]
struct Seen {
    order: VecDeque<u64>,
    /// Id → whether its receipt is done.
    state: HashMap<u64, bool, IdHash>,
}

pub(crate) struct Forwarding {
    next_id: AtomicU64,
    held: Mutex<HashMap<NodeId, BTreeMap<u64, Held>>>,
    seen: Mutex<HashMap<NodeId, Seen>>,
}

impl Forwarding {
    pub fn new() -> Forwarding {
        Forwarding {
            // Ids without a message uid: below 2^63, apart from `forward_id`'s.
            next_id: AtomicU64::new(rand::random::<u64>() >> 2),
            held: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
        }
    }
}

impl Router {
    /// Forward `msg` (which has a receipt) to session `sid` of `user/resource` on
    /// `node`, holding it until the peer answers. `false`: not sent (no link, or too
    /// much held for that peer); the caller's copy of the message still holds its
    /// receipt.
    pub(crate) fn forward(
        &self,
        node: NodeId,
        user: &str,
        resource: &str,
        sid: u64,
        mut msg: Message,
    ) -> bool {
        let f = &self.inner.forward;
        // The receipt stays here; the message itself is shared with the link.
        let receipt = msg.receipt.take();
        let msg = Arc::new(msg);
        let id;
        {
            let mut held = f.held.lock();
            let h = held.entry(node).or_default();
            if h.len() >= MAX_HELD {
                metrics::counter!("presenced_forward_refused_total").increment(1);
                return false;
            }
            // The same message for the same session always gets the same id, so one
            // routed again after its receipt was lost (a partition) and forwarded to
            // the same node is delivered once: the receiver remembers the id.
            id = match forward_id(msg.uid, user, resource) {
                Some(id) if !h.contains_key(&id) => id,
                _ => f.next_id.fetch_add(1, Ordering::Relaxed),
            };
            h.insert(
                id,
                Held {
                    user: user.to_string(),
                    resource: resource.to_string(),
                    sid,
                    msg: msg.clone(),
                    receipt,
                    sent: Instant::now(),
                },
            );
        }
        let ev = PeerEvent::Forward {
            user: user.to_string(),
            resource: resource.to_string(),
            sid,
            id,
            message: msg,
        };
        if !self.inner.peers.send(node, ev) {
            // Not sent: forget it (dropping this copy of the receipt; the caller's
            // copy still answers for the message).
            let back = f.held.lock().get_mut(&node).and_then(|h| h.remove(&id));
            drop(back);
            return false;
        }
        crate::hot::FORWARDED.increment(1);
        true
    }

    /// Every message still held for `node`, to send again on a new link.
    pub(crate) fn forward_again(&self, node: NodeId) -> Vec<PeerEvent> {
        let held = self.inner.forward.held.lock();
        let Some(h) = held.get(&node) else {
            return Vec::new();
        };
        if !h.is_empty() {
            metrics::counter!("presenced_forward_resent_total").increment(h.len() as u64);
        }
        h.iter()
            .map(|(id, x)| PeerEvent::Forward {
                user: x.user.clone(),
                resource: x.resource.clone(),
                sid: x.sid,
                id: *id,
                message: x.msg.clone(),
            })
            .collect()
    }

    /// The link to `node` fell back to a format without receipts: what is held for it
    /// went as plain deliveries and is answered for no longer (the guarantee of the
    /// previous release, until that peer is upgraded).
    pub(crate) fn forward_released(&self, node: NodeId) {
        let held = self.inner.forward.held.lock().remove(&node);
        for h in held.into_iter().flat_map(|m| m.into_values()) {
            if let Some(r) = &h.receipt {
                r.done();
            }
        }
    }

    /// A peer's answer for a message this node forwarded.
    pub(crate) fn on_receipt(&self, node: NodeId, id: u64, done: bool) {
        let held = self
            .inner
            .forward
            .held
            .lock()
            .get_mut(&node)
            .and_then(|h| h.remove(&id));
        let Some(h) = held else {
            return; // answered twice, or routed again already
        };
        if done {
            if let Some(r) = &h.receipt {
                r.done();
            }
        } else {
            metrics::counter!("presenced_forward_undelivered_total").increment(1);
        }
        // Not done: dropping the last copy of its receipt routes the message again.
        drop(h);
    }

    /// A forwarded message arrived from `from`.
    pub(crate) fn on_forward(
        &self,
        from: NodeId,
        user: &str,
        resource: &str,
        sid: u64,
        id: u64,
        mut msg: Message,
    ) {
        {
            let mut seen = self.inner.forward.seen.lock();
            let s = seen.entry(from).or_default();
            match s.state.entry(id) {
                Entry::Occupied(o) => {
                    // Sent again after a link broke: delivered once already.
                    if *o.get() {
                        self.inner
                            .peers
                            .send(from, PeerEvent::Receipt { id, done: true });
                    }
                    return;
                }
                Entry::Vacant(v) => {
                    v.insert(false);
                }
            }
            s.order.push_back(id);
            if s.order.len() > SEEN_WINDOW
                && let Some(old) = s.order.pop_front()
            {
                s.state.remove(&old);
            }
        }
        let waiter = Waiter::Peer { node: from, id };
        msg.receipt = Some(Receipt::new(self, user, Some(resource), &msg, waiter));
        let dir = self.inner.dir.lock();
        let Some(e) = dir.get(user, resource).filter(|e| e.sid == sid) else {
            // Gone: the receipt, dropped here, answers `done: false`.
            return;
        };
        let Some(local) = &e.local else {
            return;
        };
        self.note_reply(user, &msg);
        self.send_local(
            user,
            resource,
            e.sid,
            local,
            Delivery::Message(Box::new(msg)),
        );
    }

    /// The receipt of a message `node` forwarded is done (`true`) or given up
    /// (`false`): tell it.
    pub(crate) fn receipt_for_peer(&self, node: NodeId, id: u64, done: bool) {
        if let Some(s) = self.inner.forward.seen.lock().get_mut(&node) {
            if done {
                if let Some(d) = s.state.get_mut(&id) {
                    *d = true;
                }
            } else {
                // Forget it: if it comes again, it is a new attempt.
                s.state.remove(&id);
            }
        }
        self.inner.peers.send(node, PeerEvent::Receipt { id, done });
    }

    /// Route again what is held for sessions this node no longer knows on their peer
    /// (the peer was declared lost, or the session moved), and forget what is held for
    /// peers that left the cluster.
    fn sweep_forwarded(&self) {
        let stale: Vec<Held> = {
            let dir = self.inner.dir.lock();
            let mut held = self.inner.forward.held.lock();
            let mut out = Vec::new();
            for (node, h) in held.iter_mut() {
                let ids: Vec<u64> = h
                    .iter()
                    .filter(|(_, x)| {
                        x.sent.elapsed() >= SWEEP_EVERY
                            && !dir
                                .get(&x.user, &x.resource)
                                .is_some_and(|e| e.node == *node && e.sid == x.sid)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                out.extend(ids.into_iter().filter_map(|id| h.remove(&id)));
            }
            held.retain(|_, h| !h.is_empty());
            out
        };
        if !stale.is_empty() {
            metrics::counter!("presenced_forward_swept_total").increment(stale.len() as u64);
            tracing::debug!(n = stale.len(), "routing forwarded messages again");
        }
        // Dropped outside the locks: each receipt routes its message again.
        drop(stale);
    }
}

/// The forwarding id of message `uid` for `user/resource` (none without a uid).
fn forward_id(uid: u64, user: &str, resource: &str) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    if uid == 0 {
        return None;
    }
    // SipHash with fixed keys: the same on every run, as the receiver needs.
    let mut h = std::hash::DefaultHasher::new();
    (uid, user, resource).hash(&mut h);
    Some(h.finish() | 1 << 63)
}

pub(crate) fn spawn_sweeper(router: &Router) {
    let weak = std::sync::Arc::downgrade(&router.inner);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            let Some(inner) = weak.upgrade() else { return };
            Router { inner }.sweep_forwarded();
        }
    });
}
