//! The operator API (`presenced.admin.v1.Admin`) over a [`ClusterNode`].
//!
//! Reads an operator asks for are linearizable; writes go through Raft (forwarded to
//! the leader by the cluster crate). Names typed by operators are normalised here, and
//! expensive derivations (password hashing) happen here, before proposing, so the
//! state machine stays deterministic.

use std::future::Future;
use std::sync::Arc;

use presenced_cluster::{ClusterError, ClusterNode, MembershipChange, MembershipView};
use presenced_model::settings::{self, Value};
use presenced_model::{
    Command, Credentials, NewContact, Outcome, Override, PolicyKey, Refusal, RefusalClass, Reply,
    State, credentials, names,
};
use presenced_proto::admin::admin_server::{Admin, AdminServer};
use presenced_proto::admin::*;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// Lag (in log entries) above which troubleshoot reports a node as lagging.
const LAG_WARNING: u64 = 1_000;

/// Whether a stored offline payload can be read (the router's format knowledge,
/// handed in by the binary so the admin API needs no edge to the router).
pub type OfflineCheck = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

pub struct AdminService {
    node: Arc<ClusterNode>,
    offline_check: OfflineCheck,
}

/// The admin gRPC service, guarded by the cluster secret.
pub fn server(
    node: Arc<ClusterNode>,
    offline_check: OfflineCheck,
) -> InterceptedService<AdminServer<AdminService>, presenced_cluster::auth::CheckSecret> {
    let check = node.secret_check();
    InterceptedService::new(
        AdminServer::new(AdminService {
            node,
            offline_check,
        }),
        check,
    )
}

fn refusal(r: Refusal) -> Status {
    let m = r.to_string();
    match r.class() {
        RefusalClass::Invalid => Status::invalid_argument(m),
        RefusalClass::NotFound => Status::not_found(m),
        RefusalClass::Exists => Status::already_exists(m),
        RefusalClass::Precondition => Status::failed_precondition(m),
    }
}

fn cluster(e: ClusterError) -> Status {
    e.into()
}

/// Run one admin call in its own span, counting it by outcome.
async fn traced<T>(
    rpc: &'static str,
    f: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let span = tracing::info_span!("admin", rpc);
    let res = f.instrument(span.clone()).await;
    let code = match &res {
        Ok(_) => "ok".to_string(),
        Err(s) => {
            span.in_scope(
                || tracing::info!(code = ?s.code(), msg = s.message(), "admin call failed"),
            );
            format!("{:?}", s.code())
        }
    };
    metrics::counter!("presenced_admin_calls_total", "rpc" => rpc, "code" => code).increment(1);
    res.map(Response::new)
}

fn setting_msg(def: &settings::SettingDef, value: Value) -> Setting {
    let default = presenced_model::Settings::default()
        .get(def.key)
        .expect("known key");
    Setting {
        key: def.key.to_string(),
        value: value.to_string(),
        default_value: default.to_string(),
        is_default: default == value,
        kind: def.kind.to_string(),
        help: def.help.to_string(),
    }
}

/// The setting as the state machine applied it (this node's replica may trail by a few
/// milliseconds, so the leader's reply is the answer, not a local read).
fn applied_setting(def: &settings::SettingDef, reply: Reply) -> Result<Setting, Status> {
    match reply {
        Reply::Setting { value, .. } => Ok(setting_msg(
            def,
            settings::parse_value(def, &value).map_err(refusal)?,
        )),
        other => Err(Status::internal(format!("unexpected reply {other:?}"))),
    }
}

fn user_info(s: &State, name: &str) -> Option<UserInfo> {
    let d = s.user(name)?;
    Some(UserInfo {
        name: name.to_string(),
        jid: format!("{name}@{}", s.domain().unwrap_or_default()),
        contacts: d.roster.items.len() as u32,
        watchers: d.roster.watcher_count() as u32,
        pending_in: d.roster.pending_in.len() as u32,
        offline: d.offline.messages.len() as u32,
        availability_sharing: d.account.availability_sharing.to_string(),
        view_without_approval: d.account.view_without_approval.to_string(),
    })
}

impl AdminService {
    fn domain(&self) -> &str {
        &self.node.domain
    }

    fn user_name(&self, raw: &str) -> Result<String, Status> {
        names::normalize_user(raw, self.domain()).map_err(refusal)
    }

    /// Propose and turn a refusal into the matching status.
    async fn apply(&self, cmd: Command) -> Result<Reply, Status> {
        let out: Outcome = self.node.write(cmd).await.map_err(cluster)?;
        out.map_err(refusal)
    }

    async fn credentials(&self, user: &str, password: &str) -> Result<Credentials, Status> {
        if password.len() > 1024 {
            return Err(Status::invalid_argument("password longer than 1024 bytes"));
        }
        let (u, d, p) = (
            user.to_string(),
            self.domain().to_string(),
            password.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            Credentials::derive(&u, &d, &p, credentials::DEFAULT_ITERATIONS)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))
    }

    async fn status(&self) -> StatusReply {
        let m = self.node.metrics();
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
                self.node.peer_status(addr).await
            }
        }))
        .await;
        let leader_last = members
            .iter()
            .zip(&answers)
            .find_map(|((id, _, _), a)| {
                (Some(*id) == m.current_leader).then(|| a.as_ref().ok().map(|s| s.last_log_index))
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
            leader_id: m.current_leader.unwrap_or(0),
            term: m.current_term,
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

#[tonic::async_trait]
impl Admin for AdminService {
    async fn cluster_init(&self, _r: Request<Empty>) -> Result<Response<InitReply>, Status> {
        traced("cluster_init", async {
            let leader = self.node.init().await.map_err(cluster)?;
            Ok(InitReply {
                leader_id: leader,
                domain: self.domain().to_string(),
            })
        })
        .await
    }

    async fn cluster_status(&self, _r: Request<Empty>) -> Result<Response<StatusReply>, Status> {
        traced("cluster_status", async { Ok(self.status().await) }).await
    }

    async fn add_node(&self, r: Request<NodeRequest>) -> Result<Response<MembershipReply>, Status> {
        let n = r.into_inner();
        traced("add_node", async {
            let v = self
                .node
                .change_membership(MembershipChange::Add(n.id, n.addr))
                .await
                .map_err(cluster)?;
            Ok(membership_reply(v))
        })
        .await
    }

    async fn remove_node(
        &self,
        r: Request<NodeRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let n = r.into_inner();
        traced("remove_node", async {
            let v = self
                .node
                .change_membership(MembershipChange::Remove(n.id))
                .await
                .map_err(cluster)?;
            Ok(membership_reply(v))
        })
        .await
    }

    async fn settings_show(&self, _r: Request<Empty>) -> Result<Response<SettingsReply>, Status> {
        traced("settings_show", async {
            let entries = self
                .node
                .linearizable(|s| s.settings().entries())
                .await
                .map_err(cluster)?;
            Ok(SettingsReply {
                settings: entries
                    .into_iter()
                    .map(|(d, v, _)| setting_msg(d, v))
                    .collect(),
            })
        })
        .await
    }

    async fn settings_set(
        &self,
        r: Request<SetSettingRequest>,
    ) -> Result<Response<Setting>, Status> {
        let SetSettingRequest { key, value } = r.into_inner();
        traced("settings_set", async {
            // Validate here for a quick answer; apply validates again deterministically.
            let def = settings::resolve_key(&key).map_err(refusal)?;
            settings::parse_value(def, &value).map_err(refusal)?;
            let reply = self
                .apply(Command::SetSetting {
                    key: def.key.into(),
                    value,
                })
                .await?;
            applied_setting(def, reply)
        })
        .await
    }

    async fn settings_reset(&self, r: Request<KeyRequest>) -> Result<Response<Setting>, Status> {
        let key = r.into_inner().key;
        traced("settings_reset", async {
            let def = settings::resolve_key(&key).map_err(refusal)?;
            let reply = self
                .apply(Command::ResetSetting {
                    key: def.key.into(),
                })
                .await?;
            applied_setting(def, reply)
        })
        .await
    }

    async fn user_add(&self, r: Request<UserAddRequest>) -> Result<Response<UserAddReply>, Status> {
        let UserAddRequest { name, password } = r.into_inner();
        traced("user_add", async {
            let user = self.user_name(&name)?;
            let (password, generated) = if password.is_empty() {
                let p = credentials::generate_password();
                (p.clone(), p)
            } else {
                (password, String::new())
            };
            let credentials = self.credentials(&user, &password).await?;
            self.apply(Command::CreateAccount {
                user: user.clone(),
                credentials,
            })
            .await?;
            Ok(UserAddReply {
                name: user,
                generated_password: generated,
            })
        })
        .await
    }

    async fn user_remove(&self, r: Request<UserRequest>) -> Result<Response<Empty>, Status> {
        let name = r.into_inner().name;
        traced("user_remove", async {
            let user = self.user_name(&name)?;
            self.apply(Command::DeleteAccount { user }).await?;
            Ok(Empty {})
        })
        .await
    }

    async fn user_list(&self, _r: Request<Empty>) -> Result<Response<UserListReply>, Status> {
        traced("user_list", async {
            let users = self
                .node
                .linearizable(|s| s.users().filter_map(|(u, _)| user_info(s, u)).collect())
                .await
                .map_err(cluster)?;
            Ok(UserListReply { users })
        })
        .await
    }

    async fn user_passwd(&self, r: Request<PasswdRequest>) -> Result<Response<Empty>, Status> {
        let PasswdRequest { name, password } = r.into_inner();
        traced("user_passwd", async {
            let user = self.user_name(&name)?;
            if password.is_empty() {
                return Err(Status::invalid_argument("empty password"));
            }
            let credentials = self.credentials(&user, &password).await?;
            self.apply(Command::SetCredentials { user, credentials })
                .await?;
            Ok(Empty {})
        })
        .await
    }

    async fn user_policy(&self, r: Request<PolicyRequest>) -> Result<Response<UserInfo>, Status> {
        let PolicyRequest { name, key, value } = r.into_inner();
        traced("user_policy", async {
            let user = self.user_name(&name)?;
            let key = PolicyKey::parse(&key).map_err(refusal)?;
            let value = Override::parse(&value).map_err(refusal)?;
            self.apply(Command::SetPolicy {
                user: user.clone(),
                key,
                value,
            })
            .await?;
            self.node
                .linearizable(|s| user_info(s, &user))
                .await
                .map_err(cluster)?
                .ok_or_else(|| refusal(Refusal::UnknownUser(user)))
        })
        .await
    }

    async fn roster_show(&self, r: Request<UserRequest>) -> Result<Response<RosterReply>, Status> {
        let name = r.into_inner().name;
        traced("roster_show", async {
            let user = self.user_name(&name)?;
            self.node
                .linearizable(|s| {
                    s.user(&user).map(|d| RosterReply {
                        user: user.clone(),
                        version: d.roster.version,
                        items: d
                            .roster
                            .items
                            .values()
                            .map(|i| RosterItem {
                                jid: i.jid.clone(),
                                name: i.name.clone().unwrap_or_default(),
                                groups: i.groups.iter().cloned().collect(),
                                subscription: i.subscription.to_string(),
                                ask: i.ask,
                            })
                            .collect(),
                        pending_in: d.roster.pending_in.iter().cloned().collect(),
                    })
                })
                .await
                .map_err(cluster)?
                .ok_or_else(|| refusal(Refusal::UnknownUser(user)))
        })
        .await
    }

    async fn roster_add(
        &self,
        r: Request<RosterAddRequest>,
    ) -> Result<Response<RosterAddReply>, Status> {
        let entries = r.into_inner().entries;
        traced("roster_add", async {
            if entries.len() > 10_000 {
                return Err(Status::invalid_argument("at most 10000 contacts per call"));
            }
            let domain = self.domain().to_string();
            let mut refused = Vec::new();
            let mut valid = Vec::new();
            // Entries that cannot even be named are refused here; the rest go to the
            // state machine in their original order.
            for e in entries {
                let normalized = names::normalize_user(&e.user, &domain)
                    .and_then(|u| names::normalize_contact(&e.contact, &domain).map(|c| (u, c)));
                match normalized {
                    Ok((user, contact)) => valid.push(NewContact {
                        user,
                        contact,
                        name: Some(e.name).filter(|n| !n.is_empty()),
                        groups: if e.group.is_empty() {
                            vec![]
                        } else {
                            vec![e.group]
                        },
                    }),
                    Err(r) => refused.push(Refused {
                        user: e.user,
                        contact: e.contact,
                        code: r.code().into(),
                        reason: r.to_string(),
                    }),
                }
            }
            let mut added = Vec::new();
            if !valid.is_empty() {
                match self.apply(Command::AddContacts { entries: valid }).await? {
                    Reply::Contacts {
                        added: a,
                        refused: r,
                    } => {
                        added = a
                            .into_iter()
                            .map(|(user, contact)| ContactEntry {
                                user,
                                contact,
                                name: String::new(),
                                group: String::new(),
                            })
                            .collect();
                        refused.extend(r.into_iter().map(|r| Refused {
                            user: r.user,
                            contact: r.contact,
                            code: r.reason.code().into(),
                            reason: r.reason.to_string(),
                        }));
                    }
                    other => return Err(Status::internal(format!("unexpected reply {other:?}"))),
                }
            }
            Ok(RosterAddReply { added, refused })
        })
        .await
    }

    async fn roster_remove(
        &self,
        r: Request<RosterRemoveRequest>,
    ) -> Result<Response<Empty>, Status> {
        let RosterRemoveRequest { user, contact } = r.into_inner();
        traced("roster_remove", async {
            let user = self.user_name(&user)?;
            let contact = names::normalize_contact(&contact, self.domain()).map_err(refusal)?;
            self.apply(Command::RemoveContact { user, contact }).await?;
            Ok(Empty {})
        })
        .await
    }

    async fn troubleshoot(
        &self,
        _r: Request<Empty>,
    ) -> Result<Response<TroubleshootReply>, Status> {
        traced("troubleshoot", async {
            let mut findings = Vec::new();
            let status = self.status().await;
            if status.leader_id == 0 {
                findings.push(Finding {
                    severity: "error".into(),
                    subject: "cluster".into(),
                    problem: "no_leader".into(),
                    detail: format!(
                        "node {} knows no leader: writes are refused until a quorum is back",
                        self.node.id
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
            let stale = self.node.read_index().await.err();
            if let Some(e) = &stale {
                findings.push(Finding {
                    severity: "warning".into(),
                    subject: format!("node-{}", self.node.id),
                    problem: "stale_read".into(),
                    detail: format!("limit checks below use this node's local replica: {e}"),
                });
            }
            self.node.read(|s| {
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
                        if let Err(e) = (self.offline_check)(&m.payload) {
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
                            detail: format!(
                                "{} of {cap} offline messages",
                                d.offline.messages.len()
                            ),
                        });
                    }
                }
            });
            Ok(TroubleshootReply { findings })
        })
        .await
    }
}
