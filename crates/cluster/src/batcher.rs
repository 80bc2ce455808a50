//! Proposal batching: concurrent writes on a node are grouped into one `Command::Batch`,
//! proposed as one log entry on the leader (or forwarded to it in one call from a
//! follower), so one RPC, one append, one fsync, one replication round and one apply
//! serve many callers. On the leader, batches forwarded by followers join the leader's
//! own next batch (flattened), so each commit round carries one entry.
//!
//! On the leader at most `MAX_IN_FLIGHT` batches are under way at once; while one is,
//! new writes queue up and form the next, larger batch. Batches thus grow with load,
//! and a lone write goes out at once, unbatched: proposed from the caller's own task
//! when nothing is queued or in flight (no hand-off to the batcher's task and back: on
//! a 2-core machine each thread wake-up costs tens of microseconds).
//!
//! A follower may have up to `FORWARDS_IN_FLIGHT` batches forwarded at once: they join
//! the leader's queue and are merged into its next entry there, so a follower's writes
//! wait for one commit round, not for the end of its previous forward too (with one
//! forward at a time, 16 writers spread over 3 nodes made 3.9k writes/s; see
//! docs/benchmarks.md).

use std::sync::{Arc, Weak};

use presenced_model::{Command, Outcome, Reply};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::node::{ClusterError, ClusterNode};

const MAX_IN_FLIGHT: usize = 1;
const FORWARDS_IN_FLIGHT: usize = 4;
const MAX_BATCH: usize = 1024;

type Answer = Result<(Outcome, u64), ClusterError>;

struct Proposal {
    cmd: Command,
    /// Forwarded by a follower: propose here or answer NotLeader, never forward again.
    local_only: bool,
    /// Encoded size of `cmd`.
    bytes: usize,
    reply: oneshot::Sender<Answer>,
}

pub(crate) struct Batcher {
    tx: mpsc::Sender<Proposal>,
    node: Weak<ClusterNode>,
    /// One permit per batch under way, shared by the batcher's task and the callers
    /// that propose a lone write themselves.
    in_flight: Permits,
}

/// The batches a node may have under way: as the leader (`MAX_IN_FLIGHT`) and as a
/// follower forwarding to the leader (`FORWARDS_IN_FLIGHT`).
#[derive(Clone)]
struct Permits {
    leading: Arc<Semaphore>,
    forwarding: Arc<Semaphore>,
}

impl Permits {
    fn new() -> Self {
        Permits {
            leading: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            forwarding: Arc::new(Semaphore::new(FORWARDS_IN_FLIGHT)),
        }
    }

    fn pick(&self, node: &Weak<ClusterNode>) -> &Arc<Semaphore> {
        match node.upgrade() {
            Some(n) if !n.is_leader() => &self.forwarding,
            _ => &self.leading,
        }
    }
}

impl Batcher {
    pub(crate) fn start(node: Weak<ClusterNode>) -> Self {
        let (tx, rx) = mpsc::channel(16 * MAX_BATCH);
        let in_flight = Permits::new();
        tokio::spawn(run(node.clone(), rx, in_flight.clone()));
        Batcher {
            tx,
            node,
            in_flight,
        }
    }

    /// Propose `cmd` (with whatever else is waiting) wherever the leader is, and wait for
    /// its own outcome and the index of the log entry that carried it.
    pub(crate) async fn submit(&self, cmd: Command) -> Answer {
        self.send(cmd, false).await
    }

    /// Like `submit`, for a command forwarded by another node: `NotLeader` unless this
    /// node leads. A `Command::Batch` answers with a `Reply::Batch` of its own outcomes.
    pub(crate) async fn submit_local(&self, cmd: Command) -> Answer {
        self.send(cmd, true).await
    }

    async fn send(&self, cmd: Command, local_only: bool) -> Answer {
        let bytes = crate::network::encoded_len(&cmd);
        if bytes > presenced_proto::MAX_COMMAND_BYTES {
            return Box::pin(self.send_split(cmd, bytes, local_only)).await;
        }
        self.send_one(cmd, bytes, local_only).await
    }

    /// A bulk command too large for one log entry goes as consecutive parts; their
    /// replies are joined. Anything else that large is refused.
    async fn send_split(&self, cmd: Command, bytes: usize, local_only: bool) -> Answer {
        let name = cmd.name();
        let parts = cmd.split(presenced_proto::BATCH_BYTES);
        if parts.len() < 2 {
            return Err(ClusterError::Invalid(format!(
                "a {name} write of {bytes} bytes is larger than the {} bytes one write may carry",
                presenced_proto::MAX_COMMAND_BYTES
            )));
        }
        metrics::counter!("presenced_raft_split_writes_total").increment(1);
        let mut outcomes = Vec::with_capacity(parts.len());
        let mut index = 0;
        for p in parts {
            let (out, i) = Box::pin(self.send(p, local_only)).await?;
            outcomes.push(out);
            index = i;
        }
        Ok((presenced_model::join_replies(outcomes), index))
    }

    async fn send_one(&self, cmd: Command, bytes: usize, local_only: bool) -> Answer {
        let stopped = || ClusterError::Unavailable("this node is shutting down".into());
        // Idle: nothing queued and no batch under way. Propose here, holding the permit,
        // so what arrives meanwhile queues up for the next batch as usual.
        if self.tx.capacity() == self.tx.max_capacity()
            && let Ok(permit) = self.in_flight.pick(&self.node).clone().try_acquire_owned()
        {
            let node = self.node.upgrade().ok_or_else(stopped)?;
            let _permit = permit;
            metrics::histogram!("presenced_raft_proposal_batch").record(cmd.len() as f64);
            if local_only && !node.is_leader() {
                return Err(ClusterError::NotLeader);
            }
            // Boxed: the write path's futures are deep enough for rustc's layout limit.
            return Box::pin(node.propose_anywhere(cmd)).await;
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Proposal {
                cmd,
                local_only,
                bytes,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

async fn run(node: Weak<ClusterNode>, mut rx: mpsc::Receiver<Proposal>, in_flight: Permits) {
    while let Some(first) = rx.recv().await {
        let Ok(permit) = in_flight.pick(&node).clone().acquire_owned().await else {
            return;
        };
        // Cut by commands and by encoded bytes, so no log entry (and no RPC that
        // carries one) grows past what every node accepts.
        let mut size = first.cmd.len();
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while size < MAX_BATCH && bytes < presenced_proto::BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    size += p.cmd.len();
                    bytes += p.bytes;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let Some(node) = node.upgrade() else { return };
        tokio::spawn(async move {
            let _permit = permit;
            propose_batch(&node, batch).await;
        });
    }
}

trait Len {
    fn len(&self) -> usize;
}

impl Len for Command {
    /// Commands a proposal contributes to a flattened batch.
    fn len(&self) -> usize {
        match self {
            Command::Batch { commands } => commands.len(),
            _ => 1,
        }
    }
}

async fn propose_batch(node: &ClusterNode, mut batch: Vec<Proposal>) {
    if !node.is_leader() {
        // Forwarded proposals must not be forwarded again (no loops during elections).
        let (local, rest): (Vec<_>, Vec<_>) = batch.into_iter().partition(|p| p.local_only);
        for p in local {
            let _ = p.reply.send(Err(ClusterError::NotLeader));
        }
        batch = rest;
        if batch.is_empty() {
            return;
        }
    }
    metrics::histogram!("presenced_raft_proposal_batch")
        .record(batch.iter().map(|p| p.cmd.len()).sum::<usize>() as f64);
    if batch.len() == 1 {
        let p = batch.pop().expect("one proposal");
        let _ = p.reply.send(node.propose_anywhere(p.cmd).await);
        return;
    }
    // Flatten: nested batches (forwarded by followers) contribute their commands.
    let mut commands = Vec::new();
    let mut parts = Vec::with_capacity(batch.len());
    for p in batch {
        let nested = matches!(p.cmd, Command::Batch { .. });
        let start = commands.len();
        match p.cmd {
            Command::Batch { commands: inner } => commands.extend(inner),
            cmd => commands.push(cmd),
        }
        parts.push((p.reply, start, commands.len() - start, nested));
    }
    let n = commands.len();
    match node.propose_anywhere(Command::Batch { commands }).await {
        Ok((Ok(Reply::Batch { outcomes }), index)) if outcomes.len() == n => {
            let mut outcomes = outcomes.into_iter();
            for (reply, _, len, nested) in parts {
                let mine: Vec<Outcome> = outcomes.by_ref().take(len).collect();
                let answer = if nested {
                    Ok(Reply::Batch { outcomes: mine })
                } else {
                    mine.into_iter().next().expect("one outcome per command")
                };
                let _ = reply.send(Ok((answer, index)));
            }
        }
        Ok((other, _)) => {
            let e = ClusterError::Internal(format!("batch of {n} answered {other:?}"));
            for (reply, ..) in parts {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for (reply, ..) in parts {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
