//! Troubleshoot: findings about the cluster's health and users near their limits.

use presenced_proto::admin::*;
use tonic::Status;

use crate::AdminService;

/// Lag (in log entries) above which troubleshoot reports a node as lagging.
const LAG_WARNING: u64 = 1_000;

pub(crate) async fn run(svc: &AdminService) -> Result<TroubleshootReply, Status> {
    let mut findings = Vec::new();
    let status = svc.status().await;
    if status.leader_id == 0 {
        findings.push(Finding {
            severity: "error".into(),
            subject: "cluster".into(),
            problem: "no_leader".into(),
            detail: format!(
                "node {} knows no leader: writes are refused until a quorum is back",
                svc.node.id
            ),
        });
    }
    for n in &status.nodes {
        let subject = format!("node-{} ({})", n.id, n.addr);
        if !n.reachable {
            findings.push(Finding {
                severity: "error".into(),
                subject,
                problem: "node_down".into(),
                detail: format!("does not answer: {}", n.error),
            });
        } else if n.lag > LAG_WARNING {
            findings.push(Finding {
                severity: "warning".into(),
                subject,
                problem: "node_lagging".into(),
                detail: format!("{} log entries behind the leader", n.lag),
            });
        }
    }
    // Limits are only meaningful on an up-to-date replica; fall back to the local
    // one (and say so) when no quorum confirms a read index.
    let stale = svc.node.read_index().await.err();
    if let Some(e) = &stale {
        findings.push(Finding {
            severity: "warning".into(),
            subject: format!("node-{}", svc.node.id),
            problem: "stale_read".into(),
            detail: format!("limit checks below use this node's local replica: {e}"),
        });
    }
    svc.node.read(|s| {
        let st = s.settings();
        for (u, d) in s.users() {
            let jid = format!("{u}@{}", s.domain().unwrap_or_default());
            for (what, count, limit) in [
                (
                    "contact_list_limit",
                    d.roster.items.len(),
                    st.max_contact_list_size,
                ),
                ("watcher_limit", d.roster.watcher_count(), st.max_watchers),
            ] {
                if let presenced_model::Limit::Max(max) = limit
                    && count >= max as usize
                {
                    findings.push(Finding {
                        severity: if count > max as usize {
                            "error"
                        } else {
                            "warning"
                        }
                        .into(),
                        subject: jid.clone(),
                        problem: what.into(),
                        detail: format!(
                            "{count} of {max}{}",
                            if count > max as usize {
                                " (over the limit, which was lowered)"
                            } else {
                                " (at the limit)"
                            }
                        ),
                    });
                }
            }
            for (seq, m) in &d.offline.messages {
                if let Err(e) = (svc.offline_check)(&m.payload) {
                    findings.push(Finding {
                        severity: "error".into(),
                        subject: jid.clone(),
                        problem: "offline_unreadable".into(),
                        detail: format!(
                            "offline message {seq} from {} cannot be read and stays \
                             queued: {e}",
                            m.from
                        ),
                    });
                }
            }
            let cap = st.offline_queue_max_per_user as usize;
            if d.offline.messages.len() >= cap {
                findings.push(Finding {
                    severity: "warning".into(),
                    subject: jid.clone(),
                    problem: "offline_queue_full".into(),
                    detail: format!("{} of {cap} offline messages", d.offline.messages.len()),
                });
            }
        }
    });
    Ok(TroubleshootReply { findings })
}
