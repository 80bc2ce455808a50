//! `cluster replace-node ID ADDR`: replace a dead voter by a fresh node with the same
//! id. The steps are the documented manual sequence, checked and shown as they go:
//! 1. refuse if node ID is a reachable voter that is up to date (that is not a dead
//!    node; `--force` overrides);
//! 2. `remove-node ID` if it is still a member;
//! 3. `add-node ID ADDR`: the node joins as a learner, catches up by log or snapshot
//!    (a progress bar follows its applied index against the leader's commit index),
//!    and is promoted to voter.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use presenced_proto::admin::{Empty, NodeRequest, StatusReply};
use serde_json::json;

use crate::client::{CliError, Conn};
use crate::output::Report;

pub struct Replace {
    pub id: u64,
    pub addr: String,
    pub force: bool,
    pub progress: bool,
    pub timeout: Duration,
}

async fn status(conn: &Conn) -> Result<StatusReply, CliError> {
    conn.call(|mut c| async move { c.cluster_status(Empty {}).await })
        .await
}

pub async fn run(conn: &Conn, r: Replace) -> Result<Report, CliError> {
    let st = status(conn).await?;
    let old = st.nodes.iter().find(|n| n.id == r.id);
    if let Some(n) = old
        && n.membership == "voter"
        && n.reachable
        && ["Leader", "Follower"].contains(&n.state.as_str())
        && n.last_applied > 0
        && n.lag <= 100
        && !r.force
    {
        return Err(CliError::invalid(format!(
            "node {} at {} is a healthy voter (lag {}): replace-node is for a dead or wiped node (use --force to replace it anyway)",
            r.id, n.addr, n.lag
        )));
    }
    let mut steps = Vec::new();
    if old.is_some() {
        let req = NodeRequest {
            id: r.id,
            addr: String::new(),
        };
        conn.change_within(r.timeout, |mut c| async move { c.remove_node(req).await })
            .await?;
        steps.push(format!("removed node {}", r.id));
        if r.progress {
            eprintln!("removed node {} from the cluster", r.id);
        }
    }
    let bar = r.progress.then(|| {
        let pb = ProgressBar::new(st.commit_index.max(1));
        if let Ok(style) = ProgressStyle::with_template(
            "catching up {bar:40} {pos}/{len} entries applied  {elapsed_precise} (eta {eta})",
        ) {
            pb.set_style(style);
        }
        pb
    });
    let req = NodeRequest {
        id: r.id,
        addr: r.addr.clone(),
    };
    let add = conn.change_within(r.timeout, |mut c| async move { c.add_node(req).await });
    tokio::pin!(add);
    let membership = loop {
        tokio::select! {
            res = &mut add => break res?,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let (Some(pb), Ok(st)) = (&bar, status(conn).await) {
                    pb.set_length(st.commit_index.max(1));
                    if let Some(n) = st.nodes.iter().find(|n| n.id == r.id) {
                        pb.set_position(n.last_applied.min(st.commit_index));
                    }
                }
            }
        }
    };
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    steps.push(format!(
        "added node {} at {} as a learner, caught up, promoted to voter",
        r.id, r.addr
    ));
    let voters: Vec<u64> = membership.voters.iter().map(|n| n.id).collect();
    steps.push(format!(
        "voters now: {}",
        voters
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(Report::ok(
        json!({"replaced": r.id, "addr": r.addr, "voters": voters}),
        steps.join("\n"),
    ))
}
