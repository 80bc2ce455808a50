//! Membership: initialising the cluster, adding and removing nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use presenced_model::Command;
use presenced_proto::raft::{MembershipReply, MembershipRequest, NodeAddr, membership_request};
use tracing::Instrument;

use crate::{Node, NodeId};

use super::writes::{not_sent, remaining, status_to_error};
use super::{ClusterError, ClusterNode};

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

/// How long a joining node may make no progress before `add-node` gives up on it.
const CATCH_UP_STALL: Duration = Duration::from_secs(60);

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

impl ClusterNode {
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
            |(id, addr), _| {
                let change = &change;
                async move {
                    let mut c = self.peer(id, &addr)?;
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
                    self.snapshot_current_membership().await;
                    let resp = self.raft.add_learner(*id, Node { addr: addr.clone() }, false).await.map_err(fail)?;
                    self.wait_caught_up(*id, resp.log_id.index, CATCH_UP_STALL).await.map_err(|e| {
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

    /// Make sure the snapshot a joining node may be sent already holds the current
    /// membership. A snapshot from before a node was removed still lists it as a voter:
    /// a wiped node re-added with the same id would install it, believe itself a voter,
    /// and start elections that depose the leader. Best effort, bounded wait.
    async fn snapshot_current_membership(&self) {
        let (membership, snapshot) = {
            let m = self.raft.metrics().borrow().clone();
            (
                m.membership_config.log_id().map(|l| l.index),
                m.snapshot.map(|l| l.index),
            )
        };
        let (Some(membership), Some(snapshot)) = (membership, snapshot) else {
            return;
        };
        if snapshot >= membership {
            return;
        }
        tracing::info!(
            snapshot,
            membership,
            "building a snapshot with the current membership first"
        );
        if self.raft.trigger().snapshot().await.is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut rx = self.raft.metrics();
        while Instant::now() < deadline {
            if rx
                .borrow_and_update()
                .snapshot
                .is_some_and(|l| l.index >= membership)
            {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), rx.changed()).await;
        }
    }

    /// Wait until the leader has replicated at least up to `index` to learner `id`, for
    /// as long as it makes progress: give up once its matched index has not moved for
    /// `stall` (a large state takes as long as it takes; a dead or misconfigured node
    /// is noticed).
    async fn wait_caught_up(&self, id: NodeId, index: u64, stall: Duration) -> Result<(), String> {
        let mut deadline = Instant::now() + stall;
        let mut last = None;
        let within = stall;
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
                if matched.map(|l| l.index) != last {
                    last = matched.map(|l| l.index);
                    deadline = Instant::now() + stall;
                }
            }
            let left = remaining(deadline);
            if left.is_zero() {
                return Err(format!(
                    "made no progress catching up for {}s (is it running and using this cluster's secret?)",
                    within.as_secs()
                ));
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), rx.changed()).await;
        }
    }
}
