//! [`ClusterNode`]: this node's view of the replicated state and the only way the rest
//! of presenced reads or changes it.
//!
//! - `write` proposes a command: on the leader directly, otherwise forwarded to the
//!   leader over gRPC. Callers never see "forward to leader"; they get the outcome or
//!   `Unavailable` when no leader/quorum answers within the timeout.
//! - `read` is a local (possibly slightly stale) read; `linearizable` first obtains a
//!   read index from the leader (ReadIndex) and waits until this node has applied it.
//! - Membership changes are serialised on the leader, one at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Raft, RaftMetrics, ServerState, SnapshotPolicy};
use presenced_model::{Command, Event, Outcome, State};
use presenced_proto::raft::cluster_client::ClusterClient;
use presenced_proto::raft::cluster_server::ClusterServer;
use presenced_proto::raft::raft_server::RaftServer;
use presenced_proto::raft::{
    MembershipReply, MembershipRequest, NodeAddr, NodeStatusReply, NodeStatusRequest,
    ProposeRequest, ReadIndexRequest, membership_request,
};
use presenced_storage::{SledStore, Store};
use tokio::sync::broadcast;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::Instrument;

use crate::auth::{AddSecret, CheckSecret};
use crate::network::{Network, channel};
use crate::service::{ClusterService, RaftService};
use crate::store::{LogStore, StateMachine};
use crate::{Node, NodeId, TypeConfig};

/// Marker at the start of the status message a non-leader returns for a leader-only call.
pub const NOT_LEADER: &str = "not the leader";

/// Raft timing and log retention.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot for slow followers.
    pub keep_logs: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 150,
            election_min_ms: 800,
            election_max_ms: 1600,
            snapshot_every: 20_000,
            keep_logs: 2_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    /// host:port where peers reach this node's gRPC server.
    pub advertise: String,
    pub data_dir: PathBuf,
    pub secret: String,
    pub domain: String,
    pub raft: RaftTuning,
    /// sled page-cache size.
    pub cache_bytes: u64,
    /// How long a write or linearizable read may wait for a leader and a quorum.
    pub timeout: Duration,
}

/// Failures of the replication layer (not refusals by the state machine).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// No leader, no quorum, or the leader did not answer in time.
    #[error("{0}")]
    Unavailable(String),
    /// The request itself is wrong (bad node id, bad address, ...).
    #[error("{0}")]
    Invalid(String),
    /// Refused in the current cluster state (another membership change running, ...).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Internal(String),
    /// This node does not lead; nothing was proposed (a forwarding peer retries).
    #[error("{NOT_LEADER}")]
    NotLeader,
}

impl From<ClusterError> for tonic::Status {
    fn from(e: ClusterError) -> tonic::Status {
        match e {
            ClusterError::Unavailable(m) => tonic::Status::unavailable(m),
            ClusterError::Invalid(m) => tonic::Status::invalid_argument(m),
            ClusterError::Conflict(m) => tonic::Status::failed_precondition(m),
            ClusterError::NotFound(m) => tonic::Status::not_found(m),
            ClusterError::Internal(m) => tonic::Status::internal(m),
            ClusterError::NotLeader => tonic::Status::failed_precondition(NOT_LEADER),
        }
    }
}

#[derive(Debug, Clone)]
pub enum MembershipChange {
    Add(NodeId, String),
    Remove(NodeId),
}

/// Voters and learners with their addresses.
#[derive(Debug, Clone, Default)]
pub struct MembershipView {
    pub voters: BTreeMap<NodeId, String>,
    pub learners: BTreeMap<NodeId, String>,
}

impl From<MembershipView> for MembershipReply {
    fn from(v: MembershipView) -> Self {
        let conv = |m: BTreeMap<NodeId, String>| {
            m.into_iter()
                .map(|(id, addr)| NodeAddr { id, addr })
                .collect()
        };
        MembershipReply {
            voters: conv(v.voters),
            learners: conv(v.learners),
        }
    }
}

impl From<MembershipReply> for MembershipView {
    fn from(r: MembershipReply) -> Self {
        let conv = |m: Vec<NodeAddr>| m.into_iter().map(|n| (n.id, n.addr)).collect();
        MembershipView {
            voters: conv(r.voters),
            learners: conv(r.learners),
        }
    }
}

type PeerClient = ClusterClient<InterceptedService<Channel, AddSecret>>;

pub struct ClusterNode {
    pub id: NodeId,
    pub domain: String,
    pub advertise: String,
    pub(crate) raft: Raft<TypeConfig>,
    state: Arc<RwLock<State>>,
    events: broadcast::Sender<Event>,
    committed: Arc<AtomicU64>,
    applied: Arc<AtomicU64>,
    secret: AddSecret,
    check: CheckSecret,
    peers: Mutex<HashMap<String, PeerClient>>,
    membership_lock: tokio::sync::Mutex<()>,
    batcher: crate::batcher::Batcher,
    timeout: Duration,
    store: Arc<dyn Store>,
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// True when a failed forward certainly never reached the peer (so retrying cannot
/// apply a command twice).
fn not_sent(s: &tonic::Status) -> bool {
    if s.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = src {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
            )
        {
            return true;
        }
        let text = e.to_string();
        if text.contains("tcp connect error") || text.contains("Connection refused") {
            return true;
        }
        src = e.source();
    }
    s.message().contains("tcp connect error")
}

impl ClusterNode {
    /// Open this node's store and start Raft. The node takes part in the cluster as soon
    /// as its gRPC server (see [`ClusterNode::grpc`]) runs.
    pub async fn start(cfg: ClusterConfig) -> Result<Arc<Self>, ClusterError> {
        let store: Arc<dyn Store> = Arc::new(
            SledStore::open(&cfg.data_dir, cfg.cache_bytes).map_err(|e| {
                ClusterError::Internal(format!(
                    "cannot open data dir {}: {e}",
                    cfg.data_dir.display()
                ))
            })?,
        );
        let (events, _) = broadcast::channel(4096);
        let committed = Arc::new(AtomicU64::new(0));
        let applied = Arc::new(AtomicU64::new(0));
        let (sm, state) = StateMachine::open(store.clone(), events.clone(), applied.clone())
            .map_err(|e| {
                ClusterError::Internal(format!(
                    "cannot load state from {}: {e}",
                    cfg.data_dir.display()
                ))
            })?;
        if let Some(d) = state.read().unwrap_or_else(|p| p.into_inner()).domain()
            && d != cfg.domain
        {
            return Err(ClusterError::Invalid(format!(
                "data dir {} belongs to domain {d}, but the config says {}",
                cfg.data_dir.display(),
                cfg.domain
            )));
        }
        let log = LogStore::new(store.clone(), committed.clone());
        let t = &cfg.raft;
        let config = openraft::Config {
            cluster_name: format!("presenced-{}", cfg.domain),
            heartbeat_interval: t.heartbeat_ms,
            election_timeout_min: t.election_min_ms,
            election_timeout_max: t.election_max_ms,
            install_snapshot_timeout: 10_000,
            max_payload_entries: 512,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every),
            max_in_snapshot_log_to_keep: t.keep_logs,
            snapshot_max_chunk_size: 1024 * 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Invalid(format!("raft settings: {e}")))?;
        let secret = AddSecret::new(&cfg.secret).map_err(ClusterError::Invalid)?;
        let raft = Raft::new(
            cfg.node_id,
            Arc::new(config),
            Network {
                secret: secret.clone(),
            },
            log,
            sm,
        )
        .await
        .map_err(|e| ClusterError::Internal(format!("raft start: {e}")))?;
        let node = Arc::new_cyclic(|me| ClusterNode {
            batcher: crate::batcher::Batcher::start(me.clone()),
            id: cfg.node_id,
            domain: cfg.domain.clone(),
            advertise: cfg.advertise.clone(),
            raft,
            state,
            events,
            committed,
            applied,
            check: CheckSecret::new(&cfg.secret),
            secret,
            peers: Mutex::new(HashMap::new()),
            membership_lock: tokio::sync::Mutex::new(()),
            timeout: cfg.timeout,
            store,
        });
        node.spawn_metrics();
        Ok(node)
    }

    /// The gRPC services peers call (Raft transport and cluster helpers), guarded by the
    /// cluster secret.
    pub fn grpc(self: &Arc<Self>) -> tonic::transport::server::Router {
        let raft = RaftServer::with_interceptor(RaftService(self.clone()), self.check.clone());
        let cluster =
            ClusterServer::with_interceptor(ClusterService(self.clone()), self.check.clone());
        tonic::transport::Server::builder()
            .add_service(raft)
            .add_service(cluster)
    }

    pub fn secret_check(&self) -> CheckSecret {
        self.check.clone()
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
        let _ = self.store.flush();
    }

    // ------------------------------------------------------------ reads

    /// Read the local replica (may trail the leader by a few milliseconds).
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Read after everything committed before the call is applied here.
    pub async fn linearizable<R>(&self, f: impl FnOnce(&State) -> R) -> Result<R, ClusterError> {
        self.read_index().await?;
        Ok(self.read(f))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn metrics(&self) -> RaftMetrics<NodeId, Node> {
        self.raft.metrics().borrow().clone()
    }

    /// Ready: a leader is known and this node has applied everything it knows committed.
    pub fn health(&self) -> Result<(), String> {
        let m = self.metrics();
        if let Err(e) = &m.running_state {
            return Err(format!("raft stopped: {e}"));
        }
        let Some(leader) = m.current_leader else {
            return Err("no leader known".into());
        };
        let applied = self.applied.load(Ordering::Relaxed);
        let committed = self.committed.load(Ordering::Relaxed);
        if applied < committed {
            return Err(format!(
                "applying: {applied} of {committed} committed entries"
            ));
        }
        if self.read(|s| s.domain().is_none()) {
            return Err(format!("cluster not initialised (leader {leader})"));
        }
        Ok(())
    }

    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    pub fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    pub fn membership(&self) -> MembershipView {
        let m = self.metrics();
        let mem = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
        let mut view = MembershipView::default();
        for (id, node) in mem.nodes() {
            if voters.contains(id) {
                view.voters.insert(*id, node.addr.clone());
            } else {
                view.learners.insert(*id, node.addr.clone());
            }
        }
        view
    }

    pub fn local_status(&self) -> NodeStatusReply {
        let m = self.metrics();
        NodeStatusReply {
            id: self.id,
            state: format!("{:?}", m.state),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied: m.last_applied.map_or(0, |l| l.index),
            current_leader: m.current_leader.unwrap_or(0),
            has_leader: m.current_leader.is_some(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Ask a peer for its status (short timeout: used to tell who answers).
    pub async fn peer_status(&self, addr: &str) -> Result<NodeStatusReply, String> {
        let mut c = self.peer(addr).map_err(|e| e.to_string())?;
        let mut req = tonic::Request::new(NodeStatusRequest {});
        req.set_timeout(Duration::from_millis(800));
        match tokio::time::timeout(Duration::from_secs(1), c.node_status(req)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(s.message().to_string()),
            Err(_) => Err("no answer within 1s".into()),
        }
    }

    fn peer(&self, addr: &str) -> Result<PeerClient, ClusterError> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = peers.get(addr) {
            return Ok(c.clone());
        }
        let ch = channel(addr).map_err(ClusterError::Invalid)?;
        let c = ClusterClient::with_interceptor(ch, self.secret.clone())
            .max_decoding_message_size(presenced_proto::MAX_MESSAGE_BYTES);
        peers.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    // ------------------------------------------------------------ writes

    /// Like [`ClusterNode::write`], and also wait until this node's replica has applied
    /// the command (read-your-writes on this node; a follower learns the commit point
    /// with the leader's next message, so this costs up to one more replication round).
    pub async fn write_visible(&self, cmd: Command) -> Result<Outcome, ClusterError> {
        let (out, index) = self.write_indexed(cmd).await?;
        self.raft
            .wait(Some(self.timeout))
            .applied_index_at_least(Some(index), "read-your-writes")
            .await
            .map_err(|e| {
                ClusterError::Unavailable(format!("committed, but not applied here yet: {e}"))
            })?;
        Ok(out)
    }

    /// Propose a command and wait until it is committed (and applied by the leader);
    /// returns the state machine's outcome. This node's replica may apply it a few
    /// milliseconds later: use [`ClusterNode::write_visible`] to read it back locally.
    pub async fn write(&self, cmd: Command) -> Result<Outcome, ClusterError> {
        self.write_indexed(cmd).await.map(|(out, _)| out)
    }

    async fn write_indexed(&self, cmd: Command) -> Result<(Outcome, u64), ClusterError> {
        let op = cmd.name();
        let span = tracing::info_span!("raft_command", op, node = self.id);
        let t = Instant::now();
        let res = self.batcher.submit(cmd).instrument(span).await;
        let result = match &res {
            Ok((Ok(_), _)) => "ok",
            Ok((Err(_), _)) => "refused",
            Err(_) => "error",
        };
        metrics::counter!("presenced_raft_proposals_total", "op" => op, "result" => result)
            .increment(1);
        metrics::histogram!("presenced_raft_proposal_seconds").record(t.elapsed().as_secs_f64());
        res
    }

    /// Propose `cmd` as one log entry: here if this node leads, otherwise on the leader
    /// (one forward, whatever the command holds). Waits for a leader up to the timeout.
    pub(crate) async fn propose_anywhere(
        &self,
        cmd: Command,
    ) -> Result<(Outcome, u64), ClusterError> {
        if self.is_leader() {
            // Propose here, moving the command (batches are big; cloning them showed in
            // profiles). Losing the leadership in between proposed nothing: retry is safe.
            return self.propose_local(cmd).await.map_err(|e| match e {
                ClusterError::NotLeader => ClusterError::Unavailable(
                    "the leadership moved while proposing; nothing was applied, retry".into(),
                ),
                e => e,
            });
        }
        self.on_leader(
            "write not committed",
            || self.propose_local(cmd.clone()),
            |addr, deadline| self.forward_propose(&cmd, addr, deadline),
        )
        .await
    }

    async fn forward_propose(
        &self,
        cmd: &Command,
        addr: String,
        deadline: Instant,
    ) -> Result<(Outcome, u64), ClusterError> {
        let mut c = self.peer(&addr)?;
        let command =
            crate::format::wire(cmd).map_err(|e| ClusterError::Internal(e.to_string()))?;
        let mut req = tonic::Request::new(ProposeRequest {
            command,
            format: crate::format::WIRE,
        });
        req.set_timeout(remaining(deadline).max(Duration::from_millis(100)));
        match c.propose(req).await {
            Ok(r) => {
                let r = r.into_inner();
                let out = crate::format::unwire(r.format, &r.outcome)
                    .map_err(|e| ClusterError::Internal(format!("bad outcome from leader: {e}")))?;
                Ok((out, r.log_index))
            }
            // Never reached the leader: safe to ask again.
            Err(s) if not_sent(&s) => Err(ClusterError::NotLeader),
            // A status made up on this side from a broken connection carries its cause
            // as source; one sent by the leader never does. Retrying could apply twice.
            Err(s)
                if std::error::Error::source(&s).is_some()
                    || s.code() == tonic::Code::Unavailable
                    || s.code() == tonic::Code::DeadlineExceeded =>
            {
                Err(ClusterError::Unavailable(format!(
                    "the leader at {addr} failed during the write ({}); it may or may not have been applied",
                    s.message()
                )))
            }
            Err(s) => Err(status_to_error(s)),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// Propose a command forwarded by a follower: batched with this node's own writes,
    /// `NotLeader` unless this node leads.
    pub(crate) async fn propose_forwarded(
        &self,
        cmd: Command,
    ) -> Result<(Outcome, u64), ClusterError> {
        self.batcher.submit_local(cmd).await
    }

    /// Where to forward a leader-only call now, if a leader other than this node is known.
    fn forward_target(&self) -> Option<String> {
        let m = self.metrics();
        let leader = m.current_leader?;
        if leader == self.id {
            return None;
        }
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    /// Run a leader-only call: `local` when this node leads or knows no leader (it may be
    /// the first to learn it won), else `remote` against the leader's address.
    /// `ClusterError::NotLeader` from either means "nothing was done, ask again", which
    /// repeats until a leader answers or the timeout passes.
    async fn on_leader<T, L, LF, R, RF>(
        &self,
        what: &str,
        mut local: L,
        mut remote: R,
    ) -> Result<T, ClusterError>
    where
        L: FnMut() -> LF,
        LF: std::future::Future<Output = Result<T, ClusterError>>,
        R: FnMut(String, Instant) -> RF,
        RF: std::future::Future<Output = Result<T, ClusterError>>,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            let res = match self.forward_target() {
                Some(addr) => remote(addr, deadline).await,
                None => local().await,
            };
            match res {
                Err(ClusterError::NotLeader) => {}
                other => return other,
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Unavailable(format!(
                    "no quorum: {what} within {:?} (no leader answered)",
                    self.timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Propose one log entry on this node; `NotLeader` (nothing proposed) when another
    /// node leads.
    pub(crate) async fn propose_local(&self, cmd: Command) -> Result<(Outcome, u64), ClusterError> {
        match tokio::time::timeout(self.timeout, self.raft.client_write(cmd)).await {
            Ok(Ok(r)) => Ok((r.data, r.log_id.index)),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(ClusterError::NotLeader)
            }
            Ok(Err(RaftError::APIError(e))) => Err(ClusterError::Internal(e.to_string())),
            Ok(Err(RaftError::Fatal(f))) => {
                Err(ClusterError::Unavailable(format!("raft stopped: {f}")))
            }
            Err(_) => Err(ClusterError::Unavailable(format!(
                "no quorum: write not committed within {:?}; it may still be applied",
                self.timeout
            ))),
        }
    }

    // ------------------------------------------------------------ linearizable reads

    /// The index a linearizable read must wait for, with this node caught up to it.
    pub async fn read_index(&self) -> Result<u64, ClusterError> {
        self.on_leader(
            "no leader confirmed a read index",
            || self.read_index_as_leader(),
            |addr, deadline| async move {
                let mut c = self.peer(&addr)?;
                let mut req = tonic::Request::new(ReadIndexRequest {});
                req.set_timeout(remaining(deadline).max(Duration::from_millis(100)));
                let index = match c.read_index(req).await {
                    Ok(r) => r.into_inner().index,
                    // Asking changes nothing, so any failure to reach the leader is worth a retry.
                    Err(s) if s.code() == tonic::Code::Unavailable => {
                        return Err(ClusterError::NotLeader);
                    }
                    Err(s) => return Err(status_to_error(s)),
                };
                self.raft
                    .wait(Some(remaining(deadline)))
                    .applied_index_at_least(Some(index), "linearizable read")
                    .await
                    .map_err(|e| {
                        ClusterError::Unavailable(format!("catching up to index {index}: {e}"))
                    })?;
                Ok(index)
            },
        )
        .await
    }

    pub(crate) async fn read_index_as_leader(&self) -> Result<u64, ClusterError> {
        match tokio::time::timeout(self.timeout, self.raft.ensure_linearizable()).await {
            Ok(Ok(id)) => Ok(id.map_or(0, |l| l.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                Err(ClusterError::NotLeader)
            }
            Ok(Err(RaftError::APIError(e))) => {
                Err(ClusterError::Unavailable(format!("no quorum: {e}")))
            }
            Ok(Err(RaftError::Fatal(f))) => {
                Err(ClusterError::Unavailable(format!("raft stopped: {f}")))
            }
            Err(_) => Err(ClusterError::Unavailable(format!(
                "no quorum: leadership not confirmed within {:?}",
                self.timeout
            ))),
        }
    }

    // ------------------------------------------------------------ membership

    /// Make this node the first member of a new cluster and record the domain.
    pub async fn init(&self) -> Result<NodeId, ClusterError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        if initialized && self.read(|s| s.domain().is_some()) {
            let leader = self
                .metrics()
                .current_leader
                .map(|l| format!(" (leader: node {l})"))
                .unwrap_or_default();
            return Err(ClusterError::Conflict(format!(
                "the cluster is already initialised{leader}"
            )));
        }
        if !initialized {
            let members = BTreeMap::from([(
                self.id,
                Node {
                    addr: self.advertise.clone(),
                },
            )]);
            self.raft
                .initialize(members)
                .await
                .map_err(|e| ClusterError::Conflict(format!("cannot initialise: {e}")))?;
            self.raft
                .wait(Some(self.timeout))
                .state(ServerState::Leader, "init")
                .await
                .map_err(|e| ClusterError::Unavailable(format!("no leader after init: {e}")))?;
        }
        match self
            .write(Command::Init {
                domain: self.domain.clone(),
            })
            .await?
        {
            Ok(_) => Ok(self.metrics().current_leader.unwrap_or(self.id)),
            Err(r) => Err(ClusterError::Conflict(r.to_string())),
        }
    }

    /// Add or remove a node; forwarded to the leader, one change at a time.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<MembershipView, ClusterError> {
        self.on_leader(
            "membership not changed",
            || self.change_membership_as_leader(change.clone()),
            |addr, _| {
                let change = &change;
                async move {
                    let mut c = self.peer(&addr)?;
                    let change = Some(match &change {
                        MembershipChange::Add(id, a) => membership_request::Change::Add(NodeAddr {
                            id: *id,
                            addr: a.clone(),
                        }),
                        MembershipChange::Remove(id) => membership_request::Change::Remove(*id),
                    });
                    match c.change_membership(MembershipRequest { change }).await {
                        Ok(r) => Ok(r.into_inner().into()),
                        Err(s) if not_sent(&s) => Err(ClusterError::NotLeader),
                        Err(s) => Err(status_to_error(s)),
                    }
                }
            },
        )
        .await
    }

    pub(crate) async fn change_membership_as_leader(
        &self,
        change: MembershipChange,
    ) -> Result<MembershipView, ClusterError> {
        let m = self.metrics();
        if m.current_leader != Some(self.id) {
            return Err(ClusterError::NotLeader);
        }
        let _guard = self.membership_lock.try_lock().map_err(|_| {
            ClusterError::Conflict(
                "another membership change is in progress; try again when it has finished".into(),
            )
        })?;
        let mem = m.membership_config.membership().clone();
        if mem.get_joint_config().len() > 1 {
            return Err(ClusterError::Conflict(
                "a membership change is still being committed; try again shortly".into(),
            ));
        }
        let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
        let span = tracing::info_span!("membership_change", change = ?change);
        let fail = |e: RaftError<NodeId, ClientWriteError<NodeId, Node>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ClusterError::NotLeader,
            other => ClusterError::Conflict(format!("membership change failed: {other}")),
        };
        async {
            match &change {
                MembershipChange::Add(id, addr) => {
                    if *id == 0 {
                        return Err(ClusterError::Invalid("node ids start at 1".into()));
                    }
                    if voters.contains(id) {
                        return Err(ClusterError::Conflict(format!("node {id} is already a voter")));
                    }
                    if addr.parse::<std::net::SocketAddr>().is_err() && !addr.contains(':') {
                        return Err(ClusterError::Invalid(format!("{addr:?} is not a host:port address")));
                    }
                    if let Some((other, _)) = mem.nodes().find(|(i, n)| n.addr == *addr && *i != id) {
                        return Err(ClusterError::Conflict(format!("address {addr} already belongs to node {other}")));
                    }
                    // Learner first: it catches up (by log or snapshot) before it can vote.
                    let resp = self.raft.add_learner(*id, Node { addr: addr.clone() }, false).await.map_err(fail)?;
                    self.wait_caught_up(*id, resp.log_id.index, Duration::from_secs(60)).await.map_err(|e| {
                        ClusterError::Unavailable(format!("node {id} at {addr} {e}; it stays a learner (remove-node {id} to drop it)"))
                    })?;
                    let mut next = voters.clone();
                    next.insert(*id);
                    self.raft.change_membership(next, false).await.map_err(fail)?;
                }
                MembershipChange::Remove(id) => {
                    let is_learner = mem.nodes().any(|(i, _)| i == id) && !voters.contains(id);
                    if !voters.contains(id) && !is_learner {
                        return Err(ClusterError::NotFound(format!("node {id} is not a member of the cluster")));
                    }
                    if is_learner {
                        self.raft
                            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([*id])), false)
                            .await
                            .map_err(fail)?;
                    } else {
                        if voters.len() == 1 {
                            return Err(ClusterError::Conflict("cannot remove the last voter".into()));
                        }
                        let mut next = voters.clone();
                        next.remove(id);
                        self.raft.change_membership(next, false).await.map_err(fail)?;
                    }
                }
            }
            Ok(self.membership())
        }
        .instrument(span)
        .await
    }

    /// Wait until the leader has replicated at least up to `index` to learner `id`.
    async fn wait_caught_up(&self, id: NodeId, index: u64, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let mut rx = self.raft.metrics();
        loop {
            {
                let m = rx.borrow_and_update();
                if m.current_leader != Some(self.id) {
                    return Err("could not be caught up: this node lost the leadership".into());
                }
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten());
                if matched.is_some_and(|l| l.index >= index) {
                    return Ok(());
                }
            }
            let left = remaining(deadline);
            if left.is_zero() {
                return Err(format!(
                    "did not catch up within {}s (is it running and using this cluster's secret?)",
                    within.as_secs()
                ));
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), rx.changed()).await;
        }
    }

    // ------------------------------------------------------------ metrics

    fn spawn_metrics(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let mut rx = self.raft.metrics();
        tokio::spawn(async move {
            loop {
                let Some(node) = weak.upgrade() else { return };
                {
                    let m = rx.borrow_and_update().clone();
                    metrics::gauge!("presenced_raft_term").set(m.current_term as f64);
                    metrics::gauge!("presenced_raft_last_log_index")
                        .set(m.last_log_index.unwrap_or(0) as f64);
                    metrics::gauge!("presenced_raft_applied_index")
                        .set(node.applied_index() as f64);
                    metrics::gauge!("presenced_raft_commit_index")
                        .set(node.committed_index() as f64);
                    metrics::gauge!("presenced_raft_is_leader")
                        .set(f64::from(u8::from(m.current_leader == Some(node.id))));
                    metrics::gauge!("presenced_raft_members")
                        .set(m.membership_config.membership().nodes().count() as f64);
                    metrics::gauge!("presenced_storage_bytes")
                        .set(node.store.size_on_disk() as f64);
                    metrics::gauge!("presenced_users").set(node.read(|s| s.user_count()) as f64);
                }
                drop(node);
                // Wake on change, and at least every second (commit/applied move without it).
                let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
            }
        });
    }
}

fn status_to_error(s: tonic::Status) -> ClusterError {
    let m = s.message().to_string();
    match s.code() {
        tonic::Code::InvalidArgument => ClusterError::Invalid(m),
        tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => ClusterError::Conflict(m),
        tonic::Code::NotFound => ClusterError::NotFound(m),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => ClusterError::Unavailable(m),
        tonic::Code::Unauthenticated => {
            ClusterError::Internal(format!("a peer refused this node's cluster secret: {m}"))
        }
        _ => ClusterError::Internal(m),
    }
}
