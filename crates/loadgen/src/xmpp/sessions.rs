//! Logging in and registering many users, and keeping sessions answered until closed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::client::{self, El, Session, Writer, esc};
use super::stats::{errs_summary, hist};
use super::{Ctx, Who};

pub(super) struct Logins {
    pub(super) sessions: Vec<Option<Session>>,
    pub(super) lat: Histogram<u64>,
    pub(super) secs: f64,
    pub(super) errors: Vec<String>,
}

pub(super) async fn login_many(ctx: &Arc<Ctx>, who: &[Who]) -> Logins {
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

pub(super) async fn register_many(ctx: &Arc<Ctx>, who: &[Who]) -> anyhow::Result<()> {
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
pub(super) async fn common(s: &El, wr: &Writer) -> bool {
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

pub(super) fn bare_of(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

/// Reads and answers until `stop` flips or the stream ends.
pub(super) fn spawn_drain(mut s: Session, mut stop: watch::Receiver<bool>) -> Writer {
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

pub(super) async fn close_all(ws: impl IntoIterator<Item = Writer>) {
    let mut set = JoinSet::new();
    for w in ws {
        set.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), w.close()).await;
        });
    }
    while set.join_next().await.is_some() {}
}
