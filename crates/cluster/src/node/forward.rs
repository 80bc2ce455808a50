//! Forwarding a proposal from a follower to the leader: on one long-lived
//! `ProposeStream` per leader (requests numbered, replies matched by number), or as a
//! unary `Propose` call to a leader of an earlier release.
//!
//! A unary call costs the follower a call's set-up and three TLS records (HEADERS,
//! DATA, END_STREAM, each written by itself) and the leader a header decode and a
//! secret check; on the stream a proposal is one frame each way, as appends are on
//! `AppendStream` (`network.rs`).
//!
//! What a failure means is the same on both paths: a proposal that certainly never
//! left this node (no connection could be made, or the stream had closed before it was
//! queued) is `NotLeader` (ask again); one that may have reached the leader is
//! `Unavailable` with "may or may not have been applied".

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use presenced_model::{Command, Outcome};
use presenced_proto::raft::{ProposeReply, ProposeRequest};
use tokio::sync::{mpsc, oneshot};

use super::writes::{not_sent, remaining, status_to_error};
use super::{ClusterError, ClusterNode, PeerClient};
use crate::NodeId;

/// Proposals queued for the stream's sender before a forward waits.
const QUEUE: usize = 256;

type Waiters = Mutex<HashMap<u64, oneshot::Sender<Result<ProposeReply, tonic::Status>>>>;

/// One open `ProposeStream` to a leader.
pub(crate) struct ProposeLink {
    tx: mpsc::Sender<ProposeRequest>,
    waiting: Arc<Waiters>,
    next_id: AtomicU64,
    /// Set by the reader when the stream ended; a link so marked is replaced.
    closed: Arc<AtomicBool>,
}

/// The forwarding state of this node: per leader, its open stream, or `Unary` for a
/// leader found to have no `ProposeStream`.
#[derive(Default)]
pub(crate) struct Forwarding {
    links: Mutex<HashMap<(NodeId, String), Link>>,
}

#[derive(Clone)]
enum Link {
    Stream(Arc<ProposeLink>),
    Unary,
}

impl ProposeLink {
    async fn open(client: &mut PeerClient, deadline: Instant) -> Result<Self, tonic::Status> {
        let (tx, rx) = mpsc::channel::<ProposeRequest>(QUEUE);
        let outbound = crate::network::receiver_stream(rx);
        let call = client.propose_stream(tonic::Request::new(outbound));
        let wait = remaining(deadline).max(Duration::from_millis(100));
        let mut replies = tokio::time::timeout(wait, call)
            .await
            .map_err(|_| {
                tonic::Status::deadline_exceeded("the propose stream did not open in time")
            })??
            .into_inner();
        metrics::counter!("presenced_raft_propose_streams_opened_total").increment(1);
        let waiting: Arc<Waiters> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (w, c) = (waiting.clone(), closed.clone());
        tokio::spawn(async move {
            let end = loop {
                match replies.message().await {
                    Ok(Some(r)) => {
                        let waiter = w.lock().unwrap_or_else(|p| p.into_inner()).remove(&r.id);
                        match waiter {
                            Some(tx) => {
                                let _ = tx.send(Ok(r));
                            }
                            // Its forward gave up (deadline, leader moved): nobody waits.
                            None => tracing::debug!(id = r.id, "late propose reply"),
                        }
                    }
                    Ok(None) => break tonic::Status::unavailable("the propose stream ended"),
                    Err(s) => break s,
                }
            };
            c.store(true, Ordering::Release);
            let waiters: Vec<_> = w
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain()
                .collect();
            for (_, tx) in waiters {
                let _ = tx.send(Err(tonic::Status::unavailable(format!(
                    "the propose stream failed: {}",
                    end.message()
                ))));
            }
        });
        Ok(ProposeLink {
            tx,
            waiting,
            next_id: AtomicU64::new(1),
            closed,
        })
    }

    /// Queue one proposal and wait for its reply. `Ok(None)`: the stream had closed
    /// before the proposal was queued (it was never sent).
    async fn propose(
        &self,
        command: Vec<u8>,
        wait: Duration,
    ) -> Result<Option<ProposeReply>, tonic::Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        // However this ends (answered, timed out, or dropped when the leadership moves),
        // nobody waits for `id` any more.
        let _waiter = Forget(self, id);
        let req = ProposeRequest {
            command,
            format: crate::format::WIRE,
            id,
        };
        if self.closed.load(Ordering::Acquire) || self.tx.send(req).await.is_err() {
            return Ok(None);
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => r.map(Some),
            Ok(Err(_)) => Err(tonic::Status::unavailable("the propose stream stopped")),
            Err(_) => Err(tonic::Status::deadline_exceeded(
                "the forwarded proposal was not answered in time",
            )),
        }
    }

    fn forget(&self, id: u64) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// Removes a proposal's waiter when its forward ends.
struct Forget<'a>(&'a ProposeLink, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}

impl ClusterNode {
    /// The open stream to the leader `id` at `addr` (opened here when there is none),
    /// or `Unary` for a leader without streams.
    async fn link(&self, id: NodeId, addr: &str, deadline: Instant) -> Result<Link, tonic::Status> {
        let key = (id, addr.to_string());
        let links = &self.forwarding.links;
        match links.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            Some(Link::Stream(l)) if l.closed.load(Ordering::Acquire) => {}
            Some(link) => return Ok(link.clone()),
            None => {}
        }
        let mut client = self
            .peer(id, addr)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        match ProposeLink::open(&mut client, deadline).await {
            Ok(l) => {
                let link = Link::Stream(Arc::new(l));
                let mut g = links.lock().unwrap_or_else(|p| p.into_inner());
                g.insert(key, link.clone());
                Ok(link)
            }
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                tracing::info!(
                    leader = id,
                    "the leader has no propose stream (an earlier release): forwarding as unary calls"
                );
                let mut g = links.lock().unwrap_or_else(|p| p.into_inner());
                g.insert(key, Link::Unary);
                Ok(Link::Unary)
            }
            Err(s) => Err(s),
        }
    }

    /// Forward `cmd` to the leader `id` at `addr` and wait for its outcome.
    pub(super) async fn forward_propose(
        &self,
        cmd: &Command,
        id: NodeId,
        addr: String,
        deadline: Instant,
    ) -> Result<(Outcome, u64), ClusterError> {
        let command =
            crate::format::wire(cmd).map_err(|e| ClusterError::Internal(e.to_string()))?;
        let wait = remaining(deadline).max(Duration::from_millis(100));
        let call = async {
            match self.link(id, &addr, deadline).await? {
                Link::Stream(l) => l.propose(command, wait).await,
                Link::Unary => {
                    let mut c = self
                        .peer(id, &addr)
                        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
                    let mut req = tonic::Request::new(ProposeRequest {
                        command,
                        format: crate::format::WIRE,
                        id: 0,
                    });
                    req.set_timeout(wait);
                    c.propose(req).await.map(|r| Some(r.into_inner()))
                }
            }
        };
        // A leader that went silent (cut off, paused) holds the call until the deadline;
        // once this node follows a new leader, waiting longer tells the caller nothing
        // more: the outcome is unknown either way, and a retry goes to the new leader.
        let answer = tokio::select! {
            r = call => r,
            () = self.leader_moved_from(id) => {
                metrics::counter!("presenced_raft_forwards_abandoned_total").increment(1);
                return Err(ClusterError::Unavailable(format!(
                    "the leadership moved away from node {id} during the write; it may or may not have been applied"
                )));
            }
        };
        match answer {
            // The stream had closed before the proposal was queued: never sent.
            Ok(None) => Err(ClusterError::NotLeader),
            Ok(Some(r)) if r.error_code != 0 => Err(status_to_error(tonic::Status::new(
                tonic::Code::from_i32(r.error_code),
                r.error_message,
            ))),
            Ok(Some(r)) => {
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
}

#[cfg(test)]
#[path = "forward_tests.rs"]
mod tests;
