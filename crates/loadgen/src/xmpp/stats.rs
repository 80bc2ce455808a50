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

/// CPU time (user + system, all threads) a process has used so far, in seconds:
/// fields 14 and 15 of `/proc/PID/stat`, in USER_HZ ticks (100 per second on Linux,
/// a fixed ABI value). `None` if the process is gone.
pub(super) fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from the closing parenthesis.
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Process ids from a comma-separated `--pid` list.
pub(super) fn pids(list: Option<&str>) -> anyhow::Result<Vec<u32>> {
    list.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().with_context(|| format!("bad pid {p:?}")))
        .collect()
}

/// CPU used over a window by this load generator and by the server processes: each
/// as a percentage of one core (so 200 is both cores of a 2-core machine).
pub(super) struct CpuWindow {
    wall: std::time::Instant,
    client: f64,
    server: Vec<(u32, f64)>,
}

impl CpuWindow {
    pub(super) fn start(server: &[u32]) -> Self {
        CpuWindow {
            wall: std::time::Instant::now(),
            client: cpu_seconds(std::process::id()).unwrap_or(0.0),
            server: server
                .iter()
                .map(|&p| (p, cpu_seconds(p).unwrap_or(0.0)))
                .collect(),
        }
    }

    /// `(client %, server %)`; the server figure is `None` without server pids.
    pub(super) fn finish(&self) -> (f64, Option<f64>) {
        let wall = self.wall.elapsed().as_secs_f64().max(1e-3);
        let client = cpu_seconds(std::process::id()).unwrap_or(self.client) - self.client;
        let server = (!self.server.is_empty()).then(|| {
            self.server
                .iter()
                .map(|&(p, c)| cpu_seconds(p).unwrap_or(c) - c)
                .sum::<f64>()
        });
        (100.0 * client / wall, server.map(|s| 100.0 * s / wall))
    }
}
