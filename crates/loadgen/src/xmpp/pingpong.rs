//! The `pingpong` scenario: chat message round trips between pairs.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinSet;

use super::client::{self, Session, esc, now_us};
use super::sessions::{close_all, common, login_many};
use super::stats::{CpuWindow, errs_summary, hist, ms, pids};
use super::{Ctx, Who, XmppArgs};

fn chat(to: &str) -> String {
    format!(
        "<message to='{}' type='chat'><body>t={}</body></message>",
        esc(to),
        now_us()
    )
}

pub(super) async fn pingpong_bench(
    ctx: &Arc<Ctx>,
    who: &[Who],
    a: &XmppArgs,
) -> anyhow::Result<serde_json::Value> {
    let server_pids = pids(a.pid.as_deref())?;
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
    // CPU over the measured window, so a server is not judged by the client's limit.
    let cpu = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_micros(begin.saturating_sub(now_us()))).await;
        let w = CpuWindow::start(&server_pids);
        tokio::time::sleep(Duration::from_micros(end.saturating_sub(now_us()))).await;
        w.finish()
    });
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
    let (client_cpu, server_cpu) = cpu.await.expect("cpu sampler");
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
    let server_cpu_text =
        server_cpu.map_or("not measured (no --pid)".into(), |c| format!("{c:.0}%"));
    println!(
        "pingpong: CPU over the measured window (100% = one core): load generator {client_cpu:.0}%, server {server_cpu_text}"
    );
    Ok(
        json!({"pairs": a.pairs, "window": a.window, "seconds": a.seconds, "messages": all.len(),
              "msgs_per_sec": rate, "p50_ms": ms(&all, 0.5), "p99_ms": ms(&all, 0.99),
              "p999_ms": ms(&all, 0.999), "max_ms": all.max() as f64 / 1000.0, "errors": errors,
              "client_cpu_pct": client_cpu, "server_cpu_pct": server_cpu}),
    )
}
