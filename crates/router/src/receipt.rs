//! Receipts: who is responsible for a one-to-one message until someone has taken it.
//!
//! A message with content that a client sends to a user of this cluster carries a
//! [`Receipt`] from the moment the router accepts it. Every copy of the message (one
//! per forked resource, the one waiting on a peer link) shares it. It is *done* when
//! the first of these happens:
//!
//! - a client session wrote it to its client (and the client acknowledged it, when the
//!   session has XEP-0198 stream management), see [`Receipt::done`];
//! - it was committed to the recipient's offline queue;
//! - the router gave the sender an error for it.
//!
//! When the last copy goes away without that (a session closed with it still queued,
//! a link to the recipient's node failed, a peer answered that the session was gone)
//! the message is routed again from the start: to the recipient's other sessions, or
//! into the offline queue. A message forwarded to a peer is held by the sending node
//! ([`crate::peer`]) until that peer says its receipt is done.
//!
//! Whoever waits for the message to be handled (an XMPP session counting XEP-0198
//! `h` for its client) holds a [`HandledWait`]: it resolves once every receipt made
//! for the stanza is done. The guarantee is at least once: a node that dies after its
//! client got a message and before the message's receipt reached the sending node
//! leaves the sender's node to route it again, and the recipient may see it twice.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use presenced_cluster::NodeId;
use tokio::sync::mpsc;

use crate::{Message, Router};

/// Times a message is routed again before it goes straight to the offline queue (a
/// session that keeps taking messages and closing must not bounce one for ever).
const MAX_REROUTES: u8 = 3;

/// Held by whatever waits for a stanza to be handled; resolved when dropped by every
/// receipt made for it (see [`handled`]).
#[derive(Debug, Clone)]
pub struct Handled(#[allow(dead_code)] mpsc::Sender<()>);

/// Resolves once every [`Handled`] of its pair is gone.
pub struct HandledWait(mpsc::Receiver<()>);

/// A pair: give the [`Handled`] to [`crate::Session::send_message_tracked`], await the
/// [`HandledWait`].
pub fn handled() -> (Handled, HandledWait) {
    let (tx, rx) = mpsc::channel(1);
    (Handled(tx), HandledWait(rx))
}

impl HandledWait {
    pub async fn wait(mut self) {
        // Nothing is ever sent: `recv` ends when the last sender is dropped.
        let _ = self.0.recv().await;
    }
}

/// Whom to tell once the message is handled.
#[derive(Debug)]
pub(crate) enum Waiter {
    /// A stanza counter on this node (dropping the handle resolves it).
    Local(Option<Handled>),
    /// The node that forwarded the message, under the id it gave it.
    Peer { node: NodeId, id: u64 },
    /// An offline flush: the queued message `seq` leaves the queue once taken, and
    /// stays queued otherwise ([`crate::flush`]).
    Offline {
        batch: Arc<crate::flush::FlushBatch>,
        seq: u64,
    },
}

struct Pending {
    router: Weak<crate::Inner>,
    /// The recipient (a local user) and the resource it was addressed to.
    user: String,
    resource: Option<String>,
    /// A copy without receipt, to route again: kept only for a message this node
    /// routes again itself (`Waiter::Local`); a forwarded one is routed again by its
    /// sender, a queued offline one stays queued.
    msg: Option<Message>,
    reroutes: u8,
    waiter: Waiter,
}

struct Shared(Mutex<Option<Pending>>);

/// See the module documentation. Cloning shares it; equality is not a property of a
/// message (two copies of one message compare equal whatever their receipts).
#[derive(Clone)]
pub struct Receipt(Arc<Shared>);

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Receipt")
    }
}

impl PartialEq for Receipt {
    fn eq(&self, _: &Receipt) -> bool {
        true
    }
}

impl Eq for Receipt {}

impl Receipt {
    pub(crate) fn new(
        router: &Router,
        user: &str,
        resource: Option<&str>,
        msg: &Message,
        waiter: Waiter,
    ) -> Receipt {
        Self::with_reroutes(router, user, resource, msg, waiter, 0)
    }

    fn with_reroutes(
        router: &Router,
        user: &str,
        resource: Option<&str>,
        msg: &Message,
        waiter: Waiter,
        reroutes: u8,
    ) -> Receipt {
        let copy = matches!(waiter, Waiter::Local(_)).then(|| {
            let mut c = msg.clone();
            c.receipt = None;
            c
        });
        crate::hot::RECEIPTS_OPEN.increment(1.0);
        Receipt(Arc::new(Shared(Mutex::new(Some(Pending {
            router: Arc::downgrade(&router.inner),
            user: user.to_string(),
            resource: resource.map(str::to_string),
            msg: copy,
            reroutes,
            waiter,
        })))))
    }

    /// The message has been taken (written to a client, stored, or refused with an
    /// error the sender got): tell whoever waits. Idempotent.
    pub fn done(&self) {
        let Some(p) = self.0.0.lock().take() else {
            return;
        };
        crate::hot::RECEIPTS_OPEN.decrement(1.0);
        finish(p.router, p.waiter);
    }
}

fn finish(router: Weak<crate::Inner>, waiter: Waiter) {
    match waiter {
        Waiter::Local(h) => drop(h),
        Waiter::Peer { node, id } => {
            if let Some(inner) = router.upgrade() {
                Router { inner }.receipt_for_peer(node, id, true);
            }
        }
        Waiter::Offline { batch, seq } => batch.taken(seq),
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let Some(p) = self.0.get_mut().take() else {
            return;
        };
        crate::hot::RECEIPTS_OPEN.decrement(1.0);
        let Some(inner) = p.router.upgrade() else {
            return; // the node is going away
        };
        let router = Router { inner };
        match p.waiter {
            Waiter::Peer { node, id } => {
                // Forwarded to us: the sending node routes it again.
                router.receipt_for_peer(node, id, false);
                return;
            }
            // Still in the offline queue: the next session gets it.
            Waiter::Offline { .. } => return,
            Waiter::Local(_) => {}
        }
        metrics::counter!("presenced_messages_rerouted_total").increment(1);
        // Dropped under the directory's lock, often: route again from a task.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { router.reroute(p).await });
        }
    }
}

impl Router {
    /// A message whose every copy went away unhandled: route it again. While that
    /// fails (this node is cut off from the cluster's majority and cannot store it)
    /// it is retried, the receipt still open, so its sender is not told it was taken.
    async fn reroute(&self, p: Pending) {
        let Pending {
            router: _,
            user,
            resource,
            msg,
            reroutes,
            waiter,
        } = p;
        // Only a `Waiter::Local` receipt comes here, and it always keeps its copy.
        let Some(msg) = msg else {
            return;
        };
        let receipt =
            Receipt::with_reroutes(self, &user, resource.as_deref(), &msg, waiter, reroutes + 1);
        let deadline = tokio::time::Instant::now() + REROUTE_BUDGET;
        let mut backoff = std::time::Duration::from_millis(200);
        loop {
            let mut m = msg.clone();
            m.receipt = Some(receipt.clone());
            let r = if reroutes >= MAX_REROUTES {
                self.store_offline(&user, m).await
            } else {
                self.deliver_message(&user, resource.as_deref(), m).await
            };
            match r {
                Ok(()) => {
                    tracing::debug!(user, "message routed again");
                    return;
                }
                Err(e) if e.is_retryable() && tokio::time::Instant::now() + backoff < deadline => {
                    tracing::debug!(user, "routing a message again failed, retrying: {e}");
                    metrics::counter!("presenced_reroute_retries_total").increment(1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                }
                Err(e) => {
                    // Nobody to tell: the sender was told it was accepted.
                    metrics::counter!("presenced_messages_lost_total").increment(1);
                    tracing::warn!(user, "a message could not be routed again: {e}");
                    receipt.done();
                    return;
                }
            }
        }
    }
}

/// How long a message is retried when it cannot be routed again (a partition that
/// lasts longer gets it counted in `presenced_messages_lost_total`).
const REROUTE_BUDGET: std::time::Duration = std::time::Duration::from_secs(600);
