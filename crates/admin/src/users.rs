//! Accounts: adding, removing and listing users, passwords and per-user policies.

use presenced_model::{
    Command, Credentials, Override, PolicyKey, Refusal, Reply, State, credentials, names,
};
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

/// Entries one `UserImport` call may carry.
pub(crate) const IMPORT_MAX: usize = 2_000;
/// Longest password accepted.
const PASSWORD_MAX: usize = 1024;

/// Bulk account creation: names are normalised and passwords checked here, existing
/// accounts are refused without deriving anything, credentials are derived on every
/// core, and the accounts are proposed as one Raft write (a `Command::Batch` of
/// `CreateAccount`s). The state machine still decides: an account created meanwhile is
/// refused there (`user_exists`), and an existing account is never changed.
pub(crate) async fn import(
    svc: &AdminService,
    r: UserImportRequest,
) -> Result<UserImportReply, Status> {
    if r.entries.len() > IMPORT_MAX {
        return Err(Status::invalid_argument(format!(
            "at most {IMPORT_MAX} accounts per call (got {})",
            r.entries.len()
        )));
    }
    let refuse = |name: &str, reason: Refusal| Refused {
        user: name.to_string(),
        contact: String::new(),
        code: reason.code().into(),
        reason: reason.to_string(),
    };
    let mut refused = Vec::new();
    // (index in the request, name as sent, normalised name, password)
    let mut todo = Vec::with_capacity(r.entries.len());
    for (i, e) in r.entries.into_iter().enumerate() {
        let user = match names::normalize_user(&e.name, svc.domain()) {
            Ok(u) => u,
            Err(reason) => {
                refused.push(refuse(&e.name, reason));
                continue;
            }
        };
        if e.password.is_empty() || e.password.len() > PASSWORD_MAX {
            let what =
                format!("the password of {user} is empty or longer than {PASSWORD_MAX} bytes");
            refused.push(refuse(&e.name, Refusal::BadValue(what)));
            continue;
        }
        todo.push((i, e.name, user, e.password));
    }
    // Existing accounts: refused now, so that a re-run derives nothing for them.
    let exists: Vec<bool> = svc
        .node
        .linearizable(|s| todo.iter().map(|t| s.user(&t.2).is_some()).collect())
        .await
        .map_err(cluster)?;
    let mut fresh = Vec::with_capacity(todo.len());
    for (t, exists) in todo.into_iter().zip(exists) {
        if exists {
            refused.push(refuse(&t.1, Refusal::UserExists(t.2)));
        } else {
            fresh.push(t);
        }
    }
    let mut added = Vec::new();
    if fresh.is_empty() {
        return Ok(UserImportReply { added, refused });
    }
    let pairs: Vec<(String, String)> = fresh
        .iter_mut()
        .map(|t| (t.2.clone(), std::mem::take(&mut t.3)))
        .collect();
    let domain = svc.domain().to_string();
    let creds = tokio::task::spawn_blocking(move || derive_all(&pairs, &domain))
        .await
        .map_err(|e| Status::internal(format!("credential derivation failed: {e}")))?;
    let commands = fresh
        .iter()
        .zip(creds)
        .map(|(t, credentials)| Command::CreateAccount {
            user: t.2.clone(),
            credentials,
        })
        .collect();
    let outcomes = match svc.apply(Command::Batch { commands }).await? {
        Reply::Batch { outcomes } if outcomes.len() == fresh.len() => outcomes,
        other => return Err(Status::internal(format!("unexpected reply {other:?}"))),
    };
    for ((index, sent, user, _), outcome) in fresh.into_iter().zip(outcomes) {
        match outcome {
            Ok(_) => added.push(ImportedUser {
                index: index as u32,
                name: user,
            }),
            Err(reason) => refused.push(refuse(&sent, reason)),
        }
    }
    Ok(UserImportReply { added, refused })
}

/// Credentials for every (user, password), in order, derived on all cores (PBKDF2 is
/// the whole cost of an import).
fn derive_all(pairs: &[(String, String)], domain: &str) -> Vec<Credentials> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, pairs.len().max(1));
    let per = pairs.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = pairs
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(u, p)| {
                            Credentials::derive(u, domain, p, credentials::DEFAULT_ITERATIONS)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    })
}

impl AdminService {
    pub(crate) async fn credentials(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Credentials, Status> {
        if password.len() > PASSWORD_MAX {
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
