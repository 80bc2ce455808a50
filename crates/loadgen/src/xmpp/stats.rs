//! Latency histograms, error summaries and server memory.

use anyhow::Context;
use hdrhistogram::Histogram;

pub(super) fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

pub(super) fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return f64::NAN;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

pub(super) fn errs_summary(errs: &[String]) -> String {
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

pub(super) fn rss_kib(pids: &[u32]) -> anyhow::Result<u64> {
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
