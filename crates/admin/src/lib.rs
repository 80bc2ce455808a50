//! The operator API (`presenced.admin.v1.Admin`) over a [`ClusterNode`].
//!
//! Reads an operator asks for are linearizable; writes go through Raft (forwarded to
//! the leader by the cluster crate). Names typed by operators are normalised here, and
//! expensive derivations (password hashing) happen here, before proposing, so the
//! state machine stays deterministic.

mod membership;
mod roster;
mod settings;
mod troubleshoot;
mod users;

use std::future::Future;
use std::sync::Arc;

use presenced_cluster::{ClusterError, ClusterNode};
use presenced_model::{Command, Outcome, Refusal, RefusalClass, Reply, names};
use presenced_proto::admin::admin_server::{Admin, AdminServer};
use presenced_proto::admin::*;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use tracing::Instrument;

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
) -> InterceptedService<AdminServer<AdminService>, presenced_cluster::auth::AdminGuard> {
    let check = node.admin_guard();
    InterceptedService::new(
        AdminServer::new(AdminService {
            node,
            offline_check,
        })
        .max_decoding_message_size(presenced_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(presenced_proto::MAX_MESSAGE_BYTES),
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

    /// Like `apply`, and also wait until this node has applied it: an account created
    /// or a password set through this node logs in here at once (logins read the
    /// node's own replica; without the wait, a login right after the call could miss
    /// the account on a follower and count as a failed attempt).
    async fn apply_visible(&self, cmd: Command) -> Result<Reply, Status> {
        let out: Outcome = self.node.write_visible(cmd).await.map_err(cluster)?;
        out.map_err(refusal)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn cluster_init(&self, _r: Request<Empty>) -> Result<Response<InitReply>, Status> {
        traced("cluster_init", membership::init(self)).await
    }

    async fn cluster_status(&self, _r: Request<Empty>) -> Result<Response<StatusReply>, Status> {
        traced("cluster_status", async { Ok(self.status().await) }).await
    }

    async fn add_node(&self, r: Request<NodeRequest>) -> Result<Response<MembershipReply>, Status> {
        traced("add_node", membership::add_node(self, r.into_inner())).await
    }

    async fn remove_node(
        &self,
        r: Request<NodeRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        traced("remove_node", membership::remove_node(self, r.into_inner())).await
    }

    async fn settings_show(&self, _r: Request<Empty>) -> Result<Response<SettingsReply>, Status> {
        traced("settings_show", settings::show(self)).await
    }

    async fn settings_set(
        &self,
        r: Request<SetSettingRequest>,
    ) -> Result<Response<Setting>, Status> {
        traced("settings_set", settings::set(self, r.into_inner())).await
    }

    async fn settings_reset(&self, r: Request<KeyRequest>) -> Result<Response<Setting>, Status> {
        traced("settings_reset", settings::reset(self, r.into_inner())).await
    }

    async fn user_add(&self, r: Request<UserAddRequest>) -> Result<Response<UserAddReply>, Status> {
        traced("user_add", users::add(self, r.into_inner())).await
    }

    async fn user_remove(&self, r: Request<UserRequest>) -> Result<Response<Empty>, Status> {
        traced("user_remove", users::remove(self, r.into_inner())).await
    }

    async fn user_list(&self, _r: Request<Empty>) -> Result<Response<UserListReply>, Status> {
        traced("user_list", users::list(self)).await
    }

    async fn user_passwd(&self, r: Request<PasswdRequest>) -> Result<Response<Empty>, Status> {
        traced("user_passwd", users::passwd(self, r.into_inner())).await
    }

    async fn user_policy(&self, r: Request<PolicyRequest>) -> Result<Response<UserInfo>, Status> {
        traced("user_policy", users::policy(self, r.into_inner())).await
    }

    async fn user_import(
        &self,
        r: Request<UserImportRequest>,
    ) -> Result<Response<UserImportReply>, Status> {
        traced("user_import", users::import(self, r.into_inner())).await
    }

    async fn roster_show(&self, r: Request<UserRequest>) -> Result<Response<RosterReply>, Status> {
        traced("roster_show", roster::show(self, r.into_inner())).await
    }

    async fn roster_add(
        &self,
        r: Request<RosterAddRequest>,
    ) -> Result<Response<RosterAddReply>, Status> {
        traced("roster_add", roster::add(self, r.into_inner())).await
    }

    async fn roster_remove(
        &self,
        r: Request<RosterRemoveRequest>,
    ) -> Result<Response<Empty>, Status> {
        traced("roster_remove", roster::remove(self, r.into_inner())).await
    }

    async fn troubleshoot(
        &self,
        _r: Request<Empty>,
    ) -> Result<Response<TroubleshootReply>, Status> {
        traced("troubleshoot", troubleshoot::run(self)).await
    }
}
