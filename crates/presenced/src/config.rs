//! The node's TOML configuration. Unknown keys and bad values stop the node with a
//! message that names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use presenced_cluster::{ClusterConfig, RaftTuning};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id in the cluster (1, 2, ...). Never reuse an id for a different node.
    pub node_id: u64,
    /// The XMPP domain (and SIP realm) the cluster serves; the same on every node.
    pub domain: String,
    /// Where the Raft log and state live (created if missing). Relative paths are
    /// relative to the config file.
    pub data_dir: PathBuf,
    /// The cluster secret every inter-node and admin call carries.
    pub secret: Option<String>,
    /// A file holding the secret (alternative to `secret`).
    pub secret_file: Option<PathBuf>,
    /// Log level filter (overridden by RUST_LOG), e.g. "info" or "presenced=debug,info".
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Async worker threads; 0 (the default) means one per CPU core. Lower it when
    /// several nodes share a small machine (as the local cluster does).
    #[serde(default)]
    pub worker_threads: usize,
    pub listen: Listen,
    #[serde(default)]
    pub raft: Raft,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Inter-node gRPC (Raft and peer links).
    pub cluster: SocketAddr,
    /// Address peers use to reach `cluster`, if different (e.g. behind NAT).
    pub advertise: Option<String>,
    /// Admin gRPC for presencectl.
    pub admin: SocketAddr,
    /// HTTP: /health and /metrics.
    pub http: SocketAddr,
    /// XMPP client connections.
    #[serde(default = "default_xmpp")]
    pub xmpp: SocketAddr,
    /// SIP over UDP and TCP.
    #[serde(default = "default_sip")]
    #[allow(dead_code)] // read and validated now; served by the SIP adapter
    pub sip: SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Raft {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub snapshot_every: u64,
    pub keep_logs: u64,
    /// How long a write or a linearizable read may wait for a leader and a quorum.
    pub timeout_ms: u64,
    /// Storage page-cache size.
    pub cache_mb: u64,
}

impl Default for Raft {
    fn default() -> Self {
        let t = RaftTuning::default();
        Raft {
            heartbeat_ms: t.heartbeat_ms,
            election_min_ms: t.election_min_ms,
            election_max_ms: t.election_max_ms,
            snapshot_every: t.snapshot_every,
            keep_logs: t.keep_logs,
            timeout_ms: 5_000,
            cache_mb: 64,
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

fn default_xmpp() -> SocketAddr {
    "127.0.0.1:5222".parse().expect("literal")
}

fn default_sip() -> SocketAddr {
    "127.0.0.1:5060".parse().expect("literal")
}

/// Load and validate a config file; the error names the file and the key.
pub fn load(path: &Path) -> Result<(Config, String), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    let mut cfg: Config = toml::from_str(&text)
        .map_err(|e| format!("config {}: {}", path.display(), one_line(&e, &text)))?;
    let base = path.parent().unwrap_or(Path::new("."));
    if cfg.data_dir.is_relative() {
        cfg.data_dir = base.join(&cfg.data_dir);
    }
    let secret = cfg
        .validate(base)
        .map_err(|e| format!("config {}: {e}", path.display()))?;
    Ok((cfg, secret))
}

/// One line naming where it went wrong: `line 9 (http = "nowhere"): invalid socket address`.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let at = span.start.min(text.len());
            let line_no = text[..at].matches('\n').count() + 1;
            let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
            format!("line {line_no} ({line}): {msg}")
        }
        None => msg,
    }
}

impl Config {
    /// Check values serde cannot; returns the secret.
    fn validate(&self, base: &Path) -> Result<String, String> {
        if self.node_id == 0 {
            return Err("node_id: must be 1 or more".into());
        }
        presenced_model::names::normalize_domain(&self.domain)
            .ok()
            .filter(|d| *d == self.domain && d.contains('.'))
            .ok_or_else(|| {
                format!(
                    "domain: {:?} is not a lowercase domain name like example.test",
                    self.domain
                )
            })?;
        let secret = match (&self.secret, &self.secret_file) {
            (Some(_), Some(_)) => return Err("secret and secret_file: set only one".into()),
            (Some(s), None) => s.clone(),
            (None, Some(f)) => {
                let f = if f.is_relative() {
                    base.join(f)
                } else {
                    f.clone()
                };
                std::fs::read_to_string(&f)
                    .map_err(|e| format!("secret_file: cannot read {}: {e}", f.display()))?
                    .trim()
                    .to_string()
            }
            (None, None) => return Err("secret: missing (set secret or secret_file)".into()),
        };
        if secret.len() < 16 {
            return Err("secret: must be at least 16 characters".into());
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("secret: must be printable ASCII without spaces".into());
        }
        let l = &self.listen;
        let ports = [
            ("listen.cluster", l.cluster),
            ("listen.admin", l.admin),
            ("listen.http", l.http),
            ("listen.xmpp", l.xmpp),
        ];
        for (i, (a, x)) in ports.iter().enumerate() {
            if let Some((b, _)) = ports[i + 1..].iter().find(|(_, y)| y == x) {
                return Err(format!("{a} and {b}: both use {x}"));
            }
        }
        if let Some(a) = &l.advertise
            && !a.contains(':')
        {
            return Err(format!("listen.advertise: {a:?} must be host:port"));
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_min_ms <= r.heartbeat_ms * 2 {
            return Err("raft.election_min_ms: must be more than twice raft.heartbeat_ms".into());
        }
        if r.election_max_ms <= r.election_min_ms {
            return Err("raft.election_max_ms: must be greater than raft.election_min_ms".into());
        }
        if r.snapshot_every == 0 {
            return Err("raft.snapshot_every: must be 1 or more".into());
        }
        if r.timeout_ms < 100 {
            return Err("raft.timeout_ms: must be at least 100".into());
        }
        if self.worker_threads > 256 {
            return Err("worker_threads: at most 256".into());
        }
        if r.cache_mb == 0 {
            return Err("raft.cache_mb: must be 1 or more".into());
        }
        Ok(secret)
    }

    pub fn cluster(&self, secret: String) -> ClusterConfig {
        ClusterConfig {
            node_id: self.node_id,
            advertise: self
                .listen
                .advertise
                .clone()
                .unwrap_or_else(|| self.listen.cluster.to_string()),
            data_dir: self.data_dir.clone(),
            secret,
            domain: self.domain.clone(),
            raft: RaftTuning {
                heartbeat_ms: self.raft.heartbeat_ms,
                election_min_ms: self.raft.election_min_ms,
                election_max_ms: self.raft.election_max_ms,
                snapshot_every: self.raft.snapshot_every,
                keep_logs: self.raft.keep_logs,
            },
            cache_bytes: self.raft.cache_mb * 1024 * 1024,
            timeout: Duration::from_millis(self.raft.timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node_id = 1
domain = "example.test"
data_dir = "data"
secret = "0123456789abcdef"
[listen]
cluster = "127.0.0.1:7101"
admin = "127.0.0.1:7201"
http = "127.0.0.1:7301"
"#;

    fn try_load(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.toml");
        std::fs::write(&p, text).unwrap();
        load(&p).map(|(c, _)| c)
    }

    #[test]
    fn good_config_loads_with_defaults() {
        let c = try_load(GOOD).unwrap();
        assert_eq!(c.raft.timeout_ms, 5000);
        assert!(c.data_dir.is_absolute());
        assert_eq!(c.listen.xmpp.port(), 5222);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                GOOD.replace("node_id = 1", "node_id = 1\nbogus = 3"),
                "bogus",
            ),
            (GOOD.replace("node_id = 1", "node_id = 0"), "node_id"),
            (
                GOOD.replace("\"example.test\"", "\"Not A Domain\""),
                "domain",
            ),
            (GOOD.replace("0123456789abcdef", "short"), "secret"),
            (
                GOOD.replace("127.0.0.1:7301", "127.0.0.1:7201"),
                "listen.admin",
            ),
            (GOOD.replace("127.0.0.1:7301", "nowhere"), "http"),
            (
                GOOD.replace("[listen]", "[raft]\nheartbeat_ms = 900\n[listen]"),
                "raft.election_min_ms",
            ),
            (
                GOOD.replace("[listen]", "[raft]\nsnapshot_evry = 1\n[listen]"),
                "snapshot_evry",
            ),
            (GOOD.replace("node_id = 1", "node_id = \"one\""), "node_id"),
        ];
        for (text, key) in cases {
            let err = try_load(&text).unwrap_err();
            assert!(err.contains(key), "error {err:?} does not name {key}");
            assert!(!err.contains('\n'), "error spans lines: {err:?}");
        }
    }
}
