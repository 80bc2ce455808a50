//! The gRPC servers a node runs for its peers: the Raft transport and the Cluster
//! helpers (propose, read index, status, membership) that followers forward to the leader.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use presenced_proto::raft::cluster_server::Cluster;
use presenced_proto::raft::raft_server::Raft as RaftRpc;
use presenced_proto::raft::{
    MembershipReply, MembershipRequest, NodeStatusReply, NodeStatusRequest, ProposeReply,
    ProposeRequest, RaftBytes, ReadIndexReply, ReadIndexRequest, membership_request,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status, Streaming};

use openraft::Vote;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use crate::node::election::PreVoteRequest;
use crate::node::{ClusterNode, MembershipChange};
use crate::{NodeId, TypeConfig};

pub struct RaftService(pub Arc<ClusterNode>);

fn parse<T: DeserializeOwned>(r: Request<RaftBytes>) -> Result<T, Status> {
    decode(&r.into_inner())
}

fn decode<T: DeserializeOwned>(r: &RaftBytes) -> Result<T, Status> {
    crate::format::unwire(r.format, &r.data)
        .map_err(|e| Status::invalid_argument(format!("bad raft message: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<RaftBytes, Status> {
    let data = crate::format::wire(v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(RaftBytes {
        data,
        format: crate::format::WIRE,
    })
}

fn reply<T: Serialize>(v: &T) -> Result<Response<RaftBytes>, Status> {
    encode(v).map(Response::new)
}

/// One append from a stream: checked like a unary `AppendEntries`, answered in turn.
async fn append_one(
    node: &ClusterNode,
    info: Option<&presenced_tls::PeerInfo>,
    msg: &RaftBytes,
) -> Result<RaftBytes, Status> {
    let rpc: AppendEntriesRequest<TypeConfig> = decode(msg)?;
    if let Some(claimed) = rpc.vote.leader_id().voted_for() {
        presenced_tls::check_claim(info, claimed)?;
    }
    encode(&node.raft.append_entries(rpc).await)
}

type Replies = Pin<Box<dyn Stream<Item = Result<RaftBytes, Status>> + Send>>;

/// Parse a Raft message and check that the node it speaks for (the vote's leader or
/// candidate) is the node whose certificate the connection carries.
fn parse_claimed<T: DeserializeOwned>(
    r: Request<RaftBytes>,
    vote: impl Fn(&T) -> &Vote<NodeId>,
) -> Result<T, Status> {
    let info = presenced_tls::peer_info(&r).cloned();
    let msg: T = parse(r)?;
    if let Some(claimed) = vote(&msg).leader_id().voted_for() {
        presenced_tls::check_claim(info.as_ref(), claimed)?;
    }
    Ok(msg)
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    type AppendStreamStream = Replies;

    /// Appends one after the other, each answered before the next is read. A bad one
    /// ends the stream with its error (the sender opens a new stream).
    async fn append_stream(
        &self,
        r: Request<Streaming<RaftBytes>>,
    ) -> Result<Response<Replies>, Status> {
        let info = presenced_tls::peer_info(&r).cloned();
        let state = (r.into_inner(), self.0.clone(), info, false);
        let replies = futures::stream::unfold(state, |(mut rx, node, info, failed)| async move {
            if failed {
                return None;
            }
            let msg = match rx.message().await {
                Ok(Some(m)) => m,
                Ok(None) | Err(_) => return None,
            };
            let res = append_one(&node, info.as_ref(), &msg).await;
            let failed = res.is_err();
            Some((res, (rx, node, info, failed)))
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn append_entries(&self, r: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let rpc = parse_claimed(r, |m: &AppendEntriesRequest<TypeConfig>| &m.vote)?;
        reply(&self.0.raft.append_entries(rpc).await)
    }

    async fn vote(&self, r: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let rpc = parse_claimed(r, |m: &VoteRequest<NodeId>| &m.vote)?;
        reply(&self.0.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, r: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let rpc = parse_claimed(r, |m: &InstallSnapshotRequest<TypeConfig>| &m.vote)?;
        reply(&self.0.raft.install_snapshot(rpc).await)
    }

    async fn pre_vote(&self, r: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let info = presenced_tls::peer_info(&r).cloned();
        let req: PreVoteRequest = parse(r)?;
        presenced_tls::check_claim(info.as_ref(), req.candidate)?;
        reply(&self.0.answer_pre_vote(req).await)
    }
}

pub struct ClusterService(pub Arc<ClusterNode>);

/// Proposals one `ProposeStream` may have under way at the leader before it stops
/// reading more (the follower's batcher sends one at a time; this bounds a peer that
/// does not).
const STREAM_PROPOSALS: usize = 1024;

/// Decode, propose and encode one forwarded proposal (for `Propose` and
/// `ProposeStream`).
async fn propose_one(node: &ClusterNode, r: &ProposeRequest) -> Result<ProposeReply, Status> {
    let cmd = crate::format::unwire(r.format, &r.command)
        .map_err(|e| Status::invalid_argument(format!("bad command: {e}")))?;
    let (outcome, index) = node.propose_forwarded(cmd).await.map_err(Status::from)?;
    let outcome = crate::format::wire(&outcome).map_err(|e| Status::internal(e.to_string()))?;
    Ok(ProposeReply {
        outcome,
        log_index: index,
        format: crate::format::WIRE,
        id: r.id,
        error_code: 0,
        error_message: String::new(),
    })
}

type ProposeReplies = Pin<Box<dyn Stream<Item = Result<ProposeReply, Status>> + Send>>;

#[tonic::async_trait]
impl Cluster for ClusterService {
    type ProposeStreamStream = ProposeReplies;

    async fn propose(&self, r: Request<ProposeRequest>) -> Result<Response<ProposeReply>, Status> {
        propose_one(&self.0, &r.into_inner())
            .await
            .map(Response::new)
    }

    /// Each proposal runs as its own task (they finish as their batches commit, in any
    /// order) and is answered with its id; a failed one is answered with its status.
    async fn propose_stream(
        &self,
        r: Request<Streaming<ProposeRequest>>,
    ) -> Result<Response<ProposeReplies>, Status> {
        let mut rx = r.into_inner();
        let (tx, replies) = tokio::sync::mpsc::channel::<ProposeReply>(64);
        let node = self.0.clone();
        let room = Arc::new(tokio::sync::Semaphore::new(STREAM_PROPOSALS));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = room.clone().acquire_owned().await else {
                    return;
                };
                let req = match rx.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) | Err(_) => return,
                };
                let (node, tx) = (node.clone(), tx.clone());
                tokio::spawn(async move {
                    let reply = propose_one(&node, &req)
                        .await
                        .unwrap_or_else(|s| ProposeReply {
                            id: req.id,
                            error_code: s.code() as i32,
                            error_message: s.message().to_string(),
                            ..Default::default()
                        });
                    let _ = tx.send(reply).await;
                    drop(permit);
                });
            }
        });
        let out = crate::network::receiver_stream(replies).map(Ok);
        Ok(Response::new(Box::pin(out)))
    }

    async fn read_index(
        &self,
        _r: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        let index = self.0.read_index_as_leader().await.map_err(Status::from)?;
        Ok(Response::new(ReadIndexReply { index }))
    }

    async fn node_status(
        &self,
        _r: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatusReply>, Status> {
        Ok(Response::new(self.0.local_status()))
    }

    async fn change_membership(
        &self,
        r: Request<MembershipRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let change = match r.into_inner().change {
            Some(membership_request::Change::Add(n)) => MembershipChange::Add(n.id, n.addr),
            Some(membership_request::Change::Remove(id)) => MembershipChange::Remove(id),
            None => return Err(Status::invalid_argument("empty membership change")),
        };
        let view = self
            .0
            .change_membership_as_leader(change)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(view.into()))
    }
}
