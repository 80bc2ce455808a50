//! The `login` and `idle` scenarios.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use super::sessions::{close_all, login_many, spawn_drain};
use super::stats::{errs_summary, ms, rss_kib};
use super::{Ctx, Who, XmppArgs};

pub(super) async fn login_bench(ctx: &Arc<Ctx>, who: &[Who]) -> anyhow::Result<serde_json::Value> {
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

pub(super) async fn idle_bench(
    ctx: &Arc<Ctx>,
    who: &[Who],
    a: &XmppArgs,
) -> anyhow::Result<serde_json::Value> {
    let pids = super::stats::pids(a.pid.as_deref())?;
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
