//! Peer links: one gRPC stream from this node to every other member, carrying this
//! node's session directory changes, deliveries to sessions on the peer, and
//! heartbeats. The receiving side applies frames in order and drops the sender's
//! sessions when the stream ends or falls silent.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use presenced_cluster::NodeId;
use presenced_cluster::auth::AddSecret;
use presenced_proto::MAX_MESSAGE_BYTES;
use presenced_proto::router::peer_client::PeerClient;
use presenced_proto::router::peer_server::{Peer, PeerServer as GenServer};
use presenced_proto::router::{Frame, LinkClosed};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::Router;
pub use crate::peer_event::PeerEvent;

/// Events queued for one peer before the link is considered hopelessly behind.
const PEER_QUEUE: usize = 100_000;
/// Events per frame at most.
const MAX_BATCH: usize = 512;

struct Link {
    addr: String,
    tx: mpsc::Sender<PeerEvent>,
    task: JoinHandle<()>,
    /// The format the link speaks now (a peer of the previous release: older).
    format: Arc<AtomicU32>,
}

/// Outbound queues, one per peer.
#[derive(Default)]
pub(crate) struct Peers {
    links: Mutex<HashMap<NodeId, Link>>,
    /// Set by [`Router::halt`]: no link is kept or opened any more.
    halted: std::sync::atomic::AtomicBool,
}

impl Peers {
    /// Close every link and open none again (the node is going away).
    pub fn halt(&self) {
        self.halted.store(true, std::sync::atomic::Ordering::SeqCst);
        for (_, l) in self.links.lock().drain() {
            l.task.abort();
        }
    }

    fn is_halted(&self) -> bool {
        self.halted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the link to `node` carries acknowledged forwarding ([`crate::forward`]).
    pub fn forwards(&self, node: NodeId) -> bool {
        self.links
            .lock()
            .get(&node)
            .is_some_and(|l| crate::wire::forwards(l.format.load(Ordering::Relaxed)))
    }

    pub fn send(&self, node: NodeId, ev: PeerEvent) -> bool {
        let links = self.links.lock();
        let Some(l) = links.get(&node) else {
            return false;
        };
        match l.tx.try_send(ev) {
            Ok(()) => true,
            Err(_) => {
                metrics::counter!("presenced_peer_events_dropped_total").increment(1);
                false
            }
        }
    }

    pub fn broadcast(&self, ev: PeerEvent) {
        let links = self.links.lock();
        for l in links.values() {
            if l.tx.try_send(ev.clone()).is_err() {
                metrics::counter!("presenced_peer_events_dropped_total").increment(1);
            }
        }
    }
}

/// Keep one link per member of the Raft membership (voters and learners).
pub(crate) fn spawn_links(router: Router) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if router.inner.peers.is_halted() {
                return;
            }
            let me = router.node_id();
            let view = router.inner.node.membership();
            let want: HashMap<NodeId, String> = view
                .voters
                .into_iter()
                .chain(view.learners)
                .filter(|(id, _)| *id != me)
                .collect();
            let mut links = router.inner.peers.links.lock();
            links.retain(|id, l| {
                let keep = want.get(id) == Some(&l.addr);
                if !keep {
                    l.task.abort();
                }
                keep
            });
            for (id, addr) in want {
                if links.contains_key(&id) {
                    continue;
                }
                let (tx, rx) = mpsc::channel(PEER_QUEUE);
                let format = Arc::new(AtomicU32::new(crate::wire::FORMAT));
                let task = tokio::spawn(run_link(
                    router.clone(),
                    id,
                    addr.clone(),
                    rx,
                    format.clone(),
                ));
                links.insert(
                    id,
                    Link {
                        addr,
                        tx,
                        task,
                        format,
                    },
                );
            }
        }
    });
}

type Client = PeerClient<InterceptedService<Channel, AddSecret>>;

async fn connect(router: &Router, peer: NodeId, addr: &str) -> Result<Client, String> {
    let ep = presenced_tls::endpoint(addr)?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2));
    let ch = router
        .inner
        .node
        .transport()
        .connect(&ep, presenced_tls::Expect::Node(peer))
        .await
        .map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            msg
        })?;
    let auth = AddSecret::new(&router.inner.cfg.secret)?;
    Ok(PeerClient::with_interceptor(ch, auth)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

fn frame(router: &Router, epoch: u64, format: u32, events: &[PeerEvent]) -> Frame {
    Frame {
        from_node: router.node_id(),
        epoch,
        events: crate::wire::encode_for(format, router.domains(), events),
        format,
    }
}

async fn run_link(
    router: Router,
    peer: NodeId,
    addr: String,
    mut rx: mpsc::Receiver<PeerEvent>,
    shared_format: Arc<AtomicU32>,
) {
    let heartbeat = router.inner.cfg.peer_heartbeat;
    let mut backoff = Duration::from_millis(100);
    // This release's format, until the peer refuses it (a peer one release older).
    let mut format = crate::wire::FORMAT;
    loop {
        let mut client = match connect(&router, peer, &addr).await {
            Ok(c) => c,
            Err(e) => {
                // It may come back upgraded: start over with this release's format.
                format = crate::wire::FORMAT;
                shared_format.store(format, Ordering::Relaxed);
                tracing::debug!(peer, %addr, "peer link: cannot connect: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let epoch = rand::random::<u64>();
        let (ftx, frx) = mpsc::channel::<Frame>(64);
        // The hello goes first; events queued meanwhile follow it, so the peer's copy
        // converges on this node's directory.
        let _ = ftx
            .send(frame(&router, epoch, format, &[router.hello()]))
            .await;
        // What the last link may have lost: every message still held for this peer
        // (it delivers each once, whichever copy arrives first).
        if crate::wire::forwards(format) {
            for chunk in router.forward_again(peer).chunks(MAX_BATCH) {
                let _ = ftx.send(frame(&router, epoch, format, chunk)).await;
            }
        }
        let call = tokio::spawn(async move {
            client
                .link(tokio_stream::wrappers::ReceiverStream::new(frx))
                .await
        });
        tracing::info!(peer, %addr, "peer link up");
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut call = call;
        loop {
            tokio::select! {
                r = &mut call => {
                    match r {
                        Ok(Ok(_)) => tracing::info!(peer, "peer link closed by the peer"),
                        Ok(Err(s)) => {
                            tracing::info!(peer, "peer link failed: {}", s.message());
                            let refused = (s.code() == tonic::Code::InvalidArgument).then(|| s.message());
                            let next = crate::wire::next_format(format, refused);
                            if next != format {
                                tracing::warn!(peer, format = next, "peer reads only the previous peer-link format: speaking it until it is upgraded");
                                metrics::counter!("presenced_peer_format_fallbacks_total").increment(1);
                                format = next;
                                shared_format.store(format, Ordering::Relaxed);
                                if !crate::wire::forwards(format) {
                                    router.forward_released(peer);
                                }
                            }
                        }
                        Err(e) => tracing::info!(peer, "peer link task failed: {e}"),
                    }
                    break;
                }
                ev = tokio::time::timeout(heartbeat, rx.recv()) => {
                    match ev {
                        Ok(Some(ev)) => {
                            batch.push(ev);
                            // Let the sessions that are ready run first: what they
                            // send meanwhile joins this frame (under load, frames grow;
                            // idle, this costs one pass of the run queue).
                            tokio::task::yield_now().await;
                            while batch.len() < MAX_BATCH {
                                match rx.try_recv() {
                                    Ok(ev) => batch.push(ev),
                                    Err(_) => break,
                                }
                            }
                        }
                        Ok(None) => { call.abort(); return; }
                        Err(_) => batch.push(PeerEvent::Heartbeat),
                    }
                    crate::hot::PEER_BATCH_EVENTS.record(batch.len() as f64);
                    let f = frame(&router, epoch, format, &batch);
                    batch.clear();
                    if ftx.send(f).await.is_err() {
                        break;
                    }
                }
            }
        }
        call.abort();
        backoff = Duration::from_millis(100);
        tokio::time::sleep(backoff).await;
    }
}

/// The inbound side of the links.
pub struct PeerService(Router);

pub type PeerServer =
    InterceptedService<GenServer<PeerService>, presenced_cluster::auth::NodeGuard>;

pub(crate) fn server(router: Router) -> PeerServer {
    let check = router.inner.node.node_guard();
    let svc = GenServer::new(PeerService(router))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    InterceptedService::new(svc, check)
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn link(&self, req: Request<Streaming<Frame>>) -> Result<Response<LinkClosed>, Status> {
        let router = &self.0;
        let dead_after = router.inner.cfg.peer_dead_after;
        let caller = presenced_tls::peer_info(&req).cloned();
        let mut stream = req.into_inner();
        let mut current: Option<(NodeId, u64)> = None;
        let outcome: Result<&str, Status> = loop {
            let f = match tokio::time::timeout(dead_after, stream.message()).await {
                Err(_) => break Ok("silent for too long"),
                Ok(Err(s)) => {
                    break Ok(if s.code() == tonic::Code::Cancelled {
                        "cancelled"
                    } else {
                        "stream error"
                    });
                }
                Ok(Ok(None)) => break Ok("closed"),
                Ok(Ok(Some(f))) => f,
            };
            if f.from_node == router.node_id()
                || current.is_some_and(|c| c != (f.from_node, f.epoch))
            {
                break Err(Status::invalid_argument(
                    "frame from an unexpected node or epoch",
                ));
            }
            let events = match crate::wire::decode(f.format, router.domains(), &f.events) {
                Ok(e) => e,
                Err(e) => break Err(Status::invalid_argument(format!("undecodable frame: {e}"))),
            };
            if current.is_none() {
                // A node certificate speaks only for its own node.
                if let Err(s) = presenced_tls::check_claim(caller.as_ref(), f.from_node) {
                    break Err(s);
                }
                if !matches!(events.first(), Some(PeerEvent::Hello { .. })) {
                    break Err(Status::invalid_argument("a link must start with a hello"));
                }
                router.peer_linked(f.from_node, f.epoch);
                current = Some((f.from_node, f.epoch));
            }
            for ev in events {
                router.on_peer_event(f.from_node, ev);
            }
        };
        if let Some((node, epoch)) = current {
            router.peer_lost(node, epoch);
        }
        match outcome {
            Ok(reason) => Ok(Response::new(LinkClosed {
                reason: reason.to_string(),
            })),
            Err(s) => {
                metrics::counter!("presenced_peer_bad_frames_total").increment(1);
                tracing::warn!("peer link refused: {}", s.message());
                Err(s)
            }
        }
    }
}
