//! `loadgen xmpp`: standard XMPP c2s load against presenced, Prosody or ejabberd.
//!
//! Scenarios (all measured by the client, one clock for every session):
//! - `register`: in-band registration (XEP-0077) of the users a run needs.
//! - `login`: N users log in (connect, STARTTLS?, SASL, bind), C at a time.
//! - `pingpong`: P pairs; each pair keeps W chat messages in flight, every received
//!   message is answered at once; delivered messages/s and one-way latency.
//! - `presence`: a star user with K contacts watching it changes availability R
//!   times; delay from the change until each contact has it, and until the last.
//! - `idle`: N sessions with initial presence; server RSS before/after.
//! - `login-roster`: N users log in, fetch their roster and disconnect, C at a time.

pub mod client;
mod login;
mod pingpong;
mod presence;
mod roster;
mod sessions;
mod stats;

use std::sync::Arc;

use client::{ClientCfg, Mech};
use serde_json::json;

use login::{idle_bench, login_bench};
use pingpong::pingpong_bench;
use presence::presence_bench;
use roster::login_roster_bench;
use sessions::register_many;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Scenario {
    Register,
    Login,
    Pingpong,
    Presence,
    Idle,
    LoginRoster,
}

#[derive(clap::Args)]
pub struct XmppArgs {
    /// Scenario to run.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// c2s addresses, comma separated; user n connects to server n mod count.
    #[arg(long, default_value = "127.0.0.1:5222")]
    server: String,
    /// XMPP domain (stream `to` and JIDs).
    #[arg(long, default_value = "example.test")]
    domain: String,
    /// User names are <prefix><n> (and <prefix>star for the presence star).
    #[arg(long, default_value = "lg")]
    prefix: String,
    /// Password; `{user}` is replaced by the user name (login-roster: `{n}` by its number).
    #[arg(long, default_value = "loadgen-pw")]
    password: String,
    /// STARTTLS (certificate not verified).
    #[arg(long)]
    tls: bool,
    /// SASL mechanism: SCRAM-SHA-1, SCRAM-SHA-256 or PLAIN (PLAIN needs --tls on most servers).
    #[arg(long, default_value = "SCRAM-SHA-1")]
    mech: String,
    /// SCRAM: send the client-first message only after the server's empty challenge,
    /// not in `<auth/>` (both are allowed, RFC 6120 §6.4.2).
    #[arg(long)]
    no_initial_response: bool,
    /// Register the users of the scenario first (XEP-0077); existing users are fine.
    #[arg(long)]
    register: bool,
    /// login/idle/login-roster/register: number of users (register also creates <prefix>star).
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Logins (or registrations) in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// pingpong: number of pairs (users 0..2P).
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// pingpong: messages in flight per pair.
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// pingpong: measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// pingpong: warm-up seconds, not measured.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// presence: contacts of the star (users 0..K).
    #[arg(long, default_value_t = 200)]
    contacts: usize,
    /// presence: availability changes of the star.
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// presence: pause between two changes, milliseconds.
    #[arg(long, default_value_t = 50)]
    gap_ms: u64,
    /// idle: server process ids whose RSS is summed; pingpong: whose CPU is measured
    /// (comma separated).
    #[arg(long)]
    pid: Option<String>,
    /// idle: seconds to wait after the last initial presence before measuring.
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    /// Name of the server in the output.
    #[arg(long, default_value = "server")]
    label: String,
    /// Print one JSON line with the results too.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy)]
enum Who {
    N(usize),
    Star,
}

struct Ctx {
    cfg: ClientCfg,
    servers: Vec<String>,
    prefix: String,
    password: String,
    concurrency: usize,
}

impl Ctx {
    fn name(&self, w: Who) -> String {
        match w {
            Who::N(i) => format!("{}{i}", self.prefix),
            Who::Star => format!("{}star", self.prefix),
        }
    }
    fn server(&self, w: Who) -> &str {
        match w {
            Who::N(i) => &self.servers[i % self.servers.len()],
            Who::Star => &self.servers[0],
        }
    }
    fn pass(&self, user: &str) -> String {
        self.password.replace("{user}", user)
    }
    fn bare(&self, w: Who) -> String {
        format!("{}@{}", self.name(w), self.cfg.domain)
    }
}

pub async fn run(a: XmppArgs) -> anyhow::Result<()> {
    let servers: Vec<String> = a
        .server
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    anyhow::ensure!(!servers.is_empty(), "--server is empty");
    let ctx = Arc::new(Ctx {
        cfg: ClientCfg {
            domain: a.domain.clone(),
            tls: if a.tls {
                Some(client::tls_config()?)
            } else {
                None
            },
            mech: Mech::parse(&a.mech)?,
            initial_response: !a.no_initial_response,
            resource: "lg".into(),
        },
        servers,
        prefix: a.prefix.clone(),
        password: a.password.clone(),
        concurrency: a.concurrency,
    });
    let who: Vec<Who> = match a.scenario {
        Scenario::Register => (0..a.users)
            .map(Who::N)
            .chain(std::iter::once(Who::Star))
            .collect(),
        Scenario::Login | Scenario::Idle | Scenario::LoginRoster => {
            (0..a.users).map(Who::N).collect()
        }
        Scenario::Pingpong => (0..2 * a.pairs).map(Who::N).collect(),
        Scenario::Presence => std::iter::once(Who::Star)
            .chain((0..a.contacts).map(Who::N))
            .collect(),
    };
    if a.register || matches!(a.scenario, Scenario::Register) {
        register_many(&ctx, &who).await?;
    }
    let tls = if a.tls { "starttls" } else { "plain" };
    let head = json!({"server": a.label, "scenario": format!("{:?}", a.scenario).to_lowercase(),
                      "tls": tls, "mech": a.mech, "servers": ctx.servers.len()});
    let out = match a.scenario {
        Scenario::Register => return Ok(()),
        Scenario::Login => login_bench(&ctx, &who).await?,
        Scenario::Idle => idle_bench(&ctx, &who, &a).await?,
        Scenario::LoginRoster => login_roster_bench(&ctx, &who).await?,
        Scenario::Pingpong => pingpong_bench(&ctx, &who, &a).await?,
        Scenario::Presence => presence_bench(&ctx, &who, &a).await?,
    };
    if a.json {
        let mut o = head;
        if let (Some(o), serde_json::Value::Object(m)) = (o.as_object_mut(), out) {
            o.extend(m);
        }
        println!("{o}");
    }
    Ok(())
}
