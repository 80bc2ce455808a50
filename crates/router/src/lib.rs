//! The router: the protocol-neutral core of a presenced node.
//!
//! It knows users, sessions, availability and messages, and nothing of XML or SIP.
//! Protocol adapters open a [`Session`] per logged-in client and receive
//! [`Delivery`]s on its channel; whatever they send goes through the methods here.
//!
//! - The session directory (which sessions live on which node, and their
//!   availability) is owned by each node for its own sessions and mirrored to every
//!   peer over the peer links ([`peer`]); a peer's copy is dropped when it dies.
//! - Every presence a session is handed passes [`presenced_policy::visibility`].
//! - Durable changes (rosters, subscriptions, offline messages) are Raft commands;
//!   every node reacts to the applied log's events for its own sessions (roster
//!   pushes, subscription requests, re-evaluating visibility when a setting flips).
//! - Online messages and presence never touch Raft: they go node to node, one hop.

mod address;
mod broadcast;
mod directory;
mod events;
mod flush;
mod forward;
mod hot;
mod message;
mod mirror;
mod offline;
pub mod peer;
mod peer_event;
mod presence;
mod query;
pub mod queue;
pub mod receipt;
mod remote;
mod resync;
mod session;
mod subscription;
mod types;
mod views;
/// Public only for the fuzz targets (`fuzz/`): the peer-link frame codec.
#[doc(hidden)]
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use presenced_cluster::{ClusterError, ClusterNode, NodeId};
use presenced_model::{Command, OfflineMessage, Outcome, Reply, State};
use presenced_policy::{Context, Seen, visibility, visible_to, watchers_of};

pub use address::Domains;
/// Model types adapters render (roster items, refusal reasons, stored keys).
pub use presenced_model::credentials::ScramKeys;
pub use presenced_model::{Refusal, RefusalClass, RosterItem, Subscription};
pub use receipt::{Handled, HandledWait, Receipt, handled};
pub use session::Located;
pub use types::*;
pub use views::{Advertised, RosterView, ScramHash};

use directory::{Directory, Entry, Local};
use peer::{PeerEvent, Peers};
use presence::View;

/// Router tuning, from the node's configuration.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub node_id: NodeId,
    pub secret: String,
    /// After a reply, a sender's messages go only to the replying resource until this
    /// long passes without messages between the two (or that resource goes offline).
    pub sticky_quiet: Duration,
    /// Peer links send a heartbeat this often when idle ...
    pub peer_heartbeat: Duration,
    /// ... and a peer silent for this long is declared dead (its sessions dropped).
    pub peer_dead_after: Duration,
    /// Deliveries queued for one session before it is disconnected as too slow.
    pub session_queue: usize,
}

impl RouterConfig {
    pub fn new(node_id: NodeId, secret: String) -> Self {
        RouterConfig {
            node_id,
            secret,
            sticky_quiet: Duration::from_secs(300),
            peer_heartbeat: Duration::from_secs(1),
            peer_dead_after: Duration::from_secs(3),
            session_queue: 1024,
        }
    }
}

/// Cheap to clone; every clone is the same router.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: RouterConfig,
    node: Arc<ClusterNode>,
    domain: String,
    domains: Domains,
    dir: Mutex<Directory>,
    /// Sticky reply routes (`message`), bounded.
    sticky: Mutex<message::StickyMap>,
    peers: Peers,
    next_sid: AtomicU64,
    /// Message uids ([`Message::uid`]): a random base per process, never 0.
    next_uid: AtomicU64,
    /// Users whose offline queue is being flushed on this node, and whether another
    /// flush was asked for meanwhile (`offline`): one flush at a time per user.
    flushing: Mutex<HashMap<String, bool>>,
    /// Messages forwarded to peers and not yet answered for, and the ids peers
    /// forwarded here ([`forward`]).
    forward: forward::Forwarding,
}

impl Router {
    /// Start the router of a node: the cluster-event task and the peer links.
    pub fn start(node: Arc<ClusterNode>, cfg: RouterConfig) -> Router {
        let domain = node.domain.clone();
        let base = rand::random::<u64>() & 0x0000_ffff_ffff_0000;
        let router = Router {
            inner: Arc::new(Inner {
                peers: Peers::default(),
                cfg,
                node,
                domains: Domains {
                    users: domain.clone(),
                    rooms: None,
                },
                domain,
                dir: Mutex::new(Directory::default()),
                sticky: Mutex::new(HashMap::new()),
                next_sid: AtomicU64::new(base),
                next_uid: AtomicU64::new((rand::random::<u64>() >> 1) | 1),
                flushing: Mutex::new(HashMap::new()),
                forward: forward::Forwarding::new(),
            }),
        };
        events::spawn(router.clone());
        peer::spawn_links(router.clone());
        forward::spawn_sweeper(&router);
        let sweeper = router.clone();
        tokio::spawn(async move {
            let every = sweeper
                .inner
                .cfg
                .sticky_quiet
                .clamp(Duration::from_secs(1), Duration::from_secs(60));
            loop {
                tokio::time::sleep(every).await;
                sweeper.sweep_sticky();
            }
        });
        router
    }

    pub fn domain(&self) -> &str {
        &self.inner.domain
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.cfg.node_id
    }

    /// Read the local replica of the durable state (the router's own queries; adapters
    /// use the views in `views`).
    pub(crate) fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.inner.node.read(f)
    }

    /// The gRPC service peers call (add it to the node's cluster gRPC server).
    pub fn peer_service(&self) -> peer::PeerServer {
        peer::server(self.clone())
    }

    /// The domains this cluster answers for, to classify what an adapter parsed.
    pub fn domains(&self) -> &Domains {
        &self.inner.domains
    }

    /// A local user's bare JID in the model's form (`user@domain`), the key rosters use.
    fn jid(&self, user: &str) -> String {
        format!("{user}@{}", self.inner.domain)
    }

    /// The address a roster entry (model form, local or not) names.
    fn addr_of_jid(&self, jid: &str) -> Address {
        match jid.split_once('@') {
            Some((u, d)) => self.inner.domains.classify(Some(u), d, None),
            None => self.inner.domains.classify(None, jid, None),
        }
    }

    /// The model form of a bare address (a roster key), if it can be one.
    fn jid_of_addr(&self, a: &Address) -> Result<String, RouteError> {
        match a {
            Address::Local(l) => Ok(self.jid(&l.user)),
            Address::Remote(r) => match &r.local {
                Some(l) => Ok(format!("{l}@{}", r.domain)),
                None => Ok(r.domain.clone()),
            },
            Address::Server => Err(RouteError::BadAddress(self.inner.domain.clone())),
            Address::Room { room, .. } => Err(RouteError::BadAddress(room.clone())),
        }
    }

    /// Propose a command; map replication failures.
    async fn write(&self, cmd: Command) -> Result<Outcome, RouteError> {
        use tracing::Instrument;
        let span = tracing::debug_span!("raft_command", op = cmd.name());
        self.inner
            .node
            .write_visible(cmd)
            .instrument(span)
            .await
            .map_err(|e| match e {
                ClusterError::Unavailable(m) => RouteError::Unavailable(m),
                other => RouteError::Unavailable(other.to_string()),
            })
    }

    async fn write_ok(&self, cmd: Command) -> Result<Reply, RouteError> {
        self.write(cmd).await?.map_err(RouteError::Refused)
    }
}

/// One logged-in client: what an adapter calls on its behalf.
///
/// The contract an adapter keeps:
/// - It drains the [`queue::Receiver`] it got with the session for as long as the
///   client is connected, and turns every [`Delivery`] into its wire format. A client
///   that stops reading is disconnected by the router when its queue fills (the
///   receiver then yields `None`).
/// - [`Delivery::Replaced`] (another login took this endpoint) and
///   [`Delivery::Close`] (account removed, shutdown) end the client's connection: the
///   adapter sends its protocol's closing error and drops the session.
/// - Dropping the `Session` is the client going away: its watchers see it
///   unavailable and its directed presence ends. Nothing else is needed.
/// - Addresses are parsed at the edge ([`Router::domains`]); `from` is stamped here.
///
/// ```
/// # use presenced_router::{Delivery, Session, queue::Receiver};
/// /// The smallest adapter: print what the session receives until it is told to stop.
/// async fn drain(session: Session, mut rx: Receiver<Delivery>) {
///     while let Some(d) = rx.recv().await {
///         match d {
///             Delivery::Replaced | Delivery::Close { .. } => break,
///             other => println!("{} <- {other:?}", session.user),
///         }
///     }
///     drop(session); // watchers now see it unavailable
/// }
/// ```
pub struct Session {
    router: Router,
    /// The local user name.
    pub user: String,
    /// This endpoint (XMPP resource, SIP instance).
    pub resource: String,
    sid: u64,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.router
            .end_session(&self.user, &self.resource, self.sid);
    }
}

impl Session {
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// This session's own address (user and endpoint).
    pub fn address(&self) -> Address {
        Address::endpoint(&self.user, &self.resource)
    }
}
