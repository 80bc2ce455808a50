//! Writes: proposing commands here or forwarding them to the leader, and running
//! leader-only calls wherever the leader is.

use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use presenced_model::{Command, Outcome};
use presenced_proto::raft::cluster_client::ClusterClient;
use tracing::Instrument;

use super::NOT_LEADER;
use crate::NodeId;
use crate::network::channel;

use super::{ClusterError, ClusterNode, PeerClient};

pub(super) fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// True when a failed forward certainly never reached the peer (so retrying cannot
/// apply a command twice).
pub(super) fn not_sent(s: &tonic::Status) -> bool {
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
    /// The client for node `id` at `addr` (cached: one connection per peer).
    pub(super) fn peer(&self, id: NodeId, addr: &str) -> Result<PeerClient, ClusterError> {
        let key = (id, addr.to_string());
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = peers.get(&key) {
            return Ok(c.clone());
        }
        let ch = channel(&self.transport, id, addr).map_err(ClusterError::Invalid)?;
        let c = ClusterClient::with_interceptor(ch, self.secret.clone())
            .max_decoding_message_size(presenced_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(presenced_proto::MAX_MESSAGE_BYTES);
        peers.insert(key, c.clone());
        Ok(c)
    }

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
        // Debug level: the admin call around it has its own span, and an info span per
        // write (its fields formatted by the fmt layer) showed in profiles at 64 writers.
        let span = tracing::debug_span!("raft_command", op, node = self.id);
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
            |(id, addr), deadline| self.forward_propose(&cmd, id, addr, deadline),
        )
        .await
    }

    /// Resolves once this node knows a leader other than `id` (never, if Raft stops).
    pub(super) async fn leader_moved_from(&self, id: NodeId) {
        let mut rx = self.raft.metrics();
        let moved = rx
            .wait_for(|m| m.current_leader.is_some_and(|l| l != id))
            .await
            .is_ok();
        if !moved {
            std::future::pending::<()>().await;
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
    pub(super) fn forward_target(&self) -> Option<(NodeId, String)> {
        let m = self.metrics();
        let leader = m.current_leader?;
        if leader == self.id {
            return None;
        }
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| (leader, n.addr.clone()))
    }

    /// Run a leader-only call: `local` when this node leads or knows no leader (it may be
    /// the first to learn it won), else `remote` against the leader's address.
    /// `ClusterError::NotLeader` from either means "nothing was done, ask again", which
    /// repeats until a leader answers or the timeout passes.
    pub(super) async fn on_leader<T, L, LF, R, RF>(
        &self,
        what: &str,
        mut local: L,
        mut remote: R,
    ) -> Result<T, ClusterError>
    where
        L: FnMut() -> LF,
        LF: std::future::Future<Output = Result<T, ClusterError>>,
        R: FnMut((NodeId, String), Instant) -> RF,
        RF: std::future::Future<Output = Result<T, ClusterError>>,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            let res = match self.forward_target() {
                Some(target) => remote(target, deadline).await,
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
}

pub(super) fn status_to_error(s: tonic::Status) -> ClusterError {
    let m = s.message().to_string();
    match s.code() {
        // The node we forwarded to stopped leading before it proposed anything (the
        // batcher answers so only then): ask the new leader. Found by scripts/chaos,
        // where it reached a client as "not the leader".
        tonic::Code::FailedPrecondition if m == NOT_LEADER => ClusterError::NotLeader,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_not_leader_is_retried_not_reported() {
        let e = status_to_error(tonic::Status::failed_precondition(NOT_LEADER));
        assert!(matches!(e, ClusterError::NotLeader), "{e:?}");
        let e = status_to_error(tonic::Status::failed_precondition("already a voter"));
        assert!(matches!(e, ClusterError::Conflict(_)), "{e:?}");
    }
}
