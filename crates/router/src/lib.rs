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

mod directory;
mod events;
pub mod peer;
pub mod queue;
mod types;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use presenced_cluster::{ClusterError, ClusterNode, NodeId};
use presenced_model::{Command, OfflineMessage, Outcome, Refusal, Reply, State};
use presenced_policy::{Context, Seen, visibility};

pub use types::*;

use directory::{Directory, Entry, Local};
use peer::{PeerEvent, Peers};

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
    dir: Mutex<Directory>,
    /// (recipient user, other party's bare JID) -> (resource that replied, last activity)
    sticky: Mutex<HashMap<(String, String), (String, Instant)>>,
    peers: Peers,
    next_sid: AtomicU64,
}

/// Why a viewer is being shown an owner's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// At login: only what is really available is worth sending.
    Initial,
    /// A change or a re-evaluation: available, or "unavailable" when not shared.
    Refresh,
    /// The viewer just lost the subscription: "unavailable" unless still entitled.
    Retract,
}

/// What a viewer is handed of one session, given the visibility decision (`None`:
/// nothing). The decision itself is [`presenced_policy::visibility`]'s alone.
fn shown(seen: Seen, avail: Option<&Availability>, view: View) -> Option<PresenceState> {
    match (seen, avail, view) {
        (Seen::Available, Some(a), _) => Some(PresenceState::Available(a.clone())),
        (Seen::Nothing, _, View::Retract) => Some(PresenceState::Unavailable),
        (Seen::Nothing, _, _) | (_, _, View::Initial) => None,
        _ => Some(PresenceState::Unavailable),
    }
}

/// Where a client addressed a stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The cluster's own domain (the server itself).
    Server,
    /// A local user, optionally one resource.
    User {
        user: String,
        resource: Option<String>,
    },
    /// Another domain.
    Remote(String),
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
                domain,
                dir: Mutex::new(Directory::default()),
                sticky: Mutex::new(HashMap::new()),
                next_sid: AtomicU64::new(base),
            }),
        };
        events::spawn(router.clone());
        peer::spawn_links(router.clone());
        router
    }

    pub fn domain(&self) -> &str {
        &self.inner.domain
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.cfg.node_id
    }

    /// Read the local replica of the durable state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.inner.node.read(f)
    }

    /// The gRPC service peers call (add it to the node's cluster gRPC server).
    pub fn peer_service(&self) -> peer::PeerServer {
        peer::server(self.clone())
    }

    /// Parse and classify a JID a client addressed.
    pub fn target(&self, to: &str) -> Result<Target, RouteError> {
        let jid = jid::Jid::new(to).map_err(|e| RouteError::BadAddress(format!("{to}: {e}")))?;
        if jid.domain().as_str() != self.inner.domain {
            return Ok(Target::Remote(jid.domain().as_str().to_string()));
        }
        match jid.node() {
            None => Ok(Target::Server),
            Some(n) => Ok(Target::User {
                user: n.as_str().to_string(),
                resource: jid.resource().map(|r| r.as_str().to_string()),
            }),
        }
    }

    fn bare(&self, user: &str) -> String {
        format!("{user}@{}", self.inner.domain)
    }

    fn full(&self, user: &str, resource: &str) -> String {
        format!("{user}@{}/{resource}", self.inner.domain)
    }

    // ------------------------------------------------------------ sessions

    /// Open a session for an authenticated `user` (a local user name). Without a
    /// resource the server makes one up; a session already holding the resource, on
    /// any node, is replaced.
    pub fn open_session(
        &self,
        user: &str,
        resource: Option<&str>,
    ) -> Result<(Session, queue::Receiver<Delivery>), RouteError> {
        let resource = match resource.map(str::trim).filter(|r| !r.is_empty()) {
            Some(r) => {
                let full = format!("{user}@{}/{r}", self.inner.domain);
                let jid = jid::FullJid::new(&full)
                    .map_err(|e| RouteError::BadAddress(format!("resource {r:?}: {e}")))?;
                jid.resource().as_str().to_string()
            }
            None => format!("{:016x}", rand::random::<u64>()),
        };
        let sid = self.inner.next_sid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = queue::queue(self.inner.cfg.session_queue);
        let me = self.node_id();
        {
            let mut dir = self.inner.dir.lock();
            if let Some(old) = dir.remove(user, &resource) {
                self.session_gone(&mut dir, user, &resource, old, true);
            }
            dir.insert(
                user,
                &resource,
                Entry {
                    node: me,
                    sid,
                    avail: None,
                    local: Some(Local::new(tx)),
                },
            );
        }
        self.inner.peers.broadcast(PeerEvent::Up {
            user: user.to_string(),
            resource: resource.clone(),
            sid,
        });
        metrics::gauge!("presenced_sessions_local").increment(1.0);
        let session = Session {
            router: self.clone(),
            jid: self.full(user, &resource),
            bare: self.bare(user),
            user: user.to_string(),
            resource,
            sid,
        };
        tracing::debug!(jid = %session.jid, sid, "session opened");
        Ok((session, rx))
    }

    /// A session left the directory: tell its watchers (and for a local one, the
    /// recipients of its directed presence) that it is unavailable. `replaced`: a new
    /// session took its resource; the old client is told.
    fn session_gone(
        &self,
        dir: &mut Directory,
        user: &str,
        resource: &str,
        old: Entry,
        replaced: bool,
    ) {
        if let Some(local) = &old.local {
            if replaced {
                let _ = local.tx.try_send(Delivery::Replaced);
            }
            metrics::gauge!("presenced_sessions_local").decrement(1.0);
        }
        let directed = old.local.as_ref().is_some_and(|l| !l.directed.is_empty());
        if old.avail.is_some() || directed {
            self.inner.node.read(|state| {
                if old.avail.is_some() {
                    self.fanout_presence(dir, state, user, resource, None);
                }
                // RFC 6121 §4.6.3: those who got directed presence learn it ended.
                if let Some(local) = &old.local {
                    for to in &local.directed {
                        self.deliver_directed(dir, state, user, resource, to, None);
                    }
                }
            });
        }
        if old.local.is_some() {
            self.inner.peers.broadcast(PeerEvent::Down {
                user: user.to_string(),
                resource: resource.to_string(),
                sid: old.sid,
            });
        }
    }

    fn end_session(&self, user: &str, resource: &str, sid: u64) {
        let mut dir = self.inner.dir.lock();
        let mine = dir
            .get(user, resource)
            .is_some_and(|e| e.sid == sid && e.local.is_some());
        if mine && let Some(old) = dir.remove(user, resource) {
            self.session_gone(&mut dir, user, resource, old, false);
            tracing::debug!(user, resource, sid, "session closed");
        }
    }

    // ------------------------------------------------------------ delivery

    /// Hand a delivery to one session, local or on a peer.
    fn send_to(&self, dir: &Directory, user: &str, resource: &str, d: Delivery) -> bool {
        let Some(e) = dir.get(user, resource) else {
            return false;
        };
        match &e.local {
            Some(local) => self.send_local(user, resource, e.sid, local, d),
            None => self.inner.peers.send(
                e.node,
                PeerEvent::Deliver {
                    user: user.to_string(),
                    resource: resource.to_string(),
                    delivery: d,
                },
            ),
        }
    }

    fn send_local(&self, user: &str, resource: &str, sid: u64, local: &Local, d: Delivery) -> bool {
        match local.tx.try_send(d) {
            Ok(()) => true,
            Err(queue::TrySendError::Full) => {
                // A client that does not read its deliveries is disconnected rather
                // than holding memory for ever; its watchers see it go unavailable.
                metrics::counter!("presenced_sessions_overflowed_total").increment(1);
                tracing::warn!(
                    user,
                    resource,
                    "session queue full: disconnecting the client"
                );
                let r = self.clone();
                let (u, res) = (user.to_string(), resource.to_string());
                tokio::spawn(async move { r.end_session(&u, &res, sid) });
                false
            }
            Err(queue::TrySendError::Closed) => false,
        }
    }

    /// Deliver the presence of `owner/resource` to the sessions on this node entitled to
    /// it: the owner's other available resources and the available sessions of every
    /// watcher, each through the visibility check.
    fn fanout_presence(
        &self,
        dir: &Directory,
        state: &State,
        owner: &str,
        resource: &str,
        avail: Option<&Availability>,
    ) {
        let from = self.full(owner, resource);
        let own = self.bare(owner);
        let watchers = state
            .user(owner)
            .into_iter()
            .flat_map(|d| d.roster.items.iter())
            .filter(|(_, i)| i.subscription.contact_watches())
            .map(|(jid, _)| jid.as_str());
        let mut n = 0u64;
        for viewer in std::iter::once(own.as_str()).chain(watchers) {
            let Some(vu) = state.local_user(viewer) else {
                continue;
            };
            let Some(vs) = dir.sessions(vu) else {
                continue;
            };
            if vs.local_available().next().is_none() {
                continue;
            }
            let seen = visibility(state, owner, viewer, Context::default());
            let Some(shown) = shown(seen, avail, View::Refresh) else {
                continue;
            };
            for (r, e, l) in vs.local_available() {
                if vu == owner && r == resource {
                    continue;
                }
                let d = Delivery::Presence {
                    from: from.clone(),
                    state: shown.clone(),
                };
                n += self.send_local(vu, r, e.sid, l, d) as u64;
            }
        }
        metrics::counter!("presenced_presence_delivered_total").increment(n);
    }

    /// Directed presence from `owner/resource` to `to` (a bare or full JID of a local user).
    fn deliver_directed(
        &self,
        dir: &Directory,
        state: &State,
        owner: &str,
        resource: &str,
        to: &str,
        avail: Option<&Availability>,
    ) {
        let Ok(Target::User {
            user,
            resource: to_res,
        }) = self.target(to)
        else {
            return;
        };
        let bare = self.bare(&user);
        let ctx = Context {
            directed: true,
            ..Context::default()
        };
        let Some(shown) = shown(visibility(state, owner, &bare, ctx), avail, View::Refresh) else {
            return;
        };
        let from = self.full(owner, resource);
        for r in self.resources_for(dir, &user, to_res.as_deref(), false) {
            self.send_to(
                dir,
                &user,
                &r,
                Delivery::Presence {
                    from: from.clone(),
                    state: shown.clone(),
                },
            );
        }
    }

    /// The resources of `user` a stanza addressed to `resource` (or the bare JID) goes to:
    /// the named one if online, else every available resource (non-negative priority
    /// only when `prio_only`).
    fn resources_for(
        &self,
        dir: &Directory,
        user: &str,
        resource: Option<&str>,
        prio_only: bool,
    ) -> Vec<String> {
        let Some(all) = dir.sessions(user) else {
            return Vec::new();
        };
        if let Some(r) = resource
            && all.contains_key(r)
        {
            return vec![r.to_string()];
        }
        all.iter()
            .filter(|(_, e)| {
                e.avail
                    .as_ref()
                    .is_some_and(|a| !prio_only || a.priority >= 0)
            })
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Presence of every session of `owner` as `viewer_user` may see it, delivered to
    /// the viewer's local session `vres` (at login, for probes, when visibility changes).
    fn show_owner_to(
        &self,
        dir: &Directory,
        state: &State,
        owner: &str,
        viewer_user: &str,
        vres: &str,
        view: View,
    ) {
        let Some(own) = dir.sessions(owner) else {
            return;
        };
        let Some(ve) = dir.get(viewer_user, vres) else {
            return;
        };
        let Some(local) = &ve.local else {
            return;
        };
        let seen = visibility(state, owner, &self.bare(viewer_user), Context::default());
        for (r, e) in own {
            if owner == viewer_user && r == vres {
                continue;
            }
            // Sessions that never sent initial presence are not shown at all.
            let Some(avail) = &e.avail else {
                continue;
            };
            let Some(shown) = shown(seen, Some(avail), view) else {
                continue;
            };
            let d = Delivery::Presence {
                from: self.full(owner, r),
                state: shown,
            };
            self.send_local(viewer_user, vres, ve.sid, local, d);
        }
    }

    /// Re-deliver what each local available viewer may now see of `owner` (every owner
    /// when `None`): used when availability sharing or a roster changes.
    fn refresh_visibility(&self, owner: Option<&str>) {
        let dir = self.inner.dir.lock();
        let me = self.node_id();
        self.inner.node.read(|state| {
            let viewers: Vec<(String, String)> = dir.local_available(me);
            for (vu, vr) in viewers {
                let Some(vdata) = state.user(&vu) else {
                    continue;
                };
                match owner {
                    Some(o) => {
                        let ojid = self.bare(o);
                        let sees = vu == o
                            || vdata
                                .roster
                                .items
                                .get(&ojid)
                                .is_some_and(|i| i.subscription.sees_contact());
                        if sees {
                            self.show_owner_to(&dir, state, o, &vu, &vr, View::Refresh);
                        }
                    }
                    None => {
                        for (cjid, item) in &vdata.roster.items {
                            if !item.subscription.sees_contact() {
                                continue;
                            }
                            if let Some(c) = state.local_user(cjid) {
                                self.show_owner_to(&dir, state, c, &vu, &vr, View::Refresh);
                            }
                        }
                    }
                }
            }
        });
    }

    // ------------------------------------------------------------ peer events

    fn on_peer_event(&self, from: NodeId, ev: PeerEvent) {
        match ev {
            PeerEvent::Hello { sessions } => {
                let mut dir = self.inner.dir.lock();
                let keep: std::collections::HashSet<(String, String)> = sessions
                    .iter()
                    .map(|s| (s.user.clone(), s.resource.clone()))
                    .collect();
                for (u, r) in dir.of_node(from) {
                    if !keep.contains(&(u.clone(), r.clone()))
                        && let Some(old) = dir.remove(&u, &r)
                    {
                        self.session_gone(&mut dir, &u, &r, old, false);
                    }
                }
                for s in sessions {
                    self.remote_up(&mut dir, from, &s.user, &s.resource, s.sid);
                    self.remote_presence(&mut dir, from, &s.user, &s.resource, s.avail);
                }
            }
            PeerEvent::Up {
                user,
                resource,
                sid,
            } => {
                let mut dir = self.inner.dir.lock();
                self.remote_up(&mut dir, from, &user, &resource, sid);
            }
            PeerEvent::Presence {
                user,
                resource,
                avail,
            } => {
                let mut dir = self.inner.dir.lock();
                self.remote_presence(&mut dir, from, &user, &resource, avail);
            }
            PeerEvent::Down {
                user,
                resource,
                sid,
            } => {
                let mut dir = self.inner.dir.lock();
                let theirs = dir
                    .get(&user, &resource)
                    .is_some_and(|e| e.node == from && e.sid == sid);
                if theirs && let Some(old) = dir.remove(&user, &resource) {
                    self.session_gone(&mut dir, &user, &resource, old, false);
                }
            }
            PeerEvent::Deliver {
                user,
                resource,
                delivery,
            } => {
                let dir = self.inner.dir.lock();
                let Some(e) = dir.get(&user, &resource) else {
                    metrics::counter!("presenced_deliveries_lost_total").increment(1);
                    return;
                };
                let Some(local) = &e.local else {
                    return;
                };
                if let Delivery::Message(m) = &delivery {
                    self.note_reply(&user, m);
                }
                self.send_local(&user, &resource, e.sid, local, delivery);
            }
            PeerEvent::Heartbeat => {}
        }
    }

    fn remote_up(&self, dir: &mut Directory, from: NodeId, user: &str, resource: &str, sid: u64) {
        if let Some(e) = dir.get(user, resource) {
            if e.node == from && e.sid == sid {
                return;
            }
            // The resource moved: whoever held it before (here or elsewhere) is replaced.
            if let Some(old) = dir.remove(user, resource) {
                let local = old.local.is_some();
                self.session_gone(dir, user, resource, old, local);
            }
        }
        dir.insert(
            user,
            resource,
            Entry {
                node: from,
                sid,
                avail: None,
                local: None,
            },
        );
    }

    fn remote_presence(
        &self,
        dir: &mut Directory,
        from: NodeId,
        user: &str,
        resource: &str,
        avail: Option<Availability>,
    ) {
        let Some(e) = dir.get_mut(user, resource) else {
            return;
        };
        if e.node != from || e.avail == avail {
            return;
        }
        e.avail = avail.clone();
        self.inner.node.read(|state| {
            self.fanout_presence(dir, state, user, resource, avail.as_ref());
        });
    }

    /// A peer's link ended (it died, was cut off or shut down): drop its sessions.
    fn peer_lost(&self, node: NodeId, epoch: u64) {
        let mut dir = self.inner.dir.lock();
        if dir.epoch(node) != Some(epoch) {
            return;
        }
        dir.clear_epoch(node);
        let gone = dir.of_node(node);
        tracing::info!(
            peer = node,
            sessions = gone.len(),
            "peer lost: dropping its sessions"
        );
        for (u, r) in gone {
            if let Some(old) = dir.remove(&u, &r) {
                self.session_gone(&mut dir, &u, &r, old, false);
            }
        }
    }

    fn peer_linked(&self, node: NodeId, epoch: u64) {
        let mut dir = self.inner.dir.lock();
        if dir.epoch(node) != Some(epoch) {
            dir.set_epoch(node, epoch);
            tracing::info!(peer = node, "peer linked");
        }
    }

    fn hello(&self) -> PeerEvent {
        let dir = self.inner.dir.lock();
        PeerEvent::Hello {
            sessions: dir.snapshot(self.node_id()),
        }
    }

    // ------------------------------------------------------------ messages

    /// Record that `user` got a chat message from another user's resource: later
    /// messages from `user` to that user go to that resource only (sticky reply).
    fn note_reply(&self, user: &str, m: &Message) {
        if m.kind != MessageKind::Chat || m.body.is_none() || m.delay.is_some() {
            return;
        }
        let Some((bare, res)) = m.from.split_once('/') else {
            return;
        };
        self.inner.sticky.lock().insert(
            (user.to_string(), bare.to_string()),
            (res.to_string(), Instant::now()),
        );
    }

    /// The resource `sender` sticks to when writing to `user`, if any is still valid.
    fn sticky_for(&self, dir: &Directory, sender: &str, user: &str) -> Option<String> {
        let key = (sender.to_string(), self.bare(user));
        let mut sticky = self.inner.sticky.lock();
        let (res, at) = sticky.get_mut(&key)?;
        let online = dir
            .get(user, res)
            .is_some_and(|e| e.avail.as_ref().is_some_and(|a| a.priority >= 0));
        if !online || at.elapsed() > self.inner.cfg.sticky_quiet {
            sticky.remove(&key);
            return None;
        }
        *at = Instant::now();
        Some(res.clone())
    }

    async fn route_message(&self, sender: &str, mut msg: Message) -> Result<(), RouteError> {
        let (im, history, max_bcast) = self.read(|s| {
            let st = s.settings();
            (
                st.im_enabled,
                st.allow_history_logging,
                st.broadcast_max_recipients,
            )
        });
        if !im {
            return Err(RouteError::ImDisabled);
        }
        msg.no_store = !history;
        match self.target(&msg.to)? {
            Target::Remote(d) => Err(RouteError::RemoteDomain(d)),
            Target::Server => {
                if msg.addresses.is_empty() {
                    return Err(RouteError::NoRecipients);
                }
                self.broadcast(msg, max_bcast).await
            }
            Target::User { user, resource } => {
                if self.read(|s| s.user(&user).is_none()) {
                    return Err(RouteError::NoSuchUser(self.bare(&user)));
                }
                self.deliver_message(sender, &user, resource.as_deref(), msg)
                    .await
            }
        }
    }

    async fn deliver_message(
        &self,
        sender: &str,
        user: &str,
        resource: Option<&str>,
        msg: Message,
    ) -> Result<(), RouteError> {
        let delivered = {
            let dir = self.inner.dir.lock();
            let targets = match resource.filter(|r| dir.get(user, r).is_some()) {
                Some(r) => vec![r.to_string()],
                None => match self.sticky_for(&dir, sender, user) {
                    Some(r) if msg.kind == MessageKind::Chat => vec![r],
                    _ => self.resources_for(&dir, user, None, true),
                },
            };
            let mut n = 0;
            for r in &targets {
                n += self.send_to(&dir, user, r, Delivery::Message(Box::new(msg.clone()))) as usize;
            }
            metrics::counter!("presenced_messages_routed_total").increment(1);
            n > 0
        };
        if delivered {
            return Ok(());
        }
        if msg.body.is_none() && msg.subject.is_none() {
            return Ok(()); // chat states, receipts and the like are not worth keeping
        }
        match msg.kind {
            MessageKind::Chat | MessageKind::Normal => self.store_offline(user, msg).await,
            MessageKind::Headline => Ok(()), // RFC 6121 §8.5.2.1.1: silently dropped
            MessageKind::Groupchat => Err(RouteError::NotStored("groupchat")),
            MessageKind::Error => Ok(()),
        }
    }

    async fn store_offline(&self, user: &str, msg: Message) -> Result<(), RouteError> {
        let stamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let payload =
            serde_json::to_string(&msg).map_err(|e| RouteError::NotAllowed(e.to_string()))?;
        let cmd = Command::OfflineEnqueue {
            user: user.to_string(),
            message: OfflineMessage {
                from: msg.from.clone(),
                stamp_ms,
                payload,
            },
        };
        match self.write(cmd).await? {
            Ok(_) => {
                metrics::counter!("presenced_messages_offline_total").increment(1);
                Ok(())
            }
            Err(r) => Err(RouteError::OfflineRefused(r)),
        }
    }

    async fn broadcast(&self, msg: Message, max: u32) -> Result<(), RouteError> {
        let mut recipients: Vec<String> = Vec::new();
        for a in &msg.addresses {
            if matches!(a.kind.as_str(), "to" | "cc" | "bcc") && !recipients.contains(&a.jid) {
                recipients.push(a.jid.clone());
            }
        }
        if recipients.is_empty() {
            return Err(RouteError::NoRecipients);
        }
        if recipients.len() > max as usize {
            return Err(RouteError::TooManyRecipients(recipients.len(), max));
        }
        // Recipients see the to/cc list but not the bcc list (XEP-0033 §4.6).
        let shown: Vec<Address> = msg
            .addresses
            .iter()
            .filter(|a| a.kind != "bcc")
            .map(|a| Address {
                delivered: true,
                ..a.clone()
            })
            .collect();
        metrics::counter!("presenced_broadcasts_total").increment(1);
        let sender_user = self
            .target(&msg.from)
            .ok()
            .and_then(|t| match t {
                Target::User { user, .. } => Some(user),
                _ => None,
            })
            .unwrap_or_default();
        let mut first_err = None;
        for to in recipients {
            let mut copy = msg.clone();
            copy.to = to.clone();
            copy.addresses = shown.clone();
            let res = match self.target(&to) {
                Ok(Target::User { user, resource }) => {
                    if self.read(|s| s.user(&user).is_none()) {
                        Err(RouteError::NoSuchUser(to.clone()))
                    } else {
                        self.deliver_message(&sender_user, &user, resource.as_deref(), copy)
                            .await
                    }
                }
                Ok(Target::Remote(d)) => Err(RouteError::RemoteDomain(d)),
                Ok(Target::Server) => Err(RouteError::BadAddress(to.clone())),
                Err(e) => Err(e),
            };
            if let Err(e) = res {
                tracing::debug!(%to, "broadcast copy not delivered: {e}");
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            // Delivered to everyone that could get it; one refusal is reported.
            Some(e @ RouteError::OfflineRefused(_)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Hand a user's queued offline messages to one of their sessions, then drop them
    /// from the queue.
    async fn flush_offline(&self, user: &str, resource: &str) {
        let queued: Vec<(u64, OfflineMessage)> = self.read(|s| {
            s.user(user)
                .map(|d| {
                    d.offline
                        .messages
                        .iter()
                        .map(|(k, v)| (*k, v.clone()))
                        .collect()
                })
                .unwrap_or_default()
        });
        let Some(&(upto, _)) = queued.last() else {
            return;
        };
        {
            let dir = self.inner.dir.lock();
            let Some(e) = dir.get(user, resource) else {
                return;
            };
            let Some(local) = &e.local else {
                return;
            };
            for (_, om) in &queued {
                let Ok(mut m) = serde_json::from_str::<Message>(&om.payload) else {
                    tracing::warn!(user, "unreadable offline message skipped");
                    continue;
                };
                m.delay = Some(Delay {
                    stamp_ms: om.stamp_ms,
                    from: self.inner.domain.clone(),
                });
                if !self.send_local(user, resource, e.sid, local, Delivery::Message(Box::new(m))) {
                    return; // not acknowledged: delivered at the next login
                }
            }
        }
        let cmd = Command::OfflineAck {
            user: user.to_string(),
            upto,
        };
        if let Err(e) = self.write(cmd).await {
            tracing::warn!(user, "offline messages delivered but not acknowledged: {e}");
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

/// One logged-in client. Dropping it ends the session (watchers see it unavailable).
pub struct Session {
    router: Router,
    pub user: String,
    pub resource: String,
    /// Full JID.
    pub jid: String,
    /// Bare JID.
    pub bare: String,
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

    /// The client asked for its roster: it gets roster pushes from now on.
    pub fn roster_requested(&self) {
        let mut dir = self.router.inner.dir.lock();
        if let Some(l) = dir.local_mut(&self.user, &self.resource, self.sid) {
            l.roster = true;
        }
    }

    /// Broadcast presence: available with details, or unavailable (`None`). The first
    /// available presence is the initial one: the session then gets its contacts'
    /// presence, pending subscription requests and offline messages.
    pub fn set_presence(&self, avail: Option<Availability>) {
        let r = &self.router;
        let (initial, prio) = {
            let mut dir = r.inner.dir.lock();
            let Some(e) = dir.get_mut(&self.user, &self.resource) else {
                return;
            };
            if e.sid != self.sid || e.avail == avail {
                return;
            }
            let initial = e.avail.is_none() && avail.is_some();
            e.avail = avail.clone();
            let directed: Vec<String> = match (&avail, e.local.as_mut()) {
                (None, Some(l)) => std::mem::take(&mut l.directed).into_iter().collect(),
                _ => Vec::new(),
            };
            r.inner.node.read(|state| {
                r.fanout_presence(&dir, state, &self.user, &self.resource, avail.as_ref());
                for to in &directed {
                    r.deliver_directed(&dir, state, &self.user, &self.resource, to, None);
                }
                if initial {
                    self.initial_view(&dir, state);
                }
            });
            (initial, avail.as_ref().map_or(-1, |a| a.priority))
        };
        r.inner.peers.broadcast(PeerEvent::Presence {
            user: self.user.clone(),
            resource: self.resource.clone(),
            avail,
        });
        if initial && prio >= 0 {
            let r = r.clone();
            let (u, res) = (self.user.clone(), self.resource.clone());
            tokio::spawn(async move { r.flush_offline(&u, &res).await });
        }
    }

    /// What a session is shown when it becomes available: its contacts' presence, its
    /// own other resources, and the subscription requests waiting for it.
    fn initial_view(&self, dir: &Directory, state: &State) {
        let r = &self.router;
        r.show_owner_to(
            dir,
            state,
            &self.user,
            &self.user,
            &self.resource,
            View::Initial,
        );
        let Some(data) = state.user(&self.user) else {
            return;
        };
        for (cjid, item) in &data.roster.items {
            if item.subscription.sees_contact()
                && let Some(c) = state.local_user(cjid)
            {
                r.show_owner_to(dir, state, c, &self.user, &self.resource, View::Initial);
            }
        }
        if let Some(e) = dir.get(&self.user, &self.resource)
            && let Some(l) = &e.local
        {
            for from in &data.roster.pending_in {
                let d = Delivery::Subscription {
                    from: from.clone(),
                    kind: SubscriptionKind::Subscribe,
                };
                r.send_local(&self.user, &self.resource, e.sid, l, d);
            }
        }
    }

    /// Directed presence to one JID (RFC 6121 §4.6).
    pub fn directed_presence(
        &self,
        to: &str,
        avail: Option<Availability>,
    ) -> Result<(), RouteError> {
        let r = &self.router;
        match r.target(to)? {
            Target::User { .. } => {}
            Target::Server => return Ok(()),
            Target::Remote(d) => return Err(RouteError::RemoteDomain(d)),
        }
        let mut dir = r.inner.dir.lock();
        if let Some(l) = dir.local_mut(&self.user, &self.resource, self.sid) {
            if avail.is_some() {
                l.directed.insert(to.to_string());
            } else {
                l.directed.remove(to);
            }
        }
        r.inner.node.read(|state| {
            r.deliver_directed(&dir, state, &self.user, &self.resource, to, avail.as_ref());
        });
        Ok(())
    }

    /// A presence probe: the current presence of `to`'s sessions, as this user may see it.
    pub fn probe(&self, to: &str) -> Result<(), RouteError> {
        let r = &self.router;
        let Target::User { user, .. } = r.target(to)? else {
            return Ok(());
        };
        let dir = r.inner.dir.lock();
        r.inner.node.read(|state| {
            r.show_owner_to(
                &dir,
                state,
                &user,
                &self.user,
                &self.resource,
                View::Refresh,
            );
        });
        Ok(())
    }

    /// Send a message. `from` is stamped here; `msg.to` is where the client addressed it.
    pub async fn send_message(&self, mut msg: Message) -> Result<(), RouteError> {
        msg.from = self.jid.clone();
        msg.delay = None;
        for a in &mut msg.addresses {
            a.delivered = false;
        }
        self.router.route_message(&self.user, msg).await
    }

    fn contact_jid(&self, jid: &str) -> Result<String, RouteError> {
        let r = &self.router;
        match r.target(jid)? {
            Target::User { user, .. } => Ok(r.bare(&user)),
            Target::Remote(d) => Err(RouteError::RemoteDomain(d)),
            Target::Server => Err(RouteError::BadAddress(jid.to_string())),
        }
    }

    /// Roster set (create or rename an item).
    pub async fn roster_set(
        &self,
        jid: &str,
        name: Option<String>,
        groups: Vec<String>,
    ) -> Result<(), RouteError> {
        let contact = self.contact_jid(jid)?;
        self.router
            .write_ok(Command::UpdateItem {
                user: self.user.clone(),
                contact,
                name,
                groups,
            })
            .await
            .map(drop)
    }

    /// Roster remove (RFC 6121 §2.5): the subscriptions both ways end too.
    pub async fn roster_remove(&self, jid: &str) -> Result<(), RouteError> {
        let contact = self.contact_jid(jid)?;
        let r = &self.router;
        r.write_ok(Command::RemoveContact {
            user: self.user.clone(),
            contact: contact.clone(),
        })
        .await?;
        for kind in [
            SubscriptionKind::Unsubscribe,
            SubscriptionKind::Unsubscribed,
        ] {
            r.notify_subscription(&self.bare, &contact, kind);
        }
        Ok(())
    }

    /// Ask to see `jid`'s availability. Approved at once when the contact allows
    /// viewing without approval; otherwise the request waits in the contact's roster.
    pub async fn subscribe(&self, jid: &str) -> Result<bool, RouteError> {
        let contact = self.contact_jid(jid)?;
        let r = &self.router;
        let reply = r
            .write_ok(Command::Subscribe {
                user: self.user.clone(),
                contact: contact.clone(),
            })
            .await?;
        let approved = matches!(reply, Reply::Subscription { approved: true });
        if approved {
            r.notify_subscription(&contact, &self.bare, SubscriptionKind::Subscribed);
        }
        Ok(approved)
    }

    /// Approve `jid`'s request to see this user.
    pub async fn approve(&self, jid: &str) -> Result<(), RouteError> {
        let requester = self.contact_jid(jid)?;
        let r = &self.router;
        match r
            .write(Command::Approve {
                user: self.user.clone(),
                requester: requester.clone(),
            })
            .await?
        {
            Ok(_) => {}
            // RFC 6121 §3.1.5: an approval with no pending request is ignored.
            Err(Refusal::NoPendingRequest(..)) => return Ok(()),
            Err(e) => return Err(RouteError::Refused(e)),
        }
        r.notify_subscription(&self.bare, &requester, SubscriptionKind::Subscribed);
        Ok(())
    }

    /// Stop seeing `jid`.
    pub async fn unsubscribe(&self, jid: &str) -> Result<(), RouteError> {
        let contact = self.contact_jid(jid)?;
        let r = &self.router;
        r.write_ok(Command::Unsubscribe {
            user: self.user.clone(),
            contact: contact.clone(),
        })
        .await?;
        r.notify_subscription(&self.bare, &contact, SubscriptionKind::Unsubscribe);
        Ok(())
    }

    /// Deny or revoke `jid`'s subscription to this user.
    pub async fn revoke(&self, jid: &str) -> Result<(), RouteError> {
        let watcher = self.contact_jid(jid)?;
        let r = &self.router;
        r.write_ok(Command::Revoke {
            user: self.user.clone(),
            watcher: watcher.clone(),
        })
        .await?;
        r.notify_subscription(&self.bare, &watcher, SubscriptionKind::Unsubscribed);
        Ok(())
    }
}

impl Router {
    /// Tell `to`'s available sessions about a subscription state change `from` made.
    fn notify_subscription(&self, from: &str, to: &str, kind: SubscriptionKind) {
        let Ok(Target::User { user, .. }) = self.target(to) else {
            return;
        };
        let dir = self.inner.dir.lock();
        for r in self.resources_for(&dir, &user, None, false) {
            self.send_to(
                &dir,
                &user,
                &r,
                Delivery::Subscription {
                    from: from.to_string(),
                    kind,
                },
            );
        }
    }
}
