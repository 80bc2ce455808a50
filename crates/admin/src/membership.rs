//! Cluster membership and status: initialising, adding and removing nodes.

use presenced_cluster::{MembershipChange, MembershipView};
use presenced_proto::admin::*;
use tonic::Status;

use crate::{AdminService, cluster};

pub(crate) async fn init(svc: &AdminService) -> Result<InitReply, Status> {
    let leader = svc.node.init().await.map_err(cluster)?;
    Ok(InitReply {
        leader_id: leader,
        domain: svc.domain().to_string(),
    })
}

pub(crate) async fn add_node(
    svc: &AdminService,
    r: NodeRequest,
) -> Result<MembershipReply, Status> {
    change(svc, MembershipChange::Add(r.id, r.addr)).await
}

pub(crate) async fn remove_node(
    svc: &AdminService,
    r: NodeRequest,
) -> Result<MembershipReply, Status> {
    change(svc, MembershipChange::Remove(r.id)).await
}

async fn change(svc: &AdminService, c: MembershipChange) -> Result<MembershipReply, Status> {
    let v = svc.node.change_membership(c).await.map_err(cluster)?;
    Ok(membership_reply(v))
}

impl AdminService {
    pub(crate) async fn status(&self) -> StatusReply {
        let me = self.node.local_status();
        let current_leader = me.has_leader.then_some(me.current_leader);
        let view = self.node.membership();
        let members: Vec<(u64, String, &str)> = view
            .voters
            .iter()
            .map(|(id, a)| (*id, a.clone(), "voter"))
            .chain(
                view.learners
                    .iter()
                    .map(|(id, a)| (*id, a.clone(), "learner")),
            )
            .collect();
        // Ask every member at once (each answers within about a second, or counts as down).
        let answers = futures::future::join_all(members.iter().map(|(id, addr, _)| async move {
            if *id == self.node.id {
                Ok(self.node.local_status())
            } else {
                self.node.peer_status(*id, addr).await
            }
        }))
        .await;
        let leader_last = members
            .iter()
            .zip(&answers)
            .find_map(|((id, _, _), a)| {
                (Some(*id) == current_leader).then(|| a.as_ref().ok().map(|s| s.last_log_index))
            })
            .flatten();
        let nodes = members
            .into_iter()
            .zip(answers)
            .map(|((id, addr, role), a)| match a {
                Ok(s) => NodeInfo {
                    id,
                    addr,
                    membership: role.to_string(),
                    reachable: true,
                    state: s.state,
                    term: s.term,
                    last_applied: s.last_applied,
                    lag: leader_last.map_or(0, |l| l.saturating_sub(s.last_applied)),
                    error: String::new(),
                },
                Err(e) => NodeInfo {
                    id,
                    addr,
                    membership: role.to_string(),
                    reachable: false,
                    state: "-".into(),
                    error: e,
                    ..Default::default()
                },
            })
            .collect();
        StatusReply {
            leader_id: current_leader.unwrap_or(0),
            term: me.term,
            commit_index: self.node.committed_index(),
            domain: self
                .node
                .read(|s| s.domain().unwrap_or_default().to_string()),
            nodes,
            answered_by: self.node.id,
        }
    }
}

fn membership_reply(v: MembershipView) -> MembershipReply {
    let conv = |m: std::collections::BTreeMap<u64, String>| {
        m.into_iter()
            .map(|(id, addr)| NodeRequest { id, addr })
            .collect()
    };
    MembershipReply {
        voters: conv(v.voters),
        learners: conv(v.learners),
    }
}
