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

pub mod client;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use client::{ClientCfg, El, Mech, Session, Writer, esc, now_us};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Scenario {
    Register,
    Login,
    Pingpong,
    Presence,
    Idle,
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
    /// Password; `{user}` is replaced by the user name.
    #[arg(long, default_value = "loadgen-pw")]
    password: String,
    /// STARTTLS (certificate not verified).
    #[arg(long)]
    tls: bool,
    /// SASL mechanism: SCRAM-SHA-1, SCRAM-SHA-256 or PLAIN (PLAIN needs --tls on most servers).
    #[arg(long, default_value = "SCRAM-SHA-1")]
    mech: String,
    /// Register the users of the scenario first (XEP-0077); existing users are fine.
    #[arg(long)]
    register: bool,
    /// login/idle/register: number of users (register also creates <prefix>star).
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
    /// idle: server process ids whose RSS is summed (comma separated).
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

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return f64::NAN;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

fn errs_summary(errs: &[String]) -> String {
    let mut uniq: Vec<(String, usize)> = Vec::new();
    for e in errs {
        match uniq.iter_mut().find(|(s, _)| s == e) {
            Some((_, n)) => *n += 1,
            None => uniq.push((e.clone(), 1)),
        }
    }
    uniq.iter()
        .take(5)
        .map(|(s, n)| format!("{n}x {s}"))
        .collect::<Vec<_>>()
        .join("; ")
}

struct Logins {
    sessions: Vec<Option<Session>>,
    lat: Histogram<u64>,
    secs: f64,
    errors: Vec<String>,
}

async fn login_many(ctx: &Arc<Ctx>, who: &[Who]) -> Logins {
    let sem = Arc::new(Semaphore::new(ctx.concurrency.max(1)));
    let mut set = JoinSet::new();
    let start = Instant::now();
    for (i, &w) in who.iter().enumerate() {
        let (ctx, sem) = (ctx.clone(), sem.clone());
        set.spawn(async move {
            let _p = sem.acquire().await.expect("semaphore open");
            let user = ctx.name(w);
            let t = Instant::now();
            let r = tokio::time::timeout(
                Duration::from_secs(30),
                client::login(&ctx.cfg, ctx.server(w), &user, &ctx.pass(&user)),
            )
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("login timed out after 30 s")));
            (i, r, t.elapsed())
        });
    }
    let mut sessions: Vec<Option<Session>> = who.iter().map(|_| None).collect();
    let mut lat = hist();
    let mut errors = Vec::new();
    while let Some(r) = set.join_next().await {
        let (i, r, d) = r.expect("login task");
        match r {
            Ok(s) => {
                lat.record(d.as_micros().max(1) as u64).expect("in bounds");
                sessions[i] = Some(s);
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    Logins {
        sessions,
        lat,
        secs: start.elapsed().as_secs_f64(),
        errors,
    }
}

async fn register_many(ctx: &Arc<Ctx>, who: &[Who]) -> anyhow::Result<()> {
    let sem = Arc::new(Semaphore::new(ctx.concurrency.max(1)));
    let mut set = JoinSet::new();
    let start = Instant::now();
    for &w in who {
        let (ctx, sem) = (ctx.clone(), sem.clone());
        set.spawn(async move {
            let _p = sem.acquire().await.expect("semaphore open");
            let user = ctx.name(w);
            client::register(&ctx.cfg, ctx.server(w), &user, &ctx.pass(&user)).await
        });
    }
    let (mut created, mut existed, mut errors) = (0, 0, Vec::new());
    while let Some(r) = set.join_next().await {
        match r.expect("register task") {
            Ok(true) => created += 1,
            Ok(false) => existed += 1,
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    eprintln!(
        "registered {created} users, {existed} existed, {} failed in {:.1} s {}",
        errors.len(),
        start.elapsed().as_secs_f64(),
        errs_summary(&errors)
    );
    anyhow::ensure!(errors.is_empty(), "registration failed");
    Ok(())
}

/// Answers what any session must answer: server pings, and subscription requests
/// (approved). Returns true when the stanza was one of those.
async fn common(s: &El, wr: &Writer) -> bool {
    if s.name == "iq" && s.attr("type") == Some("get") && s.child("ping").is_some() {
        let id = s.attr("id").unwrap_or("");
        let to = s.attr("from").unwrap_or("");
        let _ = wr
            .send(&format!(
                "<iq type='result' id='{}' to='{}'/>",
                esc(id),
                esc(to)
            ))
            .await;
        return true;
    }
    if s.name == "presence" && s.attr("type") == Some("subscribe") {
        if let Some(from) = s.attr("from") {
            let _ = wr
                .send(&format!(
                    "<presence to='{}' type='subscribed'/>",
                    esc(bare_of(from))
                ))
                .await;
        }
        return true;
    }
    false
}

fn bare_of(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

/// Reads and answers until `stop` flips or the stream ends.
fn spawn_drain(mut s: Session, mut stop: watch::Receiver<bool>) -> Writer {
    let wr = s.wr.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                r = s.rd.next() => match r {
                    Ok(Some(st)) => { common(&st, &s.wr).await; }
                    _ => break,
                }
            }
        }
    });
    wr
}

async fn close_all(ws: impl IntoIterator<Item = Writer>) {
    let mut set = JoinSet::new();
    for w in ws {
        set.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), w.close()).await;
        });
    }
    while set.join_next().await.is_some() {}
}

fn rss_kib(pids: &[u32]) -> anyhow::Result<u64> {
    let mut sum = 0;
    for p in pids {
        let s = std::fs::read_to_string(format!("/proc/{p}/status"))
            .with_context(|| format!("reading /proc/{p}/status"))?;
        let line = s
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("no VmRSS")?;
        sum += line
            .split_whitespace()
            .nth(1)
            .context("VmRSS value")?
            .parse::<u64>()?;
    }
    Ok(sum)
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
        Scenario::Login | Scenario::Idle => (0..a.users).map(Who::N).collect(),
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

async fn login_bench(ctx: &Arc<Ctx>, who: &[Who]) -> anyhow::Result<serde_json::Value> {
    let l = login_many(ctx, who).await;
    let ok = l.lat.len();
    let rate = ok as f64 / l.secs;
    println!(
        "login: {ok}/{} users in {:.2} s = {rate:.0} logins/s (concurrency {}); latency ms p50 {:.2} p99 {:.2} p999 {:.2} max {:.2}; {} errors {}",
        who.len(),
        l.secs,
        ctx.concurrency,
        ms(&l.lat, 0.5),
        ms(&l.lat, 0.99),
        ms(&l.lat, 0.999),
        l.lat.max() as f64 / 1000.0,
        l.errors.len(),
        errs_summary(&l.errors)
    );
    close_all(l.sessions.into_iter().flatten().map(|s| s.wr)).await;
    Ok(
        json!({"users": who.len(), "ok": ok, "concurrency": ctx.concurrency, "seconds": l.secs,
              "logins_per_sec": rate, "p50_ms": ms(&l.lat, 0.5), "p99_ms": ms(&l.lat, 0.99),
              "p999_ms": ms(&l.lat, 0.999), "max_ms": l.lat.max() as f64 / 1000.0,
              "errors": l.errors.len()}),
    )
}

async fn idle_bench(
    ctx: &Arc<Ctx>,
    who: &[Who],
    a: &XmppArgs,
) -> anyhow::Result<serde_json::Value> {
    let pids: Vec<u32> = match &a.pid {
        Some(p) => p
            .split(',')
            .map(|s| s.trim().parse())
            .collect::<Result<_, _>>()
            .context("--pid")?,
        None => Vec::new(),
    };
    let before = if pids.is_empty() {
        None
    } else {
        Some(rss_kib(&pids)?)
    };
    let l = login_many(ctx, who).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut writers = Vec::new();
    for s in l.sessions.into_iter().flatten() {
        writers.push(spawn_drain(s, stop_rx.clone()));
    }
    for w in &writers {
        w.send("<presence/>").await?;
    }
    tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
    let after = if pids.is_empty() {
        None
    } else {
        Some(rss_kib(&pids)?)
    };
    let n = writers.len();
    let per = match (before, after) {
        (Some(b), Some(af)) if n > 0 => Some((af as f64 - b as f64) / n as f64),
        _ => None,
    };
    println!(
        "idle: {n}/{} sessions online with initial presence ({} login errors {}); server RSS before {} KiB, after {} KiB => {} KiB per session",
        who.len(),
        l.errors.len(),
        errs_summary(&l.errors),
        before.map_or("?".into(), |v| v.to_string()),
        after.map_or("?".into(), |v| v.to_string()),
        per.map_or("?".into(), |v| format!("{v:.1}"))
    );
    let _ = stop_tx.send(true);
    close_all(writers).await;
    Ok(
        json!({"sessions": n, "rss_before_kib": before, "rss_after_kib": after,
              "kib_per_session": per, "errors": l.errors.len()}),
    )
}

fn chat(to: &str) -> String {
    format!(
        "<message to='{}' type='chat'><body>t={}</body></message>",
        esc(to),
        now_us()
    )
}

async fn pingpong_bench(
    ctx: &Arc<Ctx>,
    who: &[Who],
    a: &XmppArgs,
) -> anyhow::Result<serde_json::Value> {
    let l = login_many(ctx, who).await;
    anyhow::ensure!(
        l.errors.is_empty(),
        "{} logins failed: {}",
        l.errors.len(),
        errs_summary(&l.errors)
    );
    let sessions: Vec<Session> = l.sessions.into_iter().flatten().collect();
    for s in &sessions {
        s.wr.send("<presence/>").await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let jids: Vec<String> = sessions.iter().map(|s| s.jid.clone()).collect();
    let begin = now_us() + (a.warmup * 1e6) as u64;
    let end = begin + (a.seconds * 1e6) as u64;
    let mut set = JoinSet::new();
    let mut writers = Vec::new();
    for (i, mut s) in sessions.into_iter().enumerate() {
        let partner = jids[i ^ 1].clone();
        let initiator = i % 2 == 0;
        let window = a.window;
        writers.push(s.wr.clone());
        set.spawn(async move {
            let mut h = hist();
            let mut errors = 0u64;
            let mut last_err = String::new();
            if initiator {
                for _ in 0..window {
                    if let Err(e) = s.wr.send(&chat(&partner)).await {
                        return (h, 1, format!("{e:#}"));
                    }
                }
            }
            loop {
                let now = now_us();
                if now >= end {
                    break;
                }
                let r = tokio::time::timeout(Duration::from_micros(end - now), s.rd.next()).await;
                let st = match r {
                    Err(_) => break,
                    Ok(Ok(Some(st))) => st,
                    Ok(Ok(None)) => {
                        errors += 1;
                        last_err = "stream closed by server".into();
                        break;
                    }
                    Ok(Err(e)) => {
                        errors += 1;
                        last_err = format!("{e:#}");
                        break;
                    }
                };
                if st.name == "message" {
                    if st.attr("type") == Some("error") {
                        errors += 1;
                        last_err = format!("message error: {}", client::describe(&st));
                        continue;
                    }
                    if st.attr("from") != Some(partner.as_str()) {
                        errors += 1;
                        last_err = format!("message from {:?}, not the partner", st.attr("from"));
                        continue;
                    }
                    let Some(t) = st
                        .child_text("body")
                        .and_then(|b| b.strip_prefix("t="))
                        .and_then(|t| t.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    let now = now_us();
                    if now >= begin && now < end {
                        h.record(now.saturating_sub(t).max(1)).expect("in bounds");
                    }
                    if now < end
                        && let Err(e) = s.wr.send(&chat(&partner)).await
                    {
                        errors += 1;
                        last_err = format!("{e:#}");
                        break;
                    }
                } else {
                    common(&st, &s.wr).await;
                }
            }
            (h, errors, last_err)
        });
    }
    let mut all = hist();
    let mut errors = 0;
    let mut errs = Vec::new();
    while let Some(r) = set.join_next().await {
        let (h, e, le) = r.expect("pingpong task");
        all.add(h).expect("same bounds");
        errors += e;
        if !le.is_empty() {
            errs.push(le);
        }
    }
    close_all(writers).await;
    let rate = all.len() as f64 / a.seconds;
    println!(
        "pingpong: {} pairs x window {} over {} server(s): {rate:.0} msgs/s delivered; one-way latency ms p50 {:.2} p99 {:.2} p999 {:.2} max {:.2}; {errors} errors {}",
        a.pairs,
        a.window,
        ctx.servers.len(),
        ms(&all, 0.5),
        ms(&all, 0.99),
        ms(&all, 0.999),
        all.max() as f64 / 1000.0,
        errs_summary(&errs)
    );
    Ok(
        json!({"pairs": a.pairs, "window": a.window, "seconds": a.seconds, "messages": all.len(),
              "msgs_per_sec": rate, "p50_ms": ms(&all, 0.5), "p99_ms": ms(&all, 0.99),
              "p999_ms": ms(&all, 0.999), "max_ms": all.max() as f64 / 1000.0, "errors": errors}),
    )
}

#[allow(clippy::needless_range_loop)] // `r` is also the sequence number carried by each change
async fn presence_bench(
    ctx: &Arc<Ctx>,
    who: &[Who],
    a: &XmppArgs,
) -> anyhow::Result<serde_json::Value> {
    let star_bare = ctx.bare(Who::Star);
    // The star first, available, approving (and returning) subscription requests.
    let l = login_many(ctx, &who[..1]).await;
    anyhow::ensure!(
        l.errors.is_empty(),
        "star login: {}",
        errs_summary(&l.errors)
    );
    let mut star = l
        .sessions
        .into_iter()
        .next()
        .flatten()
        .context("star session")?;
    let star_wr = star.wr.clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    {
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    r = star.rd.next() => match r {
                        Ok(Some(st)) => {
                            if st.name == "presence" && st.attr("type") == Some("subscribe")
                                && let Some(from) = st.attr("from") {
                                // approve, and ask back: mutual subscription
                                let b = esc(bare_of(from)).into_owned();
                                let _ = star.wr.send(&format!("<presence to='{b}' type='subscribed'/><presence to='{b}' type='subscribe'/>")).await;
                            } else {
                                common(&st, &star.wr).await;
                            }
                        }
                        _ => break,
                    }
                }
            }
        });
    }
    star_wr.send("<presence/>").await?;
    let l = login_many(ctx, &who[1..]).await;
    if !l.errors.is_empty() {
        eprintln!(
            "presence: {} contact logins failed: {}",
            l.errors.len(),
            errs_summary(&l.errors)
        );
    }
    let k = l.sessions.len();
    let seen: Arc<Vec<AtomicBool>> = Arc::new((0..k).map(|_| AtomicBool::new(false)).collect());
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, u64)>();
    let mut writers = Vec::new();
    for (i, s) in l.sessions.into_iter().enumerate() {
        let Some(mut s) = s else { continue };
        writers.push((i, s.wr.clone()));
        let (seen, tx, star_bare, mut stop) =
            (seen.clone(), tx.clone(), star_bare.clone(), stop_rx.clone());
        tokio::spawn(async move {
            loop {
                let st = tokio::select! {
                    _ = stop.changed() => break,
                    r = s.rd.next() => match r { Ok(Some(st)) => st, _ => break },
                };
                if st.name == "presence"
                    && st.attr("type").is_none()
                    && st.attr("from").map(bare_of) == Some(star_bare.as_str())
                {
                    seen[i].store(true, Ordering::Relaxed);
                    if let Some((seq, t)) = st
                        .child_text("status")
                        .and_then(|x| x.strip_prefix("lg "))
                        .and_then(|x| x.split_once(' '))
                        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse::<u64>().ok()?)))
                    {
                        let _ = tx.send((seq, now_us().saturating_sub(t).max(1)));
                    }
                } else {
                    common(&st, &s.wr).await;
                }
            }
        });
    }
    for (_, w) in &writers {
        w.send("<presence/>").await?;
    }
    let visible = |seen: &[AtomicBool]| seen.iter().filter(|b| b.load(Ordering::Relaxed)).count();
    let wait_seen = async |secs: f64| {
        let t = Instant::now();
        while visible(&seen) < writers.len() && t.elapsed().as_secs_f64() < secs {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    wait_seen(3.0).await;
    let pre = visible(&seen);
    if pre < writers.len() {
        eprintln!(
            "presence: {pre}/{} contacts see the star; the others subscribe now",
            writers.len()
        );
        for (i, w) in &writers {
            if !seen[*i].load(Ordering::Relaxed) {
                w.send(&format!(
                    "<presence to='{}' type='subscribe'/>",
                    esc(&star_bare)
                ))
                .await?;
            }
        }
        wait_seen(30.0).await;
    }
    let watchers = visible(&seen);
    eprintln!(
        "presence: {watchers}/{} online contacts see the star; {} changes follow",
        writers.len(),
        a.changes
    );
    // let the subscription handshakes and their presence traffic settle
    tokio::time::sleep(Duration::from_secs(1)).await;
    while rx.try_recv().is_ok() {}
    let mut deliveries = hist();
    let mut fanout = hist();
    let mut counts = vec![0usize; a.changes];
    let mut missing = 0usize;
    let late = AtomicUsize::new(0);
    for r in 0..a.changes {
        let show = if r % 2 == 0 { "<show>away</show>" } else { "" };
        star_wr
            .send(&format!(
                "<presence>{show}<status>lg {r} {}</status></presence>",
                now_us()
            ))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = 0u64;
        while counts[r] < watchers {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some((seq, d))) => {
                    // Only the change just made counts; an older one arriving now is a
                    // late or repeated delivery (e.g. presence re-sent after a
                    // subscription change).
                    if seq == r {
                        counts[r] += 1;
                        deliveries.record(d).expect("in bounds");
                        last = last.max(d);
                    } else {
                        late.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => break,
            }
        }
        if counts[r] >= watchers {
            fanout.record(last.max(1)).expect("in bounds");
        } else {
            missing += watchers - counts[r];
        }
        tokio::time::sleep(Duration::from_millis(a.gap_ms)).await;
    }
    let _ = stop_tx.send(true);
    close_all(writers.into_iter().map(|(_, w)| w).chain([star_wr])).await;
    println!(
        "presence: star with {watchers} watching contacts over {} server(s), {} changes: per-contact delay ms p50 {:.2} p99 {:.2} p999 {:.2} max {:.2}; all reached (last contact) ms p50 {:.2} p99 {:.2} max {:.2}; {missing} missing, {} late",
        ctx.servers.len(),
        a.changes,
        ms(&deliveries, 0.5),
        ms(&deliveries, 0.99),
        ms(&deliveries, 0.999),
        deliveries.max() as f64 / 1000.0,
        ms(&fanout, 0.5),
        ms(&fanout, 0.99),
        fanout.max() as f64 / 1000.0,
        late.load(Ordering::Relaxed)
    );
    Ok(
        json!({"contacts": watchers, "changes": a.changes, "deliveries": deliveries.len(),
              "p50_ms": ms(&deliveries, 0.5), "p99_ms": ms(&deliveries, 0.99),
              "p999_ms": ms(&deliveries, 0.999), "max_ms": deliveries.max() as f64 / 1000.0,
              "all_p50_ms": ms(&fanout, 0.5), "all_p99_ms": ms(&fanout, 0.99),
              "all_max_ms": fanout.max() as f64 / 1000.0, "missing": missing}),
    )
}
