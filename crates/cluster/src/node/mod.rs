//! [`ClusterNode`]: this node's view of the replicated state and the only way the rest
//! of presenced reads or changes it.
//!
//! - `write` proposes a command: on the leader directly, otherwise forwarded to the
//!   leader over gRPC. Callers never see "forward to leader"; they get the outcome or
//!   `Unavailable` when no leader/quorum answers within the timeout.
//! - `read` is a local (possibly slightly stale) read; `linearizable` first obtains a
//!   read index from the leader (ReadIndex) and waits until this node has applied it.
//! - Membership changes are serialised on the leader, one at a time.

pub(crate) mod election;
mod forward;
mod membership;
mod reads;
mod start;
mod status;
mod writes;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::Raft;
use presenced_model::{Event, State};
use presenced_proto::raft::cluster_client::ClusterClient;
use presenced_storage::Store;
use tokio::sync::broadcast;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::auth::{AddSecret, CheckSecret};
use crate::{NodeId, TypeConfig};

pub use membership::{MembershipChange, MembershipView};

/// Marker at the start of the status message a non-leader returns for a leader-only call.
pub const NOT_LEADER: &str = "not the leader";

/// Raft timing and log retention.
///
/// openraft 0.9 gives a follower a leader lease of `election_max_ms`: it refuses votes
/// until the lease has run out. This node's election driver (`election.rs`) stands
/// after the lease plus a delay drawn for each attempt (up to `election_min_ms / 2`),
/// once a pre-vote finds a majority; openraft's own timer (lease plus a timeout drawn
/// once from `election_min_ms..election_max_ms`) is the fallback.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot for slow followers.
    pub keep_logs: u64,
    /// Also build a snapshot once the log after the last one holds this many bytes.
    pub snapshot_log_bytes: u64,
    /// Keep at most this many bytes of log behind a snapshot (and `keep_logs` entries).
    pub keep_log_bytes: u64,
    /// Applied-log events buffered for consumers; one that falls further behind
    /// resynchronises from the state.
    pub event_buffer: usize,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 100,
            election_min_ms: 300,
            election_max_ms: 600,
            snapshot_every: 20_000,
            keep_logs: 2_000,
            snapshot_log_bytes: 32 << 20,
            keep_log_bytes: 16 << 20,
            event_buffer: 16_384,
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
    /// TLS between the nodes (and for operators), or plain text when asked for.
    pub transport: presenced_tls::Transport,
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
    peers: Mutex<HashMap<(NodeId, String), PeerClient>>,
    /// Proposal streams to the leader (`forward.rs`).
    forwarding: forward::Forwarding,
    pub(crate) transport: presenced_tls::Transport,
    membership_lock: tokio::sync::Mutex<()>,
    batcher: crate::batcher::Batcher,
    timeout: Duration,
    store: Arc<dyn Store>,
    /// The last entry of this node's log (the log store keeps it) and the timing of the
    /// elections this node starts (`election.rs`).
    last_log: election::LastLog,
    /// This node's log when it started, and the term it led then (`reads.rs`).
    started_with: reads::StartedWith,
    election: election::ElectionTiming,
    elections_started: AtomicU64,
}
