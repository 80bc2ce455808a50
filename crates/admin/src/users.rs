//! Accounts: adding, removing and listing users, passwords and per-user policies.

use presenced_model::{Command, Credentials, Override, PolicyKey, Refusal, State, credentials};
use presenced_proto::admin::*;
use tonic::Status;

use crate::{AdminService, cluster, refusal};

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

pub(crate) async fn add(svc: &AdminService, r: UserAddRequest) -> Result<UserAddReply, Status> {
    let UserAddRequest { name, password } = r;
    let user = svc.user_name(&name)?;
    let (password, generated) = if password.is_empty() {
        let p = credentials::generate_password();
        (p.clone(), p)
    } else {
        (password, String::new())
    };
    let credentials = svc.credentials(&user, &password).await?;
    svc.apply(Command::CreateAccount {
        user: user.clone(),
        credentials,
    })
    .await?;
    Ok(UserAddReply {
        name: user,
        generated_password: generated,
    })
}

pub(crate) async fn remove(svc: &AdminService, r: UserRequest) -> Result<Empty, Status> {
    let name = r.name;
    let user = svc.user_name(&name)?;
    svc.apply(Command::DeleteAccount { user }).await?;
    Ok(Empty {})
}

pub(crate) async fn list(svc: &AdminService) -> Result<UserListReply, Status> {
    let users = svc
        .node
        .linearizable(|s| s.users().filter_map(|(u, _)| user_info(s, u)).collect())
        .await
        .map_err(cluster)?;
    Ok(UserListReply { users })
}

pub(crate) async fn passwd(svc: &AdminService, r: PasswdRequest) -> Result<Empty, Status> {
    let PasswdRequest { name, password } = r;
    let user = svc.user_name(&name)?;
    if password.is_empty() {
        return Err(Status::invalid_argument("empty password"));
    }
    let credentials = svc.credentials(&user, &password).await?;
    svc.apply(Command::SetCredentials { user, credentials })
        .await?;
    Ok(Empty {})
}

pub(crate) async fn policy(svc: &AdminService, r: PolicyRequest) -> Result<UserInfo, Status> {
    let PolicyRequest { name, key, value } = r;
    let user = svc.user_name(&name)?;
    let key = PolicyKey::parse(&key).map_err(refusal)?;
    let value = Override::parse(&value).map_err(refusal)?;
    svc.apply(Command::SetPolicy {
        user: user.clone(),
        key,
        value,
    })
    .await?;
    svc.node
        .linearizable(|s| user_info(s, &user))
        .await
        .map_err(cluster)?
        .ok_or_else(|| refusal(Refusal::UnknownUser(user)))
}

impl AdminService {
    pub(crate) async fn credentials(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Credentials, Status> {
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
}
