//! Elections this node starts itself, after a pre-vote (Raft thesis §9.6).
//!
//! openraft 0.9 has no pre-vote, and draws each node's election timeout once per
//! process. After a leader dies, the follower whose timer fires first often cannot
//! win: its log is behind the other follower's, or both stand in the same term. The
//! next attempt then waits a whole timeout more, and `scripts/chaos` measured 2.0 to
//! 3.3 s to the first write instead of about 1.2 s.
//!
//! This driver stands the node sooner, and only when it can win. Once the leader's
//! lease has run out here (no message from a leader for `election_max_ms`) plus a
//! delay drawn afresh for every attempt, it asks the other voters whether they would
//! vote for it: they have not heard from a leader within the lease either, and its
//! log is at least as up to date as theirs. Only on a majority does it trigger
//! openraft's election. openraft decides the vote itself as before; its own timer
//! stays on and fires later, the fallback if this driver cannot reach anyone.
//!
//! A node of the previous release has no `PreVote` call (`Unimplemented`): it counts
//! as a yes, and its own vote rules still decide.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use openraft::{LogId, ServerState};
use presenced_proto::raft::RaftBytes;
use presenced_proto::raft::raft_client::RaftClient;
use serde::{Deserialize, Serialize};

use super::ClusterNode;
use crate::NodeId;
use crate::network::{Client, channel};

/// The id of the last entry in this node's log, kept by the log store.
pub(crate) type LastLog = Arc<Mutex<Option<LogId<NodeId>>>>;

/// "Would you vote for me now?", asked before standing. Changes nothing at the peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    pub last_log_id: Option<LogId<NodeId>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteResponse {
    pub granted: bool,
    /// Why not, for the logs.
    pub reason: String,
}

/// How often the driver looks at openraft's state.
const TICK: Duration = Duration::from_millis(20);

/// The driver's timing, from the Raft settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ElectionTiming {
    /// openraft's leader lease: `election_max_ms`.
    lease: Duration,
    /// After a vote no leader confirmed (this node stood, or voted for a candidate not
    /// heard from yet): `election_min_ms`, the time a candidate gets to win.
    hold: Duration,
    /// The extra delay is drawn from `jitter_min..jitter_max` for every attempt; its top
    /// stays under `election_min_ms`, so this driver goes before openraft's own timer.
    jitter_min: Duration,
    jitter_max: Duration,
    /// How long a pre-vote may take.
    rpc_timeout: Duration,
}

impl ElectionTiming {
    pub(crate) fn new(t: &super::RaftTuning) -> Self {
        let ms = Duration::from_millis;
        ElectionTiming {
            lease: ms(t.election_max_ms),
            hold: ms(t.election_min_ms),
            jitter_min: ms((t.heartbeat_ms / 2).max(1)),
            jitter_max: ms((t.election_min_ms / 2).max(t.heartbeat_ms / 2 + 1)),
            rpc_timeout: ms((t.heartbeat_ms * 2).max(50)),
        }
    }

    fn draw(&self) -> Duration {
        let (lo, hi) = (self.jitter_min.as_millis(), self.jitter_max.as_millis());
        Duration::from_millis(rand::random_range(lo..hi.max(lo + 1)) as u64)
    }
}

/// What the driver and the answer read from openraft, in one call.
struct View {
    state: ServerState,
    /// A vote that a leader's message confirmed (openraft's lease applies to it).
    committed_vote: bool,
    /// Since the vote last changed or a leader last spoke to this node.
    silent_for: Option<Duration>,
}

impl ClusterNode {
    async fn view(&self) -> Option<View> {
        self.raft
            .with_raft_state(|st| View {
                state: st.server_state,
                committed_vote: st.vote_ref().is_committed(),
                silent_for: st
                    .vote_last_modified()
                    .map(|t| openraft::Instant::elapsed(&t)),
            })
            .await
            .ok()
    }

    /// Answer another voter's pre-vote: yes unless this node leads, heard from a leader
    /// within the lease, voted within `election_min_ms`, or holds a log that is
    /// further ahead.
    #[doc(hidden)]
    pub async fn answer_pre_vote(&self, req: PreVoteRequest) -> PreVoteResponse {
        let Some(v) = self.view().await else {
            return PreVoteResponse {
                granted: false,
                reason: "raft has stopped on this node".into(),
            };
        };
        let mine = *self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        decide(&v, &self.election, mine, &req)
    }

    /// Elections this node's driver started (after a majority of pre-votes).
    pub fn elections_started(&self) -> u64 {
        self.elections_started
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Start the driver (one task per node; it ends when the node is dropped).
    pub(super) fn spawn_election_driver(self: &Arc<Self>) {
        tokio::spawn(drive(Arc::downgrade(self)));
    }
}

async fn drive(node: Weak<ClusterNode>) {
    let Some(timing) = node.upgrade().map(|n| n.election) else {
        return;
    };
    let mut clients: HashMap<(NodeId, String), Client> = HashMap::new();
    let mut jitter = timing.draw();
    let mut not_before = Instant::now();
    // Refusals are logged at most every 10 s (a node cut off from the majority asks
    // several times a second).
    let mut refusal_logged: Option<Instant> = None;
    loop {
        tokio::time::sleep(TICK).await;
        if Instant::now() < not_before {
            continue;
        }
        let Some(node) = node.upgrade() else { return };
        if node.is_leader() {
            continue;
        }
        let Some(v) = node.view().await else { return };
        if !matches!(v.state, ServerState::Follower | ServerState::Candidate) {
            continue;
        }
        let Some(silent) = v.silent_for else { continue };
        let lease = if v.committed_vote {
            timing.lease
        } else {
            timing.hold
        };
        if silent < lease + jitter {
            continue;
        }
        let voters: Vec<(NodeId, String)> = {
            let m = node.raft.metrics().borrow().membership_config.clone();
            let m = m.membership();
            m.voter_ids()
                .filter_map(|id| m.get_node(&id).map(|n| (id, n.addr.clone())))
                .collect()
        };
        if voters.len() < 2 || !voters.iter().any(|(id, _)| *id == node.id) {
            continue;
        }
        let yes = ask(&node, &voters, &mut clients, timing.rpc_timeout).await;
        let result = if yes * 2 > voters.len() {
            let _ = node.raft.trigger().elect().await;
            node.elections_started
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            "started"
        } else {
            "pre_vote_refused"
        };
        metrics::counter!("presenced_raft_elections_total", "result" => result).increment(1);
        let log_it = result == "started"
            || refusal_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if log_it {
            if result != "started" {
                refusal_logged = Some(Instant::now());
            }
            tracing::info!(
                result,
                yes,
                voters = voters.len(),
                silent_ms = silent.as_millis() as u64,
                "election after a silent leader"
            );
        }
        // A fresh delay for every attempt: two nodes that stood together once do not
        // stand together again.
        jitter = timing.draw();
        not_before = Instant::now() + jitter;
    }
}

fn decide(
    v: &View,
    timing: &ElectionTiming,
    mine: Option<LogId<NodeId>>,
    req: &PreVoteRequest,
) -> PreVoteResponse {
    let deny = |reason: String| PreVoteResponse {
        granted: false,
        reason,
    };
    if v.state == ServerState::Leader {
        return deny("this node leads".into());
    }
    if let Some(s) = v.silent_for {
        if v.committed_vote && s <= timing.lease {
            return deny(format!("a leader spoke {} ms ago", s.as_millis()));
        }
        // A candidate this node voted for is given its time to win (with 5 voters the
        // others could otherwise depose it before its first message arrives).
        if !v.committed_vote && s <= timing.hold {
            return deny(format!("this node voted {} ms ago", s.as_millis()));
        }
    }
    if req.last_log_id < mine {
        return deny(format!(
            "the candidate's log ends at {:?}, this node's at {mine:?}",
            req.last_log_id
        ));
    }
    PreVoteResponse {
        granted: true,
        reason: String::new(),
    }
}

/// Pre-votes for this node, itself included.
async fn ask(
    node: &ClusterNode,
    voters: &[(NodeId, String)],
    clients: &mut HashMap<(NodeId, String), Client>,
    timeout: Duration,
) -> usize {
    let req = PreVoteRequest {
        candidate: node.id,
        last_log_id: *node.last_log.lock().unwrap_or_else(|p| p.into_inner()),
    };
    let Ok(data) = crate::format::wire(&req) else {
        return 1;
    };
    let mut calls = Vec::new();
    for (id, addr) in voters.iter().filter(|(id, _)| *id != node.id) {
        let key = (*id, addr.clone());
        let client = match clients.get(&key) {
            Some(c) => c.clone(),
            None => match channel(&node.transport, *id, addr) {
                Ok(ch) => {
                    let c = RaftClient::with_interceptor(ch, node.secret.clone());
                    clients.insert(key, c.clone());
                    c
                }
                Err(_) => continue,
            },
        };
        // One deadline for connect and call alike (below): no per-request timeout too.
        let r = tonic::Request::new(RaftBytes {
            data: data.clone(),
            format: crate::format::WIRE,
        });
        let peer = *id;
        calls.push(async move {
            let mut client = client;
            match tokio::time::timeout(timeout, client.pre_vote(r)).await {
                Ok(Ok(resp)) => {
                    let resp = resp.into_inner();
                    match crate::format::unwire::<PreVoteResponse>(resp.format, &resp.data) {
                        Ok(a) if a.granted => true,
                        Ok(a) => {
                            tracing::debug!(peer, reason = a.reason, "pre-vote refused");
                            false
                        }
                        Err(_) => false,
                    }
                }
                // The previous release: no pre-vote there, its vote rules decide.
                Ok(Err(s)) => s.code() == tonic::Code::Unimplemented,
                Err(_) => false,
            }
        });
    }
    1 + futures::future::join_all(calls)
        .await
        .into_iter()
        .filter(|y| *y)
        .count()
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    const LEASE: ElectionTiming = ElectionTiming {
        lease: Duration::from_millis(600),
        hold: Duration::from_millis(300),
        jitter_min: Duration::from_millis(50),
        jitter_max: Duration::from_millis(150),
        rpc_timeout: Duration::from_millis(200),
    };

    fn view(state: ServerState, committed_vote: bool, silent_ms: u64) -> View {
        View {
            state,
            committed_vote,
            silent_for: Some(Duration::from_millis(silent_ms)),
        }
    }

    fn log(term: u64, index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    fn ask(last_log_id: Option<LogId<NodeId>>) -> PreVoteRequest {
        PreVoteRequest {
            candidate: 2,
            last_log_id,
        }
    }

    #[test]
    fn pre_votes_follow_the_lease_the_leadership_and_the_log() {
        let mine = log(3, 10);
        let f = ServerState::Follower;
        // A leader, and a follower that heard from one within the lease: no.
        let a = decide(
            &view(ServerState::Leader, true, 5_000),
            &LEASE,
            mine,
            &ask(log(9, 99)),
        );
        assert!(!a.granted && a.reason.contains("leads"), "{a:?}");
        let a = decide(&view(f, true, 200), &LEASE, mine, &ask(log(9, 99)));
        assert!(!a.granted && a.reason.contains("a leader spoke"), "{a:?}");
        // The lease has run out: the log decides (term first, then index).
        assert!(decide(&view(f, true, 700), &LEASE, mine, &ask(log(3, 10))).granted);
        assert!(decide(&view(f, true, 700), &LEASE, mine, &ask(log(4, 2))).granted);
        for behind in [log(3, 9), log(2, 50), None] {
            let a = decide(&view(f, true, 700), &LEASE, mine, &ask(behind));
            assert!(!a.granted && a.reason.contains("log ends at"), "{a:?}");
        }
        // A vote no leader confirmed (this node stood, or voted for a candidate not heard
        // from yet) holds for `election_min_ms`, then only the log counts.
        let a = decide(
            &view(ServerState::Candidate, false, 10),
            &LEASE,
            mine,
            &ask(mine),
        );
        assert!(!a.granted && a.reason.contains("voted"), "{a:?}");
        assert!(
            decide(
                &view(ServerState::Candidate, false, 400),
                &LEASE,
                mine,
                &ask(mine)
            )
            .granted
        );
        // No vote yet (a fresh node): no lease either.
        let fresh = View {
            state: f,
            committed_vote: true,
            silent_for: None,
        };
        assert!(decide(&fresh, &LEASE, None, &ask(None)).granted);
    }
}
