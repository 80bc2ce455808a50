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
    svc.apply_visible(Command::CreateAccount {
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
    svc.apply_visible(Command::SetCredentials { user, credentials })
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
///
/// A `retry` repeats a call whose outcome the caller does not know: an existing account
/// whose stored credentials match the password sent was created by that call, and is
/// reported as added again (checking costs one PBKDF2 per existing account).
pub(crate) async fn import(
    svc: &AdminService,
    r: UserImportRequest,
) -> Result<UserImportReply, Status> {
    let UserImportRequest { entries, retry } = r;
    if entries.len() > IMPORT_MAX {
        return Err(Status::invalid_argument(format!(
            "at most {IMPORT_MAX} accounts per call (got {})",
            entries.len()
        )));
    }
    let mut refused = Vec::new();
    let mut todo = Vec::with_capacity(entries.len());
    for (index, e) in entries.into_iter().enumerate() {
        let user = match names::normalize_user(&e.name, svc.domain()) {
            Ok(u) => u,
            Err(reason) => {
                refused.push(refuse(e.name, reason));
                continue;
            }
        };
        if e.password.is_empty() || e.password.len() > PASSWORD_MAX {
            let what =
                format!("the password of {user} is empty or longer than {PASSWORD_MAX} bytes");
            refused.push(refuse(e.name, Refusal::BadValue(what)));
            continue;
        }
        todo.push(Todo {
            index: index as u32,
            sent: e.name,
            user,
            password: e.password,
        });
    }
    // Existing accounts are refused now, so that a re-run derives nothing for them
    // (on a retry, their credentials are checked instead).
    let existing: Vec<Option<Option<Credentials>>> = svc
        .node
        .linearizable(|s| {
            todo.iter()
                .map(|t| {
                    s.user(&t.user)
                        .map(|d| retry.then(|| d.account.credentials.clone()))
                })
                .collect()
        })
        .await
        .map_err(cluster)?;
    let mut fresh = Vec::with_capacity(todo.len());
    let mut check = Vec::new();
    for (t, existing) in todo.into_iter().zip(existing) {
        match existing {
            None => fresh.push(t),
            Some(Some(stored)) => check.push((t, stored)),
            Some(None) => refused.push(refuse(t.sent, Refusal::UserExists(t.user))),
        }
    }
    let mut added = Vec::new();
    if fresh.is_empty() && check.is_empty() {
        return Ok(UserImportReply { added, refused });
    }
    let domain = svc.domain().to_string();
    let (fresh, creds, check) = tokio::task::spawn_blocking(move || {
        let creds = par_map(&fresh, |t| {
            Credentials::derive(
                &t.user,
                &domain,
                &t.password,
                credentials::DEFAULT_ITERATIONS,
            )
        });
        let same = par_map(&check, |(t, stored)| stored.verify_password(&t.password));
        let check: Vec<(Todo, bool)> = check.into_iter().map(|(t, _)| t).zip(same).collect();
        (fresh, creds, check)
    })
    .await
    .map_err(|e| Status::internal(format!("credential derivation failed: {e}")))?;
    for (t, same) in check {
        if same {
            added.push(t.added());
        } else {
            refused.push(refuse(t.sent, Refusal::UserExists(t.user)));
        }
    }
    if fresh.is_empty() {
        return Ok(UserImportReply { added, refused });
    }
    let commands = fresh
        .iter()
        .zip(creds)
        .map(|(t, credentials)| Command::CreateAccount {
            user: t.user.clone(),
            credentials,
        })
        .collect();
    let outcomes = match svc.apply_visible(Command::Batch { commands }).await? {
        Reply::Batch { outcomes } if outcomes.len() == fresh.len() => outcomes,
        other => return Err(Status::internal(format!("unexpected reply {other:?}"))),
    };
    for (t, outcome) in fresh.into_iter().zip(outcomes) {
        match outcome {
            Ok(_) => added.push(t.added()),
            Err(reason) => refused.push(refuse(t.sent, reason)),
        }
    }
    added.sort_by_key(|a| a.index);
    Ok(UserImportReply { added, refused })
}

/// One entry of a `UserImport` call that passed the checks.
struct Todo {
    /// Position in the request.
    index: u32,
    /// The name as sent.
    sent: String,
    /// The normalised name.
    user: String,
    password: String,
}

impl Todo {
    fn added(self) -> ImportedUser {
        ImportedUser {
            index: self.index,
            name: self.user,
        }
    }
}

fn refuse(name: String, reason: Refusal) -> Refused {
    Refused {
        user: name,
        contact: String::new(),
        code: reason.code().into(),
        reason: reason.to_string(),
    }
}

/// `f` over `items`, in order, on all cores (PBKDF2 is the whole cost of an import).
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, items.len().max(1));
    let per = items.len().div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let parts: Vec<_> = items
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<_>>()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_map_keeps_order() {
        let items: Vec<u32> = (0..1001).collect();
        assert_eq!(
            par_map(&items, |i| i * 2),
            (0..1001).map(|i| i * 2).collect::<Vec<_>>()
        );
        assert!(par_map(&[] as &[u32], |i| *i).is_empty());
        assert_eq!(par_map(&[7u32], |i| i + 1), vec![8]);
    }
}
