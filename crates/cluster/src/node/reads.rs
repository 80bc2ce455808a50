//! Reads: local reads, linearizable reads through a read index, and the event feed.

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use presenced_model::{Event, State};
use presenced_proto::raft::ReadIndexRequest;
use tokio::sync::broadcast;

use super::writes::{remaining, status_to_error};
use super::{ClusterError, ClusterNode};

/// What a restored leader must have applied before it answers a read index.
#[derive(Debug, Clone, Copy)]
pub(super) struct StartedWith {
    /// The index of the last entry in the log at start.
    pub(super) last_index: u64,
    /// The term of this node's own committed vote at start (it led then).
    pub(super) leader_term: Option<u64>,
}

impl StartedWith {
    /// This node led at start and `term` is the term it was restored in: until the
    /// log it started with is applied, its commit point may lie before writes it
    /// acknowledged (see `read_index_as_leader`).
    pub(super) fn restored_in(&self, term: u64) -> bool {
        self.leader_term == Some(term)
    }
}

impl ClusterNode {
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

    /// The index a linearizable read must wait for, with this node caught up to it.
    pub async fn read_index(&self) -> Result<u64, ClusterError> {
        self.on_leader(
            "no leader confirmed a read index",
            || self.read_index_as_leader(),
            |(id, addr), deadline| async move {
                let mut c = self.peer(id, &addr)?;
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

    /// The read index, as the leader. openraft 0.9 restores a node that led before a
    /// restart as the leader of the same term at once, with the commit point it last
    /// stored (written lazily, so possibly behind what it had acknowledged): its read
    /// index (the commit point, or its term's first entry) may then lie before writes
    /// it acknowledged. Such a leader's log holds every write it acknowledged, and all
    /// of it commits once a quorum has it, so a read waits until the log the node
    /// started with is applied. Found by `every_acknowledged_write_survives_kill_9_of_
    /// all_nodes`: a read right after a restart of every node missed a roster item.
    /// Only in the term it was restored in: a later term's leader has its own first
    /// entry after everything committed before.
    pub(crate) async fn read_index_as_leader(&self) -> Result<u64, ClusterError> {
        let index = self.confirmed_read_index().await?;
        let floor = self.started_with.last_index;
        if index >= floor || !self.started_with.restored_in(self.metrics().current_term) {
            return Ok(index);
        }
        self.raft
            .wait(Some(self.timeout))
            .applied_index_at_least(Some(floor), "the log this node started with")
            .await
            .map_err(|e| {
                ClusterError::Unavailable(format!(
                    "no quorum: the log this node started with is not committed yet: {e}"
                ))
            })?;
        Ok(floor)
    }

    async fn confirmed_read_index(&self) -> Result<u64, ClusterError> {
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
}
