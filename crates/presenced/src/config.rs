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
    #[serde(default)]
    pub xmpp: Xmpp,
    #[serde(default)]
    pub router: RouterCfg,
    #[serde(default)]
    pub cluster_tls: crate::cluster_tls::ClusterTls,
}

/// XMPP client connections.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Xmpp {
    /// PEM certificate chain and key; without them a self-signed certificate for the
    /// domain is generated into `<data_dir>/tls/` at first start.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Refuse authentication before STARTTLS.
    pub require_tls: bool,
    /// Largest stanza accepted, in bytes.
    pub max_stanza_bytes: u64,
    /// Deepest element nesting accepted inside a stanza.
    pub max_depth: usize,
    /// Stream negotiation (TLS, SASL, bind) must finish within this many seconds.
    pub auth_timeout_secs: u64,
    /// Ping a silent client after this many seconds ...
    pub ping_after_secs: u64,
    /// ... and close a stream silent for this many seconds.
    pub idle_timeout_secs: u64,
    /// A write the client does not take within this many seconds (it does not read
    /// its socket) ends the connection.
    pub send_timeout_secs: u64,
    /// Client connections at once, both listeners; 0: the open-file limit minus a
    /// reserve (a tenth, at least 128) for Raft, peers, admin and storage. A larger
    /// value is lowered to that.
    pub max_connections: usize,
    /// Connections from one address (IPv6: one /64) not yet authenticated, at once.
    pub max_unauthenticated_per_ip: usize,
    /// Failed logins from one address within `auth_failure_window_secs` before it is
    /// blocked for `auth_block_secs`.
    pub auth_failures_per_ip: u32,
    /// Failed logins for one account within `auth_failure_window_secs` before the
    /// addresses that failed for it are refused for `auth_block_secs`.
    pub auth_failures_per_account: u32,
    pub auth_failure_window_secs: u64,
    pub auth_block_secs: u64,
    /// Password derivations (SASL PLAIN) at once; 0: half the cores, at least one.
    pub auth_concurrency: usize,
    /// Derivations waiting before more are refused (`temporary-auth-failure`).
    pub auth_queue: usize,
}

impl Default for Xmpp {
    fn default() -> Self {
        let d = presenced_xmpp::XmppConfig::default();
        Xmpp {
            cert_file: None,
            key_file: None,
            require_tls: d.require_tls,
            max_stanza_bytes: d.max_stanza_bytes,
            max_depth: d.max_depth,
            auth_timeout_secs: d.auth_timeout.as_secs(),
            ping_after_secs: d.ping_after.as_secs(),
            idle_timeout_secs: d.idle_timeout.as_secs(),
            send_timeout_secs: d.send_timeout.as_secs(),
            max_connections: d.max_connections,
            max_unauthenticated_per_ip: d.max_unauthenticated_per_ip,
            auth_failures_per_ip: d.auth_failures_per_ip,
            auth_failures_per_account: d.auth_failures_per_account,
            auth_failure_window_secs: d.auth_failure_window.as_secs(),
            auth_block_secs: d.auth_block.as_secs(),
            auth_concurrency: d.auth_concurrency,
            auth_queue: d.auth_queue,
        }
    }
}

/// Message routing between sessions and nodes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterCfg {
    /// After the recipient replies from one client, the sender's messages go only to
    /// that client until this many seconds pass without messages between the two.
    pub sticky_quiet_secs: u64,
    /// Peer links send a heartbeat this often (milliseconds) ...
    pub peer_heartbeat_ms: u64,
    /// ... and a peer silent for this long (milliseconds) is declared dead: its
    /// sessions are dropped and their watchers told they went unavailable.
    pub peer_dead_after_ms: u64,
    /// Stanzas queued for one client before it is disconnected as too slow.
    pub session_queue: usize,
}

impl Default for RouterCfg {
    fn default() -> Self {
        let d = presenced_router::RouterConfig::new(0, String::new());
        RouterCfg {
            sticky_quiet_secs: d.sticky_quiet.as_secs(),
            peer_heartbeat_ms: d.peer_heartbeat.as_millis() as u64,
            peer_dead_after_ms: d.peer_dead_after.as_millis() as u64,
            session_queue: d.session_queue,
        }
    }
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
    /// XMPP client connections (STARTTLS).
    #[serde(default = "default_xmpp")]
    pub xmpp: SocketAddr,
    /// XMPP client connections with TLS from the first byte (XEP-0368); off if unset.
    pub xmpps: Option<SocketAddr>,
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
    /// Also snapshot once this many MiB of log follow the last snapshot.
    pub snapshot_log_mb: u64,
    /// Keep at most this many MiB of log behind a snapshot.
    pub keep_log_mb: u64,
    /// Applied-log events buffered for the router (more are resynchronised).
    pub event_buffer: usize,
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
            snapshot_log_mb: t.snapshot_log_bytes >> 20,
            keep_log_mb: t.keep_log_bytes >> 20,
            event_buffer: t.event_buffer,
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
    for f in [&mut cfg.xmpp.cert_file, &mut cfg.xmpp.key_file]
        .into_iter()
        .flatten()
    {
        if f.is_relative() {
            *f = base.join(&*f);
        }
    }
    cfg.cluster_tls.rebase(base);
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
    pub fn xmpp(&self) -> (presenced_xmpp::XmppConfig, presenced_xmpp::CertSource) {
        let x = &self.xmpp;
        let cfg = presenced_xmpp::XmppConfig {
            max_stanza_bytes: x.max_stanza_bytes,
            max_depth: x.max_depth,
            require_tls: x.require_tls,
            auth_timeout: Duration::from_secs(x.auth_timeout_secs),
            ping_after: Duration::from_secs(x.ping_after_secs),
            idle_timeout: Duration::from_secs(x.idle_timeout_secs),
            send_timeout: Duration::from_secs(x.send_timeout_secs),
            max_connections: x.max_connections,
            max_unauthenticated_per_ip: x.max_unauthenticated_per_ip,
            auth_failures_per_ip: x.auth_failures_per_ip,
            auth_failures_per_account: x.auth_failures_per_account,
            auth_failure_window: Duration::from_secs(x.auth_failure_window_secs),
            auth_block: Duration::from_secs(x.auth_block_secs),
            auth_concurrency: x.auth_concurrency,
            auth_queue: x.auth_queue,
            ..Default::default()
        };
        let certs = match (&x.cert_file, &x.key_file) {
            (Some(c), Some(k)) => presenced_xmpp::CertSource::Files {
                cert: c.clone(),
                key: k.clone(),
            },
            _ => presenced_xmpp::CertSource::SelfSigned {
                dir: self.data_dir.join("tls"),
            },
        };
        (cfg, certs)
    }

    pub fn router(&self, secret: String) -> presenced_router::RouterConfig {
        let r = &self.router;
        let mut c = presenced_router::RouterConfig::new(self.node_id, secret);
        c.sticky_quiet = Duration::from_secs(r.sticky_quiet_secs);
        c.peer_heartbeat = Duration::from_millis(r.peer_heartbeat_ms);
        c.peer_dead_after = Duration::from_millis(r.peer_dead_after_ms);
        c.session_queue = r.session_queue;
        c
    }

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
            ("listen.xmpps", l.xmpps.unwrap_or(l.xmpp)),
        ];
        for (i, (a, x)) in ports.iter().enumerate() {
            if let Some((b, _)) = ports[i + 1..]
                .iter()
                .find(|(b, y)| y == x && !(*b == "listen.xmpps" && l.xmpps.is_none()))
            {
                return Err(format!("{a} and {b}: both use {x}"));
            }
        }
        if let Some(a) = &l.advertise
            && !a.contains(':')
        {
            return Err(format!("listen.advertise: {a:?} must be host:port"));
        }
        let x = &self.xmpp;
        if x.cert_file.is_some() != x.key_file.is_some() {
            return Err("xmpp.cert_file and xmpp.key_file: set both or neither".into());
        }
        if x.max_stanza_bytes < 10_000 {
            return Err("xmpp.max_stanza_bytes: must be at least 10000 (RFC 6120 §13.12)".into());
        }
        if !(4..=256).contains(&x.max_depth) {
            return Err("xmpp.max_depth: must be from 4 to 256".into());
        }
        if x.auth_timeout_secs == 0
            || x.ping_after_secs == 0
            || x.idle_timeout_secs <= x.ping_after_secs
        {
            return Err(
                "xmpp.idle_timeout_secs: must be greater than xmpp.ping_after_secs (both > 0)"
                    .into(),
            );
        }
        if x.send_timeout_secs == 0 {
            return Err("xmpp.send_timeout_secs: must be 1 or more".into());
        }
        if x.max_unauthenticated_per_ip == 0 {
            return Err("xmpp.max_unauthenticated_per_ip: must be 1 or more".into());
        }
        for (key, v) in [
            (
                "xmpp.auth_failures_per_ip",
                u64::from(x.auth_failures_per_ip),
            ),
            (
                "xmpp.auth_failures_per_account",
                u64::from(x.auth_failures_per_account),
            ),
            ("xmpp.auth_failure_window_secs", x.auth_failure_window_secs),
            ("xmpp.auth_block_secs", x.auth_block_secs),
        ] {
            if v == 0 {
                return Err(format!("{key}: must be 1 or more"));
            }
        }
        if x.auth_concurrency > 256 {
            return Err("xmpp.auth_concurrency: at most 256".into());
        }
        let rt = &self.router;
        if rt.peer_heartbeat_ms == 0 || rt.peer_dead_after_ms < rt.peer_heartbeat_ms * 2 {
            return Err(
                "router.peer_dead_after_ms: must be at least twice router.peer_heartbeat_ms".into(),
            );
        }
        if rt.session_queue < 16 {
            return Err("router.session_queue: must be 16 or more".into());
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_min_ms <= r.heartbeat_ms * 2 {
            return Err("raft.election_min_ms: must be more than twice raft.heartbeat_ms".into());
        }
        if r.election_max_ms <= r.election_min_ms {
            return Err("raft.election_max_ms: must be greater than raft.election_min_ms".into());
        }
        if r.event_buffer == 0 {
            return Err("raft.event_buffer: must be 1 or more".into());
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
        self.cluster_tls.validate()?;
        Ok(secret)
    }

    /// Where peers reach this node.
    pub fn advertise(&self) -> String {
        self.listen
            .advertise
            .clone()
            .unwrap_or_else(|| self.listen.cluster.to_string())
    }

    pub fn cluster(&self, secret: String, transport: presenced_tls::Transport) -> ClusterConfig {
        ClusterConfig {
            node_id: self.node_id,
            advertise: self.advertise(),
            data_dir: self.data_dir.clone(),
            secret,
            transport,
            domain: self.domain.clone(),
            raft: RaftTuning {
                heartbeat_ms: self.raft.heartbeat_ms,
                election_min_ms: self.raft.election_min_ms,
                election_max_ms: self.raft.election_max_ms,
                snapshot_every: self.raft.snapshot_every,
                keep_logs: self.raft.keep_logs,
                snapshot_log_bytes: self.raft.snapshot_log_mb << 20,
                keep_log_bytes: self.raft.keep_log_mb << 20,
                event_buffer: self.raft.event_buffer,
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
        let (x, _) = c.xmpp();
        assert_eq!(
            x.max_connections, 0,
            "as many as the open-file limit allows"
        );
        assert_eq!(x.max_unauthenticated_per_ip, 100);
        assert_eq!(x.send_timeout, Duration::from_secs(15));
        assert_eq!(
            (x.auth_failures_per_ip, x.auth_failures_per_account),
            (10, 20)
        );
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
            (
                format!("{GOOD}[xmpp]\nmax_unauthenticated_per_ip = 0\n"),
                "xmpp.max_unauthenticated_per_ip",
            ),
            (
                format!("{GOOD}[xmpp]\nauth_block_secs = 0\n"),
                "xmpp.auth_block_secs",
            ),
            (
                format!("{GOOD}[xmpp]\nsend_timeout_secs = 0\n"),
                "xmpp.send_timeout_secs",
            ),
        ];
        for (text, key) in cases {
            let err = try_load(&text).unwrap_err();
            assert!(err.contains(key), "error {err:?} does not name {key}");
            assert!(!err.contains('\n'), "error spans lines: {err:?}");
        }
    }
}
