//! The replicated state of a presenced cluster: openraft (kept inside this crate),
//! its log (segment files behind the storage trait) and in-memory state machine with
//! its snapshot file, the gRPC transport between nodes, and
//! [`ClusterNode`], the handle the rest of the node uses.

pub mod auth;
mod batcher;
mod compaction;
mod entry_cache;
pub mod format;
mod machine;
mod network;
mod node;
mod service;
/// Public only for the fuzz targets (`fuzz/`): the snapshot file reader.
#[doc(hidden)]
pub mod snapshot;
mod store;

/// The pre-vote messages (public for the fuzz targets).
#[doc(hidden)]
pub use node::election::{PreVoteRequest, PreVoteResponse};
pub use node::{
    ClusterConfig, ClusterError, ClusterNode, MembershipChange, MembershipView, RaftTuning,
};

pub type NodeId = u64;
pub type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// openraft's type configuration for presenced.
    pub TypeConfig:
        D = presenced_model::Command,
        R = presenced_model::Outcome,
        SnapshotData = tokio::fs::File,
);
