//! Harness for end-to-end tests: real `presenced` processes on loopback, driven with the
//! real `presencectl` binary. Binaries come from the same target directory as the test
//! executable (`scripts/test` builds them first).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod hostile;
pub mod tap;
pub mod tls;
pub mod xmpp;

pub use tls::{Ctl, Pki};

pub const SECRET: &str = "e2e-test-secret-0123456789";
pub const DOMAIN: &str = "example.test";

/// target/<profile>/ of the running test binary.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf();
    for b in ["presenced", "presencectl"] {
        assert!(
            dir.join(b).exists(),
            "{} missing: build the binaries first (`cargo build --bins`, scripts/test does)",
            dir.join(b).display()
        );
    }
    dir
}

/// Distinct free loopback ports (bound, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    // Below the kernel's ephemeral range (32768+), so that outgoing connections of
    // concurrently running nodes and clients never take a port a node is about to bind;
    // a random start per test process keeps parallel tests apart.
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LO: u32 = 10_000;
    const SPAN: u32 = 22_000;
    if NEXT.load(Ordering::Relaxed) == 0 {
        let seed = std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
        let _ = NEXT.compare_exchange(0, 1 + seed % SPAN, Ordering::Relaxed, Ordering::Relaxed);
    }
    let mut out = Vec::new();
    while out.len() < n {
        let port = (LO + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            out.push(port);
        }
    }
    out
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): stdout={:?} stderr={:?}",
                self.stdout, self.stderr
            )
        })
    }

    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "command failed: stdout={} stderr={}",
            self.stdout, self.stderr
        );
        self
    }
}

pub struct NodeProc {
    pub id: u64,
    pub cluster: u16,
    pub admin: u16,
    pub http: u16,
    pub xmpp: u16,
    /// XMPP with direct TLS (XEP-0368).
    pub xmpps: u16,
    pub config: PathBuf,
    pub data: PathBuf,
    pub log: PathBuf,
    /// The tap in front of the cluster port, which peers then dial.
    pub tap: Option<tap::Tap>,
    child: Option<Child>,
}

impl NodeProc {
    /// The node's self-signed XMPP certificate (generated at first start).
    pub fn cert(&self) -> PathBuf {
        self.data.join("tls").join("xmpp.crt")
    }

    pub fn admin_addr(&self) -> String {
        format!("127.0.0.1:{}", self.admin)
    }

    /// The cluster address peers dial (the tap's, when there is one).
    pub fn cluster_addr(&self) -> String {
        format!(
            "127.0.0.1:{}",
            self.tap.as_ref().map_or(self.cluster, |t| t.port)
        )
    }
}

/// Options for a test cluster's node configs.
#[derive(Clone)]
pub struct Opts {
    pub snapshot_every: u64,
    pub keep_logs: u64,
    pub timeout_ms: u64,
    /// Appended to every node's config (e.g. a `[router]` or `[xmpp]` table).
    pub extra: String,
    /// Put a [`tap::Tap`] in front of every node's cluster port and advertise it, so
    /// every byte between the nodes crosses a tap.
    pub tap: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            snapshot_every: 20_000,
            keep_logs: 2_000,
            timeout_ms: 5_000,
            extra: String::new(),
            tap: false,
        }
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
    bins: PathBuf,
    /// The cluster's CA and certificates (unused by a plain-text cluster).
    pub pki: Pki,
    /// The nodes run `cluster_tls.mode = "plaintext"` (set through `Opts::extra`).
    pub plaintext: bool,
}

impl Cluster {
    /// Start `n` nodes, initialise the cluster on node 1 and add the others as voters.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, Opts::default())
    }

    pub fn start_with(n: usize, opts: Opts) -> Cluster {
        let c = Self::spawn(n, opts);
        c.ctl(0, &["cluster", "init"]).ok();
        for i in 1..n {
            let (id, addr) = (c.nodes[i].id.to_string(), c.nodes[i].cluster_addr());
            c.ctl(0, &["cluster", "add-node", &id, &addr]).ok();
        }
        for i in 0..n {
            c.wait_healthy(i, Duration::from_secs(30));
        }
        c
    }

    /// Write configs and start `n` node processes without forming a cluster.
    pub fn spawn(n: usize, opts: Opts) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("presenced-e2e-")
            .tempdir()
            .expect("tempdir");
        let ports = free_ports(n * 3);
        let pki = Pki::create(&dir.path().join("pki"));
        // Mutual TLS between the nodes unless the test configures it itself.
        let own_tls = opts.extra.contains("[cluster_tls]");
        let plaintext = own_tls && opts.extra.contains("\"plaintext\"");
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = i as u64 + 1;
            let (cluster, admin, http) = (ports[i * 3], ports[i * 3 + 1], ports[i * 3 + 2]);
            let (xmpp, xmpps) = {
                let p = free_ports(2);
                (p[0], p[1])
            };
            let config = dir.path().join(format!("node{id}.toml"));
            let data = dir.path().join(format!("data{id}"));
            let tap = opts.tap.then(|| tap::Tap::start(free_ports(1)[0], cluster));
            let advertise = tap
                .as_ref()
                .map(|t| format!("advertise = \"127.0.0.1:{}\"\n", t.port))
                .unwrap_or_default();
            let tls = if own_tls {
                String::new()
            } else {
                format!("[cluster_tls]\ndir = \"{}\"\n", pki.node_dir(id).display())
            };
            std::fs::write(
                &config,
                format!(
                    r#"node_id = {id}
domain = "{DOMAIN}"
data_dir = "{data}"
secret = "{SECRET}"
log_level = "info,presenced_cluster=debug"
[listen]
cluster = "127.0.0.1:{cluster}"
{advertise}admin = "127.0.0.1:{admin}"
http = "127.0.0.1:{http}"
xmpp = "127.0.0.1:{xmpp}"
xmpps = "127.0.0.1:{xmpps}"
[raft]
heartbeat_ms = 100
election_min_ms = 600
election_max_ms = 1200
snapshot_every = {se}
keep_logs = {kl}
timeout_ms = {to}
cache_mb = 16
{extra}
{tls}"#,
                    data = data.display(),
                    se = opts.snapshot_every,
                    kl = opts.keep_logs,
                    to = opts.timeout_ms,
                    extra = opts.extra,
                ),
            )
            .expect("write config");
            let log = dir.path().join(format!("node{id}.log"));
            nodes.push(NodeProc {
                id,
                cluster,
                admin,
                http,
                xmpp,
                xmpps,
                config,
                data,
                log,
                tap,
                child: None,
            });
        }
        let mut c = Cluster {
            dir,
            nodes,
            bins: bin_dir(),
            pki,
            plaintext,
        };
        for i in 0..n {
            c.start_node(i);
        }
        for i in 0..n {
            c.wait_listening(i);
        }
        c
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.bins.join(name)
    }

    /// `loadgen xmpp --scenario login` against node `i` over STARTTLS: users
    /// `<prefix>0..users`, all at once, with `password` and `mech` and `extra`
    /// arguments; its JSON line (`ok`, `errors`, ...).
    pub fn loadgen_logins(
        &self,
        i: usize,
        prefix: &str,
        users: usize,
        password: &str,
        mech: &str,
        extra: &[&str],
    ) -> Value {
        let n = users.to_string();
        let out = Command::new(self.bin("loadgen"))
            .args(["xmpp", "--scenario", "login", "--tls", "--json"])
            .args(["--server", &format!("127.0.0.1:{}", self.nodes[i].xmpp)])
            .args(["--domain", DOMAIN, "--prefix", prefix])
            .args(["--password", password, "--mech", mech])
            .args(["--users", &n, "--concurrency", &n])
            .args(extra)
            .output()
            .expect("loadgen runs");
        let text = String::from_utf8_lossy(&out.stdout);
        println!("{mech}: {text}{}", String::from_utf8_lossy(&out.stderr));
        text.lines()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("{mech}: no JSON line from loadgen: {text}"))
    }

    /// Start (or restart) node `i` (index into `nodes`).
    pub fn start_node(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        assert!(n.child.is_none(), "node {} already running", n.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .expect("log file");
        let child = Command::new(self.bins.join("presenced"))
            .arg("--config")
            .arg(&n.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn presenced");
        n.child = Some(child);
    }

    /// Send `signal` (e.g. "HUP") to node `i`'s process.
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.nodes[i].child.as_ref().expect("node running").id();
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{signal} {pid}");
    }

    /// kill -9 node `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().expect("kill -9");
            c.wait().expect("reap");
        }
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Delete node `i`'s data directory (the node must be stopped).
    pub fn wipe(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none());
        let _ = std::fs::remove_dir_all(&self.nodes[i].data);
    }

    pub fn wait_listening(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(self.nodes[i].http, "/health").is_none() {
            assert!(
                Instant::now() < deadline,
                "node {} never listened; log:\n{}",
                self.nodes[i].id,
                self.log_tail(i)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_healthy(&self, i: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            match http_get(self.nodes[i].http, "/health") {
                Some((200, _)) => return,
                other => assert!(
                    Instant::now() < deadline,
                    "node {} not healthy: {other:?}; log:\n{}",
                    self.nodes[i].id,
                    self.log_tail(i)
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// presencectl against node `i` (with --json prepended when asked by the caller).
    pub fn ctl(&self, i: usize, args: &[&str]) -> Out {
        self.ctl_at(&self.nodes[i].admin_addr(), SECRET, args)
    }

    pub fn ctl_json(&self, i: usize, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        self.ctl(i, &a).ok().json()
    }

    pub fn ctl_at(&self, addr: &str, secret: &str, args: &[&str]) -> Out {
        self.ctl_runner().run(addr, secret, args)
    }

    /// presencectl with this cluster's TLS arguments, to run from other threads.
    pub fn ctl_runner(&self) -> Ctl {
        let tls_args = if self.plaintext {
            vec!["--plaintext".to_string()]
        } else {
            vec!["--ca".to_string(), self.pki.ca_file().display().to_string()]
        };
        Ctl {
            bins: self.bins.clone(),
            tls_args,
        }
    }

    /// Index of the node the cluster reports as leader (asked of any live node).
    pub fn leader(&self) -> Option<usize> {
        for i in 0..self.nodes.len() {
            if !self.is_running(i) {
                continue;
            }
            let o = self.ctl(i, &["--json", "cluster", "status"]);
            if o.code != 0 {
                continue;
            }
            let id = o.json()["leader_id"].as_u64().unwrap_or(0);
            if let Some(idx) = self.nodes.iter().position(|n| n.id == id)
                && self.is_running(idx)
            {
                return Some(idx);
            }
        }
        None
    }

    /// The leader confirmed by the leader itself, with its term.
    pub fn leader_term(&self) -> Option<(usize, u64)> {
        let idx = self.leader()?;
        let o = self.ctl(idx, &["--json", "cluster", "status"]);
        if o.code != 0 {
            return None;
        }
        let v = o.json();
        (v["leader_id"].as_u64() == Some(self.nodes[idx].id))
            .then(|| (idx, v["term"].as_u64().unwrap_or(0)))
    }

    /// Wait for a leader elected in a term after `term`.
    pub fn wait_leader_after(&self, term: u64, within: Duration) -> (usize, u64) {
        let deadline = Instant::now() + within;
        loop {
            if let Some((l, t)) = self.leader_term()
                && t > term
            {
                return (l, t);
            }
            assert!(
                Instant::now() < deadline,
                "no new leader after term {term} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.leader() {
                return l;
            }
            assert!(Instant::now() < deadline, "no leader within {within:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn metrics(&self, i: usize) -> String {
        http_get(self.nodes[i].http, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    pub fn log_tail(&self, i: usize) -> String {
        let s = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for i in 0..self.nodes.len() {
            if panicking {
                // A panic inside a node (its stderr goes to its log) explains most failures.
                let log = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
                for l in log.lines().filter(|l| l.contains("panicked at")) {
                    eprintln!("node {} {l}", self.nodes[i].id);
                }
                eprintln!(
                    "----- node {} log (tail) -----\n{}",
                    self.nodes[i].id,
                    self.log_tail(i)
                );
            }
            self.kill(i);
        }
    }
}

/// A minimal HTTP/1.0 GET: (status, body), or None when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().ok()?,
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// The value of a Prometheus sample line `name{...} value` or `name value` (first match).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Adds the cluster secret to a gRPC call (for tests that talk to a node's cluster
/// API directly).
pub fn with_secret(mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    r.metadata_mut().insert(
        presenced_proto::SECRET_HEADER,
        SECRET.parse().expect("ascii secret"),
    );
    Ok(r)
}

impl Cluster {
    /// A 3-node cluster with these accounts (one password for all) and extra
    /// configuration for every node.
    pub fn with_users(users: &[&str], password: &str, extra: &str) -> Cluster {
        let c = Cluster::start_with(
            3,
            Opts {
                extra: extra.to_string(),
                ..Opts::default()
            },
        );
        for u in users {
            c.ctl(0, &["user", "add", u, "--password", password]).ok();
        }
        c
    }

    /// A gRPC channel to node `i`'s cluster port (Raft, Cluster and Peer services),
    /// holding the certificate of node 9 of this cluster (a valid node that is not a
    /// member).
    pub async fn cluster_channel(&self, i: usize) -> tonic::transport::Channel {
        self.cluster_channel_as(i, &self.peer_transport(9)).await
    }

    /// How a test acting as node `id` connects (plain text for a plain-text cluster).
    pub fn peer_transport(&self, id: u64) -> presenced_tls::Transport {
        if self.plaintext {
            presenced_tls::Transport::Plaintext
        } else {
            self.pki.transport(id)
        }
    }

    /// A channel to node `i`'s cluster port made with `transport`.
    pub async fn cluster_channel_as(
        &self,
        i: usize,
        transport: &presenced_tls::Transport,
    ) -> tonic::transport::Channel {
        let ep = presenced_tls::endpoint(&self.nodes[i].cluster_addr()).expect("endpoint");
        transport
            .connect(&ep, presenced_tls::Expect::Node(self.nodes[i].id))
            .await
            .expect("connect to the cluster port")
    }
}
