//! The `login-roster` scenario: a login storm in which every client fetches its roster.
//!
//! Each user, C at a time: connect, STARTTLS?, SASL, bind (the login latency), then one
//! roster get (RFC 6121 `jabber:iq:roster`, no version: the whole list; the roster
//! latency is from sending the get to reading its result), then the stream is closed.
//! No presence is sent, so the run changes nothing on the server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::client::{self, describe};
use super::sessions::common;
use super::stats::{errs_summary, hist, ms};
use super::{Ctx, Who};

/// What one user's cycle measured.
struct Cycle {
    login: Duration,
    roster: Duration,
    items: usize,
}

/// The password of `w`: `{n}` is replaced by the user's number, `{user}` by its name.
fn password(ctx: &Ctx, w: Who, user: &str) -> String {
    let p = ctx.pass(user);
    match w {
        Who::N(i) => p.replace("{n}", &i.to_string()),
        Who::Star => p.replace("{n}", "star"),
    }
}

async fn cycle(ctx: &Ctx, w: Who) -> anyhow::Result<Cycle> {
    let user = ctx.name(w);
    let t = Instant::now();
    let mut s = client::login(&ctx.cfg, ctx.server(w), &user, &password(ctx, w, &user)).await?;
    let login = t.elapsed();
    let t = Instant::now();
    s.wr.send("<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>")
        .await?;
    let r = loop {
        let st =
            s.rd.next()
                .await?
                .ok_or_else(|| anyhow::anyhow!("server closed the stream before the roster"))?;
        if st.name == "iq" && st.attr("id") == Some("roster1") {
            break st;
        }
        if st.name == "error" {
            anyhow::bail!("stream error: {}", describe(&st));
        }
        common(&st, &s.wr).await;
    };
    let roster = t.elapsed();
    anyhow::ensure!(
        r.attr("type") == Some("result"),
        "roster get of {user} failed: {}",
        describe(&r)
    );
    let items = r.child("query").map_or(0, |q| {
        q.children.iter().filter(|c| c.name == "item").count()
    });
    s.wr.close().await;
    Ok(Cycle {
        login,
        roster,
        items,
    })
}

pub(super) async fn login_roster_bench(
    ctx: &Arc<Ctx>,
    who: &[Who],
) -> anyhow::Result<serde_json::Value> {
    let sem = Arc::new(Semaphore::new(ctx.concurrency.max(1)));
    let mut set = JoinSet::new();
    let start = Instant::now();
    for &w in who {
        let (ctx, sem) = (ctx.clone(), sem.clone());
        set.spawn(async move {
            let _p = sem.acquire().await.expect("semaphore open");
            let t = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(30), cycle(&ctx, w))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("login + roster timed out after 30 s")));
            (r, t.elapsed())
        });
    }
    let (mut login, mut roster, mut total) = (hist(), hist(), hist());
    let (mut items, mut min_items, mut max_items) = (0usize, usize::MAX, 0usize);
    let mut errors = Vec::new();
    while let Some(r) = set.join_next().await {
        let (r, d) = r.expect("login-roster task");
        match r {
            Ok(c) => {
                let us = |d: Duration| d.as_micros().max(1) as u64;
                login.record(us(c.login)).expect("in bounds");
                roster.record(us(c.roster)).expect("in bounds");
                total.record(us(d)).expect("in bounds");
                items += c.items;
                min_items = min_items.min(c.items);
                max_items = max_items.max(c.items);
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let ok = login.len() as usize;
    let rate = ok as f64 / secs;
    let avg_items = if ok > 0 {
        items as f64 / ok as f64
    } else {
        f64::NAN
    };
    if ok == 0 {
        min_items = 0;
    }
    println!(
        "login-roster: {ok}/{} users logged in and fetched their roster in {secs:.2} s = {rate:.0}/s \
         (concurrency {}); login ms p50 {:.2} p99 {:.2}; roster get ms p50 {:.2} p99 {:.2} max {:.2}; \
         items per roster avg {avg_items:.1} min {min_items} max {max_items}; {} errors {}",
        who.len(),
        ctx.concurrency,
        ms(&login, 0.5),
        ms(&login, 0.99),
        ms(&roster, 0.5),
        ms(&roster, 0.99),
        roster.max() as f64 / 1000.0,
        errors.len(),
        errs_summary(&errors)
    );
    Ok(json!({
        "users": who.len(), "ok": ok, "concurrency": ctx.concurrency, "seconds": secs,
        "logins_per_sec": rate,
        "login_p50_ms": ms(&login, 0.5), "login_p99_ms": ms(&login, 0.99),
        "roster_p50_ms": ms(&roster, 0.5), "roster_p99_ms": ms(&roster, 0.99),
        "roster_max_ms": roster.max() as f64 / 1000.0,
        "cycle_p50_ms": ms(&total, 0.5), "cycle_p99_ms": ms(&total, 0.99),
        "items_avg": avg_items, "items_min": min_items, "items_max": max_items,
        "errors": errors.len(), "error_summary": errs_summary(&errors),
    }))
}
