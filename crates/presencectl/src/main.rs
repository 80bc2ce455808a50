//! presencectl: the operator CLI of a presenced cluster. It talks to one node's admin
//! gRPC API (`presenced.admin.v1.Admin`), presenting the cluster secret.
//!
//! Exit codes: 0 success, 1 other failure, 2 bad input (or usage), 3 not found,
//! 4 refused by a limit or rule, 5 node/cluster unavailable, 6 wrong cluster secret.

mod cert;
mod client;
mod commands;
mod import;
mod output;
mod replace;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::client::CliError;
use crate::commands::Ctx;
use crate::output::Report;

#[derive(Parser, Debug)]
#[command(
    name = "presencectl",
    version,
    about = "Operate a presenced cluster through a node's admin API"
)]
#[command(
    after_help = "Exit codes: 0 ok, 1 other failure, 2 bad input, 3 not found, 4 refused, \
                        5 node or cluster unavailable, 6 wrong cluster secret."
)]
pub struct Cli {
    /// Admin address of the node to talk to [default: the config's [listen] admin, else 127.0.0.1:7201]
    #[arg(
        long,
        global = true,
        env = "PRESENCECTL_NODE",
        value_name = "HOST:PORT"
    )]
    node: Option<String>,

    /// The cluster secret [default: from --config]
    #[arg(
        long,
        global = true,
        env = "PRESENCED_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    secret: Option<String>,

    /// A presenced node config file to take the secret, admin address and CA from
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// The cluster's CA certificate(s) the node must prove itself with [default: from --config]
    #[arg(
        long = "ca",
        id = "tls_ca",
        global = true,
        env = "PRESENCECTL_CA",
        value_name = "FILE"
    )]
    ca: Option<PathBuf>,

    /// An operator certificate (presencectl cert issue --operator NAME); with it no secret is needed
    #[arg(
        long = "cert",
        id = "tls_cert",
        global = true,
        env = "PRESENCECTL_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    cert: Option<PathBuf>,

    /// The operator certificate's private key
    #[arg(
        long = "key",
        id = "tls_key",
        global = true,
        env = "PRESENCECTL_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    key: Option<PathBuf>,

    /// No TLS: only for a cluster running cluster_tls.mode = "plaintext"
    #[arg(long, global = true, env = "PRESENCECTL_PLAINTEXT",
          value_parser = clap::builder::BoolishValueParser::new())]
    plaintext: bool,

    /// Print one JSON document on stdout instead of tables
    #[arg(long, global = true)]
    json: bool,

    /// Per-call timeout in seconds (membership changes and import chunks get at least 90)
    #[arg(long, global = true, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Form the cluster, show its health, change its membership
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Show and change the cluster-wide settings
    #[command(subcommand)]
    Settings(SettingsCmd),
    /// Manage user accounts
    #[command(subcommand)]
    User(UserCmd),
    /// Show and edit contact lists
    #[command(subcommand)]
    Roster(RosterCmd),
    /// Report problems: nodes down or lagging, no leader, users at their limits
    Troubleshoot,
    /// The cluster CA and the node and operator certificates it issues (offline: no node is contacted)
    #[command(subcommand)]
    Cert(cert::CertCmd),
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Initialise a new cluster on this node (it becomes the only voter)
    Init,
    /// Show the leader, the term and every node's replication state
    Status,
    /// Add a node (by its cluster address) as a voter
    AddNode {
        /// The new node's node_id
        id: u64,
        /// The new node's cluster address, HOST:PORT
        addr: String,
    },
    /// Remove a node from the cluster
    RemoveNode {
        /// The node_id to remove
        id: u64,
    },
    /// Replace a dead voter by a fresh node with the same id: remove it, add the new
    /// one as a learner, wait (with progress) until it caught up, promote it
    ReplaceNode {
        /// The node_id of the dead node (and of its replacement)
        id: u64,
        /// The replacement's cluster address, HOST:PORT
        addr: String,
        /// Replace it even if the old node still answers
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SettingsCmd {
    /// List every setting with its value and default ("*" marks a changed one)
    Show,
    /// Change a setting
    Set { key: String, value: String },
    /// Put a setting back to its default
    Reset { key: String },
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Create an account (without --password the server generates one and it is printed)
    Add {
        name: String,
        /// The password (visible to other local users in the process list)
        #[arg(long)]
        password: Option<String>,
    },
    /// Delete an account
    Remove { name: String },
    /// List the accounts with their contact, watcher and queue counts
    List,
    /// Set a user's password (without --password one line is read from stdin)
    Passwd {
        name: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Create accounts in bulk from a CSV file (user[,password]; `-` reads stdin);
    /// existing accounts are refused (user_exists), never changed
    Import {
        file: PathBuf,
        /// Where the passwords generated for rows without one go (CSV user,password;
        /// created with mode 0600, appended to if it exists); they are never printed
        #[arg(long, value_name = "FILE")]
        passwords_out: Option<PathBuf>,
        /// Accounts per call (at most 2000)
        #[arg(long, value_name = "N", default_value_t = import::users::CHUNK,
              value_parser = chunk_size::<{ import::users::CHUNK_MAX }>)]
        chunk: usize,
    },
    /// Set a per-user policy override
    Policy {
        name: String,
        /// availability_sharing or view_without_approval
        key: String,
        /// inherit, on or off
        value: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RosterCmd {
    /// Show a user's contact list and pending inbound requests
    Show { user: String },
    /// Add contacts to a user's list
    Add {
        user: String,
        #[arg(required = true)]
        contacts: Vec<String>,
        /// Group to put the contacts in
        #[arg(long)]
        group: Option<String>,
        /// Display name for the contacts
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a contact from a user's list
    Remove { user: String, contact: String },
    /// Bulk-add contacts from a CSV file (user,contact[,name[,group]]; `-` reads stdin);
    /// contacts already listed as asked are counted as unchanged
    Import {
        file: PathBuf,
        /// Entries per call (at most 10000); the calls go one after the other
        #[arg(long, value_name = "N", default_value_t = import::roster::CHUNK,
              value_parser = chunk_size::<{ import::roster::CHUNK_MAX }>)]
        chunk: usize,
    },
}

/// A chunk size from 1 to `MAX`.
fn chunk_size<const MAX: usize>(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX).contains(&n) => Ok(n),
        _ => Err(format!("expected a number from 1 to {MAX}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let result = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => Err(CliError::new(
            client::EXIT_FAILURE,
            "INTERNAL",
            format!("cannot start the async runtime: {e}"),
        )),
    };
    let (report, error) = match result {
        Ok(r) => {
            let e = r.error.clone();
            (Some(r), e)
        }
        Err(e) => (None, Some(e)),
    };
    print(json, report, error.as_ref());
    ExitCode::from(error.map_or(0, |e| e.exit))
}

async fn run(cli: Cli) -> Result<Report, CliError> {
    if let Cmd::Cert(c) = cli.command {
        return cert::run(c);
    }
    let tls = client::TlsFlags {
        ca: cli.ca.clone(),
        cert: cli.cert.clone(),
        key: cli.key.clone(),
        plaintext: cli.plaintext,
    };
    let target = client::resolve_with(
        cli.node.as_deref(),
        cli.secret.as_deref(),
        cli.config.as_deref(),
        tls.has_cert(),
    )?;
    let transport = client::resolve_tls(&tls, cli.config.as_deref())?;
    let ctx = Ctx {
        target,
        transport,
        timeout: Duration::from_secs(cli.timeout),
        json: cli.json,
    };
    match cli.command {
        Cmd::Cluster(c) => commands::cluster(&ctx, c).await,
        Cmd::Settings(c) => commands::settings(&ctx, c).await,
        Cmd::User(c) => commands::user(&ctx, c).await,
        Cmd::Roster(c) => commands::roster(&ctx, c).await,
        Cmd::Troubleshoot => commands::troubleshoot(&ctx).await,
        Cmd::Cert(_) => unreachable!("handled above"),
    }
}

/// Stdout gets the result (one JSON document with --json); stderr gets one
/// `error: ...` line when something failed.
fn print(json: bool, report: Option<Report>, error: Option<&CliError>) {
    let mut stdout = std::io::stdout().lock();
    if json {
        let doc = match (report, error) {
            (Some(r), Some(e)) => output::merge_error(r.json, e),
            (Some(r), None) => r.json,
            (None, Some(e)) => output::error_json(e),
            (None, None) => serde_json::Value::Null,
        };
        let text = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "null".to_string());
        let _ = writeln!(stdout, "{text}");
    } else if let Some(r) = report.filter(|r| !r.human.is_empty()) {
        let _ = writeln!(stdout, "{}", r.human);
    }
    let _ = stdout.flush();
    if let Some(e) = error {
        eprintln!("error: {}", e.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn env_variables_are_wired() {
        let cmd = Cli::command();
        let env = |id: &str| {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
        };
        assert_eq!(env("node").as_deref(), Some("PRESENCECTL_NODE"));
        assert_eq!(env("secret").as_deref(), Some("PRESENCED_SECRET"));
    }

    #[test]
    fn global_options_anywhere() {
        let cli = Cli::try_parse_from([
            "presencectl",
            "--node",
            "h:1",
            "--secret",
            "s",
            "roster",
            "add",
            "alice",
            "bob",
            "carol",
            "--group",
            "Friends",
            "--json",
            "--timeout",
            "3",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.timeout, 3);
        match cli.command {
            Cmd::Roster(RosterCmd::Add {
                user,
                contacts,
                group,
                name,
            }) => {
                assert_eq!(user, "alice");
                assert_eq!(contacts, ["bob", "carol"]);
                assert_eq!(group.as_deref(), Some("Friends"));
                assert_eq!(name, None);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn usage_errors_exit_2() {
        for args in [
            &["presencectl", "roster", "add", "alice"][..],
            &["presencectl", "cluster", "add-node", "x", "h:1"],
            &["presencectl", "--timeout", "0", "troubleshoot"],
            &["presencectl", "bogus"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }
}
