//! Proposal batching on the leader: concurrent writes are grouped into one
//! `Command::Batch` log entry, so one append, one fsync, one replication round and one
//! apply serve many callers. At most `MAX_IN_FLIGHT` batches are proposed at once;
//! while they are in flight, new proposals queue up and form the next, larger batch, so
//! batches grow with load and a lone write is proposed at once, unbatched.

use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};
use presenced_model::{Command, Outcome, Reply};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::node::{ClusterError, Leader};
use crate::{NodeId, TypeConfig};

const MAX_IN_FLIGHT: usize = 2;
const MAX_BATCH: usize = 512;

type Answer = Result<(Outcome, u64), Leader>;

struct Proposal {
    cmd: Command,
    reply: oneshot::Sender<Answer>,
}

#[derive(Clone)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Proposal>,
}

impl Batcher {
    pub(crate) fn start(raft: Raft<TypeConfig>, id: NodeId, timeout: Duration) -> Self {
        let (tx, rx) = mpsc::channel(16 * MAX_BATCH);
        tokio::spawn(run(raft, id, timeout, rx));
        Batcher { tx }
    }

    pub(crate) async fn propose(&self, cmd: Command) -> Answer {
        let (reply, rx) = oneshot::channel();
        let stopped = || {
            Leader::Err(ClusterError::Unavailable(
                "this node is shutting down".into(),
            ))
        };
        self.tx
            .send(Proposal { cmd, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

async fn run(
    raft: Raft<TypeConfig>,
    id: NodeId,
    timeout: Duration,
    mut rx: mpsc::Receiver<Proposal>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            metrics::histogram!("presenced_raft_proposal_batch").record(batch.len() as f64);
            if batch.len() == 1 {
                let p = batch.pop().expect("one proposal");
                let _ = p.reply.send(propose(&raft, id, p.cmd, timeout).await);
                return;
            }
            let (cmds, replies): (Vec<Command>, Vec<oneshot::Sender<Answer>>) =
                batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
            let n = cmds.len();
            match propose(&raft, id, Command::Batch { commands: cmds }, timeout).await {
                Ok((Ok(Reply::Batch { outcomes }), index)) if outcomes.len() == n => {
                    for (reply, out) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok((out, index)));
                    }
                }
                Ok((other, _)) => {
                    let e = ClusterError::Internal(format!("batch of {n} answered {other:?}"));
                    for reply in replies {
                        let _ = reply.send(Err(Leader::Err(e.clone())));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// Propose one log entry on this node; `NotLeader` when another node leads (nothing was
/// proposed, so the caller may safely send it to the leader).
async fn propose(raft: &Raft<TypeConfig>, id: NodeId, cmd: Command, timeout: Duration) -> Answer {
    match tokio::time::timeout(timeout, raft.client_write(cmd)).await {
        Ok(Ok(r)) => Ok((r.data, r.log_id.index)),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            let hint = match (f.leader_id, f.leader_node) {
                (Some(l), Some(n)) if l != id => format!("; leader at {}", n.addr),
                _ => String::new(),
            };
            Err(Leader::NotLeader(hint))
        }
        Ok(Err(RaftError::APIError(e))) => Err(Leader::Err(ClusterError::Internal(e.to_string()))),
        Ok(Err(RaftError::Fatal(f))) => Err(Leader::Err(ClusterError::Unavailable(format!(
            "raft stopped: {f}"
        )))),
        Err(_) => Err(Leader::Err(ClusterError::Unavailable(format!(
            "no quorum: write not committed within {timeout:?}; it may still be applied"
        )))),
    }
}
