//! The `presence` scenario: a star user's availability changes reaching its contacts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::client::{esc, now_us};
use super::sessions::{bare_of, close_all, common, login_many};
use super::stats::{errs_summary, hist, ms};
use super::{Ctx, Who, XmppArgs};

#[allow(clippy::needless_range_loop)] // `r` is also the sequence number carried by each change
pub(super) async fn presence_bench(
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
