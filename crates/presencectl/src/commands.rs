//! One function per command: read local input, call the node, build the report.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use presenced_proto::admin::{
    ContactEntry, Empty, KeyRequest, NodeRequest, PasswdRequest, PolicyRequest, RosterAddRequest,
    RosterRemoveRequest, SetSettingRequest, UserAddRequest, UserRequest,
};
use serde_json::json;

use crate::client::{CliError, Conn, EXIT_UNAVAILABLE, Target};
use crate::import::{self, Input, Outcome};
use crate::output::{self as out, Report};
use crate::{ClusterCmd, RosterCmd, SettingsCmd, UserCmd};

/// Membership changes and import chunks may wait for a slow log replication.
const LONG_CALL: Duration = Duration::from_secs(90);

/// Connection settings shared by all commands.
pub struct Ctx {
    pub target: Target,
    pub transport: presenced_tls::Transport,
    pub timeout: Duration,
    pub json: bool,
}

impl Ctx {
    async fn connect(&self) -> Result<Conn, CliError> {
        Conn::connect(&self.target, &self.transport, self.timeout).await
    }

    fn long_timeout(&self) -> Duration {
        self.timeout.max(LONG_CALL)
    }

    /// How an import sends: `chunk` rows per call, the long timeout, and a progress
    /// bar on stderr when a person watches it (never with --json).
    fn sending(&self, chunk: usize) -> import::Sending {
        import::Sending {
            chunk,
            timeout: self.long_timeout(),
            progress: !self.json && std::io::stderr().is_terminal(),
        }
    }
}

pub async fn cluster(ctx: &Ctx, cmd: ClusterCmd) -> Result<Report, CliError> {
    let conn = ctx.connect().await?;
    match cmd {
        ClusterCmd::Init => {
            let r = conn
                .change(|mut c| async move { c.cluster_init(Empty {}).await })
                .await?;
            Ok(Report::ok(out::init_json(&r), out::init_human(&r)))
        }
        ClusterCmd::Status => {
            let r = conn
                .call(|mut c| async move { c.cluster_status(Empty {}).await })
                .await?;
            let error = (r.leader_id == 0).then(|| {
                CliError::new(
                    EXIT_UNAVAILABLE,
                    "UNAVAILABLE",
                    format!(
                        "no leader: node {} knows of no elected leader (is a quorum of voters up?)",
                        conn.node()
                    ),
                )
            });
            Ok(Report::ok(out::status_json(&r), out::status_human(&r)).with_error(error))
        }
        ClusterCmd::AddNode { id, addr } => {
            let req = NodeRequest { id, addr };
            let r = conn
                .change_within(
                    ctx.long_timeout(),
                    |mut c| async move { c.add_node(req).await },
                )
                .await?;
            Ok(Report::ok(
                out::membership_json(&r),
                out::membership_human(&r),
            ))
        }
        ClusterCmd::ReplaceNode { id, addr, force } => {
            crate::replace::run(
                &conn,
                crate::replace::Replace {
                    id,
                    addr,
                    force,
                    progress: !ctx.json && std::io::stderr().is_terminal(),
                    // Catching up a large state takes as long as it takes; the node
                    // side gives up only when the learner stops making progress.
                    timeout: ctx.long_timeout().max(Duration::from_secs(3600)),
                },
            )
            .await
        }
        ClusterCmd::RemoveNode { id } => {
            let req = NodeRequest {
                id,
                addr: String::new(),
            };
            let r = conn
                .change_within(ctx.long_timeout(), |mut c| async move {
                    c.remove_node(req).await
                })
                .await?;
            Ok(Report::ok(
                out::membership_json(&r),
                out::membership_human(&r),
            ))
        }
    }
}

pub async fn settings(ctx: &Ctx, cmd: SettingsCmd) -> Result<Report, CliError> {
    let conn = ctx.connect().await?;
    match cmd {
        SettingsCmd::Show => {
            let r = conn
                .call(|mut c| async move { c.settings_show(Empty {}).await })
                .await?;
            Ok(Report::ok(
                out::settings_json(&r.settings),
                out::settings_human(&r.settings),
            ))
        }
        SettingsCmd::Set { key, value } => {
            let req = SetSettingRequest { key, value };
            let s = conn
                .change(|mut c| async move { c.settings_set(req).await })
                .await?;
            Ok(Report::ok(out::setting_json(&s), out::setting_human(&s)))
        }
        SettingsCmd::Reset { key } => {
            let req = KeyRequest { key };
            let s = conn
                .change(|mut c| async move { c.settings_reset(req).await })
                .await?;
            Ok(Report::ok(out::setting_json(&s), out::setting_human(&s)))
        }
    }
}

pub async fn user(ctx: &Ctx, cmd: UserCmd) -> Result<Report, CliError> {
    match cmd {
        UserCmd::Add { name, password } => {
            let conn = ctx.connect().await?;
            let req = UserAddRequest {
                name,
                password: password.unwrap_or_default(),
            };
            let r = conn
                .change(|mut c| async move { c.user_add(req).await })
                .await?;
            let human = if r.generated_password.is_empty() {
                format!("user {} added", r.name)
            } else {
                format!("user {} added; password: {}", r.name, r.generated_password)
            };
            Ok(Report::ok(
                json!({"name": r.name, "generated_password": r.generated_password}),
                human,
            ))
        }
        UserCmd::Remove { name } => {
            let conn = ctx.connect().await?;
            let req = UserRequest { name: name.clone() };
            conn.change(|mut c| async move { c.user_remove(req).await })
                .await?;
            Ok(Report::ok(
                json!({"name": name, "removed": true}),
                format!("user {name} removed"),
            ))
        }
        UserCmd::List => {
            let conn = ctx.connect().await?;
            let r = conn
                .call(|mut c| async move { c.user_list(Empty {}).await })
                .await?;
            Ok(Report::ok(
                out::users_json(&r.users),
                out::users_human(&r.users),
            ))
        }
        UserCmd::Passwd { name, password } => {
            let password = match password {
                Some(p) => p,
                None => read_password(&name)?,
            };
            if password.is_empty() {
                return Err(CliError::invalid("empty password"));
            }
            let conn = ctx.connect().await?;
            let req = PasswdRequest {
                name: name.clone(),
                password,
            };
            conn.change(|mut c| async move { c.user_passwd(req).await })
                .await?;
            Ok(Report::ok(
                json!({"name": name, "password_changed": true}),
                format!("password of {name} changed"),
            ))
        }
        UserCmd::Import {
            file,
            passwords_out,
            chunk,
        } => user_import(ctx, &file, passwords_out.as_deref(), chunk).await,
        UserCmd::Policy { name, key, value } => {
            let conn = ctx.connect().await?;
            let req = PolicyRequest { name, key, value };
            let u = conn
                .change(|mut c| async move { c.user_policy(req).await })
                .await?;
            Ok(Report::ok(
                out::user_json(&u),
                out::users_human(std::slice::from_ref(&u)),
            ))
        }
    }
}

/// One line from stdin, without its line ending (a prompt goes to stderr when a person
/// is typing).
fn read_password(name: &str) -> Result<String, CliError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("new password for {name}: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::invalid(format!("cannot read the password from stdin: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub async fn roster(ctx: &Ctx, cmd: RosterCmd) -> Result<Report, CliError> {
    match cmd {
        RosterCmd::Show { user } => {
            let conn = ctx.connect().await?;
            let req = UserRequest { name: user };
            let r = conn
                .call(|mut c| async move { c.roster_show(req).await })
                .await?;
            Ok(Report::ok(out::roster_json(&r), out::roster_human(&r)))
        }
        RosterCmd::Add {
            user,
            contacts,
            group,
            name,
        } => {
            let conn = ctx.connect().await?;
            let entries: Vec<ContactEntry> = contacts
                .iter()
                .map(|contact| ContactEntry {
                    user: user.clone(),
                    contact: contact.clone(),
                    name: name.clone().unwrap_or_default(),
                    group: group.clone().unwrap_or_default(),
                })
                .collect();
            let n = entries.len();
            let req = RosterAddRequest { entries };
            let r = conn
                .change(|mut c| async move { c.roster_add(req).await })
                .await?;
            let error = match r.refused.as_slice() {
                [] => None,
                [only] if n == 1 => Some(CliError::refused_entry(&only.code, only.reason.clone())),
                refused => Some(CliError::refused(format!(
                    "{} of {n} contacts refused",
                    refused.len()
                ))),
            };
            Ok(Report::ok(out::roster_add_json(&r), out::roster_add_human(&r)).with_error(error))
        }
        RosterCmd::Remove { user, contact } => {
            let conn = ctx.connect().await?;
            let req = RosterRemoveRequest {
                user: user.clone(),
                contact: contact.clone(),
            };
            conn.change(|mut c| async move { c.roster_remove(req).await })
                .await?;
            Ok(Report::ok(
                json!({"user": user, "contact": contact, "removed": true}),
                format!("removed {contact} from the roster of {user}"),
            ))
        }
        RosterCmd::Import { file, chunk } => {
            let mut input = Input::new(&file);
            let total = import::roster::check(&mut input)?;
            let conn = ctx.connect().await?;
            let mut outcome = Outcome::new(ctx.json);
            let error =
                import::roster::run(&conn, &mut input, total, ctx.sending(chunk), &mut outcome)
                    .await
                    .or_else(|| outcome.refusal_error("entries"));
            Ok(Report::ok(outcome.json(), outcome.summary()).with_error(error))
        }
    }
}

/// `user import FILE [--passwords-out PATH]`.
async fn user_import(
    ctx: &Ctx,
    file: &Path,
    passwords_out: Option<&Path>,
    chunk: usize,
) -> Result<Report, CliError> {
    let mut input = Input::new(file);
    let checked = import::users::check(&mut input, passwords_out)?;
    let passwords = passwords_out
        .map(import::users::PasswordsOut::open)
        .transpose()?;
    let conn = ctx.connect().await?;
    let mut outcome = Outcome::new(ctx.json);
    let error = import::users::run(
        &conn,
        &mut input,
        &checked,
        passwords,
        ctx.sending(chunk),
        &mut outcome,
    )
    .await
    .or_else(|| outcome.refusal_error("rows"));
    Ok(Report::ok(outcome.json(), outcome.summary()).with_error(error))
}

pub async fn troubleshoot(ctx: &Ctx) -> Result<Report, CliError> {
    let conn = ctx.connect().await?;
    let r = conn
        .call(|mut c| async move { c.troubleshoot(Empty {}).await })
        .await?;
    Ok(Report::ok(
        out::findings_json(&r.findings),
        out::findings_human(&r.findings),
    ))
}
