//! Health, status and metrics of this node.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::RaftMetrics;
use presenced_proto::raft::{NodeStatusReply, NodeStatusRequest};

use crate::{Node, NodeId};

use super::ClusterNode;

impl ClusterNode {
    /// openraft's own metrics (they stay inside this crate; others use `local_status`).
    pub(crate) fn metrics(&self) -> RaftMetrics<NodeId, Node> {
        self.raft.metrics().borrow().clone()
    }

    /// Resolves when the Raft core has stopped on a fatal error (a storage write that
    /// failed, a full disk), with the reason. The process should then exit, so that it
    /// is restarted once the cause is fixed, instead of staying up without Raft.
    ///
    /// Polled four times a second rather than woken by the metrics channel: openraft
    /// updates its metrics several times per write, and a waiter on them is one more
    /// thread wake-up per write (it showed in the context switches of a lone writer).
    pub async fn stopped_fatally(&self) -> String {
        let rx = self.raft.metrics();
        loop {
            if let Err(e) = &rx.borrow().running_state {
                return e.to_string();
            }
            if rx.has_changed().is_err() {
                return "the Raft core is gone".into();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
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
        // A leader restored at start (`reads.rs`) serves reads once its log is applied.
        if leader == self.id
            && self.started_with.restored_in(m.current_term)
            && applied < self.started_with.last_index
        {
            return Err(format!(
                "committing the log this node started with: {applied} of {} applied",
                self.started_with.last_index
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
    pub async fn peer_status(&self, id: NodeId, addr: &str) -> Result<NodeStatusReply, String> {
        let mut c = self.peer(id, addr).map_err(|e| e.to_string())?;
        let mut req = tonic::Request::new(NodeStatusRequest {});
        req.set_timeout(Duration::from_millis(800));
        match tokio::time::timeout(Duration::from_secs(1), c.node_status(req)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(s.message().to_string()),
            Err(_) => Err("no answer within 1s".into()),
        }
    }

    pub(super) fn spawn_metrics(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let rx = self.raft.metrics();
        tokio::spawn(async move {
            loop {
                let Some(node) = weak.upgrade() else { return };
                {
                    let m = rx.borrow().clone();
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
                // On a timer, not on every change of openraft's metrics: they change
                // several times per write, and each change was a wake-up of this task.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
}
